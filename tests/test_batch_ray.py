"""The Ray executor with a fake worker (tests/fake_worker.py) on one local Ray with two pretend GPUs."""

from __future__ import annotations

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
from vidrestore.errors import ClusterError

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
