"""Long files in chunks: the split plan at keyframes, a split run equal to an unsplit one, the join."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
from clips import make_clip

from vidrestore import pipeline
from vidrestore.batch.chunks import (
    SplitFile,
    chunk_jobs,
    context_range,
    join_chunks,
    part_path,
    plan_chunks,
    probe,
    remove_parts,
    run_chunk,
    stitch_tracks,
)
from vidrestore.batch.work import FileJob, FileResult
from vidrestore.engine import FaceRestorer
from vidrestore.errors import VidrestoreError
from vidrestore.options import TemporalOptions, VideoOptions


@pytest.fixture(autouse=True)
def _offline(offline):
    """Every test here runs offline."""


def test_plan_cuts_at_the_keyframes_nearest_even_cuts(tmp_path):
    spec = make_clip(tmp_path / "in.mp4", seconds=2.0, gop=6, audio=False)  # 48 frames, B-frames
    index = probe(spec.path)
    assert len(index.pts) == 48 and index.borders == tuple(range(6, 48, 6))
    out = tmp_path / "out.mp4"
    plans = plan_chunks(spec.path, out, {}, chunks=3)
    assert [(p.start, p.stop) for p in plans] == [(0, 18), (18, 30), (30, 48)]
    assert all(p.note is None and p.count == 3 for p in plans)
    assert plans[1].context_start < 18 and plans[1].context_stop > 30
    assert sum(p.seconds for p in plans) == pytest.approx(2.0)
    assert [(p.start, p.stop) for p in plan_chunks(spec.path, out, {}, seconds=1.0)] == [(0, 24), (24, 48)]
    jobs = chunk_jobs(FileJob("a/in.mp4", spec.path, out, {}, frames=48), plans)
    assert [j.key for j in jobs] == ["a/in.mp4#0", "a/in.mp4#1", "a/in.mp4#2"]
    assert [j.chunk for j in jobs] == [(0, 18), (18, 30), (30, 48)] and jobs[1].frames == 12
    assert jobs[2].output == part_path(out, 2, 3) and jobs[2].output.name.startswith(".out.chunk003of003")


@pytest.mark.parametrize(
    ("settings", "output", "needle"),
    [
        ({"start": 0.5}, "out.mp4", "only a whole file"),
        ({}, "out.avi", "timestamps"),
        ({"codec": "mpeg2video"}, "out.mkv", "timestamps"),
    ],
)
def test_files_that_cannot_be_split_come_back_whole_with_a_reason(tmp_path, settings, output, needle):
    spec = make_clip(tmp_path / "in.mp4", seconds=0.5, gop=4, audio=False)
    [plan] = plan_chunks(spec.path, tmp_path / output, settings, chunks=2)
    assert (plan.start, plan.stop) == (0, spec.frames) and needle in plan.note


def test_context_covers_the_smoother_and_whole_batches():
    temporal = TemporalOptions(frame_batch=4, smooth_window=3)
    first, restore_start, restore_stop, last = context_range(30, 45, 100, temporal)
    assert first % 4 == 0 and first <= 30 - 2 * 3 - 9
    assert (restore_start, restore_stop) == (28, 48)
    assert last % 4 == 0 and last >= 48 + 3
    assert context_range(0, 10, 10, temporal) == (0, 0, 10, 10)


def test_split_run_equals_the_unsplit_run_with_audio_untouched(tmp_path, tiny_checkpoint):
    """Lossless in and out: every frame of two chunks joined equals the unsplit run's, the borders too;
    the track runs on across the border; timestamps and the audio packets are the source's."""
    spec = make_clip(tmp_path / "in.mkv", codec="ffv1", seconds=0.5, gop=6)
    settings = dict(
        weights=tiny_checkpoint, detector="centerface", progress=False, frame_batch=2, smooth_window=2
    )
    settings["codec"] = "ffv1"
    options = VideoOptions.from_keywords(**settings)
    engine = FaceRestorer(options.engine, progress=False)
    whole = pipeline.run(spec.path, tmp_path / "whole.mkv", options, restorer=engine)
    out = tmp_path / "split.mkv"
    plans = plan_chunks(spec.path, out, settings, chunks=2)
    assert [(p.start, p.stop) for p in plans] == [(0, 6), (6, 12)]
    heard: list[tuple[int, int]] = []

    def hear(frames: int, faces: int) -> None:
        heard.append((frames, faces))

    reports = [
        run_chunk(spec.path, part_path(out, p.index, 2), options, (p.start, p.stop), engine, hear)
        for p in plans
    ]
    assert [r.frames for r in reports] == [6, 6] and heard[-1][0] == 6
    joined = join_chunks(spec.path, [part_path(out, p.index, 2) for p in plans], out, settings)
    assert joined.frames == 12 and not list(tmp_path.glob(".*"))

    def frames(path: Path) -> tuple[list[np.ndarray], list[int]]:
        with av.open(str(path)) as c:
            decoded = [(f.to_ndarray(format="rgb24"), f.pts) for f in c.decode(video=0)]
        return [f for f, _ in decoded], [p for _, p in decoded]

    (a, pts_a), (b, pts_b) = frames(tmp_path / "whole.mkv"), frames(out)
    assert len(b) == 12 and pts_b == pts_a
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert whole.faces == sum(r.faces for r in reports) > 0
    # The tracks run on across the border: one the first chunk saw past it is the one the second chunk saw
    # before it, and stitched there the chunks' tracks are the unsplit run's.
    tracks = stitch_tracks([t for r in reports for t in r.tracks], [6])
    assert tracks == [(t["first_frame"], t["last_frame"], t["faces"]) for t in whole.tracks]
    assert any(first < 6 <= last for first, last, _ in tracks)

    def audio(path: Path) -> list[tuple[bytes, int | None]]:
        with av.open(str(path)) as c:
            return [(bytes(p), p.pts) for p in c.demux(c.streams.audio[0]) if p.size]

    assert audio(out) == audio(spec.path)


