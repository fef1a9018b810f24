"""Temporal-stability evaluation of the product's streaming path: alignment error, lag, ID switches, flicker.

The real offline detector (CenterFace) runs on ground-truth clips (:mod:`vidrestore.evaluation.clips`); its
detections go through :class:`vidrestore.stream.FaceStream`, the same streaming core that ``vidrestore
restore`` and the VapourSynth filter run, and the restored faces' flicker is measured on that core's output.
The true alignment is ``estimate_transforms`` of the true landmarks. Errors are in 512-crop pixels
(:func:`crop_error`, :func:`alignment_metrics`): per-frame detection (what peers do) against the stream's.

``vidrestore eval temporal [--json FILE]`` prints every table (about 3 minutes on 2 CPU cores). The
smoother bake-off that chose the product's smoother is ``benchmarks/smoothers.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from vidrestore.engine import FaceRestorer
from vidrestore.evaluation.clips import (
    CLIPS,
    DEGRADATION,
    EYE_DISTANCE,
    HEIGHT,
    VIDEO_DEGRADATION,
    WIDTH,
    Clip,
    apply_affine,
    ground_truth,
    make_clip,
)
from vidrestore.faces.alignment import FFHQ_TEMPLATE_512, estimate_transforms, invert_affine
from vidrestore.faces.detection import CenterFaceDetector, Faces, detect_faces
from vidrestore.faces.tracking import SceneCutDetector, TrackedFace, TrackSummary
from vidrestore.options import EngineOptions, TemporalOptions
from vidrestore.stream import FaceStream, StreamResult

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


def stabilize(
    run: Run,
    *,
    detect_every: int = 1,
    window: int = 8,
    strength: float = 1.0,
    tracker: FaceRestorer | None = None,
) -> float:
    """The run's frames through a tracking-only :class:`FaceStream`; returns its seconds per frame.

    The stream asks for the run's stored detections instead of running the detector again, so every
    setting sees the same detections; everything else is the product's streaming path.
    """
    temporal = TemporalOptions(smooth=strength, smooth_window=window, detect_every=detect_every)
    stream = FaceStream(tracker or _tracker(), temporal, detect=_stored(run))
    t0 = time.perf_counter()
    out = _stream(stream, run)
    seconds = (time.perf_counter() - t0) / len(run.found)
    run.tracked = [r.faces for r in out]
    run.tracks = stream.tracks()
    return seconds


def _tracker() -> FaceRestorer:
    """An engine without a network: the stream tracks and smooths, and restores nothing."""
    return FaceRestorer(EngineOptions(detector="centerface", device="cpu"), progress=False, load_model=False)


def _stored(run: Run) -> Callable[[torch.Tensor, Sequence[Hashable]], list[Faces]]:
    """A detector for the stream that answers with the run's detections of the frames it is asked for."""
    return lambda _pixels, frames: [run.found[i] for i in frames]


def _stream(stream: FaceStream, run: Run) -> list[StreamResult]:
    """Every frame of the run's clip through ``stream``, checked to come back once each, in order.

    The run's cuts (found by the same scene-cut detector in :func:`detect_clip`) are handed in with the
    frames, like its detections, so that a test can take them away."""
    out = [r for i, frame in enumerate(run.clip.frames) for r in stream.push(frame, cut=i in run.cuts)]
    out += stream.flush()
    if [r.tag for r in out] != list(range(len(run.found))):
        raise RuntimeError("the stream must return every frame once, in order")
    return out


# -- metrics ------------------------------------------------------------------------------------------

TEMPLATE = FFHQ_TEMPLATE_512.astype(np.float64)


