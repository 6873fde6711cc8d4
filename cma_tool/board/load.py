"""Read a board file (and what it includes) into a :class:`Board`, collecting every error.

The format is the device tree written as YAML (see docs/board-format.md):
an SoC file is included by a board file the way a .dts includes a .dtsi, and
the including file overrides: mappings merge key by key, anything else
replaces, and ``~`` (null) deletes what the included file said, like
``/delete-node/``.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cma_tool.board.types import (
    Bank,
    Board,
    Boot,
    CaptureNeed,
    Console,
    Device,
    Emulation,
    FixedBuffer,
    Kernel,
    LabPlace,
    Network,
    Power,
    Region,
    SshTarget,
)
from cma_tool.board.yamlpos import Where, YamlLoadError, YNode, load_file
from cma_tool.errors import DiagnosticSink
from cma_tool.model.lowmem import ArmLayout
from cma_tool.model.profiles import ARCHITECTURES, PROFILES, KernelProfile, kernel_names, kernel_profile, profile_with
from cma_tool.sizes import SizeError, bare_bytes_hint, format_size, is_bare_decimal, parse_size

#: Pixel formats the capture needs may name (V4L2 fourcc spellings).
PIXEL_FORMATS = ("YUYV", "UYVY", "YVYU", "VYUY", "RGB565", "RGB24", "BGR24", "NV12", "NV21", "NV16", "NV61", "GREY")
MAX_INCLUDE_DEPTH = 16
ADDRESS_LIMIT = 1 << 64


@dataclass
class _Ctx:
    sink: DiagnosticSink = field(default_factory=DiagnosticSink)

    def error(self, where: Where, message: str, hint: str = "") -> None:
        self.sink.error(message, file=where.file, line=where.line, col=where.col, hint=hint)

    def warning(self, where: Where, message: str, hint: str = "") -> None:
        self.sink.warning(message, file=where.file, line=where.line, col=where.col, hint=hint)


# --- includes and overrides -------------------------------------------------


def _read_with_includes(path: Path, ctx: _Ctx, stack: tuple[Path, ...], files: list[str]) -> YNode | None:
    resolved = path.resolve()
    try:
        tree = load_file(path)
    except YamlLoadError as exc:
        ctx.sink.items.extend(exc.diagnostics)
        return None
    files.append(str(path))
    if tree is None:
        return YNode({}, Where(str(path), 1, 1))
    if not isinstance(tree.value, dict):
        ctx.error(tree.where, "a board file must be a mapping of keys (name:, memory:, ...)")
        return None
    own = dict(tree.value)
    inc_node = own.pop("include", None)
    merged: YNode | None = None
    if inc_node is not None:
        names = inc_node.value if isinstance(inc_node.value, list) else [inc_node]
        for item in names:
            if not isinstance(item.value, str):
                ctx.error(item.where, "include: expects a file name or a list of file names")
                continue
            target = (path.parent / item.value)
            try:
                target_real = target.resolve()
                target.is_file()
            except (OSError, ValueError) as exc:  # NUL in the name, a name too long for the OS, a link loop
                ctx.error(item.where, f"include: {item.value!r} cannot be a file name here: {exc}",
                          hint="include paths are file names relative to the including file")
                continue
            if target_real in stack + (resolved,):
                chain = " -> ".join(p.name for p in stack + (resolved, target_real))
                ctx.error(item.where, f"circular include: {chain}", hint="remove one of the include: lines")
                continue
            if len(stack) >= MAX_INCLUDE_DEPTH:
                ctx.error(item.where, f"includes nest deeper than {MAX_INCLUDE_DEPTH} files")
                continue
            if not target.is_file():
                ctx.error(item.where, f"included file not found: {target}",
                          hint="include paths are relative to the including file")
                continue
            sub = _read_with_includes(target, ctx, stack + (resolved,), files)
            if sub is not None:
                merged = sub if merged is None else _override(merged, sub)
    mine = YNode(own, tree.where, {k: w for k, w in tree.key_where.items() if k != "include"})
    return mine if merged is None else _override(merged, mine)


def _override(base: YNode, top: YNode) -> YNode:
    if not (isinstance(base.value, dict) and isinstance(top.value, dict)):
        return top
    out = dict(base.value)
    key_where = dict(base.key_where)
    for key, node in top.value.items():
        if node.value is None:
            out.pop(key, None)  # "~" deletes, like /delete-node/ or /delete-property/
            key_where.pop(key, None)
        elif key in out:
            out[key] = _override(out[key], node)
            key_where[key] = top.key_where.get(key, node.where)
        else:
            out[key] = node
            key_where[key] = top.key_where.get(key, node.where)
    return YNode(out, top.where, key_where)


# --- field readers ----------------------------------------------------------


class _Map:
    """Typed access to one mapping; unknown keys and bad values go to the sink."""

    def __init__(self, node: YNode, ctx: _Ctx, allowed: Iterable[str], what: str) -> None:
        self.node = node
        self.ctx = ctx
        self.what = what
        self.ok = True
        #: Size keys written as plain decimal numbers (bytes): see :func:`_is_bare`.
        self.bare: set[str] = set()
        self.items: dict[str, YNode] = node.value if isinstance(node.value, dict) else {}
        if not isinstance(node.value, dict):
            ctx.error(node.where, f"{what} must be a mapping (key: value lines)")
            self.ok = False
            return
        allowed = tuple(allowed)
        for key in self.items:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(allowed)}"
                ctx.error(node.key_where.get(key, node.where), f"unknown key '{key}' in {what}", hint=hint)
                self.ok = False

    def _fail(self, where: Where, message: str, hint: str = "") -> None:
        self.ok = False
        self.ctx.error(where, message, hint)

    def where(self, key: str) -> Where:
        n = self.items.get(key)
        return n.where if n is not None else self.node.where

    def has(self, key: str) -> bool:
        return key in self.items

    def fields(self) -> tuple[tuple[str, Where], ...]:
        """Where each value was written, list entries as ``key[i]``: errors point at the value at fault."""
        out: list[tuple[str, Where]] = []
        for key, n in self.items.items():
            out.append((key, n.where))
            if isinstance(n.value, list):
                out.extend((f"{key}[{i}]", item.where) for i, item in enumerate(n.value))
        return tuple(out)

    def text(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        n = self.items.get(key)
        if n is None:
            if required:
                self._fail(self.node.where, f"{self.what} needs '{key}'")
            return default
        if isinstance(n.value, (str, int)) and not isinstance(n.value, bool):
            return str(n.value)
        self._fail(n.where, f"'{key}' must be a string")
        return default

    def texts(self, key: str) -> tuple[str, ...]:
        n = self.items.get(key)
        if n is None:
            return ()
        values = n.value if isinstance(n.value, list) else [n]
        out = []
        for v in values:
            if isinstance(v.value, str):
                out.append(v.value)
            else:
                self._fail(v.where, f"'{key}' must be a string or a list of strings")
        return tuple(out)

    def compatibles(self, key: str = "compatible") -> tuple[str, ...]:
        """Device-tree compatibles: every entry is "vendor,model".

        An entry without a comma is nearly always YAML splitting an unquoted
        "samsung,aquila" inside [ ... ] at its comma: say so, with the fix.
        """
        values = self.texts(key)
        for value in values:
            if "," not in value:
                self._fail(self.where(key), f"compatible '{value}' has no vendor prefix (\"vendor,model\")",
                           hint='inside [ ] YAML splits at commas: quote each entry, e.g. ["samsung,aquila"]')
        return values

    def flag(self, key: str, default: bool = False) -> bool:
        n = self.items.get(key)
        if n is None:
            return default
        if isinstance(n.value, bool):
            return n.value
        self._fail(n.where, f"'{key}' must be true or false")
        return default

    def integer(self, key: str, default: int | None = None, *, lo: int = 0, hi: int = 1 << 32) -> int | None:
        n = self.items.get(key)
        if n is None:
            return default
        if isinstance(n.value, bool) or not isinstance(n.value, int):
            self._fail(n.where, f"'{key}' must be a whole number, not {n.value!r}")
            return default
        if not lo <= n.value <= hi:
            self._fail(n.where, f"'{key}' = {n.value} is out of range {lo}..{hi}")
            return default
        return n.value

    def size(self, key: str, default: int | None = None, *, allow_zero: bool = False,
             warn_bare: bool = True) -> int | None:
        n = self.items.get(key)
        if n is None:
            return default
        value = _size_of(n, self, f"'{key}'", allow_zero=allow_zero)
        if value is not None and _is_bare(n):
            self.bare.add(key)
            if warn_bare:
                _warn_small_bare(n, self, f"'{key}'", value)
        return value

    def reg(self, key: str) -> tuple[int, int] | None:
        n = self.items.get(key)
        if n is None:
            return None
        pair = _reg_of(n, self, f"'{key}'")
        if pair is not None and isinstance(n.value, list) and _is_bare(n.value[1]):
            self.bare.add(key)
        return pair

    def regs(self, key: str) -> tuple[tuple[int, int], ...]:
        n = self.items.get(key)
        if n is None:
            return ()
        if not isinstance(n.value, list):
            self._fail(n.where, f"'{key}' must be a list of [base, size] pairs")
            return ()
        # Accept one bare pair too: alloc-ranges: [0x40000000, 384M]
        if len(n.value) == 2 and all(not isinstance(v.value, list) for v in n.value):
            pair = _reg_of(n, self, f"'{key}'")
            return (pair,) if pair else ()
        out = []
        for item in n.value:
            pair = _reg_of(item, self, f"'{key}' entry")
            if pair:
                out.append(pair)
        return tuple(out)

    def sub(self, key: str, allowed: Iterable[str], what: str) -> _Map | None:
        n = self.items.get(key)
        if n is None:
            return None
        m = _Map(n, self.ctx, allowed, what)
        return m

    def entries(self, key: str) -> list[tuple[str, YNode]]:
        """Named children; each child's ``where`` is moved to its name, where people look."""
        n = self.items.get(key)
        if n is None:
            return []
        if not isinstance(n.value, dict):
            self._fail(n.where, f"'{key}' must be a mapping of named entries")
            return []
        return [(name, YNode(child.value, n.key_where.get(name, child.where), child.key_where))
                for name, child in n.value.items()]

    def listed(self, key: str) -> list[YNode]:
        n = self.items.get(key)
        if n is None:
            return []
        if not isinstance(n.value, list):
            self._fail(n.where, f"'{key}' must be a list")
            return []
        return list(n.value)


