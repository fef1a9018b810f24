"""The seam of a split run: a clip restored whole and in chunks joined by stream copy, frame by frame.

A generated clip with a real face and an AAC track is restored with a tiny random GFP-GAN (the seam does not
depend on the weights) and the offline CenterFace detector, once whole and once in ``--chunks`` chunks cut at
keyframes, each chunk with its own engine call as a worker would make it. Per output: the max and mean
|Δ| (8-bit RGB) per frame near the borders (± the smoother's window) and away from them, the frame count,
whether pts and the audio packets equal the source's, whether the chunks' tracks stitched at the borders are
the whole run's, and the times (whole run; each chunk, whose maximum is the wall time with one worker per
chunk; the join; the packet probe). ffv1 gives the exact comparison; libx264 the realistic one, where the
baseline row is the whole run's own x264 error against its lossless twin.

    python -m benchmarks.bench_chunks [--seconds 4] [--size 320x240] [--chunks 2]
        [--out benchmarks/results/chunks_cpu_<date>.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

from tests.clips import make_clip
from tests.conftest import TINY
from vidrestore import pipeline
from vidrestore.batch.chunks import join_chunks, part_path, plan_chunks, probe, run_chunk, stitch_tracks
from vidrestore.engine import FaceRestorer
from vidrestore.models.gfpgan import GFPGANv1Clean
from vidrestore.options import VideoOptions


def decode(path: Path) -> tuple[list[np.ndarray], list[float]]:
    with av.open(str(path)) as c:
        frames = [(f.to_ndarray(format="rgb24"), float(f.time)) for f in c.decode(video=0)]
    return [f for f, _ in frames], [t for _, t in frames]


def audio_packets(path: Path) -> list[tuple[bytes, int | None]]:
    with av.open(str(path)) as c:
        return [(bytes(p), p.pts) for p in c.demux(c.streams.audio[0]) if p.size]


def compare(a: list[np.ndarray], b: list[np.ndarray], near: set[int]) -> dict:
    diffs = [np.abs(x.astype(np.int16) - y.astype(np.int16)) for x, y in zip(a, b, strict=True)]
    per_max = [int(d.max()) for d in diffs]
    per_mean = [float(d.mean()) for d in diffs]
    far = [i for i in range(len(a)) if i not in near]
    near_i = sorted(near)
    return {
        "max_near": max((per_max[i] for i in near_i), default=0),
        "mean_near": float(np.mean([per_mean[i] for i in near_i])) if near_i else 0.0,
        "max_far": max((per_max[i] for i in far), default=0),
        "mean_far": float(np.mean([per_mean[i] for i in far])) if far else 0.0,
        "per_frame_max_near": {i: per_max[i] for i in near_i},
    }


def run_case(work: Path, ext: str, codec: str, clip: Path, base: dict, chunks: int) -> dict:
    settings = dict(base, codec=codec)
    options = VideoOptions.from_keywords(**settings)
    engine = FaceRestorer(options.engine, progress=False)
    t, cpu = time.perf_counter(), time.process_time()
    whole = pipeline.run(clip, work / f"whole{ext}", options, restorer=engine)
    whole_s, whole_cpu = time.perf_counter() - t, time.process_time() - cpu
    out = work / f"split{ext}"
    plans = plan_chunks(clip, out, settings, chunks=chunks)
    parts, reports, chunk_cpu = [], [], []
    for p in plans:
        parts.append(part_path(out, p.index, p.count))
        cpu = time.process_time()
        reports.append(run_chunk(clip, parts[-1], options, (p.start, p.stop), engine))
        chunk_cpu.append(time.process_time() - cpu)
    t = time.perf_counter()
    join_chunks(clip, parts, out, settings)
    join_s = time.perf_counter() - t
    (a, times_a), (b, times_b) = decode(work / f"whole{ext}"), decode(out)
    src_frames, src_times = decode(clip)
    borders = [p.start for p in plans[1:]]
    window = options.temporal.smooth_window
    near = {i for s in borders for i in range(s - window, s + window) if 0 <= i < len(a)}
    return {
        "codec": codec,
        "container": ext,
        "frames_source": len(src_frames),
        "frames_whole": len(a),
        "frames_split": len(b),
        "chunks": [[p.start, p.stop] for p in plans],
        "pts_equal_source": times_b == src_times,
        "pts_equal_whole": times_b == times_a,
        "audio_packets_equal_source": audio_packets(out) == audio_packets(clip),
        "tracks_whole": [(t["first_frame"], t["last_frame"], t["faces"]) for t in whole.tracks],
        "tracks_chunks": [r.tracks for r in reports],
        "tracks_stitched": stitch_tracks([t for r in reports for t in r.tracks], borders),
        "split_vs_whole": compare(a, b, near),
        "seconds_whole": whole_s,
        "seconds_chunks": [r.seconds for r in reports],
        "seconds_join": join_s,
        "cpu_seconds_whole": whole_cpu,
        "cpu_seconds_chunks": chunk_cpu,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--chunks", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    date = datetime.date.today().isoformat()
    out = args.out or Path("benchmarks/results") / f"chunks_cpu_{date}.json"
    width, height = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["VIDRESTORE_HOME"] = str(work / "home")
        checkpoint = work / "tiny_gfpgan.pth"
        torch.manual_seed(0)
        torch.save({"params_ema": GFPGANv1Clean(TINY).state_dict()}, checkpoint)
        base = dict(weights=str(checkpoint), detector="centerface", progress=False)
        rows = []
        for ext, codec in ((".mkv", "ffv1"), (".mp4", "libx264")):
            clip = make_clip(
                work / f"in{ext}",
                codec="ffv1" if codec == "ffv1" else "libx264",
                size=(width, height),
                seconds=args.seconds,
                gop=24,
            )
            (work / codec).mkdir()
            t = time.perf_counter()
            index = probe(clip.path)
            probe_s = time.perf_counter() - t
            row = run_case(work / codec, ext, codec, clip.path, base, args.chunks)
            row["probe_packets"], row["seconds_probe"] = len(index.pts), probe_s
            rows.append(row)
        # libx264's own error: the whole x264 run against the whole lossless run (same restoration).
        x264, ffv1 = decode(work / "libx264" / "whole.mp4")[0], decode(work / "ffv1" / "whole.mkv")[0]
        baseline = compare(x264, ffv1, set())
    print(
        "\n| output | frames (src/whole/split) | chunks | max |Δ| near borders | mean |Δ| near | "
        "max |Δ| away | pts = source | audio packets = source | tracks stitched = whole | "
        "whole s | chunks s | join s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        d = r["split_vs_whole"]
        cells = (
            f"{r['codec']} {r['container']}",
            f"{r['frames_source']}/{r['frames_whole']}/{r['frames_split']}",
            " ".join(f"[{a},{b})" for a, b in r["chunks"]),
            d["max_near"],
            f"{d['mean_near']:.3f}",
            d["max_far"],
            r["pts_equal_source"],
            r["audio_packets_equal_source"],
            r["tracks_stitched"] == r["tracks_whole"],
            f"{r['seconds_whole']:.1f}",
            " + ".join(f"{s:.1f}" for s in r["seconds_chunks"]),
            f"{r['seconds_join']:.2f}",
            f"{r['cpu_seconds_whole']:.1f}",
            " + ".join(f"{s:.1f}" for s in r["cpu_seconds_chunks"]),
        )
        print("| " + " | ".join(map(str, cells)) + " |")
    print(
        f"\nlibx264's own error (whole x264 vs whole ffv1): max |Δ| {baseline['max_far']}, "
        f"mean {baseline['mean_far']:.3f}"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "date": date,
                "device": "cuda" if torch.cuda.is_available() else "cpu",
                "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()},
                "versions": pipeline.versions(),
                "clip": {"seconds": args.seconds, "size": args.size, "gop": 24, "audio": "aac"},
                "rows": rows,
                "x264_baseline": baseline,
            },
            indent=2,
            default=str,
        )
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
