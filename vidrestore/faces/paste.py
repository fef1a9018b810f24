"""Paste restored faces back into their frames through soft masks, with no square seams.

The mask lives in crop space and is warped back with the face, so its feathering follows the face's
rotation and scale. Only the face's footprint in the frame is resampled, never the whole frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from vidrestore.faces.alignment import invert_affine, sampling_grid


def gaussian_blur(x: torch.Tensor, sigma: float, radius: int | None = None) -> torch.Tensor:
    """Separable Gaussian blur of (N, C, H, W) with zero padding (masks fade to zero at their edges)."""
    radius = int(3 * sigma + 0.5) if radius is None else radius
    if radius < 1:
        return x
    t = torch.arange(-radius, radius + 1, device=x.device, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = (k / k.sum()).to(x.dtype)
    c = x.shape[1]
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, radius), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(radius, 0), groups=c)


@lru_cache(maxsize=8)
def feather_mask(face_size: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """A square crop mask that fades out before the crop's edge: (1, 1, S, S).

    The border is a twentieth of the crop, blurred over about as much again, so that the restored
    face blends into the frame over a band, not at a hard square edge.
    """
    border = max(1, face_size // 20)
    m = torch.zeros(1, 1, face_size, face_size, device=device, dtype=torch.float32)
    m[..., border:-border, border:-border] = 1
    return gaussian_blur(m, face_size / 60).to(dtype)


def fill_padding(faces: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Faces whose pixels that came partly from the grey padding take their fully-inside neighbours' colour.

    ``inside`` (N, 1, S, S) is the part of each crop pixel that came from the frame. A frame pixel at the
    frame's edge samples the crop bilinearly, partly from crop pixels that straddle the edge; with their
    colour replaced, the face is pasted with its full mask right up to the edge, and no grey comes back in.
    The switch is a steep ramp (inside 0.99 → 1), not a step, so that a face crossing the edge changes
    the picture continuously.
    """
    weight = ((inside.float() - 0.99) * 100).clamp_(0, 1)
    if bool((weight == 1).all()):
        return faces
    num = F.avg_pool2d(faces.float() * weight, 5, stride=1, padding=2, count_include_pad=False)
    den = F.avg_pool2d(weight, 5, stride=1, padding=2, count_include_pad=False)
    extended = num / den.clamp(min=1e-6)
    return (faces.float() * weight + extended * (1 - weight)).to(faces.dtype)


def paste_faces(
    frames: torch.Tensor,
    frame_index: np.ndarray,
    affines: np.ndarray,
    faces: torch.Tensor | Sequence[torch.Tensor],
    alpha: torch.Tensor | Sequence[torch.Tensor],
    changed: torch.Tensor | None = None,
) -> None:
    """Blend ``faces`` (N, C, S, S) into ``frames`` (B, C, H, W) in place, with ``alpha`` (N, 1, S, S).

    ``faces`` and ``alpha`` may also be sequences of (C, S, S) and (1, S, S), one per face, each of its own
    size S (faces restored by different networks). ``affines`` (N, 2, 3) map frame pixels to crop pixels.
    Faces are pasted in order, so a later face covers an earlier one where they overlap. ``changed``
    (B, H, W) bool, if given, is set wherever the alpha is not zero, so a caller can keep every other pixel
    exactly as it was.
    """
    _, _, h, w = frames.shape
    crop_to_frame = invert_affine(affines)
    for i, b in enumerate(frame_index):
        s = faces[i].shape[-1]
        corners = np.array([[0, 0, 1], [s - 1, 0, 1], [0, s - 1, 1], [s - 1, s - 1, 1]], np.float64).T
        pts = crop_to_frame[i] @ corners
        x0, y0 = (max(0, int(np.floor(v.min())) - 1) for v in pts)
        x1, y1 = min(w, int(np.ceil(pts[0].max())) + 2), min(h, int(np.ceil(pts[1].max())) + 2)
        if x1 <= x0 or y1 <= y0:
            continue
        shift = np.array([[1, 0, x0], [0, 1, y0], [0, 0, 1]], np.float64)
        grid = sampling_grid((affines[i] @ shift)[None], (x1 - x0, y1 - y0), (s, s), frames.device)
        src = torch.cat([faces[i], alpha[i]])[None].to(frames.dtype)
        out = F.grid_sample(
            src, grid.to(frames.dtype), mode="bilinear", padding_mode="zeros", align_corners=False
        )
        a = out[0, -1:].clamp(0, 1)
        frames[b, :, y0:y1, x0:x1].lerp_(out[0, :-1], a)
        if changed is not None:
            changed[b, y0:y1, x0:x1] |= a[0] > 0
