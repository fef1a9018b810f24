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

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from vidrestore.errors import VidrestoreError
from vidrestore.faces.templates import FFHQ_TEMPLATE_512


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
    template: np.ndarray = field(default_factory=lambda: FFHQ_TEMPLATE_512)  # 5 points at ``face_size``
    input_range: tuple[float, float] = (-1.0, 1.0)
    output_range: tuple[float, float] = (-1.0, 1.0)
    channels: str = "RGB"
    needs: tuple[str, ...] = ()  # auxiliary networks, e.g. "parsing"
    controls: tuple[str, ...] = ()  # engine options passed to the network's forward as keywords
    aliases: tuple[str, ...] = ()
    colourises: bool = False  # gives colour faces for grey ones: a grey still is then written in colour

    def template_for(self, size: int) -> np.ndarray:
        """The alignment template for a crop of ``size`` pixels (a checkpoint's own size may differ)."""
        return self.template * (size / self.face_size)


def _load_gfpgan_clean(path: str | os.PathLike[str], **kwargs: Any) -> Restorer:
    from vidrestore.models.checkpoint import load_gfpgan

    return load_gfpgan(path, **kwargs)


def _load_gfpgan_v1(path: str | os.PathLike[str], **kwargs: Any) -> Restorer:
    from vidrestore.models.gfpganv1 import load_gfpgan_v1

    return load_gfpgan_v1(path, **kwargs)


def _gfpgan_clean(version: str, summary: str) -> ModelSpec:
    """A GFP-GAN release on the clean architecture (v1.2 and later)."""
    return ModelSpec(
        name=f"gfpgan-{version}",
        summary=summary,
        arch="GFPGANv1Clean",
        weights=f"gfpgan-{version}",
        licence="Apache-2.0",
        load=_load_gfpgan_clean,
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
        load=_load_gfpgan_v1,
        controls=("randomize_noise",),
        aliases=("v1",),
        colourises=True,
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
