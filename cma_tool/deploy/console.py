"""The console engine: one serial console, read continuously, logged, matched.

The same code drives a real board on a USB serial adapter (``/dev/ttyUSB0``),
a lab console server (``rfc2217://host:port``, ``socket://host:port``) and the
emulated board's serial (a socket, or the file QEMU writes it to): pyserial's
``serial_for_url`` opens all of them.

A background thread does blocking reads (never sleep-and-poll: a reader that
naps slows a QEMU guest whose serial output stalls until it is read; only a
console followed in a file, whose writer never waits, is polled) and
appends every byte to an in-memory buffer and, before anyone can match it, to
``<name>.log`` (the raw bytes, exactly) and ``<name>.timing`` (one readable
line per chunk: when it came, where it sits in the .log; what we sent; port
events). Whatever the board said before a crash is on disk.

:meth:`Console.expect` searches the unread part of the buffer for the wanted
patterns and, in the same pass, for the bad patterns (board reset, panic,
transfer errors); a bad pattern that comes first raises a classified error
naming the pattern and showing the bytes around it.
"""

from __future__ import annotations

import datetime
import functools
import re
import secrets
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import serial

from cma_tool.deploy import protocol_follow
from cma_tool.deploy.protocol_unix import register as _register_our_urls
from cma_tool.errors import CmaToolError, InfraError, TargetError

_register_our_urls()  # the emulated board's console is unix://@name or follow:///path

PatternLike = str | bytes | re.Pattern[bytes] | re.Pattern[str]

#: Bytes of context shown before a bad pattern or at a timeout.
TAIL_BYTES = 500
_READ_TIMEOUT = 0.25
_CHUNK = 4096  # the most the reader hands over at once
#: The UART receive FIFO of the S5PV210 (and the PL011 QEMU emulates) holds 16 bytes.
UART_FIFO_BYTES = 16


@dataclass(frozen=True)
class Match:
    """What :meth:`Console.expect` found."""

    index: int  # which of the patterns matched
    pattern: re.Pattern[bytes]
    before: str  # text between the previous match and this one
    text: str  # the matched text
    groups: tuple[str | None, ...]

    def group(self, number: int) -> str | None:
        return self.groups[number - 1] if number else self.text


@dataclass(frozen=True)
class BadPattern:
    """Output that means something went wrong, whatever we were waiting for."""

    name: str
    regex: re.Pattern[bytes]
    error: type[CmaToolError]
    what: str
    hint: str = ""


def _bad(name: str, regex: bytes, error: type[CmaToolError], what: str, hint: str = "") -> BadPattern:
    return BadPattern(name, re.compile(regex, re.MULTILINE), error, what, hint)


#: Checked on every read. U-Boot's own messages, then the kernel's (LAVA and
#: U-Boot test/py keep the same list). Classified by whose fault it is: the
#: board (TargetError) or the transfer path, network and images (InfraError).
DEFAULT_BAD_PATTERNS: tuple[BadPattern, ...] = (
    _bad(
        "uboot-signon",
        rb"^U-Boot (?:SPL )?\d{4}\.\d{2}[^\r\n]*\(",
        TargetError,
        "the board reset: U-Boot signed on again",
        "look above the sign-on for the last thing the board did (a watchdog, a crash, a power dip)",
    ),
    _bad("resetting-cpu", rb"Resetting CPU", TargetError, "U-Boot reset the board"),
    _bad(
        "tftp-retry",
        rb"Retry count exceeded",
        InfraError,
        "a network transfer gave up (TFTP server or link)",
        "check the TFTP server, serverip/ipaddr and the cable",
    ),
    _bad(
        "tftp-reserved",
        rb"TFTP error: trying to overwrite reserved memory",
        TargetError,
        "a load address lies in memory U-Boot has reserved",
        "move the load address (kernel_addr_r, fdt_addr_r, ramdisk_addr_r) off U-Boot's own and "
        "the reserved-memory regions: a CMA/device-tree placement bug",
    ),
    _bad(
        "bad-image-magic",
        # U-Boot 2011-2020: "Bad Linux ARM zImage magic!"; 2023.01's bootz: "zimage: Bad magic!"
        rb"Bad Linux ARM\S* (?:zImage |Image )?magic|zimage: Bad magic!",
        InfraError,
        "the kernel image in memory is not a kernel",
        "the file sent is wrong or truncated, or a later load overwrote it (overlapping load addresses)",
    ),
    _bad(
        "ramdisk-corrupt",
        rb"Ramdisk image is corrupt or invalid",
        InfraError,
        "the ramdisk in memory is corrupt",
        "check the file sent, its size (${filesize}) and that no later load overlapped it",
    ),
    _bad(
        "uboot-alloc",
        rb"ERROR: Failed to allocate",
        TargetError,
        "U-Boot could not place the device tree or ramdisk",
        "fdt_high/initrd_high or the memory layout leave no room",
    ),
    _bad("kernel-oops", rb"\bOops(?:: | - )", TargetError, "the kernel oopsed"),
    _bad("kernel-bug", rb"\bBUG: ", TargetError, "the kernel hit a BUG"),
    _bad("kernel-panic", rb"Kernel panic - not syncing", TargetError, "the kernel panicked"),
)

