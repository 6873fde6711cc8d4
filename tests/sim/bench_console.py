"""How fast the console reader takes in a long boot log, over a pty and over socket://.

Prints numbers; asserts nothing. Run from anywhere: python3 tests/sim/bench_console.py
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
import threading
import time
import tty
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cma_tool.deploy.console import Console  # noqa: E402

LOG = b"".join(b"[    0.%06d] a line of kernel boot log, about as long as the real ones\r\n" % i for i in range(20000))


def measure(name: str, url: str, feed: Callable[[], None], workdir: Path) -> None:
    with Console(url, workdir / name) as console:
        time.sleep(0.2)  # let the far side settle before the clock starts
        wall, cpu = time.perf_counter(), time.process_time()
        threading.Thread(target=feed).start()
        console.expect("END-OF-LOG", timeout=120)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    size = len(LOG) + 10
    print(f"{name:10s} {size / 1e6:.2f} MB in {wall:5.2f} s ({size / wall / 1e6:6.1f} MB/s), {cpu:5.2f} s CPU")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        master, slave = os.openpty()
        tty.setraw(slave)

        def to_pty() -> None:
            for i in range(0, len(LOG), 4096):
                os.write(master, LOG[i : i + 4096])
            os.write(master, b"END-OF-LOG")

        measure("pty", os.ttyname(slave), to_pty, workdir)
        server = socket.create_server(("127.0.0.1", 0))
        url = f"socket://127.0.0.1:{server.getsockname()[1]}"
        accepted: list[socket.socket] = []

        def to_socket() -> None:
            accepted[0].sendall(LOG + b"END-OF-LOG")

        threading.Thread(target=lambda: accepted.append(server.accept()[0])).start()
        measure("socket://", url, to_socket, workdir)


if __name__ == "__main__":
    main()
