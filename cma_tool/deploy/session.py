"""A board kept booted at a shell, for many capture steps and shell commands (the pytest plugin's target).

`cma-tool run` boots, runs one plan and powers off. A test session wants the
board up across tests: the emulated board boots with ``cmatool.mode=shell``
(firmware/init leaves a ``cmatool# `` prompt on the console), and every
capture step is the agent run by hand from that shell (``cmatool-run PLAN``),
its framed sections read from the console as a run reads them.

What one step shows is judged as if the board had just booted and run that
step alone, so tests stay independent of each other: its observation is the
boot's facts (areas, boot log, the boot-time events such as the atomic pool,
the vmstat counters at boot) plus what the step itself did (the trace events
stamped after its start, the kernel log lines and counter changes since just
before it; nothing on the board is cleared, so a log of the whole session
keeps every event). That holds while every step gives back what
it took, which the agent does (it releases every stream at the end of its
plan); a shell command that keeps CMA memory makes later steps' events differ
from the model's, and the checks say so.

One kernel behaviour cannot be compared across steps: the pages a release
gives back wait on the per-CPU free lists, not counted in CmaFree, until the
next allocation drains them (see check.observed_free_drops). Before a step
that follows a release the shell's own processes may have taken some of those
pages, so the CmaFree drop at the step's first REQBUFS is not the model's
number; that one check is left out, and the step says so in its notes.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import shlex
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from cma_tool.captures import Schedule
from cma_tool.check import Check, cross_check
from cma_tool.deploy.console import Console
from cma_tool.deploy.qemu import EmulatedBoard, blame_qemu
from cma_tool.deploy.shell import LinuxShell
from cma_tool.deploy.watch import POWER_DOWN
from cma_tool.errors import CmaToolError, ConfigError, TargetError
from cma_tool.model.events import Event, parse_trace_line
from cma_tool.observe import Observation, observe, parse_boot_log, parse_keyvalues, refuse_failed_capture
from cma_tool.plan import Plan
from cma_tool.prediction import Prediction
from cma_tool.report.run_report import write_atomic

#: firmware/init's prompt in cmatool.mode=shell; busybox may follow it with a cursor query (ESC[6n).
PROMPT = rb"cmatool# (?:\x1b\[6n)?"
TRACE = "/sys/kernel/tracing/trace"
#: Longest command line typed at the board's shell (busybox's line editor takes 1024).
_MAX_LINE = 900


@dataclass(frozen=True)
class ShellRun:
    """One shell command on the board: its output, exit status and the CMA events it caused."""

    command: str
    output: str
    status: int
    events: tuple[Event, ...]
    event_lines: tuple[str, ...]  # the events as the kernel prints them (cma_alloc_finish: name=... pfn=...)


@dataclass(frozen=True)
class StepRun:
    """One capture step on the booted board, checked against the model.

    ``events`` are the step's own tracepoints; ``observation`` is what the
    checks compared: the boot's facts plus the step (see the module's doc).
    """

    number: int
    schedule: Schedule
    events: tuple[Event, ...]
    event_lines: tuple[str, ...]  # the step's events as the kernel prints them
    observation: Observation
    prediction: Prediction
    checks: tuple[Check, ...]
    folder: Path
    notes: tuple[str, ...] = ()

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)


@dataclass
class BoardSession:
    """A booted board at its shell. Use through :func:`booted_emulated`; never after it has ended."""

    plan: Plan
    cmdline: str  # the command line the board was booted with
    out: Path
    machine: EmulatedBoard
    sh: LinuxShell
    boot: Observation  # the facts of the boot: areas, boot log, boot-time events, counters at boot
    timeout: float
    steps: int = 0
    #: Has any CMA page been released since boot? (Then CmaFree before a step misses per-CPU pages.)
    released: bool = False
    broken: bool = False  # a command was cut off: the shell's state is unknown, power off hard

    @property
    def console_log(self) -> Path:
        return self.out / "console.log"

    def shell(self, command: str, timeout: float | None = None) -> ShellRun:
        """Run ``command`` (shell syntax) on the board; its output, status and the CMA events it caused."""
        with self._guard():
            mark = self._trace_mark()
            output, status = self.sh.run(command, timeout if timeout is not None else self.timeout)
            events = _after(self._trace_events(self._run_check(f"cat {TRACE}")), mark)
        self.released = self.released or any(e.kind == "release" for e in events)
        return ShellRun(command, output, status, events, self._texts(events))

    def capture(self, schedule: Schedule, pins: tuple[tuple[str, int], ...] = ()) -> StepRun:
        """Run one capture schedule with the agent, observe it and cross-check it with the model.

        A capture program that fails is the board's failure (TargetError), as
        in a run; a mismatch is not an error: the step's checks say it.
        """
        self.steps += 1
        folder = self.out / f"step-{self.steps}"
        folder.mkdir(parents=True, exist_ok=True)
        plan_text = schedule.agent_plan().render()
        write_atomic(folder / "agent-plan.txt", plan_text)
        remote = f"/tmp/cmatool-step-{self.steps}.plan"
        released_before = self.released
        with self._guard():
            self._write_file(remote, plan_text)
            vmstat_before = parse_keyvalues(self._run_check("grep cma /proc/vmstat"))
            dmesg_before = int(self._run_check("dmesg | wc -l").strip())
            mark = self._trace_mark()
            output, status = self.sh.run(f"cmatool-run {shlex.quote(remote)}", self.timeout)
        write_atomic(folder / "agent-output.txt", output)
        step = observe(output)
        step.events = list(_after(step.events, mark))
        self.released = self.released or any(e.kind == "release" for e in step.events)
        if step.done_rc is None or "trace" not in step.sections:
            raise TargetError(f"cmatool-run stopped before its DONE line (exit status {status})",
                              hint=f"its output: {folder / 'agent-output.txt'}; the console: {self.console_log}")
        refuse_failed_capture(step, see="its output", hint=f"{folder / 'agent-output.txt'}")
        obs = self._as_if_just_booted(step, vmstat_before, dmesg_before)
        write_atomic(folder / "observed.json", json.dumps(obs.to_json(), indent=2))
        devices = schedule.model_devices(self.plan.board)
        checks, pred = cross_check(self.plan, obs.cmdline or self.cmdline, obs, devices, pins,
                                   intended_cmdline=self.cmdline)
        notes: list[str] = []
        if released_before:
            first = next((c for c in checks if c.name.startswith("CmaFree drop at REQBUFS")), None)
            if first is not None:
                checks = [c for c in checks if c is not first]
                notes.append(f"'{first.name}' left out: pages released before this step may still wait on the "
                             f"per-CPU free lists (kernel: {first.observed}, model: {first.expected})")
        write_atomic(folder / "checks.json", json.dumps([c.to_json() for c in checks], indent=2))
        events = tuple(step.events)
        return StepRun(self.steps, schedule, events, self._texts(events), obs, pred, tuple(checks), folder,
                       tuple(notes))

    # ---- helpers --------------------------------------------------------------------

    def _as_if_just_booted(self, step: Observation, vmstat_before: dict[str, int], dmesg_before: int) -> Observation:
        """The step's observation with the boot's facts in front, as a run that booted for this step shows it."""
        new_log = step.sections.get("dmesg", "").splitlines()[dmesg_before:]
        since = Observation()
        parse_boot_log(new_log, since)
        vmstat = {key: self.boot.vmstat.get(key, 0) + value - vmstat_before.get(key, 0)
                  for key, value in step.vmstat.items()}
        return dataclasses.replace(
            step,
            boot_lines=self.boot.boot_lines + since.boot_lines,
            areas=list(self.boot.areas),
            memory_ranges=list(self.boot.memory_ranges),
            cma_reserved_kb=self.boot.cma_reserved_kb,
            alloc_failures=since.alloc_failures,
            events=self.boot.events + step.events,
            vmstat=vmstat,
        )

    @contextmanager
    def _guard(self) -> Iterator[None]:
        if self.broken:
            raise TargetError("an earlier command on this board was cut off: its shell is in an unknown state",
                              hint="the board is powered off at the end of the session; start a new one")
        try:
            with blame_qemu(self.machine):
                yield
        except BaseException:
            self.broken = True
            raise

    def _run_check(self, command: str) -> str:
        return self.sh.run_check(command, timeout=self.timeout)

    def _write_file(self, path: str, text: str) -> None:
        """Type a text file at the shell, a few lines per command (no heredoc: each line is quoted)."""
        lines = text.splitlines()
        redirect = ">"
        while True:
            chunk: list[str] = []
            size = 0
            while lines and (not chunk or size + len(shlex.quote(lines[0])) < _MAX_LINE):
                word = shlex.quote(lines.pop(0))
                chunk.append(word)
                size += len(word) + 1
            self._run_check(f"printf '%s\\n' {' '.join(chunk)} {redirect} {shlex.quote(path)}" if chunk
                            else f": {redirect} {shlex.quote(path)}")
            redirect = ">>"
            if not lines:
                return

    def _trace_mark(self) -> float:
        """The time stamp of the trace buffer's last event: later events are the next command's."""
        events = self._trace_events(self._run_check(f"tail -n 1 {TRACE}"))
        return events[-1].timestamp if events and events[-1].timestamp is not None else -1.0

    def _texts(self, events: tuple[Event, ...]) -> tuple[str, ...]:
        return tuple(e.text(self.plan.profile) for e in events)

    @staticmethod
    def _trace_events(text: str) -> tuple[Event, ...]:
        return tuple(e for line in text.splitlines() if (e := parse_trace_line(line)) is not None)


def _after(events: Sequence[Event], mark: float) -> tuple[Event, ...]:
    return tuple(e for e in events if e.timestamp is None or e.timestamp > mark)


def boot_observation(shell: LinuxShell, timeout: float) -> Observation:
    """What the board shows of its boot before any step: command line, kernel log, trace buffer, counters."""
    obs = Observation()
    parse_boot_log(shell.run_check("dmesg", timeout).splitlines(), obs)
    obs.cmdline = shell.run_check("cat /proc/cmdline", timeout).strip() or obs.cmdline
    obs.meminfo_boot = parse_keyvalues(shell.run_check("cat /proc/meminfo", timeout))
    obs.vmstat = parse_keyvalues(shell.run_check("grep cma /proc/vmstat", timeout))
    obs.events = [e for line in shell.run_check(f"cat {TRACE}", timeout).splitlines()
                  if (e := parse_trace_line(line)) is not None]
    return obs


@contextmanager
def booted_emulated(plan: Plan, out: Path, *, suite: str | None = None, kernel: str | None = None, bootargs: str = "",
                    timeout: float = 120.0, cache: Path | None = None, files: Mapping[str, str] | None = None,
                    say: Callable[[str], None] = lambda msg: None) -> Iterator[BoardSession]:
    """Boot the emulated board of ``plan`` to its shell; power it off when the block ends, whatever ends it.

    A block that ends normally powers the board off from its shell
    (``poweroff -f``); an error, a Ctrl-C or a command left running kills
    QEMU. The console is logged to ``out/console.log`` all along. ``files``
    are put on the board at boot, each as /cmatool/<name>. ``kernel`` names
    the Debian kernel (debian-6.1-arm64); ``suite`` an armhf one by its suite.
    """
    from cma_tool.deploy import image as timage
    from cma_tool.deploy import qemu
    from cma_tool.deploy.emulated import check_kernel_matches
    from cma_tool.generate.bootargs import kernel_cmdline
    from cma_tool.generate.dts import reserved_memory_dts

    board, profile = plan.board, plan.profile
    if board.emulation is None:
        raise ConfigError(f"{board.path} has no 'emulation' section: it cannot run on the emulated target",
                          hint="use boards/qemu-aquila.yaml, or include it and override")
    out.mkdir(parents=True, exist_ok=True)
    say("target image (cached)")
    img = timage.ensure_image(cache, progress=say, suite=suite, kernel=kernel)
    check_kernel_matches(board, profile, img.config)
    cmdline = kernel_cmdline(board, profile, agent="shell", extra=bootargs).text
    memory = f"{board.emulation.memory >> 20}M"
    boot_files = qemu.prepare_boot(img, out, banks=[qemu.MemoryBank(b.base, b.size) for b in board.banks],
                              reserved_memory_dts=reserved_memory_dts(board, profile, address_cells=2, size_cells=2),
                              bootargs=cmdline, memory=memory, agent_files=dict(files) if files else None,
                              rng_seed=secrets.token_bytes(32))
    deadline = time.monotonic() + timeout
    with ExitStack() as stack:
        machine = stack.enter_context(EmulatedBoard(boot_files, memory=memory, workdir=out))
        console = stack.enter_context(Console(machine.serial_url, out, name="console", default_timeout=timeout,
                                              reconnect_timeout=2.0))
        with blame_qemu(machine):
            say(f"booting {board.name} ({profile.name}) to its shell")
            console.expect(rb"Run /init", max(1.0, deadline - time.monotonic()),
                           waiting_for="the kernel to start /init")
            shell = LinuxShell(console, prompt=PROMPT, default_timeout=timeout)
            shell.attach(max(1.0, deadline - time.monotonic()))
            boot = boot_observation(shell, timeout)
        session = BoardSession(plan, cmdline, out, machine, shell, boot, timeout)
        yield session
        # Reached only when the block ended normally: a board still at its prompt goes down politely.
        if not session.broken:
            try:
                console.sendline("poweroff -f")
                with console.disable_check(*(bad.name for bad in console.bad_patterns)):
                    console.try_expect(POWER_DOWN, 10.0)
                machine.wait_for_power_off(10.0)
            except CmaToolError:
                pass  # the context managers kill QEMU on the way out
