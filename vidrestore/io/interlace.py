"""Interlaced sources: what the restorer sees and what the sink writes, for each ``--interlace`` mode.

Faces are never detected or restored on a woven frame (its two fields are 1/50 or 1/60 s apart, so anything
that moves is combed). The modes:

- ``keep``: the output is interlaced like the source, in its field order. Each frame is deinterlaced with
  ``bwdif`` into one picture per field; the faces are restored on those pictures, and each field of the
  original frame takes back the restored rows of its own picture, only where the restoration changed pixels,
  so everything else keeps the original fields bit-exactly.
- ``deinterlace``: progressive output at the frame rate (``bwdif``, one picture per frame).
- ``deinterlace-fields``: progressive output at the field rate (one picture per field, twice the frames).
- ``progressive``: the frames are taken as they are, flags ignored (for material flagged interlaced that
  is not); the output is flagged progressive.
- ``auto`` (the default) is ``keep`` where the encoder can code interlaced pictures (or a lossless one keeps
  the woven frame intact) and ``deinterlace-fields`` where it cannot. An archivist does not throw away
  half of the picture's lines or motion samples unasked: deinterlacing cannot be undone, and a kept
  interlaced master can be deinterlaced later by any better method. Where the output cannot be interlaced,
  the field rate keeps every motion sample. Every interlaced run says which mode ran.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import av
import numpy as np

from vidrestore.errors import VidrestoreError
from vidrestore.io.colour import Converter, compose_planes
from vidrestore.io.encoders import output_codec
from vidrestore.io.fields import INTERLACED_CODING, WOVEN_INTACT, Bwdif
from vidrestore.io.source import SourceDescription, SourceFrame
from vidrestore.options import EncodeOptions


@dataclass
class FieldPicture(SourceFrame):
    """A deinterlaced picture of one field of ``source`` (``second``: the field displayed second)."""

    source: SourceFrame | None = None
    second: bool = False


Written = tuple[SourceFrame, np.ndarray | None, np.ndarray | None]


class Interlacing:
    """One run's handling of interlace: the sink's description, the pictures the restorer sees, and the
    frames the sink writes from its results. A progressive source passes through untouched."""

    def __init__(self, description: SourceDescription, settings: EncodeOptions, dst: Path) -> None:
        self.order = order = description.field_order
        asked = settings.interlace
        codec = output_codec(dst, settings, description)
        keeps = codec in INTERLACED_CODING or codec in WOVEN_INTACT
        self.notice: str | None = None
        said = f"{order}, from {description.field_order_from}"
        if order == "progressive":
            self.mode = "progressive" if asked in ("auto", "keep", "progressive") else asked
            if asked == "keep":
                self.notice = f"the source is progressive ({said}): nothing to keep interlaced"
            elif asked.startswith("deinterlace"):
                # Flags can lie (captures flagged progressive): deinterlace as asked, in the stream's order.
                stream = description.stream_field_order
                self.order = stream if stream in ("tff", "bff") else "tff"
                self.notice = (
                    f"the frames are flagged progressive ({said}); deinterlacing them as asked, "
                    f"{self.order} first"
                )
        elif asked == "keep" and not keeps:
            raise VidrestoreError(
                f"{codec} cannot code interlaced pictures: for --interlace keep choose libx264, mpeg2video, "
                "prores_ks or ffv1, or choose --interlace deinterlace"
            )
        else:
            self.mode = asked if asked != "auto" else ("keep" if keeps else "deinterlace-fields")
            self.notice = _notice(self.mode, said, description, codec, asked == "auto")
        self.description = self._describe(description)
        self._colour = description.colour
        # One converter per thread: the pictures are made on the decode thread, woven on the encode thread,
        # and a converter's swscale context must not run in two threads at once (it deadlocks).
        self._to_rgb = Converter(description.colour, description.colour)
        self._from_rgb = Converter(description.colour, description.colour)
        self._deep = description.info.bit_depth > 8
        self._first: tuple[np.ndarray | None, np.ndarray | None] | None = None

    @property
    def rate_factor(self) -> int:
        """Output frames per input frame."""
        return 2 if self.mode == "deinterlace-fields" else 1

    def _describe(self, d: SourceDescription) -> SourceDescription:
        if self.mode == "keep":
            return d
        if self.mode == "progressive":
            return replace(d, field_order="progressive")
        info = d.info
        rate = None if info.frame_rate is None else info.frame_rate * self.rate_factor
        frames = None if info.frames is None else info.frames * self.rate_factor
        info = replace(info, time_base=info.time_base / 2, frame_rate=rate, frames=frames)
        return replace(d, info=info, field_order="progressive")

    # -- the restorer's side -----------------------------------------------------------------------

    def pictures(self, frames: Iterable[SourceFrame]) -> Iterator[SourceFrame]:
        """What the restorer sees, in order: the frames themselves, or the deinterlaced pictures."""
        if self.mode == "progressive":
            yield from frames
        elif self.mode == "keep":
            yield from self._field_pictures(frames)
        else:
            yield from self._deinterlaced(frames)

    def _deinterlaced(self, frames: Iterable[SourceFrame]) -> Iterator[SourceFrame]:
        """bwdif's pictures as frames of their own; each carries the packets demuxed before it, and the last
        the source's tail."""
        bwdif = Bwdif(self.order, fields=self.mode == "deinterlace-fields")
        packets: list[av.Packet] = []
        held: SourceFrame | None = None
        index, tail = 0, []
        for frame in frames:
            packets += frame.packets
            tail = frame.tail
            for picture in bwdif.push(frame.frame):
                if held is not None:
                    yield held
                held, index, packets = self._picture(picture, index, packets), index + 1, []
        for picture in bwdif.flush():
            if held is not None:
                yield held
            held, index, packets = self._picture(picture, index, packets), index + 1, []
        if held is not None:
            held.tail = tail
            yield held

    def _field_pictures(self, frames: Iterable[SourceFrame]) -> Iterator[FieldPicture]:
        """Two pictures per frame, one per field in display order, each pointing back at its frame."""
        bwdif = Bwdif(self.order, fields=True)
        waiting: deque[SourceFrame] = deque()
        made = 0

        def tagged(pictures: list[av.VideoFrame]) -> Iterator[FieldPicture]:
            nonlocal made
            for picture in pictures:
                source = waiting[0]
                second = made % 2 == 1
                if second:
                    waiting.popleft()
                rgb = self._rgb(picture)
                yield FieldPicture(
                    made, source.pts, source.time, rgb, picture, [], source=source, second=second
                )
                made += 1

        for frame in frames:
            waiting.append(frame)
            yield from tagged(bwdif.push(frame.frame))
        yield from tagged(bwdif.flush())

    def _picture(self, picture: av.VideoFrame, index: int, packets: list[av.Packet]) -> SourceFrame:
        time = float(picture.pts * picture.time_base)
        return SourceFrame(index, picture.pts, time, self._rgb(picture), picture, packets)

    def _rgb(self, picture: av.VideoFrame) -> np.ndarray:
        return self._to_rgb.to_rgb(picture, "rgb48le" if self._deep else "rgb24")

    # -- the sink's side ---------------------------------------------------------------------------

    def written(self, tag: SourceFrame, rgb: np.ndarray | None, mask: np.ndarray | None) -> list[Written]:
        """The frames to write for one result of the restorer: in ``keep``, a frame once both of its fields'
        pictures are back, the restored rows woven into its fields."""
        if not isinstance(tag, FieldPicture):
            return [(tag, rgb, mask)]
        if not tag.second:
            self._first = (rgb, mask)
            return []
        assert self._first is not None and tag.source is not None
        first, self._first = self._first, None
        source = tag.source
        if first[0] is None and rgb is None:
            return [(source, None, None)]
        woven = weave(source.frame, self.order, first, (rgb, mask), self._from_rgb)
        self._colour.tag(woven)
        return [(replace(source, frame=woven), None, None)]


