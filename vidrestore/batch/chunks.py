"""One long file on many workers: split at keyframes, restore the chunks in parallel, join by stream copy.

Temporal smoothing needs each frame's neighbours, so a chunk is restored with context around it: the stream
is fed the frames before it (tracking, smoothing and cut detection warm up on them; they are not restored)
and the look-ahead after it, and only the chunk's own frames [start, stop) are written, video only, to a
part file with the output's encoder settings. Frames are batched on multiples of the frame batch counted
from the file's first frame, as an unsplit run batches them (a few frames either side of the chunk are
restored and dropped to keep those batches whole), because a network's numbers depend on what is batched
together. With that, a chunk's frames equal an unsplit run's, at its borders too, as long as the context
covers what the tracker and the smoother look at (see :func:`context_range`).

Each part starts with a keyframe of its own encoder (a closed GOP), keeps the source's timestamps, and the
join copies the parts' video packets one after another into the final output with the source's audio,
subtitles and data routed exactly as ``vidrestore restore`` routes them (:mod:`vidrestore.io.routes`),
through a temporary name renamed at the end.

The driver's side: :func:`plan_chunks` (where to cut), :class:`SplitFile` (the chunk jobs of one file, and
the file's result once the last is done and :func:`join_chunks` has joined the parts), and :func:`run_chunk`,
what ``FileWorker.run`` calls instead of ``pipeline.run`` when ``job.chunk`` is set.
"""

from __future__ import annotations

import contextlib
import glob
import heapq
import inspect
import itertools
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch
from av.stream import Disposition

from vidrestore.batch.work import FileJob, FileResult
from vidrestore.engine import FaceRestorer, film_history, on_device
from vidrestore.errors import VidrestoreError
from vidrestore.faces.tracking import SceneCutDetector, Stabilizer
from vidrestore.io import VideoSink, VideoSource, check_output_path
from vidrestore.io.encoders import FRAME_COUNTED, output_codec, time_base_for
from vidrestore.io.paths import move_into_place, muxer_for, reason, reserve_temp
from vidrestore.io.routes import carried_tags, open_route
from vidrestore.io.source import SourceFrame
from vidrestore.memory import fit_to_memory
from vidrestore.options import TemporalOptions, VideoOptions
from vidrestore.pipeline import RunReport, _run_threads, versions
from vidrestore.stream import FaceStream, StreamResult, held_sample_bytes

# What the tracker and the cut detector remember, from their defaults (FaceStream does not change them): a
# face missed on up to ``max_misses`` detected frames is filled in from detections either side of the gap,
# and a cut is judged against the median of the last ``history`` frame distances.
_MAX_MISSES: int = inspect.signature(Stabilizer).parameters["max_misses"].default
_CUT_HISTORY: int = inspect.signature(SceneCutDetector).parameters["history"].default


@dataclass(frozen=True)
class FrameIndex:
    """A video stream's frames as its packets tell them (no decoding): pts in presentation order, and the
    frames a chunk may start at (keyframes that nothing after them in decode order shows before)."""

    pts: tuple[int, ...]
    time_base: Fraction
    origin: float  # the container's start time (seconds), which ``VideoSource(start=...)`` counts from
    borders: tuple[int, ...]  # frame indices, ascending, 0 excluded
    width: int
    height: int
    deep: bool  # more than 8 bits per sample
    problem: str | None  # why the stream cannot be cut at all (timestamps missing or repeated)

    def time(self, frame: int) -> float:
        """Frame ``frame``'s time in seconds; the end of the last frame for ``frame`` = the frame count."""
        n = len(self.pts)
        if frame < n:
            return float(self.pts[frame] * self.time_base)
        step = (self.pts[-1] - self.pts[0]) / (n - 1) if n > 1 else 0
        return float((self.pts[-1] + step) * self.time_base)


