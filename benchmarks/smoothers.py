"""The smoother bake-off: which temporal filter the stream's :class:`Stabilizer` should use.

Every candidate runs offline on face 0 of each ground-truth clip's per-frame detections (misses filled in),
and is scored with the same alignment metrics as ``vidrestore eval temporal``. The product's smoother is
"ours" (``vidrestore.faces.tracking.smoothing_weights``); the table in BENCHMARKS.md came from this script::

    python -m benchmarks.smoothers [--frames 64] [--seeds 3] [--json benchmarks/results/smoothers.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from filterpy.kalman import KalmanFilter
from scipy.signal import savgol_filter

from vidrestore.evaluation.clips import VIDEO_DEGRADATION, make_clip
from vidrestore.evaluation.temporal import Run, alignment_metrics, brief, detect_clip, match_faces
from vidrestore.faces.detection import CenterFaceDetector
from vidrestore.faces.tracking import noise_level, rigid_points, smoothing_weights

CLIPS = ("still", "static", "pan", "accel", "turn")


def _series(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Face 0's per-frame rigid points (F, 5, 2), misses interpolated; truth; which frames were found."""
    found = np.zeros(len(run.truth), bool)
    rigid = np.full((len(run.truth), 5, 2), np.nan)
    for i, truth in enumerate(run.truth):
        match = match_faces(truth, run.per_frame[i])
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


def run_bakeoff(frames: int = 64, seeds: int = 3) -> dict[str, dict[str, dict[str, Any]]]:
    """Each candidate's brief metrics per clip kind."""
    detector = CenterFaceDetector()
    runs = {}
    for name in CLIPS:
        kind, degradation = ("still", VIDEO_DEGRADATION) if name == "static" else (name, None)
        runs[name] = [
            detect_clip(detector, make_clip(kind, frames, seed, degradation)) for seed in range(seeds)
        ]
    return {c: {n: brief(m) for n, m in per_clip.items()} for c, per_clip in compare_smoothers(runs).items()}


def format_table(result: dict[str, dict[str, dict[str, Any]]]) -> str:
    lines = ["Smoothing candidates: rms crop px | temporal ratio | jitter ratio ; lag added on pan"]
    names = list(next(iter(result.values())))
    lines.append(f"{'':28}" + "".join(f"{n:>20}" for n in names) + f"{'lag':>7}")
    for cand, per_clip in result.items():
        cells = "".join(
            f"{v['rms']:6.2f} {v['temporal_ratio']:5.2f} {v['jitter_ratio']:5.2f} " for v in per_clip.values()
        )
        lines.append(f"{cand:28}{cells}{per_clip['pan']['lag_added']:+6.2f}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=64, help="frames per clip (default 64)")
    parser.add_argument("--seeds", type=int, default=3, help="clips of each kind (default 3)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    result = run_bakeoff(args.frames, args.seeds)
    print(format_table(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
