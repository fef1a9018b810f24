"""What ``--model auto`` decides on: per source eye distance, what each network gets and gives.

For source faces whose eyes are 4 to 64 px apart (the astronaut, scaled down from its 512 photo, eyes 44 px
apart, then degraded as the temporal clips are, ``vidrestore.evaluation.clips.degrade``), for each network
of ``--auto-models``:

- **input**: PSNR / SSIM of its input crop (warped from the degraded source as the engine does: GFP-GAN's
  512 crop, PFSR's 128 crop halved to 16) against the same crop of the clean photo, on the face under the
  paste mask, at the network's input scale; and the same input enlarged (bicubic) to the network's output
  size against the clean output-size crop: how much of what the network must output its input holds.
- **enlargement**: output eye distance / source eye distance, beside the range its training covered
  (GFP-GAN: 512 crops downsampled 1-8x; PFSR: 16 px inputs, always 8x).
- **output**: PSNR / SSIM of the network's output against the clean crop at the output size, with the
  weights installed (``--weights-dir``, the cache); without them, random weights in the released layout:
  then the figures only show the measurement runs, and the table and JSON say so.
- **recall**: the fraction of faces the detector finds at that eye distance (CenterFace at full size; the
  face composited at random sub-pixel positions over a real background, degraded).

    python -m benchmarks.bench_auto [--eyes 4,6,8,11,16,22,32,45,64] [--seeds 3] [--weights-dir DIR]
        [--models pfsr,gfpgan-v1.4] [--no-outputs] [--out benchmarks/results/auto_cpu_<date>.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from skimage import data
from skimage.metrics import structural_similarity

from vidrestore import weights
from vidrestore.errors import WeightsError
from vidrestore.evaluation.clips import (
    DEGRADATION,
    EYE_DISTANCE,
    apply_affine,
    backgrounds,
    composite,
    degrade,
    reference_landmarks,
    similarity,
    sprites,
)
from vidrestore.faces.alignment import estimate_transforms, warp_faces
from vidrestore.faces.detection import create_detector, detect_faces
from vidrestore.faces.paste import feather_mask
from vidrestore.faces.resample import halve_like_pil
from vidrestore.models import ModelSpec, get_model
from vidrestore.pipeline import versions

# What each network's training covered, as enlargement of the face from its input to its output crop.
TRAINED = {"gfpgan": (1.0, 8.0), "pfsr": (8.0, 8.0)}


def _network(spec: ModelSpec, weights_dir: Path | None, tmp: Path) -> tuple[torch.nn.Module, bool]:
    """The installed network, or random weights in its released layout (False: not real): PFSR's from its
    fixture's recipe, as ``bench_models`` builds it (its module leaves weights uninitialised)."""
    try:
        path = weights.resolve(spec.weights, weights_dir=weights_dir, download=False, progress=False)
        return spec.load(path), True
    except WeightsError:
        pass
    if spec.arch == "PFSRGenerator":
        from benchmarks.bench_models import _pfsr

        return _pfsr(spec, tmp).model, False
    from vidrestore.models.gfpgan import GFPGANv1Clean

    torch.manual_seed(0)
    path = tmp / f"{spec.name}.pth"
    torch.save({"params_ema": GFPGANv1Clean().state_dict()}, path)
    return spec.load(path), False


