"""The streaming core: frames in, in order; restored frames out, in the same order; then a flush.

:class:`FaceStream` owns everything that depends on the order of frames: scene cuts, the detection
schedule, tracking and smoothing with a look-ahead, and the batching of frames for the engine. The CLI's
pipeline puts its decode and encode threads around one stream; the VapourSynth filter runs one stream over
each segment's fixed range of source frames; ``vidrestore eval temporal`` measures one. People who bring
their own frames (decord, a camera) use it directly::

    stream = FaceStream(FaceRestorer(EngineOptions(...)), TemporalOptions())
    for rgb in frames:                     # (H, W, 3) uint8 / uint16, or float in [0, 1]
        for out in stream.push(rgb):
            show(out.rgb if out.rgb is not None else rgb)
    for out in stream.flush(): ...

Frames are detected ``frame_batch`` at a time and restored ``frame_batch`` at a time, in batches aligned
on multiples of ``frame_batch`` from the stream's first frame; a GPU's results depend on what is batched
together, so this alignment is what makes two runs over the same frames agree.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
import torch

from vidrestore.engine import FaceRestorer
from vidrestore.faces.detection import Faces
from vidrestore.faces.film import FilmContext, FilmState
from vidrestore.faces.tracking import (
    DetectionSchedule,
    SceneCutDetector,
    Stabilizer,
    TrackedFace,
    TrackSummary,
    as_faces,
)
from vidrestore.options import TemporalOptions

Detect = Callable[[torch.Tensor, Sequence[Hashable]], list[Faces]]


@dataclass
class StreamResult:
    """One frame out of the stream: the caller's tag, its faces, and what the restoration changed.

    ``rgb`` is the restored frame, (H, W, 3) in the input's sample type (None: nothing changed, use the
    input as it is); ``mask`` (H, W) bool marks the pixels that changed.
    """

    tag: Any
    faces: list[TrackedFace]
    rgb: np.ndarray | None = None
    mask: np.ndarray | None = None


@dataclass
class _Frame:
    tag: Any
    rgb: np.ndarray | None  # the caller's array, until the scene-cut detector has seen it
    pixels: torch.Tensor  # (3, H, W) on the engine's device: the input's sample type (see _to_device)
    sample: np.dtype  # the caller's sample type, which results come back in
    top: float | None  # the integer code value of 1.0; None: float samples in [0, 1]
    restore: bool
    cut: bool | None  # the caller's shot boundary, or None: detected
    index: int  # its place in the sequence
    shot: int = 0  # the shot it belongs to, counted from the first frame, once cuts are known


class FaceStream:
    """Tracks, smooths and restores the faces of a sequence of frames, in order.

    ``engine`` without a model (``load_model=False``) only tracks: results carry faces and no pixels,
    unless ``overlay`` draws the detections instead of restoring. ``start`` numbers the first frame, so
    that the detection schedule is in phase with a shot that began at frame 0 (the filter's segments start
    mid-shot). ``detect`` replaces the engine's detector, e.g. with a cache keyed by the frames' tags.
    """

    def __init__(
        self,
        engine: FaceRestorer,
        temporal: TemporalOptions | None = None,
        *,
        start: int = 0,
        overlay: bool = False,
        detect: Detect | None = None,
    ) -> None:
        self.engine = engine
        self.temporal = temporal = temporal or TemporalOptions()
        self.overlay = overlay
        self._detect = detect or (lambda pixels, _tags: engine.detect(pixels))
        self._stabilizer = Stabilizer(
            window=temporal.window, strength=temporal.smooth, smooth=temporal.smooth > 0
        )
        self._cuts = SceneCutDetector()
        self._schedule = DetectionSchedule(temporal.detect_every)
        for _ in range(start % temporal.detect_every):
            self._schedule(False)
        self._next = 0  # the index the next pushed frame gets
        self._shot = -1  # the shot of the last frame cut detection has seen
        self.film = FilmState()  # what the engine's film matching keeps between batches
        self._batch: list[_Frame] = []  # pushed, waiting for a full detection batch
        self._pending: deque[_Frame] = deque()  # detected, waiting for their look-ahead
        self._ready: list[tuple[_Frame, list[TrackedFace]]] = []  # final, waiting for a full restore batch

    def push(
        self, rgb: np.ndarray, tag: Any = None, *, restore: bool = True, cut: bool | None = None
    ) -> list[StreamResult]:
        """Add the next frame; returns the frames that became final, in order (often none).

        ``rgb`` is (H, W, 3) RGB (any strides): uint8, uint16, or float in [0, 1]. ``tag`` comes back with
        the frame's result (default: its index in the stream). ``restore=False`` tracks the frame without
        restoring it or returning it: context for the frames around it. ``cut`` says whether a new shot starts
        at this frame, for callers who know their cuts (an edit list); None: the scene-cut detector decides.
        """
        frame = self._upload(rgb, self._next if tag is None else tag, restore, cut, self._next)
        self._next += 1
        out = []
        if self._batch and self._batch[0].pixels.shape != frame.pixels.shape:
            out = self._detect_batch()  # a new size starts a new batch
        self._batch.append(frame)
        if len(self._batch) == self.temporal.frame_batch:
            out += self._detect_batch()
        return out

    def flush(self) -> list[StreamResult]:
        """Every frame still held, at the end of the sequence."""
        out = self._detect_batch() if self._batch else []
        self._finalise(self._stabilizer.flush())
        return out + self._emit(final=True)

    def tracks(self) -> list[TrackSummary]:
        """The tracks seen so far (first and last frame, faces), as the run report lists them."""
        return self._stabilizer.tracks()

    def _upload(self, rgb: np.ndarray, tag: Any, restore: bool, cut: bool | None, index: int) -> _Frame:
        """One upload per frame: the samples stay on the device, in their own type, until restored."""
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"a frame must be (H, W, 3) RGB, not {rgb.shape}")
        top = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(rgb.dtype)
        if top is None and rgb.dtype.kind != "f":
            raise ValueError(f"frames must be uint8, uint16 or float, not {rgb.dtype}")
        t0 = time.perf_counter()
        pixels = _to_device(rgb, self.engine.device)
        self.engine.timings["upload"] += time.perf_counter() - t0
        return _Frame(tag, rgb, pixels.permute(2, 0, 1), rgb.dtype, top, restore, cut, index)

    def _detect_batch(self) -> list[StreamResult]:
        """Cut detection, the schedule and the detector over the buffered batch; then track each frame."""
        batch, self._batch = self._batch, []
        cuts = [self._cuts(_eight_bit(f.rgb)) if f.cut is None else f.cut for f in batch]
        wanted = [i for i, cut in enumerate(cuts) if self._schedule(cut)]
        found: dict[int, Faces] = {}
        if wanted:
            pixels = torch.stack([_detector_view(batch[i]) for i in wanted])
            found = dict(zip(wanted, self._detect(pixels, [batch[i].tag for i in wanted]), strict=True))
        for i, (frame, cut) in enumerate(zip(batch, cuts, strict=True)):
            frame.rgb = None  # only the device copy is needed from here on
            self._shot += bool(cut) or self._shot < 0
            frame.shot = self._shot
            self._pending.append(frame)
            self._finalise(self._stabilizer.push(found.get(i), cut))
        return self._emit(final=False)

    def _finalise(self, frames: list[tuple[int, list[TrackedFace]]]) -> None:
        for _, tracked in frames:
            frame = self._pending.popleft()
            if frame.restore:
                self._ready.append((frame, tracked))

    def _emit(self, final: bool) -> list[StreamResult]:
        """Restore the finalised frames once a batch is full (or at the end), in batches of one size."""
        out: list[StreamResult] = []
        size = self.temporal.frame_batch
        while self._ready and (final or len(self._ready) >= size):
            chunk, self._ready = self._ready[:size], self._ready[size:]
            shape = chunk[0][0].pixels.shape
            same = next((i for i, (f, _) in enumerate(chunk) if f.pixels.shape != shape), len(chunk))
            self._ready = chunk[same:] + self._ready
            out += self._restore(chunk[:same])
        return out

    def _restore(self, chunk: list[tuple[_Frame, list[TrackedFace]]]) -> list[StreamResult]:
        """Restore one batch of final frames with their tracked faces: one download for the whole batch."""
        results = [StreamResult(frame.tag, tracked) for frame, tracked in chunk]
        context = FilmContext(
            track_ids=np.array([f.track_id for _, tracked in chunk for f in tracked], np.int64),
            shots=np.array([frame.shot for frame, _ in chunk], np.int64),
            frames=np.array([frame.index for frame, _ in chunk], np.int64),
            state=self.film,
        )
        faces = [as_faces(tracked) for _, tracked in chunk]
        if self.overlay:
            names = self.engine.networks(faces, context)
            networks = iter(names)
            for result, (frame, tracked) in zip(results, chunk, strict=True):
                rgb = _from_device(frame.pixels.permute(1, 2, 0), frame.sample)
                result.rgb = draw_overlay(rgb, tracked, [next(networks) for _ in tracked] if names else None)
            return results
        with_faces = [i for i, (_, tracked) in enumerate(chunk) if tracked]
        if self.engine.model is None or not with_faces:
            return results
        frames = torch.stack([_unit(frame) for frame, _ in chunk])
        restored = self.engine.restore(frames, faces=faces, context=context)
        t0 = time.perf_counter()
        idx = torch.tensor(with_faces, device=self.engine.device)
        first = chunk[0][0]
        out = restored.frames[idx].clamp_(0, 1)
        if first.top is not None:
            out = (out * first.top).round_()
        out_np = _from_device(out.to(first.pixels.dtype).permute(0, 2, 3, 1), first.sample)
        masks = restored.changed[idx].cpu().numpy()
        self.engine.timings["download"] += time.perf_counter() - t0
        for j, i in enumerate(with_faces):
            results[i].rgb, results[i].mask = out_np[j], masks[j]
        return results


def _wide_samples(device: torch.device) -> bool:
    """Whether uint16 samples are held as int32 on ``device``: CUDA's uint16 support is partial (stack,
    indexing and casts are missing for it in many torch builds); the CPU has them all."""
    return device.type == "cuda"


def held_sample_bytes(deep: bool, device: torch.device) -> int:
    """Bytes a stream holds per sample of 8-bit or deeper (``deep``) frames on ``device``, for the memory
    budget: uint16 is held as int32 where :func:`_wide_samples`."""
    return (4 if _wide_samples(device) else 2) if deep else 1


def _to_device(rgb: np.ndarray, device: torch.device) -> torch.Tensor:
    """(H, W, 3) samples on ``device`` in the caller's type, but uint16 as int32 where :func:`_wide_samples`.

    The 16 bits travel as int16 (the same bytes, a type every device has) and are widened there and masked
    back to 0..65535: exact, at the upload's size.
    """
    array = np.ascontiguousarray(rgb)
    if array.dtype == np.uint16 and _wide_samples(device):
        bits = torch.from_numpy(array.view(np.int16)).to(device, non_blocking=True)
        return bits.to(torch.int32).bitwise_and_(0xFFFF)
    return torch.from_numpy(array).to(device, non_blocking=True)


def _from_device(pixels: torch.Tensor, sample: np.dtype) -> np.ndarray:
    """Integer samples held as ``pixels`` back on the host as ``sample`` (int32-held uint16 as int16 bits)."""
    if sample == np.uint16 and pixels.dtype != torch.uint16:
        pixels = torch.where(pixels >= 32768, pixels - 65536, pixels).to(torch.int16)
        return pixels.cpu().numpy().view(np.uint16)
    return pixels.cpu().numpy()


def _unit(frame: _Frame) -> torch.Tensor:
    """The engine's view of a frame: float RGB in [0, 1] (float input: NaN as 0, clipped)."""
    if frame.top is not None:
        return frame.pixels.float().div_(frame.top)
    # A copy: on the CPU the pixels share memory with the caller's array, which is not ours to change.
    return frame.pixels.to(torch.float32, copy=True).nan_to_num_(0.0).clamp_(0, 1)


