"""Alignment to the FFHQ template: similarity transforms, and warping between frame and face crop.

The warps run in torch with ``grid_sample`` so that the same code serves the CPU and the GPU, any bit
depth (frames are float), and many faces at once. Affine matrices follow OpenCV's convention: a 2x3 matrix
``M`` maps frame pixel coordinates to crop pixel coordinates, pixel centres at integers.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from vidrestore.faces.templates import FFHQ_TEMPLATE_512

# The grey facexlib fills outside the frame with; GFP-GAN was trained on crops padded with it.
BORDER_RGB = (132 / 255, 133 / 255, 135 / 255)


def estimate_transforms(
    landmarks: np.ndarray, face_size: int, template: np.ndarray | None = None
) -> np.ndarray:
    """(N, 5, 2) landmarks → (N, 2, 3) frame→crop similarity transforms (4 DOF, least squares).

    ``template``: the model's 5 points in a ``face_size`` crop (default: FFHQ's, as GFP-GAN was trained).

    The fit is the closed-form least-squares similarity (Umeyama's, without reflection), which moves
    continuously with the landmarks. facexlib's LMedS fit drops a point in about one frame of six under
    1 % landmark noise and jumps when it does: on a real face's landmarks a still face's crop stepped 2.4
    px a frame (99th percentile 6.7) against 1.5 (2.8), and a nose drifting smoothly made it jump 5.3 px
    where this fit moves 0.03 (``benchmarks/bench_masks.py``). Stills use it too: LMedS only wins on a
    landmark that is grossly wrong, and on a real face, whose points never sit exactly on the template,
    not even there (a robust reweighted fit was measured and gained too little to be worth its noise).
    """
    if template is None:
        template = FFHQ_TEMPLATE_512 * (face_size / 512)
    # Points as complex numbers: a similarity is w = a·z + t, and its least-squares a is ⟨z, w⟩ / ⟨z, z⟩
    # over the centred points.
    z = landmarks[..., 0].astype(np.float64) + 1j * landmarks[..., 1].astype(np.float64)
    w = template[:, 0].astype(np.float64) + 1j * template[:, 1].astype(np.float64)
    zc, wc = z - z.mean(axis=-1, keepdims=True), w - w.mean()
    spread = (np.abs(zc) ** 2).sum(axis=-1)
    a = (np.conj(zc) * wc).sum(axis=-1) / np.where(spread > 0, spread, 1)  # all points equal: a = 0
    t = w.mean() - a * z.mean(axis=-1)
    out = np.zeros((len(z), 2, 3), np.float64)
    out[:, 0] = np.stack([a.real, -a.imag, t.real], axis=-1)
    out[:, 1] = np.stack([a.imag, a.real, t.imag], axis=-1)
    return out


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Invert a stack of (…, 2, 3) affine matrices."""
    a, t = m[..., :2], m[..., 2:]
    a_inv = np.linalg.inv(a)
    return np.concatenate([a_inv, -a_inv @ t], axis=-1)


def _pixel_to_normalized(width: int, height: int) -> np.ndarray:
    """3x3 map from pixel coordinates to grid_sample's [-1, 1] coordinates (align_corners=False)."""
    return np.array([[2 / width, 0, 1 / width - 1], [0, 2 / height, 1 / height - 1], [0, 0, 1]])


def sampling_grid(
    out_to_in: np.ndarray, out_size: tuple[int, int], in_size: tuple[int, int], device: torch.device
) -> torch.Tensor:
    """Grids for ``grid_sample``: ``out_to_in`` (N, 2, 3) maps output pixels to input pixels.

    Sizes are (width, height). Returns (N, H_out, W_out, 2) float32.
    """
    ow, oh = out_size
    n = len(out_to_in)
    m = np.concatenate([out_to_in, np.tile([[[0, 0, 1]]], (n, 1, 1))], axis=1)
    theta = _pixel_to_normalized(*in_size) @ m @ np.linalg.inv(_pixel_to_normalized(ow, oh))
    theta_t = torch.from_numpy(theta[:, :2].astype(np.float32)).to(device)
    return F.affine_grid(theta_t, [n, 1, oh, ow], align_corners=False)


def warp_faces(
    frames: torch.Tensor, frame_index: np.ndarray, affines: np.ndarray, face_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut aligned face crops out of frames.

    ``frames`` is (B, C, H, W) float; face ``i`` comes from ``frames[frame_index[i]]`` with the
    frame→crop transform ``affines[i]``. Outside the frame the crop is filled with the FFHQ grey.
    Returns the crops (N, C, S, S) and, per crop, the fraction of each pixel that came from inside the
    frame (N, 1, S, S): paste-back must not paint the grey padding back into the frame.
    """
    n = len(affines)
    _, c, h, w = frames.shape
    crops = frames.new_empty(n, c, face_size, face_size)
    inside = frames.new_empty(n, 1, face_size, face_size)
    if n == 0:
        return crops, inside
    border = torch.tensor(BORDER_RGB if c == 3 else [0.5] * c, dtype=frames.dtype, device=frames.device)
    border = border.view(1, c, 1, 1)
    grids = sampling_grid(invert_affine(affines), (face_size, face_size), (w, h), frames.device)
    for b in np.unique(frame_index):
        sel = np.nonzero(frame_index == b)[0]
        # All faces of one frame in one call: their grids are stacked along the height.
        grid = grids[sel].reshape(1, len(sel) * face_size, face_size, 2).to(frames.dtype)
        src = torch.cat([frames[b : b + 1] - border, torch.ones_like(frames[b : b + 1, :1])], dim=1)
        out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out.view(c + 1, len(sel), face_size, face_size).transpose(0, 1)
        idx = torch.from_numpy(sel).to(frames.device)
        crops[idx] = out[:, :c] + border
        inside[idx] = out[:, c:]
    return crops, inside
