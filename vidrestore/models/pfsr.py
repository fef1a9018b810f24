"""Progressive Face Super-Resolution (Kim et al., BMVC 2019): the 8× generator, 16 px face in, 128 px out.

Parameter and buffer names are those of the official ``model.Generator`` (DeokyunKim/Progressive-Face-Super-
Resolution, ``model.py``), so the released ``generator_checkpoint_singleGPU.ckpt`` loads with ``strict=True``
(the official demo loads it with ``strict=False``, which would accept a file that sets no weight at all).

Three progressive steps of 2× each. Inference runs all three (``step=3, alpha=1``); steps 1 and 2 and the
fade-in blend (``0 <= alpha < 1``) are the training schedule's, kept because the official forward has them and
the parity fixture checks them.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidrestore.errors import VidrestoreError
from vidrestore.models.checkpoint import build_strict, read_state_dict

__all__ = ["EqualConv2d", "PFSRGenerator", "ResBlock", "load_pfsr"]

IN_SIZE = 16
SCALE = 8


class _EqualLRConv(nn.Module):
    """A 3×3 conv whose stored ``weight_orig`` is scaled by sqrt(2 / fan_in) on every call.

    The official code gets this with a forward pre-hook on ``nn.Conv2d`` (rosinality's equalized learning
    rate, He gain); only ``bias`` and ``weight_orig`` are in the state dict, in that order.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 3, padding: int = 1) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.weight_orig = nn.Parameter(torch.empty(out_ch, in_ch, kernel_size, kernel_size))
        self.padding = padding
        self.gain = math.sqrt(2 / (in_ch * kernel_size * kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight_orig * self.gain, self.bias, padding=self.padding)


class EqualConv2d(nn.Module):
    """The official wrapper (its child ``conv`` gives the checkpoint's ``….conv.weight_orig`` names)."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = _EqualLRConv(in_ch, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ResBlock(nn.Module):
    """``x + ReLU(BN(conv(ReLU(BN(conv(x))))))``: the second ReLU comes before the skip, as upstream."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            EqualConv2d(dim, dim),
            nn.BatchNorm2d(dim),
            nn.ReLU(),
            EqualConv2d(dim, dim),
            nn.BatchNorm2d(dim),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + x


def _up(in_ch: int, out_ch: int) -> list[nn.Module]:
    """2× up: transposed conv (k4 s2 p1), BN, ReLU."""
    return [nn.ConvTranspose2d(in_ch, out_ch, 4, stride=2, padding=1), nn.BatchNorm2d(out_ch), nn.ReLU()]


class PFSRGenerator(nn.Module):
    """The official ``Generator``: (N, 3, 16, 16) RGB in [-1, 1] → (N, 3, 128, 128), no tanh, no clamp."""

    face_size = IN_SIZE
    scale = SCALE

    def __init__(self) -> None:
        super().__init__()
        self.to_rgb = nn.ModuleList([nn.Conv2d(c, 3, 1) for c in (256, 128, 64)])
        self.step1 = nn.Sequential(
            nn.Conv2d(3, 512, 3, padding=1), nn.BatchNorm2d(512), nn.ReLU(), ResBlock(512), *_up(512, 256)
        )
        self.step2 = nn.Sequential(ResBlock(256), *_up(256, 128))
        self.step3 = nn.Sequential(ResBlock(128), *_up(128, 64))

    def forward(self, x: torch.Tensor, step: int = 3, alpha: float = 1.0) -> torch.Tensor:
        """Output at 16·2^step px (step 1, 2, anything else = 3, as upstream).

        With ``0 <= alpha < 1`` (steps 2 and 3) the last step fades in over the nearest-upsampled RGB of the
        step before, as during progressive training; otherwise the last step's RGB alone.
        """
        if step not in (1, 2):
            step = 3
        stages = (self.step1, self.step2, self.step3)[:step]
        prev = x
        for stage in stages[:-1]:
            prev = stage(prev)
        out = self.to_rgb[step - 1](stages[-1](prev))
        if step > 1 and 0 <= alpha < 1:
            skip = F.interpolate(self.to_rgb[step - 2](prev), scale_factor=2, mode="nearest")
            out = (1 - alpha) * skip + alpha * out
        return out


def load_pfsr(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: Any = None,
) -> PFSRGenerator:
    """The generator from a released checkpoint, strictly, in eval mode with gradients off.

    The released files are ``{model_state_dict, step, alpha, iteration}`` (the distributed one with
    ``module.`` keys); a bare state dict works too. The architecture has one configuration, so ``config``
    must be None. The training counters beside the weights are not used: inference is step 3, alpha 1.
    """
    if config is not None:
        raise VidrestoreError(f"PFSR has a single configuration; got model_config={config!r}")
    path = Path(path)
    return build_strict(
        PFSRGenerator,
        read_state_dict(path),
        f"{path.name} does not match the PFSR generator layout",
        device=device,
        dtype=dtype,
    )