def _detector_view(frame: _Frame) -> torch.Tensor:
    """What the detector sees: 8-bit samples as they are, anything else as floats in [0, 1]."""
    return frame.pixels if frame.pixels.dtype == torch.uint8 else _unit(frame)


def _eight_bit(rgb: np.ndarray) -> np.ndarray:
    """The scene-cut detector's (H, W, 3) 8-bit view of a frame."""
    if rgb.dtype == np.uint16:
        return (rgb >> 8).astype(np.uint8)
    if rgb.dtype.kind == "f":
        return (np.clip(np.nan_to_num(rgb.astype(np.float32), nan=0.0), 0, 1) * 255).round().astype(np.uint8)
    return rgb


def draw_overlay(rgb: np.ndarray, faces: list[TrackedFace], networks: list[str] | None = None) -> np.ndarray:
    """Boxes, the 5 landmarks, track IDs and scores, for checking detection before restoring; with
    ``networks``, each face's restoration network too (``--model auto`` picks one per track).

    A face the detector missed in this frame (filled in by the tracker) is drawn in yellow.
    """
    out = rgb.copy()
    top = 65535 if out.dtype == np.uint16 else 1.0 if out.dtype.kind == "f" else 255
    thick = max(1, round(max(out.shape[:2]) / 400))
    for i, face in enumerate(faces):
        x1, y1, x2, y2 = (int(round(v)) for v in face.box)
        colour = (0, top, 0) if face.detected else (top, top, 0)
        cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick)
        for (x, y), dot in zip(
            face.landmarks,
            [(top, 0, 0), (0, 0, top), (top, top, 0), (top, 0, top), (0, top, top)],
            strict=True,
        ):
            cv2.circle(out, (int(round(x)), int(round(y))), thick + 1, dot, -1)
        label = f"#{face.track_id} {face.score:.2f}" + (f" {networks[i]}" if networks else "")
        cv2.putText(out, label, (x1, max(0, y1 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, colour, thick)
    return out
