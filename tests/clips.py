"""Tiny synthetic test clips written with PyAV, and the ground truth needed to check what comes back out.

A real face (scikit-image's ``astronaut``) moves on a known path over a plain background, so the video tests
exercise detection-sized content at a fraction of a second of encode time; a chord of three tones gives an
audio track whose exact sample count is known and whose phase tells the time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from functools import cache
from pathlib import Path

import av
import av.filter
import cv2
import numpy as np
from av.subtitles.subtitle import SubtitleSet
from av.video.reformatter import ColorRange, Colorspace
from skimage import data

BACKGROUND = (60, 110, 160)  # plain RGB background: pixels outside the face path never change
AUDIO_RATE = 48000
# Irregular frame durations in milliseconds, cycled, for the variable-frame-rate clip.
VFR_STEPS_MS = (33, 50, 17, 83, 42)

# Matrix name -> (swscale colorspace used to convert, AVColorSpace tag, primaries tag, transfer tag).
_MATRICES = {
    "bt601": (Colorspace.ITU601, 6, 6, 6),  # smpte170m everywhere
    "bt709": (Colorspace.ITU709, 1, 1, 1),
    "bt2020": (Colorspace.BT2020, 9, 9, 14),  # bt2020nc, bt2020, bt2020-10
}
# The smallest ASS header FFmpeg's text subtitle encoders accept.
ASS_HEADER = (
    b"[Script Info]\nScriptType: v4.00+\nPlayResX: 384\nPlayResY: 288\n\n[V4+ Styles]\n"
    b"Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, BackColour, Bold, "
    b"Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, BorderStyle, Outline, Shadow, "
    b"Alignment, MarginL, MarginR, MarginV, Encoding\n"
    b"Style: Default,Arial,16,&Hffffff,&Hffffff,&H0,&H0,0,0,0,0,100,100,0,0,1,1,0,2,10,10,10,0\n\n"
    b"[Events]\nFormat: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text\n"
)
_DEFAULT_AUDIO = {
    ".mp4": "aac",
    ".mov": "aac",
    ".m4v": "aac",
    ".mkv": "aac",
    ".webm": "libopus",
    ".avi": "pcm_s16le",
}
_SUBTITLE_CODECS = {".mkv": "subrip", ".mp4": "mov_text", ".mov": "mov_text", ".webm": "webvtt"}


@dataclass(frozen=True)
class ClipSpec:
    """What was written, frame by frame: the truth a decoded or re-encoded clip is compared with."""

    path: Path
    codec: str
    width: int
    height: int
    pix_fmt: str
    time_base: Fraction  # of the pts below (the encoder's; a muxer may store another one)
    pts: list[int]
    fps: Fraction  # nominal rate (the average for a VFR clip)
    boxes: list[tuple[int, int, int, int]]  # face (x, y, w, h) per frame; empty when face=False
    audio_codec: str | None
    audio_samples: int  # samples per channel written
    audio_rate: int
    rotate: int
    subtitles: list[tuple[float, float, str]] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return len(self.pts)

    @property
    def times(self) -> list[float]:
        return [float(p * self.time_base) for p in self.pts]

    @property
    def duration(self) -> float:
        return (
            self.audio_samples / self.audio_rate if self.audio_codec else self.times[-1] + float(1 / self.fps)
        )


@cache
def face_patch() -> np.ndarray:
    """The astronaut's head and shoulders, a square RGB crop around her face."""
    return np.ascontiguousarray(data.astronaut()[20:220, 110:310])


def render(
    width: int,
    height: int,
    box: tuple[int, int, int, int] | None,
    background: tuple[int, int, int] = BACKGROUND,
) -> np.ndarray:
    """One RGB frame: the plain background with the face scaled into ``box``."""
    img = np.empty((height, width, 3), np.uint8)
    img[:] = background
    if box is not None:
        x, y, w, h = box
        img[y : y + h, x : x + w] = cv2.resize(face_patch(), (w, h), interpolation=cv2.INTER_AREA)
    return img


