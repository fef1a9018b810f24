"""Files on disk: the checks on an input and an output path, and the hidden temporary file an output is
written to, so that every bad path fails with one line before any work is done.

``-`` names a pipe, as in FFmpeg: standard input as the input, standard output as the output (whose
container is then named with ``--format``, since there is no extension to tell it).
"""

from __future__ import annotations

import contextlib
import glob
import io
import os
import secrets
import sys
from pathlib import Path
from typing import NoReturn

import av

from vidrestore.errors import VidrestoreError


def is_pipe(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is ``-``: standard input or output."""
    return os.fspath(path) == "-"


def check_input_file(path: Path) -> None:
    if is_pipe(path):
        return
    if not path.exists():
        raise VidrestoreError(f"{path}: no such file")
    if not path.is_file():
        raise VidrestoreError(f"{path}: not a file")
    if path.stat().st_size == 0:
        raise VidrestoreError(f"{path}: the file is empty")


def check_output_path(src: Path, dst: Path, *, overwrite: bool, format: str | None = None) -> None:
    """The safety checks on an output path, callable before any work: never the input, never an existing file
    unless ``overwrite``, a directory that exists and is writable, a container FFmpeg can mux (``format``,
    else the extension's); for standard output, a named container and no terminal."""
    src, dst = Path(src), Path(dst)
    if is_pipe(dst):
        if format is None:
            raise VidrestoreError(
                "writing to standard output ('-o -') needs --format, FFmpeg's name for the container "
                "(e.g. matroska, mpegts, nut)"
            )
        if sys.stdout.isatty():
            raise VidrestoreError("standard output is a terminal: redirect it to a file or a pipe")
        muxer_for(dst, format)
        return
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
    muxer_for(dst, format)
    remove_stale_temps(dst)


def _same_file(a: Path, b: Path) -> bool:
    if is_pipe(a):
        return False
    if a.resolve() == b.resolve():
        return True
    try:
        return b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def muxer_for(dst: Path, format: str | None = None) -> tuple[str, str]:
    """The muxer named by ``format`` (FFmpeg's name), else the one FFmpeg picks for this file name, and its
    default video codec (opening creates no file)."""
    if format is not None:
        try:
            probe = av.open(io.BytesIO(), "w", format=format)
        except ValueError:
            raise VidrestoreError(
                f"unknown container format '{format}'; use FFmpeg's names, e.g. matroska, mp4, mpegts, avi"
            ) from None
    elif is_pipe(dst):
        raise VidrestoreError("standard output ('-') needs --format to name the container")
    else:
        try:
            probe = av.open(str(dst), "w")
        except ValueError:
            raise VidrestoreError(
                f"{dst}: cannot tell the container from the extension '{dst.suffix}'; "
                "use .mp4, .mkv, .mov, .webm or .avi, or name it with --format"
            ) from None
    name, video = probe.format.name, probe.default_video_codec
    probe.close()
    if name in ("image2", "image2pipe") or video == "none":
        what = f"'{format}'" if format else f"'{dst.suffix}'"
        raise VidrestoreError(f"{dst}: {what} is not a video container; use .mp4, .mkv, .mov, .webm or .avi")
    return name, video


def reserve_temp(dst: Path) -> Path:
    """A new hidden file beside ``dst`` with the real extension last, so FFmpeg picks the same muxer.

    Its name carries this process's ID, so that a later run can tell the leftovers of a killed run (``kill
    -9``, a power cut) from the files of a run still going, and removes them (:func:`remove_stale_temps`).
    """
    remove_stale_temps(dst)
    for _ in range(100):
        tmp = dst.with_name(f".{dst.stem}.{os.getpid()}-{secrets.token_hex(4)}.part{dst.suffix}")
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            continue
        except OSError as exc:
            raise VidrestoreError(f"{dst}: cannot write to {dst.parent} ({reason(exc)})") from None
        return tmp
    raise VidrestoreError(f"{dst}: cannot create a temporary file in {dst.parent}")


def remove_stale_temps(dst: Path) -> None:
    """Delete the temporary files of earlier runs for ``dst`` whose process is gone; refuse, in one line,
    when another process that is still running is writing ``dst``."""
    for tmp in dst.parent.glob(f".{glob.escape(dst.stem)}.*.part{glob.escape(dst.suffix)}"):
        pid = tmp.name[len(dst.stem) + 2 :].split("-", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        if _alive(int(pid)):
            raise VidrestoreError(
                f"{dst}: another run (process {pid}) is writing this output; wait for it to finish or "
                "choose another name"
            )
        with contextlib.suppress(OSError):
            tmp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    return True


def move_into_place(tmp: Path, dst: Path, *, overwrite: bool) -> None:
    """Rename the finished ``tmp`` to ``dst``; without ``overwrite``, never over a file that appeared since.

    A hard link creates ``dst`` only if it does not exist, atomically, so two runs writing the same output
    cannot both succeed; the second keeps its result under a name of its own and says so.
    """
    if overwrite:
        os.replace(tmp, dst)
        return
    try:
        os.link(tmp, dst)
    except FileExistsError:
        _keep_beside(tmp, dst)
    except OSError:  # a file system without hard links: check, then rename (a small window remains)
        if dst.exists():
            _keep_beside(tmp, dst)
        os.replace(tmp, dst)
        return
    tmp.unlink()


def _keep_beside(tmp: Path, dst: Path) -> NoReturn:
    """Another writer got to ``dst`` first: keep this run's result under a name of its own, and say so."""
    kept = dst.with_name(f"{dst.stem}.{os.getpid()}{dst.suffix}")
    os.replace(tmp, kept)
    raise VidrestoreError(
        f"{dst} was created by someone else while this run was writing it (another run?); it was left "
        f"alone, and this run's result is {kept}"
    )


def reason(exc: BaseException) -> str:
    """FFmpeg's or the OS's own words for an error, without the traceback."""
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
