"""GFPGANv1Clean (the architecture of the released GFPGAN v1.3 / v1.4 weights), written for inference.

Module and attribute names mirror the official implementation so that the published state dicts load with
``strict=True``; the forward pass is restructured for batched, deterministic, mixed-precision inference:

* the modulated conv scales activations and runs one shared-weight conv for the whole batch instead of
  building a per-sample weight tensor for a grouped conv, with StyleConv's and ToRGB's epilogues fused: one
  call of :func:`vidrestore.kernels.modulated_conv2d` per layer, Triton or PyTorch by ``kernel_impl`` (see
  :func:`vidrestore.kernels.set_kernel_impl`);
* the stored noise buffers are used unless ``randomize_noise=True``, so a face gives the same output on every
  call (fresh noise per frame is a source of video flicker);
* the U-Net's intermediate ``toRGB`` heads are kept for checkpoint compatibility but not computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidrestore import kernels

__all__ = [
    "ConstantInput",
    "GFPGANConfig",
    "GFPGANv1Clean",
    "ModulatedConv2d",
    "NormStyleCode",
    "ResBlock",
    "StyleConv",
    "StyleGAN2GeneratorCSFT",
    "ToRGB",
]

_LRELU_SLOPE = 0.2
_EPS = 1e-8
_SQRT2 = math.sqrt(2)


@dataclass(frozen=True)
class GFPGANConfig:
    """Constructor arguments of GFPGANv1Clean; the defaults are the official v1.3 / v1.4 inference ones."""

    out_size: int = 512
    num_style_feat: int = 512
    channel_multiplier: int = 2
    num_mlp: int = 8
    input_is_latent: bool = True
    different_w: bool = True
    narrow: float = 1
    sft_half: bool = True

    def __post_init__(self) -> None:
        if self.out_size < 8 or self.out_size > 1024 or self.out_size & (self.out_size - 1):
            raise ValueError(f"out_size must be a power of two in [8, 1024], got {self.out_size}")

    @property
    def log_size(self) -> int:
        return int(math.log2(self.out_size))

    @property
    def num_latent(self) -> int:
        """Number of W codes the decoder consumes: two for 4 px, then two per doubling."""
        return self.log_size * 2 - 2

    def channels(self, resolution: int, narrow: float | None = None) -> int:
        """StyleGAN2 channels at ``resolution`` (the U-Net passes ``narrow * 0.5``), truncated as upstream."""
        narrow = self.narrow if narrow is None else narrow
        if resolution <= 32:
            return int(512 * narrow)
        return int(16384 // resolution * self.channel_multiplier * narrow)


class NormStyleCode(nn.Module):
    """Pixel-norm of the style code along dim 1 (as upstream, also when given a (B, N, C) code)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + _EPS)


