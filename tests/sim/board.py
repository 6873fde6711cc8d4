"""A scripted board on a real pty: U-Boot, a kernel boot and a busybox-like shell.

Run as a process (``python tests/sim/board.py --record FILE ...``). It opens a
pty, keeps the master side and prints one JSON line on stdout with the slave's
/dev/pts path (and ``--link``, a symlink kept pointing at the current pty, as
/dev/serial/by-id does for a USB adapter). The code under test opens that
path with pyserial like any serial device.

Control comes on stdin, one word a line: ``power-on`` (also a reset),
``power-off``, ``replug`` (the USB adapter re-enumerates: a new pty behind
the link), ``quit``. The board is powered off until the first ``power-on``:
pyserial flushes what arrived before it opened the port, as a real UART would
lose it, and a board that is off or hung hears nothing.

With ``--power-socket PATH`` the board also has a power relay: a Unix socket
where a client (``power_switch.py``, run by the code under test as its power
command) sends ``on`` or ``off`` and gets ``ok`` once the board has switched.
``on`` while the board is on changes nothing, as with a real relay.

Networking: ``tftpboot`` fetches the file for real with tftpy's client from
``serverip`` (port ``tftpdstp``, else 69), as U-Boot does, into the board's
RAM, asking for U-Boot's 1468-byte blocks; ``ipaddr`` must be set first
(``setenv ipaddr`` or ``dhcp``). With ``--tftp-dir`` the files come from that
folder instead, with no network at all.

With ``--kernel-log FILE`` (a console.log recorded from a real kernel),
``bootz`` checks what it was given as U-Boot does (the zImage magic, the
device tree's magic) and then plays the recording back byte for byte,
paced at ``--playback-bps`` (default 11520, a 115200-baud 8N1 line), in
chunks; nothing in it is replaced. The recording ends with the kernel
powering down: afterwards the board is silent until it is switched again.
What ``bootz`` loaded (CRC-32s, addresses, bootargs, and the command line
the recording shows) goes to the record file.

Every command line the board receives, and the words it parsed from it, go
to the ``--record`` file as JSON lines, so tests can assert on what reached
the board.

U-Boot flavours: "2023" (QEMU virt's Debian U-Boot, prompt "=> ") and "2011"
(an S5PV210 board of the CMA patch series' time, prompt "Aquila # ").
Faults (``--fault NAME[=ARG]``, repeatable):

  reset-on=WORD       U-Boot command WORD prints a little, then the board resets
  hang-on=WORD        U-Boot or shell command WORD: the board stops answering
  panic-on=WORD       shell command WORD: kernel panic, then silence
  oops-on=WORD        shell command WORD: a kernel Oops, the shell goes on
  panic-at-boot       the kernel panics before init
  hang-after-starting-kernel
  bootloop            bootz resets into U-Boot instead of starting the kernel
  tftp-timeout        tftpboot: "Retry count exceeded"
  reserved=ADDR:SIZE  tftpboot into that range: "trying to overwrite reserved memory"
  ramdisk-corrupt     bootz: "Ramdisk image is corrupt or invalid"
  garbage             line noise at power-on and among the kernel's lines
  bytewise            every byte written on its own
  slow-echo=SECONDS   U-Boot echoes each character after a delay and, like a
                      polled UART, drops input beyond a 16-byte FIFO meanwhile
  reset-during-transfer   loady/loadx: the board resets after 20 blocks
  simple-parser       no hush: $? is not expanded (CONFIG_HUSH_PARSER off)
  ymodem-c-after-header   loady asks again ('C') after the header block, as
                      lrzsz does; U-Boot's xyzModem does not
  bitflip             every tftpboot/loady stores its file with one bit flipped
  kernel-reset-at=N   playback: the board resets after line N of the recording
  kernel-hang-at=N    playback: the board stops after line N of the recording
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import logging
import os
import random
import re
import select
import socket
import time
import tty
import zlib
from dataclasses import dataclass
from pathlib import Path

import tftpy
from xmodem import XMODEM

SOH, STX, EOT, ACK, NAK, CAN, CRC = b"\x01", b"\x02", b"\x04", b"\x06", b"\x15", b"\x18", b"C"
ZIMAGE_MAGIC = 0x016F2818
FDT_MAGIC = 0xD00DFEED
#: CONFIG_SYS_FDT_PAD: the room U-Boot opens a device tree into, in place.
FDT_PAD = 0x3000
FIFO = 16
#: U-Boot's CONFIG_TFTP_BLOCKSIZE: the blksize option it asks every server for.
UBOOT_TFTP_BLOCKSIZE = 1468
#: A 115200-baud line with 8N1 framing carries 10 bits per byte.
DEFAULT_PLAYBACK_BPS = 11520
PLAYBACK_CHUNK = 64


@dataclass(frozen=True)
class Flavour:
    signon: str
    banner: str
    prompt: str
    crc: str  # how crc32 names itself
    reset: str
    env: dict[str, str]


FLAVOURS = {
    "2023": Flavour(
        signon="U-Boot 2023.01+dfsg-2+deb12u3 (Jun 22 2026 - 08:38:07 +0000)",
        banner="DRAM:  768 MiB\r\nCore:  51 devices, 14 uclasses, devicetree: board\r\n"
        "Flash: 64 MiB\r\nLoading Environment from Flash... *** Warning - bad CRC, using default environment"
        "\r\n\r\nIn:    pl011@9000000\r\nOut:   pl011@9000000\r\nErr:   pl011@9000000\r\n"
        "Net:   eth0: virtio-net#31\r\n",
        prompt="=> ",
        crc="crc32",
        reset="resetting ...",
        env={
            "kernel_addr_r": "0x40400000",
            "ramdisk_addr_r": "0x44000000",
            "scriptaddr": "0x40200000",
            "fdt_addr": "0x40000000",
            "fdt_high": "0xffffffff",
            "initrd_high": "0xffffffff",
            "bootcmd": "run distro_bootcmd",
            "distro_bootcmd": "echo no boot device",
            "baudrate": "115200",
        },
    ),
    "2011": Flavour(
        signon="U-Boot 2011.06 (Jun 10 2011 - 14:33:12)",
        banner="CPU:\tS5PC110@1000MHz\r\nBoard:\tAquila\r\nDRAM:  512 MiB\r\nNAND:  512 MiB\r\n"
        "In:    serial\r\nOut:   serial\r\nErr:   serial\r\n",
        prompt="Aquila # ",
        crc="CRC32",
        reset="Resetting CPU ...",
        env={
            "bootcmd": "onenand read 0x30008000 0x600000 0x400000; bootm 0x30008000",
            "bootargs": "console=ttySAC2,115200",
            "baudrate": "115200",
            "loadaddr": "0x30008000",
        },
    ),
}


class PowerCycle(Exception):
    """The board was reset (control, a command, or a fault): start again from the ROM."""


class Hang(Exception):
    """The board stops answering until the next power cycle."""


class PowerOff(Exception):
    """The board loses power: silent and deaf until it is switched on."""


class Uart:
    """The board's side of the serial line: the master of a pty."""

    def __init__(self, link: Path | None, bytewise: bool, power_socket: Path | None = None) -> None:
        self.link = link
        self.bytewise = bytewise
        self.fifo_limit: int | None = None
        self.reset_after_acks: int | None = None  # the reset-during-transfer fault
        self.pending = bytearray()
        self.powered = False  # what the relay sees; kept by main()
        self.relay: socket.socket | None = None
        if power_socket is not None:
            power_socket.unlink(missing_ok=True)
            self.relay = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.relay.bind(str(power_socket))
            self.relay.listen(4)
        self._open()

    def _open(self) -> None:
        self.master, self.slave = os.openpty()
        # Raw from the start: with the default line discipline the pty would
        # echo our own output back to us before pyserial configures it.
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        if self.link is not None:
            tmp = self.link.with_name(self.link.name + ".new")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.path)
            os.replace(tmp, self.link)

    def replug(self) -> None:
        os.close(self.master)
        os.close(self.slave)
        self.pending.clear()
        time.sleep(0.2)  # a USB adapter takes a moment to come back
        self._open()

    def write(self, data: bytes | str) -> None:
        raw = data.encode() if isinstance(data, str) else data
        if self.bytewise:
            for i in range(len(raw)):
                os.write(self.master, raw[i : i + 1])
                time.sleep(0.0003)
        else:
            os.write(self.master, raw)

    def _wait(self, timeout: float | None) -> bool:
        """Wait for input; handle control lines and the relay meanwhile. True when the UART has bytes."""
        end = None if timeout is None else time.monotonic() + timeout
        watched: list[int | socket.socket] = [self.master, CONTROL_FD]
        if self.relay is not None:
            watched.append(self.relay)
        while True:
            left = None if end is None else max(0.0, end - time.monotonic())
            ready, _, _ = select.select(watched, [], [], left)
            if CONTROL_FD in ready:
                control(self)
                continue
            if self.relay is not None and self.relay in ready:
                self._relay_request()
                continue
            if self.master in ready:
                return True
            if end is not None and time.monotonic() >= end:
                return False

    def _relay_request(self) -> None:
        """One client of the power relay: a word in, ``ok`` out once switched (or ``error ...``)."""
        assert self.relay is not None
        conn, _ = self.relay.accept()
        with conn:
            conn.settimeout(5)
            word = b""
            try:
                while not word.endswith(b"\n"):
                    got = conn.recv(64)
                    if not got:
                        break
                    word += got
            except OSError:
                return
            wanted = word.decode(errors="replace").strip()
            if wanted not in ("on", "off"):
                conn.sendall(f"error: unknown word {wanted!r}\n".encode())
                return
            conn.sendall(b"ok\n")
        if wanted == "on" and not self.powered:
            raise PowerCycle
        if wanted == "off" and self.powered:
            raise PowerOff

    def discard_input(self) -> None:
        """Lose what sits in the UART: a board coming out of reset has an empty FIFO."""
        self.pending.clear()
        while select.select([self.master], [], [], 0)[0]:
            os.read(self.master, 65536)

    def pause(self, seconds: float) -> None:
        """Let time pass as a busy board does: control and relay still act, UART input waits."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            if self._wait(left):
                self._pull()

    def idle(self) -> None:
        """Off or hung: hear nothing on the UART, only the control line and the relay."""
        while True:
            if self._wait(None):
                self.discard_input()

    def _pull(self) -> None:
        data = os.read(self.master, 65536)
        if self.fifo_limit is not None:
            # A polled UART: what arrives while the CPU was busy overflows the FIFO.
            data = data[: max(0, self.fifo_limit - len(self.pending))]
        self.pending += data

    def getch(self, timeout: float | None = None) -> int | None:
        if not self.pending:
            if not self._wait(timeout):
                return None
            self._pull()
            if not self.pending:
                return None
        return self.pending.pop(0)

    # The xmodem package's getc/putc.
    def getc(self, size: int, timeout: float = 1) -> bytes | None:
        end = time.monotonic() + timeout
        while len(self.pending) < size:
            if not self._wait(max(0.0, end - time.monotonic())):
                return None
            self._pull()
        data = bytes(self.pending[:size])
        del self.pending[:size]
        return data

    def putc(self, data: bytes, timeout: float = 1) -> int:
        if data == ACK and self.reset_after_acks is not None:
            self.reset_after_acks -= 1
            if self.reset_after_acks < 0:
                raise PowerCycle
        os.write(self.master, bytes(data))
        return len(data)


CONTROL_FD = 0  # stdin, read unbuffered so that select() sees every line


def control(uart: Uart) -> None:
    """Act on the control lines that have come; a power-on unwinds whatever the board was doing."""
    data = os.read(CONTROL_FD, 4096)
    if not data:
        raise SystemExit(0)  # the test is gone
    switch: type[Exception] | None = None
    for word in data.decode().split():
        if word == "power-on":
            switch = PowerCycle
        elif word == "power-off":
            switch = PowerOff
        elif word == "replug":
            uart.replug()
            print(json.dumps({"replugged": uart.path}), flush=True)
        elif word == "quit":
            raise SystemExit(0)
    if switch is PowerCycle or (switch is PowerOff and uart.powered):
        raise switch


class Recorder:
    def __init__(self, path: Path) -> None:
        self.file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives as long as the process

    def __call__(self, **entry: object) -> None:
        self.file.write(json.dumps(entry) + "\n")


# ---- words --------------------------------------------------------------


class Incomplete(Exception):
    """An open quote: the line continues."""


def segments(line: str, *, posix: bool) -> list[str]:
    """Split a command line at unquoted ';' (and newlines); raise Incomplete on an open quote."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(line):
        ch = line[i]
        if ch == "'" or ch == '"' or (posix and ch == "`"):
            close = i + 1
            while close < len(line) and line[close] != ch:
                close += 2 if (ch == '"' and line[close] == "\\") else 1
            if close >= len(line):
                raise Incomplete
            current.append(line[i : close + 1])
            i = close + 1
        elif posix and line.startswith("$(", i):
            close = line.find(")", i)
            if close < 0:
                raise Incomplete
            current.append(line[i : close + 1])
            i = close + 1
        elif ch == "\\" and i + 1 < len(line):
            current.append(line[i : i + 2])
            i += 2
        elif ch in ";\n":
            parts.append("".join(current))
            current = []
            i += 1
        else:
            current.append(ch)
            i += 1
    parts.append("".join(current))
    return [p for p in parts if p.strip()]


