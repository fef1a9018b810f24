"""`vidrestore batch`: the plan, the manifest, the driver's resume and failure rules (with a fake worker, so
no video is decoded), and the in-process executor on real tiny clips, including a kill -9 and a rerun."""

from __future__ import annotations

import _thread
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import pytest
from clips import make_clip

from vidrestore.batch import run_batch
from vidrestore.batch.local import LocalExecutor
from vidrestore.batch.manifest import Manifest, read_records
from vidrestore.batch.plan import plan
from vidrestore.batch.work import FileJob, FileResult
from vidrestore.cli import main
from vidrestore.errors import VidrestoreError

ROOT = Path(__file__).resolve().parent.parent


class FakeWorker:
    """Copies the source to the output (temporary name, rename); the file's bytes script what happens."""

    runs: list[FileJob] = []

    def __init__(self, settings: dict) -> None:
        self.settings = settings

    def run(self, job: FileJob, on_progress=None) -> FileResult:
        FakeWorker.runs.append(job)
        data = job.source.read_bytes()
        if b"corrupt" in data:
            return FileResult(job.key, "failed", error=f"{job.source}: not a video file FFmpeg can read")
        if b"oom" in data and job.batch_scale == 1.0:
            return FileResult(job.key, "failed", error="the GPU ran out of memory", out_of_memory=True)
        if b"die" in data:
            raise RuntimeError("worker process died")
        while b"slow" in data:  # until a cancel raises in on_progress
            on_progress(1, 0)
            time.sleep(0.01)
        if on_progress is not None:
            on_progress(len(data), 1)
        tmp = job.output.with_name(f".{job.output.name}.part")
        tmp.write_bytes(data)
        os.replace(tmp, job.output)
        return FileResult(job.key, "done", frames=len(data), faces=1, seconds=0.01, host="h", device="cpu")


def fake(settings: dict) -> LocalExecutor:
    return LocalExecutor(settings, FakeWorker)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """in/a.mp4, in/b.mkv, in/sub/c.mp4 and things a batch must leave alone."""
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    (src / ".hidden").mkdir()
    for rel, text in [("a.mp4", "a"), ("b.mkv", "b"), ("sub/c.mp4", "c"), (".hidden/d.mp4", "d")]:
        (src / rel).write_text(text)
    for junk in ("._a.mp4", ".DS_Store", "desktop.ini", "notes.txt"):
        (src / junk).write_text("junk")
    FakeWorker.runs = []
    return src


def batch(src: Path, out: Path, **kw) -> object:
    kw.setdefault("executor", fake)
    return run_batch([src], out, recursive=True, progress=False, detector="centerface", **kw)


def test_plan_keeps_structure_skips_with_reasons_and_finds_collisions(tree, tmp_path):
    out = tmp_path / "out"
    p = plan([tree], out, recursive=True, name="{stem}_r{ext}", exclude=["*.mkv"])
    assert [f.key for f in p.files] == ["in/a.mp4", "in/sub/c.mp4"]
    assert p.files[1].output == out / "in" / "sub" / "c_r.mp4"
    reasons = {s.path.name: s.reason for s in p.skipped}
    assert reasons["._a.mp4"].startswith("macOS") and reasons[".DS_Store"] == "hidden file"
    assert reasons[".hidden"] == "hidden folder" and "--ext" in reasons["notes.txt"]
    assert reasons["b.mkv"] == "excluded by --exclude *.mkv"
    assert "--recursive" in {s.path.name: s.reason for s in plan([tree], out).skipped}["sub"]
    assert [f.key for f in plan([tree], tree / "out", include=["a*"]).files] == ["in/a.mp4"]
    assert [f.key for f in plan([tree / "sub" / ".."], out).files][0] == "in/a.mp4"  # never "../a.mp4"
    (tree / "a.mkv").write_text("a")
    with pytest.raises(VidrestoreError, match="would both be written to .*a.mp4; nothing was started"):
        plan([tree], out, name="{stem}.mp4")
    with pytest.raises(VidrestoreError, match="unknown field {size}"):
        plan([tree], out, name="{size}.mp4")
    with pytest.raises(VidrestoreError, match="overwrite an input"):
        plan([tree / "a.mp4"], tree)


def test_manifest_ignores_a_torn_line_and_locks_out_a_second_driver(tree, tmp_path):
    out = tmp_path / "out"
    batch(tree, out)
    path = out / ".vidrestore" / "manifest.jsonl"
    before = read_records(path)
    with open(path, "a") as f:
        f.write('{"key": "in/a.mp4", "sta')  # a crash mid-line
    m = Manifest(out)
    assert sum(len(v) for v in m.records.values()) == len(before)
    m.lock()
    with pytest.raises(VidrestoreError, match="another batch .* is using this output folder"):
        batch(tree, out)
    m.close()
    batch(tree, out, frame_batch=3)  # a settings change: every file again, appended after the torn line
    assert len(read_records(path)) > len(before) and len(FakeWorker.runs) == 6


