"""Streaming video restoration: decode → detect → warp → batched restore → paste → encode.

Three threads overlap the work: one decodes (PyAV, threaded), the calling thread runs the engine on
batches of frames, one encodes and muxes. Bounded queues between them keep memory flat whatever the
video's length, and let the GPU work while the CPU decodes and encodes. Frames without faces go to the
encoder as decoded; in the others only the pixels the paste changed are replaced.
"""

from __future__ import annotations

import json
import platform
import queue
import resource
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from vidrestore import __version__
from vidrestore.engine import FaceRestorer, on_device
from vidrestore.errors import VidrestoreError
from vidrestore.io import VideoInfo, VideoSink, VideoSource, check_output_path
from vidrestore.io.interlace import Interlacing
from vidrestore.memory import fit_to_memory
from vidrestore.options import JobOptions, VideoOptions
from vidrestore.stream import FaceStream, held_sample_bytes

_END = object()  # end-of-stream marker on the queues


@dataclass
class RunReport:
    """What a run did: written as JSON by ``--report`` and returned by :func:`restore_video`."""

    input: str
    output: str
    frames: int = 0
    frames_with_faces: int = 0
    faces: int = 0
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    codec: str = ""
    pix_fmt: str = ""
    device: str = ""
    dtype: str = ""
    notices: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tracks: list[dict[str, int]] = field(default_factory=list)
    film: dict[str, Any] = field(default_factory=dict)  # what film matching measured (faces/film.py)
    memory_budget_mb: int = 0
    peak_rss_mb: int = 0  # the process's peak resident memory (since it started)
    peak_vram_mb: int | None = None  # the peak GPU memory allocated by torch during the run
    settings: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0

    def to_json(self) -> str:
        data = asdict(self)
        data["fps"] = round(self.fps, 3)
        data["stages"] = {k: round(v, 4) for k, v in self.stages.items()}
        return json.dumps(data, indent=2, default=str)

    def describe(self) -> str:
        return (
            f"{_count(self.frames, 'frame')} ({self.frames_with_faces} with faces, "
            f"{_count(self.faces, 'face')}) in {self.seconds:.1f} s, {self.fps:.1f} fps → {self.output} "
            f"({self.codec}, {self.pix_fmt})"
        )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def versions(device: torch.device | None = None) -> dict[str, str]:
    """Library versions, and the name and compute capability of ``device``'s GPU (the current one if None)."""
    import av

    out = {
        "vidrestore": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "av": av.__version__,
        "ffmpeg": ".".join(map(str, av.library_versions.get("libavcodec", ()))),
        "numpy": np.__version__,
        "opencv": cv2.__version__,
    }
    if device is None and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    if device is not None and device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        out |= {"gpu": torch.cuda.get_device_name(device), "gpu_capability": f"{major}.{minor}"}
        out["cuda"] = torch.version.cuda or ""
    return out


def restore_video(src: str | Path, dst: str | Path, **options: Any) -> RunReport:
    """Restore every face in the video ``src`` and write ``dst``.

    ``options`` are the settings of ``vidrestore restore`` by their Python names (``vidrestore.options``
    has the table); each is checked before anything is read or written.
    """
    return run(Path(src), Path(dst), VideoOptions.from_keywords(**options))


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put unless the run is stopping; a full queue is retried so a stop is never missed."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


class _Progress:
    """tqdm when asked for, with the face count beside frames, fps and ETA."""

    def __init__(self, total: int | None, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="frame", dynamic_ncols=True, file=sys.stderr)
        self.faces = 0

    def update(self, faces: int, frames: int = 1) -> None:
        if self.bar is not None:
            self.faces += faces
            self.bar.set_postfix(faces=self.faces, refresh=False)
            self.bar.update(frames)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Worker(threading.Thread):
    """A pipeline thread that records its exception for the main thread and stops the run."""

    def __init__(self, name: str, target: Callable[[], None], stop: threading.Event):
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self._stop_event = stop
        self._ended = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:  # handed to the main thread, which re-raises it
            self.error = exc
            self._stop_event.set()
        finally:
            self._ended.set()

    def wait(self) -> None:
        """Until the thread's work has ended. Not ``join()``: on Python 3.12 a signal (Ctrl-C, SIGTERM) that
        interrupts a join can mark a running thread as stopped, so the next join returns at once and the
        interpreter exits under a thread still in FFmpeg or torch (a crash at exit)."""
        while not self._ended.wait(0.1):
            pass


