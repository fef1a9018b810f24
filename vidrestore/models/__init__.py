"""Restoration networks: one :class:`ModelSpec` per released model, in one registry.

A spec says everything the engine needs to run a network without knowing it: the face size and the
5-point alignment template of its training crops, the range and channel order of its input and output,
the auxiliary networks it needs, the controls it takes, its weight file (an entry of
:mod:`vidrestore.weights`) and its licence, and the loader that checks a checkpoint's layout and builds
the network. ``--model NAME`` (CLI, API and filter alike) resolves through :func:`get_model`.

Adding a network is one architecture module under ``vidrestore/models/``, one entry in ``_SPECS`` below
(and its weights in ``vidrestore.weights.REGISTRY``), and their tests; no front end changes.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from vidrestore.errors import VidrestoreError
from vidrestore.faces.templates import CELEBA_TEMPLATE_128, FFHQ_TEMPLATE_512


class Restorer(Protocol):
    """What a loaded network is to the engine: a module mapping aligned crops to restored crops."""

    face_size: int

    def __call__(self, x: torch.Tensor, **controls: Any) -> torch.Tensor: ...


Loader = Callable[..., Restorer]  # (path, *, device, dtype, config) -> Restorer


@dataclass(frozen=True)
class ModelSpec:
    """A released restoration model, as the engine and ``vidrestore models`` see it."""

    name: str
    summary: str  # one line: what it is good for
    arch: str  # the architecture class
    weights: str  # the weights-registry entry of its checkpoint
    licence: str
    load: Loader  # checks the checkpoint's layout (one-line error naming keys) and builds the network
    face_size: int = 512  # the released checkpoint's crop size (a custom checkpoint may differ)
    scale: int = 1  # output crop size / input crop size: 2**k for a face super-resolution network
    template: np.ndarray = field(default_factory=lambda: FFHQ_TEMPLATE_512)  # 5 points at ``face_size``
    input_range: tuple[float, float] = (-1.0, 1.0)
    output_range: tuple[float, float] = (-1.0, 1.0)
    channels: str = "RGB"
    needs: tuple[str, ...] = ()  # auxiliary networks, e.g. "parsing"
    controls: tuple[str, ...] = ()  # engine options passed to the network's forward as keywords
    # The forward keyword of the network's own fidelity control (0 = quality, 1 = fidelity): it takes the
    # engine's ``fidelity`` in place of blending the restored face with the original.
    fidelity_control: str | None = None
    aliases: tuple[str, ...] = ()
    # More weights entries the network needs (e.g. PSFR-GAN's parser): the engine resolves them as it does
    # ``weights`` (``--weights-dir``, cache, offline rules; ``--weights`` names only the main file) and passes
    # their paths to ``load`` as ``extra=``, in this order.
    extra_weights: tuple[str, ...] = ()
    colourises: bool = False  # gives colour faces for grey ones: a grey still is then written in colour
    # A licence that forbids commercial use: said once per machine when the model is first loaded
    # (models/licence.py) and marked in ``vidrestore models``.
    non_commercial: bool = False

    def __post_init__(self) -> None:
        if self.scale < 1 or self.scale & (self.scale - 1):
            raise ValueError(f"{self.name}: scale must be a power of two, got {self.scale}")

    def template_for(self, size: int) -> np.ndarray:
        """The alignment template for a crop of ``size`` pixels (a checkpoint's own size may differ)."""
        return self.template * (size / self.face_size)


def _lazy(module: str, function: str) -> Loader:
    """The loader ``module.function``, imported on first use: the registry is read by every front end (and
    ``vidrestore models``), which must not pay for importing every architecture."""

    def load(path: str | os.PathLike[str], **kwargs: Any) -> Restorer:
        return getattr(importlib.import_module(module), function)(path, **kwargs)

    load.__qualname__ = f"{module}.{function}"
    return load


def _gfpgan_clean(version: str, summary: str) -> ModelSpec:
    """A GFP-GAN release on the clean architecture (v1.2 and later)."""
    return ModelSpec(
        name=f"gfpgan-{version}",
        summary=summary,
        arch="GFPGANv1Clean",
        weights=f"gfpgan-{version}",
        licence="Apache-2.0",
        load=_lazy("vidrestore.models.checkpoint", "load_gfpgan"),
        controls=("randomize_noise",),
        aliases=(version,),
    )


_SPECS = (
    _gfpgan_clean("v1.4", "GFP-GAN v1.4: the default; more detail and better identity than v1.3"),
    _gfpgan_clean("v1.3", "GFP-GAN v1.3: more natural-looking faces, fewer sharpened details"),
    _gfpgan_clean("v1.2", "GFP-GAN v1.2: sharper output with some beauty retouching; no colourisation"),
    ModelSpec(
        name="gfpgan-v1",
        summary="GFP-GAN v1, the paper model: also colourises grey faces",
        arch="GFPGANv1",
        weights="gfpgan-v1",
        # The repo's LICENSE puts BasicSR's StyleGAN2 CUDA ops under NVIDIA's licence; ours are plain PyTorch.
        licence="Apache-2.0",
        load=_lazy("vidrestore.models.gfpganv1", "load_gfpgan_v1"),
        controls=("randomize_noise",),
        aliases=("v1",),
        colourises=True,
    ),
    # Upstream aligns dlib's 5 points (eye corners, nose base) to FFHQ's template; the FFHQ template for
    # RetinaFace's 5 points (the default) gives the same FFHQ crop. RGB in [-1, 1] for both of its networks.
    ModelSpec(
        name="psfrgan",
        summary="PSFR-GAN: a SPADE generator guided by the face's own parsing map (non-commercial)",
        arch="PSFRGenerator + ParseNet",
        weights="psfrgan",
        licence="CC BY-NC-SA 4.0",
        load=_lazy("vidrestore.models.psfrgan", "load_psfrgan"),
        extra_weights=("psfrgan-parsenet",),
        non_commercial=True,
    ),
    # Progressive Face SR, 16 -> 128 px. Its training pairs are CelebA aligned crops (178 centre square)
    # resized to 128, then halved to 64, 32 and 16 with PIL's bilinear filter on 8-bit images. So the engine
    # warps each face to the CelebA template at the output size (128), rounds it to 8 bits and halves it
    # three times the same way (vidrestore.faces.resample), instead of warping straight at 16 px; the face
    # is pasted back from the 128 px output with the 128 px affine. The template is given at 16 px, scaled
    # by 1/8 from the 128 one (on the halved input's own pixel grid the points sit at (t128 - 3.5) / 8).
    # Eyes are about 3.5 px apart in the 16 px input.
    ModelSpec(
        name="pfsr",
        summary="Progressive Face SR: tiny faces (16 px crop) super-resolved 8x to 128 px",
        arch="PFSRGenerator",
        weights="pfsr",
        licence="no licence file (all rights reserved)",
        load=_lazy("vidrestore.models.pfsr", "load_pfsr"),
        face_size=16,
        scale=8,
        template=CELEBA_TEMPLATE_128 / 8,
    ),
    # Both: GFPGANer / RestoreFormer.enhance pre- and post-processing, the same as GFP-GAN's: FFHQ template
    # at 512, RGB in [-1, 1], raw output clamped to [-1, 1]; no noise, no controls.
    ModelSpec(
        name="restoreformer",
        summary="RestoreFormer (GFP-GAN's release): high-quality key-value attention over a face codebook",
        arch="RestoreFormer",
        weights="restoreformer",
        licence="Apache-2.0",
        load=_lazy("vidrestore.models.restoreformer", "load_restoreformer"),
    ),
    ModelSpec(
        name="restoreformer++",
        summary="RestoreFormer++: RestoreFormer with multi-scale attention; more realistic, robust faces",
        arch="VQVAEGANMultiHeadTransformer",
        weights="restoreformer++",
        licence="Apache-2.0",
        load=_lazy("vidrestore.models.restoreformer", "load_restoreformer_plusplus"),
        aliases=("restoreformer-plusplus",),
    ),
    ModelSpec(
        name="codeformer",
        summary="CodeFormer: codebook lookup, robust on heavy degradation; --fidelity is its w",
        arch="CodeFormer",
        weights="codeformer",
        licence="S-Lab License 1.0",
        load=_lazy("vidrestore.models.codeformer", "load_codeformer"),
        fidelity_control="w",
        non_commercial=True,
    ),
)
MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}
_ALIASES: dict[str, str] = {alias: spec.name for spec in _SPECS for alias in spec.aliases}


def model_names() -> list[str]:
    return list(MODELS)


def canonical_name(name: str) -> str | None:
    """The registry name for ``name`` or one of its aliases (e.g. 'v1.4'); None if unknown."""
    return name if name in MODELS else _ALIASES.get(name)


def get_model(name: str) -> ModelSpec:
    found = canonical_name(name)
    if found is None:
        raise VidrestoreError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    return MODELS[found]
