"""Masks and geometry: the alignment fit, the paste at the frame edge, ParseNet masks along tracks, seams.

* **fit**: the per-frame crop step (512-crop px: how far the 5 template points move from one frame's crop to
  the next) of a still face with landmark noise of 1 % of the eye distance, and of a nose drifting smoothly;
  the error against the true alignment of a still with that noise, and with one landmark off by 20 % of
  the eye distance (where LMedS should win); facexlib's LMedS against the least-squares similarity;
* **temporal**: ``vidrestore eval temporal``'s alignment figures (CenterFace on the generated clips, through
  the product's FaceStream) with each fit: per-frame and smoothed error, jitter;
* **border**: the strip along the frame edge where a face cut by it is pasted with less alpha than inside
  the frame (eyes 114 px apart, at the left edge), before (the eroded paste) and after;
* **flicker**: on the still and the turning clip, the mean |change| of each track's ParseNet mask from
  frame to frame, as ParseNet gives it and averaged along the track (from the run's report), and the mean
  |change| of the output's face region with the square mask and with the averaged ParseNet masks;
* **seams**: on degraded stills, the gradient in the mask's transition band of the output relative to the
  source's (1: no edge added), and the area each mask replaces;
* **cost**: per face on this CPU.

ParseNet weights cannot be downloaded here: without ``--parsenet`` a random ParseNet in the official layout
stands in, and the flicker and seam figures then measure the machinery, not the masks; the same command with
``--parsenet parsing_parsenet.pth --weights GFPGANv1.4.pth`` measures the real ones.

    python -m benchmarks.bench_masks [--frames 24] [--seeds 2] [--parsenet PATH] [--weights PATH]
        [--out benchmarks/results/masks_cpu_<date>.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vidrestore import engine as engine_module
from vidrestore import weights
from vidrestore.engine import FaceRestorer
from vidrestore.evaluation import temporal
from vidrestore.evaluation.clips import CLIPS, DEGRADATION, VIDEO_DEGRADATION, degrade, make_clip
from vidrestore.faces import alignment, masks, tracking
from vidrestore.faces.alignment import FFHQ_TEMPLATE_512, estimate_transforms, invert_affine, warp_faces
from vidrestore.faces.detection import CenterFaceDetector, detect_faces
from vidrestore.faces.paste import feather_mask, fill_padding, gaussian_blur, paste_faces
from vidrestore.models.parsenet import ParseNet, ParseNetConfig
from vidrestore.options import EngineOptions, TemporalOptions
from vidrestore.pipeline import versions
from vidrestore.stream import FaceStream

TEMPLATE = FFHQ_TEMPLATE_512.astype(np.float64)
NARROW_PARSENET = ParseNetConfig(encoder=(8, 16, 16), res_depth=1, decoder=(16, 8))
EYES_512 = float(np.linalg.norm(TEMPLATE[1] - TEMPLATE[0]))


def lmeds_transforms(landmarks: np.ndarray, face_size: int, template: np.ndarray | None = None) -> np.ndarray:
    """The fit before: facexlib's ``cv2.estimateAffinePartial2D(..., LMEDS)`` per face."""
    if template is None:
        template = FFHQ_TEMPLATE_512 * (face_size / 512)
    out = estimate_transforms(landmarks, face_size, template)  # where LMedS finds nothing
    for i, lm in enumerate(landmarks):
        m, _ = cv2.estimateAffinePartial2D(lm.astype(np.float32), template, method=cv2.LMEDS)
        if m is not None:
            out[i] = m
    return out


FITS: dict[str, Callable[..., np.ndarray]] = {"lmeds": lmeds_transforms, "least_squares": estimate_transforms}


def _use_fit(fit: Callable[..., np.ndarray]) -> None:
    """Make the tracker, the smoother, the engine and the evaluation's metric all use ``fit``."""
    for module in (alignment, tracking, temporal, engine_module):
        module.estimate_transforms = fit