def run(
    src: Path,
    dst: Path,
    options: VideoOptions,
    restorer: FaceRestorer | None = None,
    on_frames: Callable[[int, int], None] | None = None,
) -> RunReport:
    """Run the whole job; ``restorer`` lets callers reuse a loaded engine across files; ``on_frames(frames,
    faces)`` hears the running totals as frames are written (the batch runner's progress; raising in it
    stops the run like any error)."""
    t_start = time.perf_counter()
    job = options.job
    check_output_path(src, dst, overwrite=job.overwrite, format=options.encode.format)
    report = RunReport(input=str(src), output=str(dst), versions=versions())
    report.settings = {k: v for k, v in options.settings().items() if k != "report"}
    with VideoSource(src, start=job.start, end=job.end, max_frames=job.frames, hwaccel=job.hwaccel) as source:
        if restorer is None:
            restorer = FaceRestorer(options.engine, progress=job.progress, load_model=not job.debug_overlay)
        report.device, report.dtype = str(restorer.device), str(restorer.dtype).removeprefix("torch.")
        report.versions = versions(restorer.device)
        engine_before = dict(restorer.timings)  # a reused engine has earlier runs' seconds in it
        if restorer.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(restorer.device)
        fields = Interlacing(source.description, options.encode, dst)
        total = expected_frames(source.info, job)
        total = None if total is None else total * fields.rate_factor
        info = source.info
        temporal, plan = fit_to_memory(
            restorer,
            info.width,
            info.height,
            options.temporal,
            sample_bytes=held_sample_bytes(info.bit_depth > 8, restorer.device),
        )
        options = replace(options, temporal=temporal)
        report.memory_budget_mb = plan.budget // 2**20
        stream = FaceStream(restorer, temporal, overlay=job.debug_overlay)
        with VideoSink(dst, fields.description, options.encode, overwrite=job.overwrite) as sink:
            report.codec, report.pix_fmt = sink.codec, sink.pix_fmt
            with on_device(restorer.device):  # this thread runs the engine
                _run_threads(source, sink, stream, fields, options, report, total, on_frames)
            report.notices = [
                n
                for n in (fields.notice, *source.notices, *plan.notices, *sink.notices, *stream.film.notices)
                if n
            ]
        report.warnings = list(source.warnings)
        report.tracks = [asdict(t) for t in stream.tracks()]
        report.film = stream.film.report
    for stage, seconds in restorer.timings.items():
        report.stages[stage] += seconds - engine_before.get(stage, 0.0)
    report.seconds = time.perf_counter() - t_start
    report.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # Linux: KiB
    if restorer.device.type == "cuda":
        report.peak_vram_mb = torch.cuda.max_memory_allocated(restorer.device) // 2**20
    if job.report is not None:
        try:
            job.report.write_text(report.to_json())
        except OSError as exc:
            raise VidrestoreError(f"cannot write the report {job.report}: {exc.strerror}") from None
    return report


def expected_frames(info: VideoInfo, job: JobOptions) -> int | None:
    """What the progress bar counts to: the container's frame count, else its duration times the frame rate
    (MKV, MPEG-PS and TS store no count), cut to the piece asked for; None when neither is known."""
    duration, rate = info.duration, info.frame_rate
    total = info.frames if job.start is None and job.end is None else None
    if total is None and duration and rate:
        end = duration if job.end is None else min(job.end, duration)
        total = max(0, round((end - (job.start or 0.0)) * rate))
    if job.frames is not None:
        total = job.frames if total is None else min(total, job.frames)
    return total


def _run_threads(
    source: VideoSource,
    sink: VideoSink,
    stream: FaceStream,
    fields: Interlacing,
    options: VideoOptions,
    report: RunReport,
    total: int | None,
    on_frames: Callable[[int, int], None] | None = None,
) -> None:
    """Decode and encode threads around the stream; any thread's error stops all three and is re-raised."""
    depth = max(2, options.temporal.frame_batch)
    decoded: queue.Queue = queue.Queue(maxsize=depth)
    restored: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    progress = _Progress(total, options.job.progress)

    def decode() -> None:
        t = time.perf_counter()
        for frame in fields.pictures(source.frames()):
            report.stages["decode"] += time.perf_counter() - t
            if not _put(decoded, frame, stop):
                return
            t = time.perf_counter()
        _put(decoded, _END, stop)

    def encode() -> None:
        faces = False  # in the pictures of the frame being written (two per frame when kept interlaced)
        while (result := _get(restored, stop)) is not _END:
            t = time.perf_counter()
            faces = faces or bool(result.faces)
            written = fields.written(result.tag, result.rgb, result.mask)
            for frame, rgb, mask in written:
                sink.write(frame, rgb, mask)
            report.stages["encode"] += time.perf_counter() - t
            report.frames += len(written)
            if written:
                report.frames_with_faces += faces * len(written)
                faces = False
            progress.update(len(result.faces), len(written))
            if on_frames is not None:
                on_frames(report.frames, report.faces)

    def forward(results: list) -> bool:
        for result in results:
            report.faces += len(result.faces)
            if not _put(restored, result, stop):
                return False
        return True

    def on_engine_device(target: Callable[[], None]) -> Callable[[], None]:
        """A new thread's current CUDA device is GPU 0: every thread of the run works on the engine's."""

        def guarded() -> None:
            with on_device(stream.engine.device):
                target()

        return guarded

    workers = [
        _Worker("vidrestore-decode", on_engine_device(decode), stop),
        _Worker("vidrestore-encode", on_engine_device(encode), stop),
    ]
    for w in workers:
        w.start()
    try:
        while (frame := _get(decoded, stop)) is not _END:
            if not forward(stream.push(frame.rgb, frame)):
                break
        if not stop.is_set() and forward(stream.flush()):
            _put(restored, _END, stop)
        for w in workers:
            w.wait()
    finally:
        stop.set()  # releases a thread still waiting on a queue, if this thread failed
        for w in workers:
            w.wait()
        progress.close()
    for w in workers:
        if w.error is not None:
            raise w.error


def _get(q: queue.Queue, stop: threading.Event) -> object:
    """The next item, or the end marker once the run is stopping."""
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return _END
