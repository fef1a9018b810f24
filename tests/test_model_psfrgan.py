"""PSFR-GAN: the released layouts load strictly, the forward equals the official one (golden fixture from
chaofengc/PSFRGAN, see tests/fixtures/psfrgan/), bad files fail in one line, and ``--model psfrgan`` runs
end to end with its two weight files."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import av
import pytest
import torch
import torch.nn.functional as F
from clips import face_path, make_clip, render

import vidrestore
from vidrestore import models, weights
from vidrestore.cli import main
from vidrestore.engine import FaceRestorer
from vidrestore.errors import WeightsError
from vidrestore.io.images import read_image, write_image
from vidrestore.models.parsenet import ParseNet, ParseNetConfig, infer_parsenet_config, load_parsenet
from vidrestore.models.psfrgan import PSFRGAN, PSFRConfig, PSFRGenerator, infer_psfr_config, load_psfrgan
from vidrestore.options import EngineOptions

FIXTURES = Path(__file__).parent / "fixtures" / "psfrgan"
TINY_G = PSFRConfig(min_feat_size=8, channels=(32, 16, 16, 8), spade_ch=16)  # 64 px
TINY_P = ParseNetConfig(encoder=(8, 16, 16), res_depth=1, decoder=(16, 8))


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on a shared, loaded CPU, small convs run many times faster than with more."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def layout() -> dict:
    return json.loads((FIXTURES / "layout.json").read_text())


@pytest.fixture(scope="module")
def case() -> dict:
    return torch.load(FIXTURES / "case.pt", weights_only=True)


def _nrm(x: torch.Tensor) -> torch.Tensor:
    return x / max(x.norm().item(), 1e-12)


def recipe_state(entries: list[dict]) -> dict[str, torch.Tensor]:
    """The fixtures' weight recipe (tests/fixtures/psfrgan/README): one seed-1234 generator, keys in order."""
    g = torch.Generator(device="cpu").manual_seed(1234)
    state: dict[str, torch.Tensor] = {}
    pending_v = None
    for e in entries:
        name, shape, init = e["name"], e["shape"], e["init"]
        if init == "keep":
            t = torch.tensor(e["value"], dtype=getattr(torch, e["dtype"]))
        elif init == "normal_1":
            t = torch.randn(shape, generator=g, dtype=torch.float32)
        elif init == "normal_0.1":
            t = 0.1 * torch.randn(shape, generator=g, dtype=torch.float32)
        elif init == "one_plus_normal_0.1":
            t = 1.0 + 0.1 * torch.randn(shape, generator=g, dtype=torch.float32)
        elif init == "uniform_plus_half":
            t = torch.rand(shape, generator=g, dtype=torch.float32) + 0.5
        elif init.startswith("fan_in"):
            gain = float(init.split(":")[1]) if ":" in init else 1.0
            fan_in = math.prod(shape) // shape[0]
            t = torch.randn(shape, generator=g, dtype=torch.float32) * (gain / math.sqrt(fan_in))
        elif init == "sn_u":
            u0 = torch.randn(shape, generator=g, dtype=torch.float32)
            w = state[name.removesuffix("_u") + "_orig"].double().reshape(shape[0], -1)
            u0 = _nrm(u0.double())
            v = _nrm(w.T @ u0)
            t, pending_v = _nrm(w @ v).float(), v.float()
        elif init == "sn_v":
            t, pending_v = pending_v, None
        else:
            raise AssertionError(f"unknown init {init!r} for {name}")
        state[name] = t
    return state


def recipe_entries(model: torch.nn.Module) -> list[dict]:
    """The fixtures' per-key rules for any PSFR-GAN-shaped network, so that small test models are sane."""
    entries = []
    for name, t in model.state_dict().items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            init = "keep"
        elif leaf in ("weight_orig", "const_input"):
            init = "normal_1"
        elif leaf == "weight_u":
            init = "sn_u"
        elif leaf == "weight_v":
            init = "sn_v"
        elif leaf in ("bias", "running_mean"):
            init = "normal_0.1"
        elif leaf == "running_var":
            init = "uniform_plus_half"
        elif t.dim() == 1:
            init = "one_plus_normal_0.1"
        else:
            init = "fan_in:0.8"
        entries.append({"name": name, "shape": list(t.shape), "dtype": "int64", "init": init, "value": 0})
    return entries


