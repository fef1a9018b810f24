"""GFPGANv1, the original paper architecture of the released ``GFPGANv1.pth`` (the "V1" model, which
also colourises grey faces), written for inference.

Module and attribute names mirror the official ``gfpgan/archs/gfpganv1_arch.py`` on BasicSR's
``stylegan2_arch.py``, so that the released state dict loads with ``strict=True``. What differs from
GFPGANv1Clean (:mod:`vidrestore.models.gfpgan`), and is therefore written here:

* equalized-learning-rate layers (``EqualConv2d``, ``EqualLinear``, the modulated convs) that scale their
  weights by ``1/sqrt(fan_in)`` at run time, and BasicSR's fused leaky ReLU (bias, LeakyReLU(0.2), times
  sqrt(2)), here in plain PyTorch instead of the CUDA extension;
* the U-Net's StyleGAN2-discriminator blocks: a [1, 3, 3, 1] FIR blur before each stride-2 conv, and
  bilinear-then-conv ``ConvUpLayer`` on the way up;
* the decoder's upsampling StyleConv: a stride-2 **transposed** modulated conv followed by a FIR blur (the
  clean model interpolates bilinearly), and ToRGB's skip upsampled by the FIR (``upfirdn2d``), not bilinearly.

The blur is :func:`upfirdn2d`, BasicSR's ``upfirdn2d_native`` computed separably. The convs without
upsampling go through :func:`vidrestore.kernels.modulated_conv2d`, whose math is the same once the weight is
pre-scaled and the fused activation's ``sqrt(2)`` is folded into the gain, noise strength and bias. As in the
clean model, the stored noise buffers are used unless ``randomize_noise=True``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vidrestore import kernels
from vidrestore.models.checkpoint import build_strict, infer_config, read_state_dict
from vidrestore.models.gfpgan import GFPGANBase, GFPGANConfig, NormStyleCode, StyleDecoder

__all__ = ["V1_CONFIG", "GFPGANv1", "load_gfpgan_v1", "upfirdn2d"]

# The official inference constructor (gfpgan/utils.py, arch='original'): the clean defaults but for the
# channel multiplier.
V1_CONFIG = GFPGANConfig(channel_multiplier=1)
LR_MLP = 0.01  # the style MLP's learning-rate multiplier, part of its forward (weights are stored divided)

_SLOPE = 0.2
_SQRT2 = math.sqrt(2)
_EPS = 1e-8
_RESAMPLE = (1.0, 3.0, 3.0, 1.0)


def upfirdn2d(x: torch.Tensor, gain: float, *, up: int = 1, pad: tuple[int, int]) -> torch.Tensor:
    """Upsample by zero insertion, pad, filter with the [1, 3, 3, 1] FIR kernel (outer product, summing to
    ``gain``); the same on both axes, each channel on its own (BasicSR's ``upfirdn2d_native``, down=1).

    The kernel is separable and symmetric, so it runs as 4 shifted multiply-adds per axis: as a conv, the
    one-channel filter is slow on the CPU (seconds per 512 face) for a negligible number of FLOPs.
    """
    batch, channels, height, width = x.shape
    if up > 1:
        spread = x.new_zeros(batch, channels, height * up, width * up)
        spread[:, :, ::up, ::up] = x
        x = spread
    x = F.pad(x, (pad[0], pad[1], pad[0], pad[1]))
    taps = [t * math.sqrt(gain) / sum(_RESAMPLE) for t in _RESAMPLE]
    for dim in (2, 3):
        n = x.shape[dim] - len(taps) + 1
        out = x.narrow(dim, 0, n) * taps[0]
        for i, tap in enumerate(taps[1:], 1):
            out.add_(x.narrow(dim, i, n), alpha=tap)
        x = out
    return x


class Blur(nn.Module):
    """The FIR smoothing around a resampling conv (BasicSR's ``UpFirDnSmooth``): no parameters."""

    def __init__(self, gain: float, pad: tuple[int, int]) -> None:
        super().__init__()
        self.gain = gain
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(x, self.gain, pad=self.pad)

    def extra_repr(self) -> str:
        return f"gain={self.gain}, pad={self.pad}"


class FusedLeakyReLU(nn.Module):
    """BasicSR's fused bias + LeakyReLU(0.2) + ``* sqrt(2)``; the bias is along dim 1 (channels)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x + self.bias.view(1, -1, *[1] * (x.ndim - 2))
        return F.leaky_relu_(out, _SLOPE).mul_(_SQRT2)


class ScaledLeakyReLU(nn.Module):
    """LeakyReLU(0.2) times sqrt(2), for layers without a bias."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, _SLOPE) * _SQRT2


class EqualConv2d(nn.Module):
    """A conv whose stored weight is N(0, 1) and scaled by ``1/sqrt(fan_in)`` on every call."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        bias: bool = True,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.stride = stride
        self.padding = padding
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.full((out_channels,), bias_init)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, self.bias, stride=self.stride, padding=self.padding)


class EqualLinear(nn.Module):
    """A linear layer with run-time weight scale ``lr_mul/sqrt(in)``, bias times ``lr_mul``, optionally the
    fused leaky ReLU (on the last dim)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias_init: float = 0.0,
        lr_mul: float = 1.0,
        act: bool = False,
    ) -> None:
        super().__init__()
        self.lr_mul = lr_mul
        self.act = act
        self.scale = lr_mul / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), bias_init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The output scaled rather than the weight: final_linear's weight has 33 M elements.
        out = torch.add(self.bias * self.lr_mul, F.linear(x, self.weight), alpha=self.scale)
        return F.leaky_relu(out, _SLOPE) * _SQRT2 if self.act else out