def test_failures_stay_per_file_and_resume_retries_them(tree, tmp_path, capsys):
    out = tmp_path / "out"
    (tree / "b.mkv").write_text("corrupt")
    (tree / "sub" / "c.mp4").write_text("oom then fine")
    report = batch(tree, out, report=tmp_path / "copy.json")
    states = {r.key: (r.state, r.attempts) for r in report.rows}
    assert states == {"in/a.mp4": ("done", 1), "in/b.mkv": ("failed", 1), "in/sub/c.mp4": ("done", 2)}
    assert [j.batch_scale for j in FakeWorker.runs if j.key == "in/sub/c.mp4"] == [1.0, 0.5]
    rows = (out / ".vidrestore" / "report.csv").read_text().splitlines()
    assert rows[0].startswith("key,state,attempts,frames") and len(rows) == 4
    data = json.loads((out / ".vidrestore" / "report.json").read_text())
    assert data["summary"] == {"done": 2, "skipped": 0, "failed": 1, "queued": 0}
    assert json.loads((tmp_path / "copy.json").read_text()) == data
    assert "not a video file" in report.describe()
    FakeWorker.runs = []
    again = batch(tree, out, max_attempts=2)  # only the failed file runs again, then it is given up
    assert [j.key for j in FakeWorker.runs] == ["in/b.mkv"] and again.count("skipped") == 2
    FakeWorker.runs = []
    assert batch(tree, out, max_attempts=2).failed == 1 and FakeWorker.runs == []


def test_a_dead_worker_is_requeued_up_to_max_attempts(tree, tmp_path):
    (tree / "a.mp4").write_text("die")
    report = batch(tree, tmp_path / "out", max_attempts=2)
    row = next(r for r in report.rows if r.key == "in/a.mp4")
    assert row.state == "failed" and row.attempts == 2 and "died" in row.error
    assert [j.attempt for j in FakeWorker.runs if j.key == "in/a.mp4"] == [1, 2]


@pytest.mark.parametrize("stop", [{"halt_on_error": True}, {"max_failures": 2}])
def test_halt_on_error_and_max_failures_stop_early(tree, tmp_path, stop):
    for name in ("a.mp4", "b.mkv"):
        (tree / name).write_text("corrupt")
    report = batch(tree, tmp_path / "out", **stop)
    assert report.stopped and report.failed == (1 if "halt_on_error" in stop else 2)
    assert report.count("queued") == 3 - report.failed


def test_rerun_after_a_crash_retries_running_and_counts_a_finished_output(tree, tmp_path, capsys):
    out = tmp_path / "out"
    batch(tree, out)
    manifest = out / ".vidrestore" / "manifest.jsonl"
    records = read_records(manifest)
    # As if the driver died: c's last state is "running" (its output was never renamed into place), b's output
    # was renamed but its "done" line never written, and a temporary file of a dead process is left over.
    (out / "in" / "sub" / "c.mp4").unlink()
    keep = [r for r in records if not (r["key"] in ("in/b.mkv", "in/sub/c.mp4") and r["state"] == "done")]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in keep))
    stale = out / "in" / "sub" / ".c.999999999-0000.part.mp4"
    stale.write_text("partial")
    FakeWorker.runs = []
    run_batch([tree], out, recursive=True, dry_run=True, executor=fake, detector="centerface", log=print)
    plan_lines = capsys.readouterr().out
    assert "in/sub/c.mp4" in plan_lines and "did not finish" in plan_lines and FakeWorker.runs == []
    report = batch(tree, out)
    # b's fake output is not a video: it does not verify, so it is restored again over the old one
    assert sorted(j.key for j in FakeWorker.runs) == ["in/b.mkv", "in/sub/c.mp4"]
    assert [j.attempt for j in FakeWorker.runs] == [2, 2] and not stale.exists()
    assert report.count("done") == 2 and report.count("skipped") == 1


class Interrupted(LocalExecutor):
    """Ctrl-C arrives while the driver waits on the first file."""

    def wait(self, timeout):
        if not self._cancel.is_set():  # once: the driver's wait(0) after its cancel gets an answer
            raise KeyboardInterrupt
        return super().wait(timeout)