def _crops(img: np.ndarray, landmarks: np.ndarray, spec: ModelSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The engine's input and output-size crops of one face: (1, 3, s, s) and (1, 3, S, S) in [0, 1]."""
    out_size = spec.face_size * spec.scale
    frame = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    affine = estimate_transforms(landmarks[None], out_size, spec.template_for(out_size))
    crop, _ = warp_faces(frame, np.zeros(1, np.int64), affine, out_size)
    halvings = spec.scale.bit_length() - 1
    return (halve_like_pil(crop, halvings) if halvings else crop), crop


def _scores(x: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """PSNR (dB) and SSIM of ``x`` against ``truth`` (1, 3, S, S), on the face under the paste mask."""
    size = truth.shape[-1]
    mask = (feather_mask(size, torch.device("cpu"), torch.float32)[0, 0] > 0.5).numpy()
    a, b = (t[0].permute(1, 2, 0).clamp(0, 1).double().numpy() for t in (x, truth))
    mse = ((a - b) ** 2)[mask].mean()
    psnr = float(10 * np.log10(1 / max(mse, 1e-12)))
    win = 7 if size >= 16 else 3
    _, ssim_map = structural_similarity(a, b, channel_axis=2, data_range=1.0, full=True, win_size=win)
    return psnr, float(ssim_map[mask].mean())


def _enlarged(x: torch.Tensor, size: int) -> torch.Tensor:
    return (
        x if x.shape[-1] == size else F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
    )


def _recall(detector, eyes: float, seeds: int) -> float:
    """Found / shown, for the astronaut sprite at ``eyes`` px between the eyes over the coffee background."""
    sprite = sprites()["astronaut"]
    truth = reference_landmarks(detector, "astronaut", "coffee", 1.0)
    grow = max(1.0, eyes / EYE_DISTANCE)
    bg = cv2.resize(backgrounds()["coffee"], None, fx=grow, fy=grow, interpolation=cv2.INTER_CUBIC)
    found = shown = 0
    for seed in range(seeds * 8):
        rng = np.random.default_rng(seed)
        cx, cy = bg.shape[1] / 2 + rng.uniform(-8, 8), bg.shape[0] / 2 + rng.uniform(-8, 8)
        m = similarity(eyes / EYE_DISTANCE, 0, cx, cy, sprite.center)
        frame = degrade(composite(bg, [(sprite, m)]), rng, DEGRADATION)
        faces = detect_faces(detector, torch.from_numpy(frame[None]), min_eye_distance=0)[0]
        eyes_at = apply_affine(m, truth[:2]).mean(0)
        shown += 1
        found += any(np.linalg.norm(lm[:2].mean(0) - eyes_at) < max(2.0, eyes / 2) for lm in faces.landmarks)
    return found / shown


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--eyes", default="4,6,8,11,16,22,32,45,64")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--models", default="pfsr,gfpgan-v1.4")
    ap.add_argument("--weights-dir", type=Path, default=None)
    ap.add_argument("--no-outputs", action="store_true", help="skip running the networks")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    date = datetime.date.today().isoformat()
    out = args.out or Path("benchmarks/results") / f"auto_cpu_{date}.json"
    torch.set_grad_enabled(False)
    specs = [get_model(name) for name in args.models.split(",")]
    detector = create_detector("centerface", torch.device("cpu"))
    photo = data.astronaut()
    landmarks = detect_faces(detector, torch.from_numpy(photo[None]))[0].landmarks[0].astype(np.float64)
    photo_eyes = float(np.linalg.norm(landmarks[1] - landmarks[0]))
    truths = {spec.name: _crops(photo, landmarks, spec) for spec in specs}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        nets = {} if args.no_outputs else {s.name: _network(s, args.weights_dir, Path(tmp)) for s in specs}
        for eyes in map(float, args.eyes.split(",")):
            f = eyes / photo_eyes
            size = (round(photo.shape[1] * f), round(photo.shape[0] * f))
            small = cv2.resize(photo, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC)
            source_landmarks = (landmarks + 0.5) * f - 0.5
            row: dict = {"eyes": eyes, "recall": _recall(detector, eyes, args.seeds), "models": {}}
            for spec in specs:
                clean_in, clean_out = truths[spec.name]
                out_size = clean_out.shape[-1]
                template_eyes = float(np.linalg.norm(np.subtract(*spec.template_for(out_size)[:2])))
                family = "pfsr" if spec.name == "pfsr" else "gfpgan"
                scores: dict[str, list] = {"input": [], "input_enlarged": [], "output": []}
                for seed in range(args.seeds):
                    degraded = degrade(small, np.random.default_rng(1000 + seed), DEGRADATION)
                    x, _ = _crops(degraded, source_landmarks, spec)
                    scores["input"].append(_scores(x, clean_in))
                    scores["input_enlarged"].append(_scores(_enlarged(x, out_size), clean_out))
                    if spec.name in nets:
                        y = nets[spec.name][0](x * 2 - 1)
                        scores["output"].append(_scores((y.clamp(-1, 1) + 1) / 2, clean_out))
                row["models"][spec.name] = {
                    "enlargement": template_eyes / eyes,
                    "trained_enlargement": TRAINED[family],
                    **{k: np.mean(v, axis=0).round(4).tolist() for k, v in scores.items() if v},
                }
            rows.append(row)
            print(_line(row), flush=True)
    real = {name: installed for name, (_, installed) in nets.items()}
    print(_table(rows, specs, real))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "date": date,
                "device": "cpu",
                "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()},
                "versions": versions(),
                "photo_eye_distance": photo_eyes,
                "degradation": DEGRADATION,
                "seeds": args.seeds,
                "weights": {
                    name: "installed" if ok else "random (outputs only show that the measurement runs)"
                    for name, ok in real.items()
                },
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out}")


def _line(row: dict) -> str:
    parts = [f"eyes {row['eyes']:>4g} px  recall {row['recall']:.2f}"]
    for name, m in row["models"].items():
        parts.append(f"{name}: x{m['enlargement']:.1f} in {m['input'][0]:.1f} dB / {m['input'][1]:.3f}")
    return "  ".join(parts)


def _table(rows: list[dict], specs: list[ModelSpec], real: dict[str, bool]) -> str:
    head = ["eyes (px)", "detector recall"]
    for spec in specs:
        n = spec.name
        head += [f"{n} enlargement", f"{n} input PSNR/SSIM", f"{n} input at output size"]
        if n in real:
            head.append(f"{n} output PSNR/SSIM ({'installed' if real[n] else 'RANDOM weights'})")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [f"{row['eyes']:g}", f"{row['recall']:.2f}"]
        for spec in specs:
            m = row["models"][spec.name]
            lo, hi = m["trained_enlargement"]
            trained = f"{hi:g}" if lo == hi else f"{lo:g}-{hi:g}"
            cells += [f"{m['enlargement']:.1f}x (trained {trained}x)"]
            cells += [f"{m[k][0]:.1f} / {m[k][1]:.3f}" for k in ("input", "input_enlarged")]
            if "output" in m:
                cells.append(f"{m['output'][0]:.1f} / {m['output'][1]:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    if not all(real.values()):
        lines.append("\nRANDOM weights: the output columns only show that the measurement runs.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