def _is_bare(n: YNode) -> bool:
    """A size written as a plain decimal number: memparse() reads it as bytes, which people rarely mean."""
    return isinstance(n.value, int) and not isinstance(n.value, bool) and n.raw is not None and is_bare_decimal(n.raw)


#: Below one page a plain number is almost surely a size meant in KiB or MiB.
_BARE_SUSPECT_BELOW = 4096


def _warn_small_bare(n: YNode, m: _Map, what: str, value: int) -> None:
    if 0 < value < _BARE_SUSPECT_BELOW:
        m.ctx.warning(n.where, f"{what} = {value} is {format_size(value)}: a plain number is bytes",
                      hint=bare_bytes_hint(value))


def _size_of(n: YNode, m: _Map, what: str, *, allow_zero: bool = False) -> int | None:
    if isinstance(n.value, bool) or not isinstance(n.value, (int, str)):
        m._fail(n.where, f"{what} must be a size such as 64M, 4 MiB or 0x4000000, not {n.value!r}")
        return None
    try:
        value = parse_size(n.value)
    except SizeError as exc:
        m._fail(n.where, f"{what}: {exc}", exc.hint)
        return None
    if value == 0 and not allow_zero:
        m._fail(n.where, f"{what} must not be zero")
        return None
    if value >= ADDRESS_LIMIT:
        m._fail(n.where, f"{what} = {value:#x} does not fit in 64 bits")
        return None
    return value