# No R, I or D: a marker never spells ERROR, FAIL, WARN, INFO or DEBUG, which
# a log scanner (or one of our bad patterns) might flag.
_MARKER_ALPHABET = "ABCEFGHJKLMNOPQSTUVWXYZ"


def new_marker(length: int = 10) -> str:
    """A fresh marker to frame one command's output (labgrid's idea)."""
    return "".join(secrets.choice(_MARKER_ALPHABET) for _ in range(length))


def split_marker(marker: str) -> str:
    """The marker as typed: split by quotes, so the echoed command line never contains it."""
    half = len(marker) // 2
    return f"'{marker[:half]}''{marker[half:]}'"


def show_bytes(data: bytes) -> str:
    """Console bytes as readable text: printable as is, the rest escaped (\\r, \\x1b...)."""
    out = []
    text = data.decode("utf-8", errors="backslashreplace")
    for ch in text:
        code = ord(ch)
        if ch in "\n\t" or 32 <= code < 127 or code >= 160:
            out.append(ch)
        elif ch == "\r":
            out.append("\\r")
        else:
            out.append(f"\\x{code:02x}")
    return "".join(out)


def compile_pattern(pattern: PatternLike) -> re.Pattern[bytes]:
    """Every pattern becomes a bytes regex; text patterns are UTF-8 encoded, MULTILINE."""
    if isinstance(pattern, re.Pattern):
        if isinstance(pattern.pattern, bytes):
            return pattern
        return re.compile(pattern.pattern.encode(), pattern.flags & ~re.UNICODE | re.MULTILINE)
    raw = pattern.encode() if isinstance(pattern, str) else pattern
    return re.compile(raw, re.MULTILINE)