def test_ctrl_c_queues_the_file_in_flight_again(tree, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        batch(tree, out, executor=lambda s: Interrupted(s, FakeWorker))
    last = {r["key"]: r for r in read_records(out / ".vidrestore" / "manifest.jsonl")}
    assert last["in/a.mp4"]["state"] in ("queued", "done")  # "done" if it finished as Ctrl-C came
    assert json.loads((out / ".vidrestore" / "report.json").read_text())["stopped"] == "interrupted"
    rerun = batch(tree, out)  # nothing lost
    assert rerun.count("done") + rerun.count("skipped") == 3


def test_ctrl_c_during_a_file_stops_it_and_its_thread(tree, tmp_path):
    (tree / "a.mp4").write_text("slow")
    threading.Timer(0.5, _thread.interrupt_main).start()  # Ctrl-C while the driver waits on the thread
    with pytest.raises(KeyboardInterrupt):
        batch(tree, tmp_path / "out")
    assert "vidrestore-batch" not in [t.name for t in threading.enumerate()]
    last = {r["key"]: r for r in read_records(tmp_path / "out" / ".vidrestore" / "manifest.jsonl")}
    assert last["in/a.mp4"]["state"] == "queued" and last["in/a.mp4"]["released"]
    a = plan([tree], tmp_path / "out").files[0]
    assert Manifest(tmp_path / "out").entry(a, last["in/a.mp4"]["settings"]).attempts == 0  # not counted


@pytest.fixture
def clips(tmp_path, offline) -> Path:
    """Two real 3-frame clips in a tree (one with no face: no network call), a corrupt one, a hidden one and a
    macOS sidecar."""
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    make_clip(src / "one.mp4", seconds=0.25, fps=12, audio=False)
    make_clip(src / "sub" / "two.mkv", seconds=0.25, fps=12, audio=False, face=False)
    (src / "bad.mp4").write_bytes(b"\x00not a video" * 64)
    (src / ".hidden.mp4").write_bytes((src / "one.mp4").read_bytes())
    (src / "._one.mp4").write_bytes(b"\x00\x05\x16\x07")
    return src


def frames(path: Path) -> int:
    with av.open(str(path)) as c:
        return sum(1 for _ in c.decode(video=0))


def test_cli_restores_a_tree_records_the_corrupt_file_and_resumes(clips, tmp_path, tiny_checkpoint, capsys):
    out = tmp_path / "out"
    args = [
        "batch",
        str(clips),
        "-o",
        str(out),
        "-r",
        "--weights",
        tiny_checkpoint,
        "--detector",
        "centerface",
    ]
    assert main([*args, "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1 file(s) failed" in err[0] and "Traceback" not in err[0]
    assert frames(out / "in" / "one.mp4") == frames(out / "in" / "sub" / "two.mkv") == 3
    assert sorted(p.name for p in (out / "in").iterdir()) == ["one.mp4", "sub"]
    report = json.loads((out / ".vidrestore" / "report.json").read_text())
    bad = next(f for f in report["files"] if f["key"] == "in/bad.mp4")
    assert bad["state"] == "failed" and "not a video" in bad["error"]
    assert main([*args, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any(line.startswith("skip") and "in/one.mp4" in line and "(done)" in line for line in lines)
    assert any("._one.mp4: macOS" in line for line in lines)
    # Outputs with no "done" record (a crash between the rename and the record): checked, not trusted.
    manifest = out / ".vidrestore" / "manifest.jsonl"
    kept = [r for r in read_records(manifest) if r["state"] != "done"]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in kept))
    make_clip(out / "in" / "sub" / "two.mkv", seconds=0.1, fps=12, audio=False)  # a short one
    assert main([*args, "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("in/one.mp4" in line and "verifies: counted as done" in line for line in lines)
    assert any("in/sub/two.mkv" in line and "of 3 frames: replaced" in line for line in lines)


def test_kill_9_of_the_driver_then_a_rerun_loses_and_duplicates_nothing(clips, tmp_path):
    out = tmp_path / "out"
    (clips / "bad.mp4").unlink()
    make_clip(clips / "more.mp4", seconds=0.25, fps=12, audio=False)
    args = [str(clips), "-o", str(out), "-r", "--debug-overlay", "--detector", "centerface", "-q"]
    cmd = [sys.executable, "-m", "vidrestore.cli", "batch", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.DEVNULL)
    manifest = out / ".vidrestore" / "manifest.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        done = [r for r in read_records(manifest) if r["state"] == "done"]
        if done:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = read_records(manifest)
    assert main(["batch", *args]) == 0
    after = read_records(manifest)[len(before) :]
    finished_before = {r["key"] for r in before if r["state"] == "done"}
    finished_after = [r["key"] for r in after if r["state"] == "done"]
    keys = ["in/more.mp4", "in/one.mp4", "in/sub/two.mkv"]
    assert finished_before and sorted([*finished_before, *finished_after]) == keys  # no file twice, none lost
    assert all(frames(out / k) == 3 for k in keys)
    assert not [p for p in out.rglob("*.part*")]


def test_the_in_process_loop_is_the_default_and_ray_only_when_asked():
    from vidrestore.batch.driver import choose_executor

    assert choose_executor("out", device="cpu") is None
    assert callable(choose_executor("out", ray="local")) and callable(choose_executor("out", workers=2))