def words(segment: str, variables: dict[str, str], *, posix: bool) -> tuple[list[str], bool]:
    """One command's words after expansion and quote removal, and whether a command
    substitution would have run.

    ``posix``: busybox sh rules (backslash escapes in double quotes, $(...) and
    backticks are command substitutions). U-Boot's hush: no command
    substitution, and backslashes are dropped even inside single quotes.
    """
    out: list[str] = []
    word: list[str] = []
    in_word = False
    substituted = False
    line = segment
    i = 0

    def expand(at: int) -> tuple[str, int]:
        nonlocal substituted
        rest = line[at + 1 :]
        if rest.startswith("?"):
            return variables.get("?", "0"), at + 2
        if rest.startswith("{"):
            close = rest.find("}")
            return variables.get(rest[1:close], ""), at + close + 2
        if posix and rest.startswith("("):
            substituted = True
            return "", at + rest.find(")") + 2
        n = 0
        while n < len(rest) and (rest[n].isalnum() or rest[n] == "_"):
            n += 1
        if n == 0:
            return "$", at + 1
        return variables.get(rest[:n], ""), at + 1 + n

    def end_word() -> None:
        nonlocal in_word
        if in_word:
            out.append("".join(word))
        word.clear()
        in_word = False

    while i < len(line):
        ch = line[i]
        if ch == "'":
            close = line.find("'", i + 1)
            word.append(line[i + 1 : close] if posix else line[i + 1 : close].replace("\\", ""))
            in_word = True
            i = close + 1
        elif ch == '"':
            i += 1
            in_word = True
            while line[i] != '"':
                c = line[i]
                if c == "\\" and (not posix or line[i + 1] in '"\\$`'):
                    word.append(line[i + 1])
                    i += 2
                elif c == "$":
                    value, i = expand(i)
                    word.append(value)
                elif c == "`" and posix:
                    substituted = True
                    i = line.find("`", i + 1) + 1
                else:
                    word.append(c)
                    i += 1
            i += 1
        elif ch == "\\":
            if i + 1 < len(line):
                word.append(line[i + 1])
                in_word = True
            i += 2
        elif ch == "$":
            value, i = expand(i)
            fields = value.split()  # an unquoted expansion splits into fields
            for n, field in enumerate(fields):
                if n:
                    end_word()
                word.append(field)
                in_word = True
        elif ch == "`" and posix:
            substituted = True
            i = line.find("`", i + 1) + 1
        elif ch in " \t":
            end_word()
            i += 1
        else:
            word.append(ch)
            in_word = True
            i += 1
    end_word()
    return out, substituted


