"""CodeFormer: the released layout loads strictly, the forward matches the official one, w is --fidelity.

The golden data is a subset of ``/work/shared/fixtures/codeformer`` (``tests/fixtures/codeformer``): the
weights come from its per-key recipe, the outputs from the official code. Everything else runs on a tiny
configuration that the loader reads off the checkpoint, as it does for the released file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path

import pytest
import torch

from vidrestore import weights
from vidrestore.cli import main
from vidrestore.engine import FaceRestorer
from vidrestore.errors import WeightsError
from vidrestore.io.images import read_image, write_image
from vidrestore.models import get_model
from vidrestore.models.codeformer import CodeFormer, CodeFormerConfig, infer_codeformer_config
from vidrestore.options import EngineOptions

FIXTURE = Path(__file__).parent / "fixtures" / "codeformer"
# Every path of the released layout (levels with and without attention, downsampling, fusion above the
# latent), at 32 px: two levels, the 16x16 latent of the release.
TINY = CodeFormerConfig(
    img_size=32,
    nf=32,
    ch_mult=(1, 2),
    codebook_size=64,
    emb_dim=32,
    dim_embd=64,
    n_layers=2,
    connect_list=(32,),
)


def _recipe_tensor(entry: dict, g: torch.Generator) -> torch.Tensor:
    """One tensor of the fixtures' weight recipe (fixtures/README.md), drawn once with its full shape."""
    shape, init = entry["shape"], entry["init"]
    draw = torch.randn(shape, generator=g, dtype=torch.float32)
    if init == "normal_1":
        return draw
    if init == "normal_0.1":
        return 0.1 * draw
    if init == "one_plus_normal_0.1":
        return 1.0 + 0.1 * draw
    if init.startswith("fan_in"):
        gain = float(init.partition(":")[2] or 1.0)
        return draw * (gain / math.sqrt(math.prod(shape) // shape[0]))
    raise AssertionError(f"the recipe has no rule {init!r}")


@pytest.fixture(autouse=True)
def _one_thread(request):
    """Tiny networks gain nothing from intra-op threads, whose spin-waits cost seconds on a busy machine."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def layout() -> list[dict]:
    return json.loads((FIXTURE / "layout.json").read_text())["state_dict"]


@pytest.fixture(scope="module")
def case() -> dict:
    return torch.load(FIXTURE / "case.pt", weights_only=True)


@pytest.fixture(scope="module")
def released(layout, tmp_path_factory) -> tuple[dict[str, torch.Tensor], Path]:
    """The recipe's weights, and a file holding them as the release does: ``{"params_ema": state}``."""
    g = torch.Generator(device="cpu").manual_seed(1234)
    state = {entry["name"]: _recipe_tensor(entry, g) for entry in layout}
    path = tmp_path_factory.mktemp("codeformer") / "codeformer.pth"
    torch.save({"params_ema": state}, path)
    return state, path


def _tiny_checkpoint(path: Path, config: CodeFormerConfig = TINY, seed: int = 0) -> Path:
    """A random CodeFormer in the released wrapper, at the fixtures' weight scales (activations O(1))."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, value in CodeFormer(config).state_dict().items():
        draw = torch.randn(value.shape, generator=g)
        if name.endswith("bias"):
            draw = 0.1 * draw
        elif value.ndim == 1:  # GroupNorm / LayerNorm scales
            draw = 1 + 0.1 * draw
        elif name != "position_emb":
            draw = draw / math.sqrt(value[0].numel())
        state[name] = draw
    torch.save({"params_ema": state}, path)
    return path


def test_our_layout_is_the_released_one_key_for_key_in_order(layout):
    with torch.device("meta"):
        ours = CodeFormer().state_dict()
    assert [(k, list(v.shape)) for k, v in ours.items()] == [(e["name"], e["shape"]) for e in layout]


@pytest.mark.slow
def test_the_recipe_checkpoint_loads_strictly_through_the_registry(released, case):
    """The fixture's weights (checked against its checksums) in the released wrapper, loaded as users do."""
    state, path = released
    expected = case["weights_checksum"]
    assert len(state) == expected["n_tensors"] == 515
    assert sum(t.numel() for t in state.values()) == expected["n_elements"]
    total = math.fsum(t.double().sum().item() for t in state.values())
    absolute = math.fsum(t.double().abs().sum().item() for t in state.values())
    assert math.isclose(total, expected["sum"], rel_tol=1e-9)
    assert math.isclose(absolute, expected["abs_sum"], rel_tol=1e-9)
    model = get_model("codeformer").load(path, device="cpu", dtype=torch.float32, config=None)
    assert model.config == CodeFormerConfig() and model.face_size == 512 and not model.training
    loaded = model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


@pytest.mark.slow
def test_matches_the_official_forward_at_w_0_and_0_5(released, case):
    """Latent, logits, code indices and both outputs, within the fixture's tolerances (about 2 min on CPU)."""
    _, path = released
    model = get_model("codeformer").load(path, device="cpu", dtype=torch.float32, config=None)
    x = torch.rand((1, 3, 512, 512), generator=torch.Generator().manual_seed(99), dtype=torch.float32) * 2 - 1
    assert hashlib.sha256(x.numpy().tobytes()).hexdigest() == case["input_sha256"]
    tol = case["tolerance"]
    with torch.inference_mode():
        lq_feat, feats = model.encode(x)
        logits = model.code_logits(lq_feat)
        indices = logits.argmax(dim=-1)
        quant = model.lookup(indices, lq_feat)
        outputs = {w: model.decode(quant, feats, w) for w in (0.0, 0.5)}
    assert (lq_feat - case["lq_feat"]).abs().max() <= tol["lq_feat"]["atol"]
    assert (logits[:, :, ::8] - case["logits_every_8th"]).abs().max() <= tol["logits"]["atol"]
    assert torch.equal(indices.view(16, 16), case["code_indices"].long())
    for w, y in outputs.items():
        official = case["output_every_4th_pixel"][f"w{w}"]
        assert (y[..., ::4, ::4] - official).abs().max() <= tol[f"w{w}"]["atol"], w
    with torch.inference_mode():
        assert torch.equal(model(x, w=0.5), outputs[0.5])  # forward is these steps


def test_the_loader_reads_a_smaller_layout_off_the_checkpoint(tmp_path):
    path = _tiny_checkpoint(tmp_path / "tiny.pth")
    state = torch.load(path, weights_only=True)["params_ema"]
    assert infer_codeformer_config(state) == TINY
    model = get_model("codeformer").load(path, device="cpu", dtype=torch.float32, config=None)
    assert model.face_size == 32 and model.config == TINY


@pytest.mark.parametrize(
    "change,needle",
    [
        (lambda s: s.pop("ft_layers.1.linear1.bias"), "1 missing key (ft_layers.1.linear1.bias)"),
        (lambda s: s.update(extra=torch.zeros(1)), "1 unexpected key (extra)"),
        (
            lambda s: s.update({"generator.blocks.0.weight": torch.zeros(64, 32, 1, 1)}),
            "1 shape mismatch (generator.blocks.0.weight)",
        ),
    ],
)
def test_a_checkpoint_that_does_not_fit_is_one_line_naming_the_key(
    tmp_path, capsys, astronaut, change, needle
):
    path = _tiny_checkpoint(tmp_path / "bad.pth")
    state = torch.load(path, weights_only=True)["params_ema"]
    change(state)
    torch.save({"params_ema": state}, path)
    with pytest.raises(WeightsError, match="bad.pth does not match the CodeFormer") as err:
        get_model("codeformer").load(path, device="cpu", dtype=torch.float32, config=None)
    assert needle in str(err.value) and "\n" not in str(err.value)

    src = tmp_path / "a.png"
    write_image(src, astronaut)
    args = ["image", str(src), "-o", str(tmp_path / "b.png"), "--model", "codeformer", "--weights", str(path)]
    assert main([*args, "--detector", "centerface", "-q"]) != 0
    err_lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err_lines) == 1 and needle in err_lines[0] and "Traceback" not in err_lines[0]


def test_fusion_runs_only_when_w_is_above_zero_and_batches_are_independent(tmp_path):
    model = get_model("codeformer").load(_tiny_checkpoint(tmp_path / "t.pth"), device="cpu", config=None)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.inference_mode():
        plain, fused = model(x[:1], w=0.0), model(x, w=0.5)
        assert torch.allclose(model(x[1:], w=0.5), fused[1:], atol=1e-5)  # per-face AdaIN and codes
        for p in model.fuse_convs_dict.parameters():
            p.mul_(2)
        assert torch.equal(model(x[:1], w=0.0), plain)  # the fusion blocks are skipped at w = 0
        assert not torch.allclose(model(x[:1], w=0.5), fused[:1])


def test_a_grey_face_comes_back_grey_with_the_crops_mean_and_deviation(tmp_path):
    model = get_model("codeformer").load(_tiny_checkpoint(tmp_path / "t.pth"), device="cpu", config=None)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    x[0] = 0.8 * x[0, :1] - 0.1  # grey, darker and flatter than the colour face
    with torch.inference_mode():
        y = model(x, w=0.5)
        lq_feat, feats = model.encode(x)
        raw = model.decode(model.lookup(model.code_logits(lq_feat).argmax(-1), lq_feat), feats, 0.5)
    assert torch.equal(y[1], raw[1])  # colour: the network's output as it is
    assert torch.equal(y[0, 0], y[0, 1]) and torch.equal(y[0, 1], y[0, 2])
    assert torch.allclose(y[0].mean(), x[0].mean(), atol=1e-5)
    assert torch.allclose(y[0].std(correction=0), x[0].std(correction=0), atol=1e-5)


@pytest.mark.parametrize("dtype,bound", [(torch.float16, 0.01), (torch.bfloat16, 0.05)])
def test_half_precision_runs_on_the_cpu(tmp_path, dtype, bound):
    """Finite, and close to float32 given the same codes. The codes themselves may differ where two logits
    nearly tie (a random network has many such ties), and a changed code changes the whole decoded face."""
    path = _tiny_checkpoint(tmp_path / "t.pth")
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 2 - 1
    with torch.inference_mode():
        full = get_model("codeformer").load(path, device="cpu", dtype=torch.float32, config=None)
        half = get_model("codeformer").load(path, device="cpu", dtype=dtype, config=None)
        lq_feat, feats = full.encode(x)
        codes = full.code_logits(lq_feat).argmax(-1)
        ref = full.decode(full.lookup(codes, lq_feat), feats, 0.5)
        lq_half, feats_half = half.encode(x.to(dtype))
        same_codes = half.decode(half.lookup(codes, lq_half), feats_half, 0.5)
        y = half(x.to(dtype), w=0.5)
    assert y.dtype == same_codes.dtype == dtype and y.isfinite().all()
    assert (half.code_logits(lq_half).argmax(-1) == codes).float().mean() > 0.9
    error = (same_codes.float() - ref).abs()
    assert error.mean() < bound and error.max() < 0.3


def test_the_registry_entry_weights_and_fidelity_mapping(tmp_path):
    spec = get_model("codeformer")
    assert (
        spec.licence.startswith("S-Lab License 1.0") and spec.face_size == 512 and spec.input_range == (-1, 1)
    )
    file = weights.get_spec(spec.weights)
    assert file.filename == "codeformer.pth" and file.size == 376637898
    assert file.url.endswith("sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth")
    options = EngineOptions(
        model="codeformer", weights=_tiny_checkpoint(tmp_path / "t.pth"), detector="centerface", fidelity=0.7
    )
    assert FaceRestorer(options, progress=False).controls == {"w": 0.7}


def test_fidelity_is_w_not_a_blend_back_to_the_original(tmp_path, astronaut, offline):
    """With GFP-GAN, --fidelity 1 keeps the original face; with CodeFormer it is w = 1: still restored."""
    path = _tiny_checkpoint(tmp_path / "t.pth")
    src, dst = tmp_path / "a.png", tmp_path / "b.png"
    write_image(src, astronaut)
    args = ["image", str(src), "-o", str(dst), "--model", "codeformer", "--weights", str(path), "-q"]
    assert main([*args, "--detector", "centerface", "--fidelity", "1"]) == 0
    face = (slice(90, 130), slice(190, 260))
    assert (read_image(dst)[face].astype(int) - astronaut[face]).__abs__().mean() > 5


def test_restore_a_clip_with_a_real_face_from_the_command_line(tmp_path, offline):
    from clips import make_clip

    spec = make_clip(tmp_path / "in.mp4", seconds=0.5, audio=False)
    path = _tiny_checkpoint(tmp_path / "t.pth")
    report = tmp_path / "run.json"
    args = ["restore", str(spec.path), "-o", str(tmp_path / "out.mp4"), "--model", "codeformer", "-q"]
    args += ["--weights", str(path), "--detector", "centerface", "--fidelity", "0.5", "--report", str(report)]
    assert main([*args, "--face-batch", "2"]) == 0
    data = json.loads(report.read_text())
    assert data["frames"] == spec.frames and data["faces"] >= spec.frames * 0.8
    assert data["settings"]["model"] == "codeformer"


def test_the_vapoursynth_filter_takes_it_by_name(tmp_path):
    vs = pytest.importorskip("vapoursynth")
    from vidrestore.plugins.vapoursynth import restore

    path = _tiny_checkpoint(tmp_path / "t.pth")
    clip = vs.core.std.BlankClip(format=vs.RGB24, width=64, height=48, length=1)
    out = restore(
        clip, model="codeformer", weights=str(path), detector="centerface", device="cpu", fidelity=0.5
    )
    assert out.get_frame(0).props["VidrestoreFaces"] == 0


def test_config_checks_sizes_the_network_cannot_have():
    with pytest.raises(ValueError, match="multiple of 32"):
        dataclasses.replace(TINY, nf=16)
    with pytest.raises(ValueError, match="connect_list"):
        dataclasses.replace(TINY, connect_list=(64,))
