"""The default executor: one :class:`FileWorker` in this process, so a laptop needs nothing (no Ray).

The model is loaded once, when the executor is made (a missing weight file fails there, before any file is
touched). Each job runs on a thread of its own so that the driver's thread stays free to draw progress and
to take Ctrl-C; a cancel stops the running file at its next written frame, and the pipeline removes the
file's temporary output.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from vidrestore.batch.work import FileJob, FileResult, Lost, WorkerProgress


class Cancelled(BaseException):
    """Raised inside a running file by a cancel; a BaseException so no file-failure handler records it."""


class Worker(Protocol):
    def run(self, job: FileJob, on_progress: Callable[[int, int], None] | None = None) -> FileResult: ...


class LocalExecutor:
    """One slot; ``make_worker(settings)`` builds the worker (``FileWorker`` unless a test gives a fake)."""

    def __init__(
        self, settings: dict[str, Any], make_worker: Callable[[dict[str, Any]], Worker] | None = None
    ):
        if make_worker is None:
            from vidrestore.batch.worker import FileWorker

            make_worker = FileWorker
        self.worker = make_worker(settings)
        self._job: FileJob | None = None
        self._thread: threading.Thread | None = None
        self._outcome: FileResult | Lost | None = None
        self._cancel = threading.Event()
        # Set when a job's thread ends. Not Thread.join(): on Python 3.12 a Ctrl-C that interrupts a join can
        # leave the thread marked as stopped while it still runs, and every later join then returns at once.
        self._ended = threading.Event()
        self._frames = 0
        self._started = 0.0

    def slots(self) -> int:
        return 1

    def submit(self, job: FileJob) -> None:
        if self._job is not None:
            raise RuntimeError("the local executor runs one job at a time")
        self._job, self._outcome, self._frames, self._started = job, None, 0, time.perf_counter()
        self._cancel.clear()
        self._ended.clear()
        self._thread = threading.Thread(target=self._run, args=(job,), name="vidrestore-batch", daemon=True)
        self._thread.start()

    def _run(self, job: FileJob) -> None:
        try:
            self._outcome = self.worker.run(job, self._on_progress)
        except Cancelled:
            pass
        except BaseException as exc:  # a worker that breaks its never-raise contract: the job goes back
            self._outcome = Lost(job, f"the worker stopped: {type(exc).__name__}: {exc}")
        finally:
            self._ended.set()

    def _on_progress(self, frames: int, faces: int) -> None:
        if self._cancel.is_set():
            raise Cancelled
        self._frames = frames

    def wait(self, timeout: float | None) -> list[tuple[FileJob, FileResult | Lost]]:
        if self._thread is None or self._job is None:
            return []
        if not self._ended.wait(timeout):
            return []
        job, outcome = self._job, self._outcome
        self._job = self._thread = None
        return [] if outcome is None else [(job, outcome)]

    def progress(self) -> list[WorkerProgress]:
        if self._job is None:
            return [WorkerProgress("local", None, 0, 0.0)]
        elapsed = time.perf_counter() - self._started
        return [
            WorkerProgress("local", self._job.key, self._frames, self._frames / elapsed if elapsed else 0.0)
        ]

    def cancel(self) -> list[FileJob]:
        """Stop the running file at its next frame and give its job back; a file that finished meanwhile
        is kept for the next :meth:`wait`."""
        if self._job is None or self._thread is None:
            return []
        self._cancel.set()
        self._ended.wait()
        if self._outcome is not None:
            return []
        job = self._job
        self._job = self._thread = None
        return [job]

    def close(self) -> None:
        self.cancel()
