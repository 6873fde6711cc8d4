"""A tiny DTB assembler written with struct.pack, independent of the construct codec.

It lets the error tests place any token, length or offset at a known byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

BEGIN, END_NODE, PROP, NOP, END = 1, 2, 3, 4, 9


def begin(name: str) -> bytes:
    raw = name.encode() + b"\0"
    return struct.pack(">I", BEGIN) + raw + b"\0" * (-len(raw) % 4)


def prop(nameoff: int, value: bytes, *, length: int | None = None) -> bytes:
    pad = b"\0" * (-len(value) % 4)
    return struct.pack(">III", PROP, len(value) if length is None else length, nameoff) + value + pad


def token(code: int) -> bytes:
    return struct.pack(">I", code)


@dataclass
class Layout:
    """Header fields default to a well-formed layout; override any of them."""

    structure: bytes
    strings: bytes = b""
    reservations: bytes = b"\0" * 16
    version: int = 17
    last_comp: int = 16
    overrides: dict[str, int] = field(default_factory=dict)

    def offsets(self) -> dict[str, int]:
        off_rsv = 40
        off_struct = off_rsv + len(self.reservations)
        off_strings = off_struct + len(self.structure)
        total = off_strings + len(self.strings)
        return {"rsv": off_rsv, "struct": off_struct, "strings": off_strings, "total": total}

    def blob(self) -> bytes:
        o = self.offsets()
        h = {
            "magic": 0xD00DFEED,
            "totalsize": o["total"],
            "off_dt_struct": o["struct"],
            "off_dt_strings": o["strings"],
            "off_mem_rsvmap": o["rsv"],
            "version": self.version,
            "last_comp_version": self.last_comp,
            "boot_cpuid_phys": 0,
            "size_dt_strings": len(self.strings),
            "size_dt_struct": len(self.structure),
        }
        h.update(self.overrides)
        header = struct.pack(">10I", *h.values())
        return header + self.reservations + self.structure + self.strings


def minimal_structure() -> bytes:
    """/ { model = "x"; child { }; };  with the strings block b"model\\0"."""
    return begin("") + prop(0, b"x\0") + begin("child") + token(END_NODE) + token(END_NODE) + token(END)
