"""A console followed in a file that another process writes (follow://), as QEMU's direct boot gives it.

The writer is a real process appending to a real file with pauses, as
QEMU's ``-chardev file`` does; the console engine reads it through pyserial.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import serial

from cma_tool.deploy import protocol_follow
from cma_tool.deploy.console import Console
from cma_tool.deploy.protocol_unix import register
from cma_tool.errors import InfraError

register()

#: Writes its argv[2:] one by one to argv[1], 0.1 s apart, then sleeps argv-given seconds before ending.
WRITER = """
import sys, time
path, linger, *parts = sys.argv[1:]
with open(path, "ab", buffering=0) as f:
    for part in parts:
        time.sleep(0.1)
        for byte in part.encode():
            f.write(bytes([byte]))  # one byte per write, as QEMU's UART does
time.sleep(float(linger))
"""


def start_writer(path: Path, *parts: str, linger: float = 0.0) -> subprocess.Popen[bytes]:
    path.write_bytes(b"")
    return subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(linger), *parts])


def test_the_console_reads_its_own_log_as_the_writer_grows_it_and_copies_nothing(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    writer = start_writer(log, "U-Boot? no: Linux version 6.1\n", "Run /init\n", "==== CMA-TOOL DONE rc=0 ====\n",
                          linger=0.5)
    try:
        with Console(protocol_follow.follow_url(log, writer.pid), tmp_path, name="console") as console:
            assert console.expect(rb"Run /init", 10).before.endswith("Linux version 6.1\n")
            console.expect(rb"DONE rc=(\d)", 10)
    finally:
        writer.wait(10)
    # The log is the writer's bytes exactly once: the console did not append its own copy.
    assert log.read_bytes() == b"U-Boot? no: Linux version 6.1\nRun /init\n==== CMA-TOOL DONE rc=0 ====\n"
    timing = (tmp_path / "console.timing").read_text()
    assert "reading console.log as the port writes it" in timing
    received = [line.split() for line in timing.splitlines() if not line.startswith("#") and " < " in line]
    assert sum(int(parts[3]) for parts in received) == len(log.read_bytes())  # offsets and lengths add up


def test_a_writer_that_ends_is_a_lost_console_and_it_never_reopens(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    writer = start_writer(log, "Starting kernel ...\n")
    with Console(protocol_follow.follow_url(log, writer.pid), tmp_path, name="console",
                 reconnect_timeout=0.5) as console:
        console.expect(rb"Starting kernel", 10)
        start = time.monotonic()
        with pytest.raises(InfraError, match=r"was lost .*the writing process has ended"):
            console.expect(rb"Run /init", 30)
        assert time.monotonic() - start < 10  # noticed when the writer ended, not at the 30 s timeout
    writer.wait(10)


def test_the_port_refuses_writes_a_dead_writer_and_a_relative_or_pidless_url(tmp_path: Path) -> None:
    log = tmp_path / "console.log"
    writer = start_writer(log, "x", linger=5)
    try:
        port = serial.serial_for_url(protocol_follow.follow_url(log, writer.pid), timeout=0.05)
        with pytest.raises(serial.SerialException, match="read-only"):
            port.write(b"reset\n")
        assert port.read(10) == b""  # nothing yet: a timeout, not an end
        port.close()
    finally:
        writer.kill()
        writer.wait()
    with pytest.raises(serial.SerialException, match="has ended|is gone"):
        serial.serial_for_url(protocol_follow.follow_url(log, writer.pid))
    with pytest.raises(serial.SerialException, match="ABSOLUTE"):
        serial.serial_for_url("follow://console.log?writer=1")
    with pytest.raises(serial.SerialException, match="writer=PID"):
        serial.serial_for_url(f"follow://{log}")
