"""`cma-tool dtb show|patch`: read a binary device tree, or rewrite its memory and CMA nodes from a board.

The patch path is for vendor DTBs that ship with a board and have no source:
/memory gets the board's banks, /reserved-memory the board's regions (with
memory-region phandles on the consumers the DTB can resolve by label, alias
or path), and in /chosen/bootargs only the words cma-tool owns change: the
vendor's ``root=``, ``rootwait``, ``console=`` and the rest are what the board
boots with, and dropping them makes a board that does not boot.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
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


#: One kernel command-line word as the kernel's next_arg() splits them: spaces
#: separate words except inside double quotes (``dyndbg="file x.c +p"``).
_WORD = re.compile(r'(?:[^\s"]+|"[^"]*"?)+')


def cmdline_words(text: str) -> list[str]:
    return _WORD.findall(text)


def _key(word: str) -> str:
    return word.split("=", 1)[0]


@dataclass(frozen=True)
class MergedBootargs:
    before: str | None  # None: the DTB had no /chosen/bootargs
    after: str
    notes: tuple[str, ...]


def merge_bootargs(existing: str | None, planned: str, owned: frozenset[str]) -> MergedBootargs:
    """The vendor's command line with only the ``owned`` keys replaced by the plan's.

    Each owned key takes the place of its first occurrence in the vendor's line
    (or goes last when the vendor had none); a vendor word of an owned key the
    plan does not set is dropped, because the plan was made without it (a
    vendor ``cma=`` would bypass the planned default node). Every other word
    stays, in order. Words after ``--`` belong to init and are never touched.
    """
    planned_words = cmdline_words(planned)
    if existing is None or not existing.strip():
        return MergedBootargs(existing, " ".join(planned_words),
                              ("the DTB had no bootargs: it gets the whole generated command line",))
    mine: dict[str, list[str]] = {}
    for word in planned_words:
        if _key(word) in owned:
            mine.setdefault(_key(word), []).append(word)
    for key, words in mine.items():
        if key != "mem":  # early_param keeps the last cma=/coherent_pool=; mem= is one word per bank
            mine[key] = words[-1:]
    words = cmdline_words(existing)
    kernel_part, init_part = words, []
    if "--" in words:
        cut = words.index("--")
        kernel_part, init_part = words[:cut], words[cut:]
    out: list[str] = []
    placed: set[str] = set()
    notes: list[str] = []
    for word in kernel_part:
        key = _key(word)
        if key not in owned:
            out.append(word)
            continue
        if key not in placed:
            placed.add(key)
            out.extend(mine.get(key, []))
        if word not in mine.get(key, []):
            replaced = " ".join(mine.get(key, [])) or "nothing: the plan does not set it"
            notes.append(f"{word} replaced by {replaced}")
    for key, planned_key_words in mine.items():
        if key not in placed:
            out.extend(planned_key_words)
    if "mem" not in owned:
        for word in kernel_part:
            if _key(word) == "mem":
                notes.append(f"kept the vendor's {word}: it overrides the DTB's /memory, which the plan assumed "
                             "holds the board's banks (set boot: banks-via: mem= to plan mem= instead)")
    return MergedBootargs(existing, " ".join(out + init_part), tuple(notes))


def owned_keys(board: Board) -> frozenset[str]:
    """The command-line keys a plan decides: cma= and coherent_pool= always, mem= when it places the banks."""
    keys = {"cma", "coherent_pool"}
    if board.boot.banks_via == "mem=":
        keys.add("mem")
    return frozenset(keys)


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


def dtb_bootargs(data: bytes, *, source: str) -> str | None:
    """/chosen/bootargs of a DTB, or None when it has none."""
    chosen = fdt.decode(data, source=source).find("/chosen")
    value = chosen.properties.get("bootargs") if chosen is not None else None
    return None if value is None else fdt.decode_string(value, what=f"{source}: /chosen/bootargs")


def dtb_patch_cli(path: Path, board_path: Path, output: Path, *, bootargs: str | None) -> int:
    from cma_tool.generate.bootargs import kernel_cmdline

    plan = make_plan(board_path)
    data = read_dtb(path)
    before = dtb_bootargs(data, source=str(path))
    if bootargs is not None:
        merged = MergedBootargs(before, bootargs, ("--bootargs: set as given",))
    else:
        merged = merge_bootargs(before, kernel_cmdline(plan.board, plan.profile).text, owned_keys(plan.board))
    blob = patch_for_board(data, plan.board, merged.after, source=str(path))
    try:
        output.write_bytes(blob)
    except OSError as exc:
        raise ConfigError(f"{output}: cannot write: {exc.strerror or exc}") from None
    print(f"bootargs before: {merged.before if merged.before is not None else '(none)'}")
    print(f"bootargs after:  {merged.after}")
    for note in merged.notes:
        print(f"{path}: note: {note}", file=sys.stderr)
    print(f"{output}: {len(plan.board.banks)} bank(s), {len(plan.board.regions)} reserved region(s)", file=sys.stderr)
    return ExitCode.OK
