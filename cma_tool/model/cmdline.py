"""The parts of the kernel command line that shape CMA: ``cma=`` and ``coherent_pool=``.

Parsed the way the kernel does (memparse, early_param order, last one wins),
including its quirks, because the model must land areas where the kernel does.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

# memparse(): each suffix letter falls through to the smaller ones, so E is
# 60 bits and K is 10.
_SHIFT = {"k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}
_HEX = "0123456789abcdefABCDEF"


def memparse(text: str, pos: int = 0) -> tuple[int, int]:
    """The kernel's memparse(): (value, index after it). No digits gives 0 and consumes nothing.

    simple_strtoull with base 0: ``0x`` followed by a hex digit is hex, a
    leading 0 is octal (so ``010M`` is 8 MiB), anything else decimal.
    """
    i = pos
    base = 10
    if text.startswith("0", i):
        if text[i + 1 : i + 2] in ("x", "X") and i + 2 < len(text) and text[i + 2] in _HEX:
            base = 16
            i += 2
        else:
            base = 8
    digits = "0123456789abcdef"[:base] if base != 8 else "01234567"
    start = i
    while i < len(text) and text[i].lower() in digits:
        i += 1
    value = int(text[start:i], base) if i > start else 0
    if i < len(text) and text[i].lower() in _SHIFT:
        value <<= _SHIFT[text[i].lower()]
        i += 1
    return value, i


@dataclass(frozen=True)
class CmaCmdline:
    """What early_cma() left in its static variables after the whole command line.

    ``size`` is None when no ``cma=`` was given (the kernel's ``size_cmdline == -1``).
    ``base``/``limit`` keep values from an earlier ``cma=`` when a later one has
    no ``@``, exactly as the kernel's statics do.
    """

    size: int | None = None
    base: int = 0
    limit: int = 0
    coherent_pool: int | None = None
    #: Words the kernel would read differently from what the writer likely meant.
    warnings: tuple[str, ...] = ()

    @property
    def given(self) -> bool:
        return self.size is not None


def _words(cmdline: str) -> list[str]:
    # The kernel's parse_args() splits on spaces and honours double quotes;
    # shlex in POSIX mode does the same for the values we care about.
    try:
        return shlex.split(cmdline, posix=True)
    except ValueError:
        return cmdline.split()


def parse_cma_cmdline(cmdline: str, *, with_placement: bool = True) -> CmaCmdline:
    """Read ``cma=`` and ``coherent_pool=`` from a full kernel command line.

    ``with_placement`` False is the 3.5 parser, which reads only a size.
    """
    size: int | None = None
    base = 0
    limit = 0
    pool: int | None = None
    warnings: list[str] = []
    for word in _words(cmdline):
        if word == "--":
            break  # the rest belongs to init
        key, eq, value = word.partition("=")
        if not eq:
            continue
        if key == "cma":
            size, end = memparse(value)
            if end == 0:
                warnings.append(f"cma={value}: no number, the kernel reads it as cma=0 (no default area)")
                continue
            if not with_placement:
                if end < len(value):
                    warnings.append(f"cma={value}: this kernel reads only the size; '{value[end:]}' is ignored")
                continue
            if end >= len(value) or value[end] != "@":
                if end < len(value):
                    warnings.append(f"cma={value}: '{value[end:]}' after the size is ignored by the kernel")
                continue
            base, end = memparse(value, end + 1)
            if end >= len(value) or value[end] != "-":
                limit = base + size
                if end < len(value):
                    warnings.append(f"cma={value}: '{value[end:]}' after the base is ignored by the kernel")
                continue
            limit, end = memparse(value, end + 1)
            if end < len(value):
                warnings.append(f"cma={value}: '{value[end:]}' after the limit is ignored by the kernel")
        elif key == "coherent_pool":
            pool, _ = memparse(value)
    return CmaCmdline(size=size, base=base, limit=limit, coherent_pool=pool, warnings=tuple(warnings))
