"""The video I/O layer: streaming decode, exact pass-through, masked composition, every stream and tag kept,
and one clear line for every bad input. Tiny clips from ``clips.py``; CPU only, offline."""

from __future__ import annotations

import errno
import os
import queue
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import clips
import numpy as np
import pytest

from vidrestore.errors import VidrestoreError
from vidrestore.io import SourceFrame, VideoSink, VideoSource, check_output_path
from vidrestore.options import EncodeOptions

AAC_FRAME = 1024
PAINT = (250, 20, 200)

Restorer = Callable[[SourceFrame], tuple[np.ndarray, np.ndarray] | None]


@dataclass
class Probe:
    """What a file holds, decoded independently of the code under test."""

    format: str
    time_base: Fraction
    avg_rate: Fraction | None
    pts: list[int]
    times: list[float]
    pix_fmt: str
    colour: tuple[int, int, int, int]  # primaries, transfer, matrix, range
    rotation: int
    planes: list[list[np.ndarray]]
    audio_samples: int
    audio_start: float | None
    audio_codec: str | None
    metadata: dict[str, str]
    stream_metadata: list[dict[str, str]]
    subtitles: list[tuple[float, str]] = field(default_factory=list)


def probe(path: Path, *, planes: bool = False) -> Probe:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = list(c.decode(v))
        first = frames[0]
        result = Probe(
            format=c.format.name,
            time_base=Fraction(v.time_base),
            avg_rate=Fraction(v.average_rate) if v.average_rate else None,
            pts=[f.pts for f in frames],
            times=[float(f.pts * v.time_base) for f in frames],
            pix_fmt=first.format.name,
            colour=(first.color_primaries, first.color_trc, first.colorspace, first.color_range),
            rotation=first.rotation,
            planes=[[_plane(p, f) for p in f.planes] for f in frames] if planes else [],
            audio_samples=0,
            audio_start=None,
            audio_codec=None,
            metadata=dict(c.metadata),
            stream_metadata=[dict(s.metadata) for s in c.streams],
        )
    with av.open(str(path)) as c:
        if c.streams.audio:
            a = c.streams.audio[0]
            result.audio_codec = a.codec_context.name
            for frame in c.decode(a):
                if result.audio_start is None:
                    result.audio_start = float(frame.pts * frame.time_base)
                result.audio_samples += frame.samples
    with av.open(str(path)) as c:
        if c.streams.subtitles:
            s = c.streams.subtitles[0]
            for packet in c.demux(s):
                if packet.size and packet.pts is not None:
                    for sub in s.decode(packet):
                        text = getattr(sub, "ass", b"").decode().split(",")[-1]
                        if text:
                            result.subtitles.append((float(packet.pts * packet.time_base), text))
    return result


def _plane(plane: av.video.plane.VideoPlane, frame: av.VideoFrame) -> np.ndarray:
    dtype = np.dtype("<u2") if frame.format.components[0].bits > 8 else np.dtype(np.uint8)
    return np.frombuffer(plane, dtype).reshape(plane.height, -1)[:, : plane.width].copy()


def transcode(
    src: Path,
    dst: Path,
    settings: EncodeOptions | None = None,
    restorer: Restorer | None = None,
    **source_kw: object,
) -> tuple[VideoSource, VideoSink, list[SourceFrame]]:
    """Run the source and sink as the pipeline does; returns them and the frames seen (without pixels)."""
    seen = []
    with (
        VideoSource(src, **source_kw) as source,
        VideoSink(dst, source.description, settings or EncodeOptions()) as sink,
    ):
        for frame in source.frames():
            result = restorer(frame) if restorer else None
            if result is None:
                sink.write(frame)
            else:
                sink.write(frame, *result)
            seen.append(SourceFrame(frame.index, frame.pts, frame.time, frame.rgb[:0], frame.frame, []))
    return source, sink, seen


