"""The Linux shell driver against the simulated board's busybox-like shell, over a real pty."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from cma_tool.deploy.console import Console
from cma_tool.deploy.shell import LinuxShell
from cma_tool.deploy.uboot import UBoot
from cma_tool.errors import TargetError
from tests.sim import FAKE_ZIMAGE, SimBoard, powered_board

# What the simulated board's /proc/meminfo says about CMA: the 6.1 kernel's
# numbers from the emulated board (reference/emulated-board.md).
CMA_LINES = "CmaTotal:          98304 kB\nCmaFree:           98048 kB\n"


@contextmanager
def booted(tmp_path: Path, **options: Any) -> Iterator[tuple[SimBoard, Console]]:
    """The simulated board booted to the point where busybox waits for Enter."""
    tftp = tmp_path / "tftp"
    tftp.mkdir(parents=True)
    (tftp / "zImage").write_bytes(FAKE_ZIMAGE)
    with powered_board(tmp_path, tftp_dir=tftp, **options) as (sim, console):
        uboot = UBoot(console, default_timeout=5)
        uboot.attach(timeout=10)
        uboot.tftpboot(0x40400000, "zImage")
        uboot.boot("bootz 0x40400000")
        yield sim, console


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[tuple[SimBoard, LinuxShell]]:
    with booted(tmp_path) as (sim, console):
        sh = LinuxShell(console, default_timeout=5)
        sh.attach(timeout=5)
        yield sim, sh


def test_attach_activates_the_console_and_quietens_the_kernel(shell: tuple[SimBoard, LinuxShell]) -> None:
    sim, sh = shell
    assert ["dmesg", "-n", "1"] in sim.argvs("linux")
    assert sh.run("echo hi") == ("hi\n", 0)


def test_output_and_exit_status_come_back_exactly(shell: tuple[SimBoard, LinuxShell]) -> None:
    _, sh = shell
    assert sh.run("true") == ("", 0)
    assert sh.run("false") == ("", 1)
    assert sh.run("echo -n no-newline-at-end") == ("no-newline-at-end", 0)
    assert sh.run("cat /nonexistent") == ("cat: can't open '/nonexistent': No such file or directory\n", 1)
    assert sh.run("nosuchprogram") == ("sh: nosuchprogram: not found\n", 127)
    meminfo, status = sh.run("cat /proc/meminfo")
    assert status == 0 and meminfo.endswith(CMA_LINES) and "\r" not in meminfo


def test_run_check_raises_with_status_and_output(shell: tuple[SimBoard, LinuxShell]) -> None:
    _, sh = shell
    assert sh.run_check("echo fine") == "fine\n"
    with pytest.raises(TargetError, match=r"(?s)exit status 1.*can't open '/missing'"):
        sh.run_check("cat /missing")


def test_the_cursor_position_query_is_kept_out_of_output(shell: tuple[SimBoard, LinuxShell]) -> None:
    _, sh = shell
    output, _ = sh.run("echo plain")
    assert output == "plain\n"
    assert b"/ # \x1b[6n" in sh.console.log_path.read_bytes()  # the board did send it


HOSTILE = [
    "$(reboot)",
    "`reboot`",
    "a; reboot",
    "x && reboot",
    "it's",
    '"double"',
    "back\\slash",
    "new\nline",
    "*",
    "-n",
    "",
    "${PATH}",
    "semi;colon $? dollar",
]


def test_hostile_words_arrive_as_single_literal_arguments(shell: tuple[SimBoard, LinuxShell]) -> None:
    sim, sh = shell
    for value in HOSTILE:
        output, status = sh.run_argv(["echo", "[", value, "]"])
        assert (output, status) == (f"[ {value} ]\n", 0)
    received = [e for e in sim.received("linux") if e.get("argv", [None])[:2] == ["echo", "["]]
    assert [e["argv"] for e in received] == [["echo", "[", value, "]"] for value in HOSTILE]
    assert not any(e["substitution"] for e in sim.received("linux") if "argv" in e)
    assert not [argv for argv in sim.argvs("linux") if argv[0] == "reboot"]


def test_the_simulator_would_catch_an_unquoted_value(shell: tuple[SimBoard, LinuxShell]) -> None:
    # The negative control for the test above: unquoted, the same value does run.
    sim, sh = shell
    sh.run("echo $(reboot)")
    assert sim.received("linux")[-2]["substitution"] is True


def test_reattach_to_a_shell_already_at_its_prompt(shell: tuple[SimBoard, LinuxShell]) -> None:
    _, sh = shell
    again = LinuxShell(sh.console, silence=0.3, default_timeout=5)
    again.attach(timeout=5)  # nothing new is printed until it presses Enter
    assert again.run("echo again") == ("again\n", 0)


def test_login_when_the_board_asks(tmp_path: Path) -> None:
    with booted(tmp_path, login="root:s3cret") as (_, console):
        sh = LinuxShell(console, password="s3cret", default_timeout=5)
        sh.attach(timeout=5)
        assert sh.run("echo in") == ("in\n", 0)


def test_a_password_prompt_without_a_password_is_reported(tmp_path: Path) -> None:
    with booted(tmp_path, login="root:s3cret") as (_, console):
        shell = LinuxShell(console)
        with pytest.raises(TargetError, match="asks for a password"):
            shell.attach(timeout=5)


def test_commands_work_when_output_arrives_one_byte_at_a_time(tmp_path: Path) -> None:
    with booted(tmp_path, faults=["bytewise"]) as (_, console):
        sh = LinuxShell(console, default_timeout=5)
        sh.attach(timeout=5)
        assert sh.run("echo one; false") == ("one\n", 1)
        meminfo, status = sh.run("cat /proc/meminfo")
        assert status == 0 and meminfo.endswith(CMA_LINES)


@pytest.mark.parametrize(
    ("fault", "command", "message", "in_log"),
    [
        ("panic-on=modprobe", "modprobe vivid", "kernel-panic", b"Attempted to kill init"),
        ("oops-on=cat", "cat /proc/meminfo", "kernel-oops", b"Internal error: Oops: 5"),
        ("hang-on=capture", "capture", r"timed out after 1\.0 s waiting for the output of 'capture'", b"capture"),
    ],
)
def test_kernel_faults_and_hangs_during_a_command(
    tmp_path: Path, fault: str, command: str, message: str, in_log: bytes
) -> None:
    with booted(tmp_path, faults=[fault]) as (_, console):
        sh = LinuxShell(console, default_timeout=1)
        sh.attach(timeout=5)
        with pytest.raises(TargetError, match=message):
            sh.run(command)
        assert in_log in console.log_path.read_bytes()


def test_a_reboot_under_a_command_is_seen(shell: tuple[SimBoard, LinuxShell]) -> None:
    _, sh = shell
    with pytest.raises(TargetError, match="uboot-signon"):
        sh.run("reboot")
