"""`cma-tool run --boot ssh` end to end: the emulated Aquila reached over SSH (dropbear on the board, fabric here).

The board boots the ssh flavour of the image (no capture program, no plan in
the initrd); the run deploys both over SSH, runs cmatool-run there and powers
the board off over SSH. The kernel must do exactly what it does on the
direct path, so the expected pfns are the same hand-worked values as in
test_run_emulated.py.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.expect import assert_aquila_1080p_events, assert_same_artefacts

ROOT = Path(__file__).parents[2]
pytestmark = [pytest.mark.emulated, pytest.mark.slow]


def cma_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cma_tool", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)


def initrd_names(initrd: Path) -> list[str]:
    """The member names of a (possibly concatenated) gzip'd cpio, listed by the real cpio."""
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=gzip.decompress(initrd.read_bytes()),
                             capture_output=True, check=True)
    return listing.stdout.decode().split()


def test_ssh_run_every_event_matches(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = cma_tool("run", "boards/qemu-aquila.yaml", "--boot", "ssh", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    rep = assert_same_artefacts(out)
    assert rep["boot"] == "ssh"
    assert_aquila_1080p_events(rep)

    # It really went over SSH: the boot carried neither the plan nor the program ...
    names = initrd_names(out / "initrd.gz")
    assert "usr/sbin/dropbear" in names
    assert "cmatool/plan" not in names and "bin/capture" not in names
    # ... the plan that ran is the one uploaded, the sections came over SSH, not the console ...
    plan = (out / "plan").read_text()
    assert plan == (out / "agent-plan.txt").read_text()
    assert "stream vivid driver:vivid:0 1920 1080 YUYV" in plan.splitlines()
    ssh_output = (out / "ssh-output.log").read_text()
    assert "cmatool.mode=ssh" in ssh_output.split("==== CMA-TOOL END cmdline")[0]
    assert "==== CMA-TOOL DONE rc=0 ====" in ssh_output
    console = (out / "console.log").read_bytes()
    assert b"==== CMA-TOOL BEGIN" not in console
    assert b"cma-tool: ssh ready on 10.0.2.15:22" in console
    assert b"Pubkey auth succeeded for 'root'" in console  # dropbear's own log line
    # ... and the board was powered off over SSH, not killed.
    assert b"reboot: Power down" in console
    stages = [s["stage"] for s in rep["stages"]]
    assert stages.index("init") < stages.index("ssh") < stages.index("deployed") < stages.index("captured")


def test_ssh_run_exhaustion_is_the_same_as_direct(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = cma_tool("run", "configs/exhaust-16m.yaml", "--boot", "ssh", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    rep = json.loads((out / "report.json").read_text())
    observed = list(rep["observed"]["events"])
    # Kconfig default 16 MiB at the top of bank 1: 0x68000000 - 16 MiB = 0x67000000, pfn 0x67000.
    assert "cma_alloc_finish: name=reserved pfn=0x67000 page=(ptrval) count=64 align=6" in observed
    # 4096 pages: pool (one 256-page step), buffers at 256, 1280, 2304; the 4th would need 3328+1013 > 4096.
    assert observed.count("cma_alloc_finish: name=reserved pfn=0xffffffff page=00000000 count=1013 align=8") == 1
    granted = [c for c in rep["checks"] if c["name"].startswith("REQBUFS")]
    assert granted[0]["observed"] == "3" and granted[0]["passed"]
