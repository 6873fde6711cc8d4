"""Patches against a synthetic kernel tree (a real git repository made in tmp_path).

Each patch is applied with ``git am`` and the result is checked by what
consumes it: the patched .dts goes through cpp and dtc and is read back with
libfdt; the patched board file is compiled for ARM and run in the host
harness. Expected numbers are the board's and the plan's.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import libfdt
import pytest

from cma_tool.board.types import Board
from cma_tool.errors import ConfigError
from cma_tool.generate import generate_all
from cma_tool.generate import patches as gp
from cma_tool.generate.boardfile import board_code

from .conftest import arm_syntax_check, git, need, plan_for
from .test_boardfile import run_harness

MiB = 1 << 20


def make_patch(board: Board, profile: str, tree: Path, out: Path) -> Path:
    plan = plan_for(board, profile)
    kind = "dts" if profile.startswith("linux-6") else "c"
    result = generate_all(plan, out, only=[kind], patch=True, kernel_tree=tree)
    patches = [f for f in result.files if f.suffix == ".patch"]
    assert len(patches) == 1
    return patches[0]


def am(tree: Path, patch: Path) -> None:
    git(tree, "am", "-q", str(patch))


def test_dts_patch_is_a_git_mail(aquila: Board, kernel_tree: Path, tmp_path: Path) -> None:
    text = make_patch(aquila, "linux-6.12", kernel_tree, tmp_path / "out").read_text()
    assert re.match(r"From [0-9a-f]{40} Mon Sep 17 00:00:00 2001\nFrom: Test <test@example.org>\nDate: ", text)
    assert "\nSubject: [PATCH] ARM: dts: s5pv210: aquila: reserve CMA areas" in text
    assert "Signed-off-by: Test <test@example.org>" in text
    assert re.search(r"\n arch/arm/boot/dts/samsung/s5pv210-aquila\.dts \| +\d+ \+", text)  # diffstat
    assert " 1 file changed" in text
    assert "\ndiff --git a/arch/arm/boot/dts/samsung/s5pv210-aquila.dts b/arch/arm/boot/dts/samsung/s5pv210-aquila.dts\n" in text
    # the message explains the reservation with the plan's numbers
    assert "cma_default: 32 MiB at 0x56000000 (default area), used by fimc0, fimc1, fimc2" in text
    # index line carries the blob id of the tree's own file, so git am -3 can fall back
    blob = git(kernel_tree, "rev-parse", "HEAD:arch/arm/boot/dts/samsung/s5pv210-aquila.dts").strip()
    assert re.search(rf"\nindex {blob[:7]}[0-9a-f]*\.\.[0-9a-f]+ 100644\n", text)


def test_patched_dts_compiles_to_the_plan(aquila: Board, kernel_tree: Path, tmp_path: Path) -> None:
    need("cpp")
    need("dtc")
    plan = plan_for(aquila, "linux-6.12")
    am(kernel_tree, make_patch(aquila, "linux-6.12", kernel_tree, tmp_path / "out"))
    dts_dir = kernel_tree / "arch/arm/boot/dts/samsung"
    pre = subprocess.run(["cpp", "-nostdinc", "-undef", "-x", "assembler-with-cpp", "-P", "-I", str(dts_dir),
                          str(dts_dir / "s5pv210-aquila.dts")], capture_output=True, text=True, check=True,
                         timeout=60).stdout
    dtb = subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-"], input=pre.encode(), capture_output=True,
                         check=True, timeout=60).stdout
    fdt = libfdt.Fdt(dtb)

    def u32s(path: str, prop: str) -> list[int]:
        raw = bytes(fdt.getprop(fdt.path_offset(path), prop))
        return list(struct.unpack(f">{len(raw) // 4}I", raw))

    assert u32s("/memory@30000000", "reg") == [0x30000000, 80 * MiB, 0x40000000, 384 * MiB]
    for area in plan.areas:
        path = f"/reserved-memory/{area.name}"
        if area.source == "dt-static":
            assert u32s(path, "reg") == [area.base, area.size]
        else:
            assert u32s(path, "size") == [area.size]
    mfc = fdt.path_offset("/soc/codec@f1700000")
    handles = struct.unpack(">2I", bytes(fdt.getprop(mfc, "memory-region")))
    assert [fdt.get_name(fdt.node_offset_by_phandle(h)) for h in handles] == ["region@33000000", "region@44000000"]
    assert bytes(fdt.getprop(mfc, "memory-region-names")) == b"left\0right\0"
    # what was there stays: the other properties, nodes and strings with braces
    assert fdt.getprop(mfc, "status").as_str() == "okay"
    assert fdt.getprop(fdt.path_offset("/chosen"), "bootargs").as_str().endswith("{x}")
    assert fdt.path_offset("/clock-0") >= 0


def test_61_tree_layout_is_found_too(aquila: Board, kernel_tree: Path, tmp_path: Path) -> None:
    """6.1 keeps Samsung dts files directly in arch/arm/boot/dts: the board's file is found by compatible."""
    old = kernel_tree / "arch/arm/boot/dts/samsung"
    for f in old.iterdir():
        shutil.move(str(f), kernel_tree / "arch/arm/boot/dts" / f.name)
    git(kernel_tree, "add", "-A")
    git(kernel_tree, "commit", "-q", "-m", "flat layout")
    text = make_patch(aquila, "linux-6.1", kernel_tree, tmp_path / "out").read_text()
    assert "diff --git a/arch/arm/boot/dts/s5pv210-aquila.dts" in text