def weave(
    frame: av.VideoFrame,
    order: str,
    first: tuple[np.ndarray | None, np.ndarray | None],
    second: tuple[np.ndarray | None, np.ndarray | None],
    convert: Converter,
) -> av.VideoFrame:
    """A copy of ``frame`` with each field's changed pixels taken from its own restored picture
    (``first``: the field displayed first, as RGB and mask). Each field is converted and composed at
    field height, so chroma is never mixed across fields; samples outside the masks stay the original's."""
    fmt = frame.format.name
    out = av.VideoFrame(frame.width, frame.height, fmt)
    for dst, src in zip(out.planes, frame.planes, strict=True):
        _rows(dst, out)[:] = _rows(src, frame)
    top_first = order == "tff"
    for parity, (rgb, mask) in ((0 if top_first else 1, first), (1 if top_first else 0, second)):
        if rgb is None:
            continue
        rows = mask[parity::2] if mask is not None else np.ones(rgb[parity::2].shape[:2], bool)
        if not rows.any():
            continue
        field = _field(frame, parity)
        restored = convert.from_rgb(rgb[parity::2], fmt)
        compose_planes(restored, field, rows)
        for dst, src in zip(out.planes, restored.planes, strict=True):
            _rows(dst, out)[parity::2] = _rows(src, restored)
    out.pts, out.duration = frame.pts, frame.duration
    if frame.time_base is not None:
        out.time_base = frame.time_base
    return out


def _field(frame: av.VideoFrame, parity: int) -> av.VideoFrame:
    """One field of ``frame`` as a picture of its own (every plane's rows of that parity)."""
    planes = [_rows(p, frame)[parity::2] for p in frame.planes]
    field = av.VideoFrame(frame.width, planes[0].shape[0], frame.format.name)
    for dst, rows in zip(field.planes, planes, strict=True):
        _rows(dst, field)[:] = rows
    return field


def _rows(plane: av.video.plane.VideoPlane, frame: av.VideoFrame) -> np.ndarray:
    """A writable (height, width) view of one plane's samples."""
    dtype = np.dtype("<u2") if frame.format.components[0].bits > 8 else np.dtype(np.uint8)
    buf = np.frombuffer(plane, dtype)
    return buf.reshape(plane.height, plane.line_size // dtype.itemsize)[:, : plane.width]


def _notice(mode: str, said: str, d: SourceDescription, codec: str, auto: bool) -> str:
    rate = d.info.frame_rate
    fps = "" if rate is None else f" {float(rate):.2f} fps"
    field_fps = "" if rate is None else f" {float(rate * 2):.2f} fps"
    what = {
        "keep": f"kept interlaced, {d.field_order} ({codec}); faces restored on one bwdif picture per field "
        "and woven back into their own fields",
        "deinterlace": f"deinterlaced with bwdif to{fps} progressive, one picture per frame",
        "deinterlace-fields": f"deinterlaced with bwdif to{field_fps} progressive, one picture per field",
        "progressive": "treated as progressive as asked: faces restored on the woven frames, combing "
        "included; the output is flagged progressive",
    }[mode]
    why = ""
    if auto and mode == "keep":
        why = " (--interlace auto keeps interlaced sources interlaced; deinterlace to change)"
    elif auto:
        why = f" (--interlace auto: {codec} cannot code interlaced pictures; keep needs e.g. libx264)"
    return f"interlaced source ({said}): {what}{why}"
