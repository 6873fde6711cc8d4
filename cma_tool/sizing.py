"""`cma-tool size`: the smallest CMA areas that hold every declared need and every scenario.

Each workload (the board's own needs, all held at once, as validate's fit
check replays them; then each ``--scenario``, step by step) runs through the
allocator model on the board's areas made large enough for everything, at
their planned bases. cma_alloc is first fit from the area's lowest bit, so an
allocation lands where it would in any area at least as large as the highest
page the workload ever held: that high-water mark, rounded up to the
kernel's CMA unit, is the smallest area that lets every allocation succeed
exactly as planned. (Bases stay multiples of the unit, and a buffer's
alignment, capped by CONFIG_CMA_ALIGNMENT at order 8, is finer than the unit,
order 10 or more: an area of the new size, wherever it lands, holds its
buffers at the same offsets.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cma_tool import model as cma_model
from cma_tool.board.types import Board
from cma_tool.errors import ConfigError
from cma_tool.model.area import CmaState
from cma_tool.model.profiles import PROFILES, CmdlineCma, KernelProfile, area_alignment
from cma_tool.model.scenario import AllocStep, CaptureStep, DmaAllocStep, Step
from cma_tool.model.simulate import run_steps
from cma_tool.plan import MAX_MODELLED_PAGES, boot_input, resolve_profile
from cma_tool.sizes import format_size, round_up

BOARD_NEEDS = "board needs"


@dataclass(frozen=True)
class AreaSize:
    name: str  # the kernel's area name
    label: str | None
    is_default: bool
    current: int  # its size in the plan, bytes
    peak: int  # bytes from its base to the highest page any workload held
    smallest: int  # peak rounded up to the CMA unit (0: no declared need or scenario step reached it)
    set_by: str  # the workload that reached the peak

    @property
    def headroom(self) -> int:
        return self.smallest - self.peak

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "default": self.is_default, "current": self.current,
                "peak": self.peak, "smallest": self.smallest, "headroom": self.headroom, "set_by": self.set_by}


@dataclass(frozen=True)
class Sizing:
    board: Board
    profile: KernelProfile
    areas: tuple[AreaSize, ...]
    workloads: tuple[str, ...]

    @property
    def unit(self) -> int:
        return area_alignment(self.profile)

    @property
    def default(self) -> AreaSize | None:
        return next((a for a in self.areas if a.is_default), None)

    @property
    def cma_argument(self) -> str | None:
        """``cma=`` for the smallest default area, spelled as memparse() reads it back; None on a kernel without it."""
        from cma_tool.generate.bootargs import memparse_text

        default = self.default
        if default is None or self.profile.facts.cmdline_cma is CmdlineCma.ABSENT:
            return None
        return f"cma={memparse_text(default.smallest)}"

    def to_json(self) -> dict[str, Any]:
        return {"board": self.board.name, "profile": self.profile.name, "cma_unit": self.unit,
                "workloads": list(self.workloads), "cma": self.cma_argument,
                "areas": [a.to_json() for a in self.areas]}


def _requested_pages(profile: KernelProfile, steps: list[Step]) -> int:
    """Every page the steps could ask for (an upper bound on what they hold at once)."""
    total = 0
    for step in steps:
        if isinstance(step, CaptureStep):
            total += max(step.buffers, step.min_buffers) * -(-step.buffer_size // profile.page_size)
        elif isinstance(step, DmaAllocStep):
            total += -(-step.size // profile.page_size)
        elif isinstance(step, AllocStep):
            total += step.pages
    return total


def _high_water(profile: KernelProfile, booted: cma_model.BootResult, steps: list[Step],
                devices: dict[str, cma_model.Device], source: str) -> dict[str, int]:
    """Per area: bytes from its base to the highest page held at any point, in areas made large enough."""
    slack = 2 * _requested_pages(profile, steps) + sum(p.count for p in booted.preallocations) \
        + (1 << (profile.cma_alignment + 1))
    big = []
    for area in booted.areas:
        count = area.count + slack
        if count > MAX_MODELLED_PAGES:
            raise ConfigError(f"the workloads ask for more than {format_size(MAX_MODELLED_PAGES * profile.page_size)}"
                              f" of CMA (area {area.name}); no board can hold it",
                              hint="check the buffer counts and sizes of the needs and scenarios")
        big.append(dataclasses.replace(area, count=count, size=count * profile.page_size))
    inflated = dataclasses.replace(booted, areas=tuple(big))
    peak = {a.name: 0 for a in big}

    def record(state: CmaState) -> None:
        for area in big:
            st = state.state(area.name)
            top = st.bitmap.rfind(1)
            if top >= 0:
                end = (top + 1) << area.order_per_bit
                peak[area.name] = max(peak[area.name], end * profile.page_size)

    record(inflated.new_state())  # the boot-time allocations (atomic pool) alone
    run_steps(profile, inflated, steps, devices, after_step=record, source=source)
    return peak


def size_board(board: Board, *, kernel: str | None = None, bootargs: str = "",
               scenarios: tuple[Path, ...] = ()) -> Sizing:
    """The smallest size of every CMA area of ``board`` for its needs and ``scenarios``."""
    from cma_tool.modelrun import board_devices, board_steps

    profile = resolve_profile(board, kernel)
    inp = boot_input(board, bootargs)
    booted = cma_model.boot(profile, inp)
    devices = board_devices(board)
    workloads: list[tuple[str, str, KernelProfile, cma_model.BootResult, list[Step]]] = [
        (BOARD_NEEDS, board.path, profile, booted, list(board_steps(board)))]
    for path in scenarios:
        scenario = cma_model.load_scenario(path)
        prof = PROFILES[scenario.kernel] if scenario.kernel is not None else profile
        sinp = dataclasses.replace(inp, cmdline=f"{inp.cmdline} {scenario.bootargs}".strip()) if scenario.bootargs else inp
        workloads.append((path.name, str(path), prof, cma_model.boot(prof, sinp), list(scenario.steps)))
    best: dict[str, tuple[int, str]] = {a.name: (0, BOARD_NEEDS) for a in booted.areas}
    for name, source, prof, boot_result, steps in workloads:
        for area_name, high in _high_water(prof, boot_result, steps, devices, source).items():
            if area_name in best and high > best[area_name][0]:
                best[area_name] = (high, name)
    unit = area_alignment(profile)
    region_by_node = {r.node: r for r in board.regions}
    areas = []
    for area in booted.areas:
        high, set_by = best[area.name]
        region = region_by_node.get(area.name)
        areas.append(AreaSize(area.name, region.label if region else None, area.name == booted.default_area,
                              area.size, high, round_up(high, unit), set_by))
    return Sizing(board, profile, tuple(areas), tuple(w[0] for w in workloads))


def sizing_text(sizing: Sizing) -> str:
    """The table `cma-tool size` prints."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{sizing.board.name}: smallest CMA areas ({sizing.profile.name}, unit "
                        f"{format_size(sizing.unit)}) for {', '.join(sizing.workloads)}", title_justify="left")
    for col in ("region", "now", "peak", "smallest", "headroom", "set by"):
        table.add_column(col, justify="left" if col in ("region", "set by") else "right")
    for a in sizing.areas:
        name = (a.label or a.name) + (" (default)" if a.is_default else "")
        if a.smallest:
            table.add_row(name, format_size(a.current), format_size(a.peak), format_size(a.smallest),
                          format_size(a.headroom), a.set_by)
        else:
            table.add_row(name, format_size(a.current), "-", "no need", "-", "-")
    import io

    out = io.StringIO()
    console = Console(file=out, width=120, color_system=None, highlight=False)
    console.print(table)
    default = sizing.default
    if default is not None:
        from cma_tool.generate.bootargs import memparse_text

        where = f"size: {memparse_text(default.smallest)} in its node, or " if default.label else ""
        cma = sizing.cma_argument
        console.print(f"default area: {where}{cma or 'no cma= on this kernel (its board file sets the size)'}",
                      markup=False)
    return out.getvalue().rstrip("\n")
