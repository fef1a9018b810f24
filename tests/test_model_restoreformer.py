"""RestoreFormer and RestoreFormer++: the official layouts, strict loading and its errors, parity with the
official outputs (golden fixtures), precisions, batching, and ``vidrestore restore --model`` end to end.

``tests/fixtures/<model>/`` holds ``layout.json`` as shipped with the shared golden fixtures, and ``case.pt``,
a subset of their ``case.pt``: every 4th output pixel in each direction, the VQ indices, the weight
checksums and the input's SHA-256. The weights are the fixtures' recipe (``layout.json``'s ``init`` per key,
one seed-1234 generator, draws in layout order); the input is their seeded formula.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import av
import pytest
import torch
from clips import make_clip

from vidrestore.cli import main
from vidrestore.errors import VidrestoreError, WeightsError
from vidrestore.models import get_model
from vidrestore.models.restoreformer import (
    RESTOREFORMER,
    RESTOREFORMER_PLUSPLUS,
    RestoreFormer,
    RestoreFormerConfig,
    infer_config,
)

FIXTURES = Path(__file__).parent / "fixtures"
PRESETS = {"restoreformer": RESTOREFORMER, "restoreformer++": RESTOREFORMER_PLUSPLUS}
FIXTURE_DIRS = {"restoreformer": "restoreformer", "restoreformer++": "restoreformer_plusplus"}
# Every code path at 32 px (latent 16 px, like the released 512 px models): 2 levels, 1 block per level.
SMALL = RestoreFormerConfig(n_embed=64, embed_dim=32, ch=32, ch_mult=(1, 2), num_res_blocks=1, resolution=32)
SMALL_CONFIGS = {
    "restoreformer": SMALL,
    "restoreformer++": RestoreFormerConfig(
        **{**SMALL.__dict__, "head_size": 4, "decoder_attn_resolutions": (16, 32)}
    ),
}


def _released(name: str, state: dict[str, torch.Tensor]) -> dict[str, object]:
    """``state`` in the released file's wrapper: GFP-GAN's ``params_ema``, or RF++'s Lightning checkpoint."""
    if name == "restoreformer":
        return {"params_ema": state}
    return {"state_dict": {f"vqvae.{k}": v for k, v in state.items()}, "epoch": 0, "global_step": 0}


def _small_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    state = RestoreFormer(SMALL_CONFIGS[name]).state_dict()
    for key, value in state.items():
        if key.endswith("bias") or key.endswith("norm1.weight"):  # non-trivial norms and biases
            value.add_(0.1 * torch.randn_like(value))
    return state


def _save(tmp_path: Path, name: str, obj: object, filename: str = "ckpt.pth") -> Path:
    path = tmp_path / filename
    torch.save(obj, path)
    return path


def _load_error(name: str, path: Path) -> str:
    with pytest.raises(WeightsError) as info:
        get_model(name).load(path, device="cpu", dtype=torch.float32, config=None)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path.name} does not match the ")
    return message


# --- the official layouts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PRESETS)
def test_official_layout_is_the_fixtures(name: str) -> None:
    """Every key, shape, dtype and the order of the official state dict, and the parameter count."""
    layout = json.loads((FIXTURES / FIXTURE_DIRS[name] / "layout.json").read_text())
    with torch.device("meta"):
        model = RestoreFormer(PRESETS[name])
    ours = [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in model.state_dict().items()]
    assert ours == [(e["name"], e["shape"], e["dtype"]) for e in layout["state_dict"]]
    assert sum(p.numel() for p in model.parameters()) == layout["n_parameter_elements"]
    assert model.face_size == 512


