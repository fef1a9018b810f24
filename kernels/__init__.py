"""Triton kernels for vidrestore, installed as ``vidrestore.kernels``.

Importing this package is cheap and never imports Triton: the model imports it on every platform to ask
:func:`use_triton`. The kernels (``modulated_conv2d``, ``compiled_kernels``, ``INTERPRETED``) live in
:mod:`vidrestore.kernels.modconv`, imported on first attribute access; without a CUDA device that import
selects Triton's CPU interpreter.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from functools import cache
from typing import Any

import torch

__all__ = ["ENV_VAR", "compiled_kernels", "modulated_conv2d", "triton_available", "use_triton"]

ENV_VAR = "VIDRESTORE_TRITON"
_LAZY = {"INTERPRETED", "compiled_kernels", "modulated_conv2d"}


@cache
def triton_available() -> bool:
    """Whether Triton is installed (checked without importing it)."""
    return importlib.util.find_spec("triton") is not None


def use_triton(device: torch.device) -> bool:
    """Whether the model runs the fused kernels on ``device``.

    ``VIDRESTORE_TRITON=0`` forces the PyTorch reference, ``=1`` forces the kernels (on the CPU through
    Triton's interpreter, for tests); unset or empty means kernels exactly on CUDA devices with Triton
    installed. Read on every call, so a test or the CLI's ``--no-triton`` can flip it at any time.
    """
    flag = os.environ.get(ENV_VAR, "").strip()
    if flag not in ("", "0", "1"):
        raise ValueError(f"{ENV_VAR} must be 0, 1 or unset, got {flag!r}")
    if flag:
        return flag == "1"
    return device.type == "cuda" and triton_available()


def __getattr__(name: str) -> Any:
    """Import the kernels on first use (PEP 562)."""
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.modconv"), name)
