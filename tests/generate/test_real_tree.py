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

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libfdt
import pytest

from cma_tool.board.load import read_board
from cma_tool.board.types import Board
from cma_tool.errors import ConfigError
from cma_tool.generate import generate_all
from cma_tool.generate import kerneltree as kt
from cma_tool.plan import plan_board
from tests.kernel import source

from .conftest import BOARDS, DATA, git, need

MiB = 1 << 20
DTS = "arch/arm/boot/dts"
MAKE = ["ARCH=arm", "CROSS_COMPILE=arm-linux-gnueabihf-"]


@dataclass
class Tree:
    path: Path
    base: str  # the one commit every test starts from
    build: Path  # the test's own out-of-tree build folder (defconfig done)
    schema: Path

    def make_dtb(self, stem: str) -> bytes:
        out = self.build / DTS / f"{stem}.dtb"
        out.unlink(missing_ok=True)
        done = subprocess.run([need("make"), "-s", "-C", str(self.path), f"O={self.build}", *MAKE, f"{stem}.dtb"],
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return out.read_bytes()

    def findings(self, blob: bytes, tmp: Path) -> list[str]:
        """dt-validate's lines about the DTB (file name stripped), with one fixed hash seed."""
        path = tmp / "v.dtb"
        path.write_bytes(blob)
        done = subprocess.run([need("dt-validate"), "-s", str(self.schema), str(path)], capture_output=True,
                              text=True, timeout=600, check=False, env={"PYTHONHASHSEED": "0", "PATH": _path()})
        return sorted(line.removeprefix(f"{path}: ") for line in (done.stdout + done.stderr).splitlines()
                      if line.startswith(f"{path}: "))


def _path() -> str:
    import os

    return os.environ.get("PATH", "")


@pytest.fixture(scope="session")
def linux(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    for tool in ("arm-linux-gnueabihf-gcc", "cpp", "dtc", "dt-mk-schema", "dt-validate"):
        need(tool)
    base = source.extracted_tree()
    folder = tmp_path_factory.mktemp("linux")
    tree = source.worktree(base, folder / "linux-6.1")
    build = folder / "build"
    done = subprocess.run([need("make"), "-s", "-C", str(tree), f"O={build}", *MAKE, "s5pv210_defconfig"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    yield Tree(tree, git(tree, "rev-parse", "HEAD").strip(), build, kt.processed_schema(tree))
    git(base, "worktree", "remove", "--force", str(tree))


@pytest.fixture
def tree(linux: Tree) -> Iterator[Tree]:
    source.reset(linux.path, linux.base)
    yield linux
    source.reset(linux.path, linux.base)


def fdt_nodes(blob: bytes) -> dict[str, dict[str, bytes]]:
    """Every node of a DTB by path, with its properties, read by libfdt."""
    f = libfdt.Fdt(blob)
    out: dict[str, dict[str, bytes]] = {}

    def visit(offset: int, path: str) -> None:
        props: dict[str, bytes] = {}
        poff = f.first_property_offset(offset, libfdt.QUIET_NOTFOUND)
        while poff >= 0:
            prop = f.get_property_by_offset(poff)
            props[prop.name] = bytes(prop)
            poff = f.next_property_offset(poff, libfdt.QUIET_NOTFOUND)
        out[path] = props
        child = f.first_subnode(offset, libfdt.QUIET_NOTFOUND)
        while child >= 0:
            visit(child, path.rstrip("/") + "/" + f.get_name(child))
            child = f.next_subnode(child, libfdt.QUIET_NOTFOUND)

    visit(0, "/")
    return out


def cells(raw: bytes) -> list[int]:
    return [int.from_bytes(raw[i:i + 4], "big") for i in range(0, len(raw), 4)]


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


def _phandles(nodes: dict[str, dict[str, bytes]]) -> dict[int, str]:
    return {cells(props["phandle"])[0]: path for path, props in nodes.items() if "phandle" in props}


def _same(old: bytes, new: bytes, old_ph: dict[int, str], new_ph: dict[int, str]) -> bool:
    """Equal, but a cell that is the phandle of node P before may be the phandle of P after.

    dtc numbers phandles in tree order, so a new referenced node renumbers
    the ones after it, and every <&label> cell with them.
    """
    if old == new:
        return True
    if len(old) != len(new) or len(old) % 4:
        return False
    return all(a == b or (a in old_ph and new_ph.get(b) == old_ph[a]) for a, b in zip(cells(old), cells(new)))


def assert_only_additions(before: dict[str, dict[str, bytes]], after: dict[str, dict[str, bytes]],
                          changed: set[tuple[str, str]]) -> None:
    """Every node and property of ``before`` is in ``after`` unchanged, but the (path, property) in ``changed``."""
    old_ph, new_ph = _phandles(before), _phandles(after)
    for path, props in before.items():
        assert path in after, f"{path} is gone"
        for name, value in props.items():
            if (path, name) in changed:
                continue
            assert name in after[path], f"{path}:{name} is gone"
            assert _same(value, after[path][name], old_ph, new_ph), f"{path}:{name} changed"


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


def test_galaxys_keeps_the_dtsi_regions_and_adds_the_default_area(tree: Tree, tmp_path: Path) -> None:
    before, after, notes, board = patch_and_build(DATA / "boards/galaxys-cma.yaml", tree, tmp_path / "out",
                                                  "s5pv210-galaxys")
    assert_checked(notes)
    old, new = fdt_nodes(before), fdt_nodes(after)
    # s5pv210-aries.dtsi: mfc_left/mfc_right, 32 MiB no-map at 0x43000000 and 0x51000000
    for path, base in (("/reserved-memory/region@43000000", 0x43000000), ("/reserved-memory/region@51000000",
                                                                          0x51000000)):
        assert cells(old[path]["reg"]) == [base, 32 * MiB] and "no-map" in old[path]
        assert new[path] == old[path]
    cma = new["/reserved-memory/linux,cma"]
    assert cells(cma["size"]) == [32 * MiB] and cells(cma["alloc-ranges"]) == [0x40000000, 256 * MiB]
    # the plan puts it top-down in bank 1, clear of mfc_left
    area = next(a for a in plan_board(board).areas if a.is_default)
    assert area.base == 0x40000000 + 256 * MiB - 32 * MiB
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