def test_2011_patch_builds_and_runs(aquila: Board, kernel_tree: Path, tmp_path: Path) -> None:
    plan = plan_for(aquila, "cma-2011")
    patch = make_patch(aquila, "cma-2011", kernel_tree, tmp_path / "out")
    text = patch.read_text()
    assert " 2 files changed" in text and "arch/arm/mach-s5pv210/Kconfig" in text
    am(kernel_tree, patch)
    mach = kernel_tree / "arch/arm/mach-s5pv210/mach-aquila.c"
    done = arm_syntax_check(mach, "2011")
    assert done.returncode == 0, done.stderr
    default = next(a for a in plan.areas if a.is_default)
    out = run_harness(mach, "2011", "AQUILA", tmp_path, default.base)
    # the board's devices are added first, then the areas are created and handed out
    assert out.index("platform_add_devices 4") < out.index(f"cma_create start={default.base:#x} size={32 * MiB:#x}")
    assert f"device fimc0 area start={default.base:#x} size={32 * MiB:#x}" in out
    assert f"device mfc_r area start=0x44000000 size={16 * MiB:#x}" in out
    kconfig = (kernel_tree / "arch/arm/mach-s5pv210/Kconfig").read_text()
    aquila_block, goni_block = kconfig.split("config MACH_GONI")
    assert "\tselect CMA\n" in aquila_block.split("config MACH_AQUILA")[1]
    assert "select CMA" not in goni_block


def test_35_patch_joins_an_existing_reserve_hook(goni: Board, kernel_tree: Path, tmp_path: Path) -> None:
    patch = make_patch(goni, "linux-3.5", kernel_tree, tmp_path / "out")
    am(kernel_tree, patch)
    mach = kernel_tree / "arch/arm/mach-s5pv210/mach-goni.c"
    done = arm_syntax_check(mach, "3.5")
    assert done.returncode == 0, done.stderr
    out = run_harness(mach, "3.5", "GONI", tmp_path, 0)
    # the board's regions replace the old hard-coded MFC reservation: one call, goni.yaml's numbers
    assert [line for line in out if line.startswith("s5p_mfc")] == [
        f"s5p_mfc_reserve_mem rbase=0x54000000 rsize={16 * MiB:#x} lbase=0x34000000 lsize={16 * MiB:#x}"]
    source = mach.read_text()
    assert ".reserve\t= &goni_reserve," in source and source.count("\t.reserve") == 1