@dataclass(frozen=True)
class ChunkPlan:
    """One chunk of a file: it writes frames [start, stop) and its stream sees [context_start, context_stop)
    (at the plan's frame batch; a worker whose memory plan picks another batch widens it its own way).

    A file that cannot be split comes back as one chunk covering it, with ``note`` saying why: the driver
    restores it whole.
    """

    index: int
    count: int
    start: int
    stop: int
    context_start: int
    context_stop: int
    seconds: float  # the chunk's own length
    note: str | None = None

    @property
    def frames(self) -> int:
        return self.stop - self.start


def probe(path: Path) -> FrameIndex:
    """The frame index of ``path``'s video stream, read once per process for a given file version."""
    stat = Path(path).stat()
    return _probe(str(path), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=8)
def _probe(path: str, _size: int, _mtime_ns: int) -> FrameIndex:
    try:
        container = av.open(path)
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VidrestoreError(f"{path}: not a video file FFmpeg can read ({reason(exc)})") from None
    with container:
        videos = [s for s in container.streams.video if not s.disposition & Disposition.attached_pic]
        if not videos:
            raise VidrestoreError(f"{path}: no video stream")
        video = videos[0]
        packets = [(p.pts, p.is_keyframe) for p in container.demux(video) if p.size]
        origin = container.start_time / 1_000_000 if container.start_time is not None else 0.0
        fmt = video.codec_context.format
        shape = (video.width, video.height, bool(fmt and fmt.components[0].bits > 8))
        time_base = Fraction(video.time_base)
    stamps = [pts for pts, _ in packets]
    problem = None
    if not stamps:
        problem = "the video has no frames"
    elif any(pts is None for pts in stamps):
        problem = "some video packets have no timestamp"
    elif len(set(stamps)) != len(stamps):
        problem = "some video packets repeat a timestamp"
    if problem is not None:
        return FrameIndex((), time_base, origin, (), *shape, problem)
    order = sorted(stamps)
    rank = {pts: i for i, pts in enumerate(order)}
    # A keyframe is a clean border when every packet before it (decode order) shows before it and every one
    # after it shows after it: decoding from there gives exactly the frames from it on.
    before_max, high = [], -math.inf
    for pts in stamps:
        before_max.append(high)
        high = max(high, pts)
    after_min, low = [math.inf] * len(stamps), math.inf
    for i in range(len(stamps) - 1, -1, -1):
        after_min[i], low = low, min(low, stamps[i])
    borders = sorted(
        rank[pts]
        for i, (pts, key) in enumerate(packets)
        if key and rank[pts] > 0 and before_max[i] < pts < after_min[i]
    )
    return FrameIndex(tuple(order), time_base, origin, tuple(borders), *shape, None)


