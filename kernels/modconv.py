"""Fused StyleGAN2 modulated convolution: one Triton implicit-GEMM kernel for StyleConv and ToRGB.

The official GFP-GAN builds a per-sample weight (B, C_out, C_in, k, k) and runs a grouped conv. Here ONE
shared weight serves the whole batch: the style scales the input channels as they are loaded, and the
demodulation is a (B, C_out) factor applied in the epilogue. Everything after the conv (x sqrt 2, noise, bias,
LeakyReLU, the CS-SFT ``x*scale+shift`` on the upper channels, ToRGB's upsampled skip) happens in registers
before the single store. StyleConv's bilinear x2 upsample (align_corners=False) is computed inside the input
load, so the upsampled activation never exists in memory.

The GEMM is M = output pixels of one sample (BLOCK_M), N = C_out (BLOCK_N), K = C_in * k * k, iterated as
channel blocks (BLOCK_K) times taps; fp16/bf16 operands accumulate in fp32. Activations are read and StyleConv
outputs written channels-last, so the K and N axes are contiguous in memory.

Triton decides between its compiler and its CPU interpreter (``TRITON_INTERPRET=1``) when a kernel is
defined, i.e. when this module is imported; without a CUDA device the import turns the interpreter on, so
that ``VIDRESTORE_TRITON=1`` and the tests can run the kernels on a CPU.
"""

from __future__ import annotations

import os
from typing import Any

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import triton  # noqa: E402
import triton.language as tl  # noqa: E402
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402

__all__ = ["INTERPRETED", "compiled_kernels", "modulated_conv2d"]

_EPS = 1e-8

# Candidate tiles on a GPU, clamped to each problem by _fit and autotuned once per layer shape and dtype.
_GPU_CONFIGS = [
    triton.Config({"BLOCK_M": m, "BLOCK_N": n, "BLOCK_K": k}, num_warps=w, num_stages=s)
    for m, n, k, w, s in [
        (128, 128, 64, 8, 3),
        (128, 128, 32, 4, 4),
        (128, 64, 64, 4, 4),
        (64, 128, 64, 4, 4),
        (64, 64, 64, 4, 3),
        (128, 256, 64, 8, 3),
        (64, 64, 32, 4, 2),  # fits GPUs with ~100 KB of shared memory, also for the upsampling gathers
    ]
]
# One tile in the interpreter, whose cost is per program and loop step rather than per element: large enough
# for the tiny model to run in seconds, small enough for the test shapes to span several tiles on every axis.
_INTERPRETER_CONFIG = triton.Config({"BLOCK_M": 256, "BLOCK_N": 64, "BLOCK_K": 32})


def _fit(configs: list[triton.Config], named_args: dict[str, Any], **kwargs: Any) -> list[triton.Config]:
    """Shrink each tile to the problem (tl.dot needs >= 16 per axis) and drop the duplicates this creates."""
    args = {**named_args, **kwargs}
    limits = {
        "BLOCK_M": args["H"] * args["W"],
        "BLOCK_N": args["C_out"],
        "BLOCK_K": args["C_in"],
    }
    fitted: dict[tuple, triton.Config] = {}
    for cfg in configs:
        blocks = {
            name: min(size, max(16, triton.next_power_of_2(limits[name])))
            for name, size in cfg.kwargs.items()
        }
        key = (*blocks.values(), cfg.num_warps, cfg.num_stages)
        fitted.setdefault(key, triton.Config(blocks, num_warps=cfg.num_warps, num_stages=cfg.num_stages))
    return list(fitted.values())


@triton.jit
def _bilinear_x2(u, size):
    """Source indices and the weight of the first for sample ``u`` of a bilinear x2 upsample of ``size``.

    align_corners=False maps u to u/2 - 0.25: even u = 2j blends j-1 (0.25) and j (0.75), odd u = 2j+1 blends
    j (0.75) and j+1 (0.25). Clamping the indices reproduces PyTorch's edge handling exactly.
    """
    odd = u & 1
    lo = (u >> 1) - 1 + odd
    weight_lo = 0.25 + 0.5 * odd.to(tl.float32)
    i0 = tl.minimum(tl.maximum(lo, 0), size - 1)
    i1 = tl.minimum(tl.maximum(lo + 1, 0), size - 1)
    return i0, i1, weight_lo


