"""Alpha and HDR10 metadata through the sink: kept where the codec holds them, named in one notice where not.

Clips are 64x64 and 3 frames, written here with PyAV: ProRes 4444 / FFV1 with an alpha gradient that changes
every frame, and HEVC 10-bit PQ with HDR10 side data set through x265's parameters.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import clips
import numpy as np
import pytest
from av.sidedata.sidedata import Type
from test_video import paint_square, transcode

from vidrestore.cli import main
from vidrestore.io import SourceFrame, VideoSource
from vidrestore.io.carry import Hdr10, MasteringDisplay, copy_alpha, read_hdr10
from vidrestore.io.colour import full_chroma
from vidrestore.io.encoders import output_codec
from vidrestore.options import EncodeOptions

SIZE, FRAMES = 64, 3
# A P3-D65 mastering display, 0.005-1000 cd/m², in x265's units; MaxCLL 1000, MaxFALL 400.
MASTER_DISPLAY = "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,50)"
HDR10 = Hdr10(
    MasteringDisplay(
        red=(Fraction(34000, 50000), Fraction(16000, 50000)),
        green=(Fraction(13250, 50000), Fraction(34500, 50000)),
        blue=(Fraction(7500, 50000), Fraction(3000, 50000)),
        white=(Fraction(15635, 50000), Fraction(16450, 50000)),
        min_luminance=Fraction(50, 10000),
        max_luminance=Fraction(1000),
    ),
    (1000, 400),
)
PQ_TAGS = (9, 16, 9, 1)  # BT.2020 primaries, SMPTE ST 2084 (PQ), BT.2020 non-constant matrix, limited range


def alpha_plane(i: int) -> np.ndarray:
    """A horizontal ramp that moves with the frame index, with a fully transparent corner."""
    ramp = (np.arange(SIZE)[None, :] * 4 + i * 16) % 256 + np.zeros((SIZE, 1), int)
    ramp[:8, :8] = 0
    return ramp.astype(np.uint8)


def write_alpha_clip(path: Path, codec: str, pix_fmt: str) -> None:
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=24)
        vs.width, vs.height, vs.pix_fmt = SIZE, SIZE, pix_fmt
        for i, box in enumerate(clips.face_path(SIZE, SIZE, FRAMES)):
            rgba = np.dstack([clips.render(SIZE, SIZE, box), alpha_plane(i)])
            frame = av.VideoFrame.from_ndarray(rgba, format="rgba").reformat(format=pix_fmt)
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))


def write_hdr_clip(path: Path, *, trc: int = PQ_TAGS[1], metadata: bool = True) -> None:
    params = "log-level=error" + (f":master-display={MASTER_DISPLAY}:max-cll=1000,400" if metadata else "")
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx265", rate=24)
        vs.width, vs.height, vs.pix_fmt = SIZE, SIZE, "yuv420p10le"
        cc = vs.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = PQ_TAGS[0], trc, *PQ_TAGS[2:]
        cc.options = {"x265-params": params, "preset": "ultrafast"}
        for i, box in enumerate(clips.face_path(SIZE, SIZE, FRAMES)):
            frame = av.VideoFrame.from_ndarray(clips.render(SIZE, SIZE, box), format="rgb24")
            frame = frame.reformat(
                format="yuv420p10le", dst_colorspace=av.video.reformatter.Colorspace.BT2020
            )
            frame.pts = i
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))


def decode(path: Path, decoder: str | None = None) -> list[av.VideoFrame]:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        if decoder is None:
            return list(c.decode(v))
        ctx = av.CodecContext.create(decoder, "r")
        frames = [f for p in c.demux(v) if p.size for f in ctx.decode(p)]
        return frames + list(ctx.decode(None))


def alpha_of(frame: av.VideoFrame) -> np.ndarray:
    """The alpha samples of a planar frame, as stored."""
    fmt = frame.format
    plane = frame.planes[next(c.plane for c in fmt.components if c.is_alpha)]
    dtype = np.dtype("<u2") if fmt.components[0].bits > 8 else np.dtype(np.uint8)
    return np.frombuffer(plane, dtype).reshape(plane.height, -1)[:, : plane.width].copy()


def colour_tags(frame: av.VideoFrame) -> tuple[int, int, int, int]:
    return frame.color_primaries, frame.color_trc, frame.colorspace, frame.color_range


def hdr10_of(frame: av.VideoFrame) -> Hdr10 | None:
    return read_hdr10({key: bytes(frame.side_data[key]) for key in frame.side_data})


@pytest.fixture(scope="module")
def clipdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("carry")


@pytest.fixture(scope="module")
def prores4444(clipdir: Path) -> Path:
    path = clipdir / "alpha.mov"
    write_alpha_clip(path, "prores_ks", "yuva444p10le")
    return path


@pytest.fixture(scope="module")
def png_rgba(clipdir: Path) -> Path:
    path = clipdir / "rgba.mov"
    write_alpha_clip(path, "png", "rgba")
    return path


@pytest.fixture(scope="module")
def hevc_hdr(clipdir: Path) -> Path:
    path = clipdir / "hdr.mkv"
    write_hdr_clip(path)
    return path


# -- alpha -----------------------------------------------------------------------------------------


def test_source_reports_alpha(prores4444: Path) -> None:
    with VideoSource(prores4444) as src:
        assert src.description.alpha and src.info.pix_fmt == "yuva444p12le"  # ProRes 4444 decodes at 12 bits
        assert src.description.hdr10 is None and not src.description.hdr


@pytest.mark.parametrize(
    ("codec", "suffix", "pix_fmt", "decoder"),
    [
        ("prores_ks", ".mov", "yuva444p10le", None),
        ("ffv1", ".mkv", "yuva444p12le", None),
        ("png", ".mov", "rgba64be", None),
        ("libvpx-vp9", ".webm", "yuva420p", "libvpx-vp9"),  # FFmpeg's vp9 decoder ignores alpha
    ],
)
def test_alpha_survives_restoring(
    prores4444: Path, tmp_path: Path, codec: str, suffix: str, pix_fmt: str, decoder: str | None
) -> None:
    """Every alpha sample, under the painted face too, is the one the source frame converts to; a lossless
    output in the source's own format also keeps every colour sample away from the face."""
    dst = tmp_path / f"out{suffix}"
    _, sink, _ = transcode(prores4444, dst, EncodeOptions(codec=codec), paint_square)
    assert sink.pix_fmt == pix_fmt
    assert not [n for n in sink.notices if "alpha" in n]
    source, output = decode(prores4444), decode(dst, decoder)
    assert len(output) == FRAMES
    mask = paint_square(SourceFrame(0, 0, 0.0, np.zeros((SIZE, SIZE, 3), np.uint8), None, []))[1]  # type: ignore[arg-type]
    for i, (a, b) in enumerate(zip(source, output, strict=True)):
        assert np.abs(a.to_ndarray(format="rgba")[..., 3].astype(int) - alpha_plane(i)).max() <= 1
        if b.format.name == a.format.name:  # ProRes decodes at 12 bits again; FFV1 kept yuva444p12le
            np.testing.assert_array_equal(alpha_of(a), alpha_of(b))
        want, got = (f.to_ndarray(format="rgba")[..., 3].astype(int) for f in (a, b))
        assert np.abs(want - got).max() <= (8 if codec == "libvpx-vp9" else 0), i  # VP9 codes alpha lossily
        if codec == "ffv1":
            for pa, pb in zip(a.planes[:3], b.planes[:3], strict=True):
                ya, yb = (np.frombuffer(p, "<u2").reshape(SIZE, -1)[:, :SIZE] for p in (pa, pb))
                np.testing.assert_array_equal(ya[~mask], yb[~mask])
                assert not np.array_equal(ya[mask], yb[mask])


