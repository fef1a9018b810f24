"""The input side: a streaming decoder that is also the only reader of the input file.

:class:`VideoSource` decodes in-process with FFmpeg's threaded decoding and holds one frame at a time (plus
the few packets of the other streams demuxed meanwhile), so memory does not grow with the length of the film.
Each frame is offered as RGB converted with the stream's real matrix and range, together with the decoded
frame itself.

One thread demuxes: whichever iterates :meth:`VideoSource.frames`. The packets of the other streams (audio,
subtitles, data) travel with the frames instead of through a queue of their own: each :class:`SourceFrame`
carries the packets due before it, and the last one also the tail after it. They then ride the pipeline's
bounded frame queues, so memory stays flat, no second channel has to be kept in step with the frames, and
the sink never reads the input. The sink is built from :attr:`VideoSource.description`, a frozen account of
the stream parameters it needs (like PyAV builds an output stream from a template stream).

Timestamps: frames keep their pts and the stream its time base. With ``start``, decoding seeks to the
keyframe before it and drops the frames before it, and every stream is shifted together so the output starts
at 0; the other streams' packets are kept between the first frame and the end of the last one.
"""

from __future__ import annotations

import contextlib
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.stream import Disposition

from vidrestore.errors import VidrestoreError
from vidrestore.io.carry import Hdr10, alpha_decoder, has_alpha, is_hdr, read_hdr10
from vidrestore.io.colour import Colour, Converter
from vidrestore.io.fields import STREAM_FIELD_ORDER, top_field_first
from vidrestore.io.hardware import decoder_failed, decoder_hwaccel, software_format
from vidrestore.io.paths import check_input_file, is_pipe, reason

_AV_TIME_BASE = 1_000_000
# MPEG-PS private stream 2 of a DVD's VOB files: PCI/DSI packets that index the disc's sectors.
DVD_NAV = "dvd_nav_packet"
# Data codecs whose FFmpeg name says little to a user.
_LABELS = {DVD_NAV: "DVD navigation packets"}
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


@dataclass(frozen=True)
class StreamTemplate:
    """A non-video input stream, as the sink needs it to copy, convert or drop the stream's packets."""

    index: int  # the input stream index, which the stream's packets carry
    type: str  # "audio", "subtitle", "data", "attachment"
    codec: str  # for the user: the codec's name, or what an attachment is
    text_sub: bool  # a text subtitle format, which can be converted to another
    metadata: dict[str, str]
    disposition: Disposition
    # The input stream, a template for the output stream (``OutputContainer.add_stream_from_template``) and
    # for the sink's own decoder. Read only while the sink is being built, before decoding starts.
    stream: av.stream.Stream

    @property
    def label(self) -> str:
        """The codec as a user reads it: FFmpeg's name, or what the stream is where that name says little."""
        return _LABELS.get(self.codec, self.codec)


