"""NVIDIA's video engines: NVDEC decoding and NVENC encoding, used only where they open and change nothing.

PyAV's wheels carry FFmpeg's ``cuda`` hwaccel and the ``h264_nvenc``/``hevc_nvenc``/``av1_nvenc`` encoders,
but they need an NVIDIA GPU and driver at run time, and not every GPU has the engines (A100, H100 and H200
have NVDEC but no NVENC). So nothing here trusts a list: availability is decided by opening the thing.

- Decoding (``hwaccel``): ``none`` decodes on the CPU; ``cuda`` decodes with NVDEC and is one clear error
  where it cannot; ``auto`` uses NVDEC where it opens and otherwise decodes on the CPU (with a notice when a
  GPU is present, silently when there is none). Frames are downloaded and converted to the stream's own
  software format (NVDEC hands out ``nv12``/``p010le``), so everything after the decoder sees what the CPU
  decoder would have produced.
- Encoding: ``codec="auto"`` is the container's CPU default unless CUDA is present, that default has an
  NVENC counterpart (libx264 → h264_nvenc, libx265 → hevc_nvenc, libsvtav1 → av1_nvenc), the output would
  be the same stream (pixel format taken as it is, so untouched samples stay bit-exact; no alpha, no HDR,
  square pixels, no encoder options written for the CPU encoder) and the encoder opens at the output's
  size.
  Naming an NVENC encoder where it cannot open is one clear error.

Our quality settings map onto NVENC's constant-quality mode: ``crf`` becomes ``cq`` at the same value with
``rc=vbr`` and no bit-rate cap (both are quantiser scales of the same codec: 0-51 for H.264/HEVC, 0-63 for
AV1), ``preset`` becomes ``p1``..``p7`` (x264/x265 names and SVT-AV1 numbers mapped by speed) with
``tune=hq``. 10-bit and 4:4:4 inputs go to ``p010le``/``p016le``/``yuv444p16le``, the formats NVENC takes
(FFmpeg picks the matching profile); colour tags reach the bitstream from the codec context as for the CPU
encoders.
"""

from __future__ import annotations

from fractions import Fraction

import av
from av.codec.hwaccel import HWAccel

from vidrestore.errors import VidrestoreError
from vidrestore.io.paths import reason

HWACCELS = ("none", "auto", "cuda")
# The CPU defaults' NVENC counterparts: same codec, so the same players take the output.
NVENC = {"libx264": "h264_nvenc", "libx265": "hevc_nvenc", "libsvtav1": "av1_nvenc"}
# cq when crf is unset: the CPU counterpart's default crf.
_DEFAULT_CQ = {"h264_nvenc": 18, "hevc_nvenc": 20, "av1_nvenc": 28}
_MAX_CQ = {"h264_nvenc": 51, "hevc_nvenc": 51, "av1_nvenc": 63}
# x264/x265 preset names by speed onto NVENC's p1 (fastest) .. p7 (best).
_NAMED_PRESETS = {
    "ultrafast": "p1",
    "superfast": "p1",
    "veryfast": "p2",
    "faster": "p3",
    "fast": "p3",
    "medium": "p4",
    "slow": "p5",
    "slower": "p6",
    "veryslow": "p7",
    "placebo": "p7",
}
_DEFAULT_PRESET = {"h264_nvenc": "medium", "hevc_nvenc": "medium", "av1_nvenc": "8"}  # the CPU defaults'
# Input formats NVENC takes as they are, as the CPU encoders do: the sink then composes restored faces into
# the decoded planes and the rest of the frame stays bit-exact.
_AS_IS = frozenset({"yuv420p", "yuv444p"})
_NEEDS = "an NVIDIA GPU with its driver"


def cuda_available() -> bool:
    """Whether a CUDA GPU and driver are present (torch's answer: the engine uses the same one)."""
    import torch  # here: the encoder choice must not make every import of the sink load torch

    return torch.cuda.is_available()


