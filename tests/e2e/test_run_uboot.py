"""`cma-tool run --boot uboot`: the emulated Aquila booted by real U-Boot over TFTP, end to end.

U-Boot rewrites /memory with one bank; the run must still give the kernel
Aquila's two banks, so CMA lands exactly where the direct boot puts it. The
expected values are the kernel's rules worked out by hand (the same as
test_run_emulated.py's), not an earlier run's output.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
pytestmark = [pytest.mark.emulated, pytest.mark.slow]
MiB = 1 << 20


def cma_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cma_tool", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)


def test_uboot_boot_gives_the_direct_boots_layout_and_events(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = cma_tool("run", "boards/qemu-aquila.yaml", "--boot", "uboot", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    rep = json.loads((out / "report.json").read_text())
    assert rep["verdict"] == "pass" and rep["boot"] == "uboot"
    # It really went through U-Boot: its stages, and bootz's own words on the console.
    stages = [s["stage"] for s in rep["stages"]]
    assert {"uboot", "loaded", "kernel"} <= set(stages), stages
    log = (out / "console.log").read_bytes()
    assert b"Hit any key to stop autoboot" in log
    assert b"## Flattened Device Tree blob at" in log and b"Starting kernel ..." in log
    assert log.count(b"Bytes transferred = ") == 3  # zImage, DTB, initrd over TFTP

    obs = json.loads((out / "observed.json").read_text())
    # U-Boot's single 768 MiB bank was cut back to Aquila's two: 80 MiB at 0x40000000, 384 MiB at 0x50000000.
    assert "node   0: [mem 0x0000000040000000-0x0000000044ffffff]" in log.decode(errors="replace")
    assert "node   0: [mem 0x0000000050000000-0x0000000067ffffff]" in log.decode(errors="replace")
    # The 64 MiB default node lands top-down at 0x64000000 (bank 1 ends at 0x68000000); the static pools stay put.
    areas = {(a["name"], a["base"], a["size"]) for a in obs["areas"]}
    assert areas == {("linux,cma", 0x64000000, 64 * MiB), ("region@43000000", 0x43000000, 16 * MiB),
                     ("region@54000000", 0x54000000, 16 * MiB)}
    observed = list(rep["observed"]["events"])
    # The atomic pool takes 64 pages at the area's base; 1013-page buffers align to 256 pages.
    assert observed[:2] == ["cma_alloc_start: name=linux,cma count=64 align=6",
                            "cma_alloc_finish: name=linux,cma pfn=0x64000 page=(ptrval) count=64 align=6"]
    finishes = [e for e in observed if e.startswith("cma_alloc_finish") and "count=1013" in e]
    assert [e.split()[2] for e in finishes] == ["pfn=0x64100", "pfn=0x64500", "pfn=0x64900", "pfn=0x64d00"]
    assert sum(1 for e in observed if e.startswith("cma_release")) == 4
    # The kernel was given the run's command line, word for word (nothing added to keep the banks).
    assert obs["cmdline"] == rep["stages"][[s["stage"] for s in rep["stages"]].index("generate")]["bootargs"]
