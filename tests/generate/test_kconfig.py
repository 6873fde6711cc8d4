"""Kconfig fragment: symbol names per kernel generation and values from the profile's rules."""

from __future__ import annotations

import dataclasses

import pytest

from cma_tool.board.types import Board, Region
from cma_tool.generate.kconfig import kconfig_fragment, needed_cma_areas
from cma_tool.model.profiles import PROFILES

from .conftest import plan_for, with_profile

MiB = 1 << 20


def parse(text: str) -> dict[str, str]:
    """The fragment as merge_config.sh reads it: CONFIG_X=value lines, no symbol twice."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        assert key.startswith("CONFIG_") and value, line
        assert key not in out, f"{key} twice"
        out[key] = value
    return out


def test_aquila_on_61(aquila: Board) -> None:
    plan = plan_for(aquila)
    cfg = parse(kconfig_fragment(aquila, plan.profile))
    assert cfg["CONFIG_CMA"] == cfg["CONFIG_DMA_CMA"] == "y"
    assert cfg["CONFIG_CMA_SIZE_MBYTES"] == "32"  # the default node's size
    assert cfg["CONFIG_CMA_ALIGNMENT"] == "8"
    assert cfg["CONFIG_CMA_AREAS"] == "7"  # 3 areas fit the default 1 + 7 slots
    assert cfg["CONFIG_CMA_DEBUGFS"] == cfg["CONFIG_CMA_SYSFS"] == "y"
    assert cfg["CONFIG_ARCH_FORCE_MAX_ORDER"] == "11"  # S5PV210-only build: 4 MiB pageblocks
    assert cfg["CONFIG_VIDEO_S5P_FIMC"] == cfg["CONFIG_VIDEO_SAMSUNG_S5P_MFC"] == "y"
    assert cfg["CONFIG_VIDEOBUF2_DMA_CONTIG"] == "y"


def test_emulated_board_gets_vivid_and_debian_max_order(qemu_aquila: Board) -> None:
    plan = plan_for(qemu_aquila)
    cfg = parse(kconfig_fragment(qemu_aquila, plan.profile))
    assert cfg["CONFIG_VIDEO_VIVID"] == "y" and cfg["CONFIG_VIDEOBUF2_DMA_CONTIG"] == "y"
    assert cfg["CONFIG_ARCH_FORCE_MAX_ORDER"] == "12"  # Debian armmp: 8 MiB pageblocks
    assert cfg["CONFIG_CMA_SIZE_MBYTES"] == "64"


def test_612_spells_max_order_one_less(qemu_aquila: Board) -> None:
    board = with_profile(qemu_aquila, "linux-6.12")
    cfg = parse(kconfig_fragment(board, board.kernel.profile))
    # the same 8 MiB pageblock: MAX_PAGE_ORDER 11 is 6.1's exclusive 12
    assert cfg["CONFIG_ARCH_FORCE_MAX_ORDER"] == "11"


@pytest.mark.parametrize(("profile", "unit_comment"), [
    # arm64 with 4 KiB pages: a pageblock is a 2 MiB PMD (pageblock_order 9); before 5.19 the CMA unit
    # was the larger MAX_ORDER-1 block, 2^10 pages = 4 MiB; from 5.19 it is the pageblock alone.
    ("linux-5.10-arm64", "# the CMA unit is one 4 MiB MAX_ORDER-1 block (2^10 pages; a pageblock is 2 MiB)"),
    ("linux-6.1-arm64", "# the CMA unit is one 2 MiB pageblock"),
    # ARM32 Debian armmp: pageblock_order = MAX_ORDER - 1 = 11, 8 MiB; both rules agree.
    ("linux-5.10", "# the CMA unit is one 8 MiB pageblock"),
])
def test_the_max_order_line_says_what_the_cma_unit_is(qemu_aquila: Board, profile: str, unit_comment: str) -> None:
    board = with_profile(qemu_aquila, profile)
    lines = kconfig_fragment(board, board.kernel.profile).splitlines()
    max_order = next(i for i, line in enumerate(lines) if line.startswith("CONFIG_") and "ORDER=" in line)
    assert lines[max_order - 1] == unit_comment


@pytest.mark.parametrize(("profile", "areas", "expected"), [
    ("linux-6.1", 8, 7), ("linux-6.1", 9, 8), ("linux-6.12", 8, 8), ("linux-6.12", 9, 9), ("linux-6.1", 2, 7)])
def test_cma_areas_slots(profile: str, areas: int, expected: int) -> None:
    # 6.1: MAX_CMA_AREAS = 1 + CONFIG_CMA_AREAS; 6.12: MAX_CMA_AREAS = CONFIG_CMA_AREAS
    assert needed_cma_areas(PROFILES[profile], areas) == expected


def test_many_regions_raise_cma_areas(aquila: Board) -> None:
    extra = tuple(Region(node=f"pool@{0x40000000 + i * 4 * MiB:x}", label=f"p{i}", reusable=True,
                         reg=(0x40000000 + i * 4 * MiB, 4 * MiB)) for i in range(7))
    board = dataclasses.replace(aquila, regions=(*aquila.regions, *extra))
    # 10 areas: 1 + 9 slots on 6.1 (the board's own 7 would refuse three of them)
    cfg = parse(kconfig_fragment(board, PROFILES["linux-6.1"]))
    assert cfg["CONFIG_CMA_AREAS"] == "9"


def test_35_and_2011_use_their_own_symbols(aquila: Board) -> None:
    old = parse(kconfig_fragment(aquila, PROFILES["linux-3.5"]))
    assert old["CONFIG_CMA"] == "y" and old["CONFIG_CMA_SIZE_MBYTES"] == "32"
    assert old["CONFIG_FORCE_MAX_ZONEORDER"] == "11"
    assert old["CONFIG_VIDEO_SAMSUNG_S5P_FIMC"] == "y"
    for absent in ("CONFIG_DMA_CMA", "CONFIG_CMA_AREAS", "CONFIG_ARCH_FORCE_MAX_ORDER", "CONFIG_CMA_SYSFS"):
        assert absent not in old
    seed = parse(kconfig_fragment(aquila, PROFILES["cma-2011"]))
    assert seed["CONFIG_CMA"] == "y" and "CONFIG_CMA_SIZE_MBYTES" not in seed
