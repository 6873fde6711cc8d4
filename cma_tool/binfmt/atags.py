"""The ARM ATAG list: how a bootloader describes memory to a board-file kernel without DT.

Layout (arch/arm/include/uapi/asm/setup.h): each tag is a header of two
32-bit words, ``size`` (in words, header included) and ``tag``, then its
data; the list starts with ATAG_CORE and ends with ATAG_NONE, whose size is 0.
Words are in the CPU's byte order: little-endian on every board we support.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from construct import Bytes, ConstructError, Int32ul, Int64ul, Struct, this

from cma_tool.binfmt.blob_error import BlobError


class AtagError(BlobError):
    """An ATAG list is malformed, or a list cannot be built from the given values."""

    format_name = "atags"


ATAG_NONE = 0x00000000
ATAG_CORE = 0x54410001
ATAG_MEM = 0x54410002
ATAG_CMDLINE = 0x54410009
ATAG_INITRD2 = 0x54420005
ATAG_MEM64 = 0x54420002

#: ARM's COMMAND_LINE_SIZE: the kernel silently cuts a longer command line.
COMMAND_LINE_SIZE = 1024
# A list far longer than any bootloader writes is corruption, not data; the
# kernel itself reserves a few KiB for it.
MAX_LIST_BYTES = 64 * 1024

_HEADER = Struct("size" / Int32ul, "tag" / Int32ul)
_CORE = Struct("flags" / Int32ul, "pagesize" / Int32ul, "rootdev" / Int32ul)
_MEM = Struct("size" / Int32ul, "start" / Int32ul)
_MEM64 = Struct("size" / Int64ul, "start" / Int64ul)
_INITRD2 = Struct("start" / Int32ul, "size" / Int32ul)
_TAG = Struct("size" / Int32ul, "tag" / Int32ul, "data" / Bytes((this.size - 2) * 4))


@dataclass(frozen=True)
class AtagCore:
    """ATAG_CORE; ``short`` is the two-word form without data (the kernel then uses defaults)."""

    flags: int = 1  # bit 0: mount the root read-only
    pagesize: int = 4096
    rootdev: int = 0
    short: bool = False


@dataclass(frozen=True)
class AtagMem:
    """ATAG_MEM (or ATAG_MEM64 when ``wide``): one bank of RAM."""

    start: int
    size: int
    wide: bool = False


@dataclass(frozen=True)
class AtagCmdline:
    text: str


@dataclass(frozen=True)
class AtagInitrd2:
    """ATAG_INITRD2: the initramfs by physical address."""

    start: int
    size: int


@dataclass(frozen=True)
class AtagOther:
    """Any other tag, kept as raw data words so a list round-trips."""

    tag: int
    data: bytes


Atag = AtagCore | AtagMem | AtagCmdline | AtagInitrd2 | AtagOther


def boot_tags(
    banks: Sequence[tuple[int, int]],
    cmdline: str,
    *,
    initrd: tuple[int, int] | None = None,
    pagesize: int = 4096,
) -> list[Atag]:
    """The usual list: core, one ATAG_MEM per (start, size) bank, initrd (start, size), command line."""
    tags: list[Atag] = [AtagCore(flags=1, pagesize=pagesize, rootdev=0)]
    tags += [AtagMem(start, size) for start, size in banks]
    if initrd is not None:
        tags.append(AtagInitrd2(*initrd))
    tags.append(AtagCmdline(cmdline))
    return tags


def build(tags: Sequence[Atag]) -> bytes:
    """Serialise a list (ATAG_CORE first; ATAG_NONE is appended)."""
    if not tags or not isinstance(tags[0], AtagCore):
        raise AtagError("an ATAG list must start with ATAG_CORE", hint="the kernel ignores a list that does not")
    out = bytearray()
    for index, tag in enumerate(tags):
        if index and isinstance(tag, AtagCore):
            raise AtagError(f"tag {index}: ATAG_CORE may appear only first")
        code, data = _encode_tag(tag, index)
        out += _TAG.build({"size": 2 + len(data) // 4, "tag": code, "data": data})
    out += _HEADER.build({"size": 0, "tag": ATAG_NONE})
    if len(out) > MAX_LIST_BYTES:
        raise AtagError(f"the list is {len(out)} bytes, more than the {MAX_LIST_BYTES} this tool allows")
    return bytes(out)


def _encode_tag(tag: Atag, index: int) -> tuple[int, bytes]:
    try:
        if isinstance(tag, AtagCore):
            if tag.short:
                return ATAG_CORE, b""
            return ATAG_CORE, bytes(_CORE.build({"flags": tag.flags, "pagesize": tag.pagesize, "rootdev": tag.rootdev}))
        if isinstance(tag, AtagMem):
            if tag.size <= 0:
                raise AtagError(f"tag {index}: memory bank at 0x{tag.start:x} has size {tag.size}")
            if tag.wide:
                return ATAG_MEM64, bytes(_MEM64.build({"size": tag.size, "start": tag.start}))
            if tag.start + tag.size > 1 << 32:
                raise AtagError(
                    f"tag {index}: memory bank 0x{tag.start:x}+0x{tag.size:x} reaches past 4 GiB",
                    hint="use ATAG_MEM64 (wide=True), which only LPAE kernels read",
                )
            return ATAG_MEM, bytes(_MEM.build({"size": tag.size, "start": tag.start}))
        if isinstance(tag, AtagInitrd2):
            if tag.start + tag.size > 1 << 32:
                raise AtagError(f"tag {index}: initrd 0x{tag.start:x}+0x{tag.size:x} reaches past 4 GiB")
            return ATAG_INITRD2, bytes(_INITRD2.build({"start": tag.start, "size": tag.size}))
        if isinstance(tag, AtagCmdline):
            raw = tag.text.encode("utf-8")
            if b"\0" in raw:
                raise AtagError(f"tag {index}: the command line contains a NUL byte")
            if len(raw) + 1 > COMMAND_LINE_SIZE:
                raise AtagError(
                    f"tag {index}: the command line is {len(raw)} bytes; the kernel keeps only {COMMAND_LINE_SIZE - 1}",
                )
            raw += b"\0"
            return ATAG_CMDLINE, raw + b"\0" * (-len(raw) % 4)
        if tag.tag in (ATAG_NONE, ATAG_CORE):
            raise AtagError(f"tag {index}: raw tag 0x{tag.tag:08x} is reserved")
        if len(tag.data) % 4:
            raise AtagError(f"tag {index}: raw tag 0x{tag.tag:08x} has {len(tag.data)} data bytes, not whole words")
        if not 0 <= tag.tag <= 0xFFFFFFFF:
            raise AtagError(f"tag {index}: tag value {tag.tag:#x} does not fit in 32 bits")
        return tag.tag, bytes(tag.data)
    except ConstructError:
        raise AtagError(f"tag {index}: a value of {tag} does not fit in its field") from None


def parse(blob: bytes, *, source: str = "") -> list[Atag]:
    """Parse an ATAG list (bytes after ATAG_NONE are ignored, as the kernel does)."""
    source = source or "<atags>"
    data = bytes(blob[:MAX_LIST_BYTES])
    tags: list[Atag] = []
    pos = 0
    while True:
        if pos + 8 > len(data):
            if pos >= MAX_LIST_BYTES:
                raise AtagError(f"no ATAG_NONE within the first {MAX_LIST_BYTES} bytes", offset=pos, source=source)
            raise AtagError("truncated: the list ends before ATAG_NONE", offset=pos, source=source)
        head: Any = _HEADER.parse(data[pos : pos + 8])
        if head.size == 0:
            if head.tag != ATAG_NONE:
                raise AtagError(f"tag 0x{head.tag:08x} has size 0; only ATAG_NONE may", offset=pos, source=source)
            if not tags:
                raise AtagError("the list is empty: ATAG_NONE comes first", offset=pos, source=source)
            return tags
        if head.size < 2:
            raise AtagError(f"tag 0x{head.tag:08x} has size {head.size} words, less than its own header", offset=pos, source=source)
        end = pos + 4 * head.size
        if end > len(data):
            raise AtagError(
                f"tag 0x{head.tag:08x} of {head.size} words runs past the end of the data (0x{len(data):x})",
                offset=pos,
                source=source,
            )
        body = data[pos + 8 : end]
        if not tags and head.tag != ATAG_CORE:
            raise AtagError(f"the list starts with tag 0x{head.tag:08x}, not ATAG_CORE", offset=pos, source=source)
        tags.append(_decode_tag(head.tag, body, pos, source, first=not tags))
        pos = end


def _decode_tag(code: int, body: bytes, pos: int, source: str, *, first: bool) -> Atag:
    def expect(words: tuple[int, ...], name: str) -> None:
        if len(body) // 4 not in words:
            wanted = " or ".join(str(w + 2) for w in words)
            raise AtagError(f"{name} has size {len(body) // 4 + 2} words, expected {wanted}", offset=pos, source=source)

    if code == ATAG_CORE:
        if not first:
            raise AtagError("a second ATAG_CORE", offset=pos, source=source)
        expect((0, 3), "ATAG_CORE")
        if not body:
            return AtagCore(short=True)
        c: Any = _CORE.parse(body)
        return AtagCore(int(c.flags), int(c.pagesize), int(c.rootdev))
    if code == ATAG_MEM:
        expect((2,), "ATAG_MEM")
        m: Any = _MEM.parse(body)
        return AtagMem(int(m.start), int(m.size))
    if code == ATAG_MEM64:
        expect((4,), "ATAG_MEM64")
        m64: Any = _MEM64.parse(body)
        return AtagMem(int(m64.start), int(m64.size), wide=True)
    if code == ATAG_INITRD2:
        expect((2,), "ATAG_INITRD2")
        i: Any = _INITRD2.parse(body)
        return AtagInitrd2(int(i.start), int(i.size))
    if code == ATAG_CMDLINE:
        nul = body.find(b"\0")
        if nul < 0:
            raise AtagError("ATAG_CMDLINE is not NUL-terminated within its size", offset=pos, source=source)
        try:
            return AtagCmdline(body[:nul].decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise AtagError(f"ATAG_CMDLINE is not UTF-8 text (byte {exc.start} of the line)", offset=pos + 8, source=source) from None
    return AtagOther(code, body)
