"""A board in a labgrid place: the ``--target labgrid`` way.

The place is acquired through labgrid's coordinator with labgrid's own
client API (:func:`labgrid.remote.client.start_session`), so the place is
the lab's lock as every labgrid user sees it, and it is released on every
way out of the run (errors, SIGTERM, Ctrl-C: run.py turns SIGTERM into an
exception, so this module's ``finally`` runs). A place someone else holds is
an infrastructure error naming the holder.

Then the board is the bench board of :mod:`cma_tool.deploy.serial_board`
(U-Boot, the board's kernel, our initrd, its DTB patched), reached through
the place's resources:

- power: labgrid's own driver, through ``labgrid-client power on/off`` on the
  acquired place (NetworkPowerPort and every other power resource labgrid
  knows), as the board's power commands;
- console: the place's NetworkSerialPort (the exporter's ser2net) opened by
  our console engine as ``rfc2217://`` or ``socket://``. Ours, not labgrid's
  SerialDriver: the U-Boot path, the bad-pattern table, the byte-timed log
  and the framed agent sections are built on it, and it already speaks both
  protocols through pyserial, as labgrid's driver does.
- files: when the place has a TFTPProvider (the lab's TFTP server), the
  kernel, DTB and initrd are staged into its folder and U-Boot fetches them
  from it under the provider's external path, as labgrid's
  TFTPProviderDriver stages them; without one, our own TFTP server (or
  YMODEM) as for any bench board. Staged by a plain copy, not labgrid's
  ManagedFile: that one reaches the folder over SSH to the exporter's host,
  and here the folder is this host's (a remote exporter's is refused, below).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import io
import logging
import shlex
import socket
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cma_tool.board.types import Board
from cma_tool.deploy.serial_board import LabTftp
from cma_tool.deploy.targets import Job, Prepared, TargetOptions
from cma_tool.errors import InfraError, TargetError, UsageError

DEFAULT_COORDINATOR = "127.0.0.1:20408"


def place_resource(coordinator: str, place: str) -> str:
    """The board lock's name for a place (one place is one board)."""
    return f"labgrid://{coordinator}/{place}"


@dataclasses.dataclass(frozen=True)
class PlaceAccess:
    """What the acquired place gives a run."""

    console_url: str
    power_on: str
    power_off: str
    #: The lab's TFTP server for this place (its TFTPProvider), or None: ours.
    tftp: LabTftp | None = None
    #: Why the place's resources are no longer there (its exporter went away), or "" while they are.
    gone: Callable[[], str] = lambda: ""


class LabgridTarget:
    """``--target labgrid``: a bench board in a labgrid place."""

    kernel_profile: str | None = None  # the board file's: the kernel is the board's own

    def __init__(self, options: TargetOptions) -> None:
        from cma_tool.deploy.serial_board import SerialTarget

        if not options.place:
            raise UsageError("--target labgrid needs --place NAME", hint="the labgrid place the board is in")
        self.options = options
        self.coordinator = options.coordinator or DEFAULT_COORDINATOR
        # The files are a serial board's: the same kernel, patched DTB and initrd.
        self._serial = SerialTarget(dataclasses.replace(options, place=None, coordinator=None))

    def prepare(self, job: Job) -> Prepared:
        return self._serial.prepare(job)

    def run(self, job: Job, prepared: Prepared) -> str:
        from cma_tool.deploy.serial_board import run_via_serial

        assert self._serial._initrd is not None and self._serial._dtb is not None
        assert self.options.kernel is not None
        place = str(self.options.place)
        with acquired(self.coordinator, place) as access:
            job.stage("place", place=place, coordinator=self.coordinator, console=access.console_url,
                      tftp=str(access.tftp.folder) if access.tftp else None)
            board = with_place_power(job.plan.board, access)
            try:
                return run_via_serial(board, kernel=self.options.kernel, dtb=self._serial._dtb,
                                      initrd=self._serial._initrd, bootargs=prepared.cmdline, workdir=job.out,
                                      timeout=job.timeout, console_url=access.console_url, on_stage=job.stage,
                                      lab_tftp=access.tftp)
            except (TargetError, InfraError) as err:
                # A console whose ser2net died reads as a board gone silent, or as a lost console: when the
                # place's exporter has gone, say so (and the silence is the lab's, not the board's).
                why = access.gone()
                if why:
                    raise InfraError(f"labgrid place {place}: {why} during the run; what the board was doing "
                                     f"then: {err.message}", hint="a retry (--retries) may pass once the "
                                     "exporter is back") from None
                raise


