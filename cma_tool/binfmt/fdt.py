"""Flattened Device Tree (DTB) reader, writer and the edits cma-tool makes.

The layouts (header, memory reservation entries, structure block tokens) are
construct declarations. The walk over the structure block is a Python loop
around them rather than one ``RepeatUntil``: every error has to name the byte
offset of the token that broke, and nesting has to be checked token by token.

Output is laid out the way dtc lays it out (header, reservations, structure,
strings, no padding), version 17, last compatible version 16, so an
unmodified tree compiled by dtc encodes back to the same bytes.
"""

from __future__ import annotations

import io
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from construct import (
    Aligned,
    Bytes,
    ConstructError,
    GreedyBytes,
    If,
    Int32ub,
    Int64ub,
    NullTerminated,
    Struct,
    this,
)

from cma_tool.binfmt.blob_error import BlobError
from cma_tool.sizes import format_size


class FdtError(BlobError):
    """A DTB is malformed, or an edit cannot be applied to it."""

    format_name = "dtb"


FDT_MAGIC = 0xD00DFEED
FDT_BEGIN_NODE = 0x1
FDT_END_NODE = 0x2
FDT_PROP = 0x3
FDT_NOP = 0x4
FDT_END = 0x9
VERSION = 17
LAST_COMP_VERSION = 16

_HEADER_V16_SIZE = 36
_HEADER_SIZE = 40
# Real trees nest about ten deep; the limit keeps a hostile blob from
# exhausting Python's recursion when the tree is later encoded or shown.
MAX_DEPTH = 64

_HEADER = Struct(
    "magic" / Int32ub,
    "totalsize" / Int32ub,
    "off_dt_struct" / Int32ub,
    "off_dt_strings" / Int32ub,
    "off_mem_rsvmap" / Int32ub,
    "version" / Int32ub,
    "last_comp_version" / Int32ub,
    "boot_cpuid_phys" / Int32ub,
    "size_dt_strings" / Int32ub,
    "size_dt_struct" / If(this.version >= 17, Int32ub),
)
_RESERVATION = Struct("address" / Int64ub, "size" / Int64ub)
_TOKEN = Int32ub
_NODE_NAME = Aligned(4, NullTerminated(GreedyBytes))
_PROP_HEAD = Struct("len" / Int32ub, "nameoff" / Int32ub)
_PROP = Struct("len" / Int32ub, "nameoff" / Int32ub, "value" / Aligned(4, Bytes(this.len)))

_TOKEN_NAMES = {
    FDT_BEGIN_NODE: "FDT_BEGIN_NODE",
    FDT_END_NODE: "FDT_END_NODE",
    FDT_PROP: "FDT_PROP",
    FDT_NOP: "FDT_NOP",
    FDT_END: "FDT_END",
}
_PRINTABLE = re.compile(rb"[\x20-\x7e]*")


# --------------------------------------------------------------------------
# The in-memory tree


@dataclass
class Node:
    """One device tree node: ordered properties (raw bytes) and ordered children."""

    name: str
    properties: dict[str, bytes] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)

    def child(self, name: str) -> Node | None:
        for node in self.children:
            if node.name == name:
                return node
        return None

    def ensure_child(self, name: str) -> Node:
        """The child called ``name``, appended empty if there is none."""
        found = self.child(name)
        if found is None:
            found = Node(name)
            self.children.append(found)
        return found

    def remove_child(self, name: str) -> Node | None:
        for index, node in enumerate(self.children):
            if node.name == name:
                return self.children.pop(index)
        return None

    def u32(self, prop: str) -> int | None:
        """A one-cell property's value, None when absent."""
        if prop not in self.properties:
            return None
        cells = decode_cells(self.properties[prop], what=prop)
        if len(cells) != 1:
            raise FdtError(f"property {prop} of node {self.name or '/'} holds {len(cells)} cells, expected 1")
        return cells[0]

    def string(self, prop: str) -> str | None:
        """A string property's value, None when absent."""
        if prop not in self.properties:
            return None
        return decode_string(self.properties[prop], what=prop)


@dataclass(frozen=True)
class MemReservation:
    """An entry of the DTB's memory reservation block (``/memreserve/`` in dts)."""

    address: int
    size: int


@dataclass
class DeviceTree:
    root: Node = field(default_factory=lambda: Node(""))
    reservations: list[MemReservation] = field(default_factory=list)
    boot_cpuid_phys: int = 0

    def find(self, path: str) -> Node | None:
        """The node at an absolute path such as ``/soc/mfc@f1700000``."""
        if not path.startswith("/"):
            return None
        node: Node | None = self.root
        for part in path.strip("/").split("/"):
            if not part:
                continue
            assert node is not None
            node = node.child(part)
            if node is None:
                return None
        return node

    def walk(self) -> Iterator[tuple[str, Node]]:
        """Every node with its path, parents before children, in tree order."""
        stack: list[tuple[str, Node]] = [("/", self.root)]
        while stack:
            path, node = stack.pop()
            yield path, node
            prefix = path.rstrip("/") + "/"
            stack.extend((prefix + c.name, c) for c in reversed(node.children))


