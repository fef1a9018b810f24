import dataclasses
import errno
import functools
import os
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import ExifTags, Image, ImageOps

from vidrestore.cli import main
from vidrestore.errors import VidrestoreError
from vidrestore.io.images import (
    ImageMeta,
    image_to_tensor,
    read_image,
    read_still,
    tensor_to_image,
    write_image,
)
from vidrestore.options import EngineOptions
from vidrestore.stills import Job, restore_images


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


# --- metadata: ICC profile, EXIF (orientation applied and reset) and DPI ---

_SAVE = {  # suffix → Pillow format and options that keep a test picture exact where the format can
    ".png": ("PNG", {}),
    ".jpg": ("JPEG", {"quality": 95}),
    ".tif": ("TIFF", {}),  # uncompressed: Pillow's libtiff path (any compression) drops EXIF sub-IFDs
    ".webp": ("WEBP", {"lossless": True}),
}


@functools.cache
def _icc() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _icc_for(space: bytes) -> bytes:
    """The sRGB profile relabelled for another colour space: only its header is read here."""
    return _icc()[:16] + space + _icc()[20:]


def _exif(orientation: int = 6) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Vidrestore Camera Co."
    exif[ExifTags.Base.Model] = "Test 1"
    exif[ExifTags.Base.Orientation] = orientation
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "2024:05:06 07:08:09"
    return exif


def _photo(path: Path, pixels: np.ndarray, **info) -> None:
    """Write a test photo with Pillow, an encoder independent of the one under test."""
    fmt, options = _SAVE[path.suffix]
    if isinstance(info.get("exif"), Image.Exif):
        info["exif"] = info["exif"].tobytes()  # as bytes, Pillow's TIFF writer keeps the Exif sub-IFD
    Image.fromarray(pixels).save(path, fmt, **options, **info)