def _decode(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")


class Console:
    """One console, opened by device path or pyserial URL; use as a context manager.

    ``default_timeout`` applies to :meth:`expect` calls without their own.
    ``reconnect_timeout`` bounds how long a lost port (USB adapter
    re-enumerated, console server dropped) is retried before InfraError.
    ``max_match`` is the longest stretch a single pattern match may span: only
    the new bytes and that much before them are searched again on each read.
    """

    def __init__(
        self,
        url: str,
        log_dir: Path,
        *,
        name: str = "console",
        baudrate: int = 115200,
        default_timeout: float = 30.0,
        open_timeout: float = 3.0,
        reconnect_timeout: float = 10.0,
        bad_patterns: Sequence[BadPattern] = DEFAULT_BAD_PATTERNS,
        max_match: int = 1024,
    ) -> None:
        self.url = url
        self.baudrate = baudrate
        self.default_timeout = default_timeout
        self.open_timeout = open_timeout
        self.reconnect_timeout = reconnect_timeout
        self.bad_patterns = tuple(bad_patterns)
        self.max_match = max_match
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self.timing_path = log_dir / f"{name}.timing"
        self._buf = bytearray()
        self._pos = 0  # everything before this has been matched (consumed)
        self._cond = threading.Condition()
        self._disabled: dict[str, int] = {}
        self._port: Any = None
        self._port_lock = threading.Lock()  # guards swapping the port vs writing to it
        self._generation = 0  # bumps on every (re)open
        self._fatal: InfraError | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._log: Any = None
        self._timing: Any = None
        self._timing_lock = threading.Lock()  # the reader and the sender both write it
        self._t0 = 0.0
        self._log_offset = 0
        # A follow:// port whose file is our .log (QEMU writing the console there): we only read it.
        self._log_is_port = url.startswith("follow://") and protocol_follow.parse(url)[0] == self.log_path.resolve()

    # ---- lifecycle -------------------------------------------------------

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def open(self) -> None:
        if not self._log_is_port:
            self._log = open(self.log_path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
        self._timing = open(self.timing_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self._t0 = time.monotonic()
        now = datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")
        how = (f"reading {self.log_path.name} as the port writes it, from byte 0" if self._log_is_port else
               f"appending to {self.log_path.name} at byte {self.log_path.stat().st_size}")
        self._timing.write(
            f"# console {self.url} opened {now}; {how}\n"
            "# seconds-since-open  < offset-in-.log length (received) | > length bytes-sent"
            " | ! event\n"
        )
        self._log_offset = 0 if self._log_is_port else self.log_path.stat().st_size
        try:
            self._port = self._open_port(self.open_timeout)
        except InfraError:
            self._close_logs()
            raise
        self._thread = threading.Thread(target=self._read_loop, name=f"console-reader {self.url}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the reader, close the port and the logs. Safe to call twice."""
        self._stopping.set()
        port = self._port
        if port is not None:
            cancel = getattr(port, "cancel_read", None)
            if cancel is not None:
                try:
                    cancel()
                except (OSError, serial.SerialException):
                    pass
            # pyserial's socket:// port has no cancel_read(): its reader would sit in select()
            # until the read timeout, and every run would wait that long to join it. Shutting
            # the socket down wakes the select at once (reaching into pyserial's _socket: the
            # one handle it has to the connection).
            sock = getattr(port, "_socket", None)
            if isinstance(sock, socket.socket):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._port_lock:
            if self._port is not None:
                _close_port(self._port)
                self._port = None
        self._close_logs()

    def _close_logs(self) -> None:
        with self._timing_lock:
            for f in (self._log, self._timing):
                if f is not None and not f.closed:
                    f.close()

    def _open_port(self, timeout: float) -> Any:
        """Open the port, retrying with backoff until ``timeout`` (an adapter may be enumerating)."""
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            try:
                port = serial.serial_for_url(
                    self.url,
                    baudrate=self.baudrate,
                    # A bounded blocking read: returns at once when a byte comes,
                    # wakes up now and then only to notice close().
                    timeout=_READ_TIMEOUT,
                    do_not_open=True,
                )
                if "://" not in self.url:
                    port.exclusive = True  # two consoles must never share a real port
                port.open()
                if self._log_is_port:
                    port.skip_to(self._log_offset)  # a reopened port: the bytes before are read already
                self._generation += 1
                return port
            except (OSError, serial.SerialException, ValueError) as exc:
                if self._stopping.is_set() or time.monotonic() + delay > deadline:
                    raise InfraError(
                        f"cannot open console {self.url}: {exc}",
                        hint="check the cable/adapter, the device path or URL, and that no other "
                        "program (a terminal, another run) holds the port",
                    ) from None
                # Backoff between open attempts, cut short by close(): a console whose other end
                # went away for good (QEMU powered off) must not hold up the run's end.
                self._stopping.wait(delay)
                delay = min(delay * 2, 1.0)

    # ---- the reader thread ----------------------------------------------

    def _read_loop(self) -> None:
        while not self._stopping.is_set():
            port = self._port
            data = b""
            try:
                data = port.read(1)
                # Take what else is already there, but hand over at most a chunk at a
                # time: a board that never pauses must still reach the log and expect().
                while data and len(data) < _CHUNK:
                    more = self._read_waiting(port, _CHUNK - len(data))
                    if not more:
                        break
                    data += more
            except (OSError, serial.SerialException, AttributeError, TypeError) as exc:
                # AttributeError/TypeError: pyserial's posix port, closed under a read.
                if data:
                    # What arrived before the port went away (QEMU powering off right after
                    # its last line) is kept: it is often the part that matters.
                    self._record(bytes(data))
                if self._stopping.is_set():
                    return
                if not self._reconnect(exc):
                    return
                continue
            if data:
                self._record(bytes(data))

    def _read_waiting(self, port: Any, limit: int) -> bytes:
        """What has arrived already, up to ``limit`` bytes, without waiting."""
        if self.url.startswith(("socket://", "unix://")):
            # pyserial's socket:// says in_waiting is 1 whenever anything is there
            # (it polls the socket), which would mean one recv per byte: about
            # 230 KB/s, slower than QEMU writes. A zero-timeout read takes it all.
            port.timeout = 0
            try:
                return bytes(port.read(limit))
            finally:
                port.timeout = _READ_TIMEOUT
        waiting = port.in_waiting
        return bytes(port.read(min(waiting, limit))) if waiting else b""

    def _record(self, data: bytes) -> None:
        # Disk first: when expect() raises, the bytes that led to it are in the log.
        if not self._log_is_port:
            self._log.write(data)
        self._timing_line(f"< {self._log_offset} {len(data)}")
        self._log_offset += len(data)
        with self._cond:
            self._buf += data
            self._cond.notify_all()

    def _timing_line(self, text: str) -> None:
        with self._timing_lock:
            if self._timing is not None and not self._timing.closed:
                self._timing.write(f"{time.monotonic() - self._t0:.6f} {text}\n")

    def _event(self, text: str) -> None:
        self._timing_line(f"! {text}")

    def _reconnect(self, exc: BaseException) -> bool:
        self._event(f"port lost: {exc}")
        with self._port_lock:
            try:
                self._port.close()
            except (OSError, serial.SerialException, AttributeError, TypeError):
                pass
            try:
                self._port = self._open_port(self.reconnect_timeout)
            except InfraError as err:
                fatal = InfraError(
                    f"console {self.url} was lost ({exc}) and did not come back within "
                    f"{self.reconnect_timeout:.0f} s: {err.message}",
                    hint=err.hint,
                )
                self._event("gave up reconnecting")
                with self._cond:
                    self._fatal = fatal
                    self._cond.notify_all()
                return False
        self._event("reconnected")
        with self._cond:
            self._cond.notify_all()
        return True

    # ---- sending ---------------------------------------------------------

    def send(self, data: bytes | str, *, log_text: bool = True) -> None:
        """Write bytes as they are. ``log_text=False`` logs only the length (binary transfers)."""
        raw = data.encode() if isinstance(data, str) else data
        deadline = time.monotonic() + self.reconnect_timeout
        while True:
            self._raise_fatal()
            generation = self._generation
            try:
                with self._port_lock:
                    self._port.write(raw)
                break
            except (OSError, serial.SerialException, AttributeError, TypeError) as exc:
                if self._stopping.is_set():
                    raise InfraError(f"console {self.url} is closed") from None
                # The reader notices the lost port and reopens it; wait for that.
                with self._cond:
                    self._cond.wait_for(
                        functools.partial(self._port_replaced, generation),
                        timeout=max(0.0, deadline - time.monotonic()),
                    )
                if self._generation == generation and time.monotonic() >= deadline:
                    raise InfraError(f"cannot write to console {self.url}: {exc}") from None
        shown = show_bytes(raw).replace("\n", "\\n") if log_text else "<binary>"
        if len(shown) > 200:
            shown = shown[:200] + "..."
        self._timing_line(f"> {len(raw)} {shown}")

    def _port_replaced(self, generation: int) -> bool:
        return self._generation != generation or self._fatal is not None

    def sendline(self, line: str = "") -> None:
        self.send(line + "\n")

    def send_paced(self, text: str, *, chunk: int = UART_FIFO_BYTES, echo_timeout: float = 5.0) -> None:
        """Type ``text`` in chunks no larger than the UART FIFO, waiting for each chunk's echo.

        Bootloaders poll their UART without interrupts and drop what overflows
        the FIFO while they are busy echoing; waiting for the echo keeps at
        most one FIFO's worth in flight. Raises TargetError when an echo does
        not come within ``echo_timeout``.
        """
        raw = text.encode()
        for start in range(0, len(raw), chunk):
            piece = raw[start : start + chunk]
            self.send(piece)
            found = self._wait([re.compile(re.escape(piece))], echo_timeout)
            if found is None:
                raise self._timeout_error(
                    TargetError,
                    f"the board did not echo {show_bytes(piece)!r} within {echo_timeout:.1f} s",
                    hint="the board stopped reading its console (hung, or busy in a command), "
                    "or it does not echo what it receives",
                )

    # ---- matching --------------------------------------------------------

    def expect(
        self,
        patterns: PatternLike | Sequence[PatternLike],
        timeout: float | None = None,
        *,
        blame: type[CmaToolError] = TargetError,
        waiting_for: str = "",
    ) -> Match:
        """Wait for the first of ``patterns``; consume the text up to the end of the match.

        A pattern is taken as soon as it matches what has arrived so far, so
        end it with a delimiter (a newline, a space) when it ends in a repeat.
        On timeout raise ``blame`` (TargetError by default: a silent board is
        the board's fault) naming the patterns, the last bytes seen and the log.
        """
        compiled = self._compile_all(patterns)
        wait = self.default_timeout if timeout is None else timeout
        found = self._wait(compiled, wait)
        if found is None:
            what = waiting_for or " or ".join(repr(p.pattern.decode(errors="replace")) for p in compiled)
            raise self._timeout_error(blame, f"timed out after {wait:.1f} s waiting for {what}")
        return found

    def try_expect(self, patterns: PatternLike | Sequence[PatternLike], timeout: float) -> Match | None:
        """Like :meth:`expect` but return None on timeout (bad patterns still raise)."""
        return self._wait(self._compile_all(patterns), timeout)

    @staticmethod
    def _compile_all(patterns: PatternLike | Sequence[PatternLike]) -> list[re.Pattern[bytes]]:
        if isinstance(patterns, (str, bytes, re.Pattern)):
            return [compile_pattern(patterns)]
        return [compile_pattern(p) for p in patterns]

    def _wait(self, compiled: Sequence[re.Pattern[bytes]], timeout: float) -> Match | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            start = self._pos
            scan_from = start
            while True:
                end = len(self._buf)
                best: tuple[int, re.Match[bytes]] | None = None
                for index, pattern in enumerate(compiled):
                    m = pattern.search(self._buf, scan_from, end)
                    if m is not None and (best is None or m.start() < best[1].start()):
                        best = (index, m)
                self._check_bad(scan_from, end, best[1].start() if best else None)
                if best is not None:
                    index, m = best
                    self._pos = m.end()
                    return Match(
                        index=index,
                        pattern=compiled[index],
                        before=_decode(self._buf[start : m.start()]),
                        text=_decode(m.group(0)),
                        groups=tuple(None if g is None else _decode(g) for g in m.groups()),
                    )
                self._raise_fatal()
                # Any match lying wholly in what was searched would have been
                # found: only a match ending in new bytes is possible, and it
                # starts at most max_match before them.
                scan_from = max(self._pos, end - self.max_match)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)

    def _check_bad(self, scan_from: int, end: int, before: int | None) -> None:
        """Raise for the earliest enabled bad pattern in the buffer that starts before ``before``."""
        found = self._first_bad(self._buf, scan_from, end, before)
        if found is not None:
            self._pos = found[1].end()
            raise self._bad_error(*found, self._buf)

    def raise_for_bad(self, data: bytes) -> None:
        """Raise the classified error if ``data`` holds an enabled bad pattern.

        For bytes taken raw (a serial transfer's replies) that expect() never saw.
        """
        found = self._first_bad(data, 0, len(data), None)
        if found is not None:
            raise self._bad_error(*found, data)

    def _first_bad(
        self, buf: bytes | bytearray, start: int, end: int, before: int | None
    ) -> tuple[BadPattern, re.Match[bytes]] | None:
        first: tuple[BadPattern, re.Match[bytes]] | None = None
        for bad in self.bad_patterns:
            if self._disabled.get(bad.name):
                continue
            m = bad.regex.search(buf, start, end)
            if m is None or (before is not None and m.start() > before):
                continue
            if first is None or m.start() < first[1].start():
                first = (bad, m)
        return first

    def _bad_error(self, bad: BadPattern, m: re.Match[bytes], buf: bytes | bytearray) -> CmaToolError:
        context = bytes(buf[max(0, m.start() - 300) : min(len(buf), m.end() + 200)])
        return bad.error(
            f"{bad.what}: the console showed {show_bytes(m.group(0))!r} (bad pattern '{bad.name}')\n"
            f"--- console around it ---\n{show_bytes(context)}\n--- end; full log: {self.log_path}",
            hint=bad.hint,
        )

    def _raise_fatal(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    @property
    def received_bytes(self) -> int:
        """How many bytes the board has sent since the console was opened."""
        with self._cond:
            return len(self._buf)

    def tail(self, size: int = TAIL_BYTES) -> bytes:
        """The last ``size`` bytes received."""
        with self._cond:
            return bytes(self._buf[-size:])

    def _timeout_error(self, blame: type[CmaToolError], message: str, *, hint: str = "") -> CmaToolError:
        tail = self.tail()
        shown = show_bytes(tail) if tail else "(nothing: the console has been silent)"
        return blame(
            f"{message}\n--- last {len(tail)} bytes seen on {self.url} ---\n{shown}\n"
            f"--- end; full log: {self.log_path}",
            hint=hint,
        )

    # ---- raw access for binary protocols --------------------------------

    def read_raw(self, size: int, timeout: float) -> bytes | None:
        """Consume exactly ``size`` unread bytes, or return None (consuming nothing) on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._buf) - self._pos < size:
                self._raise_fatal()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(remaining)
            data = bytes(self._buf[self._pos : self._pos + size])
            self._pos += size
            return data

    def drain(self, quiet: float) -> str:
        """Consume until the console has been silent for ``quiet`` seconds; return what came."""
        with self._cond:
            start = self._pos
            while True:
                seen = len(self._buf)
                self._cond.wait(quiet)
                if len(self._buf) == seen:
                    break
            self._pos = len(self._buf)
            return _decode(self._buf[start:])

    # ---- temporary settings (no global flags) ---------------------------

    @contextmanager
    def disable_check(self, *names: str) -> Iterator[None]:
        """Turn the named bad patterns off inside the block (e.g. the U-Boot sign-on at power-on)."""
        known = {b.name for b in self.bad_patterns}
        for name in names:
            if name not in known:
                raise KeyError(f"no bad pattern named {name!r}; known: {sorted(known)}")
        with self._cond:
            for name in names:
                self._disabled[name] = self._disabled.get(name, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                for name in names:
                    self._disabled[name] -= 1

    @contextmanager
    def temporary_timeout(self, seconds: float) -> Iterator[None]:
        """Use ``seconds`` as the default expect() timeout inside the block."""
        saved = self.default_timeout
        self.default_timeout = seconds
        try:
            yield
        finally:
            self.default_timeout = saved


def _close_port(port: Any) -> None:
    """Close a pyserial port; a socket:// one without pyserial's close().

    pyserial's socket close() sleeps 0.3 s after closing ("give the server
    some time" for a quick reconnect): every run would end 0.3 s later for
    nothing, as the run never reconnects to a console it closed. So the
    socket is closed here and the port marked closed, as close() would.
    """
    sock = getattr(port, "_socket", None)
    try:
        if isinstance(sock, socket.socket):
            sock.close()
            port._socket = None
            port.is_open = False
        else:
            port.close()
    except (OSError, serial.SerialException):
        pass
