"""Switching a board's power: one small protocol, three backends.

- :class:`ManualPower`: asks the person at the terminal and waits for Enter.
- :class:`CommandPower`: runs the on/off/cycle command lines the board file
  gives (a relay tool, ``uhubctl``, a lab script), without a shell.
- :class:`NetioPower`: a networked PDU speaking NETIO's JSON M2M API
  (``GET``/``POST /netio.json``; NETIO 4/4All/PowerPDU/PowerBOX/PowerCable
  REST), chosen because it is plain HTTP + JSON with a public specification
  ("NETIO M2M API Protocol JSON"), so it can be tested against a real HTTP
  server, and because its "short off" action cycles the outlet on the PDU
  itself: the board comes back even if this host dies mid-cycle.

:func:`powered` is the context manager every session should use: whatever
happens inside (an error, Ctrl-C), the board is switched off, or back to the
state it was found in, when the block ends.
"""

from __future__ import annotations

import base64
import enum
import json
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

from cma_tool.errors import CmaToolError, ConfigError, InfraError


class PowerState(enum.Enum):
    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"


class PowerControl(Protocol):
    """What every backend offers. Each call returns once the switch has happened."""

    @property
    def description(self) -> str: ...

    def on(self) -> None: ...

    def off(self) -> None: ...

    def cycle(self) -> None: ...

    def state(self) -> PowerState: ...


@contextmanager
def powered(power: PowerControl, *, restore: bool = False) -> Iterator[PowerControl]:
    """Power the board for the block: on (cycled if it was already on, so it starts from reset).

    When the block ends, by any route including KeyboardInterrupt, the board is
    switched off; with ``restore=True`` it is left as found instead (on stays
    on, off or unknown ends off). A failure to switch off while another error
    is propagating is attached to that error as a note rather than hiding it.
    """
    found = power.state()

    def leave() -> None:
        if restore and found is PowerState.ON:
            power.on()
        else:
            power.off()

    try:
        if found is PowerState.ON:
            power.cycle()
        else:
            power.on()
        yield power
    except BaseException as exc:
        try:
            leave()
        except CmaToolError as cleanup:
            exc.add_note(f"and switching the board off afterwards failed ({power.description}): {cleanup}")
        raise
    else:
        leave()


class ManualPower:
    """A person switches the board; we ask and wait for Enter.

    ``interactive`` defaults to whether ``ask_from`` is a terminal. Without a
    person there (CI, a lab rack) every switch is a ConfigError, because
    nothing here can make it happen.
    """

    def __init__(
        self,
        board: str,
        *,
        ask_from: TextIO | None = None,
        tell: TextIO | None = None,
        interactive: bool | None = None,
    ) -> None:
        self._board = board
        self._in = ask_from if ask_from is not None else sys.stdin
        self._out = tell if tell is not None else sys.stderr
        self._interactive = interactive
        self._state = PowerState.UNKNOWN

    @property
    def description(self) -> str:
        return f"manual power for {self._board}"

    def _ask(self, what: str) -> None:
        interactive = self._interactive
        if interactive is None:
            interactive = self._in.isatty()
        if not interactive:
            raise ConfigError(
                f"board {self._board!r} must be {what} by hand, but this run has no person at a terminal",
                hint="describe a power switch in the board file (power: command or netio), or run in a terminal",
            )
        self._out.write(f"\n>>> Please {what} board {self._board!r}, then press Enter: ")
        self._out.flush()
        if not self._in.readline():
            raise ConfigError(f"no answer while waiting for board {self._board!r} to be {what} (input closed)")

    def on(self) -> None:
        self._ask("switch ON")
        self._state = PowerState.ON

    def off(self) -> None:
        self._ask("switch OFF")
        self._state = PowerState.OFF

    def cycle(self) -> None:
        self._ask("switch OFF and back ON (power-cycle)")
        self._state = PowerState.ON

    def state(self) -> PowerState:
        return self._state


@dataclass(frozen=True)
class PowerCommands:
    """Command lines from the board file. ``cycle`` defaults to off, a pause, on.

    ``state``, if given, prints on/off (or 1/0, true/false); without it the
    state is what we last switched to.
    """

    on: str
    off: str
    cycle: str | None = None
    state: str | None = None
    where: str = "<board file>"  # "file:line" of the power section, for messages


