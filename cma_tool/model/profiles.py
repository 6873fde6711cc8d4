"""Kernel profiles: the build facts of a kernel that decide CMA's behaviour.

A profile is plain data. Boards name one (``kernel: profile: linux-6.1``) and
may override single values (``max-order: 11`` for a kernel built for the
S5PV210 alone); :func:`profile_with` applies such overrides.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

Family = Literal["2011", "3.5", "6.1", "6.12"]
Arch = Literal["arm32", "dma-direct"]


@dataclass(frozen=True)
class KernelProfile:
    name: str
    family: Family
    #: CONFIG_ARCH_FORCE_MAX_ORDER as 6.1 spells it: the buddy allocator's
    #: orders run 0 .. max_order - 1. Debian's armmp 6.1 kernel has 12.
    max_order: int = 11
    page_size: int = 4096
    #: CONFIG_CMA_ALIGNMENT: the cap on a DMA buffer's alignment order.
    cma_alignment: int = 8
    #: CONFIG_CMA_SIZE_MBYTES: the default area when neither DT nor cma= names one.
    cma_size_mbytes: int = 16
    #: CONFIG_CMA_SIZE_PERCENTAGE, used instead of the MiB value when set.
    cma_size_percentage: int | None = None
    #: CONFIG_CMA_AREAS as written in the kernel config.
    config_cma_areas: int = 7
    lpae: bool = False
    #: ARM32 LPAE or arm64 with hugetlb: pageblock_order = HUGETLB_PAGE_ORDER.
    hugetlb_pageblock_order: int | None = None
    arch: Arch = "arm32"
    #: The atomic coherent pool ARM32 takes from the default area at boot
    #: (``coherent_pool=`` overrides it on the command line).
    atomic_pool_bytes: int = 256 * 1024

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
        """MAX_CMA_AREAS: 6.1 adds one slot for the default area, 6.12 does not."""
        if self.family in ("6.12",):
            return self.config_cma_areas
        return 1 + self.config_cma_areas

    @property
    def address_digits(self) -> int:
        """%pa prints 8 hex digits on ARM32, 16 with LPAE or on 64-bit."""
        return 16 if (self.lpae or self.arch == "dma-direct") else 8

    # --- added for the allocator model -------------------------------------

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
        """CONFIG_ARCH_FORCE_MAX_ORDER as this kernel's own Kconfig spells it.

        6.1 counts orders exclusively (12 means orders 0..11); from 6.4 on the
        value is the highest order itself (MAX_PAGE_ORDER), so the same build
        fact reads one less on 6.12.
        """
        return self.max_order - 1 if self.family == "6.12" else self.max_order

    @property
    def has_tracepoints(self) -> bool:
        """events/cma/* exist from 5.16 (start/busy_retry) on; older kernels trace nothing."""
        return self.family in ("6.1", "6.12")

    @property
    def finish_has_errorno(self) -> bool:
        """6.12's cma_alloc_finish prints `` errorno=%d``; 6.1's does not."""
        return self.family == "6.12"

    @property
    def alloc_function(self) -> str:
        """The __func__ in the allocation failure message."""
        return "__cma_alloc" if self.family == "6.12" else "cma_alloc"

    @property
    def has_cmdline_placement(self) -> bool:
        """``cma=SIZE@BASE-LIMIT`` exists from 3.16 on; 3.5 reads only a size, 2011 has no cma=."""
        return self.family in ("6.1", "6.12")

    @property
    def dma_min_align_order(self) -> int:
        """The 2011 series' ARM dma-mapping asked cm_alloc for at least order 8 (1 MiB)."""
        return 8 if self.family == "2011" else 0


def profile_from_kconfig_max_order(name: str, written: int, **overrides: object) -> KernelProfile:
    """The named profile with CONFIG_ARCH_FORCE_MAX_ORDER given as that kernel's .config spells it."""
    base = PROFILES[name]
    stored = written + 1 if base.family == "6.12" else written
    return dataclasses.replace(base, max_order=stored, **overrides)  # type: ignore[arg-type]


PROFILES: dict[str, KernelProfile] = {
    p.name: p
    for p in (
        # Debian bookworm's armmp kernel, what the emulated board runs.
        KernelProfile("linux-6.1", "6.1", max_order=12),
        KernelProfile("linux-6.12", "6.12", max_order=12, config_cma_areas=8),
        # dma_declare_contiguous() era; a kernel built for the S5PV210 alone.
        KernelProfile("linux-3.5", "3.5", max_order=11),
        # The June 2011 series (the seed): cma_reserve/cma_create/cm_alloc.
        KernelProfile("cma-2011", "2011", max_order=11, config_cma_areas=7),
    )
}


def profile_with(name: str, **overrides: object) -> KernelProfile:
    """The named profile with some values replaced; KeyError for an unknown name."""
    base = PROFILES[name]
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]
