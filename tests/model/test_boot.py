"""Boot-time placement and log lines, against values worked out from the kernel's rules.

Unit on linux-6.1 (Debian armmp): MAX_ORDER 12 -> pageblock_order 11 ->
2048 pages x 4 KiB = 8 MiB. Every expected number below is derived in the
comment next to it, not copied from the model's output.
"""

from __future__ import annotations

import pytest

from cma_tool.model import (
    PROFILES,
    Bank,
    BootInput,
    EarlyReservation,
    ReservedNode,
    boot,
    profile_with,
)

MiB = 1 << 20
P61 = PROFILES["linux-6.1"]
P612 = PROFILES["linux-6.12"]
TWO_BANKS = (Bank(0x40000000, 256 * MiB), Bank(0x60000000, 256 * MiB))
LINUX_CMA_64M = ReservedNode(
    "linux,cma",
    size=64 * MiB,
    alloc_ranges=((0x60000000, 256 * MiB),),
    reusable=True,
    cma_default=True,
)
VIDPOOL = ReservedNode("vidpool@4c000000", reg=(0x4C000000, 32 * MiB), reusable=True)


def test_unit_is_8_mib_on_debian_armmp() -> None:
    # CONFIG_ARCH_FORCE_MAX_ORDER=12 -> pageblock_order = 12 - 1 = 11 -> 2^11 pages * 4 KiB.
    assert P61.cma_min_bytes == 8 * MiB
    # The same build fact is spelled 11 in a 6.12 .config (MAX_PAGE_ORDER is inclusive).
    assert P612.max_order_as_written == 11 and P612.cma_min_bytes == 8 * MiB


def test_reference_board_two_pools() -> None:
    r = boot(P61, BootInput(TWO_BANKS, nodes=(LINUX_CMA_64M, VIDPOOL)))
    # Dynamic nodes sort first (__rmem_cmp: base 0, size 0), so linux,cma is index 0.
    # Top-down in [0x60000000, 0x70000000): 0x70000000 - 64 MiB = 0x6c000000, 8 MiB aligned.
    assert [(a.name, a.base, a.size, a.source) for a in r.areas] == [
        ("linux,cma", 0x6C000000, 64 * MiB, "dt-dynamic"),
        ("vidpool@4c000000", 0x4C000000, 32 * MiB, "dt-static"),
    ]
    assert r.areas[0].base_pfn == 0x6C000 and r.areas[0].count == 16384  # 64 MiB / 4 KiB
    assert r.default_area == "linux,cma"
    # CmaTotal = (64 + 32) MiB = 98304 kB.
    assert r.cma_total_kb == 98304
    assert r.log == (
        "Reserved memory: created CMA memory pool at 0x6c000000, size 64 MiB",
        "OF: reserved mem: initialized node linux,cma, compatible id shared-dma-pool",
        "Reserved memory: created CMA memory pool at 0x4c000000, size 32 MiB",
        "OF: reserved mem: initialized node vidpool@4c000000, compatible id shared-dma-pool",
        "DMA: preallocated 256 KiB pool for atomic coherent allocations",
    )
    # Atomic pool: 256 KiB = 64 pages, get_order(256 KiB) = 6, min(6, CMA_ALIGNMENT 8) = 6,
    # first fit at bit 0 of the default area -> pfn 0x6c000.
    start, finish = r.events
    assert (start.kind, start.area, start.count, start.align) == ("alloc_start", "linux,cma", 64, 6)
    assert (finish.kind, finish.pfn, finish.count, finish.align, finish.failed) == ("alloc_finish", 0x6C000, 64, 6, False)


def test_kconfig_default_16m() -> None:
    r = boot(P61, BootInput(TWO_BANKS))
    # CMA_SIZE_MBYTES=16, top-down below end of memory 0x70000000: 0x70000000 - 0x1000000.
    assert [(a.name, a.base, a.size, a.source) for a in r.areas] == [("reserved", 0x6F000000, 16 * MiB, "kconfig")]
    assert r.log[0] == "cma: Reserved 16 MiB at 0x6f000000"
    assert r.default_area == "reserved"
    assert r.cma_total_kb == 16384


