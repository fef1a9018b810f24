"""Film grain on restored faces: the source's grain measured around each face, matching grain added back.

A restoration network returns a clean face; pasted into a grainy or noisy frame it looks stuck on. Before
paste-back, :func:`match_grain` measures the grain of the film around each face in the source frame, in
frame pixels (two high-pass bands per channel, robust to edges, and how the channels' grain correlates),
pools it over the faces of the frame, fits a grain model to it (white noise through a Gaussian of some
size, per channel, channels mixed), and adds grain drawn from that model to the restored face. The grain
is drawn in frame pixels and warped into the crop with the face's own alignment, so that it lands in the
frame at the film's scale whatever the size of the crop. The restored face's own fine texture counts
towards the level: the grain only tops it up to the film's. Grain is fresh in every frame and the same on
every run: each face's draw is seeded by the source pixels at the face's centre (see :func:`seed_of`).

Everything is measured anew in every frame, from that frame alone: the grain follows the film's own changes
(a cut, a noisier shot) at once, and a frame comes out the same whatever batch, segment or history it is
restored in, so the VapourSynth filter's segments match the CLI exactly. One frame's ring holds thousands
of pixels: its level is known to a few per cent, too little to flicker.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from vidrestore.faces.alignment import invert_affine, sampling_grid
from vidrestore.faces.film import FilmContext
from vidrestore.faces.paste import gaussian_blur

HIGH, MID = 0.8, 2.0  # the bands, in frame px: x - blur(x, HIGH) and blur(x, HIGH) - blur(x, MID)
# Grain sizes the fit knows (σ of the Gaussian that shapes white noise, frame px), from pixel noise to clumps.
SIZES = (0.0, 0.3, 0.4, 0.5, 0.6, 0.7, 0.85, 1.0, 1.2, 1.5, 1.9, 2.4, 3.0)
MARGIN = 7  # frame px at a patch's edge where the bands see the zero padding
# In crop coordinates (fractions of the crop): the face is the ellipse, the film around it lies outside the
# larger one and inside the crop. The template puts the eyes at y 0.47 and the mouth at y 0.73.
FACE = (0.5, 0.56, 0.26, 0.33)  # centre x, centre y, half width, half height
AROUND = (0.5, 0.56, 0.36, 0.44)
MIN_PIXELS = 256  # fewer film pixels around a face than this measure nothing
SEED_BLOCK = 16  # px: the source block whose pixels seed a face's grain


@dataclass(frozen=True)
class Grain:
    """A grain model per channel: white noise of ``level`` shaped by a Gaussian of ``size`` frame px,
    the three channels' white noise correlated by ``corr``; ``noise`` is the high band's σ it came from."""

    level: np.ndarray  # (3,)
    size: np.ndarray  # (3,)
    corr: np.ndarray  # (3, 3)
    noise: np.ndarray  # (3,)


def high_band(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """The finest detail of (N, C, H, W): x minus its blur at ``HIGH`` frame px (``scale`` crop px each)."""
    return x - gaussian_blur(x, HIGH * scale)


def mid_band(x: torch.Tensor) -> torch.Tensor:
    """The next band down: what a blur at ``HIGH`` px keeps and one at ``MID`` px removes."""
    return gaussian_blur(x, HIGH) - gaussian_blur(x, MID)


def robust_sigma(values: torch.Tensor) -> torch.Tensor:
    """Per row of (C, K) zero-mean values: σ from the median absolute value, so edges and features in a
    minority of the pixels do not count as grain."""
    if values.shape[-1] == 0:
        return values.new_zeros(values.shape[:-1])
    return values.abs().median(dim=-1).values / 0.6745


def shape_grain(white: torch.Tensor, size: float) -> torch.Tensor:
    """White noise (N, 1, H, W) shaped into grain of ``size`` px (a normalised Gaussian; 0 keeps it white)."""
    return gaussian_blur(white, size) if size > 0 else white


@lru_cache(maxsize=1)
def responses() -> tuple[np.ndarray, np.ndarray]:
    """Per grain size of ``SIZES``: the high band's σ for unit white noise shaped to that size, and the
    mid band's σ over the high band's (rising with the size: what the fit inverts). Exact: the σ of a
    linear filter of unit white noise is the norm of its impulse response."""
    n = 41
    delta = torch.zeros(1, 1, n, n)
    delta[..., n // 2, n // 2] = 1
    grains = torch.cat([shape_grain(delta, s) for s in SIZES])
    high = high_band(grains).square().sum((1, 2, 3)).sqrt()
    mid = mid_band(grains).square().sum((1, 2, 3)).sqrt()
    return high.double().numpy(), (mid / high).double().numpy()


def fit_grain(high: np.ndarray, mid: np.ndarray, corr: np.ndarray) -> Grain:
    """The grain model whose bands have the measured robust σ ``high`` and ``mid`` (per channel)."""
    unit_high, ratio = responses()
    safe = np.maximum(high, 1e-12)
    size = np.interp(mid / safe, ratio, SIZES)
    level = np.where(high > 0, high / np.interp(size, SIZES, unit_high), 0.0)
    return Grain(level, size, corr, high)


def _ellipse(u: torch.Tensor, v: torch.Tensor, shape: tuple[float, float, float, float]) -> torch.Tensor:
    cx, cy, rx, ry = shape
    return ((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2 <= 1


def _footprint(inverse: np.ndarray, size: int) -> tuple[float, float, float, float]:
    """The frame box (x0, y0, x1, y1) a crop covers, from its crop→frame map."""
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], np.float64)
    pts = corners @ inverse[:, :2].T + inverse[:, 2]
    return pts[:, 0].min(), pts[:, 1].min(), pts[:, 0].max(), pts[:, 1].max()


def measure_around(
    frame: torch.Tensor, affine: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """The film's grain around one face of ``frame`` (C, H, W): the high and mid bands' robust σ per
    channel and the channels' correlation, measured in frame pixels between the face and the crop's edge;
    None where too little of the film around the face lies inside the frame."""
    _, h, w = frame.shape
    x0, y0, x1, y1 = _footprint(invert_affine(affine), size)
    xa, ya = max(0, int(np.floor(x0)) - MARGIN), max(0, int(np.floor(y0)) - MARGIN)
    xb, yb = min(w, int(np.ceil(x1)) + MARGIN), min(h, int(np.ceil(y1)) + MARGIN)
    if xb - xa <= 2 * MARGIN + 8 or yb - ya <= 2 * MARGIN + 8:
        return None
    patch = frame[None, :, ya:yb, xa:xb]
    ys = torch.arange(ya, yb, device=frame.device, dtype=torch.float64)[:, None]
    xs = torch.arange(xa, xb, device=frame.device, dtype=torch.float64)[None, :]
    m = torch.from_numpy(affine).to(frame.device)
    u = (m[0, 0] * xs + m[0, 1] * ys + m[0, 2]) / size
    v = (m[1, 0] * xs + m[1, 1] * ys + m[1, 2]) / size
    ring = (u > 0.02) & (u < 0.98) & (v > 0.02) & (v < 0.98) & ~_ellipse(u, v, AROUND)
    ring[:MARGIN] = ring[-MARGIN:] = False
    ring[:, :MARGIN] = ring[:, -MARGIN:] = False
    if int(ring.sum()) < MIN_PIXELS:
        return None
    high = high_band(patch)[0][:, ring]
    mid = mid_band(patch)[0][:, ring]
    s_high, s_mid = robust_sigma(high), robust_sigma(mid)
    calm = (high.abs() <= 3 * s_high[:, None]).all(0)  # the grain, not the edges, sets the correlation
    corr = torch.corrcoef(high[:, calm]) if int(calm.sum()) > 16 else torch.eye(len(high))
    corr = torch.nan_to_num(corr, nan=0.0).fill_diagonal_(1.0)
    return s_high.double().cpu().numpy(), s_mid.double().cpu().numpy(), corr.double().cpu().numpy()


def draw_grain(grain: Grain, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """A (1, 3, height, width) field of ``grain`` drawn with ``generator`` (on its device)."""
    pad = int(3 * float(grain.size.max()) + 0.5) + 1
    white = torch.randn(
        3, (height + 2 * pad) * (width + 2 * pad), generator=generator, device=generator.device
    )
    mix = np.linalg.cholesky(grain.corr + 1e-6 * np.eye(3))
    white = (torch.from_numpy(mix).float().to(white.device) @ white).view(3, 1, height + 2 * pad, -1)
    shaped = torch.cat([shape_grain(white[c : c + 1], float(grain.size[c])) for c in range(3)], dim=1)
    level = torch.from_numpy(grain.level).float().to(white.device).view(1, 3, 1, 1)
    return shaped[..., pad : pad + height, pad : pad + width] * level


def grain_in_crop(grain: Grain, affine: np.ndarray, size: int, generator: torch.Generator) -> torch.Tensor:
    """Grain drawn in frame pixels over the crop's footprint, warped into the (1, 3, size, size) crop."""
    inverse = invert_affine(affine)
    x0, y0, x1, y1 = _footprint(inverse, size)
    xa, ya = int(np.floor(x0)) - 1, int(np.floor(y0)) - 1
    width, height = int(np.ceil(x1)) + 2 - xa, int(np.ceil(y1)) + 2 - ya
    field = draw_grain(grain, height, width, generator)
    to_patch = inverse.copy()
    to_patch[:, 2] -= (xa, ya)
    grid = sampling_grid(to_patch[None], (size, size), (width, height), field.device)
    return F.grid_sample(field, grid, mode="bilinear", padding_mode="border", align_corners=False)


