"""`cma-tool dtb show|patch` on real dtc-compiled blobs; bad blobs give our error, exit 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
    assert 'bootargs = "console=ttySAC2,115200";' in text
    # mfc's memory-region points at the two pools' phandles, left then right
    left = text.split("region@33000000 {")[1].split("phandle = <")[1].split(">")[0]
    right = text.split("region@44000000 {")[1].split("phandle = <")[1].split(">")[0]
    assert f"memory-region = <{left} {right}>;" in text
    show = cma_tool("dtb", "show", str(out))
    assert show.returncode == 0 and "mfc_right: region@44000000" in show.stdout


def test_truncated_dtb_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.dtb"
    good = subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-"], input=b"/dts-v1/;\n/ { };\n",
                          capture_output=True, check=True).stdout
    bad.write_bytes(good[:30])
    res = cma_tool("dtb", "show", str(bad))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and str(bad) in res.stderr and "byte" in res.stderr
