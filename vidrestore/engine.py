"""The restoration engine: detect → align → batched restoration network → paste back, for batches of frames.

It runs any network of the model registry (:mod:`vidrestore.models`) the same way. Video goes through
:class:`vidrestore.stream.FaceStream`, which adds tracking and smoothing around this per-batch work; still
images call :meth:`FaceRestorer.restore` directly. Frames stay float tensors on the engine's device from
upload to download: warp, restore, masks and paste-back all run there; only detection sees an 8-bit copy.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Final, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from vidrestore import weights
from vidrestore.errors import VidrestoreError
from vidrestore.faces import masks
from vidrestore.faces.alignment import estimate_transforms, warp_faces
from vidrestore.faces.colour import colour_faces
from vidrestore.faces.detection import Faces, create_detector, detect_faces
from vidrestore.faces.film import FilmContext
from vidrestore.faces.grain import match_grain
from vidrestore.faces.masks import face_masks
from vidrestore.faces.paste import fill_padding, paste_faces
from vidrestore.faces.resample import halve_like_pil
from vidrestore.faces.texture import stabilise_texture
from vidrestore.kernels import set_kernel_impl
from vidrestore.models import get_model
from vidrestore.models.licence import notify_first_use
from vidrestore.options import EngineOptions

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when torch sees a GPU; an explicit CUDA request without one is a clear error.

    A CUDA device always comes back with its index ('cuda' is the current GPU), so that every guard and
    device query below names the GPU that was asked for.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
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
        if device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
    elif device.type != "cpu":
        raise VidrestoreError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device


def on_device(device: torch.device) -> AbstractContextManager:
    """Make ``device`` the current CUDA device for a block (nothing on the CPU).

    Triton launches, CUDA graphs, streams and argument-less ``torch.cuda`` queries all use the *current*
    device, which is per thread and starts at GPU 0: every thread that works for an engine on ``cuda:N``
    runs inside this guard.
    """
    return torch.cuda.device(device) if device.type == "cuda" else nullcontext()


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


# bf16 tensor-core arithmetic (and Triton's bf16 tl.dot) exists from Ampere, compute capability 8.0, on;
# torch.cuda.is_bf16_supported() also says yes to the emulation on older GPUs.
NATIVE_BF16: Final = (8, 0)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """'auto' is bf16 on GPUs with native bf16 (sm_80+), fp16 on older ones, fp32 on the CPU.

    The capability asked is the requested device's, not the current one's; bf16 asked for on a GPU without
    it is refused rather than emulated (the fused kernel's bf16 GEMM is not built for those GPUs).
    """
    if device.type != "cuda":
        return DTYPES["fp32"] if name == "auto" else DTYPES[name]
    capability = torch.cuda.get_device_capability(device)
    if name == "auto":
        return torch.bfloat16 if capability >= NATIVE_BF16 else torch.float16
    if name == "bf16" and capability < NATIVE_BF16:
        raise VidrestoreError(
            f"dtype bf16 needs a GPU of compute capability 8.0 or newer; {device} is "
            f"{capability[0]}.{capability[1]}: use fp16 or auto"
        )
    return DTYPES[name]


def set_tf32(dtype: torch.dtype) -> None:
    """The TF32 policy, shared by the engine and the tests: TF32 only when the model is not in fp32.

    In fp32 the fused kernel computes IEEE fp32 products, and PyTorch's CUDA matmuls and convs (the
    reference path, warps, masks) must too, so that fp32 means fp32 on any GPU; in fp16/bf16 the model's
    GEMMs do not use TF32 and the fp32 side work may. These switches are process-wide.
    """
    allow = dtype != torch.float32
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow


class Restored(NamedTuple):
    """One batch's result: new frames, the faces found per frame, and which output pixels were changed."""

    frames: torch.Tensor  # (B, 3, H*upscale, W*upscale) float RGB in [0, 1]
    faces: list[Faces]
    changed: torch.Tensor  # (B, H*upscale, W*upscale) bool


# Restored crops and their paste alphas: (N, C, S, S), or one (C, S, S) each where the faces' networks differ.
Crops = torch.Tensor | list[torch.Tensor]


def film_history(options: EngineOptions) -> int:
    """Frames before a filter segment or a batch chunk to restore (and drop) so that its first faces come
    out as in a whole run: the texture's window (faces/texture.py) and, where ParseNet masks are pasted,
    the memory of their average along the track (faces/masks.py)."""
    networks = options.auto_models if options.model == "auto" else (options.model,)
    parsed = options.parse or any("parsing" in get_model(name).needs for name in networks)
    return max(options.texture_smooth, masks.HISTORY if parsed else 0)


