"""The Ray executors: whole files restored by Ray actors, on this machine (``--ray local``) or a cluster.

Each actor owns one worker (a loaded engine, :class:`vidrestore.batch.worker.FileWorker` unless another
class is named) and restores whole files, since temporal smoothing needs each file in order. The executor
keeps one job in flight per actor and collects them with ``ray.wait``: a dead actor (killed process, lost
node) gives the job back as :class:`Lost` and is replaced; an exception escaping the worker is that file's
failure. Only absolute paths and settings travel; Ray is imported only when one of these executors starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import logging
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vidrestore.batch.work import FileJob, FileResult, Lost, WorkerProgress
from vidrestore.errors import ClusterError, VidrestoreError

FILE_WORKER = "vidrestore.batch.worker:FileWorker"
# A unix socket path holds at most 107 bytes (103 on macOS); Ray puts its sockets at
# <temp>/session_<date>_<time>_<us>_<pid>/sockets/plasma_store, 64 bytes below the temp folder at most.
SOCKET_PATH_LIMIT = 103 if sys.platform == "darwin" else 107
SESSION_SOCKET_TAIL = len("/session_2026-12-01_15-24-07_538688_4194304/sockets/plasma_store")


class WorkerSetupError(VidrestoreError):
    """The actor's worker could not be built (missing weights, bad device): no file of the batch can run."""


def load_worker(path: str) -> type:
    """The worker class named ``"module:Class"``, imported in the process that calls this."""
    module, _, name = path.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise WorkerSetupError(f"no worker class {path!r}: {exc}") from exc