def test_cmdline_bypasses_default_node() -> None:
    r = boot(P61, BootInput(TWO_BANKS, nodes=(LINUX_CMA_64M, VIDPOOL), cmdline="console=ttyAMA0 cma=32M@0x60000000-0x70000000"))
    # The node is first allocated (0x6c000000), refused with -EBUSY and freed; then
    # the default area goes top-down in [0x60000000, 0x70000000): 0x70000000 - 32 MiB.
    assert r.log[:5] == (
        "Reserved memory: bypass linux,cma node, using cmdline CMA params instead",
        "OF: reserved mem: node linux,cma compatible matching fail",
        "Reserved memory: created CMA memory pool at 0x4c000000, size 32 MiB",
        "OF: reserved mem: initialized node vidpool@4c000000, compatible id shared-dma-pool",
        "cma: Reserved 32 MiB at 0x6e000000",
    )
    assert [a.name for a in r.areas] == ["vidpool@4c000000", "reserved"]
    assert r.default_area == "reserved"
    assert any(p.code == "bypassed" and p.subject == "linux,cma" for p in r.problems)


@pytest.mark.parametrize(
    ("cmdline", "size_mib", "base"),
    [
        ("cma=10M", 16, 0x6F000000),  # ALIGN(10 MiB, 8 MiB) = 16 MiB, top of memory
        ("cma=1M", 8, 0x6F800000),  # ALIGN(1 MiB, 8 MiB) = 8 MiB
        ("cma=0x2000000", 32, 0x6E000000),  # hex: 32 MiB
        ("cma=32768k", 32, 0x6E000000),  # lower-case k: 32768 KiB
        ("cma=24M@0x40000000", 24, 0x40000000),  # no -END: fixed at BASE (limit = base + size)
        ("cma=16M@0x40000000-0x50000000", 16, 0x4F000000),  # top-down below 0x50000000
        ("cma=8M cma=24M", 24, 0x6E800000),  # the last cma= wins: 0x70000000 - 24 MiB
    ],
)
def test_cmdline_sizes_round_up(cmdline: str, size_mib: int, base: int) -> None:
    r = boot(P61, BootInput(TWO_BANKS, cmdline=cmdline))
    assert [(a.name, a.size, a.base, a.source) for a in r.areas] == [("reserved", size_mib * MiB, base, "cmdline")]
    assert r.log[0] == f"cma: Reserved {size_mib} MiB at 0x{base:08x}"


def test_cma_zero_disables_default_area() -> None:
    r = boot(P61, BootInput(TWO_BANKS, cmdline="cma=0"))
    assert r.areas == () and r.default_area is None and r.cma_total_kb == 0
    # The atomic pool then comes from normal pages: still logged, no CMA event.
    assert r.events == ()
    assert r.log == ("DMA: preallocated 256 KiB pool for atomic coherent allocations",)


def test_fixed_base_must_be_aligned() -> None:
    r = boot(P61, BootInput(TWO_BANKS, cmdline="cma=16M@0x60100000"))
    # 0x60100000 is not a multiple of 8 MiB (0x800000).
    assert r.log[:2] == (
        "cma: Region at 0x60100000 must be aligned to 0x00800000 bytes",
        "cma: Failed to reserve 16 MiB",
    )
    assert r.areas == ()


def test_size_exceeding_limit() -> None:
    r = boot(P61, BootInput(TWO_BANKS, cmdline="cma=64M@0x6e000000-0x70000000"))
    # base 0x6e000000 + 64 MiB = 0x72000000 > limit 0x70000000.
    assert r.log[0] == "cma: Size (0x04000000) of region at 0x6e000000 exceeds limit (0x70000000)"
    assert r.log[1] == "cma: Failed to reserve 64 MiB"


def test_coherent_pool_on_cmdline() -> None:
    r = boot(P61, BootInput(TWO_BANKS, cmdline="coherent_pool=1M"))
    # 1 MiB = 256 pages, get_order = 8 = CMA_ALIGNMENT.
    assert (r.events[0].count, r.events[0].align) == (256, 8)
    assert r.log[-1] == "DMA: preallocated 1024 KiB pool for atomic coherent allocations"


