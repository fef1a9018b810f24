"""Downscaling a face crop the way face super-resolution training data were made: PIL's bilinear halving.

CelebA-trained SR networks (PFSR) saw inputs made by ``transforms.Resize`` on 8-bit PIL images, one 2× step
at a time (128 → 64 → 32 → 16). PIL's bilinear filter is antialiased: an exact 2× reduction is the separable
kernel [1, 3, 3, 1] / 8 over input pixels 2i−1 … 2i+2, renormalised where it runs off the image ([3, 3, 1] / 7
at the edges), applied horizontally, rounded to 8 bits, then vertically, rounded again. Feeding the network
what its training pipeline produced, rather than a crop warped straight at 16 px (aliased, unquantised), is
the faithful choice. Done here in torch on the engine's device, for a whole batch at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["halve_like_pil"]

_TAPS = (1.0, 3.0, 3.0, 1.0)


def _halve_width(levels: torch.Tensor) -> torch.Tensor:
    """One horizontal 2× step on integer-valued (N, C, H, W) 8-bit levels, rounded half up as PIL does."""
    n, c, h, w = levels.shape
    k = torch.tensor(_TAPS, dtype=levels.dtype, device=levels.device).view(1, 1, 4)
    rows = F.pad(levels.reshape(n * c * h, 1, w), (1, 1))
    sums = F.conv1d(rows, k, stride=2)  # integer sums: exact in float32
    weights = F.conv1d(F.pad(torch.ones_like(levels[:1, :1, 0, :]), (1, 1)), k, stride=2)
    return torch.floor(sums / weights + 0.5).clamp_(0, 255).view(n, c, h, w // 2)


def halve_like_pil(crops: torch.Tensor, times: int) -> torch.Tensor:
    """(N, C, S, S) in [0, 1] → (N, C, S / 2**times, S / 2**times) in [0, 1], on 8-bit levels.

    The input is rounded to 8 bits first, as the training crops were 8-bit images; then each step is PIL's
    ``resize((S/2, S/2), BILINEAR)`` (horizontal pass, round, vertical pass, round). ``S`` must be divisible
    by ``2**times``.
    """
    size = crops.shape[-1]
    if size % (1 << times) or crops.shape[-2] != size:
        raise ValueError(f"cannot halve a {tuple(crops.shape[-2:])} crop {times} times")
    levels = torch.round(crops.float().clamp(0, 1) * 255)
    for _ in range(times):
        levels = _halve_width(levels)
        levels = _halve_width(levels.transpose(-1, -2)).transpose(-1, -2)
    return (levels / 255).to(crops.dtype)
