"""Kernel profiles: every way the kernels we model differ in CMA, as named data.

Two kinds of fact make a profile:

- what a kernel *version* does (:class:`KernelFacts`): which log lines it
  prints, in which order it sets areas up, what its tracepoints carry. Each
  fact is fixed per :class:`Family` and says the kernel source or recording
  (tests/data/kernel-traces*/) behind it. :func:`facts_of` maps a family to
  its facts, exhaustively: a family without facts is a mypy error there.
- how the kernel was *built* (:class:`KernelProfile`'s own fields): the
  CONFIG_ values and architecture choices that a board may override
  (``max-order: 11`` for a kernel built for the S5PV210 alone); see
  :func:`profile_with`.

Code outside this module reads facts and never asks which kernel it is, so a
new kernel version is a :class:`Family` member, its :class:`KernelFacts` in
:func:`facts_of`, and its profile in :data:`PROFILES` (and the recordings
that prove them). Where behaviour cannot be a plain value, a fact is a
closed enum and its readers ``match`` it exhaustively.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass
from typing import Literal, assert_never

Arch = Literal["arm32", "dma-direct"]


class Family(enum.Enum):
    """A kernel version whose CMA behaviour we model (the value is how we write the version).

    A plain Enum: no code compares a family with a version string; code asks
    for a kernel fact (:class:`KernelFacts`) instead.
    """

    CMA_2011 = "2011"  # the June 2011 CMA patch series (PATCHv10), the seed
    LINUX_3_5 = "3.5"  # dma_declare_contiguous() era, board files
    LINUX_6_1 = "6.1"  # Debian bookworm's armmp kernel
    LINUX_6_12 = "6.12"  # Debian trixie's armmp kernel


class BoardFileApi(enum.Enum):
    """How a kernel without /reserved-memory support takes CMA areas from the board file."""

    #: cma_reserve(start, size) in the machine's .reserve hook, cma_create() and
    #: set_dev_cma_area() at machine init. It logs nothing, aligns each area to
    #: a pageblock, and there is no global area: a device without one gets
    #: system pages.
    CMA_2011 = "2011"
    #: dma_declare_contiguous(dev, size, base, limit) in .reserve (3.5 to 5.9).
    #: drivers/base/dma-contiguous.c aligns areas to the larger of a
    #: MAX_ORDER block and a pageblock, prints "CMA: reserved ..." for each,
    #: and dma_contiguous_reserve() adds the global area (cma= or the Kconfig
    #: size) when the board made none.
    DMA_DECLARE_CONTIGUOUS = "3.5"


# --- board-file era placement facts (linux-3.5, cma-2011): where lowmem ends ----------------


@dataclass(frozen=True, kw_only=True)
class BoardFileLowmem:
    """The values arch/arm/mm/mmu.c computes vmalloc_min from on a board-file era kernel (see model/lowmem.py)."""

    #: VMALLOC_END: 0xff000000 for every machine from 3.4 (arch/arm/include/asm/pgtable.h); per
    #: machine before that (mach/vmalloc.h: 0xE0000000 on S5PV210, the 2011 series' machine).
    vmalloc_end: int
    #: The vmalloc area without vmalloc=: 240 MiB in 3.5, 128 MiB in 3.0 (the 2011 series' base).
    default_vmalloc_reserve: int
    #: 3.5's default also leaves VMALLOC_OFFSET (8 MiB) below it; 3.0's did not, nor does vmalloc=.
    default_vmalloc_offset: int


def board_file_lowmem(api: BoardFileApi) -> BoardFileLowmem:
    """Where lowmem ends, per board-file API (the kernels that have one)."""
    match api:
        case BoardFileApi.DMA_DECLARE_CONTIGUOUS:
            return BoardFileLowmem(vmalloc_end=0xFF000000, default_vmalloc_reserve=240 << 20,
                                   default_vmalloc_offset=8 << 20)
        case BoardFileApi.CMA_2011:
            return BoardFileLowmem(vmalloc_end=0xE0000000, default_vmalloc_reserve=128 << 20,
                                   default_vmalloc_offset=0)
        case _ as unhandled:
            assert_never(unhandled)


def area_alignment(profile: KernelProfile) -> int:
    """What the kernel rounds each CMA area's base and size to when it reserves it.

    One pageblock (CMA_MIN_ALIGNMENT) everywhere but in 3.5's dma_declare_contiguous(),
    which aligned to ``PAGE_SIZE << max(MAX_ORDER, pageblock_order)``: 8 MiB with
    MAX_ORDER 11 ("mm: cma: fix alignment requirements for contiguous regions",
    Aug 2012, relaxed it to MAX_ORDER - 1 after 3.5).
    """
    match profile.facts.reservation:
        case BoardFileApi.DMA_DECLARE_CONTIGUOUS:
            return profile.page_size << max(profile.max_order, profile.pageblock_order)
        case BoardFileApi.CMA_2011 | DeviceTreeReservation():
            return profile.cma_min_bytes
        case _ as unhandled:
            assert_never(unhandled)


# ----------------------------------------------------------------------------------------------


class NodeOrder(enum.Enum):
    """How __rmem_check_for_overlap()'s sort by (base, size) leaves dynamic nodes, which all sort as 0/0."""

    #: lib/sort.c's unstable heapsort (measured on 6.1:
    #: tests/data/kernel-traces/f-two-dynamic-nodes, g-three-dynamic-nodes).
    HEAPSORT = "heapsort"
    #: The blob's order among equal keys (6.12 sorts an array that also holds
    #: other nodes; single dynamic nodes measured).
    DT_ORDER = "dt-order"


