"""The command line and the README, from the table: argparse flags and the markdown table of settings."""

from __future__ import annotations

import argparse
import dataclasses
import re
from collections.abc import Callable, Iterable
from typing import Any

from vidrestore.options.kinds import Flag, KeyValues, Kind
from vidrestore.options.layers import LAYERS, build
from vidrestore.options.table import TABLE, Layer


def add_arguments(parser: argparse.ArgumentParser, layer: type[Layer], title: str | None = None) -> None:
    """The layer's flags, with the table's names, help and parsing; deprecated flags still work, unlisted.

    Flags given no value leave the setting out, so that the layer's own default applies.
    """
    group: Any = parser.add_argument_group(title) if title else parser
    for s in layer.settings():
        kind, dest = s.kind, dict(dest=s.name, default=argparse.SUPPRESS)
        if s.flag is not None and isinstance(kind, Flag):
            group.add_argument(s.flag, action="store_true", help=s.help, **dest)
        elif s.flag is not None:
            group.add_argument(
                s.flag,
                type=_cli_type(kind),
                action="append" if isinstance(kind, KeyValues) else "store",
                metavar=s.metavar or kind.metavar or s.name.upper().split("_")[-1],
                help=s.help,
                **dest,
            )
        for alias, const in s.flag_aliases:
            if const is None:
                group.add_argument(alias, type=_cli_type(kind), help=argparse.SUPPRESS, **dest)
            else:
                group.add_argument(alias, action="store_const", const=const, help=argparse.SUPPRESS, **dest)
        if s.negate is not None:
            flags, value, text = s.negate
            group.add_argument(*flags.split("/"), action="store_const", const=value, help=text, **dest)


def _cli_type(kind: Kind) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return kind.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def from_arguments(args: argparse.Namespace, layers: Iterable[type[Layer]]) -> list[Layer]:
    """The layers from parsed flags (only those given; the others keep the layers' defaults)."""
    values = {}
    for layer in layers:
        for s in layer.settings():
            if hasattr(args, s.name):
                value = getattr(args, s.name)
                values[s.name] = dict(value) if isinstance(s.kind, KeyValues) else value
    return build(layers, values, "cli")


def markdown_table() -> str:
    """The table as the README shows it: ``python -m vidrestore.options`` prints it."""
    fields = {f.name: f for layer in LAYERS for f in dataclasses.fields(layer)}
    rows = [
        "| setting (Python, VapourSynth) | CLI flag | layer | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for s in TABLE.values():
        default = fields[s.name].default
        default = {} if default is dataclasses.MISSING else default
        flags = ", ".join(f"`{x}`" for x in (s.flag, s.negate[0] if s.negate else None) if x) or "—"
        old = [f"`{a}`" for a in s.aliases] + [f"`{a}`" for a, _ in s.flag_aliases]
        name = f"`{s.name}`" + ("" if s.vapoursynth else " (not in VapourSynth)")
        meaning = re.sub(r" \(default: [^)]*\)$", "", s.help).replace("|", "\\|")
        meaning += f"; old names: {', '.join(old)}" if old else ""
        rows.append(f"| {name} | {flags} | {s.layer} | `{default!r}` | {meaning} |")
    return "\n".join(rows)
