import numpy as np
import torch

from vidrestore.faces.alignment import estimate_transforms, warp_faces
from vidrestore.faces.paste import crop_alpha, feather_mask, paste_faces

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
        torch.ones_like(crops),
        crop_alpha(inside, feather_mask(128, frame.device, torch.float32)),
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
    alpha = crop_alpha(inside, feather_mask(128, frame.device, torch.float32))
    out = frame.clone()
    paste_faces(out, np.array([0]), m, crops, alpha)
    assert (out - frame).abs().max() < 2e-3
