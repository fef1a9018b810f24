"""GFPGANv1 (the original, colourising architecture) and GFP-GAN v1.2 (the clean one): released layout,
strict loading and its one-line errors, parity with the official code, precisions, and every front end.

``fixtures/gfpganv1`` is a subset of the shared golden fixture: ``layout.json`` (the official state-dict
layout and the per-key weight recipe) and, in ``case.pt``, the official output (every 2nd pixel of each axis;
the full output's sum), the weight checksum, the input's SHA-256 and the tolerance. The official code
(TencentARC/GFPGAN 7552a77 on BasicSR 8d56e3a, CUDA ops replaced by BasicSR's own PyTorch equivalents) made
it; see /work/shared/fixtures/README.md for the recipe.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from clips import make_clip
from test_model import random_state

from vidrestore import kernels, models, weights
from vidrestore.cli import main
from vidrestore.errors import WeightsError
from vidrestore.io.images import read_image, write_image
from vidrestore.models.gfpgan import GFPGANConfig
from vidrestore.models.gfpganv1 import V1_CONFIG, GFPGANv1, load_gfpgan_v1

FIXTURE = Path(__file__).parent / "fixtures" / "gfpganv1"
# Every code path of the released layout (U-Net, different_w, CS-SFT on half the channels, the channel
# multiplier at 64 px), tiny.
TINY = GFPGANConfig(out_size=64, num_style_feat=32, channel_multiplier=1, narrow=0.0625, num_mlp=2)


def _layout() -> list[dict]:
    return json.loads((FIXTURE / "layout.json").read_text())["state_dict"]


def _case() -> dict:
    return torch.load(FIXTURE / "case.pt", weights_only=True)


@pytest.fixture(scope="module")
def recipe_state() -> dict[str, torch.Tensor]:
    """The fixture's weights: one seed-1234 generator, one draw per tensor in layout order."""
    g = torch.Generator(device="cpu").manual_seed(1234)
    draws = {"normal_1": 1.0, "normal_0.1": 0.1}  # the only rules this layout uses
    state = {}
    for entry in _layout():
        t = torch.randn(entry["shape"], generator=g, dtype=torch.float32)
        state[entry["name"]] = t if draws[entry["init"]] == 1.0 else draws[entry["init"]] * t
    return state


def _random_state(config: GFPGANConfig = TINY, seed: int = 0) -> dict[str, torch.Tensor]:
    return random_state(config, seed, GFPGANv1)


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _save(tmp_path: Path, name: str, obj: object) -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def tiny_v1(tmp_path_factory) -> Path:
    """A random tiny GFPGANv1 saved as the release is: {"params_ema": ...}; the loader reads its layout."""
    return _save(tmp_path_factory.mktemp("weights"), "tiny_gfpganv1.pth", {"params_ema": _random_state()})


# --- layout and loading --------------------------------------------------------------------------------


def test_recipe_reproduces_the_fixture_checksum(recipe_state) -> None:
    expected = _case()["weights_checksum"]
    assert len(recipe_state) == expected["n_tensors"]
    assert sum(t.numel() for t in recipe_state.values()) == expected["n_elements"]
    total = sum(t.sum(dtype=torch.float64).item() for t in recipe_state.values())
    absolute = sum(t.abs().sum(dtype=torch.float64).item() for t in recipe_state.values())
    assert math.isclose(total, expected["sum"], rel_tol=1e-9)
    assert math.isclose(absolute, expected["abs_sum"], rel_tol=1e-9)


@pytest.fixture(scope="module")
def released(tmp_path_factory, recipe_state) -> GFPGANv1:
    """The fixture's weights saved as GFPGANv1.pth is, then loaded through the registry's loader."""
    path = _save(tmp_path_factory.mktemp("release"), "GFPGANv1.pth", {"params_ema": recipe_state})
    return models.get_model("gfpgan-v1").load(path, device="cpu", dtype=torch.float32, config=None)


def test_released_layout_loads_strictly(released: GFPGANv1, recipe_state) -> None:
    with torch.device("meta"):
        ours = GFPGANv1().state_dict()
    assert [(k, list(v.shape)) for k, v in ours.items()] == [(e["name"], e["shape"]) for e in _layout()]
    assert released.config == V1_CONFIG and released.face_size == 512  # read off the checkpoint
    assert not released.training and not any(p.requires_grad for p in released.parameters())
    loaded = released.state_dict()
    assert all(torch.equal(loaded[k], recipe_state[k]) for k in recipe_state)


