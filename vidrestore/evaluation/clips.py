"""Ground-truth clips for the temporal evaluation: a real face moved along known paths, degraded per frame.

A real face (scikit-image's ``astronaut``) is moved along known similarity paths over real backgrounds, and
every frame is degraded with its own randomly drawn blur, downsampling, noise and JPEG quality, as in the
GFP-GAN paper (with milder ranges, so that the offline detector still finds a face of about 28 px eye
distance). The ground truth is the detector's landmarks on the clean face at the reference pose (averaged
over sub-pixel shifts, see :func:`reference_landmarks`), carried through each frame's known transform.

scikit-image provides the pictures; it is an extra (``pip install 'vidrestore[eval]'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import cv2
import numpy as np
import torch

from vidrestore.errors import VidrestoreError
from vidrestore.faces.detection import CenterFaceDetector, detect_faces

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
    data = _skimage_data()

    return {"astronaut": _sprite(data.astronaut(), (93, 0, 353, 260), 44.0)}


@cache
def backgrounds() -> dict[str, np.ndarray]:
    data = _skimage_data()

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


def apply_affine(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
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
        pts.append(apply_affine(inv, faces.landmarks[0].astype(np.float64)))
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
        out[present, k] = apply_affine(face.maps[present], ref[None])
    return out


# A static shot as video has it: blur and scale fixed for the clip, noise and compression per frame.
VIDEO_DEGRADATION = {"blur": (0.8, 0.8), "down": (1.5, 1.5), "noise": (0.0, 6.0), "jpeg": (60.0, 95.0)}


def _skimage_data():
    """scikit-image's sample pictures, or one line saying how to get them."""
    try:
        from skimage import data
    except ImportError:
        raise VidrestoreError(
            "the temporal evaluation needs scikit-image: pip install 'vidrestore[eval]'"
        ) from None
    return data


def add_film_grain(frames: np.ndarray, strength: float, seed: int = 0, size: float = 0.8) -> np.ndarray:
    """Film grain over (F, H, W, 3) or (H, W, 3) uint8 RGB frames, fresh in every frame.

    ``strength`` is the grain's standard deviation in 8-bit code values where it is strongest (mid-grey);
    it falls off towards black and white as ``2·sqrt(y·(1 − y))`` of the pixel's luma ``y``, as grain does
    on a print. The grain is spatially correlated (white noise blurred with a Gaussian of ``size`` px, then
    renormalised), mostly shared by the three channels (luma grain) with a weaker per-channel part (dye
    clouds). Each frame draws its own grain from one generator seeded with ``seed``, so a clip is
    reproducible and its grain still moves like real grain.
    """
    if strength < 0:
        raise ValueError(f"grain strength must be ≥ 0, not {strength}")
    single = frames.ndim == 3
    clip = frames[None] if single else frames
    rng = np.random.default_rng(seed)
    out = np.empty_like(clip)
    for i, frame in enumerate(clip):
        x = frame.astype(np.float32)
        luma = (x @ np.array([0.299, 0.587, 0.114], np.float32)) / 255
        envelope = 2 * np.sqrt(np.clip(luma * (1 - luma), 0, 0.25))
        white = rng.standard_normal((4, *frame.shape[:2])).astype(np.float32)
        noise = np.stack([cv2.GaussianBlur(w, (0, 0), size) for w in white]) if size > 0 else white
        noise /= noise.reshape(4, -1).std(axis=1)[:, None, None]
        grain = 0.85 * noise[0][..., None] + np.sqrt(1 - 0.85**2) * np.moveaxis(noise[1:], 0, -1)
        out[i] = np.clip(x + strength * envelope[..., None] * grain, 0, 255).round().astype(np.uint8)
    return out[0] if single else out
