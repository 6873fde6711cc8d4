"""Kernel profiles: every way the kernels we model differ in CMA, as named data.

Two kinds of fact make a profile:

- what a kernel *version* does (:class:`KernelFacts`): which log lines it
  prints, in which order it sets areas up, what its tracepoints carry. Each
  fact is fixed per :class:`Family` and says the kernel source or recording
  (tests/data/kernel-traces*/) behind it. :func:`facts_of` maps a family to
  its facts, exhaustively: a family without facts is a mypy error there.
- how the kernel was *built* (:class:`KernelProfile`'s own fields): its
  architecture (armhf or arm64), the CONFIG_ values and architecture choices
  that a board may override (``max-order: 11`` for a kernel built for the
  S5PV210 alone); see :func:`profile_with`. Debian's kernels
  (:data:`DEBIAN_KERNELS`: 5.10, 6.1, 6.12 x armhf, arm64) take theirs from
  each package's own /boot/config-* (``debian-kconfig.json``).

Code outside this module reads facts and never asks which kernel it is, so a
new kernel version is a :class:`Family` member, its :class:`KernelFacts` in
:func:`facts_of`, and its profile in :data:`PROFILES` (and the recordings
that prove them). Where behaviour cannot be a plain value, a fact is a
closed enum and its readers ``match`` it exhaustively.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
from dataclasses import dataclass
from typing import Literal, assert_never

from cma_tool.errors import ConfigError
from cma_tool.sizes import format_size

#: How dma_alloc_coherent() reaches CMA: ARM32's own dma-mapping, or the generic dma-direct (arm64).
Arch = Literal["arm32", "dma-direct"]
#: The Debian architecture a kernel is built for: a first-class dimension of a profile.
Architecture = Literal["armhf", "arm64"]
ARCHITECTURES: tuple[Architecture, ...] = ("armhf", "arm64")


class Family(enum.Enum):
    """A kernel version whose CMA behaviour we model (the value is how we write the version).

    A plain Enum: no code compares a family with a version string; code asks
    for a kernel fact (:class:`KernelFacts`) instead.
    """

    CMA_2011 = "2011"  # the June 2011 CMA patch series (PATCHv10), the seed
    LINUX_3_5 = "3.5"  # dma_declare_contiguous() era, board files
    LINUX_5_10 = "5.10"  # Debian bullseye's kernels
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
    #: (tests/data/kernel-traces-6.12: c, e, i hang; g, h, j boot). ARM32 only:
    #: the arm64 build boots the same layouts (kernel-matrix/debian-6.12-arm64/c, e).
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
    #: The cma tracepoints carry the area's name (5.16 on: cma_alloc_start,
    #: cma_alloc_finish, cma_alloc_busy_retry, cma_release with ``name=``).
    #: 5.10 has only ``cma_alloc`` (once, at the end, pfn -1 on failure) and
    #: ``cma_release``, both without a name.
    tracepoints_name_area: bool
    #: cma_alloc's failure line names the area (``cma_alloc: <area>: alloc
    #: failed``); 5.10 says only ``cma_alloc: alloc failed``.
    failure_names_area: bool
    #: /proc/vmstat has cma_alloc_success and cma_alloc_fail (from 5.12).
    vmstat_counts_allocations: bool
    #: The CMA unit is max(MAX_ORDER - 1, pageblock_order) pages (5.10); from
    #: 5.19 it is one pageblock (CMA_MIN_ALIGNMENT_PAGES), which on arm64 with
    #: hugetlb is 2 MiB instead of 4.
    cma_unit_includes_max_order: bool
    #: SECTION_SIZE_BITS on arm64 with 4K pages: 1 GiB sections up to 5.11,
    #: 128 MiB from 5.12. arm64's sparse_init() allocates the struct pages of
    #: every present section before the default area is reserved (model/boot.py).
    arm64_section_bits: int
    kconfig: KconfigSymbols


ARM64_SECTION_BITS_OLD = 30  # 1 GiB sections (arm64 before 5.12; arm64 did not exist for 3.5 and 2011)
ARM64_SECTION_BITS_NEW = 27  # 128 MiB sections

_FACTS_2011 = KernelFacts(
    reservation=BoardFileApi.CMA_2011, cmdline_cma=CmdlineCma.ABSENT, default_area_has_own_slot=True,
    max_order_written_offset=0, declare_log_names_node=False, has_atomic_pool=False,
    dma_route=DmaRoute.CM_ALLOC, dma_min_align_order=8, has_tracepoints=False, finish_has_errorno=False,
    alloc_function="cm_alloc", warns_on_alloc_failure=False, dumps_free_runs_on_failure=False,
    early_exit_counts_failure=True, align_offset_follows_pfn=True, exhausted_search_returns_enomem=False,
    retries_busy_ranges=False, counts_released_pages=False, tracepoints_name_area=False, failure_names_area=False,
    vmstat_counts_allocations=False, cma_unit_includes_max_order=True, arm64_section_bits=ARM64_SECTION_BITS_OLD,
    kconfig=_KCONFIG_2011,
)

_FACTS_3_5 = KernelFacts(
    reservation=BoardFileApi.DMA_DECLARE_CONTIGUOUS, cmdline_cma=CmdlineCma.SIZE_ONLY,
    default_area_has_own_slot=True, max_order_written_offset=0, declare_log_names_node=False,
    has_atomic_pool=True, dma_route=DmaRoute.CONTIGUOUS, dma_min_align_order=0, has_tracepoints=False,
    finish_has_errorno=False, alloc_function="cma_alloc", warns_on_alloc_failure=False,
    dumps_free_runs_on_failure=False, early_exit_counts_failure=True, align_offset_follows_pfn=False,
    exhausted_search_returns_enomem=True, retries_busy_ranges=True, counts_released_pages=False,
    tracepoints_name_area=False, failure_names_area=False, vmstat_counts_allocations=False,
    cma_unit_includes_max_order=True, arm64_section_bits=ARM64_SECTION_BITS_OLD, kconfig=_KCONFIG_35,
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
    counts_released_pages=False, tracepoints_name_area=True, failure_names_area=True, vmstat_counts_allocations=True,
    cma_unit_includes_max_order=False, arm64_section_bits=ARM64_SECTION_BITS_NEW, kconfig=_KCONFIG_6X,
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
    counts_released_pages=True, tracepoints_name_area=True, failure_names_area=True, vmstat_counts_allocations=True,
    cma_unit_includes_max_order=False, arm64_section_bits=ARM64_SECTION_BITS_NEW, kconfig=_KCONFIG_6X,
)

# Debian bullseye's 5.10 (armmp and arm64). Read from the 5.10 sources and
# proven by tests/data/kernel-traces-5.10*/ (see docs/profiles.md).
# 5.10 has no CMA_SYSFS (5.13) and calls the max order FORCE_MAX_ZONEORDER (renamed in 6.1).
_KCONFIG_510 = dataclasses.replace(_KCONFIG_6X, cma=tuple(c for c in _KCONFIG_6X.cma if c != "CMA_SYSFS"),
                                   max_order="FORCE_MAX_ZONEORDER")
_FACTS_5_10 = KernelFacts(
    reservation=DeviceTreeReservation(
        failed_reserve_log_prefix="OF: fdt: ", dynamic_node_order=NodeOrder.HEAPSORT,
        static_pools_after_default=False, logs_node_range=False,
        hangs_on_default_over_failed_dynamic_node=False,
    ),
    cmdline_cma=CmdlineCma.PLACEMENT, default_area_has_own_slot=True, max_order_written_offset=0,
    declare_log_names_node=False, has_atomic_pool=True, dma_route=DmaRoute.CONTIGUOUS,
    dma_min_align_order=0, has_tracepoints=True, finish_has_errorno=False, alloc_function="cma_alloc",
    # 5.10's cma_debug_show_areas() is built only with CONFIG_CMA_DEBUG, which Debian leaves out.
    warns_on_alloc_failure=True, dumps_free_runs_on_failure=False, early_exit_counts_failure=False,
    align_offset_follows_pfn=True, exhausted_search_returns_enomem=False, retries_busy_ranges=True,
    counts_released_pages=False, tracepoints_name_area=False, failure_names_area=False,
    vmstat_counts_allocations=False, cma_unit_includes_max_order=True, arm64_section_bits=ARM64_SECTION_BITS_OLD,
    kconfig=_KCONFIG_510,
)


def facts_of(family: Family) -> KernelFacts:
    """The kernel facts of one family: the one place that tells kernel versions apart."""
    match family:
        case Family.CMA_2011:
            return _FACTS_2011
        case Family.LINUX_3_5:
            return _FACTS_3_5
        case Family.LINUX_5_10:
            return _FACTS_5_10
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
    #: armhf or arm64: decides the DMA path (:attr:`arch`), address widths and atomic pools.
    architecture: Architecture
    #: The atomic coherent pool ARM32 takes from the default area at boot
    #: (``coherent_pool=`` overrides it on the command line). arm64's pools
    #: are sized from the memory unless ``coherent_pool=`` is given.
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
    def arch(self) -> Arch:
        """How DMA allocations reach CMA: ARM32's dma-mapping on armhf, dma-direct on arm64."""
        return "arm32" if self.architecture == "armhf" else "dma-direct"

    @property
    def default_area_after_unflatten(self) -> bool:
        """Whether the default area is reserved after unflatten_device_tree() (arm64) or before it (ARM32).

        arm64's setup_arch() unflattens the tree before bootmem_init() calls
        dma_contiguous_reserve(); ARM32 reserves it in arm_memblock_init(),
        earlier. So 6.12's late set-up of static pools (done while
        unflattening) comes before the default area on arm64 and after it on
        ARM32 (tests/data/kernel-matrix/debian-6.12-*/i-cmdline-fixed-32m).
        """
        return self.architecture == "arm64"

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
        """The CMA unit: every area's base and size is a multiple.

        One pageblock (CMA_MIN_ALIGNMENT_PAGES) from 5.19; before, the larger
        of a pageblock and a MAX_ORDER block (5.10 on arm64: 4 MiB, not 2).
        """
        if self.facts.cma_unit_includes_max_order:
            return 1 << max(self.pageblock_order, self.max_order - 1)
        return 1 << self.pageblock_order

    @property
    def cma_min_bytes(self) -> int:
        return self.cma_min_pages * self.page_size

    @property
    def cma_unit_text(self) -> str:
        """What the CMA unit is on this kernel, in words: "one 8 MiB pageblock", or the bigger block it is."""
        unit, pageblock = self.cma_min_bytes, self.page_size << self.pageblock_order
        if unit == pageblock:
            return f"one {format_size(pageblock)} pageblock"
        return (f"one {format_size(unit)} MAX_ORDER-1 block (2^{self.max_order - 1} pages; "
                f"a pageblock is {format_size(pageblock)})")

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


