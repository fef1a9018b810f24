"""Interlaced sources: field order detection, each --interlace mode end to end on a tiny DVD-like MPEG-2
file (AC-3 audio), and the weave that puts restored rows back into their own fields only."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from clips import face_path, make_clip, make_interlaced_clip

import vidrestore
from vidrestore.cli import main
from vidrestore.errors import VidrestoreError
from vidrestore.io.colour import Colour, Converter
from vidrestore.io.fields import top_field_first
from vidrestore.io.interlace import weave
from vidrestore.io.source import VideoSource


@pytest.fixture(autouse=True)
def _offline(offline):
    """Every test here runs offline."""


@pytest.fixture(scope="module")
def dvd(tmp_path_factory) -> Path:
    """8 frames of 176x120 bottom-field-first MPEG-2 with AC-3, in an MPEG program stream."""
    return make_interlaced_clip(tmp_path_factory.mktemp("dvd") / "in.mpg", order="bff").path


@dataclass
class ReadBack:
    """What PyAV reads back from a video stream."""

    field_order: int  # AVFieldOrder of the stream: 1 progressive, 2 tt, 3 bb
    sar: Fraction | None
    rate: float  # frames per second, to 0.01 (Matroska's millisecond times make the average inexact)
    frames: list[av.VideoFrame]
    audio: list[str]

    @property
    def interlaced(self) -> set[bool]:
        return {bool(f.interlaced_frame) for f in self.frames}

    @property
    def top_first(self) -> set[bool | None]:
        return {top_field_first(f) for f in self.frames if f.interlaced_frame}


def read_back(path: Path) -> ReadBack:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = list(c.decode(v))
        return ReadBack(
            v.codec_context.field_order,
            v.sample_aspect_ratio,
            round(float(v.average_rate), 2),
            frames,
            [s.codec_context.name for s in c.streams.audio],
        )


def overlay(src: Path, dst: Path, **kw) -> vidrestore.pipeline.RunReport:
    """A run with the detector's overlay instead of the network: same paths through the pipeline, fast."""
    opts = dict(detector="centerface", progress=False, frame_batch=4, debug_overlay=True)
    return vidrestore.restore_video(src, dst, **(opts | kw))


@pytest.mark.parametrize("order", ["tff", "bff"])
def test_field_order_is_read_from_the_frames(tmp_path, order):
    spec = make_interlaced_clip(tmp_path / "in.mpg", order=order, frames=2)
    with VideoSource(spec.path) as source:
        assert (source.description.field_order, source.description.field_order_from) == (order, "the frames")


def test_a_progressive_source_is_progressive(tmp_path):
    spec = make_clip(tmp_path / "in.mp4", seconds=0.2, audio=False)
    with VideoSource(spec.path) as source:
        assert source.description.field_order == "progressive"


def test_before(dvd):
    src = read_back(dvd)
    assert (src.field_order, src.sar, src.rate, len(src.frames)) == (3, Fraction(10, 11), 29.97, 8)
    assert src.interlaced == {True} and src.top_first == {False} and src.audio == ["ac3"]


@pytest.mark.parametrize(("name", "codec"), [("out.mkv", "libx264"), ("out.mpg", "mpeg2video")])
def test_keep_writes_interlaced_bff(tmp_path, dvd, name, codec):
    report = overlay(dvd, tmp_path / name, interlace="keep", codec=codec)
    out = read_back(tmp_path / name)
    assert (out.field_order, out.sar, out.rate, len(out.frames)) == (3, Fraction(10, 11), 29.97, 8)
    assert out.interlaced == {True} and out.top_first == {False} and out.audio == ["ac3"]
    assert report.frames == 8 and 0 < report.frames_with_faces <= 8
    assert any("kept interlaced, bff" in n for n in report.notices)


def test_keep_writes_interlaced_tff(tmp_path):
    spec = make_interlaced_clip(tmp_path / "in.mpg", order="tff", frames=4)
    overlay(spec.path, tmp_path / "out.mkv", interlace="keep")
    out = read_back(tmp_path / "out.mkv")
    assert (out.field_order, out.interlaced, out.top_first, len(out.frames)) == (2, {True}, {True}, 4)


def test_deinterlace_on_frames_flagged_progressive_does_as_asked(tmp_path):
    spec = make_clip(tmp_path / "in.mp4", seconds=0.2, audio=False)
    report = overlay(spec.path, tmp_path / "out.mp4", interlace="deinterlace")
    assert len(read_back(tmp_path / "out.mp4").frames) == spec.frames
    assert any("flagged progressive" in n and "tff first" in n for n in report.notices)


def test_keep_at_dvd_size(tmp_path):
    """DVD size, where swscale converts in slices on threads of its own (a converter shared by the decode and
    encode threads deadlocked here, now and then)."""
    spec = make_interlaced_clip(tmp_path / "in.mpg", size=(720, 480), frames=3)
    report = overlay(spec.path, tmp_path / "out.mpg", interlace="keep", codec="mpeg2video")
    out = read_back(tmp_path / "out.mpg")
    assert (out.field_order, out.sar, len(out.frames), out.top_first) == (3, Fraction(8, 9), 3, {False})
    assert report.frames_with_faces == 3


