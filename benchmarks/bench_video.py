"""Time the whole video job and each stage against a baseline made the way peers do it.

The clip is generated here: 1080p H.264 with 1 to 3 real faces (scikit-image's astronaut) moving per frame,
plus AAC audio. Both sides run in this process on the same clip, detector and weights:

* ours: ``vidrestore.pipeline`` (threaded decode/encode, faces of several frames batched, warp/paste on
  the engine's device, one upload and one download per frame);
* baseline: per frame, a BGR numpy image, per-face ``cv2.warpAffine`` crop, the OFFICIAL GFP-GAN
  architecture (from the ``gfpgan`` package) at batch 1 in fp32 with fresh noise, per-face CPU inverse
  warp and feathered paste, as GFPGANer + facexlib do.

On the CPU use the tiny model (the default here); with a GPU, ``--full`` times the 512 model. On a GPU the
run of ours also records the GPU's utilisation, sampled every 0.1 s. ``benchmarks/gpu_check.py`` calls
:func:`prepare` and :func:`bench` with the CPU codecs and with NVDEC/NVENC.

    python -m benchmarks.bench_video [--full] [--seconds 2] [--device auto] [--out bench-out/video.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import torch
from skimage import data

from benchmarks.official import official_gfpgan
from vidrestore.engine import FaceRestorer
from vidrestore.faces.alignment import estimate_transforms
from vidrestore.faces.detection import detect_faces
from vidrestore.models.gfpgan import GFPGANConfig, GFPGANv1Clean
from vidrestore.options import VideoOptions
from vidrestore.pipeline import run, versions

TINY = GFPGANConfig(out_size=64, num_style_feat=32, channel_multiplier=1, narrow=0.0625, num_mlp=2)


def make_clip(path: Path, seconds: float, fps: int = 24, size: tuple[int, int] = (1920, 1080)) -> int:
    """1080p H.264 + AAC with 1, 2 or 3 faces per frame drifting across a plain background."""
    w, h = size
    face = np.ascontiguousarray(data.astronaut()[20:220, 110:310])
    n = round(seconds * fps)
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps, options={"crf": "18", "preset": "veryfast"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        aus = out.add_stream("aac", rate=48000, layout="stereo")
        for i in range(n):
            img = np.full((h, w, 3), (60, 110, 160), np.uint8)
            for k in range(1 + i % 3):
                side = 260 + 60 * k
                x = int((w - side) * ((0.15 + 0.3 * k + i / n * 0.4) % 1.0))
                y = int((h - side) * (0.2 + 0.3 * k))
                img[y : y + side, x : x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
            for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(pkt)
        t = np.arange(round(seconds * 48000)) / 48000
        tone = np.stack([np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32) * 0.2
        for j in range(0, tone.shape[1], 1024):
            af = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(tone[:, j : j + 1024]), format="fltp", layout="stereo"
            )
            af.sample_rate, af.pts = 48000, j
            for pkt in aus.encode(af):
                out.mux(pkt)
        for s in (vs, aus):
            for pkt in s.encode(None):
                out.mux(pkt)
    return n


def save_weights(path: Path, config: GFPGANConfig) -> None:
    torch.manual_seed(0)
    torch.save({"params_ema": GFPGANv1Clean(config).state_dict()}, path)


def baseline(
    src: Path,
    dst: Path,
    model: torch.nn.Module,
    restorer: FaceRestorer,
    device: torch.device,
    detect_size: int | None,
) -> dict:
    """Per frame, per face, fp32, batch 1, CPU warp and paste: the GFPGANer way."""
    size = restorer.face_size
    stages = dict.fromkeys(("decode", "detect", "warp", "restore", "paste", "encode"), 0.0)
    frames = faces_total = 0
    t_all = time.perf_counter()
    border = np.ones((size, size), np.float32)
    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        ivs = inp.streams.video[0]
        ovs = out.add_stream("libx264", rate=ivs.average_rate, options={"crf": "18"})
        ovs.width, ovs.height, ovs.pix_fmt = ivs.width, ivs.height, "yuv420p"
        t = time.perf_counter()
        for frame in inp.decode(ivs):
            img = frame.to_ndarray(format="bgr24")
            stages["decode"] += time.perf_counter() - t
            t = time.perf_counter()
            rgb = torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1]))[None]
            (found,) = detect_faces(restorer.detector, rgb, detect_size=detect_size)
            stages["detect"] += time.perf_counter() - t
            result = img.astype(np.float32)
            for m in estimate_transforms(found.landmarks, size):
                t = time.perf_counter()
                crop = cv2.warpAffine(img, m, (size, size), borderValue=(135, 133, 132))
                x = torch.from_numpy(crop[:, :, ::-1].astype(np.float32) / 255).permute(2, 0, 1)[None]
                stages["warp"] += time.perf_counter() - t
                t = time.perf_counter()
                with torch.no_grad():
                    y = model((x.to(device) - 0.5) / 0.5, return_rgb=False, randomize_noise=True)[0]
                face = ((y[0].clamp(-1, 1) + 1) * 127.5).permute(1, 2, 0).cpu().numpy()[:, :, ::-1]
                stages["restore"] += time.perf_counter() - t
                t = time.perf_counter()
                inv = cv2.invertAffineTransform(m)
                hw = (img.shape[1], img.shape[0])
                back = cv2.warpAffine(face, inv, hw)
                mask = cv2.warpAffine(border, inv, hw)
                mask = cv2.erode(mask, np.ones((4, 4), np.uint8))
                mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, np.sqrt(mask.sum()) / 40))[:, :, None]
                result = result * (1 - mask) + back * mask
                stages["paste"] += time.perf_counter() - t
                faces_total += 1
            t = time.perf_counter()
            vf = av.VideoFrame.from_ndarray(result.clip(0, 255).astype(np.uint8), format="bgr24")
            vf.pts, vf.time_base = frame.pts, frame.time_base
            for pkt in ovs.encode(vf):
                out.mux(pkt)
            stages["encode"] += time.perf_counter() - t
            frames += 1
            t = time.perf_counter()
        for pkt in ovs.encode(None):
            out.mux(pkt)
    seconds = time.perf_counter() - t_all
    return {
        "frames": frames,
        "faces": faces_total,
        "seconds": seconds,
        "fps": frames / seconds,
        "stages": stages,
    }


class GpuUtilisation:
    """The GPU's utilisation (% of time a kernel ran), sampled in a thread while the ``with`` block runs:
    through pynvml (nvidia-ml-py) when installed, else ``nvidia-smi``; ``result`` says which."""

    def __init__(self, device: torch.device, period: float = 0.1) -> None:
        self.device, self.period = device, period
        self.samples: list[float] = []
        self.source: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _reader(self) -> Any:
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        try:
            import pynvml

            pynvml.nvmlInit()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            self.source = "pynvml"
            return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except (ImportError, OSError, RuntimeError) as e:
            self.source = f"nvidia-smi (pynvml: {type(e).__name__})"
        query = [
            "nvidia-smi",
            f"--id={index}",
            "--query-gpu=utilization.gpu",
            "--format=csv,noheader,nounits",
        ]
        self.period = max(self.period, 0.5)  # one process per sample
        return lambda: float(subprocess.run(query, capture_output=True, text=True, check=True).stdout)

    def _run(self) -> None:
        try:
            read = self._reader()
            while not self._stop.wait(self.period):
                self.samples.append(read())
        except Exception as e:  # a sampler that cannot read says so; the run it watches goes on
            self.source = f"unavailable ({type(e).__name__}: {e})"

    def __enter__(self) -> GpuUtilisation:
        if self.device.type == "cuda":
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def result(self) -> dict:
        if self.device.type != "cuda":
            return {"source": "not measured (no CUDA device)"}
        if not self.samples:
            return {"source": self.source or "no sample"}
        return {
            "source": self.source,
            "mean_pct": statistics.fmean(self.samples),
            "max_pct": max(self.samples),
            "samples": len(self.samples),
        }


def prepare(work: Path, seconds: float, config: GFPGANConfig) -> tuple[Path, Path, int]:
    """The generated clip and random weights for ``config`` in ``work``: (clip, weights, frames)."""
    work.mkdir(parents=True, exist_ok=True)
    src, weights = work / "clip_1080p.mp4", work / "weights.pth"
    n = make_clip(src, seconds)
    save_weights(weights, config)
    return src, weights, n


def bench(
    src: Path,
    weights: Path,
    config: GFPGANConfig,
    work: Path,
    *,
    run_baseline: bool = True,
    device: str = "auto",
    dtype: str = "auto",
    detector: str = "centerface",
    detect_size: int = 640,
    **options: Any,
) -> dict:
    """Ours (with the extra ``options`` of ``vidrestore.options``, e.g. a codec) and, if ``run_baseline``,
    the baseline on ``src``: frames, seconds, fps and per-stage seconds of each, and the GPU's utilisation
    during ours."""
    work.mkdir(parents=True, exist_ok=True)
    video_options = VideoOptions.from_keywords(
        weights=weights,
        detector=detector,
        device=device,
        dtype=dtype,
        detect_size=detect_size,
        progress=False,
        overwrite=True,
        **options,
    )
    restorer = FaceRestorer(video_options.engine, progress=False)
    result: dict = {
        "benchmark": "whole video job, 1080p H.264, 1-3 faces per frame",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "model": "GFPGANv1Clean 512" if config.out_size == 512 else f"tiny {config}",
        "device": str(restorer.device),
        "dtype_ours": str(restorer.dtype),
        "dtype_baseline": "fp32",
        "detector": detector,
        "detect_size": detect_size,
        "options": {k: str(v) for k, v in options.items()},
        "batch_size_ours": restorer.batch_size,
        "versions": versions(),
    }
    if run_baseline:
        official = official_gfpgan(config).to(restorer.device).eval()
        official.load_state_dict(torch.load(weights, weights_only=True)["params_ema"])
        result["baseline"] = baseline(
            src, work / "baseline.mp4", official, restorer, restorer.device, detect_size
        )
    with GpuUtilisation(restorer.device) as utilisation:
        report = run(src, work / "ours.mp4", video_options, restorer=restorer)
    result["ours"] = {
        "frames": report.frames,
        "faces": report.faces,
        "seconds": report.seconds,
        "fps": report.fps,
        "codec": report.codec,
        "stages": dict(report.stages),
        "gpu_utilisation": utilisation.result(),
    }
    if run_baseline:
        result["speedup"] = result["ours"]["fps"] / result["baseline"]["fps"]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the 512 model (meant for a GPU)")
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--detector", default="centerface")
    ap.add_argument("--detect-size", type=int, default=640)
    ap.add_argument("--work", type=Path, default=Path("bench-out/video"))
    ap.add_argument("--out", type=Path, default=Path("bench-out/video.json"))
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    config = GFPGANConfig() if args.full else TINY
    src, weights, n = prepare(args.work, args.seconds, config)
    result = bench(
        src,
        weights,
        config,
        args.work,
        device=args.device,
        dtype=args.dtype,
        detector=args.detector,
        detect_size=args.detect_size,
    )
    result["frames"] = n
    base, ours = result["baseline"], result["ours"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"{'':10} {'fps':>8} {'seconds':>8} {'faces':>6}  " + " ".join(f"{s:>8}" for s in base["stages"]))
    for name, r in (("baseline", base), ("ours", ours)):
        stages = " ".join(f"{r['stages'].get(s, 0.0):8.2f}" for s in base["stages"])
        print(f"{name:10} {r['fps']:8.2f} {r['seconds']:8.2f} {r['faces']:6d}  {stages}")
    print(f"speed-up: {result['speedup']:.2f}x ({result['device']}, {n} frames) -> {args.out}")


if __name__ == "__main__":
    main()
