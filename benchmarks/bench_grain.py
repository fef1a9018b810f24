"""Grain match: the noise level inside the pasted face over that in a ring around it, --grain auto vs off.

Clips from :mod:`vidrestore.evaluation.clips` (the astronaut's face over a real background, the paper's
degradations drawn per frame), with film grain added over the degraded picture (``add_film_grain``), are
restored through ``FaceStream`` with the full 512 GFP-GAN architecture (random weights in the official
layout: no real weights can be downloaded here; ``--weights`` reruns it unchanged on real ones) and the
offline CenterFace detector. The level is the robust σ of the finest band (``faces/grain.py``'s
``high_band``, in 8-bit codes, mean of the channels) inside an ellipse on the face's skin and in a ring
outside the pasted crop, both placed from the clip's known face path. A ratio of 1 means the restored face
is as grainy as the film around it. The network runs once per frame: both settings restore the same crops.
Also timed: ``match_grain`` alone, per face, on 512 crops.

    python -m benchmarks.bench_grain [--frames 10] [--clips still,pan] [--strengths 4,8] [--weights PTH]
        [--out benchmarks/results/grain_cpu_<date>.json] [--still docs/grain.png]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from vidrestore.engine import FaceRestorer
from vidrestore.evaluation.clips import EYE_DISTANCE, add_film_grain, apply_affine, make_clip, sprites
from vidrestore.faces.film import FilmContext, FilmState
from vidrestore.faces.grain import high_band, match_grain, robust_sigma
from vidrestore.models.gfpgan import GFPGANv1Clean
from vidrestore.options import EngineOptions, TemporalOptions
from vidrestore.pipeline import versions
from vidrestore.stream import FaceStream

FACE = (0.6, 0.8)  # half axes of the skin ellipse, in eye distances
RING = (2.9, 3.6)  # the ring's radii, in eye distances: outside the pasted crop (its corners at 2.9)


def regions(clip, k: int, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per frame, the (H, W) masks of the face's skin and of the ring of film around the pasted crop."""
    sp = sprites()[clip.faces[k].sprite]
    ys, xs = np.mgrid[: shape[0], : shape[1]]
    faces, rings = [], []
    for m in clip.faces[k].maps:
        scale = float(np.hypot(m[0, 0], m[1, 0]))
        ed = EYE_DISTANCE * scale  # sprites are scaled so that their eyes are EYE_DISTANCE px apart
        cx, cy = apply_affine(m, np.array([[sp.center[0], sp.center[1] - 0.2 * EYE_DISTANCE]]))[0]
        r = np.hypot(xs - cx, ys - cy) / ed
        faces.append(((xs - cx) / FACE[0]) ** 2 + ((ys - cy) / FACE[1]) ** 2 <= ed**2)
        rings.append((r >= RING[0]) & (r <= RING[1]))
    return np.stack(faces), np.stack(rings)


def level(frame: np.ndarray, region: np.ndarray) -> float:
    """The finest band's robust σ in ``region`` of an (H, W, 3) uint8 frame, in codes, mean of channels."""
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    band = high_band(x)[0][:, torch.from_numpy(region)]
    return float(robust_sigma(band).mean())


def restore(engine: FaceRestorer, frames: np.ndarray, grain: str) -> tuple[np.ndarray, dict]:
    """The clip through one FaceStream with ``--grain grain``; the frames and what the grain step reported."""
    engine.options = engine.options.replace(grain=grain)
    stream = FaceStream(engine, TemporalOptions(frame_batch=4))
    results = []
    for frame in frames:
        results += stream.push(frame)
    results += stream.flush()
    out = np.stack([frames[r.tag] if r.rgb is None else r.rgb for r in results])
    return out, stream.film.report.get("grain", {})


def memoised(network):
    """The network, run once per distinct input batch: both settings restore the same crops."""
    seen: dict[str, torch.Tensor] = {}

    def run(inputs: torch.Tensor) -> torch.Tensor:
        key = hashlib.sha1(inputs.cpu().numpy().tobytes()).hexdigest()
        if key not in seen:
            seen[key] = network(inputs)
        return seen[key].clone()

    return run


def time_grain(engine: FaceRestorer, faces: int = 4, repeats: int = 3) -> float:
    """Seconds per face of ``match_grain`` alone, on 512 crops of a grainy 720p frame."""
    rng = np.random.default_rng(0)
    frame = add_film_grain(np.full((720, 1280, 3), 128, np.uint8), 6.0, seed=1)
    frames = torch.from_numpy(frame).permute(2, 0, 1)[None].float().div(255).to(engine.device)
    size = engine.out_size
    scale = size / 4.06 / 60  # faces with eyes 60 px apart
    affines = np.stack(
        [
            [[scale, 0, -scale * x + size / 2], [0, scale, -scale * 360 + size / 2]]
            for x in (240, 520, 800, 1080)
        ]
    )[:faces]
    restored = torch.from_numpy(rng.random((faces, 3, size, size), np.float32)).to(engine.device)
    index = np.zeros(faces, np.int64)
    best = float("inf")
    for _ in range(repeats):
        context = FilmContext(np.arange(faces), np.zeros(1, np.int64), np.zeros(1, np.int64), FilmState())
        t0 = time.perf_counter()
        match_grain(restored, frames, index, affines, context, "auto")
        best = min(best, time.perf_counter() - t0)
    return best / faces


