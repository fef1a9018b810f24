"""The fused StyleGAN2 modulated convolution: one public op, a PyTorch reference and a Triton implementation.

As in NVlabs stylegan2-ada-pytorch ``torch_utils/ops`` (``bias_act``: ``_bias_act_ref`` beside
``_bias_act_cuda`` behind one dispatcher), :func:`modulated_conv2d` is the only entry point; ``impl`` picks
:func:`_modconv_ref` (plain PyTorch, any device) or :func:`_modconv_triton` (one implicit-GEMM kernel, the
Triton source being in :mod:`vidrestore.kernels.modconv_triton`). The model calls nothing else, so the math
exists once per implementation and the parity tests compare the two through the same function.

Both share one weight across the batch instead of building a per-sample weight for a grouped conv: the style
scales the input channels and the demodulation is a (B, C_out) factor after the conv. The Triton kernel
applies everything after the conv (x gain, noise, bias, LeakyReLU, CS-SFT, ToRGB's upsampled skip) in
registers before its single store; the reference does the same steps as separate PyTorch ops.
"""

from __future__ import annotations

import importlib.util
import math
import os
from functools import cache
from types import ModuleType
from typing import Final, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ENV_VAR", "KERNEL_IMPLS", "modulated_conv2d", "set_kernel_impl", "triton_available"]

KERNEL_IMPLS: Final = ("auto", "triton", "torch")
# Test override of impl="auto" only: "1" means "triton" (on a CPU tensor, the interpreter), "0" means "torch".
ENV_VAR: Final = "VIDRESTORE_TRITON"
_EPS = 1e-8


@cache
def triton_available() -> bool:
    """Whether Triton is installed (checked without importing it: its wheels exist for Linux only)."""
    return importlib.util.find_spec("triton") is not None


@cache
def _triton() -> ModuleType:
    """The Triton source module, imported on the first Triton call so that the reference never needs it."""
    if not triton_available():
        raise RuntimeError("impl='triton' needs the triton package (Linux only); use impl='torch' or 'auto'")
    from vidrestore.kernels import modconv_triton

    return modconv_triton


def _check_impl(impl: str) -> None:
    if impl not in KERNEL_IMPLS:
        raise ValueError(f"kernel impl must be one of {', '.join(KERNEL_IMPLS)}; got {impl!r}")


def _resolve(impl: str, device: torch.device) -> str:
    """The impl that runs, "triton" or "torch", for ``impl`` on tensors on ``device``.

    "auto" is Triton on CUDA tensors when it is installed, else the reference. ``VIDRESTORE_TRITON=0|1``
    overrides "auto" only (tests and A/B runs without code changes); explicit impls ignore it.
    """
    _check_impl(impl)
    if impl != "auto":
        return impl
    flag = os.environ.get(ENV_VAR, "").strip()
    if flag not in ("", "0", "1"):
        raise ValueError(f"{ENV_VAR} must be 0, 1 or unset, got {flag!r}")
    if flag:
        return "triton" if flag == "1" else "torch"
    return "triton" if device.type == "cuda" and triton_available() else "torch"


def set_kernel_impl(module: nn.Module, impl: str) -> None:
    """Run every modulated conv in ``module`` (e.g. a loaded GFP-GAN) with ``impl``, one of KERNEL_IMPLS.

    A per-model choice rather than a process-wide switch: two engines in one process may differ. The modules
    that call :func:`modulated_conv2d` carry a ``kernel_impl`` attribute, passed on every call.
    """
    _check_impl(impl)
    for sub in module.modules():
        if hasattr(sub, "kernel_impl"):
            sub.kernel_impl = impl


