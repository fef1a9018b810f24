"""One worker's side of a batch: a loaded engine that restores whole files, one job at a time.

:class:`FileWorker` is what the in-process executor runs and what each Ray actor holds: it loads the model
once and turns every failure of a file into a :class:`FileResult` with a one-line message, so one bad file
never stops the rest. Only Ctrl-C (and SIGTERM/SIGHUP) goes through, after the pipeline removed its
temporary output.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from vidrestore.batch.work import FileJob, FileResult
from vidrestore.engine import FaceRestorer
from vidrestore.errors import VidrestoreError
from vidrestore.options import VideoOptions

# Settings the batch runner owns itself: its progress display, and its report (``--report``) for all files.
DRIVER_SETTINGS = ("progress", "report")


def job_options(settings: dict[str, Any], batch_scale: float = 1.0) -> VideoOptions:
    """A file's options from the batch's settings, with its frame batch scaled down after an OOM."""
    values = {k: v for k, v in settings.items() if k not in DRIVER_SETTINGS}
    options = VideoOptions.from_keywords(**values, progress=False)
    if batch_scale < 1.0:
        frames = max(1, int(options.temporal.frame_batch * batch_scale))
        options = replace(options, temporal=replace(options.temporal, frame_batch=frames))
    return options


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA out-of-memory error, whichever way it surfaced (raised by torch, or re-worded by the engine)."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, VidrestoreError) and "ran out of memory" in str(exc)
    )


class FileWorker:
    """Builds the options and one :class:`FaceRestorer` once; :meth:`run` restores one job with them.

    Constructible in any process (a Ray actor's too): it takes plain settings, and loading errors (missing
    weights, a bad device) are raised here, once, as :class:`VidrestoreError`.
    """

    def __init__(self, settings: dict[str, Any]):
        self.settings = dict(settings)
        self.options = job_options(self.settings)
        self.restorer = FaceRestorer(
            self.options.engine, progress=False, load_model=not self.options.job.debug_overlay
        )
        self.host = socket.gethostname()
        self.device = str(self.restorer.device)
        engines = getattr(self.restorer, "parts", {}).values() or [self.restorer]
        self._face_batches = {engine: engine.batch_size for engine in engines}

    def run(self, job: FileJob, on_progress: Callable[[int, int], None] | None = None) -> FileResult:
        """Restore ``job.source`` to ``job.output`` (through a temporary name); never raises for a bad file.

        ``on_progress(frames, faces)`` hears running totals; an exception it raises (a cancel) goes through.
        A job with ``chunk`` set restores only those frames, to its part file (:func:`chunks.run_chunk`).
        """
        from vidrestore.pipeline import run

        t0 = time.perf_counter()
        result = FileResult(key=job.key, state="failed", host=self.host, device=self.device)
        for engine, size in self._face_batches.items():  # each network of --model auto
            engine.batch_size = max(1, int(size * job.batch_scale))
        try:
            options = job_options(job.settings, job.batch_scale)
            if job.chunk is None:
                report = run(job.source, job.output, options, restorer=self.restorer, on_frames=on_progress)
            else:  # one chunk of a long file, with its context (vidrestore/batch/chunks.py)
                from vidrestore.batch.chunks import run_chunk

                report = run_chunk(
                    job.source, job.output, options, job.chunk, restorer=self.restorer, on_frames=on_progress
                )
        except (KeyboardInterrupt, SystemExit):
            raise
        except MemoryError:
            result.error = "out of memory; try --max-memory or --detect-size"
        except Exception as exc:
            result.out_of_memory = is_out_of_memory(exc)
            if result.out_of_memory and self.restorer.device.type == "cuda":
                torch.cuda.empty_cache()
            result.error = _one_line(exc)
        else:
            result.state = "done"
            result.frames, result.faces = report.frames, report.faces
            result.stats = {
                "frames_with_faces": report.frames_with_faces,
                "codec": report.codec,
                "stages": dict(report.stages),
                "notices": report.notices + report.warnings,
            }
        finally:
            for engine, size in self._face_batches.items():  # an OOM's halving stays with its file
                engine.batch_size = size
        result.seconds = time.perf_counter() - t0
        return result


def _one_line(exc: BaseException) -> str:
    """A failure as the manifest and the report keep it: the user's message, or the internal error's type."""
    text = " ".join(str(exc).split())
    if isinstance(exc, VidrestoreError):
        return text
    name = type(exc).__name__
    return f"internal error: {name}: {text}" if text else f"internal error: {name}"
