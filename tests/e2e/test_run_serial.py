"""`cma-tool run --target serial` on the simulated bench Aquila: the same stages and artefacts as every way.

The board (tests/sim/sim-aquila.yaml) is a FIMC board: its capture driver is
s5p-fimc, so nothing of vivid may reach it, neither on the kernel's command
line nor in the agent's plan. Its U-Boot is the simulator on a real pty,
fetching our files from our TFTP server; its bootz plays back the console of
a real run of its emulated twin (tests/data/serial-replay, recorded by its
record.py), so the kernel's events must be the emulated Aquila's direct
boot's, worked out by hand in tests/e2e/expect.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cma_tool.deploy.agent import parse_plan
from tests.e2e.expect import assert_aquila_1080p_events, assert_same_artefacts
from tests.sim import RECORDED_RUN, SimBoard, write_sim_aquila, zimage

ROOT = Path(__file__).parents[2]
pytestmark = [pytest.mark.slow]


@dataclass
class SerialRun:
    out: Path
    result: subprocess.CompletedProcess[str]
    sim: SimBoard
    boots: list[dict[str, Any]]

    @property
    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.out / "report.json").read_text())
        return data


def run_serial(tmp: Path, *extra: str, board_ip: str | None = "127.0.0.2",
               kernel_log: Path = RECORDED_RUN / "console.log") -> Iterator[SerialRun]:
    with SimBoard(tmp / "sim", relay=True, kernel_log=kernel_log) as sim:
        board = write_sim_aquila(tmp, sim, board_ip=board_ip)
        (tmp / "zImage").write_bytes(zimage(500_000, seed=5))
        out = tmp / "out"
        done = subprocess.run(
            [sys.executable, "-m", "cma_tool", "run", str(board), "--target", "serial", "--console", sim.path,
             "--kernel", str(tmp / "zImage"), "--out", str(out), *extra],
            cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
        yield SerialRun(out, done, sim, sim.boots())


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SerialRun]:
    # No board-ip: U-Boot's dhcp configures the board, as on most lab networks.
    yield from run_serial(tmp_path_factory.mktemp("serial"), board_ip=None)


def test_the_serial_way_writes_every_artefact_and_the_direct_boots_events(serial_run: SerialRun) -> None:
    assert serial_run.result.returncode == 0, serial_run.result.stderr + serial_run.report.get("message", "")
    rep = assert_same_artefacts(serial_run.out)
    assert (rep["target"], rep["boot"]) == ("serial", "uboot")
    assert_aquila_1080p_events(rep)
    stages = [s["stage"] for s in rep["stages"]]
    assert stages.index("prepare") < stages.index("console") < stages.index("power") < stages.index("uboot") \
        < stages.index("loaded") < stages.index("kernel") < stages.index("init") < stages.index("captured")
    assert next(c for c in rep["checks"] if c["name"] == "command line")["passed"]


def test_nothing_of_vivid_reaches_a_fimc_board(serial_run: SerialRun) -> None:
    (boot,) = serial_run.boots
    # The command line U-Boot was told, and the plan the board found in the initrd it was given.
    assert boot["bootargs"] == "console=ttyAMA0,115200 panic=-1 trace_event=cma:* cmatool.mode=run"
    assert "vivid" not in boot["bootargs"]
    text = boot["initrd"]["agent_plan"]
    assert text is not None and "vivid" not in text
    plan = parse_plan(text)
    assert plan.modules == ()  # FIMC is the board's own kernel's: the agent loads nothing
    assert [(s.label, s.device, s.width, s.height, s.pixel_format) for s in plan.streams] == [
        ("fimc0", "driver:s5p-fimc:0", 1920, 1080, "YUYV")]
    assert text == (serial_run.out / "agent-plan.txt").read_text()


def test_the_board_was_switched_off_and_dhcp_came_before_our_server(serial_run: SerialRun) -> None:
    assert serial_run.sim.relay_state() == "off" and serial_run.sim.power_events() == ["on", "off"]
    argvs = serial_run.sim.argvs("u-boot")
    assert argvs.index(["dhcp"]) < argvs.index(["setenv", "serverip", "127.0.0.1"])


def test_a_wrong_model_on_the_serial_way_is_a_mismatch_naming_the_pfn(tmp_path: Path) -> None:
    # Tell the model the default area sits 64 MiB lower than the kernel put it.
    (run,) = list(run_serial(tmp_path, "--model-pin", "linux,cma=0x60000000"))
    assert run.result.returncode == 5, run.result.stderr
    bad = [c for c in run.report["checks"] if not c["passed"] and c["group"] == "events"]
    assert bad and "pfn=0x60000" in bad[0]["expected"] and "pfn=0x64000" in bad[0]["observed"]


def test_the_boards_own_dtb_is_patched_not_replaced(tmp_path: Path) -> None:
    vendor = tmp_path / "vendor.dtb"
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(vendor), "-"], check=True, text=True,
                   input='/dts-v1/;\n/ { #address-cells = <1>; #size-cells = <1>; model = "vendor board";\n'
                         'memory@40000000 { device_type = "memory"; reg = <0x40000000 0x20000000>; }; };\n')
    (run,) = list(run_serial(tmp_path, "--dtb", str(vendor)))
    assert run.result.returncode == 0, run.result.stderr + run.report.get("message", "")
    text = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", str(run.out / "board.dtb")],
                          capture_output=True, text=True, check=True).stdout
    assert 'model = "vendor board";' in text  # the board's own tree, kept
    # the emulated Aquila's banks (0x40000000/80M, 0x50000000/384M) in the root's 1/1 cells
    assert "reg = <0x40000000 0x5000000 0x50000000 0x18000000>;" in text
    assert "region@43000000 {" in text and "linux,cma-default;" in text


def test_a_byte_lost_on_the_line_is_the_links_fault_not_a_mismatch(tmp_path: Path) -> None:
    # The recording with one byte gone from a pfn in the trace section, as a lossy serial line would lose it:
    # compared as it arrived, "pfn=0x6450" would be a false model/kernel mismatch (exit 5).
    recording = (RECORDED_RUN / "console.log").read_bytes()
    at = recording.index(b"cma_alloc_finish: name=linux,cma pfn=0x64500")
    damaged = tmp_path / "damaged.log"
    damaged.write_bytes(recording[: at + 43] + recording[at + 44:])  # the last 0 of pfn=0x64500
    (run,) = list(run_serial(tmp_path, kernel_log=damaged))
    rep = run.report
    assert run.result.returncode == 3, run.result.stderr  # infrastructure: a retry may pass
    assert rep["verdict"] == "infrastructure" and rep["exit_code"] == 3 and rep["stage"] == "end"
    assert "section trace: " in rep["message"] and "arrived of the" in rep["message"]
    assert rep["checks"] == []  # nothing was compared with the model
    assert run.sim.relay_state() == "off"