def _reg_of(n: YNode, m: _Map, what: str) -> tuple[int, int] | None:
    if not isinstance(n.value, list) or len(n.value) != 2:
        m._fail(n.where, f"{what} must be a [base, size] pair, e.g. [0x40000000, 384M]")
        return None
    base = _size_of(n.value[0], m, f"{what} base", allow_zero=True)
    size = _size_of(n.value[1], m, f"{what} size")
    if base is None or size is None:
        return None
    if base + size > ADDRESS_LIMIT:
        m._fail(n.where, f"{what} ends past the 64-bit address space")
        return None
    return (base, size)


# --- sections ---------------------------------------------------------------

_TOP = ("name", "model", "compatible", "memory", "reserved-memory", "devices", "kernel", "console", "boot",
        "emulation", "power", "network", "ssh", "lab", "description")
_REGION = ("label", "compatible", "reusable", "no-map", "reg", "size", "alignment", "alloc-ranges",
           "linux,cma-default", "description")
_DEVICE = ("compatible", "reg", "memory-region", "memory-region-names", "honours-memory-region",
           "regions-in-distinct-banks", "dma-mask-bits", "needs", "driver", "video-node", "status", "description")
_NEEDS = ("captures", "buffers")
_CAPTURE = ("width", "height", "format", "buffers", "frames")
_BUFFER = ("name", "size", "region")
_KERNEL = ("profile", "max-order", "page-size", "cma-alignment", "cma-size-mbytes", "cma-size-percentage",
           "cma-areas", "lpae", "hugetlb-pageblock-order", "architecture", "atomic-pool", "bootargs", "page-offset",
           "phys-offset", "dma-zone-size")
