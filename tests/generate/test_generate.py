"""generate_all and the `cma-tool generate` command: which kinds, which files, which errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from cma_tool.board.types import Board
from cma_tool.cli import main
from cma_tool.errors import ConfigError, ExitCode
from cma_tool.generate import applicable_kinds, generate_all

from .conftest import BOARDS, need, plan_for


@pytest.mark.parametrize(("profile", "expected"), [
    ("linux-6.1", ["bootargs.txt", "boot.cmd", "boot.scr", "uboot-env.txt", "aquila-cma.dtsi",
                   "aquila-cma-check.dts", "aquila-cma-check.dtb", "cma.config"]),
    ("linux-3.5", ["bootargs.txt", "boot.cmd", "boot.scr", "uboot-env.txt", "mach-aquila-cma.c", "cma.config"]),
    ("cma-2011", ["bootargs.txt", "boot.cmd", "boot.scr", "uboot-env.txt", "mach-aquila-cma.c", "Kconfig.mach",
                  "cma.config"]),
])
def test_profile_decides_the_files(aquila: Board, tmp_path: Path, profile: str, expected: list[str]) -> None:
    need("mkimage")
    need("dtc")
    out = tmp_path / "new" / "dir"
    result = generate_all(plan_for(aquila, profile), out)
    assert [f.name for f in result.files] == expected
    assert sorted(p.name for p in out.iterdir()) == sorted(expected)


def test_emulated_board_has_no_uboot_kind(qemu_aquila: Board) -> None:
    assert applicable_kinds(plan_for(qemu_aquila)) == ["bootargs", "dts", "kconfig"]


def test_only_selects(aquila: Board, tmp_path: Path) -> None:
    result = generate_all(plan_for(aquila), tmp_path, only=["kconfig", "bootargs"])
    assert [f.name for f in result.files] == ["bootargs.txt", "cma.config"]


@pytest.mark.parametrize(("profile", "only", "message"), [
    ("linux-3.5", ["dts"], "no device-tree reserved-memory"),
    ("linux-6.1", ["c"], "reads the device tree"),
    ("linux-6.1", ["dtb"], "unknown kind"),
])
def test_only_refuses_what_does_not_apply(aquila: Board, tmp_path: Path, profile: str, only: list[str],
                                          message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        generate_all(plan_for(aquila, profile), tmp_path, only=only)
    assert err.value.hint


def test_cli_writes_files_and_returns_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    need("mkimage")
    need("dtc")
    code = main(["generate", str(BOARDS / "aquila.yaml"), "--out", str(tmp_path / "o"), "--kernel", "linux-3.5",
                 "--only", "c,kconfig,bootargs"])
    assert code == ExitCode.OK
    printed = capsys.readouterr().out.split()
    assert [Path(p).name for p in printed] == ["bootargs.txt", "mach-aquila-cma.c", "cma.config"]
    assert (tmp_path / "o" / "bootargs.txt").read_text() == "console=ttySAC2,115200 cma=32M\n"


@pytest.mark.parametrize("argv", [
    ["--only", "dts", "--kernel", "cma-2011"],
    ["--kernel", "linux-9.9"],
    ["--patch"],
])
def test_cli_bad_input_is_a_config_error_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           argv: list[str]) -> None:
    code = main(["generate", str(BOARDS / "aquila.yaml"), "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert code == ExitCode.CONFIG
    assert "Traceback" not in err and "error" in err


def test_cli_invalid_board_reports_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"include: {BOARDS / 'aquila.yaml'}\nreserved-memory:\n  linux,cma:\n    size: 30M\n")
    code = main(["generate", str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == ExitCode.CONFIG
    assert "bad.yaml" in err and "error" in err
    assert not (tmp_path / "o").exists()


def test_nothing_is_written_when_a_value_is_refused(aquila: Board, tmp_path: Path) -> None:
    import dataclasses

    board = dataclasses.replace(aquila, kernel=dataclasses.replace(aquila.kernel, bootargs="it's"))
    plan = plan_for(aquila)
    plan.board = board
    with pytest.raises(ConfigError, match="bootargs"):
        generate_all(plan, tmp_path / "out")
    assert not (tmp_path / "out").exists()
