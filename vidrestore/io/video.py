"""Video in and out with PyAV: a streaming decoder, and an encoder that loses nothing the restorer left alone.

:class:`VideoSource` decodes in-process with FFmpeg's threaded decoding and holds one frame at a time (plus
the few packets of the other streams demuxed meanwhile), so memory does not grow with the length of the film.
Each frame is offered as RGB converted with the stream's real matrix and range, together with the decoded
frame itself.

:class:`VideoSink` encodes what the pipeline hands back. A frame without faces is encoded from the decoded
frame itself, so its planes reach the encoder bit-exact; a restored frame is converted back with the source's
matrix and range and, when the output keeps the input's pixel format, composed into the original planes only
where the restorer's mask is set. Timestamps, time base, colour tags, rotation and metadata are kept; audio,
subtitle and data streams are copied packet by packet, or re-encoded (audio, text subtitles) with a notice
when the output container cannot hold them. The output is written to a hidden temporary file beside the
destination and renamed at the end, so an interrupted run never leaves a half-written file under the final
name.

Timestamps: frames keep their pts and the stream its time base where the container can store it (Matroska
counts in milliseconds, MP4 in at least 1/10000 s: the times stay the same). With ``start``, decoding seeks
to the keyframe before it and drops the frames before it, and every stream is shifted together so the output
starts at 0; the other streams' packets are kept between the first frame and the end of the last one.

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
import io
import os
import secrets
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.audio.resampler import AudioResampler
from av.stream import Disposition
from av.subtitles.subtitle import SubtitleSet
from av.video.frame import PictureType
from av.video.reformatter import ColorRange, Colorspace, VideoReformatter

from vidrestore.errors import VidrestoreError
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
_DEFAULT_CRF = {"libx264": 18, "libx265": 20, "libsvtav1": 28, "libvpx-vp9": 31}
_DEFAULT_PRESET = {"libx264": "medium", "libx265": "medium", "libsvtav1": "8"}
# Encoders whose bitstream cannot code an odd side with subsampled chroma (checked with FFmpeg 8.1).
_EVEN_CHROMA_ONLY = frozenset({"libx264", "libx265"})
# Muxers of the QuickTime family: their track title is read back as "name" and written from "title".
_MOV_FAMILY = frozenset({"mp4", "mov", "ipod", "3gp", "3g2", "psp", "ismv", "f4v"})
# Tags that describe the old file rather than its content: a muxer writes fresh ones.
_STALE_TAGS = frozenset(
    {
        "encoder",
        "major_brand",
        "minor_version",
        "compatible_brands",
        "duration",
        "bps",
        "number_of_frames",
        "number_of_bytes",
        "vendor_id",
        "_statistics_writing_app",
        "_statistics_writing_date_utc",
        "_statistics_tags",
    }
)
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
_AV_TIME_BASE = 1_000_000
_TRUNCATION_SLACK = 0.5  # seconds of missing video at the end that still count as whole


@dataclass(frozen=True)
class VideoInfo:
    """What the input is, for planning and for the user (all read from the container, nothing assumed)."""

    path: Path
    container: str  # FFmpeg's demuxer name
    codec: str
    width: int
    height: int
    pix_fmt: str
    bit_depth: int  # 8, 10, 12, 16
    time_base: Fraction
    frame_rate: Fraction | None  # average rate
    frames: int | None  # the container's count when it has one: never rely on it
    duration: float | None  # seconds
    rotation: float  # counter-clockwise degrees from the display matrix (as ffprobe shows it), 0 if none
    other_streams: list[str]  # one-line descriptions of audio/subtitle/data streams


@dataclass
class SourceFrame:
    """One decoded frame. ``pts`` and ``time`` are output timestamps: the source's own, shifted to start at 0
    when the source was opened with ``start``."""

    index: int  # 0-based among the frames yielded
    pts: int | None
    time: float  # seconds
    rgb: np.ndarray  # (H, W, 3) RGB; uint8 for 8-bit sources, uint16 (full 16-bit scale) for deeper ones
    frame: av.VideoFrame  # the decoded frame, for exact pass-through and plane composition
    packets: list[av.Packet]  # packets of the other streams demuxed before this frame (muxed before it)


@dataclass(frozen=True)
class _Colour:
    """The colour tags of the source and the conversion they imply."""

    primaries: int
    trc: int
    space: int
    range: int
    matrix: Colorspace  # what swscale converts with (guessed by size when the tag is unspecified)
    sws_range: ColorRange

    @classmethod
    def of(cls, frame: av.VideoFrame) -> _Colour:
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

    def for_output(self, src_fmt: str, dst_fmt: str) -> _Colour:
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


class _Converter:
    """Conversions between the source's samples, RGB and the output's samples, each side with its own matrix
    and range (``src`` describes what is decoded, ``dst`` what is encoded).

    Subsampled chroma is resampled in a step of its own (to or from 4:4:4 at the same depth): swscale's direct
    4:2:0 -> RGB path is off by up to 2 code values at 8 bits, always darker, while the two-step path is exact
    to rounding. Each step keeps its own reformatter, as swscale contexts are reused between frames.
    """

    def __init__(self, src: _Colour, dst: _Colour) -> None:
        self.src, self.dst = src, dst
        self._chroma = VideoReformatter()
        self._matrix = VideoReformatter()
        self._direct = VideoReformatter()

    def _resample(
        self,
        frame: av.VideoFrame,
        pix_fmt: str,
        src: _Colour,
        dst: _Colour,
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
        full = _full_chroma(frame.format.name)
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
        full = _full_chroma(pix_fmt)
        frame = self._matrix.reformat(
            frame, format=full, dst_colorspace=self.dst.matrix, dst_color_range=self.dst.sws_range, threads=0
        )
        return frame if full == pix_fmt else self._resample(frame, pix_fmt, self.dst, self.dst)

    def convert(self, frame: av.VideoFrame, pix_fmt: str) -> av.VideoFrame:
        """The decoded picture in the output's pixel format (when the output cannot keep the input's)."""
        return self._resample(frame, pix_fmt, self.src, self.dst, self._direct)


class VideoSource:
    """Streaming decoder: ``frames()`` yields one :class:`SourceFrame` at a time, in presentation order.

    Opening checks the file and decodes the first frame of the requested range, so every bad input fails here
    with one line. A file that ends early or breaks mid-way is decoded as far as it goes, with a line in
    ``warnings``.
    """

    def __init__(
        self,
        path: Path,
        *,
        start: float | None = None,
        end: float | None = None,
        max_frames: int | None = None,
    ) -> None:
        path = Path(path)
        if start is not None and start < 0:
            raise VidrestoreError(f"start must be 0 or later, not {start}")
        if end is not None and end <= (start or 0):
            raise VidrestoreError(f"end ({end}) must be after start ({start or 0})")
        if max_frames is not None and max_frames < 1:
            raise VidrestoreError(f"max_frames must be at least 1, not {max_frames}")
        _check_input_file(path)
        try:
            self._container = av.open(str(path))
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise VidrestoreError(f"{path}: not a video file FFmpeg can read ({_reason(exc)})") from None
        self.warnings: list[str] = []
        self._start, self._end, self._max_frames = start, end, max_frames
        self._consumed = False
        self._closed = False
        try:
            self._open(path)
        except BaseException:
            self.close()
            raise

    def _open(self, path: Path) -> None:
        c = self._container
        videos = [s for s in c.streams.video if not s.disposition & Disposition.attached_pic]
        if not videos:
            raise VidrestoreError(f"{path}: no video stream (only {_kinds(c.streams) or 'nothing'})")
        self._video = v = videos[0]
        if v.codec_context is None or v.codec_context.name in ("", "none"):
            raise VidrestoreError(f"{path}: the video stream's codec is not known to FFmpeg")
        v.thread_type = "AUTO"
        v.codec_context.thread_count = 0
        self._copies = [s for s in c.streams if s.index != v.index]
        self._tb = Fraction(v.time_base)
        origin = c.start_time / _AV_TIME_BASE if c.start_time is not None else 0.0
        self._start_at = None if self._start is None else origin + self._start
        self._end_at = None if self._end is None else origin + self._end
        self._stop_at: float | None = self._end_at  # where copied streams stop (set when max_frames stops us)
        self._offset_s = 0.0  # seconds subtracted from every timestamp (the first frame's time, with start)
        self._offset_pts = 0
        self._pending: list[av.Packet] = []
        self._decoded_count = 0
        self._decode_errors = 0
        self._damage: str | None = None
        self._flushed = False
        self._hit_end = False
        self._last_end: float | None = None
        if self._start_at is not None and self._start_at > origin:
            # When the file cannot seek, decoding starts at the beginning and frames before start are dropped.
            with contextlib.suppress(av.FFmpegError, OSError):
                c.seek(int(self._start_at / self._tb), stream=v, backward=True, any_frame=False)
        self._demux = c.demux([v, *self._copies])
        self._decoder = self._decoded()
        try:
            first = self._next_in_range()
        except av.FFmpegError as exc:
            raise VidrestoreError(f"{path}: the video cannot be decoded ({_reason(exc)})") from None
        if first is None:
            where = "" if self._start is None else f" from {self._start:g} s on"
            raise VidrestoreError(f"{path}: no video frames{where}")
        self._first = first
        self._colour = _Colour.of(first)
        fmt = first.format
        self._deep = fmt.components[0].bits > 8
        self._convert = _Converter(self._colour, self._colour)
        rate = v.average_rate or v.guessed_rate
        duration = (
            float(v.duration * self._tb)
            if v.duration
            else (c.duration / _AV_TIME_BASE if c.duration else None)
        )
        self.info = VideoInfo(
            path=path,
            container=c.format.name,
            codec=v.codec_context.name,
            width=first.width,
            height=first.height,
            pix_fmt=fmt.name,
            bit_depth=fmt.components[0].bits,
            time_base=self._tb,
            frame_rate=Fraction(rate) if rate else None,
            frames=v.frames or None,
            duration=duration,
            rotation=float(first.rotation or 0),
            other_streams=[_describe(s) for s in self._copies],
        )

    def __enter__(self) -> VideoSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._container.close()

    # -- decoding ----------------------------------------------------------------------------------

    def _decoded(self) -> Iterator[av.VideoFrame]:
        """Every decoded video frame; other streams' packets gather in ``_pending`` meanwhile."""
        v = self._video
        try:
            for packet in self._demux:
                if packet.stream_index != v.index:
                    self._take(packet)
                    continue
                if packet.size == 0:
                    self._flushed = True
                yield from self._decode(packet)
        except av.FFmpegError as exc:
            self._damage = _reason(exc)
        if not self._flushed:
            self._flushed = True
            yield from self._decode(None)

    def _decode(self, packet: av.Packet | None) -> Iterator[av.VideoFrame]:
        try:
            frames = self._video.decode(packet)
        except av.EOFError:
            return
        except av.FFmpegError:
            self._decode_errors += 1  # a damaged packet: FFmpeg's CLI also skips it and goes on
            return
        for frame in frames:
            self._decoded_count += 1
            yield frame

    def _take(self, packet: av.Packet) -> None:
        """Keep a packet of a copied stream if it falls in the requested range."""
        if packet.size == 0:
            return
        t = _packet_time(packet)
        if t is not None and self._start_at is not None and t < self._start_at - 1e-6:
            return
        self._pending.append(packet)

    def _next_in_range(self) -> av.VideoFrame | None:
        for frame in self._decoder:
            t = _frame_time(frame, self._tb)
            if self._start_at is not None and t is not None and t < self._start_at - 1e-6:
                continue
            if self._end_at is not None and t is not None and t >= self._end_at - 1e-6:
                self._hit_end = True
                return None
            return frame
        return None

    def frames(self) -> Iterator[SourceFrame]:
        """Yield the frames in range, once, reading the file as it goes (may run in a thread of its own)."""
        if self._consumed:
            raise RuntimeError("VideoSource.frames() can be iterated only once")
        self._consumed = True
        frame: av.VideoFrame | None = self._first
        self._first = None
        index, prev_pts, step, nudged = 0, None, self._step_pts(), 0
        while frame is not None:
            pts = frame.pts if frame.pts is not None else (0 if prev_pts is None else prev_pts + step)
            if prev_pts is not None and pts <= prev_pts:
                pts, nudged = (
                    prev_pts + 1,
                    nudged + 1,
                )  # encoders need rising timestamps; damaged files repeat them
            if index == 0 and self._start is not None:
                self._offset_pts = pts
                self._offset_s = float(pts * self._tb)
            prev_pts = pts
            packets = self._release(float(pts * self._tb))
            frame.pts = pts - self._offset_pts
            frame.time_base = self._tb
            rgb = self._convert.to_rgb(frame, "rgb48le" if self._deep else "rgb24")
            self._last_end = float((pts + (frame.duration or step)) * self._tb)
            yield SourceFrame(index, frame.pts, float(frame.pts * self._tb), rgb, frame, packets)
            index += 1
            if self._max_frames is not None and index >= self._max_frames:
                self._stop_at = self._last_end
                break
            frame = self._next_in_range()
        if frame is None and not self._hit_end:  # ran to the end of the file, not to end or max_frames
            self._check_complete(index)
        if nudged:
            self.warnings.append(
                f"input is damaged: {nudged} frame(s) had repeated or backward timestamps (nudged)"
            )

    def _step_pts(self) -> int:
        rate = self._video.average_rate or self._video.guessed_rate
        return max(1, round(1 / (rate * self._tb))) if rate else 1

    def _release(self, before: float | None) -> list[av.Packet]:
        """The pending packets due before ``before`` seconds (all when None), shifted to output time."""
        keep, out = [], []
        for packet in self._pending:
            t = _packet_time(packet)
            if before is not None and t is not None and t > before:
                keep.append(packet)
            elif t is None or self._start_at is None or t >= self._offset_s - 1e-6:
                out.append(self._shift(packet))
        self._pending = keep
        return out

    def _shift(self, packet: av.Packet) -> av.Packet:
        if self._offset_s:
            off = round(self._offset_s / packet.time_base)
            if packet.pts is not None:
                packet.pts -= off
            if packet.dts is not None:
                packet.dts -= off
        return packet

    def _tail(self) -> Iterator[av.Packet]:
        """The copied streams' packets after the last frame, up to where the video stopped (streamed)."""
        stop = self._stop_at

        def wanted(packet: av.Packet) -> bool:
            t = _packet_time(packet)
            if t is None:
                return True
            return (stop is None or t < stop - 1e-6) and (
                self._start_at is None or t >= self._offset_s - 1e-6
            )

        pending, self._pending = self._pending, []
        yield from (self._shift(p) for p in pending if wanted(p))
        try:
            for packet in self._demux:
                if packet.stream_index == self._video.index:
                    # Muxers interleave streams within a second or two: past that, nothing in range remains.
                    t = _packet_time(packet)
                    if stop is not None and t is not None and t > stop + 2.0:
                        return
                elif packet.size and wanted(packet):
                    yield self._shift(packet)
        except av.FFmpegError:
            return  # damage: already reported with the video when it reached it

    def _check_complete(self, yielded: int) -> None:
        """After the last frame: say so when the file looks cut short or damaged."""
        n = yielded
        if self._damage:
            self.warnings.append(
                f"input is truncated or damaged: decoding stopped after {n} frames ({self._damage})"
            )
        elif self._start is None and self.info.frames and self._decoded_count < self.info.frames:
            self.warnings.append(
                f"input is truncated or damaged: decoding stopped after {n} frames "
                f"(the container lists {self.info.frames})"
            )
        elif (
            self.info.duration
            and self._last_end is not None
            and self._last_end < (self._video_duration() or 0) - _TRUNCATION_SLACK
        ):
            self.warnings.append(
                f"input is truncated or damaged: decoding stopped after {n} frames "
                f"({self._last_end:.2f} s of {self._video_duration():.2f} s)"
            )
        if self._decode_errors:
            self.warnings.append(
                f"input is damaged: {self._decode_errors} video packet(s) could not be decoded "
                "and were skipped"
            )

    def _video_duration(self) -> float | None:
        v, c = self._video, self._container
        if v.duration:
            return float((v.start_time or 0) + v.duration) * float(self._tb)
        tag = v.metadata.get("DURATION")  # Matroska keeps the track's length as a tag
        if tag:
            try:
                h, m, s = tag.split(":")
                return int(h) * 3600 + int(m) * 60 + float(s)
            except ValueError:
                pass
        return c.duration / _AV_TIME_BASE if c.duration else None


