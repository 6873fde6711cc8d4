"""The emulated board booted for SSH: dropbear on the target, fabric (BoardSsh) on the host.

The board boots the ssh flavour of the image (``ensure_image(ssh=True)``)
directly, with ``cmatool.mode=ssh`` and a virtio network card on QEMU's user
network whose port 22 is forwarded to a free port on 127.0.0.1. The serial
console is read and logged (console.log) all along, as on the direct path;
once the console says dropbear listens, one SSH connection does the rest the
way it would on a real board (:func:`~cma_tool.deploy.ssh_board.capture_over_ssh`),
then powers the board off.

Host keys are checked strictly: the known-hosts file of a run holds the one
key the image was built with (learned from the build, not from the network),
so a board presenting any other key is refused.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cma_tool.deploy.console import Console
from cma_tool.deploy.image import SshAccess, TargetImage
from cma_tool.deploy.qemu import BootFiles, EmulatedBoard
from cma_tool.deploy.ssh import BoardSsh, SshSettings
from cma_tool.errors import CmaToolError, ConfigError, InfraError, TargetError

#: firmware/init's line once dropbear listens, and its line when it cannot start it.
SSH_READY = rb"cma-tool: ssh ready on \S+"
SSH_FAILED = rb"cma-tool: ssh failed: ([^\r\n]*)\r?\n"  # the whole line: its reason is in the message


@dataclass(frozen=True)
class SshBoard:
    """A booted emulated board with an open, host-key-checked SSH session."""

    board: EmulatedBoard
    console: Console
    ssh: BoardSsh
    port: int  # on 127.0.0.1, forwarded to the board's port 22
    known_hosts: Path
    started: float  # time.monotonic() when QEMU was started
    seconds_to_ssh: float  # QEMU start to the first SSH command answered


def free_tcp_port() -> int:
    """A port on 127.0.0.1 nobody listens on right now (QEMU's hostfwd takes a number, not a socket)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def network_args(port: int) -> list[str]:
    """QEMU options for virt's virtio network card on the user network, the board's port 22 at ``port``."""
    return ["-netdev", f"user,id=n,hostfwd=tcp:127.0.0.1:{port}-:22", "-device", "virtio-net-device,netdev=n"]


def known_hosts_line(image: TargetImage, port: int) -> str:
    """The known_hosts line for the image's host key on the forwarded port (OpenSSH's ``[host]:port`` form)."""
    return f"[127.0.0.1]:{port} {_access(image).host_public_key}\n"


def _access(image: TargetImage) -> SshAccess:
    if image.ssh is None:
        raise ConfigError(f"image {image.key} is the {image.flavour} flavour: it has no SSH server",
                          hint="build it with ensure_image(ssh=True)")
    return image.ssh


@contextmanager
def booted_over_ssh(
    boot: BootFiles,
    *,
    image: TargetImage,
    workdir: Path,
    memory: str,
    timeout: float,
    on_stage: Callable[[str], None] = lambda s: None,
) -> Iterator[SshBoard]:
    """Boot ``boot`` (the ssh flavour, booted with ``cmatool.mode=ssh``) and connect with strict host keys.

    The console goes to ``workdir/console.log``, read all along. When the
    block ends normally the board is powered off over SSH (``poweroff -f``)
    and QEMU exits; on an error QEMU is killed. A board that does not get its
    SSH server up is a TargetError (panic, init's "ssh failed" line, no ready
    line before the deadline); QEMU failing, or SSH not answering after the
    ready line, is an InfraError naming the address and the last error.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    port = free_tcp_port()
    known_hosts = workdir / "known_hosts"
    known_hosts.write_text(known_hosts_line(image, port))
    settings = SshSettings(host="127.0.0.1", port=port, user="root", key_file=_access(image).client_key,
                           known_hosts=None, lab_known_hosts=known_hosts, where="the emulated board")
    started = time.monotonic()
    with EmulatedBoard(boot, memory=memory, workdir=workdir, extra_args=network_args(port)) as qb:
        on_stage("boot")
        with Console(qb.serial_url, workdir, name="console", default_timeout=timeout) as console:
            try:
                console.expect([rb"Run /init"], timeout=_left(deadline), waiting_for="the kernel to start /init")
                on_stage("init")
                ready = console.expect([SSH_READY, SSH_FAILED], timeout=_left(deadline),
                                       waiting_for="firmware/init to start the SSH server")
            except TargetError as err:
                # A guest that panics reboots and QEMU (-no-reboot) exits 0: still the board's fault.
                # A non-zero exit is QEMU's own failure (a bad option, a port taken).
                if qb.process.poll() not in (None, 0):
                    raise InfraError(f"QEMU exited early (code {qb.process.returncode}): {qb.qemu_stderr()}") from err
                raise
            if ready.index == 1:
                raise TargetError(f"the board could not start its SSH server: {ready.group(1)}",
                                  hint=f"see {console.log_path}; the image must be the ssh flavour")
            with BoardSsh(settings) as ssh:
                ssh.connect(timeout=_left(deadline))
                ssh.run("true", timeout=_left(deadline))
                seconds_to_ssh = time.monotonic() - started
                on_stage("ssh")
                # Powered off politely only after success: on an error or Ctrl-C, EmulatedBoard
                # kills QEMU at once rather than wait on a board that may not answer.
                yield SshBoard(qb, console, ssh, port, known_hosts, started, seconds_to_ssh)
                _power_off(ssh)
            try:  # poweroff -f: QEMU (-no-reboot) exits once the guest is down
                qb.wait(15)
            except TargetError:
                pass  # EmulatedBoard kills it on the way out


def _power_off(ssh: BoardSsh) -> None:
    """``poweroff -f``, detached so that our command returns before the connection drops."""
    if not ssh.connected:
        return
    try:
        ssh.run("(sleep 0.1; poweroff -f) </dev/null >/dev/null 2>&1 &", timeout=5, check=False)
    except CmaToolError:
        pass  # the board is going away either way: EmulatedBoard kills QEMU on exit
    ssh.close()


def _left(deadline: float) -> float:
    return max(1.0, deadline - time.monotonic())
