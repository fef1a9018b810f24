"""The output side: an encoder and muxer that lose nothing the restorer left alone.

:class:`VideoSink` encodes what the pipeline hands back. A frame without faces is encoded from the decoded
frame itself, so its planes reach the encoder bit-exact; a restored frame is converted back with the source's
matrix and range and, when the output keeps the input's pixel format, composed into the original planes only
where the restorer's mask is set. Timestamps, time base, colour tags, rotation and metadata are kept; the
other streams' packets, which travel with the frames, are copied or re-encoded (see :mod:`.routes`). The
sink is built from the source's :class:`~vidrestore.io.source.SourceDescription` and never reads the input.
The output is written to a hidden temporary file beside the destination and renamed at the end, so an
interrupted run never leaves a half-written file under the final name; standard output (``-``), which
cannot be renamed, is written as the frames come.

Frames keep their pts and the stream its time base where the container can store it (Matroska counts in
milliseconds, MP4 in at least 1/10000 s: the times stay the same).

Encoder defaults, time bases and options: :mod:`.encoders`.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
from av.video.frame import PictureType

from vidrestore.errors import VidrestoreError
from vidrestore.io.carry import (
    alpha_candidates,
    copy_alpha,
    has_alpha,
    hdr_options,
    losses,
)
from vidrestore.io.colour import Converter, compose_planes, planar, subsampled
from vidrestore.io.encoders import (
    FRAME_COUNTED,
    encoder_options,
    format_distance,
    open_encoder,
    output_codec,
    time_base_for,
)
from vidrestore.io.fields import FieldMarker, code_fields
from vidrestore.io.hardware import auto_encoder, is_nvenc, nvenc_pix_fmt, require_encoder
from vidrestore.io.paths import (
    check_output_path,
    is_pipe,
    move_into_place,
    muxer_for,
    reason,
    reserve_temp,
)
from vidrestore.io.routes import Route, carried_tags, open_route
from vidrestore.io.source import SourceDescription, SourceFrame, VideoInfo
from vidrestore.options import EncodeOptions

# Encoders that store the sample aspect ratio in their bitstream, and muxers that store it themselves
# (the others lose it: PyAV cannot set a stream's own aspect ratio). Checked with FFmpeg 8.1.
_SAR_ENCODERS = frozenset({"libx264", "libx265", "mpeg4", "mpeg1video", "mpeg2video"})
_SAR_MUXERS = frozenset({"mov", "mp4", "ipod", "3gp", "3g2", "psp"})
# MP4 and MOV put their index after the media; to a pipe, which cannot seek back, they must be fragmented.
_PIPE_OPTIONS = {"mp4": {"movflags": "frag_keyframe+empty_moov+default_base_moof"}}
_PIPE_OPTIONS["mov"] = _PIPE_OPTIONS["ipod"] = _PIPE_OPTIONS["mp4"]
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
        self._zero = 0.0  # seconds taken off every timestamp: the first frame's time in frame-counted muxers
        self._last_pts: int | None = None
        self._last_out_pts: int | None = None
        self._grid: tuple[Fraction, int] | None = None  # the first frame's time and pts on a frame-rate grid
        self._tail: list[av.Packet] = []
        info = source.info
        self._size = (info.width, info.height)  # the output's, for the whole file: the first picture's
        self._size_change = settings.size_change
        self._input_size = self._size
        check_output_path(info.path, dst, overwrite=overwrite, format=settings.format)
        muxer, _ = muxer_for(dst, settings.format)
        self._muxer = muxer
        cpu_codec = output_codec(dst, settings, source)
        self.codec = self._auto_codec(cpu_codec, settings) if settings.codec == "auto" else cpu_codec
        encoder = open_encoder(self.codec)
        nvenc = is_nvenc(self.codec)
        pix_fmt = settings.pix_fmt or (nvenc_pix_fmt(info.pix_fmt) if nvenc else None)
        self.pix_fmt = self._choose_pix_fmt(encoder, pix_fmt, info)
        options = self._carry(encoder, encoder_options(encoder, settings))
        if nvenc and settings.codec != "auto":
            require_encoder(self.codec, info.width, info.height, self.pix_fmt, options)
        self._colour = source.colour.for_output(info.pix_fmt, self.pix_fmt)
        # Frame-counted muxers have no timestamps to shift: audio that starts early (codec priming) must
        # not push the video off its frame grid.
        container_options = {"avoid_negative_ts": "disabled"} if muxer in FRAME_COUNTED else {}
        self._pipe = is_pipe(dst)
        if not self._pipe:
            self._tmp = reserve_temp(dst)
        try:
            if self._pipe:
                container_options.update(_PIPE_OPTIONS.get(muxer, {}))
                self._out = av.open(sys.stdout.buffer, "w", format=muxer, options=container_options)
            else:
                self._out = av.open(str(self._tmp), "w", format=settings.format, options=container_options)
            self._setup(encoder, options, muxer)
        except BaseException:
            self.abort()
            raise
        self._compose = self.pix_fmt == info.pix_fmt and planar(info.pix_fmt)
        self._alpha = source.alpha and has_alpha(self.pix_fmt)
        # Interlaced output: every frame carries the field order (restored frames come without flags).
        self._fields = FieldMarker(source.field_order) if source.field_order != "progressive" else None
        self._convert = Converter(source.colour, self._colour)

    # -- setup -------------------------------------------------------------------------------------

    def _auto_codec(self, cpu_codec: str, settings: EncodeOptions) -> str:
        """``codec="auto"``: NVENC where it writes what ``cpu_codec`` would, else ``cpu_codec``."""
        src, info = self._source, self._source.info
        square = src.sample_aspect_ratio in (None, 1)
        plain = (
            square
            and src.field_order == "progressive"
            and not (src.alpha or src.hdr or settings.pix_fmt or settings.encoder_opts)
        )
        codec, notice = auto_encoder(
            cpu_codec,
            width=info.width,
            height=info.height,
            pix_fmt=info.pix_fmt,
            crf=settings.crf,
            preset=settings.preset,
            plain=plain,
        )
        if notice:
            self.notices.append(notice)
        return codec

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
        allowed = alpha_candidates(encoder.name, self._muxer, allowed, keep=self._source.alpha)
        if not allowed:
            raise VidrestoreError(
                f"{encoder.name} cannot code the odd frame size {size}; choose another codec"
            )
        chosen = min(allowed, key=lambda f: format_distance(info.pix_fmt, f, supported.index(f)))
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

    def _carry(self, encoder: av.Codec, options: dict[str, str]) -> dict[str, str]:
        """The source's HDR10 metadata in the encoder's parameters; one notice for what the output cannot
        carry (alpha, HDR10 metadata)."""
        src, info = self._source, self._source.info
        lost = losses(encoder.name, self._muxer, self.pix_fmt, alpha=src.alpha, hdr10=src.hdr10)
        depth = av.VideoFormat(self.pix_fmt).components[0].bits
        if lost and depth < info.bit_depth:
            # Everything this codec drops in one notice: the bit-depth notice joins it.
            said = (
                f"{encoder.name} cannot encode {info.bit_depth}-bit {info.pix_fmt}: "
                f"encoding as {depth}-bit {self.pix_fmt}"
            )
            if said in self.notices:
                self.notices.remove(said)
            lost.append(f"{info.bit_depth}-bit depth (encoding as {depth}-bit {self.pix_fmt})")
        if lost:
            self.notices.append(
                f"{encoder.name} in {self.dst.suffix or self._muxer} cannot carry the input's "
                f"{' or its '.join(lost)}"
            )
        return hdr_options(encoder.name, src.hdr10, options) if src.hdr10 else options

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
        self._time_base = time_base_for(encoder.name, muxer, info.time_base, rate)
        self._frame_counted = muxer in FRAME_COUNTED
        cc.time_base = vs.time_base = self._time_base
        cc.framerate = rate
        if self._frame_counted:
            cc.max_b_frames = 0
        colour = self._colour
        cc.color_primaries, cc.color_trc, cc.colorspace = colour.primaries, colour.trc, colour.space
        cc.color_range = colour.range
        if src.sample_aspect_ratio:
            cc.sample_aspect_ratio = src.sample_aspect_ratio
            if (
                src.sample_aspect_ratio != 1
                and encoder.name not in _SAR_ENCODERS
                and muxer.split(",")[0] not in _SAR_MUXERS
            ):
                self.notices.append(
                    f"{encoder.name} in {muxer} cannot store the sample aspect ratio "
                    f"{src.sample_aspect_ratio.numerator}:{src.sample_aspect_ratio.denominator}: players "
                    "will show square pixels; libx264, or a .mov file, keeps it"
                )
        code_fields(cc, encoder.name, src.field_order)
        if encoder.name == "libvpx-vp9":
            cc.bit_rate = 0  # with crf: constant quality
        if encoder.name == "libx265" and muxer in ("mp4", "mov"):
            cc.codec_tag = "hvc1"  # parameter sets out of band, as Apple players require (FFmpeg tags hev1)
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
        if self._frames == 0 and self._frame_counted:
            self._zero = frame.time
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
        if frame.pts is None or (self._time_base == frame.frame.time_base and not self._zero):
            return frame.pts
        time = frame.pts * frame.frame.time_base - Fraction(self._zero)
        if self._grid is None:  # the grid counts from the first frame: a start half a frame off zero is fine
            self._grid = (time, round(time / self._time_base))
        pts = self._grid[1] + round((time - self._grid[0]) / self._time_base)
        if self._last_out_pts is not None and pts <= self._last_out_pts:
            needs, instead = (
                (f"the {self.dst.suffix} container", "use .mkv or .mp4")
                if self._frame_counted
                else (self.codec, "choose libx264 or ffv1, which keep every frame's time")
            )
            raise VidrestoreError(
                f"{self.dst}: {needs} needs a constant frame rate, and frame {frame.index} "
                f"({frame.time:.3f} s) is off the {float(1 / self._time_base):g} fps grid (variable frame "
                f"rate?); {instead}"
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
                compose_planes(converted, src, mask.astype(bool, copy=False))
            if self._alpha:
                self._keep_alpha(converted, src)
        self._colour.tag(converted)
        converted.duration = src.duration
        return converted

    def _keep_alpha(self, converted: av.VideoFrame, src: av.VideoFrame) -> None:
        """Restoring changes colour, not transparency: the alpha samples are the source frame's, as they
        would be written had no face been restored."""
        same = src.format.name == self.pix_fmt
        copy_alpha(converted, src if same else self._convert.convert(src, self.pix_fmt))

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
            if self._zero:
                shift = round(Fraction(self._zero) / packet.time_base)
                if packet.pts is not None:
                    packet.pts -= shift
                if packet.dts is not None:
                    packet.dts -= shift
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
        if self._pipe:
            self._done = True
            return
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
