"""U-Boot on a console: get to the prompt, run commands, load images, boot.

Values come in as plain data (addresses, file names, a bootargs string); no
board-file parsing here. Every value typed into U-Boot goes through
:func:`hush_quote`, which refuses what U-Boot's hush cannot take literally.

Commands are typed paced (a FIFO's worth at a time, each chunk's echo
awaited): U-Boot polls its UART and drops what overflows the FIFO.
"""

from __future__ import annotations

import io
import re
import time
import zlib
from collections.abc import Callable

from xmodem import XMODEM

from cma_tool.deploy.console import Console, Match, new_marker, show_bytes, split_marker
from cma_tool.errors import ConfigError, InfraError, TargetError
from cma_tool.hush import hush_quote  # noqa: F401 - re-exported for callers of this driver

#: A sign-on line, SPL or main U-Boot: "U-Boot 2023.01+dfsg-2+deb12u3 (Jun 22 2026 - ...)".
SIGNON = rb"(?m)^U-Boot (?:SPL )?\d{4}\.\d{2}[^\r\n]*\("
AUTOBOOT = rb"Hit any key to stop autoboot|Press SPACE to abort autoboot|autoboot in \d+ seconds"
KERNEL_BANNER = rb"Booting Linux on physical CPU|Linux version \d"
_ENV_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_BYTES_TRANSFERRED = re.compile(r"Bytes transferred = (\d+) \(([0-9a-fA-F]+) hex\)")
_TOTAL_SIZE = re.compile(r"## Total Size\s*=\s*0x([0-9a-fA-F]+) = (\d+) Bytes")
_CRC32 = re.compile(r"(?i)crc32 for ([0-9a-f]+) \.\.\. ([0-9a-f]+) ==> (?:0x)?([0-9a-f]{8})")

# XMODEM/YMODEM control bytes.
_SOH, _ACK, _NAK, _CAN, _CRC = b"\x01", b"\x06", b"\x15", b"\x18", b"C"


def _check_env_name(name: str) -> None:
    if not _ENV_NAME.fullmatch(name):
        raise ConfigError(
            f"{name!r} is not a usable U-Boot environment variable name",
            hint="use letters, digits, '_', '.' and '-' (not first)",
        )


