"""Device-tree source for DT kernels: /memory, /reserved-memory and the consumers' memory-region.

The text follows the kernel's bindings (reserved-memory.yaml, shared-dma-pool.yaml,
memory-region in the consumer) and linux-cma.md §5: /reserved-memory carries
the root's #address-cells/#size-cells and an empty ``ranges``, or the kernel
ignores the whole node ("unsupported node format").

Three shapes come out of here:

- :func:`memory_dts` and :func:`reserved_memory_dts`: bare nodes (no root
  braces), for splicing into a tree someone else owns (QEMU's virt tree);
- :func:`board_fragment`: what goes into the board's own ``.dts``;
- :func:`standalone_dts`: a whole tree with stub consumer nodes that ``dtc``
  compiles and ``dt-validate`` checks on its own.

Every name, label and string that comes from a board file is checked
against the DTS grammar first, so a hostile value is a ConfigError and can
never break out of the text it sits in.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from cma_tool.board.types import Bank, Board, Device, Region
from cma_tool.board.yamlpos import NOWHERE, Where
from cma_tool.errors import ConfigError, Diagnostic, InfraError
from cma_tool.model.profiles import KernelProfile

# DTSpec 2.2.1 node names and dtc's label grammar.
_NODE_NAME = re.compile(r"[A-Za-z0-9,._+-]{1,31}(@[0-9A-Fa-f]+(,[0-9A-Fa-f]+)*)?")
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Strings we put in quotes: printable ASCII without the quote and backslash,
# which would need escapes nobody writing a compatible or a name ever means.
_DT_STRING = re.compile(r"[\x20-\x21\x23-\x5b\x5d-\x7e]*")


def cells_for(profile: KernelProfile) -> tuple[int, int]:
    """#address-cells/#size-cells of the root: 1/1 on ARM32, 2/2 with LPAE or on 64-bit."""
    return (2, 2) if profile.lpae or profile.arch == "dma-direct" else (1, 1)


def error_at(message: str, where: Where, hint: str) -> ConfigError:
    """A ConfigError positioned at a board file's value: ``file:line:col: error: message``."""
    return ConfigError(diagnostics=[Diagnostic(message, where.file, where.line, where.col, "error", hint)])


def check_node_name(name: str, where: Where = NOWHERE) -> str:
    if not _NODE_NAME.fullmatch(name):
        raise error_at(f"{name!r} is not a device-tree node name", where,
                    "use letters, digits and , . _ + - (at most 31), then optionally @ and a hex unit address")
    return name


def check_label(label: str, where: Where = NOWHERE) -> str:
    if not _LABEL.fullmatch(label):
        raise error_at(f"{label!r} is not a device-tree label", where,
                    "a label is a C identifier: letters, digits and _, not starting with a digit")
    return label


def dt_string(text: str, where: Where = NOWHERE) -> str:
    """``text`` as a quoted DTS string; refuses quotes, backslashes and control characters."""
    if not _DT_STRING.fullmatch(text):
        raise error_at(f"{text!r} cannot be written as a device-tree string", where,
                    "use printable ASCII without \" and \\")
    return f'"{text}"'


def _cells(value: int, count: int, what: str, where: Where) -> list[str]:
    if value < 0 or value >= 1 << (32 * count):
        raise error_at(f"{what} {value:#x} does not fit in {count} cell(s)", where,
                    "a 1-cell tree (ARM32 without LPAE) holds values below 4 GiB; enable lpae in the kernel section")
    return [f"0x{(value >> (32 * i)) & 0xFFFFFFFF:08x}" for i in reversed(range(count))]


def _pairs(pairs: Iterable[tuple[int, int]], acells: int, scells: int, what: str, where: Where) -> str:
    """``<a s>, <a s>``: one angle group per pair, as the kernel's own dts files write them."""
    groups = [" ".join(_cells(base, acells, f"{what} address", where) + _cells(size, scells, f"{what} size", where))
              for base, size in pairs]
    return ", ".join(f"<{g}>" for g in groups)


def _indent(lines: Iterable[str], level: int) -> str:
    return "".join(("\t" * level + line if line else "") + "\n" for line in lines)


def memory_dts(banks: Sequence[Bank], *, address_cells: int = 1, size_cells: int = 1, level: int = 1) -> str:
    """One ``memory@<first base>`` node listing every bank, as mainline s5pv210-aquila.dts does."""
    if not banks:
        raise ConfigError("the board declares no memory banks", hint="add a 'memory:' list of [base, size] pairs")
    where = banks[0].where
    body = [
        f"memory@{banks[0].base:x} {{",
        '\tdevice_type = "memory";',
        f"\treg = {_pairs(((b.base, b.size) for b in banks), address_cells, size_cells, 'memory bank', where)};",
        "};",
    ]
    return _indent(body, level)