_CONSOLE = ("uart", "device", "baud", "port", "udev")
_BOOT = ("bootloader", "uboot-prompt", "kernel-addr", "fdt-addr", "initrd-addr", "early-reservations", "banks-via")
_POWER = ("manual", "command", "netio")
_POWER_COMMAND = ("on", "off", "cycle", "state")
_NETIO = ("url", "output", "user", "password")
_NETWORK = ("server-ip", "board-ip", "tftp-port")
_SSH = ("host", "port", "user", "key", "accept-new-host-keys")
_LAB = ("place", "coordinator")
_EMULATION = ("machine", "cpu", "memory", "capture-driver", "notes")


def _warn_defaulted_max_order(where: Where, profile: KernelProfile, ctx: _Ctx) -> None:
    """The CMA unit follows max-order, a build value of the SoC's kernel: say when nothing set it."""
    ctx.warning(where, f"no kernel max-order given (no SoC include sets it): it defaults to {profile.name}'s "
                f"{profile.max_order_as_written} (CMA unit: {format_size(profile.cma_min_bytes)})",
                hint="include the SoC's file (e.g. include: s5pv210.yaml) or set kernel: max-order: as the "
                     "kernel's CONFIG_ARCH_FORCE_MAX_ORDER")


def _kernel(m: _Map | None, ctx: _Ctx, top: Where) -> Kernel:
    if m is None:
        _warn_defaulted_max_order(top, PROFILES["linux-6.1"], ctx)
        return Kernel(PROFILES["linux-6.1"])
    name = m.text("profile", "linux-6.1") or "linux-6.1"
    try:
        name = kernel_profile(name).name  # a profile, or the Debian kernel that is one (debian-6.1-arm64)
    except KeyError:
        close = difflib.get_close_matches(name, kernel_names(), n=1)
        ctx.error(m.where("profile"), f"unknown kernel profile '{name}'",
                  hint=f"did you mean '{close[0]}'?" if close else f"known: {', '.join(kernel_names())}")
        name = "linux-6.1"
    overrides: dict[str, object] = {}
    for key, attr, lo, hi in (("max-order", "max_order", 9, 20), ("cma-alignment", "cma_alignment", 2, 12),
                              ("cma-size-mbytes", "cma_size_mbytes", 0, 1 << 20),
                              ("cma-size-percentage", "cma_size_percentage", 0, 100),
                              ("cma-areas", "config_cma_areas", 1, 64),
                              ("hugetlb-pageblock-order", "hugetlb_pageblock_order", 1, 20)):
        value = m.integer(key, None, lo=lo, hi=hi)
        if value is not None:
            overrides[attr] = value
    page = m.size("page-size")
    if page is not None:
        if page & (page - 1):
            ctx.error(m.where("page-size"), f"page-size {page} is not a power of two")
        else:
            overrides["page_size"] = page
    if m.has("lpae"):
        overrides["lpae"] = m.flag("lpae")
    architecture = m.text("architecture")
    if architecture is not None:
        if architecture not in ARCHITECTURES:
            ctx.error(m.where("architecture"), f"architecture '{architecture}' is not {' or '.join(ARCHITECTURES)}",
                      hint="name the profile of that architecture instead, e.g. linux-6.1-arm64")
        else:
            overrides["architecture"] = architecture
    pool = m.size("atomic-pool", allow_zero=True)
    if pool is not None:
        overrides["atomic_pool_bytes"] = pool
    profile: KernelProfile = profile_with(name, **overrides)
    if not m.has("max-order") and not m.has("hugetlb-pageblock-order"):
        _warn_defaulted_max_order(m.node.where, profile, ctx)
    layout = ArmLayout(page_offset=m.size("page-offset", 0xC0000000, allow_zero=True) or 0,
                       phys_offset=m.size("phys-offset", allow_zero=True),
                       dma_zone_size=m.size("dma-zone-size"))
    return Kernel(profile, m.text("bootargs", "") or "", m.node.where, layout, m.fields())