def _copy_part(src: Path, part: Path, frames: slice) -> None:
    """A part file as a chunk worker leaves it: video packets only (an intra-only source's, copied)."""
    with av.open(str(src)) as c, av.open(str(part), "w") as dst:
        video = dst.add_stream_from_template(c.streams.video[0])
        for packet in [p for p in c.demux(c.streams.video[0]) if p.size][frames]:
            packet.stream = video
            dst.mux(packet)


def test_join_with_a_chunk_missing_fails_in_one_line_and_writes_nothing(tmp_path):
    spec = make_clip(tmp_path / "in.mkv", codec="ffv1", seconds=0.5, gop=6)
    out = tmp_path / "out.mkv"
    part = part_path(out, 0, 2)
    _copy_part(spec.path, part, slice(0, 6))
    with pytest.raises(VidrestoreError, match="the chunks hold 6 frames, the source 12"):
        join_chunks(spec.path, [part], out, {"codec": "ffv1"})
    assert not out.exists() and part.exists() and [p.name for p in tmp_path.glob(".*")] == [part.name]
    remove_parts(out)
    assert not list(tmp_path.glob(".*"))


def test_split_file_joins_when_the_last_chunk_is_done(tmp_path):
    spec = make_clip(tmp_path / "in.mkv", codec="ffv1", seconds=0.5, gop=6)
    out = tmp_path / "out.mkv"
    job = FileJob("in.mkv", spec.path, out, {"codec": "ffv1"}, frames=12)
    plans = plan_chunks(spec.path, out, job.settings, chunks=2)
    split = SplitFile(job, plans)
    first, second = split.jobs
    for chunk in split.jobs:
        _copy_part(spec.path, chunk.output, slice(*chunk.chunk))
    assert split.record(second, FileResult(second.key, "done", frames=6, faces=6, seconds=1.0)) is None
    result = split.record(first, FileResult(first.key, "done", frames=6, faces=5, seconds=2.0))
    assert result is not None and (result.key, result.state, result.frames, result.faces) == (
        "in.mkv",
        "done",
        12,
        11,
    )
    assert result.seconds >= 3.0 and out.exists() and not list(tmp_path.glob(".*"))
    failed = SplitFile(replace(job, output=tmp_path / "other.mkv"), plans)
    result = failed.record(failed.jobs[1], FileResult(failed.jobs[1].key, "failed", error="bad packet"))
    assert result is not None and result.state == "failed" and result.error == "chunk 2 of 2: bad packet"
    assert failed.record(failed.jobs[0], FileResult(failed.jobs[0].key, "done", frames=6)) is None


