"""The memory budget: how many frames the engine holds and how much picture the detector sees at once.

Memory grows with the frame's area, and most of it is the detector's: its activations take about 300 bytes
per pixel of the picture it sees (measured on the CPU: CenterFace 230-245, RetinaFace R50 230-275; the
PyTorch CenterFace that runs on GPUs peaks at 192 in live activations, its input included), so a
batch of eight 4K frames asked for about 18 GB. :func:`fit_to_memory` sizes three things to a budget,
once the frame size is known and the network is loaded:

1. the frame batch (frames restored together, and held by the stream and the pipeline's queues);
2. how many of those frames the detector takes at once (its results do not depend on it);
3. the detection size, lowered from ``--detect-size`` (1920 by default) only when the detector cannot take
   one frame at that size (then with a notice).

The budget is ``--max-memory``, else half the machine's RAM (less when less is available: a shared
machine) on the CPU and two fifths of the GPU's memory left free once the model is loaded (the face batches
take up to half of what is free: see :func:`vidrestore.engine.auto_batch_size`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch

from vidrestore.engine import FaceRestorer
from vidrestore.options import TemporalOptions

DETECT_BYTES_PER_PIXEL = 300  # detector activations per pixel it sees, float32
RESTORE_BYTES_PER_PIXEL = (
    48  # per frame in a restore batch: four float32 RGB copies (in, out, crop, download)
)
QUEUE_FRAMES = 2  # the pipeline's decode and encode queues, each ``max(2, frame_batch)`` deep
CPU_FIXED = 3 * 2**30  # libraries, the network and its face batches on the CPU
MIN_DETECT_SIZE = 640  # below this the detector misses most faces worth restoring


@dataclass(frozen=True)
class MemoryPlan:
    """What fits: the frame batch, the detector's batch, its picture size, and what the user should know."""

    budget: int  # bytes
    frame_batch: int
    detect_batch: int
    detect_size: int | None
    estimate: int  # bytes the frames are expected to take at the peak
    notices: tuple[str, ...] = ()


def default_budget(device: torch.device) -> int:
    """Half the RAM, or three quarters of what is available now if that is less (a shared machine); on a
    GPU, two fifths of its free memory (the model loaded, the face batches sized from the rest)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.4)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(min(total * 0.5, _available_ram() * 0.75))


def _available_ram() -> int:
    """MemAvailable from /proc/meminfo (Linux); elsewhere, the physical RAM."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def plan_memory(
    width: int,
    height: int,
    *,
    device: torch.device,
    temporal: TemporalOptions,
    budget: int | None = None,
    detect_size: int | None = None,
    upscale: int = 1,
    sample_bytes: int = 1,
    keep_batch: bool = False,
) -> MemoryPlan:
    """The largest frame batch (up to ``temporal.frame_batch``) and detector batch that fit ``budget``.

    ``sample_bytes`` is 1 for 8-bit sources and 2 for deeper ones (the frames are held in their own type).
    ``keep_batch`` keeps ``temporal.frame_batch`` whatever it costs (the VapourSynth filter's segments are
    built on it) and fits the detector around it.
    """
    budget = budget or default_budget(device)
    fixed = CPU_FIXED if device.type == "cpu" else 0
    pixels = width * height
    held_px = 3 * sample_bytes + 2  # a held frame: RGB samples, plus the decoded YUV frame beside it
    detect_px = pixels
    if detect_size is not None and max(width, height) > detect_size:
        detect_px = round(pixels * (detect_size / max(width, height)) ** 2)

    def held(batch: int) -> int:
        frames = 2 * batch + temporal.window + QUEUE_FRAMES * max(2, batch)
        return frames * pixels * held_px

    def restore(batch: int) -> int:
        return batch * pixels * RESTORE_BYTES_PER_PIXEL * upscale**2

    room = budget - fixed
    batch = temporal.frame_batch
    while not keep_batch and batch > 1 and held(batch) + restore(batch) > room:
        batch -= 1
    notices = []
    if batch < temporal.frame_batch:
        notices.append(
            f"frame batch {temporal.frame_batch} → {batch} to fit {width}x{height} frames in the memory "
            f"budget of {_gib(budget)} (--max-memory)"
        )
    left = room - held(batch)
    detect_batch = max(1, min(batch, left // (DETECT_BYTES_PER_PIXEL * detect_px)))
    if DETECT_BYTES_PER_PIXEL * detect_px > left:
        fits = max(
            MIN_DETECT_SIZE,
            int(max(width, height) * (max(left, 0) / (DETECT_BYTES_PER_PIXEL * pixels)) ** 0.5),
        )
        if detect_size is None or fits < detect_size:
            detect_size = fits
            detect_px = round(pixels * (fits / max(width, height)) ** 2)
            notices.append(
                f"detecting faces on a copy whose long side is {fits} px, to stay within the memory "
                f"budget of {_gib(budget)} (--max-memory, --detect-size)"
            )
    estimate = fixed + held(batch) + max(restore(batch), detect_batch * detect_px * DETECT_BYTES_PER_PIXEL)
    if estimate > budget:
        notices.append(
            f"{width}x{height} frames need about {_gib(estimate)} even one at a time, more than the memory "
            f"budget of {_gib(budget)}: expect swapping"
        )
    return MemoryPlan(budget, batch, int(detect_batch), detect_size, estimate, tuple(notices))


def fit_to_memory(
    engine: FaceRestorer,
    width: int,
    height: int,
    temporal: TemporalOptions,
    *,
    sample_bytes: int = 1,
    keep_batch: bool = False,
    upscale: int = 1,
) -> tuple[TemporalOptions, MemoryPlan]:
    """Plan for ``engine`` and apply the detector's part to it; returns the temporal options to use."""
    plan = plan_memory(
        width,
        height,
        device=engine.device,
        temporal=temporal,
        budget=engine.options.max_memory,
        detect_size=engine.options.detect_size,
        sample_bytes=sample_bytes,
        keep_batch=keep_batch,
        upscale=upscale,
    )
    engine.detect_batch, engine.detect_size = plan.detect_batch, plan.detect_size
    return replace(temporal, frame_batch=plan.frame_batch), plan


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"
