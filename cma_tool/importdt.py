"""`cma-tool import`: a board file from a real device tree, the way a new board starts.

A .dts is preprocessed and compiled as the kernel's Makefile does (its
tree's include-prefixes when it lies in a kernel tree, plus ``--include``
folders), a .dtb is read as it is; both with dtc's ``-@`` labels when
there are any. From the tree come the model and compatibles, every memory
bank, every /reserved-memory child (labels, reg or size, alignment,
alloc-ranges, the flags), each device that names a memory-region, the
console (``console=`` of /chosen/bootargs, else stdout-path) and the other
boot arguments. What YAML cannot hold (a region's extra properties, a
second reg pair) stays in the tree: `generate --patch` never removes it.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from cma_tool.binfmt import fdt
from cma_tool.errors import ConfigError, Diagnostic, ExitCode
from cma_tool.generate import kerneltree as kt
from cma_tool.generate.kerneltree import TreeView

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_,.@+-]*")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Linux console device name prefixes by the UART's compatible (its driver's tty name).
_TTY = (("samsung,", "ttySAC"), ("arm,pl011", "ttyAMA"), ("fsl,", "ttymxc"), ("ti,omap", "ttyS"),
        ("brcm,bcm2835-aux-uart", "ttyS"), ("snps,dw-apb-uart", "ttyS"), ("ns16550", "ttyS"), ("ns8250", "ttyS"),
        ("allwinner,", "ttyS"), ("rockchip,", "ttyS"), ("qcom,msm-uart", "ttyMSM"), ("xlnx,", "ttyPS"))


@dataclass
class _Yaml:
    lines: list[str] = field(default_factory=list)

    def add(self, text: str = "") -> None:
        self.lines.append(text)


def _key(text: str) -> str:
    return text if _PLAIN_KEY.fullmatch(text) else json.dumps(text)


def _str(text: str) -> str:
    return json.dumps(text)  # a JSON string is a YAML flow scalar


def _size(value: int) -> str:
    for shift, unit in ((30, "G"), (20, "M"), (10, "K")):
        if value and value % (1 << shift) == 0:
            return f"{value >> shift}{unit}"
    return f"{value:#x}"


def _strings(node: fdt.Node, prop: str) -> list[str]:
    raw = node.properties.get(prop)
    return fdt.decode_strings(raw, what=prop) if raw else []


def read_tree(source: Path, *, includes: tuple[Path, ...] = ()) -> tuple[TreeView, str]:
    """The compiled tree of ``source`` (.dts or .dtb) and how it was read, for the YAML's header."""
    if not source.is_file():
        raise ConfigError(f"{source}: no such file", hint="give a .dts (with its includes) or a .dtb")
    blob = source.read_bytes()
    if blob[:4] == b"\xd0\x0d\xfe\xed":
        return TreeView.of(blob, source=str(source)), f"{source.name} (a DTB)"
    if b"\0" in blob:
        raise ConfigError(diagnostics=[Diagnostic(
            "neither a DTB (no FDT magic d00dfeed at byte 0) nor device-tree source (it holds NUL bytes)",
            str(source), 1, 1, "error", "give the board's .dts or its compiled .dtb")])
    tree = kt.tree_top(source.resolve().parent)
    blob = kt.compile_source(source, tree, extra=includes)
    how = f"{source.name}, preprocessed and compiled as Kbuild does"
    return TreeView.of(blob, source=str(source)), how + (f" (tree {tree})" if tree else "")


def _label_for(view: TreeView, path: str) -> str:
    """The node's first label; else one made of its name (the tree has none to refer to it by)."""
    labels = view.labels_of(path)
    if labels:
        return labels[0]
    base = re.sub(r"[^A-Za-z0-9_]", "_", path.rsplit("/", 1)[-1])
    return base if _IDENT.fullmatch(base) else "n_" + base


