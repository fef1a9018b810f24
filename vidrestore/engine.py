"""The restoration engine: detect → align → batched GFP-GAN → paste back, for batches of frames.

The CLI, the VapourSynth filter and the batch runner are thin shells over :class:`FaceRestorer`.
Frames stay float tensors on the engine's device from upload to download: warp, restore, masks and
paste-back all run there; only detection sees an 8-bit copy.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from vidrestore import weights
from vidrestore.errors import VidrestoreError
from vidrestore.faces.alignment import estimate_transforms, warp_faces
from vidrestore.faces.detection import DETECTORS, Faces, create_detector, detect_faces
from vidrestore.faces.paste import crop_alpha, feather_mask, paste_faces
from vidrestore.models.checkpoint import MODEL_WEIGHTS, load_gfpgan
from vidrestore.models.gfpgan import GFPGANConfig

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class RestoreOptions:
    """Every setting of a restoration run; the CLI's flags map one to one onto these fields."""

    model: str = "v1.4"
    weights: Path | None = None  # an explicit GFP-GAN checkpoint, instead of the registry's
    weights_dir: Path | None = None  # an offline directory holding registry files
    device: str = "auto"
    dtype: str = "auto"
    detector: str = "retinaface"
    upscale: int = 1
    only_center_face: bool = False
    fidelity: float = 0.0  # 0: fully restored face; 1: the original face untouched
    parse: bool = False  # paste through a ParseNet face mask instead of the feathered square
    min_eye_distance: float = 5.0
    detect_size: int | None = None  # detect on frames whose long side is at most this
    batch_size: int | None = None  # faces per model call; None: from free GPU memory (4 on the CPU)
    randomize_noise: bool = False
    model_config: GFPGANConfig | None = None  # None: read the layout off the checkpoint

    def validate(self) -> None:
        if self.model not in MODEL_WEIGHTS:
            raise VidrestoreError(f"unknown model {self.model!r}; choose one of: {', '.join(MODEL_WEIGHTS)}")
        if self.detector not in DETECTORS:
            raise VidrestoreError(
                f"unknown detector {self.detector!r}; choose one of: {', '.join(DETECTORS)}"
            )
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise VidrestoreError(f"unknown dtype {self.dtype!r}; choose auto, {', '.join(DTYPES)}")
        if not 0.0 <= self.fidelity <= 1.0:
            raise VidrestoreError(f"--fidelity must be between 0 and 1, not {self.fidelity}")
        if not 1 <= self.upscale <= 8:
            raise VidrestoreError(f"--upscale must be an integer from 1 to 8, not {self.upscale}")
        if self.batch_size is not None and self.batch_size < 1:
            raise VidrestoreError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.detect_size is not None and self.detect_size < 32:
            raise VidrestoreError(f"--detect-size must be at least 32 pixels, not {self.detect_size}")


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when torch sees a GPU; an explicit CUDA request without one is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise VidrestoreError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise VidrestoreError(
                f"device {name!r} was asked for, but torch {torch.__version__} sees no CUDA GPU"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise VidrestoreError(
                f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA GPU(s) found"
            )
    elif device.type != "cpu":
        raise VidrestoreError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def auto_batch_size(device: torch.device, dtype: torch.dtype, face_size: int) -> int:
    """Faces per model call that fit in half the free GPU memory (a CUDA OOM still halves it later).

    About 120 MB of activations per 512 face in 16-bit, measured from the model's largest live tensors,
    scaled by the face area and element size; the CPU gains nothing from big batches.
    """
    if device.type != "cuda":
        return 4
    free, _ = torch.cuda.mem_get_info(device)
    per_face = 120e6 * (face_size / 512) ** 2 * (torch.finfo(dtype).bits / 16)
    return int(max(1, min(64, free * 0.5 // per_face)))


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' is bf16 on GPUs that have it (fp16 otherwise) and fp32 on the CPU."""
    if name != "auto":
        return DTYPES[name]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


class Restored(NamedTuple):
    """One batch's result: new frames, the faces found per frame, and which output pixels were changed."""

    frames: torch.Tensor  # (B, 3, H*upscale, W*upscale) float RGB in [0, 1]
    faces: list[Faces]
    changed: torch.Tensor  # (B, H*upscale, W*upscale) bool


class FaceRestorer:
    """Restores every face in batches of frames with one loaded model, detector and mask source.

    ``load_model=False`` gives a detector-only engine (for ``--debug-overlay``): no GFP-GAN weights needed.
    ``timings`` accumulates seconds per stage, for reports.
    """

    def __init__(self, options: RestoreOptions, *, progress: bool = True, load_model: bool = True):
        options.validate()
        self.options = options
        self.device = resolve_device(options.device)
        self.dtype = resolve_dtype(options.dtype, self.device)
        self.timings: dict[str, float] = defaultdict(float)
        self.model = None
        self.face_size = 512
        if load_model:
            gfpgan_path = weights.resolve(
                MODEL_WEIGHTS[options.model],
                path=options.weights,
                weights_dir=options.weights_dir,
                progress=progress,
            )
            self.model = load_gfpgan(
                gfpgan_path, device=self.device, dtype=self.dtype, config=options.model_config
            )
            self.face_size = self.model.config.out_size
        self.batch_size = options.batch_size or auto_batch_size(self.device, self.dtype, self.face_size)
        detector_weights = None
        if options.detector == "retinaface":
            detector_weights = weights.resolve(
                "retinaface-r50", weights_dir=options.weights_dir, progress=progress
            )
        self.detector = create_detector(options.detector, self.device, weights=detector_weights)
        self.parser = None
        if options.parse and load_model:
            from vidrestore.faces.parsing import FaceParser

            parse_weights = weights.resolve("parsenet", weights_dir=options.weights_dir, progress=progress)
            self.parser = FaceParser(parse_weights, self.device)

    def _tick(self, stage: str, t0: float) -> float:
        """Add the time since ``t0`` to ``stage`` (after the GPU caught up) and return now."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.timings[stage] += now - t0
        return now

    @torch.inference_mode()
    def detect(self, frames: torch.Tensor) -> list[Faces]:
        """Faces in (B, 3, H, W) frames: float RGB in [0, 1], or uint8 RGB used as they are."""
        t0 = time.perf_counter()
        if frames.dtype != torch.uint8:
            frames = (frames.clamp(0, 1) * 255).round_().to(torch.uint8)
        u8 = frames.permute(0, 2, 3, 1)
        found = detect_faces(
            self.detector,
            u8,
            detect_size=self.options.detect_size,
            min_eye_distance=self.options.min_eye_distance,
            only_center_face=self.options.only_center_face,
        )
        self._tick("detect", t0)
        return found

    @torch.inference_mode()
    def restore_faces(self, crops: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) aligned crops in [0, 1] → restored crops in [0, 1], ``batch_size`` at a time.

        A CUDA out-of-memory error halves the batch size for the rest of the run and retries.
        """
        if self.model is None:
            raise RuntimeError("this engine was built without a model (load_model=False)")
        out = torch.empty_like(crops)
        i = 0
        while i < len(crops):
            x = crops[i : i + self.batch_size].to(self.dtype) * 2 - 1
            try:
                y = self.model(x, randomize_noise=self.options.randomize_noise)
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise VidrestoreError(
                        f"the GPU ran out of memory restoring a single {self.face_size}px face"
                    ) from None
                del x
                torch.cuda.empty_cache()
                self.batch_size = max(1, self.batch_size // 2)
                continue
            out[i : i + len(x)] = y.to(crops.dtype).clamp(-1, 1) * 0.5 + 0.5
            i += len(x)
        return out

    @torch.inference_mode()
    def restore(self, frames: torch.Tensor, faces: list[Faces] | None = None) -> Restored:
        """Restore (B, 3, H, W) float RGB frames in [0, 1] on the engine's device.

        ``faces`` gives the faces to restore in each frame (e.g. tracked and smoothed); without it they
        are detected here. Returns new frames, ``upscale`` times larger, the faces of each, and the mask of
        output pixels the paste changed. Pixels outside it are the input's (resampled only when upscaling).
        """
        frames = frames.to(self.device, torch.float32)
        found = self.detect(frames) if faces is None else faces
        t0 = time.perf_counter()
        frame_index = np.concatenate([np.full(len(f), i) for i, f in enumerate(found)]).astype(np.int64)
        landmarks = np.concatenate([f.landmarks for f in found])
        affines = estimate_transforms(landmarks, self.face_size)
        crops, inside = warp_faces(frames, frame_index, affines, self.face_size)
        t0 = self._tick("warp", t0)
        restored = self.restore_faces(crops)
        t0 = self._tick("restore", t0)
        mask = (
            self.parser.mask(crops)
            if self.parser
            else feather_mask(self.face_size, self.device, torch.float32)
        )
        alpha = crop_alpha(inside, mask) * (1 - self.options.fidelity)
        up = self.options.upscale
        if up == 1:
            out = frames.clone()
        else:
            out = F.interpolate(frames, scale_factor=up, mode="bicubic", align_corners=False).clamp_(0, 1)
            # Pixel p of the upscaled frame sits at (p + 0.5) / up - 0.5 in the original frame.
            a = affines[:, :, :2]
            affines = np.concatenate(
                [a / up, affines[:, :, 2:] + a.sum(axis=2, keepdims=True) * (0.5 / up - 0.5)], 2
            )
        changed = torch.zeros(out.shape[0], out.shape[2], out.shape[3], dtype=torch.bool, device=self.device)
        paste_faces(out, frame_index, affines, restored, alpha, changed=changed)
        self._tick("paste", t0)
        return Restored(out, found, changed)
