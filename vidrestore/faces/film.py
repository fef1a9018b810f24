"""What the streaming core tells the engine about a batch's faces, for the work done after the network.

Matching a restored face to the film around it (colour, grain, texture that holds still along a track, a mask
that does not pop) needs more than one frame: which track each face belongs to, which shot each frame is
in, and what earlier batches measured. :class:`FaceStream` keeps one :class:`FilmState` for its whole
sequence and hands the engine a :class:`FilmContext` with every batch; a still image gets a fresh one in
which every face is its own track and every image its own shot.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vidrestore.faces.detection import Faces


@dataclass
class FilmState:
    """State kept between batches of one sequence, under each feature's own name.

    ``of("grain")`` is the grain feature's dict (its entries keyed by track or shot as it likes);
    ``report`` holds what each feature measured, for ``--report``; ``notices`` are said once per run.
    """

    features: dict[str, dict[Any, Any]] = field(default_factory=lambda: defaultdict(dict))
    report: dict[str, Any] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)

    def of(self, feature: str) -> dict[Any, Any]:
        return self.features[feature]

    def notice(self, text: str) -> None:
        """Say ``text`` once in this run's notices."""
        if text not in self.notices:
            self.notices.append(text)


@dataclass
class FilmContext:
    """One batch: the track of each face (in the engine's face order), the shot and index of each frame."""

    track_ids: np.ndarray  # (N,) int64, one per face, frames in order and faces in order within a frame
    shots: np.ndarray  # (B,) int64, one per frame: the shot it belongs to, counted from the first frame
    frames: np.ndarray  # (B,) int64, one per frame: its index in the sequence
    state: FilmState

    @classmethod
    def still(cls, faces: list[Faces], state: FilmState | None = None) -> FilmContext:
        """Unrelated pictures: every face its own track, every picture its own shot."""
        count = sum(len(f) for f in faces)
        index = np.arange(len(faces), dtype=np.int64)
        return cls(np.arange(count, dtype=np.int64), index, index, state or FilmState())
