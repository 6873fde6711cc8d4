"""Deploying to a board that runs Linux and sshd (or dropbear), with fabric.

One fabric Connection is opened per session and reused for every command
and transfer (a new handshake costs far more than a command on a small
board); only a reboot replaces it. What this module does to a board:

- connect, retrying until a deadline (the board may still be booting);
- upload the kernel, DTB, modules tarball and capture program, and check the
  sizes that arrived;
- replace the boot configuration (``extlinux.conf`` text or a ``boot.scr``
  made by :mod:`cma_tool.generate.bootargs`) atomically, or set U-Boot
  variables with ``fw_setenv``;
- reboot, and wait until the board has gone away and answers again;
- run commands and fetch results.

Host keys are checked: against ``~/.ssh/known_hosts`` and our own lab file,
refusing unknown keys (paramiko's RejectPolicy) unless the board's settings
say ``accept_new_host_keys``, in which case a new key is recorded in the lab
file (AutoAddPolicy). A key that differs from the recorded one is always
refused. fabric on its own would accept any key without a word.

Every value that comes from a board file (paths, variable values) reaches the
remote shell through :func:`shlex.quote`, or goes over SFTP, which has no
shell at all.

Blame: a command failing or a file missing on the board is a
:class:`TargetError`; no route, refused or dropped connections, timeouts and
host-key or login refusals are :class:`InfraError`; wrong settings are
:class:`ConfigError`.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import io
import logging
import re
import secrets
import shlex
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import Any, Self

import fabric
import invoke
import paramiko

from cma_tool.errors import CmaToolError, ConfigError, InfraError, TargetError

log = logging.getLogger(__name__)

#: The most one connection attempt may take before the next try (the whole connect has its own deadline).
ATTEMPT_TIMEOUT = 10.0
LONGEST_PAUSE = 2.0
DEFAULT_LAB_KNOWN_HOSTS = Path("~/.local/state/cma-tool/known_hosts")
#: Board-side errors on files; other OSErrors during a transfer are the connection's.
_TARGET_ERRNOS = {errno.ENOENT, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EISDIR, errno.ENOTDIR,
                  errno.EEXIST, errno.EDQUOT, errno.EFBIG}
_ENV_NAME = re.compile(r"[^=\s\x00]+")


@dataclass(frozen=True)
class SshSettings:
    """How to reach one board. ``where`` names the board-file section, for messages."""

    host: str
    port: int = 22
    user: str = "root"
    key_file: Path | None = None
    password: str | None = None
    #: The person's own known hosts, read only. None: do not read it.
    known_hosts: Path | None = Path("~/.ssh/known_hosts")
    #: Ours: read always; new keys are written here when accept_new_host_keys is set.
    lab_known_hosts: Path = DEFAULT_LAB_KNOWN_HOSTS
    accept_new_host_keys: bool = False
    where: str = "ssh settings"

    @property
    def address(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True)
class Deployment:
    """What to put on the board, and where. Remote folders are absolute paths on the board."""

    kernel: Path | None = None
    dtb: Path | None = None
    modules_tarball: Path | None = None  # unpacked at modules_root (it holds lib/modules/<release>/...)
    capture_program: Path | None = None
    boot_dir: str = "/boot"
    modules_root: str = "/"
    program_dir: str = "/usr/local/bin"


@dataclass(frozen=True)
class Deployed:
    """Where things landed on the board."""

    kernel: str | None = None
    dtb: str | None = None
    modules_root: str | None = None
    capture_program: str | None = None
    bytes_sent: int = 0
    seconds: float = 0.0


class _Unreachable(Exception):
    """One connection attempt failed in a way that waiting may cure (refused, timed out, no banner)."""


class _UnknownHostKey(Exception):
    def __init__(self, hostname: str, key: paramiko.PKey) -> None:
        super().__init__(f"{hostname} not found in known_hosts")
        self.hostname = hostname
        self.key = key


class _RejectUnknownHost:
    """paramiko's RejectPolicy, but raising an exception we can tell apart from other handshake failures.

    (Duck-typed: paramiko only calls ``missing_host_key``.)
    """

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise _UnknownHostKey(hostname, key)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH's SHA256 fingerprint spelling, as ``ssh-keygen -l`` prints it."""
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _check_remote_path(path: str, what: str, where: str) -> str:
    if not path or "\x00" in path or not path.startswith("/"):
        raise ConfigError(f"{where}: {what} {path!r} must be an absolute path on the board")
    return path