@pytest.mark.parametrize("wrap", ["params", "bare"])
def test_params_and_bare_state_dict_load(tmp_path: Path, wrap: str) -> None:
    state = _random_state()
    path = _save(tmp_path, "w.pth", {"params": state} if wrap == "params" else state)
    model = load_gfpgan_v1(path, dtype=torch.bfloat16)
    assert model.config == TINY and next(model.parameters()).dtype == torch.bfloat16
    assert torch.equal(model.final_linear.weight, state["final_linear.weight"].bfloat16())


def test_params_ema_wins_over_params(tmp_path: Path) -> None:
    ema, params = _random_state(seed=1), _random_state(seed=2)
    model = load_gfpgan_v1(_save(tmp_path, "w.pth", {"params": params, "params_ema": ema}))
    assert torch.equal(model.final_conv[0].weight, ema["final_conv.0.weight"])


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ("missing", "1 missing key (stylegan_decoder.noises.noise3)"),
        ("extra", "1 unexpected key (stylegan_decoder.style_conv1.bias)"),
        ("misshapen", "1 shape mismatch (conv_body_up.2.conv2.activation.bias)"),
    ],
)
def test_a_wrong_key_is_named_on_one_line(tmp_path: Path, change: str, needle: str) -> None:
    state = _random_state()
    if change == "missing":
        del state["stylegan_decoder.noises.noise3"]
    elif change == "extra":  # where the clean architecture keeps StyleConv's bias
        state["stylegan_decoder.style_conv1.bias"] = torch.zeros(1, 32, 1, 1)
    else:
        state["conv_body_up.2.conv2.activation.bias"] = torch.zeros(7)
    with pytest.raises(WeightsError) as err:
        load_gfpgan_v1(_save(tmp_path, "GFPGANv1.pth", {"params_ema": state}))
    msg = str(err.value)
    assert msg.startswith("GFPGANv1.pth does not match the GFPGANv1 (out_size=64) layout: ")
    assert needle in msg and "\n" not in msg


def test_a_clean_checkpoint_is_not_taken_for_v1(tmp_path: Path, tiny_checkpoint: str) -> None:
    """GFP-GAN v1.3/v1.4 files given to --model gfpgan-v1: one line, naming the keys that differ."""
    with pytest.raises(WeightsError, match=r"missing keys \(conv_body_first\.0\.weight, .*unexpected keys"):
        load_gfpgan_v1(tiny_checkpoint)


# --- the forward -----------------------------------------------------------------------------------------


@pytest.mark.slow  # the full 512 network on the CPU: ~30 s on 2 busy cores
def test_parity_with_the_official_output(released: GFPGANv1) -> None:
    case = _case()
    x = torch.rand((1, 3, 512, 512), generator=torch.Generator().manual_seed(99), dtype=torch.float32) * 2 - 1
    assert hashlib.sha256(x.numpy().tobytes()).hexdigest() == case["input_sha256"]
    with torch.inference_mode():
        out = released(x)
    error = (out[:, :, ::2, ::2] - case["output_every_2nd_pixel"]).abs().max().item()
    assert error <= case["atol"], error
    assert abs(out.double().mean().item() - case["output_sum"] / out.numel()) <= case["atol"]


def test_batched_deterministic_and_low_precision_close_to_fp32() -> None:
    model = GFPGANv1(TINY).eval()
    model.load_state_dict(_random_state(), strict=True)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        out = model(x)
        again = model(x)
        single = model(x[1:])
        noisy = model(x, randomize_noise=True)
        low = {dtype: model.to(dtype)(x.to(dtype)).float() for dtype in (torch.float16, torch.bfloat16)}
    assert out.shape == (2, 3, 64, 64) and out.abs().max() > 0.5 and torch.equal(out, again)
    torch.testing.assert_close(single[0], out[1], atol=1e-5, rtol=0)  # samples do not mix in a batch
    assert (noisy - out).abs().max() > 1e-2
    for dtype, y in low.items():  # bf16 keeps 8 bits of mantissa: ~3% off on average after 30 layers
        assert torch.isfinite(y).all(), dtype
        assert (y - out).abs().max() < 0.1 * out.abs().max(), dtype
        assert (y - out).abs().mean() < 0.05 * out.abs().mean(), dtype