# ---- memory ---------------------------------------------------------------


def initrd_member(initrd: bytes, name: str) -> str | None:
    """A file of a gzip'd newc cpio initrd (members may be concatenated, as the host appends its plan), or None.

    So a test can see what plan reached the board, as a real kernel's
    initramfs unpacker would find it; anything that is not such an
    initrd has no members.
    """
    try:
        data = gzip.decompress(initrd)
    except (OSError, EOFError, zlib.error):
        return None
    found = None
    at = 0
    while at + 110 <= len(data) and data[at:at + 6] == b"070701":
        filesize = int(data[at + 54:at + 62], 16)
        namesize = int(data[at + 94:at + 102], 16)
        name_end = at + 110 + namesize
        member = data[at + 110:name_end - 1].decode(errors="replace")
        body = (name_end + 3) & ~3
        if member == name:
            found = data[body:body + filesize].decode(errors="replace")  # a later member of the same name wins
        at = (body + filesize + 3) & ~3
        if member == "TRAILER!!!":  # the next archive, if any, starts at a 4-byte boundary after padding zeros
            while at < len(data) and data[at:at + 6] != b"070701":
                at += 1
    return found


class Memory:
    """Sparse RAM: what was loaded where. Unwritten bytes read as zero."""

    def __init__(self) -> None:
        self.blobs: dict[int, bytes] = {}

    def write(self, addr: int, data: bytes) -> None:
        self.blobs[addr] = data

    def read(self, addr: int, size: int) -> bytes:
        out = bytearray(size)
        for start, blob in self.blobs.items():
            lo, hi = max(addr, start), min(addr + size, start + len(blob))
            if lo < hi:
                out[lo - addr : hi - addr] = blob[lo - start : hi - start]
        return bytes(out)