class ConvLayer(nn.Sequential):
    """[blur,] EqualConv2d, activation: the StyleGAN2-discriminator layer (indices as in the checkpoint).

    With ``downsample`` the conv has stride 2 and no padding, after a blur padded for its kernel size. With
    ``activate`` the bias belongs to the fused activation, not to the conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        downsample: bool = False,
        bias: bool = True,
        activate: bool = True,
    ) -> None:
        layers: list[nn.Module] = []
        if downsample:
            pad = len(_RESAMPLE) - 2 + kernel_size - 1
            layers.append(Blur(1.0, ((pad + 1) // 2, pad // 2)))
        stride, padding = (2, 0) if downsample else (1, kernel_size // 2)
        layers.append(
            EqualConv2d(in_channels, out_channels, kernel_size, stride, padding, bias=bias and not activate)
        )
        if activate:
            layers.append(FusedLeakyReLU(out_channels) if bias else ScaledLeakyReLU())
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Down block: conv3x3, blur + stride-2 conv3x3, plus a blur + stride-2 1x1 skip; the sum over sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=True)
        self.skip = ConvLayer(in_channels, out_channels, 1, downsample=True, bias=False, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / _SQRT2


class ConvUpLayer(nn.Module):
    """Bilinear x2 (align_corners=False), then an equalized conv, then the fused activation if any."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, activate: bool) -> None:
        super().__init__()
        self.padding = kernel_size // 2
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.activation = FusedLeakyReLU(out_channels) if activate else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        out = F.conv2d(out, self.weight * self.scale, padding=self.padding)
        return out if self.activation is None else self.activation(out)