# --------------------------------------------------------------------------
# Property value codecs


def decode_cells(value: bytes, *, what: str = "value") -> tuple[int, ...]:
    """Big-endian 32-bit cells."""
    if len(value) % 4:
        raise FdtError(f"{what} is {len(value)} bytes long, not a whole number of 32-bit cells")
    return tuple(int.from_bytes(value[i : i + 4], "big") for i in range(0, len(value), 4))


def encode_cells(*cells: int) -> bytes:
    for cell in cells:
        if not 0 <= cell <= 0xFFFFFFFF:
            raise FdtError(f"cell value {cell:#x} does not fit in 32 bits")
    return b"".join(c.to_bytes(4, "big") for c in cells)


def decode_string(value: bytes, *, what: str = "value") -> str:
    items = decode_strings(value, what=what)
    if len(items) != 1:
        raise FdtError(f"{what} holds {len(items)} strings, expected one")
    return items[0]


def encode_string(text: str) -> bytes:
    return encode_strings([text])


def decode_strings(value: bytes, *, what: str = "value") -> list[str]:
    """A string list (``"a", "b"`` in dts: each NUL-terminated)."""
    if not value.endswith(b"\0"):
        raise FdtError(f"{what} is not a NUL-terminated string list")
    try:
        return value[:-1].decode("utf-8").split("\0")
    except UnicodeDecodeError as exc:
        raise FdtError(f"{what} is not UTF-8 text (byte {exc.start})") from None


def encode_strings(texts: Sequence[str]) -> bytes:
    for text in texts:
        if "\0" in text:
            raise FdtError(f"string {text!r} contains a NUL byte")
    return b"".join(t.encode("utf-8") + b"\0" for t in texts)


def encode_number(value: int, cells: int) -> bytes:
    """``value`` as ``cells`` big-endian 32-bit cells (an address or a size)."""
    if cells < 1 or value < 0 or value >> (32 * cells):
        raise FdtError(f"{value:#x} does not fit in {cells} cell(s)")
    return value.to_bytes(4 * cells, "big")


def decode_ranges(value: bytes, address_cells: int, size_cells: int, *, what: str = "value") -> list[tuple[int, int]]:
    """(address, size) pairs such as ``reg`` or ``alloc-ranges``."""
    step = 4 * (address_cells + size_cells)
    if step == 0 or len(value) % step:
        raise FdtError(
            f"{what} is {len(value)} bytes long, not a whole number of <{address_cells} address + {size_cells} size> cell groups"
        )
    pairs = []
    for i in range(0, len(value), step):
        split = i + 4 * address_cells
        pairs.append((int.from_bytes(value[i:split], "big"), int.from_bytes(value[split : i + step], "big")))
    return pairs


def encode_ranges(ranges: Sequence[tuple[int, int]], address_cells: int, size_cells: int) -> bytes:
    return b"".join(encode_number(a, address_cells) + encode_number(s, size_cells) for a, s in ranges)


# --------------------------------------------------------------------------
# Decoding


@dataclass
class _Reader:
    blob: bytes
    source: str

    def fail(self, offset: int | None, what: str, hint: str = "") -> FdtError:
        return FdtError(what, offset=offset, source=self.source, hint=hint)


