"""Colour: what a stream's tags say, and exact conversions between its samples and RGB.

Shared by the source (decoded frame → RGB for the restorer) and the sink (restored RGB → the output's
samples), so that both sides convert with the same matrix and range.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, VideoReformatter

# AVColorSpace values → the matrix swscale should use; anything else is guessed from the frame size.
_MATRICES = {
    1: Colorspace.ITU709,
    4: Colorspace.FCC,
    5: Colorspace.ITU601,
    6: Colorspace.ITU601,
    7: Colorspace.SMPTE240M,
    9: Colorspace.BT2020,
    10: Colorspace.BT2020,
}
_RANGE_MPEG, _RANGE_JPEG = 1, 2  # AVColorRange: limited, full
_SPC_RGB, _SPC_BT709, _SPC_SMPTE170M = 0, 1, 6  # AVColorSpace values


@dataclass(frozen=True)
class Colour:
    """The colour tags of a stream and the conversion they imply."""

    primaries: int
    trc: int
    space: int
    range: int
    matrix: Colorspace  # what swscale converts with (guessed by size when the tag is unspecified)
    sws_range: ColorRange

    @classmethod
    def of(cls, frame: av.VideoFrame) -> Colour:
        # Like FFmpeg and players: an untagged frame is BT.709 when HD, BT.601 otherwise.
        hd = frame.width >= 1280 or frame.height > 576
        matrix = _MATRICES.get(frame.colorspace, Colorspace.ITU709 if hd else Colorspace.ITU601)
        full = frame.color_range == _RANGE_JPEG or frame.format.name.startswith("yuvj")
        return cls(
            frame.color_primaries,
            frame.color_trc,
            frame.colorspace,
            frame.color_range,
            matrix,
            ColorRange.JPEG if full else ColorRange.MPEG,
        )

    def for_output(self, src_fmt: str, dst_fmt: str) -> Colour:
        """The tags and conversion for an output in ``dst_fmt``: the source's own unless RGB meets YUV."""
        src_rgb, dst_rgb = av.VideoFormat(src_fmt).is_rgb, av.VideoFormat(dst_fmt).is_rgb
        if src_rgb == dst_rgb:
            return self
        if dst_rgb:
            return replace(self, space=_SPC_RGB, range=_RANGE_JPEG, sws_range=ColorRange.JPEG)
        # RGB into YUV: the matrix guessed by size, limited range, both said in the tags.
        space = _SPC_BT709 if self.matrix == Colorspace.ITU709 else _SPC_SMPTE170M
        return replace(self, space=space, range=_RANGE_MPEG, sws_range=ColorRange.MPEG)

    def tag(self, frame: av.VideoFrame) -> None:
        frame.color_primaries, frame.color_trc = self.primaries, self.trc
        frame.colorspace, frame.color_range = self.space, self.range


class Converter:
    """Conversions between the source's samples, RGB and the output's samples, each side with its own matrix
    and range (``src`` describes what is decoded, ``dst`` what is encoded).

    Subsampled chroma is resampled in a step of its own (to or from 4:4:4 at the same depth): swscale's direct
    4:2:0 -> RGB path is off by up to 2 code values at 8 bits, always darker, while the two-step path is exact
    to rounding. Each step keeps its own reformatter, as swscale contexts are reused between frames.
    """

    def __init__(self, src: Colour, dst: Colour) -> None:
        self.src, self.dst = src, dst
        self._chroma = VideoReformatter()
        self._matrix = VideoReformatter()
        self._direct = VideoReformatter()

    def _resample(
        self,
        frame: av.VideoFrame,
        pix_fmt: str,
        src: Colour,
        dst: Colour,
        via: VideoReformatter | None = None,
    ) -> av.VideoFrame:
        return (via or self._chroma).reformat(
            frame,
            format=pix_fmt,
            src_colorspace=src.matrix,
            dst_colorspace=dst.matrix,
            src_color_range=src.sws_range,
            dst_color_range=dst.sws_range,
            threads=0,
        )

    def to_rgb(self, frame: av.VideoFrame, rgb_fmt: str) -> np.ndarray:
        full = full_chroma(frame.format.name)
        if full != frame.format.name:
            frame = self._resample(frame, full, self.src, self.src)
        return self._matrix.reformat(
            frame,
            format=rgb_fmt,
            src_colorspace=self.src.matrix,
            src_color_range=self.src.sws_range,
            dst_color_range=ColorRange.JPEG,
            threads=0,
        ).to_ndarray()

    def from_rgb(self, rgb: np.ndarray, pix_fmt: str) -> av.VideoFrame:
        frame = av.VideoFrame.from_ndarray(
            np.ascontiguousarray(rgb), format="rgb48le" if rgb.dtype == np.uint16 else "rgb24"
        )
        full = full_chroma(pix_fmt)
        frame = self._matrix.reformat(
            frame, format=full, dst_colorspace=self.dst.matrix, dst_color_range=self.dst.sws_range, threads=0
        )
        return frame if full == pix_fmt else self._resample(frame, pix_fmt, self.dst, self.dst)

    def convert(self, frame: av.VideoFrame, pix_fmt: str) -> av.VideoFrame:
        """The decoded picture in the output's pixel format (when the output cannot keep the input's)."""
        return self._resample(frame, pix_fmt, self.src, self.dst, self._direct)


