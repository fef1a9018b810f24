"""PFSR: the released checkpoint layout loads strictly, and the forward equals the official one.

The golden data in ``tests/fixtures/pfsr/`` come from the official ``model.Generator`` (see NOTES.md there):
the weights are rebuilt here from the layout's per-key recipe and checked against the stored checksums first.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from vidrestore.errors import VidrestoreError, WeightsError
from vidrestore.models import get_model
from vidrestore.models.pfsr import PFSRGenerator, load_pfsr

FIXTURE = Path(__file__).parent / "fixtures" / "pfsr"


def _recipe_tensor(entry: dict, g: torch.Generator) -> torch.Tensor:
    """One tensor of the fixture's weight recipe (one draw per tensor, full shape, float32 on CPU)."""
    shape, rule = entry["shape"], entry["init"]
    if rule == "keep":
        return torch.tensor(entry["value"], dtype=getattr(torch, entry["dtype"]))
    if rule == "uniform_plus_half":
        return torch.rand(shape, generator=g, dtype=torch.float32) + 0.5
    r = torch.randn(shape, generator=g, dtype=torch.float32)
    if rule == "normal_1":
        return r
    if rule == "normal_0.1":
        return 0.1 * r
    if rule == "one_plus_normal_0.1":
        return 1.0 + 0.1 * r
    if rule.startswith("fan_in"):
        gain = float(rule.split(":")[1]) if ":" in rule else 1.0
        return r * (gain / math.sqrt(math.prod(shape) // shape[0]))
    raise AssertionError(f"unknown recipe rule {rule}")


@pytest.fixture(scope="module")
def layout() -> dict:
    return json.loads((FIXTURE / "layout.json").read_text())


@pytest.fixture(scope="module")
def case() -> dict:
    return torch.load(FIXTURE / "case.pt", weights_only=True)


@pytest.fixture(scope="module")
def recipe_state(layout: dict, case: dict) -> dict[str, torch.Tensor]:
    """The fixture's weights in the official state_dict order, checked against the stored checksums."""
    g = torch.Generator(device="cpu").manual_seed(1234)
    state = {e["name"]: _recipe_tensor(e, g) for e in layout["state_dict"]}
    drawn = [state[e["name"]] for e in layout["state_dict"] if e["init"] != "keep"]
    checksum = case["weights_checksum"]
    assert len(drawn) == checksum["n_tensors"] and sum(t.numel() for t in drawn) == checksum["n_elements"]
    assert math.isclose(sum(t.double().sum().item() for t in drawn), checksum["sum"], rel_tol=1e-9)
    assert math.isclose(sum(t.double().abs().sum().item() for t in drawn), checksum["abs_sum"], rel_tol=1e-9)
    return state


@pytest.fixture(scope="module")
def released(tmp_path_factory, recipe_state) -> Path:
    """The recipe weights saved as the released file is: {model_state_dict, step, alpha, iteration}."""
    path = tmp_path_factory.mktemp("pfsr") / "generator_checkpoint_singleGPU.ckpt"
    torch.save({"model_state_dict": recipe_state, "step": 3, "alpha": 1.0, "iteration": 0}, path)
    return path


def test_state_dict_is_the_official_layout(layout: dict) -> None:
    with torch.device("meta"):
        ours = PFSRGenerator().state_dict()
    official = [(e["name"], e["shape"], e["dtype"]) for e in layout["state_dict"]]
    assert [(k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in ours.items()] == official
    assert sum(v.numel() for v in PFSRGenerator().parameters()) == layout["n_parameter_elements"]


def test_released_layout_loads_strictly(released: Path, recipe_state: dict) -> None:
    model = load_pfsr(released)
    assert not model.training and model.face_size == 16 and model.scale == 8
    for k, v in model.state_dict().items():
        assert torch.equal(v, recipe_state[k]), k


def test_distributed_checkpoint_loads(tmp_path: Path, recipe_state: dict) -> None:
    """``generator_checkpoint.ckpt`` was saved from a DistributedDataParallel wrapper: ``module.`` keys."""
    path = tmp_path / "generator_checkpoint.ckpt"
    state = {f"module.{k}": v for k, v in recipe_state.items()}
    torch.save({"model_state_dict": state, "step": 3, "alpha": 1.0, "iteration": 0}, path)
    assert torch.equal(load_pfsr(path).to_rgb[2].bias, recipe_state["to_rgb.2.bias"])


def test_parity_with_official(released: Path, case: dict) -> None:
    x = case["input"]
    assert hashlib.sha256(x.numpy().tobytes()).hexdigest() == case["input_sha256"]
    model = load_pfsr(released)
    atol = case["atol"]
    for name, call in case["cases"].items():
        out = model(x, step=call["step"], alpha=call["alpha"])
        expected = case["output"].get(name)
        if expected is None:  # stored in part, to keep the fixture small
            expected = case["output_rows"][name]
            out = out[:, :, : expected.shape[2]]
        assert out.shape == expected.shape
        err = (out - expected).abs().max().item()
        assert err <= atol, f"{name}: max abs error {err:.3g} > {atol}"


def _save_broken(path: Path, state: dict) -> Path:
    torch.save({"model_state_dict": state, "step": 3, "alpha": 1.0, "iteration": 0}, path)
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("missing", r"1 missing key \(step2\.0\.conv\.3\.conv\.weight_orig\)"),
        ("extra", r"1 unexpected key \(step4\.0\.weight\)"),
        ("shape", r"1 shape mismatch \(to_rgb\.1\.weight\)"),
        ("renamed", r"2 missing keys \(step1\.0\.weight, step1\.0\.bias\), 2 unexpected keys"),
    ],
)
def test_mismatched_checkpoint_is_one_line(tmp_path: Path, recipe_state: dict, change: str, message: str):
    state = dict(recipe_state)
    if change == "missing":
        del state["step2.0.conv.3.conv.weight_orig"]
    elif change == "extra":
        state["step4.0.weight"] = torch.zeros(3)
    elif change == "shape":
        state["to_rgb.1.weight"] = torch.zeros(3, 64, 1, 1)
    else:  # the un-hooked name an EqualConv2d-less re-implementation would save
        state["step1.0.w"] = state.pop("step1.0.weight")
        state["step1.0.b"] = state.pop("step1.0.bias")
    path = _save_broken(tmp_path / "generator_checkpoint_singleGPU.ckpt", state)
    with pytest.raises(WeightsError, match=message) as info:
        load_pfsr(path)
    assert "does not match the PFSR generator layout" in str(info.value) and "\n" not in str(info.value)


def test_model_config_is_refused(released: Path) -> None:
    with pytest.raises(VidrestoreError, match="single configuration"):
        load_pfsr(released, config={"channels": 256})


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_on_cpu_is_close(released: Path, case: dict, dtype: torch.dtype) -> None:
    """Batched 16-bit inference stays finite and near fp32. On a 4 px input (the network is fully
    convolutional), because 16-bit convs on the CPU take a slow path: a 16 px face takes about a minute."""
    patch = case["input"][:, :, 6:10, 6:10]
    x = torch.cat([patch, patch.flip(-1)])  # two different faces in one batch
    reference = load_pfsr(released)(x)
    out = load_pfsr(released, dtype=dtype)(x.to(dtype)).float()
    assert out.shape == (2, 3, 32, 32) and torch.isfinite(out).all()
    assert (out - reference).abs().max() < 0.1 and (out - reference).abs().mean() < 0.01


def test_registry_entry() -> None:
    spec = get_model("pfsr")
    assert (spec.face_size, spec.scale, spec.arch) == (16, 8, "PFSRGenerator")
    assert spec.licence == "no licence file (all rights reserved)"
    eyes = spec.template_for(128)[:2]
    assert 27 < eyes[1, 0] - eyes[0, 0] < 29  # CelebA's ~39 px at 178, scaled to 128
