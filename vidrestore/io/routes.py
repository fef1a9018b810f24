"""How the input's other streams (audio, subtitles, data, attachments) reach the output.

Each stream gets a route when the sink is built: a packet copy when the output's muxer takes the stream as it
is, else an audio re-encode or a text subtitle conversion, else nothing (with a notice). Routes work on the
packets the source demuxed and the sink hands them: a route that decodes owns its decoder, made from the
stream's parameters, so nothing here reads the input file.
"""

from __future__ import annotations

import contextlib
import io
from fractions import Fraction

import av
from av.audio.resampler import AudioResampler
from av.subtitles.subtitle import SubtitleSet

from vidrestore.io.source import DVD_NAV, StreamTemplate

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


class Route:
    """Where the packets of one input stream go."""

    stream: av.stream.Stream  # the output stream

    def feed(self, packet: av.Packet) -> list[av.Packet]:
        raise NotImplementedError

    def flush(self) -> list[av.Packet]:
        return []


def open_route(
    template: StreamTemplate,
    out: av.container.OutputContainer,
    muxer: str,
    src_muxer: str,
    notices: list[str],
) -> Route | None:
    """Copy the stream when the muxer takes it; else re-encode audio, convert text subtitles, or drop it.
    Anything but a plain copy adds a line to ``notices``."""
    what = f"{template.type} stream #{template.index} ({template.label})"
    route: Route | None = None
    if template.codec == DVD_NAV:  # a muxer may take them (MPEG-TS, as bin_data): still stale
        notices.append(
            f"{what}: dropped (they point into the source DVD's sectors, meaningless in a new file)"
        )
        return None
    if _muxer_accepts(muxer, template.stream):
        route = _Copy(out.add_stream_from_template(template.stream))
    elif template.type == "audio" and (target := _audio_codec_for(muxer, out)):
        notices.append(f"{what} cannot be copied into {muxer}: re-encoded as {target}")
        route = _AudioTranscoder(out, template.stream, target)
    elif template.text_sub and (target := _subtitle_codec_for(muxer, out)):
        notices.append(f"{what} cannot be copied into {muxer}: converted to {target}")
        route = _SubtitleConverter(out, template.stream, target)
    else:
        notices.append(f"{what} cannot be stored in {muxer}: dropped")
        return None
    route.stream.metadata.update(carried_tags(template.metadata, muxer=src_muxer))
    route.stream.disposition = template.disposition
    return route


def carried_tags(tags: dict[str, str], *, muxer: str | None = None) -> dict[str, str]:
    """Tags worth carrying over: not the ones that describe the old file's muxer or statistics. ``muxer`` is
    the input's, whose own spelling of a track title is translated."""
    out = {
        k: v
        for k, v in tags.items()
        if k.lower().split("-")[0] not in _STALE_TAGS and not v.startswith("Lavf")  # "DURATION-eng" too
    }
    if muxer is not None and muxer.startswith("mov") and "name" in out and "title" not in out:
        out["title"] = out.pop("name")  # QuickTime reads its track title as "name" but writes it from "title"
    return out


class _Copy(Route):
    def __init__(self, stream: av.stream.Stream) -> None:
        self.stream = stream

    def feed(self, packet: av.Packet) -> list[av.Packet]:
        packet.stream = self.stream
        return [packet]


def _decoder(template: av.stream.Stream) -> av.CodecContext:
    """A decoder of the route's own, from the input stream's parameters: the input's decoder belongs to the
    thread that demuxes."""
    src = template.codec_context
    dec = av.CodecContext.create(src.codec.name, "r")
    if src.extradata:
        dec.extradata = src.extradata
    dec.pkt_timebase = template.time_base
    if isinstance(dec, av.AudioCodecContext):
        dec.sample_rate, dec.layout, dec.format = src.sample_rate, src.layout, src.format
    return dec


class _AudioTranscoder(Route):
    """Decode, resample to what the encoder takes, re-encode; timestamps follow the first decoded sample."""

    def __init__(self, out: av.container.OutputContainer, src: av.AudioStream, codec: str) -> None:
        self.dec = _decoder(src)
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
        return [p for frame in self.dec.decode(packet) for p in self._encode(frame)]

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
        packets = [p for frame in self.dec.decode(None) for p in self._encode(frame)]
        return packets + self._encode(None) + self.stream.encode(None)


class _SubtitleConverter(Route):
    """Text subtitles re-encoded for the output container (e.g. SubRip in Matroska → mov_text in MP4)."""

    def __init__(self, out: av.container.OutputContainer, src: av.stream.Stream, codec: str) -> None:
        self.dec = _decoder(src)
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