def _region(node_name: str, n: YNode, ctx: _Ctx) -> Region | None:
    m = _Map(n, ctx, _REGION, f"reserved-memory node '{node_name}'")
    reg = m.reg("reg")
    size = m.size("size", warn_bare=False)  # board/validate.py judges it against the CMA unit
    if m.has("reg") and m.has("size"):
        m._fail(m.where("size"), f"'{node_name}' has both reg and size",
                hint="a node is static (reg) or dynamic (size), not both")
    elif not m.has("reg") and not m.has("size"):
        m._fail(n.where, f"'{node_name}' needs reg (static) or size (dynamic)")
    alignment = m.size("alignment")
    if alignment is not None and alignment & (alignment - 1):
        m._fail(m.where("alignment"), f"alignment {alignment:#x} is not a power of two")
    if "@" in node_name and reg is not None:
        unit = node_name.split("@", 1)[1]
        try:
            if int(unit, 16) != reg[0]:
                ctx.warning(n.where, f"unit address @{unit} does not match reg base {reg[0]:#x}",
                            hint=f"name the node '{node_name.split('@')[0]}@{reg[0]:x}' (dtc warns about this too)")
        except ValueError:
            m._fail(n.where, f"unit address '@{unit}' is not hexadecimal")
    if not m.ok:
        return None
    return Region(
        node=node_name,
        label=m.text("label"),
        compatible=m.text("compatible", "shared-dma-pool") or "shared-dma-pool",
        reusable=m.flag("reusable"),
        no_map=m.flag("no-map"),
        reg=reg,
        size=size,
        alignment=alignment,
        alloc_ranges=m.regs("alloc-ranges"),
        cma_default=m.flag("linux,cma-default"),
        where=n.where,
        fields=m.fields(),
        bare=frozenset(m.bare),
    )


