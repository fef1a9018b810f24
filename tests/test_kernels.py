"""Parity of the two impls of ``vidrestore.kernels.modulated_conv2d`` (StyleConv, ToRGB, CS-SFT epilogues).

``impl="triton"`` runs the fused kernel: compiled on a CUDA device when there is one, else on the CPU through
Triton's interpreter, which the op selects per call from the tensor's device (no environment variable).
``impl="torch"`` is the PyTorch reference, evaluated in float64 on the CPU on the same (dtype-rounded) inputs.

Every case draws its own random inputs, writes into a NaN-poisoned output (so an element the kernel skips
fails the test) and compares ||out - ref|| / ||ref||. Channel counts are the 512 model's scaled by 1/8
(512, 256, 128, 64 -> 64, 32, 16, 8), plus a few at full size on small images.
"""

from __future__ import annotations

import copy
import math
import os
import subprocess
import sys
import zlib
from typing import NamedTuple

import pytest
import torch

from vidrestore import kernels
from vidrestore.models.gfpgan import GFPGANConfig, GFPGANv1Clean, StyleConv, ToRGB

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}
# Kernel against the reference in the same dtype: an ulp in 16 bits, summation order only in fp32.
SAME_DTYPE_TOLERANCE = {torch.float32: 1e-6, torch.bfloat16: 2**-8, torch.float16: 2**-11}
DTYPES = [pytest.param(dtype, id=str(dtype).removeprefix("torch.")) for dtype in TOLERANCE]
SQRT2 = math.sqrt(2)


def _generator(request: pytest.FixtureRequest) -> torch.Generator:
    """Fresh inputs per case, reproducible per test id."""
    return torch.Generator().manual_seed(zlib.crc32(request.node.nodeid.encode()))


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    assert out.shape == ref.shape
    assert torch.isfinite(out).all(), "an output element was not written (NaN poison) or overflowed"
    return ((out.double().cpu() - ref).norm() / ref.norm()).item()


def _reference(x: torch.Tensor, weight: torch.Tensor, style: torch.Tensor, **kwargs) -> torch.Tensor:
    """The same op with impl="torch", in float64 on the CPU."""

    def f64(t: object) -> object:
        if isinstance(t, tuple):
            return tuple(map(f64, t))
        return t.detach().double().cpu() if isinstance(t, torch.Tensor) else t

    args = {name: f64(value) for name, value in kwargs.items()}
    return kernels.modulated_conv2d(f64(x), f64(weight), f64(style), **args, impl="torch")