def _console(view: TreeView) -> tuple[list[str], list[str]]:
    """(console: lines, the other boot arguments) from /chosen."""
    chosen = view.node("/chosen")
    if chosen is None:
        return [], []
    words = (chosen.string("bootargs") or "").split() if "bootargs" in chosen.properties else []
    consoles = [w for w in words if w.startswith("console=")]
    rest = [w for w in words if not w.startswith("console=")]
    if consoles:
        # The last console= is /dev/console, as the kernel decides.
        dev, _, opts = consoles[-1].removeprefix("console=").partition(",")
        speed = re.match(r"\d+", opts)
        line = f"console: {{device: {dev}" + (f", baud: {speed.group(0)}" if speed else "") + "}"
        samsung = re.fullmatch(r"ttySAC(\d+)", dev)
        if samsung:
            line = line[:-1] + f", uart: UART{samsung.group(1)}}}"
        return [line], rest
    stdout = chosen.string("stdout-path") if "stdout-path" in chosen.properties else None
    if not stdout:
        return [], rest
    target, _, opts = stdout.partition(":")
    alias = view.node("/aliases")
    path = target
    if not target.startswith("/") and alias is not None and target in alias.properties:
        path = alias.string(target) or target
    node = view.node(path)
    if node is None:
        return [f"# stdout-path {stdout!r} names no node of the tree"], rest
    index = None
    for name, value in (alias.properties.items() if alias is not None else []):
        m = re.fullmatch(r"serial(\d+)", name)
        if m and value.rstrip(b"\0").decode(errors="replace") == path:
            index = int(m.group(1))
    compat = _strings(node, "compatible")
    if index is None and compat:
        # No serialN alias: drivers number their ports in probe order, which is tree order
        # among the nodes of one compatible (samsung_tty's probe_index).
        same = view.with_compatible(compat[0])
        index = same.index(path) if path in same else None
    prefix = next((tty for c in compat for start, tty in _TTY if c.startswith(start)), None)
    baud = re.match(r"\d+", opts)
    if prefix is None or index is None:
        return [f"# console: stdout-path is {path} ({', '.join(compat) or 'no compatible'}): "
                "say its Linux device name here"], rest
    uart = f", uart: UART{index}" if prefix == "ttySAC" else ""
    return [f"console: {{device: {prefix}{index}, baud: {baud.group(0) if baud else 115200}{uart}}}"], rest


def board_yaml(view: TreeView, *, name: str, read_as: str, profile: str, max_order: int | None) -> str:
    out = _Yaml()
    root = view.tree.root
    out.add(f"# Imported by cma-tool from {read_as}.")
    out.add("# The tree keeps what this file does not say; `cma-tool generate --patch` only adds to it.")
    out.add(f"name: {_str(name)}")
    model = root.string("model") if "model" in root.properties else None
    out.add(f"model: {_str(model or name)}")
    compat = [c for c in _strings(root, "compatible") if "," in c]
    out.add(f"compatible: [{', '.join(_str(c) for c in compat)}]")
    out.add("")
    out.add("memory:")
    for base, size in view.memory_banks():
        out.add(f"  - [{base:#010x}, {_size(size)}]")
    rsv = view.node("/reserved-memory")
    region_labels: dict[str, str] = {}
    if rsv is not None and rsv.children:
        out.add("")
        out.add("reserved-memory:")
        for child in rsv.children:
            path = f"/reserved-memory/{child.name}"
            region_labels[path] = _label_for(view, path)
            out.lines += _region(view, path, child, region_labels[path])
    devices = []
    for path, node in view.tree.walk():
        if "memory-region" in node.properties and not path.startswith("/reserved-memory"):
            devices += _device(view, path, node, region_labels)
    if devices:
        out.add("")
        out.add("devices:")
        out.lines += devices
    console, rest = _console(view)
    if console:
        out.add("")
        out.lines += console
    out.add("")
    out.add("kernel:")
    out.add(f"  profile: {profile}")
    if max_order is not None:
        out.add(f"  max-order: {max_order}   # CONFIG_ARCH_FORCE_MAX_ORDER: check the kernel's .config")
    if rest:
        out.add(f"  bootargs: {_str(' '.join(rest))}   # the rest of /chosen/bootargs")
    return "\n".join(out.lines) + "\n"