def still(off: np.ndarray, auto: np.ndarray, face: np.ndarray, path: Path) -> None:
    """The README's before/after: the same face pasted plain and grain-matched, side by side, 2x."""
    ys, xs = np.nonzero(face)
    cy, cx, half = int(ys.mean()), int(xs.mean()), 56
    box = (slice(max(0, cy - half), cy + half), slice(max(0, cx - half), cx + half))
    pair = np.concatenate([off[box], np.full((off[box].shape[0], 4, 3), 255, np.uint8), auto[box]], axis=1)
    pair = cv2.resize(pair, None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), pair[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--clips", default="still,pan")
    ap.add_argument("--strengths", default="4,8", help="film grain σ at mid-grey, in 8-bit codes")
    ap.add_argument("--weights", type=Path, default=None, help="a real checkpoint (default: random 512)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--still", type=Path, default=None, help="write the before/after crop here")
    args = ap.parse_args()
    date = datetime.date.today().isoformat()
    out = args.out or Path("benchmarks/results") / f"grain_cpu_{date}.json"
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if weights is None:
            torch.manual_seed(0)
            weights = Path(tmp) / "gfpgan_512_random.pth"
            torch.save({"params_ema": GFPGANv1Clean().state_dict()}, weights)
        engine = FaceRestorer(
            EngineOptions(weights=weights, detector="centerface", device="cpu"), progress=False
        )
    engine.restore_faces = memoised(engine.restore_faces)
    rows = []
    seconds = {"restore": 0.0, "grain": 0.0, "faces": 0}
    for name in args.clips.split(","):
        clip = make_clip(name, frames=args.frames, seed=1)
        face, ring = regions(clip, 0, clip.frames.shape[1:3])
        for strength in map(float, args.strengths.split(",")):
            grainy = add_film_grain(clip.frames, strength, seed=2)
            row = {"clip": name, "film_grain": strength, "frames": args.frames}
            row["input_ratio"] = float(
                np.mean([level(f, a) / level(f, b) for f, a, b in zip(grainy, face, ring, strict=True)])
            )
            outputs = {}
            for grain in ("auto", "off"):
                before = dict(engine.timings)
                frames, report = restore(engine, grainy, grain)
                for stage in ("restore", "grain"):
                    seconds[stage] += engine.timings[stage] - before.get(stage, 0.0)
                seconds["faces"] += report.get("faces", 0) if grain == "auto" else 0
                outputs[grain] = frames
                inside = [level(f, a) for f, a in zip(frames, face, strict=True)]
                around = [level(f, b) for f, b in zip(frames, ring, strict=True)]
                row[f"face_{grain}"] = float(np.mean(inside))
                row[f"ring_{grain}"] = float(np.mean(around))
                row[f"ratio_{grain}"] = float(np.mean(np.divide(inside, around)))
                row[f"report_{grain}"] = report
            rows.append(row)
            print(
                f"{name:>6} grain {strength:>3g}: ratio auto {row['ratio_auto']:.2f}  "
                f"off {row['ratio_off']:.2f}  (input {row['input_ratio']:.2f}; ring {row['ring_auto']:.2f})"
            )
            if args.still and name == "still" and strength == max(map(float, args.strengths.split(","))):
                still(outputs["off"][0], outputs["auto"][0], face[0], args.still)
    per_face = time_grain(engine)
    print("\n| clip | film grain (codes) | face / ring, --grain auto | --grain off | input | ring (codes) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = (
            r["clip"],
            f"{r['film_grain']:g}",
            f"{r['ratio_auto']:.2f}",
            f"{r['ratio_off']:.2f}",
            f"{r['input_ratio']:.2f}",
            f"{r['ring_auto']:.2f}",
        )
        print("| " + " | ".join(cells) + " |")
    faces = max(1, seconds["faces"])
    network, in_stream = seconds["restore"] / faces, seconds["grain"] / faces
    print(
        f"\nper face, in the runs: network {network:.2f} s, grain {in_stream * 1000:.0f} ms "
        f"({100 * in_stream / network:.1f} %); match_grain alone on 720p: {per_face * 1000:.0f} ms "
        f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "date": date,
                "cpu": platform.processor() or platform.machine(),
                "threads": torch.get_num_threads(),
                "weights": "random 512 GFPGANv1Clean" if args.weights is None else str(args.weights),
                "versions": versions(),
                "load_average": os.getloadavg()[0],
                "network_seconds_per_face": network,
                "grain_seconds_per_face_in_runs": in_stream,
                "grain_seconds_per_face_720p": per_face,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"raw results: {out}")


if __name__ == "__main__":
    main()