@pytest.mark.parametrize(
    ("codec", "suffix", "pix_fmt"), [("qtrle", ".mov", "argb"), ("ffv1", ".mkv", "bgra")]
)
def test_packed_rgba_alpha_is_bit_exact(
    png_rgba: Path, tmp_path: Path, codec: str, suffix: str, pix_fmt: str
) -> None:
    """Packed formats keep alpha first (argb) or last (bgra) in each pixel: both come through untouched."""
    dst = tmp_path / f"out{suffix}"
    _, sink, _ = transcode(png_rgba, dst, EncodeOptions(codec=codec), paint_square)
    assert (sink.pix_fmt, sink.notices) == (pix_fmt, [])
    for i, (a, b) in enumerate(zip(decode(png_rgba), decode(dst), strict=True)):
        want, got = (f.to_ndarray(format="rgba")[..., 3] for f in (a, b))
        np.testing.assert_array_equal(want, alpha_plane(i))
        np.testing.assert_array_equal(got, want)


def test_alpha_round_trips_through_a_webm_source(prores4444: Path, tmp_path: Path) -> None:
    """The source decodes VP9 alpha with libvpx, so a WebM with alpha is read with it and keeps it."""
    webm = tmp_path / "a.webm"
    transcode(prores4444, webm, EncodeOptions(codec="libvpx-vp9"))
    with VideoSource(webm) as src:
        assert src.description.alpha and src.info.pix_fmt == "yuva420p"
    dst = tmp_path / "b.mkv"
    _, sink, _ = transcode(webm, dst, EncodeOptions(codec="ffv1"), paint_square)
    assert sink.pix_fmt == "yuva420p" and sink.notices == []
    for a, b in zip(decode(webm, "libvpx-vp9"), decode(dst), strict=True):
        np.testing.assert_array_equal(alpha_of(a), alpha_of(b))


