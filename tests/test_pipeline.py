"""`vidrestore restore` end to end on small generated clips, with a tiny model and the offline detector."""

from __future__ import annotations

import json
import os
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from clips import make_clip

import vidrestore
from vidrestore import pipeline
from vidrestore.cli import main
from vidrestore.engine import FaceRestorer
from vidrestore.errors import VidrestoreError
from vidrestore.options import VideoOptions
from vidrestore.stream import FaceStream


@pytest.fixture(autouse=True)
def _offline(offline):
    """Every test here runs offline."""


def decode(path: Path, fmt: str = "rgb24") -> tuple[list[np.ndarray], list[int], Fraction]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [(f.to_ndarray(format=fmt), f.pts) for f in c.decode(s)]
        return [f for f, _ in frames], [p for _, p in frames], s.time_base


def audio_samples(path: Path) -> int:
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return 0
        return sum(f.samples for f in c.decode(c.streams.audio[0]))


def restore(tiny_checkpoint: str, src: Path, dst: Path, **kw) -> pipeline.RunReport:
    opts = dict(weights=tiny_checkpoint, detector="centerface", progress=False, frame_batch=4)
    opts.update(kw)
    return vidrestore.restore_video(src, dst, **opts)


def test_mp4_keeps_frames_timestamps_audio_and_reports(tmp_path, tiny_checkpoint):
    spec = make_clip(tmp_path / "in.mp4", seconds=1.5)
    report_path = tmp_path / "run.json"
    report = restore(tiny_checkpoint, spec.path, tmp_path / "out.mp4", report=report_path)
    frames, pts, tb = decode(tmp_path / "out.mp4")
    src_frames, src_pts, src_tb = decode(spec.path)
    assert len(frames) == len(src_frames) == spec.frames == report.frames
    assert [p * tb for p in pts] == [p * src_tb for p in src_pts]
    assert abs(audio_samples(tmp_path / "out.mp4") - audio_samples(spec.path)) <= 1024
    assert report.frames_with_faces >= spec.frames * 0.8 and report.faces >= report.frames_with_faces
    data = json.loads(report_path.read_text())
    for key in ("frames", "faces", "fps", "stages", "settings", "versions", "codec"):
        assert key in data
    for stage in ("decode", "detect", "warp", "restore", "paste", "encode"):
        assert data["stages"][stage] > 0, stage
    assert data["versions"]["av"] == av.__version__
    assert not list(tmp_path.glob(".*part*"))


def test_lossless_output_changes_only_the_faces(tmp_path, tiny_checkpoint):
    """ffv1 in and out: every pixel away from the face path is bit-exact with the source."""
    spec = make_clip(tmp_path / "in.mkv", codec="ffv1", seconds=1.0, audio=False)
    restore(tiny_checkpoint, spec.path, tmp_path / "out.mkv", codec="ffv1")
    out, _, _ = decode(tmp_path / "out.mkv", "yuv444p")
    src, _, _ = decode(spec.path, "yuv444p")
    changed = 0
    for o, s, (x, y, w, h) in zip(out, src, spec.boxes, strict=True):
        far = np.ones(o.shape[1:], bool)
        m = w // 2  # the paste can reach a little past the face box (the crop is wider than the face)
        far[max(0, y - m) : y + h + m, max(0, x - m) : x + w + m] = False
        assert np.array_equal(o[:, far], s[:, far])
        changed += int((o != s).any())
    assert changed >= len(out) * 0.8


def test_a_clip_without_faces_passes_through_bit_exact(tmp_path, tiny_checkpoint):
    spec = make_clip(tmp_path / "in.mkv", codec="ffv1", seconds=0.5, face=False, audio=False)
    report = restore(tiny_checkpoint, spec.path, tmp_path / "out.mkv", codec="ffv1")
    assert report.faces == 0
    out, _, _ = decode(tmp_path / "out.mkv", "yuv420p")
    src, _, _ = decode(spec.path, "yuv420p")
    assert all(np.array_equal(a, b) for a, b in zip(out, src, strict=True))