def paint_square(frame: SourceFrame) -> tuple[np.ndarray, np.ndarray]:
    """A fake restorer: paints an odd-placed square on every frame and reports exactly those pixels."""
    h, w = frame.rgb.shape[:2]
    mask = np.zeros((h, w), bool)
    mask[h // 4 + 1 : h // 2 + 2, w // 3 + 1 : w // 3 + w // 4] = True
    rgb = frame.rgb.copy()
    scale = 257 if rgb.dtype == np.uint16 else 1
    rgb[mask] = np.array(PAINT) * scale
    return rgb, mask


def one_line(exc: pytest.ExceptionInfo[VidrestoreError]) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg, msg
    return msg


def chroma_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A chroma sample is replaced when any luma pixel it covers is masked."""
    ph, pw = shape
    sy, sx = -(-mask.shape[0] // ph), -(-mask.shape[1] // pw)
    padded = np.zeros((ph * sy, pw * sx), bool)
    padded[: mask.shape[0], : mask.shape[1]] = mask
    return padded.reshape(ph, sy, pw, sx).any(axis=(1, 3))


# -- clips, made once per module -------------------------------------------------------------------


@pytest.fixture(scope="module")
def clipdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module")
def mp4(clipdir: Path) -> clips.ClipSpec:
    return clips.make_clip(clipdir / "x264.mp4")


@pytest.fixture(scope="module")
def ffv1(clipdir: Path) -> clips.ClipSpec:
    return clips.make_clip(clipdir / "ffv1.mkv", codec="ffv1", subtitles=True)


@pytest.fixture(scope="module")
def ten_bit(clipdir: Path) -> clips.ClipSpec:
    return clips.make_clip(clipdir / "ten.mp4", pix_fmt="yuv420p10le", seconds=0.5)


@pytest.fixture(scope="module")
def vfr(clipdir: Path) -> clips.ClipSpec:
    return clips.make_clip(clipdir / "vfr.mkv", vfr=True)


@pytest.fixture(scope="module")
def rotated(clipdir: Path) -> clips.ClipSpec:
    return clips.make_clip(clipdir / "rot.mp4", rotate=90, seconds=0.5)


# -- reading ---------------------------------------------------------------------------------------


def test_source_info_and_frames_match_the_clip(mp4: clips.ClipSpec) -> None:
    with VideoSource(mp4.path) as src:
        info = src.info
        frames = [
            (f.index, f.time, f.rgb.shape, f.rgb.dtype, f.rgb[2, 2].tolist(), len(f.packets))
            for f in src.frames()
        ]
    assert (info.width, info.height, info.pix_fmt, info.bit_depth) == (160, 120, "yuv420p", 8)
    assert info.codec == "h264" and "mp4" in info.container
    assert info.frame_rate == 24 and info.frames == 24 and info.rotation == 0
    assert info.duration == pytest.approx(1.0, abs=0.05)
    assert (
        len(info.other_streams) == 1 and "audio" in info.other_streams[0] and "aac" in info.other_streams[0]
    )
    assert [f[0] for f in frames] == list(range(mp4.frames))
    assert max(f[5] for f in frames) <= 3  # streaming: only the packets due before each frame travel with it
    assert [f[1] for f in frames] == pytest.approx(mp4.times)
    assert all(f[2] == (120, 160, 3) and f[3] == np.uint8 for f in frames)
    # The corner is background in every frame: the real matrix and range give it back within 2 codes.
    assert all(np.abs(np.subtract(f[4], clips.BACKGROUND)).max() <= 2 for f in frames)


def test_frames_can_be_read_in_a_thread(mp4: clips.ClipSpec, tmp_path: Path) -> None:
    """The pipeline decodes in a thread and encodes in another, with a short queue between them."""
    dst = tmp_path / "threaded.mp4"
    frames: queue.Queue[SourceFrame | None] = queue.Queue(maxsize=2)
    with VideoSource(mp4.path) as src, VideoSink(dst, src.description, EncodeOptions()) as sink:

        def read() -> None:
            for frame in src.frames():
                frames.put(frame)
            frames.put(None)

        reader = threading.Thread(target=read)
        reader.start()
        while (frame := frames.get()) is not None:
            sink.write(frame, *paint_square(frame))
        reader.join()
    b = probe(dst)
    assert len(b.pts) == mp4.frames and b.audio_samples == probe(mp4.path).audio_samples


@pytest.mark.parametrize("suffix", [".mkv", ".webm", ".mp4"])  # copy; audio re-encoded; subtitles converted
def test_the_sink_never_reads_the_input(ffv1: clips.ClipSpec, tmp_path: Path, suffix: str) -> None:
    """One thread demuxes: the other streams' packets travel with the frames (the tail with the last one) and
    the sink decodes what it re-encodes itself, so it can finish after the source is closed."""
    dst = tmp_path / f"late{suffix}"
    with VideoSource(ffv1.path) as src:
        sink = VideoSink(dst, src.description, EncodeOptions())
        frames = list(src.frames())
    assert not any(f.tail for f in frames[:-1])
    assert frames[-1].tail and {p.stream_index for p in frames[-1].tail} == {1}  # the audio after the video
    for frame in frames:
        sink.write(frame)
    sink.commit()
    a, b = probe(ffv1.path), probe(dst)
    assert len(b.pts) == ffv1.frames
    assert abs(b.audio_samples - a.audio_samples) <= (AAC_FRAME if suffix == ".mkv" else 2 * AAC_FRAME)
    assert [text for _, text in b.subtitles] == ["Hallo", "Welt"]


def test_frames_is_single_pass(mp4: clips.ClipSpec) -> None:
    with VideoSource(mp4.path, max_frames=2) as src:
        assert len(list(src.frames())) == 2
        with pytest.raises(RuntimeError):
            list(src.frames())


@pytest.mark.parametrize(
    ("matrix", "full_range", "pix_fmt", "size"),
    [
        ("bt601", False, "yuv420p", (64, 48)),
        ("bt709", False, "yuv420p", (64, 48)),
        ("bt709", True, "yuv444p", (64, 48)),
        ("bt2020", False, "yuv420p10le", (64, 48)),
        ("bt2020", True, "yuv422p10le", (64, 48)),
        (None, False, "yuv420p", (64, 48)),  # untagged SD: BT.601, as FFmpeg and players assume
        (None, False, "yuv420p", (1280, 720)),  # untagged HD: BT.709
    ],
)
def test_pure_colour_survives_the_round_trip(
    tmp_path: Path, matrix: str | None, full_range: bool, pix_fmt: str, size: tuple[int, int]
) -> None:
    """RGB -> YUV (clip) -> RGB (source) and RGB -> YUV (sink) -> RGB: each within 2 code values."""
    colour = (200, 30, 40)  # saturated: a wrong matrix or range moves it by far more than 2 codes
    options = {
        "matrix": matrix,
        "full_range": full_range,
        "face": False,
        "audio": False,
        "background": colour,
    }
    spec = clips.make_clip(
        tmp_path / "c.mkv", codec="ffv1", pix_fmt=pix_fmt, size=size, seconds=0.05, **options
    )
    deep = "10" in pix_fmt

    def repaint(frame: SourceFrame) -> tuple[np.ndarray, np.ndarray]:
        value = frame.rgb[0, 0] / (257 if deep else 1)
        assert np.abs(value - colour).max() <= 2, value
        return frame.rgb.copy(), np.ones(frame.rgb.shape[:2], bool)

    transcode(spec.path, tmp_path / "out.mkv", EncodeOptions(codec="ffv1"), repaint)
    with VideoSource(tmp_path / "out.mkv") as out:
        for frame in out.frames():
            assert np.abs(frame.rgb.reshape(-1, 3) / (257 if deep else 1) - colour).max() <= 2
    got = probe(tmp_path / "out.mkv")
    assert got.pix_fmt == pix_fmt
    assert got.colour[3] == (2 if full_range else 1)


def test_rgb_source_into_yuv_output_is_tagged_with_the_matrix_used(tmp_path: Path) -> None:
    spec = clips.make_clip(
        tmp_path / "rgb.mkv", codec="ffv1", pix_fmt="bgr0", matrix=None, face=False, audio=False, seconds=0.1
    )
    _, sink, _ = transcode(spec.path, tmp_path / "yuv.mp4", restorer=paint_square)
    assert sink.pix_fmt == "yuv444p"
    assert probe(tmp_path / "yuv.mp4").colour[2:] == (6, 1)  # BT.601 (SD), limited range
    with VideoSource(tmp_path / "yuv.mp4") as out:
        assert np.abs(next(out.frames()).rgb[2, 2].astype(int) - clips.BACKGROUND).max() <= 2


# -- writing: fidelity -----------------------------------------------------------------------------


def test_passthrough_of_a_lossless_file_is_bit_exact(ffv1: clips.ClipSpec, tmp_path: Path) -> None:
    dst = tmp_path / "same.mkv"
    _, sink, _ = transcode(ffv1.path, dst, EncodeOptions(codec="ffv1"))
    assert sink.notices == [] and sink.pix_fmt == "yuv420p"
    a, b = probe(ffv1.path, planes=True), probe(dst, planes=True)
    assert b.pts == a.pts and b.time_base == a.time_base
    assert len(b.planes) == ffv1.frames
    for fa, fb in zip(a.planes, b.planes, strict=True):
        for pa, pb in zip(fa, fb, strict=True):
            np.testing.assert_array_equal(pa, pb)
    assert b.audio_samples == a.audio_samples and b.audio_start == a.audio_start
    assert b.subtitles == a.subtitles == [(0.1, "Hallo"), (0.5, "Welt")]


def test_masked_composition_leaves_every_other_sample_untouched(ffv1: clips.ClipSpec, tmp_path: Path) -> None:
    dst = tmp_path / "painted.mkv"
    transcode(ffv1.path, dst, EncodeOptions(codec="ffv1"), paint_square)
    a, b = probe(ffv1.path, planes=True), probe(dst, planes=True)
    mask = paint_square(SourceFrame(0, 0, 0.0, np.zeros((120, 160, 3), np.uint8), None, []))[1]  # type: ignore[arg-type]
    for fa, fb in zip(a.planes, b.planes, strict=True):
        for i, (pa, pb) in enumerate(zip(fa, fb, strict=True)):
            m = mask if i == 0 else chroma_mask(mask, pa.shape)
            np.testing.assert_array_equal(pa[~m], pb[~m])
            assert not np.array_equal(pa[m], pb[m])
    with VideoSource(dst) as out:
        rgb = next(out.frames()).rgb
    # Away from its edge (where subsampled chroma blends both sides), the square has the painted colour.
    inner = np.zeros_like(mask)
    inner[6:-6, 6:-6] = mask[:-12, :-12] & mask[12:, 12:]
    assert inner.sum() > 200 and np.abs(rgb[inner].astype(int) - PAINT).max() <= 2


def test_mp4_keeps_timing_audio_colour_and_metadata(mp4: clips.ClipSpec, tmp_path: Path) -> None:
    dst = tmp_path / "out.mp4"
    _, sink, seen = transcode(mp4.path, dst, restorer=lambda f: paint_square(f) if f.index % 3 == 0 else None)
    assert (sink.codec, sink.pix_fmt, sink.notices) == ("libx264", "yuv420p", [])
    a, b = probe(mp4.path), probe(dst)
    assert b.pts == a.pts and b.time_base == a.time_base and b.avg_rate == a.avg_rate == 24
    assert b.times == pytest.approx(mp4.times)
    assert b.audio_codec == "aac" and b.audio_samples == a.audio_samples
    assert abs(b.audio_samples - mp4.audio_samples) <= AAC_FRAME
    assert b.audio_start == a.audio_start
    assert b.colour == a.colour == (1, 1, 1, 1)  # bt709 primaries, transfer and matrix; limited range
    assert b.metadata["title"] == "vidrestore test clip" and b.metadata["comment"] == "made by tests/clips.py"
    assert b.stream_metadata[0]["language"] == "eng" and b.stream_metadata[0]["name"] == "Picture"
    assert b.stream_metadata[1]["language"] == "fra" and b.stream_metadata[1]["name"] == "Tone"
    assert [f.pts for f in seen] == a.pts


def test_metadata_crosses_containers(mp4: clips.ClipSpec, tmp_path: Path) -> None:
    dst = tmp_path / "out.mkv"
    transcode(mp4.path, dst)
    b = probe(dst)
    assert b.metadata["title"] == "vidrestore test clip"
    assert b.stream_metadata[0]["title"] == "Picture" and b.stream_metadata[1]["title"] == "Tone"
    assert b.stream_metadata[1]["language"] == "fra"
    assert b.times == pytest.approx(mp4.times, abs=1e-3)


def test_variable_frame_rate_stays_variable(vfr: clips.ClipSpec, tmp_path: Path) -> None:
    dst = tmp_path / "vfr.mp4"
    transcode(vfr.path, dst, restorer=paint_square)
    b = probe(dst)
    assert b.times == pytest.approx(vfr.times, abs=1e-3)
    steps = {round(d * 1000) for d in np.diff(b.times)}
    assert steps == set(clips.VFR_STEPS_MS)


def test_ten_bit_stays_ten_bit(ten_bit: clips.ClipSpec, tmp_path: Path) -> None:
    dst = tmp_path / "ten.mkv"
    with VideoSource(ten_bit.path) as src:
        assert src.info.bit_depth == 10 and src.info.pix_fmt == "yuv420p10le"
    _, sink, _ = transcode(ten_bit.path, dst, restorer=paint_square)
    assert sink.pix_fmt == "yuv420p10le"
    assert probe(dst).pix_fmt == "yuv420p10le"
    with VideoSource(dst) as out:
        frame = next(out.frames())
    assert frame.rgb.dtype == np.uint16
    assert np.abs(frame.rgb[2, 2] / 257 - clips.BACKGROUND).max() <= 2


@pytest.mark.parametrize(
    ("codec", "suffix", "pix_fmt"),
    [
        ("libx265", ".mkv", "yuv420p10le"),
        ("libsvtav1", ".mkv", "yuv420p10le"),
        ("prores_ks", ".mov", "yuv422p10le"),
    ],
)
def test_other_encoders_keep_ten_bits(
    ten_bit: clips.ClipSpec, tmp_path: Path, codec: str, suffix: str, pix_fmt: str
) -> None:
    dst = tmp_path / f"out{suffix}"
    _, sink, _ = transcode(ten_bit.path, dst, EncodeOptions(codec=codec), max_frames=3)
    assert sink.pix_fmt == pix_fmt
    b = probe(dst)
    assert b.pix_fmt == pix_fmt and len(b.pts) == 3


def test_eight_bit_into_prores_says_it_becomes_ten_bit(mp4: clips.ClipSpec, tmp_path: Path) -> None:
    _, sink, _ = transcode(mp4.path, tmp_path / "p.mov", EncodeOptions(codec="prores_ks"), max_frames=2)
    assert sink.pix_fmt == "yuv422p10le"
    assert any("8-bit" in n and "yuv422p10le" in n for n in sink.notices)


def test_rotation_is_kept(rotated: clips.ClipSpec, tmp_path: Path) -> None:
    dst = tmp_path / "rot.mp4"
    with VideoSource(rotated.path) as src:
        assert src.info.rotation == 90
    transcode(rotated.path, dst, restorer=paint_square)
    assert probe(dst).rotation == 90
    with av.open(str(dst)) as c:
        matrix = c.streams.video[0].codec_context.coded_side_data["display_matrix"]
    with av.open(str(rotated.path)) as c:
        assert matrix == c.streams.video[0].codec_context.coded_side_data["display_matrix"]
    assert struct.unpack("=9i", matrix)[8] == 1 << 30


def test_crf_preset_and_options_reach_the_encoder(mp4: clips.ClipSpec, tmp_path: Path) -> None:
    settings = EncodeOptions(crf=30, preset="ultrafast", encoder_opts={"g": "5", "bf": "0"})
    _, sink, _ = transcode(mp4.path, tmp_path / "o.mp4", settings)
    with av.open(str(tmp_path / "o.mp4")) as c:
        keys = [p.is_keyframe for p in c.demux(c.streams.video[0]) if p.size]
    assert sum(keys) >= 4  # a keyframe every 5 frames


# -- other streams ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dvd(clipdir: Path) -> clips.ClipSpec:
    """MPEG-2 in MPEG-PS as DVDs and broadcast captures have it: 29.97 fps, a 10:11 sample aspect ratio (4:3
    on 176x120), MP2 audio, and a first timestamp well after zero."""
    return clips.make_clip(
        clipdir / "dvd.mpg",
        codec="mpeg2video",
        size=(176, 120),
        fps=Fraction(30000, 1001),
        audio="mp2",
        sar=Fraction(10, 11),
    )


def _avi_video(path: Path) -> tuple[Fraction, int, list[int], Fraction]:
    """An AVI's header rate and frame count, its frames' pts and its sample aspect ratio."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        header = (Fraction(v.average_rate), v.frames, Fraction(v.sample_aspect_ratio or 0))
        pts = [f.pts for f in c.decode(v)]
    return header[0], header[1], pts, header[2]


@pytest.mark.parametrize("codec", [None, "libx264", "mpeg4"])
def test_avi_has_its_frame_rate_header_and_every_frame_in_order_in_its_slot(
    mp4: clips.ClipSpec, dvd: clips.ClipSpec, tmp_path: Path, codec: str | None
) -> None:
    """AVI counts frames: its time base must be the frame rate's (a finer one claimed 600 fps with an empty
    frame in every unused tick), it has no pts (so no B-frames: libx264 came out of order), and it starts at
    its first frame (MPEG-PS timestamps start late; AAC priming starts early)."""
    for spec in (mp4, dvd):
        dst = tmp_path / f"{spec.path.stem}.avi"
        transcode(spec.path, dst, EncodeOptions(codec=codec))
        rate, count, pts, sar = _avi_video(dst)
        # FFmpeg's reader delays H.264 in AVI by one frame (it guesses one frame of reordering); the packets
        # were written from 0, and the frames come out in order.
        first = 1 if codec == "libx264" else 0
        assert (rate, count, pts) == (spec.fps, spec.frames, list(range(first, first + spec.frames)))
        assert probe(dst).audio_samples == pytest.approx(probe(spec.path).audio_samples, abs=1152)
        if codec is not None and spec is dvd:  # both store the sample aspect ratio in their bitstream
            assert sar == Fraction(10, 11)


def test_a_codec_that_cannot_store_the_aspect_ratio_says_so(dvd: clips.ClipSpec, tmp_path: Path) -> None:
    _, sink, _ = transcode(dvd.path, tmp_path / "out.avi")
    assert sink.codec == "ffv1"
    assert any("cannot store the sample aspect ratio 10:11" in n for n in sink.notices), sink.notices
    _, sink, _ = transcode(dvd.path, tmp_path / "out.mov", EncodeOptions(codec="prores_ks"))
    assert not any("aspect ratio" in n for n in sink.notices)
    assert _avi_video(tmp_path / "out.mov")[3] == Fraction(10, 11)


def test_avi_refuses_variable_frame_rate_in_one_line(vfr: clips.ClipSpec, tmp_path: Path) -> None:
    with pytest.raises(VidrestoreError) as exc:
        transcode(vfr.path, tmp_path / "out.avi")
    assert "the .avi container needs a constant frame rate" in one_line(exc)
    assert not list(tmp_path.iterdir())


def test_a_start_half_a_frame_off_zero_stays_on_the_grid(tmp_path: Path) -> None:
    """A PAL VOB starts at 0.54 s, 13.5 frames: its frames are on a grid that counts from the first one."""
    spec = clips.make_clip(tmp_path / "pal.mpg", codec="mpeg2video", fps=25, audio=False, seconds=0.5)
    first = probe(spec.path).times[0]
    assert (first * 25) % 1 == pytest.approx(0.5, abs=0.01)  # the muxer starts it half a frame off the grid
    transcode(spec.path, tmp_path / "out.vob")
    times = probe(tmp_path / "out.vob").times
    assert [t - times[0] for t in times] == pytest.approx([i / 25 for i in range(spec.frames)])


def test_mpeg4_part_2_takes_a_90_khz_source(dvd: clips.ClipSpec, tmp_path: Path) -> None:
    """MPEG-4 part 2 takes no time base denominator over 65535: it gets the frame rate's."""
    transcode(dvd.path, tmp_path / "out.mkv", EncodeOptions(codec="mpeg4"))
    assert len(probe(tmp_path / "out.mkv").pts) == dvd.frames


def test_audio_that_the_container_cannot_hold_is_reencoded(clipdir: Path, tmp_path: Path) -> None:
    webm = clips.make_clip(clipdir / "opus.webm", codec="libvpx-vp9", seconds=0.5)
    dst = tmp_path / "out.mov"
    _, sink, _ = transcode(webm.path, dst)
    assert sink.notices == ["audio stream #1 (opus) cannot be copied into mov: re-encoded as aac"]
    b = probe(dst)
    assert b.audio_codec == "aac" and abs(b.audio_samples - webm.audio_samples) <= AAC_FRAME
    assert b.times == pytest.approx(webm.times, abs=1e-3)


def test_subtitles_are_converted_or_dropped_with_a_notice(ffv1: clips.ClipSpec, tmp_path: Path) -> None:
    _, sink, _ = transcode(ffv1.path, tmp_path / "s.mp4", max_frames=24)
    assert sink.notices == ["subtitle stream #2 (srt) cannot be copied into mp4: converted to mov_text"]
    assert probe(tmp_path / "s.mp4").subtitles == [(0.1, "Hallo"), (0.5, "Welt")]
    _, sink, _ = transcode(ffv1.path, tmp_path / "s.avi")
    assert sink.notices == ["subtitle stream #2 (srt) cannot be stored in avi: dropped"]


def _dvd_vob(path: Path) -> Path:
    """A VOB as a DVD holds it: the "dvd" muxer opens each video unit with a navigation pack (PES 0xBF)."""
    with av.open(str(path), "w", format="dvd") as out:
        v = out.add_stream("mpeg2video", rate=25)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        v.codec_context.gop_size = 5
        for i in range(10):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 20 * i, np.uint8), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, 25)
            out.mux(v.encode(frame))
        out.mux(v.encode())
    assert path.read_bytes().count(b"\x00\x00\x01\xbf") >= 2  # private_stream_2 PES packets: PCI, DSI
    return path


