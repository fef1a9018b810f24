"""GFPGANv1Clean: checkpoint layout, strict loading and its errors, inference behaviour, parity with upstream.

The parity tests use the official architecture from the installed ``gfpgan`` wheel (benchmarks.official); when
it is missing they fail with the install hint instead of skipping.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from benchmarks.official import official_gfpgan
from vidrestore import kernels
from vidrestore.errors import VidrestoreError, WeightsError
from vidrestore.models.checkpoint import load_gfpgan
from vidrestore.models.gfpgan import GFPGANConfig, GFPGANv1Clean

# Every code path of the official layout (U-Net, different_w, CS-SFT, channel_multiplier at 64 px), tiny.
TINY = GFPGANConfig(out_size=64, num_style_feat=32, channel_multiplier=1, narrow=0.125, num_mlp=2)
# The other branches: one shared W through the style MLP, SFT on all channels.
TINY_VARIANT = GFPGANConfig(
    out_size=32,
    num_style_feat=32,
    channel_multiplier=2,
    narrow=0.125,
    num_mlp=2,
    different_w=False,
    input_is_latent=False,
    sft_half=False,
)


def random_state(
    config: GFPGANConfig, seed: int = 0, arch: type[torch.nn.Module] = GFPGANv1Clean
) -> dict[str, torch.Tensor]:
    """A random-init state dict with non-zero biases and noise strengths, so those terms are exercised."""
    torch.manual_seed(seed)
    state = arch(config).state_dict()
    for name, value in state.items():
        if name.endswith("bias"):
            value.add_(0.1 * torch.randn_like(value))
        elif value.shape == (1,):  # StyleConv noise strength, zero at init
            value.fill_(0.2)
    return state


def _tiny_model(config: GFPGANConfig = TINY) -> GFPGANv1Clean:
    model = GFPGANv1Clean(config).eval()
    model.load_state_dict(random_state(config), strict=True)
    return model


def _faces(config: GFPGANConfig, batch: int, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, config.out_size, config.out_size, generator=gen) * 2 - 1


def _save(tmp_path: Path, name: str, obj: object) -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


# --- checkpoint layout and loading ------------------------------------------------------------------------


def test_official_512_layout_loads_strictly(tmp_path: Path) -> None:
    model = GFPGANv1Clean()
    state = model.state_dict()
    assert len(state) == 285
    assert [f"stylegan_decoder.noises.noise{i}" for i in range(15)] == [k for k in state if ".noises." in k]
    assert state["stylegan_decoder.noises.noise14"].shape == (1, 1, 512, 512)
    assert state["final_linear.weight"].shape == (16 * 512, 256 * 4 * 4)
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(86.4e6, rel=1e-3)

    loaded = load_gfpgan(_save(tmp_path, "GFPGANv1.4.pth", {"params_ema": state}))
    assert not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    assert all(torch.equal(state[k], v) for k, v in loaded.state_dict().items())


def test_state_dict_matches_official_512() -> None:
    with torch.device("meta"):
        ours = GFPGANv1Clean().state_dict()
        theirs = official_gfpgan(GFPGANConfig()).state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in ours)


@pytest.mark.parametrize("wrap", ["params", "bare"])
def test_params_and_bare_state_dict_load(tmp_path: Path, wrap: str) -> None:
    state = random_state(TINY)
    path = _save(tmp_path, "w.pth", {"params": state} if wrap == "params" else state)
    loaded = load_gfpgan(path, config=TINY, dtype=torch.bfloat16)
    assert next(loaded.parameters()).dtype == torch.bfloat16
    assert torch.equal(loaded.final_linear.weight, state["final_linear.weight"].bfloat16())


def test_params_ema_wins_over_params(tmp_path: Path) -> None:
    ema, params = random_state(TINY, seed=1), random_state(TINY, seed=2)
    loaded = load_gfpgan(_save(tmp_path, "w.pth", {"params": params, "params_ema": ema}), config=TINY)
    assert torch.equal(loaded.final_conv.weight, ema["final_conv.weight"])


def test_missing_key_is_named(tmp_path: Path) -> None:
    state = random_state(TINY)
    del state["stylegan_decoder.noises.noise3"]
    with pytest.raises(WeightsError) as err:
        load_gfpgan(_save(tmp_path, "GFPGANv1.4.pth", {"params_ema": state}), config=TINY)
    msg = str(err.value)
    assert msg.startswith("GFPGANv1.4.pth does not match the GFPGANv1Clean (out_size=64) layout")
    assert "1 missing key (stylegan_decoder.noises.noise3)" in msg
    assert "\n" not in msg


def test_extra_key_is_named(tmp_path: Path) -> None:
    state = random_state(TINY)
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"1 unexpected key \(extra\.weight\)"):
        load_gfpgan(_save(tmp_path, "w.pth", {"params_ema": state}), config=TINY)


def test_wrong_layout_summarised_on_one_line(tmp_path: Path) -> None:
    """A 512 checkpoint for the tiny config: every shape differs and the 256..512 px layers are unexpected."""
    with torch.device("meta"):
        big = GFPGANv1Clean().state_dict()
    state = {k: torch.zeros(v.shape) for k, v in big.items() if "noise" in k or "final_conv" in k}
    with pytest.raises(WeightsError) as err:
        load_gfpgan(_save(tmp_path, "w.pth", {"params_ema": state}), config=TINY)
    msg = str(err.value)
    assert "missing keys (" in msg and "unexpected keys (" in msg and "shape mismatches (" in msg
    assert ", ...)" in msg and "\n" not in msg


def test_unreadable_files_fail_cleanly(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(bytes(range(256)) * 64)
    good = _save(tmp_path, "good.pth", {"params_ema": random_state(TINY)})
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    for path in (garbage, truncated):
        with pytest.raises(WeightsError, match=rf"^{path.name} is not a readable PyTorch checkpoint") as err:
            load_gfpgan(path, config=TINY)
        assert "\n" not in str(err.value)
    with pytest.raises(WeightsError, match="does not exist"):
        load_gfpgan(tmp_path / "absent.pth", config=TINY)
    with pytest.raises(WeightsError, match="not a state dict"):
        load_gfpgan(_save(tmp_path, "tensor.pth", torch.zeros(3)), config=TINY)


def test_config_and_input_are_checked() -> None:
    with pytest.raises(ValueError, match="power of two"):
        GFPGANConfig(out_size=48)
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        _tiny_model()(torch.zeros(1, 3, 32, 32))


# --- inference behaviour -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_batched_deterministic(dtype: torch.dtype) -> None:
    model = _tiny_model().to(dtype)
    x = _faces(TINY, 2).to(dtype)
    with torch.no_grad():
        out = model(x)
        again = model(x)
        single = model(x[1:])
        noisy = model(x, randomize_noise=True)
        reference = _tiny_model()(x.float())
    assert out.shape == (2, 3, 64, 64) and out.dtype == dtype
    assert torch.isfinite(out).all()
    assert torch.equal(out, again)
    tol = 1e-5 if dtype == torch.float32 else 0.05 * reference.abs().max().item()
    torch.testing.assert_close(single[0], out[1], atol=tol, rtol=0)  # samples do not mix across the batch
    torch.testing.assert_close(out.float(), reference, atol=tol, rtol=0)
    assert (noisy.float() - out.float()).abs().max() > 10 * tol


@pytest.mark.parametrize("config", [TINY, TINY_VARIANT], ids=["official-layout", "variant"])
def test_parity_with_official_fp32(config: GFPGANConfig) -> None:
    official = official_gfpgan(config)
    official.load_state_dict(random_state(config), strict=True)
    ours = GFPGANv1Clean(config).eval()
    ours.load_state_dict(official.state_dict(), strict=True)
    x = _faces(config, 2)
    with torch.no_grad():
        expected, _ = official(x, return_rgb=False, randomize_noise=False)
        actual = ours(x)
    assert expected.abs().max() > 0.5  # a meaningful signal, not a collapsed output
    assert (actual - expected).abs().max().item() < 1e-5


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_forward_cuda(dtype: torch.dtype) -> None:
    """CUDA in each precision against the CPU fp32 output (fp16 on the CPU is a slow fallback path)."""
    x = _faces(TINY, 4)
    with torch.no_grad():
        reference = _tiny_model()(x)
        out = _tiny_model().to("cuda", dtype)(x.to("cuda", dtype)).float().cpu()
    tol = 1e-3 if dtype == torch.float32 else 0.05 * reference.abs().max().item()  # TF32 convs in fp32
    torch.testing.assert_close(out, reference, atol=tol, rtol=0)


def test_official_missing_gives_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    from benchmarks import official as baseline

    def absent(name: str) -> None:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", absent)
    baseline._official_module.cache_clear()
    try:
        with pytest.raises(VidrestoreError, match=r"pip install --no-deps gfpgan==1\.3\.8"):
            official_gfpgan(TINY)
    finally:
        baseline._official_module.cache_clear()


# --- the modulated conv (the torch reference; tests/test_kernels.py holds it against the Triton kernel) ----


def _modconv_torch(
    x: torch.Tensor, weight: torch.Tensor, style: torch.Tensor, demodulate: bool, upsample: bool, padding: int
) -> torch.Tensor:
    return kernels.modulated_conv2d(
        x, weight, style, demodulate=demodulate, upsample=upsample, padding=padding, impl="torch"
    )


def _textbook_modconv(
    x: torch.Tensor, weight: torch.Tensor, style: torch.Tensor, demodulate: bool, upsample: bool, padding: int
) -> torch.Tensor:
    """StyleGAN2 as written in the paper: a per-sample modulated (and demodulated) weight for each sample."""
    w = weight[None] * style[:, None, :, None, None]
    if demodulate:
        w = w * torch.rsqrt(w.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
    if upsample:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    return torch.cat([F.conv2d(x[b : b + 1], w[b], padding=padding) for b in range(x.shape[0])])


@pytest.mark.parametrize(
    ("demodulate", "upsample", "k"), [(True, False, 3), (True, True, 3), (False, False, 1)]
)
def test_modulated_conv_matches_per_sample_weights(demodulate: bool, upsample: bool, k: int) -> None:
    torch.manual_seed(0)
    x, style = torch.randn(3, 16, 8, 8), torch.randn(3, 16)
    weight = torch.randn(24, 16, k, k) / math.sqrt(16 * k * k)
    expected = _textbook_modconv(x, weight, style, demodulate, upsample, k // 2)
    actual = _modconv_torch(x, weight, style, demodulate, upsample, k // 2)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)


def test_modulated_conv_fp16_does_not_overflow() -> None:
    """Styles of 1e3 on activations of 1e2 overflow a plain fp16 conv; the inf-norm guard keeps it finite."""
    torch.manual_seed(0)
    x = 100 * torch.randn(2, 256, 8, 8)
    weight = torch.randn(64, 256, 3, 3) / math.sqrt(256 * 9)
    style = 1000 * (1 + torch.rand(2, 256))
    expected = _textbook_modconv(x, weight, style, True, True, 1)
    plain = F.conv2d((x * style[:, :, None, None]).half(), weight.half(), padding=1)
    assert not torch.isfinite(plain).all()
    actual = _modconv_torch(x.half(), weight.half(), style.half(), True, True, 1).float()
    assert torch.isfinite(actual).all()
    torch.testing.assert_close(actual, expected, atol=0.01 * expected.abs().max().item(), rtol=0)


def test_config_is_read_off_the_checkpoint(tiny_checkpoint, tiny_config):
    from vidrestore.models.checkpoint import infer_config

    with torch.device("meta"):
        official = GFPGANv1Clean(GFPGANConfig()).state_dict()
    assert infer_config(official) == GFPGANConfig()
    model = load_gfpgan(tiny_checkpoint)
    assert model.config == tiny_config
    for cfg in (
        GFPGANConfig(
            out_size=128,
            num_style_feat=64,
            channel_multiplier=1,
            narrow=0.125,
            num_mlp=1,
            different_w=False,
            sft_half=False,
        ),
        GFPGANConfig(out_size=256, num_style_feat=32, channel_multiplier=2, narrow=0.0625, num_mlp=3),
    ):
        with torch.device("meta"):
            sd = GFPGANv1Clean(cfg).state_dict()
        assert infer_config(sd) == dataclasses.replace(cfg, input_is_latent=True)