@pytest.mark.skipif(not kernels.triton_available(), reason="triton is not installed")
def test_the_triton_kernel_runs_the_v1_convs_alike() -> None:
    """The activation's sqrt(2) folded into the fused kernel's gain, noise and bias (Triton's interpreter)."""
    model = GFPGANv1(TINY).eval()
    model.load_state_dict(_random_state(), strict=True)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        reference = model(x)
        kernels.set_kernel_impl(model, "triton")
        out = model(x)
    torch.testing.assert_close(out, reference, atol=1e-4, rtol=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("impl", ["torch", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_forward_cuda(dtype: torch.dtype, impl: str) -> None:
    """CUDA in each precision, with either modulated-conv impl, against the CPU fp32 output."""
    if impl == "triton" and not kernels.triton_available():
        pytest.skip("triton is not installed")
    model = GFPGANv1(TINY).eval()
    model.load_state_dict(_random_state(), strict=True)
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.inference_mode():
        reference = model(x)
        kernels.set_kernel_impl(model, impl)
        out = model.to("cuda", dtype)(x.to("cuda", dtype)).float().cpu()
    tol = 1e-3 if dtype == torch.float32 else 0.1 * reference.abs().max().item()  # TF32 convs in fp32
    torch.testing.assert_close(out, reference, atol=tol, rtol=0)


# --- registry and front ends ------------------------------------------------------------------------------


def test_registry_entries() -> None:
    v1, v12 = models.get_model("v1"), models.get_model("v1.2")
    assert (v1.name, v1.arch, v1.licence, v1.colourises) == ("gfpgan-v1", "GFPGANv1", "Apache-2.0", True)
    assert (v12.name, v12.arch, v12.colourises) == ("gfpgan-v1.2", "GFPGANv1Clean", False)
    assert v1.face_size == v12.face_size == 512 and v1.input_range == v1.output_range == (-1.0, 1.0)
    files = {name: weights.get_spec(models.get_model(name).weights) for name in ("gfpgan-v1", "gfpgan-v1.2")}
    assert files["gfpgan-v1"].url.endswith("/v0.1.0/GFPGANv1.pth") and files["gfpgan-v1"].size == 615378983
    assert files["gfpgan-v1.2"].url.endswith("/v0.2.0/GFPGANCleanv1-NoCE-C2.pth")
    assert files["gfpgan-v1.2"].sha256 == "29e25ee90c170f4231163f4c83df6b59c968b73f3ce00cb884015ae005db083c"


@pytest.mark.parametrize("model", ["gfpgan-v1", "gfpgan-v1.2"])
def test_restore_a_clip_end_to_end(tmp_path: Path, offline, tiny_v1: Path, tiny_checkpoint: str, model: str):
    """The CLI with --model and --weights, tracking and smoothing on, a real face moving across the frame."""
    ckpt = tiny_v1 if model == "gfpgan-v1" else tiny_checkpoint
    spec = make_clip(tmp_path / "in.mkv", codec="ffv1", seconds=0.34, audio=False)
    dst = tmp_path / "out.mkv"
    args = ["restore", str(spec.path), "-o", str(dst), "--model", model, "--weights", str(ckpt)]
    assert main([*args, "--detector", "centerface", "--face-batch", "2", "-q"]) == 0
    changed = [not np.array_equal(o, s) for o, s in zip(_frames(dst), _frames(spec.path), strict=True)]
    assert sum(changed) >= len(changed) * 0.8


def test_a_grey_still_comes_back_in_colour(
    tmp_path: Path, offline, tiny_v1: Path, tiny_checkpoint: str, astronaut
):
    """GFPGANv1 colourises when asked (--color restore): the engine must not turn its output back to grey
    (other models keep grey grey, asked or not)."""
    src = tmp_path / "grey.png"
    write_image(
        src, (astronaut.astype(np.float32) @ np.array([0.299, 0.587, 0.114])).round().astype(np.uint8)
    )
    for model, ckpt in (("gfpgan-v1", tiny_v1), ("gfpgan-v1.4", tiny_checkpoint)):
        dst = tmp_path / f"{model}.png"
        args = [
            "image",
            str(src),
            "-o",
            str(dst),
            "--model",
            model,
            "--weights",
            str(ckpt),
            "--color",
            "restore",
        ]
        assert main([*args, "--detector", "centerface", "-q"]) == 0
        out = read_image(dst)
        if model == "gfpgan-v1":
            face = out[60:160, 180:280].astype(np.int16)
            assert out.shape == (512, 512, 3) and np.abs(face[..., 0] - face[..., 2]).mean() > 2
        else:
            assert out.shape == (512, 512)