def with_place_power(board: Board, access: PlaceAccess) -> Board:
    """The board with the place's power: labgrid-client on the acquired place does the switching."""
    power = dataclasses.replace(board.power, kind="command", on=access.power_on, off=access.power_off,
                                cycle=None, state=None)
    return dataclasses.replace(board, power=power)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """labgrid's client prints "acquired place X" to stdout, where `--json` prints the report."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


@contextlib.contextmanager
def acquired(coordinator: str, place: str) -> Iterator[PlaceAccess]:
    """The place, acquired for this run and released however the run ends."""
    from labgrid.remote.client import start_session
    from labgrid.remote.common import Place

    loop = asyncio.new_event_loop()
    # grpc's channel binds to the current loop when the session is made: it must be this one.
    asyncio.set_event_loop(loop)
    args = argparse.Namespace(place=place, allow_unmatched=False, kick=False)
    # labgrid logs a lost coordinator stream with a traceback on the root logger; our error says it.
    silence = logging.NullHandler()
    logging.getLogger().addHandler(silence)
    try:
        with _quiet():
            session = start_session(coordinator, extra={"args": args}, loop=loop)
    except Exception as exc:  # noqa: BLE001 - labgrid raises its own and grpc's errors alike
        loop.close()
        asyncio.set_event_loop(None)
        logging.getLogger().removeHandler(silence)
        raise InfraError(f"cannot reach the labgrid coordinator at {coordinator}: {exc}",
                         hint="is labgrid-coordinator running there (--coordinator HOST:PORT)?") from None
    holds = False
    try:
        known: dict[str, Place] = session.places
        if place not in known:
            raise InfraError(f"the labgrid coordinator at {coordinator} has no place {place!r}"
                             + (f" (places: {', '.join(sorted(known))})" if known else ""),
                             hint=f"labgrid-client -x {coordinator} -p {place} create, then add-match its resources")
        holder = known[place].acquired
        if holder:
            raise InfraError(f"labgrid place {place} is acquired by {holder}",
                             hint="wait until its holder releases it (labgrid-client who)")
        try:
            with _quiet():
                loop.run_until_complete(session.acquire())
        except Exception as exc:  # noqa: BLE001 - labgrid's UserError/ServerError say why
            raise InfraError(f"cannot acquire labgrid place {place}: {exc}") from None
        holds = True
        access = access_of(session, known[place], coordinator, place)

        def gone() -> str:
            try:
                with _quiet():
                    loop.run_until_complete(session.sync_with_coordinator())
                serial = [r for (_, cls), r in session.get_target_resources(session.places[place]).items()
                          if cls == "NetworkSerialPort"]
            except Exception as exc:  # noqa: BLE001 - labgrid's own words for a resource that went away
                return f"its resources went away ({exc})"
            # An exporter that left takes its resources' data with it: no "avail" is not available.
            if serial and all(_available(r) for r in serial):
                return ""
            return "its exporter went away (the serial port is no longer available)"

        yield dataclasses.replace(access, gone=gone)
    finally:
        try:
            if holds:
                with _quiet():
                    loop.run_until_complete(session.release())
        except Exception as exc:  # noqa: BLE001 - a release that fails must not hide the run's own error
            print(f"warning: could not release labgrid place {place}: {exc}", file=sys.stderr)
        finally:
            with contextlib.suppress(Exception):
                loop.run_until_complete(session.stop())
                loop.run_until_complete(session.close())
            loop.close()
            asyncio.set_event_loop(None)
            logging.getLogger().removeHandler(silence)


def _available(resource: Any) -> bool:
    data = getattr(resource, "data", None)
    return bool(isinstance(data, dict) and data.get("avail"))


def access_of(session: Any, place: Any, coordinator: str, name: str) -> PlaceAccess:
    """The console URL and the power commands of an acquired place."""
    try:
        resources = session.get_target_resources(place)
    except Exception as exc:  # noqa: BLE001
        raise InfraError(f"labgrid place {name}: its resources cannot be read: {exc}") from None
    serial = [r for (_, cls), r in resources.items() if cls == "NetworkSerialPort"]
    powers = [cls for (_, cls) in resources if "Power" in cls]
    if not serial:
        raise InfraError(f"labgrid place {name} has no serial port resource (NetworkSerialPort) available",
                         hint="its exporter exports the console (RawSerialPort/USBSerialPort through ser2net); "
                              "is the exporter running?")
    if not powers:
        raise InfraError(f"labgrid place {name} has no power resource available",
                         hint="add a NetworkPowerPort (or another power resource) to the exporter and the place")
    port: dict[str, Any] = dict(serial[0].args)
    if not _available(serial[0]):
        raise InfraError(f"labgrid place {name}: its serial port is not available (its exporter went away?)")
    if port.get("protocol", "rfc2217") == "rfc2217":
        # ign_set_control: ser2net on a port without modem lines (a pty, some USB adapters) never answers
        # the flow-control option pyserial sets, and pyserial would wait for it and give up.
        url = f"rfc2217://{port['host']}:{port['port']}?ign_set_control"
    else:
        url = f"socket://{port['host']}:{port['port']}"
    client = shlex.join([sys.executable, "-m", "labgrid.remote.client", "-x", coordinator, "-p", name, "power"])
    return PlaceAccess(console_url=url, power_on=f"{client} on", power_off=f"{client} off",
                       tftp=lab_tftp(name, [r for (_, cls), r in resources.items() if cls.endswith("TFTPProvider")]))


def lab_tftp(place: str, providers: list[Any]) -> LabTftp | None:
    """The place's TFTPProvider as a folder of this host and the path U-Boot asks under."""
    if not providers:
        return None
    args: dict[str, Any] = dict(providers[0].args)
    folder, external, host = Path(str(args.get("internal", ""))), str(args.get("external", "")), args.get("host")
    if host not in (None, "localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()) or not folder.is_dir():
        raise InfraError(f"labgrid place {place}: its TFTP folder {folder} (TFTPProvider on exporter host {host}) "
                         "is not a folder of this host",
                         hint="run cma-tool on the exporter's host, or share the TFTP folder with it at the same "
                              "path (e.g. NFS)")
    return LabTftp(folder, external)

