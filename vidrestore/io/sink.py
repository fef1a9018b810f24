"""The output side: an encoder and muxer that lose nothing the restorer left alone.

:class:`VideoSink` encodes what the pipeline hands back. A frame without faces is encoded from the decoded
frame itself, so its planes reach the encoder bit-exact; a restored frame is converted back with the source's
matrix and range and, when the output keeps the input's pixel format, composed into the original planes only
where the restorer's mask is set. Timestamps, time base, colour tags, rotation and metadata are kept; the
other streams' packets, which travel with the frames, are copied or re-encoded (see :mod:`.routes`). The
sink is built from the source's :class:`~vidrestore.io.source.SourceDescription` and never reads the input.
The output is written to a hidden temporary file beside the destination and renamed at the end, so an
interrupted run never leaves a half-written file under the final name.

Frames keep their pts and the stream its time base where the container can store it (Matroska counts in
milliseconds, MP4 in at least 1/10000 s: the times stay the same).

Encoder defaults (when :class:`EncodeOptions` leaves them unset):

- ``.mp4``, ``.m4v``, ``.mov``, ``.mkv``, ``.ts``: libx264, crf 18, preset medium (visually lossless, plays
  everywhere).
- ``.webm``: libvpx-vp9, crf 31 in constant-quality mode, cpu-used 4, row-mt (the container allows only
  VP8/VP9/AV1).
- ``.avi``: ffv1 (lossless; AVI handles B-frames of modern codecs badly).
- libx265: crf 20, preset medium; libsvtav1: crf 28, preset 8; ffv1 and prores_ks have no crf (prores_ks
  picks its profile from the pixel format).
- ``pix_fmt``: the input's when the encoder takes it (which keeps 10-bit input 10-bit), else the closest the
  encoder supports (same bit depth and chroma layout first). An odd width or height cannot be coded with
  subsampled chroma by libx264/libx265, so such inputs get 4:4:4 at the same depth, with a notice; naming a
  subsampled ``pix_fmt`` explicitly for them is an error. RGB input encoded as YUV is tagged with the matrix
  used (BT.601 for SD, BT.709 for HD) and limited range.
- Other extensions: the muxer's own default codec (libx264 where that is H.264).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.frame import PictureType

from vidrestore.errors import VidrestoreError
from vidrestore.io.colour import Converter, planar, subsampled
from vidrestore.io.fields import FieldMarker, code_fields
from vidrestore.io.paths import check_output_path, move_into_place, muxer_for, reason, reserve_temp
from vidrestore.io.routes import Route, carried_tags, open_route
from vidrestore.io.source import SourceDescription, SourceFrame, VideoInfo
from vidrestore.options import EncodeOptions

_DEFAULT_CODECS = {
    ".mp4": "libx264",
    ".m4v": "libx264",
    ".mov": "libx264",
    ".mkv": "libx264",
    ".ts": "libx264",
    ".webm": "libvpx-vp9",
    ".avi": "ffv1",
}
_RATE_TIME_BASE = frozenset({"mpeg1video", "mpeg2video"})  # encoders that refuse any other time base
_DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libsvtav1": 28, "libvpx-vp9": 31}
_DEFAULT_PRESET = {"libx264": "medium", "libx265": "medium", "libsvtav1": "8"}
# Encoders whose bitstream cannot code an odd side with subsampled chroma (checked with FFmpeg 8.1).
_EVEN_CHROMA_ONLY = frozenset({"libx264", "libx265"})


class VideoSink:
    """Encoder and muxer for one output file; a context manager that commits on a clean exit and aborts
    (deleting the temporary file) on an exception.

    ``source`` is the source's description (a :class:`VideoSource` stands for its own). Build the sink before
    the source's frames are iterated (its routes read the stream templates once, here), write every frame in
    order, and commit once the last one is written: the other streams' tail comes with the last frame.
    """

    def __init__(
        self,
        dst: Path,
        source: SourceDescription,
        settings: EncodeOptions,
        *,
        overwrite: bool = False,
    ) -> None:
        self.dst = dst = Path(dst)
        self._overwrite = overwrite
        self.notices: list[str] = []
        self._source = source
        self._tmp: Path | None = None
        self._out: av.container.OutputContainer | None = None
        self._done = False
        self._frames = 0
        self._last_pts: int | None = None
        self._last_out_pts: int | None = None
        self._tail: list[av.Packet] = []
        info = source.info
        self._size = (info.width, info.height)  # the output's, for the whole file: the first picture's
        self._size_change = settings.size_change
        self._input_size = self._size
        check_output_path(info.path, dst, overwrite=overwrite)
        muxer, _ = muxer_for(dst)
        self.codec = output_codec(dst, settings)
        encoder = _encoder(self.codec)
        self.pix_fmt = self._choose_pix_fmt(encoder, settings.pix_fmt, info)
        options = _encoder_options(encoder, settings)
        self._colour = source.colour.for_output(info.pix_fmt, self.pix_fmt)
        self._tmp = reserve_temp(dst)
        try:
            self._out = av.open(str(self._tmp), "w")
            self._setup(encoder, options, muxer)
        except BaseException:
            self.abort()
            raise
        self._compose = self.pix_fmt == info.pix_fmt and planar(info.pix_fmt)
        # Interlaced output: every frame carries the field order (restored frames come without flags).
        self._fields = FieldMarker(source.field_order) if source.field_order != "progressive" else None
        self._convert = Converter(source.colour, self._colour)

    # -- setup -------------------------------------------------------------------------------------

    def _choose_pix_fmt(self, encoder: av.Codec, requested: str | None, info: VideoInfo) -> str:
        supported = [f.name for f in encoder.video_formats or ()]
        odd = encoder.name in _EVEN_CHROMA_ONLY and (info.width % 2 or info.height % 2)
        size = f"{info.width}x{info.height}"
        if requested is not None:
            try:
                av.VideoFormat(requested)
            except ValueError:
                raise VidrestoreError(f"unknown pixel format '{requested}'") from None
            if supported and requested not in supported:
                raise VidrestoreError(
                    f"{encoder.name} cannot encode pixel format {requested}; "
                    f"it supports: {', '.join(supported)}"
                )
            if odd and subsampled(requested):
                raise VidrestoreError(
                    f"{encoder.name} cannot code the odd frame size {size} with subsampled chroma "
                    f"({requested}): use a 4:4:4 pixel format such as yuv444p, or leave pix_fmt unset"
                )
            return requested
        if not supported:
            return info.pix_fmt
        allowed = [f for f in supported if not (odd and subsampled(f))]
        if not allowed:
            raise VidrestoreError(
                f"{encoder.name} cannot code the odd frame size {size}; choose another codec"
            )
        chosen = min(allowed, key=lambda f: _fmt_distance(info.pix_fmt, f, supported.index(f)))
        if odd and subsampled(info.pix_fmt) and not subsampled(chosen):
            self.notices.append(
                f"the frame size {size} has an odd side, which {encoder.name} cannot code with subsampled "
                f"chroma: encoding as {chosen} (4:4:4; some players cannot play it)"
            )
        depth = av.VideoFormat(chosen).components[0].bits
        if depth != info.bit_depth:
            self.notices.append(
                f"{encoder.name} cannot encode {info.bit_depth}-bit {info.pix_fmt}: "
                f"encoding as {depth}-bit {chosen}"
            )
        return chosen

    def _setup(self, encoder: av.Codec, options: dict[str, str], muxer: str) -> None:
        out, src, info = self._out, self._source, self._source.info
        assert out is not None
        out.metadata.update(carried_tags(src.metadata))
        rate = info.frame_rate or Fraction(25)
        try:
            vs = out.add_stream(encoder.name, rate=rate)
        except ValueError:
            raise VidrestoreError(
                f"{self.dst}: the {muxer} container cannot hold {encoder.name} video; "
                "choose another codec or container (.mkv holds almost any codec)"
            ) from None
        vs.width, vs.height, vs.pix_fmt = info.width, info.height, self.pix_fmt
        cc = vs.codec_context
        # MPEG-1/2 encoders take only their frame rate's time base: the frames' pts are rescaled onto it.
        self._time_base = 1 / rate if encoder.name in _RATE_TIME_BASE else info.time_base
        cc.time_base = vs.time_base = self._time_base
        cc.framerate = rate
        colour = self._colour
        cc.color_primaries, cc.color_trc, cc.colorspace = colour.primaries, colour.trc, colour.space
        cc.color_range = colour.range
        if src.sample_aspect_ratio:
            cc.sample_aspect_ratio = src.sample_aspect_ratio
        code_fields(cc, encoder.name, src.field_order)
        if encoder.name == "libvpx-vp9":
            cc.bit_rate = 0  # with crf: constant quality
        cc.thread_count = 0
        cc.options = options
        vs.metadata.update(carried_tags(src.video_metadata, muxer=info.container))
        vs.disposition = src.video_disposition
        if src.display_matrix:
            vs.set_display_matrix(list(src.display_matrix))
        self._video = vs
        self._routes: dict[int, Route] = {}
        for template in src.streams:
            route = open_route(template, out, muxer, info.container, self.notices)
            if route is not None:
                self._routes[template.index] = route
        try:
            out.start_encoding()
        except (av.FFmpegError, OSError, ValueError) as exc:
            settings = ", ".join(f"{k}={v}" for k, v in options.items())
            raise VidrestoreError(
                f"{self.dst}: {encoder.name} could not start with {info.width}x{info.height} {self.pix_fmt}"
                f"{' and ' + settings if settings else ''} ({reason(exc)})"
            ) from None

    # -- writing -----------------------------------------------------------------------------------

    def __enter__(self) -> VideoSink:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def write(
        self, frame: SourceFrame, rgb: np.ndarray | None = None, mask: np.ndarray | None = None
    ) -> None:
        """Encode one frame, in order: the decoded frame untouched when ``rgb`` is None; else ``rgb`` where
        ``mask`` is set (everywhere when ``mask`` is None)."""
        if self._done:
            raise RuntimeError("VideoSink.write() after commit() or abort()")
        if frame.pts is not None and self._last_pts is not None and frame.pts <= self._last_pts:
            raise ValueError(f"frames must be written in order: pts {frame.pts} after {self._last_pts}")
        out_frame = self._prepare(frame, rgb, mask)
        if self._fields is not None:
            out_frame = self._fields(out_frame)
        out_frame.pts, out_frame.time_base = self._output_pts(frame), self._time_base
        out_frame.pict_type = PictureType.NONE  # let the encoder choose frame types, not the source's
        self._guard(self._write, out_frame, frame.packets)
        self._tail += frame.tail  # muxed at commit, after the video encoder's last packets
        self._last_pts = frame.pts
        self._frames += 1

    def _output_pts(self, frame: SourceFrame) -> int | None:
        """The frame's pts in the encoder's time base; on a frame-rate grid no two frames share a slot."""
        if frame.pts is None or self._time_base == frame.frame.time_base:
            return frame.pts
        pts = round(frame.pts * frame.frame.time_base / self._time_base)
        if self._last_out_pts is not None and pts <= self._last_out_pts:
            raise VidrestoreError(
                f"{self.dst}: {self.codec} needs a constant frame rate, and frame {frame.index} "
                f"({frame.time:.3f} s) is off the {float(1 / self._time_base):g} fps grid (variable frame "
                "rate?); choose libx264 or ffv1, which keep every frame's time"
            )
        self._last_out_pts = pts
        return pts

    def _write(self, out_frame: av.VideoFrame, packets: list[av.Packet]) -> None:
        for packet in packets:
            self._route_packet(packet)
        self._mux(self._video.encode(out_frame))

    def _prepare(self, frame: SourceFrame, rgb: np.ndarray | None, mask: np.ndarray | None) -> av.VideoFrame:
        src = frame.frame
        if (src.width, src.height) != self._size:
            self._note_size(frame)
            picture = fit_picture(frame.rgb if rgb is None else rgb, self._size, self._size_change)
            converted = self._convert.from_rgb(picture, self.pix_fmt)
        elif rgb is None or (mask is not None and not mask.any()):
            if src.format.name == self.pix_fmt:
                return src
            converted = self._convert.convert(src, self.pix_fmt)
        else:
            expected = (src.height, src.width, 3)
            if rgb.shape != expected or rgb.dtype != frame.rgb.dtype:
                raise ValueError(
                    f"restored image must be {expected} {frame.rgb.dtype}, not {rgb.shape} {rgb.dtype}"
                )
            if mask is not None and mask.shape != expected[:2]:
                raise ValueError(f"mask must be {expected[:2]}, not {mask.shape}")
            converted = self._convert.from_rgb(rgb, self.pix_fmt)
            if mask is not None and self._compose:
                _compose(converted, src, mask.astype(bool, copy=False))
        self._colour.tag(converted)
        converted.duration = src.duration
        return converted

    def _note_size(self, frame: SourceFrame) -> None:
        """One notice each time the input's picture size changes away from the output's."""
        size = (frame.frame.width, frame.frame.height)
        if size == self._input_size:
            return
        self._input_size = size
        how = "scaled to fit and padded" if self._size_change == "fit" else "centred, padded or cropped"
        self.notices.append(
            f"frame {frame.index} ({frame.time:.2f} s): the picture changes to {size[0]}x{size[1]}; "
            f"written at the output's {self._size[0]}x{self._size[1]}, {how} (--size-change)"
        )

    def _route_packet(self, packet: av.Packet) -> None:
        route = self._routes.get(packet.stream_index)
        if route is not None:
            for out_packet in route.feed(packet):
                self._mux(out_packet)

    def _mux(self, packets: av.Packet | list[av.Packet]) -> None:
        """The one place packets reach the file (tests simulate a full disk here)."""
        assert self._out is not None
        self._out.mux(packets)

    def _guard(self, fn: Callable[..., None], *args: object) -> None:
        """Run ``fn``; a write failure aborts the output and becomes one line."""
        try:
            fn(*args)
        except (av.FFmpegError, OSError) as exc:
            self.abort()
            raise VidrestoreError(f"{self.dst}: writing failed ({reason(exc)})") from None
        except BaseException:
            self.abort()
            raise

    def commit(self) -> None:
        """Flush the encoder, mux the other streams' tail, close the file and move it into place."""
        if self._done:
            return
        if self._frames == 0:
            self.abort()
            raise VidrestoreError(f"{self.dst}: no frames were written")
        self._guard(self._finish)
        assert self._tmp is not None
        try:
            move_into_place(self._tmp, self.dst, overwrite=self._overwrite)
        except VidrestoreError:
            self.abort()
            raise
        except OSError as exc:
            self.abort()
            raise VidrestoreError(
                f"{self.dst}: cannot move the finished file into place ({reason(exc)})"
            ) from None
        self._done = True

    def _finish(self) -> None:
        assert self._out is not None
        self._mux(self._video.encode(None))
        tail, self._tail = self._tail, []
        for packet in tail:
            self._route_packet(packet)
        for route in self._routes.values():
            for packet in route.flush():
                self._mux(packet)
        out, self._out = self._out, None
        out.close()

    def abort(self) -> None:
        """Close whatever is open and delete the temporary file; safe to call more than once."""
        self._done = True
        self._tail = []
        if self._out is not None:
            out, self._out = self._out, None
            with contextlib.suppress(av.FFmpegError, OSError, ValueError):
                out.close()  # the file is being thrown away: a failing trailer does not matter
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