def _region_lines(region: Region, acells: int, scells: int) -> list[str]:
    w = region.where
    head = check_node_name(region.node, w) + " {"
    if region.label:
        head = f"{check_label(region.label, w)}: {head}"
    lines = [head, f"\tcompatible = {dt_string(region.compatible, w)};"]
    if region.reusable:
        lines.append("\treusable;")
    if region.no_map:
        lines.append("\tno-map;")
    if region.reg is not None:
        lines.append(f"\treg = {_pairs([region.reg], acells, scells, region.node, w)};")
    elif region.size is not None:
        lines.append(f"\tsize = <{' '.join(_cells(region.size, scells, 'size', w))}>;")
    if region.alignment is not None:
        lines.append(f"\talignment = <{' '.join(_cells(region.alignment, scells, 'alignment', w))}>;")
    if region.alloc_ranges and region.reg is None:
        lines.append(f"\talloc-ranges = {_pairs(region.alloc_ranges, acells, scells, 'alloc-ranges', w)};")
    if region.cma_default:
        lines.append("\tlinux,cma-default;")
    lines.append("};")
    return lines


def reserved_memory_dts(board: Board, profile: KernelProfile, *, address_cells: int | None = None,
                        size_cells: int | None = None, omit_default: bool = False, level: int = 1) -> str:
    """The whole ``reserved-memory { ... };`` node, indented for the root's body; "" when it would be empty.

    ``address_cells``/``size_cells`` must be the root's (QEMU virt: 2/2);
    by default they follow the profile. ``omit_default`` leaves out the
    ``linux,cma-default`` node, for a command line that carries ``cma=``
    instead (the kernel would bypass the node anyway).

    No regions, no node: an empty /reserved-memory is not the same tree to
    the kernel as none (6.12 says "No reserved-memory node in the DT" only
    for none), and the model predicts from the regions, so the tree must
    have the node exactly when it has a child.
    """
    regions = [r for r in board.regions if not (omit_default and r.cma_default)]
    if not regions:
        return ""
    default_a, default_s = cells_for(profile)
    acells = default_a if address_cells is None else address_cells
    scells = default_s if size_cells is None else size_cells
    lines = ["reserved-memory {", f"\t#address-cells = <{acells}>;", f"\t#size-cells = <{scells}>;", "\tranges;"]
    for region in regions:
        lines.append("")
        lines.extend("\t" + line for line in _region_lines(region, acells, scells))
    lines.append("};")
    return _indent(lines, level)


def consumer_dts(board: Board, refs: Mapping[str, str] | None = None) -> str:
    """``&label { memory-region = ...; };`` for each device that names regions.

    ``refs`` maps a device to how its kernel tree names its node (``&mfc``,
    ``&{/soc/codec@f1700000}``: patches.device_node); without a tree the
    device's name is taken as its DT label in the SoC dtsi (fimc0, mfc),
    which is how s5pv210.dtsi labels them.
    """
    refs_of = refs or {}
    out: list[str] = []
    for dev in board.devices:
        if not dev.memory_region:
            continue
        w = dev.where
        handles = []
        for label in dev.memory_region:
            region = board.region(label)
            if region is None or not region.label:
                raise error_at(f"device '{dev.name}': memory-region '{label}' is not the label of a reserved-memory node",
                            w, "give the region a 'label:' and refer to it by that label")
            handles.append(f"<&{check_label(region.label, w)}>")
        head = refs_of[dev.name] if dev.name in refs_of else f"&{check_label(dev.name, w)}"
        lines = [f"{head} {{", f"\tmemory-region = {', '.join(handles)};"]
        if dev.memory_region_names:
            lines.append(f"\tmemory-region-names = {', '.join(dt_string(n, w) for n in dev.memory_region_names)};")
        lines.append("};")
        out.append(_indent(lines, 0))
    return "\n".join(out)


def usable_memory_dts(board: Board, profile: KernelProfile, *, level: int = 1) -> str:
    """``chosen { linux,usable-memory-range }``: the banks, for bootloaders that rewrite /memory."""
    acells, scells = cells_for(profile)
    where = board.boot.where
    value = _pairs(((b.base, b.size) for b in board.banks), acells, scells, "memory bank", where)
    return _indent(["chosen {", f"\tlinux,usable-memory-range = {value};", "};"], level)


