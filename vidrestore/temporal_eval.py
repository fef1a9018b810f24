"""Temporal-stability evaluation: ground-truth clips, alignment error, lag, ID switches, temporal noise.

A real face (scikit-image's ``astronaut``) is moved along known similarity paths over real backgrounds, and
every frame is degraded with its own randomly drawn blur, downsampling, noise and JPEG quality, as in the
GFP-GAN paper (with milder ranges, so that the offline detector still finds a face of about 28 px eye
distance). The real offline detector (CenterFace) runs on the degraded frames.

Ground truth: the detector's landmarks on the clean face at the reference pose (averaged over sub-pixel
shifts, see :func:`reference_landmarks`), carried through each frame's known transform; the true alignment
is ``estimate_transforms`` of those. Errors are in 512-crop pixels (:func:`crop_error`,
:func:`alignment_metrics`), per-frame detection (what peers do) against the stabilizer's output.

``python -m vidrestore.temporal_eval [--json FILE]`` prints every table (about 3 minutes on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from filterpy.kalman import KalmanFilter
from scipy.optimize import linear_sum_assignment
from scipy.signal import savgol_filter

from vidrestore.engine import FaceRestorer, RestoreOptions
from vidrestore.faces.alignment import FFHQ_TEMPLATE_512, estimate_transforms, invert_affine, warp_faces
from vidrestore.faces.detection import CenterFaceDetector, Faces, detect_faces
from vidrestore.faces.paste import crop_alpha, feather_mask, paste_faces
from vidrestore.faces.tracking import (
    DetectionSchedule,
    SceneCutDetector,
    Stabilizer,
    TrackedFace,
    TrackSummary,
    noise_level,
    rigid_points,
    smoothing_weights,
)

WIDTH, HEIGHT = 384, 288
EYE_DISTANCE = 28.0  # pixels, at path scale 1
# Per-frame degradation ranges (uniform): Gaussian blur sigma, downsampling factor, noise sigma (of 255),
# JPEG quality. The paper's are 0.2-10, 1-8, 0-15, 60-100 for 512 crops; ours keep a 28 px face findable.
DEGRADATION = {"blur": (0.2, 1.5), "down": (1.0, 2.0), "noise": (0.0, 6.0), "jpeg": (60.0, 95.0)}


@dataclass(frozen=True)
class Sprite:
    """A face cut-out with a soft alpha, scaled so its eye distance is ``EYE_DISTANCE`` px."""

    image: np.ndarray  # (h, w, 3) uint8 RGB
    alpha: np.ndarray  # (h, w) float32
    center: tuple[float, float]  # the face centre, in sprite pixels: paths move this point


def _sprite(image: np.ndarray, box: tuple[int, int, int, int], eye_distance: float) -> Sprite:
    x0, y0, x1, y1 = box
    f = EYE_DISTANCE / eye_distance
    size = (round((x1 - x0) * f), round((y1 - y0) * f))
    interp = cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC
    img = cv2.resize(np.ascontiguousarray(image[y0:y1, x0:x1]), size, interpolation=interp)
    h, w = img.shape[:2]
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot((xx - (w - 1) / 2) / (w / 2), (yy - (h - 1) / 2) / (h / 2))
    alpha = np.clip((1 - r) * 6, 0, 1).astype(np.float32)  # an ellipse with a soft rim
    return Sprite(img, alpha, ((w - 1) / 2, (h - 1) / 2))


@cache
def sprites() -> dict[str, Sprite]:
    from skimage import data

    return {"astronaut": _sprite(data.astronaut(), (93, 0, 353, 260), 44.0)}


@cache
def backgrounds() -> dict[str, np.ndarray]:
    from skimage import data

    def fit(img: np.ndarray) -> np.ndarray:
        return cv2.resize(img, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)

    return {"coffee": fit(data.coffee()), "rocket": fit(data.rocket())}


def similarity(scale: float, angle: float, cx: float, cy: float, center: tuple[float, float]) -> np.ndarray:
    """2x3 map from sprite to frame pixels: ``center`` goes to (cx, cy), rotated by ``angle`` degrees."""
    th = np.deg2rad(angle)
    a = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]) * scale
    t = np.array([cx, cy]) - a @ np.asarray(center)
    return np.concatenate([a, t[:, None]], axis=1)


def composite(background: np.ndarray, layers: list[tuple[Sprite, np.ndarray]]) -> np.ndarray:
    """Sprites warped by their 2x3 maps over the background, later ones in front."""
    out = background.astype(np.float32)
    size = (background.shape[1], background.shape[0])
    for sprite, m in layers:
        face = cv2.warpAffine(sprite.image, m, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        a = cv2.warpAffine(sprite.alpha, m, size, flags=cv2.INTER_LINEAR)[..., None]
        out = out * (1 - a) + face.astype(np.float32) * a
    return out.round().clip(0, 255).astype(np.uint8)


def degrade(
    frame: np.ndarray, rng: np.random.Generator, ranges: dict[str, tuple[float, float]]
) -> np.ndarray:
    """Blur, downsample, add noise, JPEG-compress (each strength drawn now), and scale back up."""
    sigma, down, noise, quality = (rng.uniform(*ranges[k]) for k in ("blur", "down", "noise", "jpeg"))
    h, w = frame.shape[:2]
    x = cv2.GaussianBlur(frame.astype(np.float32), (0, 0), sigma)
    x = cv2.resize(x, (round(w / down), round(h / down)), interpolation=cv2.INTER_LINEAR)
    x = np.clip(x + rng.normal(0, noise, x.shape), 0, 255).round().astype(np.uint8)
    _, buf = cv2.imencode(".jpg", x[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, round(quality)])
    x = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return cv2.resize(x, (w, h), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class Face:
    """One face of a clip: its sprite, and its sprite→frame map per frame (NaN where it is absent)."""

    sprite: str
    maps: np.ndarray  # (F, 2, 3)


@dataclass
class Clip:
    """Degraded frames and the truth about them."""

    name: str
    frames: np.ndarray  # (F, H, W, 3) uint8 RGB, degraded
    faces: list[Face]
    backgrounds: list[str]  # per frame
    cut: int | None = None  # the first frame of the second shot

    def present(self, k: int) -> np.ndarray:
        return ~np.isnan(self.faces[k].maps[:, 0, 0])


def _path(n: int, scale=1.0, angle=0.0, x=WIDTH / 2, y=HEIGHT / 2) -> np.ndarray:
    """(n, 4) poses: scale, angle (degrees), centre x, centre y; each a constant or an (n,) array."""
    return np.stack([np.broadcast_to(np.asarray(v, np.float64), (n,)) for v in (scale, angle, x, y)], axis=1)


def _maps(poses: np.ndarray, sprite: Sprite) -> np.ndarray:
    return np.stack([similarity(*p, center=sprite.center) for p in poses])


def make_clip(
    name: str, frames: int = 48, seed: int = 0, degradation: dict[str, tuple[float, float]] | None = None
) -> Clip:
    """One of ``CLIPS``, ``frames`` long, degraded with ``degradation`` (default ``DEGRADATION``).

    still: a static face. pan: constant velocity, 1.5 px/frame. accel: from rest to 4 px/frame and
    back. turn: rotation of ±12° and a ±15 % zoom. cut: a face panning at 1 px/frame, cut in the middle
    to another shot with the same face at the same place (only the cut can end its track there). cross:
    two faces at 2.2 px/frame pass each other, the nearer (larger) one in front, hiding the other.
    """
    sp = sprites()
    t = np.arange(frames, dtype=np.float64)
    u = t / max(1, frames - 1)  # 0 → 1 along the clip
    cx, cy = WIDTH / 2, HEIGHT / 2
    cut = None
    shots = ["coffee"] * frames
    if name == "still":
        faces = [("astronaut", _path(frames))]
    elif name == "pan":
        faces = [
            ("astronaut", _path(frames, x=cx - 0.75 * t.mean() + 1.5 * t, y=cy - 0.2 * t.mean() + 0.4 * t))
        ]
    elif name == "accel":
        v = 4 * np.sin(np.pi * u)  # px/frame: 0 → 4 → 0
        x = np.concatenate([[0], np.cumsum((v[1:] + v[:-1]) / 2)])
        faces = [("astronaut", _path(frames, x=cx + x - x[-1] / 2))]
    elif name == "turn":
        faces = [
            (
                "astronaut",
                _path(frames, scale=1 + 0.15 * np.sin(2 * np.pi * u), angle=12 * np.sin(2 * np.pi * 1.5 * u)),
            )
        ]
    elif name == "cut":
        cut = frames // 2
        x = cx - 0.5 * t.mean() + 1.0 * t
        first, second = _path(frames, x=x), _path(frames, x=x)
        first[cut:] = np.nan
        second[:cut] = np.nan
        faces = [("astronaut", first), ("astronaut", second)]
        shots = ["coffee"] * cut + ["rocket"] * (frames - cut)
    elif name == "cross":
        span = 2.2 * (frames - 1) / 2
        faces = [
            ("astronaut", _path(frames, scale=0.85, x=cx - span + 2.2 * t, y=cy - 25)),
            ("astronaut", _path(frames, scale=1.05, x=cx + span - 2.2 * t, y=cy + 10)),
        ]
    else:
        raise ValueError(f"unknown clip {name!r}; choose one of: {', '.join(CLIPS)}")
    faces_ = [Face(s, _maps(p, sp[s])) for s, p in faces]
    rng = np.random.default_rng(seed)
    bg = backgrounds()
    out = np.empty((frames, HEIGHT, WIDTH, 3), np.uint8)
    for i in range(frames):
        layers = [(sp[f.sprite], f.maps[i]) for f in faces_ if not np.isnan(f.maps[i, 0, 0])]
        out[i] = degrade(composite(bg[shots[i]], layers), rng, degradation or DEGRADATION)
    return Clip(name, out, faces_, shots, cut)


CLIPS = ("still", "pan", "accel", "turn", "cut", "cross")


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[..., :2].swapaxes(-1, -2) + m[..., None, :, 2]


def reference_landmarks(
    detector: CenterFaceDetector, sprite: str, background: str, scale: float
) -> np.ndarray:
    """The detector's 5 landmarks on the clean face, in sprite pixels.

    Detected at the reference pose (upright, at ``scale``, over its background, undegraded) shifted by
    32 sub-pixel offsets that cover 16 px in x and y, and averaged: CenterFace's landmarks carry an error
    that depends on where the face sits on its feature grids (strides 4 to 16, about 3 crop px RMS), and
    one position alone would carry that error into the truth.
    """
    sp = sprites()[sprite]
    offsets = [(i * 0.5, (i * 11 % 32) * 0.5) for i in range(32)]
    maps = [similarity(scale, 0, WIDTH / 2 + dx, HEIGHT / 2 + dy, sp.center) for dx, dy in offsets]
    frames = np.stack([composite(backgrounds()[background], [(sp, m)]) for m in maps])
    found = detect_faces(detector, torch.from_numpy(frames))
    pts = []
    for faces, m in zip(found, maps, strict=True):
        if len(faces) == 0:
            continue
        inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
        pts.append(_apply(inv, faces.landmarks[0].astype(np.float64)))
    if not pts:
        raise RuntimeError(f"the detector does not find the {sprite} face at its reference pose")
    return np.mean(pts, axis=0)


_REFERENCES: dict[tuple[str, str, float], np.ndarray] = {}


def ground_truth(detector: CenterFaceDetector, clip: Clip) -> np.ndarray:
    """(F, K, 5, 2) true landmarks of each face per frame (NaN where absent).

    The reference landmarks (see :func:`reference_landmarks`) at the face's median scale, mapped through
    each frame's known sprite→frame transform.
    """
    out = np.full((len(clip.frames), len(clip.faces), 5, 2), np.nan)
    for k, face in enumerate(clip.faces):
        present = clip.present(k)
        first = int(np.argmax(present))
        scale = round(float(np.median(np.hypot(face.maps[present, 0, 0], face.maps[present, 1, 0]))), 4)
        key = (face.sprite, clip.backgrounds[first], scale)
        if key not in _REFERENCES:
            _REFERENCES[key] = reference_landmarks(detector, *key)
        ref = _REFERENCES[key]
        out[present, k] = _apply(face.maps[present], ref[None])
    return out


# -- running the detector and the stabilizer ----------------------------------------------------------


@dataclass
class Run:
    """The detector's and the stabilizer's output on one clip."""

    clip: Clip
    truth: np.ndarray  # (F, K, 5, 2)
    found: list[Faces]  # per frame, all frames detected
    detect_seconds: float
    cuts: list[int]  # frames the cut detector flagged
    tracked: list[list[TrackedFace]] = field(default_factory=list)  # the stabilizer's faces per frame
    tracks: list[TrackSummary] = field(default_factory=list)
    per_frame: list[list[np.ndarray]] = field(init=False)  # the detector's landmarks per frame, per face

    def __post_init__(self) -> None:
        self.per_frame = [list(f.landmarks) for f in self.found]


def detect_clip(detector: CenterFaceDetector, clip: Clip) -> Run:
    """Run the real detector on every frame, the cut detector too, and derive the ground truth."""
    truth = ground_truth(detector, clip)
    t0 = time.perf_counter()
    found: list[Faces] = []
    for i in range(0, len(clip.frames), 16):
        found += detect_faces(detector, torch.from_numpy(clip.frames[i : i + 16]))
    seconds = time.perf_counter() - t0
    cut_detector = SceneCutDetector()
    cuts = [i for i, frame in enumerate(clip.frames) if cut_detector(frame)]
    return Run(clip, truth, found, seconds, cuts)


def stabilize(run: Run, *, detect_every: int = 1, **options: Any) -> float:
    """Feed the run's detections through a :class:`Stabilizer`; returns its seconds per frame."""
    stabilizer = Stabilizer(**options)
    schedule = DetectionSchedule(detect_every)
    out: list[tuple[int, list[TrackedFace]]] = []
    t0 = time.perf_counter()
    for i, faces in enumerate(run.found):
        cut = i in run.cuts
        out += stabilizer.push(faces if schedule(cut) else None, cut)
    out += stabilizer.flush()
    seconds = (time.perf_counter() - t0) / len(run.found)
    assert [i for i, _ in out] == list(range(len(run.found))), "every frame once, in order"
    run.tracked = [faces for _, faces in out]
    run.tracks = stabilizer.tracks()
    return seconds