def is_nvenc(codec: str) -> bool:
    return codec in _DEFAULT_CQ


# -- settings mapping ------------------------------------------------------------------------------


def nvenc_preset(preset: str | None, encoder: str) -> str:
    """NVENC's ``p1``..``p7`` for one of our presets: its own names, x264/x265 names, or SVT-AV1's 0-13."""
    value = (preset if preset is not None else _DEFAULT_PRESET[encoder]).lower()
    if value in {f"p{n}" for n in range(1, 8)}:
        return value
    if value in _NAMED_PRESETS:
        return _NAMED_PRESETS[value]
    if value.isdigit() and int(value) <= 13:
        return f"p{max(1, 7 - int(value) // 2)}"  # SVT-AV1: 0 slowest .. 13 fastest
    raise VidrestoreError(
        f"{encoder} has no preset '{preset}': use p1 (fastest) .. p7 (best), an x264 name "
        "(ultrafast .. veryslow) or an SVT-AV1 number (0 .. 13)"
    )


def nvenc_cq(crf: int | None, encoder: str) -> int:
    """The constant-quality target for ``crf``, on the same quantiser scale."""
    cq = _DEFAULT_CQ[encoder] if crf is None else crf
    if cq > _MAX_CQ[encoder]:
        raise VidrestoreError(f"{encoder} takes crf 0 .. {_MAX_CQ[encoder]}, not {crf}")
    return cq


def nvenc_options(encoder: str, crf: int | None, preset: str | None, extra: dict[str, str]) -> dict[str, str]:
    """crf and preset as NVENC's constant-quality VBR (``b=0``: no bit-rate cap, NVENC's default is 2M),
    then the free-form options, each checked against what the encoder knows."""
    options = {
        "rc": "vbr",
        "cq": str(nvenc_cq(crf, encoder)),
        "b": "0",
        "preset": nvenc_preset(preset, encoder),
        "tune": "hq",
    }
    if extra:
        supported = av.CodecContext.create(encoder, "w").supported_options
        known = {o.name for o in supported.generic} | {o.name for o in supported.private}
        for key, value in extra.items():
            if key not in known:
                raise VidrestoreError(f"{encoder} has no option '{key}'")
            options[key] = str(value)
    return options