class VideoSink:
    """Encoder and muxer for one output file; a context manager that commits on a clean exit and aborts
    (deleting the temporary file) on an exception.

    Create it before iterating the source's frames (it reads the source's stream parameters), write every
    frame in order, and commit once ``frames()`` has finished: the commit reads the rest of the source's other
    streams (the audio after the last frame) from the same file.
    """

    def __init__(
        self, dst: Path, source: VideoSource, settings: EncodeOptions, *, overwrite: bool = False
    ) -> None:
        self.dst = dst = Path(dst)
        self.notices: list[str] = []
        self._source = source
        self._tmp: Path | None = None
        self._out: av.container.OutputContainer | None = None
        self._done = False
        self._frames = 0
        self._last_pts: int | None = None
        info = source.info
        check_output_path(info.path, dst, overwrite=overwrite)
        muxer, muxer_default = _muxer_for(dst)
        self.codec = settings.codec or _default_codec(dst, muxer_default)
        encoder = _encoder(self.codec)
        self.pix_fmt = self._choose_pix_fmt(encoder, settings.pix_fmt, info)
        options = _encoder_options(encoder, settings)
        self._tmp = _reserve_temp(dst)
        try:
            self._out = av.open(str(self._tmp), "w")
            self._setup(encoder, options, muxer)
        except BaseException:
            self.abort()
            raise
        self._compose = self.pix_fmt == info.pix_fmt and _planar(info.pix_fmt)
        self._convert = _Converter(source._colour, self._colour)

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
            if odd and _subsampled(requested):
                raise VidrestoreError(
                    f"{encoder.name} cannot code the odd frame size {size} with subsampled chroma "
                    f"({requested}): use a 4:4:4 pixel format such as yuv444p, or leave pix_fmt unset"
                )
            return requested
        if not supported:
            return info.pix_fmt
        allowed = [f for f in supported if not (odd and _subsampled(f))]
        if not allowed:
            raise VidrestoreError(
                f"{encoder.name} cannot code the odd frame size {size}; choose another codec"
            )
        chosen = min(allowed, key=lambda f: _fmt_distance(info.pix_fmt, f, supported.index(f)))
        if odd and _subsampled(info.pix_fmt) and not _subsampled(chosen):
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
        out.metadata.update(_metadata(src._container.metadata))
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
        cc.time_base = info.time_base
        vs.time_base = info.time_base
        cc.framerate = rate
        self._colour = colour = src._colour.for_output(info.pix_fmt, self.pix_fmt)
        cc.color_primaries, cc.color_trc, cc.colorspace = colour.primaries, colour.trc, colour.space
        cc.color_range = colour.range
        in_v = src._video
        if in_v.sample_aspect_ratio:
            cc.sample_aspect_ratio = in_v.sample_aspect_ratio
        if encoder.name == "libvpx-vp9":
            cc.bit_rate = 0  # with crf: constant quality
        cc.thread_count = 0
        cc.options = options
        vs.metadata.update(_metadata(in_v.metadata, muxer=src._container.format.name))
        vs.disposition = in_v.disposition
        matrix = in_v.codec_context.coded_side_data.get("display_matrix")
        if matrix:
            vs.set_display_matrix(list(struct.unpack("=9i", matrix[:36])))
        self._video = vs
        self._routes: dict[int, _Route] = {}
        for s in src._copies:
            route = self._route_for(s, out, muxer)
            if route is not None:
                self._routes[s.index] = route
        try:
            out.start_encoding()
        except (av.FFmpegError, OSError, ValueError) as exc:
            settings = ", ".join(f"{k}={v}" for k, v in options.items())
            raise VidrestoreError(
                f"{self.dst}: {encoder.name} could not start with {info.width}x{info.height} {self.pix_fmt}"
                f"{' and ' + settings if settings else ''} ({_reason(exc)})"
            ) from None

    def _route_for(self, s: av.stream.Stream, out: av.container.OutputContainer, muxer: str) -> _Route | None:
        """Copy the stream when the muxer takes it; else re-encode audio, convert text subtitles, or drop."""
        what = f"{s.type} stream #{s.index} ({_codec_name(s)})"
        route: _Route | None = None
        if _muxer_accepts(muxer, s):
            route = _Copy(out.add_stream_from_template(s))
        elif s.type == "audio" and (target := _audio_codec_for(muxer, out)):
            self.notices.append(f"{what} cannot be copied into {muxer}: re-encoded as {target}")
            route = _AudioTranscoder(out, s, target)
        elif (
            s.type == "subtitle"
            and s.codec_context.codec.text_sub
            and (target := _subtitle_codec_for(muxer, out))
        ):
            self.notices.append(f"{what} cannot be copied into {muxer}: converted to {target}")
            route = _SubtitleConverter(out, s, target)
        else:
            self.notices.append(f"{what} cannot be stored in {muxer}: dropped")
            return None
        route.stream.metadata.update(_metadata(s.metadata, muxer=self._source._container.format.name))
        route.stream.disposition = s.disposition
        return route

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
        out_frame.pts, out_frame.time_base = frame.pts, frame.frame.time_base
        out_frame.pict_type = PictureType.NONE  # let the encoder choose frame types, not the source's
        self._guard(self._write, out_frame, frame.packets)
        self._last_pts = frame.pts
        self._frames += 1

    def _write(self, out_frame: av.VideoFrame, packets: list[av.Packet]) -> None:
        for packet in packets:
            self._route_packet(packet)
        self._mux(self._video.encode(out_frame))

    def _prepare(self, frame: SourceFrame, rgb: np.ndarray | None, mask: np.ndarray | None) -> av.VideoFrame:
        src = frame.frame
        if rgb is None or (mask is not None and not mask.any()):
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
            raise VidrestoreError(f"{self.dst}: writing failed ({_reason(exc)})") from None
        except BaseException:
            self.abort()
            raise

    def commit(self) -> None:
        """Flush the encoder, copy the rest of the other streams, close the file and move it into place."""
        if self._done:
            return
        if self._frames == 0:
            self.abort()
            raise VidrestoreError(f"{self.dst}: no frames were written")
        self._guard(self._finish)
        assert self._tmp is not None
        try:
            os.replace(self._tmp, self.dst)
        except OSError as exc:
            self.abort()
            raise VidrestoreError(
                f"{self.dst}: cannot move the finished file into place ({_reason(exc)})"
            ) from None
        self._done = True

    def _finish(self) -> None:
        assert self._out is not None
        self._mux(self._video.encode(None))
        for packet in self._source._tail():
            self._route_packet(packet)
        for route in self._routes.values():
            for packet in route.flush():
                self._mux(packet)
        out, self._out = self._out, None
        out.close()

    def abort(self) -> None:
        """Close whatever is open and delete the temporary file; safe to call more than once."""
        self._done = True
        if self._out is not None:
            out, self._out = self._out, None
            with contextlib.suppress(av.FFmpegError, OSError, ValueError):
                out.close()  # the file is being thrown away: a failing trailer does not matter
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)


