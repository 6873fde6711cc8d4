"""`--target labgrid`: a place on a real coordinator, acquired, used, released on every way out.

The lab is real labgrid (coordinator, exporter, client API) on 127.0.0.1;
the board behind the place is the bench-board simulator, whose pty the
exporter serves through ser2net, and whose relay the place's power resource
switches (tests/labs/lab.py). The board's events are the emulated Aquila's
direct boot's, worked out by hand in tests/e2e/expect.py.
"""

from __future__ import annotations

import getpass
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.expect import assert_aquila_1080p_events, assert_same_artefacts
from tests.labs.lab import PLACE, Lab, sim_place
from tests.sim import RECORDED_RUN, SimBoard, write_sim_aquila, zimage
from tests.watching import wait_for_stage

ROOT = Path(__file__).parents[2]
pytestmark = [pytest.mark.slow]


@dataclass
class Bench:
    lab: Lab
    sim: SimBoard
    board: Path
    kernel: Path

    def run(self, out: Path, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "cma_tool", "run", str(self.board), "--target", "labgrid", "--place", PLACE,
             "--coordinator", self.lab.address, "--kernel", str(self.kernel), "--out", str(out), *extra],
            cwd=ROOT, env=self.lab.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Bench]:
    with SimBoard(tmp_path / "sim", relay=True, kernel_log=RECORDED_RUN / "console.log") as sim:
        board = write_sim_aquila(tmp_path, sim, board_ip=None)
        kernel = tmp_path / "zImage"
        kernel.write_bytes(zimage(500_000, seed=5))
        with Lab(tmp_path / "lab", sim_place(sim)) as lab:
            yield Bench(lab, sim, board, kernel)


def report(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "report.json").read_text())
    return data


def test_a_place_is_acquired_used_and_released(bench: Bench, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = bench.run(out)
    assert wait_for_stage(out, "place", proc), f"the run never reached stage place: {proc.poll()}"
    # While it runs, the place is the run's, as every labgrid user sees it.
    assert bench.lab.holder() == f"{socket.gethostname()}/{getpass.getuser()}"
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr + stdout
    rep = assert_same_artefacts(out)
    assert (rep["target"], rep["boot"]) == ("labgrid", "uboot")
    assert_aquila_1080p_events(rep)
    stages = [s["stage"] for s in rep["stages"]]
    assert stages.index("locked") < stages.index("place") < stages.index("console") < stages.index("power")
    place = next(s for s in rep["stages"] if s["stage"] == "place")
    assert place["console"].startswith("rfc2217://127.0.0.1:")
    # Switched on and off through the place's power resource (labgrid's simplerest driver), then released.
    assert bench.sim.power_events() == ["on", "off"]
    assert bench.lab.holder() == "None"


def test_a_place_someone_else_holds_is_refused_naming_the_holder(bench: Bench, tmp_path: Path) -> None:
    took = bench.lab.client("-p", PLACE, "acquire", user="alice")
    assert took.returncode == 0, took.stderr
    proc = bench.run(tmp_path / "out")
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 3
    assert f"labgrid place {PLACE} is acquired by {socket.gethostname()}/alice" in report(tmp_path / "out")["message"]
    assert bench.sim.power_events() == [], "the board was not touched"
    assert bench.lab.holder() == f"{socket.gethostname()}/alice", "alice's place stays alice's"
    assert "Traceback" not in stderr


def test_an_exporter_that_disappears_mid_run_is_infrastructure_and_the_place_is_released(
        bench: Bench, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = bench.run(out)
    assert wait_for_stage(out, "uboot", proc), f"the run never reached stage uboot: {proc.poll()}"
    bench.lab.stop_exporter()
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 3, stderr
    rep = report(out)
    assert rep["verdict"] == "infrastructure" and rep["stage"] == "end"
    assert f"labgrid place {PLACE}: its exporter went away" in rep["message"]
    assert "Traceback" not in stderr
    assert bench.lab.holder() == "None"


def test_sigterm_mid_run_releases_the_place(bench: Bench, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = bench.run(out)
    assert wait_for_stage(out, "power", proc), f"the run never reached stage power: {proc.poll()}"
    proc.terminate()
    proc.communicate(timeout=120)
    assert proc.returncode == 143
    assert bench.lab.holder() == "None"
    assert bench.sim.relay_state() == "off"
