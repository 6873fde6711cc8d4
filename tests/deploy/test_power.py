"""Power backends against real things: scripts that keep a state file, an HTTP PDU, a pty."""

from __future__ import annotations

import io
import os
import pty
import shlex
import socket
import stat
from pathlib import Path

import pytest
from netio_pdu_server import NetioPdu, Outlet, running_pdu

from cma_tool.deploy.power import CommandPower, ManualPower, NetioPower, PowerCommands, PowerState, powered
from cma_tool.errors import ConfigError, InfraError

# A relay tool as a lab would have it: switches by writing the state file and logs every switch.
RELAY = """#!/bin/sh
set -e
state="$1"; shift
case "$1" in
  on|off) printf '%s\\n' "$1" > "$state"; printf '%s\\n' "$1" >> "$state.log" ;;
  fail) echo "relay board not found on /dev/hidraw7" >&2; exit 3 ;;
  args) shift; for a in "$@"; do printf '<%s>\\n' "$a"; done >> "$state.args" ;;
  hang) sleep 30 ;;
  *) echo "usage: relay STATE on|off" >&2; exit 2 ;;
esac
"""


@pytest.fixture
def relay(tmp_path: Path) -> tuple[Path, Path]:
    """The relay script and its state file, both in a folder whose name needs quoting."""
    folder = tmp_path / "lab rack; $(touch pwned)"
    folder.mkdir()
    script = folder / "relay"
    script.write_text(RELAY)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    (folder / "state").write_text("off\n")  # the relay starts open
    return script, folder / "state"


def commands(script: Path, state: Path, **extra: str) -> PowerCommands:
    base = f"{shlex.quote(str(script))} {shlex.quote(str(state))}"
    return PowerCommands(on=f"{base} on", off=f"{base} off", state=f"cat {shlex.quote(str(state))}",
                         **{k: f"{base} {v}" for k, v in extra.items()})


def log_of(state: Path) -> list[str]:
    log = Path(f"{state}.log")
    return log.read_text().split() if log.exists() else []


def test_command_backend_switches_and_reads_the_state(relay: tuple[Path, Path]) -> None:
    script, state = relay
    power = CommandPower(commands(script, state))
    power.on()
    assert state.read_text() == "on\n"
    assert power.state() is PowerState.ON
    power.off()
    assert state.read_text() == "off\n"
    assert power.state() is PowerState.OFF
    assert not (script.parent.parent / "pwned").exists()


def test_command_backend_cycles_by_off_then_on_without_a_cycle_command(relay: tuple[Path, Path]) -> None:
    script, state = relay
    power = CommandPower(commands(script, state), off_time=0.05)
    power.on()
    power.cycle()
    assert log_of(state) == ["on", "off", "on"]


def test_command_backend_uses_the_cycle_command_when_given(relay: tuple[Path, Path]) -> None:
    script, state = relay
    power = CommandPower(commands(script, state, cycle="args cycled"))
    power.cycle()
    assert Path(f"{state}.args").read_text() == "<cycled>\n"
    assert log_of(state) == []


def test_command_words_reach_the_program_unchanged_and_no_shell_runs(relay: tuple[Path, Path]) -> None:
    script, state = relay
    hostile = ["a b", "it's", 'say "hi"', "x;y", "$(touch pwned2)", "`id`", "*", ""]
    line = f"{shlex.quote(str(script))} {shlex.quote(str(state))} args " + shlex.join(hostile)
    CommandPower(PowerCommands(on=line, off=line)).on()
    assert Path(f"{state}.args").read_text() == "".join(f"<{a}>\n" for a in hostile)
    assert not list(script.parent.parent.glob("pwned*"))


def test_failing_command_is_an_infrastructure_error_with_its_stderr(relay: tuple[Path, Path]) -> None:
    script, state = relay
    power = CommandPower(commands(script, state, cycle="fail"))
    with pytest.raises(InfraError) as err:
        power.cycle()
    assert "exit code 3" in str(err.value)
    assert "relay board not found on /dev/hidraw7" in str(err.value)


def test_command_that_hangs_times_out(relay: tuple[Path, Path]) -> None:
    script, state = relay
    power = CommandPower(commands(script, state, cycle="hang"), timeout=0.5)
    with pytest.raises(InfraError, match="did not finish"):
        power.cycle()


def test_state_command_that_prints_nonsense_is_an_error(relay: tuple[Path, Path]) -> None:
    script, state = relay
    state.write_text("maybe\n")
    with pytest.raises(InfraError, match="'maybe'"):
        CommandPower(commands(script, state)).state()


def test_without_a_state_command_the_state_is_the_last_switch(relay: tuple[Path, Path]) -> None:
    script, state = relay
    cmds = commands(script, state)
    power = CommandPower(PowerCommands(on=cmds.on, off=cmds.off))
    assert power.state() is PowerState.UNKNOWN
    power.on()
    assert power.state() is PowerState.ON