@dataclass(frozen=True)
class SourceDescription:
    """Everything an output needs to know about the source, with nothing to read from the input file."""

    info: VideoInfo
    colour: Colour  # the decoded frames' tags and the conversion they imply
    metadata: dict[str, str]  # container tags
    video_metadata: dict[str, str]
    video_disposition: Disposition
    sample_aspect_ratio: Fraction | None
    display_matrix: tuple[int, ...] | None  # the 9 numbers of the rotation side data, as stored
    streams: tuple[StreamTemplate, ...]  # the other streams, in input order
    alpha: bool = False  # the decoded frames have an alpha plane
    hdr10: Hdr10 | None = None  # HDR10 static metadata, from the stream's or the first frame's side data
    # "progressive", "tff" or "bff" (in display order), and what said so, for the user's notice; the
    # stream's own word ("unknown" when it has none), which the frames' flags override.
    field_order: str = "progressive"
    field_order_from: str = ""
    stream_field_order: str = "unknown"

    @property
    def hdr(self) -> bool:
        """A PQ or HLG transfer, or HDR10 metadata."""
        return is_hdr(self.colour.trc, self.hdr10)


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
    # Only on the last frame: the other streams' packets after it, muxed once the video is flushed.
    tail: list[av.Packet] = field(default_factory=list)


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
        hwaccel: str = "none",
    ) -> None:
        path = Path(path)
        if start is not None and start < 0:
            raise VidrestoreError(f"start must be 0 or later, not {start}")
        if end is not None and end <= (start or 0):
            raise VidrestoreError(f"end ({end}) must be after start ({start or 0})")
        if max_frames is not None and max_frames < 1:
            raise VidrestoreError(f"max_frames must be at least 1, not {max_frames}")
        check_input_file(path)
        pipe = is_pipe(path)
        self.notices: list[str] = []
        accel, failure = decoder_hwaccel(hwaccel, pipe=pipe), None
        if accel is not None:
            try:
                self._container = av.open(sys.stdin.buffer if pipe else str(path), hwaccel=accel)
            except (av.FFmpegError, OSError, ValueError) as exc:
                accel, failure = None, reason(exc)  # a file FFmpeg cannot read at all fails below, as ever
        try:
            if accel is None:
                self._container = av.open(sys.stdin.buffer if pipe else str(path))
        except (av.FFmpegError, OSError, ValueError) as exc:
            if pipe:
                raise VidrestoreError(
                    f"standard input: not a video stream FFmpeg can read ({reason(exc)}); a pipe cannot "
                    "seek, so an MP4 or MOV must have its index first (faststart) or be fragmented; "
                    "Matroska, MPEG-TS and NUT always work"
                ) from None
            raise VidrestoreError(f"{path}: not a video file FFmpeg can read ({reason(exc)})") from None
        self._nvdec = accel is not None
        if failure is not None:
            try:
                self.notices.append(decoder_failed(hwaccel, failure))
            except VidrestoreError:
                self._container.close()
                raise
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
        name = "standard input" if is_pipe(path) else path
        c = self._container
        videos = [s for s in c.streams.video if not s.disposition & Disposition.attached_pic]
        if not videos:
            raise VidrestoreError(f"{name}: no video stream (only {_kinds(c.streams) or 'nothing'})")
        self._video = v = videos[0]
        if v.codec_context is None or v.codec_context.name in ("", "none"):
            raise VidrestoreError(f"{name}: the video stream's codec is not known to FFmpeg")
        v.thread_type = "AUTO"
        v.codec_context.thread_count = 0
        self._codec = alpha_decoder(v) or v.codec_context
        self._hw_format = None  # set when NVDEC decodes: its frames are converted to the CPU decoder's format
        if self._codec.is_hwaccel:
            self._hw_format = software_format(str(path), v.index)
        elif self._nvdec:
            self.notices.append(f"hwaccel: NVDEC cannot decode {v.codec_context.name}; decoding on the CPU")
        copies = [s for s in c.streams if s.index != v.index]
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
        self._demux = c.demux([v, *copies])
        self._decoder = self._decoded()
        try:
            first = self._next_in_range()
        except av.FFmpegError as exc:
            raise VidrestoreError(f"{name}: the video cannot be decoded ({reason(exc)})") from None
        if first is None:
            where = "" if self._start is None else f" from {self._start:g} s on"
            raise VidrestoreError(f"{name}: no video frames{where}")
        self._first = first
        colour = Colour.of(first)
        self._deep = first.format.components[0].bits > 8
        self._convert = Converter(colour, colour)
        self.description = self._describe(path, first, colour, copies)
        self.info = self.description.info

    def _describe(
        self, path: Path, first: av.VideoFrame, colour: Colour, copies: list[av.stream.Stream]
    ) -> SourceDescription:
        """What the input is, from the container and its first frame in range."""
        c, v, fmt = self._container, self._video, first.format
        rate = v.average_rate or v.guessed_rate
        duration = (
            float(v.duration * self._tb)
            if v.duration
            else (c.duration / _AV_TIME_BASE if c.duration else None)
        )
        info = VideoInfo(
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
            other_streams=[_one_line(s) for s in copies],
        )
        matrix = v.codec_context.coded_side_data.get("display_matrix")
        # Stream-level side data reaches the decoder, which also puts it on the frames (with the SEI's).
        side_data = dict(self._codec.decoded_side_data)
        side_data.update((key, bytes(first.side_data[key])) for key in first.side_data)
        order, order_from = _field_order(v, first)
        return SourceDescription(
            info=info,
            colour=colour,
            metadata=dict(c.metadata),
            video_metadata=dict(v.metadata),
            video_disposition=v.disposition,
            sample_aspect_ratio=Fraction(v.sample_aspect_ratio) if v.sample_aspect_ratio else None,
            display_matrix=struct.unpack("=9i", matrix[:36]) if matrix else None,
            streams=tuple(_template(s) for s in copies),
            alpha=has_alpha(fmt.name),
            hdr10=read_hdr10(side_data),
            field_order=order,
            field_order_from=order_from,
            stream_field_order=STREAM_FIELD_ORDER.get(v.codec_context.field_order, "unknown"),
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
            self._damage = reason(exc)
        if not self._flushed:
            self._flushed = True
            yield from self._decode(None)

    def _decode(self, packet: av.Packet | None) -> Iterator[av.VideoFrame]:
        try:
            frames = self._codec.decode(packet)
        except av.EOFError:
            return
        except av.FFmpegError:
            self._decode_errors += 1  # a damaged packet: FFmpeg's CLI also skips it and goes on
            return
        for frame in frames:
            self._decoded_count += 1
            if self._hw_format is not None and frame.format.name != self._hw_format:
                frame = frame.reformat(format=self._hw_format)  # exact: nv12/p010 hold the same samples
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
            t = None if frame.pts is None else float(frame.pts * self._tb)
            if self._start_at is not None and t is not None and t < self._start_at - 1e-6:
                continue
            if self._end_at is not None and t is not None and t >= self._end_at - 1e-6:
                self._hit_end = True
                return None
            return frame
        return None

    def frames(self) -> Iterator[SourceFrame]:
        """Yield the frames in range, once, reading the file as it goes (may run in a thread of its own).

        The next frame is decoded before a frame is yielded, so the last one is known as the last and can take
        the other streams' tail with it: this generator stays the file's only reader.
        """
        if self._consumed:
            raise RuntimeError("VideoSource.frames() can be iterated only once")
        self._consumed = True
        frame: av.VideoFrame | None = self._first
        self._first = None
        index, prev_pts, step, nudged = 0, None, self._step_pts(), 0
        while frame is not None:
            pts = frame.pts if frame.pts is not None else (0 if prev_pts is None else prev_pts + step)
            if prev_pts is not None and pts <= prev_pts:
                # Damaged files repeat timestamps; encoders need them rising.
                pts, nudged = prev_pts + 1, nudged + 1
            if index == 0 and self._start is not None:
                self._offset_pts = pts
                self._offset_s = float(pts * self._tb)
            prev_pts = pts
            packets = self._release(float(pts * self._tb))
            frame.pts = pts - self._offset_pts
            frame.time_base = self._tb
            rgb = self._convert.to_rgb(frame, "rgb48le" if self._deep else "rgb24")
            self._last_end = float((pts + (frame.duration or step)) * self._tb)
            current = SourceFrame(index, frame.pts, float(frame.pts * self._tb), rgb, frame, packets)
            index += 1
            stopped = self._max_frames is not None and index >= self._max_frames
            if stopped:
                self._stop_at = self._last_end
            frame = None if stopped else self._next_in_range()
            if frame is None:
                current.tail = list(self._tail())
                if not stopped and not self._hit_end:  # ran to the end of the file, not to end or max_frames
                    self._check_complete(index)
                if nudged:
                    self.warnings.append(
                        f"input is damaged: {nudged} frame(s) had repeated or backward timestamps (nudged)"
                    )
            yield current

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
        """The copied streams' packets after the last frame, up to where the video stopped."""
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


def _field_order(v: av.VideoStream, first: av.VideoFrame) -> tuple[str, str]:
    """The field order, from the first frame's flags (what the decoder read in the picture's own header)
    and else the stream's (what the container or the parser said); with a word on what said so."""
    stream = STREAM_FIELD_ORDER.get(v.codec_context.field_order)
    if not first.interlaced_frame:
        if stream in ("tff", "bff"):
            return "progressive", f"the frames; the stream says {stream}, its frames say progressive"
        return "progressive", "the frames"
    top = top_field_first(first)
    if top is None:  # a picture whose rows are all alike says nothing about its order
        return (stream, "the stream") if stream in ("tff", "bff") else ("tff", "assumed")
    return ("tff" if top else "bff"), "the frames"


def _template(s: av.stream.Stream) -> StreamTemplate:
    cc = s.codec_context
    return StreamTemplate(
        index=s.index,
        type=s.type,
        codec=_codec_name(s),
        text_sub=bool(s.type == "subtitle" and cc is not None and cc.codec.text_sub),
        metadata=dict(s.metadata),
        disposition=s.disposition,
        stream=s,
    )


def _packet_time(packet: av.Packet) -> float | None:
    ts = packet.pts if packet.pts is not None else packet.dts
    return None if ts is None or packet.time_base is None else float(ts * packet.time_base)


def _codec_name(s: av.stream.Stream) -> str:
    if s.type == "attachment":
        return f"{s.name}, {s.mimetype}"
    cc = s.codec_context
    # A data stream has no codec context (nothing decodes it), but its parameters name the codec.
    name = cc.name if cc is not None and cc.name else s.name
    return name if name and name != "none" else "unknown codec"


def _one_line(s: av.stream.Stream) -> str:
    """One line per stream, for the user: '#1 audio: aac, 48000 Hz, mono (fra, "Tone")'."""
    codec = _codec_name(s)
    parts = [_LABELS.get(codec, codec)]
    if s.type == "audio":
        parts += [f"{s.rate} Hz", s.layout.name]
    label = [x for x in (s.metadata.get("language"), s.metadata.get("title") or s.metadata.get("name")) if x]
    tail = f" ({', '.join(label)})" if label else ""
    return f"#{s.index} {s.type}: {', '.join(parts)}{tail}"


def _kinds(streams: av.container.streams.StreamContainer) -> str:
    return ", ".join(sorted({s.type for s in streams}))
