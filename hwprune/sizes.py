"""Input sizes: one side (a square input, as most classifiers take) or height and width.

A size is kept as an ``int`` when square and as an ``(h, w)`` tuple otherwise, so tables,
reports and checkpoints written for square inputs read exactly as before. Every place that
builds an example input or prints a size goes through here.
"""

from __future__ import annotations

import re
from typing import Union

from hwprune.errors import HwpruneError

Size = Union[int, "tuple[int, int]"]


class SizeError(HwpruneError):
    """An input size that is not one or two positive whole numbers."""


def canonical(size: "Size | list | str") -> Size:
    """``size`` as an ``int`` when square, else ``(h, w)``; lists (JSON) and text accepted."""
    if isinstance(size, str):
        return parse_size(size)
    if isinstance(size, (list, tuple)):
        if len(size) != 2:
            raise SizeError(f"an input size is one side or (height, width), not {list(size)}")
        h, w = (_positive(v) for v in size)
        return h if h == w else (h, w)
    return _positive(size)


def _positive(value) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise SizeError(f"an input side must be a positive whole number, not {value!r}")
    return int(value)


def hw(size: "Size | list") -> tuple[int, int]:
    """(height, width) of ``size``."""
    size = canonical(size)
    return (size, size) if isinstance(size, int) else size


def size_text(size: "Size | list", unit: str = "px") -> str:
    """``64px`` for a square input, ``48x80px`` (height x width) otherwise (``unit=" px"``
    for prose)."""
    h, w = hw(size)
    return f"{h}{unit}" if h == w else f"{h}x{w}{unit}"


def to_json(size: Size) -> "int | list[int]":
    """What metadata and reports store: the side, or [h, w]."""
    size = canonical(size)
    return size if isinstance(size, int) else list(size)


def parse_size(text: str) -> Size:
    """``"64"`` or ``"48x80"`` (height x width; ``,`` also separates)."""
    parts = re.split(r"\s*[x,X]\s*", str(text).strip())
    if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
        raise SizeError(f"'{text}' is not an input size: give one side (64) or "
                        f"height x width (48x80)")
    return canonical([int(p) for p in parts] * (3 - len(parts)))
