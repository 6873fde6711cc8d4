"""Where each CMA region lands, who uses it, and whether their needs fit.

Placement is not re-implemented here: the board is turned into the kernel's
boot inputs and the bundled model boots them (static nodes, dynamic nodes,
default area, top-down), so `plan` and `model` can never disagree. The fit
check replays every device's needs through the model's allocator, so
alignment waste counts exactly as the kernel counts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cma_tool import model as cma_model
from cma_tool.board.load import read_board
from cma_tool.board.types import Bank, Board, Device, Region
from cma_tool.board.validate import bank_of, check_board, mask_where
from cma_tool.board.yamlpos import NOWHERE, Where
from cma_tool.errors import ConfigError, Diagnostic, DiagnosticSink
from cma_tool.model.profiles import KernelProfile, area_alignment
from cma_tool.sizes import format_size, round_up

#: Model problem codes that board/validate.py already reports, in the user's terms and
#: at the right line; the model's kernel-worded copy would only repeat them.
STATICALLY_CHECKED = frozenset({"no-slot", "reusable-no-map", "reg-and-size", "no-reg-or-size", "overlap",
                                "alignment-not-pow2", "outside-memory", "cma-alignment"})


@dataclass(frozen=True)
class Need:
    """One buffer a device will ask for, in bytes, and where it asks."""

    device: str
    what: str  # "1920x1080 YUYV buffer 1/4", "firmware"
    size: int
    area: str | None  # area name, None = the default area


@dataclass(frozen=True)
class PlacedArea:
    name: str  # the kernel's area name ("linux,cma", "region@33000000", "reserved")
    label: str | None
    source: str  # dt-static | dt-dynamic | cmdline | kconfig
    base: int
    size: int
    bank: Bank | None
    is_default: bool
    users: tuple[str, ...]
    need: int  # sum of the page-aligned buffers
    footprint: int  # bytes the allocator really spans, alignment gaps included (0 if it does not fit)
    fits: bool
    where: Where = NOWHERE

    @property
    def end(self) -> int:
        return self.base + self.size

    @property
    def headroom(self) -> int:
        return self.size - self.footprint


@dataclass
class Plan:
    board: Board
    profile: KernelProfile
    cmdline: str
    areas: list[PlacedArea]
    boot_lines: list[str]
    needs: list[Need]
    diagnostics: list[Diagnostic] = field(default_factory=list)


def boot_input(board: Board, extra_bootargs: str = "", pinned: tuple[tuple[str, int], ...] = ()) -> cma_model.BootInput:
    """The board as the kernel sees it at boot: banks, /reserved-memory, command line."""
    cmdline = " ".join(a for a in (board.kernel.bootargs, extra_bootargs) if a)
    return cma_model.BootInput(
        banks=tuple(cma_model.Bank(b.base, b.size) for b in board.banks),
        nodes=tuple(_node(r) for r in board.regions),
        cmdline=cmdline,
        early=tuple(cma_model.EarlyReservation(what, base, size) for what, base, size in board.boot.early_reservations),
        pinned=pinned,
        arm_layout=board.kernel.layout,
    )


def _node(r: Region) -> cma_model.ReservedNode:
    return cma_model.ReservedNode(
        name=r.node, reg=r.reg, size=r.size, alignment=r.alignment, alloc_ranges=r.alloc_ranges,
        compatible=r.compatible, reusable=r.reusable, no_map=r.no_map, cma_default=r.cma_default,
    )


def device_area(board: Board, dev: Device, region_label: str | None, default_area: str | None) -> str | None:
    """The CMA area a device's buffer comes from, by the kernel's rules.

    A device uses its memory-region only if its driver calls
    of_reserved_mem_device_init(); otherwise dma_alloc_* falls to the default area.
    """
    if not dev.honours_memory_region or not dev.memory_region:
        return default_area
    label = region_label or dev.memory_region[0]
    region = board.region(label)
    if region is None or not region.is_cma:
        return default_area
    return region.node


def device_needs(board: Board, default_area: str | None) -> list[Need]:
    from cma_tool.model.scenario import sizeimage

    page = board.kernel.profile.page_size
    out: list[Need] = []
    for dev in board.devices:
        for cap in dev.captures:
            size = sizeimage(cap.width, cap.height, cap.fourcc)
            size = -(-size // page) * page  # vb2 allocates PAGE_ALIGN(sizeimage) per buffer
            area = device_area(board, dev, None, default_area)
            for i in range(cap.buffers):
                out.append(Need(dev.name, f"{cap.width}x{cap.height} {cap.fourcc} buffer {i + 1}/{cap.buffers}", size, area))
        for buf in dev.buffers:
            out.append(Need(dev.name, buf.name, -(-buf.size // page) * page,
                            device_area(board, dev, buf.region, default_area)))
    return out


def resolve_profile(board: Board, kernel: str | None) -> KernelProfile:
    if kernel is None:
        return board.kernel.profile
    from cma_tool.model.profiles import kernel_names, kernel_profile

    try:
        profile = kernel_profile(kernel)  # a profile's name, or a Debian kernel's (debian-6.1-arm64)
    except KeyError:
        raise ConfigError(f"unknown kernel profile '{kernel}'", hint=f"known: {', '.join(kernel_names())}") from None
    # Keep the board's own build facts (max-order...) only when it names the same profile.
    if profile.name == board.kernel.profile.name:
        return board.kernel.profile
    return profile


def plan_board(board: Board, *, kernel: str | None = None, bootargs: str = "",
               pinned: tuple[tuple[str, int], ...] = (), misfit_is_error: bool = True, advise: bool = False) -> Plan:
    """Boot the board through the model and replay its needs. Never raises for fit problems:
    they become diagnostics on the plan (warnings when ``misfit_is_error`` is false: a run
    that means to exhaust an area). ``advise`` adds the sizing advice `plan` and `validate`
    give (areas without users, areas more than twice their need); a run does not repeat it."""
    profile = resolve_profile(board, kernel)
    inp = boot_input(board, bootargs, pinned)
    booted = cma_model.boot(profile, inp)
    sink = DiagnosticSink()
    region_by_node = {r.node: r for r in board.regions}
    for problem in booted.problems:
        if problem.severity == "info" or problem.code in STATICALLY_CHECKED:
            continue
        region = region_by_node.get(problem.subject)
        # What the kernel says about a node is about where and how big it is: its reg or size line.
        where = region.at("reg" if region.reg is not None else "size") if region else board.kernel.where
        add = sink.error if problem.severity == "error" else sink.warning
        add(f"the kernel would say: {problem.message}", file=where.file, line=where.line, col=where.col)
    needs = device_needs(board, booted.default_area)
    fit = replay_needs(profile, booted, [(n.area, n.size, f"{n.device}: {n.what}") for n in needs])
    areas: list[PlacedArea] = []
    for area in booted.areas:
        region = region_by_node.get(area.name)
        users = sorted({n.device for n in needs if n.area == area.name})
        mine = [n for n in needs if n.area == area.name]
        result = fit.get(area.name)
        areas.append(PlacedArea(
            name=area.name,
            label=region.label if region else None,
            source=area.source,
            base=area.base,
            size=area.size,
            bank=bank_of(board.banks, area.base, area.size),
            is_default=area.name == booted.default_area,
            users=tuple(users),
            need=sum(n.size for n in mine),
            footprint=result.footprint if result else 0,
            fits=result.fits if result else True,
            where=region.where if region else board.kernel.where,
        ))
    for placed in areas:
        result = fit.get(placed.name)
        if result is not None and not result.fits:
            where = _area_where(board, placed)  # the size that is too small
            (sink.error if misfit_is_error else sink.warning)(
                f"'{placed.label or placed.name}' ({format_size(placed.size)}) cannot hold its users' buffers: "
                f"{result.failed} failed; {', '.join(placed.users)} need {format_size(placed.need)} "
                f"({len([n for n in needs if n.area == placed.name])} buffers, "
                f"{format_size(result.wanted_footprint)} with alignment)",
                file=where.file, line=where.line, col=where.col,
                hint=f"grow it to at least {format_size(round_up(result.wanted_footprint, area_alignment(profile)))}"
                     " or reduce buffer counts" + _how_to_size(board, placed))
    _check_dma_masks(board, areas, booted.default_area, sink)
    if advise:
        _check_use(board, profile, areas, booted.default_area, sink)
    needs_without_area = [n for n in needs if n.area is None]
    if needs_without_area and profile.arch == "arm32":
        devs = sorted({n.device for n in needs_without_area})
        w = board.kernel.where
        sink.warning(f"no CMA area serves {', '.join(devs)}: their buffers will come from normal pages "
                     "and large ones may fail", file=w.file, line=w.line, col=w.col)
    return Plan(board, profile, inp.cmdline, areas, list(booted.log), needs, sink.items)


def _region_of(board: Board, area_name: str) -> Region | None:
    """The node an area came from (the kernel names a device-tree area after its node); None for cma=/Kconfig."""
    return next((r for r in board.regions if r.node == area_name), None)


def _area_where(board: Board, area: PlacedArea) -> Where:
    """Where an area's size was said: its node's size/reg line, else the kernel section (cma=, Kconfig)."""
    region = _region_of(board, area.name)
    if region is not None:
        return region.at("reg" if region.reg is not None else "size")
    # The kernel's own default area: sized by cma= (the board's bootargs, when it is there) or Kconfig.
    if area.source == "cmdline" and "cma=" in board.kernel.bootargs:
        return board.kernel.at("bootargs")
    return board.kernel.at("cma-size-mbytes")


def _how_to_size(board: Board, area: PlacedArea) -> str:
    """Where the size of an area without a node of its own is set, for a hint."""
    if _region_of(board, area.name) is not None:
        return ""
    if area.source == "cmdline":
        return " (cma= on the command line sets it)"
    return " (it is the Kconfig default area: kernel: cma-size-mbytes:, a linux,cma-default node or cma= sets it)"


def _check_use(board: Board, profile: KernelProfile, areas: list[PlacedArea], default_area: str | None,
               sink: DiagnosticSink) -> None:
    """An area nothing uses, or one more than twice what its users need, holds memory for nobody.

    CMA pages still serve movable allocations meanwhile, but the page allocator
    cannot give them to anything unmovable, and a board file that asks for
    512 MiB for a 9 MiB need usually meant something else.
    """
    reached = {area for dev in board.devices for area, _ in device_areas(board, dev, default_area)}
    for area in areas:
        where = _area_where(board, area)
        name = f"'{area.label or area.name}' ({format_size(area.size)})"
        if area.name not in reached:
            sink.warning(f"{name} has no user: no device's DMA allocations reach it", file=where.file,
                         line=where.line, col=where.col,
                         hint="remove it, or name it in the memory-region of a device whose driver reads it")
        elif area.need and area.fits and area.footprint * 2 < area.size:
            smallest = round_up(area.footprint, area_alignment(profile))
            sink.warning(f"{name} is more than twice what its users need ({format_size(area.footprint)} with "
                         "alignment): more than half of it is never used", file=where.file, line=where.line,
                         col=where.col, hint=f"{format_size(smallest)} holds every declared need "
                                             f"(`cma-tool size {board.path}` sizes every area)")


def device_areas(board: Board, dev: Device, default_area: str | None) -> list[tuple[str, str | None]]:
    """Every CMA area a device's DMA allocations can come from, with the memory-region label that leads there.

    The default area counts too: a driver that never reads memory-region, or a
    device without one, allocates from it (label None).
    """
    out: list[tuple[str, str | None]] = []
    labels: list[str | None] = list(dev.memory_region) if dev.honours_memory_region and dev.memory_region else [None]
    for label in labels:
        area = device_area(board, dev, label, default_area)
        if area is not None and all(area != a for a, _ in out):
            out.append((area, label if area != default_area else None))
    return out


def _check_dma_masks(board: Board, areas: list[PlacedArea], default_area: str | None, sink: DiagnosticSink) -> None:
    """Each user of each area must reach all of it with its DMA mask, the default area's users included."""
    by_name = {a.name: a for a in areas}
    for dev in board.devices:
        for area_name, label in device_areas(board, dev, default_area):
            placed = by_name.get(area_name)
            if placed is None or placed.end <= dev.dma_limit:
                continue
            region = board.region(label) if label else None
            if region is not None and region.reg is not None:
                continue  # a static region's end is known before placement: board/validate.py says it
            what = f"region '{label}'" if label else f"the default area '{placed.label or placed.name}'"
            how = ("restrict it with alloc-ranges below the mask" if label or placed.label
                   else "place the default area below the mask (a linux,cma-default node with alloc-ranges, "
                        "or cma=SIZE@BASE-LIMIT)")
            where = mask_where(dev, label)
            sink.error(f"device '{dev.name}': {what} is placed at {placed.base:#x}..{placed.end:#x}, beyond its "
                       f"{dev.dma_mask_bits}-bit DMA mask ({dev.dma_limit:#x})",
                       file=where.file, line=where.line, col=where.col, hint=how)


