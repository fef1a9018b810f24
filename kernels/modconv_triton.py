"""The Triton source of the fused modulated conv (see :mod:`vidrestore.kernels.modconv`), built twice.

The kernel and its helpers are plain functions, wrapped here explicitly both ways: as ``JITFunction`` for the
compiler (CUDA tensors) and as ``InterpretedFunction`` for Triton's CPU interpreter (CPU tensors: tests).
``triton.jit`` would pick one of the two from ``TRITON_INTERPRET`` when the module is imported, a choice for
the whole process; building both lets :func:`modulated_conv2d` choose per call from the tensor's device, and
leaves the environment alone. Only :mod:`vidrestore.kernels.modconv` imports this
module, on the first Triton call (Triton wheels exist for Linux only).

The GEMM is M = output pixels of one sample (BLOCK_M), N = C_out (BLOCK_N), K = C_in * k * k, iterated as
channel blocks (BLOCK_K) times taps; fp16/bf16 operands accumulate in fp32. Activations are read and StyleConv
outputs written channels-last, so the K and N axes are contiguous in memory. StyleConv's bilinear x2 upsample
(align_corners=False) is computed inside the input load, so the upsampled activation never exists in memory.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction

__all__ = ["INTERPRETER_BLOCKS", "compiled_kernels", "interpreted_kernel", "tuned_kernel"]

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
# Powers of 2, as tl.arange requires.
INTERPRETER_BLOCKS = {"BLOCK_M": 256, "BLOCK_N": 64, "BLOCK_K": 32}


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


def _cast(x, dtype: tl.constexpr, ROUND_BF16: tl.constexpr):
    """``x.to(dtype)``, rounding to nearest even by hand first if ROUND_BF16: the interpreter truncates."""
    if ROUND_BF16 and dtype == tl.bfloat16:
        bits = x.to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        x = bits.to(tl.float32, bitcast=True)
    return x.to(dtype)


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
    # One long kernel by design: the point of fusing is that nothing leaves registers between the GEMM and
    # the single store, so the loads, the GEMM loop and every epilogue step live in this one body.
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
    # tl.zeros and tl.cdiv are library functions jitted for the compiler when triton was imported; the
    # interpreter cannot call those: builtins only.
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


def _build(wrap: Callable[[Callable[..., Any]], Any]) -> dict[str, Any]:
    """The kernel and its helpers wrapped by ``wrap``, in a copy of this module's namespace.

    A Triton function resolves the helpers it calls through its ``__globals__``, and the compiler and the
    interpreter each need their own wrappers there, so each set gets its own namespace.
    """
    namespace = dict(globals())
    for fn in (_bilinear_x2, _load_upsampled, _cast, _modconv_kernel):
        clone = types.FunctionType(fn.__code__, namespace, fn.__name__, fn.__defaults__, fn.__closure__)
        clone.__qualname__ = fn.__qualname__
        namespace[fn.__name__] = wrap(clone)
    return namespace


_compiled_kernel: JITFunction = _build(JITFunction)["_modconv_kernel"]
# Tuned once per layer shape and flags (the autotuner adds the tensors' dtypes to the key).
tuned_kernel = triton.autotune(
    _GPU_CONFIGS,
    key=["C_in", "C_out", "H", "W", "KS", "UPSAMPLE", "SFT", "SKIP_UPSAMPLE"],
    prune_configs_by={"early_config_prune": _fit},
)(_compiled_kernel)
interpreted_kernel: InterpretedFunction = _build(InterpretedFunction)["_modconv_kernel"]


def compiled_kernels() -> dict[str, Any]:
    """Resource usage of every compiled variant of the kernel (registers, spills, shared memory, tiles).

    Meaningful on a GPU after the kernels have run (the autotuner loads every candidate); the benchmark writes
    it into its JSON report so that register pressure and spills are on record with the timings.
    """
    variants = []
    for device_cache in _compiled_kernel.device_caches.values():
        for compiled in device_cache[0].values():
            names = _compiled_kernel.arg_names
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
    best = {str(key): str(cfg) for key, cfg in tuned_kernel.cache.items()}
    return {"best_config_per_shape": best, "variants": variants}
