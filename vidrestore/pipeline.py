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
import sys
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from vidrestore import __version__
from vidrestore.engine import FaceRestorer, RestoreOptions
from vidrestore.errors import VidrestoreError
from vidrestore.faces.tracking import DetectionSchedule, SceneCutDetector, Stabilizer, TrackedFace, as_faces
from vidrestore.io import EncodeSettings, SourceFrame, VideoSink, VideoSource, check_output_path

_END = object()  # end-of-stream marker on the queues


@dataclass
class VideoOptions(RestoreOptions):
    """Everything ``vidrestore restore`` can be told; ``restore_video`` takes the same names."""

    codec: str | None = None
    crf: int | None = None
    preset: str | None = None
    pix_fmt: str | None = None
    encoder_opts: dict[str, str] = field(default_factory=dict)
    start: float | None = None  # seconds
    end: float | None = None  # seconds
    max_frames: int | None = None
    overwrite: bool = False
    debug_overlay: bool = False  # draw detections instead of restoring: no model weights needed
    report: Path | None = None  # write a JSON run report here
    progress: bool = True
    frame_batch: int = 8  # frames handed to the engine at once; their faces are restored together
    smooth: float = 1.0  # strength of the temporal smoothing of each track's alignment; 0: none
    smooth_window: int = 8  # look-ahead: frame t is smoothed with frames t-N..t+N
    detect_every: int = 1  # run the detector on every k-th frame of a shot; the tracker carries the rest

    def validate(self) -> None:
        super().validate()
        if self.upscale != 1:
            raise VidrestoreError("--upscale is for still images; video keeps its frame size")
        if self.start is not None and self.start < 0:
            raise VidrestoreError(f"--start must be at least 0 seconds, not {self.start}")
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise VidrestoreError(f"--end ({self.end}) must come after --start ({self.start})")
        if self.max_frames is not None and self.max_frames < 1:
            raise VidrestoreError(f"--frames must be at least 1, not {self.max_frames}")
        if self.frame_batch < 1:
            raise VidrestoreError(f"--frame-batch must be at least 1, not {self.frame_batch}")
        if self.smooth < 0:
            raise VidrestoreError(f"--smooth must be 0 or more, not {self.smooth}")
        if self.detect_every < 1:
            raise VidrestoreError(f"--detect-every must be at least 1, not {self.detect_every}")
        if not 1 <= self.smooth_window <= 120:
            raise VidrestoreError(f"--smooth-window must be from 1 to 120 frames, not {self.smooth_window}")

    def encode_settings(self) -> EncodeSettings:
        return EncodeSettings(
            codec=self.codec,
            crf=self.crf,
            preset=self.preset,
            pix_fmt=self.pix_fmt,
            options=self.encoder_opts,
        )


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
            f"{self.frames} frames ({self.frames_with_faces} with faces, {self.faces} faces) in "
            f"{self.seconds:.1f} s, {self.fps:.1f} fps → {self.output} ({self.codec}, {self.pix_fmt})"
        )


def versions() -> dict[str, str]:
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
    if torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name()
    return out