def test_patch_needs_a_kernel_tree(aquila: Board, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--patch needs --kernel-tree"):
        generate_all(plan_for(aquila), tmp_path, patch=True)


def test_tree_that_is_not_git_is_refused(aquila: Board, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(ConfigError, match="not a git work tree"):
        generate_all(plan_for(aquila), tmp_path / "out", patch=True, kernel_tree=plain)
    with pytest.raises(ConfigError, match="does not exist"):
        generate_all(plan_for(aquila), tmp_path / "out", patch=True, kernel_tree=tmp_path / "missing")


def test_tree_without_the_board_file(aquila: Board, kernel_tree: Path, tmp_path: Path) -> None:
    (kernel_tree / "arch/arm/mach-s5pv210/mach-aquila.c").unlink()
    with pytest.raises(ConfigError, match="has no arch/arm/mach-s5pv210/mach-aquila.c"):
        generate_all(plan_for(aquila, "linux-3.5"), tmp_path / "out", patch=True, kernel_tree=kernel_tree)


def test_board_without_a_dts_in_the_tree(goni: Board, kernel_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='compatible "samsung,goni"'):
        generate_all(plan_for(goni), tmp_path / "out", patch=True, kernel_tree=kernel_tree)


def test_check_applies_reports_a_stale_patch(aquila: Board, kernel_tree: Path, tmp_path: Path) -> None:
    patch = make_patch(aquila, "linux-6.12", kernel_tree, tmp_path / "out")
    dts = kernel_tree / "arch/arm/boot/dts/samsung/s5pv210-aquila.dts"
    dts.write_text(dts.read_text().replace("bank 0 only", "changed meanwhile"))
    with pytest.raises(ConfigError, match="does not apply"):
        gp.check_applies(kernel_tree, patch)


def test_board_file_without_machine_record_is_refused(aquila: Board) -> None:
    from cma_tool.model.profiles import PROFILES

    code = board_code(aquila, PROFILES["linux-3.5"])
    with pytest.raises(ConfigError, match="MACHINE_START"):
        gp.patch_board_file_text("int x;\n", code, where="mach-aquila.c")


RAMOOPS_DTS = """/dts-v1/;
#include "s5pv210.dtsi"

/ {
	model = "Samsung Aquila based on S5PC110";
	compatible = "samsung,aquila", "samsung,s5pv210";

	memory@30000000 {
		device_type = "memory";
		reg = <0x30000000 0x05000000>, <0x40000000 0x18000000>;
	};

	reserved-memory {
		#address-cells = <1>;
		#size-cells = <1>;
		ranges;

		ramoops: ramoops@34f00000 {
			compatible = "ramoops";
			reg = <0x34f00000 0x100000>;
			record-size = <0x20000>;
		};
	};
};
"""


def test_new_regions_join_the_boards_own_reserved_memory_block(aquila: Board, kernel_tree: Path,
                                                               tmp_path: Path) -> None:
    """A .dts with a reserved-memory block of its own: the regions go into it, the ramoops node stays."""
    from cma_tool.generate.kerneltree import TreeView, compile_source

    need("cpp")
    need("dtc")
    dts = kernel_tree / "arch/arm/boot/dts/samsung/s5pv210-aquila.dts"
    dts.write_text(RAMOOPS_DTS)
    view = TreeView.of(compile_source(dts, None))
    new = gp.merge_dts_text(RAMOOPS_DTS, aquila, view, where=dts.name)
    assert new.count("reserved-memory {") == 1 and new.count("#address-cells") == RAMOOPS_DTS.count("#address-cells")
    assert new.index("ramoops: ramoops@34f00000") < new.index("mfc_left: region@33000000") < new.index("\n};\n")
    fdt = libfdt.Fdt(compile_source(dts, None, text=new))
    ramoops = fdt.path_offset("/reserved-memory/ramoops@34f00000")
    assert struct.unpack(">2I", bytes(fdt.getprop(ramoops, "reg"))) == (0x34f00000, 0x100000)
    assert struct.unpack(">I", bytes(fdt.getprop(ramoops, "record-size"))) == (0x20000,)
    assert struct.unpack(">2I", bytes(fdt.getprop(fdt.path_offset("/reserved-memory/region@33000000"), "reg"))) \
        == (0x33000000, 16 * MiB)
    # the banks are the board's already: the memory node is not touched
    assert new.split("reserved-memory")[0] == RAMOOPS_DTS.split("reserved-memory")[0]
