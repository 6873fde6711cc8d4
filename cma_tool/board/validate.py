"""Static checks of a board: everything that can be said before placing regions.

Each check states the kernel rule it enforces, so a message can tell the user
what the kernel would do (often: silently something else) and how to fix it.
Placement and fit checks need the allocator model and live in plan.py.
"""

from __future__ import annotations

import difflib
from typing import Protocol

from cma_tool.board.types import Bank, Board, Device, Region
from cma_tool.board.yamlpos import Where
from cma_tool.errors import DiagnosticSink
from cma_tool.model.cmdline import parse_cma_cmdline
from cma_tool.model.profiles import BoardFileApi, KernelProfile, area_alignment
from cma_tool.sizes import bare_bytes_hint, format_size, round_up


class _Located(Protocol):
    @property
    def where(self) -> Where: ...


def _at(sink: DiagnosticSink, item: _Located | Where, message: str, hint: str = "", *, warning: bool = False) -> None:
    """Report at ``item``: a Where (the value at fault, e.g. ``region.at("size")``) or a located entry."""
    where = item if isinstance(item, Where) else item.where
    add = sink.warning if warning else sink.error
    add(message, file=where.file, line=where.line, col=where.col, hint=hint)


def in_banks(banks: tuple[Bank, ...], base: int, size: int) -> list[tuple[int, int]]:
    """The parts of [base, base+size) that are memory, one (base, size) per bank it overlaps."""
    out = []
    for bank in sorted(banks, key=lambda b: b.base):
        start, end = max(base, bank.base), min(base + size, bank.end)
        if start < end:
            out.append((start, end - start))
    return out


def mask_where(dev: Device, label: str | None) -> Where:
    """Where a DMA-mask problem is the user's to fix: the mask when written, else the region entry."""
    if any(k == "dma-mask-bits" for k, _ in dev.fields):
        return dev.at("dma-mask-bits")
    if label is not None and label in dev.memory_region:
        return dev.at(f"memory-region[{dev.memory_region.index(label)}]")
    return dev.where


def bank_of(banks: tuple[Bank, ...], base: int, size: int) -> Bank | None:
    """The bank holding [base, base+size) whole, or None."""
    for bank in banks:
        if bank.contains(base, size):
            return bank
    return None


def _range_problem(banks: tuple[Bank, ...], base: int, size: int) -> str | None:
    if bank_of(banks, base, size):
        return None
    touching = [b for b in banks if base < b.end and b.base < base + size]
    if not touching:
        return "lies outside every memory bank"
    return f"crosses the end of the bank at {touching[0].base:#010x} (ends {touching[0].end:#010x})"


def region_bank(board: Board, region: Region) -> Bank | None:
    """The bank a region must land in, when that is known before placement."""
    if region.reg is not None:
        return bank_of(board.banks, *region.reg)
    banks = {bank_of(board.banks, *r) for r in region.alloc_ranges}
    if len(banks) == 1:
        return banks.pop()
    return None


def _board_file_call(profile: KernelProfile) -> str | None:
    """The call a board-file kernel reserves each area with (it rounds base and size up), or None (device tree)."""
    match profile.facts.reservation:
        case BoardFileApi.DMA_DECLARE_CONTIGUOUS:
            return "dma_declare_contiguous()"
        case BoardFileApi.CMA_2011:
            return "cma_reserve()"
        case _:
            return None



def _bypassed_misaligned(sink: DiagnosticSink, region: Region, name: str, unit_text: str) -> None:
    _at(sink, region.at("reg" if region.reg is not None else "size"),
        f"{name} is not aligned to {unit_text}, but cma= on the command line bypasses it, so the kernel never "
        "checks it; without cma= it would be refused (\"Reserved memory: incorrect alignment of CMA region\")",
        hint=f"use a base and size that are multiples of {unit_text}", warning=True)


