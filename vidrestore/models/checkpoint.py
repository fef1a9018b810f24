"""Loading GFPGAN checkpoints into :class:`GFPGANv1Clean`, with one-line errors for unusable files."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from vidrestore.errors import WeightsError
from vidrestore.models.gfpgan import GFPGANConfig, GFPGANv1Clean

__all__ = ["infer_config", "load_gfpgan"]

_SHOWN_KEYS = 3  # how many offending key names an error message lists


def load_gfpgan(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: GFPGANConfig | None = None,
) -> GFPGANv1Clean:
    """Build GFPGANv1Clean from a checkpoint file, strictly, in eval mode with gradients off.

    The weights are taken from ``params_ema`` (what the official inference uses), else ``params``, else the
    file is treated as a bare state dict. Without a ``config``, the layout is read off the checkpoint's
    shapes (:func:`infer_config`), so fine-tuned or smaller models load too; the strict check still applies.
    The model is built on the meta device and the loaded tensors are assigned, so no time or memory goes
    into a random initialisation that would be overwritten at once.
    """
    path = Path(path)
    state = _read_state_dict(path)
    if config is None:
        config = infer_config(state)
    with torch.device("meta"):
        model = GFPGANv1Clean(config)
    problems = _layout_problems(model, state)
    if problems:
        raise WeightsError(
            f"{path.name} does not match the GFPGANv1Clean (out_size={config.out_size}) layout: {problems}"
        )
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def infer_config(state: dict[str, object]) -> GFPGANConfig:
    """Read a GFPGANv1Clean layout off a state dict's key names and tensor shapes.

    Falls back to the official 512 configuration where a key it needs is absent, so that the strict load
    afterwards reports what is missing instead of this function failing first.
    """

    def shape(key: str) -> tuple[int, ...] | None:
        v = state.get(key)
        return tuple(v.shape) if isinstance(v, torch.Tensor) else None

    official = GFPGANConfig()
    const = shape("stylegan_decoder.constant_input.weight")
    linear = shape("final_linear.weight")
    mlp = [k for k in state if k.startswith("stylegan_decoder.style_mlp.") and k.endswith(".weight")]
    n_down = len({k.split(".")[1] for k in state if k.startswith("conv_body_down.")})
    if const is None or linear is None or n_down == 0:
        return official
    log_size = n_down + 2
    narrow = const[1] / 512
    num_style_feat = shape(mlp[0])[0] if mlp else official.num_style_feat
    channel_multiplier = official.channel_multiplier
    if log_size >= 6:  # channels from 64 px up carry the multiplier; 3 = the 64 px upsampling StyleConv
        conv64 = shape("stylegan_decoder.style_convs.6.modulated_conv.weight")
        if conv64 is not None:
            channel_multiplier = max(1, round(conv64[1] / (256 * narrow)))
    sft = shape("condition_scale.0.2.weight")
    up8 = shape("conv_body_up.0.conv2.weight")
    return GFPGANConfig(
        out_size=2**log_size,
        num_style_feat=num_style_feat,
        channel_multiplier=channel_multiplier,
        num_mlp=len(mlp),
        different_w=linear[0] != num_style_feat,
        narrow=narrow,
        sft_half=sft is None or up8 is None or sft[0] == up8[0],
    )


def _read_state_dict(path: Path) -> dict[str, object]:
    if not path.is_file():
        raise WeightsError(f"weight file {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling a corrupt file can fail in many ways; all mean "not a checkpoint"
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WeightsError(
            f"{path.name} is not a readable PyTorch checkpoint (corrupt or truncated?): {reason}"
        ) from e
    if not isinstance(ckpt, dict):
        raise WeightsError(f"{path.name} holds a {type(ckpt).__name__}, not a state dict")
    for key in ("params_ema", "params"):
        if key in ckpt:
            ckpt = ckpt[key]
            break
    if not isinstance(ckpt, dict):
        raise WeightsError(f"{path.name}: the weights entry is a {type(ckpt).__name__}, not a state dict")
    return ckpt


def _layout_problems(model: torch.nn.Module, state: dict[str, object]) -> str:
    """Missing / unexpected / mis-shaped keys, summarised in one line ('' when the checkpoint fits)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [
        k
        for k, v in state.items()
        if k in expected and not (isinstance(v, torch.Tensor) and v.shape == expected[k].shape)
    ]
    parts = []
    for keys, one, many in (
        (missing, "missing key", "missing keys"),
        (unexpected, "unexpected key", "unexpected keys"),
        (mismatched, "shape mismatch", "shape mismatches"),
    ):
        if keys:
            shown = ", ".join(keys[:_SHOWN_KEYS]) + (", ..." if len(keys) > _SHOWN_KEYS else "")
            parts.append(f"{len(keys)} {one if len(keys) == 1 else many} ({shown})")
    return ", ".join(parts)
