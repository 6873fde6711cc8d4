"""cma_alloc / cma_release / pins / counters and the DMA entry points.

Expected pfns are worked out from the bitmap rules of mm/cma.c in the
comments: mask = 2^(align - order_per_bit) - 1, offset = base_pfn's low
``align`` bits, first fit from bit 0, retry one alignment step after a busy
candidate.
"""

from __future__ import annotations

import pytest

from cma_tool.errors import ConfigError
from cma_tool.model import (
    NO_PFN,
    PROFILES,
    Bank,
    BootInput,
    CmaArea,
    CmaState,
    Device,
    Event,
    ReservedNode,
    boot,
    dma_alloc,
    dma_free,
    profile_with,
)

MiB = 1 << 20
P61 = PROFILES["linux-6.1"]
P612 = PROFILES["linux-6.12"]
TWO_BANKS = (Bank(0x40000000, 256 * MiB), Bank(0x60000000, 256 * MiB))
REFERENCE = BootInput(
    TWO_BANKS,
    nodes=(
        ReservedNode("linux,cma", size=64 * MiB, alloc_ranges=((0x60000000, 256 * MiB),), reusable=True, cma_default=True),
        ReservedNode("vidpool@4c000000", reg=(0x4C000000, 32 * MiB), reusable=True),
    ),
)
# 1920x1080 YUYV = 4147200 bytes -> PAGE_ALIGN 4149248 = 1013 pages; get_order = 10, capped to 8.
FULL_HD = 4147200


def test_four_1080p_buffers_on_reference_board() -> None:
    r = boot(P61, REFERENCE)
    state = r.new_state()
    vivid = Device("vivid")
    pfns = []
    for _ in range(4):
        got = dma_alloc(state, r.default_area, vivid, FULL_HD)
        assert got.buffer is not None
        pfns.append(got.buffer.pfn)
        assert (got.buffer.count, got.events[0].align) == (1013, 8)
    # Bits 0..63 hold the atomic pool. mask 255, offset 0x6c000 & 255 = 0.
    # 1st: first zero 64 -> ALIGN 256 -> 0x6c100.  Ends at 256 + 1013 = 1269.
    # 2nd: 1269 -> 1280 = 0x500 -> 0x6c500.          Ends at 2293.
    # 3rd: 2293 -> 2304 = 0x900 -> 0x6c900.          Ends at 3317.
    # 4th: 3317 -> 3328 = 0xd00 -> 0x6cd00.
    assert pfns == [0x6C100, 0x6C500, 0x6C900, 0x6CD00]
    # CmaFree: 98304 - 256 (pool) - 4 * 1013 * 4 = 81840 kB, as the emulated board read.
    assert state.cma_free_kb == 81840
    assert state.counters.cma_alloc_success == 5  # the pool counts too


def test_fourth_buffer_fails_on_16m_default() -> None:
    r = boot(P61, BootInput(TWO_BANKS))
    state = r.new_state()
    results = [dma_alloc(state, r.default_area, Device("vivid"), FULL_HD) for _ in range(4)]
    assert [res.buffer.pfn if res.buffer else None for res in results] == [0x6F100, 0x6F500, 0x6F900, None]
    # 4096 bits: the 4th candidate starts at 3328 and would end at 4341 > 4096: no candidate.
    last = results[3]
    assert last.cma is not None and last.cma.ret == -12
    finish = last.events[-1]
    assert (finish.kind, finish.pfn, finish.failed) == ("alloc_finish", NO_PFN, True)
    assert finish.text(P61) == "cma_alloc_finish: name=reserved pfn=0xffffffff page=00000000 count=1013 align=8"
    assert last.messages == ("cma: cma_alloc: reserved: alloc failed, req-size: 1013 pages, ret: -12",)
    assert (state.counters.cma_alloc_success, state.counters.cma_alloc_fail) == (4, 1)
    assert state.counters.areas["reserved"].alloc_pages_fail == 1013


def _area(base_pfn: int = 0x6F000, count: int = 4096, opb: int = 0) -> CmaArea:
    return CmaArea("test", base_pfn << 12, count << 12, base_pfn, count, opb, "kconfig", 0)


def test_busy_candidate_retries_one_alignment_step_later() -> None:
    state = CmaState(P61, (_area(),))
    state.pin("test", 0x6F000 + 100, 1)
    got = state.alloc("test", 1013, 8)
    # Candidate bit 0 covers pages 0..1012, which hold the pin at 100 -> busy;
    # start = 0 + mask(255) + 1 = 256 -> pfn 0x6f100 is free of pins.
    assert [e.kind for e in got.events] == ["alloc_start", "busy_retry", "alloc_finish"]
    assert got.events[1] == Event("busy_retry", "test", 1013, 8, 0x6F000)
    assert got.pfn == 0x6F100 and got.ret == 0
    assert got.events[1].text(P61) == "cma_alloc_busy_retry: name=test pfn=0x6f000 page=(ptrval) count=1013 align=8"


