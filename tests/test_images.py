import errno
import os
from pathlib import Path

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
@pytest.mark.parametrize("keep", [0.5, 0.002])  # 0.2 %: so little that OpenCV decodes nothing at all
def test_truncated_files_are_rejected(tmp_path, astronaut, suffix, keep):
    ok, buf = cv2.imencode(suffix, astronaut)
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(buf.tobytes()[: int(len(buf) * keep)])
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


def test_write_into_missing_directory_is_one_clear_error(tmp_path):
    dst = tmp_path / "missing-dir" / "x.png"
    with pytest.raises(VidrestoreError) as info:
        write_image(dst, np.zeros((4, 4, 3), np.uint8))
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{dst}: cannot write to {dst.parent} (")


def _temp_files(directory):
    """The temporary files atomic_write_bytes makes beside its target: ".<name>.<random>.part"."""
    return [p for p in directory.iterdir() if p.name.startswith(".") and p.name.endswith(".part")]


@pytest.mark.parametrize("existing", [False, True], ids=["new", "overwrite"])
def test_failed_rename_removes_the_temporary_file(tmp_path, monkeypatch, existing):
    """The encoded image is wholly written to the temporary file, then the rename onto the target fails."""
    dst = tmp_path / "x.png"
    if existing:
        dst.write_bytes(b"the previous output")
    temps = []
    real_replace = os.replace

    def failing_replace(src, target):
        if os.fspath(target) != os.fspath(dst):
            return real_replace(src, target)
        temps.append(Path(src))
        # The data is in the temporary file; only the rename is left.
        assert _temp_files(tmp_path) == [Path(src)] and Path(src).stat().st_size > 0
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(VidrestoreError) as info:
        write_image(dst, np.zeros((4, 4, 3), np.uint8))
    monkeypatch.undo()

    assert len(temps) == 1 and not temps[0].exists()
    if existing:
        assert list(tmp_path.iterdir()) == [dst]
        assert dst.read_bytes() == b"the previous output"  # the old file is untouched, never half-replaced
    else:
        assert list(tmp_path.iterdir()) == []
    assert str(info.value) == f"{dst}: cannot write (Permission denied)"  # one line, no traceback text


class _FailingFile:
    """Stands in for the temporary file: takes the first bytes of a write, then raises ``error``."""

    def __init__(self, f, error):
        self.f, self.error = f, error

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, data):
        self.f.write(bytes(data)[:10])
        self.f.flush()
        raise self.error


@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()],
    ids=["disk-full", "interrupted"],
)
def test_failed_write_removes_the_partial_temporary_file(tmp_path, monkeypatch, error):
    dst = tmp_path / "x.png"
    written = []
    real_fdopen = os.fdopen

    def fdopen(fd, mode="r", *args, **kwargs):
        f = real_fdopen(fd, mode, *args, **kwargs)
        if mode != "wb":
            return f
        written.extend(_temp_files(tmp_path))  # mkstemp has made it; the data has yet to come
        return _FailingFile(f, error)

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(VidrestoreError if isinstance(error, OSError) else KeyboardInterrupt) as info:
        write_image(dst, np.zeros((4, 4, 3), np.uint8))
    monkeypatch.undo()

    assert len(written) == 1 and not written[0].exists()  # it existed, and was written to, before the failure
    assert list(tmp_path.iterdir()) == []  # neither the partial temporary file nor a final file is left
    if isinstance(error, OSError):
        assert str(info.value) == f"{dst}: cannot write (No space left on device)"
    else:
        assert info.value is error  # not an OSError: passed on unchanged, after the clean-up