@dataclass(frozen=True)
class DebianKernel:
    """A Debian kernel the emulated board boots, named ``debian-<series>-<architecture>``.

    Its profile's build values are not typed in here: they come from the
    package's own /boot/config-* (:data:`KCONFIG_FILE`, written by
    ``python3 -m cma_tool.deploy.image --kconfig``, which reads each package).
    """

    name: str
    series: str  # "6.1"
    architecture: Architecture
    #: The Debian suite the package comes from, through a private apt state;
    #: None: the system's own sources (bookworm, with its security updates).
    suite: str | None
    flavour: str  # the package name's last part: armmp, arm64
    family: Family

    @property
    def profile(self) -> str:
        """The model profile of this kernel: linux-<series>, plus -arm64 for arm64."""
        return f"linux-{self.series}" + ("" if self.architecture == "armhf" else f"-{self.architecture}")


DEBIAN_KERNELS: dict[str, DebianKernel] = {
    k.name: k
    for series, suite, family in (("5.10", "bullseye", Family.LINUX_5_10), ("6.1", None, Family.LINUX_6_1),
                                  ("6.12", "trixie", Family.LINUX_6_12))
    for k in (DebianKernel(f"debian-{series}-armhf", series, "armhf", suite, "armmp", family),
              DebianKernel(f"debian-{series}-arm64", series, "arm64", suite, "arm64", family))
}
#: ``--suite`` as it was before kernels had names: a Debian suite's armhf kernel.
SUITE_KERNELS = {"bullseye": "debian-5.10-armhf", "bookworm": "debian-6.1-armhf", "trixie": "debian-6.12-armhf"}

