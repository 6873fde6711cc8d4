"""cma-tool as a library: the few calls a board test needs, typed and stable.

Every call is built on the pieces `cma-tool run` and `cma-tool check` use, so
a test that calls them judges exactly as the commands do::

    from cma_tool import api

    plan = api.load_board("boards/qemu-aquila.yaml")           # validated and planned
    schedule = api.capture_schedule(plan, "configs/requests/one-after-another.yaml")
    prediction = api.predict(plan, schedule)                    # before anything boots
    with api.boot(plan, out=Path("runs/session")) as board:     # the emulated board, up until the block ends
        step = board.capture(schedule)                          # one capture step, checked against the model
        assert step.passed, api.explain(step.checks)
        print(board.shell("cat /proc/meminfo").output)

    result = api.run("boards/qemu-aquila.yaml", out=Path("runs/one"))   # the whole `cma-tool run`
    result = api.check_log("boards/qemu-aquila.yaml", "lava-job.log", out=Path("runs/lava"))

Errors are raised by whose fault they are (:mod:`cma_tool.errors`):
ConfigError (the input), UsageError (an impossible request), InfraError (the
lab: QEMU, a download), TargetError (the board misbehaved). A mismatch
between the model and the kernel is not an error: it is a failed
:class:`Check`, explained by :func:`explain`.

A script that a scheduler may stop wraps its board in
``with api.sigterm_raises(lambda signum: KeyboardInterrupt()):``: SIGTERM then
unwinds through ``api.boot``'s block, which powers the board off.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cma_tool.captures import Schedule
from cma_tool.check import Check
from cma_tool.deploy.session import BoardSession, ShellRun, StepRun
from cma_tool.errors import CmaToolError, ConfigError, ExitCode, InfraError, TargetError, UsageError
from cma_tool.model.events import Event
from cma_tool.model.scenario import Scenario
from cma_tool.observe import Observation
from cma_tool.plan import Plan
from cma_tool.prediction import Prediction
from cma_tool.signals import sigterm_raises

__all__ = [
    "BootedBoard", "Check", "CmaToolError", "ConfigError", "Event", "ExitCode", "InfraError", "Observation", "Plan",
    "Prediction", "Result", "Schedule", "ShellRun", "StepRun", "TargetError", "UsageError", "boot", "boot_cmdline",
    "capture_schedule", "check_log", "cross_check", "explain", "load_board", "observe", "pins_from", "predict",
    "run", "sigterm_raises", "target_kernel_profile",
]

#: An area's base for the model, by area name ({"linux,cma": 0x60000000}), or as (name, base) pairs.
Pins = Mapping[str, int] | Sequence[tuple[str, int]]
PathLike = str | Path


@dataclass(frozen=True)
class Result:
    """What `cma-tool run` or `cma-tool check` concluded: the exit code, report.json's content and every check."""

    exit_code: int
    report: dict[str, Any]
    checks: tuple[Check, ...]

    @property
    def passed(self) -> bool:
        return self.exit_code == ExitCode.OK

    @property
    def verdict(self) -> str:
        return str(self.report.get("verdict", ""))

    @property
    def failures(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if not c.passed)


def pins_from(pins: Pins | None) -> tuple[tuple[str, int], ...]:
    """Pins as the model takes them: ``{"linux,cma": 0x60000000}`` or pairs."""
    if pins is None:
        return ()
    items = pins.items() if isinstance(pins, Mapping) else pins
    out = []
    for name, base in items:
        if not isinstance(name, str) or not isinstance(base, int):
            raise ConfigError(f"model pin {name!r}={base!r}: expected an area name and an integer base",
                              hint="e.g. pins={'linux,cma': 0x60000000}")
        out.append((name, base))
    return tuple(out)


def target_kernel_profile(target: str = "emulated", *, suite: str | None = None,
                          kernel: str | None = None) -> str | None:
    """The kernel profile a way onto a board forces on the model (the emulator's Debian kernel), or None.

    ``kernel`` names the emulated board's Debian kernel (debian-6.1-arm64); ``suite`` an armhf one.
    """
    from cma_tool.deploy.targets import TargetOptions, resolve_target

    _, chosen = resolve_target(target, None, TargetOptions(suite=suite, kernel_name=kernel))
    return chosen.kernel_profile