def test_codec_without_alpha_names_the_loss_once(clipdir: Path, tmp_path: Path) -> None:
    src = clipdir / "alpha10.mkv"
    write_alpha_clip(src, "ffv1", "yuva444p10le")  # 10-bit, so libx264 needs no bit-depth notice
    _, sink, _ = transcode(src, tmp_path / "out.mp4", EncodeOptions(codec="libx264"), paint_square)
    assert sink.pix_fmt == "yuv444p10le"
    assert len(sink.notices) == 1 and "libx264" in sink.notices[0] and "alpha" in sink.notices[0]


def test_vp9_alpha_outside_matroska_is_named(prores4444: Path, tmp_path: Path) -> None:
    """MP4 has no place for VP9's alpha side channel: the output has no alpha plane, and says so."""
    _, sink, _ = transcode(prores4444, tmp_path / "out.mp4", EncodeOptions(codec="libvpx-vp9"), max_frames=1)
    assert sink.pix_fmt == "yuv444p"
    assert any("alpha" in n and ".webm" in n for n in sink.notices)


def test_copy_alpha_packed_and_planar() -> None:
    """Packed formats keep alpha first (argb) or last (rgba); planar ones in a plane of their own."""
    rgba = np.random.default_rng(0).integers(0, 256, (4, 6, 4), np.uint8)
    for fmt in ("rgba", "argb", "yuva420p", "rgba64le"):
        src = av.VideoFrame.from_ndarray(rgba, format="rgba").reformat(format=fmt)
        opaque = rgba.copy()
        opaque[..., 3] = 255
        dst = av.VideoFrame.from_ndarray(opaque, format="rgba").reformat(format=fmt)
        colour = dst.to_ndarray(format="rgba")[..., :3]
        copy_alpha(dst, src)
        got = dst.to_ndarray(format="rgba")
        np.testing.assert_array_equal(got[..., 3], src.to_ndarray(format="rgba")[..., 3])
        np.testing.assert_array_equal(got[..., :3], colour)


def test_full_chroma_keeps_alpha() -> None:
    assert full_chroma("yuva420p") == "yuva444p"
    assert full_chroma("yuva420p10le") == "yuva444p10le"
    assert full_chroma("yuv420p10le") == "yuv444p10le"
    assert full_chroma("rgba") == "rgba"


