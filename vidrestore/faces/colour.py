"""The colour of a restored face: matched to the source face, kept from it, or the network's own; and faces
of black-and-white pictures kept exactly neutral.

GFP-GAN shifts skin tones and paints colour onto grey faces. Step (3) of :meth:`FaceRestorer.restore` works
on the restored crops against the source crops, under the face mask:

- ``match``: the restored face's mean luma and its mean and deviation of each chroma channel become the
  source face's (weighted by the mask), so the skin tone is the film's while luma detail and contrast stay the
  network's;
- ``keep``: luma from the restored face, chroma from the source crop;
- ``restore``: the network's colour as it is.

The engine does not know the matrix a frame was decoded with, so one luma definition is used throughout:
BT.709 (Y = 0.2126 R + 0.7152 G + 0.0722 B), with Cb, Cr its scaled blue and red differences. Both are
computed from the differences R - G and B - G, so a grey pixel (R = G = B) has chroma exactly 0 and comes
back exactly grey.

**Black and white.** A frame is neutral when at most 0.1 % of its pixels (every fourth row and column) have
channels more than 3/255 apart; a shot is black and white while every frame of it seen so far is neutral
(``context.shots``: re-checked at every cut, so a colour shot after a black-and-white one is colour), and a
face is kept neutral when its shot is and its own source crop is too. Such a face gets chroma exactly 0, so a
neutral source stays neutral to the last code value in the file. Only ``--color restore`` with a colourising
model (``ModelSpec.colourises``) adds colour to it. The first :data:`LEAD_IN` frames the engine sees (2 s at
24 fps; the stream hands it only batches with faces) decide whether the notice and the report say the source
starts black and white or a later shot is. Shots that ended are dropped from the state as the next begins.
The faces kept neutral in the current batch are in ``state.of("colour")["neutral"]``: a later step that adds
per-channel noise (grain) must add the same noise to all three channels of those faces.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np
import torch

from vidrestore.faces.film import FilmContext

COLOUR_MODES: Final = ("match", "restore", "keep")

# BT.709 luma weights (red, blue); green's is what is left.
_WR, _WB = 0.2126, 0.0722
_WG = 1 - _WR - _WB
_CB, _CR = 2 * (1 - _WB), 2 * (1 - _WR)  # B - Y = _CB * Cb, R - Y = _CR * Cr

NEUTRAL_TOLERANCE: Final = 3 / 255  # largest channel difference a neutral pixel may have
NEUTRAL_FRACTION: Final = 1e-3  # share of pixels allowed past it (a speck of colour, a burnt-in logo)
LEAD_IN: Final = 48  # frames: the start of a stream, for the notice
_STEP = 4  # a frame's neutrality is measured on every fourth row and column
_GAIN = (0.0, 2.0)  # the chroma deviation gain of ``match``: never more than doubled
_EPS = 1e-6


def adds_colour(mode: str, colourises: bool) -> bool:
    """Whether a grey face may come back in colour: only a colourising model, and only when asked."""
    return mode == "restore" and colourises


def to_ycc(rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, 3, H, W) RGB → luma (N, 1, H, W), chroma (N, 2, H, W) [Cb, Cr]; grey gets chroma 0 exactly."""
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    dr, db = r - g, b - g
    y = g + _WR * dr + _WB * db
    return y, torch.cat([(db - _WR * dr - _WB * db) / _CB, (dr - _WR * dr - _WB * db) / _CR], dim=1)


