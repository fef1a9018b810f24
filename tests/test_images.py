import cv2
import numpy as np
import pytest
import torch

from vidrestore.errors import VidrestoreError
from vidrestore.io.images import image_to_tensor, read_image, tensor_to_image, write_image


@pytest.mark.parametrize(
    "shape,dtype",
    [
        ((20, 30), np.uint8),
        ((20, 30, 3), np.uint8),
        ((20, 30, 4), np.uint8),
        ((20, 30, 3), np.uint16),
        ((20, 30), np.uint16),
    ],
)
def test_round_trip_keeps_layout_and_depth(tmp_path, shape, dtype):
    rng = np.random.default_rng(0)
    img = rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype, endpoint=True)
    path = tmp_path / "x.png"
    write_image(path, img)
    back = read_image(path)
    np.testing.assert_array_equal(back, img)
    t, layout = image_to_tensor(back, torch.device("cpu"))
    assert t.shape == (1, 3, 20, 30) and t.dtype == torch.float32
    again = tensor_to_image(t, layout, back)
    if len(shape) == 2:
        assert np.abs(again.astype(int) - img.astype(int)).max() <= 1
    else:
        np.testing.assert_array_equal(again, img)


def test_rgb_channel_order(tmp_path):
    img = np.zeros((4, 4, 3), np.uint8)
    img[..., 0] = 255  # red
    write_image(tmp_path / "r.png", img)
    assert cv2.imread(str(tmp_path / "r.png"))[0, 0].tolist() == [0, 0, 255]  # OpenCV's BGR on disk
    assert read_image(tmp_path / "r.png")[0, 0].tolist() == [255, 0, 0]


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_files_are_rejected(tmp_path, astronaut, suffix):
    ok, buf = cv2.imencode(suffix, astronaut)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(buf.tobytes()[: len(buf) // 2])
    with pytest.raises(VidrestoreError, match="truncated"):
        read_image(path)


def test_non_images_are_rejected(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello, not a picture")
    with pytest.raises(VidrestoreError, match="empty"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(VidrestoreError, match="not an image"):
        read_image(tmp_path / "text.jpg")
    with pytest.raises(VidrestoreError, match="no such file"):
        read_image(tmp_path / "missing.png")


def test_write_leaves_no_partial_file_on_failure(tmp_path):
    with pytest.raises(VidrestoreError):
        write_image(tmp_path / "missing-dir" / "x.png", np.zeros((4, 4, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
