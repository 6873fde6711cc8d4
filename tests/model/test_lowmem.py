"""Board-file era kernels place CMA below the lowmem/DMA limit the kernel computes.

Every expected address is worked out here by hand from the 3.5 sources (arch/arm/mm/mmu.c
sanity_check_meminfo() and vmalloc_min, arch/arm/mm/init.c arm_memblock_init() and
setup_dma_zone(), drivers/base/dma-contiguous.c dma_declare_contiguous()) and 3.0's mmu.c
for the 2011 series; see cma_tool/model/lowmem.py for the rules quoted.
"""

from __future__ import annotations

from pathlib import Path

from cma_tool.plan import load_checked_board

MIB = 1 << 20
# 3.5: vmalloc_min = VMALLOC_END - 240 MiB - VMALLOC_OFFSET = 0xff000000 - 0x0f000000 - 0x00800000
VMALLOC_MIN_35 = 0xEF800000
# 3.5 dma_declare_contiguous(): alignment = PAGE_SIZE << max(MAX_ORDER, pageblock_order)
#                                         = 4096 << max(11, 10) = 8 MiB
ALIGN_35 = 4096 << 11


def _plan(tmp_path: Path, kernel: str, extra_kernel: str = "", devices: str = "") -> dict[str, tuple[int, int]]:
    board = tmp_path / "b.yaml"
    board.write_text("memory: [[0x40000000, 2G]]\n"  # one 2 GiB bank, 0x40000000..0xc0000000
                     f"kernel: {{profile: {kernel}, max-order: 11{extra_kernel}}}\n" + devices)
    checked = load_checked_board(board)
    assert checked.plan is not None, checked.diagnostics
    assert not [d for d in checked.diagnostics if d.severity == "error"], checked.diagnostics
    return {a.name: (a.base, a.size) for a in checked.plan.areas}


def test_35_default_area_stays_below_lowmem(tmp_path: Path) -> None:
    # PHYS_OFFSET = 0x40000000 (the bank's base). __pa(vmalloc_min) = 0xef800000 - 0xc0000000 + 0x40000000
    # = 0x6f800000: the bank is split there, arm_lowmem_limit = 0x6f800000. No DMA zone: arm_dma_limit =
    # 0xffffffff; min(...) = 0x6f800000, & ~(8 MiB - 1) stays 0x6f800000. The Kconfig 16 MiB area goes
    # top-down below it: 0x6f800000 - 16 MiB = 0x6e800000 (not 0xbf000000 in highmem).
    lowmem = VMALLOC_MIN_35 - 0xC0000000 + 0x40000000
    assert lowmem == 0x6F800000
    assert _plan(tmp_path, "linux-3.5") == {"reserved": (lowmem - 16 * MIB, 16 * MIB)}
    assert lowmem - 16 * MIB == 0x6E800000


def test_35_machine_dma_zone_limits_the_default_area(tmp_path: Path) -> None:
    # dma_zone_size 256 MiB: arm_dma_limit = PHYS_OFFSET + 256 MiB - 1 = 0x4fffffff, below lowmem;
    # limit &= ~(8 MiB - 1) -> 0x4f800000; 16 MiB below it: 0x4e800000.
    limit = (0x40000000 + 256 * MIB - 1) & ~(ALIGN_35 - 1)
    assert limit == 0x4F800000
    assert _plan(tmp_path, "linux-3.5", ", dma-zone-size: 256M") == {"reserved": (0x4E800000, 16 * MIB)}


def test_35_vmalloc_on_the_command_line_moves_lowmem(tmp_path: Path) -> None:
    # vmalloc=512M: vmalloc_min = 0xff000000 - 0x20000000 = 0xdf000000 (no VMALLOC_OFFSET on this path);
    # __pa = 0xdf000000 - 0xc0000000 + 0x40000000 = 0x5f000000; 16 MiB below: 0x5e000000.
    assert _plan(tmp_path, "linux-3.5", ", bootargs: 'vmalloc=512M'") == {"reserved": (0x5E000000, 16 * MIB)}


