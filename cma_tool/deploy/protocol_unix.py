"""pyserial's handler for ``unix://PATH`` and ``unix://@NAME`` (Linux's abstract socket namespace).

pyserial opens a URL through the module ``protocol_<scheme>`` of a package in
``serial.protocol_handler_packages``; the console engine adds this package,
so ``serial.serial_for_url("unix://@name")`` gives a port like ``socket://``
gives for TCP. Why a Unix socket for the emulated board's console: QEMU's
UART writes one byte per write(), and over TCP each byte is a segment. With
Nagle off (which U-Boot's one-character echo needs) that cost the guest
about 0.3 s of a 5 s boot, measured; a Unix socket has neither Nagle nor
segments and costs what a file does. pyserial has no Unix socket handler,
so this is ours: its TCP port with the connection made on AF_UNIX.
"""

from __future__ import annotations

import socket
import urllib.parse

from serial.serialutil import SerialException
from serial.urlhandler import protocol_socket


def register() -> None:
    """Let ``serial.serial_for_url`` open ``unix://`` (and ``follow://``) URLs: whoever hands one out calls this.

    pyserial looks for ``protocol_<scheme>`` in the packages it is given: this adds ours.
    """
    import serial

    if "cma_tool.deploy" not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append("cma_tool.deploy")


#: How long connecting may take (QEMU listens before it starts; a missing socket fails at once).
CONNECT_TIMEOUT = 2.0


def address(url: str) -> str:
    """The socket address of a ``unix://`` URL: a path, or ``\\0name`` for ``unix://@name``."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "unix":
        raise SerialException(f"expected a unix:// URL, not {url!r}")
    where = parts.netloc + parts.path
    if not where:
        raise SerialException(f"{url!r} names no socket: unix:///path or unix://@name")
    return "\0" + where[1:] if where.startswith("@") else where


class Serial(protocol_socket.Serial):  # type: ignore[misc]  # pyserial has no type hints
    """pyserial's socket port, connected over AF_UNIX instead of TCP."""

    def open(self) -> None:
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        if self.is_open:  # type: ignore[has-type]  # pyserial sets it in its base class, untyped
            raise SerialException("Port is already open.")
        self.logger = None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_TIMEOUT)
        try:
            sock.connect(address(self.portstr))
        except OSError as exc:
            sock.close()
            raise SerialException(f"Could not open port {self.portstr}: {exc}") from exc
        sock.setblocking(False)  # the TCP port's read() and write() wait in select()
        self._socket = sock
        self._reconfigure_port()
        self.is_open = True
        self.reset_input_buffer()
        self.reset_output_buffer()
