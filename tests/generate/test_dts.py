"""Device-tree output: compiled by the real dtc, checked by dt-validate, read back by libfdt.

Expected bases and sizes are the plan's (the model booting the board) and
the board file's own numbers; cell layout follows the kernel's rule that
/reserved-memory carries the root's #address-cells/#size-cells.
"""

from __future__ import annotations

import dataclasses
import struct
import subprocess
from pathlib import Path

import libfdt
import pytest

from cma_tool.board.types import Board, Region
from cma_tool.errors import ConfigError
from cma_tool.generate import dts as gdts
from cma_tool.model.profiles import PROFILES

from .conftest import need, plan_for, with_profile

MiB = 1 << 20


def compile_tree(text: str, tmp_path: Path, name: str = "t") -> bytes:
    need("dtc")
    src = tmp_path / f"{name}.dts"
    src.write_text(text)
    gdts.compile_dts(src, tmp_path / f"{name}.dtb")
    return (tmp_path / f"{name}.dtb").read_bytes()


def cells(fdt: libfdt.Fdt, path: str, prop: str) -> list[int]:
    raw = bytes(fdt.getprop(fdt.path_offset(path), prop))
    return list(struct.unpack(f">{len(raw) // 4}I", raw))


def values(raw: list[int], acells: int, scells: int) -> list[tuple[int, int]]:
    def num(chunk: list[int]) -> int:
        out = 0
        for c in chunk:
            out = (out << 32) | c
        return out

    step = acells + scells
    return [(num(raw[i:i + acells]), num(raw[i + acells:i + step])) for i in range(0, len(raw), step)]


def dt_validate(dtb: Path) -> str:
    tool = need("dt-validate")
    done = subprocess.run([tool, str(dtb)], capture_output=True, text=True, check=False, timeout=300)
    # dt-validate exits 0 even when a node fails its schema: its findings are the output.
    return (done.stdout + done.stderr).strip()


@pytest.mark.parametrize("board_name", ["aquila", "goni", "qemu-aquila"])
def test_standalone_tree_holds_exactly_the_plan(board_name: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    board: Board = request.getfixturevalue(board_name.replace("-", "_"))
    plan = plan_for(board)
    blob = compile_tree(gdts.standalone_dts(board, plan.profile), tmp_path)
    fdt = libfdt.Fdt(blob)
    assert cells(fdt, "/", "#address-cells") == [1] and cells(fdt, "/", "#size-cells") == [1]
    assert cells(fdt, "/reserved-memory", "#address-cells") == [1]
    assert cells(fdt, "/reserved-memory", "#size-cells") == [1]
    rm = fdt.path_offset("/reserved-memory")
    assert fdt.getprop(rm, "ranges") is not None and len(bytes(fdt.getprop(rm, "ranges"))) == 0
    mem = f"/memory@{board.banks[0].base:x}"
    assert values(cells(fdt, mem, "reg"), 1, 1) == [(b.base, b.size) for b in board.banks]
    for area in plan.areas:
        path = f"/reserved-memory/{area.name}"
        off = fdt.path_offset(path)
        assert fdt.getprop(off, "compatible").as_str() == "shared-dma-pool"
        assert fdt.getprop(off, "reusable") is not None
        if area.source == "dt-static":
            assert values(cells(fdt, path, "reg"), 1, 1) == [(area.base, area.size)]
        else:
            assert cells(fdt, path, "size") == [area.size]
            region = board.region(area.name)
            assert region is not None
            ranges = values(cells(fdt, path, "alloc-ranges"), 1, 1)
            assert ranges == list(region.alloc_ranges)
            # the planned base lies inside an allowed range
            assert any(s <= area.base and area.end <= s + n for s, n in ranges)
        is_default = fdt.getprop(off, "linux,cma-default", quiet=(libfdt.NOTFOUND,))
        assert (is_default is not None and not isinstance(is_default, int)) == area.is_default


def test_decompiled_text_shows_the_planned_numbers(aquila: Board, tmp_path: Path) -> None:
    plan = plan_for(aquila)
    blob = compile_tree(gdts.standalone_dts(aquila, plan.profile), tmp_path)
    text = subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", "-"], input=blob, capture_output=True,
                          check=True, timeout=60).stdout.decode()
    assert "reg = <0x33000000 0x1000000>;" in text
    assert "reg = <0x44000000 0x1000000>;" in text
    assert "size = <0x2000000>;" in text
    assert "alloc-ranges = <0x40000000 0x18000000>;" in text
    assert "reg = <0x30000000 0x5000000 0x40000000 0x18000000>;" in text


