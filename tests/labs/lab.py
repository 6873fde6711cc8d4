"""A labgrid lab on 127.0.0.1 for the tests: a real coordinator, a real exporter, one place.

The exporter exports the bench-board simulator's pty (a RawSerialPort: the
exporter serves it through ser2net, as a lab's exporter serves a USB serial
adapter) and a NetworkPowerPort of labgrid's ``simplerest`` model: a small
HTTP relay here that switches the simulator through its relay commands.
"""

from __future__ import annotations

import http.server
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.sim import SimBoard
from tests.tools import need

PLACE = "aquila-bench"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Relay(http.server.BaseHTTPRequestHandler):
    """labgrid's simplerest power model: GET /relay/<index>/<1|0> switches, GET /relay/<index> reads."""

    commands: dict[str, str] = {}

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        parts = self.path.strip("/").split("/")
        if len(parts) == 3 and parts[2] in ("0", "1"):
            subprocess.run(shlex.split(self.commands["on" if parts[2] == "1" else "off"]), check=True, timeout=30)
            body = b"ok"
        else:
            said = subprocess.run(shlex.split(self.commands["state"]), capture_output=True, text=True,
                                  check=True, timeout=30).stdout.strip()
            body = b"1" if said == "on" else b"0"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass


class Lab:
    """Coordinator + exporter + place around a SimBoard; ``stop_exporter()`` takes the exporter away."""

    def __init__(self, folder: Path, sim: SimBoard) -> None:
        self.folder = folder
        self.sim = sim
        self.address = f"127.0.0.1:{free_tcp_port()}"
        self.env = dict(os.environ, LG_COORDINATOR=self.address, PYTHONPATH=str(Path(__file__).parents[2]))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.exporter: subprocess.Popen[bytes] | None = None
        self.http: http.server.ThreadingHTTPServer | None = None

    def __enter__(self) -> Self:
        need("ser2net")
        self.folder.mkdir(parents=True, exist_ok=True)
        relay = type("Relay", (_Relay,), {"commands": self.sim.power_commands()})
        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), relay)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        coordinator = self._start([sys.executable, "-m", "labgrid.remote.coordinator", "-l", self.address],
                                  "coordinator.log")
        self.procs.append(coordinator)
        self._wait_for_port()
        config = self.folder / "exporter.yaml"
        config.write_text(
            "cma-bench:\n"
            "  console:\n"
            "    cls: RawSerialPort\n"
            f"    port: {self.sim.path}\n"
            "    speed: 115200\n"
            "  power:\n"
            "    cls: NetworkPowerPort\n"
            "    model: simplerest\n"
            f"    host: 'http://127.0.0.1:{self.http.server_address[1]}/relay/{{index}}/{{value}}'\n"
            "    index: 0\n")
        self.exporter = self._start([sys.executable, "-m", "labgrid.remote.exporter", "-c", self.address,
                                     "-n", "bench-host", "--hostname", "127.0.0.1", str(config)], "exporter.log")
        self.procs.append(self.exporter)
        self.client("-p", PLACE, "create")
        self.client("-p", PLACE, "add-match", "bench-host/cma-bench/*")
        deadline = time.monotonic() + 30
        while "NetworkSerialPort" not in self.client("resources").stdout:
            if time.monotonic() > deadline:
                raise RuntimeError("the exporter's resources never reached the coordinator: "
                                   + (self.folder / "exporter.log").read_text())
            time.sleep(0.2)
        return self

    def _start(self, argv: list[str], log: str) -> subprocess.Popen[bytes]:
        with (self.folder / log).open("wb") as fh:
            return subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=self.env,
                                    start_new_session=True)

    def _wait_for_port(self) -> None:
        host, port = self.address.split(":")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex((host, int(port))) == 0:
                    return
            time.sleep(0.1)
        raise RuntimeError("the coordinator never listened: " + (self.folder / "coordinator.log").read_text())

    def client(self, *args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        env = dict(self.env, **({"LG_USERNAME": user} if user else {}))
        return subprocess.run([sys.executable, "-m", "labgrid.remote.client", "-x", self.address, *args],
                              capture_output=True, text=True, env=env, timeout=60, check=False)

    def holder(self) -> str:
        """Who holds the place, as the coordinator says ("None" when nobody does)."""
        for line in self.client("-p", PLACE, "show").stdout.splitlines():
            if line.strip().startswith("acquired:"):
                return line.split(":", 1)[1].strip()
        return "?"

    def stop_exporter(self) -> None:
        """The exporter (and the ser2net it started) goes away, as when its host dies."""
        if self.exporter is not None and self.exporter.poll() is None:
            os.killpg(self.exporter.pid, signal.SIGKILL)
            self.exporter.wait()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        if self.http is not None:
            self.http.shutdown()
            self.http.server_close()
