"""The VapourSynth filter: same output as the CLI engine, whatever the request order and thread count;
formats, props and errors. CPU only, offline: the tiny model and the CenterFace detector."""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import vapoursynth as vs
from clips import face_path, make_clip, render
from vidrestore.plugins.vapoursynth import restore

from vidrestore import engine

core = vs.core
SIZE = (160, 120)
TIMEOUT = 120  # seconds for any one frame: a hang fails the test instead of blocking the run


@pytest.fixture(autouse=True)
def _offline(offline):
    """Every test here runs offline."""


@pytest.fixture(scope="session")
def vapoursynth_config(tmp_path_factory) -> Path:
    """A private XDG_CONFIG_HOME holding ``vapoursynth config``'s answer (where this Python is), so that
    vspipe runs without the user's own configuration, and without touching it."""
    home = tmp_path_factory.mktemp("xdg")
    env = {**os.environ, "XDG_CONFIG_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "vapoursynth", "config"], env=env, check=True, capture_output=True)
    return home


@pytest.fixture
def vspipe_env(vapoursynth_config) -> dict[str, str]:
    """The environment for vspipe and the CLI: this test's (offline) one, with the private configuration.

    OpenMP threads that sleep instead of spinning: torch's spinning threads stall each other many times
    over on a busy machine with few cores, which turns seconds into minutes here (and tells nothing)."""
    return {**os.environ, "XDG_CONFIG_HOME": str(vapoursynth_config), "OMP_WAIT_POLICY": "PASSIVE"}


def frames_clip(frames: list[np.ndarray], fmt: int = vs.RGB24, **props: object) -> vs.VideoNode:
    """A clip of (H, W, 3) uint8 RGB frames, converted to ``fmt`` (exact: Point, no dithering needed)."""
    h, w = frames[0].shape[:2]
    blank = core.std.BlankClip(format=vs.RGB24, width=w, height=h, length=len(frames), fpsnum=24, fpsden=1)

    def fill(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        out = f.copy()
        for p in range(3):
            np.asarray(out[p])[:] = frames[n][..., p]
        out.props.update(props)
        return out

    clip = blank.std.ModifyFrame(clips=blank, selector=fill)
    return clip if fmt == vs.RGB24 else core.resize.Point(clip, format=fmt)


def face_frames(n: int, face: bool = True) -> list[np.ndarray]:
    boxes = face_path(*SIZE, n)
    return [render(*SIZE, boxes[i] if face else None) for i in range(n)]


def planes(frame: vs.VideoFrame) -> np.ndarray:
    return np.stack([np.asarray(frame[p]) for p in range(frame.format.num_planes)])


def digest(frame: vs.VideoFrame) -> str:
    h = hashlib.sha256(planes(frame).tobytes())
    h.update(repr(sorted(frame.props.items())).encode())
    return h.hexdigest()


def tiny(clip: vs.VideoNode, checkpoint: str, **kw: object) -> vs.VideoNode:
    return restore(clip, weights=checkpoint, detector="centerface", device="cpu", **kw)


def read_y4m(data: bytes) -> np.ndarray:
    """(N, H, W, 3) RGB from a 4:4:4 y4m whose Y, U, V planes carry G, B, R (see ``VPY``)."""
    header, rest = data.split(b"\n", 1)
    fields = {f[:1]: f[1:] for f in header.split()[1:]}
    assert fields[b"C"].startswith(b"444")
    w, h = int(fields[b"W"]), int(fields[b"H"])
    frames = []
    while rest:
        marker, rest = rest.split(b"\n", 1)
        assert marker.startswith(b"FRAME")
        gbr = np.frombuffer(rest[: 3 * w * h], np.uint8).reshape(3, h, w)
        frames.append(np.stack([gbr[2], gbr[0], gbr[1]], axis=-1))
        rest = rest[3 * w * h :]
    return np.stack(frames)


# The script vspipe runs: bestsource → RGB24 (the clip's BT.709 matrix) → restore → the RGB planes as 4:4:4
# y4m, losslessly (Y=G, U=B, V=R), so that what comes out is compared before any encoding.
VPY = """
import vapoursynth as vs
from vidrestore.plugins.vapoursynth import restore
core = vs.core
clip = core.bs.VideoSource({src!r}, cachemode=0)
clip = core.resize.Bicubic(clip, format=vs.RGB24, matrix_in_s="709")
clip = restore(clip, weights={weights!r}, detector="centerface", device="cpu", segment={segment},
               detect_every={detect_every})
core.std.ShufflePlanes(clip, planes=[1, 2, 0], colorfamily=vs.YUV).set_output()
"""


@pytest.mark.parametrize("detect_every", [1, 3])
def test_vspipe_matches_the_cli_engine(tmp_path, tiny_checkpoint, vspipe_env, detect_every):
    """48 frames in 3 segments of 16 through vspipe, against ``vidrestore restore`` on the same RGB."""
    spec = make_clip(tmp_path / "in.mp4", seconds=2.0, audio=False)
    # The CLI's input: the RGB frames the script hands to restore(), stored losslessly (UT Video, planar GBR).
    source = core.resize.Bicubic(
        core.bs.VideoSource(str(spec.path), cachemode=0), format=vs.RGB24, matrix_in_s="709"
    )
    rgb = np.stack([planes(f).transpose(1, 2, 0) for f in source.frames()])
    with av.open(str(tmp_path / "rgb.avi"), "w") as out:
        stream = out.add_stream("utvideo", rate=Fraction(24))
        stream.width, stream.height, stream.pix_fmt = *SIZE, "gbrp"
        stream.codec_context.time_base = Fraction(1, 24)
        for i, frame in enumerate(rgb):
            picture = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="gbrp")
            picture.pts, picture.time_base = i, Fraction(1, 24)
            out.mux(stream.encode(picture))
        out.mux(stream.encode(None))
    cli_command = [Path(sys.executable).with_name("vidrestore"), "restore", tmp_path / "rgb.avi"]
    cli_command += ["-o", tmp_path / "cli.avi", "--report", tmp_path / "report.json", "-q"]
    cli_command += ["--weights", tiny_checkpoint, "--detector", "centerface", "--device", "cpu"]
    cli_command += ["--codec", "utvideo", "--pix-fmt", "gbrp", "--detect-every", str(detect_every)]
    cli_run = subprocess.run(cli_command, env=vspipe_env, capture_output=True, timeout=300)
    assert cli_run.returncode == 0, cli_run.stderr.decode()
    with av.open(str(tmp_path / "cli.avi")) as c:
        cli = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])

    script = tmp_path / "restore.vpy"
    script.write_text(
        VPY.format(src=str(spec.path), weights=tiny_checkpoint, segment=16, detect_every=detect_every)
    )
    run = subprocess.run(
        [Path(sys.executable).with_name("vspipe"), "-c", "y4m", script, "-"],
        env=vspipe_env,
        capture_output=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr.decode()
    filtered = read_y4m(run.stdout)

    assert filtered.shape == cli.shape == rgb.shape == (spec.frames, SIZE[1], SIZE[0], 3)
    with_faces = json.loads((tmp_path / "report.json").read_text())["frames_with_faces"]
    assert with_faces >= spec.frames * 0.8
    restored = [i for i in range(spec.frames) if not np.array_equal(cli[i], rgb[i])]
    assert len(restored) == with_faces  # the comparison is not between two copies of the input
    assert np.array_equal(filtered, cli)


def test_the_sample_script_runs_under_vspipe(tmp_path, tiny_checkpoint, vspipe_env):
    spec = make_clip(tmp_path / "in.mp4", seconds=0.5, audio=False)
    sample = Path(__file__).parents[1] / "samples" / "restore.vpy"
    args = {"src": spec.path, "weights": tiny_checkpoint, "device": "cpu", "detector": "centerface"}
    arg_flags = [flag for k, v in args.items() for flag in ("-a", f"{k}={v}")]
    run = subprocess.run(
        [Path(sys.executable).with_name("vspipe"), "-c", "y4m", *arg_flags, sample, "-"],
        env={**vspipe_env, "XDG_CACHE_HOME": str(tmp_path / "cache")},  # where bestsource may keep its index
        capture_output=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr.decode()
    header = run.stdout.split(b"\n", 1)[0].split()
    assert {b"C420", b"W160", b"H120", b"F24:1"} <= set(header)  # the source's format, size and rate
    assert run.stdout.count(b"FRAME\n") == spec.frames


def test_output_ignores_request_order_and_thread_count(tiny_checkpoint):
    """Random request order, all frames in flight at once, 2 and 4 threads, and a cache of one segment (so
    segments are evicted and restored again): every frame hashes the same as in a linear run on one."""
    frames = face_frames(32)
    threads = core.num_threads
    try:
        core.num_threads = 1
        linear = tiny(frames_clip(frames), tiny_checkpoint, segment=16, frame_batch=8)
        expected = [digest(linear.get_frame(n)) for n in range(len(frames))]
        rng = random.Random(6)
        for count in (2, 4):
            core.num_threads = count
            clip = tiny(frames_clip(frames), tiny_checkpoint, segment=16, frame_batch=8, cache=1)
            order = rng.sample(range(len(frames)), len(frames))
            requests = {n: clip.get_frame_async(n) for n in order}
            got = {n: digest(r.result(timeout=TIMEOUT)) for n, r in requests.items()}
            assert [got[n] for n in range(len(frames))] == expected, f"{count} threads"
    finally:
        core.num_threads = threads
    assert sum(linear.get_frame(n).props["VidrestoreRestored"] for n in range(len(frames))) >= 25


def test_props_kept_and_added(tiny_checkpoint):
    clip = tiny(frames_clip(face_frames(24), Origin="test", _Matrix=0), tiny_checkpoint, segment=16)
    for n in (0, 15, 16, 23):
        props = clip.get_frame(n).props
        assert props["Origin"] == "test" and props["_Matrix"] == 0
        assert props["VidrestoreFaces"] == 1 and props["VidrestoreRestored"] == 1
        assert props["VidrestoreTrackIDs"] == 1  # one ID: VapourSynth reads a 1-element array as a scalar
        assert props["VidrestoreSegment"] == n // 16


@pytest.mark.parametrize("name", ["RGB24", "RGB48", "RGBH", "RGBS"])
def test_rgb_formats_keep_format_size_and_untouched_pixels(tiny_checkpoint, name):
    fmt = getattr(vs, name)
    frames = face_frames(8)
    source = frames_clip(frames, fmt)
    clip = tiny(source, tiny_checkpoint, segment=8)
    assert (clip.format.id, clip.width, clip.height, clip.num_frames) == (fmt, *SIZE, 8)
    reference = np.stack([planes(f) for f in tiny(frames_clip(frames), tiny_checkpoint, segment=8).frames()])
    top = {vs.RGB24: 255, vs.RGB48: 65535}.get(fmt, 1)
    for n, (src, out) in enumerate(zip(source.frames(), clip.frames(), strict=True)):
        a, b = planes(src), planes(out)
        assert b.dtype == a.dtype
        changed = (a != b).any(axis=0)
        x, y, w, h = face_path(*SIZE, 8)[n]
        assert changed.any() and not changed[:, : max(0, x - 8)].any() and not changed[:, x + w + 8 :].any()
        # The same restoration as from 8 bits: within what the input's own rounding moves.
        diff = np.abs(b.astype(np.float64) / top - reference[n] / 255)
        assert np.mean(diff) < 2e-3 and np.percentile(diff, 99) < 0.05


def test_a_clip_without_faces_passes_through_bit_exact(tiny_checkpoint):
    for fmt in (vs.RGB24, vs.RGBS):
        source = frames_clip(face_frames(12, face=False), fmt, VidrestoreTrackIDs=[7, 8])
        clip = tiny(source, tiny_checkpoint, segment=8)
        for a, b in zip(source.frames(), clip.frames(), strict=True):
            assert np.array_equal(planes(a), planes(b))
            assert b.props["VidrestoreFaces"] == 0 and b.props["VidrestoreRestored"] == 0
            assert "VidrestoreTrackIDs" not in b.props  # an earlier restore()'s IDs do not leak through


def variable_clip() -> vs.VideoNode:
    small, large = core.std.BlankClip(width=32, height=32), core.std.BlankClip(width=64, height=64)
    return core.std.Splice([small, large], mismatch=True)


@pytest.mark.parametrize(
    ("clip", "hint"),
    [
        (lambda: core.std.BlankClip(format=vs.YUV420P8), 'Bicubic(clip, format=vs.RGBS, matrix_in_s="709")'),
        (lambda: core.std.BlankClip(format=vs.GRAY8), "core.resize.Point(clip, format=vs.RGBS)"),
        (lambda: core.std.BlankClip(format=vs.RGB30), "core.resize.Point(clip, format=vs.RGB48)"),
        (variable_clip, "varies from frame to frame"),
    ],
    ids=["yuv", "gray", "rgb30", "variable"],
)
def test_unsupported_formats_name_the_conversion(clip, hint):
    with pytest.raises(vs.Error, match="vidrestore") as err:
        restore(clip(), device="cpu")
    assert hint in str(err.value)


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"segment": 12}, "segment (12) must be a multiple of frame_batch (8)"),
        ({"smooth_window": 0}, "smooth_window"),
        ({"detector": "haar"}, "detector must be one of retinaface, centerface, not 'haar'"),
        ({"codec": "ffv1"}, "unknown option(s): codec"),
        ({"batch": 0}, "frame_batch must be at least 1, not 0"),
        ({"weights": "/nonexistent/gfpgan.pth"}, "gfpgan.pth"),
        ({"cache": 0}, "cache"),
    ],
)
def test_bad_options_are_vs_errors(tiny_checkpoint, options, needle):
    kw = {"weights": tiny_checkpoint, "detector": "centerface", "device": "cpu", **options}
    with pytest.raises(vs.Error, match="vidrestore") as err:
        restore(frames_clip(face_frames(2)), **kw)
    assert needle in str(err.value)