class ResUpBlock(nn.Module):
    """Up block: conv3x3, then ConvUpLayer 3x3, plus a 1x1 ConvUpLayer skip; the sum over sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3)
        self.conv2 = ConvUpLayer(in_channels, out_channels, 3, activate=True)
        self.skip = ConvUpLayer(in_channels, out_channels, 1, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / _SQRT2


class ModulatedConv2d(nn.Module):
    """StyleGAN2's modulated conv with equalized lr; with ``upsample``, a stride-2 transposed conv + blur.

    Like the clean model's layer it runs one shared-weight conv for the whole batch: the style scales the
    input channels and the demodulation is a (B, C_out) factor on the output, which commutes with the blur.
    """

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
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        self.kernel_impl = "auto"  # see vidrestore.kernels.set_kernel_impl (the convs without upsampling)
        self.modulation = EqualLinear(num_style_feat, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))

    def forward(self, x: torch.Tensor, style: torch.Tensor, **epilogue: Any) -> torch.Tensor:
        """``epilogue``: the keyword arguments of vidrestore.kernels.modulated_conv2d after ``padding``."""
        return kernels.modulated_conv2d(
            x,
            self.weight[0] * self.scale,
            self.modulation(style),
            demodulate=self.demodulate,
            upsample=False,
            padding=self.padding,
            impl=self.kernel_impl,
            **epilogue,
        )

    def forward_up(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """The transposed conv (output 2H+1), blurred back to 2H, then demodulated."""
        weight = self.weight[0] * self.scale
        style = self.modulation(style)
        if x.dtype == torch.float16:
            # As in the clean model's fp16 path: the un-demodulated conv must not overflow, and demodulation
            # cancels these per-sample and per-output-channel factors.
            weight = weight / weight.abs().amax(dim=(1, 2, 3), keepdim=True)
            style = style / style.abs().amax(dim=1, keepdim=True)
        out = F.conv_transpose2d(x * style.view(*style.shape, 1, 1), weight.transpose(0, 1), stride=2)
        ks = weight.shape[-1]
        pad = len(_RESAMPLE) - 2 - (ks - 1)
        out = upfirdn2d(out, 4.0, pad=((pad + 1) // 2 + 1, pad // 2 + 1))
        weight_sq = weight.float().square().sum(dim=(2, 3))  # (C_out, C_in)
        demod = torch.rsqrt(style.float().square() @ weight_sq.T + _EPS)
        return out.mul_(demod.to(out.dtype).view(*demod.shape, 1, 1))

    def extra_repr(self) -> str:
        _, c_out, c_in, k, _ = self.weight.shape
        return f"{c_in}, {c_out}, kernel_size={k}, demodulate={self.demodulate}, upsample={self.upsample}"


class StyleConv(nn.Module):
    """Modulated conv, ``+ weight * noise``, then the fused activation (its bias), then CS-SFT if given."""

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
            in_channels, out_channels, kernel_size, num_style_feat, upsample=upsample
        )
        self.weight = nn.Parameter(torch.zeros(1))  # noise strength
        self.activate = FusedLeakyReLU(out_channels)

    def forward(
        self,
        x: torch.Tensor,
        style: torch.Tensor,
        noise: torch.Tensor | None,
        sft: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``noise``: a stored (1, 1, H, W) map, or None for fresh per-sample noise. ``sft`` = (scale, shift)
        modulates the last ``scale.shape[1]`` channels as ``x*scale + shift``."""
        if noise is None:
            batch, _, height, width = x.shape
            size = (2 * height, 2 * width) if self.modulated_conv.upsample else (height, width)
            noise = torch.randn(batch, 1, *size, dtype=x.dtype, device=x.device)
        if not self.modulated_conv.upsample:
            # lrelu(y) * sqrt(2) == lrelu(y * sqrt(2)): the kernel's gain carries the activation's factor.
            return self.modulated_conv(
                x,
                style,
                gain=_SQRT2,
                noise=noise,
                noise_weight=self.weight * _SQRT2,
                bias=self.activate.bias * _SQRT2,
                negative_slope=_SLOPE,
                sft=sft,
            )
        out = self.activate(self.modulated_conv.forward_up(x, style) + self.weight * noise)
        if sft is None:
            return out
        scale, shift = sft
        start = out.shape[1] - scale.shape[1]
        modulated = torch.addcmul(shift, out[:, start:], scale)
        return modulated if start == 0 else torch.cat([out[:, :start], modulated], dim=1)


