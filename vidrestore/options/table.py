"""The table's machinery: a setting's row, the layer base class that checks its own settings, the errors.

Each layer (:mod:`vidrestore.options.layers`) declares its settings as dataclass fields made with
:func:`setting`; those fields are the rows of :data:`TABLE`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Self

from vidrestore.errors import VidrestoreError
from vidrestore.options.kinds import Kind

Front = Literal["python", "cli", "vapoursynth"]
AUTO = "auto"
TABLE: dict[str, Setting] = {}  # every setting by name, filled as the layers are defined


class OptionError(VidrestoreError):
    """A setting with a wrong type or value; :meth:`spelled` says it with the caller's name for it."""

    def __init__(self, name: str, reason: str, front: Front = "python") -> None:
        self.name, self.reason = name, reason
        super().__init__(f"{spell(name, front)} {reason}")

    def spelled(self, front: Front) -> OptionError:
        return OptionError(self.name, self.reason, front)


@dataclass(frozen=True)
class Setting:
    """One row of the table: a setting's name in every front end, its kind and its help."""

    name: str  # the Python keyword and the VapourSynth parameter
    layer: str
    kind: Kind
    help: str
    flag: str | None  # None: not on the command line
    vapoursynth: bool  # a parameter of the VapourSynth filter
    aliases: tuple[str, ...] = ()  # deprecated Python / VapourSynth names
    # Deprecated flags: (flag, None) takes a value, (flag, value) sets that value.
    flag_aliases: tuple[tuple[str, Any], ...] = ()
    negate: tuple[str, Any, str] | None = None  # (flags, value, help): a flag that sets one value
    metavar: str | None = None


def setting(
    default: Any,
    kind: Kind,
    help: str,
    *,
    flag: str | None = AUTO,
    vapoursynth: bool = True,
    aliases: tuple[str, ...] = (),
    flag_aliases: tuple[tuple[str, Any], ...] = (),
    negate: tuple[str, Any, str] | None = None,
    metavar: str | None = None,
) -> Any:
    """A layer field that is also a row of the table."""
    meta = dict(
        kind=kind,
        help=help,
        flag=flag,
        vapoursynth=vapoursynth,
        aliases=aliases,
        flag_aliases=flag_aliases,
        negate=negate,
        metavar=metavar,
    )
    if isinstance(default, dict):
        return field(default_factory=dict, metadata=meta)
    return field(default=default, metadata=meta)


class Layer:
    """A group of settings that checks itself once, when it is made."""

    layer: ClassVar[str]

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if "kind" in f.metadata:
                try:
                    value = f.metadata["kind"].check(getattr(self, f.name))
                except ValueError as exc:
                    raise OptionError(f.name, str(exc)) from None
                object.__setattr__(self, f.name, value)
        self.check()

    def check(self) -> None:
        """Rules between settings of the layer (raise :class:`OptionError`)."""

    @classmethod
    def settings(cls) -> list[Setting]:
        out = []
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if "kind" not in f.metadata:
                continue
            m = f.metadata
            flag = "--" + f.name.replace("_", "-") if m["flag"] == AUTO else m["flag"]
            out.append(
                Setting(
                    f.name,
                    cls.layer,
                    m["kind"],
                    m["help"],
                    flag,
                    m["vapoursynth"],
                    m["aliases"],
                    m["flag_aliases"],
                    m["negate"],
                    m["metavar"],
                )
            )
        return out

    @classmethod
    def pick(cls, values: dict[str, Any]) -> Self:
        """Make the layer from the entries of ``values`` it owns (removing them)."""
        own = {s.name for s in cls.settings()}
        return cls(**{k: values.pop(k) for k in list(values) if k in own})

    def replace(self, **changes: Any) -> Self:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


def spell(name: str, front: Front) -> str:
    """How ``front`` spells a setting: its flag on the command line, its name elsewhere."""
    s = TABLE.get(name)
    if front == "cli" and s is not None:
        return s.flag or (s.negate[0] if s.negate else name).split("/")[-1]
    return name