class CmdlineCma(enum.Enum):
    """What the kernel's ``cma=`` early_param accepts."""

    ABSENT = "absent"  # the 2011 series has no cma= parameter
    SIZE_ONLY = "size"  # 3.5's early_cma() reads only memparse(size)
    PLACEMENT = "placement"  # SIZE[@BASE[-LIMIT]] from 3.16 on


class DmaRoute(enum.Enum):
    """How dma_alloc_coherent() reaches cma_alloc."""

    #: The 2011 series' ARM dma-mapping: cm_alloc() on the device's area with
    #: align max(order, dma_min_align_order) and no CONFIG_CMA_ALIGNMENT cap;
    #: system pages when there is no area or cm_alloc fails.
    CM_ALLOC = "cm_alloc"
    #: dma_alloc_from_contiguous() (ARM32) or dma_alloc_contiguous()
    #: (dma-direct), align capped by CONFIG_CMA_ALIGNMENT; ``arch`` decides the rest.
    CONTIGUOUS = "contiguous"


@dataclass(frozen=True, kw_only=True)
class DeviceTreeReservation:
    """A kernel that reads /reserved-memory (drivers/of/of_reserved_mem.c): the facts of its scan."""

    #: pr_fmt of the file that says "failed to reserve memory for node" for a
    #: static region: drivers/of/fdt.c on 6.1, of_reserved_mem.c on 6.12.
    failed_reserve_log_prefix: str
    #: The order dynamic nodes are allocated and initialised in.
    dynamic_node_order: NodeOrder
    #: 6.12 initialises static (``reg``) regions only from
    #: unflatten_device_tree() -> fdt_scan_reserved_mem_reg_nodes(), after
    #: dma_contiguous_reserve() made the default area, in device-tree order;
    #: that function also prints "No reserved-memory node in the DT" when
    #: there is none. 6.1 initialises every region in the sorted scan order.
    static_pools_after_default: bool
    #: 6.12's fdt_init_reserved_mem_node() prints each initialised region as
    #: "<base>..<end> (<KiB> KiB) map|nomap reusable|non-reusable <name>".
    logs_node_range: bool
    #: Debian's 6.12.117 armmp kernel stops booting right after "cma: Reserved"
    #: when the default area lands on the range a failed dynamic node gave back
    #: (tests/data/kernel-traces-6.12: c, e, i hang; g, h, j boot).
    hangs_on_default_over_failed_dynamic_node: bool


