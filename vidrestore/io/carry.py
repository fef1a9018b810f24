"""What a master carries besides its colour pictures: an alpha plane and HDR10 static metadata.

The source reads both (:func:`read_hdr10`, :func:`has_alpha`); the sink asks here which encoders can carry
them, in which pixel formats and with which encoder parameters, and says in one notice what a chosen codec
cannot carry (:func:`losses`), so nothing a master carries is dropped silently.

Alpha: restoring changes colour, never transparency, so every output frame takes its alpha samples from the
decoded source frame (:func:`copy_alpha`). VP9 keeps alpha in a Matroska side channel, which MP4 drops and
FFmpeg's own vp9 decoder ignores (the source decodes such streams with libvpx, :func:`alpha_decoder`).

HDR10: the mastering display and content light level reach the output through the encoder's own parameters
(x265, x264 and SVT-AV1 write them into the bitstream, from where decoders report them as frame side data);
PyAV offers no way to set an encoded stream's container-level side data.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from functools import cache

import av
import numpy as np
from av.sidedata.sidedata import Type

_TRC_PQ, _TRC_HLG = 16, 18  # AVColorTransferCharacteristic: SMPTE ST 2084, ARIB STD-B67
_CHROMA_UNIT, _LUMA_UNIT = 50000, 10000  # HEVC/H.264 SEI units: 0.00002 (x, y), 0.0001 cd/m²

# Encoders whose bitstream or container holds an alpha plane, and the muxers that keep it (None: any that
# takes the codec). Which alpha pixel formats each accepts is asked of the encoder itself.
_ALPHA_ENCODERS: dict[str, frozenset[str] | None] = {
    "prores_ks": None,
    "ffv1": None,
    "png": None,
    "qtrle": None,
    "utvideo": None,
    "libvpx-vp9": frozenset({"matroska", "webm"}),
}
# Encoders that write HDR10 static metadata into the bitstream: their parameter option and key names.
_HDR_PARAMS = {
    "libx265": ("x265-params", "master-display", "max-cll"),
    "libx264": ("x264-params", "mastering-display", "cll"),
    "libsvtav1": ("svtav1-params", "mastering-display", "content-light"),
}
# The default codec for an HDR source, by muxer (the file's or --format's): 10-bit capable and carrying
# HDR10 metadata.
_HDR_DEFAULT_CODECS = {
    "mp4": "libx265",
    "ipod": "libx265",  # .m4v
    "mov": "libx265",
    "matroska": "libx265",
    "mpegts": "libx265",
    "webm": "libsvtav1",  # the wheel's libvpx is 8-bit only; WebM allows AV1
}

Chromaticity = tuple[Fraction, Fraction]


@dataclass(frozen=True)
class MasteringDisplay:
    """SMPTE ST 2086: the mastering display's primaries and white point (CIE 1931 x, y) and luminance
    (cd/m²), exactly as FFmpeg reports them."""

    red: Chromaticity
    green: Chromaticity
    blue: Chromaticity
    white: Chromaticity
    min_luminance: Fraction
    max_luminance: Fraction


@dataclass(frozen=True)
class Hdr10:
    """HDR10 static metadata: the mastering display and the content light level (MaxCLL, MaxFALL in cd/m²)."""

    mastering: MasteringDisplay | None
    content_light: tuple[int, int] | None

    def describe(self) -> str:
        parts = []
        if self.mastering is not None:
            m = self.mastering
            parts.append(f"mastering display {float(m.min_luminance):g}-{float(m.max_luminance):g} cd/m²")
        if self.content_light is not None:
            parts.append(f"MaxCLL {self.content_light[0]}, MaxFALL {self.content_light[1]}")
        return ", ".join(parts)


def read_hdr10(side_data: Mapping[Type, bytes]) -> Hdr10 | None:
    """The HDR10 metadata in a frame's or decoder's side data (FFmpeg structs), or None when there is none."""
    mastering = _mastering(side_data.get(Type.MASTERING_DISPLAY_METADATA))
    light = side_data.get(Type.CONTENT_LIGHT_LEVEL)
    content_light = struct.unpack("=2I", light[:8]) if light and len(light) >= 8 else None
    if content_light == (0, 0):
        content_light = None
    if mastering is None and content_light is None:
        return None
    return Hdr10(mastering, content_light)


def _mastering(data: bytes | None) -> MasteringDisplay | None:
    """AVMasteringDisplayMetadata: 3x2 primaries (R, G, B), 2 white point, min and max luminance, each an
    AVRational, then the has_primaries and has_luminance flags. Only a complete description is usable."""
    if not data or len(data) < 88:
        return None
    v = struct.unpack("=22i", data[:88])
    if not (v[20] and v[21]) or any(d <= 0 for d in v[1:20:2]):
        return None
    q = [Fraction(v[i], v[i + 1]) for i in range(0, 20, 2)]
    return MasteringDisplay((q[0], q[1]), (q[2], q[3]), (q[4], q[5]), (q[6], q[7]), q[8], q[9])


def is_hdr(trc: int, hdr10: Hdr10 | None) -> bool:
    """A PQ or HLG transfer, or HDR10 metadata: the output should stay 10-bit and HDR-capable."""
    return trc in (_TRC_PQ, _TRC_HLG) or hdr10 is not None


def hdr_default_codec(muxer: str) -> str | None:
    """The codec an HDR source gets by default in this container; None where the plain default stands."""
    return _HDR_DEFAULT_CODECS.get(muxer)


def hdr_options(encoder: str, hdr10: Hdr10, options: Mapping[str, str]) -> dict[str, str]:
    """``options`` with the encoder's HDR10 parameters put first in its parameter string (so parameters
    the user gave still win); unchanged for an encoder that cannot carry them."""
    out = dict(options)
    if encoder not in _HDR_PARAMS:
        return out
    option, mastering_key, light_key = _HDR_PARAMS[encoder]
    svt = encoder == "libsvtav1"
    params = []
    if hdr10.mastering is not None:
        params.append(f"{mastering_key}={_mastering_param(hdr10.mastering, decimal=svt)}")
    if hdr10.content_light is not None:
        params.append(f"{light_key}={hdr10.content_light[0]},{hdr10.content_light[1]}")
    out[option] = ":".join([*params, out[option]] if out.get(option) else params)
    return out


def _mastering_param(m: MasteringDisplay, *, decimal: bool) -> str:
    """x265/x264: G(x,y)B(x,y)R(x,y)WP(x,y)L(max,min) in SEI units; SVT-AV1 takes the same in decimals."""

    def xy(c: Chromaticity) -> str:
        if decimal:
            return f"{float(c[0]):.5f},{float(c[1]):.5f}"
        return f"{round(c[0] * _CHROMA_UNIT)},{round(c[1] * _CHROMA_UNIT)}"

    lum = (
        f"{float(m.max_luminance):.4f},{float(m.min_luminance):.4f}"
        if decimal
        else f"{round(m.max_luminance * _LUMA_UNIT)},{round(m.min_luminance * _LUMA_UNIT)}"
    )
    return f"G({xy(m.green)})B({xy(m.blue)})R({xy(m.red)})WP({xy(m.white)})L({lum})"


def losses(encoder: str, muxer: str, pix_fmt: str, *, alpha: bool, hdr10: Hdr10 | None) -> list[str]:
    """What the source carries that this output cannot, for the user."""
    lost = []
    if alpha and not (has_alpha(pix_fmt) and carries_alpha(encoder, muxer)):
        lost.append("alpha channel (transparency; prores_ks, ffv1 or libvpx-vp9 in .webm keep it)")
    if hdr10 is not None and encoder not in _HDR_PARAMS:
        lost.append(f"HDR10 metadata ({hdr10.describe()}; libx265, libx264 or libsvtav1 keep it)")
    return lost


# -- alpha -----------------------------------------------------------------------------------------


def has_alpha(pix_fmt: str) -> bool:
    return any(c.is_alpha for c in av.VideoFormat(pix_fmt).components)


def carries_alpha(encoder: str, muxer: str) -> bool:
    """Whether this encoder's alpha survives in this container."""
    if encoder not in _ALPHA_ENCODERS:
        return False
    muxers = _ALPHA_ENCODERS[encoder]
    return muxers is None or muxer in muxers