def load_board(board: PathLike, *, kernel: str | None = None, suite: str | None = None, bootargs: str = "",
               force: bool = False) -> Plan:
    """Load a board file, validate it and plan its CMA areas (``cma-tool plan``).

    ``kernel`` names the model's kernel profile (default: the board's, or the
    one of ``suite``'s kernel on the emulated board); ``bootargs`` are judged
    as the kernel reads them; ``force`` plans a board with errors (they stay
    in ``plan.diagnostics``). Raises ConfigError with every problem otherwise.
    """
    from cma_tool.plan import make_plan

    if kernel is None and suite is not None:
        kernel = target_kernel_profile("emulated", suite=suite)
    return make_plan(Path(board), kernel=kernel, bootargs=bootargs, allow_misfit=True, allow_errors=force)


def capture_schedule(plan: Plan, scenario: PathLike | Scenario | None = None) -> Schedule:
    """The capture steps a target runs and the model predicts: a scenario file's, or the board's needs."""
    from cma_tool.captures import from_board, from_scenario
    from cma_tool.model.scenario import load_scenario

    if scenario is None:
        return from_board(plan.board)
    loaded = scenario if isinstance(scenario, Scenario) else load_scenario(Path(scenario))
    if loaded.kernel is not None and loaded.kernel != plan.profile.name:
        raise ConfigError(f"{loaded.file}: the scenario is for kernel profile {loaded.kernel}, but the plan's is "
                          f"{plan.profile.name}", hint="drop the scenario's 'kernel:' line, or plan for its kernel")
    return from_scenario(plan.board, loaded)


def boot_cmdline(plan: Plan, *, bootargs: str = "", agent: str | None = "run") -> str:
    """The command line cma-tool boots the board with: the board's, what the agent needs, then ``bootargs``."""
    from cma_tool.generate.bootargs import kernel_cmdline

    return kernel_cmdline(plan.board, plan.profile, agent=agent, extra=bootargs).text


def predict(plan: Plan, schedule: Schedule | None = None, *, cmdline: str | None = None,
            pins: Pins | None = None) -> Prediction:
    """The model's account of a run of ``schedule`` (default: the board's needs) before anything boots.

    ``cmdline`` is the kernel's command line (default: :func:`boot_cmdline`);
    ``pins`` force areas' bases in the model (a negative control).
    """
    from cma_tool.prediction import predict as model_predict

    schedule = schedule if schedule is not None else capture_schedule(plan)
    line = cmdline if cmdline is not None else boot_cmdline(plan)
    prediction, _ = model_predict(plan, line, pins_from(pins), schedule.model_steps(), schedule.model_devices(plan.board))
    return prediction


def observe(text: str) -> Observation:
    """Everything a console log (or the agent's output) says about CMA: areas, counters, events, capture steps."""
    from cma_tool.observe import observe as read

    return read(text)


def cross_check(plan: Plan, observation: Observation, *, schedule: Schedule | None = None,
                cmdline: str | None = None, pins: Pins | None = None,
                intended_cmdline: str | None = None) -> tuple[tuple[Check, ...], Prediction]:
    """The run's check stage: the observation against the model fed with what the target did.

    Stream labels are matched to board devices through the capture program's
    own lines (``schedule``'s labels are the fallback). ``cmdline`` is the one
    the kernel booted (default: the observation's); ``intended_cmdline``, if
    given, is checked against it.
    """
    from cma_tool.check import cross_check as check
    from cma_tool.checklog import devices_from_log

    line = cmdline if cmdline is not None else observation.cmdline
    if line is None:
        raise ConfigError("the observation shows no kernel command line", hint="give cmdline=...")
    devices = devices_from_log(plan.board, observation, schedule)
    checks, prediction = check(plan, line, observation, devices, pins_from(pins), intended_cmdline=intended_cmdline)
    return tuple(checks), prediction


def explain(checks: Sequence[Check]) -> str:
    """The failed checks as `cma-tool run` explains them: expected (model), observed (kernel), likely cause."""
    failed = [c for c in checks if not c.passed]
    if not failed:
        return f"all {len(checks)} checks passed"
    lines = [f"{len(failed)} of {len(checks)} checks failed (model vs kernel):"]
    for c in failed:
        lines += [f"  {c.name}:", f"    expected (model):  {c.expected}", f"    observed (kernel): {c.observed}"]
        if c.cause:
            lines.append(f"    likely cause:      {c.cause}")
    return "\n".join(lines)


