"""`cma-tool dtb show|patch`: read a binary device tree, or rewrite its memory and CMA nodes from a board.

The patch path is for vendor DTBs that ship with a board and have no source:
/memory gets the board's banks, /reserved-memory the board's regions (with
memory-region phandles on the consumers the DTB can resolve by label, alias
or path), and /chosen/bootargs the generated command line.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cma_tool.binfmt import fdt
from cma_tool.board.types import Board
from cma_tool.errors import ConfigError, ExitCode
from cma_tool.plan import make_plan


def read_dtb(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _lookup(tree: fdt.DeviceTree, ref: str) -> object | None:
    try:
        return fdt.resolve(tree, ref)
    except fdt.FdtError:
        return None


def dtb_show_cli(path: Path) -> int:
    print(fdt.show(fdt.decode(read_dtb(path), source=str(path))), end="")
    return ExitCode.OK


def patch_for_board(data: bytes, board: Board, bootargs: str, *, source: str) -> bytes:
    """A vendor DTB with the board's banks, reserved regions (and their consumers' phandles) and bootargs."""
    users: dict[str, list[str]] = {}
    for dev in board.devices:
        if dev.honours_memory_region:
            for label in dev.memory_region:
                users.setdefault(label, []).append(dev.name)
    tree = fdt.decode(data, source=source)
    missing = sorted({name for names in users.values() for name in names if _lookup(tree, name) is None})
    for name in missing:
        print(f"{source}: warning: no node '{name}' (label, alias or path) in this DTB: its memory-region is not set",
              file=sys.stderr)
    regions = [
        fdt.ReservedRegion(
            name=r.node, size=r.requested_size, base=r.reg[0] if r.reg else None, alignment=r.alignment,
            alloc_ranges=tuple(fdt.MemoryBank(b, s) for b, s in r.alloc_ranges), compatible=r.compatible,
            reusable=r.reusable, no_map=r.no_map, default=r.cma_default, label=r.label,
            consumers=tuple(u for u in users.get(r.label or "", ()) if u not in missing),
        )
        for r in board.regions
    ]
    return fdt.patch(data, banks=[fdt.MemoryBank(b.base, b.size) for b in board.banks], reserved=regions,
                     bootargs=bootargs, source=source)


def dtb_patch_cli(path: Path, board_path: Path, output: Path, *, bootargs: str | None) -> int:
    from cma_tool.generate.bootargs import kernel_cmdline

    plan = make_plan(board_path)
    text = bootargs if bootargs is not None else kernel_cmdline(plan.board, plan.profile).text
    blob = patch_for_board(read_dtb(path), plan.board, text, source=str(path))
    try:
        output.write_bytes(blob)
    except OSError as exc:
        raise ConfigError(f"{output}: cannot write: {exc.strerror or exc}") from None
    print(f"{output}: {len(plan.board.banks)} bank(s), {len(plan.board.regions)} reserved region(s), "
          f"bootargs {text!r}", file=sys.stderr)
    return ExitCode.OK
