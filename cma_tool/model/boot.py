"""Boot: where each CMA area lands and what the kernel prints about it.

Follows, for 6.1 and 6.12 on ARM32: arm_memblock_init() (early reservations,
then the /reserved-memory scan with its static regions reserved at scan time,
then dynamic regions allocated and every region initialised in the order
__rmem_check_for_overlap() sorted them), then dma_contiguous_reserve() for the
default area, then atomic_pool_init() taking the atomic coherent pool out of
the default area. 3.5 and the 2011 series read the same input as board-file
calls (see :func:`boot`).

6.12 initialises the two kinds of /reserved-memory node at different times
(measured on Debian's 6.12.117 armmp kernel, tests/data/kernel-traces-6.12/):
fdt_scan_reserved_mem() still reserves static (``reg``) regions at scan time
and allocates and initialises dynamic ones there, in device-tree order, but
static regions are initialised only from unflatten_device_tree()
(fdt_scan_reserved_mem_reg_nodes(), device-tree order), which runs after
arm_memblock_init() has reserved the default area. So on 6.12 the default
area's "cma: Reserved" line comes before the static pools' lines, and the
default area takes a lower cma_areas[] index than every static pool.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass, field
from typing import Any, assert_never

from cma_tool.model.area import AllocResult, AreaSource, CmaArea, CmaState
from cma_tool.model.cmdline import CmaCmdline, parse_cma_cmdline
from cma_tool.model.events import Event
from cma_tool.model.ksort import kernel_sort
from cma_tool.model.lowmem import ArmLayout, ArmLimits, arm_limits
from cma_tool.model.memblock import ALLOC_ANYWHERE, Memblock
from cma_tool.model.profiles import (
    BoardFileApi,
    DeviceTreeReservation,
    KernelProfile,
    NodeOrder,
    area_alignment,
    board_file_lowmem,
)

SZ_1M = 1 << 20
#: sizeof(struct page) on the 64-bit kernels we model, and a PMD block on arm64 with 4K pages.
STRUCT_PAGE_BYTES = 64
PMD_BYTES = 2 * SZ_1M
#: arm64's early allocations at the top besides the linear map's PTE tables (an estimate: upper page
#: tables, the unflattened device tree, the node data); only matters within it of a 2 MiB boundary.
EARLY_TABLES_BYTES = 128 * 1024
SMP_CACHE_BYTES = 64
CMA_MAX_NAME = 64


@dataclass(frozen=True)
class Bank:
    base: int
    size: int


@dataclass(frozen=True)
class ReservedNode:  # one /reserved-memory child as the kernel sees it
    name: str  # full node name incl. @unit: "linux,cma", "region@33000000"
    reg: tuple[int, int] | None = None  # static (base, size)
    size: int | None = None  # dynamic
    alignment: int | None = None
    alloc_ranges: tuple[tuple[int, int], ...] = ()  # (base, size) pairs
    compatible: str = "shared-dma-pool"
    reusable: bool = False
    no_map: bool = False
    cma_default: bool = False  # linux,cma-default


@dataclass(frozen=True)
class EarlyReservation:  # memblock reservations made before CMA areas
    what: str  # "kernel", "dtb", "initrd", ...
    base: int
    size: int


@dataclass(frozen=True)
class BootInput:
    banks: tuple[Bank, ...]
    nodes: tuple[ReservedNode, ...] = ()
    cmdline: str = ""  # full kernel command line
    early: tuple[EarlyReservation, ...] = ()
    pinned: tuple[tuple[str, int], ...] = ()  # (area name, observed base) overrides placement
    dma_limit: int | None = None  # arm_dma_limit / lowmem end; None = end of memory
    #: PAGE_OFFSET, PHYS_OFFSET and the machine's DMA zone: where board-file kernels' lowmem ends.
    arm_layout: ArmLayout = field(default_factory=ArmLayout)


@dataclass(frozen=True)
class BootProblem:
    """Why something did not become the area the input asked for, for the validator to say."""

    subject: str  # node name, "cma=", "coherent_pool=", or an area name
    code: str  # stable key, e.g. "cma-alignment", "bypassed", "no-space"
    message: str
    severity: str = "error"  # "error" | "warning" | "info"

    def to_json(self) -> dict[str, str]:
        return {"subject": self.subject, "code": self.code, "message": self.message, "severity": self.severity}


@dataclass(frozen=True)
class Preallocation:
    """A cma_alloc the kernel makes on its own during boot (atomic pools)."""

    what: str
    area: str
    count: int
    align: int


@dataclass(frozen=True)
class BootResult:
    profile: KernelProfile
    areas: tuple[CmaArea, ...]
    default_area: str | None
    log: tuple[str, ...]
    cma_total_kb: int
    events: tuple[Event, ...]
    problems: tuple[BootProblem, ...]
    preallocations: tuple[Preallocation, ...]
    cmdline: CmaCmdline = field(default_factory=CmaCmdline)

    def area(self, name: str) -> CmaArea | None:
        return next((a for a in self.areas if a.name == name), None)

    def new_state(self) -> CmaState:
        """A fresh allocator with the boot-time allocations already made."""
        state = CmaState(self.profile, self.areas)
        for pre in self.preallocations:
            state.alloc(pre.area, pre.count, pre.align)
        return state

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile.name,
            "areas": [a.to_json() for a in self.areas],
            "default_area": self.default_area,
            "log": list(self.log),
            "cma_total_kb": self.cma_total_kb,
            "events": [e.to_json() for e in self.events],
            "problems": [p.to_json() for p in self.problems],
            "preallocations": [{"what": p.what, "area": p.area, "count": p.count, "align": p.align} for p in self.preallocations],
        }


def get_order(size: int, page_shift: int = 12) -> int:
    """The kernel's get_order(): smallest order whose block holds ``size`` bytes."""
    if size <= 0:
        return 0
    return max(((size - 1) >> page_shift).bit_length(), 0)