def test_consumer_points_at_its_regions_in_order(aquila: Board, tmp_path: Path) -> None:
    plan = plan_for(aquila)
    fdt = libfdt.Fdt(compile_tree(gdts.standalone_dts(aquila, plan.profile), tmp_path))
    mfc = fdt.path_offset("/soc/mfc@f1700000")
    handles = struct.unpack(">2I", bytes(fdt.getprop(mfc, "memory-region")))
    targets = [fdt.get_name(fdt.node_offset_by_phandle(h)) for h in handles]
    assert targets == ["region@33000000", "region@44000000"]
    assert bytes(fdt.getprop(mfc, "memory-region-names")) == b"left\0right\0"


def test_lpae_uses_two_cells_everywhere(aquila: Board, tmp_path: Path) -> None:
    board = with_profile(aquila, "linux-6.1", lpae=True, hugetlb_pageblock_order=9)
    blob = compile_tree(gdts.standalone_dts(board, board.kernel.profile), tmp_path)
    fdt = libfdt.Fdt(blob)
    assert cells(fdt, "/reserved-memory", "#address-cells") == [2]
    assert cells(fdt, "/reserved-memory", "#size-cells") == [2]
    assert values(cells(fdt, "/reserved-memory/region@33000000", "reg"), 2, 2) == [(0x33000000, 16 * MiB)]
    assert cells(fdt, "/reserved-memory/linux,cma", "size") == [0, 32 * MiB]


def test_splice_text_for_qemu_uses_the_callers_cells(qemu_aquila: Board) -> None:
    text = gdts.reserved_memory_dts(qemu_aquila, PROFILES["linux-6.1"], address_cells=2, size_cells=2)
    assert text.startswith("\treserved-memory {\n")
    assert "\t\t#address-cells = <2>;" in text
    assert "reg = <0x00000000 0x43000000 0x00000000 0x01000000>;" in text


def test_memory_dts_alone(aquila: Board) -> None:
    assert gdts.memory_dts(aquila.banks, level=0) == (
        'memory@30000000 {\n\tdevice_type = "memory";\n'
        "\treg = <0x30000000 0x05000000>, <0x40000000 0x18000000>;\n};\n")


@pytest.mark.slow
def test_dt_validate_accepts_the_tree(aquila: Board, tmp_path: Path) -> None:
    plan = plan_for(aquila)
    compile_tree(gdts.standalone_dts(aquila, plan.profile), tmp_path)
    assert dt_validate(tmp_path / "t.dtb") == ""


@pytest.mark.slow
def test_dt_validate_catches_reusable_with_no_map(aquila: Board, tmp_path: Path) -> None:
    """The check can fail: a node the binding forbids (reusable + no-map) is reported."""
    bad = tuple(dataclasses.replace(r, no_map=True) if r.label == "mfc_left" else r for r in aquila.regions)
    board = dataclasses.replace(aquila, regions=bad)
    compile_tree(gdts.standalone_dts(board, PROFILES["linux-6.1"]), tmp_path)
    report = dt_validate(tmp_path / "t.dtb")
    assert "region@33000000" in report and "shared-dma-pool" in report