def restore_video(src: str | Path, dst: str | Path, **options: Any) -> RunReport:
    """Restore every face in the video ``src`` and write ``dst``; options are :class:`VideoOptions` fields."""
    known = {f.name for f in fields(VideoOptions)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise VidrestoreError(f"unknown option(s): {', '.join(unknown)}")
    return run(Path(src), Path(dst), VideoOptions(**options))


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put unless the run is stopping; a full queue is retried so a stop is never missed."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _draw_overlay(rgb: np.ndarray, faces: list[TrackedFace]) -> np.ndarray:
    """Boxes, the 5 landmarks, track IDs and scores, for checking detection before restoring.

    A face the detector missed in this frame (filled in by the tracker) is drawn in yellow.
    """
    out = rgb.copy()
    top = 65535 if out.dtype == np.uint16 else 255
    thick = max(1, round(max(out.shape[:2]) / 400))
    for face in faces:
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        colour = (0, top, 0) if face.detected else (top, top, 0)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        for (x, y), dot in zip(
            face.landmarks,
            [(top, 0, 0), (0, 0, top), (top, top, 0), (top, 0, top), (0, top, top)],
            strict=True,
        ):
            cv2.circle(out, (int(round(x)), int(round(y))), thick + 1, dot, -1)
        label = f"#{face.track_id} {face.score:.2f}"
        cv2.putText(out, label, (x1, max(0, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, colour, thick)
    return out


class _Progress:
    """tqdm when asked for, with the face count beside frames, fps and ETA."""

    def __init__(self, total: int | None, enabled: bool):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="frame", dynamic_ncols=True, file=sys.stderr)
        self.faces = 0

    def update(self, faces: int) -> None:
        if self.bar is not None:
            self.faces += faces
            self.bar.set_postfix(faces=self.faces, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class _Worker(threading.Thread):
    """A pipeline thread that records its exception for the main thread and stops the run."""

    def __init__(self, name: str, target: Callable[[], None], stop: threading.Event):
        super().__init__(name=name, daemon=True)
        self._target_fn = target
        self._stop_event = stop
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._target_fn()
        except BaseException as exc:  # handed to the main thread, which re-raises it
            self.error = exc
            self._stop_event.set()


def _batches(q: queue.Queue, size: int, stop: threading.Event) -> Iterator[list[SourceFrame]]:
    """Group decoded frames into batches of up to ``size`` frames of one size."""
    batch: list[SourceFrame] = []
    while not stop.is_set():
        try:
            item = q.get(timeout=0.1)
        except queue.Empty:
            continue
        if item is _END:
            break
        if batch and item.rgb.shape != batch[0].rgb.shape:
            yield batch
            batch = []
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch and not stop.is_set():
        yield batch


def run(src: Path, dst: Path, options: VideoOptions, restorer: FaceRestorer | None = None) -> RunReport:
    """Run the whole job; ``restorer`` lets callers reuse a loaded engine across files."""
    t_start = time.perf_counter()
    options.validate()
    check_output_path(src, dst, overwrite=options.overwrite)
    report = RunReport(input=str(src), output=str(dst), versions=versions())
    report.settings = {k: v for k, v in asdict(options).items() if k not in ("report",)}
    with VideoSource(src, start=options.start, end=options.end, max_frames=options.max_frames) as source:
        if restorer is None:
            restorer = FaceRestorer(options, progress=options.progress, load_model=not options.debug_overlay)
        report.device, report.dtype = str(restorer.device), str(restorer.dtype).removeprefix("torch.")
        engine_before = dict(restorer.timings)  # a reused engine has earlier runs' seconds in it
        total = source.info.frames
        if options.max_frames is not None:
            total = min(total or options.max_frames, options.max_frames)
        if options.start is not None or options.end is not None:
            total = None  # the container's count no longer applies
        with VideoSink(dst, source, options.encode_settings(), overwrite=options.overwrite) as sink:
            report.codec, report.pix_fmt = sink.codec, sink.pix_fmt
            _stream(source, sink, restorer, options, report, total)
            report.notices = list(sink.notices)
        report.warnings = list(source.warnings)
    for stage, seconds in restorer.timings.items():
        report.stages[stage] += seconds - engine_before.get(stage, 0.0)
    report.seconds = time.perf_counter() - t_start
    if options.report is not None:
        try:
            options.report.write_text(report.to_json())
        except OSError as exc:
            raise VidrestoreError(f"cannot write the report {options.report}: {exc.strerror}") from None
    return report


def _stream(
    source: VideoSource,
    sink: VideoSink,
    restorer: FaceRestorer,
    options: VideoOptions,
    report: RunReport,
    total: int | None,
) -> None:
    """Overlap decoding, restoring and encoding; any thread's error stops all three and is re-raised."""
    depth = max(2, options.frame_batch)
    decoded: queue.Queue = queue.Queue(maxsize=depth)
    restored: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    progress = _Progress(total, options.progress)

    def decode() -> None:
        t = time.perf_counter()
        for frame in source.frames():
            report.stages["decode"] += time.perf_counter() - t
            if not _put(decoded, frame, stop):
                return
            t = time.perf_counter()
        _put(decoded, _END, stop)

    def encode() -> None:
        while True:
            try:
                item = restored.get(timeout=0.1)
            except queue.Empty:
                if stop.is_set():
                    return
                continue
            if item is _END:
                return
            frame, rgb, mask, n_faces = item
            t = time.perf_counter()
            sink.write(frame, rgb, mask)
            report.stages["encode"] += time.perf_counter() - t
            progress.update(n_faces)

    workers = [_Worker("vidrestore-decode", decode, stop), _Worker("vidrestore-encode", encode, stop)]
    for w in workers:
        w.start()
    stabilizer = Stabilizer(
        window=options.smooth_window if options.smooth > 0 else 0,
        strength=options.smooth,
        smooth=options.smooth > 0,
    )
    cuts = SceneCutDetector()
    schedule = DetectionSchedule(options.detect_every)
    pending: deque[tuple[SourceFrame, torch.Tensor]] = deque()  # detected, waiting for their look-ahead
    ready: list[tuple[SourceFrame, torch.Tensor, list[TrackedFace]]] = []

    def finalise(frames: list[tuple[int, list[TrackedFace]]]) -> None:
        for index, tracked in frames:
            frame, pixels = pending.popleft()
            if frame.index != index:
                raise RuntimeError(f"tracker returned frame {index}, expected {frame.index}")
            ready.append((frame, pixels, tracked))

    def emit(final: bool) -> bool:
        """Restore and queue the finalised frames, once a batch is full (or at the end)."""
        while ready and (final or len(ready) >= options.frame_batch):
            chunk, ready[:] = ready[: options.frame_batch], ready[options.frame_batch :]
            for item in _process(chunk, restorer, options, report):
                report.frames += 1
                report.faces += item[3]
                report.frames_with_faces += item[3] > 0
                if not _put(restored, item, stop):
                    return False
        return True

    try:
        for batch in _batches(decoded, options.frame_batch, stop):
            pixels = _upload(batch, restorer, report)
            cut = [cuts(_eight_bit(frame.rgb)) for frame in batch]
            wanted = [i for i, c in enumerate(cut) if schedule(c)]
            found = dict(
                zip(wanted, restorer.detect(_detector_view(pixels[wanted])) if wanted else [], strict=True)
            )
            for i, (frame, p) in enumerate(zip(batch, pixels, strict=True)):
                pending.append((frame, p))
                finalise(stabilizer.push(found.get(i), cut[i]))
            if not emit(final=False):
                break
        if not stop.is_set():
            finalise(stabilizer.flush())
            emit(final=True)
        report.tracks = [asdict(t) for t in stabilizer.tracks()]
        _put(restored, _END, stop)
        for w in workers:
            w.join()
    finally:
        stop.set()  # releases a thread still waiting on a queue, if this thread failed
        for w in workers:
            w.join()
        progress.close()
    for w in workers:
        if w.error is not None:
            raise w.error


def _upload(batch: list[SourceFrame], restorer: FaceRestorer, report: RunReport) -> torch.Tensor:
    """One upload per frame: the integer pixels (B, 3, H, W) stay on the device until restored."""
    t0 = time.perf_counter()
    stacked = torch.from_numpy(np.stack([f.rgb for f in batch]))
    pixels = stacked.to(restorer.device, non_blocking=True).permute(0, 3, 1, 2)
    report.stages["upload"] += time.perf_counter() - t0
    return pixels


def _detector_view(pixels: torch.Tensor) -> torch.Tensor:
    """What the detector sees: the 8-bit pixels themselves, or deeper ones scaled to floats."""
    return pixels if pixels.dtype == torch.uint8 else pixels.float().div_(_top(pixels))


def _eight_bit(rgb: np.ndarray) -> np.ndarray:
    """The scene-cut detector's 8-bit view of a frame."""
    return rgb if rgb.dtype == np.uint8 else (rgb >> 8).astype(np.uint8)


def _top(pixels: torch.Tensor) -> float:
    return 65535.0 if pixels.dtype == torch.uint16 else 255.0


def _process(
    chunk: list[tuple[SourceFrame, torch.Tensor, list[TrackedFace]]],
    restorer: FaceRestorer,
    options: VideoOptions,
    report: RunReport,
) -> list[tuple[SourceFrame, np.ndarray | None, np.ndarray | None, int]]:
    """Restore finalised frames with their tracked faces: one download for the whole chunk."""
    if options.debug_overlay:
        return [(f, _draw_overlay(f.rgb, tracked), None, len(tracked)) for f, _, tracked in chunk]
    pixels = torch.stack([p for _, p, _ in chunk])
    top = _top(pixels)
    result = restorer.restore(pixels.float().div_(top), faces=[as_faces(t) for _, _, t in chunk])
    t0 = time.perf_counter()
    has_faces = [i for i, (_, _, tracked) in enumerate(chunk) if tracked]
    rgb: dict[int, np.ndarray] = {}
    masks: dict[int, np.ndarray] = {}
    if has_faces:
        idx = torch.tensor(has_faces, device=restorer.device)
        out = (result.frames[idx].clamp_(0, 1) * top).round_().to(pixels.dtype).permute(0, 2, 3, 1)
        out_np, mask_np = out.cpu().numpy(), result.changed[idx].cpu().numpy()
        for j, i in enumerate(has_faces):
            rgb[i], masks[i] = out_np[j], mask_np[j]
    report.stages["download"] += time.perf_counter() - t0
    return [(f, rgb.get(i), masks.get(i), len(t)) for i, (f, _, t) in enumerate(chunk)]
