"""Files per hour of a batch: the in-process loop against Ray local with 1 and 2 workers (the cost of Ray).

Every run restores the same short generated clips (a real face, no audio) on the CPU with a tiny GFP-GAN
(random weights in the official layout) and the offline CenterFace detector, through the batch's worker
(``FileWorker``: one engine loaded once). The loop runs the files one after the other in this process; each
Ray run starts its own local Ray, one CPU actor per worker (the machine's cores shared between them), keeps
one file in flight per actor, and shuts Ray down. Start-up (Ray, the actors, the model) is timed apart from
the files, so the table shows both the overhead per file and the fixed cost per batch.

    python -m benchmarks.bench_batch [--files 20] [--seconds 0.5] [--size 160x120] [--workers 1,2]
        [--threads 1] [--out benchmarks/results/ray_cpu_<date>.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from tests.clips import make_clip
from tests.conftest import TINY
from vidrestore.batch.cluster import FILE_WORKER, RayExecutor, load_worker
from vidrestore.batch.work import FileJob, FileResult, Lost
from vidrestore.models.gfpgan import GFPGANv1Clean
from vidrestore.pipeline import versions


def _jobs(clips: list[Path], out_dir: Path, settings: dict[str, Any]) -> list[FileJob]:
    out_dir.mkdir()
    return [FileJob(c.name, c, out_dir / c.name, settings) for c in clips]


def run_loop(
    clips: list[Path], out_dir: Path, settings: dict[str, Any], worker: str, name: str = "loop (in-process)"
) -> dict[str, Any]:
    """The in-process executor's shape: one worker, the files one after the other."""
    t0 = time.perf_counter()
    engine = load_worker(worker)(settings)
    ready = time.perf_counter()
    results = [engine.run(job) for job in _jobs(clips, out_dir, settings)]
    return _row(name, 1, t0, ready, time.perf_counter(), results)


def run_ray(
    clips: list[Path], out_dir: Path, settings: dict[str, Any], worker: str, workers: int
) -> dict[str, Any]:
    """A local Ray with ``workers`` CPU actors, one file in flight per actor."""
    t0 = time.perf_counter()
    executor = RayExecutor(settings, out_dir, address="local", workers=workers, worker=worker)
    ready = time.perf_counter()
    todo = _jobs(clips, out_dir / "out", settings)
    results: list[FileResult] = []
    in_flight = 0
    try:
        while todo or in_flight:
            while todo and in_flight < executor.slots():
                executor.submit(todo.pop())
                in_flight += 1
            for job, outcome in executor.wait(timeout=None):
                in_flight -= 1
                if isinstance(outcome, Lost):
                    raise RuntimeError(f"{job.key}: {outcome.reason}")
                results.append(outcome)
        done = time.perf_counter()
    finally:
        executor.close()
    row = _row(f"Ray local, {workers} worker{'s' * (workers > 1)}", workers, t0, ready, done, results)
    row["shutdown_s"] = round(time.perf_counter() - done, 2)
    return row


def _row(name: str, workers: int, t0: float, ready: float, done: float, results: list[FileResult]) -> dict:
    failed = [f"{r.key}: {r.error}" for r in results if r.state != "done"]
    if failed:
        raise RuntimeError("; ".join(failed))
    files, work = len(results), done - ready
    return {
        "executor": name,
        "workers": workers,
        "files": files,
        "frames": sum(r.frames for r in results),
        "faces": sum(r.faces for r in results),
        "startup_s": round(ready - t0, 2),
        "files_s": round(work, 2),
        "s_per_file": round(work / files, 3),
        "files_per_hour": round(files / (done - t0) * 3600),
        "files_per_hour_after_startup": round(files / work * 3600),
        "worker_s_per_file": round(sum(r.seconds for r in results) / files, 3),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=0.5, help="length of each clip")
    ap.add_argument("--size", default="160x120")
    ap.add_argument("--workers", default="1,2", help="Ray worker counts to run")
    ap.add_argument("--worker", default=FILE_WORKER, help="the worker class, module:Class")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each worker, the loop's too")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    # The same threads per worker everywhere (Ray's actors inherit the variable from the Ray we start): on a
    # shared, loaded machine a 2-thread team is many times slower than one thread: it would hide Ray's cost.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    date = datetime.date.today().isoformat()
    out = args.out or Path("benchmarks/results") / f"ray_cpu_{date}.json"
    width, height = map(int, args.size.split("x"))
    rows = []
    # A short folder: Ray's temp folder goes inside each output folder, under the socket path limit.
    with tempfile.TemporaryDirectory(prefix="vrb", dir="/tmp" if os.path.isdir("/tmp") else None) as tmp:
        work = Path(tmp)
        checkpoint = work / "tiny.pth"
        torch.manual_seed(0)
        torch.save({"params_ema": GFPGANv1Clean(TINY).state_dict()}, checkpoint)
        (work / "in").mkdir()
        clips = [
            make_clip(
                work / "in" / f"clip{i:02}.mp4", size=(width, height), seconds=args.seconds, audio=False
            )
            for i in range(args.files)
        ]
        settings = {"weights": checkpoint, "detector": "centerface", "device": "cpu", "progress": False}
        os.environ["VIDRESTORE_HOME"] = str(work / "home")  # actors inherit it from the Ray we start
        paths = [c.path for c in clips]
        rows.append(run_loop(paths, work / "loop", settings, args.worker))
        for n in map(int, args.workers.split(",")):
            rows.append(run_ray(paths, work / f"ray{n}", settings, args.worker, n))
        # The loop again: on a shared machine the load moves, and the two loop runs bracket the Ray runs.
        rows.append(run_loop(paths, work / "loop2", settings, args.worker, "loop again (in-process)"))
        for r in rows:
            print(f"{r['executor']:>22}: {r['files_per_hour']:>6} files/h ({r['startup_s']} s start-up)")
    print("\n| executor | start-up (s) | wall s per file | worker s per file | Ray's s per file |", end="")
    print(" files/hour | after start-up |\n|---|---|---|---|---|---|---|")
    for r in rows:
        # What a file costs beyond its own restore: dispatch, ray.wait, results and progress polling.
        r["dispatch_s_per_file"] = round(r["s_per_file"] * r["workers"] - r["worker_s_per_file"], 3)
        cells = (r["executor"], r["startup_s"], r["s_per_file"], r["worker_s_per_file"])
        cells += (r["dispatch_s_per_file"], r["files_per_hour"], r["files_per_hour_after_startup"])
        print("| " + " | ".join(map(str, cells)) + " |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "date": date,
                "device": "cpu",
                "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()},
                "versions": {**versions(), "ray": _ray_version()},
                "clips": {"files": args.files, "seconds": args.seconds, "size": args.size},
                "threads_per_worker": args.threads,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out}")


def _ray_version() -> str:
    import ray

    return ray.__version__


if __name__ == "__main__":
    main()
