"""The paste mask of each face: the feathered square, or ParseNet's mask of the restored face over its track.

ParseNet segments the restored face, as the official pipeline does, so the mask follows what is pasted. On
video its labels flip at the edges of skin, hair and background from one frame to the next, and the mask
pops. Faces of one track are aligned to the same template, so their masks are nearly registered in crop
space: each track keeps an exponential average of its masks there (in ``context.state.of("masks")``),
started afresh at a cut, on the track's first face and after a gap. A still is its own track: its mask is
ParseNet's own.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from vidrestore.faces.film import FilmContext
from vidrestore.faces.paste import feather_mask

if TYPE_CHECKING:
    from vidrestore.faces.parsing import FaceParser

# Weight of a track's past in its averaged mask: a time constant of about 2.5 frames, which halved the
# frame-to-frame change of the mask on the benchmark's clips (``benchmarks/bench_masks.py``) while a turning
# face's mask follows within a few frames.
MEMORY = 0.6
# Frames after which an earlier mask weighs under 1/1024 in the average: the restored history a filter segment
# or a batch chunk needs before its first frame to paste as a whole run does (engine.film_history).
HISTORY = math.ceil(math.log(1 / 1024) / math.log(MEMORY))
# A track unseen for more frames than this starts afresh; its average is dropped so memory stays bounded.
GAP = 8


def face_masks(
    parser: FaceParser | None,
    restored: torch.Tensor,
    frame_index: np.ndarray,
    context: FilmContext,
) -> torch.Tensor:
    """The paste mask of each restored face (N, 1, S, S) or, without a parser, the one square (1, 1, S, S).

    ``frame_index`` gives each face's frame in the batch. The report's ``flicker_parsenet`` and
    ``flicker_averaged`` are the mean |change| of a track's mask from one frame to the next, before and
    after the averaging; ``held_vs_parsenet`` is how far the averaged mask is from the frame's own (its
    lag on a moving face).
    """
    size = restored.shape[-1]
    report = context.state.report.setdefault("masks", {"mask": "square" if parser is None else "parsenet"})
    if parser is None:
        return feather_mask(size, restored.device, torch.float32)
    return _average_along_tracks(parser.mask(restored).float(), frame_index, context, report)


def _average_along_tracks(
    masks: torch.Tensor, frame_index: np.ndarray, context: FilmContext, report: dict[str, Any]
) -> torch.Tensor:
    """Each face's mask averaged with its track's earlier ones, in frame order; flicker for the report."""
    tracks = context.state.of("masks")
    frames, shots = context.frames[frame_index], context.shots[frame_index]
    out = torch.empty_like(masks)
    raw_change = held_change = off_own = 0.0
    steps = held = 0
    for i in np.argsort(frames, kind="stable"):
        key = int(context.track_ids[i])
        frame, shot = int(frames[i]), int(shots[i])
        prev = tracks.get(key)
        if prev is None or prev["shot"] != shot or not 0 < frame - prev["frame"] <= GAP:
            out[i] = masks[i]
        else:
            out[i] = torch.lerp(masks[i], prev["held"], MEMORY)
            off_own += float((out[i] - masks[i]).abs().mean())
            held += 1
            if frame - prev["frame"] == 1:
                raw_change += float((masks[i] - prev["raw"]).abs().mean())
                held_change += float((out[i] - prev["held"]).abs().mean())
                steps += 1
        tracks[key] = {"frame": frame, "shot": shot, "raw": masks[i], "held": out[i]}
    latest = int(context.frames.max())
    for key in [k for k, v in tracks.items() if latest - v["frame"] > GAP]:
        del tracks[key]
    _accumulate(report, "flicker_steps", steps, flicker_parsenet=raw_change, flicker_averaged=held_change)
    _accumulate(report, "faces_averaged", held, held_vs_parsenet=off_own)
    return out


def _accumulate(report: dict[str, Any], count: str, n: int, **sums: float) -> None:
    """Running means over a run's batches: ``report[name]`` is the mean of ``sums[name]`` over ``count``."""
    if not n:
        return
    total = report.get(count, 0) + n
    for name, value in sums.items():
        report[name] = (report.get(name, 0.0) * (total - n) + value) / total
    report[count] = total