def alpha_candidates(encoder: str, muxer: str, formats: Iterable[str], *, keep: bool) -> list[str]:
    """The pixel formats to choose from: those that keep the alpha plane (when ``keep`` and the output can),
    else those without one (an encoder may list alpha formats it cannot open, or whose alpha is lost)."""
    formats = list(formats)
    if keep and carries_alpha(encoder, muxer):
        with_alpha = [f for f in formats if has_alpha(f) and _opens(encoder, f)]
        if with_alpha:
            return with_alpha
    without = [f for f in formats if not has_alpha(f)]
    return without or formats


@cache
def _opens(encoder: str, pix_fmt: str) -> bool:
    """Whether the encoder opens with this pixel format (libvpx-vp9 lists alpha formats it refuses)."""
    ctx = av.CodecContext.create(encoder, "w")
    ctx.width = ctx.height = 64
    ctx.pix_fmt = pix_fmt
    ctx.time_base = Fraction(1, 25)
    try:
        ctx.open()
    except (av.FFmpegError, ValueError):
        return False
    return True


def alpha_decoder(stream: av.video.stream.VideoStream) -> av.CodecContext | None:
    """A libvpx decoder for VP9 with alpha (FFmpeg's own vp9 decoder drops the alpha side channel)."""
    if stream.codec_context.name != "vp9" or stream.metadata.get("alpha_mode") != "1":
        return None
    ctx = av.CodecContext.create("libvpx-vp9", "r")
    ctx.thread_count = 0
    return ctx


def copy_alpha(dst: av.VideoFrame, src: av.VideoFrame) -> None:
    """Give ``dst`` the alpha samples of ``src`` (both in the same pixel format), leaving its colour alone."""
    fmt = dst.format
    alpha = next(c for c in fmt.components if c.is_alpha)
    channels = sum(c.plane == alpha.plane for c in fmt.components)
    size = -(-alpha.bits // 8)
    d, s = (_samples(f.planes[alpha.plane], channels, size) for f in (dst, src))
    # A packed format holds each pixel's channels side by side, alpha first (argb, ayuv64) or last.
    k = 0 if channels > 1 and fmt.name.startswith("a") else channels - 1
    d[:, :, k] = s[:, :, k]


def _samples(plane: av.video.plane.VideoPlane, channels: int, size: int) -> np.ndarray:
    """A writable (height, width, channels, bytes) view of one plane's samples, without the line padding."""
    buf = np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)
    return buf[:, : plane.width * channels * size].reshape(plane.height, plane.width, channels, size)
