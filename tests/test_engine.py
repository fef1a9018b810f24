"""The engine on batches of frames: batching changes nothing, masks and parsing work, options are checked."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from vidrestore import weights
from vidrestore.engine import FaceRestorer, on_device, resolve_device, resolve_dtype, set_tf32
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
    from vidrestore.models.parsenet import ParseNet, ParseNetConfig

    torch.manual_seed(0)  # a narrow ParseNet: the official widths take a minute per face on a loaded CPU
    config = ParseNetConfig(encoder=(8, 16, 16), res_depth=1, decoder=(16, 8))
    torch.save(ParseNet(config).state_dict(), tmp_path / "parsenet.pth")
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
    # ParseNet segments the restored face, as the official pipeline does, not the degraded crop.
    parsed, parse = [], r.parser.mask
    monkeypatch.setattr(r.parser, "mask", lambda faces: parsed.append(faces) or parse(faces))
    monkeypatch.setattr(r, "restore_faces", lambda inputs: torch.full_like(inputs, 0.25))
    out, found, _ = r.restore(_frames(astronaut))
    assert len(found[0]) == 1 and out.shape == (1, 3, 512, 512)
    assert len(parsed) == 1 and bool((parsed[0] == 0.25).all())


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("fidelity", -0.1, "fidelity must be from 0 to 1, not -0.1"),
        ("fidelity", "0.5", "fidelity must be a number, not '0.5'"),
        ("face_batch", 0, "face_batch must be at least 1, not 0"),
        ("model", "v9", f"model must be one of {', '.join(model_names())}, auto, not 'v9'"),
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


@pytest.fixture
def fake_gpus(monkeypatch):
    """torch.cuda as it looks with GPUs of the given compute capabilities (GPU 0 current); returns the list
    of device indices whose capability was asked."""

    def install(*capabilities: tuple[int, int]) -> list[int]:
        asked: list[int] = []

        def capability(device: torch.device | int | None = None) -> tuple[int, int]:
            index = device if isinstance(device, int) else getattr(device, "index", None)
            asked.append(index)
            return capabilities[0 if index is None else index]

        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(capabilities))
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_capability", capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"GPU {device.index}")
        return asked

    return install


def test_auto_dtype_is_bf16_only_where_the_requested_gpu_has_it(fake_gpus):
    """sm_80+ native bf16; V100 (7.0) and T4 (7.5) get fp16, whatever torch.cuda.is_bf16_supported says."""
    asked = fake_gpus((7, 0), (8, 6), (7, 5), (9, 0))
    gpus = [torch.device("cuda", i) for i in range(4)]
    assert [resolve_dtype("auto", d) for d in gpus] == [
        torch.float16,
        torch.bfloat16,
        torch.float16,
        torch.bfloat16,
    ]
    assert asked == [0, 1, 2, 3]  # each GPU's own capability, not the current device's
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert [resolve_dtype(n, gpus[3]) for n in ("fp32", "fp16", "bf16")] == [
        torch.float32,
        torch.float16,
        torch.bfloat16,
    ]
    assert resolve_dtype("fp16", gpus[0]) == torch.float16
    with pytest.raises(
        VidrestoreError, match=r"bf16 needs a GPU of compute capability 8\.0 .* cuda:2 is 7\.5"
    ):
        resolve_dtype("bf16", gpus[2])


def test_a_cuda_device_is_always_named_by_its_index(fake_gpus):
    """'cuda' and 'auto' become the current GPU's index, so every guard and query names one GPU."""
    fake_gpus((8, 0), (8, 0))
    assert [resolve_device(n) for n in ("auto", "cuda", "cuda:1")] == [
        torch.device("cuda", 0),
        torch.device("cuda", 0),
        torch.device("cuda", 1),
    ]
    with pytest.raises(VidrestoreError, match="'cuda:2' does not exist: 2 CUDA GPU"):
        resolve_device("cuda:2")
    guard = on_device(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    assert not isinstance(on_device(torch.device("cpu")), torch.cuda.device)


def test_versions_name_the_requested_gpu(fake_gpus):
    from vidrestore.pipeline import versions

    fake_gpus((7, 5), (9, 0))
    assert versions(torch.device("cuda", 1))["gpu"] == "GPU 1"
    assert versions(torch.device("cuda", 1))["gpu_capability"] == "9.0"
    assert versions()["gpu"] == "GPU 0"  # no device given: the current one
    assert "gpu" not in versions(torch.device("cpu"))


def test_the_filters_engine_thread_runs_on_the_engines_gpu(monkeypatch):
    vapoursynth = pytest.importorskip("vidrestore.plugins.vapoursynth")
    bound: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "set_device", bound.append)
    vapoursynth._bind(SimpleNamespace(device=torch.device("cuda", 1)))
    vapoursynth._bind(SimpleNamespace(device=torch.device("cpu")))
    assert bound == [torch.device("cuda", 1)]


def test_tf32_policy_follows_the_dtype():
    """fp32 means IEEE fp32 in every CUDA matmul and conv; TF32 is allowed beside a 16-bit model. (The
    conftest fixture puts the flags back.)"""
    for dtype, allowed in ((torch.bfloat16, True), (torch.float32, False), (torch.float16, True)):
        set_tf32(dtype)
        flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        assert flags == (allowed, allowed)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_an_engine_on_the_last_gpu_from_a_new_thread(tiny_checkpoint):
    """A fresh thread starts on GPU 0: the engine's guard runs the fused kernels on its own GPU, in fp32 with
    TF32 off, and they agree with the CPU reference."""
    from concurrent.futures import ThreadPoolExecutor

    last = f"cuda:{torch.cuda.device_count() - 1}"
    options = {"weights": tiny_checkpoint, "detector": "centerface", "dtype": "fp32"}
    gpu = FaceRestorer(EngineOptions(**options, device=last, kernels="triton"), progress=False)
    assert gpu.device == torch.device(last) and gpu.dtype == torch.float32
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    cpu = FaceRestorer(EngineOptions(**options, device="cpu", kernels="torch"), progress=False)
    crops = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with ThreadPoolExecutor(1) as pool:
        out = pool.submit(gpu.restore_faces, crops.to(gpu.device)).result()
    torch.testing.assert_close(out.cpu(), cpu.restore_faces(crops), atol=1e-4, rtol=0)
