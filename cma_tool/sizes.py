"""Byte sizes as people and the kernel write them.

``64M``, ``4 MiB``, ``0x4000000``, ``16384K`` and plain integers are all
accepted; the kernel's memparse() suffixes (K, M, G, T, P, E, either case)
mean powers of 1024, as do the IEC forms (KiB, MiB, ...). A plain integer is
bytes, as memparse() reads it. ``MB`` and ``Mb`` are refused: memparse() has
no such unit, and people mean 10^6 bytes, 2^20 bytes or megabits by them.
"""

from __future__ import annotations

import re

_SUFFIX = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}
_SIZE_RE = re.compile(r"^\s*(0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*)\s*([kKmMgGtTpPeE]?)(i?[bB])?\s*$")
_BARE_DECIMAL = re.compile(r"^\s*[1-9][0-9]*\s*$")


class SizeError(ValueError):
    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def is_bare_decimal(text: str) -> bool:
    """A size written as a plain decimal number (so: bytes), e.g. ``64``; not ``0x40``, not ``64M``."""
    return bool(_BARE_DECIMAL.match(text))


def bare_bytes_hint(value: int) -> str:
    """What to say about a plain number that is surely not meant as bytes."""
    return (f"a plain number is bytes, as the kernel's memparse() reads it: {value} means {value} bytes; "
            f"write {value}M for {value} MiB or {value}K for {value} KiB")


def parse_size(text: str | int) -> int:
    """Parse a size; raise SizeError with a readable reason if it is not one."""
    if isinstance(text, bool):
        raise SizeError(f"expected a size, got {text!r}")
    if isinstance(text, int):
        if text < 0:
            raise SizeError(f"size {text} is negative")
        return text
    m = _SIZE_RE.match(text)
    if not m:
        raise SizeError(f"{text!r} is not a size (write e.g. 64M, 4 MiB, 0x4000000)")
    number, suffix, iec = m.groups()
    if iec and not suffix and iec.lower() != "b":
        raise SizeError(f"{text!r} is not a size")  # "16iB" means nothing; "16B" is bytes
    if suffix and iec and iec != "iB":
        # "64MB" (10^6 or 2^20?), "64Mb" (megabits), "64Mib": memparse() knows none of them.
        unit = suffix.upper()
        raise SizeError(f"{text.strip()!r}: '{suffix}{iec}' is not a unit the kernel knows",
                        hint=f"write {number}{unit} or {number} {unit}iB (powers of 1024, as the kernel's memparse() "
                             "reads them); for bytes write the number alone")
    base = 16 if number.lower().startswith("0x") else (8 if len(number) > 1 and number.startswith("0") else 10)
    return int(number, base) << _SUFFIX[suffix.lower()]


def round_up(value: int, unit: int) -> int:
    """``value`` rounded up to a whole number of ``unit`` (any positive unit, not only powers of two)."""
    return -(-value // unit) * unit


def format_size(size: int) -> str:
    """The shortest exact binary-unit spelling: 83886080 -> '80 MiB', 4100 -> '4100 B'."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} B"


def hexaddr(value: int, width: int = 8) -> str:
    return f"0x{value:0{width}x}"
