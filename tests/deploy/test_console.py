"""The console engine over real ptys: matching, logging, bad patterns, reconnects.

The far side is either the test itself (writing to a pty's master) or the
board simulator (tests/sim/board.py) for what needs a board.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import tty
from collections.abc import Iterator
from pathlib import Path

import pytest

from cma_tool.deploy.console import Console
from cma_tool.deploy.uboot import UBoot
from cma_tool.errors import InfraError, TargetError
from tests.sim import SimBoard


class Pty:
    """A pty whose master the test writes to, as the board would."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def pty() -> Iterator[Pty]:
    p = Pty()
    yield p
    p.close()


@pytest.fixture
def console(pty: Pty, tmp_path: Path) -> Iterator[Console]:
    with Console(pty.path, tmp_path, default_timeout=3) as c:
        yield c


def test_expect_reports_which_pattern_the_text_before_and_groups(pty: Pty, console: Console) -> None:
    pty.write(b"hello world 42\r\n")
    m = console.expect([r"absent", rb"world (\d+)\r\n"])
    assert (m.index, m.before, m.text, m.groups) == (1, "hello ", "world 42\r\n", ("42",))


def test_the_earliest_match_wins_whatever_the_pattern_order(pty: Pty, console: Console) -> None:
    pty.write(b"first second\r\n")
    assert console.expect(["second", "first"]).text == "first"
    # Consumed up to the end of that match: the next expect starts after it.
    assert console.expect(["first", "second"]).before == " "


def test_timeout_names_the_pattern_the_last_bytes_and_the_log(pty: Pty, console: Console) -> None:
    pty.write(b"x" * 2000 + b"LAST-WORDS")
    console.expect("LAST-WORDS")
    with pytest.raises(TargetError) as err:
        console.expect("never-printed", timeout=0.3)
    text = str(err.value)
    assert "never-printed" in text and "LAST-WORDS" in text and str(console.log_path) in text
    # The tail is bounded: about 500 bytes, not the whole buffer.
    assert text.count("x") < 600
    with pytest.raises(InfraError):
        console.expect("never-printed", timeout=0.1, blame=InfraError)


def test_every_byte_reaches_the_log_with_timing(pty: Pty, tmp_path: Path) -> None:
    chunks = [bytes(range(256)), b"\r\nline two\r\n", b"\x1b[6n", b"END"]
    with Console(pty.path, tmp_path, name="board") as c:
        for chunk in chunks:
            pty.write(chunk)
            time.sleep(0.02)
        c.expect("END")
        c.send("typed\n")
        log = (tmp_path / "board.log").read_bytes()
        timing = (tmp_path / "board.timing").read_text().splitlines()
    assert log == b"".join(chunks)
    received = [line.split() for line in timing if line.split()[1:2] == ["<"]]
    offsets = [int(r[2]) for r in received]
    lengths = [int(r[3]) for r in received]
    assert offsets == [sum(lengths[:i]) for i in range(len(lengths))]
    assert sum(lengths) == len(log)
    assert any(line.endswith(" > 6 typed\\n") for line in timing)


def test_a_match_longer_than_the_search_window_still_reports_everything_before(
    pty: Pty, console: Console
) -> None:
    body = b"".join(b"line %05d\r\n" % i for i in range(3000))  # 33 kB, far over max_match
    pty.write(body + b"MARK")
    m = console.expect("MARK", timeout=10)
    assert m.before.encode() == body


def test_a_pattern_split_over_single_byte_writes_is_found(pty: Pty, console: Console) -> None:
    def dribble() -> None:
        for byte in b"noise noise PAT" + b"TERN-XYZ done":
            pty.write(bytes([byte]))
            time.sleep(0.001)

    writer = threading.Thread(target=dribble)
    writer.start()
    # Matched as soon as it matches, as in pexpect: a pattern ends with a delimiter.
    m = console.expect(rb"PATTERN-(\w+) ")
    writer.join()
    assert m.groups == ("XYZ",)


