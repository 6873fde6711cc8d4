"""Patches against a real kernel tree: Debian's linux-source-6.1, its Makefile and its bindings.

For each board: ``generate --patch --kernel-tree``, then, independently of
the tool's own check, ``git am`` the mail, build the board's DTB with the
tree's Makefile in a build folder of the test's own, and read both DTBs
with pylibfdt. Expected values come from the DTS text of the tree (the
aries .dtsi's MFC regions) and from the board files (the planned regions);
dt-validate runs with the tree's bindings under one PYTHONHASHSEED before
and after.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cma_tool.board.load import read_board
from cma_tool.board.types import Board
from cma_tool.errors import ConfigError
from cma_tool.generate import generate_all
from cma_tool.generate import patches as gp
from cma_tool.generate.patches import FileChange, check_dts_patch
from cma_tool.plan import plan_board
from tests.kernel.tree import Tree, assert_only_additions, cells, fdt_nodes

from .conftest import BOARDS, DATA, git, need
from .test_import import import_board, with_default_area

MiB = 1 << 20


def patch_and_build(board_file: Path, tree: Tree, out: Path, stem: str) -> tuple[bytes, bytes, list[str], Board]:
    """(DTB before, DTB after git am, the tool's notes, the board)."""
    board, sink = read_board(board_file)
    assert board is not None and not sink.errors, [str(d) for d in sink.items]
    plan = plan_board(board)
    before = tree.make_dtb(stem)
    result = generate_all(plan, out, only=["dts"], patch=True, kernel_tree=tree.path)
    patches = [f for f in result.files if f.suffix == ".patch"]
    assert len(patches) == 1
    git(tree.path, "am", "-q", str(patches[0]))
    return before, tree.make_dtb(stem), result.notes, board


def assert_checked(notes: list[str]) -> None:
    text = "\n".join(notes)
    assert "git apply --check" in text
    assert "s5pv210_defconfig" in text and "builds with the patch" in text
    assert "none new" in text


def test_aquila(tree: Tree, tmp_path: Path) -> None:
    before, after, notes, _ = patch_and_build(BOARDS / "aquila.yaml", tree, tmp_path / "out", "s5pv210-aquila")
    assert_checked(notes)
    old, new = fdt_nodes(before), fdt_nodes(after)
    assert not any(p.startswith("/reserved-memory") for p in old)  # 6.1's aquila reserves nothing
    # boards/aquila.yaml: MFC's regions static, the default area dynamic in bank 1
    assert cells(new["/reserved-memory/region@33000000"]["reg"]) == [0x33000000, 16 * MiB]
    assert cells(new["/reserved-memory/region@44000000"]["reg"]) == [0x44000000, 16 * MiB]
    cma = new["/reserved-memory/linux,cma"]
    assert cells(cma["size"]) == [32 * MiB] and cells(cma["alloc-ranges"]) == [0x40000000, 384 * MiB]
    assert "reusable" in cma and "linux,cma-default" in cma
    # the tree's own node for MFC (label mfc in s5pv210.dtsi) takes the two regions, left then right
    mfc = new["/soc/codec@f1700000"]
    handles = {cells(props["phandle"])[0]: path for path, props in new.items() if "phandle" in props}
    assert [handles[h] for h in cells(mfc["memory-region"])] == [
        "/reserved-memory/region@33000000", "/reserved-memory/region@44000000"]
    assert_only_additions(old, new, {("/soc/codec@f1700000", "memory-region")})
    assert tree.findings(after, tmp_path) == tree.findings(before, tmp_path)


def test_goni(tree: Tree, tmp_path: Path) -> None:
    before, after, notes, _ = patch_and_build(BOARDS / "goni.yaml", tree, tmp_path / "out", "s5pv210-goni")
    assert_checked(notes)
    old, new = fdt_nodes(before), fdt_nodes(after)
    assert cells(new["/reserved-memory/region@34000000"]["reg"]) == [0x34000000, 16 * MiB]
    assert cells(new["/reserved-memory/region@54000000"]["reg"]) == [0x54000000, 16 * MiB]
    # goni.yaml's banks are the dts's: the memory node is left as it was
    assert new["/memory@30000000"] == old["/memory@30000000"]
    assert_only_additions(old, new, set())
    assert tree.findings(after, tmp_path) == tree.findings(before, tmp_path)


def test_galaxys_imported_keeps_the_dtsi_regions_and_adds_the_default_area(tree: Tree, tmp_path: Path) -> None:
    """How a new board starts: import its .dts, add a CMA area, generate the patch, apply it, build."""
    imported = import_board(tree, "galaxys", tmp_path / "galaxys.yaml")
    board_file = tmp_path / "galaxys-cma.yaml"
    board_file.write_text(with_default_area(imported.read_text(), (0x40000000, 256 * MiB)))
    before, after, notes, board = patch_and_build(board_file, tree, tmp_path / "out", "s5pv210-galaxys")
    assert_checked(notes)
    old, new = fdt_nodes(before), fdt_nodes(after)
    # s5pv210-aries.dtsi: mfc_left/mfc_right, 32 MiB no-map at 0x43000000 and 0x51000000
    for path, base in (("/reserved-memory/region@43000000", 0x43000000), ("/reserved-memory/region@51000000",
                                                                          0x51000000)):
        assert cells(old[path]["reg"]) == [base, 32 * MiB] and "no-map" in old[path]
        assert new[path] == old[path]
    cma = new["/reserved-memory/linux,cma"]
    assert cells(cma["size"]) == [16 * MiB] and cells(cma["alloc-ranges"]) == [0x40000000, 256 * MiB]
    # the plan puts it top-down in bank 1, clear of mfc_left
    area = next(a for a in plan_board(board).areas if a.is_default)
    assert area.base == 0x40000000 + 256 * MiB - 16 * MiB
    assert sorted(set(new) - set(old)) == ["/reserved-memory/linux,cma"]
    assert_only_additions(old, new, set())
    assert tree.findings(after, tmp_path) == tree.findings(before, tmp_path)
    # the .dts got a reserved-memory block that merges with the .dtsi's: no second #address-cells
    patch = next((tmp_path / "out/patches").iterdir()).read_text()
    assert "+\treserved-memory {\n+\t\tcma_default: linux,cma {" in patch
    assert "s5pv210-aries.dtsi" not in patch.split("---", 1)[1].split("\n\n", 1)[0]


def test_fascinate4g_overrides_a_region_by_its_label(tree: Tree, tmp_path: Path) -> None:
    before, after, notes, _ = patch_and_build(DATA / "boards/fascinate4g-reusable.yaml", tree, tmp_path / "out",
                                              "s5pv210-fascinate4g")
    assert_checked(notes)
    old, new = fdt_nodes(before), fdt_nodes(after)
    left = "/reserved-memory/region@43000000"
    assert "no-map" not in new[left] and "reusable" in new[left]
    assert cells(new[left]["reg"]) == [0x43000000, 32 * MiB]
    assert new["/reserved-memory/region@51000000"] == old["/reserved-memory/region@51000000"]
    assert_only_additions(old, new, {(left, "no-map")})
    patch = next((tmp_path / "out/patches").iterdir()).read_text()
    override = patch.split("+&mfc_left {\n", 1)[1].split("+};", 1)[0]
    assert sorted(override.splitlines()) == ["+\t/delete-property/ no-map;", "+\treusable;"]
    assert tree.findings(after, tmp_path) == tree.findings(before, tmp_path)


def test_device_the_tree_lacks_is_refused_with_did_you_mean(tree: Tree, tmp_path: Path) -> None:
    path = DATA / "boards/aquila-unknown-device.yaml"
    board, _ = read_board(path)
    assert board is not None
    with pytest.raises(ConfigError) as err:
        generate_all(plan_board(board), tmp_path / "out", only=["dts"], patch=True, kernel_tree=tree.path)
    (diag,) = err.value.diagnostics
    line = path.read_text().splitlines().index("  mfc0:") + 1
    assert (diag.file, diag.line) == (str(path), line)
    assert "device 'mfc0' matches no node of the kernel tree" in diag.message
    assert "did you mean 'mfc'" in diag.hint
    assert not (tmp_path / "out/patches").exists()


def test_device_is_found_by_compatible_when_its_name_is_no_label(tree: Tree) -> None:
    board, _ = read_board(DATA / "boards/aquila-codec-by-compatible.yaml")
    assert board is not None
    plan = plan_board(board)
    _, change = gp.dts_patch(tree.path, board, plan.profile, plan.areas)
    # s5pv210.dtsi: "mfc: codec@f1700000 { compatible = "samsung,mfc-v5"; ..."
    assert "\n&mfc {\n\tmemory-region = <&mfc_left>, <&mfc_right>;\n" in change.new
    assert "video_codec" not in change.new


def _change(tree: Tree, stem: str, extra: str) -> FileChange:
    path = f"arch/arm/boot/dts/{stem}.dts"
    old = (tree.path / path).read_text()
    return FileChange(path, old, old + extra)


def test_check_refuses_a_change_that_deletes_a_reserved_node(tree: Tree) -> None:
    """The check can fail: a change that drops the aries .dtsi's mfc_left is caught in the built DTB."""
    board, _ = read_board(DATA / "boards/fascinate4g-reusable.yaml")
    assert board is not None
    # with the node, its user's reference: else the tree's own dtc refuses it first (also a refusal)
    change = _change(tree, "s5pv210-galaxys", "\n&mfc {\n\t/delete-property/ memory-region;\n};\n"
                                              "\n/delete-node/ &mfc_left;\n")
    with pytest.raises(ConfigError, match=r"/reserved-memory/region@43000000 is gone"):
        check_dts_patch(tree.path, change, board, [])
    dangling = _change(tree, "s5pv210-galaxys", "\n/delete-node/ &mfc_left;\n")
    with pytest.raises(ConfigError, match=r"make s5pv210-galaxys.dtb failed(.|\n)*non-existent node or label"):
        check_dts_patch(tree.path, dangling, board, [])


def test_check_refuses_a_change_dt_validate_warns_about(tree: Tree) -> None:
    """The check can fail: reusable and no-map together is a finding of the tree's reserved-memory binding."""
    board, _ = read_board(BOARDS / "aquila.yaml")
    assert board is not None
    bad = ("\n/ {\n\treserved-memory {\n\t\t#address-cells = <1>;\n\t\t#size-cells = <1>;\n\t\tranges;\n\n"
           "\t\tbad: region@34000000 {\n\t\t\tcompatible = \"shared-dma-pool\";\n\t\t\treusable;\n\t\t\tno-map;\n"
           "\t\t\treg = <0x34000000 0x400000>;\n\t\t};\n\t};\n};\n")
    with pytest.raises(ConfigError, match="dt-validate with .* warns about the patched s5pv210-aquila.dtb") as err:
        check_dts_patch(tree.path, _change(tree, "s5pv210-aquila", bad), board, [])
    assert "region@34000000" in str(err.value)


def test_patch_failing_its_check_is_not_left_behind(tree: Tree, tmp_path: Path) -> None:
    (tree.path / ".config").write_text("# configured in place\n")
    board, _ = read_board(BOARDS / "aquila.yaml")
    assert board is not None
    with pytest.raises(ConfigError, match="configured in place"):
        generate_all(plan_board(board), tmp_path / "out", only=["dts"], patch=True, kernel_tree=tree.path)
    assert list((tmp_path / "out/patches").iterdir()) == []


def test_fragment_names_devices_as_the_tree_does(tree: Tree, tmp_path: Path) -> None:
    """Without --patch but with the tree, the .dtsi fragment uses the tree's label for the codec too."""
    need("dtc")
    board, _ = read_board(DATA / "boards/aquila-codec-by-compatible.yaml")
    assert board is not None
    result = generate_all(plan_board(board), tmp_path, only=["dts"], kernel_tree=tree.path)
    fragment = (tmp_path / "aquila-cma.dtsi").read_text()
    assert "\n&mfc {\n\tmemory-region = <&mfc_left>, <&mfc_right>;\n" in fragment
    assert "&video_codec" not in fragment
    assert not any("board key" in n for n in result.notes)
