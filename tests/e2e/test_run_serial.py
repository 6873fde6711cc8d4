"""The whole `run --target serial` loop on the simulated Aquila: plan, boot over a pty, observe, cross-check.

The board is tests/sim/sim-aquila.yaml; the simulator's U-Boot fetches our
files from our TFTP server (its address from dhcp, as on a lab network) and
its bootz plays back the console of a real 6.1 kernel that ran our firmware
(tests/data/kernel-traces/a-reference-dt-cma). What run_via_serial hands
back goes through the run pipeline's observe -> predict -> check as run.py
does it, and every check must pass. The expectations that are not the
checks' own come from the recording and the kernel's rules (emulated-board.md):
the capture plan and command line it was made with, the DT default area at
0x6c000000 (top-down in alloc-ranges [0x60000000, 256M]), the static pool.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cma_tool.check import Check, check_all
from cma_tool.deploy.qemu import compose_bootargs
from cma_tool.deploy.serial_board import run_via_serial
from cma_tool.errors import ConfigError
from cma_tool.generate.dts import compile_dts, standalone_dts
from cma_tool.observe import observe
from cma_tool.plan import Plan, make_plan
from cma_tool.run import (
    _stream_devices,
    capture_args,
    capture_plan_files,
    capture_streams,
    predict,
    steps_from_capture,
    steps_from_plan,
    vivid_params,
)
from tests.sim import RECORDED_RUN, SimBoard, write_sim_aquila, zimage

MiB = 1 << 20


@dataclass
class SerialRun:
    plan: Plan
    bootargs: str
    text: str
    stages: list[str]
    sim: SimBoard


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SerialRun]:
    """One run, as run.py will make it for --target serial: the board's plan, bootargs, DTB; then boot."""
    tmp = tmp_path_factory.mktemp("serial-run")
    with SimBoard(tmp / "sim", relay=True, kernel_log=RECORDED_RUN / "console.log") as sim:
        plan = make_plan(write_sim_aquila(tmp, sim, board_ip=None), allow_misfit=True)
        board = plan.board
        bootargs = compose_bootargs(board.kernel.bootargs, vivid=vivid_params(board))
        out = tmp / "out"
        out.mkdir()
        (out / "board.dts").write_text(standalone_dts(board, plan.profile))
        compile_dts(out / "board.dts", out / "board.dtb")
        (out / "zImage").write_bytes(zimage(400_000, seed=3))
        (out / "initrd.gz").write_bytes(zimage(150_000, seed=4)[0x30:])
        stages: list[str] = []
        text = run_via_serial(board, kernel=out / "zImage", dtb=out / "board.dtb", initrd=out / "initrd.gz",
                              bootargs=bootargs, workdir=out, timeout=90, console_url=sim.path,
                              on_stage=stages.append)
        yield SerialRun(plan, bootargs, text, stages, sim)


def cross_check(run: SerialRun, pins: tuple[tuple[str, int], ...] = ()) -> list[Check]:
    """run.py's stage 6: the model fed with the queue operations the target made, against what it printed."""
    obs = observe(run.text)
    streams = capture_streams(run.plan.board)
    steps, sizes = steps_from_capture(obs)
    pred, _ = predict(run.plan, run.bootargs, pins, steps, _stream_devices(run.plan.board, streams))
    checks = [Check("capture", f"sizeimage {label}", got == model, str(model), str(got))
              for label, got, model in sizes]
    return checks + check_all(pred, obs, run.plan.profile)


def test_we_asked_for_what_was_recorded(serial_run: SerialRun) -> None:
    # The playback is faithful only if the board asks for the recorded run's plan and command line.
    streams = capture_streams(serial_run.plan.board)
    assert capture_args(streams, hold=True) == (RECORDED_RUN / "capture-plan.txt").read_text().split()
    assert serial_run.bootargs == (RECORDED_RUN / "bootargs.txt").read_text().strip()
    (boot,) = serial_run.sim.boots()
    assert boot["bootargs"] == boot["recorded_cmdline"] == serial_run.bootargs


def test_the_capture_plan_goes_to_the_agent_as_capture_args() -> None:
    # firmware/cmatool-run reads /cmatool/capture.args: one argument per line.
    assert capture_plan_files(["--label", "with space"]) == {"capture.args": "--label\nwith space\n"}
    for bad in (["two\nlines"], [""]):
        with pytest.raises(ConfigError, match="empty or holds a newline"):
            capture_plan_files(bad)