@pytest.mark.parametrize("suffix", [".mp4", ".ts"])  # MPEG-TS would take a copy (as bin_data): still dropped
def test_dvd_navigation_packets_are_named_and_dropped(tmp_path: Path, suffix: str) -> None:
    vob = _dvd_vob(tmp_path / "VTS_01_1.VOB")
    source, sink, _ = transcode(vob, tmp_path / f"out{suffix}")
    assert source.description.info.other_streams == ["#0 data: DVD navigation packets"]
    assert sink.notices == [
        "data stream #0 (DVD navigation packets): dropped (they point into the source DVD's sectors, "
        "meaningless in a new file)"
    ]
    with av.open(str(tmp_path / f"out{suffix}")) as c:
        assert [s.type for s in c.streams] == ["video"]


# -- trimming --------------------------------------------------------------------------------------


def _tone_lag(path: Path, offset: float) -> int:
    """Samples between the decoded tone and the ideal one at ``offset`` s into the source: A/V sync.

    The tone repeats once a second, so within the ±10 ms searched the best match is unique."""
    with av.open(str(path)) as c:
        frames = list(c.decode(c.streams.audio[0]))
    frame = frames[3]  # past the decoder's start-up overlap
    got = frame.to_ndarray()[0]
    t0 = float(frame.pts * frame.time_base) + offset
    lags = range(-480, 481)  # ±10 ms
    n = np.arange(len(got))
    errors = [np.abs(got - clips.tone(t0 + (n + lag) / clips.AUDIO_RATE)).mean() for lag in lags]
    best = int(np.argmin(errors))
    assert errors[best] < 0.02  # a real match, not the least bad of misfits
    return lags[best]