def _poisoned(shape: tuple[int, ...], dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    layout = torch.channels_last if channels_last else torch.contiguous_format
    return torch.full(shape, math.nan, dtype=dtype, device=DEVICE).contiguous(memory_format=layout)


class ConvCase(NamedTuple):
    batch: int
    c_in: int
    c_out: int
    size: tuple[int, int]  # input H, W
    upsample: bool
    sft: str | None  # "half" (sft_half), "all", or None
    noise: str  # "shared" (the stored buffer) or "per-sample" (randomize_noise)
    x_layout: str  # "nchw", "channels_last", or "expanded" (the constant input's stride-0 batch)
    out_channels_last: bool


CONV_CASES = [
    pytest.param(ConvCase(2, 64, 64, (4, 4), False, None, "shared", "expanded", True), id="4px-const-512"),
    pytest.param(
        ConvCase(1, 64, 64, (4, 4), True, "half", "shared", "channels_last", True), id="up8-512-sft"
    ),
    pytest.param(
        ConvCase(3, 64, 32, (9, 8), True, "half", "per-sample", "channels_last", False), id="up-512to256"
    ),
    pytest.param(ConvCase(2, 32, 32, (11, 13), False, None, "shared", "nchw", True), id="256-odd"),
    pytest.param(
        ConvCase(1, 32, 16, (7, 5), True, "half", "shared", "channels_last", True), id="up-256to128"
    ),
    pytest.param(ConvCase(2, 16, 16, (17, 17), False, None, "shared", "channels_last", True), id="128-17px"),
    pytest.param(
        ConvCase(2, 16, 8, (9, 10), True, "all", "shared", "channels_last", True), id="up-128to64-sftall"
    ),
    pytest.param(ConvCase(1, 8, 8, (15, 17), False, None, "shared", "nchw", False), id="64-odd"),
    pytest.param(ConvCase(2, 48, 80, (13, 11), False, "half", "shared", "nchw", True), id="tails-48to80"),
    pytest.param(
        ConvCase(1, 128, 64, (5, 5), True, "half", "shared", "channels_last", True), id="up-full-128to64"
    ),
    pytest.param(
        ConvCase(1, 256, 128, (6, 5), True, "half", "per-sample", "nchw", True),
        id="up-full-256to128",
        marks=pytest.mark.slow,
    ),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
def test_styleconv_kernel(case: ConvCase, dtype: torch.dtype, request: pytest.FixtureRequest) -> None:
    """StyleConv: demodulated 3x3 conv (upsampling or not), x sqrt 2, noise, bias, LeakyReLU, CS-SFT."""
    _check_styleconv(case, dtype, _generator(request))


@pytest.mark.slow
def test_styleconv_kernel_full_512(request: pytest.FixtureRequest) -> None:
    """The 4-64 px layers' real 512 channels, in bf16 only: ~10 s in the interpreter per dtype."""
    case = ConvCase(1, 512, 512, (4, 4), False, "half", "shared", "channels_last", True)
    _check_styleconv(case, torch.bfloat16, _generator(request))


def _check_styleconv(case: ConvCase, dtype: torch.dtype, gen: torch.Generator) -> None:
    h, w = case.size
    height, width = (2 * h, 2 * w) if case.upsample else (h, w)

    def rand(*shape: int, scale: float = 1.0, offset: float = 0.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * scale + offset).to(DEVICE, dtype)

    if case.x_layout == "expanded":
        x = rand(1, case.c_in, h, w).expand(case.batch, -1, -1, -1)
    else:
        x = rand(case.batch, case.c_in, h, w)
        if case.x_layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
    weight = rand(case.c_out, case.c_in, 3, 3, scale=1 / math.sqrt(9 * case.c_in))
    style = rand(case.batch, case.c_in, scale=0.5, offset=1.0)  # the modulation's bias starts at 1
    noise = rand(case.batch if case.noise == "per-sample" else 1, 1, height, width)
    epilogue = {
        "gain": SQRT2,
        "noise": noise,
        "noise_weight": rand(1, scale=0.3),
        "bias": rand(case.c_out, scale=0.2),
        "negative_slope": 0.2,
    }
    if case.sft:
        c_sft = case.c_out // 2 if case.sft == "half" else case.c_out
        scale, shift = rand(case.batch, c_sft, height, width), rand(case.batch, c_sft, height, width)
        if case.x_layout == "channels_last":
            scale, shift = (t.contiguous(memory_format=torch.channels_last) for t in (scale, shift))
        epilogue["sft"] = (scale, shift)

    conv = {"demodulate": True, "upsample": case.upsample, "padding": 1}
    out = _poisoned((case.batch, case.c_out, height, width), dtype, case.out_channels_last)
    result = kernels.modulated_conv2d(x, weight, style, **conv, **epilogue, out=out, impl="triton")
    assert result is out
    assert _rel_err(out, _reference(x, weight, style, **conv, **epilogue)) < TOLERANCE[dtype]


class RGBCase(NamedTuple):
    batch: int
    c_in: int
    size: tuple[int, int]  # output H, W
    skip: str | None  # "up" (the previous RGB at half size), "same", or None (the first ToRGB)


RGB_CASES = [
    pytest.param(RGBCase(2, 64, (4, 4), None), id="4px-512"),
    pytest.param(RGBCase(1, 64, (10, 8), "up"), id="512-odd-skip"),
    pytest.param(RGBCase(3, 32, (18, 14), "up"), id="256"),
    pytest.param(RGBCase(2, 16, (17, 17), "same"), id="128-same-size-skip"),
    pytest.param(RGBCase(1, 8, (34, 30), "up"), id="64"),
    pytest.param(RGBCase(2, 128, (6, 6), "up"), id="full-128"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", RGB_CASES)
def test_to_rgb_kernel(case: RGBCase, dtype: torch.dtype, request: pytest.FixtureRequest) -> None:
    """ToRGB: 1x1 modulated conv without demodulation, plus bias, plus the (bilinearly upsampled) skip."""
    gen = _generator(request)
    height, width = case.size

    def rand(*shape: int, scale: float = 1.0, offset: float = 0.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * scale + offset).to(DEVICE, dtype)

    x = rand(case.batch, case.c_in, height, width).contiguous(memory_format=torch.channels_last)
    weight = rand(3, case.c_in, 1, 1, scale=1 / math.sqrt(case.c_in))
    style = rand(case.batch, case.c_in, scale=0.5, offset=1.0)
    epilogue: dict = {"bias": rand(3, scale=0.2)}
    if case.skip:
        skip_size = (height // 2, width // 2) if case.skip == "up" else (height, width)
        epilogue |= {"skip": rand(case.batch, 3, *skip_size), "skip_upsample": case.skip == "up"}

    conv = {"demodulate": False, "upsample": False, "padding": 0}
    out = _poisoned((case.batch, 3, height, width), dtype, channels_last=False)
    kernels.modulated_conv2d(x, weight, style, **conv, **epilogue, out=out, impl="triton")
    assert _rel_err(out, _reference(x, weight, style, **conv, **epilogue)) < TOLERANCE[dtype]


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_impls_normalise_and_round_alike(dtype: torch.dtype, request: pytest.FixtureRequest) -> None:
    """Kernel and reference in the SAME dtype: the same operands (fp16's inf-norm scaling of weight and style
    included) and one rounding at the end of an fp32 epilogue. What remains is the reference conv's rounding
    of its sums before the demodulation: under an ulp overall, and most elements bit-equal (about half were
    when the reference rounded after every step)."""
    gen = _generator(request)

    def rand(*shape: int, scale: float = 1.0, offset: float = 0.0) -> torch.Tensor:
        return (torch.randn(*shape, generator=gen) * scale + offset).to(DEVICE, dtype)

    style = rand(2, 32, scale=0.5, offset=1.0)
    cases = [
        (
            rand(2, 32, 6, 7),
            {"demodulate": True, "upsample": True, "padding": 1},
            rand(24, 32, 3, 3, scale=1 / math.sqrt(9 * 32)),
            {
                "gain": SQRT2,
                "noise": rand(1, 1, 12, 14),
                "noise_weight": rand(1, scale=0.3),
                "bias": rand(24, scale=0.2),
                "negative_slope": 0.2,
                "sft": (rand(2, 12, 12, 14), rand(2, 12, 12, 14)),
            },
        ),
        (
            rand(2, 32, 6, 8),
            {"demodulate": False, "upsample": False, "padding": 0},
            rand(3, 32, 1, 1, scale=1 / math.sqrt(32)),
            {"bias": rand(3, scale=0.2), "skip": rand(2, 3, 3, 4), "skip_upsample": True},
        ),
    ]
    for x, conv, weight, epilogue in cases:
        fused, ref = (
            kernels.modulated_conv2d(x, weight, style, **conv, **epilogue, impl=impl).float().cpu()
            for impl in ("triton", "torch")
        )
        assert ((fused - ref).norm() / ref.norm()).item() < SAME_DTYPE_TOLERANCE[dtype]
        if dtype != torch.float32:  # (fp32 sums in another order differ in their last bits)
            assert (fused == ref).float().mean() > 0.6


def test_fp16_does_not_overflow(request: pytest.FixtureRequest) -> None:
    """Styles of 1e3 on activations of 1e2 overflow fp16 operands; inf-norm pre-normalisation avoids it."""
    gen = _generator(request)
    x = 100 * torch.randn(2, 64, 6, 7, generator=gen)
    weight = torch.randn(32, 64, 3, 3, generator=gen) / math.sqrt(64 * 9)
    style = 1000 * (1 + torch.rand(2, 64, generator=gen))
    assert not torch.isfinite((x * style[:, :, None, None]).half()).all()
    args = [t.to(DEVICE, torch.float16) for t in (x, weight, style)]
    conv = {"demodulate": True, "upsample": True, "padding": 1}
    out = _poisoned((2, 32, 12, 14), torch.float16, channels_last=True)
    kernels.modulated_conv2d(*args, **conv, out=out, impl="triton")
    assert _rel_err(out, _reference(*args, **conv)) < TOLERANCE[torch.float16]


@pytest.mark.parametrize("upsample", [False, True])
def test_styleconv_module_fresh_noise(upsample: bool) -> None:
    """randomize_noise draws the same per-sample noise for both impls, so they agree for one seed."""
    torch.manual_seed(0)
    conv = StyleConv(16, 24, 3, 8, upsample=upsample).to(DEVICE)
    conv.weight.data.fill_(0.5)
    x, style = torch.randn(2, 16, 5, 6, device=DEVICE), torch.randn(2, 8, device=DEVICE)
    outputs = []
    for impl in ("torch", "triton"):
        kernels.set_kernel_impl(conv, impl)
        torch.manual_seed(1)
        with torch.no_grad():
            outputs.append(conv(x, style, None))
    reference, fused = outputs
    assert fused.is_contiguous(memory_format=torch.channels_last)  # the fused path ran
    assert _rel_err(fused, reference.double().cpu()) < TOLERANCE[torch.float32]


def test_auto_and_the_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    """Auto follows the device, VIDRESTORE_TRITON overrides "auto" only, explicit impls are kept."""
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 1)
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    assert kernels.modconv._resolve("auto", cpu) == "torch"
    assert kernels.modconv._resolve("auto", cuda) == ("triton" if kernels.triton_available() else "torch")
    assert [kernels.modconv._resolve(impl, cpu) for impl in ("triton", "torch")] == ["triton", "torch"]
    monkeypatch.setenv(kernels.ENV_VAR, "0")
    assert kernels.modconv._resolve("auto", cuda) == "torch"
    assert kernels.modconv._resolve("triton", cuda) == "triton"
    monkeypatch.setenv(kernels.ENV_VAR, "1")
    assert kernels.modconv._resolve("auto", cpu) == "triton"
    assert kernels.modconv._resolve("torch", cpu) == "torch"
    monkeypatch.setenv(kernels.ENV_VAR, "yes")
    with pytest.raises(ValueError, match="must be 0, 1 or unset"):
        kernels.modconv._resolve("auto", cpu)


def test_set_kernel_impl(tiny_config: GFPGANConfig) -> None:
    model = GFPGANv1Clean(tiny_config)
    convs = [m.modulated_conv for m in model.modules() if isinstance(m, StyleConv | ToRGB)]
    assert {c.kernel_impl for c in convs} == {"auto"}
    kernels.set_kernel_impl(model, "torch")
    assert {c.kernel_impl for c in convs} == {"torch"}
    assert kernels.KERNEL_IMPLS == ("auto", "triton", "torch")
    with pytest.raises(ValueError, match="one of auto, triton, torch; got 'cuda'"):
        kernels.set_kernel_impl(model, "cuda")
    with pytest.raises(ValueError, match="one of auto, triton, torch"):
        kernels.modulated_conv2d(
            torch.zeros(1, 1, 1, 1),
            torch.ones(1, 1, 1, 1),
            torch.ones(1, 1),
            demodulate=False,
            upsample=False,
            padding=0,
            impl="fused",
        )


def test_import_and_kernel_leave_the_environment_alone() -> None:
    """Importing vidrestore and its kernels, and running a kernel (CPU interpreter), changes no env var."""
    code = (
        "import os\n"
        "before = dict(os.environ)\n"
        "import torch, vidrestore, vidrestore.kernels\n"
        "from vidrestore.kernels import modconv, modconv_triton, modulated_conv2d\n"
        "from vidrestore.models import gfpgan\n"
        "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())\n"
        "x = torch.ones(1, 4, 2, 2)\n"
        "out = modulated_conv2d(x, torch.ones(2, 4, 1, 1), torch.ones(1, 4), demodulate=False,"
        " upsample=False, padding=0, impl='triton')\n"
        "assert torch.equal(out, torch.full((1, 2, 2, 2), 4.0)), out\n"
        "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", kernels.ENV_VAR)}
    env["CUDA_VISIBLE_DEVICES"] = ""  # the interpreter path, also on a GPU machine
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=120)


def test_bad_arguments_are_rejected_before_launch() -> None:
    x, style = torch.zeros(2, 8, 5, 5, device=DEVICE), torch.ones(2, 8, device=DEVICE)
    weight = torch.zeros(4, 8, 3, 3, device=DEVICE)
    same = {"demodulate": True, "upsample": False, "padding": 1, "impl": "triton"}
    with pytest.raises(ValueError, match="padding"):
        kernels.modulated_conv2d(x, weight, style, **{**same, "padding": 0})
    for impl in kernels.KERNEL_IMPLS:
        conv = {**same, "impl": impl}
        with pytest.raises(ValueError, match=r"style has shape \(1, 8\)"):
            kernels.modulated_conv2d(x, weight, style[:1], **conv)
        with pytest.raises(ValueError, match=r"sft scale has shape"):
            kernels.modulated_conv2d(
                x, weight, style, **conv, sft=(torch.zeros(2, 2, 10, 10, device=DEVICE),) * 2
            )
        with pytest.raises(ValueError, match=r"skip has shape"):
            skip = torch.zeros(2, 4, 5, 5, device=DEVICE)
            kernels.modulated_conv2d(x, weight, style, **conv, skip=skip, skip_upsample=True)


def test_gpu_tiles_fit_the_problem() -> None:
    """The autotuner's GPU candidates shrink to small layers, never below tl.dot's 16, without duplicates."""
    from vidrestore.kernels import modconv_triton as source

    def tiles(c_in: int, c_out: int, size: int) -> list[tuple[int, ...]]:
        fitted = source._fit(source._GPU_CONFIGS, {"C_in": c_in, "C_out": c_out, "H": size, "W": size})
        return [(*c.kwargs.values(), c.num_warps, c.num_stages) for c in fitted]

    assert len(tiles(512, 512, 64)) == len(source._GPU_CONFIGS)
    to_rgb = tiles(512, 3, 4)
    assert len(set(to_rgb)) == len(to_rgb) < len(source._GPU_CONFIGS)
    assert all(m == n == 16 and k in (32, 64) for m, n, k, *_ in to_rgb)


# --- the whole model ----------------------------------------------------------------------------------------


def _tiny_model(config: GFPGANConfig) -> GFPGANv1Clean:
    """Random weights with non-zero biases and noise strengths, so every epilogue term matters."""
    torch.manual_seed(0)
    model = GFPGANv1Clean(config).eval().requires_grad_(False)
    for name, param in model.named_parameters():
        if name.endswith("bias"):
            param.add_(0.1 * torch.randn_like(param))
        elif param.shape == (1,):  # StyleConv noise strength, zero at init
            param.fill_(0.2)
    return model


@pytest.mark.parametrize("dtype", [torch.bfloat16], ids=["bfloat16"])  # fp32: each layer's own tests
def test_whole_model_parity(
    dtype: torch.dtype, tiny_config: GFPGANConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tiny GFP-GAN with every StyleConv and ToRGB on "triton" against itself on "torch" in float64."""
    model = _tiny_model(tiny_config)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    reference_model = copy.deepcopy(model).double()
    kernels.set_kernel_impl(reference_model, "torch")
    with torch.no_grad():
        reference = reference_model(x.double())

    calls = []
    triton_impl = kernels.modconv._modconv_triton
    fused = kernels.modconv
    monkeypatch.setattr(fused, "_modconv_triton", lambda *a, **k: calls.append(1) or triton_impl(*a, **k))
    kernels.set_kernel_impl(model, "triton")
    with torch.no_grad():
        out = model.to(DEVICE, dtype)(x.to(DEVICE, dtype))
    n_style_convs = sum(isinstance(m, StyleConv) for m in model.modules())
    n_to_rgbs = sum(isinstance(m, ToRGB) for m in model.modules())
    assert len(calls) == n_style_convs + n_to_rgbs == 14
    assert reference.abs().max() > 0.5  # a meaningful signal, not a collapsed output
    assert _rel_err(out, reference) < TOLERANCE[dtype]


def test_whole_model_fp16_against_fp32(tiny_config: GFPGANConfig) -> None:
    """The tiny GFP-GAN in fp16 against itself in fp32 on the reference: fp16's inf-norm scaling keeps every
    layer in range and costs no more than fp16's own rounding (the kernel's: test_styleconv_kernel, per
    layer, where the interpreter is affordable)."""
    impl = "torch"
    model = _tiny_model(tiny_config)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4)) * 2 - 1
    kernels.set_kernel_impl(model, "torch")
    with torch.no_grad():
        reference = model(x).double()
    kernels.set_kernel_impl(model, impl)
    with torch.no_grad():
        out = model.to(DEVICE, torch.float16)(x.to(DEVICE, torch.float16))
    assert out.dtype == torch.float16
    assert reference.abs().max() > 0.5
    assert _rel_err(out, reference) < TOLERANCE[torch.float16]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
def test_cuda_graph_capture(dtype: torch.dtype, tiny_config: GFPGANConfig) -> None:
    """The Triton forward has no host sync: a fixed-shape batch replays from a CUDA graph, and the replay for
    new inputs matches the eager torch reference (float64), not just an eager run of the same kernels."""
    model = _tiny_model(tiny_config)
    reference_model = copy.deepcopy(model).double()
    kernels.set_kernel_impl(reference_model, "torch")
    kernels.set_kernel_impl(model, "triton")
    model = model.to("cuda", dtype)
    static_x = torch.zeros(4, 3, 64, 64, device="cuda", dtype=dtype)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.no_grad(), torch.cuda.stream(stream):
        for _ in range(2):  # autotuning and compilation happen here, outside the capture
            model(static_x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(graph):
        static_out = model(static_x)

    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    static_x.copy_(x.to("cuda", dtype))
    graph.replay()
    with torch.no_grad():
        reference = reference_model(x.to(dtype).double())
    assert reference.abs().max() > 0.5
    assert _rel_err(static_out, reference) < TOLERANCE[dtype]


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_launches_on_the_tensors_device() -> None:
    """Tensors on cuda:1 run on GPU 1 while cuda:0 is current (autotuning included)."""
    gen = torch.Generator().manual_seed(3)
    x, style = torch.randn(2, 32, 8, 8, generator=gen), 1 + 0.5 * torch.randn(2, 32, generator=gen)
    weight = torch.randn(16, 32, 3, 3, generator=gen) / math.sqrt(9 * 32)
    conv = {"demodulate": True, "upsample": True, "padding": 1}
    with torch.cuda.device(0):
        out = kernels.modulated_conv2d(*(t.to("cuda:1") for t in (x, weight, style)), **conv, impl="triton")
        torch.cuda.synchronize(1)
    assert out.device == torch.device("cuda:1")
    assert _rel_err(out, _reference(x, weight, style, **conv)) < TOLERANCE[torch.float32]
