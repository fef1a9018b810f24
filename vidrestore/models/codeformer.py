"""CodeFormer (Zhou et al., NeurIPS 2022), the architecture of the released ``codeformer.pth``, for inference.

A VQGAN encoder maps the face to a 16x16 latent; a transformer predicts, per position, which of the 1024
codebook entries the clean face uses; the chosen codes, matched in mean and variance to the degraded latent
(AdaIN), are decoded by the VQGAN generator. With ``w > 0`` the encoder's features at 32..256 px are fused
back into the generator (controllable feature transformation): ``w`` trades quality (0) for fidelity (1).

Module and attribute names mirror the official ``basicsr/archs/codeformer_arch.py`` and ``vqgan_arch.py``
so that the released state dict loads with ``strict=True``. Differences from the official forward, none
numerical beyond float rounding:

* the transformer runs batch-first, its attention and the VQGAN's through ``scaled_dot_product_attention``;
* the code is the argmax of the logits (the official top-1 of their softmax) looked up as an embedding row,
  not a one-hot matrix product hard-cast to float32, so every dtype runs;
* AdaIN is always on, as in the official inference script; the training-only paths are left out;
* the official pipeline's one face-level post-processing, grey faces kept grey, is part of ``forward``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vidrestore.errors import WeightsError
from vidrestore.models.checkpoint import build_strict, read_state_dict

__all__ = ["CodeFormer", "CodeFormerConfig", "gray_like_input", "infer_codeformer_config", "load_codeformer"]

_GROUPS = 32
_NORM_EPS = 1e-6
_ADAIN_EPS = 1e-5
_LRELU_SLOPE = 0.2


@dataclass(frozen=True)
class CodeFormerConfig:
    """The architecture's sizes; the defaults are the released model's (official inference constructor).

    ``connect_list`` holds the resolutions whose encoder features are fused into the generator when w > 0.
    ``n_head`` is the one size a checkpoint does not show (the attention projections are packed).
    """

    img_size: int = 512
    nf: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 2, 4, 4, 8)
    res_blocks: int = 2
    attn_resolutions: tuple[int, ...] = (16,)
    codebook_size: int = 1024
    emb_dim: int = 256
    dim_embd: int = 512
    n_head: int = 8
    n_layers: int = 9
    connect_list: tuple[int, ...] = (32, 64, 128, 256)

    def __post_init__(self) -> None:
        if self.img_size % 2 ** (len(self.ch_mult) - 1):
            raise ValueError(f"img_size {self.img_size} does not halve {len(self.ch_mult) - 1} times")
        if any(self.nf * m % _GROUPS for m in self.ch_mult):
            raise ValueError(f"every channel count must be a multiple of {_GROUPS} (GroupNorm)")
        if self.dim_embd % self.n_head:
            raise ValueError(f"dim_embd {self.dim_embd} is not a multiple of n_head {self.n_head}")
        if not set(self.connect_list) <= set(self.resolutions):
            raise ValueError(f"connect_list {self.connect_list} names resolutions the network lacks")

    @property
    def resolutions(self) -> tuple[int, ...]:
        """The encoder's resolution at each level, from ``img_size`` down to the latent's."""
        return tuple(self.img_size >> level for level in range(len(self.ch_mult)))

    @property
    def latent_hw(self) -> int:
        return self.resolutions[-1]

    def channels(self, resolution: int) -> int:
        return self.nf * self.ch_mult[self.resolutions.index(resolution)]


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(_GROUPS, channels, eps=_NORM_EPS)


class ResBlock(nn.Module):
    """GroupNorm, swish, conv3x3, twice, plus the input (through a 1x1 ``conv_out`` if channels change)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, 1)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1)
        self.conv_out = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return h + (x if self.conv_out is None else self.conv_out(x))