@triton.jit
def _load_upsampled(base, uh, uw, h_src, w_src, stride_h, stride_w, mask):
    """fp32 tile of the bilinear x2 upsample of the image at ``base`` (one pointer per column), at rows ``uh``
    and columns ``uw`` of the upsampled grid: four gathers of the source, never the upsampled image."""
    h0, h1, wh = _bilinear_x2(uh, h_src)
    w0, w1, ww = _bilinear_x2(uw, w_src)
    wh = wh[:, None]
    ww = ww[:, None]
    row0 = base + h0[:, None] * stride_h
    row1 = base + h1[:, None] * stride_h
    col0 = w0[:, None] * stride_w
    col1 = w1[:, None] * stride_w
    top = ww * tl.load(row0 + col0, mask=mask, other=0.0).to(tl.float32)
    top += (1 - ww) * tl.load(row0 + col1, mask=mask, other=0.0).to(tl.float32)
    bottom = ww * tl.load(row1 + col0, mask=mask, other=0.0).to(tl.float32)
    bottom += (1 - ww) * tl.load(row1 + col1, mask=mask, other=0.0).to(tl.float32)
    return wh * top + (1 - wh) * bottom


@triton.jit
def _cast(x, dtype: tl.constexpr, ROUND_BF16: tl.constexpr):
    """``x.to(dtype)``, rounding to nearest even by hand first if ROUND_BF16: the interpreter truncates."""
    if ROUND_BF16 and dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


