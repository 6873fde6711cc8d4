"""A board reached over SSH (`cma-tool run --target ssh`): deploy, optionally reboot into a new kernel, capture.

The board runs its own Linux; cma-tool brings the rest with fabric: the
capture program (static ARM), the agent (firmware/cmatool-run, plain sh) and
the agent's plan. With a kernel and/or DTB given, they go to the board's boot
folder first, the board reboots into them, and the run waits for it to come
back. The text returned holds the agent's framed sections, whose ``dmesg``
section carries the boot log, so observe.py reads it as it reads a console.
The same capture step serves the emulated board's SSH way.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

from cma_tool.board.types import Board
from cma_tool.deploy.console import Console
from cma_tool.deploy.sections import DONE_MARK
from cma_tool.deploy.ssh import BoardSsh, Deployment, SshSettings
from cma_tool.deploy.targets import Job, Prepared, TargetOptions
from cma_tool.errors import CmaToolError, ConfigError, InfraError, TargetError, UsageError

#: Where the plan, the programs and the agent's output go on the board.
REMOTE_PLAN = "/cmatool/plan"
REMOTE_PROGRAM_DIR = "/usr/local/bin"
REMOTE_OUTPUT = "/tmp/cmatool-run.log"
AGENT = Path(__file__).resolve().parents[2] / "firmware" / "cmatool-run"
_NEVER = re.compile(rb"(?!)")


class SshTarget:
    """``--target ssh``: a board already running Linux, its ``ssh:`` section the way in."""

    kernel_profile: str | None = None  # the board file's: the kernel is the board's own

    def __init__(self, options: TargetOptions) -> None:
        if options.bootargs.strip() and options.dtb is None:
            raise UsageError("--bootargs with --target ssh needs --dtb: a running board's command line is its own; "
                             "the one given goes into the DTB the board is rebooted with")
        self.options = options
        self._dtb: Path | None = None
        self._program: Path | None = None

    def prepare(self, job: Job) -> Prepared:
        from cma_tool.deploy import image as timage
        from cma_tool.generate.bootargs import kernel_cmdline

        board, profile = job.plan.board, job.plan.profile
        if board.ssh is None:
            ssh_settings(board)  # raises, naming what the board file lacks
        cmdline = kernel_cmdline(board, profile, extra=job.extra_bootargs)
        if self.options.dtb is None and job.extra_bootargs.strip():
            raise ConfigError(f"the scenario's bootargs ({job.extra_bootargs!r}) cannot reach a running board's "
                              "command line", hint="give --dtb so the board reboots with them, or drop them")
        if self.options.dtb is not None:
            from cma_tool.dtbcmd import patch_for_board, read_dtb

            self._dtb = job.out / "board.dtb"
            self._dtb.write_bytes(patch_for_board(read_dtb(self.options.dtb), board, cmdline.text,
                                                  source=str(self.options.dtb)))
        job.say("      capture program (cached)")
        image = timage.ensure_image(job.cache, progress=lambda m: job.say(f"      {m}"), ssh=True)
        assert image.capture_program is not None, "the ssh flavour carries the capture program"
        self._program = image.capture_program
        job.stage("image", capture_program=str(image.capture_program))
        # Without a DTB of ours the board boots its own command line: the model learns it from the board's log.
        return Prepared(cmdline.text, cmdline_is_ours=self._dtb is not None,
                        files={"dtb": str(self._dtb)} if self._dtb else {}, notes=cmdline.notes)

    def run(self, job: Job, prepared: Prepared) -> str:
        assert self._program is not None, "prepare() runs first"
        text = run_over_ssh(job.plan.board, capture_program=self._program, plan=job.agent_plan_text,
                            workdir=job.out, timeout=job.timeout, kernel=self.options.kernel, dtb=self._dtb,
                            on_stage=job.stage)
        # A board reached over SSH has no console of ours: what the agent said is the run's console log.
        (job.out / "console.log").write_text(text)
        return text


def capture_over_ssh(ssh: BoardSsh, *, capture_program: Path, plan: str, workdir: Path, deadline: float,
                     on_stage: Callable[[str], None], console: Console | None = None) -> str:
    """Deploy the capture program, the agent and its plan, run the agent, return its output.

    The output is also written to ``workdir/ssh-output.log``. The agent
    stopping before its DONE line (killed, timed out, not found) is a
    TargetError naming what it printed; a DONE line with a non-zero rc is
    returned for the caller to classify after observing it. With the
    board's ``console`` (the emulated board's), an oops or panic it shows
    during the run is raised as the console's own error.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "plan").write_text(plan)
    output_log = workdir / "ssh-output.log"
    ssh.deploy(Deployment(capture_program=capture_program, program_dir=REMOTE_PROGRAM_DIR))
    ssh.put(AGENT, f"{REMOTE_PROGRAM_DIR}/cmatool-run", mode=0o755)
    ssh.put(workdir / "plan", REMOTE_PLAN)
    on_stage("deployed")
    # The output is kept on the board too, so a run cut off by the deadline still leaves what it printed.
    command = (f"PATH={REMOTE_PROGRAM_DIR}:$PATH cmatool-run {REMOTE_PLAN} >{REMOTE_OUTPUT} 2>&1; rc=$?; "
               f"cat {REMOTE_OUTPUT}; exit $rc")
    try:
        out, code = ssh.run(command, timeout=max(1.0, deadline - time.monotonic()), check=False)
    except InfraError:
        if console is not None:  # a board that panics or resets mid-run drops the connection: its console says so
            console.try_expect(_NEVER, 1.0)
        raise
    except TargetError as err:
        try:
            ssh.get(REMOTE_OUTPUT, output_log)
            got = f"; what it printed is in {output_log}"
        except CmaToolError:
            got = ""
        hint = f"see {console.log_path} for the kernel's side" if console is not None else ""
        raise TargetError(f"cmatool-run did not finish on the board: {err.message}{got}", hint=hint) from None
    output_log.write_text(out)
    if console is not None:  # an oops or panic during the capture shows on the console, not in the SSH output
        console.try_expect(_NEVER, 0)
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


def run_over_ssh(board: Board, *, capture_program: Path, plan: str, workdir: Path, timeout: float,
                 kernel: Path | None = None, dtb: Path | None = None, known_hosts: Path | None = None,
                 on_stage: Callable[[str], None] = lambda s: None) -> str:
    """The whole SSH session: connect (retrying until the deadline), [deploy kernel+DTB, reboot], capture."""
    deadline = time.monotonic() + timeout
    with BoardSsh(ssh_settings(board, known_hosts=known_hosts)) as ssh:
        ssh.connect(timeout=max(1.0, deadline - time.monotonic()))
        on_stage("ssh")
        if kernel is not None or dtb is not None:
            ssh.deploy(Deployment(kernel=kernel, dtb=dtb))
            on_stage("kernel-deployed")
            ssh.reboot(timeout=max(1.0, deadline - time.monotonic()))
            on_stage("rebooted")
        return capture_over_ssh(ssh, capture_program=capture_program, plan=plan, workdir=workdir,
                                deadline=deadline, on_stage=on_stage)
