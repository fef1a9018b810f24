"""Peak memory of ``vidrestore restore`` with default options at 720p, 1080p and 4K.

Each size runs in a fresh process (peak RSS is per process), on a generated clip with a real face, with the
full 512 GFP-GAN architecture (random weights in the official layout: memory does not depend on the
values) and the offline CenterFace detector. The run report gives the peak RSS (and VRAM on a GPU) and the
budget the run planned for; the table shows them with the frame batch and detection the plan chose.

    python -m benchmarks.bench_memory [--seconds 0.5] [--sizes 1280x720,1920x1080,3840x2160]
        [--max-memory 12G] [--out benchmarks/results/memory_cpu_<date>.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from tests.clips import make_clip
from vidrestore.models.gfpgan import GFPGANv1Clean
from vidrestore.pipeline import versions


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=0.5)
    ap.add_argument("--sizes", default="1280x720,1920x1080,3840x2160")
    ap.add_argument("--max-memory", default=None, help="passed to every run (default: the run's own)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    date = datetime.date.today().isoformat()
    out = args.out or Path("benchmarks/results") / f"memory_cpu_{date}.json"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        checkpoint = work / "gfpgan_512_random.pth"
        torch.manual_seed(0)
        torch.save({"params_ema": GFPGANv1Clean().state_dict()}, checkpoint)
        for size in args.sizes.split(","):
            width, height = map(int, size.split("x"))
            clip = make_clip(
                work / f"in{height}.mkv", size=(width, height), seconds=args.seconds, audio=False
            )
            report = work / f"report{height}.json"
            cmd = [sys.executable, "-m", "vidrestore.cli", "restore", str(clip.path), "-o"]
            cmd += [str(work / f"out{height}.mkv"), "--weights", str(checkpoint), "--detector", "centerface"]
            cmd += ["--report", str(report), "-q"]
            if args.max_memory:
                cmd += ["--max-memory", args.max_memory]
            subprocess.run(cmd, check=True, env={**os.environ, "VIDRESTORE_HOME": str(work / "home")})
            data = json.loads(report.read_text())
            rows.append(
                {
                    "size": size,
                    "frames": data["frames"],
                    "faces": data["faces"],
                    "seconds": data["seconds"],
                    "budget_mb": data["memory_budget_mb"],
                    "peak_rss_mb": data["peak_rss_mb"],
                    "peak_vram_mb": data["peak_vram_mb"],
                    "notices": data["notices"],
                }
            )
            print(
                f"{size:>10}  peak RSS {data['peak_rss_mb']:>6} MB  budget {data['memory_budget_mb']:>6} MB"
            )
    print("\n| size | frames | peak RSS (MB) | budget (MB) | peak VRAM (MB) | plan |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        plan = "; ".join(r["notices"]) or "as asked"
        cells = (r["size"], r["frames"], r["peak_rss_mb"], r["budget_mb"], r["peak_vram_mb"], plan)
        print("| " + " | ".join(map(str, cells)) + " |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "date": date,
                "device": "cuda" if torch.cuda.is_available() else "cpu",
                "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()},
                "versions": versions(),
                "max_memory": args.max_memory,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