def _checksum(state: dict[str, torch.Tensor], entries: list[dict]) -> tuple[float, float, int]:
    drawn = [state[e["name"]] for e in entries if e["init"] != "keep"]
    return (
        sum(t.double().sum().item() for t in drawn),
        sum(t.double().abs().sum().item() for t in drawn),
        len(drawn),
    )


@pytest.fixture(scope="module")
def released(layout, case, tmp_path_factory) -> tuple[Path, Path]:
    """The fixture's weights written as the released files are: plain state dicts, under their names."""
    folder = tmp_path_factory.mktemp("psfrgan")
    paths = []
    for net, filename in (
        ("generator", "psfrgan_epoch15_net_G.pth"),
        ("parsenet", "parse_multi_iter_90000.pth"),
    ):
        entries = layout[net]["state_dict"]
        state = recipe_state(entries)
        want = case["weights_checksum"][net]
        total, total_abs, n = _checksum(state, entries)
        assert n == want["n_tensors"]
        assert math.isclose(total, want["sum"], rel_tol=1e-9) and math.isclose(
            total_abs, want["abs_sum"], rel_tol=1e-9
        ), f"{net}: the recipe does not reproduce the fixture's weights with torch {torch.__version__}"
        torch.save(state, folder / filename)
        paths.append(folder / filename)
    return paths[0], paths[1]


def _case_input(case) -> torch.Tensor:
    x = torch.rand((1, 3, 512, 512), generator=torch.Generator().manual_seed(99), dtype=torch.float32) * 2 - 1
    assert hashlib.sha256(x.numpy().tobytes()).hexdigest() == case["input_sha256"]
    return x