def test_pin_outside_the_range_does_not_block() -> None:
    state = CmaState(P61, (_area(),))
    # Same pageblock (2048 pages) as candidate 0..9, but outside the 10 requested pages.
    state.pin("test", 0x6F000 + 500, 1)
    assert state.alloc("test", 10, 0).pfn == 0x6F000


def test_every_candidate_busy_ends_in_ebusy() -> None:
    area = _area()
    state = CmaState(P61, (area,))
    state.alloc("test", 64, 6)  # bits 0..63, like the atomic pool
    for offset in (1000, 2000, 3000, 4000):
        state.pin("test", area.base_pfn + offset, 1)
    got = state.alloc("test", 1013, 8)
    # Candidates 256, 512, ..., 3072 (3072 + 1013 = 4085 <= 4096): 12 of them, each
    # window [c, c + 1013) holds one of the pins; 3328 would end at 4341 > 4096.
    retries = [e.pfn for e in got.events if e.kind == "busy_retry"]
    assert retries == [area.base_pfn + c for c in range(256, 3073, 256)]
    assert got.ret == -16 and got.pfn is None
    finish = got.events[-1]
    # The finish event carries the last attempted pfn, with a NULL page.
    assert (finish.pfn, finish.failed) == (area.base_pfn + 3072, True)
    assert got.messages == ("cma: cma_alloc: test: alloc failed, req-size: 1013 pages, ret: -16",)
    # The reserved bits of busy candidates are cleared again: only the first 64 stay used.
    assert state.free_pages == 4096 - 64


def test_alignment_is_relative_to_the_pfn() -> None:
    # base_pfn 0x6f010: offset = 0x6f010 & 255 = 16, so the first 256-aligned pfn
    # is 0x6f100 = bit 240, not bit 0 or 256.
    state = CmaState(P61, (_area(base_pfn=0x6F010),))
    assert state.alloc("test", 8, 8).pfn == 0x6F100
    # align 0: no mask, bit 0.
    assert state.alloc("test", 8, 0).pfn == 0x6F010


def test_order_per_bit_rounds_counts_up() -> None:
    # order_per_bit 2: one bit covers 4 pages; 5 pages take 2 bits = 8 pages.
    state = CmaState(P61, (_area(count=64, opb=2),))
    first = state.alloc("test", 5, 0)
    second = state.alloc("test", 1, 0)
    assert (first.pfn, second.pfn) == (0x6F000, 0x6F008)
    # align 3 (8 pages) with opb 2: mask = 2^(3-2) - 1 = 1 -> even bits only.
    third = state.alloc("test", 1, 3)
    # Bits 0..2 are used; the first zero is bit 3, rounded up to bit 4 = page 16 = 0x6f010.
    assert third.pfn == 0x6F010


def test_release_frees_and_traces() -> None:
    state = CmaState(P61, (_area(),))
    a = state.alloc("test", 10, 0)
    assert a.pfn == 0x6F000
    rel = state.release("test", 0x6F000, 10)
    assert rel.released and rel.events == (Event("release", "test", 10, None, 0x6F000),)
    assert rel.events[0].text(P61) == "cma_release: name=test pfn=0x6f000 page=(ptrval) count=10"
    # The hole is reused first-fit.
    assert state.alloc("test", 10, 0).pfn == 0x6F000
    # A pfn outside the area: cma_release returns false, traces nothing.
    out = state.release("test", 0x70000, 10)
    assert not out.released and out.events == ()


def test_612_finish_has_errorno_and_early_exits_do_not_count() -> None:
    state = CmaState(P612, (_area(),))
    ok = state.alloc("test", 10, 0)
    assert ok.events[-1].errorno == 0
    assert ok.events[-1].text(P612) == "cma_alloc_finish: name=test pfn=0x6f000 page=(ptrval) count=10 align=0 errorno=0"
    # Too big: 6.12 traces the start and returns without counting or finishing.
    big = state.alloc("test", 5000, 0)
    assert [e.kind for e in big.events] == ["alloc_start"]
    assert state.counters.cma_alloc_fail == 0
    fail = state.alloc("test", 4096, 0)
    assert fail.events[-1].errorno == -12
    assert fail.messages == (
        "cma: __cma_alloc: test: alloc failed, req-size: 4096 pages, ret: -12",
        # One free run after the 10-page allocation: 4086 pages starting at bit 10.
        "cma: number of available pages: 4086@10=> 4086 free of 4096 total pages",
    )
    state.release("test", 0x6F000, 10)
    assert state.counters.areas["test"].release_pages_success == 10


def test_61_early_exits_count_a_failure() -> None:
    state = CmaState(P61, (_area(),))
    big = state.alloc("test", 5000, 0)
    # 6.1 traces the start, then "goto out" counts the failure without a finish event.
    assert [e.kind for e in big.events] == ["alloc_start"]
    assert state.counters.cma_alloc_fail == 1
    assert state.counters.areas["test"].alloc_pages_fail == 5000
    zero = state.alloc("test", 0, 0)
    assert zero.events == () and state.counters.cma_alloc_fail == 2


