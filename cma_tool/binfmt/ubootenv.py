"""U-Boot environment images, as ``saveenv`` writes them and ``fw_printenv`` reads them.

Layout (U-Boot include/env.h, ``env_t``): a little-endian CRC32 of the data
area, then (with CONFIG_SYS_REDUNDAND_ENVIRONMENT) one flag byte, then the
data area filling the rest of the fixed-size image: ``name=value\\0`` pairs
and one extra ``\\0`` after the last; an empty environment is a single ``\\0``.

Padding: U-Boot's own ``saveenv`` zero-fills the data area before exporting
(hexport_r memsets it to 0x00), while ``mkenvimage`` and erased flash give
0xff. Both are accepted by U-Boot because the CRC covers the padding and the
import stops at the double NUL, so ``build`` defaults to 0x00 and takes
``fill=0xff`` to match mkenvimage byte for byte.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from construct import Bytes, Int8ul, Int32ul, Struct, this

from cma_tool.binfmt.blob_error import BlobError


class EnvError(BlobError):
    """A U-Boot environment image is malformed, or cannot hold the given variables."""

    format_name = "u-boot env"


#: Redundant copies: U-Boot writes 1 into the copy it makes active.
ACTIVE_FLAG = 1

_SINGLE = Struct("crc" / Int32ul, "data" / Bytes(this._.data_size))
_REDUNDANT = Struct("crc" / Int32ul, "flags" / Int8ul, "data" / Bytes(this._.data_size))


@dataclass(frozen=True)
class EnvImage:
    """A parsed environment: the variables in image order, and the flag byte of a redundant copy."""

    variables: dict[str, str] = field(default_factory=dict)
    redundant: bool = False
    flags: int | None = None


def header_size(*, redundant: bool) -> int:
    return 5 if redundant else 4


def build(
    variables: Mapping[str, str],
    *,
    size: int,
    redundant: bool = False,
    flags: int = ACTIVE_FLAG,
    fill: int = 0x00,
) -> bytes:
    """An image of exactly ``size`` bytes holding ``variables`` in the given order."""
    head = header_size(redundant=redundant)
    if size <= head + 1:
        raise EnvError(f"an environment of {size} bytes leaves no room for data (the header takes {head})")
    if not 0 <= fill <= 0xFF or not 0 <= flags <= 0xFF:
        raise EnvError("fill and flags are single bytes (0..255)")
    body = bytearray()
    for name, value in variables.items():
        _check_variable(name, value)
        body += f"{name}={value}".encode() + b"\0"
    body += b"\0"
    data_size = size - head
    if len(body) > data_size:
        raise EnvError(
            f"the variables take {len(body)} bytes but the image holds {data_size} after its {head}-byte header",
            hint="raise the environment size to the board's CONFIG_ENV_SIZE, or drop variables",
        )
    data = bytes(body) + bytes([fill]) * (data_size - len(body))
    fields: dict[str, Any] = {"crc": zlib.crc32(data), "data": data}
    if redundant:
        fields["flags"] = flags
        return bytes(_REDUNDANT.build(fields, data_size=data_size))
    return bytes(_SINGLE.build(fields, data_size=data_size))


def parse(blob: bytes, *, size: int | None = None, redundant: bool = False, source: str = "") -> EnvImage:
    """Parse an image; ``size`` (CONFIG_ENV_SIZE), when given, must match the blob's length."""
    source = source or "<u-boot env>"
    head = header_size(redundant=redundant)
    if size is not None and len(blob) != size:
        raise EnvError(
            f"the image is {len(blob)} bytes, expected the environment size {size}",
            offset=min(len(blob), size),
            source=source,
        )
    if len(blob) <= head:
        raise EnvError(f"truncated: {len(blob)} bytes, the header alone takes {head}", offset=len(blob), source=source)
    data_size = len(blob) - head
    layout = _REDUNDANT if redundant else _SINGLE
    image: Any = layout.parse(bytes(blob), data_size=data_size)
    data = bytes(image.data)
    actual = zlib.crc32(data)
    if actual != image.crc:
        raise EnvError(
            f"bad CRC: the header says 0x{image.crc:08x}, the data area gives 0x{actual:08x}",
            offset=0,
            source=source,
            hint="wrong environment size, a redundant image read as single (or the reverse), or a corrupt copy",
        )
    variables = _parse_entries(data, head, source)
    return EnvImage(variables, redundant, int(image.flags) if redundant else None)


def _parse_entries(data: bytes, head: int, source: str) -> dict[str, str]:
    variables: dict[str, str] = {}
    pos = 0
    while True:
        if pos >= len(data):
            raise EnvError("the data area has no terminating empty entry (double NUL)", offset=head + pos, source=source)
        end = data.find(b"\0", pos)
        if end < 0:
            raise EnvError("an entry runs to the end of the data area without a NUL", offset=head + pos, source=source)
        if end == pos:
            return variables
        raw = data[pos:end]
        try:
            entry = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise EnvError("an entry is not UTF-8 text", offset=head + pos + exc.start, source=source) from None
        name, sep, value = entry.partition("=")
        if not sep:
            raise EnvError(f"entry {_clip(entry)!r} has no '='", offset=head + pos, source=source)
        if not name:
            raise EnvError(f"entry {_clip(entry)!r} has an empty name", offset=head + pos, source=source)
        if name in variables:
            raise EnvError(f"variable {name!r} is defined twice", offset=head + pos, source=source)
        variables[name] = value
        pos = end + 1


def _check_variable(name: str, value: str) -> None:
    if not name or "=" in name or "\0" in name:
        raise EnvError(f"variable name {name!r} must be non-empty and hold no '=' or NUL")
    if "\0" in value:
        raise EnvError(f"the value of {name} contains a NUL byte")


def _clip(text: str) -> str:
    return text if len(text) <= 40 else text[:37] + "..."