def test_every_check_passes_on_what_the_serial_board_said(serial_run: SerialRun) -> None:
    assert serial_run.stages == ["console", "power", "uboot", "loaded", "kernel", "init", "captured"]
    obs = observe(serial_run.text)
    assert obs.done_rc == 0 and obs.section_rc.get("capture") == 0 and not obs.problems
    assert obs.cmdline == serial_run.bootargs
    # The kernel's placement, from emulated-board.md: top-down in [0x60000000, 256M] -> 0x6c000000.
    assert [(a.name, a.base, a.size) for a in obs.areas] == [
        ("linux,cma", 0x6C000000, 64 * MiB), ("vidpool@4c000000", 0x4C000000, 32 * MiB)]
    checks = cross_check(serial_run)
    failed = [f"{c.name}: expected {c.expected} / observed {c.observed} ({c.cause})" for c in checks if not c.passed]
    assert not failed, "\n".join(failed)
    # One check per event: the atomic pool (64 pages) and 4 buffers of 1920*1080*2 bytes (1013 pages)
    # each start and finish, then the 4 buffers are released: 5 * 2 + 4.
    assert sum(1 for c in checks if c.group == "events") == len(obs.events) == 14
    # The plan made before the boot predicted the same queue operations the target made.
    planned = steps_from_plan(capture_streams(serial_run.plan.board), hold=True)
    assert steps_from_capture(obs)[0] == planned


def test_a_wrong_model_on_the_same_output_is_caught(serial_run: SerialRun) -> None:
    # Tell the model the default area sits 8 MiB lower than the kernel put it: the checks must fail there.
    failed = [c for c in cross_check(serial_run, pins=(("linux,cma", 0x6B800000),)) if not c.passed]
    events = [c for c in failed if c.group == "events"]
    assert events and "pfn=0x6b800" in events[0].expected and "pfn=0x6c000" in events[0].observed


def test_the_board_was_switched_off(serial_run: SerialRun) -> None:
    assert serial_run.sim.relay_state() == "off" and serial_run.sim.power_events() == ["on", "off"]
    # dhcp configured the board's address (no board-ip in this board file), then our server was set.
    argvs = serial_run.sim.argvs("u-boot")
    assert argvs.index(["dhcp"]) < argvs.index(["setenv", "serverip", "127.0.0.1"])


def _cli_has_serial_target() -> bool:
    from dataclasses import fields

    from cma_tool.run import RunOptions

    return {"console", "kernel"} <= {f.name for f in fields(RunOptions)}


@pytest.mark.slow
@pytest.mark.skipif(not _cli_has_serial_target(), reason="run.py does not take --target serial yet")
def test_cma_tool_run_target_serial(tmp_path: Path) -> None:
    """The command line a user types, against the simulator (needs the target image cache, as the emulated runs)."""
    import json
    import subprocess
    import sys

    root = Path(__file__).parents[2]
    with SimBoard(tmp_path / "sim", relay=True, kernel_log=RECORDED_RUN / "console.log") as sim:
        board = write_sim_aquila(tmp_path, sim)
        (tmp_path / "zImage").write_bytes(zimage(500_000, seed=5))
        done = subprocess.run(
            [sys.executable, "-m", "cma_tool", "run", str(board), "--target", "serial", "--console", sim.path,
             "--kernel", str(tmp_path / "zImage"), "--out", str(tmp_path / "out"), "--json"],
            cwd=root, capture_output=True, text=True, timeout=600, check=False)
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        assert done.returncode == 0, done.stderr + report.get("message", "")
        assert report["verdict"] == "pass" and report["checks"] and all(c["passed"] for c in report["checks"])
        stages = [s["stage"] for s in report["stages"]]
        assert stages.index("console") < stages.index("uboot") < stages.index("captured") < stages.index("check")
        assert sim.relay_state() == "off" and sim.power_events() == ["on", "off"]


def test_cma_tool_run_target_serial_patches_the_boards_own_dtb(tmp_path: Path) -> None:
    """With --dtb the board's own DTB is patched (banks, reserved-memory, bootargs), not replaced."""
    import json
    import subprocess
    import sys

    root = Path(__file__).parents[2]
    vendor = tmp_path / "vendor.dtb"
    subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(vendor), "-"], check=True, text=True,
                   input='/dts-v1/;\n/ { #address-cells = <1>; #size-cells = <1>; model = "vendor board";\n'
                         'memory@40000000 { device_type = "memory"; reg = <0x40000000 0x20000000>; }; };\n')
    with SimBoard(tmp_path / "sim", relay=True, kernel_log=RECORDED_RUN / "console.log") as sim:
        board = write_sim_aquila(tmp_path, sim)
        (tmp_path / "zImage").write_bytes(zimage(500_000, seed=6))
        done = subprocess.run(
            [sys.executable, "-m", "cma_tool", "run", str(board), "--target", "serial", "--console", sim.path,
             "--kernel", str(tmp_path / "zImage"), "--dtb", str(vendor), "--out", str(tmp_path / "out")],
            cwd=root, capture_output=True, text=True, timeout=600, check=False)
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        assert done.returncode == 0, done.stderr + report.get("message", "")
    text = subprocess.run(["dtc", "-I", "dtb", "-O", "dts", str(tmp_path / "out" / "board.dtb")],
                          capture_output=True, text=True, check=True).stdout
    assert 'model = "vendor board";' in text  # the board's own tree, kept
    # the reference layout's banks (0x40000000/256M, 0x60000000/256M) in the root's 1/1 cells
    assert "reg = <0x40000000 0x10000000 0x60000000 0x10000000>;" in text
    assert "vidpool@4c000000 {" in text and "linux,cma-default;" in text