def test_start_and_end_trim_and_keep_audio_aligned(mp4: clips.ClipSpec, tmp_path: Path) -> None:
    dst = tmp_path / "cut.mp4"
    src, _, seen = transcode(mp4.path, dst, start=0.5, end=0.9)
    expected = [t for t in mp4.times if 0.5 - 1e-6 <= t < 0.9 - 1e-6]
    assert [f.time for f in seen] == pytest.approx([t - expected[0] for t in expected])
    b = probe(dst)
    assert b.times == pytest.approx([t - expected[0] for t in expected])
    # The first frame out is the source's frame at 0.5 s: the face is where the clip put it then.
    with VideoSource(dst) as out, VideoSource(mp4.path, start=0.5) as ref:
        diff = np.abs(next(out.frames()).rgb.astype(int) - next(ref.frames()).rgb).mean()
    assert diff < 2
    assert 0 <= b.audio_start < AAC_FRAME / clips.AUDIO_RATE
    video_end = b.times[-1] + 1 / 24
    assert abs(b.audio_start + b.audio_samples / clips.AUDIO_RATE - video_end) <= AAC_FRAME / clips.AUDIO_RATE
    assert _tone_lag(mp4.path, 0.0) == 0
    assert abs(_tone_lag(dst, expected[0])) <= 2  # samples: the audio is where it was relative to the video