BAD = [
    # (what the console shows, expected error class, bad-pattern name)
    (b"\r\n\r\nU-Boot 2023.01+dfsg-2 (Jun 22 2026 - 08:38:07 +0000)\r\n", TargetError, "uboot-signon"),
    (b"\r\nU-Boot SPL 2023.01 (Jun 22 2026 - 08:38:07 +0000)\r\n", TargetError, "uboot-signon"),
    (b"resetting ...\r\nResetting CPU ...\r\n", TargetError, "resetting-cpu"),
    (b"Loading: T T T T T\r\nRetry count exceeded; starting again\r\n", InfraError, "tftp-retry"),
    (b"TFTP error: trying to overwrite reserved memory...\r\n", TargetError, "tftp-reserved"),
    (b"Bad Linux ARM zImage magic!\r\n", InfraError, "bad-image-magic"),
    (b"Bad Linux ARM64 Image magic!\r\n", InfraError, "bad-image-magic"),
    (b"Ramdisk image is corrupt or invalid\r\n", InfraError, "ramdisk-corrupt"),
    (b"ERROR: Failed to allocate 0x5000 bytes below 0x80000000.\r\n", TargetError, "uboot-alloc"),
    (b"[   12.3] Internal error: Oops: 5 [#1] SMP ARM\r\n", TargetError, "kernel-oops"),
    (b"[    3.1] BUG: kernel NULL pointer dereference, address: 00000000\r\n", TargetError, "kernel-bug"),
    (b"[    1.2] Kernel panic - not syncing: VFS: Unable to mount root fs\r\n", TargetError, "kernel-panic"),
]


@pytest.mark.parametrize(("shown", "error", "name"), BAD, ids=[f"{b[2]}-{i}" for i, b in enumerate(BAD)])
def test_bad_patterns_are_classified_with_context(
    pty: Pty, console: Console, shown: bytes, error: type[Exception], name: str
) -> None:
    pty.write(b"context-before-it " + shown + b"context-after-it\r\n=> ")
    with pytest.raises(error) as err:
        console.expect("=> ", timeout=2)
    text = str(err.value)
    assert f"'{name}'" in text and "context-before-it" in text and str(console.log_path) in text
    assert shown in console.log_path.read_bytes()


def test_a_signon_in_the_middle_of_a_line_is_not_a_reset(pty: Pty, console: Console) -> None:
    pty.write(b"=> echo U-Boot 2023.01 (x)\r\nDONE\r\n")
    assert console.expect("DONE").before.startswith("=> echo U-Boot")


def test_a_bad_pattern_after_the_wanted_text_is_left_for_the_next_expect(pty: Pty, console: Console) -> None:
    pty.write(b"ready\r\nKernel panic - not syncing: x\r\n")
    assert console.expect("ready").text == "ready"
    with pytest.raises(TargetError, match="kernel-panic"):
        console.expect("more", timeout=1)


def test_disable_check_turns_one_pattern_off_inside_the_block_only(pty: Pty, console: Console) -> None:
    pty.write(b"BUG: expected here\r\nDONE1\r\n")
    with console.disable_check("kernel-bug"):
        console.expect("DONE1")
    pty.write(b"BUG: not expected here\r\nDONE2\r\n")
    with pytest.raises(TargetError, match="kernel-bug"):
        console.expect("DONE2")
    with pytest.raises(KeyError), console.disable_check("no-such-pattern"):
        pass


def test_temporary_timeout_applies_inside_the_block_only(console: Console) -> None:
    with console.temporary_timeout(0.2), pytest.raises(TargetError, match=r"after 0\.2 s"):
        console.expect("never")
    assert console.default_timeout == 3


