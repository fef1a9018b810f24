"""Shared fixtures: real face images from scikit-image and a tiny GFP-GAN in the official layout."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from skimage import data

from vidrestore.engine import set_tf32
from vidrestore.models.gfpgan import GFPGANConfig, GFPGANv1Clean

TINY = GFPGANConfig(out_size=64, num_style_feat=32, channel_multiplier=1, narrow=0.0625, num_mlp=2)


@pytest.fixture(autouse=True)
def _tf32_policy() -> Iterator[None]:
    """Every test starts under the product's fp32 TF32 policy (IEEE fp32 matmuls and convs on a GPU), and
    what an engine of another dtype switched during a test is undone after it."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    set_tf32(torch.float32)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    """A 512x512 RGB photograph with one real face (eyes near (203, 102) and (247, 104))."""
    return data.astronaut()


@pytest.fixture(scope="session")
def tiny_config() -> GFPGANConfig:
    return TINY


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> str:
    """A randomly initialised tiny GFP-GAN, saved as the official releases are: {"params_ema": ...}."""
    torch.manual_seed(0)
    model = GFPGANv1Clean(TINY)
    path = tmp_path_factory.mktemp("weights") / "tiny_gfpgan.pth"
    torch.save({"params_ema": model.state_dict()}, path)
    return str(path)


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No weights anywhere, and downloads pointed at a closed local port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("VIDRESTORE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VIDRESTORE_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("VIDRESTORE_WEIGHTS_URL", f"http://127.0.0.1:{port}/weights")
