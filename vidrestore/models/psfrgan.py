"""PSFR-GAN (Chen et al., CVPR 2021): a SPADE generator guided by the face's own 19-class parsing map.

The released generator (``psfrgan_epoch15_net_G.pth``) is chaofengc/PSFRGAN ``models/psfrnet.py``
``PSFRGenerator`` with ``torch.nn.utils.spectral_norm`` on every conv; its parser
(``parse_multi_iter_90000.pth``) is :class:`vidrestore.models.parsenet.ParseNet`. :class:`PSFRGAN` wraps
both so that the engine calls it with the crop alone: parse the crop, one-hot the argmax, generate.

Names mirror the official modules so that the released files load with ``strict=True`` (upstream loads the
generator non-strictly; here a missing or extra key is an error naming it). The generator never encodes
the image: it grows a learned 16 px constant to 512 px, and the image enters only through SPADE, as the
22-channel reference [image, one-hot parsing], resized bicubically to each level.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vidrestore.errors import WeightsError
from vidrestore.models.checkpoint import build_strict, read_state_dict
from vidrestore.models.parsenet import ParseNet, load_parsenet

__all__ = ["PSFRConfig", "PSFRGAN", "PSFRGenerator", "SNConv2d", "infer_psfr_config", "load_psfrgan"]

_LRELU_SLOPE = 0.2


@dataclass(frozen=True)
class PSFRConfig:
    """Generator widths; the defaults are the official ``PSFRGenerator(3, 3, 512, 512, parse_ch=19)``.

    The official constructor derives the widths from sizes and a channel clip; listing them instead lets a
    smaller generator be read off its checkpoint.
    """

    min_feat_size: int = 16  # the learned constant's size
    channels: tuple[int, ...] = (1024, 512, 256, 128, 64, 32)  # the constant's width, then each ×2 stage's
    parse_ch: int = 19
    spade_ch: int = 64  # SPADE's hidden width

    @property
    def out_size(self) -> int:
        return self.min_feat_size * 2 ** (len(self.channels) - 1)


class SNConv2d(nn.Module):
    """A 3×3 ``nn.Conv2d`` under ``torch.nn.utils.spectral_norm``, as it computes in ``eval()``.

    The weight is ``weight_orig / sigma`` with ``sigma = u · (W v)`` from the *stored* ``weight_u`` and
    ``weight_v``: no power iteration, which would change the result. sigma and the division run in float32
    whatever the network's dtype, so 16-bit inference divides the same weight.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(cout))
        self.weight_orig = nn.Parameter(torch.empty(cout, cin, 3, 3))
        self.register_buffer("weight_u", torch.empty(cout))
        self.register_buffer("weight_v", torch.empty(cin * 9))

    def weight(self) -> torch.Tensor:
        w = self.weight_orig.float()
        sigma = torch.dot(self.weight_u.float(), torch.mv(w.reshape(w.shape[0], -1), self.weight_v.float()))
        return (w / sigma).to(self.weight_orig.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight(), self.bias, padding=1)


