"""A TFTP server for one run's artefact folder (kernel, DTB, boot script), on tftpy.

U-Boot fetches the kernel and DTB with ``tftpboot``; the host serves them from
the run's folder for as long as a ``with serve_tftp(folder) as tftp:`` block
lasts, in a background thread. Read-only: uploads are refused, and so is any
name that resolves outside the folder (``..``, absolute paths, symlinks that
point elsewhere). Every request is recorded, so a report can say what the
board fetched and what it asked for in vain.
"""

from __future__ import annotations

import errno
import logging
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import tftpy

from cma_tool.errors import ConfigError, InfraError

log = logging.getLogger(__name__)

#: tftpy's select() timeout is also its retransmit timeout and how long stop() takes to be noticed.
DEFAULT_TIMEOUT = 1.0
DEFAULT_RETRIES = 5


@dataclass(frozen=True)
class TftpRequest:
    """One request a client made: what it asked for, and what it got."""

    name: str  # the file name as the client sent it
    client: str  # "address:port"
    served: Path | None  # the file sent; None when refused
    reason: str = ""  # why it was refused


@dataclass
class TftpService:
    """A running server: where it listens and what it has been asked for."""

    folder: Path
    host: str
    port: int
    requests: list[TftpRequest] = field(default_factory=list)

    @property
    def refused(self) -> list[TftpRequest]:
        return [r for r in self.requests if r.served is None]


@contextmanager
def serve_tftp(
    folder: Path | str,
    *,
    host: str = "127.0.0.1",
    port: int = 69,
    timeout: float = DEFAULT_TIMEOUT,
    retries: int = DEFAULT_RETRIES,
) -> Iterator[TftpService]:
    """Serve ``folder`` read-only over TFTP on ``host:port`` (0: any free port) until the block ends."""
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(
            f"TFTP folder {root} does not exist or is not a folder",
            hint="generate the run's artefacts first, or pass the folder that holds them",
        )
    if not 0 <= port <= 65535:
        raise ConfigError(f"TFTP port {port} is not a UDP port number (0-65535)")
    root = root.resolve()

    # tftpy opens any existing file under its root by itself, following symlinks
    # out of the folder. Giving it an empty root makes every read go through
    # dyn_file_func, where we resolve the name and refuse what lies outside.
    with tempfile.TemporaryDirectory(prefix="cma-tool-tftp-") as empty_root:
        service = TftpService(folder=root, host=host, port=port)
        lock = threading.Lock()

        def record(request: TftpRequest) -> None:
            with lock:
                service.requests.append(request)

        def open_for_read(name: str, raddress: str = "?", rport: int = 0, **_: Any) -> IO[bytes] | None:
            client = f"{raddress}:{rport}"
            wanted = (root / name.lstrip("/")).resolve()
            if not wanted.is_relative_to(root):
                log.warning("TFTP: refused %r from %s: outside %s", name, client, root)
                record(TftpRequest(name, client, None, f"outside {root}"))
                return None
            if not wanted.is_file():
                record(TftpRequest(name, client, None, "no such file"))
                return None
            record(TftpRequest(name, client, wanted))
            return wanted.open("rb")

        def refuse_upload(path: str, context: Any) -> None:
            client = f"{getattr(context, 'host', '?')}:{getattr(context, 'port', 0)}"
            record(TftpRequest(str(getattr(context, "file_to_transfer", path)), client, None, "uploads are refused"))
            return None

        server = tftpy.TftpServer(empty_root, dyn_file_func=open_for_read, upload_open=refuse_upload)
        failure: list[BaseException] = []

        def listen() -> None:
            try:
                server.listen(host, port, timeout=timeout, retries=retries)
            except BaseException as exc:  # reported to the starting thread below
                failure.append(exc)

        thread = threading.Thread(target=listen, name=f"tftp-{host}:{port}", daemon=True)
        thread.start()
        while not server.is_running.wait(0.05):
            if not thread.is_alive():
                break
        if failure or not server.is_running.is_set():
            thread.join(timeout + 1)
            raise _listen_error(host, port, failure[0] if failure else None)
        service.port = server.listenport
        log.info("TFTP: serving %s on %s:%d", root, host, service.port)
        try:
            yield service
        finally:
            server.stop(now=True)
            thread.join(timeout + 2)
            if thread.is_alive():
                log.warning("TFTP server thread did not stop within %.1f s", timeout + 2)


def _listen_error(host: str, port: int, exc: BaseException | None) -> InfraError:
    where = f"{host}:{port}/udp"
    if isinstance(exc, PermissionError) or (isinstance(exc, OSError) and exc.errno == errno.EACCES):
        return InfraError(
            f"cannot listen for TFTP on {where}: permission denied",
            hint="ports below 1024 need root or CAP_NET_BIND_SERVICE; use a port above 1024",
        )
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return InfraError(f"cannot listen for TFTP on {where}: the port is already in use",
                          hint="stop the other TFTP server or choose another port")
    return InfraError(f"cannot listen for TFTP on {where}: {exc or 'the server thread ended at start-up'}")