def planar(pix_fmt: str) -> bool:
    """One component per plane (yuv*p, gbrp, gray): what the plane composition handles."""
    fmt = av.VideoFormat(pix_fmt)
    planes = [c.plane for c in fmt.components]
    return not fmt.has_palette and not fmt.is_bit_stream and len(set(planes)) == len(planes)


def full_chroma(pix_fmt: str) -> str:
    """The 4:4:4 planar format at the same depth (and with the alpha plane) of a subsampled YUV format; other
    formats unchanged, as are those without such a twin."""
    fmt = av.VideoFormat(pix_fmt)
    if fmt.is_rgb or not subsampled(pix_fmt):
        return pix_fmt
    bits = fmt.components[0].bits
    name = ("yuva444p" if any(c.is_alpha for c in fmt.components) else "yuv444p") + (
        "" if bits == 8 else f"{bits}le"
    )
    try:
        av.VideoFormat(name)
    except ValueError:
        return pix_fmt
    return name


def subsampled(pix_fmt: str) -> bool:
    fmt = av.VideoFormat(pix_fmt, 64, 64)
    return any(c.width < 64 or c.height < 64 for c in fmt.components)


def compose_planes(converted: av.VideoFrame, original: av.VideoFrame, mask: np.ndarray) -> None:
    """Put the original samples back wherever the mask is clear; a subsampled chroma sample is taken from the
    converted frame when any luma pixel it covers is masked. Only the mask's bounding box is examined sample
    by sample (faces are small next to the frame), the rest is copied plane-wide."""
    height, width = mask.shape
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    for dst_plane, src_plane in zip(converted.planes, original.planes, strict=True):
        dst, src = _plane_array(dst_plane, converted), _plane_array(src_plane, original)
        ph, pw = dst.shape
        sy, sx = -(-height // ph), -(-width // pw)  # this plane's subsampling
        by0, by1, bx0, bx1 = y0 // sy, -(-y1 // sy), x0 // sx, -(-x1 // sx)
        box = dst[by0:by1, bx0:bx1].copy()
        dst[:] = src
        m = np.zeros(((by1 - by0) * sy, (bx1 - bx0) * sx), bool)
        part = mask[by0 * sy : by1 * sy, bx0 * sx : bx1 * sx]
        m[: part.shape[0], : part.shape[1]] = part
        if (sy, sx) != (1, 1):
            m = m.reshape(by1 - by0, sy, bx1 - bx0, sx).any(axis=(1, 3))
        np.copyto(dst[by0:by1, bx0:bx1], box, where=m)


def _plane_array(plane: av.video.plane.VideoPlane, frame: av.VideoFrame) -> np.ndarray:
    """A writable (height, width) view of one plane's samples."""
    dtype = np.dtype("<u2") if frame.format.components[0].bits > 8 else np.dtype(np.uint8)
    buf = np.frombuffer(plane, dtype)
    return buf.reshape(plane.height, plane.line_size // dtype.itemsize)[:, : plane.width]