@pytest.mark.parametrize(
    ("line", "message"),
    [("relay 'on", "cannot be split"), ("   ", "is empty"), ("/nonexistent/relay on", "not found")],
)
def test_bad_command_lines_are_configuration_errors(line: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        CommandPower(PowerCommands(on=line, off="true", where="aquila.yaml:40")).on()


# --- powered(): the board always ends off ----------------------------------------------------------


def test_powered_switches_on_then_off(relay: tuple[Path, Path]) -> None:
    script, state = relay
    with powered(CommandPower(commands(script, state))):
        assert state.read_text() == "on\n"
    assert log_of(state) == ["on", "off"]


def test_powered_cycles_a_board_found_on_and_switches_it_off_after(relay: tuple[Path, Path]) -> None:
    script, state = relay
    power = CommandPower(commands(script, state), off_time=0.01)
    power.on()
    with powered(power):
        pass
    assert log_of(state) == ["on", "off", "on", "off"]


def test_powered_can_leave_a_board_as_found(relay: tuple[Path, Path]) -> None:
    script, state = relay
    power = CommandPower(commands(script, state), off_time=0.01)
    power.on()
    with powered(power, restore=True):
        pass
    assert state.read_text() == "on\n"


@pytest.mark.parametrize("error", [RuntimeError("capture failed"), KeyboardInterrupt()])
def test_powered_switches_off_on_errors_and_ctrl_c(relay: tuple[Path, Path], error: BaseException) -> None:
    script, state = relay
    with pytest.raises(type(error)), powered(CommandPower(commands(script, state))):
        raise error
    assert state.read_text() == "off\n"


def test_powered_keeps_the_first_error_when_switching_off_fails(relay: tuple[Path, Path]) -> None:
    script, state = relay
    cmds = commands(script, state)
    broken_off = PowerCommands(on=cmds.on, off=cmds.on.replace(" on", " fail"), state=cmds.state)
    with pytest.raises(RuntimeError, match="capture failed") as err, powered(CommandPower(broken_off)):
        raise RuntimeError("capture failed")
    assert any("relay board not found" in note for note in getattr(err.value, "__notes__", []))


# --- NETIO JSON API ---------------------------------------------------------------------------------


@pytest.fixture
def pdu() -> NetioPdu:
    return NetioPdu({i: Outlet(i, f"out{i}") for i in range(1, 5)})


def test_netio_switches_the_right_outlet(pdu: NetioPdu) -> None:
    with running_pdu(pdu) as url:
        power = NetioPower(url, 3, username="write", password="secret")
        power.on()
        assert [o.state for o in pdu.outlets.values()] == [0, 0, 1, 0]
        assert power.state() is PowerState.ON
        power.off()
        assert pdu.outlets[3].state == 0
        assert power.state() is PowerState.OFF


def test_netio_cycle_goes_off_then_comes_back_on(pdu: NetioPdu) -> None:
    pdu.outlets[2].state = 1
    with running_pdu(pdu) as url:
        NetioPower(url + "/netio.json", 2, username="write", password="secret", off_time=0.3).cycle()
    assert [(i, s) for _, i, s in pdu.switches] == [(2, 0), (2, 1)]
    assert pdu.outlets[2].state == 1


def test_netio_cycle_of_an_outlet_that_is_off_just_switches_it_on(pdu: NetioPdu) -> None:
    with running_pdu(pdu) as url:
        NetioPower(url, 1, username="write", password="secret", off_time=0.1).cycle()
    assert [(i, s) for _, i, s in pdu.switches] == [(1, 1)]


def test_powered_with_netio(pdu: NetioPdu) -> None:
    with (
        running_pdu(pdu) as url,
        pytest.raises(KeyboardInterrupt),
        powered(NetioPower(url, 4, username="write", password="secret")),
    ):
        assert pdu.outlets[4].state == 1
        raise KeyboardInterrupt
    assert pdu.outlets[4].state == 0


@pytest.mark.parametrize(
    ("user", "message"),
    [(("write", "wrong"), "HTTP 401"), (("read", "public"), "HTTP 403"), (None, "HTTP 401")],
)
def test_netio_refused_credentials_are_configuration_errors(
    pdu: NetioPdu, user: tuple[str, str] | None, message: str
) -> None:
    with running_pdu(pdu) as url:
        power = NetioPower(url, 1, username=user[0] if user else None, password=user[1] if user else None)
        with pytest.raises(ConfigError, match=message):
            power.on()
    assert pdu.switches == []


def test_netio_output_the_pdu_does_not_have(pdu: NetioPdu) -> None:
    with running_pdu(pdu) as url, pytest.raises(ConfigError, match=r"no output 9 \(it has \[1, 2, 3, 4\]\)"):
        NetioPower(url, 9, username="read", password="public").state()


def test_netio_unreachable_is_an_infrastructure_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        with pytest.raises(InfraError, match="cannot reach the PDU"):
            NetioPower(f"http://127.0.0.1:{port}", 1, timeout=2).state()


@pytest.mark.parametrize(("url", "output"), [("pdu.lab", 1), ("ftp://pdu.lab", 1), ("http://pdu.lab", 0)])
def test_netio_bad_settings_are_configuration_errors(url: str, output: int) -> None:
    with pytest.raises(ConfigError):
        NetioPower(url, output)


# --- manual -----------------------------------------------------------------------------------------


def test_manual_power_needs_a_person() -> None:
    power = ManualPower("aquila", ask_from=io.StringIO("\n"), tell=io.StringIO())
    with pytest.raises(ConfigError, match="no person at a terminal"):
        power.on()


def test_manual_power_asks_on_a_terminal_and_waits_for_enter() -> None:
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "r", closefd=False) as answers:
            told = io.StringIO()
            power = ManualPower("aquila", ask_from=answers, tell=told)
            os.write(master, b"\n")
            power.off()
            assert "switch OFF board 'aquila'" in told.getvalue()
            assert power.state() is PowerState.OFF
            os.write(master, b"done\n")
            power.cycle()
            assert power.state() is PowerState.ON
    finally:
        os.close(master)
        os.close(slave)
