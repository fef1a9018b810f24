import numpy as np
import torch

from vidrestore.faces.alignment import estimate_transforms, warp_faces
from vidrestore.faces.paste import feather_mask, fill_padding, paste_faces

LANDMARKS = np.array([[[203.0, 101.5], [247.0, 104.5], [223.0, 125.0], [203.0, 142.0], [241.5, 144.0]]])


def test_feather_mask_is_soft_and_zero_at_the_crop_edge():
    m = feather_mask(512, torch.device("cpu"), torch.float32)[0, 0]
    assert m[256, 256] == 1
    assert m[0].max() < 5e-3 and m[:, -1].max() < 5e-3
    # No square seam: neighbouring values never jump.
    assert m.diff(dim=0).abs().max() < 0.05 and m.diff(dim=1).abs().max() < 0.05


def test_paste_changes_nothing_outside_the_face_footprint(astronaut):
    frame = torch.from_numpy(astronaut).permute(2, 0, 1)[None].float() / 255
    m = estimate_transforms(LANDMARKS, 128)
    crops, inside = warp_faces(frame, np.array([0]), m, 128)
    out = frame.clone()
    paste_faces(
        out,
        np.array([0]),
        m,
        fill_padding(torch.ones_like(crops), inside),
        feather_mask(128, frame.device, torch.float32),
    )
    changed = (out != frame).any(dim=1)[0]
    ys, xs = np.nonzero(changed.numpy())
    assert 150 < len(ys) < 512 * 512 // 4
    assert xs.min() > 100 and xs.max() < 360 and ys.max() < 260


def test_face_at_the_border_paints_no_padding_into_the_frame():
    # A flat red frame with a "face" in its top-left corner: its crop runs far off the frame and is
    # padded with grey. Pasting the crop back as it is must leave the frame red, with no grey band.
    frame = torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1).expand(1, 3, 240, 320).clone()
    lm = LANDMARKS - [190, 90]
    m = estimate_transforms(lm, 128)
    crops, inside = warp_faces(frame, np.array([0]), m, 128)
    assert inside.min() == 0 and (crops[0, 1] > 0.4).any()  # the grey is there in the crop
    alpha = feather_mask(128, frame.device, torch.float32)
    out = frame.clone()
    paste_faces(out, np.array([0]), m, fill_padding(crops, inside), alpha)
    assert (out - frame).abs().max() < 2e-3


def _pasted_alpha(frame_size: tuple[int, int], landmarks: np.ndarray, size: int = 128) -> torch.Tensor:
    """The alpha a face pastes into each pixel of a frame (H, W)."""
    h, w = frame_size
    frame = torch.full((1, 3, h, w), 0.3)
    m = estimate_transforms(landmarks, size)
    _, inside = warp_faces(frame, np.array([0]), m, size)
    alpha = torch.zeros(1, 1, h, w)
    mask = feather_mask(size, frame.device, torch.float32)
    paste_faces(alpha, np.array([0]), m, fill_padding(torch.ones(1, 1, size, size), inside), mask)
    return alpha[0, 0]


def test_the_face_is_pasted_up_to_the_frame_edge():
    # A large face (eyes 114 px apart) in the top-left corner, and the same face with 100 px more frame
    # around it: every in-frame pixel gets the same alpha, with no faded strip along the edges.
    lm = (LANDMARKS - LANDMARKS[0, :2].mean(axis=0)) * 114 / 44 + [40, 30]
    edge = _pasted_alpha((240, 320), lm)
    interior = _pasted_alpha((440, 520), lm + 100)[100:340, 100:420]
    assert edge[0].max() > 0.9 and edge[:, 0].max() > 0.9  # the face really reaches both edges
    assert (edge - interior).abs().max() < 1e-5


def test_no_grey_comes_back_at_any_face_size():
    # Faces from much smaller than the crop to larger than it, on a flat frame cut off by its left edge.
    frame = torch.tensor([0.9, 0.1, 0.1]).view(1, 3, 1, 1).expand(1, 3, 200, 260).clone()
    for eyes in (15.0, 44.0, 150.0):
        lm = (LANDMARKS - LANDMARKS[0, :2].mean(axis=0)) * eyes / 44 + [eyes * 0.2, 100]
        m = estimate_transforms(lm, 128)
        crops, inside = warp_faces(frame, np.array([0]), m, 128)
        out = frame.clone()
        paste_faces(
            out, np.array([0]), m, fill_padding(crops, inside), feather_mask(128, frame.device, torch.float32)
        )
        assert (out - frame).abs().max() < 2e-3, eyes