class CommandPower:
    """Runs the board file's power commands: argv split with shlex, no shell, a timeout."""

    def __init__(self, commands: PowerCommands, *, timeout: float = 30.0, off_time: float = 2.0) -> None:
        self._where = commands.where
        self._on = self._argv("on", commands.on)
        self._off = self._argv("off", commands.off)
        self._cycle = self._argv("cycle", commands.cycle) if commands.cycle else None
        self._state_cmd = self._argv("state", commands.state) if commands.state else None
        self._timeout = timeout
        self._off_time = off_time
        self._last = PowerState.UNKNOWN

    @property
    def description(self) -> str:
        return f"power commands from {self._where}"

    def _argv(self, role: str, line: str) -> list[str]:
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise ConfigError(f"{self._where}: power {role} command {line!r} cannot be split into words: {exc}",
                              hint="check the quotes") from None
        if not argv:
            raise ConfigError(f"{self._where}: power {role} command is empty")
        return argv

    def _run(self, role: str, argv: Sequence[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self._timeout,
                                  stdin=subprocess.DEVNULL, check=False)
        except FileNotFoundError:
            raise ConfigError(f"{self._where}: power {role} command: program {argv[0]!r} not found",
                              hint="install it or give its full path in the board file") from None
        except PermissionError:
            raise ConfigError(f"{self._where}: power {role} command: {argv[0]!r} is not executable") from None
        except subprocess.TimeoutExpired:
            raise InfraError(f"power {role} command {shlex.join(argv)} did not finish within {self._timeout:g} s") from None
        if done.returncode != 0:
            detail = (done.stderr.strip() or done.stdout.strip() or "(no output)")[-800:]
            raise InfraError(f"power {role} command {shlex.join(argv)} failed with exit code {done.returncode}: "
                             f"{detail}")
        return done.stdout

    def on(self) -> None:
        self._run("on", self._on)
        self._last = PowerState.ON

    def off(self) -> None:
        self._run("off", self._off)
        self._last = PowerState.OFF

    def cycle(self) -> None:
        if self._cycle is not None:
            self._run("cycle", self._cycle)
        else:
            self.off()
            time.sleep(self._off_time)  # long enough for the board's capacitors to drain
            self._run("on", self._on)
        self._last = PowerState.ON

    def state(self) -> PowerState:
        if self._state_cmd is None:
            return self._last
        said = self._run("state", self._state_cmd).strip().lower()
        if said in ("on", "1", "true"):
            return PowerState.ON
        if said in ("off", "0", "false"):
            return PowerState.OFF
        raise InfraError(f"power state command {shlex.join(self._state_cmd)} printed {said[:80]!r}, "
                         "expected on/off, 1/0 or true/false")


class _NetioAction(enum.IntEnum):
    """Output actions of the NETIO M2M API (the same numbers in every NETIO protocol)."""

    OFF = 0
    ON = 1
    SHORT_OFF = 2
    SHORT_ON = 3
    TOGGLE = 4
    NOCHANGE = 5
    IGNORED = 6


class NetioPower:
    """One outlet of a NETIO PDU, switched through its JSON API.

    ``url`` is the device (``http://pdu.lab``) or its ``/netio.json`` file;
    ``output`` counts from 1 as on the device's label. Credentials are the
    JSON API's read-write user, sent as HTTP basic authentication.
    """

    def __init__(
        self,
        url: str,
        output: int,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
        off_time: float = 2.0,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"NETIO PDU address {url!r} is not an http:// or https:// URL")
        if parts.path in ("", "/"):
            parts = parts._replace(path="/netio.json")
        self._url = urllib.parse.urlunsplit(parts)
        if isinstance(output, bool) or not isinstance(output, int) or output < 1:
            raise ConfigError(f"NETIO output {output!r} must be a whole number from 1 (as on the PDU's label)")
        self._output = output
        self._auth: str | None = None
        if username is not None:
            token = base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
            self._auth = f"Basic {token}"
        self._timeout = timeout
        self._off_time = off_time

    @property
    def description(self) -> str:
        return f"NETIO PDU {self._url} output {self._output}"

    def _exchange(self, body: dict[str, Any] | None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self._url, data=data, method="GET" if body is None else "POST")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self._auth:
            request.add_header("Authorization", self._auth)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise self._http_error(exc.code, exc.read().decode(errors="replace")) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise InfraError(f"{self.description}: cannot reach the PDU: {reason}",
                             hint="check the address, the network, and that the JSON API is enabled") from None
        try:
            answer = json.loads(raw)
        except ValueError:
            raise InfraError(f"{self.description}: the answer is not JSON (is this a NETIO JSON API?): "
                             f"{raw[:120]!r}") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("Outputs"), list):
            raise InfraError(f"{self.description}: the answer has no Outputs list (is this a NETIO JSON API?)")
        return answer

    def _http_error(self, code: int, body: str) -> CmaToolError:
        if code == 401:
            return ConfigError(f"{self.description}: the PDU refused the user name or password (HTTP 401)",
                               hint="use the JSON API's read-write account")
        if code == 403:
            return ConfigError(f"{self.description}: the PDU allows reading only (HTTP 403)",
                               hint="enable write access for the JSON API or use its read-write account")
        return InfraError(f"{self.description}: the PDU answered HTTP {code}: {body[:200]}")

    def _output_state(self, answer: dict[str, Any]) -> PowerState:
        ids = []
        for out in answer["Outputs"]:
            if not isinstance(out, dict):
                continue
            ids.append(out.get("ID"))
            if out.get("ID") == self._output:
                state = out.get("State")
                if state == 1:
                    return PowerState.ON
                if state == 0:
                    return PowerState.OFF
                raise InfraError(f"{self.description}: the PDU reports State {state!r}, expected 0 or 1")
        raise ConfigError(f"{self.description}: the PDU has no output {self._output} (it has {ids})")

    def _act(self, action: _NetioAction, **extra: int) -> PowerState:
        return self._output_state(self._exchange({"Outputs": [{"ID": self._output, "Action": int(action), **extra}]}))

    def state(self) -> PowerState:
        return self._output_state(self._exchange(None))

    def on(self) -> None:
        if self._act(_NetioAction.ON) is not PowerState.ON:
            raise InfraError(f"{self.description}: asked to switch on, the PDU still reports off")

    def off(self) -> None:
        if self._act(_NetioAction.OFF) is not PowerState.OFF:
            raise InfraError(f"{self.description}: asked to switch off, the PDU still reports on")

    def cycle(self) -> None:
        """Short-off on the PDU itself (off for ``off_time``, then on), then wait until it reports on."""
        delay_ms = max(1, round(self._off_time * 1000))
        if self.state() is not PowerState.ON:
            self.on()  # "short off" of an outlet that is off would switch it on only briefly
            return
        self._act(_NetioAction.SHORT_OFF, Delay=delay_ms)
        deadline = time.monotonic() + self._off_time + max(self._timeout, 5.0)
        while time.monotonic() < deadline:
            time.sleep(min(0.2, self._off_time / 4))
            if self.state() is PowerState.ON:
                return
        raise InfraError(f"{self.description}: after a {self._off_time:g} s short-off the outlet did not come back on")
