"""Texture held still along a track (``--texture-smooth``): shimmer on a still face, ghosting on a moving one.

Generated clips with a real face (scikit-image's astronaut, :mod:`vidrestore.evaluation.clips`), a static
shot's degradations (blur and scale fixed, noise and JPEG drawn per frame) and film grain drawn afresh per
frame (``add_film_grain``). CenterFace's detections go through the product's :class:`FaceStream` (tracking,
smoothing, batches) and engine once per clip, with the stabilisation off; what the engine hands
:func:`stabilise_texture` is recorded per batch and every setting is replayed on it, as the engine runs it
(the network's output does not depend on the setting). Figures in 8-bit levels, on the restored face in
its aligned crop (eyes to chin):

* ``still``: shimmer, the mean |frame-to-frame difference| of the restored face; the target is at most
  half of the unstabilised one;
* ``talk`` (the jaw opens 6 px and closes every 12 frames, warped into the clean frames), ``turn``
  (rotation ±12° and zoom ±15 %) and ``accel`` (a face from rest to 4 px/frame and back): ghosting, the
  mean |stabilised - unstabilised| where the clean source (warped as the engine warped the degraded one)
  changed by more than 8 levels within the window, beside the same where it did not (the shimmer
  removed); equal figures mean no ghost. "no motion test" averages every earlier frame fully, for scale;
* cost: ms per face of :func:`stabilise_texture` in the run, and at 512 px on random data.

The network is a random GFP-GAN of the official architecture (``--size`` px, StyleGAN noise strengths 0.1)
unless ``--weights`` names a real checkpoint: the same measurement, to be rerun with real weights (how much
a network turns noise into different detail, so the absolute shimmer and errors, depend on its weights).

    python -m benchmarks.bench_texture [--frames 24] [--windows 2,4,8] [--size 256] [--weights FILE]
        [--out benchmarks/results/texture_cpu_<date>.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from unittest.mock import patch

import cv2
import numpy as np
import torch

from vidrestore import engine as engine_module
from vidrestore.engine import FaceRestorer
from vidrestore.evaluation import clips as C
from vidrestore.evaluation.temporal import detect_clip
from vidrestore.faces import texture
from vidrestore.faces.alignment import warp_faces
from vidrestore.faces.film import FilmContext, FilmState
from vidrestore.faces.texture import stabilise_texture
from vidrestore.models.gfpgan import GFPGANConfig, GFPGANv1Clean
from vidrestore.options import EngineOptions, TemporalOptions
from vidrestore.pipeline import versions
from vidrestore.stream import FaceStream

GRAIN = 4.0  # film grain strength, 8-bit levels at mid-grey
MOVED = 8.0  # levels of clean-source change that count a pixel as moving


def talking_clip(frames: int, seed: int) -> tuple[C.Clip, np.ndarray]:
    """A still face whose jaw opens up to 6 px and closes every 12 frames; the clean frames beside it."""
    sprite = C.sprites()["astronaut"]
    m = C.similarity(1.0, 0.0, C.WIDTH / 2, C.HEIGHT / 2, sprite.center)
    clean = C.composite(C.backgrounds()["coffee"], [(sprite, m)])
    # The mouth sits 0.95 eye distances below the eyes' centre, which is 0.35 above the face centre.
    mx, my = C.WIDTH / 2, C.HEIGHT / 2 + 0.6 * C.EYE_DISTANCE
    yy, xx = np.mgrid[: C.HEIGHT, : C.WIDTH].astype(np.float32)
    below = np.clip((yy - my) / (0.3 * C.EYE_DISTANCE) + 0.5, 0, 1)  # the jaw moves, the lip line opens
    bump = np.exp(
        -(((xx - mx) / (0.9 * C.EYE_DISTANCE)) ** 2) - ((yy - my - 10) / (0.9 * C.EYE_DISTANCE)) ** 2
    )
    rng = np.random.default_rng(seed)
    out, truth = (
        np.empty((frames, C.HEIGHT, C.WIDTH, 3), np.uint8),
        np.empty_like(clean, shape=(frames, *clean.shape)),
    )
    for i in range(frames):
        opening = 6.0 * (1 - np.cos(2 * np.pi * i / 12)) / 2
        dy = (opening * below * bump).astype(np.float32)
        truth[i] = cv2.remap(clean, xx, yy - dy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out[i] = C.degrade(truth[i], rng, C.VIDEO_DEGRADATION)
    maps = np.repeat(m[None], frames, axis=0)
    return C.Clip("talk", out, [C.Face("astronaut", maps)], ["coffee"] * frames), truth


def clean_frames(clip: C.Clip) -> np.ndarray:
    """The clip's frames before degradation (for the motion mask)."""
    sp, bg = C.sprites(), C.backgrounds()
    return np.stack(
        [
            C.composite(bg[clip.backgrounds[i]], [(sp[f.sprite], f.maps[i]) for f in clip.faces])
            for i in range(len(clip.frames))
        ]
    )


