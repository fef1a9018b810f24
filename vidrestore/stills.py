"""Still-image restoration: map inputs to outputs safely, restore each image, summarise the run."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from vidrestore.engine import FaceRestorer
from vidrestore.errors import VidrestoreError
from vidrestore.faces.colour import adds_colour
from vidrestore.io.images import IMAGE_SUFFIXES, image_to_tensor, read_still, tensor_to_image, write_image
from vidrestore.memory import fit_to_memory
from vidrestore.options import TemporalOptions


@dataclass(frozen=True)
class Job:
    src: Path
    dst: Path


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def plan_outputs(inputs: Sequence[Path], output: Path, *, overwrite: bool = False) -> list[Job]:
    """Expand directories and decide each output path, refusing anything that would lose a file.

    One input file and an output with an image suffix → that file; otherwise ``output`` is a
    directory and each image keeps its name (and its path below an input directory).
    """
    jobs: list[Job] = []
    single_file = len(inputs) == 1 and not inputs[0].is_dir() and output.suffix.lower() in IMAGE_SUFFIXES
    for src in inputs:
        if not src.exists():
            raise VidrestoreError(f"{src}: no such file or directory")
        if src.is_dir():
            found = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise VidrestoreError(
                    f"{src}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            jobs += [Job(p, output / src.name / p.relative_to(src)) for p in found]
        elif single_file:
            jobs.append(Job(src, output))
        else:
            jobs.append(Job(src, output / src.name))
    # Every input's path and file identity, gathered once: an output may be none of them (a hard link or a
    # symlink to an input counts), and checking each output against every input would be quadratic.
    input_paths = {job.src.resolve() for job in jobs}
    input_ids = {(st.st_dev, st.st_ino) for st in (os.stat(job.src) for job in jobs)}
    seen: dict[Path, Path] = {}
    for job in jobs:
        if job.dst.suffix.lower() not in IMAGE_SUFFIXES:
            raise VidrestoreError(
                f"{job.dst}: unknown image type; use one of {', '.join(sorted(IMAGE_SUFFIXES))}"
            )
        if job.dst.resolve() in input_paths or _file_id(job.dst) in input_ids:
            raise VidrestoreError(f"{job.dst}: the output would overwrite an input; choose another -o")
        key = job.dst.resolve()
        if key in seen:
            raise VidrestoreError(f"{seen[key]} and {job.src} would both be written to {job.dst}")
        seen[key] = job.src
        if job.dst.exists() and not overwrite:
            raise VidrestoreError(f"{job.dst} exists; pass --overwrite to replace it")
    return jobs


@dataclass
class Summary:
    images: int = 0
    faces: int = 0
    without_faces: int = 0
    errors: list[str] = field(default_factory=list)

    def describe(self, seconds: float) -> str:
        failed = f", {len(self.errors)} failed" if self.errors else ""
        return (
            f"restored {self.faces} face(s) in {self.images} image(s) "
            f"({self.without_faces} without faces{failed}) in {seconds:.1f} s"
        )


def restore_image(restorer: FaceRestorer, img: np.ndarray, upscale: int = 1) -> tuple[np.ndarray, int]:
    """Restore one decoded image (any layout :func:`read_still` returns); returns it and its face count."""
    t, layout = image_to_tensor(img, restorer.device)
    if layout.channels == 1 and adds_colour(restorer.options.color, restorer.spec.colourises):
        layout = replace(layout, channels=3)  # the colour such a model gave a grey face is what it is for
    result = restorer.restore(t, upscale=upscale)
    return tensor_to_image(result.frames, layout, img, upscale), len(result.faces[0])


def restore_images(
    restorer: FaceRestorer, jobs: Sequence[Job], log: Callable[[str], None], upscale: int = 1
) -> Summary:
    """Restore each job, keeping its ICC profile, EXIF and DPI; a bad file is reported and skipped."""
    summary = Summary()
    for job in jobs:
        try:
            img, meta = read_still(job.src)
            # A large scan is one frame for the memory budget: the detector may see a smaller copy of it.
            _, plan = fit_to_memory(
                restorer,
                img.shape[1],
                img.shape[0],
                TemporalOptions(frame_batch=1, smooth=0.0),
                sample_bytes=img.dtype.itemsize,
                keep_batch=True,
                upscale=upscale,
            )
            for notice in plan.notices:
                log(f"{job.src}: {notice}")
            out, n = restore_image(restorer, img, upscale)
            job.dst.parent.mkdir(parents=True, exist_ok=True)
            lost = write_image(job.dst, out, meta)
        except VidrestoreError as exc:
            summary.errors.append(str(exc))
            continue
        except OSError as exc:
            summary.errors.append(f"{job.dst}: {exc.strerror or exc}")
            continue
        summary.images += 1
        summary.faces += n
        summary.without_faces += n == 0
        log(f"{job.src} -> {job.dst}: {n} face(s)" + (f" (not kept: {', '.join(lost)})" if lost else ""))
    return summary
