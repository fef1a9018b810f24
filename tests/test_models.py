"""The model registry: what ``vidrestore models`` shows, how names resolve, and that a new network needs an
architecture, a registry entry and nothing else: the CLI, the API and the filter take it by name."""

from __future__ import annotations

import os
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
from vidrestore.options import EngineOptions


def test_models_lists_every_network_with_file_size_licence_and_use(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for spec in models.MODELS.values():
        file = weights.get_spec(spec.weights)
        assert spec.name in out and spec.summary in out and spec.licence in out
        size = f"{file.size / 1e6:.0f} MB" if file.size else "size unknown"
        assert f"{file.filename}, {size}" in out


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