# -- metrics ------------------------------------------------------------------------------------------

TEMPLATE = FFHQ_TEMPLATE_512.astype(np.float64)


def crop_error(estimated: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N, 5, 2) landmarks each → (N, 5, 2) displacement of the template points in the 512 crop.

    The crop from the estimated alignment, compared with the true crop: where each FFHQ template point of
    the true crop lands in the estimated one, ``M_est(M_true⁻¹(T)) - T``. Zero for a perfect alignment.
    """
    m_est = estimate_transforms(estimated.astype(np.float32), 512)
    m_true = estimate_transforms(truth.astype(np.float32), 512)
    return _apply(m_est, _apply(invert_affine(m_true), TEMPLATE[None])) - TEMPLATE


def _match(truth: np.ndarray, landmarks: list[np.ndarray]) -> dict[int, int]:
    """True face k → index into ``landmarks`` of the face found for it (centres within half a face)."""
    present = [k for k in range(len(truth)) if not np.isnan(truth[k, 0, 0])]
    if not present or not len(landmarks):
        return {}
    centres = np.array([lm.mean(axis=0) for lm in landmarks])
    cost = np.array(
        [np.linalg.norm(centres - truth[k].mean(axis=0), axis=1) / _eyes(truth[k]) for k in present]
    )
    rows, cols = linear_sum_assignment(np.minimum(cost, 1e6))
    return {present[r]: int(c) for r, c in zip(rows, cols, strict=True) if cost[r, c] < 0.5}


def _eyes(lm: np.ndarray) -> float:
    return float(np.linalg.norm(lm[1] - lm[0]))


def _rms(e: np.ndarray) -> float:
    return float(np.sqrt((e**2).sum(-1).mean())) if len(e) else float("nan")


def _p95(e: np.ndarray) -> float:
    return float(np.percentile(np.sqrt((e**2).sum(-1).mean(-1)), 95)) if len(e) else float("nan")


Picker = Callable[[Run, int], list[np.ndarray]]


def _tracked(run: Run, i: int) -> list[np.ndarray]:
    return [f.landmarks for f in run.tracked[i]]


def alignment_metrics(runs: list[Run], ours: Picker = _tracked) -> dict[str, Any]:
    """Per-frame vs smoothed (``ours``) alignment error against the truth, in 512-crop pixels.

    Over the faces and frames where both found the face:

    * ``rms``, ``p95``: the absolute error, per face and frame the RMS displacement of the 5 template points
      (:func:`crop_error`);
    * ``bias``: the per-frame error's mean over a clip, per face: the detector's systematic error at those
      poses and degradations. No temporal filter can see it, and both methods share it;
    * ``temporal_rms``, ``temporal_p95``: the error about that mean: the part that changes over time;
    * ``jitter``: the RMS change of the error from one frame to the next (crop px per frame): what is seen
      as flicker and shake, where a slow drift is not;
    * ``lag``: see :func:`_lag`.
    """
    rows = []  # (run, frame, face, per-frame landmarks, ours, truth)
    visible = detected = restored = 0
    for r, run in enumerate(runs):
        for i, truth in enumerate(run.truth):
            a, b = _match(truth, run.per_frame[i]), _match(truth, ours(run, i))
            visible += int((~np.isnan(truth[:, 0, 0])).sum())
            detected, restored = detected + len(a), restored + len(b)
            rows += [
                (r, i, k, run.per_frame[i][a[k]], ours(run, i)[b[k]], truth[k]) for k in a.keys() & b.keys()
            ]
    if not rows:
        return {"frames": 0}
    rows.sort(key=lambda row: (row[0], row[2], row[1]))  # each face's frames in a row
    key = np.array([row[:3] for row in rows])
    truth = np.stack([row[5] for row in rows])
    e_a = crop_error(np.stack([row[3] for row in rows]), truth)
    e_b = crop_error(np.stack([row[4] for row in rows]), truth)
    bias = np.zeros_like(e_a)
    for group in np.unique(key[:, [0, 2]], axis=0):
        sel = (key[:, [0, 2]] == group).all(axis=1)
        bias[sel] = e_a[sel].mean(axis=0)
    step = (np.diff(key[:, 1]) == 1) & (np.diff(key[:, 0]) == 0) & (np.diff(key[:, 2]) == 0)  # next frame
    out: dict[str, Any] = {
        "faces_visible": visible,
        "faces_detected": detected,
        "faces_restored": restored,
        "frames": len(rows),
        "bias": _rms(bias),
    }
    for name, e in (("per_frame", e_a), ("smoothed", e_b)):
        out[name] = {
            "rms": _rms(e),
            "p95": _p95(e),
            "temporal_rms": _rms(e - bias),
            "temporal_p95": _p95(e - bias),
            "jitter": _rms(np.diff(e, axis=0)[step]),
        }
    for metric in ("rms", "temporal_rms", "jitter"):
        out[f"ratio_{metric}"] = out["smoothed"][metric] / out["per_frame"][metric]
    out["lag"] = _lag(runs, key, e_a, e_b)
    return out


def _lag(runs: list[Run], key: np.ndarray, e_a: np.ndarray, e_b: np.ndarray) -> dict[str, float]:
    """Mean signed error along the face's motion in the crop, in crop px (positive: trailing behind it).

    ``added`` (smoothed minus per-frame) is the lag the smoothing adds to the detector's own error;
    ``added_edges`` is that over the frames within 8 of the face's first or last frame, where the window is
    one-sided.
    """
    along, edge = [], []
    for n, (r, i, k) in enumerate(key):
        truth = runs[r].truth[:, k]
        present = np.nonzero(~np.isnan(truth[:, 0, 0]))[0]
        lo, hi = max(i - 1, present.min()), min(i + 1, present.max())
        motion = (truth[hi].mean(axis=0) - truth[lo].mean(axis=0)) / max(1, hi - lo)
        direction = estimate_transforms(truth[i][None].astype(np.float32), 512)[0][:, :2] @ motion
        if np.linalg.norm(direction) < 1e-3:  # crop px per frame: not moving
            continue
        direction /= np.linalg.norm(direction)
        along.append([e_a[n].mean(axis=0) @ direction, e_b[n].mean(axis=0) @ direction])
        edge.append(i - present.min() < 8 or present.max() - i < 8)
    if not along:
        return {}
    signed, edges = np.array(along), np.array(edge)
    added = signed[:, 1] - signed[:, 0]
    return {
        "per_frame": float(signed[:, 0].mean()),
        "smoothed": float(signed[:, 1].mean()),
        "added": float(added.mean()),
        "added_edges": float(added[edges].mean()) if edges.any() else float("nan"),
    }


def identity_metrics(run: Run) -> dict[str, Any]:
    """ID switches (a true face's track ID changing between frames), IDs shared by two true faces, cuts."""
    faces = run.truth.shape[1]
    ids: list[list[int]] = [[] for _ in range(faces)]
    for i, truth in enumerate(run.truth):
        for k, j in _match(truth, [f.landmarks for f in run.tracked[i]]).items():
            ids[k].append(run.tracked[i][j].track_id)
    owners: dict[int, set[int]] = {}
    for k, seq in enumerate(ids):
        for track_id in seq:
            owners.setdefault(track_id, set()).add(k)
    cut = run.clip.cut
    return {
        "id_switches": sum(sum(a != b for a, b in zip(seq, seq[1:], strict=False)) for seq in ids),
        "shared_ids": sum(len(v) > 1 for v in owners.values()),
        "tracks": [asdict(t) for t in run.tracks],
        "cut": cut,
        "cuts_found": run.cuts,
        "tracks_spanning_cut": sum(t.first_frame < cut <= t.last_frame for t in run.tracks) if cut else 0,
    }


# -- temporal noise of the restored face ---------------------------------------------------------------


def tiny_checkpoint(directory: Path, noise_strength: float = 0.1) -> Path:
    """A randomly initialised tiny GFP-GAN (64 px, seed 0, the tests' layout) as a checkpoint file.

    Its StyleGAN noise strengths are set to ``noise_strength``: a fresh model's are 0, which would hide the
    flicker that noise drawn per call causes with a trained model, whose strengths are not 0.
    """
    from vidrestore.models.gfpgan import GFPGANConfig, GFPGANv1Clean

    torch.manual_seed(0)
    config = GFPGANConfig(out_size=64, num_style_feat=32, channel_multiplier=1, narrow=0.0625, num_mlp=2)
    state = GFPGANv1Clean(config).state_dict()
    for key, value in state.items():
        if key.startswith("stylegan_decoder.style_conv") and key.endswith(".weight") and value.numel() == 1:
            value.fill_(noise_strength)
    path = directory / "tiny_gfpgan.pth"
    torch.save({"params_ema": state}, path)
    return path


def temporal_noise(restorer: FaceRestorer, run: Run) -> dict[str, float]:
    """Mean absolute frame-to-frame difference of the restored face region, in 8-bit levels.

    On a clip whose face does not move, over the box that the true crop covers. ``official`` is the
    upstream way (per-frame alignment, StyleGAN noise drawn afresh per call); ``ours`` is the smoothed
    alignment with the model's stored noise; the two mixed ones tell the causes apart; ``input`` is the
    degraded clip's own change (compression noise), which no restorer is asked to remove.
    """
    size = restorer.face_size
    frames = torch.from_numpy(run.clip.frames).permute(0, 3, 1, 2).float().div(255).to(restorer.device)
    h, w = frames.shape[2:]
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
    m_true = estimate_transforms(run.truth[:1, 0].astype(np.float32), size)
    pts = _apply(invert_affine(m_true)[0], corners)
    x0, y0 = np.clip(np.floor(pts.min(axis=0)).astype(int), 0, None)
    x1, y1 = np.minimum(np.ceil(pts.max(axis=0)).astype(int), [w, h])

    def landmarks(smoothed: bool) -> tuple[np.ndarray, np.ndarray]:
        index, lms = [], []
        for i, truth in enumerate(run.truth):
            faces = [f.landmarks for f in run.tracked[i]] if smoothed else run.per_frame[i]
            match = _match(truth, faces)
            if 0 in match:
                index.append(i)
                lms.append(faces[match[0]])
        return np.array(index, np.int64), np.array(lms, np.float32).reshape(-1, 5, 2)

    def restore(smoothed: bool, randomize_noise: bool) -> torch.Tensor:
        index, lms = landmarks(smoothed)
        affines = estimate_transforms(lms, size)
        crops, inside = warp_faces(frames, index, affines, size)
        restorer.options.randomize_noise = randomize_noise
        torch.manual_seed(0)
        faces = restorer.restore_faces(crops)
        alpha = crop_alpha(inside, feather_mask(size, frames.device, torch.float32))
        out = frames.clone()
        paste_faces(out, index, affines, faces, alpha)
        return out

    def change(x: torch.Tensor) -> float:
        region = (x[:, :, y0:y1, x0:x1] * 255).round()
        return float((region[1:] - region[:-1]).abs().mean())

    saved = restorer.options.randomize_noise
    try:
        return {
            "input": change(frames),
            "official": change(restore(False, True)),
            "per_frame_alignment_stored_noise": change(restore(False, False)),
            "smoothed_alignment_random_noise": change(restore(True, True)),
            "ours": change(restore(True, False)),
        }
    finally:
        restorer.options.randomize_noise = saved


# -- smoothing candidates, offline ----------------------------------------------------------------------


def _series(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face 0's per-frame rigid points (F, 5, 2), misses interpolated; truth; which frames were found."""
    found = np.zeros(len(run.truth), bool)
    rigid = np.full((len(run.truth), 5, 2), np.nan)
    for i, truth in enumerate(run.truth):
        match = _match(truth, run.per_frame[i])
        if 0 in match:
            found[i] = True
            rigid[i] = rigid_points(run.per_frame[i][match[0]][None])[0]
    t = np.arange(len(rigid))
    for c in np.ndindex(5, 2):
        rigid[:, c[0], c[1]] = np.interp(t, t[found], rigid[found, c[0], c[1]])
    return rigid, run.truth[:, 0], found


def _gaussian(x: np.ndarray, sigma: float, degree: int, window: int = 8) -> np.ndarray:
    """Local polynomial fit of ``degree`` with Gaussian weights over ±``window`` (0: moving average)."""
    out = np.empty_like(x)
    flat = x.reshape(len(x), -1)
    for e in range(len(x)):
        d = np.arange(max(0, e - window), min(len(x), e + window + 1)) - e
        w = np.sqrt(np.exp(-0.5 * (d / sigma) ** 2))[:, None]
        design = np.stack([d**p for p in range(degree + 1)], axis=1).astype(np.float64)
        out[e] = np.linalg.lstsq(design * w, flat[d + e] * w, rcond=None)[0][0].reshape(x.shape[1:])
    return out


def _savgol(x: np.ndarray, half: int, order: int) -> np.ndarray:
    """scipy's Savitzky-Golay filter over ±``half`` frames (fewer in a short clip), fitted at the ends."""
    length = min(2 * half + 1, len(x) - 1 + len(x) % 2)
    return savgol_filter(x, length, min(order, length - 1), axis=0, mode="interp")


def _rts(x: np.ndarray, q: float, window: int = 8) -> np.ndarray:
    """Constant-velocity Kalman filter and RTS smoother (filterpy) over ±``window``; ``q`` per unit noise."""
    n, k = len(x), x[0].size
    flat = x.reshape(n, k)
    noise = noise_level(np.arange(n, dtype=np.float64), flat) or 1.0
    kf = KalmanFilter(dim_x=2 * k, dim_z=k)
    kf.F = np.kron(np.array([[1.0, 1.0], [0.0, 1.0]]), np.eye(k))
    kf.H = np.hstack([np.eye(k), np.zeros((k, k))])
    kf.R = np.eye(k) * noise**2
    kf.Q = np.kron(np.array([[0.25, 0.5], [0.5, 1.0]]), np.eye(k)) * q * noise**2
    out = np.empty_like(flat)
    for e in range(n):
        lo, hi = max(0, e - window), min(n, e + window + 1)
        kf.x = np.concatenate([flat[lo], np.zeros(k)])[:, None]
        kf.P = np.diag(np.concatenate([np.full(k, noise**2), np.full(k, 100.0 * noise**2)]))
        means, covs, _, _ = kf.batch_filter(flat[lo:hi, :, None])
        smoothed, *_ = kf.rts_smoother(means, covs)
        out[e] = smoothed[e - lo, :k, 0]
    return out.reshape(x.shape)


def _one_euro(x: np.ndarray, min_cutoff: float, beta: float) -> np.ndarray:
    """One-Euro filter (Casiez et al.) run forwards and backwards and averaged, to cancel its lag."""

    def alpha(cutoff: np.ndarray | float) -> np.ndarray | float:
        tau = 1 / (2 * np.pi * cutoff)
        return 1 / (1 + tau)

    def causal(y: np.ndarray) -> np.ndarray:
        out, v = np.empty_like(y), np.zeros_like(y[0])
        out[0] = y[0]
        for i in range(1, len(y)):
            v = v + alpha(1.0) * (y[i] - out[i - 1] - v)
            out[i] = out[i - 1] + alpha(min_cutoff + beta * np.abs(v)) * (y[i] - out[i - 1])
        return out

    return (causal(x) + causal(x[::-1])[::-1]) / 2


def _ours(x: np.ndarray, strength: float, window: int = 8) -> np.ndarray:
    """The stabilizer's smoother on one track without gaps: what :class:`Stabilizer` returns for it."""
    out = np.empty_like(x)
    for e in range(len(x)):
        d = np.arange(max(0, e - window), min(len(x), e + window + 1)) - e
        out[e] = (
            smoothing_weights(d.astype(np.float64), x[d + e].reshape(len(d), -1), strength)
            @ x[d + e].reshape(len(d), -1)
        ).reshape(5, 2)
    return out


CANDIDATES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "none (per-frame)": lambda x: x,
    "Gaussian average σ=2": lambda x: _gaussian(x, 2, 0),
    "Gaussian average σ=4": lambda x: _gaussian(x, 4, 0),
    "local linear σ=2": lambda x: _gaussian(x, 2, 1),
    "local linear σ=3": lambda x: _gaussian(x, 3, 1),
    "local linear σ=6": lambda x: _gaussian(x, 6, 1),
    "Savitzky-Golay ±8 order 2": lambda x: _savgol(x, 8, 2),
    "Savitzky-Golay ±4 order 1": lambda x: _savgol(x, 4, 1),
    "RTS q=0.003": lambda x: _rts(x, 0.003),
    "RTS q=0.03": lambda x: _rts(x, 0.03),
    "One-Euro fwd-bwd 0.1/0.0": lambda x: _one_euro(x, 0.1, 0.0),
    "One-Euro fwd-bwd 0.1/0.05": lambda x: _one_euro(x, 0.1, 0.05),
    "ours, strength 0.5": lambda x: _ours(x, 0.5),
    "ours, strength 0.67": lambda x: _ours(x, 2 / 3),
    "ours, strength 1 (default)": lambda x: _ours(x, 1.0),
    "ours, strength 1.33": lambda x: _ours(x, 4 / 3),
}


def compare_smoothers(runs: dict[str, list[Run]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Every candidate in ``CANDIDATES`` on face 0 of each clip's per-frame detections (misses filled in)."""
    series = {name: [_series(run) for run in rs] for name, rs in runs.items()}
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for candidate, smoother in CANDIDATES.items():
        out[candidate] = {}
        for name, rs in runs.items():
            picked = {
                id(run): (smoother(x), found) for run, (x, _, found) in zip(rs, series[name], strict=True)
            }

            def pick(run: Run, i: int, picked: dict = picked) -> list[np.ndarray]:
                smoothed, found = picked[id(run)]
                return [smoothed[i]] if found[i] else []

            out[candidate][name] = alignment_metrics(rs, pick)
    return out


# -- the whole evaluation -------------------------------------------------------------------------------

# A static shot as video has it: blur and scale fixed for the clip, noise and compression per frame.
VIDEO_DEGRADATION = {"blur": (0.8, 0.8), "down": (1.5, 1.5), "noise": (0.0, 6.0), "jpeg": (60.0, 95.0)}
JITTER_DOMINATED = ("still", "static")  # clips whose only change over time is per-frame noise


def run_temporal_eval(
    *,
    frames: int = 64,
    seeds: int = 3,
    window: int = 8,
    strength: float = 1.0,
    weights: Path | None = None,
    detect_every: Sequence[int] = (1, 2, 3, 4),
    candidates: bool = True,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Every figure of the temporal evaluation, as a JSON-serialisable dict.

    ``frames`` per clip, ``seeds`` clips of each kind (degradations drawn anew); the stabilizer with
    ``window`` and ``strength``; ``weights``: the GFP-GAN for the temporal-noise figure (default: a tiny
    random one, which is enough to see alignment and noise flicker, not to judge faces).
    """
    detector = CenterFaceDetector()
    runs: dict[str, list[Run]] = {}
    for name in CLIPS:
        log(f"clip {name}")
        runs[name] = [detect_clip(detector, make_clip(name, frames, seed)) for seed in range(seeds)]
    log("clip static")
    runs["static"] = [
        detect_clip(detector, make_clip("still", frames, seed, VIDEO_DEGRADATION)) for seed in range(seeds)
    ]
    clips: dict[str, Any] = {}
    for name, rs in runs.items():
        stabilize_s = [stabilize(run, window=window, strength=strength) for run in rs]
        ids = [identity_metrics(run) for run in rs]
        clips[name] = {
            "alignment": alignment_metrics(rs),
            "id_switches": sum(i["id_switches"] for i in ids),
            "shared_ids": sum(i["shared_ids"] for i in ids),
            "tracks": [i["tracks"] for i in ids],
            "cut": rs[0].clip.cut,
            "cuts_found": [i["cuts_found"] for i in ids],
            "tracks_spanning_cut": sum(i["tracks_spanning_cut"] for i in ids),
            "detect_ms_per_frame": 1000 * sum(r.detect_seconds for r in rs) / sum(len(r.found) for r in rs),
            "stabilize_ms_per_frame": 1000 * float(np.mean(stabilize_s)),
        }
    result: dict[str, Any] = {
        "settings": {
            "frames": frames,
            "seeds": seeds,
            "window": window,
            "strength": strength,
            "size": [WIDTH, HEIGHT],
            "eye_distance": EYE_DISTANCE,
            "degradation": DEGRADATION,
            "video_degradation": VIDEO_DEGRADATION,
        },
        "clips": clips,
    }
    result["acceptance"] = {
        "jitter_dominated_temporal_ratio": {
            n: clips[n]["alignment"]["ratio_temporal_rms"] for n in JITTER_DOMINATED
        },
        "jitter_dominated_rms_ratio": {n: clips[n]["alignment"]["ratio_rms"] for n in JITTER_DOMINATED},
        "jitter_ratio": {n: c["alignment"]["ratio_jitter"] for n, c in clips.items()},
        "lag_constant_velocity": clips["pan"]["alignment"]["lag"],
        "lag_at_cut": clips["cut"]["alignment"]["lag"],
        "id_switches_crossing": clips["cross"]["id_switches"],
        "tracks_spanning_cut": sum(c["tracks_spanning_cut"] for c in clips.values()),
    }
    acceptance = result["acceptance"]
    lag = acceptance["lag_constant_velocity"]
    acceptance["passed"] = {
        "temporal_error_at_most_a_third": all(
            r <= 1 / 3 for r in acceptance["jitter_dominated_temporal_ratio"].values()
        ),
        "lag_at_most_1px": abs(lag["added"]) <= 1 and abs(lag["added_edges"]) <= 1,
        "no_id_switch_crossing": acceptance["id_switches_crossing"] == 0,
        "no_track_spans_a_cut": acceptance["tracks_spanning_cut"] == 0,
    }
    log("temporal noise")
    with tempfile.TemporaryDirectory() as tmp:
        options = RestoreOptions(weights=weights or tiny_checkpoint(Path(tmp)), detector="centerface")
        restorer = FaceRestorer(options, progress=False)
        result["temporal_noise"] = temporal_noise(restorer, runs["static"][0])
    sweep: dict[str, Any] = {}
    for k in detect_every:
        log(f"detect every {k}")
        copies = {n: [replace(run) for run in runs[n]] for n in ("still", "pan", "accel", "turn", "cross")}
        for rs in copies.values():
            for run in rs:
                stabilize(run, detect_every=k, window=window, strength=strength)
        detect_ms = clips["pan"]["detect_ms_per_frame"] / k
        sweep[str(k)] = {"detect_ms_per_frame": detect_ms} | {
            n: _brief(alignment_metrics(rs))
            | {"id_switches": sum(identity_metrics(r)["id_switches"] for r in rs)}
            for n, rs in copies.items()
        }
    result["detect_every"] = sweep
    if candidates:
        log("smoothing candidates")
        single = {n: runs[n] for n in ("still", "static", "pan", "accel", "turn")}
        result["candidates"] = {
            c: {n: _brief(m) for n, m in per_clip.items()}
            for c, per_clip in compare_smoothers(single).items()
        }
    return result


def _brief(m: dict[str, Any]) -> dict[str, Any]:
    """The smoothed side of :func:`alignment_metrics`, for the sweeps' tables."""
    return {
        "rms": m["smoothed"]["rms"],
        "temporal_ratio": m["ratio_temporal_rms"],
        "jitter_ratio": m["ratio_jitter"],
        "lag_added": m["lag"].get("added", float("nan")),
        "faces_restored": m["faces_restored"],
        "faces_visible": m["faces_visible"],
    }


def format_report(result: dict[str, Any]) -> str:
    """The figures as plain-text tables."""
    lines = []
    clips = result["clips"]
    lines.append("Alignment error, 512-crop px (per-frame detection → vidrestore smoothing)")
    lines.append(
        f"{'clip':8} {'rms':>13} {'p95':>13} {'bias':>5} {'temporal rms':>13} {'ratio':>5} "
        f"{'jitter/frame':>13} {'ratio':>5} {'faces':>9}"
    )
    for name, c in clips.items():
        a = c["alignment"]
        pf, sm = a["per_frame"], a["smoothed"]
        lines.append(
            f"{name:8} {pf['rms']:5.2f} → {sm['rms']:5.2f} {pf['p95']:5.2f} → {sm['p95']:5.2f} "
            f"{a['bias']:5.2f} "
            f"{pf['temporal_rms']:5.2f} → {sm['temporal_rms']:5.2f} {a['ratio_temporal_rms']:5.2f} "
            f"{pf['jitter']:5.2f} → {sm['jitter']:5.2f} {a['ratio_jitter']:5.2f} "
            f"{a['faces_restored']:4}/{a['faces_visible']:<4}"
        )
    lines.append("")
    lines.append("Lag along the motion, crop px (positive: trailing); 'added' = smoothed - per-frame")
    for name in ("pan", "accel", "cut", "cross"):
        lag = clips[name]["alignment"]["lag"]
        lines.append(
            f"{name:8} per-frame {lag['per_frame']:+.2f}  smoothed {lag['smoothed']:+.2f}  "
            f"added {lag['added']:+.2f}  added at track edges {lag['added_edges']:+.2f}"
        )
    lines.append("")
    lines.append("Tracking")
    for name, c in clips.items():
        tracks = ", ".join(
            f"#{t['track_id']} {t['first_frame']}-{t['last_frame']} ({t['faces']})" for t in c["tracks"][0]
        )
        lines.append(
            f"{name:8} ID switches {c['id_switches']}, shared IDs {c['shared_ids']}, "
            f"spanning the cut {c['tracks_spanning_cut']}, cuts {c['cuts_found']} (true {c['cut']}); "
            f"seed 0: {tracks}"
        )
    lines.append("")
    lines.append(
        "Acceptance: "
        + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in result["acceptance"]["passed"].items())
    )
    lines.append("")
    noise = result["temporal_noise"]
    lines.append("Temporal noise: mean |frame-to-frame difference| of the restored face region, 8-bit levels")
    lines.append("  " + "  ".join(f"{k} {v:.2f}" for k, v in noise.items()))
    lines.append("")
    lines.append("Detection every k frames: smoothed rms (crop px) / jitter ratio / faces restored")
    for k, row in result["detect_every"].items():
        cells = "  ".join(
            f"{n} {v['rms']:.2f}/{v['jitter_ratio']:.2f}/{v['faces_restored']}"
            + (f" sw{v['id_switches']}" if v["id_switches"] else "")
            for n, v in row.items()
            if n != "detect_ms_per_frame"
        )
        lines.append(f"k={k} detect {row['detect_ms_per_frame']:5.1f} ms/frame  {cells}")
    if "candidates" in result:
        lines.append("")
        lines.append("Smoothing candidates: rms crop px | temporal ratio | jitter ratio ; lag added on pan")
        names = list(next(iter(result["candidates"].values())))
        lines.append(f"{'':28}" + "".join(f"{n:>20}" for n in names) + f"{'lag':>7}")
        for cand, per_clip in result["candidates"].items():
            cells = "".join(
                f"{v['rms']:6.2f} {v['temporal_ratio']:5.2f} {v['jitter_ratio']:5.2f} "
                for v in per_clip.values()
            )
            lines.append(f"{cand:28}{cells}{per_clip['pan']['lag_added']:+6.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``vidrestore eval temporal``: print the tables and write the figures as JSON."""
    parser = argparse.ArgumentParser(prog="vidrestore eval temporal", description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=64, help="frames per clip (default 64)")
    parser.add_argument("--seeds", type=int, default=3, help="clips of each kind (default 3)")
    parser.add_argument("--window", type=int, default=8, help="look-ahead window, frames (default 8)")
    parser.add_argument("--smooth", type=float, default=1.0, metavar="STRENGTH", help="strength (default 1)")
    parser.add_argument(
        "--weights", type=Path, help="GFP-GAN checkpoint for the temporal noise (default: tiny)"
    )
    parser.add_argument("--detect-every", type=int, nargs="+", default=[1, 2, 3, 4], metavar="K")
    parser.add_argument("--no-candidates", action="store_true", help="skip the smoothing candidates table")
    parser.add_argument("--json", type=Path, help="write all figures here")
    args = parser.parse_args(argv)
    result = run_temporal_eval(
        frames=args.frames,
        seeds=args.seeds,
        window=args.window,
        strength=args.smooth,
        weights=args.weights,
        detect_every=args.detect_every,
        candidates=not args.no_candidates,
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    print(format_report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