def from_ycc(y: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Undo :func:`to_ycc`; chroma 0 gives R = G = B = Y exactly."""
    b_y, r_y = c[:, 0:1] * _CB, c[:, 1:2] * _CR
    return torch.cat([y + r_y, y - (_WR * r_y + _WB * b_y) / _WG, y + b_y], dim=1)


def colourful(rgb: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
    """(N,) share of the pixels (of those ``where`` (N, 1, H, W) is set) whose channels are not neutral."""
    spread = rgb.amax(dim=1, keepdim=True) - rgb.amin(dim=1, keepdim=True)
    over = spread > NEUTRAL_TOLERANCE
    if where is None:
        return over.flatten(1).float().mean(dim=1)
    return (over & where).flatten(1).sum(dim=1) / where.flatten(1).sum(dim=1).clamp(min=1)


def _moments(x: torch.Tensor, w: torch.Tensor, total: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and deviation per face and channel: (N, C, 1, 1) each."""
    mean = (x * w).sum(dim=(2, 3), keepdim=True) / total
    var = ((x - mean) ** 2 * w).sum(dim=(2, 3), keepdim=True) / total
    return mean, var.sqrt()


def match_colour(
    restored: tuple[torch.Tensor, torch.Tensor],
    source: tuple[torch.Tensor, torch.Tensor],
    weight: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The restored faces' (luma, chroma) given the source faces' mean luma and chroma mean and deviation.

    Luma keeps the network's detail and contrast (only its mean moves); each chroma channel is shifted and
    scaled, the gain bounded so that a nearly grey restored face does not have its noise blown up. Statistics
    are weighted by ``weight`` (the face mask).
    """
    (y, c), (sy, sc) = restored, source
    total = weight.sum(dim=(2, 3), keepdim=True).clamp(min=_EPS)
    my, _ = _moments(y, weight, total)
    msy, _ = _moments(sy, weight, total)
    mc, dc = _moments(c, weight, total)
    msc, dsc = _moments(sc, weight, total)
    gain = (dsc / dc.clamp(min=_EPS)).clamp(*_GAIN)
    return y - my + msy, (c - mc) * gain + msc


def chroma_difference(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """(N,) mean distance of chroma ``a`` from ``b`` (N, 2, H, W) under ``weight``, in 8-bit code values."""
    d = ((a[:, :1] - b[:, :1]) ** 2 + (a[:, 1:] - b[:, 1:]) ** 2).sqrt_() * 255
    return (d * weight).sum(dim=(1, 2, 3)) / weight.sum(dim=(1, 2, 3)).clamp(min=_EPS)


def _neutral_shots(state: dict[Any, Any], context: FilmContext, frames: torch.Tensor) -> np.ndarray:
    """(B,) whether each frame's shot is black and white, from every frame of it seen so far.

    Measured once per batch: ``--model auto`` colours each network's faces of the same frames in turn.
    """
    if (last := state.get("batch")) is not None and np.array_equal(last[0], context.frames):
        return last[1]
    neutral = (colourful(frames[:, :, ::_STEP, ::_STEP]) <= NEUTRAL_FRACTION).cpu().numpy()
    shots: dict[int, bool] = state.setdefault("shots", {})
    for shot, ok in zip(context.shots.tolist(), neutral.tolist(), strict=True):
        if shot not in shots:
            state["shots_seen"] = state.get("shots_seen", 0) + 1
        shots[shot] = shots.get(shot, True) and ok
    for shot in [s for s in shots if s < context.shots.min()]:  # shots only move forward
        state["neutral_shots"] = state.get("neutral_shots", 0) + shots.pop(shot)
    seen = state.get("frames_seen", 0)
    lead = neutral[: max(0, LEAD_IN - seen)]
    state["lead_in_neutral"] = state.get("lead_in_neutral", True) and bool(lead.all())
    state["frames_seen"] = seen + len(neutral)
    result = np.array([shots[s] for s in context.shots.tolist()])
    state["batch"] = (context.frames.copy(), result)
    return result


def colour_faces(
    restored: torch.Tensor,
    crops: torch.Tensor,
    weight: torch.Tensor,
    frames: torch.Tensor,
    frame_index: np.ndarray,
    context: FilmContext,
    mode: str,
    colourises: bool,
) -> torch.Tensor:
    """Step (3) of the engine: the restored crops (N, 3, S, S) given their colour per ``mode``.

    ``crops`` are the source faces at the same size, ``weight`` (N or 1, 1, S, S) the face mask times the part
    of each crop that came from the frame, ``frames`` (B, 3, H, W) the batch's frames and ``frame_index`` the
    frame of each face. Per-shot findings live in ``context.state.of("colour")``; the report gets the mean
    chroma distance to the source face before and after, and how many faces and shots were kept neutral.
    """
    state = context.state.of("colour")
    weight = weight.expand(len(restored), 1, -1, -1)
    shot_neutral = torch.from_numpy(_neutral_shots(state, context, frames)[frame_index]).to(restored.device)
    face_neutral = shot_neutral & (colourful(crops, weight > 0.5) <= NEUTRAL_FRACTION)
    y, c = to_ycc(restored)
    source = to_ycc(crops)
    before = chroma_difference(c, source[1], weight)
    grey = torch.zeros_like(face_neutral) if adds_colour(mode, colourises) else face_neutral
    if mode == "restore" and not grey.any():
        out, after = restored, before
    else:
        if mode == "match":
            y, c = match_colour((y, c), source, weight)
        elif mode == "keep":
            c = source[1]
        c = torch.where(grey.view(-1, 1, 1, 1), 0.0, c)
        out = from_ycc(y, c).clamp_(0, 1)
        if mode == "restore":
            out = torch.where(grey.view(-1, 1, 1, 1), out, restored)
        after = chroma_difference(to_ycc(out)[1], source[1], weight)
    _account(state, context, mode, face_neutral, grey, before, after)
    state["neutral"] = grey  # per face of this batch: the grain step must keep these faces grey too
    return out


def _account(
    state: dict[Any, Any],
    context: FilmContext,
    mode: str,
    face_neutral: torch.Tensor,
    grey: torch.Tensor,
    before: torch.Tensor,
    after: torch.Tensor,
) -> None:
    """Running totals for ``--report`` and the one-time notices."""
    faces = state.get("faces", 0) + len(grey)
    state["faces"] = faces
    state["grey_faces"] = state.get("grey_faces", 0) + int(grey.sum())
    for key, value in (("before", before), ("after", after)):
        state[key] = state.get(key, 0.0) + float(value.sum())
    open_shots = sum(state["shots"].values())
    context.state.report["colour"] = {
        "mode": mode,
        "faces": faces,
        "faces_kept_neutral": state["grey_faces"],
        "shots": state["shots_seen"],
        "black_and_white_shots": state.get("neutral_shots", 0) + open_shots,
        "black_and_white_start": state["lead_in_neutral"],
        "chroma_difference_network": round(state["before"] / max(1, faces), 3),
        "chroma_difference_out": round(state["after"] / max(1, faces), 3),
    }
    if bool(grey.any()):
        where = "source" if state["lead_in_neutral"] else "shot"
        context.state.notice(
            f"black-and-white {where} (neutral chroma): its faces are kept exactly neutral; only "
            "--color restore with a colourising model (gfpgan-v1) adds colour"
        )
    elif bool(face_neutral.any()):
        context.state.notice("black-and-white faces colourised by the model, as --color restore asks")
