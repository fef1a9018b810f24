import cv2
import numpy as np
import torch

from vidrestore.faces.alignment import (
    BORDER_RGB,
    FFHQ_TEMPLATE_512,
    estimate_transforms,
    invert_affine,
    warp_faces,
)
from vidrestore.faces.paste import feather_mask, fill_padding, paste_faces

LANDMARKS = np.array([[[203.0, 101.5], [247.0, 104.5], [223.0, 125.0], [203.0, 142.0], [241.5, 144.0]]])


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255


def test_transform_maps_landmarks_onto_the_template():
    m = estimate_transforms(LANDMARKS, 512)[0]
    mapped = LANDMARKS[0] @ m[:, :2].T + m[:, 2]
    assert np.abs(mapped - FFHQ_TEMPLATE_512).max() < 20  # a similarity fit: close, not exact
    a = m[:, :2]
    assert abs(a[0, 0] - a[1, 1]) < 1e-9 and abs(a[0, 1] + a[1, 0]) < 1e-9  # rotation + uniform scale
    np.testing.assert_allclose(invert_affine(invert_affine(m)), m, atol=1e-9)


def test_warp_matches_opencv_with_the_ffhq_border(astronaut):
    m = estimate_transforms(LANDMARKS, 256)
    crops, _ = warp_faces(_tensor(astronaut), np.array([0]), m, 256)
    border = tuple(round(v * 255) for v in BORDER_RGB)
    ref = cv2.warpAffine(astronaut, m[0], (256, 256), flags=cv2.INTER_LINEAR, borderValue=border)
    ours = (crops[0].permute(1, 2, 0).numpy() * 255).round()
    assert np.abs(ours - ref).mean() < 0.5
    assert np.abs(ours - ref).max() <= 3  # OpenCV's fixed-point weights


def test_round_trip_reproduces_the_image_inside_the_mask(astronaut):
    smooth = cv2.GaussianBlur(astronaut, (0, 0), 2)
    frame = _tensor(smooth)
    m = estimate_transforms(LANDMARKS, 512)
    crops, inside = warp_faces(frame, np.array([0]), m, 512)
    alpha = feather_mask(512, frame.device, torch.float32)
    out = torch.zeros_like(frame)
    paste_faces(out, np.array([0]), m, fill_padding(crops, inside), alpha)
    # Where the pasted alpha is full, warp + inverse warp gives the frame back up to interpolation error.
    full = torch.zeros_like(frame[:, :1])
    paste_faces(full, np.array([0]), m, torch.ones_like(crops[:, :1]), alpha)
    region = full[0, 0] > 0.999
    assert region.sum() > 5000
    err = (out[0] - frame[0]).abs()[:, region]
    assert err.mean() < 2 / 255 and err.max() < 12 / 255


def test_several_faces_from_several_frames_in_one_call(astronaut):
    frames = torch.stack([_tensor(astronaut)[0], _tensor(np.ascontiguousarray(astronaut[:, ::-1]))[0]])
    lm_flipped = LANDMARKS.copy()
    lm_flipped[..., 0] = 511 - lm_flipped[..., 0]
    lm_flipped = lm_flipped[:, [1, 0, 2, 4, 3]]
    landmarks = np.concatenate([LANDMARKS, lm_flipped, LANDMARKS])
    index = np.array([0, 1, 0])
    m = estimate_transforms(landmarks, 128)
    crops, _ = warp_faces(frames, index, m, 128)
    torch.testing.assert_close(crops[0], crops[2])
    single, _ = warp_faces(frames[1:], np.array([0]), m[1:2], 128)
    torch.testing.assert_close(crops[1], single[0])


def test_degenerate_landmarks_do_not_crash():
    same = np.full((1, 5, 2), 100.0)
    m = estimate_transforms(same, 512)
    assert np.all(np.isfinite(m))
    shifted = FFHQ_TEMPLATE_512[None] * 0.5 + 10
    np.testing.assert_allclose(estimate_transforms(shifted, 512)[0], [[2, 0, -20], [0, 2, -20]], atol=1e-4)


def test_the_fit_moves_continuously_with_the_landmarks():
    # A nose drifting by 0.01 px a frame moves the crop by about as little; LMedS jumped pixels when it
    # swapped the points it trusted.
    steps = []
    for k in range(200):
        lm = LANDMARKS.copy()
        lm[0, 2, 0] += 0.01 * k
        steps.append(estimate_transforms(lm, 512)[0])
    template = np.c_[FFHQ_TEMPLATE_512, np.ones(5)]
    moved = [np.abs(template @ (b - a).T).max() for a, b in zip(steps, steps[1:], strict=False)]
    assert max(moved) < 0.05


def test_the_fit_is_the_least_squares_similarity():
    rng = np.random.default_rng(0)
    lm = LANDMARKS + rng.normal(0, 2, (4, 5, 2))
    got = estimate_transforms(lm, 512)
    for m, points in zip(got, lm, strict=True):
        x, y = points[:, 0], points[:, 1]
        a = np.concatenate([np.c_[x, -y, np.ones(5), np.zeros(5)], np.c_[y, x, np.zeros(5), np.ones(5)]])
        p, q, tx, ty = np.linalg.lstsq(a, FFHQ_TEMPLATE_512.T.reshape(-1).astype(np.float64), rcond=None)[0]
        np.testing.assert_allclose(m, [[p, -q, tx], [q, p, ty]], atol=1e-6)