def decode(blob: bytes, *, source: str = "") -> DeviceTree:
    """Parse a DTB. Raises FdtError, naming the byte offset, for anything malformed."""
    r = _Reader(bytes(blob), source or "<dtb>")
    data = r.blob
    if len(data) < 4:
        raise r.fail(0, f"truncated: {len(data)} bytes, a DTB header alone is {_HEADER_SIZE}")
    magic = int(_TOKEN.parse(data[:4]))
    if magic != FDT_MAGIC:
        raise r.fail(
            0, f"not a DTB: magic is 0x{magic:08x}, expected 0x{FDT_MAGIC:08x}", "is this a zImage, a uImage or a dts source?"
        )
    if len(data) < _HEADER_V16_SIZE:
        raise r.fail(len(data), f"truncated: the blob ends inside the {_HEADER_SIZE}-byte header")
    version = int.from_bytes(data[20:24], "big")
    if version < 16:
        raise r.fail(
            20, f"DTB version {version} predates version 16, the oldest this reader supports", "recompile the source with dtc"
        )
    header_size = _HEADER_SIZE if version >= 17 else _HEADER_V16_SIZE
    if len(data) < header_size:
        raise r.fail(len(data), f"truncated: the blob ends inside the {header_size}-byte header")
    h: Any = _HEADER.parse(data[:header_size])
    if h.last_comp_version > VERSION:
        raise r.fail(24, f"last compatible version {h.last_comp_version} is newer than {VERSION}, the newest this reader knows")
    if h.last_comp_version > h.version:
        raise r.fail(24, f"last compatible version {h.last_comp_version} is greater than the version {h.version}")
    total = int(h.totalsize)
    if total < header_size:
        raise r.fail(4, f"total size {total} is smaller than the {header_size}-byte header")
    if total > len(data):
        raise r.fail(4, f"truncated: the header's total size is {total} (0x{total:x}) bytes but the blob has {len(data)}")

    def check_start(field_offset: int, name: str, start: int, align: int) -> None:
        if not header_size <= start <= total:
            raise r.fail(
                field_offset,
                f"{name} offset 0x{start:x} lies outside the blob (header ends at 0x{header_size:x}, blob at 0x{total:x})",
            )
        if start % align:
            raise r.fail(field_offset, f"{name} offset 0x{start:x} is not {align}-byte aligned")

    check_start(16, "memory reservation block", h.off_mem_rsvmap, 8)
    check_start(8, "structure block", h.off_dt_struct, 4)
    check_start(12, "strings block", h.off_dt_strings, 1)
    strings_end = h.off_dt_strings + h.size_dt_strings
    if strings_end > total:
        raise r.fail(32, f"strings block 0x{h.off_dt_strings:x}+0x{h.size_dt_strings:x} runs past the end of the blob (0x{total:x})")
    starts = sorted({h.off_mem_rsvmap, h.off_dt_struct, h.off_dt_strings, total})

    def next_start(after: int) -> int:
        return min(s for s in starts if s > after) if after < total else total

    if h.size_dt_struct is not None:
        struct_end = h.off_dt_struct + h.size_dt_struct
        if struct_end > total:
            raise r.fail(
                36, f"structure block 0x{h.off_dt_struct:x}+0x{h.size_dt_struct:x} runs past the end of the blob (0x{total:x})"
            )
    else:
        struct_end = next_start(h.off_dt_struct)

    reservations, rsv_end = _decode_reservations(r, h.off_mem_rsvmap, next_start(h.off_mem_rsvmap))
    blocks = [
        ("memory reservation block", h.off_mem_rsvmap, rsv_end, 16),
        ("structure block", h.off_dt_struct, struct_end, 8),
        ("strings block", h.off_dt_strings, strings_end, 12),
    ]
    for i, (name_a, start_a, end_a, _) in enumerate(blocks):
        for name_b, start_b, end_b, field_b in blocks[i + 1 :]:
            if start_a < end_b and start_b < end_a:
                raise r.fail(field_b, f"{name_b} 0x{start_b:x}..0x{end_b:x} overlaps the {name_a} 0x{start_a:x}..0x{end_a:x}")
    strings = data[h.off_dt_strings : strings_end]
    root = _decode_structure(r, h.off_dt_struct, struct_end, strings, h.off_dt_strings)
    return DeviceTree(root=root, reservations=reservations, boot_cpuid_phys=int(h.boot_cpuid_phys))


def _decode_reservations(r: _Reader, start: int, limit: int) -> tuple[list[MemReservation], int]:
    entries: list[MemReservation] = []
    pos = start
    while True:
        if pos + 16 > limit:
            raise r.fail(pos, f"memory reservation block starting at 0x{start:x} has no terminating entry (size 0) before 0x{limit:x}")
        entry: Any = _RESERVATION.parse(r.blob[pos : pos + 16])
        pos += 16
        # The spec ends the list with (0, 0); dtc and libfdt stop at the
        # first size 0 whatever its address, and so do we, to read what they read.
        if entry.size == 0:
            return entries, pos
        entries.append(MemReservation(int(entry.address), int(entry.size)))


def _decode_name(r: _Reader, raw: bytes, offset: int, what: str) -> str:
    if not _PRINTABLE.fullmatch(raw):
        bad = next(b for b in raw if not 0x20 <= b <= 0x7E)
        raise r.fail(offset, f"{what} contains byte 0x{bad:02x}, which is not printable ASCII")
    return raw.decode("ascii")