def test_max_frames_stops_video_and_audio_together(mp4: clips.ClipSpec, tmp_path: Path) -> None:
    dst = tmp_path / "five.mkv"
    transcode(mp4.path, dst, max_frames=5)
    b = probe(dst)
    assert len(b.times) == 5
    assert abs(b.audio_samples / clips.AUDIO_RATE - 5 / 24) <= 2 * AAC_FRAME / clips.AUDIO_RATE


def test_start_past_the_end_is_an_error(mp4: clips.ClipSpec) -> None:
    with pytest.raises(VidrestoreError) as exc:
        VideoSource(mp4.path, start=5.0)
    assert "no video frames from 5 s on" in one_line(exc)


# -- bad input -------------------------------------------------------------------------------------


def test_missing_empty_garbage_and_directory_inputs(tmp_path: Path) -> None:
    empty, garbage = tmp_path / "empty.mp4", tmp_path / "garbage.mp4"
    empty.write_bytes(b"")
    garbage.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, np.uint8).tobytes())
    for path, words in [
        (tmp_path / "missing.mp4", "no such file"),
        (empty, "empty"),
        (garbage, "not a video file"),
        (tmp_path, "not a file"),
    ]:
        with pytest.raises(VidrestoreError) as exc:
            VideoSource(path)
        assert words in one_line(exc) and str(path) in str(exc.value)