def test_35_page_offset_2g_split_gives_more_lowmem(tmp_path: Path) -> None:
    # VMSPLIT_2G: PAGE_OFFSET 0x80000000; __pa(0xef800000) = 0xef800000 - 0x80000000 + 0x40000000 = 0xaf800000.
    assert _plan(tmp_path, "linux-3.5", ", page-offset: 0x80000000") == {"reserved": (0xAE800000, 16 * MIB)}


def test_the_issues_31_bit_camera_is_fine_on_35_and_an_error_on_61(tmp_path: Path) -> None:
    # The same board and camera: 3.5 keeps the default area at 0x6e800000..0x6f800000, below the 31-bit
    # mask's 0x80000000; 6.1's dma_contiguous_reserve(arm_dma_limit = 0xffffffff) puts it top-down at
    # 0xc0000000 - 16 MiB = 0xbf000000, beyond it.
    cam = "devices:\n  cam: {driver: s5p-fimc, dma-mask-bits: 31}\n"
    board = tmp_path / "b.yaml"
    for kernel, errors in (("linux-3.5", []), ("linux-6.1", ["0xbf000000..0xc0000000"])):
        board.write_text(f"memory: [[0x40000000, 2G]]\nkernel: {{profile: {kernel}, max-order: 11}}\n{cam}")
        checked = load_checked_board(board)
        got = [d.message for d in checked.diagnostics if d.severity == "error"]
        assert len(got) == len(errors) and all(e in m for e, m in zip(errors, got, strict=True)), got


def test_2011_series_on_aquila_with_the_s5pv210_phys_offset(tmp_path: Path) -> None:
    # 3.0 (the series' base): S5PV210's VMALLOC_END 0xe0000000 (mach/vmalloc.h), vmalloc_min =
    # VMALLOC_END - 128 MiB = 0xd8000000; PLAT_PHYS_OFFSET 0x20000000 (mach/memory.h).
    # Bank 0 0x30000000: __va = 0x30000000 - 0x20000000 + 0xc0000000 = 0xd0000000, 80 MiB -> lowmem to 0x35000000.
    # Bank 1 0x40000000: __va = 0xe0000000 >= 0xd8000000 -> highmem. cma_reserve(0, 32 MiB) allocates below
    # memblock's limit 0x35000000, aligned to MAX_ORDER_NR_PAGES (4 MiB): 0x35000000 - 32 MiB = 0x33000000.
    board = tmp_path / "b.yaml"
    board.write_text("memory: [[0x30000000, 80M], [0x40000000, 384M]]\n"
                     "kernel: {profile: cma-2011, max-order: 11, phys-offset: 0x20000000}\n"
                     "reserved-memory:\n  linux,cma:\n    compatible: shared-dma-pool\n    reusable: true\n"
                     "    size: 32M\n    linux,cma-default: true\n")
    checked = load_checked_board(board)
    assert checked.plan is not None and not [d for d in checked.diagnostics if d.severity == "error"]
    assert [(a.name, a.base, a.size) for a in checked.plan.areas] == [("linux,cma", 0x33000000, 32 * MIB)]


def test_35_more_nodes_than_slots_refuses_the_rest_and_keeps_going() -> None:
    # MAX_CMA_AREAS is a fixed 8 on 3.5 (profiles.py: no CMA_AREAS symbol yet): the ninth call is refused ("Not enough slots"),
    # the global area too, and the atomic pool then comes from normal pages (no cma_alloc at boot).
    from cma_tool.model import PROFILES, Bank, BootInput, ReservedNode, boot

    nodes = tuple(ReservedNode(f"region@{0x41000000 + i * 0x800000:x}", reg=(0x41000000 + i * 0x800000, 8 * MIB),
                               reusable=True) for i in range(8))
    nodes += (ReservedNode("linux,cma", size=16 * MIB, reusable=True, cma_default=True),)
    r = boot(PROFILES["linux-3.5"], BootInput((Bank(0x40000000, 1 << 30),), nodes=nodes))
    assert len(r.areas) == 8 and r.default_area is None and r.preallocations == ()
    assert "cma: Not enough slots for CMA reserved regions!" in r.log


