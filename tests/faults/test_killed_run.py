"""A run killed with SIGKILL, then run again into the same folder: nothing left running, nothing corrupt.

SIGKILL gives the run no chance to clean up: its QEMU must still die with
it (the kernel's parent-death signal), its folder lock goes with the
process, and what it wrote stays as the record of a run that never ended
(report.json "running") until the next run is told to replace it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.expect import assert_aquila_1080p_events, assert_same_artefacts
from tests.faults.matrix import qemu_pids
from tests.watching import wait_for_stage

ROOT = Path(__file__).parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.emulated]


def run(out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cma_tool", "run", "boards/qemu-aquila.yaml", "--out", str(out),
                           *extra], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)


def test_a_sigkilled_run_leaves_no_qemu_and_a_rerun_into_its_folder_is_complete(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "cma_tool", "run", "boards/qemu-aquila.yaml", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
    assert wait_for_stage(out, "boot", proc, 120)
    time.sleep(1.0)
    assert qemu_pids(out), "QEMU was running when the run was killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 1.0
    while qemu_pids(out) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not qemu_pids(out), "QEMU outlived the killed run by more than a second"
    killed = json.loads((out / "report.json").read_text())
    assert killed["verdict"] == "running"  # what it knew when it died, as it wrote it

    refused = run(out)
    assert refused.returncode == 2
    assert "holds the artefacts of a run that never ended" in refused.stderr
    assert json.loads((out / "report.json").read_text())["started"] == killed["started"], "kept as it was"

    again = run(out, "--replace")
    assert again.returncode == 0, again.stderr
    rep = assert_same_artefacts(out)
    assert_aquila_1080p_events(rep)
    log = (out / "console.log").read_bytes()
    assert log.count(b"==== CMA-TOOL DONE rc=0 ====") == 1, "one run's console, not two appended"
    assert not [p for p in out.iterdir() if p.name.startswith((".tmp", "tmp"))], "no half-written files left"
