"""The batch's memory across runs: an append-only JSON-lines manifest in ``OUTDIR/.vidrestore``.

Only the driver writes it, one line per state change, flushed and fsynced before the work it announces
starts, so a crash at any moment leaves at worst a torn last line, which reading skips. A file's identity is
its key (relative path), size, mtime and a hash of the settings that change its output: editing the file or
the settings makes it a new entry, re-queued. An entry whose last state is "running" is an attempt that
crashed; one the driver gave back (Ctrl-C, a stop) is "queued" with ``released`` and counts as no
attempt. An exclusive lock (``flock``, released by the kernel however the driver dies) keeps a second
driver out of the same output folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from vidrestore.batch.plan import STATE_DIR, Planned
from vidrestore.errors import VidrestoreError

# Settings that never change a file's pixels or encoding: changing them re-queues nothing.
NOT_IN_IDENTITY = frozenset(
    {"progress", "report", "overwrite", "device", "max_memory", "weights_dir", "hwaccel"}
)


def settings_hash(settings: dict[str, Any]) -> str:
    """A short hash of the settings that shape an output (by Python name, defaults included)."""
    kept = {k: v for k, v in sorted(settings.items()) if k not in NOT_IN_IDENTITY}
    text = json.dumps(kept, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Entry:
    """A file's standing in the manifest: its last record for the current identity, and attempts so far."""

    state: str | None  # None: never seen with this identity
    attempts: int
    record: dict[str, Any]


class Manifest:
    """``OUTDIR/.vidrestore/manifest.jsonl``: read whole at start, appended to (and fsynced) per change."""

    def __init__(self, output_dir: Path):
        self.folder = output_dir / STATE_DIR
        self.path = self.folder / "manifest.jsonl"
        self.records: dict[str, list[dict[str, Any]]] = {}  # by key, in order
        for r in read_records(self.path):
            self.records.setdefault(r["key"], []).append(r)
        self._file: IO[str] | None = None
        self._lock: IO[str] | None = None

    def lock(self) -> None:
        """Take the output folder for this driver, or say in one line which driver holds it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = open(self.folder / "lock", "a+")  # noqa: SIM115 (held open for the whole run)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise VidrestoreError(
                f"{self.folder.parent}: another batch ({holder}) is using this output folder; wait for it or "
                "choose another"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"process {os.getpid()} on {socket.gethostname()}\n")
        lock.flush()
        self._lock = lock

    def entry(self, file: Planned, digest: str) -> Entry:
        """The file's last state and attempt count for this identity (size, mtime and settings)."""
        state, attempts, last = None, 0, {}
        for r in self.records.get(file.key, ()):
            if (r.get("size"), r.get("mtime_ns"), r.get("settings")) == (file.size, file.mtime_ns, digest):
                state, last = r.get("state"), r
                attempts += r.get("state") == "running"
                attempts -= bool(r.get("released"))  # given back unfinished (Ctrl-C, a stop): no attempt
        return Entry(state, attempts, last)

    def done_elsewise(self, file: Planned, digest: str) -> bool:
        """Whether the key's last "done" record is for another identity: its output is out of date."""
        done = [r for r in self.records.get(file.key, ()) if r.get("state") == "done"]
        return bool(done) and (done[-1].get("size"), done[-1].get("mtime_ns"), done[-1].get("settings")) != (
            file.size,
            file.mtime_ns,
            digest,
        )

    def append(self, file: Planned, digest: str, state: str, **fields: Any) -> None:
        """One record, on disk (fsynced) before this returns."""
        if self._file is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (appended to all run long)
            if self._file.tell() and not _ends_with_newline(self.path):
                self._file.write("\n")  # a torn line from a crash stays a line of its own, skipped on reading
        record = {
            "key": file.key,
            "size": file.size,
            "mtime_ns": file.mtime_ns,
            "settings": digest,
            "state": state,
            "time": round(time.time(), 3),
            **{k: v for k, v in fields.items() if v is not None},
        }
        self._file.write(json.dumps(record, default=str) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.records.setdefault(file.key, []).append(record)

    def close(self) -> None:
        for f in (self._file, self._lock):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        self._file = self._lock = None


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every whole record; a line a crash tore (not JSON, or not an object with a key) is skipped."""
    if not path.exists():
        return []
    out = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "key" in record and "state" in record:
                out.append(record)
    return out


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
