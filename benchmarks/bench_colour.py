"""--color: how far the pasted face's colour is from the source face's, match vs keep vs restore; black and
white kept exactly neutral; the cost per face on the CPU.

Clips: :mod:`vidrestore.evaluation.clips` (scikit-image's astronaut over real backgrounds, each frame
degraded as in the GFP-GAN paper), restored through :class:`vidrestore.stream.FaceStream` as the CLI restores
them. The colour figures are the run report's own (``film.colour``): the mean distance in Cb/Cr (BT.709, 8-bit
code values) between the face going into the paste and the source face, under the paste mask, per face; the
network figure is the same distance before the colour step, i.e. ``--color restore``. They depend on the
network's output: by default a randomly initialised network (the tiny test configuration, or the full 512 one
with ``--full``); ``--weights FILE`` reruns the same measurement with a real checkpoint. The black-and-white
clip is the same clip turned grey (BT.601 luma in all three channels); its figure is the largest channel
spread of any output pixel (0: exactly neutral). The cost is :func:`vidrestore.faces.colour.colour_faces`
alone, per 512 face (4 faces a call, a 1080p frame each for the black-and-white check).

    python -m benchmarks.bench_colour [--frames 16] [--clips still,turn] [--weights FILE | --full]
        [--out benchmarks/results/colour_cpu_<date>.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from tests.conftest import TINY
from vidrestore.engine import FaceRestorer
from vidrestore.evaluation.clips import DEGRADATION, make_clip
from vidrestore.faces.colour import COLOUR_MODES, colour_faces
from vidrestore.faces.film import FilmContext, FilmState
from vidrestore.models.gfpgan import GFPGANConfig, GFPGANv1Clean
from vidrestore.options import EngineOptions, TemporalOptions
from vidrestore.pipeline import versions
from vidrestore.stream import FaceStream


def _run(engine: FaceRestorer, frames: np.ndarray) -> tuple[dict, int]:
    """The clip through a FaceStream: the report's colour figures and the largest channel spread out."""
    stream = FaceStream(engine, TemporalOptions(frame_batch=8))
    results = [r for f in frames for r in stream.push(f)] + stream.flush()
    spread = 0
    for r, src in zip(results, frames, strict=True):
        out = (src if r.rgb is None else r.rgb).astype(np.int16)
        spread = max(spread, int((out.max(axis=2) - out.min(axis=2)).max()))
    return stream.film.report["colour"], spread


def _cost(repeats: int) -> dict[str, float]:
    """CPU milliseconds per face of the colour step alone (one thread, process time: the shared machine's load
    does not count), each mode, on colour and on grey faces."""
    gen = torch.Generator().manual_seed(0)
    n, s = 4, 512
    colour = torch.rand(n, 3, s, s, generator=gen)
    grey = colour.mean(dim=1, keepdim=True).expand(n, 3, s, s).contiguous()
    restored = torch.rand(n, 3, s, s, generator=gen)
    weight = torch.ones(1, 1, s, s)
    out = {}
    for name, crops in (("colour", colour), ("grey", grey)):
        frames = torch.nn.functional.pad(crops, (0, 1920 - s, 0, 1080 - s), value=0.5)
        for mode in COLOUR_MODES:
            times = []
            for _ in range(repeats):
                context = FilmContext(np.arange(n), np.arange(n), np.arange(n), FilmState())
                t0 = time.process_time()
                colour_faces(restored, crops, weight, frames, np.arange(n), context, mode, False)
                times.append(time.process_time() - t0)
            out[f"{mode}_{name}_ms"] = round(1000 * min(times) / n, 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--clips", default="still,turn")
    ap.add_argument("--weights", type=Path, default=None, help="a real checkpoint (default: random weights)")
    ap.add_argument("--full", action="store_true", help="the full 512 architecture with random weights")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    date = datetime.date.today().isoformat()
    out = args.out or Path("benchmarks/results") / f"colour_cpu_{date}.json"
    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights
        if weights is None:
            torch.manual_seed(0)
            weights = Path(tmp) / "random.pth"
            model = GFPGANv1Clean(GFPGANConfig() if args.full else TINY)
            torch.save({"params_ema": model.state_dict()}, weights)
        network = "real weights" if args.weights else ("full 512, random" if args.full else "tiny, random")
        engines = {
            mode: FaceRestorer(
                EngineOptions(weights=weights, detector="centerface", device="cpu", color=mode),
                progress=False,
            )
            for mode in ("match", "keep", "restore")
        }
        rows = []
        for name in args.clips.split(","):
            clip = make_clip(name, frames=args.frames, degradation=DEGRADATION)
            grey = (clip.frames.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)).round()
            grey = np.repeat(grey.astype(np.uint8)[..., None], 3, axis=3)
            match, _ = _run(engines["match"], clip.frames)
            keep, _ = _run(engines["keep"], clip.frames)
            bw_match, bw_spread_match = _run(engines["match"], grey)
            bw_restore, bw_spread_restore = _run(engines["restore"], grey)
            row = {
                "clip": name,
                "faces": match["faces"],
                "restore": match["chroma_difference_network"],
                "match": match["chroma_difference_out"],
                "keep": keep["chroma_difference_out"],
                "bw_faces": bw_match["faces"],
                "bw_faces_kept_neutral": bw_match["faces_kept_neutral"],
                "bw_network": bw_match["chroma_difference_network"],
                "bw_max_spread_match": bw_spread_match,
                "bw_max_spread_restore": bw_spread_restore,
                "bw_restore_neutral": bw_restore["faces_kept_neutral"],
            }
            rows.append(row)
            print(f"{name}: {row}", flush=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    cost = _cost(args.repeats)
    torch.set_num_threads(threads)
    print(f"\nnetwork: {network}; chroma distance to the source face under the mask (8-bit Cb/Cr codes)")
    print("| clip | faces | restore | match | keep | B&W: network | B&W: max spread out (match, restore) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        cells = (r["clip"], r["faces"], r["restore"], r["match"], r["keep"], r["bw_network"])
        spread = f"{r['bw_max_spread_match']}, {r['bw_max_spread_restore']}"
        print("| " + " | ".join(map(str, cells)) + f" | {spread} |")
    print("\nCPU ms per 512 face, one thread (4 faces a call, with a 1080p frame each):")
    print("| mode | colour faces | grey faces |\n|---|---|---|")
    for mode in COLOUR_MODES:
        print(f"| {mode} | {cost[f'{mode}_colour_ms']} | {cost[f'{mode}_grey_ms']} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "date": date,
                "device": "cpu",
                "machine": {
                    "cpus": os.cpu_count(),
                    "load": os.getloadavg(),
                    "torch_threads": threads,
                },
                "versions": versions(),
                "network": network,
                "frames": args.frames,
                "degradation": DEGRADATION,
                "rows": rows,
                "cost_ms_per_face": cost,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