def test_dynamic_12m_node_refused_for_kconfig_default() -> None:
    node = ReservedNode("linux,cma", size=12 * MiB, reusable=True, cma_default=True)
    r = boot(P61, BootInput(TWO_BANKS, nodes=(node,)))
    # 12 MiB is not a multiple of 8 MiB -> refused and freed, then CMA_SIZE_MBYTES=16 at the top.
    assert r.log[:3] == (
        "Reserved memory: incorrect alignment of CMA region",
        "OF: reserved mem: node linux,cma compatible matching fail",
        "cma: Reserved 16 MiB at 0x6f000000",
    )
    assert [(a.name, a.source) for a in r.areas] == [("reserved", "kconfig")]
    assert any(p.code == "cma-alignment" for p in r.problems)


def test_static_node_keeps_unit_address_in_name() -> None:
    node = ReservedNode("linux,cma@64000000", reg=(0x64000000, 16 * MiB), reusable=True, cma_default=True)
    r = boot(P61, BootInput(TWO_BANKS, nodes=(node,)))
    assert [a.name for a in r.areas] == ["linux,cma@64000000"]
    assert r.events[0].text(P61) == "cma_alloc_start: name=linux,cma@64000000 count=64 align=6"


def test_dt_alignment_below_unit_has_no_effect() -> None:
    node = ReservedNode("linux,cma", size=16 * MiB, alignment=4 * MiB, alloc_ranges=((0x40000000, 0x5400000),), reusable=True)
    r = boot(P61, BootInput(TWO_BANKS, nodes=(node,)))
    # Range end 0x45400000 - 16 MiB = 0x44400000: a 4 MiB boundary, but the alignment is
    # raised to max(4 MiB, 8 MiB), so it rounds down to 0x44000000.
    assert r.areas[0].base == 0x44000000


def test_placement_avoids_early_reservations() -> None:
    # An initrd at 0x6f800000..0x6fc00000: the 4 MiB above it is too small, so the area
    # ends at the initrd: 0x6f800000 - 16 MiB = 0x6e800000, already a multiple of 8 MiB.
    early = (EarlyReservation("initrd", 0x6F800000, 4 * MiB),)
    r = boot(P61, BootInput(TWO_BANKS, early=early))
    assert r.areas[0].base == 0x6E800000


def test_second_alloc_range_used_when_first_is_full() -> None:
    node = ReservedNode(
        "linux,cma",
        size=64 * MiB,
        alloc_ranges=((0x40000000, 32 * MiB), (0x60000000, 256 * MiB)),
        reusable=True,
    )
    r = boot(P61, BootInput(TWO_BANKS, nodes=(node,)))
    # 64 MiB does not fit in the first 32 MiB range; the second gives 0x6c000000.
    assert r.areas[0].base == 0x6C000000


def test_pinned_base_overrides_placement() -> None:
    r = boot(P61, BootInput(TWO_BANKS, pinned=(("reserved", 0x6A000000),)))
    assert r.areas[0].base == 0x6A000000
    assert r.log[0] == "cma: Reserved 16 MiB at 0x6a000000"


def test_slots_run_out() -> None:
    # linux-6.1: MAX_CMA_AREAS = 1 + CONFIG_CMA_AREAS(7) = 8; the 9th node finds no slot.
    bases = [0x40000000 + i * 0x1000000 for i in range(9)]
    nodes = tuple(ReservedNode(f"pool@{b:x}", reg=(b, 16 * MiB), reusable=True) for b in bases)
    r = boot(P61, BootInput(TWO_BANKS, nodes=nodes, cmdline="cma=0"))
    assert len(r.areas) == 8
    assert "cma: Not enough slots for CMA reserved regions!" in r.log
    assert "Reserved memory: unable to setup CMA region" in r.log
    assert any(p.code == "no-slot" for p in r.problems)


def test_non_reusable_pool_needs_no_map_on_arm32() -> None:
    node = ReservedNode("dmapool@48000000", reg=(0x48000000, 8 * MiB))
    r = boot(P61, BootInput(TWO_BANKS, nodes=(node,)))
    assert "Reserved memory: regions without no-map are not yet supported" in r.log
    assert "OF: reserved mem: node dmapool@48000000 compatible matching fail" in r.log
    ok = boot(P61, BootInput(TWO_BANKS, nodes=(ReservedNode("dmapool@48000000", reg=(0x48000000, 8 * MiB), no_map=True),)))
    assert "Reserved memory: created DMA memory pool at 0x48000000, size 8 MiB" in ok.log
    assert [a.name for a in ok.areas] == ["reserved"]  # the DMA pool is not a CMA area