def _align_up(value: int, align: int) -> int:
    return (value + align - 1) & ~(align - 1)


def _is_pow2(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


@dataclass
class _Rmem:
    node: ReservedNode
    order: int  # position in the device tree
    base: int = 0
    size: int = 0

    @property
    def dynamic(self) -> bool:
        return self.node.reg is None

    @property
    def cma_eligible(self) -> bool:
        n = self.node
        return n.compatible == "shared-dma-pool" and n.reusable and not n.no_map


class _Booter:
    """One boot's working state; boot() is the public face."""

    def __init__(self, profile: KernelProfile, inp: BootInput) -> None:
        self.p = profile
        self.inp = inp
        self.mem = Memblock.from_banks([(b.base, b.size) for b in inp.banks])
        self.log: list[str] = []
        self.problems: list[BootProblem] = []
        self.areas: list[CmaArea] = []
        self.default: str | None = None
        self.pinned = dict(inp.pinned)
        # Dynamic regions whose init failed and whose memory went back to memblock.
        self.given_back: list[_Rmem] = []
        cmd = parse_cma_cmdline(inp.cmdline, with_placement=profile.has_cmdline_placement)
        # size_cmdline, base_cmdline and limit_cmdline are phys_addr_t: 32 bits on
        # ARM32 without LPAE, so "cma=4G" wraps to 0 there.
        phys_bits = 32 if (profile.arch == "arm32" and not profile.lpae) else 64
        mask = (1 << phys_bits) - 1
        if cmd.size is not None and (cmd.size > mask or cmd.base > mask or cmd.limit > mask):
            self.problem("cma=", "wraps", f"values above {phys_bits} bits wrap on this kernel (phys_addr_t)", "warning")
            cmd = dataclasses.replace(cmd, size=cmd.size & mask, base=cmd.base & mask, limit=cmd.limit & mask)
        self.cmd = cmd

    # --- helpers ------------------------------------------------------------

    def pa(self, value: int) -> str:
        return f"0x{value:0{self.p.address_digits}x}"

    def problem(self, subject: str, code: str, message: str, severity: str = "error") -> None:
        self.problems.append(BootProblem(subject, code, message, severity))

    def place(self, name: str, size: int, align: int, start: int, end: int) -> int | None:
        """Top-down placement, unless the caller pinned this area's base from a real boot log."""
        if name in self.pinned:
            base = self.pinned[name]
            self.mem.reserve(base, size)
            return base
        return self.mem.alloc_range(size, align, start, end)

    def init_reserved_mem(self, base: int, size: int, name: str, source: AreaSource) -> int:
        """cma_init_reserved_mem(): 0 or a negative errno; logs as the kernel does."""
        if len(self.areas) == self.p.area_slots:
            self.log.append("cma: Not enough slots for CMA reserved regions!")
            self.problem(name, "no-slot", f"all {self.p.area_slots} CMA area slots are taken (CONFIG_CMA_AREAS)")
            return -28
        if not size or not self.mem.is_region_reserved(base, size):
            return -22
        if (base | size) & (self.p.cma_min_bytes - 1):
            return -22
        if not self.mem.in_memory(base, size):
            self.problem(
                name,
                "outside-memory",
                f"area {self.pa(base)}+{size // SZ_1M} MiB is not inside one memory bank; the kernel cannot activate it",
            )
        shift = self.p.page_shift
        self.areas.append(
            CmaArea(
                name=name[: CMA_MAX_NAME - 1],
                base=base,
                size=size,
                base_pfn=base >> shift,
                count=size >> shift,
                order_per_bit=0,
                source=source,
                index=len(self.areas),
            )
        )
        return 0

    # --- device tree ----------------------------------------------------------

    def scan_reserved_memory(self, dt: DeviceTreeReservation) -> list[_Rmem]:
        """fdt_scan_reserved_mem(): static regions reserved now; every node saved."""
        saved: list[_Rmem] = []
        for order, node in enumerate(self.inp.nodes):
            if node.reg is not None:
                base, size = node.reg
                if node.size is not None:
                    self.problem(node.name, "reg-and-size", "node has both reg and size; the kernel uses reg", "warning")
                if not size or not self._reserve_static(node, base, size):
                    self.log.append(
                        f"{dt.failed_reserve_log_prefix}Reserved memory: failed to reserve memory for node '{node.name}': "
                        f"base {self.pa(base)}, size {size // SZ_1M} MiB"
                    )
                    self.problem(node.name, "reserve-failed", f"could not reserve {self.pa(base)} (size {size:#x})")
                # A size-0 region is saved too, but the kernel then takes it for a
                # dynamic node without a size property and drops it silently.
                if size:
                    saved.append(_Rmem(node, order, base, size))
            elif node.size is not None:
                saved.append(_Rmem(node, order))
            else:
                self.problem(node.name, "no-reg-or-size", "node has neither reg nor size; the kernel skips it")
            if node.reusable and node.no_map:
                self.problem(node.name, "reusable-no-map", "reusable and no-map exclude each other; not a CMA area")
        # __rmem_check_for_overlap() sorts with __rmem_cmp: by base, then size, so the
        # dynamic nodes (0/0 when sorted) come first, in the order the kernel's sort
        # leaves equal elements (see NodeOrder).
        def rmem_cmp(x: _Rmem, y: _Rmem) -> int:
            kx, ky = (x.base, x.size), (y.base, y.size)
            return (kx > ky) - (kx < ky)

        match dt.dynamic_node_order:
            case NodeOrder.HEAPSORT:
                saved[:] = kernel_sort(saved, rmem_cmp)
            case NodeOrder.DT_ORDER:
                saved.sort(key=lambda r: (r.base, r.size, r.order))
            case _ as unhandled:
                assert_never(unhandled)
        self._check_overlaps([r for r in saved if not r.dynamic])
        return saved

    def _reserve_static(self, node: ReservedNode, base: int, size: int) -> bool:
        for early in self.inp.early:
            if early.base < base + size and base < early.base + early.size:
                self.problem(
                    node.name,
                    "overlaps-early",
                    f"region {self.pa(base)}..{self.pa(base + size - 1)} overlaps the {early.what} "
                    f"({self.pa(early.base)}..{self.pa(early.base + early.size - 1)})",
                )
        if node.no_map:
            if self.mem.is_region_reserved(base, size):
                return False
            self.mem.mark_nomap(base, size)
            return True
        self.mem.reserve(base, size)
        return True

    def _check_overlaps(self, statics: list[_Rmem]) -> None:
        for this, nxt in itertools.pairwise(statics):
            if this.base + this.size > nxt.base:
                self.log.append("OF: reserved mem: OVERLAP DETECTED!")
                self.log.append(
                    f"{this.node.name} ({self.pa(this.base)}--{self.pa(this.base + this.size)}) overlaps with "
                    f"{nxt.node.name} ({self.pa(nxt.base)}--{self.pa(nxt.base + nxt.size)})"
                )
                self.problem(this.node.name, "overlap", f"overlaps {nxt.node.name}")

    def alloc_dynamic(self, rmem: _Rmem) -> bool:
        """__reserved_mem_alloc_size(): place a size-only node; False when it did not fit."""
        node = rmem.node
        size = node.size or 0
        align = node.alignment or 0
        if align and not _is_pow2(align):
            self.problem(node.name, "alignment-not-pow2", f"alignment {align:#x} is not a power of two")
        if rmem.cma_eligible:
            align = max(align, self.p.cma_min_bytes)
        align = align or SMP_CACHE_BYTES
        base: int | None = None
        if node.alloc_ranges:
            for start, length in node.alloc_ranges:
                base = self.place(node.name, size, align, start, start + length)
                if base is not None:
                    break
        else:
            base = self.place(node.name, size, align, 0, ALLOC_ANYWHERE)
        if base is None:
            # The format string in both Debian kernels' images (6.1.176, 6.12.117) carries the size.
            self.log.append(f"OF: reserved mem: failed to allocate memory for node '{node.name}': size {size // SZ_1M} MiB")
            self.problem(node.name, "no-room", f"no free {size // SZ_1M} MiB block in the allowed ranges")
            return False
        rmem.base, rmem.size = base, size
        if node.no_map:
            self.mem.mark_nomap(base, size)
        return True

    def init_node(self, rmem: _Rmem, dt: DeviceTreeReservation) -> None:
        """__reserved_mem_init_node() and what fdt_init_reserved_mem() does with its answer."""
        node = rmem.node
        if node.compatible != "shared-dma-pool":
            self.problem(node.name, "not-shared-dma-pool", f"compatible {node.compatible!r} is not a CMA pool", "info")
            return
        ret = self._rmem_cma_setup(rmem)
        if ret != 0:
            ret = self._rmem_dma_setup(rmem)
        if ret == 0:
            self.log.append(f"OF: reserved mem: initialized node {node.name}, compatible id shared-dma-pool")
            if dt.logs_node_range:
                self.log.append(
                    f"OF: reserved mem: {self.pa(rmem.base)}..{self.pa(rmem.base + rmem.size - 1)} "
                    f"({rmem.size // 1024} KiB) {'nomap' if node.no_map else 'map'} "
                    f"{'reusable' if node.reusable else 'non-reusable'} {node.name}"
                )
            return
        self.log.append(f"OF: reserved mem: node {node.name} compatible matching fail")
        if rmem.dynamic:
            self.given_back.append(rmem)
        if node.no_map:
            self.mem.clear_nomap(rmem.base, rmem.size)
        else:
            self.mem.free(rmem.base, rmem.size)

    def warn_failed_node_hang(self) -> None:
        """Debian's 6.12.117 armmp kernel stops booting when the default area lands on a failed dynamic node's range.

        Measured on the emulated board (tests/data/kernel-traces-6.12/: c, e,
        i hang; g, h, j boot): a dynamic CMA node that fails to initialise
        (refused for alignment, or bypassed by cma=) gives its range back, and
        when dma_contiguous_reserve() then places the default area over that
        range the kernel prints "cma: Reserved ..." and nothing more, even
        with an early console. A failed static node, or a default area
        elsewhere, or none, boots.
        """
        area = next((a for a in self.areas if a.name == self.default and a.source in ("cmdline", "kconfig")), None)
        if area is None:
            return
        for rmem in self.given_back:
            if rmem.base < area.base + area.size and area.base < rmem.base + rmem.size:
                self.problem(
                    rmem.node.name,
                    "failed-node-hang",
                    f"the default area ({self.pa(area.base)}, {area.size // SZ_1M} MiB) lands on the range this node "
                    f"took and gave back ({self.pa(rmem.base)}, {rmem.size // SZ_1M} MiB); Debian's 6.12 kernel "
                    "was seen to stop booting right after 'cma: Reserved' in this case",
                    "warning",
                )

    def _rmem_cma_setup(self, rmem: _Rmem) -> int:
        node = rmem.node
        if self.cmd.given and node.cma_default:
            self.log.append(f"Reserved memory: bypass {node.name} node, using cmdline CMA params instead")
            self.problem(node.name, "bypassed", "cma= on the command line replaces this linux,cma-default node", "info")
            return -16
        if not node.reusable or node.no_map:
            return -22
        if (rmem.base | rmem.size) & (self.p.cma_min_bytes - 1):
            self.log.append("Reserved memory: incorrect alignment of CMA region")
            self.problem(
                node.name,
                "cma-alignment",
                f"base {self.pa(rmem.base)} and size {rmem.size:#x} must be multiples of "
                f"{self.p.cma_min_bytes // SZ_1M} MiB (one pageblock on this kernel)",
            )
            return -22
        source: AreaSource = "dt-dynamic" if rmem.dynamic else "dt-static"
        err = self.init_reserved_mem(rmem.base, rmem.size, node.name, source)
        if err:
            self.log.append("Reserved memory: unable to setup CMA region")
            return err
        if node.cma_default:
            self.default = self.areas[-1].name
        self.log.append(f"Reserved memory: created CMA memory pool at {self.pa(rmem.base)}, size {rmem.size // SZ_1M} MiB")
        return 0

    def _rmem_dma_setup(self, rmem: _Rmem) -> int:
        node = rmem.node
        if node.reusable:
            return -22
        if self.p.arch == "arm32" and not node.no_map:
            self.log.append("Reserved memory: regions without no-map are not yet supported")
            self.problem(node.name, "dma-pool-needs-no-map", "a non-reusable pool needs no-map on ARM32")
            return -22
        self.log.append(f"Reserved memory: created DMA memory pool at {self.pa(rmem.base)}, size {rmem.size // SZ_1M} MiB")
        self.problem(node.name, "not-cma", "non-reusable pool: a per-device coherent pool, not CMA", "info")
        return 0

    # --- the default area -----------------------------------------------------

    def reserve_memory_map(self) -> None:
        """arm64: what memblock hands out from the top between the reserved-memory scan and the default area.

        First paging_init()'s page tables: Debian's arm64 kernels map the
        linear map page by page (CONFIG_RODATA_FULL_DEFAULT_ENABLED), one PTE
        table per 2 MiB of memory, and a few more pages (upper tables, the
        unflattened device tree, the node data: about 128 KiB, estimated).
        Then sparse_init() takes one buffer for the struct pages (64 bytes
        each) of every present memory section, aligned to a section's share
        (sparse_buffer_init(): section_map_size(), a PMD multiple), top-down.
        The Kconfig or cma= area lands right below that buffer. Measured on
        5.10, 6.1 and 6.12 arm64 with 464 MiB, 512 MiB and 1.75 GiB in two
        banks (tests/data/kernel-matrix/debian-*-arm64/b, c, h, q-two-gib).
        """
        p = self.p
        section = 1 << p.facts.arm64_section_bits
        per_section = _align_up((section >> p.page_shift) * STRUCT_PAGE_BYTES, PMD_BYTES)
        present = {addr // section for bank in self.inp.banks
                   for addr in range(bank.base - bank.base % section, bank.base + bank.size, section)}
        pte_tables = sum(-(-bank.size // PMD_BYTES) for bank in self.inp.banks)
        early = (pte_tables << p.page_shift) + EARLY_TABLES_BYTES
        self.mem.alloc_range(early, p.page_size, 0, self.mem.end_of_dram)
        self.mem.alloc_range(len(present) * per_section, per_section, 0, self.mem.end_of_dram)

    def reserve_default(self) -> None:
        """dma_contiguous_reserve(limit) -> cma_declare_contiguous_nid()."""
        p, cmd = self.p, self.cmd
        if p.default_area_after_unflatten:  # arm64's bootmem_init(): sparse_init() first
            self.reserve_memory_map()
        for warning in cmd.warnings:
            self.problem("cma=", "cmdline", warning, "warning")
        limit = self.inp.dma_limit or 0
        fixed = False
        base = 0
        if cmd.given:
            size = cmd.size or 0
            source: AreaSource = "cmdline"
            if p.has_cmdline_placement:
                base = cmd.base
                limit = min(x for x in (cmd.limit, limit) if x) if (cmd.limit or limit) else 0
                fixed = cmd.base + size == cmd.limit
        else:
            source = "kconfig"
            if p.cma_size_percentage is not None:
                size = (self.mem.total >> p.page_shift) * p.cma_size_percentage // 100 << p.page_shift
            else:
                size = p.cma_size_mbytes * SZ_1M
        if not size or self.default is not None:
            return
        if self._declare(size, base, limit, fixed, "reserved", source):
            self.default = "reserved"

    def _declare(self, size: int, base: int, limit: int, fixed: bool, name: str, source: AreaSource) -> bool:
        """cma_declare_contiguous_nid(); True when the area was created."""
        p = self.p
        node_suffix = " on node -1" if p.facts.declare_log_names_node else ""

        def failed() -> None:
            self.log.append(f"cma: Failed to reserve {size // SZ_1M} MiB{node_suffix}")

        if len(self.areas) == p.area_slots:
            self.log.append("cma: Not enough slots for CMA reserved regions!")
            self.problem(name, "no-slot", f"all {p.area_slots} CMA area slots are taken")
            return False
        alignment = p.cma_min_bytes
        if fixed and base & (alignment - 1):
            self.log.append(f"cma: Region at {self.pa(base)} must be aligned to {self.pa(alignment)} bytes")
            self.problem("cma=", "base-alignment", f"base {self.pa(base)} is not a multiple of {alignment // SZ_1M} MiB")
            failed()
            return False
        base = _align_up(base, alignment)
        size = _align_up(size, alignment)
        limit &= ~(alignment - 1)
        if not base:
            fixed = False
        end = self.mem.end_of_dram
        if limit == 0 or limit > end:
            limit = end
        if base + size > limit:
            self.log.append(f"cma: Size ({self.pa(size)}) of region at {self.pa(base)} exceeds limit ({self.pa(limit)})")
            self.problem("cma=", "exceeds-limit", f"{size // SZ_1M} MiB at {self.pa(base)} does not fit below {self.pa(limit)}")
            failed()
            return False
        if fixed and name not in self.pinned:
            if self.mem.is_region_reserved(base, size):
                self.problem("cma=", "busy", f"{self.pa(base)}+{size // SZ_1M} MiB is already reserved")
                failed()
                return False
            self.mem.reserve(base, size)
            addr: int | None = base
        else:
            addr = self.place(name, size, alignment, base, limit)
        if addr is None:
            self.problem("cma=", "no-room", f"no free {size // SZ_1M} MiB block below {self.pa(limit)}")
            failed()
            return False
        if self.init_reserved_mem(addr, size, name, source):
            self.mem.free(addr, size)
            failed()
            return False
        self.log.append(f"cma: Reserved {size // SZ_1M} MiB at {self.pa(addr)}{node_suffix}")
        return True

    # --- older kernels: board-file areas ----------------------------------------

    def board_file_limits(self, api: BoardFileApi) -> ArmLimits:
        """arm_lowmem_limit and arm_dma_limit for this board (model/lowmem.py); a given dma_limit overrides the zone."""
        limits = arm_limits([(b.base, b.size) for b in self.inp.banks], self.inp.arm_layout,
                            board_file_lowmem(api), self.inp.cmdline)
        if self.inp.dma_limit is not None:
            limits = dataclasses.replace(limits, dma_limit=self.inp.dma_limit)
        return limits

    def declare_board_file(self, api: BoardFileApi) -> None:
        """3.5 dma_declare_contiguous() / 2011 cma_reserve(): one call per CMA node, in order.

        Neither kernel places an area above lowmem: without a base, memblock
        allocates below its current limit, arm_lowmem_limit (model/lowmem.py).
        """
        alignment = area_alignment(self.p)  # 8 MiB on 3.5 with MAX_ORDER 11, not 4 (see area_alignment)
        match api:
            case BoardFileApi.CMA_2011:
                dma_contiguous = False
            case BoardFileApi.DMA_DECLARE_CONTIGUOUS:
                dma_contiguous = True
            case _ as unhandled:
                assert_never(unhandled)
        limits = self.board_file_limits(api)
        default_node: ReservedNode | None = None
        for node in self.inp.nodes:
            if not (node.compatible == "shared-dma-pool" and node.reusable and not node.no_map):
                self.problem(node.name, "not-cma", "only reusable shared-dma-pool nodes become areas here", "info")
                continue
            if dma_contiguous and node.cma_default and default_node is None:
                # 3.5's board file makes no call for the global area: arm_memblock_init() makes it after
                # .reserve with dma_contiguous_reserve(), sized by cma= (generate/bootargs.py writes the
                # node's size there), placed below the lowmem/DMA limit whatever the node's reg or ranges.
                default_node = node
                continue
            base = node.reg[0] if node.reg else 0
            size = node.reg[1] if node.reg else (node.size or 0)
            base = _align_up(base, alignment)
            size = _align_up(size, alignment)
            addr: int | None
            if base and node.name not in self.pinned:
                if self.mem.is_region_reserved(base, size):
                    addr = None
                else:
                    self.mem.reserve(base, size)
                    addr = base
            else:
                addr = self.place(node.name, size, alignment, 0, self._board_file_limit(node, alignment, limits,
                                                                                       dma_contiguous))
            if addr is None:
                if dma_contiguous:
                    self.log.append(f"cma: CMA: failed to reserve {size // SZ_1M} MiB")
                self.problem(node.name, "no-room", f"could not reserve {size // SZ_1M} MiB below the end of lowmem "
                             f"({self.pa(limits.lowmem_end)})")
                continue
            source: AreaSource = "board-file"
            if self.init_reserved_mem(addr, size, node.name, source):
                # No slot left: 3.5 refuses before reserving ("Not enough slots ..." is logged already).
                self.mem.free(addr, size)
                continue
            if node.cma_default and self.default is None:
                self.default = node.name
            if dma_contiguous:
                self.log.append(f"cma: CMA: reserved {size // SZ_1M} MiB at {addr:08x}")
        if dma_contiguous and self.default is None:
            self._declare_35_default(alignment, limits, default_node)

    @staticmethod
    def _board_file_limit(node: ReservedNode, alignment: int, limits: ArmLimits, dma_contiguous: bool) -> int:
        """Where memblock may place a board-file area without a base.

        3.5's generated call passes the end of the first alloc-range as
        dma_declare_contiguous()'s limit (generate/boardfile.py), which aligns it
        down and hands it to __memblock_alloc_base() as is: memblock's lowmem
        limit applies only to a limit of 0 (MEMBLOCK_ALLOC_ACCESSIBLE). The
        2011 cma_reserve() takes no limit at all.
        """
        if dma_contiguous and node.alloc_ranges:
            start, length = node.alloc_ranges[0]
            return (start + length) & ~(alignment - 1)
        return limits.lowmem_end

    def _declare_35_default(self, alignment: int, limits: ArmLimits, node: ReservedNode | None) -> None:
        """dma_contiguous_reserve(min(arm_dma_limit, arm_lowmem_limit)) -> dma_declare_contiguous(NULL, size, 0, limit).

        The size is cma='s; without it, the default node's (which the generated
        command line carries as cma=), else CONFIG_CMA_SIZE_MBYTES. The area keeps
        the node's name so that the plan can say which node it is.
        """
        if self.cmd.given:
            size = self.cmd.size or 0
            for warning in self.cmd.warnings:
                self.problem("cma=", "cmdline", warning, "warning")
        elif node is not None:
            size = node.reg[1] if node.reg else (node.size or 0)
        else:
            size = self.p.cma_size_mbytes * SZ_1M
        if not size:
            return
        name = node.name if node is not None else "reserved"
        size = _align_up(size, alignment)
        limit = limits.default_area_limit & ~(alignment - 1)
        addr = self.place(name, size, alignment, 0, limit)
        if addr is None:
            self.log.append(f"cma: CMA: failed to reserve {size // SZ_1M} MiB")
            self.problem(name if node is not None else "cma=", "no-room",
                         f"no free {size // SZ_1M} MiB block below {self.pa(limit)} (the lowmem and DMA-zone limit)")
            return
        source: AreaSource = "cmdline" if self.cmd.given or node is not None else "kconfig"
        if self.init_reserved_mem(addr, size, name, source):
            self.mem.free(addr, size)  # no slot left: refused before reserving, as 3.5 does
            return
        self.default = name
        self.log.append(f"cma: CMA: reserved {size // SZ_1M} MiB at {addr:08x}")

    # --- boot-time allocations ----------------------------------------------------

    def atomic_pools(self) -> list[Preallocation]:
        p = self.p
        pool = self.cmd.coherent_pool if self.cmd.coherent_pool is not None else p.atomic_pool_bytes
        if not p.facts.has_atomic_pool:
            return []
        if p.arch == "arm32":
            if self.default is None:
                return []  # __alloc_remap_buffer() from normal pages
            order = get_order(pool, p.page_shift)
            return [Preallocation("atomic coherent pool", self.default, pool >> p.page_shift, min(order, p.cma_alignment))]
        # dma-direct (arm64): one pool per zone, each from CMA when the default
        # area lies inside that zone (cma_in_zone). Verified on Debian's 5.10,
        # 6.1 and 6.12 arm64 (tests/data/kernel-matrix/debian-*-arm64: a, k with
        # coherent_pool=1M): three pools, GFP_KERNEL, GFP_KERNEL|GFP_DMA and
        # GFP_KERNEL|GFP_DMA32, all of RAM being below 4 GiB.
        if self.cmd.coherent_pool is None:
            # dma_atomic_pool_init(): 128 KiB per GiB of totalram_pages(), at most a MAX_ORDER block, at least
            # 128 KiB; atomic_pool_expand() then takes a whole order of it (1.75 GiB: 224 KiB -> 256 KiB,
            # tests/data/kernel-matrix/debian-*-arm64/q-two-gib). The banks stand for totalram_pages(): the
            # same order unless what memblock keeps back straddles a power of two.
            pages = min((self.mem.total >> p.page_shift) // (1 << (30 - 17)), 1 << (p.max_order - 1))
            pool = max(pages << p.page_shift, 128 * 1024)
        order = min(get_order(pool, p.page_shift), p.max_order - 1)
        pools: list[Preallocation] = []
        area = next((a for a in self.areas if a.name == self.default), None)
        for flags, zone_end in (("GFP_KERNEL", None), ("GFP_KERNEL|GFP_DMA", 1 << 32), ("GFP_KERNEL|GFP_DMA32", 1 << 32)):
            if area is None:
                continue
            if zone_end is not None and area.base + area.size > zone_end:
                continue
            pools.append(Preallocation(f"atomic pool {flags}", area.name, 1 << order, min(order, p.cma_alignment)))
        return pools


def _boot_device_tree(b: _Booter, dt: DeviceTreeReservation) -> None:
    """arm_memblock_init() on a kernel that reads /reserved-memory, then the default area."""
    saved = b.scan_reserved_memory(dt)
    for rmem in saved:
        if rmem.dynamic:
            if b.alloc_dynamic(rmem):
                b.init_node(rmem, dt)
        elif not dt.static_pools_after_default:
            b.init_node(rmem, dt)
    late_statics = dt.static_pools_after_default
    if late_statics and b.p.default_area_after_unflatten:
        _init_late_static_pools(b, saved, dt)  # unflattening comes before the default area here
        late_statics = False
    b.reserve_default()
    # Measured on ARM32 only: Debian's 6.12 arm64 kernel boots the same layouts
    # (its default area lands below the memory map arm64 allocates first).
    if dt.hangs_on_default_over_failed_dynamic_node and b.p.architecture == "armhf":
        b.warn_failed_node_hang()
    if late_statics:
        _init_late_static_pools(b, saved, dt)


def _init_late_static_pools(b: _Booter, saved: list[_Rmem], dt: DeviceTreeReservation) -> None:
    """6.12's fdt_scan_reserved_mem_reg_nodes() from unflatten_device_tree(): static pools in DT order.

    Walked in device-tree order, not sorted by base (measured:
    tests/data/kernel-traces-6.12/k-two-static-pools-dt-order).
    """
    if not b.inp.nodes:
        # The generators write /reserved-memory only when it has a child
        # (generate/dts.py), so no nodes means no node in the DT.
        b.log.append("OF: reserved mem: Reserved memory: No reserved-memory node in the DT")
    for rmem in sorted((r for r in saved if not r.dynamic), key=lambda r: r.order):
        b.init_node(rmem, dt)


def boot(profile: KernelProfile, inp: BootInput) -> BootResult:
    """Reserve every CMA area the kernel would, in kernel index order, with its log lines.

    6.1 and 6.12 read ``nodes`` as /reserved-memory. 3.5 and the 2011 series
    had no reserved-memory binding: each reusable shared-dma-pool node stands
    for one board-file call (dma_declare_contiguous() / cma_reserve()) in the
    machine's reserve hook, with ``reg`` meaning a fixed base; a
    ``cma_default`` node plays the global area.
    """
    b = _Booter(profile, inp)
    if not inp.banks:
        b.problem("memory", "no-memory", "the board declares no memory banks")
    for early in inp.early:
        b.mem.reserve(early.base, early.size)
    match profile.facts.reservation:
        case DeviceTreeReservation() as dt:
            _boot_device_tree(b, dt)
        case BoardFileApi() as api:
            b.declare_board_file(api)
        case _ as unhandled:
            assert_never(unhandled)
    for name in b.pinned:
        if not any(a.name == name for a in b.areas):
            b.problem(name, "pinned-unknown", f"a base was pinned for {name!r} but no such area was created", "warning")

    areas = tuple(b.areas)
    pres = b.atomic_pools()
    state = CmaState(profile, areas)
    events: list[Event] = []
    log = b.log
    pools_ok = True
    for pre in pres:
        result: AllocResult = state.alloc(pre.area, pre.count, pre.align)
        events.extend(result.events)
        log.extend(result.messages)
        pools_ok = pools_ok and result.ok
    pool = b.cmd.coherent_pool if b.cmd.coherent_pool is not None else profile.atomic_pool_bytes
    if profile.arch == "arm32" and profile.facts.has_atomic_pool:
        # With no default area the pool comes from normal pages and still succeeds.
        if pools_ok:
            log.append(f"DMA: preallocated {pool // 1024} KiB pool for atomic coherent allocations")
        else:
            log.append(f"DMA: failed to allocate {pool // 1024} KiB pool for atomic coherent allocation")
    elif profile.arch == "dma-direct":
        for pre in pres:
            flags = pre.what.removeprefix("atomic pool ")
            log.append(f"DMA: preallocated {(pre.count * profile.page_size) // 1024} KiB {flags} pool for atomic allocations")
    return BootResult(
        profile=profile,
        areas=areas,
        default_area=b.default,
        log=tuple(log),
        cma_total_kb=state.cma_total_kb,
        events=tuple(events),
        problems=tuple(b.problems),
        preallocations=tuple(pres),
        cmdline=b.cmd,
    )