class ModulatedConv2d(nn.Module):
    """The checkpoint's ``modulation`` Linear and (1, C_out, C_in, k, k) ``weight``, and the layer's one call
    of :func:`vidrestore.kernels.modulated_conv2d` (with the owner's epilogue), run with ``kernel_impl``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        num_style_feat: int,
        demodulate: bool = True,
        upsample: bool = False,
    ) -> None:
        super().__init__()
        self.demodulate = demodulate
        self.upsample = upsample
        self.padding = kernel_size // 2
        self.kernel_impl = "auto"  # see vidrestore.kernels.set_kernel_impl
        self.modulation = nn.Linear(num_style_feat, in_channels)
        nn.init.normal_(self.modulation.weight, std=1 / math.sqrt(num_style_feat))
        nn.init.ones_(self.modulation.bias)  # styles start at 1: the conv starts as a plain conv
        fan_in = in_channels * kernel_size**2
        self.weight = nn.Parameter(
            torch.randn(1, out_channels, in_channels, kernel_size, kernel_size) / math.sqrt(fan_in)
        )

    def forward(self, x: torch.Tensor, style: torch.Tensor, **epilogue: Any) -> torch.Tensor:
        """``epilogue``: the keyword arguments of vidrestore.kernels.modulated_conv2d after ``padding``."""
        return kernels.modulated_conv2d(
            x,
            self.weight[0],
            self.modulation(style),
            demodulate=self.demodulate,
            upsample=self.upsample,
            padding=self.padding,
            impl=self.kernel_impl,
            **epilogue,
        )

    def extra_repr(self) -> str:
        _, c_out, c_in, k, _ = self.weight.shape
        return (
            f"{c_in}, {c_out}, kernel_size={k}, demodulate={self.demodulate}, upsample={self.upsample}, "
            f"kernel_impl={self.kernel_impl!r}"
        )


class StyleConv(nn.Module):
    """Modulated conv, then ``* sqrt(2) + weight * noise + bias`` and LeakyReLU(0.2), in one op call."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        num_style_feat: int,
        upsample: bool = False,
    ) -> None:
        super().__init__()
        self.modulated_conv = ModulatedConv2d(
            in_channels, out_channels, kernel_size, num_style_feat, demodulate=True, upsample=upsample
        )
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.bias = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(
        self,
        x: torch.Tensor,
        style: torch.Tensor,
        noise: torch.Tensor | None,
        sft: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``noise`` is a stored (1, 1, H, W) map shared by the batch, or None for fresh per-sample noise.

        ``sft`` = (scale, shift) applies the CS-SFT ``x*scale + shift`` to the last ``scale.shape[1]`` output
        channels; with sft_half that is half of them, the first half passing unchanged (realism).
        """
        if noise is None:  # drawn here, so that every impl gets the same noise for one seed
            batch, _, height, width = x.shape
            size = (2 * height, 2 * width) if self.modulated_conv.upsample else (height, width)
            noise = torch.randn(batch, 1, *size, dtype=x.dtype, device=x.device)
        return self.modulated_conv(
            x,
            style,
            gain=_SQRT2,
            noise=noise,
            noise_weight=self.weight,
            bias=self.bias.view(-1),
            negative_slope=_LRELU_SLOPE,
            sft=sft,
        )


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) to RGB plus bias, added to the upsampled previous RGB."""

    def __init__(self, in_channels: int, num_style_feat: int, upsample: bool = True) -> None:
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(in_channels, 3, 1, num_style_feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        return self.modulated_conv(
            x,
            style,
            bias=self.bias.view(-1),
            skip=skip,
            skip_upsample=self.upsample,
            channels_last=False,
        )


class ConstantInput(nn.Module):
    """The learned 4x4 input of the generator."""

    def __init__(self, num_channel: int, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, num_channel, size, size))

    def forward(self, batch: int) -> torch.Tensor:
        return self.weight.expand(batch, -1, -1, -1)


class StyleDecoder(nn.Module):
    """The StyleGAN2 decoder both GFP-GAN architectures share, with the checkpoints' layer names and order:
    each passes its own mapping network and its StyleConv and ToRGB layer classes. The first conv at each
    resolution >= 8 px is followed by a (channel-split) SFT."""

    def __init__(
        self,
        config: GFPGANConfig,
        style_mlp: nn.Module,
        style_conv: type[nn.Module],
        to_rgb: type[nn.Module],
    ) -> None:
        super().__init__()
        feat = config.num_style_feat
        self.style_mlp = style_mlp
        ch = config.channels
        self.constant_input = ConstantInput(ch(4), size=4)
        self.style_conv1 = style_conv(ch(4), ch(4), 3, feat)
        self.to_rgb1 = to_rgb(ch(4), feat, upsample=False)

        self.style_convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channels = ch(4)
        for res in (2**i for i in range(3, config.log_size + 1)):
            self.style_convs.append(style_conv(in_channels, ch(res), 3, feat, upsample=True))
            self.style_convs.append(style_conv(ch(res), ch(res), 3, feat))
            self.to_rgbs.append(to_rgb(ch(res), feat))
            in_channels = ch(res)

        # One fixed noise map per StyleConv (4 px, then two per resolution); buffers, so checkpointed.
        self.noises = nn.Module()
        for idx in range(len(self.style_convs) + 1):
            res = 2 ** ((idx + 5) // 2)
            self.noises.register_buffer(f"noise{idx}", torch.randn(1, 1, res, res))

    def forward(
        self, latent: torch.Tensor, conditions: list[tuple[torch.Tensor, torch.Tensor]], randomize_noise: bool
    ) -> torch.Tensor:
        """``latent`` is (B, num_latent, C); ``conditions`` is one (scale, shift) pair per resolution >= 8."""
        fresh: list[torch.Tensor | None] = [None] * (len(self.style_convs) + 1)
        noises = fresh if randomize_noise else list(self.noises.buffers())
        out = self.style_conv1(self.constant_input(latent.shape[0]), latent[:, 0], noises[0])
        skip = self.to_rgb1(out, latent[:, 1])
        for level, (scale, shift) in enumerate(conditions):
            i = 2 * level + 1
            out = self.style_convs[i - 1](out, latent[:, i], noises[i], sft=(scale, shift))
            out = self.style_convs[i](out, latent[:, i + 1], noises[i + 1])
            skip = self.to_rgbs[level](out, latent[:, i + 2], skip)
        return skip


class StyleGAN2GeneratorCSFT(StyleDecoder):
    """The clean decoder: a plain Linear + LeakyReLU mapping network, bilinear-upsampling convs."""

    def __init__(self, config: GFPGANConfig) -> None:
        feat = config.num_style_feat
        mlp: list[nn.Module] = [NormStyleCode()]
        for _ in range(config.num_mlp):
            linear = nn.Linear(feat, feat)
            nn.init.kaiming_normal_(linear.weight, a=_LRELU_SLOPE, nonlinearity="leaky_relu")
            nn.init.zeros_(linear.bias)
            mlp += [linear, nn.LeakyReLU(_LRELU_SLOPE, inplace=True)]
        # indices 1, 3, ... are in the checkpoint
        super().__init__(config, nn.Sequential(*mlp), StyleConv, ToRGB)


class ResBlock(nn.Module):
    """conv3x3, lrelu, bilinear resample, conv3x3, lrelu, plus a resampled 1x1 bias-free skip."""

    def __init__(self, in_channels: int, out_channels: int, scale_factor: float) -> None:
        super().__init__()
        self.scale_factor = scale_factor
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale_factor, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.conv1(x), _LRELU_SLOPE, inplace=True)
        out = F.leaky_relu(self.conv2(self._resample(out)), _LRELU_SLOPE, inplace=True)
        return out + self.skip(self._resample(x))


def _sft_branch(channels: int, sft_half: bool) -> nn.Sequential:
    """conv3x3, lrelu, conv3x3 on a U-Net feature; it modulates half the decoder channels, or all of them."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, 1, 1),
        nn.LeakyReLU(_LRELU_SLOPE, inplace=True),
        nn.Conv2d(channels, channels if sft_half else 2 * channels, 3, 1, 1),
    )


class GFPGANBase(nn.Module):
    """The forward pass both GFP-GAN architectures share: U-Net down, W codes, U-Net up with the CS-SFT
    conditions, StyleGAN2 decoder. Subclasses own the layers and say how the U-Net's ends are activated."""

    config: GFPGANConfig

    def _first(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _last(self, feat: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, randomize_noise: bool = False) -> torch.Tensor:
        """Restore (B, 3, S, S) RGB faces in [-1, 1] to the raw ToRGB sum (not clamped, no tanh).

        Deterministic by default: the stored noise buffers are used; ``randomize_noise=True`` draws fresh
        noise, as the official GFPGANer does.
        """
        cfg = self.config
        if x.ndim != 4 or x.shape[1:] != (3, cfg.out_size, cfg.out_size):
            raise ValueError(f"expected a (B, 3, {cfg.out_size}, {cfg.out_size}) input, got {tuple(x.shape)}")
        feat = self._first(x)
        skips = []
        for block in self.conv_body_down:
            feat = block(feat)
            skips.append(feat)
        feat = self._last(feat)

        batch = x.shape[0]
        latent = self.final_linear(feat.flatten(1)).view(batch, -1, cfg.num_style_feat)  # (B, N or 1, C)
        if not cfg.input_is_latent:
            # Upstream maps the code in the shape it has: (B, C) for one shared W, (B, N, C) with different_w.
            code = latent if cfg.different_w else latent[:, 0]
            latent = self.stylegan_decoder.style_mlp(code).view(batch, -1, cfg.num_style_feat)
        latent = latent.expand(-1, cfg.num_latent, -1)

        conditions = []
        for block, to_scale, to_shift, skip in zip(
            self.conv_body_up, self.condition_scale, self.condition_shift, reversed(skips), strict=True
        ):
            feat = block(feat + skip)
            conditions.append((to_scale(feat), to_shift(feat)))
        return self.stylegan_decoder(latent, conditions, randomize_noise)

    @property
    def face_size(self) -> int:
        """The crop size this network restores (the engine's :class:`~vidrestore.models.Restorer` view)."""
        return self.config.out_size


class GFPGANv1Clean(GFPGANBase):
    """U-Net degradation remover whose features drive a StyleGAN2 decoder through W codes and CS-SFT."""

    def __init__(self, config: GFPGANConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or GFPGANConfig()

        def unet_ch(res: int) -> int:
            return config.channels(res, narrow=config.narrow * 0.5)

        log_size = config.log_size
        self.conv_body_first = nn.Conv2d(3, unet_ch(config.out_size), 1)
        self.conv_body_down = nn.ModuleList(
            ResBlock(unet_ch(2**i), unet_ch(2 ** (i - 1)), 0.5) for i in range(log_size, 2, -1)
        )
        self.final_conv = nn.Conv2d(unet_ch(4), unet_ch(4), 3, 1, 1)
        ups = range(3, log_size + 1)
        self.conv_body_up = nn.ModuleList(ResBlock(unet_ch(2 ** (i - 1)), unet_ch(2**i), 2) for i in ups)
        self.toRGB = nn.ModuleList(nn.Conv2d(unet_ch(2**i), 3, 1) for i in ups)  # training-only heads
        num_w = config.num_latent if config.different_w else 1
        self.final_linear = nn.Linear(unet_ch(4) * 4 * 4, num_w * config.num_style_feat)
        self.stylegan_decoder = StyleGAN2GeneratorCSFT(config)
        self.condition_scale = nn.ModuleList(_sft_branch(unet_ch(2**i), config.sft_half) for i in ups)
        self.condition_shift = nn.ModuleList(_sft_branch(unet_ch(2**i), config.sft_half) for i in ups)

    def _first(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv_body_first(x), _LRELU_SLOPE, inplace=True)

    def _last(self, feat: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.final_conv(feat), _LRELU_SLOPE, inplace=True)
