"""The batch driver: plan, consult the manifest, keep every executor slot busy, record, retry, report.

It is the manifest's only writer. Each file goes queued → running → done or failed, every change fsynced
before the work it announces, so that rerunning the same command after any crash skips what is done,
retries what was running and loses nothing. Failures stay per file: a file's own error is recorded and the
batch goes on; a CUDA OOM is retried once at half the batch; a worker that died gives its file back, up to
``max_attempts`` attempts counted across runs. Which executor runs the files is the caller's choice
(:class:`~vidrestore.batch.local.LocalExecutor` by default).
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidrestore.batch.manifest import Entry, Manifest, settings_hash
from vidrestore.batch.plan import STATE_DIR, Planned, parse_extensions, plan
from vidrestore.batch.report import BatchReport, Row
from vidrestore.batch.work import Executor, FileJob, FileResult, Lost, WorkerProgress
from vidrestore.batch.worker import job_options
from vidrestore.errors import VidrestoreError
from vidrestore.io.paths import remove_stale_temps
from vidrestore.options import JobOptions, build

if TYPE_CHECKING:
    from vidrestore.batch.chunks import SplitFile

ExecutorFactory = Callable[[dict[str, Any]], Executor]


@dataclass(frozen=True)
class Decision:
    """What this run does with one planned file, and why (``--dry-run`` prints it)."""

    file: Planned
    action: str  # "restore", "skip" or "give up"
    reason: str
    attempt: int = 1
    replace_output: bool = False  # an existing output that did not verify: restored again over it


def run_batch(
    inputs: Sequence[str | Path],
    output_dir: str | Path,
    *,
    recursive: bool = False,
    ext: Sequence[str] | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    name: str = "{name}",
    dry_run: bool = False,
    max_attempts: int = 3,
    halt_on_error: bool = False,
    max_failures: int | None = None,
    chunks: int | None = None,
    chunk_seconds: float | None = None,
    executor: ExecutorFactory | None = None,
    log: Callable[[str], None] | None = None,
    **settings: Any,
) -> BatchReport:
    """Restore every video under ``inputs`` into ``output_dir``; ``settings`` are ``vidrestore restore``'s
    options by Python name (``progress=False`` hides the bar; ``report`` is where the batch's JSON report is
    copied). Returns the report (written as CSV and JSON in ``output_dir/.vidrestore``); a file's failure is
    in it, not raised. ``chunks`` (a number per file) or ``chunk_seconds`` (a length) split each file at
    keyframes into chunks that workers restore in parallel and that are joined by stream copy
    (:mod:`vidrestore.batch.chunks`); a file that cannot be split is restored whole, with a note.
    """
    t0 = time.perf_counter()
    if chunks is not None and chunk_seconds is not None:
        raise VidrestoreError("give --chunks or --chunk-seconds, not both")
    if chunks is not None and chunks < 1:
        raise VidrestoreError(f"--chunks must be 1 or more, not {chunks}")
    if chunk_seconds is not None and not chunk_seconds > 0:
        raise VidrestoreError(f"--chunk-seconds must be positive, not {chunk_seconds}")
    split: dict[str, Any] | None = None  # how plan_chunks cuts each file; None: files restored whole
    if chunks is not None and chunks > 1:
        split = {"chunks": chunks}
    elif chunk_seconds is not None:
        split = {"seconds": chunk_seconds}
    if max_attempts < 1:
        raise VidrestoreError(f"--max-attempts must be 1 or more, not {max_attempts}")
    if max_failures is not None and max_failures < 1:
        raise VidrestoreError(f"--max-failures must be 1 or more, not {max_failures}")
    options = job_options(settings)  # every setting checked before anything is read or written
    if settings.get("report") is not None:
        build([JobOptions], {"report": settings["report"]}, "python")  # its folder exists, and is writable
    progress = settings.get("progress", True)
    say = log or ((lambda m: print(m, file=sys.stderr)) if progress else (lambda m: None))
    out = Path(os.path.abspath(output_dir))
    planned = plan(
        [Path(p) for p in inputs],
        out,
        recursive=recursive,
        extensions=parse_extensions(ext),
        include=include,
        exclude=exclude,
        name=name,
    )
    digest = settings_hash(options.settings())
    manifest = Manifest(out)
    if dry_run:
        decisions = [decide(manifest, f, digest, settings, max_attempts) for f in planned.files]
        for d in decisions:
            say(f"{d.action:8} {d.file.key} → {d.file.output}" + (f" ({d.reason})" if d.reason else ""))
        for s in planned.skipped:
            say(f"{'skip':8} {s.path}: {s.reason}")
        states = {"restore": "queued", "skip": "skipped", "give up": "failed"}
        rows = [_row(d.file, states[d.action], d.attempt - 1, d.reason) for d in decisions]
        return BatchReport(rows=rows, seconds=time.perf_counter() - t0)
    out.mkdir(parents=True, exist_ok=True)
    manifest.lock()
    try:
        return _run(
            manifest, planned.files, digest, settings, progress, say, t0, out, executor, split,
            max_attempts=max_attempts, halt_on_error=halt_on_error, max_failures=max_failures,
        )  # fmt: skip
    finally:
        manifest.close()


def decide(
    manifest: Manifest, file: Planned, digest: str, settings: dict[str, Any], max_attempts: int
) -> Decision:
    """Skip what is done (or verified), give up after ``max_attempts``, restore the rest, with the reason."""
    entry = manifest.entry(file, digest)
    exists = file.output.exists()
    if entry.state == "done" and exists:
        return Decision(file, "skip", "done")
    reason = _why(entry, exists, bool(manifest.records.get(file.key)))
    if exists and not settings.get("overwrite") and entry.state != "done":
        if manifest.done_elsewise(file, digest):
            reason = "the output was made from another version of the file or other settings: replaced"
        elif (problem := verify_output(file, settings)) is None:
            return Decision(file, "skip", "the output exists and verifies: counted as done")
        else:
            reason = f"the existing output {problem}: replaced"
    if entry.attempts >= max_attempts:
        return Decision(file, "give up", _gave_up(entry, max_attempts), entry.attempts)
    return Decision(file, "restore", reason, entry.attempts + 1, replace_output=exists)


def _why(entry: Entry, exists: bool, seen: bool) -> str:
    if entry.state == "running":
        where = entry.record.get("host")
        return "the last attempt did not finish" + (f" (on {where})" if where else "") + "; retrying"
    if entry.state == "failed":
        return f"failed before ({entry.record.get('error', '?')}); retrying"
    if entry.state == "done":
        return "done before, but the output is missing"
    if entry.state == "queued":
        return "queued by an earlier run that stopped before it"
    if exists:
        return "--overwrite"
    return "the file or the settings changed since its last run" if seen else ""


def _gave_up(entry: Entry, max_attempts: int) -> str:
    last = entry.record.get("error") or "did not finish"
    return f"gave up after {entry.attempts} attempt(s) (--max-attempts {max_attempts}); last: {last}"


def verify_output(file: Planned, settings: dict[str, Any]) -> str | None:
    """Why an output with no "done" record cannot count as done (unreadable, or fewer frames than its
    source gives with these settings), or None when it opens, decodes and is complete."""
    from vidrestore.io.source import VideoSource
    from vidrestore.pipeline import expected_frames

    try:
        with VideoSource(file.output) as o:
            info = o.info
    except VidrestoreError as exc:
        return f"cannot be read ({exc})"
    got = expected_frames(info, JobOptions())  # the container's count, else duration × rate
    want = probe_frames(file, settings)
    if got is not None and want is not None and got < want:
        return f"has {got} of {want} frames"
    return None


def probe_frames(file: Planned, settings: dict[str, Any]) -> int | None:
    """The frames a file will give (for the overall bar and the ETA); None when the probe fails (the file's
    own run then records why)."""
    from vidrestore.io.source import VideoSource
    from vidrestore.pipeline import expected_frames

    job = job_options(settings).job
    try:
        with VideoSource(file.source, start=job.start, end=job.end, max_frames=job.frames) as s:
            return expected_frames(s.info, job)
    except VidrestoreError:
        return None


def _row(file: Planned, state: str, attempts: int, error: str = "") -> Row:
    return Row(key=file.key, output=str(file.output), state=state, attempts=attempts, error=error)


class _Display:
    """One bar over all the batch's frames (tqdm's ETA), with each worker's file and fps beside it."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        self.finished = 0
        self.shown = 0
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total or None, unit="frame", dynamic_ncols=True, file=sys.stderr)

    def update(self, workers: list[WorkerProgress]) -> None:
        if self.bar is None:
            return
        now = self.finished + sum(w.frames_done for w in workers)
        if now > self.shown:
            self.bar.update(now - self.shown)
            self.shown = now
        busy = [f"{w.worker}: {w.key} {w.fps:.1f} fps" for w in workers if w.key]
        self.bar.set_postfix_str(" | ".join(busy), refresh=True)

    def write(self, line: str, say: Callable[[str], None]) -> None:
        if self.bar is not None:
            self.bar.write(line, file=sys.stderr)
        else:
            say(line)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _run(
    manifest: Manifest,
    files: list[Planned],
    digest: str,
    settings: dict[str, Any],
    progress: bool,
    say: Callable[[str], None],
    t0: float,
    out: Path,
    executor_factory: ExecutorFactory | None,
    split: dict[str, Any] | None,
    *,
    max_attempts: int,
    halt_on_error: bool,
    max_failures: int | None,
) -> BatchReport:
    report = BatchReport()
    rows: dict[str, Row] = {}
    todo: deque[FileJob] = deque()
    by_key = {f.key: f for f in files}
    splits: dict[str, SplitFile] = {}  # files restored as chunks, by the file's key
    for d in (decide(manifest, f, digest, settings, max_attempts) for f in files):
        f = d.file
        if d.action == "skip":
            if d.reason != "done":  # a verified output: recorded, so it is not probed again next time
                manifest.append(f, digest, "done", verified=True, output=str(f.output))
            rows[f.key] = _row(f, "skipped", d.attempt - 1)
        elif d.action == "give up":
            rows[f.key] = _row(f, "failed", d.attempt, d.reason)
        else:
            remove_stale_temps(f.output)
            job_settings = {**settings, "overwrite": True} if d.replace_output else settings
            job = FileJob(f.key, f.source, f.output, job_settings, probe_frames(f, settings), d.attempt)
            if d.reason:
                say(f"{f.key}: {d.reason}")
            manifest.append(f, digest, "queued", attempt=d.attempt, note=d.reason or None)
            rows[f.key] = _row(f, "queued", d.attempt - 1)
            if split is None:
                todo.append(job)
                continue
            from vidrestore.batch.chunks import SplitFile, plan_chunks, remove_parts  # PyAV, torch

            remove_parts(f.output)  # a stopped run's chunks are restored again
            plans = plan_chunks(f.source, f.output, job_settings, **split)
            if plans[0].note:
                say(f"{f.key}: restored whole: {plans[0].note}")
            if len(plans) < 2:  # short, or cannot be cut: restored whole
                todo.append(job)
                continue
            splits[f.key] = SplitFile(job, plans)
            todo.extend(splits[f.key].jobs)
            by_key.update((j.key, f) for j in splits[f.key].jobs)
    queued = sum(r.state == "queued" for r in rows.values())
    say(f"batch: {queued} to restore, {len(files) - queued} done or given up, into {out}")
    try:
        if todo:
            executor = (executor_factory or _local)(settings)
            for notice in getattr(executor, "notices", ()):
                say(f"vidrestore: note: {notice}")
            _dispatch(
                executor, todo, rows, by_key, splits, manifest, digest, report, say,
                progress=progress, max_attempts=max_attempts, halt_on_error=halt_on_error,
                max_failures=max_failures,
            )  # fmt: skip
    finally:
        report.rows = list(rows.values())
        report.seconds = time.perf_counter() - t0
        copy = settings.get("report")
        report.write(out / STATE_DIR, None if copy is None else Path(copy))
    return report