class FaceRestorer:
    """Restores every face in batches of frames with one loaded network, detector and mask source.

    ``load_model=False`` gives a detector-only engine (for ``--debug-overlay`` and tracking-only runs): no
    network weights needed. ``timings`` accumulates seconds per stage, for reports. ``shared`` lends another
    engine's detector and parser (the networks of ``--model auto`` share one). ``model="auto"`` makes the
    engine that picks a network per face track (:class:`vidrestore.auto.AutoRestorer`), so that every front
    end takes it by name.
    """

    def __new__(cls, options: EngineOptions, **kwargs: Any) -> FaceRestorer:
        if cls is FaceRestorer and options.model == "auto":
            from vidrestore.auto import AutoRestorer

            return super().__new__(AutoRestorer)
        return super().__new__(cls)

    def __init__(
        self,
        options: EngineOptions,
        *,
        progress: bool = True,
        load_model: bool = True,
        shared: FaceRestorer | None = None,
    ):
        self.options = options
        self.spec = get_model(options.model)
        self.device = resolve_device(options.device)
        self.dtype = resolve_dtype(options.dtype, self.device)
        if self.device.type == "cuda":
            set_tf32(self.dtype)
        self.timings: dict[str, float] = defaultdict(float)
        # How many frames the detector takes at once (None: a whole batch) and the long side of the picture
        # it sees (None: full size); vidrestore.memory sets both to fit the memory budget.
        self.detect_batch: int | None = None
        self.detect_size: int | None = options.detect_size
        self.model = None
        self.face_size = self.spec.face_size
        if load_model:
            path = weights.resolve(
                self.spec.weights, path=options.weights, weights_dir=options.weights_dir, progress=progress
            )
            extra = tuple(
                weights.resolve(name, weights_dir=options.weights_dir, progress=progress)
                for name in self.spec.extra_weights
            )
            self.model = self.spec.load(
                path,
                device=self.device,
                dtype=self.dtype,
                config=options.model_config,
                **({"extra": extra} if extra else {}),
            )
            self.face_size = self.model.face_size
            notify_first_use(self.spec)
            if isinstance(self.model, torch.nn.Module):
                set_kernel_impl(self.model, options.kernels)
        # Faces are warped, masked and pasted at the network's output size; a super-resolution network's
        # input is that crop halved down to ``face_size`` as its training data were (faces/resample.py).
        self.out_size = self.face_size * self.spec.scale
        self.template = self.spec.template_for(self.out_size)
        self.controls = {name: getattr(options, name) for name in self.spec.controls}
        if self.spec.fidelity_control:  # the network's own trade-off replaces the blend in restore()
            self.controls[self.spec.fidelity_control] = options.fidelity
        self.batch_size = options.face_batch or auto_batch_size(self.device, self.dtype, self.out_size)
        if shared:
            self.detector = shared.detector
        else:
            detector_weights = None
            if options.detector == "retinaface":
                detector_weights = weights.resolve(
                    "retinaface-r50", weights_dir=options.weights_dir, progress=progress
                )
            self.detector = create_detector(options.detector, self.device, weights=detector_weights)
        self.parser = shared.parser if shared else None
        if self.parser is None and (options.parse or "parsing" in self.spec.needs) and load_model:
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
        found: list[Faces] = []
        step = self.detect_batch or len(frames)
        for i in range(0, len(frames), step):  # the detector's memory grows with its batch: see memory.py
            part = frames[i : i + step]
            if part.dtype != torch.uint8:
                part = (part.clamp(0, 1) * 255).round_().to(torch.uint8)
            found += detect_faces(
                self.detector,
                part.permute(0, 2, 3, 1),
                detect_size=self.detect_size,
                min_eye_distance=self.options.min_face,
                only_center_face=self.options.only_center_face,
            )
        self._tick("detect", t0)
        return found

    @torch.inference_mode()
    def restore_faces(self, crops: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) aligned crops in [0, 1] → restored crops in [0, 1], ``batch_size`` at a time.

        The restored crops are ``spec.scale`` times larger than the input ones (1 but for super-resolution).

        The network sees its own input range and returns its own output range (the model spec's).

        A CUDA out-of-memory error halves the batch size for the rest of the run and retries.
        """
        if self.model is None:
            raise RuntimeError("this engine was built without a model (load_model=False)")
        (in_lo, in_hi), (out_lo, out_hi) = self.spec.input_range, self.spec.output_range
        size = crops.shape[-1] * self.spec.scale
        out = crops.new_empty(len(crops), crops.shape[1], size, size)
        i = 0
        while i < len(crops):
            x = crops[i : i + self.batch_size].to(self.dtype) * (in_hi - in_lo) + in_lo
            try:
                with on_device(self.device):  # Triton launches on the current GPU, whatever the thread
                    y = self.model(x, **self.controls)
            except torch.OutOfMemoryError:
                if self.batch_size == 1:
                    raise VidrestoreError(
                        f"the GPU ran out of memory restoring a single {self.face_size}px face"
                    ) from None
                del x
                with on_device(self.device):
                    torch.cuda.empty_cache()
                self.batch_size = max(1, self.batch_size // 2)
                continue
            y = y.to(crops.dtype).clamp(out_lo, out_hi)
            out[i : i + len(x)] = (y - out_lo) / (out_hi - out_lo)
            i += len(x)
        return out

    def networks(self, faces: list[Faces], context: FilmContext) -> list[str]:
        """The network each face goes to, in the engine's face order (``--debug-overlay`` labels them); none
        when one network takes every face."""
        return []

    def restore_crops(
        self, frames: torch.Tensor, frame_index: np.ndarray, landmarks: np.ndarray, context: FilmContext
    ) -> tuple[np.ndarray, Crops, Crops]:
        """Warp, restore and mask the faces with landmarks (N, 5, 2) in ``frames[frame_index]``.

        Returns their frame→crop affines (N, 2, 3), restored crops and paste alphas, at the output size.
        ``context`` is for engines that treat tracks differently (:mod:`vidrestore.auto`).
        """
        t0 = time.perf_counter()
        affines = estimate_transforms(landmarks, self.out_size, self.template)
        crops, inside = warp_faces(frames, frame_index, affines, self.out_size)
        halvings = self.spec.scale.bit_length() - 1
        inputs = halve_like_pil(crops, halvings) if halvings else crops
        t0 = self._tick("warp", t0)
        restored = self.restore_faces(inputs)
        t0 = self._tick("restore", t0)
        restored = stabilise_texture(restored, crops, frame_index, context, self.options.texture_smooth)
        t0 = self._tick("texture", t0)
        mask = face_masks(self.parser, restored, frame_index, context)  # ParseNet's held along each track
        t0 = self._tick("mask", t0)
        restored = colour_faces(
            restored,
            crops,
            mask * inside,
            frames,
            frame_index,
            context,
            self.options.color,
            self.spec.colourises,
        )
        t0 = self._tick("colour", t0)
        restored = match_grain(restored, frames, frame_index, affines, context, self.options.grain)
        t0 = self._tick("grain", t0)
        alpha = mask.expand(len(crops), -1, -1, -1)
        if not self.spec.fidelity_control:
            alpha = alpha * (1 - self.options.fidelity)
        restored = fill_padding(restored, inside)  # pasted up to the frame's edge, with no grey coming in
        self._tick("paste", t0)
        return affines, restored, alpha

    @torch.inference_mode()
    def restore(
        self,
        frames: torch.Tensor,
        faces: list[Faces] | None = None,
        upscale: int = 1,
        context: FilmContext | None = None,
    ) -> Restored:
        """Restore (B, 3, H, W) float RGB frames in [0, 1] on the engine's device.

        ``faces`` gives the faces to restore in each frame (e.g. tracked and smoothed); without it they
        are detected here. ``context`` says which track each face and which shot each frame belongs to, and
        carries what earlier batches measured (:mod:`vidrestore.faces.film`); without it every face is its
        own track and every frame its own shot. Returns new frames, ``upscale`` times larger, the faces of
        each, and the mask of output pixels the paste changed. Pixels outside it are the input's (resampled
        only when upscaling).
        """
        frames = frames.to(self.device, torch.float32)
        found = self.detect(frames) if faces is None else faces
        context = context or FilmContext.still(found)
        frame_index = np.concatenate([np.full(len(f), i) for i, f in enumerate(found)]).astype(np.int64)
        landmarks = np.concatenate([f.landmarks for f in found])
        affines, restored, alpha = self.restore_crops(frames, frame_index, landmarks, context)
        t0 = time.perf_counter()
        if upscale == 1:
            out = frames.clone()
        else:
            out = F.interpolate(frames, scale_factor=upscale, mode="bicubic", align_corners=False).clamp_(
                0, 1
            )
            # Pixel p of the upscaled frame sits at (p + 0.5) / upscale - 0.5 in the original frame.
            a, shift = affines[:, :, :2], 0.5 / upscale - 0.5
            affines = np.concatenate(
                [a / upscale, affines[:, :, 2:] + a.sum(axis=2, keepdims=True) * shift], 2
            )
        changed = torch.zeros(out.shape[0], out.shape[2], out.shape[3], dtype=torch.bool, device=self.device)
        paste_faces(out, frame_index, affines, restored, alpha, changed=changed)
        self._tick("paste", t0)
        return Restored(out, found, changed)
