"""The non-commercial licence notice: one line, once per machine, when such a model is first loaded.

Users of a video tool rarely read a model list, so a restriction on use has to be said where the model is
used; but a line on every run is noise that scripts learn to ignore. A marker file under
``$VIDRESTORE_HOME/licences/`` records that the notice was shown on this machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

from vidrestore import weights
from vidrestore.models import ModelSpec


def licence_notice(spec: ModelSpec) -> str | None:
    """The one line a user of ``spec`` must see, or None for a model free for any use."""
    if not spec.non_commercial:
        return None
    return (
        f"model {spec.name} is under {spec.licence}: non-commercial use only "
        f"(shown once; see 'vidrestore models')"
    )


def marker_path(spec: ModelSpec) -> Path:
    return weights.cache_dir() / "licences" / f"{spec.name}.shown"


def notify_first_use(spec: ModelSpec) -> None:
    """Print ``spec``'s licence notice on stderr if this machine has not shown it yet.

    A marker that cannot be written (a read-only home) only means the line is shown again next time.
    """
    line = licence_notice(spec)
    marker = marker_path(spec)
    if line is None or marker.exists():
        return
    print(f"vidrestore: note: {line}", file=sys.stderr)
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(line + "\n")
    except OSError:
        pass