def test_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "voice.m4a"
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=clips.AUDIO_RATE)
        clips._Tone(out, stream, 4800).finish()
    with pytest.raises(VidrestoreError) as exc:
        VideoSource(path)
    assert "no video stream" in one_line(exc)


def test_file_with_zero_video_frames(tmp_path: Path) -> None:
    path = tmp_path / "hollow.mkv"
    with av.open(str(path), "w") as out:
        vs = out.add_stream("ffv1", rate=24)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        stream = out.add_stream("aac", rate=clips.AUDIO_RATE)
        clips._Tone(out, stream, 4800).finish()
    with pytest.raises(VidrestoreError) as exc:
        VideoSource(path)
    assert "no video frames" in one_line(exc)


def test_truncated_file_decodes_what_it_can(mp4: clips.ClipSpec, tmp_path: Path) -> None:
    # MP4 with its index in front (as streaming files are), cut at 60 %.
    whole = tmp_path / "fast.mp4"
    with av.open(str(mp4.path)) as i, av.open(str(whole), "w", options={"movflags": "+faststart"}) as o:
        streams = {s.index: o.add_stream_from_template(s) for s in i.streams}
        for packet in i.demux():
            if packet.size:
                packet.stream = streams[packet.stream_index]
                o.mux(packet)
    cut = tmp_path / "cut.mp4"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    src, _, seen = transcode(cut, tmp_path / "out.mp4")
    assert 0 < len(seen) < mp4.frames
    assert len(src.warnings) == 1
    assert src.warnings[0].startswith(
        f"input is truncated or damaged: decoding stopped after {len(seen)} frames"
    )
    assert len(probe(tmp_path / "out.mp4").pts) == len(seen)


