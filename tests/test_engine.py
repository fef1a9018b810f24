"""The engine on batches of frames: batching changes nothing, masks and parsing work, options are checked."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from vidrestore import weights
from vidrestore.engine import FaceRestorer
from vidrestore.errors import VidrestoreError
from vidrestore.models import model_names
from vidrestore.options import EngineOptions, ImageOptions


def _frames(*imgs: np.ndarray) -> torch.Tensor:
    return torch.stack([torch.from_numpy(i).permute(2, 0, 1).float() / 255 for i in imgs])


@pytest.fixture(scope="module")
def restorer(tiny_checkpoint) -> FaceRestorer:
    return FaceRestorer(
        EngineOptions(weights=tiny_checkpoint, detector="centerface", face_batch=2), progress=False
    )


def test_a_batch_of_frames_equals_frames_one_by_one(restorer, astronaut):
    half = astronaut[::2, ::2]
    two_faces = np.full_like(astronaut, 128)
    two_faces[:256] = np.concatenate([half, half[:, ::-1]], axis=1)
    frames = [astronaut, two_faces, np.zeros_like(astronaut)]
    batched, found, changed = restorer.restore(_frames(*frames))
    assert [len(f) for f in found] == [1, 2, 0]  # 3 faces in one model batch of 2 + 1
    for i, frame in enumerate(frames):
        single, _, single_changed = restorer.restore(_frames(frame))
        torch.testing.assert_close(batched[i : i + 1], single, atol=1e-5, rtol=0)
        assert torch.equal(changed[i : i + 1], single_changed)
    assert torch.equal(batched[2], _frames(frames[2])[0]) and not changed[2].any()  # no face: untouched
    # Every pixel the paste moved is inside the changed mask.
    moved = (batched - _frames(*frames)).abs().amax(dim=1) > 0
    assert not (moved & ~changed).any() and changed[0].sum() > 1000


def test_same_input_same_output(restorer, astronaut):
    a = restorer.restore(_frames(astronaut)).frames
    b = restorer.restore(_frames(astronaut)).frames
    assert torch.equal(a, b)


def test_parse_mask_path(tiny_checkpoint, astronaut, tmp_path, monkeypatch):
    """ParseNet, loaded from a random checkpoint in the official layout, gives the paste mask."""
    from facexlib.parsing.parsenet import ParseNet

    torch.manual_seed(0)
    torch.save(ParseNet(in_size=512, out_size=512, parsing_ch=19).state_dict(), tmp_path / "parsenet.pth")
    real_resolve = weights.resolve
    monkeypatch.setattr(
        weights,
        "resolve",
        lambda name, **kw: tmp_path / "parsenet.pth" if name == "parsenet" else real_resolve(name, **kw),
    )
    r = FaceRestorer(
        EngineOptions(weights=tiny_checkpoint, detector="centerface", parse=True), progress=False
    )
    crops = torch.rand(2, 3, 64, 64)
    mask = r.parser.mask(crops)
    assert mask.shape == (2, 1, 64, 64) and mask.min() >= 0 and mask.max() <= 1
    out, found, _ = r.restore(_frames(astronaut))
    assert len(found[0]) == 1 and out.shape == (1, 3, 512, 512)


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("fidelity", -0.1, "fidelity must be from 0 to 1, not -0.1"),
        ("fidelity", "0.5", "fidelity must be a number, not '0.5'"),
        ("face_batch", 0, "face_batch must be at least 1, not 0"),
        ("model", "v9", f"model must be one of {', '.join(model_names())}, not 'v9'"),
        ("detector", "haar", "haar"),
        ("dtype", "int8", "int8"),
        ("device", "tpu", "tpu"),
    ],
)
def test_bad_options_are_user_errors(tiny_checkpoint, field, value, needle):
    with pytest.raises(VidrestoreError, match=re.escape(needle)):
        FaceRestorer(
            EngineOptions(**{"weights": tiny_checkpoint, "detector": "centerface", field: value}),
            progress=False,
        )


def test_upscale_belongs_to_still_images():
    with pytest.raises(VidrestoreError, match="upscale must be from 1 to 8, not 0"):
        ImageOptions(upscale=0)


def test_out_of_memory_halves_the_batch_and_retries(tiny_checkpoint, astronaut):
    r = FaceRestorer(
        EngineOptions(weights=tiny_checkpoint, detector="centerface", face_batch=8), progress=False
    )
    model, calls = r.model, []

    def small_gpu(x, **kw):
        calls.append(len(x))
        if len(x) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return model(x, **kw)

    r.model = small_gpu
    crops = torch.rand(5, 3, 64, 64)
    out = r.restore_faces(crops)
    assert calls == [5, 4, 2, 2, 1] and r.batch_size == 2
    r.model = model
    torch.testing.assert_close(out, r.restore_faces(crops))


def test_the_kernel_choice_travels_in_the_engine_options(tiny_checkpoint):
    """``kernels`` reaches every modulated conv of the loaded model; the two impls agree (Triton through its
    interpreter on the CPU, an explicit request that changes no environment variable)."""
    import os

    before = dict(os.environ)
    engines = {
        impl: FaceRestorer(
            EngineOptions(weights=tiny_checkpoint, detector="centerface", kernels=impl), progress=False
        )
        for impl in ("torch", "triton")
    }
    for impl, engine in engines.items():
        impls = {m.kernel_impl for m in engine.model.modules() if hasattr(m, "kernel_impl")}
        assert impls == {impl}
    crops = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        engines["triton"].restore_faces(crops), engines["torch"].restore_faces(crops), atol=1e-4, rtol=0
    )
    for name in ("TRITON_INTERPRET", "VIDRESTORE_TRITON"):  # (torch's own caches may set TORCHINDUCTOR_*)
        assert os.environ.get(name) == before.get(name)
