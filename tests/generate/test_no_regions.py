"""A board without reserved-memory regions gets no /reserved-memory node, and the model predicts that tree.

Debian's 6.12 kernel says "No reserved-memory node in the DT" when the node is
missing and nothing when it is present but empty; the model predicts from the
board's regions, so the generated tree must carry the node exactly when it
has a child (tests/data/kernel-traces-6.12/b-kconfig-default-16m is the
recording of such a board).
"""

from __future__ import annotations

import re
from pathlib import Path

import libfdt
import pytest

from cma_tool.board.load import read_board
from cma_tool.board.types import Board
from cma_tool.generate import dts as gdts
from cma_tool.generate.kerneltree import TreeView, compile_source
from cma_tool.generate.patches import merge_dts_text
from cma_tool.model import boot
from cma_tool.plan import boot_input, plan_board

from .conftest import need
from .test_dts import compile_tree

ROOT = Path(__file__).parents[2]
BOARD = ROOT / "tests" / "run" / "boards" / "b-kconfig-default-16m.yaml"
RECORDING = ROOT / "tests" / "data" / "kernel-traces-6.12" / "b-kconfig-default-16m" / "dmesg.txt"


@pytest.fixture(scope="module")
def no_regions() -> Board:
    board, sink = read_board(BOARD)
    assert board is not None and not sink.errors, [str(d) for d in sink.items]
    assert board.regions == ()
    return board


def _recorded_line() -> str:
    """The kernel's own words, as the 6.12 recording has them (timestamp stripped)."""
    lines = [re.sub(r"^\[\s*[\d.]+\]\s", "", line) for line in RECORDING.read_text().splitlines()
             if "No reserved-memory node" in line]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("kernel", ["linux-6.1", "linux-6.12"])
def test_generated_trees_have_no_reserved_memory_node(no_regions: Board, kernel: str, tmp_path: Path) -> None:
    profile = plan_board(no_regions, kernel=kernel).profile
    assert gdts.reserved_memory_dts(no_regions, profile) == ""
    assert gdts.reserved_memory_dts(no_regions, profile, address_cells=2, size_cells=2) == ""  # QEMU's tree
    assert "reserved-memory" not in gdts.board_fragment(no_regions, profile)
    fdt = libfdt.Fdt(compile_tree(gdts.standalone_dts(no_regions, profile), tmp_path))
    assert fdt.path_offset("/memory@40000000") >= 0
    with pytest.raises(libfdt.FdtException) as missing:
        fdt.path_offset("/reserved-memory")
    assert missing.value.err == -libfdt.NOTFOUND


def test_612_model_predicts_the_missing_node_line(no_regions: Board) -> None:
    plan = plan_board(no_regions, kernel="linux-6.12")
    log = boot(plan.profile, boot_input(no_regions)).log
    assert _recorded_line() == "OF: reserved mem: Reserved memory: No reserved-memory node in the DT"
    assert _recorded_line() in log
    # After the Kconfig default area, where 6.12 looks for the static regions (as recorded).
    assert log.index("cma: Reserved 16 MiB at 0x6f000000 on node -1") < log.index(_recorded_line())


def test_61_model_predicts_no_such_line(no_regions: Board) -> None:
    plan = plan_board(no_regions, kernel="linux-6.1")
    assert not any("reserved-memory node" in line for line in boot(plan.profile, boot_input(no_regions)).log)


def test_dts_patch_keeps_the_trees_reserved_memory_for_a_board_without_regions(no_regions: Board,
                                                                              tmp_path: Path) -> None:
    """A board without regions asks for no reservation; what the tree reserves is not ours to delete."""
    need("cpp")
    need("dtc")
    tree = ("/dts-v1/;\n/ {\n\t#address-cells = <1>;\n\t#size-cells = <1>;\n"
            "\tmemory@40000000 {\n\t\tdevice_type = \"memory\";\n\t\treg = <0x40000000 0x10000000>;\n"
            "\t};\n\n\tresv: reserved-memory {\n\t\t#address-cells = <1>;\n\t\t#size-cells = <1>;\n\t\tranges;\n"
            "\t};\n};\n")
    source = tmp_path / "test.dts"
    source.write_text(tree)
    view = TreeView.of(compile_source(source, None))
    patched = merge_dts_text(tree, no_regions, view, where="test.dts")
    assert "reserved-memory" in patched and "memory@40000000" in patched