def test_truncated_matroska_is_noticed_by_duration(ffv1: clips.ClipSpec, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mkv"
    data = ffv1.path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with VideoSource(cut) as src:
        n = len(list(src.frames()))
    assert 0 < n < ffv1.frames
    assert len(src.warnings) == 1 and src.warnings[0].startswith("input is truncated or damaged")


def test_repeated_timestamps_are_nudged_with_a_warning(tmp_path: Path) -> None:
    spec = clips.make_clip(tmp_path / "src.mkv", codec="ffv1", seconds=0.5, audio=False)
    damaged = tmp_path / "dup.mkv"
    with av.open(str(spec.path)) as i, av.open(str(damaged), "w") as o:
        stream, previous = o.add_stream_from_template(i.streams.video[0]), None
        for k, packet in enumerate(p for p in i.demux() if p.size):
            if k == 3:
                packet.pts = packet.dts = previous  # the fourth frame repeats the third one's time
            previous = packet.pts
            packet.stream = stream
            o.mux(packet)
    src, _, seen = transcode(damaged, tmp_path / "out.mp4")
    assert len(seen) == spec.frames and all(b.pts > a.pts for a, b in zip(seen, seen[1:], strict=False))
    assert src.warnings == ["input is damaged: 1 frame(s) had repeated or backward timestamps (nudged)"]
    assert len(probe(tmp_path / "out.mp4").pts) == spec.frames


def test_mp4_cut_before_its_index_cannot_be_read(mp4: clips.ClipSpec, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    data = mp4.path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])  # FFmpeg writes the index (moov) last
    with pytest.raises(VidrestoreError) as exc:
        VideoSource(cut)
    assert "not a video file FFmpeg can read" in one_line(exc)


def test_odd_frame_size(clipdir: Path, tmp_path: Path) -> None:
    odd = clips.make_clip(clipdir / "odd.mkv", codec="ffv1", size=(81, 61), seconds=0.25, audio=False)
    # libx264 cannot code an odd side in 4:2:0: 4:4:4 with a notice.
    _, sink, _ = transcode(odd.path, tmp_path / "o.mp4", restorer=paint_square)
    assert sink.pix_fmt == "yuv444p" and "odd side" in sink.notices[0]
    b = probe(tmp_path / "o.mp4")
    assert b.pix_fmt == "yuv444p" and len(b.pts) == odd.frames
    # Naming 4:2:0 explicitly is refused up front.
    with pytest.raises(VidrestoreError) as exc, VideoSource(odd.path) as src:
        VideoSink(tmp_path / "p.mp4", src.description, EncodeOptions(pix_fmt="yuv420p"))
    assert "odd frame size 81x61" in one_line(exc)
    # A codec that takes odd 4:2:0 keeps the layout, and the composition works at the odd edge.
    dst = tmp_path / "o.mkv"
    transcode(odd.path, dst, EncodeOptions(codec="ffv1"), paint_square)
    a, b = probe(odd.path, planes=True), probe(dst, planes=True)
    mask = paint_square(SourceFrame(0, 0, 0.0, np.zeros((61, 81, 3), np.uint8), None, []))[1]  # type: ignore[arg-type]
    for pa, pb in zip(a.planes[0], b.planes[0], strict=True):
        m = mask if pa.shape == mask.shape else chroma_mask(mask, pa.shape)
        np.testing.assert_array_equal(pa[~m], pb[~m])


@pytest.mark.parametrize(
    ("settings", "suffix", "words"),
    [
        (
            EncodeOptions(pix_fmt="rgb48le"),
            ".mp4",
            "libx264 cannot encode pixel format rgb48le; it supports: yuv420p",
        ),
        (EncodeOptions(pix_fmt="nonsense"), ".mp4", "unknown pixel format 'nonsense'"),
        (EncodeOptions(codec="prores_ks"), ".mp4", "the mp4 container cannot hold prores_ks video"),
        (EncodeOptions(codec="ffv1"), ".webm", "the webm container cannot hold ffv1 video"),
        (EncodeOptions(codec="nonsense"), ".mp4", "unknown video encoder 'nonsense'"),
        (EncodeOptions(codec="aac"), ".mp4", "'aac' is a audio encoder"),
        (EncodeOptions(codec="ffv1", crf=10), ".mkv", "ffv1 has no crf setting"),
        (EncodeOptions(encoder_opts={"nonsense": "1"}), ".mp4", "libx264 has no option 'nonsense'"),
        (EncodeOptions(preset="warp-speed"), ".mp4", "libx264 could not start"),
        (EncodeOptions(), ".xyz", "cannot tell the container from the extension '.xyz'"),
        (EncodeOptions(), ".png", "'.png' is not a video container"),
    ],
)
def test_bad_encode_settings(
    mp4: clips.ClipSpec, tmp_path: Path, settings: EncodeOptions, suffix: str, words: str
) -> None:
    with VideoSource(mp4.path) as src, pytest.raises(VidrestoreError) as exc:
        VideoSink(tmp_path / f"out{suffix}", src.description, settings)
    assert words in one_line(exc)
    assert list(tmp_path.iterdir()) == []  # no temporary file left behind


