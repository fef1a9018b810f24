"""A stand-in for FileWorker in the Ray tests: no model; what it does is chosen by the source file's name.

Imported by the Ray actors, so it stays light (no torch).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import Any

from vidrestore.batch.work import FileJob, FileResult
from vidrestore.errors import VidrestoreError


class FakeWorker:
    """``crash`` in the name: the process dies (once: a marker beside the source remembers it); ``corrupt``: a
    failed result; ``raise``: an exception escapes; ``slow``: a second of progress; else a copy."""

    def __init__(self, settings: dict[str, Any]):
        if settings.get("fail_setup"):
            raise VidrestoreError(settings["fail_setup"])
        self.device = settings["device"]

    def run(self, job: FileJob, on_progress: Callable[[int, int], None] | None = None) -> FileResult:
        name = job.source.name
        marker = job.source.with_name(name + ".crashed")
        if "crash" in name and not marker.exists():
            marker.touch()
            os._exit(1)
        if "corrupt" in name:
            return FileResult(job.key, "failed", error=f"{job.source}: not a video", device=self.device)
        if "raise" in name:
            raise ValueError("fake worker bug")
        for frame in range(1, 11 if "slow" in name else 2):
            if on_progress:
                on_progress(frame, 0)
            time.sleep(0.1 if "slow" in name else 0)
        shutil.copyfile(job.source, job.output)
        return FileResult(job.key, "done", frames=job.frames or 1, device=self.device)