@dataclass(frozen=True, kw_only=True)
class KconfigSymbols:
    """The Kconfig symbols a fragment for this kernel may set (they were renamed and added over time)."""

    #: The CMA symbols this tree has, in the order a fragment writes them.
    cma: tuple[str, ...]
    #: The buddy allocator's order limit: FORCE_MAX_ZONEORDER, renamed
    #: ARCH_FORCE_MAX_ORDER in 6.1.
    max_order: str
    #: The 2011 series' CMA was selected by the machine (Kconfig.mach), not
    #: a choice of its own.
    machine_selects_cma: bool
    #: The media core a capture or codec driver needs.
    media: tuple[str, ...]
    #: By the board's ``driver:`` value: the driver's symbols in this tree
    #: (an empty tuple for a driver the tree does not have yet).
    drivers: tuple[tuple[str, tuple[str, ...]], ...]

    def driver(self, name: str) -> tuple[str, ...] | None:
        """The symbols of one driver, or None when we know none for it."""
        return next((syms for known, syms in self.drivers if known == name), None)


_KCONFIG_6X = KconfigSymbols(
    cma=("CMA", "DMA_CMA", "CMA_SIZE_SEL_MBYTES", "CMA_SIZE_MBYTES", "CMA_ALIGNMENT", "CMA_AREAS", "CMA_DEBUGFS",
         "CMA_SYSFS"),
    max_order="ARCH_FORCE_MAX_ORDER",
    machine_selects_cma=False,
    media=("MEDIA_SUPPORT", "MEDIA_CAMERA_SUPPORT", "MEDIA_PLATFORM_SUPPORT", "V4L_PLATFORM_DRIVERS", "VIDEO_DEV"),
    drivers=(
        ("s5p-fimc", ("VIDEO_SAMSUNG_EXYNOS4_IS", "VIDEO_S5P_FIMC", "VIDEOBUF2_DMA_CONTIG")),
        ("s5p-mfc", ("VIDEO_SAMSUNG_S5P_MFC",)),
        ("s5p-jpeg", ("VIDEO_SAMSUNG_S5P_JPEG",)),
        ("vivid", ("MEDIA_TEST_SUPPORT", "V4L_TEST_DRIVERS", "VIDEO_VIVID", "VIDEOBUF2_DMA_CONTIG")),
    ),
)
_MEDIA_OLD = ("MEDIA_SUPPORT", "VIDEO_DEV", "VIDEO_V4L2", "V4L_PLATFORM_DRIVERS")
_DRIVERS_OLD: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("s5p-fimc", ("VIDEO_SAMSUNG_S5P_FIMC", "VIDEOBUF2_DMA_CONTIG")),
    ("s5p-mfc", ("VIDEO_SAMSUNG_S5P_MFC",)),
    ("s5p-jpeg", ("VIDEO_SAMSUNG_S5P_JPEG",)),
    ("vivid", ()),  # vivid arrived in 3.18
)
# MAX_CMA_AREAS was a fixed 8 in 3.5 (no CMA_AREAS symbol); DMA_CMA arrived in 3.12.
_KCONFIG_35 = KconfigSymbols(cma=("CMA", "CMA_SIZE_SEL_MBYTES", "CMA_SIZE_MBYTES", "CMA_ALIGNMENT"),
                             max_order="FORCE_MAX_ZONEORDER", machine_selects_cma=False, media=_MEDIA_OLD,
                             drivers=_DRIVERS_OLD)
_KCONFIG_2011 = KconfigSymbols(cma=("CMA",), max_order="FORCE_MAX_ZONEORDER", machine_selects_cma=True,
                               media=_MEDIA_OLD, drivers=_DRIVERS_OLD)


