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