@dataclass(frozen=True)
class Fit:
    fits: bool
    footprint: int  # bytes from the area's base to the end of its last buffer
    wanted_footprint: int  # the same in an area large enough for everything
    failed: str  # the first buffer that did not fit ("" if all did)


#: The largest area the fit replay models: 16 GiB of 4 KiB pages, more than any CMA area a board
#: can hold (ARM32 addresses 4 GiB without LPAE). The model's bitmap grows with the area, so a
#: need for more (a typo'd coherent_pool=16E) is said as a number, not modelled.
MAX_MODELLED_PAGES = 1 << 22


def replay_needs(profile: KernelProfile, booted: cma_model.BootResult,
                 needs: list[tuple[str | None, int, str]]) -> dict[str, Fit]:
    """Allocate every need at once, in order, the way dma_alloc_coherent reaches CMA on ARM32.

    Returns per area whether all of its buffers fit and how much of the area they span.
    The wanted span comes from the same replay in a copy of the area made large enough.
    """
    import dataclasses

    from cma_tool.model.area import CmaState

    def requests(area: str) -> list[tuple[int, int, str]]:
        out = []
        for name, size, what in needs:
            if name == area:
                count = -(-size // profile.page_size)
                align = min(cma_model.get_order(size, profile.page_shift), profile.cma_alignment)
                out.append((count, align, what))
        return out

    def span(state: CmaState, area: cma_model.CmaArea, reqs: list[tuple[int, int, str]]) -> tuple[int, str]:
        end_pfn = area.base_pfn
        for pre in booted.preallocations:
            if pre.area == area.name:
                r = state.alloc(area.name, pre.count, pre.align)
                if r.pfn is not None:
                    end_pfn = max(end_pfn, r.pfn + pre.count)
        for count, align, what in reqs:
            r = state.alloc(area.name, count, align, no_warn=True)
            if r.pfn is None:
                return (end_pfn - area.base_pfn) * profile.page_size, what
            end_pfn = max(end_pfn, r.pfn + count)
        return (end_pfn - area.base_pfn) * profile.page_size, ""

    out: dict[str, Fit] = {}
    for area in booted.areas:
        reqs = requests(area.name)
        used, failed = span(CmaState(profile, (area,)), area, reqs)
        wanted = used
        if failed:
            total = sum(c for c, _, _ in reqs) + sum(p.count for p in booted.preallocations)
            big_count = (area.count + 2 * total + (1 << (profile.cma_alignment + 1)))
            if big_count > MAX_MODELLED_PAGES:
                # More than the board could ever give one area: say how much at least, without
                # modelling an area that size (the model's bitmap grows with the area).
                wanted = total * profile.page_size
            else:
                big = dataclasses.replace(area, count=big_count, size=big_count * profile.page_size)
                wanted, _ = span(CmaState(profile, (big,)), big, reqs)
        out[area.name] = Fit(not failed, used, wanted, failed)
    return out



@dataclass
class CheckedBoard:
    board: Board | None
    diagnostics: list[Diagnostic]
    plan: Plan | None = None


def load_checked_board(path: Path, *, kernel: str | None = None, bootargs: str = "",
                       allow_misfit: bool = False, advise: bool = False) -> CheckedBoard:
    """Every check there is (syntax, schema, static rules, placement and fit), all reported at once."""
    board, sink = read_board(path)
    if board is None:
        return CheckedBoard(None, sink.items)
    check_board(board, sink, extra_bootargs=bootargs, profile=resolve_profile(board, kernel))
    plan = None
    if board.banks:
        plan = plan_board(board, kernel=kernel, bootargs=bootargs, misfit_is_error=not allow_misfit, advise=advise)
        # Every finding is shown, the model's beside the static ones on the same line
        # (a refused node's boot hang is news next to its refusal); only repeats go.
        said = set(sink.items)
        for d in plan.diagnostics:
            if d not in said:
                sink.items.append(d)
                said.add(d)
    return CheckedBoard(board, sorted(sink.items, key=lambda d: (d.file, d.line, d.col)), plan)


def forced_note(diagnostics: list[Diagnostic]) -> str | None:
    """What to tell the user when --force planned past errors (None when there were none)."""
    n_err = sum(1 for d in diagnostics if d.severity == "error")
    if not n_err:
        return None
    return f"--force: {n_err} error(s) overridden; the result is what the model predicts for the board as written"


def area_errors(plan: Plan) -> dict[str, list[Diagnostic]]:
    """The errors said at a line of each area's node (its size:, reg:, ... or the node itself), by area name."""
    out: dict[str, list[Diagnostic]] = {}
    for area in plan.areas:
        region = _region_of(plan.board, area.name)
        if region is None:
            continue
        spots = {(region.where.file, region.where.line)} | {(w.file, w.line) for _, w in region.fields}
        mine = [d for d in plan.diagnostics if d.severity == "error" and (d.file, d.line) in spots]
        if mine:
            out[area.name] = mine
    return out


def missing_regions(plan: Plan) -> list[Region]:
    """CMA nodes the board declares that the kernel would not turn into areas (refused, bypassed, no room)."""
    made = {a.name for a in plan.areas}
    return [r for r in plan.board.cma_regions if r.node not in made and plan.profile.reads_device_tree]


def diagnostic_dict(d: Diagnostic) -> dict[str, object]:
    return {"severity": d.severity, "file": d.file, "line": d.line, "col": d.col, "message": d.message,
            "hint": d.hint}


def plan_or_errors(path: Path, *, kernel: str | None = None, bootargs: str = "",
                   ) -> tuple[Plan | None, list[Diagnostic], str]:
    """`plan`'s view: the plan with every diagnostic on it (errors included), or, for a board that
    could not be planned at all, None and a JSON document that says why (``--json`` always prints one)."""
    import json

    try:
        checked = load_checked_board(path, kernel=kernel, bootargs=bootargs, advise=True)
    except ConfigError as err:
        checked = CheckedBoard(None, err.diagnostics or [Diagnostic(err.message, str(path), 0, 0, "error", err.hint)])
    if checked.board is not None and checked.plan is not None:
        checked.plan.diagnostics = checked.diagnostics
        return checked.plan, checked.diagnostics, ""
    doc = {"board": checked.board.name if checked.board else path.stem, "valid": False, "regions": [],
           "diagnostics": [diagnostic_dict(d) for d in checked.diagnostics]}
    return None, checked.diagnostics, json.dumps(doc, indent=2)


def make_plan(path: Path, *, kernel: str | None = None, bootargs: str = "", allow_misfit: bool = False,
              allow_errors: bool = False) -> Plan:
    """The plan, or ConfigError with every problem if the board is not valid.

    ``allow_errors`` still plans a board the kernel would partly refuse (the model
    then predicts the refusal): for experiments that check the kernel's fallbacks.
    Boards that cannot be read at all always raise.
    """
    checked = load_checked_board(path, kernel=kernel, bootargs=bootargs, allow_misfit=allow_misfit)
    if checked.board is None or checked.plan is None or (
            not allow_errors and any(d.severity == "error" for d in checked.diagnostics)):
        raise ConfigError(diagnostics=checked.diagnostics)
    checked.plan.diagnostics = checked.diagnostics
    return checked.plan
