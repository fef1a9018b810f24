"""The Ray executor with a fake worker (tests/fake_worker.py) on one local Ray with two pretend GPUs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vidrestore.batch.cluster import (
    SESSION_SOCKET_TAIL,
    SOCKET_PATH_LIMIT,
    ActorPlan,
    RayExecutor,
    placed_settings,
    plan_actors,
    ray_temp_dir,
)
from vidrestore.batch.work import FileJob, FileResult, Lost
from vidrestore.errors import ClusterError, VidrestoreError

ROOT = Path(__file__).resolve().parents[1]
FAKE = "tests.fake_worker:FakeWorker"


def test_plan_actors():
    assert plan_actors(2, [16], "auto", None, 1) == ActorPlan(2, 1.0, 1)
    assert plan_actors(2, [16], "cuda", None, 3) == ActorPlan(6, 1 / 3, 1)
    assert plan_actors(4, [16], "auto", 2, 1) == ActorPlan(2, 1.0, 1)
    assert plan_actors(2, [16], "cpu", 4, 1) == ActorPlan(4, 0, 4)  # --device cpu: CPU actors even so
    assert plan_actors(0, [2, 8], "auto", 2, 1) == ActorPlan(2, 0, 4)  # the largest node's cores shared
    assert plan_actors(0, [2], "auto", 3, 1) == ActorPlan(3, 0, 1)
    with pytest.raises(ClusterError, match="no GPU"):
        plan_actors(0, [8], "cuda:1", None, 1)
    with pytest.raises(ClusterError, match="--workers-per-gpu"):
        plan_actors(1, [8], "auto", None, 0)


def test_ray_temp_dir_falls_back_to_a_short_folder(tmp_path):
    assert ray_temp_dir(Path("/srv/out")) == (Path("/srv/out/.vidrestore/ray"), None)
    deep = tmp_path / ("d" * 60)
    temp, notice = ray_temp_dir(deep)
    assert len(str(temp)) + SESSION_SOCKET_TAIL <= SOCKET_PATH_LIMIT
    assert str(deep) in notice and str(temp) in notice
    assert ray_temp_dir(deep)[0] == temp  # the same output folder gets the same short folder


def test_placed_settings_make_paths_absolute_and_pick_the_actors_device(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    placed = placed_settings({"weights": Path("w.pth"), "device": "cuda:1", "crf": 18}, gpu=True)
    assert placed == {"weights": tmp_path / "w.pth", "device": "cuda", "crf": 18}
    assert placed_settings({"device": "auto"}, gpu=False)["device"] == "cpu"


def test_without_ray_the_executor_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if the extra were missing
    with pytest.raises(ClusterError, match=r'pip install "vidrestore\[ray\]"'):
        RayExecutor({}, tmp_path)


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """One local Ray for the module, with two pretend GPUs; executors use it and leave it running."""
    ray = pytest.importorskip("ray")
    ray.init(
        address="local",
        num_cpus=2,
        num_gpus=2,
        include_dashboard=False,
        log_to_driver=False,
        _temp_dir=str(tmp_path_factory.mktemp("ray")),
        runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}},  # the actors import tests.fake_worker
    )
    yield ray
    ray.shutdown()


def _jobs(tmp_path: Path, *names: str) -> list[FileJob]:
    jobs = []
    for name in names:
        src = tmp_path / f"{name}.mp4"
        src.write_bytes(name.encode())
        jobs.append(FileJob(name, src, tmp_path / f"{name}_out.mp4", {"device": "auto"}, frames=5))
    return jobs


def _drain(executor: RayExecutor, count: int) -> dict[str, FileResult | Lost]:
    got: dict[str, FileResult | Lost] = {}
    deadline = time.monotonic() + 120
    while len(got) < count and time.monotonic() < deadline:
        for job, outcome in executor.wait(timeout=5):
            got[job.key] = outcome
    return got


def test_killed_actor_is_requeued_failures_stay_per_file_and_cancel(local_ray, tmp_path):
    executor = RayExecutor({"device": "auto"}, tmp_path, worker=FAKE)
    try:
        assert executor.slots() == 2  # one actor per (pretend) GPU
        crash, corrupt, bug, slow = _jobs(tmp_path, "crash", "corrupt", "raise", "slow")
        executor.submit(crash)
        executor.submit(corrupt)
        got = _drain(executor, 2)
        assert isinstance(got["crash"], Lost) and got["crash"].job == crash
        assert "died" in got["crash"].reason and "\n" not in got["crash"].reason
        assert got["corrupt"].state == "failed" and got["corrupt"].error.endswith("not a video")
        executor.submit(crash)  # the driver requeues it: the replaced actor restores it
        executor.submit(bug)
        got = _drain(executor, 2)
        assert got["crash"].state == "done" and got["crash"].device == "cuda"
        assert got["raise"].state == "failed" and got["raise"].error == "ValueError: fake worker bug"
        assert (tmp_path / "crash_out.mp4").read_bytes() == b"crash"

        executor.submit(slow)
        deadline = time.monotonic() + 30
        while not (seen := [p for p in executor.progress() if p.key == "slow" and p.frames_done]):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert seen[0].worker.startswith("ray") and seen[0].fps > 0 and len(executor.progress()) == 2
        assert executor.cancel() == [slow]  # Ctrl-C: the job in flight comes back, the actors end
        assert executor.slots() == 0 and executor.wait(timeout=0) == []
    finally:
        executor.close()
    assert not (tmp_path / "slow_out.mp4").exists()
    assert local_ray.is_initialized()  # a Ray it did not start is left running


def test_worker_setup_error_is_one_line(local_ray, tmp_path):
    settings = {"device": "auto", "fail_setup": "no weights here"}
    with pytest.raises(ClusterError, match=r"could not start: no weights here$"):
        RayExecutor(settings, tmp_path, worker=FAKE, workers=1)


# The batch driver over Ray (vidrestore.batch.driver comes from the batch branch).
KILLED_DRIVER = """
import sys
from pathlib import Path
from vidrestore.batch.cluster import RayExecutor
from vidrestore.batch.driver import run_batch
src, out, address = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
factory = lambda s: RayExecutor(s, out, address=address, worker="tests.fake_worker:FakeWorker", workers=1)
run_batch([src], out, executor=factory, progress=False, detector="centerface")
"""


def _tree(tmp_path: Path, *names: str) -> Path:
    src = tmp_path / "in"
    src.mkdir()
    for name in names:
        (src / f"{name}.mp4").write_text(name)
    return src


def _states(out: Path) -> dict[str, list[str]]:
    """Each file's manifest states, in order."""
    states: dict[str, list[str]] = {}
    for line in (out / ".vidrestore" / "manifest.jsonl").read_text().splitlines():
        record = json.loads(line)
        states.setdefault(record["key"], []).append(record["state"])
    return states