def _device(name: str, n: YNode, ctx: _Ctx) -> Device | None:
    m = _Map(n, ctx, _DEVICE, f"device '{name}'")
    captures: list[CaptureNeed] = []
    buffers: list[FixedBuffer] = []
    needs = m.sub("needs", _NEEDS, f"needs of '{name}'")
    if needs is not None:
        for item in needs.listed("captures"):
            c = _Map(item, ctx, _CAPTURE, f"capture need of '{name}'")
            fmt = (c.text("format", "YUYV") or "YUYV").upper()
            if fmt not in PIXEL_FORMATS:
                close = difflib.get_close_matches(fmt, PIXEL_FORMATS, n=1)
                c._fail(c.where("format"), f"unknown pixel format '{fmt}'",
                        hint=f"did you mean '{close[0]}'?" if close else f"known: {', '.join(PIXEL_FORMATS)}")
            width = c.integer("width", None, lo=1, hi=16384)
            height = c.integer("height", None, lo=1, hi=16384)
            count = c.integer("buffers", 4, lo=1, hi=32)
            frames = c.integer("frames", 5, lo=0, hi=100000)
            for key in ("width", "height"):
                if not c.has(key):
                    c._fail(item.where, f"capture need of '{name}' needs '{key}'")
            if c.ok and width and height and count is not None and frames is not None:
                captures.append(CaptureNeed(width, height, fmt, count, frames, item.where))
        for item in needs.listed("buffers"):
            b = _Map(item, ctx, _BUFFER, f"buffer need of '{name}'")
            size = b.size("size")
            if not b.has("size"):
                b._fail(item.where, f"buffer need of '{name}' needs 'size'")
            if b.ok and size:
                buffers.append(FixedBuffer(b.text("name", "buffer") or "buffer", size, b.text("region"), item.where))
        m.ok = m.ok and needs.ok
    status = m.text("status", "okay")
    if status not in ("okay", "disabled"):
        m._fail(m.where("status"), f"status '{status}' is not okay or disabled")
    mask = m.integer("dma-mask-bits", 32, lo=1, hi=64)
    if status == "disabled":
        return None
    # A device with a bad field is still returned (its errors are already in the
    # sink) so that the checks of its other fields run too: every error at once.
    return Device(
        name=name,
        compatible=m.compatibles(),
        reg=m.reg("reg"),
        memory_region=m.texts("memory-region"),
        memory_region_names=m.texts("memory-region-names"),
        honours_memory_region=m.flag("honours-memory-region", True),
        regions_in_distinct_banks=m.flag("regions-in-distinct-banks"),
        dma_mask_bits=mask or 32,
        captures=tuple(captures),
        buffers=tuple(buffers),
        driver=m.text("driver"),
        video_node=m.text("video-node"),
        where=n.where,
        fields=m.fields(),
    )


def _console(m: _Map | None, ctx: _Ctx) -> Console:
    if m is None:
        return Console()
    udev: list[tuple[str, str]] = []
    for key, v in m.entries("udev"):
        if isinstance(v.value, (str, int)) and not isinstance(v.value, bool):
            udev.append((key, str(v.value)))
        else:
            ctx.error(v.where, f"udev property '{key}' must be a string")
    return Console(m.text("uart"), m.text("device", "ttyS0") or "ttyS0",
                   m.integer("baud", 115200, lo=50, hi=12_000_000) or 115200, m.text("port"), tuple(udev), m.node.where)


def _boot(m: _Map | None, ctx: _Ctx) -> Boot:
    if m is None:
        return Boot()
    loader = m.text("bootloader", "u-boot") or "u-boot"
    if loader not in ("u-boot", "none"):
        ctx.error(m.where("bootloader"), f"bootloader '{loader}' is not u-boot or none")
    via = m.text("banks-via", "dt") or "dt"
    if via not in ("dt", "mem=", "usable-memory-range"):
        ctx.error(m.where("banks-via"), f"banks-via '{via}' is not dt, mem= or usable-memory-range")
    early: list[tuple[str, int, int]] = []
    for what, n in m.entries("early-reservations"):
        pair = _reg_of(n, m, f"early reservation '{what}'")
        if pair:
            early.append((what, pair[0], pair[1]))
    return Boot(loader, m.text("uboot-prompt", "=> ") or "=> ", m.size("kernel-addr", allow_zero=True),
                m.size("fdt-addr", allow_zero=True), m.size("initrd-addr", allow_zero=True), tuple(early), via,
                m.node.where)


def _power(m: _Map | None, ctx: _Ctx) -> Power:
    if m is None:
        return Power()
    kinds = [k for k in _POWER if m.has(k)]
    if len(kinds) != 1:
        ctx.error(m.node.where, "power: needs exactly one of manual, command, netio",
                  hint="e.g. power: {command: {on: 'relay 1 on', off: 'relay 1 off'}}")
        return Power(where=m.node.where)
    kind = kinds[0]
    if kind == "manual":
        return Power("manual", where=m.node.where)
    if kind == "command":
        c = m.sub("command", _POWER_COMMAND, "power command")
        if c is None or not (c.has("on") and c.has("off")):
            ctx.error(m.where("command"), "power: command: needs at least 'on' and 'off' command lines")
            return Power(where=m.node.where)
        return Power("command", on=c.text("on"), off=c.text("off"), cycle=c.text("cycle"), state=c.text("state"),
                     where=m.node.where)
    n = m.sub("netio", _NETIO, "power netio")
    if n is None or not (n.has("url") and n.has("output")):
        ctx.error(m.where("netio"), "power: netio: needs 'url' and 'output'")
        return Power(where=m.node.where)
    return Power("netio", url=n.text("url"), output=n.integer("output", 1, lo=1, hi=64), user=n.text("user"),
                 password=n.text("password"), where=m.node.where)


