"""Still images in and out: 8/16-bit, grey, RGB and RGBA, checked for truncation, written atomically.

Pixels go through OpenCV (it keeps 16 bits); Pillow reads the metadata, which goes back out as photo tools
keep it: the ICC profile, EXIF (orientation applied to the pixels, its tag reset to 1) and DPI.
"""

from __future__ import annotations

import math
import os
import struct
import tempfile
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import ExifTags, Image, TiffImagePlugin, TiffTags, UnidentifiedImageError

from vidrestore.errors import VidrestoreError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
# Formats whose encoders keep 16 bits; others are written as 8-bit.
_SIXTEEN_BIT_SUFFIXES = frozenset({".png", ".tif", ".tiff"})
_TIFF_SUFFIXES = frozenset({".tif", ".tiff"})
# OpenCV's encoders that embed ICC and EXIF blobs (imencodeWithMetadata); TIFF gets them as tags after.
_OPENCV_METADATA_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
_OPENCV_METADATA = {"ICC profile": cv2.IMAGE_METADATA_ICCP, "EXIF": cv2.IMAGE_METADATA_EXIF}
_ICC_TAG = 34675
_SUB_IFDS = frozenset({ExifTags.IFD.Exif, ExifTags.IFD.GPSInfo})
_ORIENTATION = ExifTags.Base.Orientation
_RESOLUTION_TAGS = frozenset(
    {ExifTags.Base.XResolution, ExifTags.Base.YResolution, ExifTags.Base.ResolutionUnit}
)
# TIFF tags that describe how a file stores its pixels, not the photograph: a TIFF's IFD0 is its EXIF IFD0,
# so they are dropped from the EXIF that travels (a writer sets its own; a stale StripOffsets would break it).
_LAYOUT_TAGS = frozenset(
    {
        254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 317, 320,
        322, 323, 324, 325, 330, 338, 339, 347, 513, 514, 530, 531, 532, _ICC_TAG,
    }
)  # fmt: skip
# EXIF orientation → the transform that shows the picture upright (as Pillow's ImageOps.exif_transpose).
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
    8: lambda a: np.rot90(a, 1),
}
# Formats whose OpenCV decoder applies the orientation tag itself, even with IMREAD_UNCHANGED (OpenCV 5.0,
# 8- and 16-bit TIFF; test_orientation_is_applied_to_the_pixels_and_reset holds it to that).
_DECODER_ORIENTS = frozenset({"TIFF"})


@dataclass(frozen=True)
class ImageLayout:
    """What the engine must restore on the way out: channel layout and bit depth of the input."""

    channels: int  # 1 (grey), 3 (RGB) or 4 (RGBA)
    dtype: np.dtype

    @property
    def max_value(self) -> float:
        return float(np.iinfo(self.dtype).max)


@dataclass(frozen=True)
class ImageMeta:
    """What a still carries besides its pixels, so the restored file keeps it."""

    icc: bytes | None = None
    exif: bytes | None = None  # TIFF-structured (no "Exif\0\0" header); orientation 1: pixels are upright
    dpi: tuple[float, float] | None = None
    lost: tuple[str, ...] = ()  # what the input had that cannot go out with it (said in the job's log line)


def read_image(path: Path) -> np.ndarray:
    """Decode an image file as (H, W) grey or (H, W, 3|4) RGB(A), uint8 or uint16, upright."""
    return read_still(path)[0]


def read_still(path: Path) -> tuple[np.ndarray, ImageMeta]:
    """Decode an image file (as :func:`read_image`) and its ICC profile, EXIF and DPI.

    OpenCV decodes (it keeps 16 bits); Pillow checks the file is whole, because OpenCV returns a
    half-grey picture for a truncated JPEG instead of failing, and reads the metadata.
    """
    if not path.exists():
        raise VidrestoreError(f"{path}: no such file")
    if not path.is_file():
        raise VidrestoreError(f"{path}: not a file")
    data = path.read_bytes()
    if not data:
        raise VidrestoreError(f"{path}: the file is empty")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    meta, orientation = ImageMeta(), 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                im.load()
                meta, orientation = _metadata(im)
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
    if orientation in _UPRIGHT:
        img = np.ascontiguousarray(_UPRIGHT[orientation](img))
    space = (meta.icc or b"")[16:20]
    if meta.icc and space != (b"GRAY" if img.ndim == 2 else b"RGB "):
        # e.g. a CMYK JPEG, which OpenCV decodes as RGB: its profile would misdescribe these pixels
        note = f"ICC profile (made for {space.decode('latin-1').strip() or 'other'} pixels, not these)"
        meta = replace(meta, icc=None, lost=(*meta.lost, note))
    return img, meta