def context_range(
    start: int, stop: int, total: int, temporal: TemporalOptions, history: int = 0
) -> tuple[int, int, int, int]:
    """The frames around chunk [start, stop) of ``total`` that make its output equal an unsplit run's:
    ``(context_start, restore_start, restore_stop, context_stop)``.

    ``history`` earlier frames are restored too (and not written): the restored faces that the texture
    and the held masks average the chunk's first faces with (:func:`vidrestore.engine.film_history`).

    Before the chunk: the smoother's window (frame t is smoothed with t-N..t+N) twice over, the longest gap
    the tracker fills and the cut detector's history, so that tracks and their smoothing have the same
    detections to work with at ``start``. After it: the look-ahead. Frames in [restore_start,
    restore_stop) are restored (the chunk widened to whole frame batches); the context is widened to whole
    batches too, so that detection batches hold the same frames as well.
    """
    batch, window = temporal.frame_batch, temporal.window
    before = 2 * window + (_MAX_MISSES + 1) * temporal.detect_every + _CUT_HISTORY + 1
    restore_start = max(0, start - history) // batch * batch
    restore_stop = min(total, -(-stop // batch) * batch)
    context_start = max(0, restore_start - before) // batch * batch
    context_stop = min(total, -(-(restore_stop + window) // batch) * batch)
    return context_start, restore_start, restore_stop, context_stop


def plan_chunks(
    source: Path,
    output: Path,
    settings: dict[str, Any],
    *,
    chunks: int | None = None,
    seconds: float | None = None,
) -> list[ChunkPlan]:
    """Where to cut ``source``: into about ``chunks`` chunks, or chunks of about ``seconds`` each, at the
    clean keyframe nearest each even cut. ``output`` is the final file: its container decides the encoder,
    which must keep the source's timestamps for the parts to join."""
    if (chunks is None) == (seconds is None):
        raise VidrestoreError("split a file either into a number of chunks or into chunks of a length")
    if chunks is not None and chunks < 1:
        raise VidrestoreError(f"chunks must be at least 1, not {chunks}")
    if seconds is not None and not seconds > 0:
        raise VidrestoreError(f"the chunk length must be positive, not {seconds} s")
    options = VideoOptions.from_keywords(**settings)
    index = probe(Path(source))
    total = len(index.pts)
    note = _cannot_split(Path(source), Path(output), options, index)
    if note is None and not index.borders:
        note = "the video has no keyframe to cut at"
    if note is not None:
        return [_chunk(0, 1, 0, total, index, options.temporal, 0, note)]
    wanted = chunks if chunks is not None else max(1, round((index.time(total) - index.time(0)) / seconds))
    cuts = sorted({min(index.borders, key=lambda b: abs(b - total * k / wanted)) for k in range(1, wanted)})
    edges = [0, *cuts, total]
    return [
        _chunk(k, len(edges) - 1, a, b, index, options.temporal, film_history(options.engine), None)
        for k, (a, b) in enumerate(itertools.pairwise(edges))
    ]


def _chunk(
    k: int,
    count: int,
    start: int,
    stop: int,
    index: FrameIndex,
    temporal: TemporalOptions,
    history: int,
    note: str | None,
) -> ChunkPlan:
    total = len(index.pts)
    context_start, _, _, context_stop = (
        context_range(start, stop, total, temporal, history) if total else (0, 0, 0, 0)
    )
    seconds = index.time(stop) - index.time(start) if total else 0.0
    return ChunkPlan(k, count, start, stop, context_start, context_stop, seconds, note)


def _cannot_split(source: Path, output: Path, options: VideoOptions, index: FrameIndex) -> str | None:
    """Why ``source`` must be restored whole, or None."""
    if index.problem is not None:
        return index.problem
    job = options.job
    if job.start is not None or job.end is not None or job.frames is not None:
        return "only a whole file is split (start, end or frames is set)"
    with VideoSource(source) as src:
        description = src.description
    if description.field_order != "progressive":
        return "interlaced video is restored whole"
    muxer, _ = muxer_for(output, options.encode.format)
    codec = output_codec(output, options.encode, description)
    info = description.info
    if muxer in FRAME_COUNTED or (
        time_base_for(codec, muxer, info.time_base, info.frame_rate or Fraction(25)) != info.time_base
    ):
        return f"{codec} in {muxer} does not keep the source's timestamps, which the join needs"
    return None


def part_path(output: Path, index: int, count: int) -> Path:
    """Chunk ``index``'s part file: hidden beside the output, with its extension (so the same muxer)."""
    return output.with_name(f".{output.stem}.chunk{index + 1:03d}of{count:03d}{output.suffix}")


def remove_parts(output: Path) -> None:
    """Delete the part files an interrupted split run left for ``output`` (a rerun restores every chunk)."""
    for part in output.parent.glob(f".{glob.escape(output.stem)}.chunk*of*{glob.escape(output.suffix)}"):
        part.unlink(missing_ok=True)


def chunk_jobs(job: FileJob, plans: Sequence[ChunkPlan]) -> list[FileJob]:
    """A whole-file job as one job per chunk (key ``KEY#k``, output its part file); itself when unsplit."""
    if len(plans) < 2:
        return [job]
    return [
        replace(
            job,
            key=f"{job.key}#{p.index}",
            output=part_path(job.output, p.index, p.count),
            frames=p.frames,
            chunk=(p.start, p.stop),
        )
        for p in plans
    ]


class SplitFile:
    """One file restored as chunks, for the driver: the chunk jobs to queue, and the file's result once the
    last chunk is done (the parts joined) or the first one failed. Retries (a lost worker, an OOM) stay the
    driver's, per chunk job, before :meth:`record` sees a final outcome."""

    def __init__(self, job: FileJob, plans: Sequence[ChunkPlan]) -> None:
        self.job = job
        self.jobs = chunk_jobs(job, plans)
        self._results: dict[str, FileResult] = {}
        self.finished = False

    def record(self, chunk: FileJob, result: FileResult) -> FileResult | None:
        """A chunk's final outcome; the whole file's result when this settles it, else None."""
        if self.finished:
            return None  # a chunk that ended after the file failed: its part goes with the next run's cleanup
        self._results[chunk.key] = result
        if result.state == "failed":
            self.finished = True
            k = next(i for i, j in enumerate(self.jobs) if j.key == chunk.key)
            error = f"chunk {k + 1} of {len(self.jobs)}: {result.error}"
            return replace(result, key=self.job.key, error=error)
        if len(self._results) < len(self.jobs):
            return None
        self.finished = True
        results = [self._results[j.key] for j in self.jobs]
        merged = FileResult(
            self.job.key,
            "failed",
            frames=sum(r.frames for r in results),
            faces=sum(r.faces for r in results),
            host=result.host,
            device=result.device,
            stats={"chunks": [asdict(r) for r in results]},
        )
        try:
            joined = join_chunks(
                self.job.source, [j.output for j in self.jobs], self.job.output, self.job.settings
            )
        except VidrestoreError as exc:
            merged.error = str(exc)
        else:
            merged.state = "done"
            merged.stats["join_seconds"] = joined.seconds
            merged.stats["notices"] = joined.notices
        merged.seconds = sum(r.seconds for r in results) + merged.stats.get("join_seconds", 0.0)
        return merged


def stitch_tracks(tracks: Sequence[dict[str, int]], borders: Sequence[int]) -> list[tuple[int, int, int]]:
    """The chunks' tracks (``run_chunk``'s report) as one file's: (first, last, faces) each, a track that
    starts on a border joined to the one ending just before it that its chunk saw past the border (of those,
    the one whose frames overlap it most). The proof that tracks run on across the borders."""
    spans: list[list[int]] = []  # first, last, faces, seen_to of the chunk that holds its end
    for track in sorted(tracks, key=lambda t: t["first_frame"]):
        start = track["first_frame"]
        previous = [
            s
            for s in spans
            if start in borders and track["seen_from"] < start and s[1] == start - 1 and s[3] >= start
        ]
        if previous:
            best = max(previous, key=lambda s: min(s[3], track["last_frame"]) - max(s[0], track["seen_from"]))
            best[1:] = [track["last_frame"], best[2] + track["faces"], track["seen_to"]]
        else:
            spans.append([start, track["last_frame"], track["faces"], track["seen_to"]])
    return sorted((a, b, n) for a, b, n, _ in spans)


# -- restoring one chunk --------------------------------------------------------------------------------


class _ChunkFrames:
    """A chunk in ``pipeline._run_threads``: the stream it drives and the frames-to-sink step it calls.

    Frames come in numbered in the whole file, with the source's own timestamps; the stream restores only
    [restore_start, restore_stop) and the sink gets only [start, stop).
    """

    def __init__(
        self,
        src: Path,
        stream: FaceStream,
        index: FrameIndex,
        first: int,
        chunk: tuple[int, int],
        restored: tuple[int, int],
        on_frames: Callable[[int, int], None] | None,
    ) -> None:
        self.src, self.stream, self.index, self.first = src, stream, index, first
        self.start, self.stop = chunk
        self.restored = restored
        self.on_frames = on_frames
        self.frames = self.faces = self.with_faces = 0
        self.tracks: dict[int, list[int]] = {}  # track ID → [first, last, faces] over the chunk's frames

    @property
    def engine(self) -> FaceRestorer:
        return self.stream.engine

    def pictures(self, frames: Iterator[SourceFrame]) -> Iterator[SourceFrame]:
        """The decoded frames, numbered in the whole file and with their own pts back (the source shifted
        them to start at 0); a frame the probe did not expect there stops the chunk."""
        base = self.index.pts[self.first] if self.first else 0
        for frame in frames:
            n, pts = self.first + frame.index, (frame.pts or 0) + base
            if n >= len(self.index.pts) or pts != self.index.pts[n]:
                raise VidrestoreError(
                    f"{self.src}: frame {n} decodes with pts {pts}, not as its packets said; "
                    "restore this file whole"
                )
            frame.frame.pts = pts
            yield replace(
                frame, index=n, pts=pts, time=float(pts * self.index.time_base), packets=[], tail=[]
            )

    def push(self, rgb: np.ndarray, frame: SourceFrame) -> list[StreamResult]:
        restore = self.restored[0] <= frame.index < self.restored[1]
        return self._count(self.stream.push(rgb, frame, restore=restore))

    def flush(self) -> list[StreamResult]:
        return self._count(self.stream.flush())

    def _count(self, results: list[StreamResult]) -> list[StreamResult]:
        """Faces and tracks of the chunk's own frames (the frames restored only to fill batches are not)."""
        for result in results:
            n = result.tag.index
            if self.start <= n < self.stop:
                self.faces += len(result.faces)
                self.with_faces += bool(result.faces)
                for face in result.faces:
                    entry = self.tracks.setdefault(face.track_id, [n, n, 0])
                    entry[1], entry[2] = n, entry[2] + 1
        return results

    def written(
        self, frame: SourceFrame, rgb: np.ndarray | None, mask: np.ndarray | None
    ) -> list[tuple[SourceFrame, np.ndarray | None, np.ndarray | None]]:
        if not self.start <= frame.index < self.stop:
            return []
        self.frames += 1
        if self.on_frames is not None:
            self.on_frames(self.frames, self.faces)
        return [(frame, rgb, mask)]


def run_chunk(
    src: Path,
    dst: Path,
    options: VideoOptions,
    chunk: tuple[int, int],
    restorer: FaceRestorer | None = None,
    on_frames: Callable[[int, int], None] | None = None,
) -> RunReport:
    """Restore frames [start, stop) of ``src`` into the part file ``dst``, video only: ``pipeline.run`` for
    one chunk, with the same arguments and report, so that ``FileWorker.run`` calls one or the other."""
    t_start = time.perf_counter()
    job, (start, stop) = options.job, chunk
    index = probe(src)
    total = len(index.pts)
    if index.problem is not None or not 0 <= start < stop <= total:
        raise VidrestoreError(
            f"{src}: cannot restore frames {start}..{stop} as a chunk "
            f"({index.problem or f'the video has {total} frames'})"
        )
    check_output_path(src, dst, overwrite=True, format=options.encode.format)
    report = RunReport(input=str(src), output=str(dst))
    report.settings = {k: v for k, v in options.settings().items() if k != "report"} | {
        "chunk": [start, stop]
    }
    if restorer is None:
        restorer = FaceRestorer(options.engine, progress=False, load_model=not job.debug_overlay)
    report.device, report.dtype = str(restorer.device), str(restorer.dtype).removeprefix("torch.")
    report.versions = versions(restorer.device)
    engine_before = dict(restorer.timings)
    temporal, plan = fit_to_memory(
        restorer,
        index.width,
        index.height,
        options.temporal,
        sample_bytes=held_sample_bytes(index.deep, restorer.device),
    )
    options = replace(options, temporal=temporal)
    report.memory_budget_mb = plan.budget // 2**20
    first, restore_start, restore_stop, last = context_range(
        start, stop, total, temporal, film_history(options.engine)
    )
    seek = None if first == 0 else max(0.0, index.time(first) - index.origin)
    with VideoSource(src, start=seek, max_frames=last - first, hwaccel=job.hwaccel) as source:
        stream = FaceStream(restorer, temporal, start=first, overlay=job.debug_overlay)
        frames = _ChunkFrames(src, stream, index, first, chunk, (restore_start, restore_stop), on_frames)
        description = replace(source.description, streams=())  # the join copies the other streams
        with VideoSink(dst, description, options.encode, overwrite=True) as sink:
            report.codec, report.pix_fmt = sink.codec, sink.pix_fmt
            with on_device(restorer.device):  # this thread runs the engine
                _run_threads(source, sink, frames, frames, options, report, stop - start)
            report.notices = [n for n in (*source.notices, *plan.notices, *sink.notices) if n]
        report.warnings = list(source.warnings)
    if frames.frames != stop - start:
        raise VidrestoreError(
            f"{src}: chunk {start}..{stop} decoded {frames.frames} frames; restore it whole"
        )
    report.frames, report.faces, report.frames_with_faces = frames.frames, frames.faces, frames.with_faces
    # Each track's frames in the chunk, and where the stream saw it in the context too ("seen_from",
    # "seen_to"): a track seen past a border is the one the next chunk has from its first frame.
    seen = {t.track_id: t for t in stream.tracks()}
    report.tracks = [
        {
            "track_id": i,
            "first_frame": a,
            "last_frame": b,
            "faces": n,
            "seen_from": first + seen[i].first_frame,
            "seen_to": first + seen[i].last_frame,
        }
        for i, (a, b, n) in frames.tracks.items()
    ]
    for stage, seconds in restorer.timings.items():
        report.stages[stage] += seconds - engine_before.get(stage, 0.0)
    report.seconds = time.perf_counter() - t_start
    if restorer.device.type == "cuda":
        report.peak_vram_mb = torch.cuda.max_memory_allocated(restorer.device) // 2**20
    return report


# -- the join --------------------------------------------------------------------------------------------


@dataclass
class JoinReport:
    """What the join wrote: the frames of every part, and the source's other packets it routed."""

    output: str
    frames: int
    parts: int
    packets: int  # of the other streams, as read from the source
    seconds: float
    notices: list[str]


def join_chunks(
    source: Path, parts: Sequence[Path], output: Path, settings: dict[str, Any], *, keep_parts: bool = False
) -> JoinReport:
    """Concatenate the parts' video packets (stream copy) into ``output`` with the source's other streams
    routed as ``vidrestore restore`` routes them; written to a temporary name and renamed, then the parts
    are deleted (unless ``keep_parts``). Checks that the parts hold exactly the source's frame count, each
    starting on a keyframe, coded alike, in rising decode order."""
    t0 = time.perf_counter()
    source, output = Path(source), Path(output)
    options = VideoOptions.from_keywords(**settings)
    overwrite = options.job.overwrite
    check_output_path(source, output, overwrite=overwrite, format=options.encode.format)
    index = probe(source)
    muxer, _ = muxer_for(output, options.encode.format)
    with contextlib.ExitStack() as stack:
        opened = [stack.enter_context(_open_part(p)) for p in parts]
        videos = [c.streams.video[0] for c in opened]
        _check_parts(parts, videos)
        src = stack.enter_context(VideoSource(source))
        description = src.description
        other = stack.enter_context(av.open(str(source)))
        tmp = reserve_temp(output)
        notices: list[str] = []
        try:
            with av.open(str(tmp), "w", format=options.encode.format) as out:
                out.metadata.update(carried_tags(description.metadata))
                video = out.add_stream_from_template(videos[0])
                video.metadata.update(
                    carried_tags(description.video_metadata, muxer=description.info.container)
                )
                video.disposition = description.video_disposition
                if description.display_matrix:
                    video.set_display_matrix(list(description.display_matrix))
                routes = {}
                for template in description.streams:
                    route = open_route(template, out, muxer, description.info.container, notices)
                    if route is not None:
                        routes[template.index] = route
                out.start_encoding()
                streams = [s for s in other.streams if s.index in routes]
                frames, copied = _mux_merged(out, video, opened, videos, other, streams, routes)
                if frames != len(index.pts):
                    raise VidrestoreError(
                        f"the chunks hold {frames} frames, the source {len(index.pts)}: a chunk is missing"
                    )
                for route in routes.values():
                    out.mux(route.flush())
            move_into_place(tmp, output, overwrite=overwrite)
        except (av.FFmpegError, OSError) as exc:
            tmp.unlink(missing_ok=True)
            raise VidrestoreError(
                f"{output}: joining the chunks failed ({reason(exc)}); restore this file whole"
            ) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    if not keep_parts:
        for part in parts:
            Path(part).unlink(missing_ok=True)
    return JoinReport(str(output), len(index.pts), len(parts), copied, time.perf_counter() - t0, notices)


@contextlib.contextmanager
def _open_part(path: Path) -> Iterator[av.container.InputContainer]:
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise VidrestoreError(f"{path}: the chunk's part file cannot be read ({reason(exc)})") from None
    with container:
        if not container.streams.video:
            raise VidrestoreError(f"{path}: the chunk's part file has no video")
        yield container


def _check_parts(parts: Sequence[Path], videos: list[av.VideoStream]) -> None:
    """Parts joined by stream copy must share one set of codec parameters (the first part's are kept)."""
    first = videos[0].codec_context
    for path, video in zip(parts, videos, strict=True):
        cc = video.codec_context
        if (
            video.time_base,
            cc.name,
            cc.width,
            cc.height,
            cc.format.name if cc.format else None,
            cc.extradata,
        ) != (
            videos[0].time_base,
            first.name,
            first.width,
            first.height,
            first.format.name if first.format else None,
            first.extradata,
        ):
            raise VidrestoreError(
                f"{path}: coded unlike the first chunk (another encoder build or settings?); "
                "restore this file whole"
            )


def _mux_merged(
    out: av.container.OutputContainer,
    video: av.VideoStream,
    parts: list[av.container.InputContainer],
    part_videos: list[av.VideoStream],
    source: av.container.InputContainer,
    streams: list[av.stream.Stream],
    routes: dict,
) -> tuple[int, int]:
    """The parts' video packets one part after another and the source's other packets, interleaved by
    decode time; returns how many of each were muxed."""
    counts = {"video": 0, "other": 0}

    def video_packets() -> Iterator[tuple[float, int, av.Packet]]:
        latest, dts = -math.inf, None  # the latest pts of the parts so far; the last decode time (ticks)
        for k, (container, stream) in enumerate(zip(parts, part_videos, strict=True)):
            shown = latest
            for n, packet in enumerate(p for p in container.demux(stream) if p.size):
                pts = float(packet.pts * packet.time_base) if packet.pts is not None else shown
                if n == 0 and not (packet.is_keyframe and pts > latest):
                    raise VidrestoreError(
                        f"chunk {k + 1} does not start with a keyframe after the chunk before it; "
                        "restore this file whole"
                    )
                shown = max(shown, pts)
                if packet.dts is None and dts is not None:
                    # Matroska stores no decode times, and its demuxer leaves a part's first ones unknown: any
                    # rising ones at or before the pts will do, and the muxer cannot guess them mid-stream.
                    packet.dts = dts + 1
                if packet.dts is not None:
                    dts = packet.dts
                counts["video"] += 1
                yield (float(dts * packet.time_base) if dts is not None else -math.inf), 0, packet
            latest = shown

    def other_packets() -> Iterator[tuple[float, int, av.Packet]]:
        if not streams:
            return
        when = -math.inf
        for packet in source.demux(*streams):
            if not packet.size:
                continue
            ts = packet.dts if packet.dts is not None else packet.pts
            when = float(ts * packet.time_base) if ts is not None else when
            counts["other"] += 1
            yield when, 1, packet

    for _, kind, packet in heapq.merge(video_packets(), other_packets(), key=lambda x: (x[0], x[1])):
        if kind == 0:
            packet.stream = video
            out.mux(packet)
        else:
            for routed in routes[packet.stream_index].feed(packet):
                out.mux(routed)
    return counts["video"], counts["other"]
