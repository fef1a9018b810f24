"""PFSR: the released checkpoint layout loads strictly, and the forward equals the official one.

The golden data in ``tests/fixtures/pfsr/`` come from the official ``model.Generator`` (see NOTES.md there):
the weights are rebuilt here from the layout's per-key recipe and checked against the stored checksums first.
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
import torch.nn.functional as F
from clips import BACKGROUND, face_path, make_clip, render

from vidrestore.cli import main
from vidrestore.engine import FaceRestorer
from vidrestore.errors import VidrestoreError, WeightsError
from vidrestore.faces.detection import Faces
from vidrestore.faces.resample import halve_like_pil
from vidrestore.io.images import read_image, write_image
from vidrestore.models import get_model
from vidrestore.models.pfsr import PFSRGenerator, load_pfsr
from vidrestore.options import EngineOptions

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


class _Bilinear8x(torch.nn.Module):
    """A stand-in 'network' with PFSR's geometry: 16 px in, its 8× bilinear upsampling out."""

    face_size = 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=8, mode="bilinear", align_corners=False)


def _ramp_frame(size: int = 128) -> torch.Tensor:
    """A frame whose channels are planes in x and y: any misplaced crop or paste shows as a level shift."""
    y, x = torch.meshgrid(torch.arange(size) / (size - 1), torch.arange(size) / (size - 1), indexing="ij")
    return torch.stack([0.05 + 0.9 * x, 0.05 + 0.9 * y, 0.95 - 0.45 * (x + y)])[None]


def _face_at(scale: float, angle: float, centre: tuple[float, float]) -> Faces:
    """The CelebA template (at 128) placed in a frame by a known similarity."""
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    points = get_model("pfsr").template_for(128) - 64
    lm = points @ np.array([[c, s], [-s, c]]) + np.array(centre)
    box = np.array([[*(lm.min(0) - 10), *(lm.max(0) + 10)]], np.float32)
    return Faces(box, np.ones(1, np.float32), lm[None].astype(np.float32))


@pytest.mark.parametrize("upscale", [1, 2])
def test_engine_warps_at_128_feeds_16_and_pastes_128_back(released: Path, upscale: int) -> None:
    """With an ideal upsampler for a network, the frame comes back as it was: the 16 px input is the 128 px
    crop halved (centre of 16 px pixel i = 128 px position 8i + 3.5), and the 128 px output is pasted with the
    128 px affine, also into an upscaled frame."""
    engine = FaceRestorer(
        EngineOptions(model="pfsr", weights=released, detector="centerface"), progress=False
    )
    assert (engine.face_size, engine.out_size) == (16, 128)
    seen = []
    engine.model = _Bilinear8x()
    engine.model.register_forward_hook(lambda m, args, out: seen.append((args[0].shape, out.shape)))
    frame = _ramp_frame()
    out, _, changed = engine.restore(frame, [_face_at(0.6, 0.3, (60, 66))], upscale=upscale)
    assert seen == [((1, 3, 16, 16), (1, 3, 128, 128))]
    expected = frame if upscale == 1 else F.interpolate(frame, scale_factor=upscale, mode="bilinear")
    centre = slice(50 * upscale, 76 * upscale), slice(44 * upscale, 76 * upscale)  # eyes to mouth
    assert changed[0][centre].all() and changed[0].sum() > 2000 * upscale**2
    err = (out - expected)[0][(slice(None), *centre)].abs()
    assert err.max() < 2.5 / 255, err.max() * 255  # 8-bit rounding of the crop and of each halving


def test_engine_runs_the_network_on_tiny_faces_in_a_batch(released: Path, astronaut: np.ndarray) -> None:
    """The real generator (fixture weights), batched: the astronaut at 1/4 size and a mirrored copy."""
    small = astronaut[::4, ::4]
    frame = np.full((128, 256, 3), 90, np.uint8)
    frame[:, :128], frame[:, 128:] = small, small[:, ::-1]
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    engine = FaceRestorer(
        EngineOptions(model="pfsr", weights=released, detector="centerface", face_batch=2), progress=False
    )
    out, found, changed = engine.restore(x)
    assert len(found[0]) == 2 and out.shape == x.shape and torch.isfinite(out).all()
    assert changed[0, :, :128].sum() > 300 and changed[0, :, 128:].sum() > 300
    assert torch.equal(out[0][:, ~changed[0]], x[0][:, ~changed[0]])


