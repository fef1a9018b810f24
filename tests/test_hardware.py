"""NVDEC/NVENC: the settings mapping (pure functions), the probes that decide availability, and the clean
refusal or CPU fallback where no GPU is present. The CUDA-only tests at the end run on a GPU."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from clips import make_clip, make_interlaced_clip

import vidrestore
from vidrestore.cli import main
from vidrestore.errors import VidrestoreError
from vidrestore.io import VideoSink, VideoSource, hardware
from vidrestore.io.hardware import (
    auto_encoder,
    decoder_hwaccel,
    nvenc_cq,
    nvenc_options,
    nvenc_pix_fmt,
    nvenc_preset,
    probe_encoder,
)
from vidrestore.options import EncodeOptions


@pytest.fixture(autouse=True)
def _offline(offline):
    """Every test here runs offline."""


@pytest.fixture
def fake_gpu(monkeypatch):
    """CUDA reported present: FFmpeg still finds no driver, so every NVDEC/NVENC open fails for real."""
    monkeypatch.setattr(hardware, "cuda_available", lambda: True)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("hw") / "in.mp4", seconds=0.5).path


def _one_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


# -- the settings mapping --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "preset,expected",
    [
        (None, "p4"),
        ("ultrafast", "p1"),
        ("veryfast", "p2"),
        ("medium", "p4"),
        ("slow", "p5"),
        ("veryslow", "p7"),
        ("P6", "p6"),
        ("p1", "p1"),
        ("0", "p7"),
        ("8", "p3"),
        ("13", "p1"),
    ],
)
def test_presets_map_by_speed(preset, expected):
    assert nvenc_preset(preset, "h264_nvenc") == expected


def test_preset_default_follows_the_cpu_counterpart_and_bad_names_are_one_line():
    assert nvenc_preset(None, "av1_nvenc") == "p3"  # libsvtav1's default preset 8
    for bad in ("placebo2", "14", "p8"):
        with pytest.raises(VidrestoreError, match="p1 .fastest. .. p7"):
            nvenc_preset(bad, "hevc_nvenc")


def test_crf_becomes_cq_on_the_same_scale():
    assert [nvenc_cq(None, e) for e in ("h264_nvenc", "hevc_nvenc", "av1_nvenc")] == [18, 20, 28]
    assert nvenc_cq(23, "h264_nvenc") == 23 and nvenc_cq(63, "av1_nvenc") == 63
    with pytest.raises(VidrestoreError, match="crf 0 .. 51, not 52"):
        nvenc_cq(52, "hevc_nvenc")


def test_options_are_constant_quality_vbr_without_a_bitrate_cap():
    options = nvenc_options("hevc_nvenc", 22, "slow", {"spatial-aq": "1"})
    assert options == {"rc": "vbr", "cq": "22", "b": "0", "preset": "p5", "tune": "hq", "spatial-aq": "1"}
    # every key is an option the encoder knows, so FFmpeg takes the dict as it is
    supported = av.CodecContext.create("hevc_nvenc", "w").supported_options
    assert set(options) <= {o.name for o in supported.generic} | {o.name for o in supported.private}
    with pytest.raises(VidrestoreError, match="h264_nvenc has no option 'x264-params'"):
        nvenc_options("h264_nvenc", None, None, {"x264-params": "aq-mode=3"})


@pytest.mark.parametrize(
    "source,expected",
    [
        ("yuv420p", "yuv420p"),
        ("yuv444p", "yuv444p"),
        ("yuv420p10le", "p010le"),
        ("yuv420p12le", "p016le"),
        ("yuv444p10le", "yuv444p16le"),
        ("yuv444p12le", "yuv444p16le"),
        ("yuv422p10le", None),
        ("rgb24", None),
        ("gray", None),
    ],
)
def test_pixel_formats_keep_depth_and_chroma(source, expected):
    assert nvenc_pix_fmt(source) == expected
    if expected is not None:
        assert expected in [f.name for f in av.Codec("hevc_nvenc", "w").video_formats]


# -- the probes ------------------------------------------------------------------------------------


def test_cuda_available_is_torch_answer(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert hardware.cuda_available()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not hardware.cuda_available()


@pytest.mark.skipif(torch.cuda.is_available(), reason="NVENC may open on this machine")
def test_probe_reports_ffmpegs_reason_without_a_driver():
    failure = probe_encoder("h264_nvenc", 64, 64, "yuv420p", nvenc_options("h264_nvenc", None, None, {}))
    assert isinstance(failure, str) and failure


def _auto(cpu="libx264", pix_fmt="yuv420p", width=160, height=120, plain=True, crf=None):
    return auto_encoder(cpu, width=width, height=height, pix_fmt=pix_fmt, crf=crf, preset=None, plain=plain)


def test_auto_is_the_cpu_default_without_cuda(monkeypatch):
    monkeypatch.setattr(hardware, "cuda_available", lambda: False)
    assert _auto() == ("libx264", None)


def test_auto_takes_nvenc_only_where_it_opens_and_writes_the_same_stream(monkeypatch, fake_gpu):
    opened = []
    monkeypatch.setattr(hardware, "probe_encoder", lambda *a: opened.append(a) or None)
    assert _auto() == ("h264_nvenc", None)
    assert _auto("libx265", pix_fmt="yuv444p") == ("hevc_nvenc", None)
    assert opened[0][:4] == ("h264_nvenc", 160, 120, "yuv420p") and opened[0][4]["cq"] == "18"
    assert _auto("ffv1") == ("ffv1", None)  # no NVENC counterpart: nothing to say
    for kw, why in [
        (dict(pix_fmt="yuv420p10le"), "cannot take yuv420p10le as it is"),
        (dict(width=161), "odd side"),
        (dict(plain=False), "only the CPU encoder is known to keep"),
        (dict(crf=60), "crf 0 .. 51"),
    ]:
        codec, notice = _auto(**kw)
        assert codec == "libx264" and why in notice and "not h264_nvenc" in notice
    monkeypatch.setattr(hardware, "probe_encoder", lambda *a: "Operation not permitted")
    codec, notice = _auto()
    assert codec == "libx264" and "h264_nvenc does not open on this GPU (Operation not permitted)" in notice


def test_decoder_choice(monkeypatch):
    monkeypatch.setattr(hardware, "cuda_available", lambda: False)
    assert decoder_hwaccel("none", pipe=False) is None
    assert decoder_hwaccel("auto", pipe=False) is None
    with pytest.raises(VidrestoreError, match="no CUDA device is available; use hwaccel auto or none"):
        decoder_hwaccel("cuda", pipe=False)
    monkeypatch.setattr(hardware, "cuda_available", lambda: True)
    assert decoder_hwaccel("auto", pipe=True) is None
    with pytest.raises(VidrestoreError, match="not standard input"):
        decoder_hwaccel("cuda", pipe=True)
    assert isinstance(decoder_hwaccel("cuda", pipe=False), av.codec.hwaccel.HWAccel)


# -- the CLI and the pipeline without a GPU --------------------------------------------------------


@pytest.mark.parametrize(
    "gpu,flags,needle",
    [
        (False, ["--hwaccel", "cuda"], "hwaccel cuda (NVDEC decoding) needs an NVIDIA GPU"),
        (False, ["--codec", "h264_nvenc"], "h264_nvenc needs an NVIDIA GPU with its driver"),
        (True, ["--hwaccel", "cuda"], "hwaccel cuda: NVDEC could not open"),
        (True, ["--codec", "hevc_nvenc"], "hevc_nvenc cannot open for 160x120 yuv420p"),
        (False, ["--hwaccel", "vulkan"], "--hwaccel: must be one of none, auto, cuda"),
        (False, ["--codec", "av1_nvenc", "--preset", "fastest"], "av1_nvenc has no preset 'fastest'"),
    ],
)
def test_explicit_gpu_requests_without_one_are_one_line_and_leave_nothing(
    tmp_path, tiny_checkpoint, capsys, monkeypatch, clip, gpu, flags, needle
):
    if torch.cuda.is_available():
        pytest.skip("a real GPU may open NVDEC/NVENC")
    monkeypatch.setattr(hardware, "cuda_available", lambda: gpu)
    dst = tmp_path / "out.mp4"
    args = ["restore", str(clip), "-o", str(dst), "--weights", tiny_checkpoint, "--detector", "centerface"]
    assert main([*args, "--device", "cpu", "--debug-overlay", "-q", *flags]) == 2
    assert needle in _one_line(capsys)
    assert list(tmp_path.iterdir()) == []


def _restore(tiny_checkpoint: str, src: Path, dst: Path, **kw) -> vidrestore.pipeline.RunReport:
    """A few frames through the whole pipeline; the overlay stands in for the model (the video path is
    what is tested here)."""
    opts = dict(weights=tiny_checkpoint, detector="centerface", progress=False, device="cpu", frames=4)
    return vidrestore.restore_video(src, dst, debug_overlay=True, frame_batch=4, **opts, **kw)


def test_auto_without_a_gpu_is_the_cpu_path_silently(tmp_path, tiny_checkpoint, clip, monkeypatch):
    monkeypatch.setattr(hardware, "cuda_available", lambda: False)
    report = _restore(tiny_checkpoint, clip, tmp_path / "out.mp4", codec="auto", hwaccel="auto")
    assert (report.codec, report.pix_fmt) == ("libx264", "yuv420p")
    assert report.notices == [] and report.settings["hwaccel"] == "auto"
    with av.open(str(tmp_path / "out.mp4")) as c:
        assert c.streams.video[0].codec_context.name == "h264"


def test_auto_with_a_gpu_that_cannot_open_falls_back_with_notices(tmp_path, tiny_checkpoint, clip, fake_gpu):
    if torch.cuda.is_available():
        pytest.skip("a real GPU may open NVDEC/NVENC")
    report = _restore(tiny_checkpoint, clip, tmp_path / "out.mp4", codec="auto", hwaccel="auto")
    assert report.codec == "libx264" and report.frames == 4
    assert report.notices[0].startswith("hwaccel auto: NVDEC could not open")
    assert report.notices[1].startswith("codec auto: encoding with libx264 on the CPU, not h264_nvenc")


def test_sink_auto_hands_nvenc_our_settings_and_keeps_non_square_pixels_on_the_cpu(
    tmp_path, clip, fake_gpu, monkeypatch
):
    """With the probe passing, auto builds h264_nvenc with the mapped settings (which then cannot start on
    this machine: one line, no file); a non-square pixel aspect keeps libx264, with a notice."""
    monkeypatch.setattr(hardware, "probe_encoder", lambda *a: None)
    out = tmp_path / "out"
    out.mkdir()
    expected = r"h264_nvenc could not start with 160x120 yuv420p and rc=vbr, cq=18, b=0, preset=p4, tune=hq"
    with VideoSource(clip) as src, pytest.raises(VidrestoreError, match=expected):
        VideoSink(out / "out.mp4", src.description, EncodeOptions(codec="auto"))
    assert list(out.iterdir()) == []
    spec = make_clip(tmp_path / "sar.mkv", sar=Fraction(4, 3), seconds=0.1, audio=False)
    with VideoSource(spec.path) as src:
        sink = VideoSink(out / "sar.mkv", src.description, EncodeOptions(codec="auto"))
        sink.abort()
    assert sink.codec == "libx264" and "non-square pixels" in sink.notices[0]
    woven = make_interlaced_clip(tmp_path / "woven.mpg", size=(160, 120), frames=2)  # square pixels
    with VideoSource(woven.path) as src:
        assert src.description.sample_aspect_ratio in (None, 1) and src.description.field_order == "bff"
        sink = VideoSink(out / "woven.mkv", src.description, EncodeOptions(codec="auto"))
        sink.abort()
    assert sink.codec == "libx264" and "interlaced fields" in sink.notices[0]


def test_sink_picks_nvencs_format_and_options_for_10_bit(tmp_path, monkeypatch):
    """An explicit NVENC encoder on 10-bit input: p010le and constant-quality VBR reach the encoder (which
    then cannot open here, after the choice is made)."""
    spec = make_clip(tmp_path / "in.mkv", pix_fmt="yuv420p10le", codec="libx265", seconds=0.1, audio=False)
    seen = {}

    def require(encoder, width, height, pix_fmt, options):
        seen.update(encoder=encoder, pix_fmt=pix_fmt, options=options)
        raise VidrestoreError("stop")

    monkeypatch.setattr(vidrestore.io.sink, "require_encoder", require)
    with VideoSource(spec.path) as src, pytest.raises(VidrestoreError, match="stop"):
        VideoSink(tmp_path / "out.mkv", src.description, EncodeOptions(codec="hevc_nvenc", crf=24))
    assert seen == {
        "encoder": "hevc_nvenc",
        "pix_fmt": "p010le",
        "options": {"rc": "vbr", "cq": "24", "b": "0", "preset": "p4", "tune": "hq"},
    }
    assert not (tmp_path / "out.mkv").exists()


# -- on a GPU --------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("pix_fmt,codec", [("yuv420p", "libx264"), ("yuv420p10le", "libx265")])
def test_nvdec_frames_equal_the_cpu_decoders(tmp_path, pix_fmt, codec):
    # NVDEC's HEVC minimum is 144x144: a smaller clip would fall back to the CPU decoder unseen
    spec = make_clip(
        tmp_path / "in.mkv", pix_fmt=pix_fmt, codec=codec, size=(320, 240), seconds=0.5, audio=False
    )
    with VideoSource(spec.path) as cpu, VideoSource(spec.path, hwaccel="cuda") as gpu:
        assert gpu._hw_format == pix_fmt and gpu.notices == []
        pairs = list(zip(cpu.frames(), gpu.frames(), strict=True))
    assert len(pairs) == spec.frames
    for a, b in pairs:
        assert b.frame.format.name == pix_fmt and a.pts == b.pts
        for pa, pb in zip(a.frame.planes, b.frame.planes, strict=True):
            assert np.array_equal(_plane(pa, a.frame), _plane(pb, b.frame))


def _plane(plane, frame) -> np.ndarray:
    dtype = np.dtype("<u2") if frame.format.components[0].bits > 8 else np.dtype(np.uint8)
    rows = np.frombuffer(plane, dtype).reshape(plane.height, plane.line_size // dtype.itemsize)
    return rows[:, : plane.width]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_nvenc_end_to_end_where_the_gpu_has_it(tmp_path, tiny_checkpoint, clip):
    """NVDEC in, NVENC out with colour tags kept; a GPU without NVENC (A100, H100, H200) takes libx264."""
    report = _restore(tiny_checkpoint, clip, tmp_path / "out.mp4", codec="auto", hwaccel="cuda")
    nvenc_opens = not any(n.startswith("codec auto") for n in report.notices)
    assert report.codec == ("h264_nvenc" if nvenc_opens else "libx264")
    with av.open(str(tmp_path / "out.mp4")) as out, av.open(str(clip)) as src:
        a, b = out.streams.video[0], src.streams.video[0]
        assert a.frames == 4
        frame = next(out.decode(a))
        ref = next(src.decode(b))
        assert (frame.colorspace, frame.color_range, frame.color_primaries, frame.color_trc) == (
            ref.colorspace,
            ref.color_range,
            ref.color_primaries,
            ref.color_trc,
        )