def _check(name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    """Shapes are checked on the host (no sync): a wrong one would make the kernel read out of bounds."""
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {shape}")


class Epilogue(NamedTuple):
    """What follows the conv in StyleConv and ToRGB, as both impls take it (see :func:`modulated_conv2d`)."""

    gain: float
    noise: torch.Tensor | None
    noise_weight: torch.Tensor | None
    bias: torch.Tensor | None
    negative_slope: float | None
    sft: tuple[torch.Tensor, torch.Tensor] | None
    skip: torch.Tensor | None
    skip_upsample: bool


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    style: torch.Tensor,
    *,
    demodulate: bool,
    upsample: bool,
    padding: int,
    gain: float = 1.0,
    noise: torch.Tensor | None = None,
    noise_weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    negative_slope: float | None = None,
    sft: tuple[torch.Tensor, torch.Tensor] | None = None,
    skip: torch.Tensor | None = None,
    skip_upsample: bool = False,
    channels_last: bool = True,
    out: torch.Tensor | None = None,
    impl: str = "auto",
) -> torch.Tensor:
    """StyleGAN2 modulated conv with StyleConv's and ToRGB's epilogues: ``act(modconv(x) * gain + noise_weight
    * noise + bias)``, then CS-SFT ``x*scale + shift`` on the last ``C_sft`` channels, then ``+ skip``.

    ``x`` (B, C_in, H, W) is bilinearly upsampled x2 first if ``upsample``; ``weight`` (C_out, C_in, k, k);
    ``style`` (B, C_in); ``demodulate`` divides each output channel by its modulated weight's norm. ``noise``
    (1 or B, 1, H', W') scaled by the 1-element ``noise_weight``; ``bias`` C_out elements; ``act`` is
    LeakyReLU(negative_slope), none if None; ``sft = (scale, shift)``, each (B, C_sft, H', W'); ``skip``
    (B, C_out, H', W'), or half size and bilinearly upsampled if ``skip_upsample``. Tensors are read on the
    device (no host sync, so the call is CUDA-graph capturable). The result has x's dtype and goes into
    ``out`` if given. ``channels_last`` is the Triton kernel's layout for a new result (its fast store); the
    reference keeps PyTorch's layout.

    ``impl``: "triton" (the fused kernel; compiled on CUDA tensors, Triton's interpreter on CPU tensors),
    "torch" (the reference), or "auto" (Triton on CUDA when installed, else the reference; see ``ENV_VAR``).
    The Triton kernel supports odd k with ``padding == k // 2`` only, which is what the model uses.
    """
    # Long for its checks: a wrong shape would make the kernel read out of bounds, so every tensor is checked
    # here, once, before either impl runs.
    batch, c_in, h_in, w_in = x.shape
    c_out, _, ks, _ = weight.shape
    size = (2 * h_in, 2 * w_in) if upsample else (h_in, w_in)
    _check("weight", weight, (c_out, c_in, ks, ks))
    _check("style", style, (batch, c_in))
    if noise is not None:
        if noise.shape[0] not in (1, batch):
            raise ValueError(f"noise has batch {noise.shape[0]}, expected 1 or {batch}")
        _check("noise", noise, (noise.shape[0], 1, *size))
        if noise_weight is None:
            raise ValueError("noise needs noise_weight")
        _check("noise_weight", noise_weight, (1,))
    if bias is not None:
        _check("bias", bias, (c_out,))
    if sft is not None:
        c_sft = sft[0].shape[1]
        _check("sft scale", sft[0], (batch, c_sft, *size))
        _check("sft shift", sft[1], (batch, c_sft, *size))
    if skip is not None:
        _check("skip", skip, (batch, c_out, *((size[0] // 2, size[1] // 2) if skip_upsample else size)))
    if out is not None:
        _check("out", out, (batch, c_out, *size))
        if out.dtype != x.dtype:
            raise ValueError(f"out has dtype {out.dtype}, expected x's {x.dtype}")

    epilogue = Epilogue(gain, noise, noise_weight, bias, negative_slope, sft, skip, skip_upsample)
    if _resolve(impl, x.device) == "triton":
        return _modconv_triton(x, weight, style, demodulate, upsample, padding, channels_last, out, epilogue)
    result = _modconv_ref(x, weight, style, demodulate, upsample, padding, epilogue)
    return result if out is None else out.copy_(result)


def _accumulator(dtype: torch.dtype) -> torch.dtype:
    """The dtype of everything but the GEMM's operands: fp32, or float64 for a float64 reference."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _operands(
    weight: torch.Tensor, style: torch.Tensor, demodulate: bool, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The GEMM's weight (in ``dtype``), the style (accumulator dtype) and the demodulation (B, C_out).

    One function for both impls, so that they normalise and round alike. In fp16 a demodulated layer's weight
    rows are divided by their inf-norm and sqrt(fan_in), and each style row by its inf-norm (NVIDIA
    stylegan2-ada), so that neither ``x * style`` nor the reference's un-demodulated fp16 conv can overflow.
    The demodulation ``rsqrt(sum_i (sum_k w[o, i, k]^2) * s[b, i]^2 + eps)`` is computed from the rounded
    weight the GEMM reads, so it cancels those scales exactly.
    """
    acc = _accumulator(dtype)
    weight, style = weight.to(acc), style.to(acc)
    if demodulate and dtype == torch.float16:
        tiny = torch.finfo(acc).tiny  # an all-zero row stays zero instead of becoming NaN
        row_max = weight.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(tiny)
        weight = weight / (math.sqrt(weight[0].numel()) * row_max)
        style = style / style.abs().amax(dim=1, keepdim=True).clamp_min(tiny)
    weight = weight.to(dtype)
    demod = None
    if demodulate:
        weight_sq = weight.to(acc).square().sum(dim=(2, 3))  # (C_out, C_in)
        demod = torch.rsqrt(style.square() @ weight_sq.T + _EPS)  # (B, C_out): no per-sample weight
    return weight, style, demod


def _modconv_ref(
    x: torch.Tensor,
    weight: torch.Tensor,
    style: torch.Tensor,
    demodulate: bool,
    upsample: bool,
    padding: int,
    epilogue: Epilogue,
) -> torch.Tensor:
    """The reference: plain PyTorch ops on any device, also what the tests run in float64.

    ``conv(x, w * s) * d == conv(x * s, w) * d``, so the style scales the input channels and ONE conv with
    the shared weight serves the whole batch. It rounds where the kernel rounds: the (upsampled) input times
    the style is computed in fp32 and rounded once to x's dtype, the conv's operands are :func:`_operands`',
    and everything after the conv runs in fp32 with one rounding at the end. The one difference left is
    PyTorch's conv, which rounds its fp32 sums to x's dtype before the demodulation (the kernel keeps them).
    """
    gain, noise, noise_weight, bias, negative_slope, sft, skip, skip_upsample = epilogue
    batch, dtype = x.shape[0], x.dtype
    acc = _accumulator(dtype)
    weight, style, demod = _operands(weight, style, demodulate, dtype)
    out = x.to(acc)
    if upsample:
        out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=False)
    out = (out * style.view(batch, -1, 1, 1)).to(dtype)
    out = F.conv2d(out, weight, padding=padding).to(acc)
    if demod is not None:
        out = out * demod.view(batch, -1, 1, 1)

    if gain != 1:
        out = out * gain
    if noise is not None:
        out = out + noise_weight.to(acc) * noise.to(acc)
    if bias is not None:
        out = out + bias.to(acc).view(1, -1, 1, 1)
    if negative_slope is not None:
        out = F.leaky_relu(out, negative_slope)
    if sft is not None:  # with sft_half the first channels pass unchanged (realism), else all are modulated
        scale, shift = (t.to(acc) for t in sft)
        start = out.shape[1] - scale.shape[1]
        modulated = torch.addcmul(shift, out[:, start:], scale)
        out = modulated if start == 0 else torch.cat([out[:, :start], modulated], dim=1)
    if skip is not None:
        skip = skip.to(acc)
        if skip_upsample:
            skip = F.interpolate(skip, scale_factor=2, mode="bilinear", align_corners=False)
        out = out + skip
    return out.to(dtype)


def _flat_hw(t: torch.Tensor) -> torch.Tensor:
    """``t`` (B, C, H, W) with H and W mergeable into one pixel axis (true for NCHW and channels-last)."""
    return t if t.stride(2) == t.shape[3] * t.stride(3) else t.contiguous()


def _modconv_triton(
    x: torch.Tensor,
    weight: torch.Tensor,
    style: torch.Tensor,
    demodulate: bool,
    upsample: bool,
    padding: int,
    channels_last: bool,
    out: torch.Tensor | None,
    epilogue: Epilogue,
) -> torch.Tensor:
    """The fused kernel: compiled and autotuned on CUDA tensors, Triton's interpreter on CPU tensors.

    Launched under ``x``'s CUDA device, so that tensors on ``cuda:1`` run (and autotune) on GPU 1. The
    interpreter computes low-precision arithmetic wrongly, so there the kernel upcasts to fp32 and rounds
    bf16 by hand (``UPCAST``).
    """
    # Long because a Triton launch takes every pointer, size, stride and flag positionally: the packing
    # stays in one place, in the kernel's argument order.
    gain, noise, noise_weight, bias, negative_slope, sft, skip, skip_upsample = epilogue
    batch, c_in, h_in, w_in = x.shape
    c_out, _, ks, _ = weight.shape
    height, width = (2 * h_in, 2 * w_in) if upsample else (h_in, w_in)
    if ks % 2 == 0 or padding != ks // 2:
        raise ValueError(f"only odd kernels with 'same' padding are fused, got k={ks}, padding={padding}")
    if x.stride(1) != 1:  # channels-last: the GEMM's K axis contiguous (free for the 4 px constant input)
        x = x.contiguous(memory_format=torch.channels_last)

    weight, style, demod = _operands(weight, style, demodulate, x.dtype)  # as the reference's
    packed = weight.permute(2, 3, 1, 0).reshape(ks * ks, c_in, c_out).contiguous()  # (tap, K, N)

    if out is None:
        layout = torch.channels_last if channels_last else torch.contiguous_format
        out = torch.empty(batch, c_out, height, width, dtype=x.dtype, device=x.device, memory_format=layout)
    if out.stride(2) != width * out.stride(3):
        raise ValueError("out must have mergeable H, W strides (NCHW or channels-last)")
    stride_noise_b = 0
    if noise is not None:
        noise = noise.contiguous()
        stride_noise_b = height * width if noise.shape[0] > 1 else 0
    sft_scale = sft_shift = None
    sft_start, sft_strides = c_out, (0, 0, 0)
    if sft is not None:
        sft_scale, sft_shift = (_flat_hw(t) for t in sft)
        if sft_shift.stride() != sft_scale.stride():
            sft_scale, sft_shift = sft_scale.contiguous(), sft_shift.contiguous()
        sft_start = c_out - sft_scale.shape[1]
        sft_strides = (sft_scale.stride(0), sft_scale.stride(1), sft_scale.stride(3))
    skip_size, skip_strides = (0, 0), (0, 0, 0, 0)
    if skip is not None:
        skip_size = tuple(skip.shape[2:])
        skip_strides = skip.stride()

    args = (
        x,
        packed,
        style,
        demod,
        noise,
        noise_weight,
        bias,
        sft_scale,
        sft_shift,
        skip,
        out,
        c_in,
        c_out,
        h_in,
        w_in,
        height,
        width,
        *x.stride(),
        stride_noise_b,
        sft_start,
        *sft_strides,
        *skip_size,
        *skip_strides,
        out.stride(0),
        out.stride(1),
        out.stride(3),
        gain,
        0.0 if negative_slope is None else negative_slope,
    )
    flags = {
        "KS": ks,
        "UPSAMPLE": upsample,
        "DEMODULATE": demodulate,
        "NOISE": noise is not None,
        "BIAS": bias is not None,
        "LEAKY": negative_slope is not None,
        "SFT": sft is not None,
        "SKIP": skip is not None,
        "SKIP_UPSAMPLE": skip_upsample,
        "UPCAST": not x.is_cuda,
    }

    def grid(meta: dict) -> tuple[int, int, int]:
        return -(-height * width // meta["BLOCK_M"]), -(-c_out // meta["BLOCK_N"]), batch

    source = _triton()
    if x.is_cuda:
        with torch.cuda.device(x.device):  # the launch, and the autotuner's benchmarks, on x's GPU
            source.tuned_kernel[grid](*args, **flags)
    else:
        source.interpreted_kernel[grid](*args, **flags, **source.INTERPRETER_BLOCKS)
    return out