def _header(board: Board, profile: KernelProfile, what: str) -> list[str]:
    return [
        "// SPDX-License-Identifier: GPL-2.0-only",
        "/*",
        f" * {what} for {board.model}",
        f" * Generated by cma-tool from {Path(board.path).name} (kernel profile {profile.name}).",
        " * CMA areas must be whole pageblocks on this kernel: "
        f"{profile.cma_min_bytes >> 20} MiB (max-order {profile.max_order}).",
        " */",
    ]


def board_fragment(board: Board, profile: KernelProfile, *, omit_default: bool = False,
                   refs: Mapping[str, str] | None = None) -> str:
    """What the board's ``.dts`` needs: root-level nodes inside ``/ { };`` and the consumer overrides."""
    acells, scells = cells_for(profile)
    parts = "\n".join(_header(board, profile, "CMA reservations")) + "\n\n/ {\n"
    parts += memory_dts(board.banks, address_cells=acells, size_cells=scells)
    reserved = reserved_memory_dts(board, profile, omit_default=omit_default)
    if reserved:
        parts += "\n" + reserved
    if board.boot.banks_via == "usable-memory-range":
        parts += "\n" + usable_memory_dts(board, profile)
    parts += "};\n"
    consumers = consumer_dts(board, refs)
    if consumers:
        parts += "\n" + consumers
    return parts


def _stub_device(dev: Device) -> list[str]:
    w = dev.where
    label = check_label(dev.name, w)
    unit = f"@{dev.reg[0]:x}" if dev.reg else ""
    lines = [f"{label}: {check_node_name(dev.name.replace('_', '-') + unit, w)} {{"]
    if dev.compatible:
        lines.append(f"\tcompatible = {', '.join(dt_string(c, w) for c in dev.compatible)};")
    if dev.reg:
        lines.append(f"\treg = {_pairs([dev.reg], 1, 1, dev.name, w)};")
    lines.append("};")
    return lines


def standalone_dts(board: Board, profile: KernelProfile, *, omit_default: bool = False) -> str:
    """A whole tree: root, memory, reserved-memory, stub nodes for every consumer, the overrides.

    For checking the generated nodes with dtc and dt-validate on their own;
    it boots nothing. The consumers sit in a ``simple-bus`` at 1/1 cells
    (SoC registers are below 4 GiB on every board we know).
    """
    acells, scells = cells_for(profile)
    w = NOWHERE
    lines = [*_header(board, profile, "Stand-alone check tree"), "", "/dts-v1/;", "", "/ {"]
    lines.append(f"\tmodel = {dt_string(board.model, w)};")
    if board.compatible:
        lines.append(f"\tcompatible = {', '.join(dt_string(c, w) for c in board.compatible)};")
    lines += [f"\t#address-cells = <{acells}>;", f"\t#size-cells = <{scells}>;", ""]
    text = "\n".join(lines) + "\n"
    text += memory_dts(board.banks, address_cells=acells, size_cells=scells)
    reserved = reserved_memory_dts(board, profile, omit_default=omit_default)
    if reserved:
        text += "\n" + reserved
    if board.boot.banks_via == "usable-memory-range":
        text += "\n" + usable_memory_dts(board, profile)
    consumers = [d for d in board.devices if d.memory_region]
    if consumers:
        ranges = "ranges;" if acells == 1 else "ranges = <0x00000000 0x00000000 0x00000000 0xffffffff>;"
        bus = ["soc {", '\tcompatible = "simple-bus";', "\t#address-cells = <1>;", "\t#size-cells = <1>;",
               f"\t{ranges}"]
        for dev in consumers:
            bus.append("")
            bus.extend("\t" + line for line in _stub_device(dev))
        bus.append("};")
        text += "\n" + _indent(bus, 1)
    text += "};\n"
    overrides = consumer_dts(board)
    if overrides:
        text += "\n" + overrides
    return text


def compile_dts(source: Path, dtb: Path, *, include_dirs: Sequence[Path] = ()) -> None:
    """Run the real ``dtc``; a DTS it refuses is our bug or the user's input, said with dtc's words."""
    if shutil.which("dtc") is None:
        raise InfraError("dtc is not installed", hint="apt-get install device-tree-compiler")
    cmd = ["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(dtb)]
    for inc in include_dirs:
        cmd += ["-i", str(inc)]
    result = subprocess.run([*cmd, str(source)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ConfigError(f"dtc refused {source}:\n{result.stderr.strip()}",
                          hint="the board's values produced a tree dtc cannot compile")
