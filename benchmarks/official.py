"""The official GFPGANv1Clean from the installed ``gfpgan`` wheel, as a benchmark baseline and test oracle.

``import gfpgan`` fails with current torchvision (basicsr 1.4.2 imports a removed torchvision module), and the
two architecture files need only two basicsr names. So the files are executed directly from the wheel, with
tiny stand-ins for those names placed in ``sys.modules`` only while they load; nothing of basicsr is imported.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

from torch import nn

from vidrestore.errors import VidrestoreError
from vidrestore.models.gfpgan import GFPGANConfig

__all__ = ["official_gfpgan"]

_INSTALL_HINT = "pip install --no-deps gfpgan==1.3.8"
_PACKAGE = "_vidrestore_official_gfpgan"  # private name: never clashes with a real (broken) gfpgan import


class _Registry:
    """Stand-in for basicsr's ARCH_REGISTRY: ``register()`` returns the class unchanged."""

    @staticmethod
    def register() -> Callable[[type], type]:
        return lambda cls: cls


def _default_init_weights(
    module_list: nn.Module | list[nn.Module], scale: float = 1, bias_fill: float = 0, **kwargs: object
) -> None:
    """Stand-in for basicsr's default_init_weights: Kaiming-normal weights times ``scale``, constant bias."""
    modules = module_list if isinstance(module_list, list) else [module_list]
    for root in modules:
        for m in root.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                nn.init.kaiming_normal_(m.weight, **kwargs)
                m.weight.data.mul_(scale)
                if m.bias is not None:
                    m.bias.data.fill_(bias_fill)


@contextmanager
def _basicsr_stand_ins() -> Iterator[None]:
    """Provide ``basicsr.utils.registry`` and ``basicsr.archs.arch_util`` for the duration of the load."""
    registry = types.ModuleType("basicsr.utils.registry")
    registry.ARCH_REGISTRY = _Registry()
    arch_util = types.ModuleType("basicsr.archs.arch_util")
    arch_util.default_init_weights = _default_init_weights
    fakes = {
        "basicsr": types.ModuleType("basicsr"),
        "basicsr.utils": types.ModuleType("basicsr.utils"),
        "basicsr.utils.registry": registry,
        "basicsr.archs": types.ModuleType("basicsr.archs"),
        "basicsr.archs.arch_util": arch_util,
    }
    saved = {name: sys.modules[name] for name in fakes if name in sys.modules}
    sys.modules.update(fakes)
    try:
        yield
    finally:
        for name in fakes:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


def _exec_module(name: str, path: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the relative import in gfpganv1_clean_arch resolves through sys.modules
    spec.loader.exec_module(module)
    return module


@cache
def _official_module() -> types.ModuleType:
    """Load gfpganv1_clean_arch (and the stylegan2_clean_arch it imports) from the installed wheel, once."""
    try:
        dist = importlib.metadata.distribution("gfpgan")
    except importlib.metadata.PackageNotFoundError:
        raise VidrestoreError(f"the official GFPGAN package is not installed; run: {_INSTALL_HINT}") from None
    paths = {}
    for stem in ("stylegan2_clean_arch", "gfpganv1_clean_arch"):
        path = dist.locate_file(f"gfpgan/archs/{stem}.py")
        if not path.is_file():
            raise VidrestoreError(f"gfpgan {dist.version} has no {path}; run: {_INSTALL_HINT}")
        paths[stem] = str(path)
    package = types.ModuleType(_PACKAGE)
    package.__path__ = []  # a namespace for the two submodules
    sys.modules[_PACKAGE] = package
    with _basicsr_stand_ins():
        _exec_module(f"{_PACKAGE}.stylegan2_clean_arch", paths["stylegan2_clean_arch"])
        return _exec_module(f"{_PACKAGE}.gfpganv1_clean_arch", paths["gfpganv1_clean_arch"])


def official_gfpgan(config: GFPGANConfig | None = None) -> nn.Module:
    """The official GFPGANv1Clean built as GFPGANer builds it, in eval mode with random weights.

    Its forward is ``forward(x, return_rgb=False, randomize_noise=False) -> (image, rgbs)``.
    """
    config = config or GFPGANConfig()
    model = _official_module().GFPGANv1Clean(
        out_size=config.out_size,
        num_style_feat=config.num_style_feat,
        channel_multiplier=config.channel_multiplier,
        decoder_load_path=None,
        fix_decoder=False,
        num_mlp=config.num_mlp,
        input_is_latent=config.input_is_latent,
        different_w=config.different_w,
        narrow=config.narrow,
        sft_half=config.sft_half,
    )
    return model.eval()