def test_35_default_node_is_the_global_area_and_a_pool_range_is_a_limit(tmp_path: Path) -> None:
    # Aquila on 3.5, the default node moved to bank 0 by alloc-ranges and an 8 MiB pool limited to bank 0.
    # The default node is no board-file call: dma_contiguous_reserve(min(0xffffffff, lowmem 0x58000000))
    # places its 32 MiB (cma=32M on the generated command line) top-down: 0x58000000 - 32 MiB = 0x56000000,
    # whatever its alloc-ranges say. The pool's call is dma_declare_contiguous(dev, 8M, 0, 0x35000000):
    # memblock top-down below 0x35000000, where bank 0 is free only above mfc_left (0x34000000): 0x34800000.
    # Order: the .reserve hook's calls (mfc_left, mfc_right, the pool), then the global area.
    board = tmp_path / "b.yaml"
    board.write_text(f"include: {Path(__file__).parents[2] / 'boards' / 'aquila.yaml'}\n"
                     "kernel: {profile: linux-3.5}\n"
                     "reserved-memory:\n  linux,cma:\n    alloc-ranges: [[0x30000000, 80M]]\n"
                     "  pool:\n    label: pool\n    compatible: shared-dma-pool\n    reusable: true\n    size: 8M\n"
                     "    alloc-ranges: [[0x30000000, 80M]]\n"
                     "devices:\n  jpeg:\n    memory-region: [pool]\n")
    checked = load_checked_board(board)
    assert checked.plan is not None
    assert [(a.name, a.base) for a in checked.plan.areas] == [
        ("region@33000000", 0x33000000), ("region@44000000", 0x44000000), ("pool", 0x34800000),
        ("linux,cma", 0x56000000)]
    assert checked.plan.areas[-1].is_default
    # And validation says that the default node's range does nothing there, at the range's line (5).
    warned = [(d.line, d.message) for d in checked.diagnostics if d.severity == "warning" and "no effect" in d.message]
    assert warned == [(5, "reserved-memory node 'linux,cma': alloc-ranges has no effect on linux-3.5: the default "
                          "area is made by dma_contiguous_reserve() after the board file's hook, top-down below the "
                          "lowmem/DMA limit")]


def test_35_rounds_a_pool_up_to_8_mib_and_validation_says_so_where_61_refuses(tmp_path: Path) -> None:
    # 3.5's dma_declare_contiguous(): size = ALIGN(size, 8 MiB): 4 MiB -> 8 MiB, 6 MiB -> 8 MiB, a warning at the
    # size's line (8), and the plan's area has the rounded size. 6.1 (4 MiB pageblocks with max-order 11) refuses
    # a 6 MiB node ("Reserved memory: incorrect alignment of CMA region"): an error; 4 MiB is a whole pageblock.
    board = tmp_path / "b.yaml"
    for kernel, size, severity, said, area in (
            ("linux-3.5", "4M", "warning", "dma_declare_contiguous() rounds it up to 8 MiB", 8 * MIB),
            ("linux-3.5", "6M", "warning", "dma_declare_contiguous() rounds it up to 8 MiB", 8 * MIB),
            ("linux-6.1", "6M", "error", "the kernel refuses it", None),
            ("linux-6.1", "4M", None, None, 4 * MIB)):
        board.write_text("memory: [[0x40000000, 2G]]\n"
                         f"kernel: {{profile: {kernel}, max-order: 11}}\n"
                         "reserved-memory:\n  pool:\n    label: pool\n    compatible: shared-dma-pool\n"
                         f"    reusable: true\n    size: {size}\n"
                         "devices:\n  jpeg:\n    memory-region: [pool]\n")
        checked = load_checked_board(board)
        about = [(d.severity, d.line, d.message) for d in checked.diagnostics if "multiple of" in d.message]
        if severity is None:
            assert about == []
        else:
            unit = "8 MiB" if kernel == "linux-3.5" else "4 MiB"
            assert len(about) == 1 and about[0][:2] == (severity, 8), (kernel, size, about)
            assert about[0][2].startswith(f"reserved-memory node 'pool' size {size[:-1]} MiB is not a multiple of {unit}")
            assert said in about[0][2]
        if area is not None:
            assert checked.plan is not None
            assert {a.name: a.size for a in checked.plan.areas}["pool"] == area