def crop_error(estimated: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(N, 5, 2) landmarks each → (N, 5, 2) displacement of the template points in the 512 crop.

    The crop from the estimated alignment, compared with the true crop: where each FFHQ template point of
    the true crop lands in the estimated one, ``M_est(M_true⁻¹(T)) - T``. Zero for a perfect alignment.
    """
    m_est = estimate_transforms(estimated.astype(np.float32), 512)
    m_true = estimate_transforms(truth.astype(np.float32), 512)
    return apply_affine(m_est, apply_affine(invert_affine(m_true), TEMPLATE[None])) - TEMPLATE


def match_faces(truth: np.ndarray, landmarks: list[np.ndarray]) -> dict[int, int]:
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
            a, b = match_faces(truth, run.per_frame[i]), match_faces(truth, ours(run, i))
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
        for k, j in match_faces(truth, [f.landmarks for f in run.tracked[i]]).items():
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


def temporal_noise(
    options: EngineOptions, run: Run, *, window: int = 8, strength: float = 1.0
) -> dict[str, float]:
    """Mean absolute frame-to-frame difference of the restored face region, in 8-bit levels.

    On a clip whose face does not move, over the box that the true crop covers, each figure from the
    streaming core's output with the engine ``options``, changed only as named: ``official`` is the
    upstream way (per-frame alignment, StyleGAN noise drawn afresh per call); ``ours`` is the product's
    (smoothed alignment, the model's stored noise); the two mixed ones tell the causes apart; ``input`` is
    the degraded clip's own change (compression noise), which no restorer is asked to remove.
    """
    size = 512
    h, w = run.clip.frames.shape[1:3]
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
    m_true = estimate_transforms(run.truth[:1, 0].astype(np.float32), size)
    pts = apply_affine(invert_affine(m_true)[0], corners)
    x0, y0 = np.clip(np.floor(pts.min(axis=0)).astype(int), 0, None)
    x1, y1 = np.minimum(np.ceil(pts.max(axis=0)).astype(int), [w, h])

    def restored(smoothed: bool, randomize_noise: bool) -> np.ndarray:
        engine = FaceRestorer(options.replace(randomize_noise=randomize_noise), progress=False)
        temporal = TemporalOptions(smooth=strength if smoothed else 0.0, smooth_window=window)
        torch.manual_seed(0)
        out = _stream(FaceStream(engine, temporal, detect=_stored(run)), run)
        return np.stack([run.clip.frames[r.tag] if r.rgb is None else r.rgb for r in out])

    def change(frames: np.ndarray) -> float:
        region = frames[:, y0:y1, x0:x1].astype(np.float64)
        return float(np.abs(region[1:] - region[:-1]).mean())

    return {
        "input": change(run.clip.frames),
        "official": change(restored(False, True)),
        "per_frame_alignment_stored_noise": change(restored(False, False)),
        "smoothed_alignment_random_noise": change(restored(True, True)),
        "ours": change(restored(True, False)),
    }


# -- the whole evaluation -------------------------------------------------------------------------------

JITTER_DOMINATED = ("still", "static")  # clips whose only change over time is per-frame noise


def run_temporal_eval(
    *,
    frames: int = 64,
    seeds: int = 3,
    window: int = 8,
    strength: float = 1.0,
    weights: Path | None = None,
    detect_every: Sequence[int] = (1, 2, 3, 4),
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Every figure of the temporal evaluation, as a JSON-serialisable dict.

    ``frames`` per clip, ``seeds`` clips of each kind (degradations drawn anew); the stabilizer with
    ``window`` and ``strength``; ``weights``: the GFP-GAN for the temporal-noise figure (default: a tiny
    random one, which is enough to see alignment and noise flicker, not to judge faces).
    """
    detector, tracker = CenterFaceDetector(), _tracker()
    runs: dict[str, list[Run]] = {}
    for name in CLIPS:
        log(f"clip {name}")
        runs[name] = [detect_clip(detector, make_clip(name, frames, seed)) for seed in range(seeds)]
    log("clip static")
    runs["static"] = [
        detect_clip(detector, make_clip("still", frames, seed, VIDEO_DEGRADATION)) for seed in range(seeds)
    ]
    clips = {name: _clip_figures(rs, tracker, window, strength) for name, rs in runs.items()}
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
        "acceptance": _acceptance(clips),
    }
    log("temporal noise")
    with tempfile.TemporaryDirectory() as tmp:
        options = EngineOptions(weights=weights or tiny_checkpoint(Path(tmp)), detector="centerface")
        static = runs["static"][0]
        result["temporal_noise"] = temporal_noise(options, static, window=window, strength=strength)
    sweep: dict[str, Any] = {}
    for k in detect_every:
        log(f"detect every {k}")
        copies = {n: [replace(run) for run in runs[n]] for n in ("still", "pan", "accel", "turn", "cross")}
        for rs in copies.values():
            for run in rs:
                stabilize(run, detect_every=k, window=window, strength=strength, tracker=tracker)
        sweep[str(k)] = {"detect_ms_per_frame": clips["pan"]["detect_ms_per_frame"] / k} | {
            n: brief(alignment_metrics(rs))
            | {"id_switches": sum(identity_metrics(r)["id_switches"] for r in rs)}
            for n, rs in copies.items()
        }
    result["detect_every"] = sweep
    return result


def _clip_figures(runs: list[Run], tracker: FaceRestorer, window: int, strength: float) -> dict[str, Any]:
    """Alignment, identity and timing figures of one kind of clip, over its seeds."""
    stabilize_s = [stabilize(run, window=window, strength=strength, tracker=tracker) for run in runs]
    ids = [identity_metrics(run) for run in runs]
    return {
        "alignment": alignment_metrics(runs),
        "id_switches": sum(i["id_switches"] for i in ids),
        "shared_ids": sum(i["shared_ids"] for i in ids),
        "tracks": [i["tracks"] for i in ids],
        "cut": runs[0].clip.cut,
        "cuts_found": [i["cuts_found"] for i in ids],
        "tracks_spanning_cut": sum(i["tracks_spanning_cut"] for i in ids),
        "detect_ms_per_frame": 1000 * sum(r.detect_seconds for r in runs) / sum(len(r.found) for r in runs),
        "stabilize_ms_per_frame": 1000 * float(np.mean(stabilize_s)),
    }


def _acceptance(clips: dict[str, Any]) -> dict[str, Any]:
    """The figures the acceptance criteria are on, and whether each criterion passed."""
    acceptance: dict[str, Any] = {
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
    lag = acceptance["lag_constant_velocity"]
    acceptance["passed"] = {
        "temporal_error_at_most_a_third": all(
            r <= 1 / 3 for r in acceptance["jitter_dominated_temporal_ratio"].values()
        ),
        "lag_at_most_1px": abs(lag["added"]) <= 1 and abs(lag["added_edges"]) <= 1,
        "no_id_switch_crossing": acceptance["id_switches_crossing"] == 0,
        "no_track_spans_a_cut": acceptance["tracks_spanning_cut"] == 0,
    }
    return acceptance


def brief(m: dict[str, Any]) -> dict[str, Any]:
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
    parser.add_argument("--json", type=Path, help="write all figures here")
    args = parser.parse_args(argv)
    result = run_temporal_eval(
        frames=args.frames,
        seeds=args.seeds,
        window=args.window,
        strength=args.smooth,
        weights=args.weights,
        detect_every=args.detect_every,
        log=lambda msg: print(msg, file=sys.stderr, flush=True),
    )
    print(format_report(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