def _region(view: TreeView, path: str, node: fdt.Node, label: str) -> list[str]:
    a, s = view.cells("/reserved-memory")
    lines = [f"  {_key(node.name)}:"]
    if label in view.labels:
        lines.append(f"    label: {label}")
    else:
        lines.append(f"    label: {label}   # not in the tree: the tree refers to the node by its path")
    compat = _strings(node, "compatible")
    if compat:
        lines.append(f"    compatible: {_str(compat[0])}")
    for flag in ("reusable", "no-map", "linux,cma-default"):
        if flag in node.properties:
            lines.append(f"    {flag}: true")
    regs = view.reg_pairs(path)
    if regs:
        base, size = regs[0]
        lines.append(f"    reg: [{base:#010x}, {_size(size)}]")
        if len(regs) > 1:
            lines.append(f"    # and {len(regs) - 1} more reg pair(s), kept in the tree")
    elif "size" in node.properties:
        lines.append(f"    size: {_size(int.from_bytes(node.properties['size'], 'big'))}")
    else:
        return [f"  # {node.name}: neither reg nor size; left out (the tree keeps it)"]
    if "alignment" in node.properties:
        lines.append(f"    alignment: {_size(int.from_bytes(node.properties['alignment'], 'big'))}")
    if "alloc-ranges" in node.properties:
        ranges = fdt.decode_ranges(node.properties["alloc-ranges"], a, s, what="alloc-ranges")
        lines.append(f"    alloc-ranges: [{', '.join(f'[{b:#010x}, {_size(z)}]' for b, z in ranges)}]")
    return lines


def _device(view: TreeView, path: str, node: fdt.Node, region_labels: dict[str, str]) -> list[str]:
    key = _label_for(view, path)
    lines = [f"  {key}:   # {path}"]
    compat = [c for c in _strings(node, "compatible") if "," in c]
    if compat:
        lines.append(f"    compatible: [{', '.join(_str(c) for c in compat)}]")
    regs = view.reg_pairs(path) if view.cells(path.rsplit("/", 1)[0] or "/") == (1, 1) else []
    if regs:
        lines.append(f"    reg: [{regs[0][0]:#010x}, {regs[0][1]:#x}]")
    refs = []
    for handle in fdt.decode_cells(node.properties["memory-region"], what="memory-region"):
        target = view.phandles.get(handle)
        if target is None or target not in region_labels:
            return [f"  # {path}: memory-region <{handle:#x}> is not a /reserved-memory node; left out"]
        refs.append(region_labels[target])
    lines.append(f"    memory-region: [{', '.join(refs)}]")
    names = _strings(node, "memory-region-names")
    if names:
        lines.append(f"    memory-region-names: [{', '.join(_str(n) for n in names)}]")
    return lines


def default_name(source: Path) -> str:
    """s5pv210-galaxys.dts -> galaxys: the board's part of a kernel dts name."""
    stem = source.stem.split("-", 1)[-1] if "-" in source.stem else source.stem
    name = re.sub(r"[^a-z0-9_-]", "-", stem.lower()).strip("-")
    return name if name and name[0].isalpha() else "board"


def import_cli(source: Path, out: Path | None, *, name: str | None, includes: list[Path], kernel: str,
               max_order: int | None) -> int:
    """Write the board file, then check it as `cma-tool validate` would; exit 1 if that finds errors."""
    view, read_as = read_tree(source, includes=tuple(includes))
    text = board_yaml(view, name=name or default_name(source), read_as=read_as, profile=kernel,
                      max_order=max_order)
    if out is None:
        sys.stdout.write(text)
        return ExitCode.OK
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    from cma_tool.plan import load_checked_board

    result = load_checked_board(out)
    for d in result.diagnostics:
        print(str(d), file=sys.stderr)
    errors = sum(1 for d in result.diagnostics if d.severity == "error")
    print(out)
    return ExitCode.CONFIG if errors else ExitCode.OK