# -- HDR10 -----------------------------------------------------------------------------------------


def test_source_reads_hdr10(hevc_hdr: Path) -> None:
    with VideoSource(hevc_hdr) as src:
        d = src.description
    assert d.hdr and d.hdr10 == HDR10 and not d.alpha
    assert (d.colour.primaries, d.colour.trc, d.colour.space, d.colour.range) == PQ_TAGS
    with VideoSource(hevc_hdr, start=0.05) as src:  # the first frame in range is not the keyframe
        assert src.description.hdr10 == HDR10


@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_hdr_source_defaults_to_hevc_10_bit_with_its_metadata(
    hevc_hdr: Path, tmp_path: Path, suffix: str
) -> None:
    dst = tmp_path / f"out{suffix}"
    _, sink, _ = transcode(hevc_hdr, dst, restorer=paint_square)
    assert (sink.codec, sink.pix_fmt, sink.notices) == ("libx265", "yuv420p10le", [])
    with av.open(str(dst)) as c:
        cc = c.streams.video[0].codec_context
        assert cc.name == "hevc" and (cc.codec_tag == "hvc1") == (suffix == ".mp4")
    frames = decode(dst)
    assert len(frames) == FRAMES and frames[0].format.name == "yuv420p10le"
    assert colour_tags(frames[0]) == PQ_TAGS
    assert hdr10_of(frames[0]) == hdr10_of(decode(hevc_hdr)[0]) == HDR10


def test_libx264_carries_hdr10_too(hevc_hdr: Path, tmp_path: Path) -> None:
    """The wheel's x264 (core 165) writes mastering-display and content-light SEI: nothing is lost."""
    dst = tmp_path / "out.mkv"
    _, sink, _ = transcode(hevc_hdr, dst, EncodeOptions(codec="libx264"), restorer=paint_square)
    assert (sink.pix_fmt, sink.notices) == ("yuv420p10le", [])
    frame = decode(dst)[0]
    assert colour_tags(frame) == PQ_TAGS and hdr10_of(frame) == HDR10


def test_svtav1_carries_hdr10_to_its_precision(hevc_hdr: Path, tmp_path: Path) -> None:
    """AV1 stores chromaticities in 1/65536 and luminance in fixed point: equal to within that."""
    dst = tmp_path / "out.webm"
    _, sink, _ = transcode(hevc_hdr, dst, max_frames=2)
    assert (sink.codec, sink.pix_fmt, sink.notices) == ("libsvtav1", "yuv420p10le", [])
    frame = decode(dst)[0]
    assert colour_tags(frame) == PQ_TAGS
    got = hdr10_of(frame)
    assert got is not None and got.mastering is not None and HDR10.mastering is not None
    assert got.content_light == HDR10.content_light
    for field in ("red", "green", "blue", "white"):
        a, b = getattr(got.mastering, field), getattr(HDR10.mastering, field)
        assert abs(a[0] - b[0]) < Fraction(1, 50000) and abs(a[1] - b[1]) < Fraction(1, 50000)
    assert (
        abs(got.mastering.max_luminance - 1000) < 1
        and abs(got.mastering.min_luminance - Fraction(1, 200)) < 1e-4
    )


@pytest.mark.parametrize(
    ("codec", "suffix"), [("ffv1", ".mkv"), ("prores_ks", ".mov"), ("libvpx-vp9", ".webm")]
)
def test_codec_without_hdr10_names_what_it_drops(
    hevc_hdr: Path, tmp_path: Path, codec: str, suffix: str
) -> None:
    dst = tmp_path / f"out{suffix}"
    _, sink, _ = transcode(hevc_hdr, dst, EncodeOptions(codec=codec), max_frames=1)
    assert len(sink.notices) == 1 and codec in sink.notices[0] and "HDR10 metadata" in sink.notices[0]
    assert "mastering display 0.005-1000 cd/m², MaxCLL 1000, MaxFALL 400" in sink.notices[0]
    # The wheel's libvpx is 8-bit only: the bit-depth loss is named in the same notice.
    assert ("10-bit depth (encoding as 8-bit yuv420p)" in sink.notices[0]) == (codec == "libvpx-vp9")
    frame = decode(dst)[0]
    assert colour_tags(frame)[:3] == PQ_TAGS[:3] and hdr10_of(frame) is None