def test_errors_in_a_frame_are_vs_errors_and_nothing_hangs(tiny_checkpoint, monkeypatch):
    calls = []
    real = engine.FaceRestorer.restore

    def fails_once(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the GPU fell off the bus")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(engine.FaceRestorer, "restore", fails_once)
    clip = tiny(frames_clip(face_frames(16)), tiny_checkpoint, segment=8)
    with pytest.raises(vs.Error, match="vidrestore: frame 3: RuntimeError: the GPU fell off the bus"):
        clip.get_frame_async(3).result(timeout=TIMEOUT)
    # The filter is not stuck: the same segment is restored on the next request, then the others.
    assert clip.get_frame_async(3).result(timeout=TIMEOUT).props["VidrestoreRestored"] == 1
    assert all(f.props["VidrestoreRestored"] for f in clip.frames())

    def broken(n: int, f: vs.VideoFrame) -> vs.VideoFrame:
        if n == 5:
            raise ValueError("corrupt packet")
        return f

    blank = core.std.BlankClip(format=vs.RGB24, width=64, height=48, length=48)
    clip = tiny(blank.std.ModifyFrame(clips=blank, selector=broken), tiny_checkpoint, segment=8)
    needle = "vidrestore: frame 12: reading source frame 5 failed: ValueError: corrupt packet"
    with pytest.raises(vs.Error, match=needle):  # frame 5 is in the warm-up of frame 12's segment
        clip.get_frame_async(12).result(timeout=TIMEOUT)
    assert clip.get_frame_async(40).result(timeout=TIMEOUT).props["VidrestoreFaces"] == 0