def one_line(exc: BaseException) -> str:
    """An exception as a failure's one-line message: the user's message, or the internal error's type."""
    text = " ".join(str(exc).split())
    if isinstance(exc, VidrestoreError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def ray_temp_dir(out_dir: Path) -> tuple[Path, str | None]:
    """Ray's temp folder for a local Ray: inside the output folder, or a short one if that path would make
    Ray's socket paths too long (then with a notice saying so)."""
    wanted = out_dir.resolve() / ".vidrestore" / "ray"
    if len(os.fsencode(wanted)) + SESSION_SOCKET_TAIL <= SOCKET_PATH_LIMIT:
        return wanted, None
    root = Path("/tmp") if Path("/tmp").is_dir() else Path(tempfile.gettempdir())
    short = root / f"vidrestore-ray-{hashlib.sha1(os.fsencode(wanted)).hexdigest()[:8]}"
    return short, f"Ray's temp folder is {short}: {wanted} is too long a path for Ray's sockets"


@dataclass(frozen=True)
class ActorPlan:
    """How many actors, and the Ray resources each asks for."""

    count: int
    num_gpus: float
    num_cpus: float


def plan_actors(
    gpus: float, node_cpus: list[float], device: str, workers: int | None, workers_per_gpu: int
) -> ActorPlan:
    """One actor per GPU (``1/k`` of one with ``workers_per_gpu`` k), or ``workers`` CPU actors sharing
    the largest node's cores when the device is the CPU or the cluster has no GPU."""
    if workers is not None and workers < 1:
        raise ClusterError(f"--workers must be at least 1, not {workers}")
    if workers_per_gpu < 1:
        raise ClusterError(f"--workers-per-gpu must be at least 1, not {workers_per_gpu}")
    if device != "cpu" and gpus >= 1:
        count = workers if workers is not None else int(gpus) * workers_per_gpu
        return ActorPlan(count, 1 / workers_per_gpu, 1)
    if device.startswith("cuda"):
        raise ClusterError(
            f"--device {device}: the Ray cluster has no GPU (use --device cpu for CPU workers)"
        )
    count = workers or 1
    return ActorPlan(count, 0, max(1, int(max(node_cpus, default=1) // count)))


def placed_settings(settings: dict[str, Any], gpu: bool) -> dict[str, Any]:
    """The settings as one actor runs them: its one visible GPU is ``cuda`` (Ray sets CUDA_VISIBLE_DEVICES),
    a CPU actor runs on the CPU, and every path is absolute (workers on a cluster run elsewhere)."""
    placed = {k: Path(v).absolute() if isinstance(v, Path) else v for k, v in settings.items()}
    placed["device"] = "cuda" if gpu else "cpu"
    return placed


class FileActor:
    """A Ray actor's body: one worker built once, then one job at a time; ``progress`` answers meanwhile
    (the actor runs two threads)."""

    def __init__(self, worker: str, settings: dict[str, Any]):
        import ray

        self.gpu = bool(ray.get_gpu_ids())
        self.host = socket.gethostname()
        self.key: str | None = None
        self.frames = 0
        self.started = 0.0
        try:
            self.worker = load_worker(worker)(placed_settings(settings, self.gpu))
            self.error: str | None = None
        except Exception as exc:  # kept, so the executor hears it as one line rather than a dead actor
            self.worker, self.error = None, one_line(exc)

    def describe(self) -> tuple[str, str, str | None]:
        """Host, device and the worker's setup error, if any."""
        return self.host, str(getattr(self.worker, "device", "cuda" if self.gpu else "cpu")), self.error

    def run(self, job: FileJob) -> FileResult:
        if self.worker is None:
            raise WorkerSetupError(self.error)
        self.key, self.frames, self.started = job.key, 0, time.perf_counter()
        try:
            return self.worker.run(
                replace(job, settings=placed_settings(job.settings, self.gpu)), self._heard
            )
        finally:
            self.key = None

    def _heard(self, frames: int, faces: int) -> None:
        self.frames = frames

    def progress(self) -> tuple[str | None, int, float]:
        elapsed = time.perf_counter() - self.started
        return self.key, self.frames, self.frames / elapsed if self.key and elapsed > 0 else 0.0


class RayExecutor:
    """The :class:`~vidrestore.batch.work.Executor` over Ray actors.

    ``address`` "local" starts a Ray of our own (no dashboard, usage stats off, its temp folder in the
    output folder) and shuts it down at :meth:`close`; any other address joins that cluster, and closing
    only ends our actors and disconnects (never ``ray stop``). If this process is already connected to a Ray,
    that one is used and left running.
    """

    def __init__(
        self,
        settings: dict[str, Any],
        out_dir: Path,
        *,
        address: str = "local",
        workers: int | None = None,
        workers_per_gpu: int = 1,
        num_gpus: int | None = None,
        worker: str = FILE_WORKER,
        log_to_driver: bool = False,
    ):
        try:
            import ray
        except ImportError as exc:
            raise ClusterError('Ray is not installed: pip install "vidrestore[ray]"') from exc
        self._ray = ray
        self.notices: list[str] = []
        self._actors: dict[int, Any] = {}
        self._names: dict[int, str] = {}
        self._running: dict[Any, tuple[int, FileJob]] = {}  # ObjectRef of a run -> (actor slot, job)
        self._polls: dict[Any, int] = {}  # ObjectRef of a progress call -> actor slot
        self._seen: dict[int, WorkerProgress] = {}
        self._cancelled = False
        self._owned = not ray.is_initialized()
        if self._owned:
            self._connect(address, out_dir, num_gpus, log_to_driver)
        try:
            self._start(settings, worker, workers, workers_per_gpu)
        except BaseException:  # a bad setting, a worker that cannot start, Ctrl-C while models load
            self.close()
            raise

    def _start(
        self, settings: dict[str, Any], worker: str, workers: int | None, workers_per_gpu: int
    ) -> None:
        """Start the actors and wait until each has built its worker: a setup error stops the batch once."""
        ray = self._ray
        node_cpus = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n["Alive"]]
        gpus = ray.cluster_resources().get("GPU", 0.0)
        device = str(settings.get("device", "auto"))
        plan = plan_actors(gpus, node_cpus, device, workers, workers_per_gpu)
        self._settings, self._worker = dict(settings), worker
        self._actor_class = ray.remote(FileActor).options(
            num_gpus=plan.num_gpus, num_cpus=plan.num_cpus, max_concurrency=2
        )
        self._actors = {i: self._actor_class.remote(worker, self._settings) for i in range(plan.count)}
        try:
            described = ray.get([self._actors[i].describe.remote() for i in self._actors])
        except ray.exceptions.RayError as exc:
            raise ClusterError(f"Ray workers could not start: {_reason(exc)}") from exc
        for i, (host, device, error) in zip(self._actors, described, strict=True):
            if error:
                raise ClusterError(f"Ray worker on {host} could not start: {error}")
            self._names[i] = f"ray{i} {device}@{host}"

    def _connect(self, address: str, out_dir: Path, num_gpus: int | None, log_to_driver: bool) -> None:
        ray = self._ray
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        quiet = dict(log_to_driver=log_to_driver, logging_level=logging.ERROR, include_dashboard=False)
        try:
            if address == "local":
                temp, notice = ray_temp_dir(out_dir)
                if notice:
                    self.notices.append(notice)
                ray.init(address="local", _temp_dir=str(temp), num_gpus=num_gpus, **quiet)
            else:
                ray.init(address=address, **quiet)
        except Exception as exc:  # Ray raises plain Exception when its processes do not come up in time
            where = "start a local Ray" if address == "local" else f"join the Ray cluster at {address}"
            raise ClusterError(f"could not {where}: {one_line(exc)}") from exc

    def slots(self) -> int:
        return 0 if self._cancelled else len(self._actors)

    def submit(self, job: FileJob) -> None:
        if self._cancelled:
            raise RuntimeError("submit after cancel")
        busy = {slot for slot, _ in self._running.values()}
        slot = next(i for i in self._actors if i not in busy)  # the driver keeps at most slots() in flight
        sent = replace(job, source=job.source.absolute(), output=job.output.absolute())
        self._running[self._actors[slot].run.remote(sent)] = slot, job

    def wait(self, timeout: float | None) -> list[tuple[FileJob, FileResult | Lost]]:
        if not self._running:
            return []
        ray = self._ray
        ready, pending = ray.wait(list(self._running), num_returns=1, timeout=timeout)
        if ready and pending:
            ready += ray.wait(pending, num_returns=len(pending), timeout=0)[0]
        return [self._outcome(ref) for ref in ready]

    def _outcome(self, ref: Any) -> tuple[FileJob, FileResult | Lost]:
        errors = self._ray.exceptions
        slot, job = self._running.pop(ref)
        self._seen.pop(slot, None)  # its last progress answer was about this job
        try:
            return job, self._ray.get(ref)
        except errors.RayTaskError as exc:
            if isinstance(exc.cause, WorkerSetupError):  # a replacement actor could not build its worker
                self._drop(slot, str(exc.cause))
                return job, Lost(job, f"{self._names[slot]} could not start: {exc.cause}")
            failed = FileResult(job.key, "failed", error=one_line(exc.cause))
            failed.out_of_memory = type(exc.cause).__name__ == "OutOfMemoryError"
            return job, failed
        except errors.RayError as exc:  # the actor's process or node died
            self._restart(slot)
            return job, Lost(job, f"{self._names[slot]} died: {_reason(exc)}")

    def _restart(self, slot: int) -> None:
        """Replace a dead actor; its worker loads in the background and the next job queues behind it."""
        self._kill(self._actors[slot])
        self._actors[slot] = self._actor_class.remote(self._worker, self._settings)
        self._seen.pop(slot, None)

    def _drop(self, slot: int, error: str) -> None:
        self._kill(self._actors.pop(slot))
        self._seen.pop(slot, None)
        if not self._actors:
            raise ClusterError(f"no Ray worker could start: {error}")

    def _kill(self, actor: Any) -> None:
        with contextlib.suppress(Exception):  # already dead, or its node is gone
            self._ray.kill(actor, no_restart=True)

    def progress(self) -> list[WorkerProgress]:
        """The last answer of each actor, polled without blocking: each call collects what came back and asks
        the idle pollers again."""
        ray = self._ray
        running = {slot: job.key for slot, job in self._running.values()}
        if self._polls:
            ready = ray.wait(list(self._polls), num_returns=len(self._polls), timeout=0)[0]
            for ref in ready:
                slot = self._polls.pop(ref)
                try:
                    key, frames, fps = ray.get(ref)
                except ray.exceptions.RayError:
                    continue  # a dead actor: wait() reports it
                if key is not None and key == running.get(slot):  # not an answer about a job now ended
                    self._seen[slot] = WorkerProgress(self._names[slot], key, frames, fps)
        asked = set(self._polls.values())
        for slot, actor in self._actors.items():
            if slot not in asked:
                self._polls[actor.progress.remote()] = slot
        return [self._seen.get(i, WorkerProgress(self._names[i], None, 0, 0.0)) for i in self._actors]

    def cancel(self) -> list[FileJob]:
        """Stop: end every actor now (a killed file leaves only a temporary output, cleaned at the next
        start) and give back the jobs that were in flight."""
        self._cancelled = True
        jobs = [job for _, job in self._running.values()]
        self._running.clear()
        for actor in self._actors.values():
            self._kill(actor)
        return jobs

    def close(self) -> None:
        """End our actors; shut down the Ray we started, or disconnect from the cluster we joined."""
        for actor in self._actors.values():
            self._kill(actor)
        self._actors.clear()
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()


def _reason(exc: BaseException) -> str:
    """Ray's account of a dead actor in one line, without its ids and addresses."""
    lines = [line.strip() for line in str(exc).splitlines()]
    kept = [
        line
        for line in lines
        if line and not line.startswith(("class_name:", "actor_id:", "pid:", "name:", "namespace:", "ip:"))
    ]
    return " ".join(" ".join(kept).split())
