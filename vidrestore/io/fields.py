"""Fields of interlaced video, as FFmpeg's filters see them: reading a frame's field order, marking frames,
deinterlacing with ``bwdif``, and the encoder settings that code interlaced pictures as such.

PyAV 19 shows a frame's ``interlaced_frame`` but neither its top-field-first flag nor a way to set either,
so both go through FFmpeg filters (``fieldorder`` to read, ``setfield`` to write). Orders are named by the
field displayed first: "tff", "bff", or "progressive".
"""

from __future__ import annotations

from fractions import Fraction

import av
import av.filter
import numpy as np
from av.codec.context import Flags

# AVFieldOrder, by the field displayed first: TT and BT show the top field first, BB and TB the bottom one.
STREAM_FIELD_ORDER = {1: "progressive", 2: "tff", 3: "bff", 4: "bff", 5: "tff"}
_AV_FIELD_ORDER = {"progressive": 1, "tff": 2, "bff": 3}
# Encoders that code an interlaced frame as two fields (field/frame adaptive DCT and motion search), and
# lossless or intra ones that keep a woven frame intact; the field order is then the container's flag.
INTERLACED_CODING = frozenset({"libx264", "mpeg2video", "prores_ks", "dnxhd"})
WOVEN_INTACT = frozenset({"ffv1", "utvideo", "rawvideo", "huffyuv", "ffvhuff"})


class _Filter:
    """One FFmpeg video filter between a buffer source and a buffer sink, for frames like ``template``."""

    def __init__(self, template: av.VideoFrame, name: str, args: str) -> None:
        self.size = (template.width, template.height, template.format.name)
        self.graph = av.filter.Graph()
        buffer = self.graph.add_buffer(template=template, time_base=template.time_base or Fraction(1, 1000))
        node, sink = self.graph.add(name, args), self.graph.add("buffersink")
        buffer.link_to(node)
        node.link_to(sink)
        self.graph.configure()

    def fits(self, frame: av.VideoFrame) -> bool:
        return (frame.width, frame.height, frame.format.name) == self.size

    def push(self, frame: av.VideoFrame | None) -> list[av.VideoFrame]:
        """Push a frame (None: the end) and pull every frame the filter has ready."""
        self.graph.vpush(frame)
        out = []
        while True:
            try:
                out.append(self.graph.vpull())
            except (av.BlockingIOError, av.EOFError):
                return out


def top_field_first(frame: av.VideoFrame) -> bool | None:
    """Whether an interlaced frame is flagged top field first.

    ``fieldorder=bff`` moves a top-first frame's picture down one row and passes any other through as it is.
    None when the filter does not take the pixel format or the rows are all alike (no move to see).
    """
    try:
        after = _Filter(frame, "fieldorder", "bff").push(frame)[0].to_ndarray(format="gray")
    except (av.FFmpegError, ValueError, IndexError):
        return None
    before = frame.to_ndarray(format="gray")
    if np.array_equal(before[1:], before[:-1]):
        return None
    return not np.array_equal(before, after)


class FieldMarker:
    """Sets every frame's interlaced and top-field-first flags to one order (``setfield``), since encoders
    (x264, MPEG-2) take the field order of each picture from its flags."""

    def __init__(self, order: str) -> None:
        self.order = order
        self._filter: _Filter | None = None

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        if self._filter is None or not self._filter.fits(frame):
            mode = {"progressive": "prog"}.get(self.order, self.order)
            self._filter = _Filter(frame, "setfield", mode)
        marked = self._filter.push(frame)[0]
        marked.time_base = frame.time_base
        return marked


class Bwdif:
    """FFmpeg's ``bwdif`` deinterlacer: one picture per frame, or one per field (``fields``) at twice the
    rate. Output time bases are half the input's; a new picture size starts a new filter."""

    def __init__(self, order: str, fields: bool) -> None:
        parity = "tff" if order == "tff" else "bff"
        self._args = f"mode={'send_field' if fields else 'send_frame'}:parity={parity}:deint=all"
        self._filter: _Filter | None = None

    def push(self, frame: av.VideoFrame) -> list[av.VideoFrame]:
        out = []
        if self._filter is not None and not self._filter.fits(frame):
            out = self.flush()
        if self._filter is None:
            self._filter = _Filter(frame, "bwdif", self._args)
        return out + self._filter.push(frame)

    def flush(self) -> list[av.VideoFrame]:
        filt, self._filter = self._filter, None
        return [] if filt is None else filt.push(None)


def code_fields(cc: av.video.codeccontext.VideoCodecContext, encoder: str, order: str) -> None:
    """Tell the encoder and the muxer the output's field order; interlaced coding where the encoder has it."""
    cc.field_order = _AV_FIELD_ORDER[order]
    if order != "progressive" and encoder in INTERLACED_CODING:
        cc.flags |= Flags.interlaced_dct | Flags.interlaced_me
