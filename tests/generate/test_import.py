"""`cma-tool import` on every S5PV210 board of linux-source-6.1, checked against the DTS text.

The expected banks, regions and consoles below were read off the tree's
.dts/.dtsi files (s5pv210-aries.dtsi for the Galaxy S and Fascinate 4G).
Each imported board must validate, the plan must put its regions where the
DTS does, re-generating from it must change nothing, and adding a CMA area
must change nothing but that addition.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cma_tool.board.load import read_board
from cma_tool.errors import ConfigError
from cma_tool.generate import generate_all
from cma_tool.generate import kerneltree as kt
from cma_tool.generate.kerneltree import TreeView
from cma_tool.generate.patches import merge_dts_text
from cma_tool.importdt import board_yaml, read_tree
from cma_tool.plan import load_checked_board, plan_board
from tests.kernel.tree import Tree, assert_only_additions, fdt_nodes

MiB = 1 << 20
ROOT = Path(__file__).parents[2]
_ARIES = {"region@43000000": ("mfc_left", 0x43000000, 32 * MiB), "region@51000000": ("mfc_right", 0x51000000, 32 * MiB)}
#: board -> (banks, reserved-memory nodes: name -> (label, base, size), console device, bootargs kept)
EXPECTED = {
    "aquila": ([(0x30000000, 80 * MiB), (0x40000000, 384 * MiB)], {}, "ttySAC2",
               "root=/dev/mmcblk1p5 rw rootwait ignore_loglevel earlyprintk"),
    "goni": ([(0x30000000, 80 * MiB), (0x40000000, 256 * MiB), (0x50000000, 128 * MiB)], {}, "ttySAC0",
             "root=/dev/mmcblk0p5 rw rootwait ignore_loglevel earlyprintk"),
    "galaxys": ([(0x30000000, 80 * MiB), (0x40000000, 256 * MiB), (0x50000000, 128 * MiB)], _ARIES, "ttySAC2", ""),
    "fascinate4g": ([(0x30000000, 80 * MiB), (0x40000000, 256 * MiB), (0x50000000, 128 * MiB)], _ARIES, "ttySAC2",
                    ""),
    "smdkc110": ([(0x20000000, 512 * MiB)], {}, "ttySAC0", "root=/dev/mmcblk0p1 rw rootwait ignore_loglevel earlyprintk"),
    "smdkv210": ([(0x20000000, 1024 * MiB)], {}, "ttySAC0", "root=/dev/mmcblk0p1 rw rootwait ignore_loglevel earlyprintk"),
    "torbreck": ([(0x20000000, 512 * MiB)], {}, "ttySAC0", "root=/dev/mmcblk0p1 rw rootwait ignore_loglevel earlyprintk"),
}


def test_every_s5pv210_board_of_the_tree_is_covered(linux: Tree) -> None:
    found = sorted(p.stem.removeprefix("s5pv210-") for p in (linux.path / "arch/arm/boot/dts").glob("s5pv210-*.dts"))
    assert found == sorted(EXPECTED)


def import_board(linux: Tree, name: str, out: Path) -> Path:
    """The real command line, as a user runs it."""
    dts = linux.path / f"arch/arm/boot/dts/s5pv210-{name}.dts"
    done = subprocess.run([sys.executable, "-m", "cma_tool", "import", str(dts), "-o", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(out)
    return out


def with_default_area(yaml_text: str, bank: tuple[int, int]) -> str:
    """The imported board plus a 16 MiB default CMA area in ``bank``, as a user would add it."""
    region = ("  linux,cma:\n    label: cma_default\n    compatible: shared-dma-pool\n    reusable: true\n"
              f"    size: 16M\n    alloc-ranges: [[{bank[0]:#x}, {bank[1]:#x}]]\n    linux,cma-default: true\n")
    if "\nreserved-memory:\n" in yaml_text:
        return yaml_text.replace("\nreserved-memory:\n", "\nreserved-memory:\n" + region, 1)
    return yaml_text + "\nreserved-memory:\n" + region


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_import(linux: Tree, tmp_path: Path, name: str) -> None:
    banks, regions, console, bootargs = EXPECTED[name]
    path = import_board(linux, name, tmp_path / f"{name}.yaml")
    checked = load_checked_board(path)
    assert [d for d in checked.diagnostics if d.severity == "error"] == []
    board = checked.plan.board if checked.plan is not None else None
    assert board is not None
    assert board.name == name
    assert [(b.base, b.size) for b in board.banks] == banks
    assert {r.node: (r.label, *(r.reg or (0, 0))) for r in board.regions} == regions
    assert all(r.no_map and not r.reusable for r in board.regions)
    assert board.console.device == console
    assert board.kernel.bootargs == bootargs
    if regions:
        # the aries .dtsi gives both regions to MFC (&mfc in s5pv210.dtsi), left then right
        (mfc,) = [d for d in board.devices if d.memory_region]
        assert (mfc.name, mfc.memory_region, mfc.compatible) == ("mfc", ("mfc_left", "mfc_right"),
                                                                 ("samsung,mfc-v5",))
    # the plan puts the existing regions exactly where the DTS does (the kernel's own line for each)
    plan = plan_board(board)
    for node, (_, base, size) in regions.items():
        assert f"Reserved memory: created DMA memory pool at {base:#010x}, size {size >> 20} MiB" in plan.boot_lines
        assert f"OF: reserved mem: initialized node {node}, compatible id shared-dma-pool" in plan.boot_lines

    # re-generating from it: the tree already says all of it
    dts = f"arch/arm/boot/dts/s5pv210-{name}.dts"
    with pytest.raises(ConfigError, match="already holds exactly these reservations"):
        generate_all(plan, tmp_path / "out", only=["dts"], patch=True, kernel_tree=linux.path)

    # with a CMA area added: the patched .dts compiles (the tree's cpp + dtc) to the old tree plus that area
    grown = tmp_path / f"{name}-cma.yaml"
    grown.write_text(with_default_area(path.read_text(), banks[-1]))
    board2, sink = read_board(grown)
    assert board2 is not None and not sink.errors, [str(d) for d in sink.items]
    text = (linux.path / dts).read_text()
    before = kt.compile_source(linux.path / dts, linux.path)
    after_text = merge_dts_text(text, board2, TreeView.of(before), where=dts)
    after = kt.compile_source(linux.path / dts, linux.path, text=after_text)
    old, new = fdt_nodes(before), fdt_nodes(after)
    assert_only_additions(old, new, set())
    added = sorted(set(new) - set(old))
    assert added == (["/reserved-memory/linux,cma"] if regions else ["/reserved-memory", "/reserved-memory/linux,cma"])


def test_import_of_a_dtb_matches_the_dts(linux: Tree, tmp_path: Path) -> None:
    """The DTB the tree's Makefile builds imports to the same board as its source (but the header line)."""
    dts = linux.path / "arch/arm/boot/dts/s5pv210-galaxys.dts"
    dtb = tmp_path / "galaxys.dtb"
    dtb.write_bytes(linux.make_dtb("s5pv210-galaxys"))
    from_dts = board_yaml(read_tree(dts)[0], name="galaxys", read_as="x", profile="linux-6.1", max_order=11)
    from_dtb = board_yaml(read_tree(dtb)[0], name="galaxys", read_as="x", profile="linux-6.1", max_order=11)
    # a kernel DTB has no labels (no -@): a label the tree had is written as a made-up one, with a comment
    assert from_dtb.replace("   # not in the tree: the tree refers to the node by its path", "") == from_dts.replace(
        "label: mfc_left", "label: region_43000000").replace("label: mfc_right", "label: region_51000000").replace(
        "[mfc_left, mfc_right]", "[region_43000000, region_51000000]").replace("  mfc:", "  codec_f1700000:")


def test_import_refuses_a_broken_dts_at_its_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dts"
    bad.write_text("/dts-v1/;\n/ {\n\tmodel = \"x\"\n};\n")
    done = subprocess.run([sys.executable, "-m", "cma_tool", "import", str(bad)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.startswith(f"{bad}:4:1: error: syntax error")
    assert "Traceback" not in done.stderr