def test_driver_over_ray_requeues_a_dead_worker_records_failures_and_follows_settings(local_ray, tmp_path):
    run_batch = pytest.importorskip("vidrestore.batch.driver").run_batch
    src, out = _tree(tmp_path, "good", "crash", "corrupt"), tmp_path / "out"

    def batch(**settings):
        factory = lambda s: RayExecutor(s, out, worker=FAKE, workers=1)  # noqa: E731
        return run_batch([src], out, executor=factory, progress=False, detector="centerface", **settings)

    rows = {r.key: r for r in batch().rows}
    assert rows["in/good.mp4"].state == rows["in/crash.mp4"].state == "done"
    assert rows["in/crash.mp4"].attempts == 2  # its actor died once: requeued, then done
    assert rows["in/corrupt.mp4"].state == "failed" and rows["in/corrupt.mp4"].error.endswith("not a video")
    assert _states(out)["in/crash.mp4"] == ["queued", "running", "queued", "running", "done"]
    rows = {r.key: r for r in batch(max_attempts=1).rows}  # nothing to do again but the failed file
    assert rows["in/good.mp4"].state == "skipped"
    rows = {r.key: r for r in batch(crf=30).rows}  # new settings: every file again
    assert rows["in/good.mp4"].state == rows["in/crash.mp4"].state == "done"
    with pytest.raises(VidrestoreError, match="would both be written"):  # found before any worker starts
        run_batch([src], out, name="same{ext}", executor=None, progress=False)


def test_killed_driver_then_a_rerun_over_ray(local_ray, tmp_path):
    run_batch = pytest.importorskip("vidrestore.batch.driver").run_batch
    src, out = _tree(tmp_path, "slow1", "slow2"), tmp_path / "out"
    address = local_ray.get_runtime_context().gcs_address
    cmd = [sys.executable, "-c", KILLED_DRIVER, str(src), str(out), address]
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    manifest = out / ".vidrestore" / "manifest.jsonl"
    deadline = time.monotonic() + 60
    while not (manifest.exists() and '"running"' in manifest.read_text()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)  # mid-file: its actor goes with it
    proc.wait()
    factory = lambda s: RayExecutor(s, out, worker=FAKE, workers=1)  # noqa: E731
    rows = {
        r.key: r for r in run_batch([src], out, executor=factory, progress=False, detector="centerface").rows
    }
    assert {r.state for r in rows.values()} <= {"done", "skipped"}
    states = _states(out)
    assert all(s[-1] == "done" and s.count("done") == 1 for s in states.values()), states
    assert sorted(p.name for p in (out / "in").iterdir()) == ["slow1.mp4", "slow2.mp4"]