def test_unknown_area_is_a_config_error() -> None:
    state = CmaState(P61, (_area(),))
    with pytest.raises(ConfigError, match="no CMA area named 'nope'"):
        state.alloc("nope", 1, 0)
    with pytest.raises(ConfigError, match="outside area"):
        state.pin("test", 0x1000, 1)


def test_35_busy_then_enomem() -> None:
    p = PROFILES["linux-3.5"]
    state = CmaState(p, (_area(count=2048),))
    state.pin("test", 0x6F000, 2048)
    got = state.alloc("test", 1, 0)
    # 3.5 kept searching after every busy range and returned -ENOMEM when it ran dry.
    assert got.ret == -12 and got.events == ()


# --- DMA entry points ----------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "count", "align"),
    [
        (4096, 1, 0),  # a single page still goes to CMA on ARM32
        (65536, 16, 4),  # get_order(64 KiB) = 4
        (614400, 150, 8),  # 640x480 YUYV: get_order = 8 (1 MiB block)
        (1382400, 338, 8),  # 1280x720 NV12: get_order = 9 -> capped at 8
        (4 * MiB, 1024, 8),  # get_order = 10 -> capped at 8
    ],
)
def test_arm32_count_and_align(size: int, count: int, align: int) -> None:
    r = boot(P61, BootInput(TWO_BANKS))
    state = r.new_state()
    got = dma_alloc(state, r.default_area, Device("dev"), size)
    assert got.events[0] == Event("alloc_start", "reserved", count, align)


def test_arm32_own_area_and_no_fallback() -> None:
    r = boot(P61, REFERENCE)
    state = r.new_state()
    mfc = Device("mfc", area="vidpool@4c000000")
    got = dma_alloc(state, r.default_area, mfc, 16 * MiB)
    assert got.buffer is not None and got.buffer.pfn == 0x4C000
    # 32 MiB pool, 16 MiB used: another 24 MiB cannot fit -> NULL, no fallback to normal pages.
    again = dma_alloc(state, r.default_area, mfc, 24 * MiB)
    assert again.buffer is None
    events = dma_free(state, got.buffer)
    assert events == (Event("release", "vidpool@4c000000", 4096, None, 0x4C000),)


def test_no_cma_means_normal_pages_on_arm32() -> None:
    r = boot(P61, BootInput(TWO_BANKS, cmdline="cma=0"))
    got = dma_alloc(r.new_state(), r.default_area, Device("vivid"), FULL_HD)
    assert got.buffer is not None and got.buffer.source == "pages" and got.events == ()


def test_dma_direct_paths() -> None:
    p = profile_with("linux-6.1", architecture="arm64")
    state = CmaState(p, (_area(), CmaArea("own", 0, 1 << 22, 0x100, 1024, 0, "dt-static", 1)))
    # Single page without an own area: bypasses CMA.
    single = dma_alloc(state, "test", Device("d"), 4096)
    assert single.buffer is not None and single.buffer.source == "pages" and single.events == ()
    # Own area (1024 pages) full after one 768-page buffer: the next candidate is bit 768,
    # 768 + 768 > 1024, so normal pages serve it, never the default area.
    first = dma_alloc(state, "test", Device("d", area="own"), 3 * MiB)
    assert first.buffer is not None and first.buffer.pfn == 0x100
    big = dma_alloc(state, "test", Device("d", area="own"), 3 * MiB)
    assert big.buffer is not None and big.buffer.source == "pages"
    assert {e.area for e in big.events} == {"own"}
    # A failed pfn prints 64-bit all ones on a 64-bit kernel.
    assert big.events[-1].text(p).startswith("cma_alloc_finish: name=own pfn=0xffffffffffffffff page=0000000000000000")


def test_2011_minimum_order_8_and_fallback() -> None:
    p = PROFILES["cma-2011"]
    state = CmaState(p, (_area(count=1024),))
    # 64 KiB is order 4, but the 2011 dma-mapping asked for max(order, 8).
    first = dma_alloc(state, "test", Device("fimc0"), 65536)
    second = dma_alloc(state, "test", Device("fimc0"), 65536)
    assert first.buffer is not None and second.buffer is not None
    assert (first.buffer.pfn, second.buffer.pfn) == (0x6F000, 0x6F100)
    # Too big for the area: system pages instead.
    huge = dma_alloc(state, "test", Device("fimc0"), 8 * MiB)
    assert huge.buffer is not None and huge.buffer.source == "pages"


def test_not_dma_capable_never_touches_cma() -> None:
    r = boot(P61, BootInput(TWO_BANKS))
    got = dma_alloc(r.new_state(), r.default_area, Device("vivid", dma_capable=False), FULL_HD)
    assert got.buffer is not None and got.buffer.source == "vmalloc" and got.events == ()