class UBoot:
    """Drive U-Boot on ``console``.

    ``prompt`` is the board's CONFIG_SYS_PROMPT ("=> " today, "Aquila # " or
    "SMDKV210 # " on 2011-era boards); it is matched at line start only, so
    ``crc32``'s "==> " is never taken for it. ``max_line`` is the board's
    CONFIG_SYS_CBSIZE: longer command lines are refused before typing, since
    U-Boot would silently truncate them.
    """

    def __init__(
        self,
        console: Console,
        *,
        prompt: str = "=> ",
        interrupt: str = " ",
        silence: float = 2.0,
        max_line: int = 256,
        default_timeout: float = 30.0,
        echo_timeout: float = 5.0,
    ) -> None:
        self.console = console
        self.prompt = prompt
        self.prompt_re = re.compile(b"(?m)^" + re.escape(prompt.encode()))
        self.interrupt = interrupt
        self.silence = silence
        self.max_line = max_line
        self.default_timeout = default_timeout
        self.echo_timeout = echo_timeout

    # ---- getting to the prompt ------------------------------------------

    def attach(self, timeout: float = 30.0) -> None:
        """Reach the prompt: stop autoboot, or wake an already interrupted U-Boot.

        After ``silence`` seconds with no prompt, Ctrl-C is sent: an idle
        U-Boot answers it with "<INTERRUPT>" and a fresh prompt. (A newline
        would do too, but an empty line makes U-Boot repeat the last
        repeatable command, which may be a tftpboot.)
        """
        deadline = time.monotonic() + timeout
        with self.console.disable_check("uboot-signon"):
            while True:
                left = deadline - time.monotonic()
                m = self.console.try_expect([AUTOBOOT, self.prompt_re], max(0.0, min(self.silence, left)))
                if m is not None and m.index == 0:
                    self.console.send(self.interrupt)
                elif m is not None:
                    break
                elif left <= 0:
                    blame = TargetError if self.console.received_bytes else InfraError
                    raise blame(
                        f"no U-Boot prompt {self.prompt!r} within {timeout:.0f} s\n"
                        f"--- last bytes seen ---\n{show_bytes(self.console.tail())}\n"
                        f"--- full log: {self.console.log_path}",
                        hint="nothing at all came from the console: check the port, baud rate, cable "
                        "and power"
                        if blame is InfraError
                        else "check the prompt string (CONFIG_SYS_PROMPT) and that the board runs U-Boot",
                    )
                else:
                    self.console.send("\x03")
        self.sync()

    def sync(self) -> None:
        """Make sure input and output line up: echo a fresh marker and wait for it and the prompt."""
        marker = new_marker()
        self._type(f"echo {split_marker(marker)}")
        self.console.expect(rf"{marker}\r?\n", self.default_timeout, waiting_for="U-Boot to echo a marker")
        self._expect_prompt(self.default_timeout)

    # ---- commands --------------------------------------------------------

    def run(self, command: str, timeout: float | None = None) -> tuple[str, int]:
        """Run a command line (already quoted); return its output and status (hush: 0 or 1)."""
        marker = self._start(command, timeout)
        return self._finish(marker, command, timeout)

    def run_check(self, command: str, timeout: float | None = None) -> str:
        output, status = self.run(command, timeout)
        if status != 0:
            raise TargetError(
                f"U-Boot command {command!r} failed (status {status})\n--- its output ---\n{output}",
            )
        return output

    def setenv(self, name: str, value: str | None) -> None:
        """Set (or with None or "", delete) an environment variable, quoted for hush."""
        _check_env_name(name)
        if value:
            self.run_check(f"setenv {name} {hush_quote(value, what=f'value of {name}')}")
        else:
            self.run_check(f"setenv {name}")

    def printenv(self) -> dict[str, str]:
        """The whole environment."""
        output = self.run_check("printenv")
        env: dict[str, str] = {}
        for line in output.splitlines():
            name, sep, value = line.partition("=")
            if sep and _ENV_NAME.fullmatch(name):
                env[name] = value
        return env

    def getenv(self, name: str) -> str | None:
        """One variable, or None when it is not set."""
        _check_env_name(name)
        output, status = self.run(f"printenv {name}")
        if status != 0:
            return None
        for line in output.splitlines():
            if line.startswith(name + "="):
                return line[len(name) + 1 :]
        raise TargetError(f"'printenv {name}' succeeded but printed no '{name}=' line:\n{output}")

    def tftpboot(self, addr: int, filename: str, timeout: float = 120.0) -> int:
        """Load ``filename`` from the TFTP server to ``addr``; return the bytes loaded."""
        command = f"tftpboot {addr:#x} {hush_quote(filename, what='file name')}"
        output, status = self.run(command, timeout)
        m = _BYTES_TRANSFERRED.search(output)
        if status != 0 or m is None:
            raise InfraError(
                f"'{command}' failed\n--- U-Boot said ---\n{output}",
                hint="check that the file is in the TFTP folder, serverip/ipaddr, and the network",
            )
        size = int(m.group(1))
        if size != int(m.group(2), 16):
            raise TargetError(f"U-Boot reported an inconsistent size: {m.group(0)!r}")
        return size

    def crc32(self, addr: int, size: int) -> int:
        """CRC-32 (zlib's) of ``size`` bytes at ``addr``, computed by U-Boot."""
        if size <= 0:
            raise ConfigError(f"crc32 of {size} bytes at {addr:#x}: there is nothing to check")
        output = self.run_check(f"crc32 {addr:#x} {size:#x}")
        m = _CRC32.search(output)
        if m is None:
            raise TargetError(f"cannot read the result of crc32:\n{output}")
        first, last = int(m.group(1), 16), int(m.group(2), 16)
        if (first, last) != (addr, addr + size - 1):
            raise TargetError(f"crc32 covered {first:#x}..{last:#x}, not {addr:#x}+{size:#x}:\n{output}")
        return int(m.group(3), 16)

    def check_loaded(self, addr: int, data: bytes, *, got: int, what: str, how: str) -> None:
        """What U-Boot loaded must be ``data``: its byte count, then its crc32 against zlib's.

        InfraError otherwise: the transfer damaged it (a noisy line, a wrong baud
        rate) or a later load wrote over it.
        """
        if got != len(data):
            raise InfraError(f"U-Boot loaded {got} bytes of {what} over {how}; the file has {len(data)}")
        board_crc = self.crc32(addr, len(data))
        host_crc = zlib.crc32(data)
        if board_crc != host_crc:
            raise InfraError(
                f"{what} at {addr:#010x} is corrupt after {how}: U-Boot's crc32 is {board_crc:08x}, "
                f"the file's {host_crc:08x}",
                hint="the transfer damaged it (a noisy line, a wrong baud rate) or a later load overlapped it",
            )

    # ---- serial transfers ------------------------------------------------

    def loady(self, addr: int, data: bytes, *, filename: str = "image.bin", timeout: float = 600.0) -> int:
        """Send ``data`` to ``addr`` with ``loady`` (YMODEM, 1 KiB blocks); return U-Boot's byte count."""
        hush_quote(filename, what="file name")  # the same rules keep the header block sane
        return self._serial_load("loady", addr, lambda port: _ymodem_send(port, data, filename), timeout)

    def loadx(self, addr: int, data: bytes, *, timeout: float = 600.0) -> int:
        """Send ``data`` to ``addr`` with ``loadx`` (XMODEM-1K); return U-Boot's byte count.

        XMODEM carries no size: the count includes the padding of the last
        block unless it ends in ^Z bytes, which U-Boot strips.
        """
        return self._serial_load("loadx", addr, lambda port: _xmodem_send(port, data), timeout)

    def _serial_load(
        self, command: str, addr: int, send: Callable[[_ConsolePort], None], timeout: float
    ) -> int:
        marker = self._start(f"{command} {addr:#x}", timeout)
        self.console.expect(
            rb"## Ready for binary \((?:ymodem|xmodem)\) download[^\r\n]*\r?\n",
            self.default_timeout,
            waiting_for=f"U-Boot's {command} to get ready",
        )
        port = _ConsolePort(self.console, time.monotonic() + timeout)
        try:
            send(port)
        except InfraError:
            # What the board said instead of ACKs, and just after, may tell why (it reset, say).
            self.console.raise_for_bad(bytes(port.seen) + self.console.drain(quiet=0.3).encode())
            # Leave U-Boot at its prompt, not waiting for blocks: CANs cancel a transfer.
            port.putc(_CAN * 5)
            raise
        output, status = self._finish(marker, command, self.default_timeout)
        m = _TOTAL_SIZE.search(output)
        if status != 0 or m is None:
            raise InfraError(f"{command} did not complete\n--- U-Boot said ---\n{output}")
        return int(m.group(2))

    # ---- booting ---------------------------------------------------------

    def boot(self, command: str, timeout: float = 60.0) -> None:
        """Run a boot command and wait for the kernel's first words.

        A second U-Boot sign-on where the kernel should be is a boot loop
        (TargetError); so is U-Boot's prompt coming back.
        """
        self._type(command)
        with self.console.disable_check("uboot-signon"):
            m = self.console.expect(
                [rb"Starting kernel \.\.\.", SIGNON, self.prompt_re],
                timeout,
                waiting_for="'Starting kernel ...'",
            )
            self._check_boot_step(m, command, "before starting the kernel")
            m = self.console.expect(
                [KERNEL_BANNER, SIGNON, self.prompt_re],
                timeout,
                waiting_for="the kernel banner after 'Starting kernel ...' (no output: the kernel died "
                "early; earlycon in bootargs shows why)",
            )
            self._check_boot_step(m, command, "after 'Starting kernel ...'")

    def _check_boot_step(self, m: Match, command: str, when: str) -> None:
        if m.index == 1:
            raise TargetError(
                f"boot loop: U-Boot signed on again {when} ({command!r})\n"
                f"--- before it ---\n{m.before[-500:]}\n--- full log: {self.console.log_path}",
                hint="the kernel reset the board, or U-Boot did: check the load addresses, the "
                "device tree and the memory layout",
            )
        if m.index == 2:
            raise TargetError(
                f"'{command}' returned to the U-Boot prompt {when}\n--- U-Boot said ---\n{m.before}",
                hint="the boot command failed; the lines above say why",
            )

    # ---- typing and framing ---------------------------------------------

    def _type(self, line: str) -> None:
        if len(line) >= self.max_line:
            raise ConfigError(
                f"U-Boot command line of {len(line)} characters exceeds the board's limit "
                f"({self.max_line - 1}): {line[:80]}...",
                hint="shorten the values (bootargs?), or raise max_line to the board's CONFIG_SYS_CBSIZE",
            )
        self.console.send_paced(line, echo_timeout=self.echo_timeout)
        self.console.send("\n")

    def _start(self, command: str, timeout: float | None) -> str:
        marker = new_marker()
        split = split_marker(marker)
        # hush runs every command of a ';' list and keeps the last status in $?.
        self._type(f"echo {split}; {command}; echo {split} $?")
        wait = self.default_timeout if timeout is None else timeout
        self.console.expect(rf"{marker}\r?\n", wait, waiting_for=f"the start of {command!r}")
        return marker

    def _finish(self, marker: str, command: str, timeout: float | None) -> tuple[str, int]:
        wait = self.default_timeout if timeout is None else timeout
        end = self.console.expect(rf"(?:\r?\n)?{marker} (\S*)\r?\n", wait, waiting_for=f"the end of {command!r}")
        self._expect_prompt(wait)
        status = end.groups[0]
        if status is None or not status.isdigit():
            raise TargetError(
                f"U-Boot printed {status!r} for the exit status of {command!r}, not a number",
                hint="this U-Boot's shell does not expand $?: it needs the hush parser (CONFIG_HUSH_PARSER)",
            )
        return end.before.replace("\r\n", "\n"), int(status)

    def _expect_prompt(self, timeout: float) -> None:
        self.console.expect(self.prompt_re, timeout, waiting_for=f"the U-Boot prompt {self.prompt!r}")