def face_path(width: int, height: int, n: int) -> list[tuple[int, int, int, int]]:
    """Left to right across the frame with a gentle vertical bob: known box per frame."""
    side = int(min(width, height) * 0.6)
    span_x, span_y = width - side, max(0, (height - side) // 2)
    boxes = []
    for i in range(n):
        t = i / max(1, n - 1)
        x = round(span_x * t)
        y = span_y + round(span_y * 0.5 * math.sin(2 * math.pi * t))
        boxes.append((x, y, side, side))
    return boxes


def _frame_pts(seconds: float, fps: Fraction, vfr: bool) -> tuple[list[int], Fraction]:
    if not vfr:
        n = max(1, round(seconds * fps))
        return list(range(n)), 1 / fps
    pts, t, i = [], 0, 0
    while t < seconds * 1000:
        pts.append(t)
        t += VFR_STEPS_MS[i % len(VFR_STEPS_MS)]
        i += 1
    return pts, Fraction(1, 1000)


def make_clip(
    path: Path,
    *,
    codec: str = "libx264",
    size: tuple[int, int] = (160, 120),
    seconds: float = 1.0,
    fps: Fraction | int = 24,
    pix_fmt: str = "yuv420p",
    vfr: bool = False,
    audio: bool | str = True,
    face: bool = True,
    rotate: int = 0,
    matrix: str | None = "bt709",
    full_range: bool = False,
    subtitles: bool = False,
    gop: int = 12,
    sar: Fraction | None = None,
    background: tuple[int, int, int] = BACKGROUND,
    options: dict[str, str] | None = None,
) -> ClipSpec:
    """Write a clip and return its ground truth.

    ``audio``: True picks a codec that suits the container (aac; opus for webm; pcm for avi), a string names
    one, False writes none. ``matrix`` None leaves the colour tags unspecified (players then guess by size).
    ``rotate`` writes a display matrix (counter-clockwise degrees, as PyAV reads it back).
    """
    fps = Fraction(fps)
    width, height = size
    pts, time_base = _frame_pts(seconds, fps, vfr)
    boxes = face_path(width, height, len(pts)) if face else []
    suffix = path.suffix.lower()
    audio_codec = _DEFAULT_AUDIO.get(suffix, "aac") if audio is True else (audio or None)
    deep = av.VideoFormat(pix_fmt).components[0].bits > 8

    with av.open(str(path), "w") as out:
        out.metadata["title"] = "vidrestore test clip"
        out.metadata["comment"] = "made by tests/clips.py"
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
        vs.codec_context.time_base = time_base
        vs.codec_context.gop_size = gop
        vs.metadata["language"] = "eng"
        vs.metadata["title"] = "Picture"
        cc = vs.codec_context
        if matrix is not None:
            _, cc.colorspace, cc.color_primaries, cc.color_trc = _MATRICES[matrix]
        rgb_out = av.VideoFormat(pix_fmt).is_rgb
        if not rgb_out:  # RGB is full range by definition: FFmpeg rejects a range tag on it
            cc.color_range = ColorRange.JPEG if full_range else ColorRange.MPEG
        if options:
            cc.options = dict(options)
        if sar is not None:
            cc.sample_aspect_ratio = sar
        if rotate:
            vs.set_display_rotation(rotate)
        aus = None
        if audio_codec:
            aus = out.add_stream(audio_codec, rate=AUDIO_RATE)
            aus.layout = "mono"
            aus.metadata["language"] = "fra"
            aus.metadata["title"] = "Tone"
        sub_list: list[tuple[float, float, str]] = []
        sst = None
        if subtitles:
            sst = out.add_stream(_SUBTITLE_CODECS[suffix])
            sst.codec_context.subtitle_header = ASS_HEADER
            sst.metadata["language"] = "deu"
            sub_list = [(0.1, 0.4, "Hallo"), (0.5, min(seconds, 0.9), "Welt")]

        sws_matrix = _MATRICES[matrix or ("bt601" if height < 720 else "bt709")][0]
        samples = round(seconds * AUDIO_RATE)
        tone = _Tone(out, aus, samples) if aus is not None else None
        pending_subs = list(sub_list)
        for i, p in enumerate(pts):
            rgb = render(width, height, boxes[i] if face else None, background)
            frame = av.VideoFrame.from_ndarray(
                rgb.astype(np.uint16) * 257 if deep else rgb, format="rgb48le" if deep else "rgb24"
            )
            frame = frame.reformat(
                format=pix_fmt,
                dst_colorspace=sws_matrix,
                dst_color_range=ColorRange.JPEG if full_range or rgb_out else ColorRange.MPEG,
            )
            frame.pts, frame.time_base = p, time_base
            out.mux(vs.encode(frame))
            # Interleave the other streams up to the next frame's time, as a real recording would.
            t_next = float(pts[i + 1] * time_base) if i + 1 < len(pts) else math.inf
            if tone is not None:
                tone.write_until(t_next)
            while sst is not None and pending_subs and pending_subs[0][0] < t_next:
                _write_subtitle(out, sst, *pending_subs.pop(0))
        out.mux(vs.encode(None))
        if tone is not None:
            tone.finish()

    return ClipSpec(
        path=path,
        codec=codec,
        width=width,
        height=height,
        pix_fmt=pix_fmt,
        time_base=time_base,
        pts=pts,
        fps=fps,
        boxes=boxes,
        audio_codec=audio_codec,
        audio_samples=samples if audio_codec else 0,
        audio_rate=AUDIO_RATE,
        rotate=rotate,
        subtitles=sub_list,
    )


def tone(t: np.ndarray) -> np.ndarray:
    """The audio track at times ``t`` (s): three tones whose sum repeats only once a second, so its phase
    tells the time to the sample (checks A/V sync)."""
    return 0.1 * sum(np.sin(2 * np.pi * hz * t) for hz in (301, 467, 1129))


class _Tone:
    """The tone, ``samples`` long, encoded in frames of the encoder's size (1024 for AAC)."""

    def __init__(self, out: av.container.OutputContainer, stream: av.AudioStream, samples: int) -> None:
        self.out, self.stream, self.samples, self.done = out, stream, samples, 0
        self.tone = tone(np.arange(samples) / AUDIO_RATE).astype(np.float32)
        self.step = stream.codec_context.frame_size or 1024

    def write_until(self, seconds: float) -> None:
        while self.done < min(self.samples, seconds * AUDIO_RATE):
            chunk = self.tone[self.done : self.done + self.step]
            fmt = self.stream.codec_context.format.name
            arr = (chunk * 32767).astype(np.int16)[None] if fmt.startswith("s16") else chunk[None]
            frame = av.AudioFrame.from_ndarray(arr, format=fmt, layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = AUDIO_RATE, self.done, Fraction(1, AUDIO_RATE)
            self.out.mux(self.stream.encode(frame))
            self.done += len(chunk)

    def finish(self) -> None:
        self.write_until(math.inf)
        self.out.mux(self.stream.encode(None))


def _write_subtitle(
    out: av.container.OutputContainer, stream: av.stream.Stream, start: float, end: float, text: str
) -> None:
    sub = SubtitleSet.create(
        text=f"0,0,Default,,0,0,0,,{text}".encode(), start=0, end=round((end - start) * 1000)
    )
    pkt = stream.codec_context.encode_subtitle(sub)
    pkt.pts = pkt.dts = round(start / stream.time_base)
    pkt.duration = round((end - start) / stream.time_base)
    pkt.stream = stream
    out.mux(pkt)


def make_interlaced_clip(
    path: Path, *, order: str = "bff", size: tuple[int, int] = (176, 120), frames: int = 8
) -> ClipSpec:
    """An interlaced MPEG-2 clip with AC-3 audio, as on a DVD: each frame weaves two moments 1/59.94 s
    apart (the field displayed first, then the other), so a moving face is combed; flagged in ``order``
    ("tff" or "bff") on the stream and on every frame, with a 4:3 picture's sample aspect ratio."""
    fps = Fraction(30000, 1001)
    width, height = size
    boxes = face_path(width, height, 2 * frames)
    first_rows = 0 if order == "tff" else 1
    with av.open(str(path), "w") as out:
        vs = out.add_stream("mpeg2video", rate=fps)
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        cc = vs.codec_context
        cc.time_base, cc.gop_size = 1 / fps, 6
        cc.flags |= av.codec.context.Flags.interlaced_dct | av.codec.context.Flags.interlaced_me
        cc.field_order = 2 if order == "tff" else 3
        cc.sample_aspect_ratio = Fraction(4, 3) / Fraction(width, height)
        _, cc.colorspace, cc.color_primaries, cc.color_trc = _MATRICES["bt601"]
        cc.color_range = ColorRange.MPEG
        aus = out.add_stream("ac3", rate=AUDIO_RATE)
        aus.layout = "mono"
        samples = round(frames / fps * AUDIO_RATE)
        audio = _Tone(out, aus, samples)
        mark = None
        for i in range(frames):
            rgb = render(width, height, boxes[2 * i])
            rgb[1 - first_rows :: 2] = render(width, height, boxes[2 * i + 1])[1 - first_rows :: 2]
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format="yuv420p", dst_colorspace=Colorspace.ITU601, dst_color_range=ColorRange.MPEG
            )
            frame.pts, frame.time_base = i, 1 / fps
            if mark is None:  # the encoder takes each picture's field order from its flags
                mark = av.filter.Graph()
                src, setfield, sink = (
                    mark.add_buffer(template=frame),
                    mark.add("setfield", order),
                    mark.add("buffersink"),
                )
                src.link_to(setfield)
                setfield.link_to(sink)
                mark.configure()
            mark.vpush(frame)
            out.mux(vs.encode(mark.vpull()))
            audio.write_until(float((i + 1) / fps))
        out.mux(vs.encode(None))
        audio.finish()
    return ClipSpec(
        path=path,
        codec="mpeg2video",
        width=width,
        height=height,
        pix_fmt="yuv420p",
        time_base=1 / fps,
        pts=list(range(frames)),
        fps=fps,
        boxes=boxes[::2],
        audio_codec="ac3",
        audio_samples=samples,
        audio_rate=AUDIO_RATE,
        rotate=0,
    )