@dataclass(frozen=True, kw_only=True)
class KernelFacts:
    """What one kernel version does with CMA. Every field is required: no kernel gets a fact by default."""

    #: Where the areas come from: /reserved-memory, or the board file's calls.
    reservation: DeviceTreeReservation | BoardFileApi
    #: What ``cma=`` on the command line can say.
    cmdline_cma: CmdlineCma
    #: MAX_CMA_AREAS is 1 + CONFIG_CMA_AREAS up to 6.1 (include/linux/cma.h
    #: kept a slot for the global area) and CONFIG_CMA_AREAS itself on 6.12.
    default_area_has_own_slot: bool
    #: CONFIG_ARCH_FORCE_MAX_ORDER as written = max_order + this. Before 6.4
    #: the option counted orders exclusively (12: orders 0..11); from 6.4 it
    #: names the highest order (MAX_PAGE_ORDER), so the same build reads one less.
    max_order_written_offset: int
    #: 6.12's cma_declare_contiguous_nid() ends "cma: Reserved ..." and
    #: "cma: Failed to reserve ..." with " on node -1".
    declare_log_names_node: bool
    #: ARM's atomic_pool_init() takes the atomic coherent pool from CMA at
    #: boot and logs "DMA: preallocated ..."; the 2011 series left the
    #: coherent pool as it was.
    has_atomic_pool: bool
    dma_route: DmaRoute
    #: The smallest order the DMA layer asks cma_alloc for: the 2011 series'
    #: dma-mapping asked for at least order 8 (1 MiB).
    dma_min_align_order: int
    #: events/cma/* (cma_alloc_start, cma_alloc_busy_retry from 5.16);
    #: older kernels trace nothing.
    has_tracepoints: bool
    #: 6.12's cma_alloc_finish prints `` errorno=%d``; 6.1's does not.
    finish_has_errorno: bool
    #: The __func__ in cma_alloc's failure line: 6.12 moved the body to __cma_alloc().
    alloc_function: str
    #: cma_alloc prints "<func>: <area>: alloc failed, req-size: ..." (6.x);
    #: 3.5 and the 2011 series fail silently.
    warns_on_alloc_failure: bool
    #: 6.12 follows the failure line with cma_debug_show_areas()'s free-run
    #: dump at info level ("number of available pages: ...").
    dumps_free_runs_on_failure: bool
    #: A call that exits early (no area, count 0) still counts in vmstat's
    #: cma_alloc_fail; 6.12 returns before counting.
    early_exit_counts_failure: bool
    #: The bitmap search aligns to the page frame number
    #: (cma_bitmap_aligned_offset()); 3.5 aligned to the area's first bit.
    align_offset_follows_pfn: bool
    #: When the search runs dry after busy ranges, 3.5 returned -ENOMEM;
    #: later kernels keep the -EBUSY of the last try.
    exhausted_search_returns_enomem: bool
    #: cma_alloc moves on past a busy range and tries the next; the 2011
    #: series' cm_alloc gave up at the first.
    retries_busy_ranges: bool
    #: /sys/kernel/mm/cma/<area>/release_pages_success exists (6.12).
    counts_released_pages: bool
    kconfig: KconfigSymbols


_FACTS_2011 = KernelFacts(
    reservation=BoardFileApi.CMA_2011, cmdline_cma=CmdlineCma.ABSENT, default_area_has_own_slot=True,
    max_order_written_offset=0, declare_log_names_node=False, has_atomic_pool=False,
    dma_route=DmaRoute.CM_ALLOC, dma_min_align_order=8, has_tracepoints=False, finish_has_errorno=False,
    alloc_function="cm_alloc", warns_on_alloc_failure=False, dumps_free_runs_on_failure=False,
    early_exit_counts_failure=True, align_offset_follows_pfn=True, exhausted_search_returns_enomem=False,
    retries_busy_ranges=False, counts_released_pages=False, kconfig=_KCONFIG_2011,
)

_FACTS_3_5 = KernelFacts(
    reservation=BoardFileApi.DMA_DECLARE_CONTIGUOUS, cmdline_cma=CmdlineCma.SIZE_ONLY,
    default_area_has_own_slot=True, max_order_written_offset=0, declare_log_names_node=False,
    has_atomic_pool=True, dma_route=DmaRoute.CONTIGUOUS, dma_min_align_order=0, has_tracepoints=False,
    finish_has_errorno=False, alloc_function="cma_alloc", warns_on_alloc_failure=False,
    dumps_free_runs_on_failure=False, early_exit_counts_failure=True, align_offset_follows_pfn=False,
    exhausted_search_returns_enomem=True, retries_busy_ranges=True, counts_released_pages=False,
    kconfig=_KCONFIG_35,
)

