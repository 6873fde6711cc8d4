"""The board simulator (board.py) as a test fixture: a process behind a real pty."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cma_tool.target.console import Console

BOARD_SCRIPT = Path(__file__).with_name("board.py")

#: A file U-Boot's bootz accepts: the zImage magic at offset 0x24.
FAKE_ZIMAGE = bytes(0x24) + (0x016F2818).to_bytes(4, "little") + bytes(0x1000)


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
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.record_path = workdir / "sim-record.jsonl"
        self.link = workdir / "ttySIM"
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