def debian_kernel(kernel: str | None = None, suite: str | None = None) -> DebianKernel:
    """The Debian kernel named by ``kernel`` (debian-6.1-arm64) or by ``suite`` (its armhf kernel); default 6.1 armhf."""
    if kernel is not None and suite is not None:
        raise ConfigError(f"both a kernel ({kernel}) and a suite ({suite}) were named",
                          hint=f"the suite only names an armhf kernel: {', '.join(f'{s}={k}' for s, k in SUITE_KERNELS.items())}")
    if suite is not None:
        if suite not in SUITE_KERNELS:
            raise ConfigError(f"no Debian kernel is known for suite {suite!r}",
                              hint=f"known suites: {', '.join(SUITE_KERNELS)}; or name a kernel: {', '.join(DEBIAN_KERNELS)}")
        kernel = SUITE_KERNELS[suite]
    name = kernel or SUITE_KERNELS["bookworm"]
    if name not in DEBIAN_KERNELS:
        close = difflib.get_close_matches(name, DEBIAN_KERNELS, n=1)
        raise ConfigError(f"{name!r} is not a Debian kernel the emulated board can boot",
                          hint=f"did you mean {close[0]}?" if close else f"known: {', '.join(DEBIAN_KERNELS)}")
    return DEBIAN_KERNELS[name]


#: Each Debian kernel's CMA-relevant Kconfig values, as its package's /boot/config-* says.
KCONFIG_FILE = "debian-kconfig.json"


