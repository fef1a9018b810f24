"""Texture stabilisation along a track (faces/texture.py): on tensors, and once through the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from clips import make_clip

from vidrestore.cli import main
from vidrestore.faces.film import FilmContext, FilmState
from vidrestore.faces.texture import MOVED, stabilise_texture

SIZE = 64


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """These tensors are tiny: one thread, not an OpenMP team that spins on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def face(seed: int) -> torch.Tensor:
    """A textured (3, S, S) picture: smooth blobs at the scale the motion test sees."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(coarse, size=SIZE, mode="bicubic", align_corners=False)[0]


def noise(frame: int, scale: float) -> torch.Tensor:
    return torch.randn(3, SIZE, SIZE, generator=torch.Generator().manual_seed(1000 + frame)) * scale


def run(
    crops: torch.Tensor,
    restored: torch.Tensor,
    *,
    batch: int = 4,
    shots: np.ndarray | None = None,
    window: int = 4,
) -> torch.Tensor:
    """One face per frame, one track, fed in batches of ``batch`` frames sharing one state."""
    state, out = FilmState(), []
    frames = len(crops)
    shots = np.zeros(frames, np.int64) if shots is None else shots
    for s in range(0, frames, batch):
        idx = np.arange(s, min(frames, s + batch))
        context = FilmContext(np.zeros(len(idx), np.int64), shots[idx], idx, state)
        out.append(stabilise_texture(restored[idx], crops[idx], np.arange(len(idx)), context, window))
    return torch.cat(out)


def shimmer(frames: torch.Tensor) -> float:
    return float((frames[1:] - frames[:-1]).abs().mean())


def test_a_still_face_shimmers_half_as_much_or_less():
    """A still source with a little noise; the network answers it with much more, fresh every frame."""
    still = face(0)
    crops = torch.stack([still + noise(t, 1 / 255) for t in range(12)])
    restored = torch.stack([still + noise(100 + t, 8 / 255) for t in range(12)])
    out = run(crops, restored)
    assert shimmer(out) <= 0.5 * shimmer(restored)
    assert torch.equal(out[0], restored[0])  # a new track starts from its own face


def test_a_moving_face_does_not_lag():
    """The source's lower half changes every frame (a mouth that speaks): there the output is the frame's
    own restored face; the upper half, still, is averaged."""
    frames = 10
    crops = torch.stack([face(0) for _ in range(frames)])
    for t in range(frames):
        crops[t, :, SIZE // 2 :] = face(t + 1)[:, SIZE // 2 :]  # each frame a different lower half
    restored = crops + torch.stack([noise(t, 4 / 255) for t in range(frames)])
    out = run(crops, restored)
    lower = slice(SIZE // 2 + 4, SIZE)  # past the one cell of dilation and the weights' interpolation
    assert float((out - restored)[:, :, lower].abs().max()) < 1e-6
    assert (
        float((out - restored)[1:, :, : SIZE // 2 - 4].abs().mean()) > 1 / 255
    )  # the still half is averaged
    assert MOVED < 16 / 255  # the lower halves differ by far more than the motion threshold


def test_a_cut_and_a_new_track_start_afresh():
    crops = torch.stack([face(0)] * 8)
    restored = torch.stack([face(0) + noise(t, 8 / 255) for t in range(8)])
    out = run(crops, restored, shots=np.array([0, 0, 0, 0, 0, 1, 1, 1]))
    assert torch.equal(out[5], restored[5])
    assert not torch.equal(out[6], restored[6])
    # Two tracks in one frame: each is averaged with its own past only.
    state = FilmState()
    pair = FilmContext(np.array([0, 1]), np.zeros(1, np.int64), np.zeros(1, np.int64), state)
    stabilise_texture(restored[:2], crops[:2], np.zeros(2, np.int64), pair, 4)
    later = FilmContext(np.array([2]), np.zeros(1, np.int64), np.ones(1, np.int64), state)
    assert torch.equal(
        stabilise_texture(restored[2:3], crops[2:3], np.zeros(1, np.int64), later, 4), restored[2:3]
    )


def test_same_result_whatever_the_batches_and_state_stays_bounded():
    crops = torch.stack([face(0) + noise(t, 2 / 255) for t in range(12)])
    restored = torch.stack([face(0) + noise(100 + t, 8 / 255) for t in range(12)])
    assert torch.equal(run(crops, restored, batch=2), run(crops, restored, batch=4))
    state = FilmState()
    for t in range(12):  # a new track every frame, each seen once
        context = FilmContext(np.array([t]), np.zeros(1, np.int64), np.array([t]), state)
        stabilise_texture(restored[t : t + 1], crops[t : t + 1], np.zeros(1, np.int64), context, 3)
    assert sorted(state.of("texture")) == [9, 10, 11]
    assert state.report["texture"]["faces"] == 12


def test_off_returns_the_restored_faces():
    restored = torch.rand(2, 3, SIZE, SIZE)
    context = FilmContext.still([])
    assert stabilise_texture(restored, restored, np.zeros(2, np.int64), context, 0) is restored


@pytest.mark.usefixtures("offline")
def test_cli_reports_the_averaging(tmp_path, tiny_checkpoint):
    spec = make_clip(tmp_path / "in.mp4", seconds=0.25, fps=48, audio=False)  # 12 frames, 8 px apart
    report = tmp_path / "run.json"
    args = ["restore", str(spec.path), "-o", str(tmp_path / "out.mp4"), "--weights", tiny_checkpoint, "-q"]
    args += [
        "--detector",
        "centerface",
        "--frame-batch",
        "4",
        "--texture-smooth",
        "3",
        "--report",
        str(report),
    ]
    assert main(args) == 0
    texture = json.loads(report.read_text())["film"]["texture"]
    assert texture["window"] == 3 and texture["faces"] >= 4
    assert 0 < texture["faces_averaged"] < texture["faces"]  # not a track's first face
    assert 1 < texture["mean_frames_averaged"] <= 4