_FACTS_6_1 = KernelFacts(
    reservation=DeviceTreeReservation(
        failed_reserve_log_prefix="OF: fdt: ", dynamic_node_order=NodeOrder.HEAPSORT,
        static_pools_after_default=False, logs_node_range=False,
        hangs_on_default_over_failed_dynamic_node=False,
    ),
    cmdline_cma=CmdlineCma.PLACEMENT, default_area_has_own_slot=True, max_order_written_offset=0,
    declare_log_names_node=False, has_atomic_pool=True, dma_route=DmaRoute.CONTIGUOUS,
    dma_min_align_order=0, has_tracepoints=True, finish_has_errorno=False, alloc_function="cma_alloc",
    warns_on_alloc_failure=True, dumps_free_runs_on_failure=False, early_exit_counts_failure=True,
    align_offset_follows_pfn=True, exhausted_search_returns_enomem=False, retries_busy_ranges=True,
    counts_released_pages=False, kconfig=_KCONFIG_6X,
)

_FACTS_6_12 = KernelFacts(
    reservation=DeviceTreeReservation(
        failed_reserve_log_prefix="OF: reserved mem: ", dynamic_node_order=NodeOrder.DT_ORDER,
        static_pools_after_default=True, logs_node_range=True,
        hangs_on_default_over_failed_dynamic_node=True,
    ),
    cmdline_cma=CmdlineCma.PLACEMENT, default_area_has_own_slot=False, max_order_written_offset=-1,
    declare_log_names_node=True, has_atomic_pool=True, dma_route=DmaRoute.CONTIGUOUS,
    dma_min_align_order=0, has_tracepoints=True, finish_has_errorno=True, alloc_function="__cma_alloc",
    warns_on_alloc_failure=True, dumps_free_runs_on_failure=True, early_exit_counts_failure=False,
    align_offset_follows_pfn=True, exhausted_search_returns_enomem=False, retries_busy_ranges=True,
    counts_released_pages=True, kconfig=_KCONFIG_6X,
)


def facts_of(family: Family) -> KernelFacts:
    """The kernel facts of one family: the one place that tells kernel versions apart."""
    match family:
        case Family.CMA_2011:
            return _FACTS_2011
        case Family.LINUX_3_5:
            return _FACTS_3_5
        case Family.LINUX_6_1:
            return _FACTS_6_1
        case Family.LINUX_6_12:
            return _FACTS_6_12
        case _ as unhandled:
            assert_never(unhandled)


