"""Grain matching (faces/grain.py): the estimator, the grain drawn from it, determinism, and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from clips import face_path, render

from vidrestore.cli import main
from vidrestore.evaluation.clips import add_film_grain
from vidrestore.faces.alignment import sampling_grid
from vidrestore.faces.film import FilmContext, FilmState
from vidrestore.faces.grain import Grain, draw_grain, fine_levels, fit_grain, match_grain, measure_around
from vidrestore.options import EngineOptions, OptionError

S = 64
# A 64 crop over the frame's middle 128 px (half a crop pixel per frame pixel), and over its middle 32 px
# (two crop pixels per frame pixel, as for a 512 network's usual faces).
AFFINE = np.array([[0.5, 0.0, -0.5 * 96], [0.0, 0.5, -0.5 * 64]])
CLOSE = np.array([[2.0, 0.0, -2.0 * 144], [0.0, 2.0, -2.0 * 112]])


def _grainy(level: float, size: float, seed: int = 1) -> torch.Tensor:
    grain = Grain(np.full(3, level), np.full(3, size), np.eye(3), np.zeros(3))
    return 0.5 + draw_grain(grain, 256, 320, torch.Generator().manual_seed(seed))[0]


@pytest.mark.parametrize("size", [0.0, 0.6, 1.2])
def test_the_estimator_recovers_a_known_grain(size):
    level = 0.03
    high, mid, corr = measure_around(_grainy(level, size), AFFINE, S)
    fit = fit_grain(high, mid, corr)
    np.testing.assert_allclose(fit.level, level, rtol=0.15)
    np.testing.assert_allclose(fit.size, size, atol=0.15 * max(size, 1))
    np.testing.assert_allclose(corr, np.eye(3), atol=0.1)


def test_the_film_grain_generator_is_fresh_per_frame_and_reproducible():
    flat = np.full((2, 96, 96, 3), 128, np.uint8)
    grainy = add_film_grain(flat, 6.0, seed=3)
    assert np.array_equal(grainy, add_film_grain(flat, 6.0, seed=3))
    assert not np.array_equal(grainy[0], grainy[1])
    np.testing.assert_allclose(grainy.reshape(2, -1, 3).astype(float).std(axis=1), 6.0, rtol=0.15)
    frame = torch.from_numpy(grainy[0]).permute(2, 0, 1).float() / 255
    fit = fit_grain(*measure_around(frame, np.array([[1.0, 0, -16], [0, 1, -16]]), S))
    np.testing.assert_allclose(fit.size, 0.8, atol=0.15)  # the generator's grain size
    assert 0.6 < fit.corr[0, 1] < 0.85  # channels share most of their grain


def _match(frames: torch.Tensor, restored: torch.Tensor, setting="auto", state=None) -> torch.Tensor:
    n = len(frames)
    context = FilmContext(np.zeros(n, np.int64), np.zeros(n, np.int64), np.arange(n), state or FilmState())
    affines = np.repeat(CLOSE[None], n, axis=0)
    return match_grain(restored.clone(), frames, np.arange(n), affines, context, setting)


def _pasted(crops: torch.Tensor) -> torch.Tensor:
    """The crops at the 32 x 32 frame pixels they cover, as paste-back samples them."""
    grid = sampling_grid(np.array([[[2.0, 0, 0], [0, 2.0, 0]]]), (32, 32), (S, S), crops.device)
    return F.grid_sample(crops, grid.expand(len(crops), -1, -1, -1), align_corners=False)


def test_grain_is_deterministic_fresh_per_frame_and_tops_up_to_the_film():
    frames = torch.stack([_grainy(0.03, 0.6, seed) for seed in (1, 1, 2)])
    clean = torch.full((3, 3, S, S), 0.5)
    state = FilmState()
    out = _match(frames, clean, state=state)
    assert torch.equal(out[0], out[1])  # same source, same grain
    assert not torch.equal(out[0], out[2])  # the next frame's film, fresh grain
    assert torch.equal(out, _match(frames, clean))  # and again on a rerun
    # Pasted back (sampled at the frame's pixels), the face carries the film's fine grain.
    film = fine_levels(frames[:, :, 112:144, 144:176], 1.0)
    np.testing.assert_allclose(fine_levels(_pasted(out), 1.0), film, rtol=0.2)
    report = state.report["grain"]
    assert report["faces_grained"] == 3 and report["grain_size_px"] == pytest.approx([0.6] * 3, abs=0.1)
    # A face already about as grainy as the film gets little more; off and 0 add nothing.
    assert (_match(frames, out) - out).std() < 0.4 * (out - clean).std()
    assert torch.equal(_match(frames, clean, "off"), clean)
    assert torch.equal(_match(frames, clean, 0.0), clean)
    assert fine_levels(_pasted(_match(frames, clean, 2.0)), 1.0).mean() > 1.7 * film.mean()


def test_grain_setting_is_checked():
    assert EngineOptions(grain="0.5").grain == 0.5 and EngineOptions().grain == "auto"
    with pytest.raises(OptionError, match="grain must be auto, off or a number of at least 0"):
        EngineOptions(grain="loud")


def _grainy_clip(path: Path, frames: int = 4) -> None:
    """A lossless clip of the moving face with film grain over it."""
    boxes = face_path(160, 120, frames)
    pictures = add_film_grain(np.stack([render(160, 120, b) for b in boxes]), 8.0, seed=5)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=24)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "bgr0"
        for picture in pictures:
            out.mux(
                stream.encode(av.VideoFrame.from_ndarray(picture, format="rgb24").reformat(format="bgr0"))
            )
        out.mux(stream.encode(None))


def test_cli_matches_the_grain_and_reports_it(tmp_path, tiny_checkpoint, offline):
    _grainy_clip(tmp_path / "in.mkv")
    args = ["restore", str(tmp_path / "in.mkv"), "-o", str(tmp_path / "out.mkv"), "--codec", "ffv1"]
    args += [
        "--weights",
        tiny_checkpoint,
        "--detector",
        "centerface",
        "-q",
        "--report",
        str(tmp_path / "r.json"),
    ]
    assert main([*args, "--grain", "auto"]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    grain = report["film"]["grain"]
    assert report["settings"]["grain"] == "auto" and grain["faces_grained"] == report["faces"] > 0
    assert all(level > 2 for level in grain["film_noise"])  # 8-code grain (and the face patch's texture)