def test_paced_sending_waits_for_each_chunks_echo(pty: Pty, console: Console) -> None:
    reads: list[bytes] = []

    def echo_slowly() -> None:
        while sum(map(len, reads)) < 40:
            reads.append(os.read(pty.master, 64))
            time.sleep(0.01)  # a slow board
            pty.write(reads[-1])

    echoer = threading.Thread(target=echo_slowly)
    echoer.start()
    console.send_paced("0123456789" * 4, echo_timeout=2)
    echoer.join()
    # Never more than a FIFO's worth in flight, and nothing lost.
    assert max(map(len, reads)) <= 16
    assert b"".join(reads) == b"0123456789" * 4


def test_paced_sending_blames_the_board_when_the_echo_never_comes(pty: Pty, console: Console) -> None:
    with pytest.raises(TargetError, match="did not echo"):
        console.send_paced("abc", echo_timeout=0.3)


def test_an_unopenable_port_is_the_labs_fault(tmp_path: Path) -> None:
    with pytest.raises(InfraError, match="cannot open console"):
        Console(str(tmp_path / "ttyUSB-nothing"), tmp_path, open_timeout=0.2).open()
    with pytest.raises(InfraError, match="cannot open console"):
        Console("socket://127.0.0.1:1", tmp_path, open_timeout=0.2).open()


def test_two_consoles_cannot_share_one_port(pty: Pty, console: Console, tmp_path: Path) -> None:
    with pytest.raises(InfraError, match="cannot open console"):
        Console(pty.path, tmp_path / "second", open_timeout=0.2).open()


def test_close_stops_the_reader_and_frees_the_port(pty: Pty, tmp_path: Path) -> None:
    with Console(pty.path, tmp_path):
        pass
    assert not [t for t in threading.enumerate() if t.name == f"console-reader {pty.path}"]
    with Console(pty.path, tmp_path, open_timeout=0.2) as again:  # not held any more
        pty.write(b"still here")
        again.expect("still here")


def test_a_port_that_goes_away_for_good_is_an_infra_error(tmp_path: Path) -> None:
    p = Pty()
    with Console(p.path, tmp_path, reconnect_timeout=0.5) as c:
        p.close()  # the adapter is unplugged and never comes back
        with pytest.raises(InfraError, match="was lost"):
            c.expect("anything", timeout=5)
        timing = c.timing_path.read_text()
    assert "port lost" in timing and "gave up reconnecting" in timing


def test_reconnects_when_the_usb_adapter_re_enumerates(tmp_path: Path) -> None:
    # Opened by the stable link, as /dev/serial/by-id/... on a lab host.
    with SimBoard(tmp_path) as sim, Console(str(sim.link), tmp_path, reconnect_timeout=5) as c:
        sim.power_on()
        uboot = UBoot(c)
        uboot.attach(timeout=10)
        sim.replug()
        # The board kept its state; the console re-opens what the link now names.
        assert uboot.run("echo after-replug") == ("after-replug", 0)
        timing = c.timing_path.read_text()
    assert "port lost" in timing and "reconnected" in timing


def test_a_console_server_over_tcp_and_its_dropped_connection(tmp_path: Path) -> None:
    # A lab console server (ser2net, a terminal server) speaks raw TCP: socket://.
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    with Console(f"socket://127.0.0.1:{port}", tmp_path, reconnect_timeout=5) as c:
        first, _ = server.accept()
        burst = bytes(range(256)) * 800  # 200 kB at once: all of it, in order
        first.sendall(b"U-Boot says hi\r\n" + burst + b"END")
        c.expect("hi\r\n")
        c.expect("END")
        assert c.log_path.read_bytes() == b"U-Boot says hi\r\n" + burst + b"END"
        c.send("typed\n")
        assert first.recv(64) == b"typed\n"
        first.close()  # the server drops us; we dial again
        second, _ = server.accept()
        # pyserial flushes input while it opens, as a UART does: speak after that.
        deadline = time.monotonic() + 5
        while "reconnected" not in c.timing_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        second.sendall(b"back again\r\n")
        c.expect("back again")
        second.close()
    server.close()
    timing = (tmp_path / "console.timing").read_text()
    assert "port lost" in timing and "reconnected" in timing
