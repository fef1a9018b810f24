"""Still images in and out: 8/16-bit, grey, RGB and RGBA, checked for truncation, written atomically."""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from vidrestore.errors import VidrestoreError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
# Formats whose encoders keep 16 bits; others are written as 8-bit.
_SIXTEEN_BIT_SUFFIXES = frozenset({".png", ".tif", ".tiff"})


@dataclass(frozen=True)
class ImageLayout:
    """What the engine must restore on the way out: channel layout and bit depth of the input."""

    channels: int  # 1 (grey), 3 (RGB) or 4 (RGBA)
    dtype: np.dtype

    @property
    def max_value(self) -> float:
        return float(np.iinfo(self.dtype).max)


def read_image(path: Path) -> np.ndarray:
    """Decode an image file as (H, W) grey or (H, W, 3|4) RGB(A), uint8 or uint16.

    OpenCV decodes (it keeps 16 bits); Pillow checks the file is whole, because OpenCV returns a
    half-grey picture for a truncated JPEG instead of failing.
    """
    if not path.exists():
        raise VidrestoreError(f"{path}: no such file")
    if not path.is_file():
        raise VidrestoreError(f"{path}: not a file")
    data = path.read_bytes()
    if not data:
        raise VidrestoreError(f"{path}: the file is empty")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
    except UnidentifiedImageError:
        if img is None:
            raise VidrestoreError(f"{path}: not an image, or a format OpenCV cannot read") from None
        # else a format only OpenCV knows; its decode above is all we can check
    except (OSError, SyntaxError, ValueError) as exc:
        raise VidrestoreError(f"{path}: damaged or truncated image ({exc})") from None
    if img is None:
        raise VidrestoreError(f"{path}: an image format OpenCV cannot read (Pillow can: convert it to PNG)")
    if img.dtype not in (np.uint8, np.uint16):
        raise VidrestoreError(f"{path}: unsupported sample type {img.dtype} (8- and 16-bit images only)")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3:
        code = cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGB
        img = cv2.cvtColor(img, code)
    return img


def write_image(path: Path, img: np.ndarray) -> None:
    """Encode by the file's suffix into a temporary file beside it, then rename: never half-written."""
    if path.suffix.lower() not in _SIXTEEN_BIT_SUFFIXES and img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257).round().astype(np.uint8)
    if img.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if img.shape[2] == 4 else cv2.COLOR_RGB2BGR
        img = cv2.cvtColor(img, code)
    ok, buf = cv2.imencode(path.suffix, img)
    if not ok:
        raise VidrestoreError(f"{path}: OpenCV cannot encode this image format")
    atomic_write_bytes(path, buf.tobytes())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    except OSError as exc:
        raise VidrestoreError(f"{path}: cannot write to {path.parent} ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise VidrestoreError(f"{path}: cannot write ({exc.strerror})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def image_to_tensor(img: np.ndarray, device: torch.device) -> tuple[torch.Tensor, ImageLayout]:
    """(H, W[, C]) integer image → (1, 3, H, W) float32 RGB in [0, 1], plus what is needed to undo it.

    A grey image is restored as RGB (GFP-GAN is an RGB model) and turned back to grey on the way out;
    an alpha channel passes through untouched.
    """
    layout = ImageLayout(1 if img.ndim == 2 else img.shape[2], img.dtype)
    rgb = np.repeat(img[:, :, None], 3, axis=2) if img.ndim == 2 else img[:, :, :3]
    t = torch.from_numpy(np.ascontiguousarray(rgb)).to(device)
    return (t.permute(2, 0, 1)[None].float() / layout.max_value), layout


def tensor_to_image(
    t: torch.Tensor, layout: ImageLayout, original: np.ndarray, upscale: int = 1
) -> np.ndarray:
    """Undo :func:`image_to_tensor` for the restored (1, 3, H', W') tensor."""
    rgb = (t[0].clamp(0, 1) * layout.max_value).round().permute(1, 2, 0).cpu().numpy().astype(layout.dtype)
    if layout.channels == 1:
        # The luma weights OpenCV uses for RGB→grey, so a grey input stays grey with its own tones.
        grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        return grey.round().clip(0, layout.max_value).astype(layout.dtype)
    if layout.channels == 4:
        alpha = original[:, :, 3]
        if upscale != 1:
            alpha = cv2.resize(alpha, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_CUBIC)
        return np.dstack([rgb, alpha])
    return rgb
