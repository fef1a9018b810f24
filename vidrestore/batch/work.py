"""The units of a batch and the contract between its driver and its executors.

The driver (plan, manifest, retries, report) decides what runs; an executor (the in-process loop, or Ray
actors on one machine or a cluster) runs it. Only these plain, picklable records cross between them:
absolute paths and settings, never video bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol


@dataclass(frozen=True)
class FileJob:
    """One output to make: a whole file, or one chunk of a long file (``chunk`` = frames [start, stop))."""

    key: str  # the manifest's identity of this unit: the source's relative path (and "#k" for chunk k)
    source: Path  # absolute
    output: Path  # absolute: the final name (a chunk's part file for a chunk)
    settings: dict[str, Any]  # the options of `vidrestore restore`, by their Python names
    frames: int | None = None  # probed at plan time, for the overall progress and ETA
    attempt: int = 1  # counted across runs
    batch_scale: float = 1.0  # < 1 after a CUDA out-of-memory error: the retry runs at a smaller batch
    chunk: tuple[int, int] | None = None


@dataclass
class FileResult:
    """What one attempt at a job came to, as the manifest and the final report record it."""

    key: str
    state: Literal["done", "failed"]
    frames: int = 0
    faces: int = 0
    seconds: float = 0.0
    error: str | None = None  # the one-line message of a failure
    out_of_memory: bool = False  # failed on a CUDA OOM: the driver retries once at half the batch
    host: str = ""
    device: str = ""
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class Lost:
    """A job whose worker died (killed process, dead node): the driver requeues it."""

    job: FileJob
    reason: str


@dataclass(frozen=True)
class WorkerProgress:
    """What one worker is doing now, for the batch's progress display."""

    worker: str
    key: str | None
    frames_done: int
    fps: float


class Executor(Protocol):
    """Runs jobs somewhere; the driver keeps at most ``slots()`` of them in flight."""

    def slots(self) -> int:
        """How many jobs may be in flight at once (one per worker)."""
        ...

    def submit(self, job: FileJob) -> None: ...

    def wait(self, timeout: float | None) -> list[tuple[FileJob, FileResult | Lost]]:
        """The jobs that ended since the last call (at least one unless ``timeout`` passed)."""
        ...

    def progress(self) -> list[WorkerProgress]: ...

    def cancel(self) -> list[FileJob]:
        """Stop dispatching and give back the jobs still in flight (Ctrl-C): the driver marks them queued."""
        ...

    def close(self) -> None: ...
