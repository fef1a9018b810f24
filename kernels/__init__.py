"""The fused modulated conv op of vidrestore, installed as ``vidrestore.kernels``.

:func:`modulated_conv2d` is the one op the model calls, with ``impl`` one of :data:`KERNEL_IMPLS`: "triton"
(fused kernel), "torch" (PyTorch reference) or "auto" (Triton on CUDA tensors when installed, else the
reference). :func:`set_kernel_impl` sets the impl per model. ``VIDRESTORE_TRITON=0|1`` overrides "auto" only,
for tests. Importing this package imports neither Triton nor changes the environment; Triton is imported on
the first Triton call.
"""

from __future__ import annotations

import importlib
from typing import Any

from vidrestore.kernels.modconv import (
    ENV_VAR,
    KERNEL_IMPLS,
    modulated_conv2d,
    set_kernel_impl,
    triton_available,
)

__all__ = [
    "ENV_VAR",
    "KERNEL_IMPLS",
    "compiled_kernels",
    "modulated_conv2d",
    "set_kernel_impl",
    "triton_available",
]


def compiled_kernels() -> dict[str, Any]:
    """Registers, spills, shared memory and tiles of the compiled kernels (for the GPU benchmark's report)."""
    return importlib.import_module("vidrestore.kernels.modconv_triton").compiled_kernels()