def test_user_x265_params_win_over_the_sources(hevc_hdr: Path, tmp_path: Path) -> None:
    dst = tmp_path / "out.mkv"
    settings = EncodeOptions(codec="libx265", encoder_opts={"x265-params": "max-cll=500,200"})
    transcode(hevc_hdr, dst, settings)
    got = hdr10_of(decode(dst)[0])
    assert got is not None and got.content_light == (500, 200) and got.mastering == HDR10.mastering


def test_hlg_source_without_metadata_defaults_to_hevc_10_bit(clipdir: Path, tmp_path: Path) -> None:
    src = clipdir / "hlg.mkv"
    write_hdr_clip(src, trc=18, metadata=False)
    with VideoSource(src) as source:
        assert source.description.hdr and source.description.hdr10 is None
    _, sink, _ = transcode(src, tmp_path / "out.mp4")  # x265 gives 1- or 2-frame clips a bad dts MP4 refuses
    assert (sink.codec, sink.pix_fmt, sink.notices) == ("libx265", "yuv420p10le", [])
    assert colour_tags(decode(tmp_path / "out.mp4")[0]) == (9, 18, 9, 1)


def test_read_hdr10_ignores_incomplete_side_data() -> None:
    assert read_hdr10({}) is None
    assert read_hdr10({Type.CONTENT_LIGHT_LEVEL: bytes(8)}) is None
    assert read_hdr10({Type.MASTERING_DISPLAY_METADATA: bytes(88)}) is None


# -- end to end ------------------------------------------------------------------------------------


def test_restore_keeps_alpha_and_hdr10_and_names_losses_in_one_line(
    prores4444: Path, hevc_hdr: Path, tmp_path: Path, tiny_checkpoint: str, offline: None, capsys
) -> None:
    # Grain off: these clips are all face, with too little film around it to measure (a notice of its own).
    common = ["--weights", tiny_checkpoint, "--detector", "centerface", "-q", "--grain", "off"]
    out = tmp_path / "alpha.mov"
    assert main(["restore", str(prores4444), "-o", str(out), "--codec", "prores_ks", *common]) == 0
    for a, b in zip(decode(prores4444), decode(out), strict=True):
        np.testing.assert_array_equal(alpha_of(a), alpha_of(b))
    capsys.readouterr()
    out = tmp_path / "hdr.mkv"
    assert main(["restore", str(hevc_hdr), "-o", str(out), *common]) == 0
    assert capsys.readouterr().err == ""
    frame = decode(out)[0]
    assert (frame.format.name, colour_tags(frame), hdr10_of(frame)) == ("yuv420p10le", PQ_TAGS, HDR10)
    out = tmp_path / "x264.mp4"
    assert main(["restore", str(prores4444), "-o", str(out), "--codec", "libx264", *common]) == 0
    assert capsys.readouterr().err.strip().splitlines() == [
        "vidrestore: note: libx264 in .mp4 cannot carry the input's alpha channel (transparency; prores_ks, "
        "ffv1 or libvpx-vp9 in .webm keep it) or its 12-bit depth (encoding as 10-bit yuv444p10le)"
    ]


def test_hdr_default_follows_the_named_container_too(hevc_hdr: Path, tmp_path: Path) -> None:
    """``--format`` (a pipe, or a name without a known extension) picks the same HDR default as the file."""
    with VideoSource(hevc_hdr) as src:
        description = src.description
    assert output_codec(tmp_path / "out.bin", EncodeOptions(format="matroska"), description) == "libx265"
    assert output_codec(tmp_path / "out.bin", EncodeOptions(format="webm"), description) == "libsvtav1"
    assert output_codec(tmp_path / "out.bin", EncodeOptions(format="mpeg"), description) == "mpeg2video"