def _recipe(layout: list[dict]) -> dict[str, torch.Tensor]:
    """The fixtures' weights: one seed-1234 generator, one draw per tensor with its full shape, in order."""
    g = torch.Generator(device="cpu").manual_seed(1234)
    state = {}
    for entry in layout:
        shape, init = entry["shape"], entry["init"]
        if init == "normal_0.1":
            t = 0.1 * torch.randn(shape, generator=g, dtype=torch.float32)
        elif init == "one_plus_normal_0.1":
            t = 1.0 + 0.1 * torch.randn(shape, generator=g, dtype=torch.float32)
        else:
            rule, _, gain = init.partition(":")
            assert rule == "fan_in", init  # the only other rule these two layouts use
            scale = float(gain or 1.0) / math.sqrt(math.prod(shape) // shape[0])
            t = torch.randn(shape, generator=g, dtype=torch.float32) * scale
        state[entry["name"]] = t
    return state


@pytest.mark.slow  # full size: 73 M parameters, a 290 MB file and a 512 px forward (~10 s on 2 idle cores)
@pytest.mark.parametrize("name", PRESETS)
def test_released_layout_loads_strictly_and_matches_the_official_output(name: str, tmp_path: Path) -> None:
    fixture = FIXTURES / FIXTURE_DIRS[name]
    case = torch.load(fixture / "case.pt", weights_only=True)
    state = _recipe(json.loads((fixture / "layout.json").read_text())["state_dict"])
    checksum = case["weights_checksum"]
    assert len(state) == checksum["n_tensors"]
    assert math.isclose(sum(t.double().sum().item() for t in state.values()), checksum["sum"], rel_tol=1e-9)
    assert math.isclose(
        sum(t.double().abs().sum().item() for t in state.values()), checksum["abs_sum"], rel_tol=1e-9
    )
    path = _save(tmp_path, name, _released(name, state), get_model(name).name + ".ckpt")
    del state

    model = get_model(name).load(path, device="cpu", dtype=torch.float32, config=None)
    assert model.config == PRESETS[name] and model.face_size == 512 and not model.training
    x = torch.rand((1, 3, 512, 512), generator=torch.Generator().manual_seed(99), dtype=torch.float32) * 2 - 1
    assert hashlib.sha256(x.numpy().tobytes()).hexdigest() == case["input_sha256"]
    with torch.inference_mode():
        z_q, indices, features = model.encode(x)
        y = model.decoder(model.post_quant_conv(z_q), features)
    assert torch.equal(indices[0], case["vq_indices"])  # a different code is a bug, not rounding
    error = (y[:, :, ::4, ::4] - case["output_stride4"]).abs().max().item()
    assert error <= case["atol"], error


# --- loading: inferred layouts and one-line errors ----------------------------------------------------------


@pytest.mark.parametrize("name", PRESETS)
def test_a_smaller_checkpoint_loads_with_its_layout_read_off_the_shapes(name: str, tmp_path: Path) -> None:
    state = _small_state(name)
    model = get_model(name).load(
        _save(tmp_path, name, _released(name, state)), device="cpu", dtype=torch.float32, config=None
    )
    assert model.config == SMALL_CONFIGS[name] and model.face_size == 32
    assert infer_config(state, PRESETS[name]) == SMALL_CONFIGS[name]
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("name", PRESETS)
def test_missing_extra_and_misshapen_keys_are_named_in_one_line(name: str, tmp_path: Path) -> None:
    state = _small_state(name)
    missing = dict(state)
    del missing["decoder.up.0.block.0.conv2.weight"]
    message = _load_error(name, _save(tmp_path, name, _released(name, missing)))
    assert message.endswith("1 missing key (decoder.up.0.block.0.conv2.weight)")

    extra = {**state, "quantize.embedding.bias": torch.zeros(64)}
    assert _load_error(name, _save(tmp_path, name, _released(name, extra))).endswith(
        "1 unexpected key (quantize.embedding.bias)"
    )

    misshapen = {**state, "decoder.mid.attn_1.q.weight": torch.zeros(64, 64, 3, 3)}
    assert _load_error(name, _save(tmp_path, name, _released(name, misshapen))).endswith(
        "1 shape mismatch (decoder.mid.attn_1.q.weight)"
    )


def test_each_release_refuses_the_others_attention_layout(tmp_path: Path) -> None:
    """The attention placement is the releases' difference: it comes from the release, not from the file."""
    path = _save(tmp_path, "rf", _released("restoreformer", _small_state("restoreformer")))
    assert "24 missing keys (decoder.up.0.attn.0.norm1.weight," in _load_error("restoreformer++", path)
    path = _save(tmp_path, "rf", _released("restoreformer++", _small_state("restoreformer++")))
    assert "24 unexpected keys (decoder.up.0.attn.0.norm1.weight," in _load_error("restoreformer", path)


def test_rf_plusplus_drops_the_training_losses_as_upstream_and_nothing_else(tmp_path: Path) -> None:
    """The official loader ignores the Lightning checkpoint's ``loss.*`` keys; anything else must fit."""
    ckpt = _released("restoreformer++", _small_state("restoreformer++"))
    ckpt["state_dict"]["loss.discriminator.main.0.weight"] = torch.zeros(64, 3, 4, 4)
    load = get_model("restoreformer++").load
    model = load(_save(tmp_path, "rf", ckpt), device="cpu", dtype=torch.float32, config=None)
    assert model.config == SMALL_CONFIGS["restoreformer++"]

    ckpt["state_dict"]["vqvae.quantize.extra"] = torch.zeros(1)
    assert _load_error("restoreformer++", _save(tmp_path, "rf", ckpt)).endswith(
        "1 unexpected key (quantize.extra)"
    )


def test_a_model_config_of_another_architecture_is_one_clear_error(tmp_path: Path) -> None:
    path = _save(tmp_path, "restoreformer", _released("restoreformer", _small_state("restoreformer")))
    with pytest.raises(
        VidrestoreError, match="RestoreFormer takes a RestoreFormerConfig as model_config, not"
    ):
        get_model("restoreformer").load(path, device="cpu", dtype=torch.float32, config={"head_size": 8})


# --- inference ------------------------------------------------------------------------------------------


def _small_model(name: str) -> RestoreFormer:
    model = RestoreFormer(SMALL_CONFIGS[name]).eval().requires_grad_(False)
    model.load_state_dict(_small_state(name), strict=True)
    return model


def _faces(batch: int) -> torch.Tensor:
    return torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1


@pytest.mark.parametrize("name", PRESETS)
def test_a_batch_gives_each_face_its_own_result(name: str) -> None:
    model, x = _small_model(name), _faces(2)
    with torch.inference_mode():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(2)])
    assert torch.allclose(together, alone, atol=1e-4)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize(
    "dtype,same_codes,error",
    # bf16 has an 8-bit mantissa: ~1 % off in the encoder, and an untrained decoder amplifies it
    [(torch.float16, 0.99, 0.1), (torch.bfloat16, 0.95, 0.4)],
)
def test_half_precisions_on_the_cpu_stay_close_to_fp32(
    name: str, dtype: torch.dtype, same_codes: float, error: float
) -> None:
    model, x = _small_model(name), _faces(2)
    with torch.inference_mode():
        ref, codes = model(x), model.encode(x)[1]
        model.to(dtype)
        y, half_codes = model(x.to(dtype)), model.encode(x.to(dtype))[1]
    assert y.dtype == dtype and torch.isfinite(y).all()
    assert (half_codes == codes).float().mean() >= same_codes  # the lookup itself runs in fp32
    assert (y.float() - ref).abs().mean() < error * ref.abs().mean()


# --- end to end -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PRESETS)
def test_restore_a_clip_with_the_model_by_name(name: str, tmp_path: Path, offline, capsys) -> None:
    weights = _save(tmp_path, name, _released(name, _small_state(name)))
    spec = make_clip(tmp_path / "in.mp4", seconds=0.5, audio=False)
    out, report = tmp_path / "out.mp4", tmp_path / "run.json"
    args = ["restore", str(spec.path), "-o", str(out), "--model", name, "--weights", str(weights)]
    assert main([*args, "--detector", "centerface", "--report", str(report), "-q"]) == 0
    data = json.loads(report.read_text())
    assert data["settings"]["model"] == name and data["faces"] >= spec.frames * 0.8
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == spec.frames
