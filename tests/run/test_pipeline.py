"""The run pipeline before any board is touched: the ways onto a board, the capture schedule, refused inputs.

Nothing here boots: every refusal must come before the board is powered
(LAVA's validate-everything-first), so these run in well under a second each.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cma_tool.captures import from_board, from_scenario
from cma_tool.deploy.agent import parse_plan
from cma_tool.deploy.targets import WAYS, TargetOptions, resolve_target
from cma_tool.errors import ConfigError, UsageError
from cma_tool.model.scenario import CaptureStep, ReleaseCaptureStep, load_scenario, parse_scenario
from cma_tool.plan import make_plan

ROOT = Path(__file__).parents[2]


def cma_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cma_tool", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)


# --- the registry -------------------------------------------------------------


def test_every_way_onto_a_board_is_registered_once() -> None:
    assert sorted(WAYS) == [("emulated", "direct"), ("emulated", "ssh"), ("emulated", "uboot"),
                            ("labgrid", "uboot"), ("serial", "uboot"), ("ssh", "ssh")]


@pytest.mark.parametrize(("target", "boot", "options", "words"), [
    ("serial", "direct", TargetOptions(kernel=Path("zImage")), "--target serial cannot boot with --boot direct"),
    ("serial", "ssh", TargetOptions(kernel=Path("zImage")), "--target serial cannot boot with --boot ssh"),
    ("ssh", "uboot", TargetOptions(), "--target ssh cannot boot with --boot uboot"),
    ("emulated", None, TargetOptions(console="/dev/ttyUSB0"), "--console does not apply to --target emulated"),
    ("emulated", "uboot", TargetOptions(kernel=Path("zImage")), "--kernel does not apply to --target emulated"),
    ("serial", None, TargetOptions(kernel=Path("z"), suite="trixie"), "--suite does not apply to --target serial"),
    ("ssh", None, TargetOptions(suite="trixie"), "--suite does not apply to --target ssh"),
    ("serial", None, TargetOptions(), "--target serial --boot uboot needs --kernel"),
    ("ssh", None, TargetOptions(bootargs="cma=32M"), "--bootargs with --target ssh needs --dtb"),
    ("nowhere", None, TargetOptions(), "--target 'nowhere' is not one of"),
    ("labgrid", None, TargetOptions(kernel=Path("z")), "--target labgrid --boot uboot needs --place"),
    ("serial", None, TargetOptions(kernel=Path("z"), place="bench"), "--place does not apply to --target serial"),
])
def test_an_impossible_way_or_a_flag_of_another_way_is_a_usage_error(
        target: str, boot: str | None, options: TargetOptions, words: str) -> None:
    with pytest.raises(UsageError) as err:
        resolve_target(target, boot, options)
    assert words in str(err.value)
    assert err.value.exit_code == 2


def test_the_usual_boot_of_each_target() -> None:
    assert resolve_target("emulated", None, TargetOptions())[0].boot == "direct"
    assert resolve_target("serial", None, TargetOptions(kernel=Path("zImage")))[0].boot == "uboot"
    assert resolve_target("ssh", None, TargetOptions())[0].boot == "ssh"


def test_the_cli_says_usage_errors_with_exit_2_before_planning() -> None:
    res = cma_tool("run", "boards/qemu-aquila.yaml", "--target", "serial", "--boot", "direct", "--kernel", "x")
    assert res.returncode == 2, res.stderr
    assert "--target serial cannot boot with --boot direct" in res.stdout + res.stderr
    res = cma_tool("run", "boards/qemu-aquila.yaml", "--console", "/dev/ttyUSB0")
    assert res.returncode == 2 and "--console does not apply" in res.stdout + res.stderr


# --- --scenario is used, or refused -------------------------------------------


def test_a_missing_scenario_file_is_a_configuration_error(tmp_path: Path) -> None:
    res = cma_tool("run", "boards/qemu-aquila.yaml", "--scenario", "/does/not/exist.yaml", "--out", str(tmp_path))
    assert res.returncode == 1, res.stdout + res.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["verdict"] == "configuration" and "/does/not/exist.yaml" in report["message"]
    assert not (tmp_path / "console.log").exists()  # refused before the board was touched


def test_model_only_steps_are_refused_on_a_target_at_their_lines(tmp_path: Path) -> None:
    res = cma_tool("run", "boards/qemu-aquila.yaml", "--scenario", "configs/requests/busy-retry.yaml",
                   "--out", str(tmp_path))
    assert res.returncode == 1, res.stdout + res.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    # pin (line 6), alloc (line 7) and free (line 10) drive the model alone.
    diags = report["diagnostics"]
    assert [d.split(":")[1] for d in diags] == ["6", "7", "10"]
    assert all("cannot run on a target" in d for d in diags)


def test_a_scenario_drives_the_schedule_step_by_step() -> None:
    plan = make_plan(ROOT / "configs" / "two-streams.yaml", allow_misfit=True)
    schedule = from_scenario(plan.board, load_scenario(ROOT / "configs" / "requests" / "hole-reuse.yaml"))
    assert schedule.model_steps() == [
        CaptureStep("a", 1920, 1080, "YUYV", 2, line=11, frames=3, label="a"),
        CaptureStep("b", 1920, 1080, "YUYV", 2, line=12, frames=3, label="b"),
        ReleaseCaptureStep("a", label="a"),
        CaptureStep("c", 640, 480, "YUYV", 2, line=14, frames=3, label="c"),
        ReleaseCaptureStep("c", label="c"),
        ReleaseCaptureStep("b", label="b"),
    ]
    agent = parse_plan(schedule.agent_plan().render())
    # a and c share the first vivid instance (after a's release), b has the second.
    assert {s.label: s.device for s in agent.streams} == {"a": "driver:vivid:0", "b": "driver:vivid:1",
                                                           "c": "driver:vivid:0"}
    assert [(m.module, dict(m.params)) for m in agent.modules] == [
        ("vivid", {"n_devs": "2", "node_types": "0x1,0x1", "allocators": "1,1", "num_inputs": "1,1",
                   "input_types": "0x3,0x3"})]


def test_streams_left_holding_are_released_in_reverse_at_the_end() -> None:
    plan = make_plan(ROOT / "configs" / "two-streams.yaml", allow_misfit=True)
    schedule = from_scenario(plan.board, load_scenario(ROOT / "configs" / "requests" / "rgb565-nv12.yaml"))
    assert [type(s).__name__ + ":" + str(s.label) for s in schedule.model_steps()] == [
        "CaptureStep:rgb", "CaptureStep:nv12", "ReleaseCaptureStep:nv12", "ReleaseCaptureStep:rgb"]
    # The target gets V4L2's code for RGB565.
    assert "stream rgb driver:vivid:0 1280 720 RGBP" in schedule.agent_plan().render().splitlines()


def test_a_scenario_on_a_device_the_board_lacks_or_that_names_no_driver() -> None:
    plan = make_plan(ROOT / "boards" / "qemu-aquila.yaml", allow_misfit=True)
    text = ("steps:\n"
            "  - capture: {device: vivid9, width: 64, height: 48, format: GREY, buffers: 2}\n"
            "  - capture: {device: mfc, width: 64, height: 48, format: GREY, buffers: 2}\n")
    with pytest.raises(ConfigError) as err:
        from_scenario(plan.board, parse_scenario(text, "s.yaml"))
    got = [(d.line, d.message) for d in err.value.diagnostics]
    assert got == [(2, "board 'qemu-aquila' has no device 'vivid9'"),
                   (3, "device 'mfc' names no capture driver: the agent cannot find its video node")]
    assert "vivid" in err.value.diagnostics[0].hint


# --- the capture driver is board data ---------------------------------------


def test_a_fimc_board_loads_nothing_and_finds_its_nodes_by_driver() -> None:
    from cma_tool.generate.bootargs import kernel_cmdline

    plan = make_plan(ROOT / "boards" / "aquila.yaml", allow_misfit=True)
    text = from_board(plan.board).agent_plan().render()
    assert "vivid" not in text and not any(line.startswith("load ") for line in text.splitlines())
    assert [s.device for s in parse_plan(text).streams] == ["driver:s5p-fimc:0", "driver:s5p-fimc:1",
                                                            "driver:s5p-fimc:2"]
    cmdline = kernel_cmdline(plan.board, plan.profile, agent="run").text
    assert "vivid" not in cmdline
    assert cmdline == "console=ttySAC2,115200 panic=-1 trace_event=cma:* cmatool.mode=run"


def test_the_emulated_board_loads_one_vivid_instance_per_device() -> None:
    plan = make_plan(ROOT / "boards" / "qemu-aquila.yaml", allow_misfit=True)
    agent = parse_plan(from_board(plan.board).agent_plan().render())
    assert [(m.module, dict(m.params)) for m in agent.modules] == [
        ("vivid", {"n_devs": "1", "node_types": "0x1", "allocators": "1", "num_inputs": "1", "input_types": "0x3"})]
    assert [s.device for s in agent.streams] == ["driver:vivid:0"]
