"""A labgrid lab on 127.0.0.1 for the tests: a real coordinator, a real exporter, one place per board.

Each board is a :class:`Place`: its console as the exporter exports it
(the bench-board simulator's pty as a RawSerialPort, which the exporter
serves through ser2net as it serves a USB serial adapter; or an emulated
board's console socket as a NetworkSerialPort), a NetworkPowerPort of
labgrid's ``simplerest`` model (a small HTTP relay here that runs the
board's own switch commands), and optionally a TFTPProvider (the lab's TFTP
server folder for that board).
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
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from tests.sim import SimBoard
from tests.tools import need

PLACE = "aquila-bench"
ROOT = Path(__file__).parents[2]


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Place:
    """One board of the lab: the exporter's console entry, its switch commands, its TFTP folder if any."""

    name: str
    console: dict[str, Any]
    power: dict[str, str]  # "on", "off", "state" command lines
    tftp: Path | None = None


def sim_place(sim: SimBoard, name: str = PLACE) -> Place:
    """The bench-board simulator's pty, exported through ser2net, and its relay."""
    return Place(name, {"cls": "RawSerialPort", "port": str(sim.path), "speed": 115200}, sim.power_commands())


class _Relay(http.server.BaseHTTPRequestHandler):
    """labgrid's simplerest power model: GET /relay/<index>/<1|0> switches, GET /relay/<index> reads."""

    commands: list[dict[str, str]] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        parts = self.path.strip("/").split("/")
        commands = self.commands[int(parts[1])]
        if len(parts) == 3 and parts[2] in ("0", "1"):
            subprocess.run(shlex.split(commands["on" if parts[2] == "1" else "off"]), check=True, timeout=30,
                           cwd=ROOT)
            body = b"ok"
        else:
            said = subprocess.run(shlex.split(commands["state"]), capture_output=True, text=True,
                                  check=True, timeout=30, cwd=ROOT).stdout.strip()
            body = b"1" if said == "on" else b"0"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's signature
        pass


class Lab:
    """Coordinator + exporter + a place per board; ``stop_exporter()`` takes the exporter away."""

    def __init__(self, folder: Path, *places: Place) -> None:
        self.folder = folder
        self.places = places
        self.address = f"127.0.0.1:{free_tcp_port()}"
        self.env = dict(os.environ, LG_COORDINATOR=self.address, PYTHONPATH=str(Path(__file__).parents[2]))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.exporter: subprocess.Popen[bytes] | None = None
        self.http: http.server.ThreadingHTTPServer | None = None

    def __enter__(self) -> Self:
        if any(p.console["cls"] == "RawSerialPort" for p in self.places):
            need("ser2net")
        self.folder.mkdir(parents=True, exist_ok=True)
        relay = type("Relay", (_Relay,), {"commands": [p.power for p in self.places]})
        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), relay)
        threading.Thread(target=self.http.serve_forever, daemon=True).start()
        coordinator = self._start([sys.executable, "-m", "labgrid.remote.coordinator", "-l", self.address],
                                  "coordinator.log")
        self.procs.append(coordinator)
        self._wait_for_port()
        config = self.folder / "exporter.yaml"
        relay_url = f"http://127.0.0.1:{self.http.server_address[1]}/relay/{{index}}/{{value}}"
        groups: dict[str, dict[str, Any]] = {}
        for index, place in enumerate(self.places):
            group: dict[str, Any] = {"console": place.console,
                                     "power": {"cls": "NetworkPowerPort", "model": "simplerest", "host": relay_url,
                                               "index": index}}
            if place.tftp is not None:
                group["tftp"] = {"cls": "TFTPProvider", "internal": f"{place.tftp}/", "external": ""}
            groups[f"cma-{place.name}"] = group
        config.write_text(yaml.safe_dump(groups))
        self.exporter = self._start([sys.executable, "-m", "labgrid.remote.exporter", "-c", self.address,
                                     "-n", "bench-host", "--hostname", "127.0.0.1", str(config)], "exporter.log")
        self.procs.append(self.exporter)
        for place in self.places:
            self.client("-p", place.name, "create")
            self.client("-p", place.name, "add-match", f"bench-host/cma-{place.name}/*")
        deadline = time.monotonic() + 30
        while self.client("resources").stdout.count("NetworkSerialPort") < len(self.places):
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

    def holder(self, place: str = PLACE) -> str:
        """Who holds the place, as the coordinator says ("None" when nobody does)."""
        for line in self.client("-p", place, "show").stdout.splitlines():
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