class ToRGB(nn.Module):
    """1x1 modulated conv (no demodulation) plus bias, plus the previous RGB upsampled by the FIR."""

    def __init__(self, in_channels: int, num_style_feat: int, upsample: bool = True) -> None:
        super().__init__()
        self.upsample = upsample
        self.modulated_conv = ModulatedConv2d(in_channels, 3, 1, num_style_feat, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None and self.upsample:
            skip = upfirdn2d(skip, 4.0, up=2, pad=(2, 1))
        return self.modulated_conv(x, style, bias=self.bias.view(-1), skip=skip, channels_last=False)


class StyleGAN2GeneratorSFT(StyleDecoder):
    """BasicSR's StyleGAN2 generator: an equalized-lr mapping network, transposed-conv upsampling."""

    def __init__(self, config: GFPGANConfig) -> None:
        feat = config.num_style_feat
        style_mlp = nn.Sequential(
            NormStyleCode(),
            *(EqualLinear(feat, feat, lr_mul=LR_MLP, act=True) for _ in range(config.num_mlp)),
        )
        super().__init__(config, style_mlp, StyleConv, ToRGB)


def _sft_branch(channels: int, sft_half: bool, bias_init: float) -> nn.Sequential:
    """EqualConv3x3, scaled lrelu, EqualConv3x3 on a U-Net feature (the scale branch's bias starts at 1)."""
    return nn.Sequential(
        EqualConv2d(channels, channels, 3, padding=1),
        ScaledLeakyReLU(),
        EqualConv2d(channels, channels if sft_half else 2 * channels, 3, padding=1, bias_init=bias_init),
    )


class GFPGANv1(GFPGANBase):
    """U-Net degradation remover whose features drive a StyleGAN2 decoder through W codes and CS-SFT."""

    def __init__(self, config: GFPGANConfig = V1_CONFIG) -> None:
        super().__init__()
        self.config = config

        def unet_ch(res: int) -> int:
            return config.channels(res, narrow=config.narrow * 0.5)

        log_size = config.log_size
        self.conv_body_first = ConvLayer(3, unet_ch(config.out_size), 1)
        self.conv_body_down = nn.ModuleList(
            ResBlock(unet_ch(2**i), unet_ch(2 ** (i - 1))) for i in range(log_size, 2, -1)
        )
        self.final_conv = ConvLayer(unet_ch(4), unet_ch(4), 3)
        ups = range(3, log_size + 1)
        self.conv_body_up = nn.ModuleList(ResUpBlock(unet_ch(2 ** (i - 1)), unet_ch(2**i)) for i in ups)
        self.toRGB = nn.ModuleList(EqualConv2d(unet_ch(2**i), 3, 1) for i in ups)  # training-only heads
        num_w = config.num_latent if config.different_w else 1
        self.final_linear = EqualLinear(unet_ch(4) * 4 * 4, num_w * config.num_style_feat)
        self.stylegan_decoder = StyleGAN2GeneratorSFT(config)
        self.condition_scale = nn.ModuleList(_sft_branch(unet_ch(2**i), config.sft_half, 1.0) for i in ups)
        self.condition_shift = nn.ModuleList(_sft_branch(unet_ch(2**i), config.sft_half, 0.0) for i in ups)

    def _first(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_body_first(x)  # activated inside (ConvLayer)

    def _last(self, feat: torch.Tensor) -> torch.Tensor:
        return self.final_conv(feat)


def load_gfpgan_v1(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: GFPGANConfig | None = None,
) -> GFPGANv1:
    """Build GFPGANv1 from a checkpoint file, strictly, in eval mode with gradients off.

    The weights are ``params_ema`` (what the official inference reads), else ``params``, else a bare state
    dict. Without a ``config`` the layout is read off the checkpoint's shapes, as for the clean model.
    """
    path = Path(path)
    state = read_state_dict(path)
    if config is None:
        config = infer_config(state, V1_CONFIG)
    return build_strict(
        lambda: GFPGANv1(config),
        state,
        f"{path.name} does not match the GFPGANv1 (out_size={config.out_size}) layout",
        device=device,
        dtype=dtype,
    )
