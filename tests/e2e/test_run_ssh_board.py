"""`cma-tool run --target ssh`: a board already running Linux, reached only through its ssh: section.

The emulated board boots the SSH flavour of the image on its own (cma-tool's
run does not boot it); the board file names 127.0.0.1 and the forwarded port,
the key and a known_hosts learned from the image build. The run deploys the
capture program, the agent and the plan over SSH and cross-checks as usual.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.expect import assert_aquila_1080p_events, assert_same_artefacts
from tests.e2e.ssh_board import ssh_board

ROOT = Path(__file__).parents[2]
pytestmark = [pytest.mark.emulated, pytest.mark.slow]


def test_run_target_ssh_on_a_board_we_did_not_boot(tmp_path: Path) -> None:
    with ssh_board(tmp_path) as board:
        out = tmp_path / "run"
        res = subprocess.run([sys.executable, "-m", "cma_tool", "run", str(board.board_file), "--target", "ssh",
                              "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                             env=board.env, check=False)
    report = json.loads((out / "report.json").read_text())
    assert res.returncode == 0, res.stdout + res.stderr + report.get("message", "")
    assert report["verdict"] == "pass"
    assert_same_artefacts(out)
    stages = [s["stage"] for s in report["stages"]]
    assert stages.index("ssh") < stages.index("deployed") < stages.index("captured") < stages.index("check")
    # The board was booted with trace_event=cma:* (by us, standing in for its own boot): the pool is traced too.
    assert_aquila_1080p_events(report)
    # Nothing of the plan came with the boot: it went over SSH; a running board's command line is its own,
    # read from its log, so no command-line check is made.
    assert (out / "plan").read_text() == (out / "agent-plan.txt").read_text()
    assert not any(c["name"] == "command line" for c in report["checks"])
