"""The model registry: what ``vidrestore models`` shows, how names resolve, and that a new network needs an
architecture, a registry entry and nothing else: the CLI, the API and the filter take it by name."""

from __future__ import annotations

import dataclasses
import importlib
import os
import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import vidrestore
from vidrestore import models, weights
from vidrestore.cli import main
from vidrestore.engine import FaceRestorer
from vidrestore.errors import VidrestoreError
from vidrestore.io.images import read_image, write_image
from vidrestore.models import licence, speeds
from vidrestore.options import EngineOptions


def test_models_lists_every_network_with_file_size_licence_and_use(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for spec in models.MODELS.values():
        file = weights.get_spec(spec.weights)
        assert spec.name in out and spec.summary in out and spec.licence in out
        size = f"{file.size / 1e6:.0f} MB" if file.size else "size unknown"
        assert f"{file.filename}, {size}" in out


def test_the_listing_shows_each_measured_speed_and_when_and_where_it_was_measured(
    capsys, monkeypatch, tmp_path
):
    table = tmp_path / "speeds.json"
    speeds.write_speeds(speeds.Speeds({"codeformer": 12.34}, "2026-12-01 on a test CPU"), table)
    monkeypatch.setattr(speeds, "SPEEDS_FILE", table)
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split(":")[0].split()[0]: next_line for line, next_line in pairwise(lines)}
    assert "CPU 12.3 s/face" in rows["codeformer"] and "non-commercial use only" in rows["codeformer"]
    assert "CPU unmeasured" in rows["gfpgan-v1.4"] and "non-commercial" not in rows["gfpgan-v1.4"]
    assert lines[-1].endswith("measured 2026-12-01 on a test CPU")

    monkeypatch.setattr(speeds, "SPEEDS_FILE", tmp_path / "absent.json")
    assert main(["models"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("not measured yet")


def test_the_shipped_speed_table_names_only_registry_models():
    table = speeds.read_speeds()
    assert set(table.cpu_s_per_face) <= set(models.MODELS)
    assert all(seconds > 0 for seconds in table.cpu_s_per_face.values())


def test_non_commercial_models_are_marked_in_the_registry():
    flagged = {name for name, spec in models.MODELS.items() if spec.non_commercial}
    assert {"psfrgan", "codeformer"} <= flagged and "gfpgan-v1.4" not in flagged
    assert licence.licence_notice(models.get_model("gfpgan-v1.4")) is None
    line = licence.licence_notice(models.get_model("psfrgan"))
    assert "CC BY-NC-SA 4.0" in line and "non-commercial use only" in line and "\n" not in line


def test_the_registry_imports_no_architecture_until_a_model_is_loaded():
    """Every loader names a function that exists, and listing the models imports none of their modules."""
    for spec in models.MODELS.values():
        module, _, function = spec.load.__qualname__.rpartition(".")
        assert module.startswith("vidrestore.models."), f"{spec.name}: load=_lazy(module, function)"
        assert callable(getattr(importlib.import_module(module), function)), spec.name
    heavy = sorted({spec.load.__qualname__.rpartition(".")[0] for spec in models.MODELS.values()})
    code = (
        "import sys, contextlib, io\n"
        "from vidrestore.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['models']) == 0\n"
        f"print([m for m in {heavy!r} if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_names_resolve_through_the_registry():
    assert models.get_model("v1.4") is models.get_model("gfpgan-v1.4")
    assert models.get_model("gfpgan-v1.3").weights == "gfpgan-v1.3"
    with pytest.raises(VidrestoreError, match="unknown model 'no-such-model'; choose one of: gfpgan-v1.4"):
        models.get_model("no-such-model")


class _Negative(nn.Module):
    """A stand-in network with conventions unlike GFP-GAN's: [0, 1] in and out, 32 px, a control."""

    face_size = 32

    def __init__(self) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor, randomize_noise: bool = False) -> torch.Tensor:
        assert x.shape[1:] == (3, 32, 32) and x.min() > -0.01 and not randomize_noise  # [0, 1], not [-1, 1]
        return self.gain - x


def _load_negative(path: str | os.PathLike[str], *, device, dtype, config) -> _Negative:
    model = _Negative()
    model.load_state_dict(torch.load(path, weights_only=True), strict=True)
    return model.to(device, dtype)


@pytest.fixture
def negative(monkeypatch, tmp_path) -> Path:
    """The stand-in registered as 'negative', and its checkpoint."""
    spec = models.ModelSpec(
        name="negative",
        summary="test stand-in",
        arch="_Negative",
        weights="gfpgan-v1.4",
        licence="none",
        load=_load_negative,
        face_size=32,
        template=models.FFHQ_TEMPLATE_512 / 16,
        input_range=(0.0, 1.0),
        output_range=(0.0, 1.0),
        controls=("randomize_noise",),
    )
    monkeypatch.setitem(models.MODELS, "negative", spec)
    path = tmp_path / "negative.pth"
    torch.save(_Negative().state_dict(), path)
    return path


def _between_the_eyes(img: np.ndarray) -> float:
    return float(img[95:115, 215:235].astype(np.float64).mean())


def test_a_new_network_runs_from_every_front_end_by_name(negative, tmp_path, astronaut, offline):
    src, dst = tmp_path / "a.png", tmp_path / "b.png"
    write_image(src, astronaut)
    args = ["image", str(src), "-o", str(dst), "--model", "negative", "--weights", str(negative)]
    assert main([*args, "--detector", "centerface", "-q"]) == 0
    before, after = _between_the_eyes(astronaut), _between_the_eyes(read_image(dst))
    assert abs(after - (255 - before)) < 25  # the face was pasted back negated: the network's output range

    engine = FaceRestorer(
        EngineOptions(model="negative", weights=negative, detector="centerface"), progress=False
    )
    assert engine.face_size == 32 and engine.controls == {"randomize_noise": False}

    from clips import make_clip

    spec = make_clip(tmp_path / "in.mp4", seconds=0.5, audio=False)
    report = vidrestore.restore_video(
        spec.path,
        tmp_path / "out.mp4",
        model="negative",
        weights=negative,
        detector="centerface",
        progress=False,
    )
    assert report.faces > 0 and report.settings["model"] == "negative"

    vs = pytest.importorskip("vapoursynth")
    from vidrestore.plugins.vapoursynth import restore

    clip = vs.core.std.BlankClip(format=vs.RGB24, width=64, height=48, length=2)
    out = restore(clip, model="negative", weights=str(negative), detector="centerface", device="cpu")
    assert out.get_frame(0).props["VidrestoreFaces"] == 0


def test_a_non_commercial_licence_is_said_once_per_machine_when_the_model_is_loaded(
    negative, monkeypatch, tmp_path, capsys
):
    monkeypatch.setenv("VIDRESTORE_HOME", str(tmp_path / "home"))
    spec = models.MODELS["negative"]
    monkeypatch.setitem(
        models.MODELS, "negative", dataclasses.replace(spec, licence="CC BY-NC-SA 4.0", non_commercial=True)
    )
    options = EngineOptions(model="negative", weights=negative, detector="centerface")
    FaceRestorer(options, progress=False, load_model=False)  # not used: nothing said
    assert capsys.readouterr().err == ""
    for _ in range(2):
        FaceRestorer(options, progress=False)
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "vidrestore: note: model negative is under CC BY-NC-SA 4.0: non-commercial use only "
        "(shown once; see 'vidrestore models')"
    ]
    assert (tmp_path / "home" / "licences" / "negative.shown").exists()

    monkeypatch.setenv("VIDRESTORE_HOME", str(tmp_path / "other-machine"))
    FaceRestorer(options, progress=False)
    assert len(capsys.readouterr().err.splitlines()) == 1