def test_usable_memory_range_in_chosen(aquila: Board, tmp_path: Path) -> None:
    board = dataclasses.replace(aquila, boot=dataclasses.replace(aquila.boot, banks_via="usable-memory-range"))
    fdt = libfdt.Fdt(compile_tree(gdts.standalone_dts(board, PROFILES["linux-6.1"]), tmp_path))
    assert values(cells(fdt, "/chosen", "linux,usable-memory-range"), 1, 1) == [
        (0x30000000, 80 * MiB), (0x40000000, 384 * MiB)]


def test_default_node_left_out_when_cma_is_on_the_cmdline(aquila: Board) -> None:
    text = gdts.reserved_memory_dts(aquila, PROFILES["linux-6.1"], omit_default=True)
    assert "linux,cma" not in text and "region@33000000" in text


def _region(aquila: Board, **changes: object) -> Board:
    regions = tuple(dataclasses.replace(r, **changes) if r.label == "mfc_left" else r  # type: ignore[arg-type]
                    for r in aquila.regions)
    return dataclasses.replace(aquila, regions=regions)


@pytest.mark.parametrize("changes", [
    {"node": "evil { }; / { x"},
    {"node": "region@33000000;"},
    {"label": "1abc"},
    {"label": "mfc-left"},
    {"compatible": 'shared-dma-pool"; evil = "x'},
    {"compatible": "tab\there"},
])
def test_hostile_board_values_are_refused(aquila: Board, changes: dict[str, object]) -> None:
    board = _region(aquila, **changes)
    with pytest.raises(ConfigError) as err:
        gdts.standalone_dts(board, PROFILES["linux-6.1"])
    assert err.value.diagnostics and err.value.diagnostics[0].hint


def test_value_too_big_for_one_cell(aquila: Board) -> None:
    board = _region(aquila, reg=(0x1_0000_0000, 16 * MiB))
    with pytest.raises(ConfigError, match="does not fit in 1 cell"):
        gdts.reserved_memory_dts(board, PROFILES["linux-6.1"])


def test_memory_region_without_label_is_refused(aquila: Board) -> None:
    regions: tuple[Region, ...] = tuple(dataclasses.replace(r, label=None) if r.label == "mfc_left" else r
                                        for r in aquila.regions)
    board = dataclasses.replace(aquila, regions=regions)
    with pytest.raises(ConfigError, match="memory-region 'mfc_left'"):
        gdts.consumer_dts(board)


def test_fragment_included_at_the_end_of_the_board_dts(aquila: Board, tmp_path: Path) -> None:
    """Without --patch: `#include "aquila-cma.dtsi"` as the board dts's last line gives the same tree."""
    need("cpp")
    need("dtc")
    from .conftest import TREE

    plan = plan_for(aquila)
    src = TREE / "arch/arm/boot/dts/samsung"
    (tmp_path / "s5pv210.dtsi").write_text((src / "s5pv210.dtsi").read_text())
    (tmp_path / "aquila-cma.dtsi").write_text(gdts.board_fragment(aquila, plan.profile))
    board_dts = tmp_path / "board.dts"
    board_dts.write_text((src / "s5pv210-aquila.dts").read_text() + '#include "aquila-cma.dtsi"\n')
    pre = subprocess.run(["cpp", "-nostdinc", "-undef", "-x", "assembler-with-cpp", "-P", "-I", str(tmp_path),
                          str(board_dts)], capture_output=True, text=True, check=True, timeout=60).stdout
    fdt = libfdt.Fdt(subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-"], input=pre.encode(),
                                    capture_output=True, check=True, timeout=60).stdout)
    assert values(cells(fdt, "/memory@30000000", "reg"), 1, 1) == [(b.base, b.size) for b in aquila.banks]
    assert values(cells(fdt, "/reserved-memory/region@44000000", "reg"), 1, 1) == [(0x44000000, 16 * MiB)]
    mfc = fdt.path_offset("/soc/codec@f1700000")
    handles = struct.unpack(">2I", bytes(fdt.getprop(mfc, "memory-region")))
    assert [fdt.get_name(fdt.node_offset_by_phandle(h)) for h in handles] == ["region@33000000", "region@44000000"]