def fit_picture(rgb: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    """``rgb`` on a black picture of ``size`` (width, height): scaled to fit it ("fit"), or at its own
    scale ("pad"), centred; what does not fit is cropped evenly."""
    width, height = size
    h, w = rgb.shape[:2]
    if mode == "fit":
        scale = min(width / w, height / h)
        w, h = max(1, round(w * scale)), max(1, round(h * scale))
        rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    out = np.zeros((height, width, 3), rgb.dtype)
    sy, sx, dy, dx = (
        max(0, (h - height) // 2),
        max(0, (w - width) // 2),
        max(0, (height - h) // 2),
        max(0, (width - w) // 2),
    )
    ch, cw = min(h, height), min(w, width)
    out[dy : dy + ch, dx : dx + cw] = rgb[sy : sy + ch, sx : sx + cw]
    return out


# -- encoder choice --------------------------------------------------------------------------------


def output_codec(dst: Path, settings: EncodeOptions) -> str:
    """The video encoder an output gets: the one asked for, else the container's default."""
    return settings.codec or _default_codec(dst, muxer_for(dst)[1])


def _default_codec(dst: Path, muxer_default: str) -> str:
    codec = _DEFAULT_CODECS.get(dst.suffix.lower())
    if codec is not None:
        return codec
    return "libx264" if muxer_default == "h264" else muxer_default


def _encoder(name: str) -> av.Codec:
    try:
        codec = av.Codec(name, "w")
    except ValueError:
        raise VidrestoreError(
            f"unknown video encoder '{name}' (try libx264, libx265, libsvtav1, ffv1, prores_ks)"
        ) from None
    if codec.type != "video":
        raise VidrestoreError(f"'{name}' is a {codec.type} encoder, not a video one")
    return codec


def _encoder_options(encoder: av.Codec, settings: EncodeOptions) -> dict[str, str]:
    """crf, preset and the free-form options, checked against what the encoder knows."""
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


def _fmt_distance(src: str, cand: str, order: int) -> tuple[int, ...]:
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


# -- plane composition -----------------------------------------------------------------------------


def _compose(converted: av.VideoFrame, original: av.VideoFrame, mask: np.ndarray) -> None:
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