def _network(m: _Map | None) -> Network:
    if m is None:
        return Network()
    return Network(m.text("server-ip"), m.text("board-ip"), m.integer("tftp-port", 69, lo=1, hi=65535) or 69,
                   m.node.where)


def _ssh(m: _Map | None) -> SshTarget | None:
    if m is None:
        return None
    host = m.text("host", required=True) or ""
    return SshTarget(host, m.integer("port", 22, lo=1, hi=65535) or 22, m.text("user", "root") or "root",
                     m.text("key"), m.flag("accept-new-host-keys"), m.node.where)


def _lab(m: _Map | None, ctx: _Ctx) -> LabPlace | None:
    if m is None:
        return None
    place = m.text("place", required=True) or ""
    coordinator = m.text("coordinator")
    if coordinator is not None and not re.fullmatch(r"[^\s:]+:\d{1,5}", coordinator):
        ctx.error(m.where("coordinator"), f"lab: coordinator {coordinator!r} is not HOST:PORT",
                  hint="e.g. coordinator: labgrid.lab:20408")
    return LabPlace(place, coordinator, m.node.where)


def _emulation(m: _Map | None) -> Emulation | None:
    if m is None:
        return None
    return Emulation(m.text("machine", "virt,highmem=off") or "virt,highmem=off",
                     m.text("cpu", "cortex-a15") or "cortex-a15", m.size("memory", 768 << 20) or 768 << 20,
                     m.text("capture-driver", "vivid") or "vivid", m.text("notes", "") or "", m.node.where)


def read_board(path: Path, ctx: _Ctx | None = None) -> tuple[Board | None, DiagnosticSink]:
    """Load and type-check a board file. Returns (board or None, every diagnostic)."""
    ctx = ctx or _Ctx()
    files: list[str] = []
    tree = _read_with_includes(path, ctx, (), files)
    if tree is None:
        return None, ctx.sink
    top = _Map(tree, ctx, _TOP, "the board")
    banks: list[Bank] = []
    mem = top.items.get("memory")
    if mem is None:
        ctx.error(tree.where, "the board has no 'memory' banks", hint="add memory: [[0x30000000, 80M], ...]")
    else:
        for item in (mem.value if isinstance(mem.value, list) else []):
            pair = _reg_of(item, top, "memory bank")
            if pair:
                banks.append(Bank(pair[0], pair[1], item.where))
        if not isinstance(mem.value, list):
            ctx.error(mem.where, "memory must be a list of [base, size] banks")
    regions = [r for name, n in top.entries("reserved-memory") if (r := _region(name, n, ctx)) is not None]
    devices = [d for name, n in top.entries("devices") if (d := _device(name, n, ctx)) is not None]
    kernel = _kernel(top.sub("kernel", _KERNEL, "kernel"), ctx, tree.where)
    board = Board(
        name=top.text("name", path.stem) or path.stem,
        path=str(path),
        model=top.text("model", "") or "",
        compatible=top.compatibles(),
        banks=tuple(banks),
        regions=tuple(regions),
        devices=tuple(devices),
        kernel=kernel,
        console=_console(top.sub("console", _CONSOLE, "console"), ctx),
        boot=_boot(top.sub("boot", _BOOT, "boot"), ctx),
        emulation=_emulation(top.sub("emulation", _EMULATION, "emulation")),
        power=_power(top.sub("power", _POWER, "power"), ctx),
        network=_network(top.sub("network", _NETWORK, "network")),
        ssh=_ssh(top.sub("ssh", _SSH, "ssh")),
        lab=_lab(top.sub("lab", _LAB, "lab"), ctx),
        files=tuple(files),
    )
    return board, ctx.sink