@triton.jit
def _modconv_kernel(
    x_ptr,
    w_ptr,
    style_ptr,
    demod_ptr,
    noise_ptr,
    noise_weight_ptr,
    bias_ptr,
    sft_scale_ptr,
    sft_shift_ptr,
    skip_ptr,
    out_ptr,
    C_in,
    C_out,
    H_in,
    W_in,
    H,
    W,
    stride_xb,
    stride_xc,
    stride_xh,
    stride_xw,
    stride_noise_b,
    sft_start,
    stride_sft_b,
    stride_sft_c,
    stride_sft_m,
    H_skip,
    W_skip,
    stride_skip_b,
    stride_skip_c,
    stride_skip_h,
    stride_skip_w,
    stride_ob,
    stride_oc,
    stride_om,
    gain,
    negative_slope,
    KS: tl.constexpr,
    UPSAMPLE: tl.constexpr,
    DEMODULATE: tl.constexpr,
    NOISE: tl.constexpr,
    BIAS: tl.constexpr,
    LEAKY: tl.constexpr,
    SFT: tl.constexpr,
    SKIP: tl.constexpr,
    SKIP_UPSAMPLE: tl.constexpr,
    UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    HW = H * W
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_ok = offs_m < HW
    n_ok = offs_n < C_out
    oh = offs_m // W
    ow = offs_m % W

    x_base = x_ptr + b * stride_xb
    # tl.zeros and tl.cdiv are @jit library functions, which break the interpreter if triton was imported
    # before TRITON_INTERPRET was set (as in a test run); builtins only.
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32)
    for step in range(0, (C_in + BLOCK_K - 1) // BLOCK_K * KS * KS):
        # Taps innermost: consecutive steps re-read the same channels, shifted, which stay in cache.
        tap = step % (KS * KS)
        c = (step // (KS * KS)) * BLOCK_K + offs_k
        c_ok = c < C_in
        uh = oh + tap // KS - KS // 2  # position in the conv's (upsampled) input; zero padding outside
        uw = ow + tap % KS - KS // 2
        inside = m_ok & (uh >= 0) & (uh < H) & (uw >= 0) & (uw < W)
        mask = inside[:, None] & c_ok[None, :]
        x_c = x_base + c[None, :] * stride_xc
        if UPSAMPLE:
            a = _load_upsampled(x_c, uh, uw, H_in, W_in, stride_xh, stride_xw, mask)
        else:
            offs_x = uh[:, None] * stride_xh + uw[:, None] * stride_xw
            a = tl.load(x_c + offs_x, mask=mask, other=0.0).to(tl.float32)
        style = tl.load(style_ptr + b * C_in + c, mask=c_ok, other=0.0)
        # Modulate in fp32, then round to the operand dtype exactly as the tensor cores will see it.
        a = _cast(a * style[None, :], w_ptr.dtype.element_ty, UPCAST)
        w_offs = (tap * C_in + c)[:, None] * C_out + offs_n[None, :]
        w = tl.load(w_ptr + w_offs, mask=c_ok[:, None] & n_ok[None, :], other=0.0)
        if UPCAST:  # the interpreter computes low-precision dots wrongly; same rounded operands, fp32 dot
            acc = tl.dot(a.to(tl.float32), w.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, w, acc, input_precision="ieee")

    if DEMODULATE:
        acc *= tl.load(demod_ptr + b * C_out + offs_n, mask=n_ok, other=0.0)[None, :]
    acc *= gain
    if NOISE:
        noise = tl.load(noise_ptr + b * stride_noise_b + offs_m, mask=m_ok, other=0.0).to(tl.float32)
        acc += tl.load(noise_weight_ptr).to(tl.float32) * noise[:, None]
    if BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    if LEAKY:
        acc = tl.where(acc >= 0, acc, acc * negative_slope)
    if SFT:  # CS-SFT on channels >= sft_start; the others get scale 1 and shift 0
        sft_ok = m_ok[:, None] & (n_ok & (offs_n >= sft_start))[None, :]
        sft_offs = (
            b * stride_sft_b + (offs_n - sft_start)[None, :] * stride_sft_c + offs_m[:, None] * stride_sft_m
        )
        scale = tl.load(sft_scale_ptr + sft_offs, mask=sft_ok, other=1.0).to(tl.float32)
        shift = tl.load(sft_shift_ptr + sft_offs, mask=sft_ok, other=0.0).to(tl.float32)
        acc = acc * scale + shift
    if SKIP:
        skip_ok = m_ok[:, None] & n_ok[None, :]
        skip_c = skip_ptr + b * stride_skip_b + offs_n[None, :] * stride_skip_c
        if SKIP_UPSAMPLE:
            acc += _load_upsampled(skip_c, oh, ow, H_skip, W_skip, stride_skip_h, stride_skip_w, skip_ok)
        else:
            skip_offs = oh[:, None] * stride_skip_h + ow[:, None] * stride_skip_w
            acc += tl.load(skip_c + skip_offs, mask=skip_ok, other=0.0).to(tl.float32)

    out_offs = b * stride_ob + offs_n[None, :] * stride_oc + offs_m[:, None] * stride_om
    tl.store(
        out_ptr + out_offs, _cast(acc, out_ptr.dtype.element_ty, UPCAST), mask=m_ok[:, None] & n_ok[None, :]
    )


INTERPRETED: bool = isinstance(_modconv_kernel, InterpretedFunction)  # fixed when the kernel was defined
_KEY = ["C_in", "C_out", "H", "W", "KS", "UPSAMPLE", "SFT", "SKIP_UPSAMPLE"]
_tuned_kernel = triton.autotune(
    [_INTERPRETER_CONFIG] if INTERPRETED else _GPU_CONFIGS,
    key=_KEY,
    prune_configs_by={"early_config_prune": _fit},
)(_modconv_kernel)


def _flat_hw(t: torch.Tensor) -> torch.Tensor:
    """``t`` (B, C, H, W) with H and W mergeable into one pixel axis (true for NCHW and channels-last)."""
    return t if t.stride(2) == t.shape[3] * t.stride(3) else t.contiguous()


def _check(name: str, t: torch.Tensor, shape: tuple[int, ...]) -> None:
    """Shapes are checked on the host (no sync): a wrong one would make the kernel read out of bounds."""
    if tuple(t.shape) != shape:
        raise ValueError(f"{name} has shape {tuple(t.shape)}, expected {shape}")


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    style: torch.Tensor,
    demodulate: bool,
    upsample: bool,
    padding: int,
    *,
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
) -> torch.Tensor:
    """The reference ``vidrestore.models.gfpgan.modulated_conv2d`` plus a fused epilogue, in one kernel.

    Computes ``act(modconv(x) * gain + noise_weight * noise + bias)``, then ``x*scale + shift`` on the last
    ``C_sft`` channels (``sft = (scale, shift)``, each (B, C_sft, H, W)), then adds ``skip`` (B, C_out, H, W),
    or (B, C_out, H/2, W/2) bilinearly upsampled if ``skip_upsample``. ``weight`` is (C_out, C_in, k, k), odd
    k, ``padding == k // 2``; ``style`` (B, C_in); ``noise`` (1 or B, 1, H, W); ``noise_weight`` 1 element
    and ``bias`` C_out elements, both read on the device (no host sync: the call is CUDA-graph capturable);
    ``act`` is LeakyReLU(negative_slope), or none if that is None. The result has x's dtype and is written
    into ``out`` if given, else into a new tensor, channels-last unless ``channels_last=False``.
    """
    batch, c_in, h_in, w_in = x.shape
    c_out, _, ks, _ = weight.shape
    height, width = (2 * h_in, 2 * w_in) if upsample else (h_in, w_in)
    _check("weight", weight, (c_out, c_in, ks, ks))
    if ks % 2 == 0 or padding != ks // 2:
        raise ValueError(f"only odd kernels with 'same' padding are fused, got k={ks}, padding={padding}")
    _check("style", style, (batch, c_in))
    if x.device.type != "cuda" and not INTERPRETED:
        raise RuntimeError(
            f"the Triton kernels were compiled for CUDA, x is on {x.device}: set TRITON_INTERPRET=1 before "
            "vidrestore.kernels first runs a kernel to use the CPU interpreter"
        )
    if x.stride(1) != 1:  # channels-last: the GEMM's K axis contiguous (free for the 4 px constant input)
        x = x.contiguous(memory_format=torch.channels_last)

    style = style.float()
    if demodulate and x.dtype == torch.float16:
        # NVIDIA's guard: keep x*style inside fp16's range; demodulation cancels the per-sample factor.
        style = style / style.abs().amax(dim=1, keepdim=True)
    demod = None
    if demodulate:
        weight_sq = weight.float().square().sum(dim=(2, 3))  # (C_out, C_in)
        demod = torch.rsqrt(style.square() @ weight_sq.T + _EPS)  # (B, C_out): no per-sample weight
    packed = weight.to(x.dtype).permute(2, 3, 1, 0).reshape(ks * ks, c_in, c_out).contiguous()  # (tap, K, N)

    if out is None:
        layout = torch.channels_last if channels_last else torch.contiguous_format
        out = torch.empty(batch, c_out, height, width, dtype=x.dtype, device=x.device, memory_format=layout)
    _check("out", out, (batch, c_out, height, width))
    if out.dtype != x.dtype or out.stride(2) != width * out.stride(3):
        raise ValueError("out must have x's dtype and mergeable H, W strides (NCHW or channels-last)")
    stride_noise_b = 0
    if noise is not None:
        if noise.shape[0] not in (1, batch):
            raise ValueError(f"noise has batch {noise.shape[0]}, expected 1 or {batch}")
        _check("noise", noise, (noise.shape[0], 1, height, width))
        noise = noise.contiguous()
        stride_noise_b = height * width if noise.shape[0] > 1 else 0
        _check("noise_weight", noise_weight, (1,))
    if bias is not None:
        _check("bias", bias, (c_out,))
    sft_scale = sft_shift = None
    sft_start, sft_strides = c_out, (0, 0, 0)
    if sft is not None:
        sft_scale, sft_shift = (_flat_hw(t) for t in sft)
        c_sft = sft_scale.shape[1]
        _check("sft scale", sft_scale, (batch, c_sft, height, width))
        _check("sft shift", sft_shift, (batch, c_sft, height, width))
        if sft_shift.stride() != sft_scale.stride():
            sft_scale, sft_shift = sft_scale.contiguous(), sft_shift.contiguous()
        sft_start = c_out - c_sft
        sft_strides = (sft_scale.stride(0), sft_scale.stride(1), sft_scale.stride(3))
    skip_size, skip_strides = (0, 0), (0, 0, 0, 0)
    if skip is not None:
        skip_size = (height // 2, width // 2) if skip_upsample else (height, width)
        _check("skip", skip, (batch, c_out, *skip_size))
        skip_strides = skip.stride()

    def grid(meta: dict[str, Any]) -> tuple[int, int, int]:
        return triton.cdiv(height * width, meta["BLOCK_M"]), triton.cdiv(c_out, meta["BLOCK_N"]), batch

    _tuned_kernel[grid](
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
        KS=ks,
        UPSAMPLE=upsample,
        DEMODULATE=demodulate,
        NOISE=noise is not None,
        BIAS=bias is not None,
        LEAKY=negative_slope is not None,
        SFT=sft is not None,
        SKIP=skip is not None,
        SKIP_UPSAMPLE=skip_upsample,
        UPCAST=INTERPRETED,
    )
    return out


def compiled_kernels() -> dict[str, Any]:
    """Resource usage of every compiled variant of the kernel (registers, spills, shared memory, tiles).

    Meaningful on a GPU after the kernels have run (the autotuner loads every candidate); the benchmark writes
    it into its JSON report so that register pressure and spills are on record with the timings.
    """
    variants = []
    for device_cache in getattr(_modconv_kernel, "device_caches", {}).values():  # none in the interpreter
        for compiled in device_cache[0].values():
            names = _modconv_kernel.arg_names
            constexprs = {names[path[0]]: value for path, value in compiled.src.constants.items()}
            variants.append(
                {
                    "name": compiled.name,
                    **{
                        k: v if isinstance(v, int | float) else str(v)
                        for k, v in constexprs.items()
                        if k.isupper()
                    },
                    "num_warps": compiled.metadata.num_warps,
                    "num_stages": compiled.metadata.num_stages,
                    "n_regs": getattr(compiled, "n_regs", None),
                    "n_spills": getattr(compiled, "n_spills", None),
                    "shared_bytes": compiled.metadata.shared,
                }
            )
    best = {str(key): str(cfg) for key, cfg in _tuned_kernel.cache.items()}
    return {"best_config_per_shape": best, "variants": variants}