def _dispatch(
    executor: Executor,
    todo: deque[FileJob],
    rows: dict[str, Row],
    by_key: dict[str, Planned],
    splits: dict[str, SplitFile],
    manifest: Manifest,
    digest: str,
    report: BatchReport,
    say: Callable[[str], None],
    *,
    progress: bool,
    max_attempts: int,
    halt_on_error: bool,
    max_failures: int | None,
) -> None:
    """Keep every slot busy until the queue is empty or the batch stops; record each outcome as it comes."""
    display = _Display(sum(j.frames or 0 for j in todo), progress)
    in_flight: dict[str, FileJob] = {}
    started: set[tuple[str, int]] = set()  # (file, attempt) recorded "running": one for all of its chunks
    chunk_frames: dict[str, int] = {}  # frames of a split file's finished chunks, shown on the bar
    failures = 0

    def record(job: FileJob, outcome: FileResult | Lost) -> None:
        nonlocal failures
        f = by_key[job.key]
        row = rows[f.key]
        in_flight.pop(job.key, None)
        row.attempts = job.attempt
        if isinstance(outcome, Lost):
            if job.attempt < max_attempts:
                manifest.append(f, digest, "queued", attempt=job.attempt + 1, error=outcome.reason)
                todo.appendleft(replace(job, attempt=job.attempt + 1))
                return
            outcome = FileResult(job.key, "failed", error=f"{outcome.reason} ({job.attempt} attempts)")
        elif outcome.state == "failed" and outcome.out_of_memory and job.batch_scale == 1.0:
            manifest.append(f, digest, "queued", attempt=job.attempt + 1, error=outcome.error)
            display.write(f"{job.key}: out of GPU memory; retrying at half the batch", say)
            todo.appendleft(replace(job, attempt=job.attempt + 1, batch_scale=0.5))
            return
        if f.key in splits:  # a chunk: the file's outcome comes with its last chunk (joined) or first failure
            if splits[f.key].finished:  # a chunk still out when the file failed: nothing more to count
                return
            settled = splits[f.key].record(job, outcome)
            chunk_frames[f.key] = chunk_frames.get(f.key, 0) + outcome.frames
            display.finished += outcome.frames
            if settled is None:
                return
            job, outcome = splits[f.key].job, settled
            display.finished -= chunk_frames.pop(f.key)  # counted again below, as the whole file's
        manifest.append(
            f, digest, outcome.state, attempt=job.attempt, output=str(job.output), frames=outcome.frames,
            faces=outcome.faces, seconds=round(outcome.seconds, 3), fps=round(outcome.fps, 3),
            host=outcome.host, device=outcome.device, error=outcome.error,
            **({"chunks": len(splits[f.key].jobs)} if f.key in splits else {}),
        )  # fmt: skip
        row.state, row.frames, row.faces = outcome.state, outcome.frames, outcome.faces
        row.seconds, row.host, row.device, row.error = outcome.seconds, outcome.host, outcome.device, ""
        display.finished += (job.frames or 0) if outcome.state == "failed" else outcome.frames
        if outcome.state == "done":
            display.write(f"done {job.key}: {outcome.frames} frames, {outcome.fps:.1f} fps", say)
        else:
            failures += 1
            row.error = outcome.error or ""
            display.write(f"failed {job.key}: {outcome.error}", say)

    def give_back(why: str) -> None:
        """Cancel what is in flight: those files are queued again (the next run takes them)."""
        cancelled = executor.cancel()
        for job in cancelled:
            in_flight.pop(job.key, None)
        # Every file started and not settled goes back as one file: a whole file in flight, or a split file
        # with chunks out or still waiting (a settled one, done or failed, keeps its record).
        back = {by_key[job.key].key: job.attempt for job in cancelled if by_key[job.key].key not in splits}
        for key, attempt in started:
            if key in splits and not splits[key].finished:
                back[key] = max(back.get(key, 0), attempt)
        for key, attempt in back.items():
            manifest.append(by_key[key], digest, "queued", attempt=attempt, note=why, released=True)
        for job, outcome in executor.wait(0):  # files that finished while being cancelled
            record(job, outcome)

    try:
        while todo or in_flight:
            while todo and len(in_flight) < executor.slots():
                job = todo.popleft()
                job.output.parent.mkdir(parents=True, exist_ok=True)
                f = by_key[job.key]
                if (f.key, job.attempt) not in started:
                    started.add((f.key, job.attempt))
                    manifest.append(f, digest, "running", attempt=job.attempt)
                in_flight[job.key] = job
                executor.submit(job)
            for job, outcome in executor.wait(0.5):
                record(job, outcome)
            display.update(executor.progress())
            if failures and halt_on_error:
                report.stopped = "--halt-on-error"
            elif max_failures is not None and failures >= max_failures:
                report.stopped = f"--max-failures {max_failures}"
            if report.stopped:
                give_back(f"stopped by {report.stopped}")
                break
    except KeyboardInterrupt:
        report.stopped = "interrupted"
        give_back("interrupted")
        raise
    finally:
        display.close()
        executor.close()


def choose_executor(
    output_dir: str | Path,
    *,
    ray: str | None = None,
    workers: int | None = None,
    workers_per_gpu: int = 1,
    device: str = "auto",
) -> ExecutorFactory | None:
    """Ray actors (``vidrestore.batch.cluster``) for ``--ray local|ADDRESS``, ``--workers``,
    ``--workers-per-gpu`` or several local GPUs when Ray is installed; otherwise None: the in-process loop,
    and no Ray import."""
    if ray is None and workers is None and workers_per_gpu == 1:
        if device not in ("auto", "cuda") or importlib.util.find_spec("ray") is None:
            return None
        import torch

        if torch.cuda.device_count() < 2:
            return None
    address = ray or "local"
    out = Path(os.path.abspath(output_dir))

    def make(settings: dict[str, Any]) -> Executor:
        from vidrestore.batch.cluster import RayExecutor

        return RayExecutor(settings, out, address=address, workers=workers, workers_per_gpu=workers_per_gpu)

    return make


def _local(settings: dict[str, Any]) -> Executor:
    from vidrestore.batch.local import LocalExecutor

    return LocalExecutor(settings)
