"""The batch's final account: one row per planned file, as CSV and JSON in ``OUTDIR/.vidrestore`` and as a
short summary on the terminal (counts, frames, speed, and each failure with its one-line reason)."""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

COLUMNS = (
    "key", "state", "attempts", "frames", "faces", "seconds", "fps", "host", "device", "output", "error",
)  # fmt: skip


@dataclass
class Row:
    """A file's outcome. state: done (this run), skipped (done before, or verified), failed, queued (left for
    the next run: interrupted or stopped early)."""

    key: str
    output: str
    state: str
    attempts: int = 0
    frames: int = 0
    faces: int = 0
    seconds: float = 0.0
    host: str = ""
    device: str = ""
    error: str = ""

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


@dataclass
class BatchReport:
    """What :func:`vidrestore.batch.run_batch` returns: the rows, and why the batch stopped early if so."""

    rows: list[Row] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str = ""  # "--halt-on-error", "--max-failures N", "interrupted"; empty when it ran to the end
    csv_path: Path | None = None
    json_path: Path | None = None

    def count(self, state: str) -> int:
        return sum(r.state == state for r in self.rows)

    @property
    def failed(self) -> int:
        return self.count("failed")

    def describe(self) -> str:
        """The terminal summary: counts, this run's frames and speed, then one line per failure."""
        ran = [r for r in self.rows if r.state == "done"]
        frames, busy = sum(r.frames for r in ran), sum(r.seconds for r in ran)
        speed = f", {frames / busy:.1f} fps" if busy else ""
        parts = [
            f"{self.count(s)} {s}"
            for s in ("done", "skipped", "failed", "queued")
            if self.count(s) or s == "done"
        ]
        lines = [
            f"batch: {len(self.rows)} file(s): {', '.join(parts)}; {frames} frames restored in "
            f"{self.seconds:.1f} s{speed}" + (f"; stopped early ({self.stopped})" if self.stopped else "")
        ]
        lines += [f"failed: {r.key}: {r.error}" for r in self.rows if r.state == "failed"]
        if self.csv_path is not None:
            lines.append(f"report: {self.csv_path} and {self.json_path}")
        return "\n".join(lines)

    def write(self, folder: Path, also: Path | None = None) -> None:
        """report.csv and report.json (and the JSON again at ``also``: ``--report``), each written whole to a
        temporary name and renamed."""
        folder.mkdir(parents=True, exist_ok=True)
        table = [{**asdict(r), "fps": round(r.fps, 3), "seconds": round(r.seconds, 3)} for r in self.rows]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({c: row[c] for c in COLUMNS} for row in table)
        self.csv_path, self.json_path = folder / "report.csv", folder / "report.json"
        summary = {s: self.count(s) for s in ("done", "skipped", "failed", "queued")}
        data = {
            "files": table,
            "summary": summary,
            "seconds": round(self.seconds, 3),
            "stopped": self.stopped,
        }
        _write_atomic(self.csv_path, text.getvalue())
        for path in (self.json_path, also):
            if path is not None:
                _write_atomic(path, json.dumps(data, indent=2))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