class BoardSsh:
    """An SSH session with one board. Use as a context manager, or call :meth:`close`."""

    def __init__(self, settings: SshSettings) -> None:
        problems = []
        if not settings.host or any(c.isspace() for c in settings.host):
            problems.append(f"host {settings.host!r} is not a host name or address")
        if isinstance(settings.port, bool) or not isinstance(settings.port, int) or not 0 < settings.port < 65536:
            problems.append(f"port {settings.port!r} is not a TCP port (1-65535)")
        if not settings.user:
            problems.append("user is empty")
        if settings.key_file is not None and not settings.key_file.expanduser().is_file():
            problems.append(f"key file {settings.key_file} does not exist")
        if problems:
            raise ConfigError(f"{settings.where}: " + "; ".join(problems))
        self.settings = settings
        self._conn: fabric.Connection | None = None

    # --- connection ---------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    @property
    def connected(self) -> bool:
        return self._conn is not None and bool(self._conn.is_connected)

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            try:
                conn.close()
            except (OSError, EOFError, paramiko.SSHException):
                pass  # already gone: nothing to tidy

    def connect(self, timeout: float = 60.0) -> None:
        """Open the session, retrying refused or silent connections until ``timeout`` seconds have passed."""
        if self.connected:
            return
        deadline = time.monotonic() + timeout
        pause = 0.25
        attempts = 0
        while True:
            attempts += 1
            left = deadline - time.monotonic()
            try:
                self._conn = self._open(max(0.5, min(left, ATTEMPT_TIMEOUT)))
                if attempts > 1:
                    log.info("ssh: %s answered after %d attempts", self.settings.address, attempts)
                return
            except _Unreachable as exc:
                last = str(exc)
            if time.monotonic() + pause >= deadline:
                s = self.settings
                raise InfraError(
                    f"cannot reach {s.address} over SSH within {timeout:g} s ({attempts} attempts); "
                    f"last error: {last}",
                    hint=f"check that the board is up and on the network, and that sshd listens on port {s.port}",
                )
            time.sleep(pause)
            pause = min(pause * 2, LONGEST_PAUSE)

    def _open(self, attempt_timeout: float) -> fabric.Connection:
        s = self.settings
        connect_kwargs: dict[str, Any] = {
            "look_for_keys": False,
            "allow_agent": False,
            "timeout": attempt_timeout,
            "banner_timeout": attempt_timeout,
            "auth_timeout": attempt_timeout,
        }
        if s.key_file is not None:
            connect_kwargs["key_filename"] = [str(s.key_file.expanduser())]
        if s.password is not None:
            connect_kwargs["password"] = s.password
        # lazy + an empty SSHConfig: neither ~/.ssh/config nor fabric's own config files change what we do.
        config = fabric.Config(lazy=True, ssh_config=paramiko.SSHConfig())
        conn = fabric.Connection(s.host, user=s.user, port=s.port, config=config, connect_kwargs=connect_kwargs)
        self._arm_host_keys(conn.client)
        try:
            conn.open()
        except BaseException as exc:
            transport = conn.client.get_transport()
            dropped = transport is None or not transport.is_active()
            conn.close()
            if isinstance(exc, paramiko.AuthenticationException) and dropped:
                # paramiko reports a server that vanished mid-login (a board going down) as an
                # authentication failure; a real refusal leaves the connection open.
                raise _Unreachable(f"the connection closed during login: {exc}") from None
            raise self._open_error(exc) from None
        return conn

    def _arm_host_keys(self, client: paramiko.SSHClient) -> None:
        s = self.settings
        if s.known_hosts is not None:
            mine = s.known_hosts.expanduser()
            if mine.is_file():
                try:
                    client.load_system_host_keys(str(mine))
                except (OSError, paramiko.SSHException, ValueError) as exc:
                    raise ConfigError(f"cannot read known hosts file {mine}: {exc}") from None
        lab = s.lab_known_hosts.expanduser()
        if s.accept_new_host_keys:
            try:
                lab.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                lab.touch(mode=0o600, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create the lab known hosts file {lab}: {exc}") from None
        if lab.is_file():
            try:
                client.load_host_keys(str(lab))  # also where AutoAddPolicy saves
            except (OSError, paramiko.SSHException, ValueError) as exc:
                raise ConfigError(f"cannot read known hosts file {lab}: {exc}") from None
        if s.accept_new_host_keys:
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        else:
            client.set_missing_host_key_policy(_RejectUnknownHost())

    def _open_error(self, exc: BaseException) -> BaseException:
        s = self.settings
        lab = s.lab_known_hosts.expanduser()
        if isinstance(exc, _UnknownHostKey):
            files = ", ".join(str(p) for p in (s.known_hosts, lab) if p is not None)
            keyscan = f"ssh-keyscan -p {s.port} {shlex.quote(s.host)}" if s.port != 22 else \
                f"ssh-keyscan {shlex.quote(s.host)}"
            return InfraError(
                f"refusing {exc.hostname}: its host key ({exc.key.get_name()} {fingerprint(exc.key)}) "
                f"is not in the known hosts ({files})",
                hint=f"compare the fingerprint with the board's own (ssh-keygen -lf on its host key), then add "
                     f"it (`{keyscan} >> ~/.ssh/known_hosts`), or set accept_new_host_keys for a lab board "
                     f"(new keys are then recorded in {lab})",
            )
        if isinstance(exc, paramiko.BadHostKeyException):
            return InfraError(
                f"refusing {exc.hostname}: its host key CHANGED (now {exc.key.get_name()} {fingerprint(exc.key)}, "
                f"known as {fingerprint(exc.expected_key)}); someone may be impersonating the board",
                hint=f"if the board was reinstalled, remove the old key: ssh-keygen -R "
                     f"{shlex.quote(exc.hostname)} -f <the known hosts file holding it> ({lab} or ~/.ssh/known_hosts)",
            )
        if isinstance(exc, paramiko.AuthenticationException):
            how = f"key {s.key_file}" if s.key_file else ("password" if s.password else "no key or password")
            return InfraError(f"{s.address} refused the login ({how}): {exc}",
                              hint="check the user, and that the key is in the board's authorized_keys")
        if isinstance(exc, (OSError, EOFError, paramiko.SSHException)):
            return _Unreachable(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
        return exc

    def _require(self) -> fabric.Connection:
        if self._conn is None:
            raise ConfigError(f"not connected to {self.settings.address}: call connect() first")
        return self._conn

    def _lost(self, doing: str, exc: BaseException) -> InfraError:
        return InfraError(f"SSH connection to {self.settings.address} failed while {doing}: "
                          f"{type(exc).__name__}: {exc}")

    def _transfer_error(self, doing: str, exc: BaseException) -> CmaToolError:
        if isinstance(exc, OSError) and not isinstance(exc, (TimeoutError, socket.timeout)) and (
            exc.errno in _TARGET_ERRNOS or exc.errno is None
        ):
            # paramiko's SFTP turns the server's status codes into OSError; socket failures carry other errnos.
            return TargetError(f"the board refused {doing}: {exc.strerror or exc}")
        return self._lost(doing, exc)

    # --- commands -----------------------------------------------------------------------------------

    def run(self, command: str | Sequence[str], *, timeout: float = 60.0, check: bool = True) -> tuple[str, int]:
        """Run on the board; returns (stdout, exit code). A sequence is one argv, quoted word by word.

        With ``check`` a non-zero exit is a TargetError carrying stderr. A
        command still running at ``timeout`` is a TargetError too (the
        channel is closed; a board without a pty does not kill it).
        """
        line = command if isinstance(command, str) else shlex.join(command)
        conn = self._require()
        late = TargetError(f"{line!r} on {self.settings.address} did not finish within {timeout:g} s")
        start = time.monotonic()
        try:
            result = conn.run(line, hide=True, warn=True, in_stream=False, timeout=timeout)
        except invoke.exceptions.CommandTimedOut:
            raise late from None
        except invoke.exceptions.ThreadException as exc:
            raise self._lost(f"running {line!r}", exc) from None
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._lost(f"running {line!r}", exc) from None
        code = int(result.exited)
        if code == -1 and time.monotonic() - start >= timeout:
            # invoke's timer closed the channel but was still running when invoke asked whether it had
            # fired, so invoke returned instead of raising CommandTimedOut. That timer thread is still
            # sending the channel-close; give it a moment, or closing the session under it would make
            # it die with a traceback.
            time.sleep(0.2)
            raise late
        if code == -1:  # paramiko's value when the channel closed without an exit status
            raise InfraError(f"SSH connection to {self.settings.address} closed before {line!r} finished")
        if check and code != 0:
            err = (result.stderr.strip() or result.stdout.strip() or "(no output)")[-1500:]
            raise TargetError(f"{line!r} failed on {self.settings.address} with exit code {code}: {err}")
        return str(result.stdout), code

    # --- files --------------------------------------------------------------------------------------

    def _sftp(self) -> paramiko.SFTPClient:
        try:
            return self._require().sftp()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._lost("opening SFTP (does the board have an sftp-server?)", exc) from None

    def _mkdir(self, folder: str) -> None:
        self.run(["mkdir", "-p", "--", folder])

    def put(self, local: Path, remote: str, *, mode: int | None = None) -> int:
        """Upload one file to the exact remote path (its folder is created); returns the bytes sent."""
        _check_remote_path(remote, "upload destination", self.settings.where)
        if not local.is_file():
            raise ConfigError(f"cannot upload {local}: no such file")
        size = local.stat().st_size
        self._mkdir(str(PurePosixPath(remote).parent))
        sftp = self._sftp()
        try:
            sftp.put(str(local), remote, confirm=False)
            # SFTP runs inside SSH's integrity check, so bytes cannot change on the way; a short
            # file (full disk, a write the board cut off) is what can happen.
            arrived = sftp.stat(remote).st_size
            if mode is not None:
                sftp.chmod(remote, mode)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise self._transfer_error(f"the upload of {local.name} to {remote}", exc) from None
        if arrived != size:
            raise TargetError(f"{remote} on the board has {arrived} bytes, {local} has {size} (disk full?)")
        return size

    def get(self, remote: str, local: Path) -> Path:
        """Fetch one file from the board to ``local`` (its folder is created)."""
        _check_remote_path(remote, "file to fetch", self.settings.where)
        try:
            local.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create {local.parent} for the results: {exc}") from None
        sftp = self._sftp()
        try:
            sftp.get(remote, str(local))
        except (OSError, EOFError, paramiko.SSHException) as exc:
            if isinstance(exc, OSError) and exc.filename == str(local):
                raise ConfigError(f"cannot write {local}: {exc.strerror}") from None
            raise self._transfer_error(f"to give {remote}", exc) from None
        return local

    def write_file(self, remote: str, content: str | bytes, *, mode: int = 0o644) -> None:
        """Replace a file atomically (write beside it, then rename): a cut-off write never leaves half a file."""
        _check_remote_path(remote, "file", self.settings.where)
        data = content.encode() if isinstance(content, str) else content
        self._mkdir(str(PurePosixPath(remote).parent))
        scratch = f"{remote}.cma-tool-{secrets.token_hex(4)}"
        sftp = self._sftp()
        try:
            sftp.putfo(io.BytesIO(data), scratch, file_size=len(data), confirm=True)
            sftp.chmod(scratch, mode)
            sftp.posix_rename(scratch, remote)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            try:
                sftp.remove(scratch)
            except (OSError, EOFError, paramiko.SSHException):
                pass
            raise self._transfer_error(f"writing {remote}", exc) from None

    def write_boot_config(self, remote: str, content: str | bytes) -> None:
        """Install ``extlinux.conf`` text or ``boot.scr`` bytes, then flush it to the medium."""
        self.write_file(remote, content)
        self.run("sync")  # the next step is usually a reboot or a power cut

    def set_uboot_env(self, values: Mapping[str, str | None], *, config: str | None = None) -> None:
        """Set (or, for None, delete) U-Boot variables with the board's ``fw_setenv``, in one command."""
        if not values:
            raise ConfigError(f"{self.settings.where}: no U-Boot variables to set")
        for name, value in values.items():
            if not _ENV_NAME.fullmatch(name):
                raise ConfigError(f"{self.settings.where}: {name!r} is not a U-Boot variable name "
                                  "(no '=', spaces or control characters)")
            if value is not None and "\x00" in value:
                raise ConfigError(f"{self.settings.where}: U-Boot variable {name} holds a NUL character")
        base = ["fw_setenv"] + (["-c", _check_remote_path(config, "fw_env.config", self.settings.where)]
                                if config else [])
        steps = [shlex.join([*base, "--", name] + ([] if value is None else [value])) for name, value in values.items()]
        self.run(" && ".join(steps))

    def deploy(self, what: Deployment) -> Deployed:
        """Upload everything given, unpack the modules, make the capture program executable."""
        where = self.settings.where
        problems = [f"{name} {path} does not exist" for name, path in (
            ("kernel", what.kernel), ("DTB", what.dtb), ("modules tarball", what.modules_tarball),
            ("capture program", what.capture_program)) if path is not None and not path.is_file()]
        for name, folder in (("boot_dir", what.boot_dir), ("modules_root", what.modules_root),
                             ("program_dir", what.program_dir)):
            try:
                _check_remote_path(folder, name, where)
            except ConfigError as exc:
                problems.append(exc.message)
        if problems:
            raise ConfigError(f"cannot deploy to {self.settings.address}: " + "; ".join(problems))
        start = time.monotonic()
        sent = 0
        placed: dict[str, str | None] = {}
        for key, local, folder, mode in (("kernel", what.kernel, what.boot_dir, None),
                                         ("dtb", what.dtb, what.boot_dir, None),
                                         ("capture_program", what.capture_program, what.program_dir, 0o755)):
            if local is not None:
                remote = str(PurePosixPath(folder) / local.name)
                sent += self.put(local, remote, mode=mode)
                placed[key] = remote
        if what.modules_tarball is not None:
            scratch = f"/tmp/cma-tool-{secrets.token_hex(4)}-{what.modules_tarball.name}"
            sent += self.put(what.modules_tarball, scratch)
            self._mkdir(what.modules_root)
            try:
                self.run(f"tar -xf {shlex.quote(scratch)} -C {shlex.quote(what.modules_root)}", timeout=300)
            finally:
                self.run(["rm", "-f", "--", scratch], check=False)
            placed["modules_root"] = what.modules_root
        return Deployed(kernel=placed.get("kernel"), dtb=placed.get("dtb"), modules_root=placed.get("modules_root"),
                        capture_program=placed.get("capture_program"), bytes_sent=sent,
                        seconds=time.monotonic() - start)

    # --- reboot -------------------------------------------------------------------------------------

    def _boot_id(self, conn: fabric.Connection) -> str | None:
        try:
            result = conn.run("cat /proc/sys/kernel/random/boot_id", hide=True, warn=True, in_stream=False,
                              timeout=ATTEMPT_TIMEOUT)
        except (invoke.exceptions.CommandTimedOut, invoke.exceptions.ThreadException, OSError, EOFError,
                paramiko.SSHException):
            return None
        text = str(result.stdout).strip()
        return text if result.exited == 0 and text else None

    def reboot(self, *, timeout: float = 180.0, command: str = "reboot", poll: float = 0.5) -> float:
        """Reboot and wait until the board has gone away and answers SSH again; returns the seconds it took.

        ``command`` is shell text from the board settings (``reboot``,
        ``systemctl reboot``...). It is started detached after a one-second
        delay so that our command returns before the connection drops. The
        board counts as rebooted when a new connection succeeds after one
        failed, or when the kernel's boot_id has changed (a board that comes
        back faster than we poll).
        """
        conn = self._require()
        before = self._boot_id(conn)
        detached = f"sh -c {shlex.quote('sleep 1; ' + command)} </dev/null >/dev/null 2>&1 &"
        self.run(detached, timeout=ATTEMPT_TIMEOUT)
        self.close()
        start = time.monotonic()
        deadline = start + timeout
        gone = False
        last = "it never stopped answering"
        while time.monotonic() < deadline:
            try:
                candidate = self._open(max(0.5, min(deadline - time.monotonic(), ATTEMPT_TIMEOUT)))
            except _Unreachable as exc:
                gone, last = True, str(exc)
                time.sleep(poll)
                continue
            now = self._boot_id(candidate)
            if gone or (before is not None and now is not None and now != before):
                self._conn = candidate
                return time.monotonic() - start
            candidate.close()
            time.sleep(poll)
        s = self.settings
        if not gone:
            raise TargetError(f"{s.address} did not reboot: it kept answering for {timeout:g} s after "
                              f"{command!r}" + (" with the same boot_id" if before else ""))
        raise TargetError(f"{s.address} went away after {command!r} but did not answer SSH again within "
                          f"{timeout:g} s; last error: {last}",
                          hint="watch the serial console: the new kernel may not boot, or the network may not come up")