class SPADENorm(nn.Module):
    """``instance_norm(x) * gamma(ref) + beta(ref)`` (no "1 +"), from a conv + LeakyReLU on the reference."""

    def __init__(self, channels: int, ref_ch: int, hidden: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(SNConv2d(ref_ch, hidden), nn.LeakyReLU(_LRELU_SLOPE))
        self.gamma_conv = SNConv2d(hidden, channels)
        self.beta_conv = SNConv2d(hidden, channels)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``ref`` is already at ``x``'s size (the generator resizes it once per level)."""
        act = self.conv1(ref)
        return F.instance_norm(x, eps=1e-5) * self.gamma_conv(act) + self.beta_conv(act)


class SPADEResBlock(nn.Module):
    """``x + conv_1(lrelu(norm_1(conv_0(lrelu(norm_0(x, ref))), ref)))``."""

    def __init__(self, channels: int, ref_ch: int, hidden: int) -> None:
        super().__init__()
        self.conv_0 = SNConv2d(channels, channels)
        self.conv_1 = SNConv2d(channels, channels)
        self.norm_0 = SPADENorm(channels, ref_ch, hidden)
        self.norm_1 = SPADENorm(channels, ref_ch, hidden)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        res = self.conv_0(F.leaky_relu(self.norm_0(x, ref), _LRELU_SLOPE))
        return x + self.conv_1(F.leaky_relu(self.norm_1(res, ref), _LRELU_SLOPE))


class PSFRGenerator(nn.Module):
    """``forward(x, parsing)``: x RGB in [-1, 1] and its one-hot parsing map → restored RGB (not clamped)."""

    def __init__(self, config: PSFRConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or PSFRConfig()
        ch, ref_ch, hidden = config.channels, 3 + config.parse_ch, config.spade_ch
        self.const_input = nn.Parameter(torch.empty(1, ch[0], config.min_feat_size, config.min_feat_size))
        # ModuleLists number their members as the official nn.Sequentials do (index 0 of a stage is the
        # parameter-free nearest ×2 upsampling).
        # Registered in the official order (img_out first), so that state_dict() lists keys as upstream.
        self.img_out = SNConv2d(ch[-1], 3)
        self.head = nn.ModuleList([SNConv2d(ch[0], ch[0]), SPADEResBlock(ch[0], ref_ch, hidden)])
        self.body = nn.ModuleList(
            nn.ModuleList([nn.Upsample(scale_factor=2), SNConv2d(a, b), SPADEResBlock(b, ref_ch, hidden)])
            for a, b in zip(ch, ch[1:], strict=False)
        )

    def forward(self, x: torch.Tensor, parsing: torch.Tensor) -> torch.Tensor:
        ref = torch.cat((x, parsing), dim=1)

        def ref_at(feat: torch.Tensor) -> torch.Tensor:
            # Upstream resizes whenever the widths differ: bicubic, align_corners=False, no antialias.
            if feat.shape[-1] == ref.shape[-1]:
                return ref
            return F.interpolate(ref, feat.shape[2:], mode="bicubic", align_corners=False)

        feat = self.head[0](self.const_input.expand(x.shape[0], -1, -1, -1))
        feat = self.head[1](feat, ref_at(feat))
        for up, conv, block in self.body:
            feat = conv(up(feat))
            feat = block(feat, ref_at(feat))
        return self.img_out(feat)


class PSFRGAN(nn.Module):
    """The restorer the engine calls: ``forward(x)`` parses ``x``, one-hots the parsing and generates.

    The one-hot map is upstream's ``logits == max``, so an exact tie marks both classes, as there.
    """

    def __init__(self, generator: PSFRGenerator, parser: ParseNet) -> None:
        super().__init__()
        self.generator = generator
        self.parser = parser
        self.face_size = generator.config.out_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.parser.logits(x)
        onehot = (logits == logits.amax(dim=1, keepdim=True)).to(x.dtype)
        return self.generator(x, onehot)


def infer_psfr_config(state: dict[str, object]) -> PSFRConfig:
    """Read the generator's widths off a state dict's shapes; the official ones where a key is absent (the
    strict load afterwards names what is missing)."""

    def shape(key: str) -> tuple[int, ...] | None:
        v = state.get(key)
        return tuple(v.shape) if isinstance(v, torch.Tensor) else None

    const = shape("const_input")
    spade = shape("head.1.norm_0.conv1.0.weight_orig")
    n = len({k.split(".")[1] for k in state if k.startswith("body.")})
    stages = [shape(f"body.{i}.1.weight_orig") for i in range(n)]
    if const is None or len(const) != 4 or spade is None or len(spade) != 4 or None in stages:
        return PSFRConfig()
    return PSFRConfig(
        min_feat_size=const[-1],
        channels=(const[1], *(s[0] for s in stages)),
        parse_ch=spade[1] - 3,
        spade_ch=spade[0],
    )


def load_psfrgan(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: PSFRConfig | None = None,
    extra: Sequence[str | os.PathLike[str]] = (),
) -> PSFRGAN:
    """PSFR-GAN from its generator file ``path`` and its parser file ``extra[0]``, both strictly.

    Both released files are plain state dicts. Without a ``config`` the generator's widths are read off
    its checkpoint (the parser's always are), so smaller models load too.
    """
    path = Path(path)
    if len(extra) != 1:
        raise WeightsError("PSFR-GAN needs two weight files: the generator and its ParseNet")
    state = read_state_dict(path)
    if config is None:
        config = infer_psfr_config(state)
    elif not isinstance(config, PSFRConfig):
        raise WeightsError(f"PSFR-GAN needs a PSFRConfig, not a {type(config).__name__}")
    generator = build_strict(
        lambda: PSFRGenerator(config),
        state,
        f"{path.name} does not match the PSFR-GAN generator layout (out_size={config.out_size})",
        device=device,
        dtype=dtype,
    )
    parser = load_parsenet(extra[0], device=device, dtype=dtype)
    return PSFRGAN(generator, parser).eval()