def test_keep_changes_only_the_faces_and_keeps_the_rest_bit_exact(tmp_path, dvd):
    """Lossless output: outside the two fields' face boxes (and the overlay's labels), every sample is the
    source's own."""
    overlay(dvd, tmp_path / "out.mkv", interlace="keep", codec="ffv1")
    before, after = read_back(dvd).frames, read_back(tmp_path / "out.mkv").frames
    boxes = face_path(176, 120, 16)
    changed = 0
    for i, (a, b) in enumerate(zip(before, after, strict=True)):
        diff = a.to_ndarray(format="gray") != b.to_ndarray(format="gray")
        changed += diff.any()
        near = np.zeros_like(diff)
        for x, y, w, h in boxes[2 * i : 2 * i + 2]:
            near[max(0, y - 24) : y + h + 24, max(0, x - 24) : x + w + 24] = True
        assert not diff[~near].any()
    assert changed >= 6


def test_auto_keeps_where_the_codec_can(tmp_path, dvd):
    report = overlay(dvd, tmp_path / "out.mkv")
    assert read_back(tmp_path / "out.mkv").top_first == {False}
    assert any("kept interlaced" in n and "--interlace auto" in n for n in report.notices)


def test_auto_deinterlaces_at_field_rate_where_the_codec_cannot(tmp_path, dvd):
    report = overlay(dvd, tmp_path / "out.mkv", codec="libx265")
    out = read_back(tmp_path / "out.mkv")
    assert (out.field_order, out.rate, len(out.frames), out.interlaced) == (1, 59.94, 16, {False})
    assert any("one picture per field" in n and "libx265 cannot" in n for n in report.notices)


def test_deinterlace_writes_progressive_at_frame_rate(tmp_path, dvd):
    report = overlay(dvd, tmp_path / "out.mkv", interlace="deinterlace")
    out = read_back(tmp_path / "out.mkv")
    assert (out.field_order, out.sar, out.rate, len(out.frames)) == (1, Fraction(10, 11), 29.97, 8)
    assert out.interlaced == {False} and out.audio == ["ac3"] and report.frames == 8
    assert any("29.97 fps progressive, one picture per frame" in n for n in report.notices)


def test_deinterlace_fields_doubles_the_rate_and_keeps_the_times(tmp_path, dvd):
    report = overlay(dvd, tmp_path / "out.mkv", interlace="deinterlace-fields")
    out = read_back(tmp_path / "out.mkv")
    assert (out.field_order, out.sar, out.rate, len(out.frames)) == (1, Fraction(10, 11), 59.94, 16)
    assert out.interlaced == {False} and report.frames == 16
    times = [float(f.time) for f in out.frames]
    assert max(abs(b - a - 1001 / 60000) for a, b in zip(times, times[1:], strict=False)) <= 0.001
    assert any("59.94 fps progressive, one picture per field" in n for n in report.notices)


def test_progressive_takes_the_woven_frames_and_says_so(tmp_path, dvd):
    report = overlay(dvd, tmp_path / "out.mkv", interlace="progressive")
    out = read_back(tmp_path / "out.mkv")
    assert (out.field_order, out.sar, out.rate, len(out.frames)) == (1, Fraction(10, 11), 29.97, 8)
    assert out.interlaced == {False}
    assert any("treated as progressive" in n and "combing included" in n for n in report.notices)


def test_keep_with_a_codec_without_fields_is_one_line(tmp_path, dvd, capsys):
    args = ["restore", str(dvd), "-o", str(tmp_path / "out.mkv"), "--codec", "libx265", "--interlace", "keep"]
    assert main([*args, "--detector", "centerface", "--debug-overlay", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "libx265 cannot code interlaced pictures" in err
    assert not list(tmp_path.glob("*out*"))


def test_keep_on_a_progressive_source_says_there_is_nothing_to_keep(tmp_path):
    spec = make_clip(tmp_path / "in.mp4", seconds=0.2, audio=False)
    report = overlay(spec.path, tmp_path / "out.mp4", interlace="keep")
    assert read_back(tmp_path / "out.mp4").interlaced == {False}
    assert any("nothing to keep interlaced" in n for n in report.notices)


@pytest.mark.parametrize("order", ["tff", "bff"])
def test_weave_puts_each_pictures_rows_into_its_own_field_only(order):
    """Only the first field's picture changed: the other field's luma and chroma rows stay bit-exact."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    restored, mask = np.full_like(rgb, 200), np.zeros((16, 16), bool)
    mask[4:12, 4:12] = True
    colour = Colour.of(frame)
    out = weave(frame, order, (restored, mask), (None, None), Converter(colour, colour))
    first = 0 if order == "tff" else 1
    for plane_out, plane_in in zip(out.planes, frame.planes, strict=True):
        a = np.frombuffer(plane_out, np.uint8).reshape(plane_out.height, -1)[:, : plane_out.width]
        b = np.frombuffer(plane_in, np.uint8).reshape(plane_in.height, -1)[:, : plane_in.width]
        assert np.array_equal(a[1 - first :: 2], b[1 - first :: 2])
        assert not np.array_equal(a[first::2], b[first::2])
    y = np.frombuffer(out.planes[0], np.uint8).reshape(16, -1)[:, :16]
    y0 = np.frombuffer(frame.planes[0], np.uint8).reshape(16, -1)[:, :16]
    outside = ~mask
    assert np.array_equal(y[outside], y0[outside])


def test_interlace_setting_is_checked():
    with pytest.raises(VidrestoreError, match="interlace"):
        vidrestore.restore_video("in.mpg", "out.mkv", interlace="weave")
