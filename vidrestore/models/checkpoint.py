"""Loading released checkpoints strictly, with one-line errors for unusable files.

:func:`read_state_dict` undoes every wrapper the released files use; :func:`build_strict` builds a network
on the meta device and assigns a state dict to it only when every key and shape matches. Each architecture's
loader is these two calls; :func:`load_gfpgan` adds reading the layout off the checkpoint's shapes.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from vidrestore.errors import WeightsError
from vidrestore.models.gfpgan import GFPGANConfig, GFPGANv1Clean

__all__ = ["build_strict", "infer_config", "layout_problems", "load_gfpgan", "read_state_dict"]


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
    state = read_state_dict(path)
    if config is None:
        config = infer_config(state)
    return build_strict(
        lambda: GFPGANv1Clean(config),
        state,
        f"{path.name} does not match the GFPGANv1Clean (out_size={config.out_size}) layout",
        device=device,
        dtype=dtype,
    )


def build_strict[M: torch.nn.Module](
    factory: Callable[[], M],
    state: Mapping[str, object],
    error: str,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
) -> M:
    """``factory()`` built on the meta device, then ``state`` assigned to it with ``strict=True``.

    Nothing goes into a random initialisation that would be overwritten at once. A state dict that does not
    fit raises :class:`WeightsError` with ``error``, then every missing, unexpected and mis-shaped key
    summarised (:func:`layout_problems`), in one line. Returns the network in eval mode, gradients off.
    """
    with torch.device("meta"):
        model = factory()
    problems = layout_problems(model, state)
    if problems:
        raise WeightsError(f"{error}: {problems}")
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def infer_config(state: dict[str, object], official: GFPGANConfig | None = None) -> GFPGANConfig:
    """Read a GFPGANv1Clean (or GFPGANv1: the same key names) layout off a state dict's keys and shapes.

    Falls back to the ``official`` 512 configuration (by default the clean one) where a key it needs is
    absent, so that the strict load afterwards reports what is missing instead of this function failing first.
    """

    def shape(key: str) -> tuple[int, ...] | None:
        v = state.get(key)
        return tuple(v.shape) if isinstance(v, torch.Tensor) else None

    official = official or GFPGANConfig()
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


def read_state_dict(path: str | os.PathLike[str], *, prefix: str = "") -> dict[str, object]:
    """The weights of a released checkpoint file, unwrapped.

    The wrappers of the released files: ``params_ema`` (what official inference uses), else ``params``
    (BasicSR), ``model_state_dict`` (with training counters beside it), ``state_dict`` (Lightning); else
    the file is a bare state dict. A ``module.`` prefix (DataParallel) on every key is removed, and so is
    ``prefix`` on the keys that carry it (e.g. ``"vqvae."``), as the official loaders do.
    """
    path = Path(path)
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
    for key in ("params_ema", "params", "model_state_dict", "state_dict"):
        if key in ckpt:
            ckpt = ckpt[key]
            break
    if not isinstance(ckpt, dict):
        raise WeightsError(f"{path.name}: the weights entry is a {type(ckpt).__name__}, not a state dict")
    if ckpt and all(isinstance(k, str) and k.startswith("module.") for k in ckpt):
        ckpt = {k.removeprefix("module."): v for k, v in ckpt.items()}
    if prefix:
        ckpt = {k.removeprefix(prefix): v for k, v in ckpt.items()}
    return ckpt


def layout_problems(model: torch.nn.Module, state: Mapping[str, object]) -> str:
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