def face_region(size: int, scale: float, device: torch.device) -> torch.Tensor:
    """The (size, size) crop pixels of the face itself, away from the crop's edge by the bands' reach."""
    t = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
    region = _ellipse(t[None, :], t[:, None], FACE)
    edge = min(size // 4, int(np.ceil(MARGIN * scale)))
    region[:edge] = region[-edge:] = False
    region[:, :edge] = region[:, -edge:] = False
    return region


def fine_levels(crops: torch.Tensor, scale: float) -> torch.Tensor:
    """The finest band's robust σ (M, 3) over the face in crops (M, 3, S, S) of ``scale`` crop px per frame
    px, measured near frame resolution: crops are pooled by the whole part of ``scale`` first (what paste-back
    keeps of them anyway, and a fraction of the work)."""
    k = max(1, int(scale))
    if k > 1:
        crops, scale = F.avg_pool2d(crops, k), scale / k
    region = face_region(crops.shape[-1], scale, crops.device)
    return robust_sigma(high_band(crops, scale)[:, :, region])


def seed_of(frame: torch.Tensor, affine: np.ndarray, size: int) -> int:
    """The grain's seed for one face: the source pixels at the middle of its footprint in ``frame``.

    Real film changes there in every frame, so the grain is fresh in every frame; the same input gives
    the same grain whatever the batch, segment or track numbering it is restored in.
    """
    x0, y0, x1, y1 = _footprint(invert_affine(affine), size)
    h, w = frame.shape[-2:]
    x = min(max(0, round((x0 + x1) / 2) - SEED_BLOCK // 2), max(0, w - SEED_BLOCK))
    y = min(max(0, round((y0 + y1) / 2) - SEED_BLOCK // 2), max(0, h - SEED_BLOCK))
    # At 8 bits: the same picture gives the same grain whatever its sample type (8/16-bit, half, float).
    block = (frame[:, y : y + SEED_BLOCK, x : x + SEED_BLOCK].float().clamp(0, 1) * 255).round().byte()
    block = block.cpu().numpy()
    return int(np.random.SeedSequence([zlib.crc32(block.tobytes()), 0x6A41]).generate_state(1)[0])


def _pooled(found: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Grain:
    """One grain model from the measurements around the faces of one frame."""
    corr = np.mean([f[2] for f in found], axis=0)
    return fit_grain(
        np.sqrt(np.mean([f[0] ** 2 for f in found], axis=0)),
        np.sqrt(np.mean([f[1] ** 2 for f in found], axis=0)),
        corr,
    )


def _rounded(values: np.ndarray | float) -> list[float]:
    return [round(float(x), 3) for x in np.broadcast_to(values, (3,))]


def match_grain(
    restored: torch.Tensor,
    frames: torch.Tensor,
    frame_index: np.ndarray,
    affines: np.ndarray,
    context: FilmContext,
    setting: str | float,
) -> torch.Tensor:
    """Restored faces (N, 3, S, S) in [0, 1] with the film's grain added (``setting``: auto, off, or a
    multiple of the measured level); ``affines`` are the frame→crop maps of the faces in ``frames``."""
    if setting == "off" or len(restored) == 0:
        return restored
    strength = 1.0 if setting == "auto" else float(setting)
    size = restored.shape[-1]
    run = context.state.of("grain").setdefault(
        "run", {"faces": 0, "measured": 0, "grained": 0, "noise": 0.0, "size": 0.0, "added": 0.0}
    )
    measured: dict[int, list] = {}
    for i, affine in enumerate(affines):
        found = measure_around(frames[frame_index[i]], affine, size)
        measured.setdefault(int(frame_index[i]), [])
        if found is not None:
            measured[int(frame_index[i])].append(found)
    models = {b: _pooled(found) for b, found in measured.items() if found}
    grey = context.state.of("colour").get("neutral")  # faces the colour step kept exactly grey
    out = restored.float().clone()
    for i, affine in enumerate(affines):
        run["faces"] += 1
        grain = models.get(int(frame_index[i]))
        if grain is None:
            context.state.notice("grain: too little film around some faces to measure its grain; none added")
            continue
        run["measured"] += 1
        run["noise"] = run["noise"] + grain.noise * 255
        run["size"] = run["size"] + grain.size
        if not grain.level.any():
            continue
        generator = torch.Generator(device=restored.device)
        generator.manual_seed(seed_of(frames[frame_index[i]], affine, size))
        field = grain_in_crop(grain, affine, size, generator)
        scale = float(np.sqrt(abs(np.linalg.det(affine[:, :2]))))  # crop px per frame px
        own, added = fine_levels(torch.cat([out[i : i + 1], field]), scale)
        # Top the face's own fine texture up to the film's level: grain adds in variance.
        share = (strength**2 - (own / added.clamp_min(1e-12)) ** 2).clamp_min(0).sqrt()
        added_grain = field[0] * share.view(3, 1, 1)
        if grey is not None and bool(grey[i]):  # one grain in all three channels: grey stays exactly grey
            added_grain = added_grain.mean(dim=0, keepdim=True)
        out[i] += added_grain
        run["grained"] += 1
        run["added"] = run["added"] + share.double().cpu().numpy()
    counted = max(1, run["measured"])
    context.state.report["grain"] = {
        "setting": setting,
        "faces": run["faces"],
        "faces_grained": run["grained"],
        "film_noise": _rounded(run["noise"] / counted),
        "grain_size_px": _rounded(run["size"] / counted),
        "grain_added": _rounded(run["added"] / max(1, run["grained"])),
    }
    return out.clamp_(0, 1).to(restored.dtype)