# ---- the board ----------------------------------------------------------


class Board:
    def __init__(self, args: argparse.Namespace, uart: Uart, record: Recorder) -> None:
        self.uart = uart
        self.record = record
        self.flavour = FLAVOURS[args.flavour]
        self.prompt: str = args.prompt or self.flavour.prompt
        self.tftp_dir = Path(args.tftp_dir) if args.tftp_dir else None
        self.bootdelay = args.bootdelay
        self.login = args.login
        self.rng = random.Random(args.seed)
        self.faults: dict[str, str] = {}
        for fault in args.fault:
            name, _, value = fault.partition("=")
            self.faults[name] = value
        self.env: dict[str, str] = {}
        self.mem = Memory()
        self.recording = Path(args.kernel_log) if args.kernel_log else None
        self.playback_bps: int = args.playback_bps

    def out(self, text: str | bytes) -> None:
        self.uart.write(text)

    def garbage(self) -> None:
        if "garbage" in self.faults:
            noise = bytes(self.rng.choice([*range(1, 10), *range(14, 27), *range(128, 256)]) for _ in range(48))
            self.out(noise + b"\r\n")

    def hang(self) -> None:
        raise Hang

    def store(self, addr: int, data: bytes) -> None:
        """A load lands in RAM; with the bitflip fault, one bit in its middle is wrong (bad RAM, a noisy line)."""
        if "bitflip" in self.faults and data:
            damaged = bytearray(data)
            damaged[len(damaged) // 2] ^= 0x10
            data = bytes(damaged)
        self.mem.write(addr, data)

    # -- U-Boot --

    def power_on(self) -> None:
        self.env = {**self.flavour.env, "bootdelay": str(self.bootdelay)}
        self.mem = Memory()
        self.uart.reset_after_acks = None
        self.uart.discard_input()
        self.garbage()
        self.uboot()

    def uboot(self) -> None:
        f = self.flavour
        self.out(f"\r\n\r\n{f.signon}\r\n\r\n{f.banner}")
        if self.autoboot():
            self.uboot_command(self.env.get("bootcmd", ""))
        while True:
            self.out(self.prompt)
            line = self.uboot_readline()
            if line is not None:
                self.uboot_command(line)

    def autoboot(self) -> bool:
        """The countdown; False when a key stopped it."""
        delay = int(self.env.get("bootdelay", "2"))
        self.out(f"Hit any key to stop autoboot: {delay:2d} ")
        while delay > 0:
            for _ in range(10):
                if self.uart.getch(0.1) is not None:
                    self.out("\b\b\b 0 \r\n")
                    return False
            delay -= 1
            self.out(f"\b\b\b{delay:2d} ")
        self.out("\r\n")
        return True

    def uboot_readline(self) -> str | None:
        slow = float(self.faults.get("slow-echo", "0") or 0)
        self.uart.fifo_limit = FIFO if slow else None
        chars: list[str] = []
        try:
            while True:
                c = self.uart.getch()
                if c is None:
                    continue
                if slow:
                    time.sleep(slow)
                if c in (0x0D, 0x0A):
                    self.out("\r\n")
                    return "".join(chars)
                if c == 0x03:
                    self.out("<INTERRUPT>\r\n")
                    return None
                if c in (0x08, 0x7F):
                    if chars:
                        chars.pop()
                        self.out("\b \b")
                    continue
                chars.append(chr(c))
                self.out(bytes([c]))
        finally:
            self.uart.fifo_limit = None

    def uboot_command(self, line: str) -> None:
        try:
            parts = segments(line, posix=False)
        except Incomplete:
            self.out("syntax error\r\n")
            self.env["?"] = "1"
            return
        self.record(shell="u-boot", line=line)
        for part in parts:
            # hush expands each command when it runs: $? is the previous one's status.
            status = "$?" if "simple-parser" in self.faults else self.env.get("?", "0")
            argv, _ = words(part, {**self.env, "?": status}, posix=False)
            if not argv:
                continue
            self.record(shell="u-boot", argv=argv)
            self.env["?"] = str(self.uboot_run(argv))

    def uboot_run(self, argv: list[str]) -> int:
        cmd, args = argv[0], argv[1:]
        if self.faults.get("hang-on") == cmd:
            self.hang()
        if self.faults.get("reset-on") == cmd:
            self.out(f"{cmd}: working")
            time.sleep(0.05)
            raise PowerCycle
        handler = getattr(self, "ub_" + cmd.replace("-", "_"), None)
        if handler is None:
            self.out(f"Unknown command '{cmd}' - try 'help'\r\n")
            return 1
        result: int = handler(args)
        return result

    def ub_echo(self, args: list[str]) -> int:
        self.out(" ".join(args) + "\r\n")
        return 0

    def ub_true(self, args: list[str]) -> int:
        return 0

    def ub_false(self, args: list[str]) -> int:
        return 1

    def ub_printenv(self, args: list[str]) -> int:
        if not args:
            shown = {k: v for k, v in sorted(self.env.items()) if k != "?"}
            for name, value in shown.items():
                self.out(f"{name}={value}\r\n")
            size = sum(len(k) + len(v) + 2 for k, v in shown.items())
            self.out(f"\r\nEnvironment size: {size}/8188 bytes\r\n")
            return 0
        status = 0
        for name in args:
            if name in self.env and name != "?":
                self.out(f"{name}={self.env[name]}\r\n")
            else:
                self.out(f'## Error: "{name}" not defined\r\n')
                status = 1
        return status

    def ub_setenv(self, args: list[str]) -> int:
        if not args:
            self.out("setenv - set environment variables\r\n\r\nUsage:\r\n")
            return 1
        if len(args) == 1:
            self.env.pop(args[0], None)
        else:
            self.env[args[0]] = " ".join(args[1:])
        return 0

    def ub_run(self, args: list[str]) -> int:
        for name in args:
            if name not in self.env:
                self.out(f'## Error: "{name}" not defined\r\n')
                return 1
            self.uboot_command(self.env[name])
        return int(self.env.get("?", "0"))

    def ub_reset(self, args: list[str]) -> int:
        self.out(self.flavour.reset + "\r\n")
        raise PowerCycle

    def ub_crc32(self, args: list[str]) -> int:
        addr, size = int(args[0], 16), int(args[1], 16)
        crc = zlib.crc32(self.mem.read(addr, size))
        self.out(f"{self.flavour.crc} for {addr:08x} ... {addr + size - 1:08x} ==> {crc:08x}\r\n")
        return 0

    def ub_tftpboot(self, args: list[str]) -> int:
        addr = int(args[0], 16) if len(args) > 1 else int(self.env.get("loadaddr", "0x40400000"), 16)
        name = args[-1]
        if self.tftp_dir is None:
            for needed in ("ipaddr", "serverip"):
                if not self.env.get(needed):
                    self.out(f"*** ERROR: `{needed}' not set\r\n")
                    return 1
        server = self.env.get("serverip", "10.0.2.2")
        self.out(
            f"Using virtio-net#31 device\r\nTFTP from server {server}; our IP address is "
            f"{self.env.get('ipaddr', '10.0.2.15')}\r\nFilename '{name}'.\r\nLoad address: {addr:#x}\r\nLoading: "
        )
        if "tftp-timeout" in self.faults:
            self.out("T T T T T T T T T T \r\nRetry count exceeded; starting again\r\n")
            return 1
        started = time.monotonic()
        if self.tftp_dir is None:
            fetched = self.tftp_fetch(server, name)
            if fetched is None:
                return 1
            data = fetched
        else:
            path = self.tftp_dir / name
            if not path.is_file():
                self.out("\r\nTFTP error: 'File not found' (1)\r\nNot retrying...\r\n")
                return 1
            data = path.read_bytes()
            self.out("#" * min(65, 1 + len(data) // 10240))
        if "reserved" in self.faults:
            lo_text, _, size_text = self.faults["reserved"].partition(":")
            lo, size = int(lo_text, 16), int(size_text, 16)
            if addr < lo + size and lo < addr + len(data):
                self.out("#\r\nTFTP error: trying to overwrite reserved memory...\r\n")
                return 1
        rate = len(data) / max(time.monotonic() - started, 1e-3) / (1 << 20)
        self.out(f"\r\n\t {rate:.1f} MiB/s\r\ndone\r\n")
        self.out(f"Bytes transferred = {len(data)} ({len(data):x} hex)\r\n")
        self.store(addr, data)
        self.env["filesize"] = f"{len(data):x}"
        self.env["fileaddr"] = f"{addr:x}"
        return 0

    def tftp_fetch(self, server: str, name: str) -> bytes | None:
        """A real TFTP read from ``server``, printing U-Boot's progress marks; None after U-Boot's error text.

        U-Boot (no tsize option) prints a '#' every 10 blocks and wraps after
        65 of them. The download blocks the board, as U-Boot's net loop does.
        """
        port = int(self.env.get("tftpdstp", "69"))
        blocks = [0]

        def progress(packet: object) -> None:
            blocks[0] += 1
            if (blocks[0] - 1) % 10 == 0:
                self.out("#")
            if blocks[0] % (10 * 65) == 0:
                self.out("\r\n\t ")

        received = io.BytesIO()
        try:
            client = tftpy.TftpClient(server, port, options={"blksize": UBOOT_TFTP_BLOCKSIZE})
            client.download(name, received, packethook=progress, timeout=1, retries=3)
        except tftpy.TftpTimeout:
            self.out("T T T \r\nRetry count exceeded; starting again\r\n")
            return None
        except tftpy.TftpFileNotFoundError:
            self.out("\r\nTFTP error: 'File not found' (1)\r\nNot retrying...\r\n")
            return None
        except (tftpy.TftpException, OSError) as exc:
            # tftpy says nothing but "Received ERR from server: ..." for the other codes.
            self.out(f"\r\nTFTP error: '{exc}' (0)\r\nStarting again\r\n\r\n")
            return None
        return received.getvalue()

    def ub_dhcp(self, args: list[str]) -> int:
        self.out("BOOTP broadcast 1\r\nDHCP client bound to address 10.0.2.15 (2 ms)\r\n")
        self.env.update(ipaddr="10.0.2.15", netmask="255.255.255.0", gatewayip="10.0.2.2")
        if self.env.get("autoload", "yes") in ("no", "n", "0"):
            return 0
        # autoload: U-Boot goes on to fetch a file named after the address.
        self.out("*** Warning: no boot file name; using '0A00020F.img'\r\n")
        return self.ub_tftpboot(["0A00020F.img"])

    ub_tftp = ub_tftpboot

    def ub_loady(self, args: list[str]) -> int:
        return self.serial_load(args, ymodem=True)

    def ub_loadx(self, args: list[str]) -> int:
        return self.serial_load(args, ymodem=False)

    def serial_load(self, args: list[str], *, ymodem: bool) -> int:
        addr = int(args[0], 16) if args else int(self.env.get("loadaddr", "0x40400000"), 16)
        mode = "ymodem" if ymodem else "xmodem"
        self.out(f"## Ready for binary ({mode}) download to 0x{addr:08X} at 115200 bps...\r\n")
        if "reset-during-transfer" in self.faults:
            self.uart.reset_after_acks = 20
        stream = io.BytesIO()
        received = self.ymodem_receive(stream) if ymodem else self.xmodem_receive(stream)
        if received is None:
            self.out(f"## Binary ({mode}) download aborted\r\n")
            return 1
        data = stream.getvalue()[:received]
        self.store(addr, data)
        self.out(f"## Total Size      = 0x{len(data):08x} = {len(data)} Bytes\r\n")
        if self.flavour is FLAVOURS["2023"]:
            self.out(f"## Start Addr      = 0x{addr:08X}\r\n")
        self.env["filesize"] = f"{len(data):x}"
        return 0

    def ymodem_receive(self, stream: io.BytesIO) -> int | None:
        uart = self.uart
        header = None
        for _ in range(10):  # like xyzModem_stream_open: ask, wait ~2.5 s, ask again
            uart.putc(CRC)
            first = uart.getc(1, 2.5)
            if first == SOH:
                block = uart.getc(2 + 128 + 2, 2)
                if block and block[:2] == b"\x00\xff" and XMODEM(uart.getc, uart.putc).calc_crc(
                    block[2:130]
                ) == int.from_bytes(block[130:], "big"):
                    header = block[2:130]
                    break
                uart.putc(NAK)
        if header is None:
            return None
        name, _, rest = header.partition(b"\0")
        size = int(rest.split(b"\0")[0].split(b" ")[0] or b"0")
        uart.putc(ACK)
        self.record(shell="u-boot", ymodem_header={"name": name.decode(), "size": size})
        ask_again = "ymodem-c-after-header" in self.faults
        first_request = [True]

        def putc(data: bytes, timeout: float = 1) -> int:
            # xyzModem does not ask for block 1 after the header: drop the
            # package's first 'C' unless told to behave like lrzsz.
            if first_request[0] and data == CRC and not ask_again:
                first_request[0] = False
                return 1
            first_request[0] = False
            return uart.putc(data)

        got: int | None = XMODEM(uart.getc, putc).recv(stream, crc_mode=1, retry=10, timeout=3, quiet=True)
        if got is None:
            return None
        uart.putc(CRC)  # ask for the end-of-batch header
        end = uart.getc(1 + 2 + 128 + 2, 5)
        uart.putc(ACK)
        if end is None or end[0:1] != SOH:
            return None
        return min(size, got) if size else got

    def xmodem_receive(self, stream: io.BytesIO) -> int | None:
        class StripEOF(io.BytesIO):
            """U-Boot drops trailing ^Z from a block that ends in three of them."""

            def write(self, data: bytes) -> int:  # type: ignore[override]
                block = bytes(data)
                if block.endswith(b"\x1a\x1a\x1a"):
                    block = block.rstrip(b"\x1a")
                return stream.write(block)

        got = XMODEM(self.uart.getc, self.uart.putc).recv(StripEOF(), crc_mode=1, retry=10, timeout=3, quiet=True)
        return None if got is None else len(stream.getvalue())

    def ub_bootz(self, args: list[str]) -> int:
        addr = int(args[0], 16) if args else int(self.env.get("kernel_addr_r", "0x40400000"), 16)
        header = self.mem.read(addr + 0x24, 12)
        magic, start, end = (int.from_bytes(header[i : i + 4], "little") for i in (0, 4, 8))
        if magic != ZIMAGE_MAGIC:
            self.out("Bad Linux ARM zImage magic!\r\n")
            return 1
        self.out(f"Kernel image @ {addr:#x} [ {start:#08x} - {end:#08x} ]\r\n")
        if "ramdisk-corrupt" in self.faults:
            self.out("Wrong Ramdisk Image Format\r\nRamdisk image is corrupt or invalid\r\n")
            return 1
        if self.recording is not None:
            return self.boot_recorded(addr, end - start, args)
        if len(args) > 2:
            self.out(f"## Flattened Device Tree blob at {args[2].removeprefix('0x')}\r\n")
            self.out(f"   Booting using the fdt blob at {args[2]}\r\n")
        self.out("\r\nStarting kernel ...\r\n\r\n")
        if "bootloop" in self.faults:
            time.sleep(0.05)
            raise PowerCycle
        if "hang-after-starting-kernel" in self.faults:
            self.hang()
        self.linux()
        return 0

    def boot_recorded(self, addr: int, kernel_size: int, args: list[str]) -> int:
        """bootz ADDR [INITRD[:SIZE] | -] FDT, then the recorded kernel's console."""
        assert self.recording is not None
        fdt_addr = int(args[2], 16) if len(args) > 2 else None
        if fdt_addr is None or int.from_bytes(self.mem.read(fdt_addr, 4), "big") != FDT_MAGIC:
            self.out("ERROR: Did not find a cmdline Flattened Device Tree\r\nCould not find a valid device tree\r\n")
            return 1
        fdt_size = int.from_bytes(self.mem.read(fdt_addr + 4, 4), "big")
        initrd: dict[str, object] | None = None
        if len(args) > 1 and args[1] != "-":
            where, _, size_text = args[1].partition(":")
            rd_addr = int(where, 16)
            rd_size = int(size_text, 16) if size_text else int(self.env.get("filesize", "0"), 16)
            data = self.mem.read(rd_addr, rd_size)
            initrd = {"addr": rd_addr, "size": rd_size, "crc32": zlib.crc32(data),
                      "agent_plan": initrd_member(data, "cmatool/plan")}
        self.out(f"## Flattened Device Tree blob at {fdt_addr:08x}\r\n   Booting using the fdt blob at {fdt_addr:#x}\r\n"
                 f"Working FDT set to {fdt_addr:x}\r\n"
                 f"   Using Device Tree in place at {fdt_addr:08x}, end {fdt_addr + fdt_size + FDT_PAD - 1:08x}\r\n"
                 f"Working FDT set to {fdt_addr:x}\r\n\r\nStarting kernel ...\r\n\r\n")
        recording = self.recording.read_bytes()
        shown = re.search(rb"Kernel command line: ([^\r\n]*)", recording)
        self.record(shell="u-boot", boot={
            "kernel": {"addr": addr, "size": kernel_size, "crc32": zlib.crc32(self.mem.read(addr, kernel_size))},
            "initrd": initrd,
            "fdt": {"addr": fdt_addr, "size": fdt_size, "crc32": zlib.crc32(self.mem.read(fdt_addr, fdt_size))},
            "bootargs": self.env.get("bootargs", ""),
            "recorded_cmdline": shown.group(1).decode(errors="replace") if shown else None,
        })
        if "bootloop" in self.faults:
            time.sleep(0.05)
            raise PowerCycle
        if "hang-after-starting-kernel" in self.faults:
            self.hang()
        self.play_back(recording)
        return 0

    def play_back(self, recording: bytes) -> None:
        """The recorded console, line by line, at the line's pace, in chunks; then silence."""
        reset_at = int(self.faults.get("kernel-reset-at") or 0)
        hang_at = int(self.faults.get("kernel-hang-at") or 0)
        sent = 0
        started = time.monotonic()
        for number, line in enumerate(recording.splitlines(keepends=True), start=1):
            for at in range(0, len(line), PLAYBACK_CHUNK):
                chunk = line[at : at + PLAYBACK_CHUNK]
                self.out(chunk)
                sent += len(chunk)
                # The wire cannot carry more than bps: wait until it would have.
                self.uart.pause(started + sent / self.playback_bps - time.monotonic())
            if number == reset_at:
                raise PowerCycle
            if number == hang_at:
                self.hang()
        # The recording ends with the kernel switching the board off ("reboot: Power down").
        self.hang()

    ub_bootm = ub_bootz

    # -- Linux --

    def kernel_log(self) -> None:
        bootargs = self.env.get("bootargs", "")
        lines = [
            "Booting Linux on physical CPU 0x0",
            "Linux version 6.1.0-50-armmp (debian-kernel@lists.debian.org) #1 SMP Debian 6.1.176-1",
            "CPU: ARMv7 Processor [414fc0f0] revision 0 (ARMv7), cr=30c5387d",
            "OF: fdt: Machine model: linux,dummy-virt",
            "Reserved memory: created CMA memory pool at 0x6c000000, size 64 MiB",
            "OF: reserved mem: initialized node linux,cma, compatible id shared-dma-pool",
            f"Kernel command line: {bootargs}",
            "Memory: 399520K/524288K available (12288K kernel code, 26464K reserved, 98304K cma-reserved)",
        ]
        for n, line in enumerate(lines):
            self.out(f"[    0.{n:06d}] {line}\r\n")
            if n == 3:
                self.garbage()
        if "panic-at-boot" in self.faults:
            reason = "VFS: Unable to mount root fs on unknown-block(0,0)"
            self.out(f"[    1.200000] Kernel panic - not syncing: {reason}\r\n")
            self.out(f"[    1.200100] ---[ end Kernel panic - not syncing: {reason} ]---\r\n")
            self.hang()
        self.out("[    1.650000] Run /init as init process\r\n")

    def linux(self) -> None:
        self.kernel_log()
        self.out("\r\nPlease press Enter to activate this console. ")
        while self.uart.getch() not in (0x0D, 0x0A):
            pass
        if self.login:
            user, _, password = self.login.partition(":")
            while True:
                self.out("\r\naquila login: ")
                name = self.sh_readline(echo=True)
                self.out("Password: ")
                given = self.sh_readline(echo=False)
                self.out("\r\n")
                if name == user and given == password:
                    break
                self.out("Login incorrect\r\n")
        self.out(
            "\r\n\r\nBusyBox v1.35.0 (Debian 1:1.35.0-4+b3) built-in shell (ash)\r\n"
            "Enter 'help' for a list of built-in commands.\r\n\r\n"
        )
        status = 0
        while True:
            self.out("/ # \x1b[6n")
            line = self.sh_readline(echo=True)
            while True:
                try:
                    parts = segments(line, posix=True)
                    break
                except Incomplete:
                    self.out("> ")
                    line += "\n" + self.sh_readline(echo=True)
            self.record(shell="linux", line=line)
            for part in parts:
                argv, substituted = words(part, {"?": str(status)}, posix=True)
                if argv:
                    self.record(shell="linux", argv=argv, substitution=substituted)
                    status = self.sh_run(argv)

    def sh_readline(self, *, echo: bool) -> str:
        chars: list[str] = []
        while True:
            c = self.uart.getch()
            if c is None:
                continue
            if c in (0x0D, 0x0A):
                if echo:
                    self.out("\r\n")
                return "".join(chars)
            if c in (0x08, 0x7F):
                if chars:
                    chars.pop()
                    if echo:
                        self.out("\b \b")
                continue
            chars.append(chr(c))
            if echo:
                self.out(bytes([c]))

    def sh_run(self, argv: list[str]) -> int:
        cmd, args = argv[0], argv[1:]
        if self.faults.get("hang-on") == cmd:
            self.hang()
        if self.faults.get("panic-on") == cmd:
            self.out("[   12.345678] Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b\r\n")
            self.hang()
        if self.faults.get("oops-on") == cmd:
            self.out("[   12.345678] Internal error: Oops: 5 [#1] SMP ARM\r\n")
        if cmd == "echo":
            newline = "\r\n"
            if args[:1] == ["-n"]:
                newline, args = "", args[1:]
            self.out(" ".join(args) + newline)
            return 0
        if cmd == "printf":
            fmt = args[0].replace("\\n", "\n")
            values = iter(args[1:])
            text = ""
            i = 0
            while i < len(fmt):
                if fmt[i] == "%" and i + 1 < len(fmt):
                    text += next(values, "") if fmt[i + 1] == "s" else str(int(next(values, "0") or 0))
                    i += 2
                else:
                    text += fmt[i]
                    i += 1
            self.out(text.replace("\n", "\r\n"))
            return 0
        if cmd in ("true", "dmesg"):
            return 0
        if cmd == "false":
            return 1
        if cmd == "sleep":
            time.sleep(float(args[0]))
            return 0
        if cmd == "reboot":
            self.out("[   20.000000] reboot: Restarting system\r\n")
            raise PowerCycle
        if cmd == "cat":
            status = 0
            for name in args:
                content = {
                    "/proc/meminfo": MEMINFO,
                    "/proc/cmdline": self.env.get("bootargs", "") + "\n",
                }.get(name)
                if content is None:
                    self.out(f"cat: can't open '{name}': No such file or directory\r\n")
                    status = 1
                else:
                    self.out(content.replace("\n", "\r\n"))
            return status
        self.out(f"sh: {cmd}: not found\r\n")
        return 127


MEMINFO = """MemTotal:         497824 kB
MemFree:          401236 kB
MemAvailable:     420112 kB
Buffers:               0 kB
Cached:            10232 kB
SwapCached:            0 kB
Active:             2440 kB
Inactive:           9864 kB
Shmem:              8544 kB
CmaTotal:          98304 kB
CmaFree:           98048 kB
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--flavour", choices=sorted(FLAVOURS), default="2023")
    parser.add_argument("--prompt")
    parser.add_argument("--tftp-dir")
    parser.add_argument("--record", required=True)
    parser.add_argument("--link")
    parser.add_argument("--bootdelay", type=int, default=2)
    parser.add_argument("--login", help="USER:PASSWORD: the shell asks to log in")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--fault", action="append", default=[])
    parser.add_argument("--kernel-log", help="a real kernel's console.log, played back by bootz")
    parser.add_argument("--playback-bps", type=int, default=DEFAULT_PLAYBACK_BPS,
                        help="bytes per second of the playback (default: a 115200-baud line)")
    parser.add_argument("--power-socket", help="Unix socket of the board's power relay")
    args = parser.parse_args()
    logging.getLogger("tftpy").setLevel(logging.CRITICAL)  # U-Boot's own words go to the console instead
    faults = {f.partition("=")[0] for f in args.fault}
    uart = Uart(Path(args.link) if args.link else None, "bytewise" in faults,
                Path(args.power_socket) if args.power_socket else None)
    record = Recorder(Path(args.record))
    board = Board(args, uart, record)
    print(json.dumps({"pty": uart.path, "link": args.link}), flush=True)
    start = False
    while True:
        try:
            if start:
                start = False
                board.power_on()  # returns only by an exception: a reset, power off, a hang
            uart.idle()  # off, or hung: deaf until switched
        except PowerCycle:
            uart.powered = start = True
            record(power="on")
        except PowerOff:
            uart.powered = False
            record(power="off")
        except Hang:
            record(halted=True)


if __name__ == "__main__":
    main()