def test_official_layouts_match_key_for_key(layout):
    """Both official configurations have every key, shape and dtype of the fixture layout, in the official
    state_dict() order, and those are the configurations read off a checkpoint in that layout."""
    for net, factory, infer in (
        ("generator", PSFRGenerator, infer_psfr_config),
        ("parsenet", ParseNet, infer_parsenet_config),
    ):
        with torch.device("meta"):
            module = factory()
            listed = {e["name"]: torch.empty(e["shape"]) for e in layout[net]["state_dict"]}
        got = [
            (k, list(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in module.state_dict().items()
        ]
        want = [(e["name"], e["shape"], e["dtype"]) for e in layout[net]["state_dict"]]
        assert got == want, net
        assert infer(listed) == module.config
        n_params = sum(p.numel() for p in module.parameters())
        assert n_params == layout[net]["n_parameter_elements"], net


@pytest.mark.slow
def test_released_files_load_strictly_and_match_the_official_forward(released, case):
    """The fixture's weights, saved as the released files and read by the registry's loader, give the
    official ParseNet logits and image, parse labels and generator output (~10 s on an idle CPU)."""
    generator, parser = released
    model = models.get_model("psfrgan").load(
        generator, device="cpu", dtype=torch.float32, config=None, extra=(parser,)
    )
    assert model.face_size == 512
    x = _case_input(case)
    tol = case["tolerance"]
    with torch.inference_mode():
        logits, img = model.parser(x)
        labels = case["parse_labels"].long()
        onehot = F.one_hot(labels, 19).permute(0, 3, 1, 2).float()
        out = model.generator(x, onehot)
        assert torch.equal(model.parser.logits(x), logits)
    err_logits = (logits[:, :, ::8, ::8] - case["parsenet_logits_stride8"]).abs().max().item()
    err_img = (img[:, :, ::4, ::4] - case["parsenet_img_stride4"]).abs().max().item()
    err_out = (out[:, :, ::4, ::4] - case["generator_stride4"]).abs().max().item()
    assert err_logits <= tol["parsenet_mask_logits_stride4"], err_logits
    assert err_img <= tol["parsenet_img_stride4"], err_img
    assert err_out <= tol["generator"], err_out
    # Labels may differ only where the official top-1/top-2 margin is below our logit error: 49 pixels
    # of 262,144 have a margin under 1e-4.
    assert (logits.argmax(dim=1) != labels).sum().item() <= 49


def _tiny(tmp_path: Path) -> tuple[Path, Path]:
    """A 64 px PSFR-GAN with sane weights, saved as the released files are."""
    paths = []
    for model, filename in (
        (PSFRGenerator(TINY_G), "psfrgan_epoch15_net_G.pth"),
        (ParseNet(TINY_P), "parse_multi_iter_90000.pth"),
    ):
        torch.save(recipe_state(recipe_entries(model)), tmp_path / filename)
        paths.append(tmp_path / filename)
    return paths[0], paths[1]


def test_small_models_load_with_widths_read_off_the_checkpoint(tmp_path):
    generator, parser = _tiny(tmp_path)
    model = load_psfrgan(generator, extra=(parser,))
    assert model.generator.config == TINY_G and model.parser.config == TINY_P and model.face_size == 64
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        y = model(x)
        one = model(x[1:])
    assert y.shape == (2, 3, 64, 64) and y.isfinite().all()
    torch.testing.assert_close(y[1:], one, atol=1e-5, rtol=0)  # a batch is its faces, one by one


@pytest.mark.parametrize(
    "net,edit,needle",
    [
        ("generator", "drop", r"1 missing key \(head\.1\.conv_0\.weight_u\)"),
        ("generator", "extra", r"1 unexpected key \(head\.1\.conv_0\.weight\)"),
        ("generator", "shape", r"1 shape mismatch \(img_out\.bias\)"),
        ("parser", "drop", r"1 missing key \(body\.0\.conv1\.norm\.norm\.running_var\)"),
        ("parser", "extra", r"1 unexpected key \(body\.0\.conv1\.conv2d\.bias\)"),
        ("parser", "shape", r"1 shape mismatch \(out_mask_conv\.conv2d\.bias\)"),
    ],
)
def test_a_bad_key_is_one_line_naming_it(tmp_path, net, edit, needle):
    generator, parser = _tiny(tmp_path)
    path = generator if net == "generator" else parser
    state = torch.load(path, weights_only=True)
    if edit == "drop":
        del state["head.1.conv_0.weight_u" if net == "generator" else "body.0.conv1.norm.norm.running_var"]
    elif edit == "extra":  # e.g. a file saved without spectral norm's reparametrisation
        key = "head.1.conv_0.weight" if net == "generator" else "body.0.conv1.conv2d.bias"
        state[key] = torch.zeros(1)
    else:
        key = "img_out.bias" if net == "generator" else "out_mask_conv.conv2d.bias"
        state[key] = torch.zeros(7)
    torch.save(state, path)
    with pytest.raises(WeightsError, match=needle) as info:
        load_psfrgan(generator, extra=(parser,))
    assert "\n" not in str(info.value) and path.name in str(info.value)


def test_low_precision_on_cpu_is_close_to_fp32(tmp_path):
    generator, parser = _tiny(tmp_path)
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    ref_model = load_psfrgan(generator, extra=(parser,))
    with torch.inference_mode():
        logits = ref_model.parser.logits(x)
        # The same parsing for every dtype: a flipped near-tie label would change the output locally.
        onehot = (logits == logits.amax(1, keepdim=True)).float()
        ref = ref_model.generator(x, onehot)
        for dtype in (torch.float16, torch.bfloat16):
            model = load_psfrgan(generator, extra=(parser,), dtype=dtype)
            low_logits = model.parser.logits(x.to(dtype)).float()
            y = model.generator(x.to(dtype), onehot.to(dtype)).float()
            assert low_logits.isfinite().all() and y.isfinite().all()
            assert (low_logits - logits).abs().mean() < 0.05 * logits.abs().mean(), dtype
            assert (y - ref).abs().mean() < 0.05 * ref.abs().mean(), dtype


def test_registry_entry_and_weight_files():
    spec = models.get_model("psfrgan")
    assert spec.licence == "CC BY-NC-SA 4.0" and spec.face_size == 512
    assert spec.input_range == spec.output_range == (-1.0, 1.0) and spec.channels == "RGB"
    assert (spec.weights, spec.extra_weights) == ("psfrgan", ("psfrgan-parsenet",))
    for name, filename in (
        ("psfrgan", "psfrgan_epoch15_net_G.pth"),
        ("psfrgan-parsenet", "parse_multi_iter_90000.pth"),
    ):
        entry = weights.get_spec(name)
        assert entry.url == f"https://github.com/chaofengc/PSFRGAN/releases/download/v0.1.0/{filename}"
        assert entry.filename == filename and entry.size is None and entry.sha256 is None


def test_a_missing_parser_file_is_one_line(tmp_path, offline, capsys):
    generator, parser = _tiny(tmp_path)
    parser.unlink()
    clip = make_clip(tmp_path / "in.mp4", seconds=0.25)
    code = main(
        ["restore", str(clip.path), "-o", str(tmp_path / "out.mp4"), "--model", "psfrgan"]
        + ["--weights", str(generator), "--detector", "centerface", "--quiet"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 3 and "\n" not in err and "parse_multi_iter_90000.pth" in err


def test_restore_end_to_end(tmp_path, offline, capsys):
    """``vidrestore restore --model psfrgan``: generator by --weights, its parser found in --weights-dir."""
    generator, parser = _tiny(tmp_path)
    clip = make_clip(tmp_path / "in.mp4", seconds=0.5)
    out = tmp_path / "out.mp4"
    code = main(
        ["restore", str(clip.path), "-o", str(out), "--model", "psfrgan", "--weights", str(generator)]
        + ["--weights-dir", str(parser.parent), "--detector", "centerface", "--face-batch", "2", "--quiet"]
    )
    assert code == 0, capsys.readouterr().err
    with av.open(str(out)) as c:
        assert sum(1 for _ in c.decode(video=0)) == clip.frames
    r = FaceRestorer(
        EngineOptions(model="psfrgan", weights=generator, weights_dir=parser.parent, detector="centerface"),
        progress=False,
    )
    assert isinstance(r.model, PSFRGAN) and r.face_size == 64


def test_image_command_python_api_and_vapoursynth_filter(tmp_path, offline, astronaut, capsys):
    """The other front ends take ``psfrgan`` by name the same way: image jobs, restore_video, the filter."""
    generator, parser = _tiny(tmp_path)
    both = {"model": "psfrgan", "weights": generator, "weights_dir": parser.parent, "detector": "centerface"}
    write_image(tmp_path / "in.png", astronaut)
    code = main(
        ["image", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--model", "psfrgan"]
        + ["--weights", str(generator), "--weights-dir", str(parser.parent), "--detector", "centerface", "-q"]
    )
    assert code == 0, capsys.readouterr().err
    restored = read_image(tmp_path / "out.png")
    assert restored.shape == astronaut.shape and (restored != astronaut).any()

    clip = make_clip(tmp_path / "in.mp4", seconds=0.25)
    report = vidrestore.restore_video(clip.path, tmp_path / "api.mp4", progress=False, **both)
    assert report.frames == clip.frames and report.faces > 0

    pytest.importorskip("vapoursynth")
    from test_vapoursynth import frames_clip, planes
    from vidrestore.plugins.vapoursynth import restore

    frame = render(160, 120, face_path(160, 120, 1)[0])
    out = restore(frames_clip([frame]), device="cpu", **{k: str(v) for k, v in both.items()}).get_frame(0)
    got = planes(out).transpose(1, 2, 0)
    assert got.shape == frame.shape and (got != frame).any()


def test_parsenet_is_facexlibs_parsenet(tmp_path):
    """facexlib's ParseNet (the paste-back masks' file) is the same network: its state dict loads strictly,
    widths read off it, and the logits are bit-identical (a small configuration, for speed)."""
    from facexlib.parsing.parsenet import ParseNet as FacexlibParseNet

    torch.manual_seed(0)
    theirs = FacexlibParseNet(64, 64, min_feat_size=16, base_ch=8, res_depth=2, ch_range=[8, 16]).eval()
    torch.save(theirs.state_dict(), tmp_path / "parsing_parsenet.pth")
    ours = load_parsenet(tmp_path / "parsing_parsenet.pth")
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(ours.logits(x), theirs(x)[0])
