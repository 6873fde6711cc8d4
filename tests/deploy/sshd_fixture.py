"""A real OpenSSH server for the SSH tests: our own config, host key, client key and port.

The "board" is this machine: sshd runs as root on 127.0.0.1, in the
foreground, and a temp folder plays the board's file system. Stopping it
kills the listener and every session process it forked (found by walking
/proc from its pid), the way a rebooting board drops every connection.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cma_tool.deploy.ssh import SshSettings
from tests.tools import need

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path)],
                   check=True, timeout=30)
    return path


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class Sshd:
    folder: Path
    port: int
    host_key: Path
    client_key: Path
    boots: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log(self) -> Path:
        return self.folder / f"sshd-{self.boots}.log"

    def known_hosts_line(self, host_key: Path | None = None) -> str:
        kind, blob = (host_key or self.host_key).with_suffix(".pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {kind} {blob}\n"

    def settings(self, **overrides: Any) -> SshSettings:
        values: dict[str, Any] = {
            "host": "127.0.0.1", "port": self.port, "user": "root", "key_file": self.client_key,
            "known_hosts": self.folder / "known_hosts", "lab_known_hosts": self.folder / "lab" / "known_hosts",
        }
        values.update(overrides)
        return SshSettings(**values)

    def trust(self) -> None:
        """Put the host key into the person's known_hosts, as ssh-keyscan >> would."""
        with (self.folder / "known_hosts").open("a") as f:
            f.write(self.known_hosts_line())

    def start(self, host_key: Path | None = None) -> None:
        assert self.proc is None, "already running"
        self.boots += 1
        config = self.folder / f"sshd_config-{self.boots}"
        home = self.folder / "home"
        home.mkdir(exist_ok=True)
        # Debian's bash reads ~/.bashrc even for `ssh host command`; this machine's /root/.bashrc
        # runs pyenv, which can block on a lock for a minute. A board's root has a plain shell, so
        # the sessions get an empty HOME.
        config.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key or self.host_key}\n"
            f"AuthorizedKeysFile {self.folder}/authorized_keys\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\nUsePAM no\n"
            f"PidFile none\nSubsystem sftp {SFTP_SERVER}\nSetEnv BOARD_BOOT={self.boots} HOME={home}\n"
            "LogLevel VERBOSE\n"
        )
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited with {self.proc.returncode}: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(64).startswith(b"SSH-2.0"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"sshd did not answer on port {self.port}: {self.log.read_text()}")

    def stop(self) -> None:
        """Kill the listener and every session it forked: the board has gone."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        for pid in [proc.pid, *descendants(proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)


def require_sshd() -> None:
    if os.geteuid() != 0:
        pytest.skip("the sshd fixture runs sshd as root")
    for tool in (SSHD, SFTP_SERVER):
        need(tool)
    # sshd refuses to start without its privilege-separation folder, which the
    # openssh-server package expects systemd's tmpfiles to create at boot.
    privsep = Path("/run/sshd")
    if not privsep.is_dir():
        privsep.mkdir(mode=0o755)


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    require_sshd()
    folder = tmp_path / "sshd"
    folder.mkdir()
    client_key = keygen(folder / "client_key")
    (folder / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    server = Sshd(folder=folder, port=free_tcp_port(), host_key=keygen(folder / "host_key"), client_key=client_key)
    server.start()
    try:
        yield server
    finally:
        server.stop()