def test_612_log_lines() -> None:
    r = boot(P612, BootInput(TWO_BANKS))
    # 6.12 names the node: NUMA_NO_NODE (-1) for the default area.
    assert r.log[0] == "cma: Reserved 16 MiB at 0x6f000000 on node -1"
    r = boot(P612, BootInput(TWO_BANKS, nodes=(LINUX_CMA_64M,)))
    assert r.log[:3] == (
        "Reserved memory: created CMA memory pool at 0x6c000000, size 64 MiB",
        "OF: reserved mem: initialized node linux,cma, compatible id shared-dma-pool",
        "OF: reserved mem: 0x6c000000..0x6fffffff (65536 KiB) map reusable linux,cma",
    )


def test_s5pv210_kernel_has_4_mib_unit() -> None:
    p = profile_with("linux-6.1", max_order=11)
    # pageblock_order 10 -> 4 MiB: cma=1M becomes 4 MiB; a 12 MiB node is accepted.
    aquila = (Bank(0x30000000, 80 * MiB), Bank(0x40000000, 384 * MiB))
    r = boot(p, BootInput(aquila, cmdline="cma=1M"))
    assert r.areas[0].size == 4 * MiB and r.areas[0].base == 0x40000000 + 384 * MiB - 4 * MiB
    r = boot(p, BootInput(aquila, nodes=(ReservedNode("linux,cma", size=12 * MiB, reusable=True, cma_default=True),)))
    assert [(a.name, a.size) for a in r.areas] == [("linux,cma", 12 * MiB)]


def test_35_log_format() -> None:
    r = boot(PROFILES["linux-3.5"], BootInput(TWO_BANKS))
    # 3.5: pr_info("CMA: reserved %ld MiB at %08lx") under pr_fmt "cma: ". Below lowmem's end:
    # PHYS_OFFSET 0x40000000, vmalloc_min 0xef800000 -> __pa 0x6f800000 splits bank 1 there;
    # 0x6f800000 (8 MiB aligned: MAX_ORDER 11) - 16 MiB = 0x6e800000 (tests/model/test_lowmem.py).
    assert r.log[0] == "cma: CMA: reserved 16 MiB at 6e800000"
    assert r.events == ()  # no tracepoints before 5.16


def test_lpae_prints_16_digits() -> None:
    p = profile_with("linux-6.1", lpae=True, hugetlb_pageblock_order=9)
    r = boot(p, BootInput(TWO_BANKS))
    # LPAE: pageblock_order = HUGETLB_PAGE_ORDER 9 -> 2 MiB unit; %pa prints 16 digits.
    assert r.log[0] == "cma: Reserved 16 MiB at 0x000000006f000000"


def test_cma_4g_wraps_to_zero_on_32_bit() -> None:
    # size_cmdline is a 32-bit phys_addr_t without LPAE: 4 GiB = 0x100000000 -> 0 -> no area.
    r = boot(P61, BootInput(TWO_BANKS, cmdline="cma=4G"))
    assert r.areas == ()
    assert any(p.code == "wraps" for p in r.problems)


def test_garbage_cma_value_means_zero() -> None:
    # memparse("abc") reads no digits: 0, which disables the default area.
    r = boot(P61, BootInput(TWO_BANKS, cmdline="cma=abc"))
    assert r.areas == ()
    assert [p.code for p in r.problems] == ["cmdline"]


def test_reg_with_size_zero_is_dropped() -> None:
    r = boot(P61, BootInput(TWO_BANKS, nodes=(ReservedNode("x@40000000", reg=(0x40000000, 0), reusable=True),)))
    assert [a.name for a in r.areas] == ["reserved"]
    assert r.log[0] == "OF: fdt: Reserved memory: failed to reserve memory for node 'x@40000000': base 0x40000000, size 0 MiB"
