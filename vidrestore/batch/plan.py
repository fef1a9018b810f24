"""Which files a batch restores and where each output goes, decided before any work starts.

Inputs are files and folders. A folder's videos keep their path below it, under the folder's own name, in the
output folder (as ``vidrestore image`` does); a file given by name lands at the top. Every file left out has
its reason (hidden, a macOS ``._`` sidecar, an extension not asked for, an ``--exclude``), for ``--dry-run``.
Two inputs that would write one output, or an output that is an input, stop the batch before it starts.
"""

from __future__ import annotations

import fnmatch
import os
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from vidrestore.errors import VidrestoreError
from vidrestore.io.paths import muxer_for

VIDEO_EXTENSIONS = (
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".flv", ".mpg", ".mpeg", ".m2v", ".vob", ".ts",
    ".m2ts", ".mts", ".mxf", ".dv", ".3gp", ".ogv", ".y4m", ".nut",
)  # fmt: skip
STATE_DIR = ".vidrestore"  # in the output folder: the manifest, its lock and the reports
NAME_FIELDS = ("stem", "ext", "name")


@dataclass(frozen=True)
class Planned:
    """A file to restore: its key (POSIX path below the input), absolute source and output, size and mtime."""

    key: str
    source: Path
    output: Path
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


@dataclass
class Plan:
    files: list[Planned]
    skipped: list[Skipped]


def parse_extensions(values: Iterable[str] | None) -> tuple[str, ...]:
    """``--ext mp4,mkv`` (repeatable, with or without dots) as lower-case suffixes; None: the video ones."""
    if not values:
        return VIDEO_EXTENSIONS
    out = [
        ("." + e.strip().lstrip(".")).lower() for v in values for e in v.split(",") if e.strip(".").strip()
    ]
    if not out:
        raise VidrestoreError("--ext: give extensions, e.g. --ext mp4,mkv")
    return tuple(dict.fromkeys(out))


def check_name(template: str) -> None:
    """A ``--name`` template uses only {stem}, {ext} and {name} and stays inside its folder."""
    try:
        fields = [f for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise VidrestoreError(f"--name {template!r}: {exc}") from None
    bad = [f for f in fields if f not in NAME_FIELDS]
    if bad:
        raise VidrestoreError(
            f"--name {template!r}: unknown field {{{bad[0]}}}; use {{stem}}, {{ext}} (with its dot) or "
            "{name}"
        )
    if "/" in template or "\\" in template or not fields:
        raise VidrestoreError(
            f"--name {template!r}: give a file name with {{stem}} or {{name}} in it, e.g. "
            "'{stem}_restored{ext}'"
        )


def output_name(template: str, source: Path) -> str:
    return template.format(stem=source.stem, ext=source.suffix, name=source.name)


def plan(
    inputs: Sequence[Path],
    output_dir: Path,
    *,
    recursive: bool = False,
    extensions: Sequence[str] = VIDEO_EXTENSIONS,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    name: str = "{name}",
) -> Plan:
    """The files to restore and the ones left out (with why); raises before any work on a collision."""
    check_name(name)
    if not inputs:
        raise VidrestoreError("give at least one input file or folder")
    output_dir = Path(os.path.abspath(output_dir))  # normalised: "..", "." never reach a key
    if output_dir.exists() and not output_dir.is_dir():
        raise VidrestoreError(f"{output_dir}: the output must be a folder, and this is a file")
    files: list[Planned] = []
    skipped: list[Skipped] = []
    for given in inputs:
        root = Path(os.path.abspath(given))
        if not root.exists():
            raise VidrestoreError(f"{given}: no such file or folder")
        if root.is_file():
            files.append(_planned(root, root.name, output_dir, name))
            continue
        for path, rel in _walk(root, output_dir, recursive, skipped):
            reason = _reason(rel, extensions, include, exclude)
            if reason:
                skipped.append(Skipped(path, reason))
            else:
                files.append(_planned(path, f"{root.name or 'root'}/{rel}", output_dir, name))
    _check_collisions(files)
    for suffix in sorted({f.output.suffix.lower() for f in files}):
        muxer_for(next(f.output for f in files if f.output.suffix.lower() == suffix))
    return Plan(files, skipped)


def _walk(
    root: Path, output_dir: Path, recursive: bool, skipped: list[Skipped]
) -> Iterable[tuple[Path, str]]:
    """Files under ``root`` and their POSIX path below it, sorted; the output folder is never entered."""
    for top, dirs, names in os.walk(root):
        here = Path(top)
        keep = []
        for d in sorted(dirs):
            path = here / d
            if path == output_dir:
                skipped.append(Skipped(path, "the output folder"))
            elif d.startswith("."):
                skipped.append(Skipped(path, "hidden folder"))
            elif not recursive:
                skipped.append(Skipped(path, "folder (add --recursive to restore what is inside)"))
            else:
                keep.append(d)
        dirs[:] = keep
        for n in sorted(names):
            path = here / n
            yield path, path.relative_to(root).as_posix()


def _reason(
    rel: str, extensions: Sequence[str], include: Sequence[str], exclude: Sequence[str]
) -> str | None:
    """Why a file found in a folder is left out, or None to restore it."""
    name = rel.rsplit("/", 1)[-1]
    if name.startswith("._"):
        return "macOS metadata sidecar (._*)"
    if name.startswith("."):
        return "hidden file"
    suffix = Path(name).suffix.lower()
    if suffix not in extensions:
        return f"extension {suffix or '(none)'} not in --ext"
    if include and not any(_matches(rel, g) for g in include):
        return "not matched by --include"
    hit = next((g for g in exclude if _matches(rel, g)), None)
    return f"excluded by --exclude {hit}" if hit else None


def _matches(rel: str, pattern: str) -> bool:
    """A glob matches the file's path below its input folder, or its name alone."""
    return fnmatch.fnmatchcase(rel, pattern) or fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], pattern)


def _planned(source: Path, key: str, output_dir: Path, template: str) -> Planned:
    st = source.stat()
    output = output_dir / Path(key).parent / output_name(template, source)
    return Planned(key, source, output, st.st_size, st.st_mtime_ns)


def _check_collisions(files: list[Planned]) -> None:
    """Two inputs writing one output (also by case: case-insensitive disks), or an output that is an input."""
    sources = {f.source for f in files}
    seen: dict[str, Planned] = {}
    for f in files:
        if f.output in sources:
            raise VidrestoreError(
                f"{f.output}: the output of {f.key} would overwrite an input; choose another output folder "
                "or --name"
            )
        other = seen.setdefault(str(f.output).casefold(), f)
        if other is not f:
            raise VidrestoreError(
                f"{other.key} and {f.key} would both be written to {f.output}; nothing was started. Use "
                "--name with {ext} (e.g. '{stem}{ext}.mp4'), --exclude one, or separate output folders"
            )