def test_ten_bit_vfr_stays_ten_bit_vfr(tmp_path, tiny_checkpoint):
    spec = make_clip(tmp_path / "in.mkv", codec="libx265", pix_fmt="yuv420p10le", vfr=True, seconds=1.0)
    restore(tiny_checkpoint, spec.path, tmp_path / "out.mkv")
    with av.open(str(tmp_path / "out.mkv")) as c:
        s = c.streams.video[0]
        assert s.codec_context.pix_fmt == "yuv420p10le"
    _, pts, tb = decode(tmp_path / "out.mkv")
    assert [float(p * tb) for p in pts] == pytest.approx(spec.times, abs=1e-3)
    assert len(set(np.diff(pts))) > 1  # still variable


def test_piece_of_the_video(tmp_path, tiny_checkpoint):
    spec = make_clip(tmp_path / "in.mp4", seconds=2.0, fps=24)
    report = restore(tiny_checkpoint, spec.path, tmp_path / "part.mp4", start=0.5, end=1.5)
    assert 22 <= report.frames <= 26
    _, pts, tb = decode(tmp_path / "part.mp4")
    assert float(pts[0] * tb) < 0.05  # starts at zero
    assert abs(audio_samples(tmp_path / "part.mp4") / 48000 - report.frames / 24) < 2 / 24
    report = restore(tiny_checkpoint, spec.path, tmp_path / "first.mp4", max_frames=5)
    assert report.frames == 5 and len(decode(tmp_path / "first.mp4")[0]) == 5


def test_debug_overlay_needs_no_weights(tmp_path, capsys):
    spec = make_clip(tmp_path / "in.mp4", seconds=0.5)
    assert (
        main(
            [
                "restore",
                str(spec.path),
                "-o",
                str(tmp_path / "dbg.mp4"),
                "--debug-overlay",
                "--detector",
                "centerface",
                "-q",
            ]
        )
        == 0
    )
    frames, _, _ = decode(tmp_path / "dbg.mp4")
    src, _, _ = decode(spec.path)

    # Green boxes were drawn where the faces are.
    def greenish(f: np.ndarray) -> int:
        return int(((f[..., 1].astype(int) - f[..., 0]) > 120).sum())

    assert len(frames) == len(src)
    assert all(greenish(f) > greenish(s) + 8 for f, s in zip(frames, src, strict=True))


def test_unknown_api_option_is_a_user_error(tmp_path):
    with pytest.raises(VidrestoreError, match="colour"):
        vidrestore.restore_video(tmp_path / "a.mp4", tmp_path / "b.mp4", colour=True)


def _one_line(capsys) -> str:
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line]
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


@pytest.mark.parametrize(
    "case,needle",
    [
        ("missing", "no such file"),
        ("empty", "empty"),
        ("garbage", "not a video"),
        ("audio_only", "no video stream"),
        ("same", "input"),
        ("exists", "--overwrite"),
        ("unwritable", "not a directory"),
    ],
)
def test_bad_inputs_get_one_line_and_leave_nothing(tmp_path, tiny_checkpoint, capsys, case, needle):
    src, dst = tmp_path / "in.mp4", tmp_path / "out" / "out.mp4"
    dst.parent.mkdir()
    if case == "empty":
        src.write_bytes(b"")
    elif case == "garbage":
        src.write_bytes(np.random.default_rng(0).bytes(5000))
    elif case == "audio_only":
        with av.open(str(src), "w") as c:
            s = c.add_stream("aac", rate=48000)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 48000
            for pkt in s.encode(frame):
                c.mux(pkt)
            for pkt in s.encode(None):
                c.mux(pkt)
    elif case != "missing":
        make_clip(src, seconds=0.3)
    if case == "same":
        dst = src
    elif case == "exists":
        dst.write_bytes(b"keep me")
    elif case == "unwritable":  # a parent that is a file: no directory to write in, even for root
        (tmp_path / "file").write_bytes(b"x")
        dst = tmp_path / "file" / "out.mp4"
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    args = [
        "restore",
        str(src),
        "-o",
        str(dst),
        "--weights",
        tiny_checkpoint,
        "--detector",
        "centerface",
        "-q",
    ]
    code = main(args)
    assert code != 0
    assert needle in _one_line(capsys)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_truncated_input_restores_what_decodes_and_says_so(tmp_path, tiny_checkpoint, capsys):
    spec = make_clip(tmp_path / "in.mkv", seconds=2.0)
    data = spec.path.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    code = main(
        [
            "restore",
            str(cut),
            "-o",
            str(tmp_path / "out.mkv"),
            "--weights",
            tiny_checkpoint,
            "--detector",
            "centerface",
            "-q",
        ]
    )
    assert code == 0
    assert "truncated" in capsys.readouterr().err
    n = len(decode(tmp_path / "out.mkv")[0])
    assert 0.3 * spec.frames < n < spec.frames