def _metadata(im: Image.Image) -> tuple[ImageMeta, int]:
    """The ICC profile, EXIF and DPI of an opened image, and the orientation OpenCV's pixels still need."""
    icc = im.info.get("icc_profile") or None
    # Pillow's "dpi" also holds stand-ins for files that state none (72 for a JPEG, 1 for a TIFF) and, for
    # a JPEG, EXIF's resolution: keep only what the container's own field says; EXIF's is read below.
    dpi = im.info.get("dpi")
    if im.format in ("JPEG", "MPO") and im.info.get("jfif_unit") not in (1, 2):
        dpi = None
    if im.format == "TIFF" and ExifTags.Base.XResolution not in getattr(im, "tag_v2", {}):
        dpi = None
    lost: tuple[str, ...] = ()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", UserWarning)  # Pillow only warns of corrupt EXIF, and drops it
            exif = im.getexif()
            dpi = _usable_dpi(dpi) or _exif_dpi(exif)
            orientation = exif.get(_ORIENTATION, 1)
            for tag in _LAYOUT_TAGS | (_RESOLUTION_TAGS if im.format == "TIFF" else frozenset()):
                exif.pop(tag, None)
            if len(exif):  # the pixels are upright now (Pillow's TIFF reader has already deleted the tag)
                exif[_ORIENTATION] = 1
            raw = exif.tobytes()[6:] if len(exif) else None  # without the "Exif\0\0" of JPEG's APP1
    except (UserWarning, SyntaxError, ValueError, TypeError, KeyError, IndexError, struct.error, OSError):
        raw, orientation, lost = None, 1, ("EXIF (unreadable)",)
    if orientation not in _UPRIGHT or im.format in _DECODER_ORIENTS:
        orientation = 1
    return ImageMeta(icc, raw, _usable_dpi(dpi), lost), orientation


def _usable_dpi(dpi: object) -> tuple[float, float] | None:
    """Two positive, finite numbers, or None: 0 (a PNG's "unknown") and 0/0 rationals state nothing."""
    try:
        x, y = (float(d) for d in dpi)  # type: ignore[union-attr]
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return (x, y) if all(math.isfinite(d) and d > 0 for d in (x, y)) else None


def _exif_dpi(exif: Image.Exif) -> tuple[float, float] | None:
    """EXIF's X/YResolution in dots per inch, where it states them in inches or centimetres."""
    per_inch = {2: 1.0, 3: 2.54}.get(exif.get(ExifTags.Base.ResolutionUnit, 2))
    dpi = _usable_dpi((exif.get(ExifTags.Base.XResolution), exif.get(ExifTags.Base.YResolution)))
    return (dpi[0] * per_inch, dpi[1] * per_inch) if dpi and per_inch else None


def write_image(path: Path, img: np.ndarray, meta: ImageMeta = ImageMeta()) -> tuple[str, ...]:
    """Encode by the file's suffix, with ``meta``, into a temporary file beside it, then rename.

    Returns what of ``meta`` could not be kept: a BMP has no place for an ICC profile or EXIF.
    """
    suffix = path.suffix.lower()
    if suffix not in _SIXTEEN_BIT_SUFFIXES and img.dtype == np.uint16:
        img = (img.astype(np.float32) / 257).round().astype(np.uint8)
    # WebP has no resolution field: its DPI goes in EXIF, where readers look for it.
    exif = _exif_for(meta.exif, img.shape[:2], meta.dpi if suffix == ".webp" else None)
    present = {name: blob for name, blob in (("ICC profile", meta.icc), ("EXIF", exif)) if blob}
    if img.ndim == 3:
        code = cv2.COLOR_RGBA2BGRA if img.shape[2] == 4 else cv2.COLOR_RGB2BGR
        img = cv2.cvtColor(img, code)
    if suffix in _OPENCV_METADATA_SUFFIXES and present:
        kinds = [_OPENCV_METADATA[name] for name in present]
        blobs = [np.frombuffer(blob, np.uint8) for blob in present.values()]
        ok, buf = cv2.imencodeWithMetadata(suffix, img, kinds, blobs)
    else:
        ok, buf = cv2.imencode(suffix, img)
    if not ok:
        raise VidrestoreError(f"{path}: OpenCV cannot encode this image format")
    data = buf.tobytes()
    lost = list(present) if suffix == ".bmp" else []
    if suffix in _TIFF_SUFFIXES and (present or meta.dpi):
        tagged = _tiff_with_tags(data, meta.icc, exif, meta.dpi)
        if tagged is None:
            lost = [*present, *(["DPI"] if meta.dpi else [])]
        data = tagged or data
    elif meta.dpi and suffix in _DPI_WRITERS:
        dense = _DPI_WRITERS[suffix](data, meta.dpi)
        if dense is None:
            lost.append("DPI")
        data = dense or data
    atomic_write_bytes(path, data)
    return (*meta.lost, *lost)


def _exif_for(exif: bytes | None, size: tuple[int, int], dpi: tuple[float, float] | None) -> bytes | None:
    """``exif`` with its pixel dimensions made those written (turned upright, enlarged) and ``dpi`` set."""
    if not exif and not dpi:
        return exif
    tags = Image.Exif()
    if exif:
        tags.load(exif)
    sub = tags.get_ifd(ExifTags.IFD.Exif)
    dims = {ExifTags.Base.ExifImageWidth: size[1], ExifTags.Base.ExifImageHeight: size[0]}
    changed = {tag: value for tag, value in dims.items() if tag in sub and sub[tag] != value}
    if not changed and not dpi:
        return exif
    sub.update(changed)
    if dpi:
        tags[ExifTags.Base.XResolution], tags[ExifTags.Base.YResolution] = dpi
        tags[ExifTags.Base.ResolutionUnit] = 2
    return tags.tobytes()[6:]