class _ConsolePort:
    """The getc/putc pair the xmodem package wants, over the console's buffer.

    The reader thread keeps reading (and logging) during a transfer; getc
    takes bytes from its buffer. ``pushback`` hands a byte to the xmodem
    package as if it had come from the board.
    """

    def __init__(self, console: Console, deadline: float) -> None:
        self.console = console
        self.deadline = deadline
        self.pushback: list[bytes] = []
        self.seen = bytearray()  # every byte taken from the board, for diagnosis

    def getc(self, size: int, timeout: float = 1) -> bytes | None:
        if self.pushback and size == 1:
            return self.pushback.pop(0)
        if time.monotonic() > self.deadline:
            raise InfraError("serial transfer ran out of time")
        data = self.console.read_raw(size, timeout)
        if data is not None:
            self.seen += data
        return data

    def putc(self, data: bytes, timeout: float = 1) -> int:
        self.console.send(bytes(data), log_text=False)
        return len(data)

    def wait_for(self, wanted: bytes, timeout: float, what: str) -> bytes:
        """Skip bytes until one of ``wanted`` comes; InfraError after ``timeout``."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            c = self.getc(1, max(0.0, end - time.monotonic()))
            if c is not None and c in wanted:
                return c
            if c == _CAN and self.getc(1, 1) == _CAN:
                raise InfraError(f"the board cancelled the transfer while we waited for {what}")
        raise InfraError(
            f"serial transfer: no {what} from the board within {timeout:.0f} s",
            hint="the board is not receiving (wrong command, baud rate, or it reset)",
        )


def _block0(modem: XMODEM, payload: bytes) -> bytes:
    """YMODEM block 0 (128 bytes, CRC-16): file name and size, or all zero to end the batch."""
    body = payload.ljust(128, b"\0")
    crc = modem.calc_crc(body)
    return _SOH + b"\x00\xff" + body + bytes([crc >> 8, crc & 0xFF])


def _send_block0(port: _ConsolePort, modem: XMODEM, payload: bytes) -> None:
    block = _block0(modem, payload)
    for _ in range(10):
        port.putc(block)
        # A 'C' here is a stale request, sent before the block arrived: skip it.
        reply = port.wait_for(_ACK + _NAK, 5.0, "ACK for the YMODEM header")
        if reply == _ACK:
            return
    raise InfraError("the board kept refusing the YMODEM header block")


def _ymodem_send(port: _ConsolePort, data: bytes, filename: str) -> None:
    """YMODEM batch of one file, on top of the xmodem package's XMODEM-1K sender.

    The package does the data blocks; YMODEM adds block 0 before them (name
    and size, so the receiver trims the padding) and an empty block 0 after.
    """
    modem = XMODEM(port.getc, port.putc, mode="xmodem1k")
    port.wait_for(_CRC, 30.0, "'C' (ready for YMODEM)")
    _send_block0(port, modem, filename.encode() + b"\0" + str(len(data)).encode())
    # A standard receiver asks for the data with another 'C'; U-Boot's
    # xyzModem does not (it waits for block 1 straight away): wait briefly, then go.
    ask = port.getc(1, 0.3)
    port.pushback.append(ask if ask in (_CRC, _NAK) else _CRC)
    if not modem.send(io.BytesIO(data), retry=10, timeout=5, quiet=True):
        raise InfraError(
            "YMODEM transfer failed (the board stopped acknowledging blocks)\n"
            f"--- it said instead ---\n{show_bytes(bytes(port.seen[-300:]))}"
        )
    port.wait_for(_CRC, 10.0, "'C' for the YMODEM end-of-batch block")
    _send_block0(port, modem, b"")


def _xmodem_send(port: _ConsolePort, data: bytes) -> None:
    modem = XMODEM(port.getc, port.putc, mode="xmodem1k")
    port.pushback.append(port.wait_for(_CRC + _NAK, 30.0, "'C' or NAK (ready for XMODEM)"))
    if not modem.send(io.BytesIO(data), retry=10, timeout=5, quiet=True):
        raise InfraError(
            "XMODEM transfer failed (the board stopped acknowledging blocks)\n"
            f"--- it said instead ---\n{show_bytes(bytes(port.seen[-300:]))}"
        )
