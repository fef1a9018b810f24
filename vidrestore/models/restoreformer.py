"""RestoreFormer (GFP-GAN's release) and RestoreFormer++: one VQ-VAE with multi-head cross-attention.

Both releases are the same network, configured differently: a convolutional encoder with self-attention at
16 px, a nearest-code lookup in a 1024-entry codebook, and a decoder whose attention blocks take their queries
from the encoder's features (the degraded face) and their keys and values from the decoder's own stream (the
high-quality codes). RestoreFormer has 8 heads and attends at 16 px; RestoreFormer++ has 4 heads and also
attends at 32 px (``ex_multi_scale_num=1`` upstream). Module names follow the official code
(``gfpgan/archs/restoreformer_arch.py``, ``RestoreFormer/modules/vqvae/vqvae_arch.py``) so that the released
state dicts load with ``strict=True``.

For inference:

* the nearest-code distances are computed as upstream (``|z|² + |e|² − 2 z·eᵀ``) and always in float32, so
  fp16 / bf16 runs pick the codes an fp32 run picks instead of ones decided by rounding;
* only the encoder features the decoder's attention reads are kept;
* the official attention is computed with ``scaled_dot_product_attention``, same scale, same head split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vidrestore.errors import VidrestoreError
from vidrestore.models.checkpoint import build_strict, read_state_dict

__all__ = [
    "RESTOREFORMER",
    "RESTOREFORMER_PLUSPLUS",
    "RestoreFormer",
    "RestoreFormerConfig",
    "infer_config",
    "load_restoreformer",
    "load_restoreformer_plusplus",
    "read_restoreformer_state",
]

_GROUPS = 32  # GroupNorm groups of every norm upstream
_LATENT = 16  # the released models' latent grid (16 px at 512): where their attention sits


@dataclass(frozen=True)
class RestoreFormerConfig:
    """Constructor arguments of the official VQVAEGANMultiHeadTransformer, as inference needs them.

    ``attn_resolutions`` are where the encoder attends (and the decoder, upstream's ``attn_resolutions``);
    ``decoder_attn_resolutions`` adds the decoder's extra scales (RestoreFormer++: 32 px). ``head_size`` is
    the number of heads; it is not in a checkpoint, so each release's loader gives its own.
    """

    n_embed: int = 1024
    embed_dim: int = 256
    ch: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4, 8)
    num_res_blocks: int = 2
    resolution: int = 512
    attn_resolutions: tuple[int, ...] = (16,)
    decoder_attn_resolutions: tuple[int, ...] = (16,)
    z_channels: int = 256
    in_channels: int = 3
    out_ch: int = 3
    head_size: int = 8

    def __post_init__(self) -> None:
        widths = [self.ch * m for m in self.ch_mult]
        if not self.ch_mult or any(w <= 0 or w % _GROUPS or w % self.head_size for w in widths):
            raise ValueError(
                f"every level's channels must be a positive multiple of {_GROUPS} and of head_size "
                f"{self.head_size}, got {widths}"
            )
        if self.z_channels % _GROUPS or self.resolution % 2 ** (len(self.ch_mult) - 1):
            raise ValueError(f"z_channels must be a multiple of {_GROUPS} and resolution of 2^(levels - 1)")

    def level_resolution(self, level: int) -> int:
        return self.resolution >> level

    def decoder_attends(self, level: int) -> bool:
        res = self.level_resolution(level)
        return res in self.attn_resolutions or res in self.decoder_attn_resolutions


RESTOREFORMER = RestoreFormerConfig()  # GFPGAN's RestoreFormer(): head_size 8
RESTOREFORMER_PLUSPLUS = RestoreFormerConfig(head_size=4, decoder_attn_resolutions=(16, 32))


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_GROUPS, channels, eps=1e-6)


def _conv(c_in: int, c_out: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, k, padding=k // 2)


class ResnetBlock(nn.Module):
    """GroupNorm → swish → conv, twice, plus the input (through a 1×1 conv when the width changes)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.norm1 = _norm(c_in)
        self.conv1 = _conv(c_in, c_out)
        self.norm2 = _norm(c_out)
        self.conv2 = _conv(c_out, c_out)
        if c_in != c_out:
            self.nin_shortcut = _conv(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class MultiHeadAttnBlock(nn.Module):
    """Multi-head attention over all positions: queries from ``norm2(y)`` when ``y`` is given (cross), else
    from ``norm1(x)``; keys and values from ``norm1(x)``; output ``x + proj_out(attention)``.

    Channels split into heads with the head outermost (channel = head · att_size + j), as upstream.
    ``norm2`` exists in the self-attention blocks too (unused there), as in the released checkpoints.
    """

    def __init__(self, channels: int, head_size: int) -> None:
        super().__init__()
        self.head_size = head_size
        self.norm1 = _norm(channels)
        self.norm2 = _norm(channels)
        self.q = _conv(channels, channels, 1)
        self.k = _conv(channels, channels, 1)
        self.v = _conv(channels, channels, 1)
        self.proj_out = _conv(channels, channels, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.norm1(x)
        q = self.q(h if y is None else self.norm2(y))
        b, c, height, width = q.shape
        att = c // self.head_size

        def heads(t: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, heads, HW, att)
            return t.reshape(b, self.head_size, att, height * width).transpose(2, 3)

        out = F.scaled_dot_product_attention(heads(q), heads(self.k(h)), heads(self.v(h)), scale=att**-0.5)
        return x + self.proj_out(out.transpose(2, 3).reshape(b, c, height, width))


class Downsample(nn.Module):
    """Zero padding on the right and bottom, then a stride-2 3×3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour ×2, then a 3×3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = _conv(channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class _Mid(nn.Module):
    def __init__(self, channels: int, head_size: int) -> None:
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels)
        self.attn_1 = MultiHeadAttnBlock(channels, head_size)
        self.block_2 = ResnetBlock(channels, channels)


class _Level(nn.Module):
    """One resolution: ResnetBlocks, each followed by its attention block where the level has them."""

    def __init__(self, c_in: int, c_out: int, blocks: int, attends: bool, head_size: int) -> None:
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(c_in if i == 0 else c_out, c_out) for i in range(blocks))
        self.attn = nn.ModuleList(MultiHeadAttnBlock(c_out, head_size) for _ in range(blocks) if attends)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if self.attn:
                x = self.attn[i](x, context)
        return x


class MultiHeadEncoder(nn.Module):
    """Convolutional encoder with self-attention at ``attn_resolutions``; also returns the features the
    decoder's cross-attention reads."""

    def __init__(self, config: RestoreFormerConfig, keep: tuple[int, ...]) -> None:
        super().__init__()
        self._keep = keep  # levels whose output (before its downsample) a decoder attention reads
        ch, mult, last = config.ch, config.ch_mult, len(config.ch_mult) - 1
        self.conv_in = _conv(config.in_channels, ch)
        self.down = nn.ModuleList()
        for i in range(last + 1):
            level = _Level(
                ch * (1, *mult)[i],
                ch * mult[i],
                config.num_res_blocks,
                config.level_resolution(i) in config.attn_resolutions,
                config.head_size,
            )
            if i != last:
                level.downsample = Downsample(ch * mult[i])
            self.down.append(level)
        self.mid = _Mid(ch * mult[-1], config.head_size)
        self.norm_out = _norm(ch * mult[-1])
        self.conv_out = _conv(ch * mult[-1], config.z_channels)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The latent, and the kept features: ``block_<level>``, ``block_<last>_atten`` (after the middle's
        first block) and ``mid_atten`` (after the middle), upstream's names."""
        features = {}
        h = self.conv_in(x)
        for i, level in enumerate(self.down):
            h = level(h)
            if hasattr(level, "downsample"):
                if i in self._keep:
                    features[f"block_{i}"] = h
                h = level.downsample(h)
        h = self.mid.block_1(h)
        features[f"block_{len(self.down) - 1}_atten"] = h
        h = self.mid.block_2(self.mid.attn_1(h))
        features["mid_atten"] = h
        return self.conv_out(F.silu(self.norm_out(h))), features


class MultiHeadDecoderTransformer(nn.Module):
    """Decoder whose attention blocks cross-attend to the encoder's features of the same scale."""

    def __init__(self, config: RestoreFormerConfig) -> None:
        super().__init__()
        ch, mult, last = config.ch, config.ch_mult, len(config.ch_mult) - 1
        self.conv_in = _conv(config.z_channels, ch * mult[-1])
        self.mid = _Mid(ch * mult[-1], config.head_size)
        levels = []
        for i in reversed(range(last + 1)):
            c_in = ch * mult[min(i + 1, last)]
            attends = config.decoder_attends(i)
            level = _Level(c_in, ch * mult[i], config.num_res_blocks + 1, attends, config.head_size)
            if i != 0:
                level.upsample = Upsample(ch * mult[i])
            levels.insert(0, level)
        self.up = nn.ModuleList(levels)
        self.norm_out = _norm(ch * mult[0])
        self.conv_out = _conv(ch * mult[0], config.out_ch)

    def forward(self, z: torch.Tensor, features: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.mid.block_1(self.conv_in(z))
        h = self.mid.block_2(self.mid.attn_1(h, features["mid_atten"]))
        for i in reversed(range(len(self.up))):
            level = self.up[i]
            context = None
            if level.attn:  # upstream: the middle's first block at the last level, else the level's output
                context = features.get(f"block_{i}_atten", features.get(f"block_{i}"))
            h = level(h, context)
            if i != 0:
                h = level.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class VectorQuantizer(nn.Module):
    """Nearest codebook entry per latent position."""

    def __init__(self, n_embed: int, embed_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(n_embed, embed_dim)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, H, W) latent → its quantised latent and the (B, H, W) code indices.

        Distances are upstream's ``|z|² + |e|² − 2 z·eᵀ`` in float32 with the first minimum, so the same
        codes win as in the official fp32 run; the result keeps upstream's straight-through form
        ``z + (e − z)``, which rounds like the official output.
        """
        b, c, h, w = z.shape
        flat = z.permute(0, 2, 3, 1).reshape(-1, c).float()
        codebook = self.embedding.weight.float()
        d = flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2 * flat @ codebook.t()
        indices = d.argmin(1)
        z_q = (flat + (codebook[indices] - flat)).to(z.dtype)
        return z_q.reshape(b, h, w, c).permute(0, 3, 1, 2), indices.reshape(b, h, w)


class RestoreFormer(nn.Module):
    """The official VQVAEGANMultiHeadTransformer (and GFPGAN's RestoreFormer) for inference.

    ``forward(x)`` maps RGB faces in [-1, 1] to restored faces (no tanh, no clamp: the engine clamps).
    """

    def __init__(self, config: RestoreFormerConfig = RESTOREFORMER) -> None:
        super().__init__()
        self.config = config
        last = len(config.ch_mult) - 1
        keep = tuple(i for i in range(last) if config.decoder_attends(i))
        self.encoder = MultiHeadEncoder(config, keep)
        self.decoder = MultiHeadDecoderTransformer(config)
        self.quantize = VectorQuantizer(config.n_embed, config.embed_dim)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, 1)

    @property
    def face_size(self) -> int:
        return self.config.resolution

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """The quantised latent, its code indices (B, H, W) and the encoder features for the decoder."""
        z, features = self.encoder(x)
        z_q, indices = self.quantize(self.quant_conv(z))
        return z_q, indices, features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z_q, _, features = self.encode(x)
        return self.decoder(self.post_quant_conv(z_q), features)


def read_restoreformer_state(path: str | os.PathLike[str]) -> dict[str, object]:
    """The network's weights from GFP-GAN's ``RestoreFormer.pth`` (``params_ema`` / ``params``) or from a
    RestoreFormer++ Lightning checkpoint (``state_dict``, the network's keys prefixed ``vqvae.``).

    The official RestoreFormer++ loader strips ``vqvae.`` and loads with ``strict=False``, which ignores the
    Lightning module's only other part: its training losses under ``loss.`` (LPIPS, the discriminators,
    ArcFace). Exactly those keys are dropped here; every other key must fit strictly. By its size
    (294,028,815 bytes for 73.5 M float32 parameters) the released ``RestoreFormer++.ckpt`` holds the network
    alone, but a training checkpoint with its losses loads too, as upstream.
    """
    state = read_state_dict(path)
    if any(str(k).startswith("vqvae.") for k in state):
        state = {str(k).removeprefix("vqvae."): v for k, v in state.items() if not str(k).startswith("loss.")}
    return state


def infer_config(state: dict[str, object], preset: RestoreFormerConfig) -> RestoreFormerConfig:
    """Read the widths, depth and codebook off a state dict's shapes; heads and attention from ``preset``.

    The face size is the one that puts the latent at 16 px, as in the released models, where ``preset``'s
    attention sits. The head count is not stored, and the attention placement is what tells the releases
    apart, so a RestoreFormer file given to the RestoreFormer++ loader is refused by the strict load rather
    than run as something it is not. Falls back to ``preset`` where a key it needs is absent or the shapes
    make no valid network, so that the strict load names what is wrong instead of this function failing.
    """

    def shape(key: str) -> tuple[int, ...] | None:
        v = state.get(key)
        return tuple(v.shape) if isinstance(v, torch.Tensor) else None

    def count(pattern: str) -> int:
        n = 0
        while pattern.format(n) in state:
            n += 1
        return n

    conv_in, z = shape("encoder.conv_in.weight"), shape("encoder.conv_out.weight")
    codebook, rgb = shape("quantize.embedding.weight"), shape("decoder.conv_out.weight")
    levels = count("encoder.down.{}.block.0.conv1.weight")
    if conv_in is None or z is None or codebook is None or rgb is None or levels == 0:
        return preset
    ch = conv_in[0]
    widths = [shape(f"encoder.down.{i}.block.0.conv1.weight")[0] for i in range(levels)]
    try:
        return replace(
            preset,
            n_embed=codebook[0],
            embed_dim=codebook[1],
            ch=ch,
            ch_mult=tuple(w // ch for w in widths),
            num_res_blocks=count("encoder.down.0.block.{}.conv1.weight"),
            resolution=_LATENT << (levels - 1),
            z_channels=z[0],
            in_channels=conv_in[1],
            out_ch=rgb[0],
        )
    except ValueError:
        return preset


def _load(
    path: str | os.PathLike[str],
    preset: RestoreFormerConfig,
    arch: str,
    device: str | torch.device,
    dtype: torch.dtype,
    config: RestoreFormerConfig | None,
) -> RestoreFormer:
    if config is not None and not isinstance(config, RestoreFormerConfig):
        raise VidrestoreError(
            f"{arch} takes a RestoreFormerConfig as model_config, not {type(config).__name__}"
        )
    path = Path(path)
    state = read_restoreformer_state(path)
    config = config or infer_config(state, preset)
    return build_strict(
        lambda: RestoreFormer(config),
        state,
        f"{path.name} does not match the {arch} layout",
        device=device,
        dtype=dtype,
    )


def load_restoreformer(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: RestoreFormerConfig | None = None,
) -> RestoreFormer:
    """RestoreFormer (8 heads) from a checkpoint, strictly, in eval mode with gradients off.

    GFP-GAN's ``RestoreFormer.pth`` (loaded strictly upstream too) and the RestoreFormer++ repository's
    ``RestoreFormer.ckpt`` (same network, Lightning wrapper) both load. Without ``config`` the layout is read
    off the checkpoint (:func:`infer_config`), so smaller or fine-tuned models load as well.
    """
    return _load(path, RESTOREFORMER, "RestoreFormer", device, dtype, config)


def load_restoreformer_plusplus(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: RestoreFormerConfig | None = None,
) -> RestoreFormer:
    """RestoreFormer++ (4 heads, decoder attention at 16 and 32 px) from a checkpoint, strictly.

    Upstream loads non-strictly; here every missing, unexpected or mis-shaped network key is named in one
    line (see :func:`read_restoreformer_state` for the training keys that are dropped, as upstream does).
    """
    return _load(path, RESTOREFORMER_PLUSPLUS, "RestoreFormer++", device, dtype, config)