def _decode_structure(r: _Reader, start: int, end: int, strings: bytes, strings_at: int) -> Node:
    stream = io.BytesIO(r.blob[start:end])
    # (node, offset of its FDT_BEGIN_NODE, whether a child has been seen)
    stack: list[tuple[Node, int, bool]] = []
    root: Node | None = None
    while True:
        at = start + stream.tell()
        if at + 4 > end:
            if stack:
                raise r.fail(
                    stack[-1][1], f"node '{stack[-1][0].name or '/'}' opened here never closes: the structure block ends at 0x{end:x}"
                )
            raise r.fail(at, f"the structure block ends at 0x{end:x} without an FDT_END token")
        token = int(_TOKEN.parse_stream(stream))
        if root is None and token != FDT_BEGIN_NODE:
            # libfdt finds the root at structure offset 0 and nowhere else.
            raise r.fail(
                at, f"the structure block must start with the root's FDT_BEGIN_NODE, not {_TOKEN_NAMES.get(token, f'0x{token:08x}')}"
            )
        if token == FDT_NOP:
            continue
        if token == FDT_BEGIN_NODE:
            try:
                raw_name = bytes(_NODE_NAME.parse_stream(stream))
            except ConstructError:
                raise r.fail(
                    at + 4, "node name is not NUL-terminated (or its padding is cut off) before the end of the structure block"
                ) from None
            name = _decode_name(r, raw_name, at + 4, "node name")
            if root is not None and not stack:
                raise r.fail(at, f"a second top-level node '{name}' follows the root node")
            if not stack and name not in ("", "/"):
                raise r.fail(at + 4, f"the root node is named '{name}', expected an empty name")
            if stack:
                if not name or "/" in name:
                    raise r.fail(at + 4, f"node name '{name}' is empty or contains '/'")
                parent = stack[-1][0]
                if parent.child(name) is not None:
                    raise r.fail(at + 4, f"node '{parent.name or '/'}' has two children named '{name}'")
            if len(stack) >= MAX_DEPTH:
                raise r.fail(at, f"nodes nest deeper than {MAX_DEPTH} levels")
            node = Node("" if not stack else name)
            if stack:
                parent_node, parent_at, _ = stack[-1]
                parent_node.children.append(node)
                stack[-1] = (parent_node, parent_at, True)
            else:
                root = node
            stack.append((node, at, False))
        elif token == FDT_END_NODE:
            if not stack:
                raise r.fail(at, "FDT_END_NODE without an open node")
            stack.pop()
        elif token == FDT_PROP:
            remaining = end - at - 4
            if remaining < 8:
                raise r.fail(at, "FDT_PROP header runs past the end of the structure block")
            head: Any = _PROP_HEAD.parse(r.blob[at + 4 : at + 12])
            if head.len > remaining - 8:
                raise r.fail(
                    at + 4, f"property value length {head.len} (0x{head.len:x}) runs past the end of the structure block at 0x{end:x}"
                )
            try:
                prop: Any = _PROP.parse_stream(stream)
            except ConstructError:
                raise r.fail(at + 12, "property value padding runs past the end of the structure block") from None
            if not stack:
                raise r.fail(at, "property outside any node")
            if head.nameoff >= len(strings):
                raise r.fail(
                    at + 8, f"property name offset 0x{head.nameoff:x} lies outside the strings block (size 0x{len(strings):x})"
                )
            name_end = strings.find(b"\0", head.nameoff)
            if name_end < 0:
                raise r.fail(strings_at + head.nameoff, "property name is not NUL-terminated before the end of the strings block")
            prop_name = _decode_name(r, strings[head.nameoff : name_end], strings_at + head.nameoff, "property name")
            if not prop_name:
                raise r.fail(at + 8, "property has an empty name")
            node, _, seen_child = stack[-1]
            if seen_child:
                raise r.fail(
                    at, f"property '{prop_name}' of node '{node.name or '/'}' follows a child node", "properties must precede subnodes"
                )
            if prop_name in node.properties:
                raise r.fail(at, f"node '{node.name or '/'}' has two properties named '{prop_name}'")
            node.properties[prop_name] = bytes(prop.value)
        elif token == FDT_END:
            if stack:
                raise r.fail(stack[-1][1], f"node '{stack[-1][0].name or '/'}' opened here never closes (FDT_END at 0x{at:x})")
            assert root is not None  # the first token was checked to open the root
            return root
        else:
            raise r.fail(at, f"unknown token 0x{token:08x} in the structure block (misaligned or corrupt)")


# --------------------------------------------------------------------------
# Encoding