@dataclass
class Recorded:
    """One clip through the product's stream and engine with texture stabilisation off: per batch, what
    :func:`stabilise_texture` is given (the restored and source crops, each face's frame, the context), and
    the clean source warped as the engine warped the degraded one. Every setting is replayed on it: the
    network's output does not depend on the setting."""

    batches: list[tuple[torch.Tensor, torch.Tensor, np.ndarray, FilmContext]]
    clean: np.ndarray  # (F, 3, S, S) in 8-bit levels


def record(run, clean: np.ndarray, options: EngineOptions) -> Recorded:
    batches, affines = [], []

    def warp(frames, index, m, size):
        affines.append(m)
        return warp_faces(frames, index, m, size)

    def stabilise(restored, crops, index, context, _window):
        batches.append((restored.clone(), crops.clone(), index.copy(), context))
        return restored

    with (
        patch.object(engine_module, "warp_faces", warp),
        patch.object(engine_module, "stabilise_texture", stabilise),
    ):
        engine = FaceRestorer(options.replace(texture_smooth=0), progress=False)
        stream = FaceStream(engine, TemporalOptions(), detect=lambda _p, tags: [run.found[i] for i in tags])
        for i, frame in enumerate(run.clip.frames):
            stream.push(frame, cut=i in run.cuts)
        stream.flush()
    m = np.concatenate(affines)
    if len(m) != len(run.clip.frames):
        raise RuntimeError("the benchmark clips have one face in every frame")
    frames = torch.from_numpy(clean).permute(0, 3, 1, 2).float() / 255
    warped, _ = warp_faces(frames, np.arange(len(m)), m, batches[0][0].shape[-1])
    return Recorded(batches, warped.numpy().astype(np.float64) * 255)


@dataclass
class Faces:
    """One clip's restored faces in crop space, in frame order, in 8-bit levels: before and after."""

    before: np.ndarray  # (F, 3, S, S)
    after: np.ndarray
    clean: np.ndarray
    seconds: float  # in stabilise_texture


def replay(recorded: Recorded, window: int) -> Faces:
    """The product's stabilisation over the recorded batches, with a fresh state, as the engine runs it."""
    state, before, after, seconds = FilmState(), [], [], 0.0
    for restored, crops, index, context in recorded.batches:
        t0 = time.perf_counter()
        out = stabilise_texture(restored, crops, index, replace(context, state=state), window)
        seconds += time.perf_counter() - t0
        before.append(restored)
        after.append(out)
    levels = [torch.cat(x).numpy().astype(np.float64) * 255 for x in (before, after)]
    return Faces(*levels, clean=recorded.clean, seconds=seconds)


def middle(x: np.ndarray) -> np.ndarray:
    """The face in the crop (eyes, nose, mouth, chin), not its hair, neck and background."""
    s = x.shape[-1]
    return x[..., round(0.3 * s) : round(0.85 * s), round(0.25 * s) : round(0.75 * s)]


def shimmer(crops: np.ndarray) -> float:
    """Mean |frame-to-frame difference| of the face, in 8-bit levels."""
    return float(np.abs(np.diff(middle(crops), axis=0)).mean())


def ghosting(faces: Faces, window: int) -> dict[str, float]:
    """|after - before| where the clean source moved within the window (what averaging could smear there),
    and where it did not (the shimmer removed)."""
    clean = middle(faces.clean).mean(1)  # (F, h, w)
    moved = np.zeros(clean.shape, bool)
    for j in range(1, max(1, window) + 1):
        moved[j:] |= np.abs(clean[j:] - clean[:-j]) > MOVED
    err = np.abs(middle(faces.after) - middle(faces.before)).mean(1)
    return {
        "moved_error": float(err[moved].mean()) if moved.any() else 0.0,
        "still_error": float(err[~moved].mean()) if (~moved).any() else 0.0,
        "moved_share": float(moved.mean()),
    }


def network(directory: Path, size: int) -> Path:
    """A random GFP-GAN of the official architecture at ``size`` px (seed 0), its StyleGAN noise strengths
    0.1 (a trained model's are not 0), saved as a checkpoint."""
    torch.manual_seed(0)
    state = GFPGANv1Clean(GFPGANConfig(out_size=size)).state_dict()
    for key, value in state.items():
        if key.startswith("stylegan_decoder.style_conv") and key.endswith(".weight") and value.numel() == 1:
            value.fill_(0.1)
    path = directory / f"gfpgan_{size}_random.pth"
    torch.save({"params_ema": state}, path)
    return path