@dataclass(frozen=True, kw_only=True)
class KernelProfile:
    """One kernel build: its family's facts plus the build values a board may override.

    Every field is required, so each profile in :data:`PROFILES` states every
    build value it stands for.
    """

    name: str
    family: Family
    #: CONFIG_ARCH_FORCE_MAX_ORDER as 6.1 spells it: the buddy allocator's
    #: orders run 0 .. max_order - 1. Debian's armmp kernels have 12.
    max_order: int
    page_size: int
    #: CONFIG_CMA_ALIGNMENT: the cap on a DMA buffer's alignment order.
    cma_alignment: int
    #: CONFIG_CMA_SIZE_MBYTES: the default area when neither DT nor cma= names one.
    cma_size_mbytes: int
    #: CONFIG_CMA_SIZE_PERCENTAGE, used instead of the MiB value when set.
    cma_size_percentage: int | None
    #: CONFIG_CMA_AREAS as written in the kernel config.
    config_cma_areas: int
    lpae: bool
    #: ARM32 LPAE or arm64 with hugetlb: pageblock_order = HUGETLB_PAGE_ORDER.
    hugetlb_pageblock_order: int | None
    arch: Arch
    #: The atomic coherent pool ARM32 takes from the default area at boot
    #: (``coherent_pool=`` overrides it on the command line).
    atomic_pool_bytes: int

    @property
    def facts(self) -> KernelFacts:
        return facts_of(self.family)

    @property
    def reads_device_tree(self) -> bool:
        """Whether the areas come from /reserved-memory (else from board-file calls)."""
        return isinstance(self.facts.reservation, DeviceTreeReservation)

    @property
    def has_cmdline_placement(self) -> bool:
        """``cma=SIZE@BASE-LIMIT`` is understood; older kernels read only a size or have no cma=."""
        return self.facts.cmdline_cma is CmdlineCma.PLACEMENT

    @property
    def page_shift(self) -> int:
        return self.page_size.bit_length() - 1

    @property
    def pageblock_order(self) -> int:
        if self.hugetlb_pageblock_order is not None:
            return self.hugetlb_pageblock_order
        return self.max_order - 1

    @property
    def cma_min_pages(self) -> int:
        """CMA_MIN_ALIGNMENT_PAGES: one pageblock. Every area's base and size is a multiple."""
        return 1 << self.pageblock_order

    @property
    def cma_min_bytes(self) -> int:
        return self.cma_min_pages * self.page_size

    @property
    def area_slots(self) -> int:
        """MAX_CMA_AREAS: how many areas the kernel can hold."""
        return self.config_cma_areas + (1 if self.facts.default_area_has_own_slot else 0)

    @property
    def address_digits(self) -> int:
        """%pa prints 8 hex digits on ARM32, 16 with LPAE or on 64-bit."""
        return 16 if (self.lpae or self.arch == "dma-direct") else 8

    @property
    def long_bits(self) -> int:
        """Width of ``unsigned long``: a failed allocation's pfn (-1) prints as all ones of this width.

        LPAE widens phys_addr_t, not unsigned long, so it stays 32 on ARM32.
        """
        return 64 if self.arch == "dma-direct" else 32

    @property
    def pointer_digits(self) -> int:
        """%p of a NULL page in a trace line: zeros as wide as a pointer."""
        return self.long_bits // 4

    @property
    def max_order_as_written(self) -> int:
        """The max-order Kconfig value as this kernel's own .config spells it."""
        return self.max_order + self.facts.max_order_written_offset


def profile_from_kconfig_max_order(name: str, written: int, **overrides: object) -> KernelProfile:
    """The named profile with the max-order option given as that kernel's .config spells it."""
    base = PROFILES[name]
    stored = written - base.facts.max_order_written_offset
    return dataclasses.replace(base, max_order=stored, **overrides)  # type: ignore[arg-type]


PROFILES: dict[str, KernelProfile] = {
    p.name: p
    for p in (
        # Debian bookworm's armmp kernel, what the emulated board runs.
        KernelProfile(name="linux-6.1", family=Family.LINUX_6_1, max_order=12, page_size=4096, cma_alignment=8,
                      cma_size_mbytes=16, cma_size_percentage=None, config_cma_areas=7, lpae=False,
                      hugetlb_pageblock_order=None, arch="arm32", atomic_pool_bytes=256 * 1024),
        # Debian trixie's armmp kernel (--suite trixie).
        KernelProfile(name="linux-6.12", family=Family.LINUX_6_12, max_order=12, page_size=4096, cma_alignment=8,
                      cma_size_mbytes=16, cma_size_percentage=None, config_cma_areas=8, lpae=False,
                      hugetlb_pageblock_order=None, arch="arm32", atomic_pool_bytes=256 * 1024),
        # dma_declare_contiguous() era; a kernel built for the S5PV210 alone.
        KernelProfile(name="linux-3.5", family=Family.LINUX_3_5, max_order=11, page_size=4096, cma_alignment=8,
                      cma_size_mbytes=16, cma_size_percentage=None, config_cma_areas=7, lpae=False,
                      hugetlb_pageblock_order=None, arch="arm32", atomic_pool_bytes=256 * 1024),
        # The June 2011 series (the seed): cma_reserve/cma_create/cm_alloc.
        KernelProfile(name="cma-2011", family=Family.CMA_2011, max_order=11, page_size=4096, cma_alignment=8,
                      cma_size_mbytes=16, cma_size_percentage=None, config_cma_areas=7, lpae=False,
                      hugetlb_pageblock_order=None, arch="arm32", atomic_pool_bytes=256 * 1024),
    )
}


def profile_with(name: str, **overrides: object) -> KernelProfile:
    """The named profile with some values replaced; KeyError for an unknown name."""
    base = PROFILES[name]
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]
