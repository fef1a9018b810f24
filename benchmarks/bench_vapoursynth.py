"""Throughput of the VapourSynth filter under ``vspipe`` against the CLI engine, on the same clip.

The clip is ``bench_video``'s (H.264 with 1 to 3 real faces moving per frame). Both sides use the same
weights, detector, device and frame batch, and neither counts loading the model, and the
runs alternate between the two sides (the best of each is reported):

* vspipe: ``samples/restore.vpy``'s chain (bestsource, to RGB24, ``restore``, back to 4:2:0) written as y4m
  to /dev/null; the fps is vspipe's own count, which starts once the script is evaluated;
* CLI: ``vidrestore.pipeline.run`` with an engine loaded beforehand, encoding with libx264 ultrafast (the
  cheapest encode it offers; the vspipe side encodes nothing).

On the CPU use the tiny model (the default here); with a GPU, ``--full`` times the 512 model. The goal is
vspipe at 80 % or more of the CLI's frames per second.

    python -m benchmarks.bench_vapoursynth [--full] [--seconds 4] [--size 1280x720] [--out bench-out/vs.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_video import TINY, make_clip, save_weights
from vidrestore.engine import FaceRestorer
from vidrestore.models.gfpgan import GFPGANConfig
from vidrestore.options import VideoOptions
from vidrestore.pipeline import run, versions

SCRIPT = """
import vapoursynth as vs
from vidrestore.plugins.vapoursynth import restore
core = vs.core
clip = core.bs.VideoSource({src!r}, cachemode=0)
rgb = core.resize.Bicubic(clip, format=vs.RGB24, matrix_in_s="709")
rgb = restore(rgb, weights={weights!r}, detector={detector!r}, device={device!r}, dtype={dtype!r},
              detect_size={detect_size!r}, frame_batch={frame_batch!r})
core.resize.Bicubic(rgb, format=clip.format.id, matrix_s="709").set_output()
"""


def vspipe_env(home: Path) -> dict[str, str]:
    """vspipe needs ``vapoursynth config`` once per Python; write it to a private config home."""
    env = {**os.environ, "XDG_CONFIG_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "vapoursynth", "config"], env=env, check=True, capture_output=True)
    return env


def run_vspipe(script: Path, env: dict[str, str]) -> dict:
    t0 = time.perf_counter()
    done = subprocess.run(
        [Path(sys.executable).with_name("vspipe"), "-c", "y4m", script, "/dev/null"],
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if done.returncode:
        raise SystemExit(f"vspipe failed:\n{done.stderr}")
    # vspipe's closing line: "Output 96 frames in 3.21 seconds (29.91 fps)".
    found = re.search(r"Output (\d+) frames in ([\d.]+) seconds \(([\d.]+) fps\)", done.stderr)
    if found is None:
        raise SystemExit(f"no frame count from vspipe:\n{done.stderr}")
    frames, seconds = int(found[1]), float(found[2])
    return {"frames": frames, "seconds": seconds, "fps": frames / seconds, "wall_with_startup": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the 512 model (meant for a GPU)")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--size", default="1280x720", help="WxH of the clip, at least 1280x720")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--detector", default="centerface")
    ap.add_argument("--detect-size", type=int, default=640)
    ap.add_argument("--batch", type=int, default=8, help="frames per engine call, both sides")
    ap.add_argument("--repeat", type=int, default=3, help="runs per side, interleaved; the best is reported")
    ap.add_argument("--work", type=Path, default=Path("bench-out/vapoursynth"))
    ap.add_argument("--out", type=Path, default=Path("bench-out/vapoursynth.json"))
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in args.size.split("x"))
    config = GFPGANConfig() if args.full else TINY
    src, weights = args.work / f"clip_{height}p.mp4", args.work / "weights.pth"
    n = make_clip(src, args.seconds, size=(width, height))
    save_weights(weights, config)

    script = args.work / "bench.vpy"
    script.write_text(
        SCRIPT.format(
            src=str(src.resolve()),
            weights=str(weights.resolve()),
            detector=args.detector,
            device=args.device,
            dtype=args.dtype,
            detect_size=args.detect_size,
            frame_batch=args.batch,
        )
    )
    options = VideoOptions.from_keywords(
        weights=weights,
        detector=args.detector,
        device=args.device,
        dtype=args.dtype,
        detect_size=args.detect_size,
        frame_batch=args.batch,
        preset="ultrafast",
        progress=False,
        overwrite=True,
    )
    restorer = FaceRestorer(options.engine, progress=False)
    vspipe_runs, cli_runs = [], []
    with tempfile.TemporaryDirectory() as home:
        env = vspipe_env(Path(home))
        for _ in range(args.repeat):  # interleaved, so that a change in the machine's load hits both sides
            vspipe_runs.append(run_vspipe(script, env))
            restorer.timings.clear()  # stage times accumulate on the engine
            report = run(src, args.work / "cli.mp4", options, restorer=restorer)
            cli_runs.append(
                {
                    "frames": report.frames,
                    "seconds": report.seconds,
                    "fps": report.fps,
                    "stages": report.stages,
                }
            )
    vspipe = max(vspipe_runs, key=lambda r: r["fps"])
    cli = max(cli_runs, key=lambda r: r["fps"])

    result = {
        "benchmark": f"vspipe vs the CLI engine, {width}x{height} H.264, 1-3 faces per frame",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "model": "GFPGANv1Clean 512" if args.full else f"tiny {config}",
        "frames": n,
        "device": str(restorer.device),
        "dtype": str(restorer.dtype),
        "detector": args.detector,
        "detect_size": args.detect_size,
        "frame_batch": args.batch,
        "cpu_count": os.cpu_count(),
        "versions": versions(),
        "vspipe": vspipe,
        "cli": cli,
        "all_fps": {"vspipe": [r["fps"] for r in vspipe_runs], "cli": [r["fps"] for r in cli_runs]},
        "ratio": vspipe["fps"] / cli["fps"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"{'':8} {'frames':>7} {'seconds':>8} {'fps':>8}")
    for name, side in (("vspipe", vspipe), ("CLI", cli)):
        print(f"{name:8} {side['frames']:>7} {side['seconds']:>8.2f} {side['fps']:>8.2f}")
    print(f"vspipe / CLI: {result['ratio']:.0%} (goal: 80 % or more) → {args.out}")


if __name__ == "__main__":
    main()