def test_interrupt_leaves_no_output(tmp_path, tiny_checkpoint, monkeypatch):
    spec = make_clip(tmp_path / "in.mp4", seconds=1.0)
    calls = []
    real = FaceStream._restore

    def interrupted(self, chunk):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(self, chunk)

    monkeypatch.setattr(FaceStream, "_restore", interrupted)
    with pytest.raises(KeyboardInterrupt):
        restore(tiny_checkpoint, spec.path, tmp_path / "out.mp4")
    assert not list(tmp_path.glob("*out*"))  # neither the output nor its temporary file
    # The run's own threads are gone (a VapourSynth filter's engine thread from another test may live on).
    assert not [t for t in threading.enumerate() if t.name in ("vidrestore-decode", "vidrestore-encode")]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_memory_stays_flat_on_a_long_clip(tmp_path, tiny_checkpoint):
    """A thousand and more frames: RSS after the first few hundred does not keep growing."""
    spec = make_clip(tmp_path / "long.mkv", size=(96, 64), seconds=60, fps=25, audio=True, gop=250)
    assert spec.frames == 1500
    samples: list[float] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(_rss_mb())
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        # Grain off: it keeps nothing between frames, and costs the tiny network's time again per face here;
        # the film steps that keep state along tracks (texture, colour per shot) stay on.
        report = restore(tiny_checkpoint, spec.path, tmp_path / "out.mkv", frame_batch=16, grain="off")
    finally:
        done.set()
        sampler.join()
    assert report.frames == 1500
    warm = samples[len(samples) // 5 : len(samples) // 5 + 5]
    assert max(samples[len(samples) // 5 :]) - max(warm) < 40, (warm, max(samples))


def test_tracks_are_reported_and_cuts_end_them(tmp_path, tiny_checkpoint):
    """Two shots joined: one track per shot, none across the cut; --no-smooth still tracks."""
    a = make_clip(tmp_path / "a.mkv", codec="ffv1", seconds=0.5, audio=False)
    b = make_clip(tmp_path / "b.mkv", codec="ffv1", seconds=0.5, audio=False, background=(200, 40, 40))
    joined = tmp_path / "joined.mkv"
    with av.open(str(joined), "w") as out:
        s = out.add_stream("ffv1", rate=24)
        s.width, s.height, s.pix_fmt = a.width, a.height, "yuv420p"
        for clip in (a, b):
            with av.open(str(clip.path)) as inp:
                for f in inp.decode(video=0):
                    f.pts = None
                    for pkt in s.encode(f):
                        out.mux(pkt)
        for pkt in s.encode(None):
            out.mux(pkt)
    for smooth in (1.0, 0.0):
        report = restore(tiny_checkpoint, joined, tmp_path / f"out{smooth}.mkv", codec="ffv1", smooth=smooth)
        assert report.frames == a.frames + b.frames
        spans = [(t["first_frame"], t["last_frame"]) for t in report.tracks]
        assert len(spans) >= 2, spans
        assert not any(first < a.frames <= last for first, last in spans), spans
        assert sum(t["faces"] for t in report.tracks) == report.faces


def test_detecting_every_other_frame_still_restores_every_frame(tmp_path, tiny_checkpoint):
    spec = make_clip(tmp_path / "in.mkv", codec="ffv1", seconds=1.0, audio=False)
    report = restore(tiny_checkpoint, spec.path, tmp_path / "out.mkv", codec="ffv1", detect_every=2)
    assert report.frames == spec.frames and report.frames_with_faces >= 0.85 * spec.frames


def test_a_reused_engine_reports_only_this_runs_stage_times(tmp_path, tiny_checkpoint):
    spec = make_clip(tmp_path / "in.mp4", seconds=0.5)
    opts = VideoOptions.from_keywords(weights=tiny_checkpoint, detector="centerface", progress=False)
    engine = FaceRestorer(opts.engine, progress=False)
    first = pipeline.run(spec.path, tmp_path / "a.mp4", opts, restorer=engine)
    second = pipeline.run(spec.path, tmp_path / "b.mp4", opts, restorer=engine)
    assert abs(first.stages["restore"] + second.stages["restore"] - engine.timings["restore"]) < 1e-9


@pytest.mark.parametrize(
    ("signame", "code", "how"), [("SIGTERM", 143, "terminated"), ("SIGHUP", 129, "hung up")]
)
def test_sigterm_and_sighup_unwind_like_ctrl_c_and_leave_nothing(
    tmp_path, tiny_checkpoint, signame, code, how
):
    """What job schedulers and ``docker stop`` send, and a closed SSH session: one line, 128 + the signal's
    number, no hidden temporary file."""
    import os
    import signal
    import subprocess
    import sys

    spec = make_clip(tmp_path / "in.mp4", seconds=6.0)
    env = {**os.environ, "VIDRESTORE_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "vidrestore.cli", "restore", str(spec.path), "-o", str(tmp_path / "out.mp4")]
    cmd += ["--weights", tiny_checkpoint, "--detector", "centerface", "-q"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".out.*.part.mp4")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(getattr(signal, signame))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == f"vidrestore: {how}; no partial output was left behind"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "home") == ["in.mp4"]


def test_a_killed_runs_temporary_file_is_removed_by_the_next_run(tmp_path, tiny_checkpoint):
    import subprocess
    import sys

    spec = make_clip(tmp_path / "in.mp4", seconds=0.5, audio=False)
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = tmp_path / f".out.{gone.stdout.strip()}-0badf00d.part.mp4"  # its process has exited
    live = tmp_path / f".out.{os.getpid()}-0badf00d.part.mp4"  # a run still going: not ours to remove
    stale.write_bytes(b"left by kill -9")
    live.write_bytes(b"being written")
    restore(tiny_checkpoint, spec.path, tmp_path / "out.mp4")
    assert not stale.exists() and live.exists() and (tmp_path / "out.mp4").stat().st_size > 0


def test_a_second_run_on_the_same_output_is_refused_in_one_line(tmp_path, tiny_checkpoint, capsys):
    import subprocess
    import sys

    spec = make_clip(tmp_path / "in.mp4", seconds=0.5, audio=False)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a run still going
    try:
        (tmp_path / f".out.{other.pid}-0badf00d.part.mp4").write_bytes(b"being written")
        args = ["restore", str(spec.path), "-o", str(tmp_path / "out.mp4"), "-q", "--overwrite"]
        assert main([*args, "--weights", tiny_checkpoint, "--detector", "centerface"]) == 2
    finally:
        other.kill()
        other.wait()
    assert f"another run (process {other.pid}) is writing this output" in _one_line(capsys)
    assert not (tmp_path / "out.mp4").exists()


def test_pipes_in_and_out(tmp_path, tiny_checkpoint):
    """``vidrestore restore - -o - --format matroska < in.mkv | player -``: nothing but video on stdout."""
    import subprocess
    import sys

    spec = make_clip(tmp_path / "in.mkv", seconds=0.5)
    env = {**os.environ, "VIDRESTORE_HOME": str(tmp_path / "home")}
    cmd = [sys.executable, "-m", "vidrestore.cli", "restore", "-", "-o", "-", "--format", "matroska"]
    cmd += ["--weights", tiny_checkpoint, "--detector", "centerface"]
    with spec.path.open("rb") as stdin:
        done = subprocess.run(cmd, stdin=stdin, capture_output=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    (tmp_path / "out.mkv").write_bytes(done.stdout)
    frames, pts, tb = decode(tmp_path / "out.mkv")
    _, src_pts, src_tb = decode(spec.path)
    assert len(frames) == spec.frames and [p * tb for p in pts] == [p * src_tb for p in src_pts]
    assert abs(audio_samples(tmp_path / "out.mkv") - audio_samples(spec.path)) <= 1024
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_mp4_to_a_pipe_is_fragmented(tmp_path, tiny_checkpoint, monkeypatch):
    import io

    spec = make_clip(tmp_path / "in.mp4", seconds=0.5, audio=False)
    out = io.BytesIO()
    monkeypatch.setattr("sys.stdout", io.TextIOWrapper(out))
    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    restore(tiny_checkpoint, spec.path, "-", format="mp4")
    (tmp_path / "out.mp4").write_bytes(out.getvalue())
    assert len(decode(tmp_path / "out.mp4")[0]) == spec.frames
    assert b"moof" in out.getvalue()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-o", "-"], "writing to standard output ('-o -') needs --format"),
        (["-o", "-", "--format", "nonsense"], "unknown container format 'nonsense'"),
        (["-o", "out.bin"], "cannot tell the container from the extension '.bin'"),
    ],
)
def test_pipe_and_format_mistakes_are_one_line(tmp_path, tiny_checkpoint, capsys, monkeypatch, args, message):
    spec = make_clip(tmp_path / "in.mkv", seconds=0.2, audio=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdout.isatty", lambda: False, raising=False)
    assert main(["restore", str(spec.path), *args, "--weights", tiny_checkpoint, "-q"]) == 2
    assert message in _one_line(capsys)


def test_format_names_the_container_of_any_file_name(tmp_path, tiny_checkpoint):
    spec = make_clip(tmp_path / "in.mkv", seconds=0.2, audio=False)
    report = restore(tiny_checkpoint, spec.path, tmp_path / "out.bin", format="matroska")
    assert report.codec == "libx264"
    with av.open(str(tmp_path / "out.bin")) as c:
        assert c.format.name.startswith("matroska")


def test_an_output_that_appears_during_the_run_is_never_replaced(tmp_path, tiny_checkpoint, monkeypatch):
    """Two runs writing one file: the one that finishes second keeps its result beside it, and says so."""
    spec = make_clip(tmp_path / "in.mp4", seconds=0.5, audio=False)
    dst = tmp_path / "out.mp4"
    real = FaceStream._restore

    def someone_else_writes(self, chunk):
        if not dst.exists():
            dst.write_bytes(b"the other run's output")
        return real(self, chunk)

    monkeypatch.setattr(FaceStream, "_restore", someone_else_writes)
    with pytest.raises(VidrestoreError, match=r"out\.mp4 was created by someone else") as err:
        restore(tiny_checkpoint, spec.path, dst)
    assert dst.read_bytes() == b"the other run's output"
    kept = tmp_path / f"out.{os.getpid()}.mp4"
    assert str(kept) in str(err.value) and len(decode(kept)[0]) == spec.frames
    assert not list(tmp_path.glob(".out.*"))


@pytest.mark.parametrize("suffix", [".mkv", ".ts"])
def test_progress_knows_the_total_where_the_container_stores_no_count(tmp_path, suffix):
    from vidrestore.io import VideoSource
    from vidrestore.options import JobOptions
    from vidrestore.pipeline import expected_frames

    spec = make_clip(tmp_path / f"in{suffix}", seconds=2.0, audio=False)
    with VideoSource(spec.path) as source:
        assert abs(expected_frames(source.info, JobOptions()) - spec.frames) <= 1
        assert abs(expected_frames(source.info, JobOptions(start=0.5, end=1.5)) - 24) <= 1
        assert expected_frames(source.info, JobOptions(frames=5)) == 5


@pytest.mark.parametrize("mode", ["fit", "pad"])
def test_a_picture_size_change_mid_stream_is_fitted_with_a_notice(tmp_path, tiny_checkpoint, mode):
    """Joined recordings (two TS files end to end): every frame restored at its own size, written at the
    first one's, as asked, and the change named."""
    a = make_clip(tmp_path / "a.ts", seconds=0.5, audio=False)
    b = make_clip(tmp_path / "b.ts", seconds=0.5, audio=False, size=(96, 72))
    joined = tmp_path / "joined.ts"
    joined.write_bytes(a.path.read_bytes() + b.path.read_bytes())
    report = restore(tiny_checkpoint, joined, tmp_path / "out.mkv", codec="ffv1", size_change=mode)
    frames, _, _ = decode(tmp_path / "out.mkv")
    assert len(frames) == report.frames == a.frames + b.frames
    assert {f.shape for f in frames} == {(120, 160, 3)}
    assert any(f"frame {a.frames} " in n and "96x72" in n and "160x120" in n for n in report.notices)
    second = frames[a.frames + 2].astype(int)
    left_edge = second[:, :8].mean()  # fit: 96x72 scaled to 160x120 fills the frame; pad: black borders
    assert left_edge > 40 if mode == "fit" else left_edge < 20


@pytest.mark.parametrize(
    ("name", "codec"), [("out.mpg", None), ("out.m2ts", None), ("out.mxf", None), ("out.mkv", "mpeg2video")]
)
def test_mpeg1_and_mpeg2_outputs_keep_every_frame_time(tmp_path, tiny_checkpoint, name, codec):
    """MPEG-1/2 encoders take only their frame rate's time base; every frame's time is carried over."""
    spec = make_clip(tmp_path / "in.mp4", seconds=1.0)
    restore(tiny_checkpoint, spec.path, tmp_path / name, codec=codec)
    frames, pts, tb = decode(tmp_path / name)
    _, src_pts, src_tb = decode(spec.path)
    times = [float(p * tb) for p in pts]
    assert len(frames) == spec.frames
    expected = [float(p * src_tb) for p in src_pts]
    assert max(abs(t - times[0] - e) for t, e in zip(times, expected, strict=True)) <= 0.001  # Matroska: ms


def test_mpeg2_refuses_variable_frame_rate_in_one_line(tmp_path, tiny_checkpoint, capsys):
    spec = make_clip(tmp_path / "in.mkv", seconds=1.0, vfr=True, audio=False)
    args = ["restore", str(spec.path), "-o", str(tmp_path / "out.mkv"), "--codec", "mpeg2video", "-q"]
    assert main([*args, "--weights", tiny_checkpoint, "--detector", "centerface"]) == 2
    err = _one_line(capsys)
    assert "needs a constant frame rate" in err and "variable frame rate" in err
    assert not list(tmp_path.glob("*out*"))


def test_every_thread_of_a_run_works_under_the_engines_device(tmp_path, tiny_checkpoint, monkeypatch):
    """The engine, decode and encode threads each run under the engine device's guard (a no-op on the CPU;
    on a GPU a new thread would otherwise work on GPU 0)."""
    entered: list[tuple[str, str]] = []
    real = pipeline.on_device

    def recording(device):
        entered.append((threading.current_thread().name, str(device)))
        return real(device)

    monkeypatch.setattr(pipeline, "on_device", recording)
    spec = make_clip(tmp_path / "in.mp4", seconds=0.25, audio=False)
    report = restore(tiny_checkpoint, spec.path, tmp_path / "out.mp4", device="cpu")
    assert report.device == "cpu"
    assert sorted(entered) == sorted(
        [(threading.current_thread().name, "cpu"), ("vidrestore-decode", "cpu"), ("vidrestore-encode", "cpu")]
    )
