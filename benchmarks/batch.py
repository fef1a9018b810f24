"""The batch runner on this machine: what the driver costs per file, what loading the model once saves, and a
kill -9 of the driver followed by a rerun, summarised from the manifest.

Clips are copies of one generated 160x120 clip with a face (``--seconds`` long, no audio); the network is the
64 px test GFP-GAN (random weights in the official layout) and the detector the offline CenterFace, so the
figures are the runner's overheads, not restoration speed.

1. driver overhead: ``run_batch`` over ``--files`` clips with a worker that only copies the file (plan, probe,
   manifest lines fsynced, report), then the rerun that finds everything done;
2. model loaded once: ``--compare`` clips through the in-process executor, against as many separate
   ``vidrestore restore`` processes;
3. kill -9: ``vidrestore batch`` in a subprocess over ``--compare`` clips, killed after its first file, then
   the same command again; the manifest says which files were done by which run.

    python -m benchmarks.batch [--files 40] [--compare 4] [--seconds 0.25]
        [--out benchmarks/results/batch_cpu_<date>.json]
"""

from __future__ import annotations

import argparse
import collections
import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from tests.clips import make_clip
from vidrestore.batch import run_batch
from vidrestore.batch.local import LocalExecutor
from vidrestore.batch.manifest import read_records
from vidrestore.batch.work import FileJob, FileResult
from vidrestore.models.gfpgan import GFPGANConfig, GFPGANv1Clean
from vidrestore.pipeline import versions

TINY = GFPGANConfig(out_size=64, num_style_feat=32, channel_multiplier=1, narrow=0.0625, num_mlp=2)


class CopyWorker:
    """Does no restoration: copies the source to the output, so only the driver's own work is timed."""

    def __init__(self, settings: dict) -> None:
        pass

    def run(self, job: FileJob, on_progress=None) -> FileResult:
        shutil.copyfile(job.source, job.output)
        return FileResult(job.key, "done", frames=job.frames or 0, seconds=0.0)


def clips(folder: Path, n: int, seconds: float) -> Path:
    folder.mkdir(parents=True)
    first = make_clip(folder / "clip000.mp4", seconds=seconds, audio=False).path
    for i in range(1, n):
        shutil.copyfile(first, folder / f"clip{i:03d}.mp4")
    return folder


def driver_overhead(work: Path, n: int, seconds: float) -> dict:
    src = clips(work / "many", n, seconds)
    out = work / "many_out"
    t = time.perf_counter()
    run_batch([src], out, progress=False, executor=lambda s: LocalExecutor(s, CopyWorker))
    first = time.perf_counter() - t
    t = time.perf_counter()
    again = run_batch([src], out, progress=False, executor=lambda s: LocalExecutor(s, CopyWorker))
    rerun = time.perf_counter() - t
    assert again.count("skipped") == n
    return {"files": n, "first_run_ms_per_file": 1000 * first / n, "rerun_ms_per_file": 1000 * rerun / n}


def model_once(work: Path, n: int, seconds: float, checkpoint: Path, env: dict) -> dict:
    src = clips(work / "few", n, seconds)
    t = time.perf_counter()
    report = run_batch(
        [src], work / "few_out", progress=False, weights=str(checkpoint), detector="centerface"
    )
    batch = time.perf_counter() - t
    assert report.count("done") == n, report.describe()
    t = time.perf_counter()
    for clip in sorted(src.iterdir()):
        cmd = [
            sys.executable,
            "-m",
            "vidrestore.cli",
            "restore",
            str(clip),
            "-o",
            str(work / f"one_{clip.name}"),
        ]
        subprocess.run(
            [*cmd, "--weights", str(checkpoint), "--detector", "centerface", "-q"], check=True, env=env
        )
    separate = time.perf_counter() - t
    return {
        "files": n,
        "batch_s": batch,
        "separate_s": separate,
        "batch_files_per_hour": 3600 * n / batch,
        "separate_files_per_hour": 3600 * n / separate,
    }


def kill_and_resume(work: Path, n: int, seconds: float, checkpoint: Path, env: dict) -> dict:
    src = clips(work / "kill", n, seconds)
    out = work / "kill_out"
    cmd = [sys.executable, "-m", "vidrestore.cli", "batch", str(src), "-o", str(out)]
    cmd += ["--weights", str(checkpoint), "--detector", "centerface", "-q"]
    manifest = out / ".vidrestore" / "manifest.jsonl"
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    while proc.poll() is None and not any(r["state"] == "done" for r in read_records(manifest)):
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = read_records(manifest)
    temps = sorted(p.name for p in out.rglob("*.part*"))
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    rerun = time.perf_counter() - t
    records = read_records(manifest)
    done = collections.Counter(r["key"] for r in records if r["state"] == "done")
    first = {r["key"] for r in killed if r["state"] == "done"}
    return {
        "files": n,
        "records_by_state_after_kill": dict(collections.Counter(r["state"] for r in killed)),
        "records_by_state_after_rerun": dict(collections.Counter(r["state"] for r in records)),
        "done_by_killed_run": len(first),
        "done_by_rerun": len(done) - len(first),
        "files_done_twice": sum(c > 1 for c in done.values()),
        "files_lost": n - len(done),
        "temp_files_left_by_kill": temps,
        "temp_files_after_rerun": sorted(p.name for p in out.rglob("*.part*")),
        "rerun_s": rerun,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--compare", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=0.25)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    date = datetime.date.today().isoformat()
    out = args.out or Path("benchmarks/results") / f"batch_cpu_{date}.json"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, "VIDRESTORE_HOME": str(work / "home")}
        os.environ["VIDRESTORE_HOME"] = env["VIDRESTORE_HOME"]
        checkpoint = work / "tiny.pth"
        torch.manual_seed(0)
        torch.save({"params_ema": GFPGANv1Clean(TINY).state_dict()}, checkpoint)
        overhead = driver_overhead(work, args.files, args.seconds)
        once = model_once(work, args.compare, args.seconds, checkpoint, env)
        kill = kill_and_resume(work, args.compare, args.seconds, checkpoint, env)
    print("| measurement | value |\n|---|---|")
    print(
        f"| driver, first run ({overhead['files']} files, copy worker) | "
        f"{overhead['first_run_ms_per_file']:.0f} ms/file |"
    )
    print(f"| driver, rerun with every file done | {overhead['rerun_ms_per_file']:.0f} ms/file |")
    print(
        f"| {once['files']} clips, one batch (model loaded once) | {once['batch_s']:.1f} s, "
        f"{once['batch_files_per_hour']:.0f} files/h |"
    )
    print(
        f"| {once['files']} clips, separate `vidrestore restore` runs | {once['separate_s']:.1f} s, "
        f"{once['separate_files_per_hour']:.0f} files/h |"
    )
    print(
        f"| kill -9 after the first file, then rerun | done by killed run {kill['done_by_killed_run']}, "
        f"by rerun {kill['done_by_rerun']}, twice {kill['files_done_twice']}, lost {kill['files_lost']} |"
    )
    print(f"| manifest after the rerun | {kill['records_by_state_after_rerun']} |")
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {
        "date": date,
        "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()},
        "versions": versions(),
        "driver_overhead": overhead,
        "model_loaded_once": once,
        "kill_and_resume": kill,
    }
    out.write_text(json.dumps(data, indent=2))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