# -- output path safety ----------------------------------------------------------------------------


def test_output_can_never_be_the_input(mp4: clips.ClipSpec, tmp_path: Path) -> None:
    link = tmp_path / "link.mp4"
    link.symlink_to(mp4.path)
    hard = tmp_path / "hard.mp4"
    os.link(mp4.path, hard)
    for dst in (mp4.path, link, hard, mp4.path.parent / ".." / mp4.path.parent.name / mp4.path.name):
        with pytest.raises(VidrestoreError) as exc:
            check_output_path(mp4.path, dst, overwrite=True)
        assert "would overwrite the input" in one_line(exc)


def test_existing_output_needs_overwrite_and_is_replaced_only_at_commit(
    mp4: clips.ClipSpec, tmp_path: Path
) -> None:
    dst = tmp_path / "out.mkv"
    dst.write_bytes(b"old")
    with VideoSource(mp4.path) as src, pytest.raises(VidrestoreError) as exc:
        VideoSink(dst, src.description, EncodeOptions())
    assert "exists; pass --overwrite" in one_line(exc)
    with (
        VideoSource(mp4.path, max_frames=3) as src,
        VideoSink(dst, src.description, EncodeOptions(), overwrite=True) as sink,
    ):
        for frame in src.frames():
            sink.write(frame)
            assert dst.read_bytes() == b"old"
    assert len(probe(dst).pts) == 3


def test_unwritable_or_missing_output_directory(mp4: clips.ClipSpec, tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_bytes(b"")
    for dst, words in [
        (tmp_path / "missing" / "out.mp4", "does not exist"),
        (a_file / "out.mp4", "is not a directory"),
        (tmp_path, "is a directory"),
    ]:
        with pytest.raises(VidrestoreError) as exc:
            check_output_path(mp4.path, dst, overwrite=False)
        assert words in one_line(exc)


def test_refused_temporary_file_is_one_line(
    mp4: clips.ClipSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A directory that passes the access check but refuses the file (ACLs, a read-only mount)."""

    def refuse(*args: object, **kw: object) -> int:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    with VideoSource(mp4.path) as src:
        monkeypatch.setattr(os, "open", refuse)
        with pytest.raises(VidrestoreError) as exc:
            VideoSink(tmp_path / "o.mp4", src.description, EncodeOptions())
    assert one_line(exc) == f"{tmp_path / 'o.mp4'}: cannot write to {tmp_path} (Permission denied)"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_directory(mp4: clips.ClipSpec, tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    with pytest.raises(VidrestoreError) as exc:
        check_output_path(mp4.path, ro / "out.mp4", overwrite=False)
    assert "not writable" in one_line(exc)


def test_temp_file_is_hidden_beside_the_output_and_removed_on_abort(
    mp4: clips.ClipSpec, tmp_path: Path
) -> None:
    dst = tmp_path / "out.mp4"
    with VideoSource(mp4.path) as src:
        sink = VideoSink(dst, src.description, EncodeOptions())
        for frame in src.frames():
            sink.write(frame)
            break
        (tmp,) = tmp_path.iterdir()
        assert tmp.name.startswith(".out.") and tmp.name.endswith(".part.mp4")
        sink.abort()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_interrupted_run_leaves_no_file(
    mp4: clips.ClipSpec, tmp_path: Path, error: type[BaseException]
) -> None:
    with (
        pytest.raises(error),
        VideoSource(mp4.path) as src,
        VideoSink(tmp_path / "o.mp4", src.description, EncodeOptions()) as sink,
    ):
        for frame in src.frames():
            sink.write(frame)
            if frame.index == 5:
                raise error
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("when", ["write", "commit"])
def test_full_disk_is_one_line_and_leaves_no_file(
    mp4: clips.ClipSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, when: str
) -> None:
    calls = {"n": 0}
    real_mux = VideoSink._mux

    def mux(self: VideoSink, packets: object) -> None:
        calls["n"] += 1
        # "commit": the first packet muxed once every frame has been written is the encoder's flush.
        if (when == "write" and calls["n"] > 3) or (when == "commit" and self._frames == mp4.frames):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_mux(self, packets)

    monkeypatch.setattr(VideoSink, "_mux", mux)
    with pytest.raises(VidrestoreError) as exc:
        transcode(mp4.path, tmp_path / "o.mp4")
    assert one_line(exc) == f"{tmp_path / 'o.mp4'}: writing failed (No space left on device)"
    assert list(tmp_path.iterdir()) == []