class AttnBlock(nn.Module):
    """Single-head self-attention over the pixels, 1x1 convs for q, k, v and the output, plus the input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = _norm(channels)
        self.q = nn.Conv2d(channels, channels, 1)
        self.k = nn.Conv2d(channels, channels, 1)
        self.v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        n = self.norm(x)
        q, k, v = (conv(n).flatten(2).transpose(1, 2) for conv in (self.q, self.k, self.v))  # (B, HW, C)
        out = F.scaled_dot_product_attention(q, k, v)  # scale c^-0.5, as upstream
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, h, w))


class Downsample(nn.Module):
    """Zero-pad right and bottom by one, then a stride-2 conv3x3 (the VQGAN's asymmetric downsampling)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 2, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class Upsample(nn.Module):
    """Nearest-neighbour x2, then conv3x3."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    """The VQGAN encoder as one flat ``blocks`` list (the checkpoint's numbering).

    ``taps`` maps a block index to the resolution whose feature the fusion takes after it: the last
    ResBlock of each level (before that level's attention).
    """

    def __init__(self, cfg: CodeFormerConfig) -> None:
        super().__init__()
        blocks: list[nn.Module] = [nn.Conv2d(3, cfg.nf, 3, 1, 1)]
        self.taps: dict[int, int] = {}
        in_ch = cfg.nf
        for level, res in enumerate(cfg.resolutions):
            out_ch = cfg.nf * cfg.ch_mult[level]
            for _ in range(cfg.res_blocks):
                blocks.append(ResBlock(in_ch, out_ch))
                self.taps[len(blocks) - 1] = res
                in_ch = out_ch
                if res in cfg.attn_resolutions:
                    blocks.append(AttnBlock(in_ch))
            if level != len(cfg.resolutions) - 1:
                blocks.append(Downsample(in_ch))
        blocks += [ResBlock(in_ch, in_ch), AttnBlock(in_ch), ResBlock(in_ch, in_ch), _norm(in_ch)]
        blocks.append(nn.Conv2d(in_ch, cfg.emb_dim, 3, 1, 1))
        self.blocks = nn.ModuleList(blocks)


class Generator(nn.Module):
    """The VQGAN decoder as one flat ``blocks`` list (the checkpoint's numbering).

    ``taps`` maps a block index to the resolution fused after it: the first ResBlock of each level above
    the latent, and at the latent the last ResBlock of the level (before its attention), as upstream.
    """

    def __init__(self, cfg: CodeFormerConfig) -> None:
        super().__init__()
        in_ch = cfg.nf * cfg.ch_mult[-1]
        blocks: list[nn.Module] = [nn.Conv2d(cfg.emb_dim, in_ch, 3, 1, 1)]
        blocks += [ResBlock(in_ch, in_ch), AttnBlock(in_ch), ResBlock(in_ch, in_ch)]
        self.taps: dict[int, int] = {}
        for level in reversed(range(len(cfg.ch_mult))):
            res, out_ch = cfg.resolutions[level], cfg.nf * cfg.ch_mult[level]
            for i in range(cfg.res_blocks):
                blocks.append(ResBlock(in_ch, out_ch))
                last = i == cfg.res_blocks - 1
                if (i == 0 and res != cfg.latent_hw) or (last and res == cfg.latent_hw):
                    self.taps[len(blocks) - 1] = res
                in_ch = out_ch
                if res in cfg.attn_resolutions:
                    blocks.append(AttnBlock(in_ch))
            if level != 0:
                blocks.append(Upsample(in_ch))
        blocks += [_norm(in_ch), nn.Conv2d(in_ch, 3, 3, 1, 1)]
        self.blocks = nn.ModuleList(blocks)


class VectorQuantizer(nn.Module):
    """The codebook; only its rows are used at inference (the nearest-code quantiser is training-only)."""

    def __init__(self, codebook_size: int, emb_dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(codebook_size, emb_dim)


class SelfAttention(nn.Module):
    """``nn.MultiheadAttention``'s parameters (packed ``in_proj``), with q = k = x + pos and v = x."""

    def __init__(self, dim: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        b, n, dim = x.shape
        qk = F.linear(x + pos, self.in_proj_weight[: 2 * dim], self.in_proj_bias[: 2 * dim])
        v = F.linear(x, self.in_proj_weight[2 * dim :], self.in_proj_bias[2 * dim :])
        q, k, v = (t.view(b, n, self.n_head, -1).transpose(1, 2) for t in (*qk.chunk(2, -1), v))
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, N, head_dim)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, dim))


class TransformerSALayer(nn.Module):
    """Pre-LayerNorm transformer layer: self-attention with the position added to q and k, then a GELU MLP."""

    def __init__(self, dim: int, n_head: int, dim_mlp: int) -> None:
        super().__init__()
        self.self_attn = SelfAttention(dim, n_head)
        self.linear1 = nn.Linear(dim, dim_mlp)
        self.linear2 = nn.Linear(dim_mlp, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.norm1(x), pos)
        return x + self.linear2(F.gelu(self.linear1(self.norm2(x))))


class FuseSftBlock(nn.Module):
    """Controllable feature transformation: ``dec + w * (dec * scale + shift)``, from encoder and decoder."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.encode_enc = ResBlock(2 * channels, channels)
        self.scale = self._branch(channels)
        self.shift = self._branch(channels)

    @staticmethod
    def _branch(channels: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(channels, channels, 3, 1, 1),
            nn.LeakyReLU(_LRELU_SLOPE),
            nn.Conv2d(channels, channels, 3, 1, 1),
        )

    def forward(self, enc: torch.Tensor, dec: torch.Tensor, w: float) -> torch.Tensor:
        enc = self.encode_enc(torch.cat([enc, dec], dim=1))
        return dec + w * (dec * self.scale(enc) + self.shift(enc))


def _mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and sqrt(unbiased variance + 1e-5) over the pixels, as upstream's AdaIN."""
    flat = x.flatten(2)
    var, mean = torch.var_mean(flat, dim=2, keepdim=True)
    return mean.unsqueeze(-1), (var + _ADAIN_EPS).sqrt().unsqueeze(-1)


class CodeFormer(nn.Module):
    """Codebook-lookup face restoration: (B, 3, S, S) RGB in [-1, 1] to the same, unclamped."""

    def __init__(self, config: CodeFormerConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or CodeFormerConfig()
        # Registration order gives the official state_dict order: own parameter, the VQGAN, then the rest.
        self.position_emb = nn.Parameter(torch.zeros(cfg.latent_hw**2, cfg.dim_embd))
        self.encoder = Encoder(cfg)
        self.quantize = VectorQuantizer(cfg.codebook_size, cfg.emb_dim)
        self.generator = Generator(cfg)
        self.feat_emb = nn.Linear(cfg.emb_dim, cfg.dim_embd)
        self.ft_layers = nn.Sequential(
            *(TransformerSALayer(cfg.dim_embd, cfg.n_head, 2 * cfg.dim_embd) for _ in range(cfg.n_layers))
        )
        self.idx_pred_layer = nn.Sequential(
            nn.LayerNorm(cfg.dim_embd), nn.Linear(cfg.dim_embd, cfg.codebook_size, bias=False)
        )
        self.fuse_convs_dict = nn.ModuleDict(
            {str(res): FuseSftBlock(cfg.channels(res)) for res in cfg.connect_list}
        )

    @property
    def face_size(self) -> int:
        """The crop size this network restores (the engine's :class:`~vidrestore.models.Restorer` view)."""
        return self.config.img_size

    def encode(
        self, x: torch.Tensor, keep_features: bool = True
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """The latent ``lq_feat`` (B, emb_dim, 16, 16), and with ``keep_features`` the encoder features the
        fusion takes, by resolution (at w = 0 they would only hold memory)."""
        size = self.config.img_size
        if x.ndim != 4 or x.shape[1:] != (3, size, size):
            raise ValueError(f"expected a (B, 3, {size}, {size}) input, got {tuple(x.shape)}")
        feats = {}
        for i, block in enumerate(self.encoder.blocks):
            x = block(x)
            res = self.encoder.taps.get(i)
            if keep_features and res in self.config.connect_list:
                feats[res] = x
        return x, feats

    def code_logits(self, lq_feat: torch.Tensor) -> torch.Tensor:
        """(B, HW, codebook_size) logits of the code at each latent position (row-major)."""
        query = self.feat_emb(lq_feat.flatten(2).transpose(1, 2))
        for layer in self.ft_layers:
            query = layer(query, self.position_emb)
        return self.idx_pred_layer(query)

    def lookup(self, indices: torch.Tensor, lq_feat: torch.Tensor) -> torch.Tensor:
        """The codebook rows of (B, HW) ``indices`` as a latent, AdaIN-matched to ``lq_feat``'s statistics."""
        quant = self.quantize.embedding(indices).transpose(1, 2).reshape(lq_feat.shape)
        q_mean, q_std = _mean_std(quant)
        lq_mean, lq_std = _mean_std(lq_feat)
        return (quant - q_mean) / q_std * lq_std + lq_mean

    def decode(self, quant: torch.Tensor, feats: dict[int, torch.Tensor], w: float) -> torch.Tensor:
        """The generator on the latent; after each tapped block, the fusion with strength ``w`` if w > 0."""
        x = quant
        for i, block in enumerate(self.generator.blocks):
            x = block(x)
            res = self.generator.taps.get(i)
            if w > 0 and res in feats:
                x = self.fuse_convs_dict[str(res)](feats[res], x, w)
        return x

    def forward(self, x: torch.Tensor, w: float = 0.0) -> torch.Tensor:
        """Restore faces; ``w`` in [0, 1] is CodeFormer's fidelity weight (0: quality, 1: fidelity).

        Grey faces come back grey (:func:`gray_like_input`), as the official pipeline makes them.
        """
        lq_feat, feats = self.encode(x, keep_features=w > 0)
        indices = self.code_logits(lq_feat).argmax(dim=-1)
        return gray_like_input(self.decode(self.lookup(indices, lq_feat), feats, w), x)


# The official helper's grey test: mean variance of the channel differences <= 10 in 8-bit units; here in
# [-1, 1] units (127.5 per 8-bit step), as are its AdaIN epsilon and bgr2gray's R, G, B weights.
_GRAY_VAR = 10 / 127.5**2
_GRAY_EPS = 1e-5 / 127.5**2
_LUMA = (0.2989, 0.5870, 0.1140)


def gray_like_input(restored: torch.Tensor, crops: torch.Tensor) -> torch.Tensor:
    """Restored faces whose input crop is grey, made grey and given the crop's mean and deviation per channel.

    CodeFormer tints black-and-white faces; the official helper (``add_restored_face``) undoes it this way.
    It decides on the whole input image; here each crop decides, which is what a black-and-white video
    gives for every face anyway. Both tensors are (B, 3, S, S) in [-1, 1]; others pass unchanged.
    """
    c = crops.float().flatten(2)  # (B, 3, S*S)
    diffs = torch.stack([c[:, 0] - c[:, 1], c[:, 1] - c[:, 2], c[:, 2] - c[:, 0]], 1)
    gray = diffs.var(dim=2, correction=0).mean(dim=1) <= _GRAY_VAR
    if not gray.any():
        return restored
    y = restored[gray].float().clamp(-1, 1)
    luma = sum(weight * y[:, i : i + 1] for i, weight in enumerate(_LUMA)).expand_as(y).flatten(2)
    var, mean = torch.var_mean(luma, dim=2, keepdim=True, correction=0)
    in_var, in_mean = torch.var_mean(c[gray], dim=2, keepdim=True, correction=0)
    matched = (luma - mean) / (var + _GRAY_EPS).sqrt() * (in_var + _GRAY_EPS).sqrt() + in_mean
    out = restored.clone()
    out[gray] = matched.view(y.shape).to(restored.dtype)
    return out


def infer_codeformer_config(
    state: dict[str, object], n_head: int = CodeFormerConfig.n_head
) -> CodeFormerConfig:
    """Read a CodeFormer layout off a state dict's key names and tensor shapes (``n_head`` is not in it).

    Falls back to the released configuration where a key it needs is absent or odd, so that the strict load
    afterwards names what is wrong instead of this function failing first.
    """
    official = CodeFormerConfig()

    def shape(key: str) -> tuple[int, ...] | None:
        v = state.get(key)
        return tuple(v.shape) if isinstance(v, torch.Tensor) else None

    def indices(prefix: str) -> list[int]:
        found = {k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)}
        return sorted(int(i) for i in found if i.isdigit())

    pos, codebook = shape("position_emb"), shape("quantize.embedding.weight")
    conv_in = shape("encoder.blocks.0.weight")
    blocks = indices("encoder.blocks.")
    if pos is None or codebook is None or conv_in is None or len(blocks) < 6:
        return official
    if len(pos) != 2 or len(codebook) != 2:
        return official
    nf = conv_in[0]
    # The level loop: ResBlocks (each maybe followed by an AttnBlock), a Downsample between levels;
    # then ResBlock, AttnBlock, ResBlock, GroupNorm, conv (the last five blocks).
    levels: list[list[int]] = [[]]  # per level, the out channels of its ResBlocks
    attn_levels: set[int] = set()
    for i in blocks[1:-5]:
        if (out := shape(f"encoder.blocks.{i}.conv1.weight")) is not None:
            levels[-1].append(out[0])
        elif f"encoder.blocks.{i}.q.weight" in state:
            attn_levels.add(len(levels) - 1)
        elif f"encoder.blocks.{i}.conv.weight" in state:
            levels.append([])
    latent_hw = math.isqrt(pos[0])
    if not all(levels) or latent_hw**2 != pos[0] or any(c % nf for lvl in levels for c in lvl):
        return official
    img_size = latent_hw << (len(levels) - 1)
    try:
        return CodeFormerConfig(
            img_size=img_size,
            nf=nf,
            ch_mult=tuple(lvl[-1] // nf for lvl in levels),
            res_blocks=len(levels[0]),
            attn_resolutions=tuple(img_size >> lvl for lvl in sorted(attn_levels)),
            codebook_size=codebook[0],
            emb_dim=codebook[1],
            dim_embd=pos[1],
            n_head=n_head,
            n_layers=len(indices("ft_layers.")),
            connect_list=tuple(indices("fuse_convs_dict.")),
        )
    except ValueError:
        return official


def load_codeformer(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: CodeFormerConfig | None = None,
) -> CodeFormer:
    """Build CodeFormer from a checkpoint (``params_ema``, as the release), strictly, in eval mode.

    Without a ``config`` the layout is read off the checkpoint (:func:`infer_codeformer_config`), so smaller
    or fine-tuned models load too; any missing, extra or mis-shaped key is one :class:`WeightsError` line.
    """
    path = Path(path)
    state = read_state_dict(path)
    if config is None:
        config = infer_codeformer_config(state)
    if not isinstance(config, CodeFormerConfig):
        raise WeightsError(
            f"model_config for CodeFormer must be a CodeFormerConfig, not {type(config).__name__}"
        )
    return build_strict(
        lambda: CodeFormer(config),
        state,
        f"{path.name} does not match the CodeFormer (img_size={config.img_size}) layout",
        device=device,
        dtype=dtype,
    )
