"""What detecting on a smaller copy costs: landmark error and missed faces against the temporal clips' truth.

Detecting a frame on a copy ``f`` times smaller is detecting each of its faces at ``1/f`` of its size. The
ground-truth clips of ``vidrestore eval temporal`` (faces of 28 px eye distance) are detected at full size
and at ``f`` = 1.5, 2, 3 and 4; the same clips enlarged ``--enlarge`` times (faces of 56 px) too, as the
larger faces of a 4K frame. The figures are per-frame (no smoothing), with the product's
:func:`~vidrestore.faces.detection.detect_faces`; the error is in 512-crop pixels
(:func:`~vidrestore.evaluation.temporal.crop_error`). The default ``--detect-size`` came from this script::

    python -m benchmarks.detect_size [--frames 32] [--seeds 2] [--json benchmarks/results/detect_size.json]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from vidrestore.evaluation.clips import CLIPS, EYE_DISTANCE, ground_truth, make_clip
from vidrestore.evaluation.temporal import Run, alignment_metrics, match_faces
from vidrestore.faces.detection import CenterFaceDetector, detect_faces

FACTORS = (1.0, 1.5, 2.0, 3.0, 4.0)


def _enlarged(run: Run, k: int) -> Run:
    """The run's clip ``k`` times larger (bicubic), its truth mapped by cv2.resize's pixel-centre rule."""
    frames = np.stack(
        [cv2.resize(f, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC) for f in run.clip.frames]
    )
    return replace(run, clip=replace(run.clip, frames=frames), truth=(run.truth + 0.5) * k - 0.5)


def _measure(detector: CenterFaceDetector, runs: list[Run], factor: float) -> dict[str, Any]:
    found_runs, seconds, frames, visible, matched, extra = [], 0.0, 0, 0, 0, 0
    for run in runs:
        h, w = run.clip.frames.shape[1:3]
        size = None if factor == 1.0 else round(max(h, w) / factor)
        t0 = time.perf_counter()
        found = []
        for i in range(0, len(run.clip.frames), 8):
            found += detect_faces(detector, torch.from_numpy(run.clip.frames[i : i + 8]), detect_size=size)
        seconds += time.perf_counter() - t0
        frames += len(found)
        result = replace(run, found=found)
        for faces, truth in zip(found, run.truth, strict=True):
            hits = len(match_faces(truth, list(faces.landmarks)))
            visible += int((~np.isnan(truth[:, 0, 0])).sum())
            matched, extra = matched + hits, extra + len(faces) - hits
        found_runs.append(result)
    m = alignment_metrics(found_runs, ours=lambda r, i: r.per_frame[i])
    nan = float("nan")
    return {
        "factor": factor,
        "faces_visible": visible,
        "missed": visible - matched,
        "extra": extra,
        "rms": m["per_frame"]["rms"] if matched else nan,
        "p95": m["per_frame"]["p95"] if matched else nan,
        "bias": m["bias"] if matched else nan,
        "ms_per_frame": 1000 * seconds / frames,
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--enlarge", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    detector = CenterFaceDetector()
    runs = []
    for name in CLIPS:
        for seed in range(args.seeds):
            clip = make_clip(name, args.frames, seed)
            runs.append(Run(clip, ground_truth(detector, clip), [], 0.0, []))
    rows = []
    for k in (1, args.enlarge):
        sized = runs if k == 1 else [_enlarged(run, k) for run in runs]
        for factor in FACTORS:
            row = {"eye_distance": EYE_DISTANCE * k} | _measure(detector, sized, factor)
            rows.append(row)
            print(
                f"eyes {row['eye_distance']:5.0f} px, detected at 1/{factor:<3}: "
                f"missed {row['missed']:4d}/{row['faces_visible']}  extra {row['extra']:3d}  "
                f"rms {row['rms']:5.2f}  p95 {row['p95']:5.2f}  bias {row['bias']:5.2f} crop px  "
                f"{row['ms_per_frame']:6.1f} ms/frame",
                flush=True,
            )
    if args.json:
        settings = {"frames": args.frames, "seeds": args.seeds, "clips": list(CLIPS)}
        args.json.write_text(json.dumps({"settings": settings, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
