"""Files on disk: the checks on an input and an output path, and the hidden temporary file an output is
written to, so that every bad path fails with one line before any work is done."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import av

from vidrestore.errors import VidrestoreError


def check_input_file(path: Path) -> None:
    if not path.exists():
        raise VidrestoreError(f"{path}: no such file")
    if not path.is_file():
        raise VidrestoreError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise VidrestoreError(f"{path}: the file is empty")


def check_output_path(src: Path, dst: Path, *, overwrite: bool) -> None:
    """The safety checks on an output path, callable before any work: never the input, never an existing file
    unless ``overwrite``, a directory that exists and is writable, an extension FFmpeg can mux."""
    src, dst = Path(src), Path(dst)
    if dst.is_dir():
        raise VidrestoreError(f"{dst}: is a directory; give an output file name")
    if _same_file(src, dst):
        raise VidrestoreError(f"{dst}: the output would overwrite the input; choose another name")
    if dst.exists() and not overwrite:
        raise VidrestoreError(f"{dst} exists; pass --overwrite to replace it")
    parent = dst.parent
    if not parent.exists():
        raise VidrestoreError(f"{dst}: the output directory {parent} does not exist")
    if not parent.is_dir():
        raise VidrestoreError(f"{dst}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise VidrestoreError(f"{dst}: the output directory {parent} is not writable")
    muxer_for(dst)


def _same_file(a: Path, b: Path) -> bool:
    if a.resolve() == b.resolve():
        return True
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def muxer_for(dst: Path) -> tuple[str, str]:
    """The muxer FFmpeg picks for this file name and its default video codec (opening creates no file)."""
    try:
        probe = av.open(str(dst), "w")
    except ValueError:
        raise VidrestoreError(
            f"{dst}: cannot tell the container from the extension '{dst.suffix}'; "
            "use .mp4, .mkv, .mov, .webm or .avi"
        ) from None
    name, video = probe.format.name, probe.default_video_codec
    probe.close()
    if name in ("image2", "image2pipe") or video == "none":
        raise VidrestoreError(
            f"{dst}: '{dst.suffix}' is not a video container; use .mp4, .mkv, .mov, .webm or .avi"
        )
    return name, video


def reserve_temp(dst: Path) -> Path:
    """A new hidden file beside ``dst`` with the real extension last, so FFmpeg picks the same muxer."""
    for _ in range(100):
        tmp = dst.with_name(f".{dst.stem}.{secrets.token_hex(4)}.part{dst.suffix}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        except OSError as exc:
            raise VidrestoreError(f"{dst}: cannot write to {dst.parent} ({reason(exc)})") from None
        return tmp
    raise VidrestoreError(f"{dst}: cannot create a temporary file in {dst.parent}")


def reason(exc: BaseException) -> str:
    """FFmpeg's or the OS's own words for an error, without the traceback."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
