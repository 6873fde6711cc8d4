"""The board simulator (board.py) as a test fixture: a process behind a real pty."""

from __future__ import annotations

import json
import random
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cma_tool.deploy.console import Console

BOARD_SCRIPT = Path(__file__).with_name("board.py")
POWER_SWITCH = Path(__file__).with_name("power_switch.py")
#: The board file of the simulated Aquila, and the real run its playback comes from.
SIM_AQUILA = Path(__file__).with_name("sim-aquila.yaml")
RECORDED_RUN = Path(__file__).parents[1] / "data" / "serial-replay"

#: A file U-Boot's bootz accepts: the zImage magic at offset 0x24.
FAKE_ZIMAGE = bytes(0x24) + (0x016F2818).to_bytes(4, "little") + bytes(0x1000)


def zimage(size: int, *, seed: int = 0) -> bytes:
    """A zImage-shaped file of ``size`` bytes: magic, start 0 and end ``size`` in its header, noise after."""
    body = random.Random(seed).randbytes(size - 0x30)
    return bytes(0x24) + (0x016F2818).to_bytes(4, "little") + (0).to_bytes(4, "little") + \
        size.to_bytes(4, "little") + body


class SimBoard:
    """Start board.py; ``path`` is the pty to open, ``link`` a symlink that follows replugs."""

    def __init__(
        self,
        workdir: Path,
        *,
        flavour: str = "2023",
        faults: Sequence[str] = (),
        tftp_dir: Path | None = None,
        bootdelay: int = 1,
        login: str | None = None,
        prompt: str | None = None,
        kernel_log: Path | None = None,
        playback_bps: int | None = None,
        relay: bool = False,
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.record_path = workdir / "sim-record.jsonl"
        self.link = workdir / "ttySIM"
        #: With ``relay``: the power relay's socket and the state file power_switch.py keeps.
        self.relay_socket = workdir / "sim-relay.sock" if relay else None
        self.power_state_file = workdir / "sim-power.state"
        argv = [
            sys.executable,
            str(BOARD_SCRIPT),
            "--flavour",
            flavour,
            "--record",
            str(self.record_path),
            "--link",
            str(self.link),
            "--bootdelay",
            str(bootdelay),
        ]
        for fault in faults:
            argv += ["--fault", fault]
        if tftp_dir is not None:
            argv += ["--tftp-dir", str(tftp_dir)]
        if login is not None:
            argv += ["--login", login]
        if prompt is not None:
            argv += ["--prompt", prompt]
        if kernel_log is not None:
            argv += ["--kernel-log", str(kernel_log)]
        if playback_bps is not None:
            argv += ["--playback-bps", str(playback_bps)]
        if self.relay_socket is not None:
            argv += ["--power-socket", str(self.relay_socket)]
        self.stderr_path = workdir / "sim-stderr.txt"
        self._stderr = open(self.stderr_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)
        assert self.proc.stdout is not None
        hello: dict[str, Any] = json.loads(self.proc.stdout.readline())
        self.path: str = hello["pty"]

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _control(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word.encode() + b"\n")
        self.proc.stdin.flush()

    def power_on(self) -> None:
        """Power on (or reset): call after the console is open, as with a real board."""
        self._control("power-on")

    def power_off(self) -> None:
        self._control("power-off")

    def power_commands(self) -> dict[str, str]:
        """The board file's ``power: command:`` lines that switch this board through its relay."""
        if self.relay_socket is None:
            raise ValueError("start the SimBoard with relay=True to switch it by commands")
        base = shlex.join([sys.executable, str(POWER_SWITCH), str(self.relay_socket), str(self.power_state_file)])
        return {"on": f"{base} on", "off": f"{base} off", "state": f"{base} state"}

    def relay_state(self) -> str:
        """What the relay's state file says: "on", "off" (also before any switching)."""
        if not self.power_state_file.exists():
            return "off"
        return self.power_state_file.read_text().strip()

    def power_events(self) -> list[str]:
        """Every switch the board itself saw, in order: "on", "off"."""
        return [str(e["power"]) for e in self.received() if "power" in e]

    def boots(self) -> list[dict[str, Any]]:
        """What each playback bootz was given (kernel, initrd, fdt CRCs; bootargs; the recording's cmdline)."""
        return [e["boot"] for e in self.received() if "boot" in e]

    def replug(self) -> None:
        """The USB serial adapter re-enumerates: the old pty vanishes, a new one sits behind ``link``.

        Returns once the new pty exists (it may get the old /dev/pts number back).
        """
        self._control("replug")
        assert self.proc.stdout is not None
        self.path = json.loads(self.proc.stdout.readline())["replugged"]

    def received(self, shell: str | None = None) -> list[dict[str, Any]]:
        """What the board received, in order: {"line": ...} and {"argv": [...]} entries."""
        if not self.record_path.exists():
            return []
        entries = [json.loads(line) for line in self.record_path.read_text().splitlines()]
        return [e for e in entries if shell is None or e.get("shell") == shell]

    def argvs(self, shell: str) -> list[list[str]]:
        return [e["argv"] for e in self.received(shell) if "argv" in e]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._control("quit")
                self.proc.wait(timeout=2)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()


@contextmanager
def powered_board(workdir: Path, *, timeout: float = 5.0, **sim_options: Any) -> Iterator[tuple[SimBoard, Console]]:
    """A simulated board with our console open on its pty, then powered on."""
    with SimBoard(workdir, **sim_options) as sim, Console(sim.path, workdir, default_timeout=timeout) as console:
        sim.power_on()
        yield sim, console


def free_udp_port() -> int:
    """A UDP port nobody listens on right now (for a board file's tftp-port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_sim_aquila(
    folder: Path, sim: SimBoard, *, network: bool = True, board_ip: str | None = "127.0.0.2"
) -> Path:
    """A board file for this simulator: sim-aquila.yaml with this run's relay commands and a free TFTP port.

    ``network=False`` deletes the network section (files go over YMODEM);
    ``board_ip=None`` leaves the board to ``dhcp``.
    """
    lines = [f"include: {json.dumps(str(SIM_AQUILA))}", "power:", "  command:"]
    lines += [f"    {role}: {json.dumps(command)}" for role, command in sim.power_commands().items()]
    if network:
        lines += ["network:", f"  tftp-port: {free_udp_port()}",
                  f"  board-ip: {json.dumps(board_ip) if board_ip else '~'}"]
    else:
        lines.append("network: ~")
    path = folder / "sim-aquila-here.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path
