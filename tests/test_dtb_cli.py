"""`cma-tool dtb show|patch` on real dtc-compiled blobs; bad blobs give our error, exit 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cma_tool.dtbcmd import merge_bootargs
from tests.tools import need

ROOT = Path(__file__).parents[1]


def cma_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cma_tool", *args], cwd=ROOT, capture_output=True, text=True,
                          check=False)


def test_patch_vendor_dtb_from_board(tmp_path: Path) -> None:
    vendor = tmp_path / "vendor.dtb"
    subprocess.run(["dtc", "-q", "-@", "-I", "dts", "-O", "dtb", "-o", str(vendor), "-"], check=True, text=True,
                   input='/dts-v1/;\n/ { #address-cells = <1>; #size-cells = <1>; model = "vendor";\n'
                         'memory@30000000 { device_type = "memory"; reg = <0x30000000 0x10000000>; };\n'
                         'mfc: codec@f1700000 { compatible = "samsung,mfc-v5"; reg = <0xf1700000 0x4000>; };\n'
                         'chosen { bootargs = "console=ttySAC2,115200 mem=256M"; }; };\n')
    out = tmp_path / "patched.dtb"
    res = cma_tool("dtb", "patch", str(vendor), "--board", "boards/aquila.yaml", "-o", str(out))
    assert res.returncode == 0, res.stderr
    dts = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", str(out)], capture_output=True, text=True, check=True)
    assert dts.stderr == ""
    text = dts.stdout
    # mainline s5pv210-aquila.dts banks, one node, the root's 1/1 cells
    assert "reg = <0x30000000 0x5000000 0x40000000 0x18000000>;" in text
    assert "region@33000000 {" in text and "reg = <0x33000000 0x1000000>;" in text
    assert "size = <0x2000000>;" in text and "linux,cma-default;" in text
    # The vendor's words stay; mem= is not cma-tool's on a board whose banks come from the DT.
    assert 'bootargs = "console=ttySAC2,115200 mem=256M";' in text
    assert "kept the vendor's mem=256M" in res.stderr
    # mfc's memory-region points at the two pools' phandles, left then right
    left = text.split("region@33000000 {")[1].split("phandle = <")[1].split(">")[0]
    right = text.split("region@44000000 {")[1].split("phandle = <")[1].split(">")[0]
    assert f"memory-region = <{left} {right}>;" in text
    show = cma_tool("dtb", "show", str(out))
    assert show.returncode == 0 and "mfc_right: region@44000000" in show.stdout


def _vendor_dtb(tmp_path: Path, bootargs: str) -> Path:
    vendor = tmp_path / "vendor.dtb"
    subprocess.run(["dtc", "-q", "-@", "-I", "dts", "-O", "dtb", "-o", str(vendor), "-"], check=True, text=True,
                   input='/dts-v1/;\n/ { #address-cells = <1>; #size-cells = <1>; model = "vendor";\n'
                         'memory@30000000 { device_type = "memory"; reg = <0x30000000 0x10000000>; };\n'
                         f'chosen {{ bootargs = "{bootargs}"; }}; }};\n')
    return vendor


def test_patch_keeps_root_and_rootwait_and_replaces_only_cma(tmp_path: Path) -> None:
    need("dtc")
    need("fdtget")
    # The vendor line, with a cma= of the vendor's own that would bypass the planned DT default node.
    vendor = _vendor_dtb(tmp_path, "console=ttymxc0,115200 cma=64M root=/dev/mmcblk0p2 rootwait quiet")
    out = tmp_path / "patched.dtb"
    res = cma_tool("dtb", "patch", str(vendor), "--board", "boards/aquila.yaml", "-o", str(out))
    assert res.returncode == 0, res.stderr
    got = subprocess.run(["fdtget", str(out), "/chosen", "bootargs"], capture_output=True, text=True, check=True)
    # Aquila's default area is a DT node on linux-6.1: the plan sets no cma=, so the vendor's goes; the rest stays
    # in order (its console= too: the vendor's console is the one the board has).
    assert got.stdout.strip() == "console=ttymxc0,115200 root=/dev/mmcblk0p2 rootwait quiet"
    assert "bootargs before: console=ttymxc0,115200 cma=64M root=/dev/mmcblk0p2 rootwait quiet" in res.stdout
    assert "bootargs after:  console=ttymxc0,115200 root=/dev/mmcblk0p2 rootwait quiet" in res.stdout
    assert "cma=64M replaced by nothing" in res.stderr


def test_patch_puts_the_planned_cma_in_the_vendors_place(tmp_path: Path) -> None:
    need("dtc")
    need("fdtget")
    # linux-3.5 reads no /reserved-memory: its default area comes from cma= (Aquila's 32 MiB node).
    board = tmp_path / "aquila-35.yaml"
    board.write_text(f"include: {ROOT / 'boards/aquila.yaml'}\nkernel: {{profile: linux-3.5}}\n")
    vendor = _vendor_dtb(tmp_path, "root=/dev/mmcblk0p2 cma=16M rootwait -- single")
    out = tmp_path / "patched.dtb"
    res = cma_tool("dtb", "patch", str(vendor), "--board", str(board), "-o", str(out))
    assert res.returncode == 0, res.stderr
    got = subprocess.run(["fdtget", str(out), "/chosen", "bootargs"], capture_output=True, text=True, check=True)
    assert got.stdout.strip() == "root=/dev/mmcblk0p2 cma=32M rootwait -- single"


def test_merge_bootargs_rules() -> None:
    owned = frozenset({"cma", "coherent_pool"})
    # Planned words of an owned key the vendor lacks go last; quoted words stay whole.
    merged = merge_bootargs('root=/dev/sda1 dyndbg="file a.c +p" rw', "console=ttyS0 cma=32M coherent_pool=1M", owned)
    assert merged.after == 'root=/dev/sda1 dyndbg="file a.c +p" rw cma=32M coherent_pool=1M'
    # The kernel keeps the last cma=; both vendor copies go, the plan's takes the first one's place.
    merged = merge_bootargs("cma=8M a cma=16M b", "cma=32M", owned)
    assert merged.after == "cma=32M a b"
    # Words after "--" are init's, never touched.
    assert merge_bootargs("a -- cma=1", "cma=32M", owned).after == "a cma=32M -- cma=1"
    # mem= is owned only when the plan places banks with it: one word per bank, all kept in order.
    merged = merge_bootargs("mem=256M root=x", "mem=80M@0x30000000 mem=384M@0x40000000", owned | {"mem"})
    assert merged.after == "mem=80M@0x30000000 mem=384M@0x40000000 root=x"


def test_truncated_dtb_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dtb"
    good = subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-"], input=b"/dts-v1/;\n/ { };\n",
                          capture_output=True, check=True).stdout
    bad.write_bytes(good[:30])
    res = cma_tool("dtb", "show", str(bad))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and str(bad) in res.stderr and "byte" in res.stderr
