"""Nothing collides: a fresh output folder per run, a lock on it, and a lock on each physical board.

Runs of a lab rack start side by side (a matrix, two engineers, a CI
retry), so nothing a run owns may be chosen by the clock alone:

- the default output folder is ``<parent>/<board>-<UTC time to the ms>-<random>``,
  created with one ``mkdir`` that fails if it exists (never reused);
- a run holds ``fcntl.flock`` on ``.cma-tool.lock`` inside its output folder
  for as long as it runs, and a folder that holds an earlier run's
  ``report.json`` is only written into when the caller says ``replace``;
- a physical board (its console device or URL, its SSH address) is locked
  for the whole run by a lock file named after it in a lock folder shared by
  every user of the host (``/run/lock/cma-tool``, else
  ``$XDG_RUNTIME_DIR/cma-tool``, else ``/tmp/cma-tool-locks``).

flock locks die with their process, so a killed run never leaves a stale
lock; the lock file also carries the holder's pid and output folder, read
only to say who holds it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cma_tool.errors import InfraError, UsageError

#: The lock file inside an output folder.
FOLDER_LOCK = ".cma-tool.lock"


def utc_stamp(now: float) -> str:
    """UTC time to the millisecond, sortable and safe in a file name: 20261205T071622.123Z."""
    whole = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{whole}.{int(now * 1000) % 1000:03d}Z"


def new_run_folder(parent: Path, stem: str, *, clock: Callable[[], float] = time.time,
                   token: Callable[[], str] = lambda: secrets.token_hex(3)) -> Path:
    """A folder no other run has or will get: mkdir fails on a name taken, and the name is drawn again."""
    parent.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        folder = parent / f"{stem}-{utc_stamp(clock())}-{token()}"
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        return folder
    # 100 draws of 24 random bits all taken: the token source is broken, not the lab.
    raise UsageError(f"could not create a fresh run folder under {parent}: every name drawn was taken",
                     hint="give --out DIR")


def _holder_text(info: dict[str, Any]) -> str:
    if not info:
        return "another run (it did not say who)"
    parts = [f"pid {info.get('pid')}"]
    if info.get("host"):
        parts.append(f"on {info['host']}")
    if info.get("out"):
        parts.append(f"writing {info['out']}")
    if info.get("started"):
        parts.append(f"since {info['started']}")
    return "a run (" + ", ".join(parts) + ")"


def _read_holder(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@dataclass
class _Flock:
    """An exclusive, non-blocking flock on ``path``; the holder's facts written into the file."""

    path: Path
    fd: int = -1

    def try_acquire(self, holder: dict[str, Any]) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            raise
        try:
            # Other users of a shared lock folder must be able to open it to try their lock.
            os.fchmod(fd, 0o666)
        except OSError:
            pass
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        self.fd = fd
        return True

    def release(self) -> None:
        if self.fd >= 0:
            # Emptied first: a reader that finds the file between our unlock and the next holder's
            # write must not name us.
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = -1


def _holder(out: Path | None) -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "out": str(out) if out else None,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


class FolderLock:
    """The run's claim on its output folder, for the whole run.

    Refused (UsageError: the command line names a folder this run cannot
    use) when another run holds it, or when it holds an earlier run's
    report.json and ``replace`` is False.
    """

    def __init__(self, out: Path, *, replace: bool = False, report_name: str = "report.json") -> None:
        self.out = out
        self.replace = replace
        self.report_name = report_name  # a matrix folder's is summary.json
        self._lock = _Flock(out / FOLDER_LOCK)

    def __enter__(self) -> Self:
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--out {self.out}: cannot create the output folder: {exc.strerror}") from None
        if not self._lock.try_acquire(_holder(self.out)):
            who = _holder_text(_read_holder(self._lock.path))
            raise UsageError(f"--out {self.out} is in use: {who} is writing into it",
                             hint="give each run its own --out (or leave --out out: every run then gets a "
                                  "fresh folder)")
        report = self.out / self.report_name
        if report.exists() and not self.replace:
            self._lock.release()
            previous = _read_holder(report)
            if previous.get("verdict") == "running":
                # Its lock is free, so it is not running: it was killed (SIGKILL, a crash, the host went
                # down). What it left is the only record of that, so it is kept unless told otherwise.
                raise UsageError(f"--out {self.out} holds the artefacts of a run that never ended (started "
                                 f"{previous.get('started', '?')}, verdict still 'running': it was killed or its "
                                 "host went down); refusing to overwrite them",
                                 hint="give --replace to run again into this folder, or another --out")
            raise UsageError(f"--out {self.out} holds an earlier run's {self.report_name} (verdict "
                             f"{previous.get('verdict', '?')}, started {previous.get('started', '?')}); "
                             "refusing to overwrite it",
                             hint="give --replace to overwrite that run's artefacts, or another --out")
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._lock.release()


def lock_folder(env: dict[str, str] | None = None) -> Path:
    """Where board locks live: shared by every user of this host when the system allows it."""
    env = dict(os.environ) if env is None else env
    candidates = [Path("/run/lock/cma-tool")]
    if env.get("XDG_RUNTIME_DIR"):
        candidates.append(Path(env["XDG_RUNTIME_DIR"]) / "cma-tool")
    candidates.append(Path("/tmp/cma-tool-locks"))
    for folder in candidates:
        try:
            folder.mkdir(mode=0o1777, parents=False, exist_ok=True)
            if os.access(folder, os.W_OK | os.X_OK):
                return folder
        except OSError:
            continue
    raise InfraError("no folder for board locks is writable (/run/lock, $XDG_RUNTIME_DIR, /tmp)")


def board_key(resource: str) -> str:
    """One name per physical board: a device path with its symlinks resolved, else the URL as given."""
    text = resource.strip()
    if text.startswith("/"):
        text = os.path.realpath(text)
    return text


def lock_file_name(key: str) -> str:
    """A readable file name for a key, with a hash so two keys never share one after the clean-up."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("_")[:80] or "board"
    return f"{readable}-{hashlib.sha256(key.encode()).hexdigest()[:10]}.lock"


class BoardLock:
    """The run's claim on one physical board (a console, an SSH address, a labgrid place), for the whole run.

    A board another run holds is refused at once (InfraError: the lab is
    busy, and a retry later may pass), naming the holder.
    """

    def __init__(self, resource: str, *, out: Path | None = None, folder: Path | None = None) -> None:
        self.resource = resource
        self.key = board_key(resource)
        self.out = out
        self.path = (folder or lock_folder()) / lock_file_name(self.key)
        self._lock = _Flock(self.path)

    def __enter__(self) -> Self:
        holder = _holder(self.out) | {"board": self.key}
        if not self._lock.try_acquire(holder):
            who = _holder_text(_read_holder(self.path))
            raise InfraError(f"board {self.resource} is locked: {who} holds it",
                             hint=f"wait for that run to end (lock file {self.path}); a killed run releases it "
                                  "at once")
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self._lock.release()
