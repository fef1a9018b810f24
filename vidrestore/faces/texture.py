"""Texture that holds still along a track: each restored face averaged with its track's earlier ones.

A restoration network answers every frame's compression and sensor noise with different skin and hair
detail, so a still face shimmers while the shot around it does not. Faces of one track are aligned to the
same template, so their restored crops are nearly registered: each restored crop is averaged with the
restored crops of up to ``window`` earlier frames of its track and shot, each weighted per region by how
little the *source* changed there since that frame. The change is measured on the aligned input crops,
which carry the real motion and expression, not on the network's output, whose shimmer is what is removed;
a region that moved (a mouth that speaks, a face that turns) keeps only its current frame, so it does not
ghost. A finite window (not a recursive filter) keeps a frame's result a function of a fixed range of
frames before it, so the VapourSynth filter's segments give the CLI's result once they restore that range
first.

The change is measured on a 16x16 grid over the crop (a cell is about a quarter of the eye distance for
any face size, which averages the noise down), dilated by one cell so that the edge of a moving region
counts as moving. An earlier frame's weight per cell falls from 1 where the change is below ``STILL`` to 0
at ``MOVED`` (of 1.0); :mod:`benchmarks.bench_texture` chose both and the default window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vidrestore.faces.film import FilmContext

GRID = 16  # cells across the crop the change is measured on
STILL = 4.0 / 255  # mean change of a grid cell (of 1.0) below which an earlier frame counts fully
MOVED = 10.0 / 255  # ... and above which it does not count at all


@dataclass
class _Entry:
    """One earlier face of a track: where it was, its restored crop and its input crop on the grid."""

    frame: int
    shot: int
    restored: torch.Tensor  # (3, S, S)
    grid: torch.Tensor  # (3, GRID, GRID)


def stabilise_texture(
    restored: torch.Tensor,
    crops: torch.Tensor,
    frame_index: np.ndarray,
    context: FilmContext,
    window: int,
) -> torch.Tensor:
    """(N, 3, S, S) restored faces averaged with their tracks' earlier ones where the source held still.

    ``crops`` are the aligned source crops the network saw (any size: they are only measured), in the
    same face order; ``frame_index`` gives each face's frame in the batch. Earlier faces come from
    ``context.state`` (this batch's are added to it), so the result does not depend on how frames were
    batched. ``window`` 0 returns ``restored`` itself.
    """
    if window <= 0 or len(restored) == 0:
        return restored
    state = context.state.of("texture")
    grids = _grid(crops)
    out = restored.clone()
    averaged = []  # per face with history: the mean number of frames averaged
    for i in range(len(restored)):
        frame = int(context.frames[frame_index[i]])
        shot = int(context.shots[frame_index[i]])
        track = int(context.track_ids[i])
        entries = [e for e in state.get(track, []) if e.shot == shot and frame - window <= e.frame < frame]
        if entries:
            weights = torch.stack([_weight(grids[i], e.grid) for e in entries])  # (K, 1, GRID, GRID)
            weights = F.interpolate(weights, size=restored.shape[-2:], mode="bilinear", align_corners=False)
            history = torch.stack([e.restored for e in entries])
            total = 1 + weights.sum(0)
            out[i] = (restored[i] + (weights * history).sum(0)) / total
            averaged.append(total.mean())
        state[track] = [*entries, _Entry(frame, shot, restored[i].clone(), grids[i])]
    _forget(state, int(context.frames[-1]) - window)
    _report(context, len(restored), averaged, window)
    return out


def _grid(crops: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) → (N, 3, GRID, GRID) cell means: the noise averaged down, the motion kept."""
    return F.adaptive_avg_pool2d(crops.float(), GRID)


def _weight(now: torch.Tensor, then: torch.Tensor) -> torch.Tensor:
    """(1, GRID, GRID) weight of an earlier frame: 1 where the source did not change since, 0 where it did."""
    change = (now - then).abs().mean(0, keepdim=True)
    change = F.max_pool2d(change[None], 3, stride=1, padding=1)[0]  # a moving cell's neighbours move too
    return ((MOVED - change) / (MOVED - STILL)).clamp_(0, 1)


def _forget(state: dict, oldest: int) -> None:
    """Drop entries no later frame can use, and tracks left with none: memory stays bounded."""
    for track in list(state):
        kept = [e for e in state[track] if e.frame > oldest]
        if kept:
            state[track] = kept
        else:
            del state[track]


def _report(context: FilmContext, faces: int, averaged: list[torch.Tensor], window: int) -> None:
    """Count faces and the mean number of frames averaged into each, for ``--report``."""
    report = context.state.report.setdefault(
        "texture", {"window": window, "faces": 0, "faces_averaged": 0, "mean_frames_averaged": 0.0}
    )
    total = report["faces_averaged"] * report["mean_frames_averaged"]
    if averaged:
        total += float(torch.stack(averaged).sum())
    report["faces"] += faces
    report["faces_averaged"] += len(averaged)
    report["mean_frames_averaged"] = total / report["faces_averaged"] if report["faces_averaged"] else 0.0
