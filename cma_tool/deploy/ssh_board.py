"""A board reached over SSH (`cma-tool run --target ssh`): deploy, optionally reboot into a new kernel, capture.

The board runs its own Linux; cma-tool brings the rest with fabric: the
capture program (static ARM), the agent (firmware/cmatool-run, plain sh) and
the capture plan. With a kernel and DTB given, they go to the board's boot
folder first, the board reboots into them, and the run waits for it to come
back. The text returned holds the agent's framed sections, whose ``dmesg``
section carries the boot log, so observe.py reads it as it reads a console.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from cma_tool.board.types import Board
from cma_tool.deploy.sections import DONE_MARK
from cma_tool.deploy.ssh import BoardSsh, Deployment, SshSettings
from cma_tool.errors import CmaToolError, ConfigError, InfraError, TargetError

#: Where the plan, the programs and the agent's output go on the board.
REMOTE_PLAN = "/cmatool/capture.args"
REMOTE_PROGRAM_DIR = "/usr/local/bin"
REMOTE_OUTPUT = "/tmp/cmatool-run.log"
AGENT = Path(__file__).resolve().parents[2] / "firmware" / "cmatool-run"


def capture_over_ssh(ssh: BoardSsh, *, capture_program: Path, capture_args: Sequence[str], workdir: Path,
                     deadline: float, on_stage: Callable[[str], None], agent: Path | None = None) -> str:
    """Deploy the capture program (and the agent, if given) and the plan, run the agent, return its output.

    The output is also written to ``workdir/ssh-output.log``. The agent stopping
    before its DONE line (killed, timed out, not found) is a TargetError naming
    what it printed; a DONE line with a non-zero rc is returned for the caller
    to classify after observing it.
    """
    for arg in capture_args:
        if "\n" in arg or not arg:
            raise ConfigError(f"capture argument {arg!r} is empty or holds a newline")
    workdir.mkdir(parents=True, exist_ok=True)
    plan = workdir / "capture.args"
    plan.write_text("".join(a + "\n" for a in capture_args))
    output_log = workdir / "ssh-output.log"
    ssh.deploy(Deployment(capture_program=capture_program, program_dir=REMOTE_PROGRAM_DIR))
    if agent is not None:
        ssh.put(agent, f"{REMOTE_PROGRAM_DIR}/cmatool-run", mode=0o755)
    ssh.put(plan, REMOTE_PLAN)
    on_stage("deployed")
    # The output is kept on the board too, so a run cut off by the deadline still leaves what it printed.
    command = f"PATH={REMOTE_PROGRAM_DIR}:$PATH cmatool-run >{REMOTE_OUTPUT} 2>&1; rc=$?; cat {REMOTE_OUTPUT}; exit $rc"
    try:
        out, code = ssh.run(command, timeout=max(1.0, deadline - time.monotonic()), check=False)
    except TargetError as err:
        try:
            ssh.get(REMOTE_OUTPUT, output_log)
            got = f"; what it printed is in {output_log}"
        except CmaToolError:
            got = ""
        raise TargetError(f"cmatool-run did not finish on the board: {err.message}{got}") from None
    output_log.write_text(out)
    on_stage("captured")
    if DONE_MARK not in out:
        tail = out[-600:] or "(no output)"
        raise TargetError(f"cmatool-run stopped before its DONE line (exit code {code}); last output:\n{tail}",
                          hint=f"full output: {output_log}")
    return out.replace("\r\n", "\n")


def ssh_settings(board: Board, *, known_hosts: Path | None = None) -> SshSettings:
    """The board file's ``ssh:`` section as connection settings (host keys checked unless it says otherwise)."""
    if board.ssh is None:
        raise ConfigError(f"{board.path}: --target ssh needs an 'ssh:' section (host, user, key)",
                          hint="ssh: {host: aquila.lab, user: root, key: ~/.ssh/id_ed25519}")
    s = board.ssh
    where = f"{s.where.file}:{s.where.line}"
    extra = {} if known_hosts is None else {"known_hosts": None, "lab_known_hosts": known_hosts}
    return SshSettings(host=s.host, port=s.port, user=s.user,
                       key_file=Path(s.key).expanduser() if s.key else None,
                       accept_new_host_keys=s.accept_new_host_keys, where=where, **extra)  # type: ignore[arg-type]


def run_over_ssh(board: Board, *, capture_program: Path, capture_args: Sequence[str], workdir: Path,
                 timeout: float, kernel: Path | None = None, dtb: Path | None = None,
                 known_hosts: Path | None = None, on_stage: Callable[[str], None] = lambda s: None) -> str:
    """The whole SSH session: connect (retrying until the deadline), [deploy kernel+DTB, reboot], capture."""
    deadline = time.monotonic() + timeout
    with BoardSsh(ssh_settings(board, known_hosts=known_hosts)) as ssh:
        ssh.connect(timeout=max(1.0, deadline - time.monotonic()))
        on_stage("ssh")
        if kernel is not None or dtb is not None:
            ssh.deploy(Deployment(kernel=kernel, dtb=dtb))
            on_stage("kernel-deployed")
            try:
                ssh.reboot(timeout=max(1.0, deadline - time.monotonic()))
            except InfraError:
                raise
            on_stage("rebooted")
        return capture_over_ssh(ssh, capture_program=capture_program, capture_args=capture_args, workdir=workdir,
                                deadline=deadline, on_stage=on_stage, agent=AGENT)