def check_board(board: Board, sink: DiagnosticSink, *, extra_bootargs: str = "",
                profile: KernelProfile | None = None) -> None:
    """Every static rule.

    ``extra_bootargs`` is the command line added to the board's own (as run and
    model add it); ``profile`` the kernel to check for when it is not the
    board's own (``--kernel``).
    """
    profile = profile or board.kernel.profile
    cmdline = " ".join(a for a in (board.kernel.bootargs, extra_bootargs) if a)
    # rmem_cma_setup() bypasses a linux,cma-default node before any other check when cma= was given.
    default_bypassed = profile.reads_device_tree and parse_cma_cmdline(
        cmdline, with_placement=profile.has_cmdline_placement).given
    # A device-tree kernel refuses a misaligned CMA node; a board-file kernel's call rounds it up.
    rounds_up = _board_file_call(profile)
    unit = area_alignment(profile)
    unit_text = format_size(unit)
    if rounds_up and unit != profile.cma_min_bytes:
        why_unit = (f"on the {profile.name} profile {rounds_up} aligns every area to {unit_text} "
                    f"(PAGE_SIZE << max(MAX_ORDER, pageblock_order)), more than its {profile.cma_unit_text}")
    else:
        why_unit = (f"on the {profile.name} profile (max-order {profile.max_order}) the CMA unit is "
                    f"{profile.cma_unit_text}; CMA areas are whole units")
    addr_limit = (1 << 40) if profile.lpae or profile.arch == "dma-direct" else (1 << 32)

    # Banks.
    if not board.banks:
        return
    for bank in board.banks:
        if bank.base % profile.page_size or bank.size % profile.page_size:
            _at(sink, bank, f"bank at {bank.base:#x} is not page aligned ({profile.page_size} bytes)")
        if bank.end > addr_limit:
            _at(sink, bank, f"bank at {bank.base:#x} ends above {format_size(addr_limit)}, which this kernel cannot address",
                hint="set kernel: lpae: true for a kernel with LPAE")
    ordered = sorted(board.banks, key=lambda b: b.base)
    for a, b in zip(ordered, ordered[1:], strict=False):
        if b.base < a.end:
            _at(sink, b, f"bank at {b.base:#010x} overlaps the bank at {a.base:#010x} (which ends at {a.end:#010x})",
                hint="memory banks must not overlap; check base and size")

    # Regions.
    labels: dict[str, Region] = {}
    defaults = [r for r in board.regions if r.cma_default]
    for region in board.regions:
        if region.label:
            if region.label in labels:
                _at(sink, region.at("label"), f"label '{region.label}' is used twice")
            labels[region.label] = region
        name = f"reserved-memory node '{region.node}'"
        if region.reusable and region.no_map:
            _at(sink, region.at("no-map"), f"{name} is both reusable and no-map",
                hint="the binding forbids it: CMA needs reusable without no-map; drop no-map")
            continue
        if region.cma_default and not region.is_cma:
            _at(sink, region.at("linux,cma-default"), f"{name} has linux,cma-default but is not a CMA pool",
                hint="add compatible: shared-dma-pool and reusable: true")
        bypassed = default_bypassed and region.cma_default
        if region.reg is not None:
            base, size = region.reg
            problem = _range_problem(board.banks, base, size)
            if problem:
                _at(sink, region.at("reg"), f"{name} [{base:#010x}, +{format_size(size)}] {problem}",
                    hint="move it inside one bank: " + ", ".join(f"[{b.base:#010x}, +{format_size(b.size)}]" for b in board.banks))
            if bypassed and region.is_cma and (base % unit or size % unit):
                _bypassed_misaligned(sink, region, name, unit_text)
            elif rounds_up and region.is_cma and (base % unit or size % unit):
                _at(sink, region.at("reg"), f"{name} at {base:#010x} size {format_size(size)} is not aligned to "
                    f"{unit_text}: {rounds_up} rounds it up to {round_up(base, unit):#010x} size "
                    f"{format_size(round_up(size, unit))}", hint=f"{why_unit}; write the base and size it gets",
                    warning=True)
            elif region.is_cma and (base % unit or size % unit):
                fallback = (f"; as the default node it is replaced by the Kconfig default area "
                            f"({profile.cma_size_mbytes} MiB, named 'reserved')") if region.cma_default else ""
                hint = f"{why_unit}; use a base and size that are multiples of {unit_text}"
                if "reg" in region.bare and size % unit:
                    hint = bare_bytes_hint(size) + f"; CMA areas are multiples of {unit_text} on this kernel"
                _at(sink, region.at("reg"),
                    f"{name} at {base:#010x} size {format_size(size)} is not aligned to {unit_text}: the kernel refuses it "
                    f"(\"Reserved memory: incorrect alignment of CMA region\"){fallback}", hint=hint)
        elif bypassed and region.size is not None and region.is_cma and region.size % unit:
            _bypassed_misaligned(sink, region, name, unit_text)
        elif rounds_up and region.size is not None and region.is_cma and region.size % unit:
            _at(sink, region.at("size"), f"{name} size {format_size(region.size)} is not a multiple of {unit_text}: "
                f"{rounds_up} rounds it up to {format_size(round_up(region.size, unit))}",
                hint=f"{why_unit}; write the size it gets", warning=True)
        elif region.size is not None and region.is_cma and region.size % unit:
            if region.cma_default:
                consequence = (f"and silently creates the Kconfig default area instead "
                               f"({profile.cma_size_mbytes} MiB, named 'reserved')")
            else:
                consequence = "and the pool does not exist at all"
            up = round_up(region.size, unit)
            if "size" in region.bare:
                # "size: 64" is 64 bytes; rounding that up to one unit would be a wrong size to suggest.
                hint = bare_bytes_hint(region.size) + f"; CMA areas are multiples of {unit_text} on this kernel"
            else:
                hint = f"{why_unit}; use size: {format_size(up)}"
            _at(sink, region.at("size"),
                f"{name} size {format_size(region.size)} is not a multiple of {unit_text}: the kernel refuses it "
                f"(\"Reserved memory: incorrect alignment of CMA region\") {consequence}", hint=hint)
        size_key = "reg" if region.reg is not None else "size"
        requested = region.requested_size
        if size_key in region.bare and 0 < requested < profile.page_size and not (region.is_cma and requested % unit):
            # Not said twice: a CMA node's unit error above already explains the bytes in its hint.
            _at(sink, region.at(size_key), f"{name} size {requested} is {format_size(requested)}: a plain number "
                "is bytes", hint=bare_bytes_hint(requested), warning=True)
        # alloc-ranges are address ranges, not banks: memblock allocates inside the memory they
        # overlap, so a range may span a hole between banks; only a range with no memory is moot.
        pieces = []
        for i, (rbase, rsize) in enumerate(region.alloc_ranges):
            mine = in_banks(board.banks, rbase, rsize)
            pieces += mine
            if not mine:
                _at(sink, region.at(f"alloc-ranges[{i}]"),
                    f"{name} alloc-range [{rbase:#010x}, +{format_size(rsize)}] holds no memory: the kernel "
                    "finds nothing there and tries the next range", warning=True)
        if region.size is not None and region.alloc_ranges and pieces and all(p[1] < region.size for p in pieces):
            largest = max(p[1] for p in pieces)
            _at(sink, region.at("size"), f"{name} size {format_size(region.size)} is larger than the memory of "
                f"any one bank inside its alloc-ranges (largest: {format_size(largest)})",
                hint="an area is one contiguous block: it cannot span a hole between banks")
        if (region.cma_default and region.is_cma and (region.reg or region.alloc_ranges)
                and profile.facts.reservation is BoardFileApi.DMA_DECLARE_CONTIGUOUS):
            key = "reg" if region.reg else "alloc-ranges"
            _at(sink, region.at(key), f"{name}: {key} has no effect on {profile.name}: the default area is made by "
                "dma_contiguous_reserve() after the board file's hook, top-down below the lowmem/DMA limit",
                hint="give the area a device of its own (dma_declare_contiguous) to place it", warning=True)
        if region.alignment is not None and region.is_cma and region.alignment < unit:
            _at(sink, region.at("alignment"), f"{name} alignment {format_size(region.alignment)} has no effect: "
                f"CMA areas are aligned to at least {unit_text} on this kernel", warning=True)
        end = region.reg[0] + region.reg[1] if region.reg else None
        if end is not None and end > addr_limit:
            _at(sink, region.at("reg"), f"{name} ends above {format_size(addr_limit)}")
    if len(defaults) > 1:
        for extra in defaults[1:]:
            _at(sink, extra.at("linux,cma-default"),
                f"more than one node has linux,cma-default ('{defaults[0].node}' and '{extra.node}')",
                hint="the kernel keeps only the last one it sees; mark exactly one")
    statics = sorted((r for r in board.regions if r.reg is not None), key=lambda r: r.reg[0] if r.reg else 0)
    for lower, upper in zip(statics, statics[1:], strict=False):
        assert lower.reg is not None and upper.reg is not None
        if upper.reg[0] < lower.reg[0] + lower.reg[1]:
            _at(sink, upper.at("reg"), f"reserved-memory node '{upper.node}' overlaps '{lower.node}'")

    # CMA area slots: every DT CMA node, plus the default area when DT has none.
    cma_nodes = [r for r in board.regions if r.is_cma]
    areas = len(cma_nodes) + (0 if defaults else 1)
    if areas > profile.area_slots:
        _at(sink, cma_nodes[profile.area_slots - (0 if defaults else 1)] if cma_nodes else board.kernel,
            f"{areas} CMA areas but the kernel has {profile.area_slots} slots: \"Not enough slots for CMA reserved "
            f"regions!\" and the rest are not created",
            hint=f"raise CONFIG_CMA_AREAS (kernel: cma-areas:, now {profile.config_cma_areas}) or merge regions")

    # Devices.
    for dev in board.devices:
        what = f"device '{dev.name}'"
        for i, label in enumerate(dev.memory_region):
            if label not in labels and board.region(label) is None:
                close = difflib.get_close_matches(label, list(labels), n=1)
                _at(sink, dev.at(f"memory-region[{i}]"), f"{what}: memory-region '{label}' names no reserved-memory node",
                    hint=f"did you mean '{close[0]}'?" if close else f"labels: {', '.join(labels) or 'none'}")
        if dev.memory_region_names and dev.memory_region and len(dev.memory_region_names) != len(dev.memory_region):
            _at(sink, dev.at("memory-region-names"), f"{what}: {len(dev.memory_region)} memory-region entries but "
                f"{len(dev.memory_region_names)} memory-region-names ({', '.join(dev.memory_region_names)})")
        if dev.memory_region and not dev.honours_memory_region:
            _at(sink, dev.at("memory-region"), f"{what}: its driver ({dev.driver}) never calls of_reserved_mem_device_init(), so "
                "memory-region has no effect and its buffers come from the default area", warning=True)
        if dev.regions_in_distinct_banks and len(dev.memory_region) >= 2:
            found = [(label, board.region(label)) for label in dev.memory_region]
            placed = [(label, region_bank(board, r)) for label, r in found if r is not None]
            seen: dict[int, str] = {}
            for label, home in placed:
                if home is None:
                    continue
                if home.base in seen:
                    _at(sink, dev.at("memory-region"), f"{what}: regions '{seen[home.base]}' and '{label}' are both in the bank at "
                        f"{home.base:#010x}, but its two memory ports need different banks",
                        hint="put the left region (firmware) in bank 0 and the right one in bank 1")
                seen[home.base] = label
        for buf in dev.buffers:
            if buf.region and buf.region not in dev.memory_region:
                _at(sink, buf, f"{what}: buffer '{buf.name}' wants region '{buf.region}', which is not in its "
                    f"memory-region ({', '.join(dev.memory_region) or 'none'})")
        limit = dev.dma_limit
        for label in dev.memory_region if dev.honours_memory_region else ():
            target = board.region(label)
            if target is not None and target.reg is not None and target.reg[0] + target.reg[1] > limit:
                _at(sink, mask_where(dev, label), f"{what}: region '{label}' ends at {target.reg[0] + target.reg[1]:#x}, beyond its "
                    f"{dev.dma_mask_bits}-bit DMA mask ({limit:#x})")
        if (dev.captures or dev.buffers) and not dev.driver:
            _at(sink, dev.at("needs"), f"{what} has needs but no 'driver'", warning=True,
                hint="name the Linux driver so the capture test knows what to load")