def test_the_batch_cli_restores_a_file_in_chunks_as_one_attempt(tmp_path, tiny_checkpoint):
    """`vidrestore batch --chunks 2`: the chunks run as jobs of their own and are joined into the one
    output; the manifest records the file (one attempt, done), never its chunks; no part file is left."""
    from vidrestore.batch.manifest import read_records
    from vidrestore.cli import main

    src = tmp_path / "in"
    src.mkdir()
    make_clip(src / "a.mkv", codec="ffv1", seconds=0.5, gop=6)
    make_clip(src / "b.mkv", codec="libx264", seconds=0.5, gop=100)  # one keyframe: restored whole
    out = tmp_path / "out"
    args = ["batch", str(src), "-o", str(out), "--chunks", "2", "--codec", "ffv1", "--frame-batch", "2"]
    assert main([*args, "--weights", tiny_checkpoint, "--detector", "centerface", "-q"]) == 0
    for name in ("a.mkv", "b.mkv"):
        with av.open(str(out / "in" / name)) as c:
            assert sum(1 for _ in c.decode(video=0)) == 12
    records = read_records(out / ".vidrestore" / "manifest.jsonl")
    assert {r["key"] for r in records} == {"in/a.mkv", "in/b.mkv"}
    a, b = ([r for r in records if r["key"] == k] for k in ("in/a.mkv", "in/b.mkv"))
    assert [r["state"] for r in a] == ["queued", "running", "done"] and a[-1]["chunks"] == 2
    assert [r["state"] for r in b] == ["queued", "running", "done"] and "chunks" not in b[-1]
    assert not [p.name for p in (out / "in").iterdir() if p.name.startswith(".")]


class _FirstChunkFails:
    """Two slots, nothing run: the first chunk fails at once, the next wait is a Ctrl-C."""

    def __init__(self, settings: dict) -> None:
        self.jobs: list[FileJob] = []
        self.waits = 0

    def slots(self) -> int:
        return 2

    def submit(self, job: FileJob) -> None:
        self.jobs.append(job)

    def wait(self, timeout):
        self.waits += 1
        if self.waits == 1:
            job = self.jobs.pop(0)
            return [(job, FileResult(job.key, "failed", error="bad chunk"))]
        if self.waits == 2:
            raise KeyboardInterrupt
        return []

    def progress(self) -> list:
        return []

    def cancel(self) -> list[FileJob]:
        jobs, self.jobs = self.jobs, []
        return jobs

    def close(self) -> None:
        pass


def test_ctrl_c_keeps_the_failure_of_a_split_file_whose_other_chunk_was_out(tmp_path):
    from vidrestore.batch import run_batch
    from vidrestore.batch.manifest import read_records

    src = tmp_path / "in"
    src.mkdir()
    make_clip(src / "a.mkv", codec="ffv1", seconds=0.5, gop=6)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_batch([src], out, chunks=2, codec="ffv1", progress=False, executor=_FirstChunkFails)
    records = read_records(out / ".vidrestore" / "manifest.jsonl")
    assert [r["state"] for r in records] == ["queued", "running", "failed"]
    assert records[-1]["error"] == "chunk 1 of 2: bad chunk"