def nvenc_pix_fmt(source: str) -> str | None:
    """The format NVENC encodes ``source`` in at the same bit depth and chroma layout; None where it has no
    such format (the sink then picks the closest one it supports)."""
    if source in _AS_IS:
        return source
    fmt = av.VideoFormat(source, 64, 64)  # a size, so that the components report their subsampling
    chroma = [c for c in fmt.components if not (c.is_luma or c.is_alpha)]  # is_chroma is 0 at 4:4:4
    if fmt.is_rgb or len(chroma) != 2 or fmt.components[0].bits <= 8:
        return None
    layout = (chroma[0].width, chroma[0].height)
    luma = (fmt.components[0].width, fmt.components[0].height)
    if layout == luma:
        return "yuv444p16le"
    if layout == ((luma[0] + 1) // 2, (luma[1] + 1) // 2):
        return "p010le" if fmt.components[0].bits == 10 else "p016le"
    return None  # 4:2:2: only the newest NVENC generations code it


# -- encoder choice --------------------------------------------------------------------------------


def probe_encoder(encoder: str, width: int, height: int, pix_fmt: str, options: dict[str, str]) -> str | None:
    """None when ``encoder`` opens at this size and format with these options; else FFmpeg's reason."""
    ctx = av.CodecContext.create(encoder, "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, pix_fmt
    ctx.time_base = Fraction(1, 25)
    ctx.options = dict(options)
    try:
        ctx.open()
    except (av.FFmpegError, OSError, ValueError) as exc:
        return reason(exc)
    return None


def auto_encoder(
    cpu: str,
    *,
    width: int,
    height: int,
    pix_fmt: str,
    crf: int | None,
    preset: str | None,
    plain: bool,
) -> tuple[str, str | None]:
    """The encoder for ``codec="auto"`` and a notice, or None: NVENC's counterpart of ``cpu`` where it
    would write the same stream and opens, else ``cpu``. ``plain``: no alpha, HDR10 metadata, explicit
    pixel format or encoder options (each tied to the CPU encoder), square pixels (NVENC's aspect ratio in
    the bitstream is unchecked), progressive pictures (interlaced coding is set up for the CPU encoders)."""
    nvenc = NVENC.get(cpu)
    if nvenc is None or not cuda_available():
        return cpu, None
    why = None
    if not plain:
        why = (
            "the output needs what only the CPU encoder is known to keep (alpha, HDR, non-square pixels, "
            "interlaced fields, pix_fmt or encoder options)"
        )
    elif pix_fmt not in _AS_IS:
        why = f"{nvenc} cannot take {pix_fmt} as it is"
    elif width % 2 or height % 2:
        why = f"the frame size {width}x{height} has an odd side"
    if why is None:
        try:
            options = nvenc_options(nvenc, crf, preset, {})
        except VidrestoreError as exc:
            why = str(exc)
        else:
            failure = probe_encoder(nvenc, width, height, pix_fmt, options)
            if failure is None:
                return nvenc, None
            why = f"{nvenc} does not open on this GPU ({failure})"
    return cpu, f"codec auto: encoding with {cpu} on the CPU, not {nvenc}: {why}"


def require_encoder(encoder: str, width: int, height: int, pix_fmt: str, options: dict[str, str]) -> None:
    """One clear line when the NVENC encoder the user named cannot work here."""
    if not cuda_available():
        raise VidrestoreError(
            f"{encoder} needs {_NEEDS}, and no CUDA device is available; use codec auto (NVENC where it "
            f"works, else the CPU) or a CPU encoder such as libx264"
        )
    failure = probe_encoder(encoder, width, height, pix_fmt, options)
    if failure is not None:
        raise VidrestoreError(
            f"{encoder} cannot open for {width}x{height} {pix_fmt} ({failure}): this GPU may have no video "
            f"encoder (A100, H100, H200) or the driver is too old; use codec auto or libx264"
        )


# -- decoding --------------------------------------------------------------------------------------


def decoder_hwaccel(mode: str, *, pipe: bool) -> HWAccel | None:
    """What to open the input with for ``mode``: None decodes on the CPU. A pipe is read once: it cannot be
    reopened on the CPU after a failed NVDEC open, nor read again for its software format."""
    if mode not in HWACCELS:
        raise VidrestoreError(f"hwaccel must be one of {', '.join(HWACCELS)}, not {mode!r}")
    if mode == "none" or (mode == "auto" and (pipe or not cuda_available())):
        return None
    if pipe:
        raise VidrestoreError(
            "hwaccel cuda decodes files, not standard input; use hwaccel auto or none for a pipe"
        )
    if not cuda_available():
        raise VidrestoreError(
            f"hwaccel cuda (NVDEC decoding) needs {_NEEDS}, and no CUDA device is available; use hwaccel "
            "auto or none"
        )
    return HWAccel("cuda", allow_software_fallback=True)


def decoder_failed(mode: str, failure: str) -> str:
    """The notice for a failed NVDEC open under ``auto``; raised as an error under ``cuda``."""
    if mode == "cuda":
        raise VidrestoreError(
            f"hwaccel cuda: NVDEC could not open ({failure}); check the NVIDIA driver, or use hwaccel auto "
            "or none"
        )
    return f"hwaccel auto: NVDEC could not open ({failure}); decoding on the CPU"


def software_format(path: str, index: int) -> str:
    """The pixel format the CPU decoder gives stream ``index`` (read from the header, nothing decoded)."""
    with av.open(path) as container:
        return container.streams[index].codec_context.pix_fmt
