"""``--model auto``: one network per face track, chosen by the size of the face.

The rule (defaults ``--auto-models pfsr,gfpgan-v1.4 --auto-eye-px 16``): a track whose eyes are under 16 px
apart goes to Progressive Face SR, the others to GFP-GAN v1.4. The basis (``python -m benchmarks.bench_auto``,
BENCHMARKS.md): GFP-GAN's 512 crop puts the eyes 126 px apart, and it was trained on crops downsampled up to
8x, that is eyes down to 16 px; below that its input is an enlargement it never saw. PFSR was trained on
clean 16 px crops (eyes 3.5 px apart), enlarged 8x to 128 (eyes 28 px): from 8 to 16 px its input is close
to that clean input, while above 16 px it discards the source's detail. The caveat: this rests on inputs,
training ranges and the detector's recall (few faces under 11 px are found), not on real restorations (no
released weights where it was measured).

Decisions are per track, never per frame: a track's size is the median eye distance of its latest faces,
first taken over all its faces in the batch where it appears; it changes network only when that median
leaves a band around the threshold (x/÷ ``HYSTERESIS``), so a face near the threshold does not flip. A
still image's faces are each their own track. The choice per track and the faces per network are in the
run report (``film.auto``), and ``--debug-overlay`` labels each face with its network.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from vidrestore.engine import Crops, FaceRestorer
from vidrestore.errors import VidrestoreError, WeightsError
from vidrestore.faces.detection import Faces
from vidrestore.faces.film import FilmContext
from vidrestore.options import EngineOptions

HYSTERESIS = 1.25  # a track changes network only once its size is this factor past the threshold
HISTORY = 24  # a track's size is the median eye distance of this many of its latest faces


@dataclass
class _Track:
    eyes: deque[float] = field(default_factory=lambda: deque(maxlen=HISTORY))
    network: str | None = None


@dataclass(frozen=True)
class AutoRule:
    """Small faces to ``small``, the others to ``large``, decided per track with hysteresis."""

    small: str
    large: str
    eye_px: float

    def choose(self, eyes: np.ndarray, track_ids: np.ndarray, tracks: dict[int, _Track]) -> np.ndarray:
        """The network of each face (eye distances ``eyes``, one track id each); ``tracks`` is kept
        between calls. All faces of one track in one call get one network."""
        out = np.empty(len(eyes), dtype=object)
        for tid in dict.fromkeys(track_ids.tolist()):
            sel = track_ids == tid
            track = tracks.setdefault(tid, _Track())
            track.eyes.extend(eyes[sel].tolist())
            track.network = self._pick(track.network, float(np.median(track.eyes)))
            out[sel] = track.network
        return out

    def _pick(self, current: str | None, size: float) -> str:
        if current == self.small and size < self.eye_px * HYSTERESIS:
            return current
        if current == self.large and size >= self.eye_px / HYSTERESIS:
            return current
        return self.small if size < self.eye_px else self.large

    def describe(self) -> str:
        return f"{self.small} below {self.eye_px:g} px between the eyes, {self.large} from there up"


class AutoRestorer(FaceRestorer):
    """The engine of ``--model auto``: two networks, one detector and parser, faces split per track.

    It is the large network's engine, with the small one's engine beside it (sharing the detector, the
    parser and the stage timings). Each batch's faces are warped at their own network's template and
    size, restored by it, and pasted back in the engine's face order.
    """

    def __init__(self, options: EngineOptions, *, progress: bool = True, load_model: bool = True):
        small, large = options.auto_models
        if options.model_config is not None:
            raise VidrestoreError("model_config configures one network, but model auto runs two")
        self.rule = AutoRule(small, large, options.auto_eye_px)
        try:
            super().__init__(options.replace(model=large), progress=progress, load_model=load_model)
            part = FaceRestorer(
                options.replace(model=small), progress=progress, load_model=load_model, shared=self
            )
        except WeightsError as exc:
            raise WeightsError(f"model auto ({small} and {large}): {exc}") from None
        part.timings = self.timings
        self.parts = {small: part, large: self}
        self.options = options

    def networks(self, faces: list[Faces], context: FilmContext) -> list[str]:
        landmarks = np.concatenate([f.landmarks for f in faces]) if faces else np.zeros((0, 5, 2))
        return self._choose(landmarks, context).tolist()

    def _choose(self, landmarks: np.ndarray, context: FilmContext) -> np.ndarray:
        """Each face's network, counted per network and per track in the report's ``film.auto``."""
        eyes = np.linalg.norm(landmarks[:, 1] - landmarks[:, 0], axis=1)
        names = self.rule.choose(eyes, context.track_ids, context.state.of("auto"))
        report = context.state.report.setdefault(
            "auto", {"rule": self.rule.describe(), "faces": dict.fromkeys(self.parts, 0), "tracks": {}}
        )
        for tid, name in zip(context.track_ids.tolist(), names, strict=True):
            report["faces"][name] += 1
            per_track = report["tracks"].setdefault(tid, {})
            per_track[name] = per_track.get(name, 0) + 1
        return names

    def restore_crops(
        self, frames: torch.Tensor, frame_index: np.ndarray, landmarks: np.ndarray, context: FilmContext
    ) -> tuple[np.ndarray, Crops, Crops]:
        names = self._choose(landmarks, context)
        affines = np.zeros((len(landmarks), 2, 3))
        restored: list[torch.Tensor] = [frames.new_empty(0)] * len(landmarks)
        alpha = list(restored)
        for k, (name, part) in enumerate(self.parts.items()):
            sel = np.flatnonzero(names == name)
            if len(sel):
                # The part's faces only (film features index the context's tracks by face), each track
                # under a name of this network's own: what a feature keeps per track (texture history, held
                # masks) is of this network's crops, and a track that changes network starts afresh.
                own = replace(context, track_ids=context.track_ids[sel] * len(self.parts) + k)
                a, r, m = FaceRestorer.restore_crops(part, frames, frame_index[sel], landmarks[sel], own)
                affines[sel] = a
                for j, i in enumerate(sel.tolist()):
                    restored[i], alpha[i] = r[j], m[j]
        return affines, restored, alpha
