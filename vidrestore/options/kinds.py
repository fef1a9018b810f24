"""Value kinds: what a setting accepts, from Python values (checked) and from command-line text (parsed).

A kind raises ``ValueError`` with the reason only ("must be from 0 to 1, not 2"); the layer that owns the
setting puts the option's name in front, spelled as the caller spelled it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class Kind:
    """Checks a Python value (returning it normalised) and parses command-line text."""

    metavar: str | None = None

    def check(self, value: Any) -> Any:
        raise NotImplementedError

    def parse(self, text: str) -> Any:
        return self.check(text)


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else f"{value!r} ({type(value).__name__})"


@dataclass(frozen=True)
class Number(Kind):
    low: float | None = None
    high: float | None = None
    integer: bool = False
    optional: bool = False  # None allowed
    low_open: bool = False  # low itself excluded

    def check(self, value: Any) -> Any:
        if value is None and self.optional:
            return None
        ok = isinstance(value, int) if self.integer else isinstance(value, int | float)
        if isinstance(value, bool) or not ok:
            raise ValueError(f"must be {'an integer' if self.integer else 'a number'}, not {_show(value)}")
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, not {value}")
        too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        if too_low or (self.high is not None and value > self.high):
            raise ValueError(f"must be {self._range()}, not {value}")
        return value

    def _range(self) -> str:
        if self.low is not None and self.high is not None:
            return f"from {self.low:g} to {self.high:g}"
        if self.low is not None:
            return f"{'more than' if self.low_open else 'at least'} {self.low:g}"
        return f"at most {self.high:g}"

    def parse(self, text: str) -> Any:
        try:
            value = int(text) if self.integer else float(text)
        except ValueError:
            raise ValueError(
                f"must be {'an integer' if self.integer else 'a number'}, not {text!r}"
            ) from None
        return self.check(value)


_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


@dataclass(frozen=True)
class Bytes(Kind):
    """An amount of memory: a number of bytes, or text such as ``12G``, ``1500M``, ``0.5T`` (binary units)."""

    metavar: str | None = "SIZE"

    def check(self, value: Any) -> int | None:
        if value is None:
            return None
        if isinstance(value, str):
            return self.parse(value)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise ValueError(f"must be a positive number of bytes or a size such as 12G, not {_show(value)}")
        return value

    def parse(self, text: str) -> int:
        t = text.strip().upper().removesuffix("B").removesuffix("I")
        unit = t[-1:] if t[-1:] in _UNITS else ""
        try:
            number = float(t[: len(t) - len(unit)])
        except ValueError:
            raise ValueError(f"must be a size such as 12G or 1500M, not {text!r}") from None
        if not math.isfinite(number) or number <= 0:
            raise ValueError(f"must be a positive size, not {text!r}")
        return int(number * _UNITS[unit])


@dataclass(frozen=True)
class Choice(Kind):
    """One of ``values`` (``resolve`` maps accepted aliases, e.g. a model's old name, to the canonical)."""

    values: Callable[[], Iterable[str]]
    resolve: Callable[[str], str | None] | None = None

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {_show(value)}")
        found = self.resolve(value) if self.resolve else (value if value in self.values() else None)
        if found is None:
            raise ValueError(f"must be one of {', '.join(self.values())}, not {value!r}")
        return found


@dataclass(frozen=True)
class Choices(Kind):
    """``count`` different values of ``choice``: a sequence in Python, comma-separated on the command line."""

    choice: Choice
    count: int

    def check(self, value: Any) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list | tuple) or len(items) != self.count:
            raise ValueError(f"must be {self.count} names separated by commas, not {_show(value)}")
        names = tuple(self.choice.check(v.strip() if isinstance(v, str) else v) for v in items)
        if len(set(names)) != len(names):
            raise ValueError(f"must be {self.count} different names, not {_show(value)}")
        return names


@dataclass(frozen=True)
class Text(Kind):
    optional: bool = True

    def check(self, value: Any) -> str | None:
        if value is None and self.optional:
            return None
        if not isinstance(value, str) or not value:
            raise ValueError(f"must be a non-empty string, not {_show(value)}")
        return value


@dataclass(frozen=True)
class Flag(Kind):
    def check(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"must be True or False, not {_show(value)}")
        return value


@dataclass(frozen=True)
class FilePath(Kind):
    metavar: str | None = "PATH"

    def check(self, value: Any) -> Path | None:
        if value is None:
            return None
        if not isinstance(value, str | os.PathLike) or not str(value):
            raise ValueError(f"must be a path, not {_show(value)}")
        return Path(value)


@dataclass(frozen=True)
class Seconds(Kind):
    """A time in the video: seconds, or '[HH:]MM:SS[.ms]' text."""

    metavar: str | None = "TIME"

    def check(self, value: Any) -> float | None:
        if value is None:
            return None
        if isinstance(value, str):
            return self.parse(value)
        return float(Number(low=0).check(value))

    def parse(self, text: str) -> float:
        try:
            value = 0.0
            for part in text.split(":"):
                value = value * 60 + float(part)
        except ValueError:
            value = -1.0
        if text.count(":") > 2 or not math.isfinite(value) or value < 0:
            raise ValueError(f"must be seconds or [HH:]MM:SS[.ms], not {text!r}")
        return value


@dataclass(frozen=True)
class KeyValues(Kind):
    """Encoder options: a mapping in Python, repeated KEY=VALUE on the command line."""

    metavar: str | None = "KEY=VALUE"

    def check(self, value: Any) -> dict[str, str]:
        if not isinstance(value, Mapping) or not all(
            isinstance(k, str) and k and isinstance(v, str | int | float) for k, v in value.items()
        ):
            raise ValueError(f"must be a mapping of option names to values, not {_show(value)}")
        return {k: str(v) for k, v in value.items()}

    def parse(self, text: str) -> tuple[str, str]:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise ValueError(f"expects KEY=VALUE, not {text!r}")
        return key, value


@dataclass(frozen=True)
class WordOrNumber(Kind):
    """One of ``words`` (e.g. auto, off), or a number from ``low`` up, given as a number or as text."""

    words: tuple[str, ...]
    low: float = 0.0

    def check(self, value: Any) -> str | float:
        if isinstance(value, str):
            return value if value in self.words else self.parse(value)
        try:
            return float(Number(low=self.low).check(value))
        except ValueError:
            raise ValueError(f"must be {self._expected()}, not {_show(value)}") from None

    def parse(self, text: str) -> str | float:
        if text in self.words:
            return text
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"must be {self._expected()}, not {text!r}") from None
        return self.check(value)

    def _expected(self) -> str:
        return f"{', '.join(self.words)} or a number of at least {self.low:g}"