def _pixels(h: int = 24, w: int = 40) -> np.ndarray:
    """A smooth, asymmetric RGB picture: every orientation of it is a different array."""
    y, x = np.mgrid[0:h, 0:w]
    return np.dstack([x * 255 // (w - 1), y * 255 // (h - 1), (x + 2 * y) * 255 // (w + 2 * h)]).astype(
        np.uint8
    )


def _tags(path: Path) -> tuple[bytes | None, dict, tuple[float, float] | None]:
    with Image.open(path) as im:
        exif = im.getexif()
        tags = dict(exif) | {"exif-ifd": dict(exif.get_ifd(ExifTags.IFD.Exif))}
        return im.info.get("icc_profile"), tags, im.info.get("dpi")


@pytest.mark.parametrize("suffix", list(_SAVE))
@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_applied_to_the_pixels_and_reset(tmp_path, suffix, orientation):
    path = tmp_path / f"o{suffix}"
    _photo(path, _pixels(), exif=_exif(orientation))
    img, meta = read_still(path)
    with Image.open(path) as im:
        upright = np.asarray(ImageOps.exif_transpose(im))  # Pillow's reading of the same file
    assert img.shape == upright.shape
    assert np.abs(img.astype(int) - upright).max() <= (2 if suffix == ".jpg" else 0)  # two JPEG decoders
    tags = Image.Exif()
    tags.load(meta.exif)
    assert tags[ExifTags.Base.Orientation] == 1 and tags[ExifTags.Base.Model] == "Test 1"


@pytest.mark.parametrize("out_suffix", list(_SAVE))
@pytest.mark.parametrize("in_suffix", list(_SAVE))
def test_icc_exif_and_dpi_are_kept(tmp_path, in_suffix, out_suffix):
    src, dst = tmp_path / f"in{in_suffix}", tmp_path / f"out{out_suffix}"
    icc, exif = _icc(), _exif(6)
    if in_suffix == ".webp":  # WebP has no resolution field: photo tools put it in EXIF
        exif[ExifTags.Base.XResolution], exif[ExifTags.Base.YResolution] = 300, 150
        exif[ExifTags.Base.ResolutionUnit] = 2
    _photo(src, _pixels(), icc_profile=icc, exif=exif, dpi=(300, 150))
    img, meta = read_still(src)
    assert img.shape == (40, 24, 3)  # orientation 6: stored landscape, shown portrait
    assert write_image(dst, img, meta) == ()
    out_icc, tags, dpi = _tags(dst)
    assert out_icc == icc
    assert tags[ExifTags.Base.Make] == "Vidrestore Camera Co." and tags[ExifTags.Base.Orientation] == 1
    assert tags["exif-ifd"][ExifTags.Base.DateTimeOriginal] == "2024:05:06 07:08:09"
    if out_suffix == ".webp":  # no resolution field in WebP: it goes in EXIF, where readers look
        dpi = (tags[ExifTags.Base.XResolution], tags[ExifTags.Base.YResolution])
        assert tags[ExifTags.Base.ResolutionUnit] == 2
    assert dpi == pytest.approx((300, 150), rel=1e-4)  # PNG stores whole pixels per metre: 299.9994
    if out_suffix == ".tif":  # the input's own strip layout was not carried into the output's IFD0
        np.testing.assert_array_equal(read_image(dst), img)
    back, again = read_still(dst)
    assert back.shape == img.shape  # read back: already upright, not turned a second time
    assert again.icc == icc


@pytest.mark.parametrize("suffix", [".png", ".tif"])
@pytest.mark.parametrize("channels", [1, 3, 4])
def test_sixteen_bit_keeps_depth_and_metadata(tmp_path, suffix, channels):
    src = tmp_path / "in.jpg"
    _photo(src, _pixels(), icc_profile=_icc(), exif=_exif(1), dpi=(600, 600))
    _, meta = read_still(src)
    if channels == 1:  # a grey picture takes a grey profile (libpng refuses an RGB one)
        meta = dataclasses.replace(meta, icc=_icc_for(b"GRAY"))
    rng = np.random.default_rng(1)
    img = rng.integers(0, 65535, (24, 40, channels)[: 2 if channels == 1 else 3], np.uint16, endpoint=True)
    dst = tmp_path / f"out{suffix}"
    lost = write_image(dst, img, meta)
    back, again = read_still(dst)
    np.testing.assert_array_equal(back, img)
    assert lost == () and again.icc == meta.icc and _exif_tags(again.exif) == _exif_tags(meta.exif)
    assert again.dpi == pytest.approx((600, 600), rel=1e-4)


def _exif_tags(raw: bytes) -> dict:
    exif = Image.Exif()
    exif.load(raw)
    return dict(exif) | {"exif-ifd": dict(exif.get_ifd(ExifTags.IFD.Exif))}


def test_bmp_keeps_dpi_and_says_what_it_cannot_keep(tmp_path):
    src = tmp_path / "in.png"
    _photo(src, _pixels(), icc_profile=_icc(), exif=_exif(3), dpi=(72, 96))
    img, meta = read_still(src)
    assert write_image(tmp_path / "out.bmp", img, meta) == ("ICC profile", "EXIF")
    back, again = read_still(tmp_path / "out.bmp")
    np.testing.assert_array_equal(back, img)
    assert again.dpi == pytest.approx((72, 96), rel=1e-3)


def test_no_metadata_invented(tmp_path):
    for suffix in _SAVE:
        _photo(tmp_path / f"plain{suffix}", _pixels())
        img, meta = read_still(tmp_path / f"plain{suffix}")
        # A JPEG that states no density is not given Pillow's stand-in 72 dpi.
        assert meta == ImageMeta(), suffix
        write_image(tmp_path / f"out{suffix}", img, meta)
        icc, tags, _ = _tags(tmp_path / f"out{suffix}")
        assert icc is None and ExifTags.Base.Make not in tags


def test_a_profile_for_other_pixels_is_dropped_and_said(tmp_path):
    """A CMYK JPEG: OpenCV decodes it as RGB, which its CMYK profile does not describe."""
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(_pixels()).convert("CMYK").save(path, icc_profile=_icc_for(b"CMYK"), exif=_exif(1))
    img, meta = read_still(path)
    assert img.ndim == 3 and meta.icc is None and meta.exif
    assert write_image(tmp_path / "out.png", img, meta) == ("ICC profile (made for CMYK pixels, not these)",)
    assert _tags(tmp_path / "out.png")[0] is None


def test_exif_pixel_dimensions_follow_the_written_picture(tmp_path):
    """Turned upright and enlarged (--upscale 2): EXIF's PixelXDimension/PixelYDimension say so."""
    exif = _exif(6)
    exif.get_ifd(ExifTags.IFD.Exif).update(
        {ExifTags.Base.ExifImageWidth: 40, ExifTags.Base.ExifImageHeight: 24}
    )
    _photo(tmp_path / "in.jpg", _pixels(), exif=exif)
    img, meta = read_still(tmp_path / "in.jpg")
    big = cv2.resize(img, (img.shape[1] * 2, img.shape[0] * 2))
    write_image(tmp_path / "out.webp", big, meta)
    sub = _tags(tmp_path / "out.webp")[1]["exif-ifd"]
    assert (sub[ExifTags.Base.ExifImageWidth], sub[ExifTags.Base.ExifImageHeight]) == (48, 80)


def test_unreadable_exif_is_dropped_and_said(tmp_path):
    path = tmp_path / "bad-exif.png"
    _photo(path, _pixels(), exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f")  # IFD0 offset far past the end
    img, meta = read_still(path)
    assert img.shape == (24, 40, 3) and meta.exif is None
    assert write_image(tmp_path / "out.png", img, meta) == ("EXIF (unreadable)",)


def test_image_command_keeps_metadata_and_turns_a_sideways_photo_upright(
    tmp_path, astronaut, tiny_checkpoint, offline, capsys
):
    """A camera's portrait shot: pixels stored sideways, EXIF orientation 6. The face is found upright."""
    photo = astronaut[:256, 96:352]  # the face, and little else: a quick run
    sideways = np.ascontiguousarray(np.rot90(photo, 1))  # what orientation 6 turns back clockwise
    src, dst = tmp_path / "portrait.jpg", tmp_path / "out.jpg"
    _photo(src, sideways, icc_profile=_icc(), exif=_exif(6), dpi=(240, 240))
    assert (
        main(["image", str(src), "-o", str(dst), "--weights", tiny_checkpoint, "--detector", "centerface"])
        == 0
    )
    assert f"{src} -> {dst}: 1 face(s)\n" in capsys.readouterr().err
    img = read_image(dst)
    assert img.shape == photo.shape  # upright, as shown, and not turned again on reading
    assert np.abs(img[200:].astype(int) - photo[200:]).mean() < 3  # below the face: JPEG loss only
    icc, tags, dpi = _tags(dst)
    assert icc == _icc() and dpi == (240, 240)
    assert tags[ExifTags.Base.Orientation] == 1 and tags[ExifTags.Base.Model] == "Test 1"
    assert tags["exif-ifd"][ExifTags.Base.DateTimeOriginal] == "2024:05:06 07:08:09"


class _Unchanged:
    """Stands in for FaceRestorer: finds no face and hands the picture back as it came."""

    device = torch.device("cpu")
    options = EngineOptions()
    detect_batch = detect_size = None

    def restore(self, t, upscale=1):
        return types.SimpleNamespace(frames=t, faces=[[]])


def test_image_jobs_name_what_a_format_cannot_keep(tmp_path):
    _photo(tmp_path / "photo.jpg", _pixels(), icc_profile=_icc(), exif=_exif(6), dpi=(300, 300))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    jobs = [
        Job(tmp_path / "photo.jpg", tmp_path / "out" / "photo.bmp"),
        Job(tmp_path / "broken.png", tmp_path / "out" / "broken.png"),
        Job(tmp_path / "photo.jpg", tmp_path / "out" / "photo.webp"),
    ]
    lines = []
    summary = restore_images(_Unchanged(), jobs, lines.append)
    assert lines == [
        f"{jobs[0].src} -> {jobs[0].dst}: 0 face(s) (not kept: ICC profile, EXIF)",
        f"{jobs[2].src} -> {jobs[2].dst}: 0 face(s)",
    ]
    assert summary.images == 2 and len(summary.errors) == 1 and "broken.png" in summary.errors[0]
    assert read_image(jobs[0].dst).shape == (40, 24, 3)  # upright