def encode(tree: DeviceTree) -> bytes:
    """Serialise a tree as a version 17 DTB laid out as dtc does."""
    strings = bytearray()
    struct = bytearray()

    def name_offset(name: str) -> int:
        # Like dtc and libfdt, reuse any existing string that ends with this
        # name ("size" shares the tail of "#size-cells").
        # A hit inside an entry is always a suffix of it: entries end in NUL
        # and names hold none.
        raw = name.encode("ascii") + b"\0"
        found = strings.find(raw)
        if found >= 0:
            return found
        strings.extend(raw)
        return len(strings) - len(raw)

    def emit(node: Node, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise FdtError(f"nodes nest deeper than {MAX_DEPTH} levels")
        _check_name(node.name, "node name", allow_empty=depth == 0)
        struct.extend(_TOKEN.build(FDT_BEGIN_NODE))
        struct.extend(_NODE_NAME.build(node.name.encode("ascii")))
        for prop_name, value in node.properties.items():
            _check_name(prop_name, "property name", allow_empty=False)
            struct.extend(_TOKEN.build(FDT_PROP))
            struct.extend(_PROP.build({"len": len(value), "nameoff": name_offset(prop_name), "value": value}))
        seen: set[str] = set()
        for child in node.children:
            if child.name in seen:
                raise FdtError(f"node '{node.name or '/'}' has two children named '{child.name}'")
            seen.add(child.name)
            emit(child, depth + 1)
        struct.extend(_TOKEN.build(FDT_END_NODE))

    emit(tree.root, 0)
    struct.extend(_TOKEN.build(FDT_END))
    for m in tree.reservations:
        if m.size == 0:
            raise FdtError(f"memory reservation at 0x{m.address:x} has size 0, which would end the list early")
    rsv: bytes = b"".join(
        _RESERVATION.build({"address": _u64(m.address, "reservation address"), "size": _u64(m.size, "reservation size")})
        for m in tree.reservations
    ) + _RESERVATION.build({"address": 0, "size": 0})
    off_rsv = _HEADER_SIZE
    off_struct = off_rsv + len(rsv)
    off_strings = off_struct + len(struct)
    total = off_strings + len(strings)
    header = _HEADER.build(
        {
            "magic": FDT_MAGIC,
            "totalsize": total,
            "off_dt_struct": off_struct,
            "off_dt_strings": off_strings,
            "off_mem_rsvmap": off_rsv,
            "version": VERSION,
            "last_comp_version": LAST_COMP_VERSION,
            "boot_cpuid_phys": tree.boot_cpuid_phys,
            "size_dt_strings": len(strings),
            "size_dt_struct": len(struct),
        }
    )
    return bytes(header) + rsv + bytes(struct) + bytes(strings)


def _u64(value: int, what: str) -> int:
    if not 0 <= value < 1 << 64:
        raise FdtError(f"{what} {value:#x} does not fit in 64 bits")
    return value


def _check_name(name: str, what: str, *, allow_empty: bool) -> None:
    if not name and not allow_empty:
        raise FdtError(f"{what} is empty")
    if not _PRINTABLE.fullmatch(name.encode("utf-8")) or (what == "node name" and "/" in name):
        raise FdtError(f"{what} {name!r} must be printable ASCII without '/'")


# --------------------------------------------------------------------------
# A dts-like dump


_RANGE_PROPS = ("reg", "alloc-ranges")
_SIZE_PROPS = ("size", "alignment")


def show(tree: DeviceTree) -> str:
    """The tree as dts text (dtc compiles it back), with sizes and address ranges as comments.

    Labels come back from /__symbols__ when the DTB was built with ``dtc -@``.
    """
    lines = ["/dts-v1/;", ""]
    for m in tree.reservations:
        lines.append(f"/memreserve/ 0x{m.address:016x} 0x{m.size:016x};")
    if tree.reservations:
        lines.append("")
    show_node = _NodePrinter(lines, _cells_of(tree.root), _labels(tree))
    show_node(tree.root, "/", None, 0)
    return "\n".join(lines) + "\n"


_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _labels(tree: DeviceTree) -> dict[str, list[str]]:
    symbols = tree.root.child("__symbols__")
    by_path: dict[str, list[str]] = {}
    if symbols is None:
        return by_path
    for label, value in symbols.properties.items():
        try:
            path = decode_string(value)
        except FdtError:
            continue
        if _LABEL.fullmatch(label) and path.startswith("/"):
            by_path.setdefault(path.rstrip("/") or "/", []).append(label)
    return by_path


def _cells_of(node: Node) -> tuple[int, int] | None:
    """(#address-cells, #size-cells) a node gives its children, None when unset or odd."""
    try:
        ac, sc = node.u32("#address-cells"), node.u32("#size-cells")
    except FdtError:
        return None
    if ac is None or sc is None or not 1 <= ac <= 4 or not 0 <= sc <= 4:
        return None
    return ac, sc


@dataclass
class _NodePrinter:
    lines: list[str]
    root_cells: tuple[int, int] | None
    labels: dict[str, list[str]]

    def __call__(self, node: Node, path: str, parent_cells: tuple[int, int] | None, depth: int) -> None:
        indent = "\t" * depth
        labels = "".join(f"{label}: " for label in self.labels.get(path, []))
        self.lines.append(f"{indent}{labels}{node.name or '/'} {{")
        for name, value in node.properties.items():
            text = f"{indent}\t{name}" + (f" = {_format_value(value)};" if value else ";")
            note = _annotation(name, value, parent_cells, self.root_cells)
            self.lines.append(text + (f" /* {note} */" if note else ""))
        own_cells = _cells_of(node)
        for child in node.children:
            self(child, path.rstrip("/") + "/" + child.name, own_cells, depth + 1)
        self.lines.append(f"{indent}}};")


def _format_value(value: bytes) -> str:
    if value.endswith(b"\0") and len(value) > 1:
        parts = value[:-1].split(b"\0")
        if all(parts) and all(_PRINTABLE.fullmatch(p) for p in parts):
            return ", ".join('"' + p.decode("ascii").replace("\\", "\\\\").replace('"', '\\"') + '"' for p in parts)
    if len(value) % 4 == 0:
        return "<" + " ".join(f"0x{c:x}" for c in decode_cells(value)) + ">"
    return "[" + " ".join(f"{b:02x}" for b in value) + "]"


def _annotation(name: str, value: bytes, parent_cells: tuple[int, int] | None, root_cells: tuple[int, int] | None) -> str:
    try:
        if name in _RANGE_PROPS and parent_cells and parent_cells[1]:
            return ", ".join(_span(a, s) for a, s in decode_ranges(value, *parent_cells))
        if name == "linux,usable-memory-range" and root_cells:
            return ", ".join(_span(a, s) for a, s in decode_ranges(value, *root_cells))
        if name in _SIZE_PROPS and parent_cells and len(value) == 4 * parent_cells[1]:
            return format_size(int.from_bytes(value, "big"))
    except FdtError:
        return ""
    return ""


def _span(address: int, size: int) -> str:
    last = f"0x{address + size - 1:x}" if size else "(empty)"
    return f"0x{address:x}..{last} {format_size(size)}"


# --------------------------------------------------------------------------
# Edits cma-tool makes


@dataclass(frozen=True)
class MemoryBank:
    """A range of physical memory: a /memory bank, an alloc-range, a usable range."""

    base: int
    size: int


@dataclass(frozen=True)
class ReservedRegion:
    """A /reserved-memory child as the kernel's of_reserved_mem reads it.

    With ``base`` the node is static (``reg``) and named ``name@base``;
    without, it is dynamic (``size``, optional ``alignment`` and
    ``alloc-ranges``) and named ``name``. A name already holding '@' is kept.
    ``consumers`` are node paths, /aliases names or labels (from
    /__symbols__) whose ``memory-region`` gets this region's phandle, in the
    order the regions are given.
    """

    name: str
    size: int
    base: int | None = None
    alignment: int | None = None
    alloc_ranges: tuple[MemoryBank, ...] = ()
    compatible: str | None = "shared-dma-pool"
    reusable: bool = True
    no_map: bool = False
    default: bool = False
    label: str | None = None
    consumers: tuple[str, ...] = ()

    @property
    def node_name(self) -> str:
        if self.base is None or "@" in self.name:
            return self.name
        return f"{self.name}@{self.base:x}"


def root_cells(tree: DeviceTree) -> tuple[int, int]:
    """The root's (#address-cells, #size-cells), which /memory and /reserved-memory must use."""
    try:
        ac, sc = tree.root.u32("#address-cells"), tree.root.u32("#size-cells")
    except FdtError as exc:
        raise FdtError(f"the root node's cell counts are malformed: {exc.what}") from None
    if ac is None or sc is None:
        raise FdtError(
            "the root node has no #address-cells/#size-cells",
            hint="the kernel and the spec disagree on their defaults: add both to the board's dts",
        )
    if not 1 <= ac <= 2 or not 1 <= sc <= 2:
        raise FdtError(f"the root node's #address-cells = {ac}, #size-cells = {sc}; expected 1 or 2 each")
    return ac, sc


def set_memory(tree: DeviceTree, banks: Sequence[MemoryBank]) -> None:
    """Replace every /memory node (device_type = "memory") with one node holding ``banks``."""
    if not banks:
        raise FdtError("no memory banks given")
    ac, sc = root_cells(tree)
    _check_banks(banks, "memory bank")
    root = tree.root
    position = None
    kept: list[Node] = []
    for child in root.children:
        if child.properties.get("device_type") == b"memory\0":
            position = len(kept) if position is None else position
        else:
            kept.append(child)
    name = f"memory@{banks[0].base:x}"
    if any(c.name == name for c in kept):
        raise FdtError(f"the root already has a node named '{name}' that is not a memory node")
    node = Node(name, {"device_type": encode_string("memory"), "reg": encode_ranges([(b.base, b.size) for b in banks], ac, sc)})
    kept.insert(len(kept) if position is None else position, node)
    root.children = kept


def set_chosen(
    tree: DeviceTree,
    *,
    bootargs: str | None = None,
    initrd: tuple[int, int] | None = None,
    usable_memory: Sequence[MemoryBank] | None = None,
    rng_seed: bytes | None = None,
) -> None:
    """Set /chosen properties; ``initrd`` is (start, end) with ``end`` exclusive, as Linux reads it."""
    chosen = tree.root.ensure_child("chosen")
    if bootargs is not None:
        chosen.properties["bootargs"] = encode_string(bootargs)
    if initrd is not None or usable_memory is not None:
        ac, sc = root_cells(tree)
        if initrd is not None:
            start, end = initrd
            if not 0 <= start < end:
                raise FdtError(
                    f"initrd range 0x{start:x}..0x{end:x} is empty or inverted", hint="pass (start, end) with end exclusive"
                )
            # U-Boot writes these with the root's #address-cells; Linux reads any width.
            chosen.properties["linux,initrd-start"] = encode_number(start, ac)
            chosen.properties["linux,initrd-end"] = encode_number(end, ac)
        if usable_memory is not None:
            if not usable_memory:
                raise FdtError("linux,usable-memory-range needs at least one range")
            _check_banks(usable_memory, "usable memory range")
            chosen.properties["linux,usable-memory-range"] = encode_ranges([(b.base, b.size) for b in usable_memory], ac, sc)
    if rng_seed is not None:
        if not rng_seed:
            raise FdtError("rng-seed is empty")
        chosen.properties["rng-seed"] = bytes(rng_seed)


def set_reserved(tree: DeviceTree, regions: Sequence[ReservedRegion], *, clear: bool = False) -> None:
    """Create or replace /reserved-memory children (by node name); ``clear`` drops all others first.

    A replaced node keeps its phandle, so existing ``memory-region``
    references stay valid. A region that is the default area
    (``linux,cma-default``) takes that property away from every other child.
    """
    ac, sc = root_cells(tree)
    names = [r.node_name for r in regions]
    for region in regions:
        _check_region(region, ac, sc)
    if len(set(names)) != len(names):
        raise FdtError(f"two reserved regions would share a node name: {min(n for n in names if names.count(n) > 1)}")
    if sum(r.default for r in regions) > 1:
        raise FdtError("more than one reserved region is marked as the default CMA area")
    statics = sorted((r for r in regions if r.base is not None), key=lambda r: (r.base or 0, r.size))
    for low, high in zip(statics, statics[1:], strict=False):
        # The kernel refuses overlapping reg nodes ("OVERLAP DETECTED") and dtc warns on a
        # repeated unit address: never write such a tree.
        if (high.base or 0) < (low.base or 0) + low.size:
            raise FdtError(f"reserved regions {low.node_name} and {high.node_name} overlap")
    if not regions and tree.root.child("reserved-memory") is None:
        # Nothing to add, nothing to clear: an empty node is not nothing (6.12 logs its absence).
        return
    parent = tree.root.ensure_child("reserved-memory")
    removed_phandles: set[int] = set()
    if clear:
        for child in parent.children:
            if child.name not in names:
                removed_phandles |= _phandles_of(child)
                _forget_symbol(tree, "/reserved-memory/" + child.name)
        parent.children = [c for c in parent.children if c.name in names]
    others = [c.name for c in parent.children if c.name not in names]
    if others and _cells_of(parent) not in (None, (ac, sc)):
        raise FdtError(
            f"/reserved-memory uses cells {_cells_of(parent)} but the root uses ({ac}, {sc}), and {others[0]} would keep the old ones",
            hint="the kernel ignores /reserved-memory unless its cells match the root's: "
            "fix the board's dts, or clear the other regions",
        )
    for child in parent.children:
        # A node the tree keeps is as much a reservation as ours: the same overlap rule holds.
        if child.name in names or "reg" not in child.properties:
            continue
        for base, size in decode_ranges(child.properties["reg"], ac, sc, what=f"/reserved-memory/{child.name}/reg"):
            for region in statics:
                if region.base is not None and region.base < base + size and base < region.base + region.size:
                    raise FdtError(f"reserved region {region.node_name} overlaps {child.name}, which the tree "
                                   "already has", hint="move the region, or name the existing node to replace it")
    parent.properties["#address-cells"] = encode_cells(ac)
    parent.properties["#size-cells"] = encode_cells(sc)
    parent.properties["ranges"] = b""
    if any(r.default for r in regions):
        for child in parent.children:
            child.properties.pop("linux,cma-default", None)

    next_phandle = max(_all_phandles(tree), default=0) + 1
    region_phandles: dict[str, int] = {}
    for region in regions:
        old = parent.child(region.node_name)
        node = _region_node(region, ac, sc)
        if old is not None:
            for key in ("phandle", "linux,phandle"):
                if key in old.properties:
                    node.properties[key] = old.properties[key]
            node.children = old.children
            parent.children[parent.children.index(old)] = node
        else:
            parent.children.append(node)
        wants_phandle = bool(region.consumers or region.label)
        if wants_phandle and "phandle" not in node.properties:
            node.properties["phandle"] = encode_cells(next_phandle)
            next_phandle += 1
        if "phandle" in node.properties:
            phandle = node.u32("phandle")
            assert phandle is not None
            region_phandles[region.node_name] = phandle
        if region.label:
            _set_symbol(tree, region.label, "/reserved-memory/" + region.node_name)

    consumer_lists: dict[int, tuple[Node, list[int]]] = {}
    for region in regions:
        for ref in region.consumers:
            consumer = resolve(tree, ref)
            entry = consumer_lists.setdefault(id(consumer), (consumer, []))
            entry[1].append(region_phandles[region.node_name])
    for consumer, phandles in consumer_lists.values():
        consumer.properties["memory-region"] = encode_cells(*phandles)
    if removed_phandles:
        _check_no_dangling(tree, removed_phandles)


def resolve(tree: DeviceTree, ref: str) -> Node:
    """A node by absolute path, /aliases name or label (the label needs a DTB built with ``dtc -@``)."""
    path: str | None = ref if ref.startswith("/") else None
    if path is None:
        for table in ("aliases", "__symbols__"):
            holder = tree.root.child(table)
            if holder is not None and ref in holder.properties:
                path = decode_string(holder.properties[ref], what=f"/{table}/{ref}")
                break
    node = tree.find(path) if path else None
    if node is None:
        raise FdtError(
            f"consumer '{ref}' is not a node of this tree",
            hint="give an absolute path such as /soc/mfc@f1700000, an alias, or a label of a DTB compiled with dtc -@",
        )
    return node


def patch(
    blob: bytes,
    *,
    banks: Sequence[MemoryBank] | None = None,
    reserved: Sequence[ReservedRegion] | None = None,
    clear_reserved: bool = False,
    bootargs: str | None = None,
    initrd: tuple[int, int] | None = None,
    usable_memory: Sequence[MemoryBank] | None = None,
    rng_seed: bytes | None = None,
    source: str = "",
) -> bytes:
    """Decode ``blob``, apply the given edits (None leaves a part alone), encode again."""
    tree = decode(blob, source=source)
    try:
        if banks is not None:
            set_memory(tree, banks)
        if reserved is not None:
            set_reserved(tree, reserved, clear=clear_reserved)
        set_chosen(tree, bootargs=bootargs, initrd=initrd, usable_memory=usable_memory, rng_seed=rng_seed)
    except FdtError as exc:
        if exc.offset is None and source and exc.source == "<dtb>":
            raise FdtError(exc.what, source=source, hint=exc.hint) from None
        raise
    return encode(tree)


def _check_banks(banks: Sequence[MemoryBank], what: str) -> None:
    ordered = sorted(banks, key=lambda b: b.base)
    for bank in ordered:
        if bank.base < 0 or bank.size <= 0:
            raise FdtError(f"{what} at 0x{bank.base:x} has size {bank.size}; sizes must be positive")
    for a, b in itertools.pairwise(ordered):
        if a.base + a.size > b.base:
            raise FdtError(f"{what}s 0x{a.base:x}+{format_size(a.size)} and 0x{b.base:x}+{format_size(b.size)} overlap")


def _check_region(region: ReservedRegion, ac: int, sc: int) -> None:
    where = f"reserved region '{region.node_name}'"
    if not region.name or "/" in region.name:
        raise FdtError(f"{where}: a node name must be non-empty and hold no '/'")
    if region.size <= 0:
        raise FdtError(f"{where}: size must be positive")
    if region.reusable and region.no_map:
        raise FdtError(f"{where}: reusable and no-map exclude each other", hint="a CMA pool is reusable, without no-map")
    if region.base is not None and (region.alignment is not None or region.alloc_ranges):
        raise FdtError(f"{where}: alignment and alloc-ranges apply only to a region without a fixed base")
    if region.alignment is not None and (region.alignment <= 0 or region.alignment & (region.alignment - 1)):
        raise FdtError(f"{where}: alignment {region.alignment:#x} is not a power of two")
    if region.default and not region.reusable:
        raise FdtError(f"{where}: linux,cma-default needs a reusable shared-dma-pool")
    _check_banks(region.alloc_ranges, "alloc-range")
    try:
        if region.base is not None:
            encode_number(region.base, ac)
            encode_number(region.base + region.size - 1, ac)
        encode_number(region.size, sc)
        if region.alignment is not None:
            encode_number(region.alignment, sc)
    except FdtError as exc:
        raise FdtError(f"{where}: {exc.what} (the root uses {ac} address and {sc} size cells)") from None


def _region_node(region: ReservedRegion, ac: int, sc: int) -> Node:
    props: dict[str, bytes] = {}
    if region.compatible is not None:
        props["compatible"] = encode_string(region.compatible)
    if region.reusable:
        props["reusable"] = b""
    if region.no_map:
        props["no-map"] = b""
    if region.base is not None:
        props["reg"] = encode_ranges([(region.base, region.size)], ac, sc)
    else:
        props["size"] = encode_number(region.size, sc)
        if region.alignment is not None:
            props["alignment"] = encode_number(region.alignment, sc)
        if region.alloc_ranges:
            props["alloc-ranges"] = encode_ranges([(b.base, b.size) for b in region.alloc_ranges], ac, sc)
    if region.default:
        props["linux,cma-default"] = b""
    return Node(region.node_name, props)


def _phandles_of(node: Node) -> set[int]:
    found = set()
    stack = [node]
    while stack:
        current = stack.pop()
        for key in ("phandle", "linux,phandle"):
            value = current.properties.get(key)
            if value is not None and len(value) == 4:
                found.add(int.from_bytes(value, "big"))
        stack.extend(current.children)
    return found


def _all_phandles(tree: DeviceTree) -> set[int]:
    return _phandles_of(tree.root) - {0xFFFFFFFF}


def _check_no_dangling(tree: DeviceTree, removed: set[int]) -> None:
    for path, node in tree.walk():
        value = node.properties.get("memory-region")
        if value is None or len(value) % 4:
            continue
        gone = sorted(set(decode_cells(value)) & removed - _all_phandles(tree))
        if gone:
            raise FdtError(
                f"{path}: memory-region still refers to removed reserved region(s) with phandle {', '.join(hex(p) for p in gone)}",
                hint="list this node as a consumer of one of the new regions, or do not clear the old ones",
            )


def _set_symbol(tree: DeviceTree, label: str, path: str) -> None:
    symbols = tree.root.ensure_child("__symbols__")
    symbols.properties[label] = encode_string(path)


def _forget_symbol(tree: DeviceTree, path: str) -> None:
    """Drop the labels of a removed node, so /__symbols__ names no missing node."""
    symbols = tree.root.child("__symbols__")
    if symbols is None:
        return
    target = encode_string(path)
    for label, value in list(symbols.properties.items()):
        if value == target:
            del symbols.properties[label]
