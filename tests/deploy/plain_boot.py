"""Booting the emulated board with nothing of the run pipeline: for recordings, tests and benchmarks.

A minimal reader straight off QEMU's console socket (blocking reads, never
sleep-and-poll, every byte to a log as it arrives), used where the console
engine and the agent's watch would be the thing under test, or where a
recording wants nothing between QEMU and the file. Not part of cma-tool.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from cma_tool.deploy.qemu import DEFAULT_MEMORY, BootFiles, EmulatedBoard, MemoryBank, VirtMachine
from cma_tool.deploy.sections import DONE_MARK, Section, split_sections
from cma_tool.errors import InfraError, TargetError

MiB = 1 << 20
#: The two-bank layout the reference measurements used.
REFERENCE_BANKS = (MemoryBank(0x4000_0000, 256 * MiB), MemoryBank(0x6000_0000, 256 * MiB))


def open_console(machine: VirtMachine, *, timeout: float = 10.0) -> Any:
    """A pyserial port on the machine's console (the caller closes it); QEMU refusing -> InfraError."""
    import serial

    try:
        return serial.serial_for_url(machine.serial_url, timeout=timeout)
    except (serial.SerialException, OSError) as exc:
        raise InfraError(f"cannot connect to the emulated board's console: {exc}; {machine.qemu_stderr()}") from exc


def read_until(machine: VirtMachine, port: Any, needles: Sequence[bytes], *, timeout: float,
               log: IO[bytes] | None = None, buffer: bytearray | None = None) -> tuple[bytes, bytearray]:
    """:func:`read_console_until` on the machine's console; QEMU dying of an error -> InfraError."""
    try:
        return read_console_until(port, needles, timeout=timeout, log=log, buffer=buffer)
    except TargetError as err:
        # The console also ends when the guest powers off (QEMU exits 0);
        # a non-zero exit is QEMU's own failure (bad option, missing file).
        try:
            code = machine.process.wait(2)
        except subprocess.TimeoutExpired:
            raise err from None  # QEMU still runs: the guest went quiet, the board's fault
        if code != 0:
            raise InfraError(f"QEMU stopped with exit code {code}; {machine.qemu_stderr()}") from None
        raise


def read_console_until(
    console: Any,
    needles: Sequence[bytes],
    *,
    timeout: float,
    log: IO[bytes] | None = None,
    buffer: bytearray | None = None,
) -> tuple[bytes, bytearray]:
    """Read until one of ``needles`` shows up; returns (the needle, everything read).

    A minimal reader for our own recordings and tests (the console engine
    replaces it): it blocks on the socket, never sleeps, and writes every
    byte to ``log`` as it arrives. End of stream (QEMU exited) and the
    deadline raise TargetError with the tail of what was read.
    """
    seen = buffer if buffer is not None else bytearray()
    deadline = time.monotonic() + timeout
    scan_from = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TargetError(
                f"no {' or '.join(repr(n) for n in needles)} on the console within {timeout:g} s; last output: {bytes(seen[-300:])!r}"
            )
        try:
            console.timeout = left
            chunk = console.read(1)  # blocks until a byte comes or the deadline passes
            if chunk:
                console.timeout = 0  # then take whatever else is already there, without waiting
                chunk += console.read(65536)
        except OSError as exc:  # pyserial's SerialException is an OSError: "socket disconnected"
            if log is not None:
                log.flush()
            raise TargetError(f"the console closed ({exc}); last output: {bytes(seen[-300:])!r}") from exc
        if log is not None and chunk:
            log.write(chunk)
            log.flush()
        seen += chunk
        longest = max(len(n) for n in needles)
        for needle in needles:
            if seen.find(needle, max(0, scan_from - longest)) >= 0:
                return needle, seen
        scan_from = len(seen)


@dataclass(frozen=True)
class RunOutput:
    """What one unattended run (cmatool.mode=run) printed, and how long it took."""

    console: bytes
    sections: dict[str, Section]
    capture_rc: int
    seconds_to_init: float  # QEMU start to "Run /init"
    seconds_total: float  # QEMU start to QEMU exit

    @property
    def text(self) -> str:
        return self.console.decode(errors="replace").replace("\r\n", "\n")


def run_to_poweroff(boot: BootFiles, *, log_path: Path, timeout: float = 120.0, memory: str = DEFAULT_MEMORY) -> RunOutput:
    """Boot, let the firmware run its plan, wait for the power-off; the console goes to ``log_path``.

    A panic (the kernel reboots with panic=-1 and QEMU exits, -no-reboot) or
    a console that ends before ``==== CMA-TOOL DONE`` raises TargetError.
    """
    start = time.monotonic()
    with EmulatedBoard(boot, memory=memory) as board, log_path.open("wb") as log:
        port = open_console(board)
        try:
            _, seen = read_until(board, port, [b"Run /init", b"Kernel panic"], timeout=timeout, log=log)
            to_init = time.monotonic() - start
            hit, seen = read_until(board, port, [b"Kernel panic", DONE_MARK.encode()], timeout=timeout, log=log,
                                   buffer=seen)
            if hit == b"Kernel panic":
                raise TargetError(f"the kernel panicked; see {log_path}")
            try:  # the rest (reboot: power down) until QEMU closes the console
                read_until(board, port, [b"\0never"], timeout=30, log=log, buffer=seen)
            except TargetError:
                pass
        finally:
            port.close()
        board.wait(30)
    text = seen.decode(errors="replace").replace("\r\n", "\n")
    m = re.search(re.escape(DONE_MARK) + r"(\d+)", text)
    return RunOutput(
        console=bytes(seen),
        sections=parse_sections(text),
        capture_rc=int(m.group(1)) if m else -1,
        seconds_to_init=to_init,
        seconds_total=time.monotonic() - start,
    )


def parse_sections(console: str) -> dict[str, Section]:
    """Every complete ``==== CMA-TOOL BEGIN x ====`` ... ``==== CMA-TOOL END x rc=N ====`` block, by name."""
    return {name: s for name, s in split_sections(console).sections.items() if s.rc is not None}


