"""`cma-tool run --target ssh`: a board already running Linux, reached only through its ssh: section.

The emulated board boots the SSH flavour of the image on its own (cma-tool's
run does not boot it); the board file names 127.0.0.1 and the forwarded port,
the key and a known_hosts learned from the image build. The run deploys the
capture program, the agent and the plan over SSH and cross-checks as usual.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from cma_tool.deploy.emulated_ssh import booted_over_ssh
from cma_tool.deploy.image import default_cache_dir, ensure_image
from cma_tool.deploy.qemu import MemoryBank, prepare_boot
from cma_tool.generate.bootargs import kernel_cmdline
from cma_tool.generate.dts import reserved_memory_dts
from cma_tool.plan import make_plan
from tests.e2e.expect import assert_aquila_1080p_events, assert_same_artefacts

ROOT = Path(__file__).parents[2]
pytestmark = [pytest.mark.emulated, pytest.mark.slow]


def test_run_target_ssh_on_a_board_we_did_not_boot(tmp_path: Path) -> None:
    image = ensure_image(ssh=True)
    assert image.ssh is not None
    plan = make_plan(ROOT / "boards" / "qemu-aquila.yaml")
    board = plan.board
    boot = prepare_boot(image, tmp_path / "board", banks=[MemoryBank(b.base, b.size) for b in board.banks],
                        reserved_memory_dts=reserved_memory_dts(board, plan.profile, address_cells=2, size_cells=2),
                        bootargs=kernel_cmdline(board, plan.profile, agent="ssh").text,
                        rng_seed=secrets.token_bytes(32))
    with booted_over_ssh(boot, image=image, workdir=tmp_path / "board", memory="768M", timeout=120) as sb:
        board_file = tmp_path / "lab-aquila.yaml"
        board_file.write_text(f"include: {ROOT / 'boards' / 'qemu-aquila.yaml'}\n"
                              f"ssh: {{host: 127.0.0.1, port: {sb.port}, user: root, key: '{image.ssh.client_key}'}}\n")
        # The board's host key, as a lab would have it in its known_hosts.
        home = tmp_path / "home"
        (home / ".ssh").mkdir(parents=True)
        (home / ".ssh" / "known_hosts").write_text(sb.known_hosts.read_text())
        out = tmp_path / "run"
        res = subprocess.run([sys.executable, "-m", "cma_tool", "run", str(board_file), "--target", "ssh",
                              "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "HOME": str(home), "CMA_TOOL_CACHE": str(default_cache_dir())},
                             check=False)
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
