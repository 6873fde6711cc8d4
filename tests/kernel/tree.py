"""The real kernel tree of the tests (tests/kernel/source.py) as a fixture, and how DTBs are compared."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libfdt
import pytest

from cma_tool.generate import kerneltree as kt
from tests import tools
from tests.kernel import source

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
        done = subprocess.run([tools.need("make"), "-s", "-C", str(self.path), f"O={self.build}", *MAKE, f"{stem}.dtb"],
                              capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        return out.read_bytes()

    def findings(self, blob: bytes, tmp: Path) -> list[str]:
        """dt-validate's lines about the DTB (file name stripped), with one fixed hash seed."""
        path = tmp / "v.dtb"
        path.write_bytes(blob)
        done = subprocess.run([tools.need("dt-validate"), "-s", str(self.schema), str(path)], capture_output=True,
                              text=True, timeout=600, check=False, env={"PYTHONHASHSEED": "0", "PATH": os.environ.get("PATH", "")})
        return sorted(line.removeprefix(f"{path}: ") for line in (done.stdout + done.stderr).splitlines()
                      if line.startswith(f"{path}: "))


def linux_tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    """The extracted tree in a worktree of this session, defconfig done in a build folder of its own."""
    for tool in (tools.need("arm-linux-gnueabihf-gcc"), tools.need("cpp"), tools.need("dtc"),
                 tools.need("dt-mk-schema"), tools.need("dt-validate")):
        assert tool
    base = source.extracted_tree()
    folder = tmp_path_factory.mktemp("linux")
    tree = source.worktree(base, folder / "linux-6.1")
    build = folder / "build"
    done = subprocess.run([tools.need("make"), "-s", "-C", str(tree), f"O={build}", *MAKE, "s5pv210_defconfig"],
                          capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    yield Tree(tree, source.head(tree), build, kt.processed_schema(tree))
    source.remove_worktree(base, tree)


def fresh(linux: Tree) -> Iterator[Tree]:
    """The session's tree back at its one commit, before and after a test."""
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
    return all(a == b or (a in old_ph and new_ph.get(b) == old_ph[a]) for a, b in zip(cells(old), cells(new), strict=True))


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