def check_output_path(src: Path, dst: Path, *, overwrite: bool) -> None:
    """The safety checks on an output path, callable before any work: never the input, never an existing file
    unless ``overwrite``, a directory that exists and is writable, an extension FFmpeg can mux."""
    src, dst = Path(src), Path(dst)
    if dst.is_dir():
        raise VidrestoreError(f"{dst}: is a directory; give an output file name")
    if _same_file(src, dst):
        raise VidrestoreError(f"{dst}: the output would overwrite the input; choose another name")
    if dst.exists() and not overwrite:
        raise VidrestoreError(f"{dst} exists; pass --overwrite to replace it")
    parent = dst.parent
    if not parent.exists():
        raise VidrestoreError(f"{dst}: the output directory {parent} does not exist")
    if not parent.is_dir():
        raise VidrestoreError(f"{dst}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise VidrestoreError(f"{dst}: the output directory {parent} is not writable")
    _muxer_for(dst)


# -- stream routes ---------------------------------------------------------------------------------


class _Route:
    """Where the packets of one copied input stream go."""

    stream: av.stream.Stream

    def feed(self, packet: av.Packet) -> list[av.Packet]:
        raise NotImplementedError

    def flush(self) -> list[av.Packet]:
        return []


class _Copy(_Route):
    def __init__(self, stream: av.stream.Stream) -> None:
        self.stream = stream

    def feed(self, packet: av.Packet) -> list[av.Packet]:
        packet.stream = self.stream
        return [packet]


class _AudioTranscoder(_Route):
    """Decode, resample to what the encoder takes, re-encode; timestamps follow the first decoded sample."""

    def __init__(self, out: av.container.OutputContainer, src: av.AudioStream, codec: str) -> None:
        self.src = src
        enc = av.Codec(codec, "w")
        rates = enc.audio_rates
        rate = src.rate if not rates or src.rate in rates else min(rates, key=lambda r: abs(r - src.rate))
        self.stream = out.add_stream(codec, rate=rate)
        self.stream.layout = src.layout
        self.stream.format = enc.audio_formats[0] if enc.audio_formats else src.format
        self.rate = rate
        self.resampler: AudioResampler | None = None
        self.next_pts: int | None = None

    def feed(self, packet: av.Packet) -> list[av.Packet]:
        return [p for frame in self.src.decode(packet) for p in self._encode(frame)]

    def _encode(self, frame: av.AudioFrame | None) -> list[av.Packet]:
        cc = self.stream.codec_context
        if self.resampler is None:
            self.resampler = AudioResampler(
                format=cc.format, layout=cc.layout, rate=self.rate, frame_size=cc.frame_size or None
            )
        if frame is not None and self.next_pts is None:
            self.next_pts = round((frame.pts or 0) * frame.time_base * self.rate)
        packets = []
        for out in self.resampler.resample(frame):
            out.pts, out.time_base = self.next_pts, Fraction(1, self.rate)
            self.next_pts = (self.next_pts or 0) + out.samples
            packets += self.stream.encode(out)
        return packets

    def flush(self) -> list[av.Packet]:
        packets = [p for frame in self.src.decode(None) for p in self._encode(frame)]
        return packets + self._encode(None) + self.stream.encode(None)


class _SubtitleConverter(_Route):
    """Text subtitles re-encoded for the output container (e.g. SubRip in Matroska → mov_text in MP4)."""

    def __init__(self, out: av.container.OutputContainer, src: av.stream.Stream, codec: str) -> None:
        self.dec = src.codec_context
        self.dec.open(strict=False)
        self.stream = out.add_stream(codec)
        self.stream.codec_context.subtitle_header = self.dec.subtitle_header

    def feed(self, packet: av.Packet) -> list[av.Packet]:
        try:
            subs = self.dec.decode2(packet)
        except av.FFmpegError:
            return []
        if subs is None:
            return []
        out = []
        for rect in subs.rects:
            text = getattr(rect, "ass", None)
            if not text:
                continue
            encoded = self.stream.codec_context.encode_subtitle(
                SubtitleSet.create(text=bytes(text), start=0, end=packet.duration or 0)
            )
            encoded.pts = encoded.dts = packet.pts
            encoded.duration = packet.duration or 0
            encoded.time_base = packet.time_base
            encoded.stream = self.stream
            out.append(encoded)
        return out


# -- helpers ---------------------------------------------------------------------------------------


def _check_input_file(path: Path) -> None:
    if not path.exists():
        raise VidrestoreError(f"{path}: no such file")
    if not path.is_file():
        raise VidrestoreError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise VidrestoreError(f"{path}: the file is empty")


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _muxer_for(dst: Path) -> tuple[str, str]:
    """The muxer FFmpeg picks for this file name and its default video codec (opening creates no file)."""
    try:
        probe = av.open(str(dst), "w")
    except ValueError:
        raise VidrestoreError(
            f"{dst}: cannot tell the container from the extension '{dst.suffix}'; "
            "use .mp4, .mkv, .mov, .webm or .avi"
        ) from None
    name, video = probe.format.name, probe.default_video_codec
    probe.close()
    if name in ("image2", "image2pipe") or video == "none":
        raise VidrestoreError(
            f"{dst}: '{dst.suffix}' is not a video container; use .mp4, .mkv, .mov, .webm or .avi"
        )
    return name, video


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


def _reserve_temp(dst: Path) -> Path:
    """A new hidden file beside ``dst`` with the real extension last, so FFmpeg picks the same muxer."""
    for _ in range(100):
        tmp = dst.with_name(f".{dst.stem}.{secrets.token_hex(4)}.part{dst.suffix}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        except OSError as exc:
            raise VidrestoreError(f"{dst}: cannot write to {dst.parent} ({_reason(exc)})") from None
        return tmp
    raise VidrestoreError(f"{dst}: cannot create a temporary file in {dst.parent}")


def _muxer_accepts(muxer: str, stream: av.stream.Stream) -> bool:
    """Whether the muxer writes a header for a copy of this stream (the muxer's own check, on a dry run)."""
    probe = av.open(io.BytesIO(), "w", format=muxer)
    try:
        probe.add_stream_from_template(stream)
        probe.start_encoding()
    except (av.FFmpegError, ValueError, TypeError):
        return False
    finally:
        with contextlib.suppress(av.FFmpegError, OSError, ValueError):
            probe.close()
    return True


def _audio_codec_for(muxer: str, out: av.container.OutputContainer) -> str | None:
    """AAC for the QuickTime family, else the container's default audio codec when this FFmpeg encodes it."""
    names = ["aac"] if muxer in _MOV_FAMILY else [out.default_audio_codec, "aac", "libopus", "flac"]
    for name in names:
        name = {"vorbis": "libvorbis", "opus": "libopus"}.get(name, name)
        if _has_encoder(name, "audio") and _muxer_takes(muxer, name):
            return name
    return None


def _subtitle_codec_for(muxer: str, out: av.container.OutputContainer) -> str | None:
    """mov_text for the QuickTime family, else the container's default subtitle codec."""
    name = "mov_text" if muxer in _MOV_FAMILY else out.default_subtitle_codec
    return name if _has_encoder(name, "subtitle") and _muxer_takes(muxer, name) else None


def _has_encoder(name: str, kind: str) -> bool:
    try:
        return av.Codec(name, "w").type == kind
    except ValueError:
        return False


def _muxer_takes(muxer: str, codec: str) -> bool:
    probe = av.open(io.BytesIO(), "w", format=muxer)
    try:
        probe.add_stream(codec)
    except ValueError:
        return False
    finally:
        probe.close()
    return True


def _metadata(tags: dict[str, str], *, muxer: str | None = None) -> dict[str, str]:
    """Tags worth carrying over: not the ones that describe the old file's muxer or statistics."""
    out = {
        k: v
        for k, v in tags.items()
        if k.lower().split("-")[0] not in _STALE_TAGS and not v.startswith("Lavf")  # "DURATION-eng" too
    }
    if muxer is not None and muxer.startswith("mov") and "name" in out and "title" not in out:
        out["title"] = out.pop("name")  # QuickTime reads its track title as "name" but writes it from "title"
    return out


def _planar(pix_fmt: str) -> bool:
    """One component per plane (yuv*p, gbrp, gray): what the plane composition handles."""
    fmt = av.VideoFormat(pix_fmt)
    planes = [c.plane for c in fmt.components]
    return not fmt.has_palette and not fmt.is_bit_stream and len(set(planes)) == len(planes)


def _full_chroma(pix_fmt: str) -> str:
    """The 4:4:4 planar format at the same depth as a subsampled YUV format; other formats unchanged."""
    fmt = av.VideoFormat(pix_fmt)
    if fmt.is_rgb or not _subsampled(pix_fmt) or any(c.is_alpha for c in fmt.components):
        return pix_fmt
    bits = fmt.components[0].bits
    return "yuv444p" if bits == 8 else f"yuv444p{bits}le"


def _subsampled(pix_fmt: str) -> bool:
    fmt = av.VideoFormat(pix_fmt, 64, 64)
    return any(c.width < 64 or c.height < 64 for c in fmt.components)


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
        not _planar(cand),
        cand.startswith("yuvj"),
        order,
    )


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


def _frame_time(frame: av.VideoFrame, tb: Fraction) -> float | None:
    return None if frame.pts is None else float(frame.pts * tb)


def _packet_time(packet: av.Packet) -> float | None:
    ts = packet.pts if packet.pts is not None else packet.dts
    return None if ts is None or packet.time_base is None else float(ts * packet.time_base)


def _codec_name(s: av.stream.Stream) -> str:
    if s.type == "attachment":
        return f"{s.name}, {s.mimetype}"
    cc = s.codec_context
    return cc.name if cc is not None and cc.name else "unknown codec"


def _describe(s: av.stream.Stream) -> str:
    """One line per stream, for the user: '#1 audio: aac, 48000 Hz, mono (fra, "Tone")'."""
    parts = [_codec_name(s)]
    if s.type == "audio":
        parts += [f"{s.rate} Hz", s.layout.name]
    label = [x for x in (s.metadata.get("language"), s.metadata.get("title") or s.metadata.get("name")) if x]
    tail = f" ({', '.join(label)})" if label else ""
    return f"#{s.index} {s.type}: {', '.join(parts)}{tail}"


def _kinds(streams: av.container.streams.StreamContainer) -> str:
    return ", ".join(sorted({s.type for s in streams}))


def _reason(exc: BaseException) -> str:
    """FFmpeg's or the OS's own words for an error, without the traceback."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
