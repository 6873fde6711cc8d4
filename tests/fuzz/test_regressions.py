"""What the fuzzers found, each kept as a plain test: every one was an internal error (exit 70) or worse.

Each input is given through the real CLI (in process) and must end in a
documented outcome with a message that says what is wrong.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from tests.fuzz.classes import QEMU_AQUILA, cli

ROOT = Path(__file__).parents[2]


def test_deeply_nested_yaml_is_a_positioned_error_not_a_recursion_error(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    board = tmp_path / "deep.yaml"
    board.write_text("name: x\nmemory: " + "[" * 5000 + "]" * 5000 + "\n")
    assert cli("validate", str(board)) == 1
    scenario = tmp_path / "s.yaml"
    scenario.write_text("steps:\n  - capture: {device: " + "[" * 3000 + "]" * 3000 + "}\n")
    assert cli("model", str(QEMU_AQUILA), "--requests", str(scenario)) == 1


def test_a_huge_atomic_pool_or_area_is_not_modelled_bit_by_bit() -> None:
    # coherent_pool=16E once made the fit replay allocate a bitmap for 2^52 pages (MemoryError).
    assert cli("model", str(QEMU_AQUILA), "--bootargs", "coherent_pool=16E") in (0, 1)
    assert cli("model", str(QEMU_AQUILA), "--bootargs", "cma=99999999999999999999T coherent_pool=16E") in (0, 1)


def test_inputs_that_are_not_regular_files_are_refused_before_reading(tmp_path: Path) -> None:
    # /dev/zero never ends; a FIFO would block the open forever: both are refused by what they are.
    assert cli("validate", "/dev/zero") == 1
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    done: list[int] = []
    worker = threading.Thread(target=lambda: done.append(cli("validate", str(fifo))), daemon=True)
    worker.start()
    worker.join(10)
    assert done == [1], "validate of a FIFO did not return"
    assert cli("model", str(QEMU_AQUILA), "--requests", "/dev/zero") == 1


def test_a_file_too_large_to_be_a_board_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("name: x\n" + "# padding\n" * 200_000)  # 2 MB
    assert cli("validate", str(big)) == 1


def test_a_nul_in_an_include_path_is_a_configuration_error(tmp_path: Path) -> None:
    board = tmp_path / "b.yaml"
    board.write_text('include: "soc\\0.yaml"\nname: x\n')
    assert cli("validate", str(board)) == 1


@pytest.mark.parametrize(("field", "value"), [("width", "-1"), ("width", "1e999"), ("format", '"ZZZZ"'),
                                               ("asked", "100000")])
def test_a_capture_line_with_impossible_values_is_the_boards_fault(field: str, value: str) -> None:
    # An s_fmt or reqbufs line whose numbers no driver gives (a frame of -1 pixels, JSON's 1e999, a code the
    # model cannot size, 100000 buffers) once reached the model as a ValueError or an OverflowError.
    from cma_tool.captures import from_board
    from cma_tool.check import cross_check
    from cma_tool.errors import TargetError
    from cma_tool.observe import observe
    from cma_tool.plan import make_plan

    text = (ROOT / "tests" / "data" / "serial-replay" / "console.log").read_text()
    capture = text[text.index("==== CMA-TOOL BEGIN capture"):text.index("==== CMA-TOOL BEGIN meminfo ====")]
    old = {"width": '"width":1920', "format": '"format":"YUYV"', "asked": '"asked":4'}[field]
    assert old in capture
    # Without the END line's declaration, as an agent on a board without sha256sum prints it.
    changed = capture.replace(old, old.split(":")[0] + ":" + value, 1)
    changed = changed[:changed.index("==== CMA-TOOL END capture")] + "==== CMA-TOOL END capture rc=0 ====\n"
    plan = make_plan(ROOT / "tests" / "sim" / "emulated-twin.yaml", allow_misfit=True)
    obs = observe(text.replace(capture, changed))
    with pytest.raises(TargetError, match="the capture program printed a malformed"):
        cross_check(plan, obs.cmdline or "", obs, from_board(plan.board).model_devices(plan.board))
