"""Which encoder an output gets, and how it is opened: the defaults, the time base, crf and preset.

Encoder defaults (when :class:`EncodeOptions` leaves them unset):

- ``.mp4``, ``.m4v``, ``.mov``, ``.mkv``, ``.ts``: libx264, crf 18, preset medium (visually lossless, plays
  everywhere).
- ``.webm``: libvpx-vp9, crf 31 in constant-quality mode, cpu-used 4, row-mt (the container allows only
  VP8/VP9/AV1).
- ``.mpg``, ``.mpeg``: mpeg2video (FFmpeg's own default, MPEG-1, cannot code interlaced pictures).
- ``.avi``: ffv1 (lossless). AVI counts frames instead of storing times: any codec gets the frame rate as
  its time base, no B-frames, and the file starts at its first frame; a variable frame rate is refused.
- libx265: crf 20, preset medium; libsvtav1: crf 28, preset 8; ffv1 and prores_ks have no crf (prores_ks
  picks its profile from the pixel format).
- ``pix_fmt``: the input's when the encoder takes it (which keeps 10-bit input 10-bit), else the closest the
  encoder supports (same bit depth and chroma layout first). An odd width or height cannot be coded with
  subsampled chroma by libx264/libx265, so such inputs get 4:4:4 at the same depth, with a notice; naming a
  subsampled ``pix_fmt`` explicitly for them is an error. RGB input encoded as YUV is tagged with the matrix
  used (BT.601 for SD, BT.709 for HD) and limited range.
- Other extensions: the muxer's own default codec (libx264 where that is H.264).
- ``codec="auto"``: that default, or its NVENC counterpart where a GPU's encoder opens and writes the same
  stream; an NVENC encoder gets our crf and preset mapped onto its constant quality (see :mod:`.hardware`).
- An HDR source (PQ or HLG transfer, or HDR10 metadata): libx265 (libsvtav1 for ``.webm``), 10-bit, with the
  mastering display and content light level in the encoder's parameters (see :mod:`.carry`); libx265 in
  MP4/MOV is tagged ``hvc1``.
- Alpha: kept in an alpha ``pix_fmt`` where the encoder and container hold it (prores_ks, ffv1, png, qtrle,
  utvideo; libvpx-vp9 in Matroska/WebM), with the source frame's alpha samples under restored faces too.
  What the chosen codec cannot carry (alpha, HDR10 metadata, with a lower bit depth) is named in one notice.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av

from vidrestore.errors import VidrestoreError
from vidrestore.io.carry import hdr_default_codec
from vidrestore.io.colour import planar
from vidrestore.io.hardware import is_nvenc, nvenc_options
from vidrestore.io.paths import muxer_for
from vidrestore.io.source import SourceDescription
from vidrestore.options import EncodeOptions

_DEFAULT_CODECS = {
    ".mp4": "libx264",
    ".m4v": "libx264",
    ".mov": "libx264",
    ".mkv": "libx264",
    ".ts": "libx264",
    ".webm": "libvpx-vp9",
    ".avi": "ffv1",
    ".mpg": "mpeg2video",  # FFmpeg's default for MPEG-PS is MPEG-1, which has no interlaced coding
    ".mpeg": "mpeg2video",
}
_RATE_TIME_BASE = frozenset({"mpeg1video", "mpeg2video"})  # encoders that refuse any other time base
# Encoders whose time base denominator must fit in 16 bits (MPEG-4 part 2 and its relatives).
_SHORT_TIME_BASE = frozenset({"mpeg4", "h263", "h263p", "msmpeg4", "msmpeg4v2", "wmv1", "wmv2", "flv"})
# Muxers that store one frame per tick of the stream's time base: a finer one means a header claiming
# that many frames per second and an empty frame written into every unused tick. They have no pts either,
# so frames must come out in order (no B-frames) and the file starts at its first frame.
FRAME_COUNTED = frozenset({"avi"})
# The same defaults by muxer, for outputs whose name has no extension (standard output, --format).
_MUXER_CODECS = {
    "mp4": "libx264",
    "mov": "libx264",
    "matroska": "libx264",
    "mpegts": "libx264",
    "webm": "libvpx-vp9",
    "avi": "ffv1",
    "mpeg": "mpeg2video",
}
_DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libsvtav1": 28, "libvpx-vp9": 31}
_DEFAULT_PRESET = {"libx264": "medium", "libx265": "medium", "libsvtav1": "8"}


def time_base_for(encoder: str, muxer: str, source: Fraction, rate: Fraction) -> Fraction:
    """The source's time base, unless the encoder or the muxer needs the frame rate's (the frames' pts are
    then rescaled onto it, and a variable frame rate is refused)."""
    if (
        encoder in _RATE_TIME_BASE
        or muxer in FRAME_COUNTED
        or (encoder in _SHORT_TIME_BASE and source.denominator > 0xFFFF)
    ):
        return 1 / rate
    return source


def output_codec(dst: Path, settings: EncodeOptions, source: SourceDescription) -> str:
    """The video encoder an output gets: the one asked for; else, for an HDR source, a 10-bit codec that
    carries its metadata; else the container's default. For ``auto`` this is the CPU choice, which the sink
    swaps for its NVENC twin where that opens and writes the same stream."""
    if settings.codec not in (None, "auto"):
        return settings.codec
    muxer, muxer_default = muxer_for(dst, settings.format)
    hdr_codec = hdr_default_codec(muxer) if source.hdr else None
    return hdr_codec or _default_codec(dst, muxer, muxer_default)


def _default_codec(dst: Path, muxer: str, muxer_default: str) -> str:
    codec = _DEFAULT_CODECS.get(dst.suffix.lower()) or _MUXER_CODECS.get(muxer)
    if codec is not None:
        return codec
    return "libx264" if muxer_default == "h264" else muxer_default


def open_encoder(name: str) -> av.Codec:
    try:
        codec = av.Codec(name, "w")
    except ValueError:
        raise VidrestoreError(
            f"unknown video encoder '{name}' (try libx264, libx265, libsvtav1, ffv1, prores_ks)"
        ) from None
    if codec.type != "video":
        raise VidrestoreError(f"'{name}' is a {codec.type} encoder, not a video one")
    return codec


def encoder_options(encoder: av.Codec, settings: EncodeOptions) -> dict[str, str]:
    """crf, preset and the free-form options, checked against what the encoder knows."""
    if is_nvenc(encoder.name):
        return nvenc_options(encoder.name, settings.crf, settings.preset, settings.encoder_opts)
    ctx = av.CodecContext.create(encoder.name, "w")
    known = {o.name for o in ctx.supported_options.generic} | {o.name for o in ctx.supported_options.private}
    options: dict[str, str] = {}
    for key, value, default in (
        ("crf", settings.crf, _DEFAULT_CRF.get(encoder.name)),
        ("preset", settings.preset, _DEFAULT_PRESET.get(encoder.name)),
    ):
        if value is not None and key not in known:
            raise VidrestoreError(f"{encoder.name} has no {key} setting; leave it unset or use options")
        if value is not None or default is not None:
            options[key] = str(value if value is not None else default)
    if encoder.name == "libvpx-vp9":
        options.update({"cpu-used": "4", "row-mt": "1"})
    if encoder.name == "libx265":
        options["x265-params"] = "log-level=error"  # x265 prints its banner to stderr otherwise
    for key, value in settings.encoder_opts.items():
        if key not in known:
            raise VidrestoreError(f"{encoder.name} has no option '{key}'")
        if key == "x265-params" and encoder.name == "libx265":
            value = f"log-level=error:{value}"
        options[key] = str(value)
    if encoder.name == "libsvtav1":
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints its banner to stderr unless told not to
    return options


def format_distance(src: str, cand: str, order: int) -> tuple[int, ...]:
    """Sort key: same family, then same bit depth (deeper before shallower), then same chroma layout."""
    a, b = av.VideoFormat(src, 64, 64), av.VideoFormat(cand, 64, 64)

    def family(f: av.VideoFormat) -> str:
        return (
            "rgb"
            if f.is_rgb
            else ("gray" if len([c for c in f.components if not c.is_alpha]) == 1 else "yuv")
        )

    def chroma(f: av.VideoFormat) -> tuple[int, int]:
        comps = [c for c in f.components if c.is_chroma]
        return (comps[0].width, comps[0].height) if comps else (64, 64)

    da, db = a.components[0].bits, b.components[0].bits
    ca, cb = chroma(a), chroma(b)
    alpha = any(c.is_alpha for c in b.components) and not any(c.is_alpha for c in a.components)
    return (
        family(a) != family(b),
        alpha,
        db < da,
        abs(db - da),
        cb[0] * cb[1] < ca[0] * ca[1],  # fewer chroma samples than the source loses detail
        abs(cb[0] * cb[1] - ca[0] * ca[1]),
        not planar(cand),
        cand.startswith("yuvj"),
        order,
    )