def run(board: PathLike, *, out: Path, target: str = "emulated", boot: str | None = None,
        scenario: PathLike | None = None, suite: str | None = None, bootargs: str = "", pins: Pins | None = None,
        timeout: float = 120.0, cache: Path | None = None, force: bool = False, junit: Path | None = None,
        say: Callable[[str], None] | None = None, kernel: str | None = None) -> Result:
    """The whole `cma-tool run`: plan, prepare and predict, boot and capture, observe, cross-check, report.

    Never raises CmaToolError: the result's exit code and report say what
    happened (the README's exit codes). ``say`` gets the progress lines.
    ``kernel`` is the emulated board's Debian kernel (``--kernel debian-6.1-arm64``).
    """
    from cma_tool.run import RunOptions, execute

    opts = RunOptions(board=Path(board), out=out, target=target, boot=boot, bootargs=bootargs,
                      scenario=Path(scenario) if scenario is not None else None, junit=junit, pins=pins_from(pins),
                      cache=cache, timeout=timeout, force=force, suite=suite, kernel_name=kernel)
    code, report, checks = execute(opts, say=say or (lambda msg: None))
    return Result(code, report, tuple(checks))


def check_log(board: PathLike, log: PathLike, *, out: Path, kernel: str | None = None,
              bootargs: str | None = None, scenario: PathLike | None = None, pins: Pins | None = None,
              force: bool = False, junit: Path | None = None, say: Callable[[str], None] | None = None) -> Result:
    """`cma-tool check`: a board booted elsewhere, judged from its console log (plain text or a LAVA job log)."""
    from cma_tool.checklog import CheckOptions, execute_check

    opts = CheckOptions(board=Path(board), log=Path(log), out=out, kernel=kernel, bootargs=bootargs,
                        scenario=Path(scenario) if scenario is not None else None, pins=pins_from(pins),
                        force=force, junit=junit)
    code, report, checks = execute_check(opts, say=say)
    return Result(code, report, tuple(checks))


class BootedBoard:
    """A board kept booted at its shell: run capture steps and shell commands on it, each checked or traced.

    Made by :func:`boot`; valid inside its ``with`` block only.
    """

    def __init__(self, session: BoardSession) -> None:
        self.session = session

    @property
    def plan(self) -> Plan:
        return self.session.plan

    @property
    def cmdline(self) -> str:
        """The command line the board booted with."""
        return self.session.cmdline

    @property
    def console_log(self) -> Path:
        return self.session.console_log

    @property
    def boot_events(self) -> tuple[Event, ...]:
        """The CMA events the kernel traced while booting (the atomic pool)."""
        return tuple(self.session.boot.events)

    def capture(self, scenario: PathLike | Scenario | Schedule | None = None, *,
                pins: Pins | None = None) -> StepRun:
        """Run one capture step (a scenario file, a schedule, or the board's needs) and check it with the model.

        The step is judged as if the board had just booted for it: see
        :mod:`cma_tool.deploy.session`. The capture program failing raises
        TargetError; a mismatch shows in the result's checks.
        """
        schedule = scenario if isinstance(scenario, Schedule) else capture_schedule(self.plan, scenario)
        return self.session.capture(schedule, pins_from(pins))

    def shell(self, command: str, timeout: float | None = None) -> ShellRun:
        """Run a shell command on the board: its output, exit status and the CMA events it caused."""
        return self.session.shell(command, timeout)


@contextmanager
def boot(plan: Plan, *, out: Path, target: str = "emulated", suite: str | None = None, bootargs: str = "",
         timeout: float = 120.0, cache: Path | None = None, files: Mapping[str, str] | None = None,
         say: Callable[[str], None] | None = None, kernel: str | None = None) -> Iterator[BootedBoard]:
    """Boot ``plan``'s board and keep it at its shell until the block ends; it is powered off whatever ends it.

    The console goes to ``out/console.log`` (a log `cma-tool check` reads),
    each capture step's files to ``out/step-N/``; ``files`` are put on the
    board at boot as /cmatool/<name> (scripts, plans, test programs).

    The emulated board only for now: a serial or SSH board is run whole by
    :func:`run` (``cma-tool run --target serial|ssh``). Plan with the
    target's kernel: ``load_board(..., suite=suite)``.
    """
    from cma_tool.deploy.session import booted_emulated

    if target != "emulated":
        raise UsageError(f"a board kept booted for tests is the emulated board only, not --target {target}",
                         hint="run a serial or SSH board whole with cma-tool run (api.run), or check its "
                              "console log with cma-tool check (api.check_log)")
    expected = target_kernel_profile(target, suite=suite, kernel=kernel)
    if expected is not None and expected != plan.profile.name:
        raise ConfigError(f"the plan is for kernel profile {plan.profile.name}, but the emulated board with "
                          f"{kernel or f'suite {suite}'} runs {expected}",
                          hint=f"plan with api.load_board(..., kernel={kernel or expected!r})")
    with booted_emulated(plan, out, suite=suite, kernel=kernel, bootargs=bootargs, timeout=timeout, cache=cache,
                         files=files, say=say or (lambda msg: None)) as session:
        yield BootedBoard(session)
