"""Where lowmem and the DMA zone end on ARM32: the limits board-file era kernels place CMA below.

Linux 3.5 (arch/arm/mm/init.c arm_memblock_init()) reserves the default area
with ``dma_contiguous_reserve(min(arm_dma_limit, arm_lowmem_limit))``, and a
``dma_declare_contiguous()`` without a base allocates through
``__memblock_alloc_base(size, align, 0)``: 0 is MEMBLOCK_ALLOC_ACCESSIBLE,
memblock's current limit, which sanity_check_meminfo() set to
arm_lowmem_limit. The 2011 series' cma_reserve() allocates the same way. So
on these kernels no CMA area lands in highmem, and the default area stays
inside the machine's DMA zone. (From 3.18 on, "ARM: mm: don't limit default
CMA region only to low memory" dropped the lowmem part; the 6.x profiles do
not use this module.)

The numbers, as the kernel computes them:

- arch/arm/mm/mmu.c: ``vmalloc_min = VMALLOC_END - vmalloc reserve [-
  VMALLOC_OFFSET]`` (the default; ``vmalloc=SIZE`` on the command line sets
  ``VMALLOC_END - SIZE``, SIZE clamped to 16 MiB .. VMALLOC_END - (PAGE_OFFSET +
  32 MiB)). sanity_check_meminfo() walks the banks in order: a bank whose
  virtual start ``__va(start) = start - PHYS_OFFSET + PAGE_OFFSET`` is at or
  above vmalloc_min (or below PAGE_OFFSET) is highmem, and so is every bank
  after it; a bank that crosses vmalloc_min is split there. arm_lowmem_limit
  is the end of the last lowmem part.
- arch/arm/mm/init.c setup_dma_zone(): a machine with ``dma_zone_size`` has
  ``arm_dma_limit = PHYS_OFFSET + dma_zone_size - 1``; without one it is
  0xffffffff.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cma_tool.model.cmdline import memparse
from cma_tool.model.profiles import BoardFileApi, BoardFileLowmem, KernelProfile, board_file_lowmem

SZ_16M = 16 << 20
SZ_32M = 32 << 20
#: arm_dma_limit without CONFIG_ZONE_DMA / dma_zone_size: ((phys_addr_t)~0) on a 32-bit phys_addr_t.
NO_DMA_ZONE_LIMIT = 0xFFFFFFFF


@dataclass(frozen=True)
class ArmLayout:
    """The board's side of the ARM32 memory layout (its kernel's build and machine values)."""

    #: CONFIG_PAGE_OFFSET: 0xC0000000 with the usual 3G/1G split (VMSPLIT_3G).
    page_offset: int = 0xC0000000
    #: PHYS_OFFSET; None: the lowest bank's base, which ARM_PATCH_PHYS_VIRT (default y from 3.1)
    #: computes at boot when the kernel runs at the start of RAM.
    phys_offset: int | None = None
    #: The machine descriptor's dma_zone_size (CONFIG_ZONE_DMA); None: no DMA zone.
    dma_zone_size: int | None = None


@dataclass(frozen=True)
class ArmLimits:
    vmalloc_min: int  # virtual address where lowmem must end
    lowmem_end: int  # arm_lowmem_limit (physical, exclusive)
    dma_limit: int  # arm_dma_limit (physical, inclusive, as the kernel keeps it)

    @property
    def default_area_limit(self) -> int:
        """What arm_memblock_init() hands dma_contiguous_reserve()."""
        return min(self.dma_limit, self.lowmem_end)


_VMALLOC_WORD = re.compile(r"(?:^|\s)vmalloc=(\S*)")


def vmalloc_min(facts: BoardFileLowmem, layout: ArmLayout, cmdline: str) -> int:
    """mmu.c's vmalloc_min after early_vmalloc() read the command line (the last vmalloc= wins)."""
    given = _VMALLOC_WORD.findall(cmdline)
    if not given:
        return facts.vmalloc_end - facts.default_vmalloc_reserve - facts.default_vmalloc_offset
    reserve, _ = memparse(given[-1])  # no number reads as 0, which the clamp below makes 16 MiB
    reserve = max(reserve, SZ_16M)
    reserve = min(reserve, facts.vmalloc_end - (layout.page_offset + SZ_32M))
    return facts.vmalloc_end - reserve


def arm_limits(banks: list[tuple[int, int]], layout: ArmLayout, facts: BoardFileLowmem, cmdline: str) -> ArmLimits:
    """sanity_check_meminfo()'s arm_lowmem_limit and setup_dma_zone()'s arm_dma_limit for these banks."""
    ordered = sorted(banks)
    phys_offset = layout.phys_offset if layout.phys_offset is not None else (ordered[0][0] if ordered else 0)
    vmin = vmalloc_min(facts, layout, cmdline)
    lowmem_end = 0
    highmem = False
    for start, size in ordered:
        virt = start - phys_offset + layout.page_offset
        if start > 0xFFFFFFFF or virt >= vmin or virt < layout.page_offset:
            highmem = True
        if highmem:
            continue
        low = min(size, vmin - virt)  # a bank crossing vmalloc_min is split there; the rest is highmem
        if low < size:
            highmem = True
        lowmem_end = max(lowmem_end, start + low)
    if layout.dma_zone_size:
        dma_limit = phys_offset + layout.dma_zone_size - 1
    else:
        dma_limit = NO_DMA_ZONE_LIMIT
    return ArmLimits(vmin, lowmem_end, dma_limit)


def lowmem_end(profile: KernelProfile, banks: list[tuple[int, int]], layout: ArmLayout, cmdline: str) -> int | None:
    """Where lowmem ends on this kernel (highmem above), for pictures; None where there is no highmem (arm64).

    Device-tree kernels compute vmalloc_min exactly as 3.5 did (arch/arm/mm/mmu.c keeps
    ``VMALLOC_END - (240 << 20) - VMALLOC_OFFSET`` with VMALLOC_END 0xff000000 through 6.12).
    """
    if profile.arch != "arm32":
        return None
    reservation = profile.facts.reservation
    api = reservation if isinstance(reservation, BoardFileApi) else BoardFileApi.DMA_DECLARE_CONTIGUOUS
    return arm_limits(banks, layout, board_file_lowmem(api), cmdline).lowmem_end