@pytest.mark.parametrize("kind", ["noise", "smooth"])
def test_halving_is_pils_bilinear_resize_bit_for_bit(kind: str) -> None:
    """PFSR's inputs were made by torchvision ``Resize`` on 8-bit PIL images: 128 → 64 → 32 → 16."""
    from PIL import Image

    rng = np.random.default_rng(7)
    if kind == "noise":
        img = rng.integers(0, 256, (2, 128, 128, 3), dtype=np.uint8)
    else:
        img = np.clip(np.cumsum(rng.integers(-4, 5, (2, 128, 128, 3)), axis=2) + 128, 0, 255).astype(np.uint8)
    x = torch.from_numpy(img).permute(0, 3, 1, 2).float() / 255
    for times, size in ((1, 64), (2, 32), (3, 16)):
        ours = (halve_like_pil(x, times) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for i in range(2):
            pil = Image.fromarray(img[i])
            for s in (64, 32, 16)[:times]:
                pil = pil.resize((s, s), Image.BILINEAR)
            assert np.array_equal(ours[i], np.asarray(pil)), (kind, size)
    with pytest.raises(ValueError, match="cannot halve"):
        halve_like_pil(torch.zeros(1, 3, 24, 24), 4)


def test_restore_and_image_cli_end_to_end(
    tmp_path: Path, released: Path, astronaut: np.ndarray, capsys, offline
) -> None:
    """``vidrestore restore|image --model pfsr --weights PATH``: a clip with a real face (tracked, smoothed)
    and a still with a small face, enlarged 4× (the use this model is for)."""
    spec = make_clip(tmp_path / "in.mp4", seconds=0.25, fps=12, audio=False)  # 3 frames: ~8 GFLOP a face
    out = tmp_path / "out.mp4"
    args = ["restore", str(spec.path), "-o", str(out), "--model", "pfsr", "--weights", str(released)]
    assert main([*args, "--detector", "centerface", "-q"]) == 0
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == spec.frames and frames[0].shape == (spec.height, spec.width, 3)
    x, y, w, h = spec.boxes[0]
    face = frames[0][y + h // 3 : y + 2 * h // 3, x + w // 3 : x + 2 * w // 3].astype(float)
    assert np.abs(face - np.array(BACKGROUND)).mean() > 20  # a face was pasted where the face was

    write_image(tmp_path / "small.png", astronaut[::4, ::4])
    image = ["image", str(tmp_path / "small.png"), "-o", str(tmp_path / "big.png"), "--upscale", "4"]
    assert (
        main([*image, "--model", "pfsr", "--weights", str(released), "--detector", "centerface", "-q"]) == 0
    )
    assert read_image(tmp_path / "big.png").shape == (512, 512, 3)

    args[-1] = str(tmp_path / "missing.ckpt")
    assert main([*args, "--detector", "centerface", "-q", "--overwrite"]) != 0
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(err) == 1 and "missing.ckpt" in err[0] and "Traceback" not in err[0]


def test_vapoursynth_filter(released: Path, offline) -> None:
    pytest.importorskip("vapoursynth")
    from test_vapoursynth import frames_clip, planes
    from vidrestore.plugins.vapoursynth import restore

    box = face_path(160, 120, 1)[0]
    frame = render(160, 120, box)
    clip = frames_clip([frame])
    got = restore(clip, model="pfsr", weights=str(released), detector="centerface", device="cpu").get_frame(0)
    out = planes(got).transpose(1, 2, 0)
    x, y, w, h = box
    assert not np.array_equal(out[y : y + h, x : x + w], frame[y : y + h, x : x + w])
    assert np.array_equal(out[:, x + w + 20 :], frame[:, x + w + 20 :])  # away from the face: untouched


def test_the_smallest_faces_the_detector_finds_pass_min_face(released: Path) -> None:
    """PFSR is for faces whose eyes are ~3.5 px apart (its 16 px input). CenterFace finds none with eyes
    closer than ~6.7 px (a 32-36 px head; at 28 px nothing, whatever the frame size), so the default
    ``--min-face 5`` drops nothing it could restore: the detector, not the threshold, is the limit."""
    engine = FaceRestorer(
        EngineOptions(model="pfsr", weights=released, detector="centerface"), progress=False
    )
    assert engine.options.min_face == 5
    frames = [render(160, 120, (60, 40, side, side)) for side in (28, 36)]
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    out, found, changed = engine.restore(x)
    assert [len(f) for f in found] == [0, 1] and 5 < found[1].eye_distance()[0] < 10
    assert changed[1].sum() > 100 and not changed[0].any()
