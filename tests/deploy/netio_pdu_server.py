"""A small HTTP server that behaves like a NETIO PDU's JSON M2M API, for the power tests.

Written from NETIO's published protocol (not from our client): ``GET
/netio.json`` returns ``Agent`` and ``Outputs`` (``ID``, ``Name``, ``State``,
``Action``, ``Delay``); ``POST /netio.json`` with ``{"Outputs": [{"ID": n,
"Action": a[, "Delay": ms]}]}`` applies actions 0 off, 1 on, 2 short off, 3
short on, 4 toggle, 5 no change, 6 ignore (use ``State``) and answers with the
updated document; 400 for a malformed request, 401 for a wrong user or
password, 403 for a read-only user. Every switch is logged with its time so a
test can see an outlet really went off and came back.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Outlet:
    id: int
    name: str
    state: int = 0
    delay_ms: int = 2000


@dataclass
class NetioPdu:
    outlets: dict[int, Outlet]
    rw_user: tuple[str, str] = ("write", "secret")
    ro_user: tuple[str, str] = ("read", "public")
    switches: list[tuple[float, int, int]] = field(default_factory=list)  # (monotonic time, ID, new state)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def set(self, outlet: Outlet, state: int) -> None:
        if outlet.state != state:
            outlet.state = state
            self.switches.append((time.monotonic(), outlet.id, state))

    def document(self) -> dict[str, Any]:
        return {
            "Agent": {"Model": "NETIO 4", "DeviceName": "test-pdu", "JSONVer": "2.1", "NumOutputs": len(self.outlets)},
            "Outputs": [
                {"ID": o.id, "Name": o.name, "State": o.state, "Action": 6, "Delay": o.delay_ms}
                for o in self.outlets.values()
            ],
        }

    def apply(self, outlet: Outlet, action: int, delay_ms: int, state: int | None) -> None:
        if action == 0:
            self.set(outlet, 0)
        elif action == 1:
            self.set(outlet, 1)
        elif action in (2, 3):
            self.set(outlet, 0 if action == 2 else 1)
            back = 1 if action == 2 else 0

            def restore() -> None:
                with self.lock:
                    self.set(outlet, back)

            threading.Timer(delay_ms / 1000, restore).start()
        elif action == 4:
            self.set(outlet, 1 - outlet.state)
        elif action == 6 and state in (0, 1):
            self.set(outlet, state)


def _handler(pdu: NetioPdu) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
            pass

        def _user(self) -> tuple[str, str] | None:
            header = self.headers.get("Authorization", "")
            if not header.startswith("Basic "):
                return None
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return (user, password)

        def _reply(self, code: int, body: dict[str, Any] | None = None) -> None:
            raw = json.dumps(body).encode() if body is not None else b""
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self) -> None:
            if self.path != "/netio.json":
                return self._reply(404)
            if self._user() not in (pdu.rw_user, pdu.ro_user):
                return self._reply(401)
            with pdu.lock:
                self._reply(200, pdu.document())

        def do_POST(self) -> None:
            if self.path != "/netio.json":
                return self._reply(404)
            user = self._user()
            if user == pdu.ro_user:
                return self._reply(403)
            if user != pdu.rw_user:
                return self._reply(401)
            try:
                request = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
                orders = request["Outputs"]
                with pdu.lock:
                    for order in orders:
                        outlet = pdu.outlets[int(order["ID"])]
                        pdu.apply(outlet, int(order["Action"]), int(order.get("Delay", outlet.delay_ms)),
                                  order.get("State"))
                    self._reply(200, pdu.document())
            except (ValueError, KeyError, TypeError):
                self._reply(400)

    return Handler


@contextmanager
def running_pdu(pdu: NetioPdu) -> Iterator[str]:
    """Serve ``pdu`` on 127.0.0.1, a free port; yields the base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(pdu))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