def debian_kconfig() -> dict[str, dict[str, object]]:
    """:data:`KCONFIG_FILE` as read: kernel name -> {package, version, config: {SYMBOL: value}}."""
    import json
    from importlib import resources

    data = json.loads(resources.files("cma_tool.model").joinpath(KCONFIG_FILE).read_text())
    return {str(k): dict(v) for k, v in data.items()}


def profile_from_kconfig(name: str, family: Family, architecture: Architecture, config: dict[str, str]) -> KernelProfile:
    """A profile from a kernel's .config values (``SYMBOL`` -> its value as written, ``y`` for a bool)."""
    facts = facts_of(family)

    def number(symbol: str, default: int | None = None) -> int:
        if symbol in config:
            return int(config[symbol], 0)
        if default is None:
            raise ValueError(f"{name}: CONFIG_{symbol} is not set in the kernel's config")
        return default

    # Kconfig's default where an architecture does not force the max order (11: orders 0..10).
    written = number(facts.kconfig.max_order, 11 + facts.max_order_written_offset)
    page_size = 16384 if config.get("ARM64_16K_PAGES") == "y" else 65536 if config.get("ARM64_64K_PAGES") == "y" else 4096
    page_shift = page_size.bit_length() - 1
    lpae = config.get("ARM_LPAE") == "y"
    hugetlb = None
    if config.get("HUGETLB_PAGE") == "y" and (architecture == "arm64" or lpae):
        # pageblock_order = HUGETLB_PAGE_ORDER: a PMD's worth of pages (2 MiB with 4K pages).
        pmd_shift = 21 if page_size == 4096 else 25 if page_size == 16384 else 29
        hugetlb = pmd_shift - page_shift
    percentage = number("CMA_SIZE_PERCENTAGE") if config.get("CMA_SIZE_SEL_PERCENTAGE") == "y" else None
    return KernelProfile(
        name=name, family=family, max_order=written - facts.max_order_written_offset, page_size=page_size,
        cma_alignment=number("CMA_ALIGNMENT"), cma_size_mbytes=number("CMA_SIZE_MBYTES"),
        cma_size_percentage=percentage, config_cma_areas=number("CMA_AREAS"), lpae=lpae,
        hugetlb_pageblock_order=hugetlb, architecture=architecture,
        # The kernel's coherent_pool= default (so no coherent_pool= is written); arm64 sizes its pools
        # from the memory unless coherent_pool= is given (model/boot.py).
        atomic_pool_bytes=256 * 1024,
    )


def _debian_profiles() -> list[KernelProfile]:
    table = debian_kconfig()
    out = []
    for kernel in DEBIAN_KERNELS.values():
        entry = table.get(kernel.name)
        if entry is None:
            continue  # not read yet: python3 -m cma_tool.deploy.image --kconfig
        config = entry["config"]
        assert isinstance(config, dict)
        out.append(profile_from_kconfig(kernel.profile, kernel.family, kernel.architecture,
                                        {str(k): str(v) for k, v in config.items()}))
    return out


PROFILES: dict[str, KernelProfile] = {
    p.name: p
    for p in (
        # Debian's kernels (DEBIAN_KERNELS): linux-5.10, linux-6.1, linux-6.12 (armhf, armmp) and
        # linux-5.10-arm64, linux-6.1-arm64, linux-6.12-arm64, each from its package's own config.
        *_debian_profiles(),
        # dma_declare_contiguous() era; a kernel built for the S5PV210 alone.
        KernelProfile(name="linux-3.5", family=Family.LINUX_3_5, max_order=11, page_size=4096, cma_alignment=8,
                      cma_size_mbytes=16, cma_size_percentage=None, config_cma_areas=7, lpae=False,
                      hugetlb_pageblock_order=None, architecture="armhf", atomic_pool_bytes=256 * 1024),
        # The June 2011 series (the seed): cma_reserve/cma_create/cm_alloc.
        KernelProfile(name="cma-2011", family=Family.CMA_2011, max_order=11, page_size=4096, cma_alignment=8,
                      cma_size_mbytes=16, cma_size_percentage=None, config_cma_areas=7, lpae=False,
                      hugetlb_pageblock_order=None, architecture="armhf", atomic_pool_bytes=256 * 1024),
    )
}


def kernel_profile(name: str) -> KernelProfile:
    """The profile a kernel name stands for: a profile's own name, or a Debian kernel's (debian-6.1-arm64).

    KeyError for a name that is neither.
    """
    if name in DEBIAN_KERNELS:
        return PROFILES[DEBIAN_KERNELS[name].profile]
    return PROFILES[name]


def kernel_names() -> list[str]:
    """Every name :func:`kernel_profile` takes, for hints."""
    return [*DEBIAN_KERNELS, *PROFILES]


def profile_with(name: str, **overrides: object) -> KernelProfile:
    """The named profile with some values replaced; KeyError for an unknown name."""
    base = PROFILES[name]
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]