def cost_ms(window: int, faces: int = 16) -> float:
    """ms per 512 px face of the stabilisation alone, one track, every earlier frame in the window."""
    g = torch.Generator().manual_seed(0)
    restored = torch.rand(faces, 3, 512, 512, generator=g)
    crops = torch.rand(1, 3, 512, 512, generator=g).expand(faces, -1, -1, -1)
    frames = np.arange(faces, dtype=np.int64)
    context = FilmContext(np.zeros(faces, np.int64), np.zeros(faces, np.int64), frames, FilmState())
    stabilise_texture(restored[:window], crops[:window], frames[:window], context, window)
    context.frames = frames + window
    t0 = time.perf_counter()
    stabilise_texture(restored, crops, frames, context, window)
    return 1000 * (time.perf_counter() - t0) / faces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--windows", default="2,4,8")
    ap.add_argument("--weights", type=Path, default=None, help="a real checkpoint (default: a random one)")
    ap.add_argument("--size", type=int, default=256, help="the random network's face size (default: 256)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    date = datetime.date.today().isoformat()
    out_path = args.out or Path("benchmarks/results") / f"texture_cpu_{date}.json"
    windows = [int(w) for w in args.windows.split(",")]
    detector = C.CenterFaceDetector()

    runs, clean = {}, {}
    for name in ("still", "talk", "turn", "accel"):
        if name == "talk":
            clip, clean[name] = talking_clip(args.frames, 1)
        else:
            clip = C.make_clip(name, args.frames, 1, C.VIDEO_DEGRADATION)
            clean[name] = clean_frames(clip)
        clip.frames[:] = C.add_film_grain(clip.frames, GRAIN, seed=1)
        runs[name] = detect_clip(detector, clip)
    with tempfile.TemporaryDirectory() as tmp:
        weights = args.weights or network(Path(tmp), args.size)
        options = EngineOptions(weights=weights, detector="centerface", device="cpu")
        t0 = time.perf_counter()
        recorded = {n: record(run, clean[n], options) for n, run in runs.items()}
        network_ms = 1000 * (time.perf_counter() - t0) / (len(runs) * args.frames)

    fixed = (texture.STILL, texture.MOVED)
    settings = [("off", 0, fixed)] + [(f"window {w}", w, fixed) for w in windows]
    settings += [("window 4, no motion test", 4, (1e9, 2e9))]
    rows: list[dict[str, Any]] = []
    for label, window, (still, moved) in settings:
        texture.STILL, texture.MOVED = still, moved
        faces = {n: replay(r, window) for n, r in recorded.items()}
        row: dict[str, Any] = {"setting": label, "window": window}
        row["shimmer_off"] = shimmer(faces["still"].before)
        row["shimmer"] = shimmer(faces["still"].after)
        row["shimmer_ratio"] = row["shimmer"] / row["shimmer_off"]
        for name in ("talk", "turn", "accel"):
            row[name] = ghosting(faces[name], window) | {
                "shimmer_off": shimmer(faces[name].before),
                "shimmer": shimmer(faces[name].after),
            }
        row["ms_per_face_run"] = 1000 * sum(f.seconds for f in faces.values()) / (len(runs) * args.frames)
        row["ms_per_face_512"] = cost_ms(window) if window else 0.0
        rows.append(row)
        print(f"{label}: {json.dumps(row)}", flush=True)
    texture.STILL, texture.MOVED = fixed

    print(
        "\n| setting | still: shimmer (ratio) | talk: moved / still err | turn: moved / still err | "
        "accel: moved / still err | ms/face (512) |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        cells = [r["setting"], f"{r['shimmer']:.2f} ({r['shimmer_ratio']:.2f})"]
        cells += [f"{r[n]['moved_error']:.2f} / {r[n]['still_error']:.2f}" for n in ("talk", "turn", "accel")]
        cells.append(f"{r['ms_per_face_512']:.1f}")
        print("| " + " | ".join(cells) + " |")
    print(f"network and the rest of the engine: {network_ms:.0f} ms per face")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(
        json.dumps(
            {
                "date": date,
                "device": "cpu",
                "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()},
                "versions": versions(),
                "weights": str(args.weights)
                if args.weights
                else f"random GFP-GAN ({args.size} px, noise 0.1)",
                "frames": args.frames,
                "grain": GRAIN,
                "degradation": C.VIDEO_DEGRADATION,
                "thresholds_levels": {"still": fixed[0] * 255, "moved": fixed[1] * 255},
                "engine_ms_per_face": network_ms,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out_path}")


if __name__ == "__main__":
    main()
