"""The rules the kernel matrix taught the model, each with its numbers worked out by hand.

The recordings (tests/model/test_kernel_matrix.py) prove the rules on real
kernels; these tests pin each rule to the arithmetic behind it, so a change
that breaks one says which.
"""

from __future__ import annotations

import pytest

from cma_tool.model import PROFILES, Bank, BootInput, boot
from cma_tool.model.events import NO_PFN, Event, parse_trace_line

MiB = 1 << 20
#: The reference layout: two 256 MiB banks, RAM ending at 0x70000000.
REFERENCE = (Bank(0x4000_0000, 256 * MiB), Bank(0x6000_0000, 256 * MiB))


@pytest.mark.parametrize(("profile", "unit"), [
    ("linux-5.10", 8), ("linux-6.1", 8), ("linux-6.12", 8),
    # 5.10: max(pageblock 2 MiB, MAX_ORDER block 4 MiB); 6.x: one pageblock, a 2 MiB PMD with hugetlb.
    ("linux-5.10-arm64", 4), ("linux-6.1-arm64", 2), ("linux-6.12-arm64", 2),
])
def test_the_cma_unit_of_each_debian_kernel(profile: str, unit: int) -> None:
    assert PROFILES[profile].cma_min_bytes == unit * MiB


@pytest.mark.parametrize(("profile", "base"), [
    # ARM32: the Kconfig 16 MiB at the very top.
    ("linux-6.1", 0x7000_0000 - 16 * MiB),
    # arm64 6.x: 4 present 128 MiB sections x 2 MiB of struct pages = 8 MiB, 2 MiB aligned, under the
    # page tables' last 2 MiB: 0x6f600000..0x6fe00000; the 64 MiB area (2 MiB unit) right below it.
    ("linux-6.1-arm64", 0x6F60_0000 - 64 * MiB),
    ("linux-6.12-arm64", 0x6F60_0000 - 64 * MiB),
    # arm64 5.10: one 1 GiB section, 16 MiB of struct pages aligned to 16 MiB: 0x6e000000..0x6f000000.
    ("linux-5.10-arm64", 0x6E00_0000 - 64 * MiB),
])
def test_where_the_kconfig_default_area_lands(profile: str, base: int) -> None:
    booted = boot(PROFILES[profile], BootInput(REFERENCE))
    assert [(a.name, a.base) for a in booted.areas] == [("reserved", base)]


def test_arm64_takes_three_atomic_pools_and_armhf_one() -> None:
    # 512 MiB of RAM: 128 KiB per GiB is below the 128 KiB floor, so 32 pages of order 5 each.
    arm64 = boot(PROFILES["linux-6.1-arm64"], BootInput(REFERENCE))
    assert [(p.count, p.align) for p in arm64.preallocations] == [(32, 5)] * 3
    armhf = boot(PROFILES["linux-6.1"], BootInput(REFERENCE))
    assert [(p.count, p.align) for p in armhf.preallocations] == [(64, 6)]


def test_612_arm64_sets_static_pools_up_before_the_default_area() -> None:
    from tests.model.recorded import reserved_nodes

    pool = ("\treserved-memory {\n\t\t#address-cells = <2>;\n\t\t#size-cells = <2>;\n\t\tranges;\n"
            "\t\tvidpool@4c000000 {\n\t\t\tcompatible = \"shared-dma-pool\";\n\t\t\treusable;\n"
            "\t\t\treg = <0x0 0x4c000000 0x0 0x02000000>;\n\t\t};\n\t};\n")
    inp = BootInput(REFERENCE, nodes=reserved_nodes(pool), cmdline="cma=32M@0x60000000")
    assert [a.name for a in boot(PROFILES["linux-6.12-arm64"], inp).areas] == ["vidpool@4c000000", "reserved"]
    assert [a.name for a in boot(PROFILES["linux-6.12"], inp).areas] == ["reserved", "vidpool@4c000000"]


def test_510_tracepoints_read_and_written() -> None:
    p = PROFILES["linux-5.10-arm64"]
    line = "capture-103 [000] ....     1.620977: cma_alloc: pfn=64100 page=ffffff41e1704000 count=1013 align=8"
    event = parse_trace_line(line)
    assert event == Event("alloc_finish", "", 1013, 8, 0x64100)
    assert event is not None and event.text(p) == "cma_alloc: pfn=64100 page=(ptrval) count=1013 align=8"
    failed = parse_trace_line("capture-98 [000] ....  6.018219: cma_alloc: pfn=ffffffff page=00000000 count=1013 align=8")
    assert failed == Event("alloc_finish", "", 1013, 8, NO_PFN, failed=True)
    assert failed is not None and failed.text(PROFILES["linux-5.10"]) == \
        "cma_alloc: pfn=ffffffff page=00000000 count=1013 align=8"
    release = parse_trace_line("capture-103 [000] ....  1.819155: cma_release: pfn=64100 page=ffffff41e1704000 count=1013")
    assert release == Event("release", "", 1013, None, 0x64100)
    # A named event is not mistaken for 5.10's, nor a nameless one for a later kernel's.
    assert parse_trace_line("x-1 [000] .... 1.0: cma_alloc: name=linux,cma pfn=0x1 page=0 count=1 align=0") is None
