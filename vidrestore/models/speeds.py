"""The measured CPU cost of each registry model, for ``vidrestore models``.

``speeds.json`` beside this module is written by ``python -m benchmarks.bench_models --update-speeds``:
seconds per face at batch 1 in fp32, and one line saying when, on what and under what load it was measured.
A model added since the last measurement is listed as unmeasured.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

SPEEDS_FILE = Path(__file__).with_name("speeds.json")


@dataclass(frozen=True)
class Speeds:
    cpu_s_per_face: dict[str, float] = field(default_factory=dict)
    measured: str = ""  # date, CPU, threads, torch version, load average

    def describe(self, name: str) -> str:
        seconds = self.cpu_s_per_face.get(name)
        return "CPU unmeasured" if seconds is None else f"CPU {seconds:.3g} s/face"


def read_speeds(path: Path | None = None) -> Speeds:
    """The table (default: ``speeds.json`` here); an absent file means nothing was measured yet."""
    path = path or SPEEDS_FILE
    if not path.exists():
        return Speeds()
    data = json.loads(path.read_text())
    return Speeds(data["cpu_s_per_face"], data["measured"])


def write_speeds(speeds: Speeds, path: Path | None = None) -> None:
    data = {"measured": speeds.measured, "cpu_s_per_face": speeds.cpu_s_per_face}
    (path or SPEEDS_FILE).write_text(json.dumps(data, indent=2) + "\n")
