"""Optional face-parsing masks (ParseNet, facexlib's file): paste back only skin, hair-line and features.

ParseNet labels 19 classes on a 512 crop. Background, neck, cloth, hair and hat (0, 14, 16, 17, 18) are
dropped, the rest is blurred and its outer 10 px zeroed, as facexlib's helper does, so that the restored
face does not paint over the hair and background around it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from vidrestore.faces.paste import gaussian_blur
from vidrestore.models.parsenet import load_parsenet

PARSE_SIZE = 512
_DROPPED_CLASSES = (0, 14, 16, 17, 18)


class FaceParser:
    """ParseNet on the engine's device; ``mask(crops)`` gives a soft (N, 1, S, S) face mask."""

    def __init__(self, weights: Path, device: torch.device):
        self.net = load_parsenet(weights, device=device)  # a bad file: one line naming file and keys
        self.keep = torch.ones(19, device=device)
        self.keep[list(_DROPPED_CLASSES)] = 0

    @torch.inference_mode()
    def mask(self, crops: torch.Tensor) -> torch.Tensor:
        """crops: (N, 3, S, S) RGB in [0, 1] → (N, 1, S, S) float mask in [0, 1]."""
        s = crops.shape[-1]
        x = crops.float()
        if s != PARSE_SIZE:
            x = F.interpolate(x, size=(PARSE_SIZE, PARSE_SIZE), mode="bilinear", align_corners=False)
        labels = self.net.logits((x - 0.5) / 0.5).argmax(dim=1)
        m = self.keep[labels].unsqueeze(1)
        m = gaussian_blur(gaussian_blur(m, 11, radius=50), 11, radius=50)
        m[..., :10, :] = 0
        m[..., -10:, :] = 0
        m[..., :, :10] = 0
        m[..., :, -10:] = 0
        if s != PARSE_SIZE:
            m = F.interpolate(m, size=(s, s), mode="bilinear", align_corners=False)
        return m.to(crops.dtype)