def _per_metre(dpi: tuple[float, float]) -> tuple[int, int]:
    return max(1, round(dpi[0] / 0.0254)), max(1, round(dpi[1] / 0.0254))


def _png_with_dpi(data: bytes, dpi: tuple[float, float]) -> bytes:
    """Insert a pHYs chunk (pixels per metre) right after IHDR, which is always the first chunk."""
    body = b"pHYs" + struct.pack(">IIB", *_per_metre(dpi), 1)
    chunk = struct.pack(">I", len(body) - 4) + body + struct.pack(">I", zlib.crc32(body))
    end_of_ihdr = 8 + 8 + 13 + 4  # signature, length + type, IHDR data, CRC
    return data[:end_of_ihdr] + chunk + data[end_of_ihdr:]


def _jpeg_with_dpi(data: bytes, dpi: tuple[float, float]) -> bytes | None:
    """Set the density of the JFIF APP0 segment libjpeg writes first (unit 1: dots per inch)."""
    if data[2:4] != b"\xff\xe0" or data[6:11] != b"JFIF\0":
        return None
    x, y = (min(65535, max(1, round(d))) for d in dpi)
    return data[:13] + struct.pack(">BHH", 1, x, y) + data[18:]


def _bmp_with_dpi(data: bytes, dpi: tuple[float, float]) -> bytes | None:
    """Set biXPelsPerMeter / biYPelsPerMeter of the BITMAPINFOHEADER (or a later version) OpenCV writes."""
    if data[:2] != b"BM" or struct.unpack("<I", data[14:18])[0] < 40:
        return None
    return data[:38] + struct.pack("<ii", *_per_metre(dpi)) + data[46:]


_DPI_WRITERS = {".png": _png_with_dpi, ".jpg": _jpeg_with_dpi, ".jpeg": _jpeg_with_dpi, ".bmp": _bmp_with_dpi}


def _tiff_with_tags(
    data: bytes, icc: bytes | None, exif: bytes | None, dpi: tuple[float, float] | None
) -> bytes | None:
    """Add the ICC profile, EXIF (with its Exif and GPS sub-IFDs) and DPI to the IFD0 of OpenCV's TIFF.

    OpenCV's TIFF encoder takes no metadata and Pillow's cannot write 16-bit RGB, so the tags are added
    after encoding: Pillow lays out the new entries and their values past the end of the file, and a new
    IFD0 there, OpenCV's entries and these merged in tag order, replaces the old one; the pixel strips
    stay where they are. None for a BigTIFF (OpenCV writes one only past 4 GiB), whose IFDs differ.
    """
    order = {b"II": "<", b"MM": ">"}.get(data[:2])
    if order is None or struct.unpack(order + "H", data[2:4])[0] != 42:
        return None
    extra = TiffImagePlugin.ImageFileDirectory_v2(ifh=data[:8])
    if exif:
        tags = Image.Exif()
        tags.load(exif)
        for tag in tags:
            extra[tag] = tags.get_ifd(tag) if tag in _SUB_IFDS else tags[tag]
    if icc:
        extra[_ICC_TAG] = icc
        extra.tagtype[_ICC_TAG] = TiffTags.UNDEFINED
    if dpi:
        extra[ExifTags.Base.XResolution], extra[ExifTags.Base.YResolution] = dpi
        extra[ExifTags.Base.ResolutionUnit] = 2
    (ifd0,) = struct.unpack(order + "I", data[4:8])
    (count,) = struct.unpack(order + "H", data[ifd0 : ifd0 + 2])
    entries = _ifd_entries(data, ifd0, count, order)
    next_ifd = data[ifd0 + 2 + 12 * count : ifd0 + 6 + 12 * count]
    start = len(data) + len(data) % 2  # IFDs and their values begin on a word boundary
    added = extra.tobytes(start)  # an IFD of the new tags alone, then their values; its entries are reused
    entries |= _ifd_entries(added, 0, len(extra), order)
    head = start + len(added) + len(added) % 2
    return b"".join(
        (
            data[:4],
            struct.pack(order + "I", head),
            data[8:],
            bytes(start - len(data)),
            added,
            bytes(head - start - len(added)),
            struct.pack(order + "H", len(entries)),
            *(entries[tag] for tag in sorted(entries)),
            next_ifd,
        )
    )


def _ifd_entries(data: bytes, at: int, count: int, order: str) -> dict[int, bytes]:
    """The 12-byte entries of the classic-TIFF IFD at ``at``, by tag."""
    raw = (data[at + 2 + 12 * i : at + 14 + 12 * i] for i in range(count))
    return {struct.unpack(order + "H", entry[:2])[0]: entry for entry in raw}


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
