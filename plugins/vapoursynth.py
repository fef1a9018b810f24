"""vidrestore as a VapourSynth filter: ``clip = restore(clip, ...)`` inside an encoding script.

The filter runs the CLI's streaming core (:class:`vidrestore.stream.FaceStream`: detect → track and smooth →
batched restoration → paste back) and must give the same frame whatever order VapourSynth asks for frames
in, and however many threads it runs. Tracking and smoothing are sequential, so the clip is cut into fixed
segments of ``segment`` frames, and every frame of segment k is computed by one stream, in order, over a
fixed range of source frames: ``warmup`` frames before the segment (for the tracks, the smoother and the
scene-cut detector to settle) and ``smooth_window`` after it (the smoother's look-ahead), both rounded out
to whole batches. The stream restores the segment's own frames, and before them the frames (rounded up
to whole batches) whose restored faces and held masks the first ones are averaged with (``texture_smooth``;
with ParseNet masks, their memory: :func:`vidrestore.engine.film_history`), which it drops.
A frame thus depends on a fixed range of source frames only, never on what was requested before.

Batches are aligned on multiples of ``frame_batch`` from frame 0, for detection and for restoration, as in the
CLI: the GPU's results depend on what is batched together, and this keeps them independent of the request
order too. Detections of whole batches are kept (they are a function of their frames alone), so the
overlapping context of the next segment is not detected twice; finished segments are kept in a small LRU
cache, as face patches only. Python callbacks do not run in parallel anyway (the GIL), so one segment is
restored at a time, whichever thread asks, and a linear ``vspipe`` run restores each segment once, in
batches, as the CLI does.

Track IDs are numbered within a segment: a stable ID across segments would make a segment depend on all the
ones before it, which is exactly the dependence this design removes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import vapoursynth as vs

from vidrestore.engine import FaceRestorer, film_history
from vidrestore.errors import VidrestoreError
from vidrestore.faces.detection import Faces
from vidrestore.memory import fit_to_memory
from vidrestore.options import TABLE, EngineOptions, FilterOptions, OptionError, TemporalOptions, build
from vidrestore.stream import FaceStream, StreamResult, held_sample_bytes

__all__ = ["restore"]

# Accepted formats: the numpy dtype of their planes.
_FORMATS: dict[int, type[np.generic]] = {
    vs.RGB24: np.uint8,
    vs.RGB48: np.uint16,
    vs.RGBH: np.float16,
    vs.RGBS: np.float32,
}
PROP_FACES = "VidrestoreFaces"
PROP_TRACKS = "VidrestoreTrackIDs"
PROP_RESTORED = "VidrestoreRestored"
PROP_SEGMENT = "VidrestoreSegment"
_LAYERS = (EngineOptions, TemporalOptions, FilterOptions)


def restore(clip: vs.VideoNode, **options: Any) -> vs.VideoNode:
    """Restore every face in ``clip``; returns a clip of the same format, size and length.

    ``clip`` must be RGB24, RGB48, RGBH or RGBS (float planes are read in [0, 1]). Pixels the restoration
    does not touch are returned exactly as they came in, and frames without faces are passed through.
    Frame properties are kept, and each frame gets ``VidrestoreFaces`` (faces restored),
    ``VidrestoreTrackIDs`` (their track IDs, absent when there are none), ``VidrestoreRestored`` (1 if any
    pixel changed) and ``VidrestoreSegment`` (the segment the frame was computed in).

    The options are the CLI's settings under their Python names (``frame_batch`` for ``--frame-batch``;
    the old names ``batch``, ``face_batch``'s ``batch_size`` and ``min_eye_distance`` still work, with a
    deprecation warning), plus the frame scheduling: ``segment``, ``warmup`` and ``cache``. Frames are
    restored in fixed segments of ``segment`` frames (a multiple of ``frame_batch``), each from a fixed
    range of source frames: ``warmup`` frames before it (tracked, not restored, so that tracks and smoothing
    have settled) and ``smooth_window`` after it. The output therefore never depends on the request order
    or ``core.num_threads``; segment 0 is exactly the CLI's output, later ones too once the tracks settled.
    Set ``face_batch`` on a GPU to get the same output on every run, not just within one. Track IDs are
    numbered within a segment. The full list is below.
    """
    if not isinstance(clip, vs.VideoNode):
        raise vs.Error(f"vidrestore: restore() needs a video clip, not {type(clip).__name__}")
    _check_format(clip)
    try:
        engine, temporal, schedule = build(_LAYERS, options, "vapoursynth")
        if schedule.segment % temporal.frame_batch:
            raise OptionError(
                "segment",
                f"({schedule.segment}) must be a multiple of frame_batch ({temporal.frame_batch})",
                "vapoursynth",
            )
        restorer = FaceRestorer(engine, progress=True)
    except VidrestoreError as exc:
        raise vs.Error(f"vidrestore: {exc}") from None
    # The detector's batch and picture size follow the memory budget; the frame batch stays the script's,
    # since the segments are built on it (VapourSynth's own cache holds the frames).
    fmt = clip.format
    integer = fmt.sample_type == vs.INTEGER
    _, plan = fit_to_memory(
        restorer,
        clip.width,
        clip.height,
        temporal,
        # Float clips are held as they come (half or single floats), integer ones as the stream holds them.
        sample_bytes=held_sample_bytes(fmt.bits_per_sample > 8, restorer.device)
        if integer
        else fmt.bytes_per_sample,
        keep_batch=True,
    )
    for notice in plan.notices:
        vs.core.log_message(vs.MESSAGE_TYPE_WARNING, f"vidrestore: {notice}")
    filt = _SegmentFilter(clip, restorer, temporal, schedule)
    return clip.std.ModifyFrame(clips=clip, selector=filt)


restore.__doc__ = (restore.__doc__ or "") + "".join(
    f"\n    - ``{s.name}``: {s.help}"
    for s in TABLE.values()
    if s.vapoursynth and s.layer in ("engine", "temporal", "filter")
)


def _check_format(clip: vs.VideoNode) -> None:
    """A clear error for what the filter cannot take, naming the conversion to add to the script."""
    fmt = clip.format
    if fmt is None or clip.width == 0 or clip.height == 0:
        raise vs.Error(
            "vidrestore: the clip's format or size varies from frame to frame; give it one with "
            'core.resize.Bicubic(clip, width=W, height=H, format=vs.RGBS, matrix_in_s="709")'
        )
    if fmt.id in _FORMATS:
        return
    if fmt.color_family == vs.RGB:
        target = "vs.RGB48" if fmt.sample_type == vs.INTEGER else "vs.RGBS"
        hint = f"core.resize.Point(clip, format={target})"
    elif fmt.color_family == vs.GRAY:
        hint = "core.resize.Point(clip, format=vs.RGBS)"
    else:
        hint = 'core.resize.Bicubic(clip, format=vs.RGBS, matrix_in_s="709") (or the clip\'s own matrix)'
    raise vs.Error(
        f"vidrestore: {fmt.name} is not supported; it takes RGB24, RGB48, RGBH or RGBS. Convert first: {hint}"
    )


@dataclass
class _Result:
    """One output frame: the face patch to write over the source (None: unchanged) and the props."""

    track_ids: list[int]
    origin: tuple[int, int] = (0, 0)  # top-left (y, x) of the patch
    patch: np.ndarray | None = None  # (3, h, w) in the clip's sample type
    mask: np.ndarray | None = None  # (h, w) bool: the pixels of the patch that changed

    @classmethod
    def of(cls, result: StreamResult, dtype: type[np.generic]) -> _Result:
        """Keep only what changed: the bounding box of the changed pixels."""
        out = cls([face.track_id for face in result.faces])
        if result.mask is None or not out.track_ids or not result.mask.any():
            return out
        rows, cols = result.mask.any(axis=1).nonzero()[0], result.mask.any(axis=0).nonzero()[0]
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        out.origin = (y0, x0)
        out.patch = result.rgb[y0:y1, x0:x1].transpose(2, 0, 1).astype(dtype)
        out.mask = result.mask[y0:y1, x0:x1]
        return out

    def apply(self, frame: vs.VideoFrame, segment: int) -> vs.VideoFrame:
        out = frame.copy()
        if self.patch is not None:
            (y, x), (h, w) = self.origin, self.patch.shape[1:]
            for p in range(3):
                np.copyto(np.asarray(out[p])[y : y + h, x : x + w], self.patch[p], where=self.mask)
        props = out.props
        props[PROP_FACES] = len(self.track_ids)
        props[PROP_RESTORED] = int(self.patch is not None)
        props[PROP_SEGMENT] = segment
        if self.track_ids:
            props[PROP_TRACKS] = self.track_ids
        elif PROP_TRACKS in props:
            del props[PROP_TRACKS]  # from an earlier restore() in the same script
        return out


class _SegmentFilter:
    """The ModifyFrame selector: serves frames from restored segments, restoring a segment when needed.

    Source frames are read on the calling VapourSynth thread (as numpy arrays); all torch work runs on the
    filter's own engine thread, and the caller waits for it. VapourSynth calls the selector from any of its
    threads, and torch's CPU thread pool (OpenMP, whose threads spin at every barrier) slows down many times
    over when it is driven from changing threads, or while Python work runs beside it on the same cores.
    """

    def __init__(
        self, clip: vs.VideoNode, restorer: FaceRestorer, temporal: TemporalOptions, schedule: FilterOptions
    ) -> None:
        self.clip = clip
        self.restorer = restorer
        self.temporal = temporal
        self.segment, self.cache = schedule.segment, schedule.cache
        self.warmup = max(16, 2 * temporal.window) if schedule.warmup is None else schedule.warmup
        # Whole batches before a segment restored (and dropped) only so that its first faces are averaged
        # with the same earlier faces (texture, held masks) as in the CLI (engine.film_history).
        self.history = -(-film_history(restorer.options) // temporal.frame_batch) * temporal.frame_batch
        self.length = clip.num_frames
        self.dtype = _FORMATS[clip.format.id]
        self._lock = threading.Lock()  # one segment is restored at a time, whichever thread asks
        # The engine thread's current CUDA device is the engine's (a new thread starts on GPU 0).
        self._engine = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="vidrestore-engine", initializer=_bind, initargs=(restorer,)
        )
        self._segments: OrderedDict[int, list[_Result]] = OrderedDict()
        self._detections: OrderedDict[tuple[Hashable, ...], list[Faces]] = OrderedDict()
        # Enough detection batches for two segments' context: the next segment reuses the overlap.
        b = temporal.frame_batch
        self._max_detections = 2 * (
            -(-(self.segment + self.history + self.warmup + temporal.window) // b) + 2
        )

    def __call__(self, n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        k = n // self.segment
        try:
            with self._lock:
                result = self._segment(k)[n - k * self.segment]
        except VidrestoreError as exc:
            raise vs.Error(f"vidrestore: frame {n}: {exc}") from None
        except Exception as exc:
            raise vs.Error(f"vidrestore: frame {n}: {type(exc).__name__}: {exc}") from exc
        return result.apply(f, k)

    def _segment(self, k: int) -> list[_Result]:
        if k in self._segments:
            self._segments.move_to_end(k)
            return self._segments[k]
        results = self._restore_segment(k)
        self._segments[k] = results
        while len(self._segments) > self.cache:
            self._segments.popitem(last=False)
        return results

    def _restore_segment(self, k: int) -> list[_Result]:
        """One :class:`FaceStream` over the segment's context, restoring only the segment's own frames.

        The context is whole batches: from the one holding frame ``s0 - warmup`` to the one holding the
        last frame of the look-ahead, so that every batch is detected as the CLI detects it.
        """
        b = self.temporal.frame_batch
        s0, s1 = k * self.segment, min(self.length, (k + 1) * self.segment)
        lo = max(0, (s0 - self.history - self.warmup) // b * b)
        hi = min(self.length, -(-(s1 + self.temporal.window) // b) * b)
        stream = FaceStream(self.restorer, self.temporal, start=lo, detect=self._detect)

        def keep(results: list[StreamResult]) -> list[tuple[int, _Result]]:
            """Each frame's patch as soon as it is out, not the whole frame: a segment is many frames."""
            return [(r.tag, _Result.of(r, self.dtype)) for r in results if r.tag >= s0]

        def push(frames: list[tuple[int, np.ndarray]]) -> list[tuple[int, _Result]]:
            first = s0 - self.history
            return keep([r for n, rgb in frames for r in stream.push(rgb, n, restore=first <= n < s1)])

        done: list[tuple[int, _Result]] = []
        for start in range(lo, hi, b):
            done += self._on_engine(push, [(n, self._read(n)) for n in range(start, min(start + b, hi))])
        done += self._on_engine(lambda: keep(stream.flush()))
        if [n for n, _ in done] != list(range(s0, s1)):
            raise RuntimeError(f"segment {k} restored frames {[n for n, _ in done]}, not {s0}..{s1 - 1}")
        return _renumber([result for _, result in done])

    def _on_engine[T](self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn`` on the engine thread and wait for it."""
        return self._engine.submit(fn, *args).result()

    def _read(self, n: int) -> np.ndarray:
        """Source frame ``n`` as (H, W, 3) samples of its own type."""
        try:
            frame = self.clip.get_frame(n)
        except vs.Error as exc:  # its message ends with the source filter's own error, after a traceback
            message = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
            raise VidrestoreError(f"reading source frame {n} failed: {message}") from None
        return np.stack([np.asarray(frame[p]) for p in range(3)], axis=-1)

    def _detect(self, pixels: torch.Tensor, frames: Sequence[Hashable]) -> list[Faces]:
        """The detector, on the stream's batches; kept, as they are a function of those frames alone: the
        next segment's warm-up asks for them again."""
        key = tuple(frames)
        if key in self._detections:
            self._detections.move_to_end(key)
        else:
            self._detections[key] = self.restorer.detect(pixels)
            while len(self._detections) > self._max_detections:
                self._detections.popitem(last=False)
        return self._detections[key]


def _bind(restorer: FaceRestorer) -> None:
    """Make the engine's GPU the current CUDA device of the calling (engine) thread."""
    if restorer.device.type == "cuda":
        torch.cuda.set_device(restorer.device)


def _renumber(results: list[_Result]) -> list[_Result]:
    """Track IDs from 1 within the segment, in order of first appearance (the tracker's count tracks that
    appeared only in the warm-up)."""
    ids: dict[int, int] = {}
    for result in results:
        for track_id in result.track_ids:
            ids.setdefault(track_id, len(ids) + 1)
        result.track_ids = [ids[track_id] for track_id in result.track_ids]
    return results