def _moves(m: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Mean displacement (crop px) of the template points in crop ``m`` against crop ``ref``, per pair."""
    pts = TEMPLATE @ invert_affine(ref)[:, :, :2].transpose(0, 2, 1) + invert_affine(ref)[:, None, :, 2]
    moved = pts @ m[:, :, :2].transpose(0, 2, 1) + m[:, None, :, 2]
    return np.linalg.norm(moved - TEMPLATE, axis=-1).mean(axis=-1)


# -- the fit ---------------------------------------------------------------------------------------------


def fit_figures(frames: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Crop steps of each fit on a still face with 1 % landmark noise and on a drifting nose, and how far a
    landmark off by a fifth of the eye distance moves each fit's crop.

    The face is a real one (CenterFace's landmarks on scikit-image's astronaut): its points do not sit
    exactly on the template, which is what makes LMedS choose, and switch, the points it trusts.
    """
    from skimage import data

    base = detect_faces(CenterFaceDetector(), torch.from_numpy(data.astronaut()[None]))[0].landmarks[0]
    base = base.astype(np.float64)
    eyes = float(np.linalg.norm(base[1] - base[0]))
    rng = np.random.default_rng(seed)
    noisy = base + rng.normal(0, 0.01 * eyes, (frames, 5, 2))
    drift = np.repeat(base[None], 200, axis=0)
    drift[:, 2, 0] += np.linspace(-0.1, 0.1, 200) * eyes  # the nose slides a fifth of the eye distance
    outlier = noisy.copy()
    outlier[:, 3, 1] += 0.2 * eyes  # one mouth corner a fifth of the eye distance off
    drops = sum(
        int(cv2.estimateAffinePartial2D(lm.astype(np.float32), TEMPLATE, method=cv2.LMEDS)[1].sum() < 5)
        for lm in noisy
    )
    out: dict[str, Any] = {
        "frames": frames,
        "eye_distance_px": eyes,
        "noise": "1 % of the eye distance, per coordinate",
        "lmeds_frames_dropping_a_point": drops / frames,
    }
    for name, fit in FITS.items():
        m = fit(noisy, 512)
        step = _moves(m[1:], m[:-1])
        drift_m = fit(drift, 512)
        clean = np.repeat(fit(base[None], 512), frames, axis=0)
        out[name] = {
            "still_step_mean": float(step.mean()),
            "still_step_p99": float(np.percentile(step, 99)),
            "drift_step_max": float(_moves(drift_m[1:], drift_m[:-1]).max()),
            "noise_error_rms": float(np.sqrt((_moves(m, clean) ** 2).mean())),
            "outlier_error_rms": float(np.sqrt((_moves(fit(outlier, 512), clean) ** 2).mean())),
        }
    return out


# -- eval temporal, before and after -------------------------------------------------------------------


def temporal_figures(frames: int, seeds: int, log: Callable[[str], None]) -> tuple[dict[str, Any], dict]:
    """``eval temporal``'s alignment figures with each fit, on the same detections; also the runs."""
    detector, tracker = CenterFaceDetector(), temporal._tracker()
    runs: dict[str, list[temporal.Run]] = {}
    for name in CLIPS:
        log(f"detect {name}")
        runs[name] = [temporal.detect_clip(detector, make_clip(name, frames, s)) for s in range(seeds)]
    runs["static"] = [
        temporal.detect_clip(detector, make_clip("still", frames, s, VIDEO_DEGRADATION)) for s in range(seeds)
    ]
    out: dict[str, Any] = {"frames": frames, "seeds": seeds}
    for fit_name, fit in FITS.items():
        log(f"eval temporal with {fit_name}")
        _use_fit(fit)
        table = {}
        for name, rs in runs.items():
            a = temporal._clip_figures(rs, tracker, 8, 1.0)["alignment"]
            table[name] = {
                "per_frame_rms": a["per_frame"]["rms"],
                "per_frame_jitter": a["per_frame"]["jitter"],
                "smoothed_rms": a["smoothed"]["rms"],
                "smoothed_temporal_rms": a["smoothed"]["temporal_rms"],
                "smoothed_jitter": a["smoothed"]["jitter"],
                "lag_added": a["lag"].get("added", float("nan")),
            }
        out[fit_name] = table
    _use_fit(estimate_transforms)
    return out, runs


# -- the frame edge ------------------------------------------------------------------------------------


def _eroded_alpha(inside: torch.Tensor, face_mask: torch.Tensor) -> torch.Tensor:
    """The alpha before: the in-frame part eroded and blurred over 16 px of a 512 crop."""
    r = max(1, inside.shape[-1] // 64)
    eroded = -F.max_pool2d(-inside, 4 * r + 1, stride=1, padding=2 * r)
    return gaussian_blur(eroded, r / 2) * face_mask


def border_figures(eyes: float = 114.0) -> dict[str, Any]:
    """Width of the strip along the left edge pasted with less alpha than the same face inside the frame."""
    lm = TEMPLATE * (eyes / EYES_512)
    lm = lm - [lm[:, 0].mean() - 0.15 * eyes, lm[:, 1].mean() - 200]  # the face centre 0.15 eyes in

    def pasted(frame_w: int, shift: float, eroded: bool) -> np.ndarray:
        frame = torch.full((1, 3, 400, frame_w), 0.5)
        m = estimate_transforms(lm[None] + [shift, 0], 512)
        _, inside = warp_faces(frame, np.array([0]), m, 512)
        mask = feather_mask(512, frame.device, torch.float32)
        alpha = torch.zeros(1, 1, 400, frame_w)
        if eroded:
            paste_faces(alpha, np.array([0]), m, torch.ones(1, 1, 512, 512), _eroded_alpha(inside, mask))
        else:
            paste_faces(alpha, np.array([0]), m, torch.ones(1, 1, 512, 512), mask, inside=inside)
        return alpha[0, 0].numpy()

    ref = pasted(600, 300, False)[:, 300:]
    out: dict[str, Any] = {"eye_distance_px": eyes}
    for name, eroded in (("eroded", True), ("to_the_edge", False)):
        a = pasted(300, 0, eroded)
        rows = slice(150, 251)  # through the face, away from the top and bottom edges
        ratio = a[rows] / np.maximum(ref[rows, :300], 1e-6)
        out[name] = {
            "alpha_at_column": {str(x): float(a[200, x]) for x in (0, 7, 14, 28)},
            "interior_alpha_at_column": {str(x): float(ref[200, x]) for x in (0, 7, 14, 28)},
            "strip_below_half_px": int(np.argmax((ratio >= 0.5).all(axis=0))),
            "strip_below_99pct_px": int(np.argmax((ratio >= 0.99).all(axis=0))),
        }
    return out


# -- ParseNet masks along tracks, and seams ------------------------------------------------------------


def _engine(checkpoint: Path, parsenet: Path | None, parse: bool) -> FaceRestorer:
    if parse:
        real = weights.resolve
        weights.resolve = lambda name, **kw: parsenet if name == "parsenet" else real(name, **kw)
    try:
        options = EngineOptions(weights=checkpoint, detector="centerface", device="cpu", parse=parse)
        return FaceRestorer(options, progress=False)
    finally:
        if parse:
            weights.resolve = real


def flicker_figures(runs: dict, checkpoint: Path, parsenet: Path, clips: tuple[str, ...]) -> dict[str, Any]:
    """Mask flicker along tracks (ParseNet's own vs averaged, from the run's report) and the output's
    flicker in the face region with the square mask and with the averaged ParseNet masks."""
    out: dict[str, Any] = {}
    engines = {"square": _engine(checkpoint, None, False), "parsenet": _engine(checkpoint, parsenet, True)}
    for name in clips:
        run = runs[name][0]
        x0, y0, x1, y1 = _face_box(run)
        row: dict[str, Any] = {}
        for label, engine in engines.items():
            stream = FaceStream(engine, TemporalOptions(), detect=temporal._stored(run))
            t0 = time.perf_counter()
            results = temporal._stream(stream, run)
            seconds = time.perf_counter() - t0
            frames = np.stack([run.clip.frames[r.tag] if r.rgb is None else r.rgb for r in results])
            region = frames[:, y0:y1, x0:x1].astype(np.float64)
            row[label] = {
                "output_flicker": float(np.abs(np.diff(region, axis=0)).mean()),
                "seconds_per_frame": seconds / len(frames),
            } | stream.film.report.get("masks", {})
        out[name] = row
    return out


def _face_box(run: temporal.Run) -> tuple[int, int, int, int]:
    """The frame box the faces' true 512 crops cover over the clip (x0, y0, x1, y1)."""
    truth = run.truth[:, 0]
    truth = truth[~np.isnan(truth[:, 0, 0])]
    m = invert_affine(estimate_transforms(truth.astype(np.float32), 512))
    corners = np.array([[0, 0], [511, 0], [0, 511], [511, 511]], np.float64)
    pts = (corners @ m[:, :, :2].transpose(0, 2, 1) + m[:, None, :, 2]).reshape(-1, 2)
    h, w = run.clip.frames.shape[1:3]
    x0, y0 = np.clip(np.floor(pts.min(axis=0)).astype(int), 0, None)
    x1, y1 = np.minimum(np.ceil(pts.max(axis=0)).astype(int), [w, h])
    return int(x0), int(y0), int(x1), int(y1)


def seam_figures(checkpoint: Path, parsenet: Path, stills: int = 2) -> dict[str, Any]:
    """Gradient in each mask's transition band (output over source) and the area it replaces, on stills."""
    from skimage import data

    rng = np.random.default_rng(0)
    pictures = [degrade(data.astronaut(), rng, DEGRADATION) for _ in range(stills)]
    out: dict[str, Any] = {"stills": stills}
    for label, engine in (
        ("square", _engine(checkpoint, None, False)),
        ("parsenet", _engine(checkpoint, parsenet, True)),
    ):
        seams, areas = [], []
        for picture in pictures:
            frame = torch.from_numpy(picture).permute(2, 0, 1)[None].float() / 255
            restored = engine.restore(frame)
            ones = torch.zeros(1, 1, *frame.shape[-2:])
            faces = restored.faces[0]
            if not len(faces):
                continue
            m = estimate_transforms(faces.landmarks, engine.out_size, engine.template)
            crops, inside = warp_faces(frame, np.array([0]), m, engine.out_size)
            mask = engine.parser.mask(engine.restore_faces(crops)) if engine.parser else None
            if mask is None:
                mask = feather_mask(engine.out_size, frame.device, torch.float32)
            paste_faces(ones, np.array([0]), m, torch.ones_like(crops[:, :1]), mask, inside=inside)
            alpha = ones[0, 0].numpy()
            band = (alpha > 0.02) & (alpha < 0.98)
            grad_out = _gradient(restored.frames[0].numpy())
            grad_src = _gradient(frame[0].numpy())
            seams.append(float(grad_out[band].mean() / max(grad_src[band].mean(), 1e-9)) if band.any() else 0)
            areas.append(float(alpha.sum()))
        out[label] = {"seam_gradient_ratio": float(np.mean(seams)), "area_px": float(np.mean(areas))}
    out["area_ratio_square_to_parsenet"] = out["square"]["area_px"] / max(out["parsenet"]["area_px"], 1e-9)
    return out


def _gradient(img: np.ndarray) -> np.ndarray:
    """|∇| of a (3, H, W) picture, summed over channels."""
    gy, gx = np.gradient(img.astype(np.float64), axis=(1, 2))
    return np.hypot(gx, gy).sum(axis=0)


# -- cost per face ---------------------------------------------------------------------------------------


def cost_figures(parsenet: Path, faces: int = 2) -> dict[str, float]:
    """Milliseconds per face of each step on this CPU, at 512 (``parsenet``: a ParseNet of the official
    widths; its cost does not depend on its weights)."""
    from vidrestore.faces.film import FilmContext, FilmState
    from vidrestore.faces.parsing import FaceParser

    rng = np.random.default_rng(0)
    lm = TEMPLATE[None] * 0.4 + rng.normal(0, 1, (256, 5, 2)) + 100
    out = {}
    for name, fit in FITS.items():
        t0 = time.perf_counter()
        fit(lm, 512)
        out[f"fit_{name}_ms"] = 1000 * (time.perf_counter() - t0) / len(lm)
    parser = FaceParser(parsenet, torch.device("cpu"))
    restored = torch.rand(faces, 3, 512, 512)
    t0 = time.perf_counter()
    raw = parser.mask(restored)
    out["parsenet_mask_ms"] = 1000 * (time.perf_counter() - t0) / faces
    context = FilmContext(np.zeros(faces, np.int64), np.zeros(faces, np.int64), np.arange(faces), FilmState())
    t0 = time.perf_counter()
    masks._average_along_tracks(raw, np.arange(faces), context, {})
    out["track_average_ms"] = 1000 * (time.perf_counter() - t0) / faces
    inside = torch.ones(faces, 1, 512, 512)
    inside[..., :100] = 0.5
    t0 = time.perf_counter()
    fill_padding(restored, inside)
    out["fill_padding_ms_face_at_edge"] = 1000 * (time.perf_counter() - t0) / faces
    return out


# -- the whole benchmark -------------------------------------------------------------------------------


def _random_parsenet(path: Path, config: ParseNetConfig) -> Path:
    """A random ParseNet of ``config``'s widths in the official layout."""
    torch.manual_seed(0)
    torch.save(ParseNet(config).state_dict(), path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=24, help="frames per generated clip (default 24)")
    ap.add_argument("--seeds", type=int, default=2, help="clips of each kind (default 2)")
    ap.add_argument("--parsenet", type=Path, help="ParseNet checkpoint (default: random, official layout)")
    ap.add_argument("--weights", type=Path, help="GFP-GAN checkpoint (default: eval temporal's tiny one)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    date = datetime.date.today().isoformat()
    out_path = args.out or Path("benchmarks/results") / f"masks_cpu_{date}.json"
    torch.set_num_threads(2)

    def log(msg: str) -> None:
        print(msg, flush=True)

    result: dict[str, Any] = {
        "date": date,
        "cpu": platform.processor() or platform.machine(),
        "versions": versions(),
        "parsenet": str(args.parsenet) if args.parsenet else "random, narrow (official layout)",
        "gfpgan": str(args.weights) if args.weights else "tiny random (eval temporal's)",
    }
    log("fit")
    result["fit"] = fit_figures()
    log("border")
    result["border"] = border_figures()
    with tempfile.TemporaryDirectory() as tmp:
        full = args.parsenet or _random_parsenet(Path(tmp) / "parsenet.pth", ParseNetConfig())
        # Without real weights the masks come from a narrow random ParseNet: the official widths take
        # tens of seconds a face on this shared CPU, and random weights say nothing about the masks anyway.
        parsenet = args.parsenet or _random_parsenet(Path(tmp) / "narrow.pth", NARROW_PARSENET)
        checkpoint = args.weights or temporal.tiny_checkpoint(Path(tmp))
        log("cost")
        result["cost_ms_per_face"] = cost_figures(full)
        result["temporal"], runs = temporal_figures(args.frames, args.seeds, log)
        log("flicker")
        result["flicker"] = flicker_figures(runs, checkpoint, parsenet, ("static", "turn"))
        log("seams")
        result["seams"] = seam_figures(checkpoint, parsenet)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2))
    print(format_tables(result))
    print(f"\nraw figures: {out_path}")


def format_tables(r: dict[str, Any]) -> str:
    """The figures as Markdown tables."""
    fit = r["fit"]
    lines = ["| fit | still step mean | p99 | drift max step | error from noise | one landmark off |"]
    lines.append("|---|---|---|---|---|---|")
    for name in FITS:
        f = fit[name]
        lines.append(
            f"| {name} | {f['still_step_mean']:.2f} | {f['still_step_p99']:.2f} | {f['drift_step_max']:.3f} "
            f"| {f['noise_error_rms']:.2f} | {f['outlier_error_rms']:.2f} |"
        )
    lines += ["", "| clip | per-frame rms LMedS → LS | smoothed rms | smoothed jitter | lag added |"]
    lines.append("|---|---|---|---|---|")
    t = r["temporal"]
    for name in t["lmeds"]:
        a, b = t["lmeds"][name], t["least_squares"][name]
        lines.append(
            f"| {name} | {a['per_frame_rms']:.2f} → {b['per_frame_rms']:.2f} "
            f"| {a['smoothed_rms']:.2f} → {b['smoothed_rms']:.2f} "
            f"| {a['smoothed_jitter']:.2f} → {b['smoothed_jitter']:.2f} "
            f"| {a['lag_added']:+.2f} → {b['lag_added']:+.2f} |"
        )
    b = r["border"]
    lines += ["", "| paste at the edge | strip alpha < ½ inside's (px) | < 99 % (px) | alpha at 0 / 14 px |"]
    lines.append("|---|---|---|---|")
    for name in ("eroded", "to_the_edge"):
        e = b[name]
        lines.append(
            f"| {name} | {e['strip_below_half_px']} | {e['strip_below_99pct_px']} "
            f"| {e['alpha_at_column']['0']:.2f} / {e['alpha_at_column']['14']:.2f} |"
        )
    lines += ["", "| clip | mask | mask flicker: ParseNet → averaged | averaged off own | output flicker |"]
    lines.append("|---|---|---|---|---|")
    for clip, row in r["flicker"].items():
        for mask, v in row.items():
            flicker = (
                f"{v['flicker_parsenet']:.4f} → {v['flicker_averaged']:.4f}"
                if "flicker_parsenet" in v
                else "0"
            )
            lines.append(
                f"| {clip} | {mask} | {flicker} | {v.get('held_vs_parsenet', 0):.4f} "
                f"| {v['output_flicker']:.2f} |"
            )
    s = r["seams"]
    lines += ["", "| still mask | seam gradient ratio | area replaced (px) |", "|---|---|---|"]
    for name in ("square", "parsenet"):
        lines.append(f"| {name} | {s[name]['seam_gradient_ratio']:.2f} | {s[name]['area_px']:.0f} |")
    lines += [
        "",
        "cost per face (ms): " + ", ".join(f"{k} {v:.2f}" for k, v in r["cost_ms_per_face"].items()),
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
