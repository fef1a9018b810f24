"""ParseNet: the 19-class face parser of PSFR-GAN, also released by facexlib for paste-back masks.

PSFR-GAN's ``parse_multi_iter_90000.pth`` and facexlib's ``parsing_parsenet.pth`` share this one architecture
(same state-dict layout, bit-identical outputs), so PSFR-GAN's restorer and the engine's parsing masks both
use this module. Names mirror chaofengc/PSFRGAN ``models/networks.py`` / ``models/blocks.py`` so that either
file loads with ``strict=True``. The classes (index 0 first): background, skin, nose, eye_g, l_eye, r_eye,
l_brow, r_brow, l_ear, r_ear, mouth, u_lip, l_lip, hair, hat, ear_r, neck_l, neck, cloth.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vidrestore.errors import WeightsError
from vidrestore.models.checkpoint import build_strict, read_state_dict

__all__ = ["ParseNet", "ParseNetConfig", "infer_parsenet_config", "load_parsenet"]

_LRELU_SLOPE = 0.2


@dataclass(frozen=True)
class ParseNetConfig:
    """Widths of the layers; the defaults are the official ``ParseNet(512, 512, 32, 64, 19)``.

    The official constructor derives these from sizes and a channel clip; listing them instead lets a
    smaller network be read off its checkpoint.
    """

    encoder: tuple[int, ...] = (64, 128, 256, 256, 256)  # the stem's width, then each stride-2 block's
    res_depth: int = 10  # residual blocks at the bottom width
    decoder: tuple[int, ...] = (256, 256, 128, 64)  # each ×2 block's width
    parsing_ch: int = 19


class _BatchNorm(nn.Module):
    """The official NormLayer wrapper, kept for its ``norm.norm.*`` key names."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x)


class ConvLayer(nn.Module):
    """Nearest ×2 (``up``), reflection pad 1, 3×3 conv (stride 2 for ``down``), BatchNorm, LeakyReLU(0.2).

    As upstream, the conv has no bias exactly when a BatchNorm follows it.
    """

    def __init__(
        self, cin: int, cout: int, *, scale: str = "none", norm: bool = False, act: bool = False
    ) -> None:
        super().__init__()
        self.scale = scale
        self.act = act
        self.conv2d = nn.Conv2d(cin, cout, 3, 2 if scale == "down" else 1, bias=not norm)
        self.norm = _BatchNorm(cout) if norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == "up":
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = self.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"))
        if self.norm is not None:
            x = self.norm(x)
        return F.leaky_relu(x, _LRELU_SLOPE) if self.act else x


class ResidualBlock(nn.Module):
    """``shortcut(x) + conv2(conv1(x))``; the shortcut is a plain ConvLayer when the block rescales or
    changes width, else the identity. ``down`` strides in conv2, ``up`` upsamples in conv1, as upstream."""

    def __init__(self, cin: int, cout: int, scale: str = "none") -> None:
        super().__init__()
        self.shortcut_func = (
            ConvLayer(cin, cout, scale=scale) if scale != "none" or cin != cout else nn.Identity()
        )
        self.conv1 = ConvLayer(cin, cout, scale="up" if scale == "up" else "none", norm=True, act=True)
        self.conv2 = ConvLayer(cout, cout, scale="down" if scale == "down" else "none", norm=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut_func(x) + self.conv2(self.conv1(x))


class ParseNet(nn.Module):
    """Encoder → ``feat + body(feat)`` → decoder → (parsing logits, image); input RGB in [-1, 1]."""

    def __init__(self, config: ParseNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ParseNetConfig()
        enc = config.encoder
        self.encoder = nn.Sequential(
            ConvLayer(3, enc[0]), *(ResidualBlock(a, b, "down") for a, b in zip(enc, enc[1:], strict=False))
        )
        self.body = nn.Sequential(*(ResidualBlock(enc[-1], enc[-1]) for _ in range(config.res_depth)))
        dec = (enc[-1], *config.decoder)
        self.decoder = nn.Sequential(*(ResidualBlock(a, b, "up") for a, b in zip(dec, dec[1:], strict=False)))
        self.out_img_conv = ConvLayer(dec[-1], 3)
        self.out_mask_conv = ConvLayer(dec[-1], config.parsing_ch)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.encoder(x)
        return self.decoder(feat + self.body(feat))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The parsing logits alone (what inference uses; the image head is skipped)."""
        return self.out_mask_conv(self.features(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, image), as the official forward returns them."""
        x = self.features(x)
        return self.out_mask_conv(x), self.out_img_conv(x)


def infer_parsenet_config(state: dict[str, object]) -> ParseNetConfig:
    """Read the widths off a state dict's shapes; the official ones where a key is absent (the strict load
    afterwards names what is missing)."""

    def out_ch(key: str) -> int | None:
        v = state.get(key)
        return v.shape[0] if isinstance(v, torch.Tensor) and v.dim() == 4 else None

    def widths(prefix: str) -> list[int | None]:
        idx = sorted(
            {int(k.split(".")[1]) for k in state if k.startswith(prefix) and k.split(".")[1].isdigit()}
        )
        return [out_ch(f"{prefix}{i}.conv1.conv2d.weight") for i in idx]

    stem = out_ch("encoder.0.conv2d.weight")
    down = widths("encoder.")[1:]
    up = widths("decoder.")
    mask = out_ch("out_mask_conv.conv2d.weight")
    depth = len({k.split(".")[1] for k in state if k.startswith("body.")})
    if stem is None or mask is None or None in down or None in up or not up:
        return ParseNetConfig()
    return ParseNetConfig(encoder=(stem, *down), res_depth=depth, decoder=tuple(up), parsing_ch=mask)


def load_parsenet(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: ParseNetConfig | None = None,
) -> ParseNet:
    """ParseNet from a plain state-dict file (either release), strictly; widths read off it if no config."""
    path = Path(path)
    state = read_state_dict(path)
    if config is None:
        config = infer_parsenet_config(state)
    elif not isinstance(config, ParseNetConfig):
        raise WeightsError(f"ParseNet needs a ParseNetConfig, not a {type(config).__name__}")
    return build_strict(
        lambda: ParseNet(config),
        state,
        f"{path.name} does not match the ParseNet layout",
        device=device,
        dtype=dtype,
    )
