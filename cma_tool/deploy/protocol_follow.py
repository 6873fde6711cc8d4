"""pyserial's handler for ``follow:///PATH?writer=PID``: a console that another process writes to a file.

Why: a boot whose console is only read (QEMU loading our kernel directly,
the agent running from the initrd) does not need a socket. On a socket QEMU's
UART must wait whenever a few hundred of its one-byte writes are unread; to a
file (``-chardev file``) it never waits, so the guest boots as fast as plain
QEMU with ``-serial file:``. The file is the run's console log itself, so no
byte is copied (:class:`~cma_tool.deploy.console.Console` sees that the port
writes its log and only reads it).

Reading polls the file every :data:`POLL` seconds while nothing is new: the
lag that adds is ours alone, never the guest's. ``writer`` is the writing
process: once it has ended and everything it wrote has been read, a read
raises SerialException, as a serial port whose other end has gone does, and
the port cannot be opened again.
"""

from __future__ import annotations

import os
import select
import threading
import time
import urllib.parse
from pathlib import Path

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

#: Seconds between looks at a file that has not grown.
POLL = 0.005


def follow_url(path: Path, writer: int) -> str:
    """The URL of ``path`` as written by process ``writer``."""
    return f"follow://{urllib.parse.quote(str(path.resolve()))}?writer={writer}"


def parse(url: str) -> tuple[Path, int]:
    """(path, writer pid) of a ``follow://`` URL."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qs(parts.query)
    if parts.scheme != "follow" or not parts.path.startswith("/") or parts.netloc:
        raise SerialException(f"expected follow:///ABSOLUTE/PATH?writer=PID, not {url!r}")
    try:
        (writer,) = query["writer"]
        return Path(urllib.parse.unquote(parts.path)), int(writer)
    except (KeyError, ValueError):
        raise SerialException(f"{url!r}: expected ?writer=PID, the process that writes the file") from None


class Serial(SerialBase):  # type: ignore[misc]  # pyserial has no type hints
    """A read-only port over a file that grows while its writer runs."""

    def open(self) -> None:
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        if self.is_open:  # type: ignore[has-type]  # pyserial sets it in its base class, untyped
            raise SerialException("Port is already open.")
        path, writer = parse(self.portstr)
        try:
            # A pidfd becomes readable when the process ends (a zombie counts as ended, unlike kill(pid, 0)).
            self._writer = os.pidfd_open(writer)
        except OSError as exc:
            raise SerialException(f"Could not open port {self.portstr}: process {writer} is gone ({exc})") from exc
        if self._writer_ended():
            os.close(self._writer)
            raise SerialException(f"Could not open port {self.portstr}: process {writer} has ended")
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            os.close(self._writer)
            raise SerialException(f"Could not open port {self.portstr}: {exc}") from exc
        self._cancel = threading.Event()
        self.is_open = True

    def close(self) -> None:
        if self.is_open:
            os.close(self._fd)
            os.close(self._writer)
            self.is_open = False

    def _reconfigure_port(self, force_update: bool = False) -> None:
        """Nothing to configure: a file has no baud rate."""

    def _writer_ended(self) -> bool:
        return bool(select.select([self._writer], [], [], 0)[0])

    @property
    def in_waiting(self) -> int:
        if not self.is_open:
            raise PortNotOpenError()
        return max(0, os.fstat(self._fd).st_size - os.lseek(self._fd, 0, os.SEEK_CUR))

    def read(self, size: int = 1) -> bytes:
        if not self.is_open:
            raise PortNotOpenError()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            ended = self._writer_ended()  # asked before reading, so its last bytes are not missed
            data = os.read(self._fd, size)
            if data:
                return data
            if ended:
                raise SerialException(f"{self.portstr}: the writing process has ended")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return b""
            if self._cancel.wait(POLL if left is None else min(POLL, left)):
                self._cancel.clear()
                return b""

    def skip_to(self, offset: int) -> None:
        """Read on from byte ``offset`` (a reopened port: what came before has been read already)."""
        os.lseek(self._fd, offset, os.SEEK_SET)

    def cancel_read(self) -> None:
        if self.is_open:
            self._cancel.set()

    def write(self, data: bytes) -> int:
        raise SerialException(f"{self.portstr} is read-only: a console followed in a file cannot be written to")

    def reset_input_buffer(self) -> None:
        """Nothing is buffered here: the file is the buffer."""

    def reset_output_buffer(self) -> None:
        """Nothing is ever written."""
