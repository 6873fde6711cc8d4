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

from tests.e2e.expect import assert_aquila_1080p_events, assert_same_artefacts

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
    rep = assert_same_artefacts(out)
    assert rep["verdict"] == "pass" and rep["boot"] == "uboot"
    assert_aquila_1080p_events(rep)
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
    # The kernel was given the run's command line, word for word (nothing added to keep the banks).
    prepared = next(s for s in rep["stages"] if s["stage"] == "prepare")
    assert obs["cmdline"] == prepared["cmdline"]
    assert next(c for c in rep["checks"] if c["name"] == "command line")["passed"]
    # The same U-Boot path a bench board takes: every file checked with U-Boot's crc32 before bootz.
    assert log.count(b"crc32 for ") == 3
