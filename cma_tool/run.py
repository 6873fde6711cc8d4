"""`cma-tool run`: the stages, in order, the same for every way onto a board.

plan -> capture schedule -> prepare the target (image, DTB, command line)
and predict -> boot and capture -> observe -> cross-check -> report. What
differs between an emulated board, a bench board on its serial console and
a board reached over SSH lives behind :class:`~cma_tool.deploy.targets.Target`.

Everything a run makes goes into its output folder as soon as it exists: the
plan, the schedule and the model's prediction before the board boots, the
console log byte by byte while it runs (console.log, console.timing), and
report.json after every stage, so a run that is killed or hangs still leaves
a usable record.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from cma_tool.board.types import Board
from cma_tool.deploy.targets import TargetOptions
from cma_tool.errors import CmaToolError, ConfigError, ExitCode
from cma_tool.locks import BoardLock, FolderLock, new_run_folder
from cma_tool.plan import Plan, make_plan
from cma_tool.report.meta import file_hashes, header
from cma_tool.report.run_report import (
    junit_document,
    junit_testsuite,
    report_json,
    summary_table,
    write_atomic,
)
from cma_tool.signals import sigterm_raises

if TYPE_CHECKING:
    from cma_tool.captures import Schedule
    from cma_tool.check import Check
    from cma_tool.observe import Observation
    from cma_tool.prediction import Prediction


@dataclass
class RunOptions:
    board: Path
    out: Path
    target: str | None = None  # None: the board's (labgrid when its file has a lab: section, else emulated)
    boot: str | None = None  # None: the target's usual way (emulated: direct, serial: uboot, ssh: ssh)
    bootargs: str = ""
    scenario: Path | None = None  # None: the board's declared needs
    junit: Path | None = None
    pins: tuple[tuple[str, int], ...] = ()
    cache: Path | None = None
    timeout: float = 120.0
    force: bool = False  # run even when validation finds errors
    dtb: Path | None = None  # serial/ssh: the board's own DTB, patched
    suite: str | None = None  # emulated: the Debian suite whose armhf kernel the target runs (an alias)
    kernel_name: str | None = None  # emulated: the Debian kernel the target runs (--kernel debian-6.1-arm64)
    console: str | None = None  # serial: console URL (default: the board file's)
    kernel: Path | None = None  # serial: the board's zImage; ssh: a kernel to reboot into
    replace: bool = False  # write into a folder that holds an earlier run's report.json
    keep_images: bool = False  # copy kernel and initrd into the folder instead of linking the cache's
    attempt: int = 1  # which try of --retries this is (1: the first)
    place: str | None = None  # labgrid: the place
    coordinator: str | None = None  # labgrid: HOST:PORT of the coordinator
    lock_folder: Path | None = None  # where board locks live (default: locks.lock_folder())

    def target_options(self) -> TargetOptions:
        return TargetOptions(suite=self.suite, kernel_name=self.kernel_name, console=self.console, kernel=self.kernel,
                             dtb=self.dtb,
                             bootargs=self.bootargs, place=self.place, coordinator=self.coordinator)


@dataclass
class RunRecord:
    """report.json, rewritten after every stage."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def stage(self, name: str, **facts: Any) -> None:
        self.data.setdefault("stages", []).append(
            {"stage": name, "at": round(time.monotonic() - self.started, 3), **facts})
        self.data["stage"] = name
        self.flush()

    def flush(self) -> None:
        self.data["seconds"] = round(time.monotonic() - self.started, 3)
        write_atomic(self.path, report_json(self.data))


class _Terminated(Exception):
    """A lab scheduler's SIGTERM: the run unwinds like Ctrl-C, the board is powered off and the report written."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signum} (SIGTERM)")


#: What a run leaves in its folder; a rerun into the same folder starts them afresh.
ARTEFACTS = ("plan.json", "schedule.json", "agent-plan.txt", "predicted.json", "console.log", "console.timing",
             "observed.json", "report.json")


def execute(opts: RunOptions, say: Callable[[str], None] | None = None) -> tuple[int, dict[str, Any], list[Check]]:
    """The whole run. Returns (exit code, report, checks); never raises CmaToolError.

    The output folder is claimed first (locks.FolderLock): a folder another
    run is writing, or one that holds an earlier report without
    ``opts.replace``, is refused with exit 2 and nothing in it is touched
    (the report returned then is not written anywhere).
    """
    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    opts = with_lab_section(opts)
    try:
        with FolderLock(opts.out, replace=opts.replace):
            return _execute_claimed(opts, say)  # turns every CmaToolError into its verdict itself
    except CmaToolError as err:  # so only the claim itself can be refused here
        return int(err.exit_code), {"board": str(opts.board), "target": opts.target, "out": str(opts.out),
                                    "verdict": err.kind, "message": str(err), "exit_code": int(err.exit_code)}, []


def _execute_claimed(opts: RunOptions, say: Callable[[str], None]) -> tuple[int, dict[str, Any], list[Check]]:
    for name in ARTEFACTS:
        (opts.out / name).unlink(missing_ok=True)
    record = RunRecord(opts.out / "report.json", {
        **header("report", time.time()), "board": str(opts.board), "target": opts.target, "boot": opts.boot,
        "suite": opts.suite, "scenario": str(opts.scenario) if opts.scenario else None,
        "attempt": opts.attempt, "verdict": "running", "out": str(opts.out), "hashes": {}})
    # Every progress line says how far into the run it is: a slow stage shows in the log as it happens.
    base_say = say
    say = lambda msg: base_say(f"[{record.elapsed():6.1f}s] {msg}")  # noqa: E731
    record.stage("start")
    code, checks = conclude(record, lambda: _stages_held(opts, record, say), junit=opts.junit, say=say)
    return code, record.data, checks


def _stages_held(opts: RunOptions, record: RunRecord, say: Callable[[str], None]) -> list[Check]:
    """The stages, with what they hold (the board's lock) released as soon as they end."""
    with ExitStack() as held:
        return _stages(opts, record, say, held)


def conclude(record: RunRecord, stages: Callable[[], list[Check]], *, junit: Path | None = None,
             say: Callable[[str], None] = lambda msg: None) -> tuple[int, list[Check]]:
    """Run ``stages`` and turn what they give into the report's verdict and the exit code.

    Checks that all pass are exit 0, any failed one exit 5; an error is its
    own kind's code (whose fault it is); Ctrl-C and SIGTERM have codes of
    their own (130, 143) that no rack retries. The report ends with the "end"
    stage, then report.html; ``junit`` gets the run as one testsuite. Shared
    by `cma-tool run` and `cma-tool check`, so both judge alike.
    """
    checks: list[Check] = []
    code = ExitCode.OK
    try:
        with sigterm_raises(_Terminated):
            checks = stages()
        failed = [c for c in checks if not c.passed]
        if failed:
            code = ExitCode.MISMATCH
            record.data["verdict"] = "mismatch"
            record.data["message"] = f"{len(failed)} of {len(checks)} checks failed; first: {failed[0].name}: " \
                                     f"expected {failed[0].expected}, observed {failed[0].observed}"
        else:
            record.data["verdict"] = "pass"
            record.data["message"] = f"all {len(checks)} checks passed"
    except CmaToolError as err:
        code = err.exit_code
        record.data["verdict"] = err.kind
        record.data["message"] = str(err)
        if isinstance(err, ConfigError) and err.diagnostics:
            record.data["diagnostics"] = [str(d) for d in err.diagnostics]
    except (KeyboardInterrupt, _Terminated) as exc:
        # Someone stopped the run on purpose: neither the lab's fault (nothing to retry) nor a verdict.
        code = ExitCode.TERMINATED if isinstance(exc, _Terminated) else ExitCode.INTERRUPTED
        record.data["verdict"] = "interrupted"
        record.data["message"] = str(exc) or "interrupted (SIGINT, Ctrl-C)"
    record.data["exit_code"] = int(code)
    record.data["checks"] = [c.to_json() for c in checks]
    record.stage("end")
    try:
        from cma_tool.report.html import write_report

        write_report(record.path.parent)
    except Exception as exc:  # noqa: BLE001 - a page we cannot draw must not hide the run's own result
        what = "could not be written" if isinstance(exc, OSError) else "was not written: a bug in cma-tool"
        record.data["message"] = f"{record.data.get('message', '')} (report.html {what}: {type(exc).__name__}: {exc})"
        record.flush()
        say(f"report.html {what}: {type(exc).__name__}: {exc}")
    if junit:
        junit.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(junit, junit_document([junit_suite(record.data, checks, record.path.parent)]))
    return int(code), checks


def junit_suite(report: dict[str, Any], checks: list[Check], out: Path) -> ET.Element:
    """The run as one JUnit testsuite: its facts as properties and the console's tail as system-out."""
    error = None if report.get("verdict") in ("pass", "mismatch") else (
        str(report.get("verdict")), str(report.get("message", "")))
    props = {"board": report.get("board"), "kernel": report.get("kernel_profile"), "suite": report.get("suite"),
             "scenario": report.get("scenario") or "board needs", "target": report.get("target"),
             "boot": report.get("boot"), "attempt": report.get("attempt"), "out": str(out)}
    return junit_testsuite(checks, suite=f"cma-tool.{Path(str(report.get('board'))).stem}", error=error,
                           seconds=float(report.get("seconds", 0.0)), timestamp=str(report.get("started", "")),
                           hostname=str(report.get("host", "")),
                           properties={k: str(v) for k, v in props.items() if v is not None},
                           system_out=console_tail(out / "console.log"))


def console_tail(path: Path, lines: int = 80) -> str:
    try:
        text = path.read_bytes()[-64 * 1024:].decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.replace("\r\n", "\n").splitlines()[-lines:])


def _stages(opts: RunOptions, record: RunRecord, say: Callable[[str], None], held: ExitStack) -> list[Check]:
    """plan -> schedule -> prepare (and predict) -> boot and capture -> observe -> cross-check: the same for every way."""
    from cma_tool.captures import from_board, from_scenario
    from cma_tool.deploy.targets import Job, resolve_target
    from cma_tool.model.scenario import load_scenario
    from cma_tool.prediction import predict

    # Everything that can be refused is refused before the board is touched.
    way, target = resolve_target(opts.target or "emulated", opts.boot, opts.target_options())
    record.data["boot"] = way.boot
    scenario = load_scenario(opts.scenario) if opts.scenario is not None else None

    say(f"[1/5] plan {opts.board} (--target {way.target} --boot {way.boot}: {way.what})")
    plan = make_plan(opts.board, kernel=target.kernel_profile, bootargs=opts.bootargs, allow_misfit=True,
                     allow_errors=opts.force)
    if scenario is not None and scenario.kernel is not None and scenario.kernel != plan.profile.name:
        raise ConfigError(f"{scenario.file}: the scenario is for kernel profile {scenario.kernel}, but this run's "
                          f"kernel is {plan.profile.name}",
                          hint="drop the scenario's 'kernel:' line, or run the kernel it names (--suite)")
    record_plan(record, plan, opts.board, opts.scenario)
    resource = board_resource(way.target, plan.board, opts.console, opts.place, opts.coordinator)
    if resource is not None:
        # Held until the run ends (the ExitStack is the run's): two runs on one board would both fail.
        held.enter_context(BoardLock(resource, out=opts.out, folder=opts.lock_folder))
        record.stage("locked", board_lock=resource)
    for d in plan.diagnostics:
        say(f"      {d}")
    schedule = from_scenario(plan.board, scenario) if scenario is not None else from_board(plan.board)
    record_schedule(record, plan, schedule)

    say("[2/5] prepare the target and predict")
    extra = " ".join(a.strip() for a in (opts.bootargs, scenario.bootargs if scenario else "") if a.strip())
    job = Job(plan=plan, schedule=schedule, options=opts.target_options(), out=opts.out, timeout=opts.timeout,
              cache=opts.cache, extra_bootargs=extra, say=say, stage=record.stage)
    prepared = target.prepare(job)
    if opts.keep_images:
        _unshare(opts.out, prepared.files.values())
    # The files the board gets, by content: run folders link the cache's copies (see --keep-images).
    hashed = file_hashes(path for path in prepared.files.values() if path not in prepared.sha256)
    record.data["hashes"].update({what: {"path": path, "sha256": digest} for what, path in prepared.files.items()
                                  if (digest := prepared.sha256.get(path) or hashed.get(path))})
    for note in prepared.notes:
        say(f"      note: {note}")
    devices = schedule.model_devices(plan.board)
    _, before = predict(plan, prepared.cmdline, opts.pins, schedule.model_steps(), devices)
    write_atomic(opts.out / "predicted.json", json.dumps(before.to_json(), indent=2))
    record.stage("prepare", cmdline=prepared.cmdline, cmdline_is_ours=prepared.cmdline_is_ours, **prepared.files)

    say(f"[3/5] boot and capture ({way.what})")
    text = target.run(dataclasses.replace(job, stage=preload_when_started(job.stage, AFTER_BOOT_MODULES)), prepared)

    from cma_tool.check import cross_check
    from cma_tool.observe import observe, refuse_damaged, refuse_failed_capture

    say("[4/5] observe")
    obs = observe(text)
    write_atomic(opts.out / "observed.json", json.dumps(obs.to_json(), indent=2))
    record.stage("observe", events=len(obs.events), areas=[a.name for a in obs.areas])
    refuse_damaged(obs)
    refuse_failed_capture(obs)

    say("[5/5] cross-check with the model")
    # The model predicts with the command line the kernel actually booted; ours is checked against it.
    cmdline = obs.cmdline or prepared.cmdline
    checks, pred = cross_check(plan, cmdline, obs, devices, opts.pins,
                               intended_cmdline=prepared.cmdline if prepared.cmdline_is_ours else None)
    record_check(record, plan, pred, obs, checks)
    return checks


#: What judging and reporting a run imports once the board is done: ~30 ms of a warm run's ~0.25 s
#: over plain QEMU, spent instead while the board boots, when this process only waits on its console.
AFTER_BOOT_MODULES = ("cma_tool.observe", "cma_tool.check", "cma_tool.report.html", "rich.console", "rich.table")
#: Seconds between the target's first stage and the preload (see preload_when_started).
PRELOAD_DELAY = 0.2


def preload_when_started(stage: Callable[..., None], modules: Sequence[str]) -> Callable[..., None]:
    """``stage``, which also starts importing ``modules`` on a thread at the first stage the target reports.

    The target's first stage means the board is on its way (QEMU started,
    power switched on). Imports hold the GIL, so starting them earlier would
    only slow the run's own work before the boot; they also wait
    :data:`PRELOAD_DELAY` more, as the target's next step (opening the
    console QEMU holds the guest for) lost 5-10 ms to them when they began
    at once. A module that fails to import here fails again where it is
    used, and is reported there.
    """
    started = False

    def load() -> None:
        time.sleep(PRELOAD_DELAY)
        for name in modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - see the docstring
                return

    def stage_and_preload(name: str, **facts: Any) -> None:
        nonlocal started
        stage(name, **facts)
        if not started:
            started = True
            threading.Thread(target=load, name="cma-tool-preload", daemon=True).start()

    return stage_and_preload


def record_plan(record: RunRecord, plan: Plan, board: Path, scenario: Path | None) -> None:
    """The plan in the run's folder (plan.json) and record: its kernel profile and what its inputs hashed to."""
    from cma_tool.report.plan_text import plan_dict

    record.data["kernel_profile"] = plan.profile.name
    record.data["hashes"]["board_files"] = file_hashes(plan.board.files or (board,))
    if scenario is not None:
        record.data["hashes"]["scenario"] = file_hashes([scenario])
    write_atomic(record.path.parent / "plan.json", json.dumps(plan_dict(plan), indent=2))


def record_schedule(record: RunRecord, plan: Plan, schedule: Schedule) -> None:
    """The capture schedule and the agent's plan in the run's folder, and the plan stage in the record."""
    out = record.path.parent
    write_atomic(out / "schedule.json", json.dumps({"source": schedule.source, "ops": schedule.to_json()}, indent=2))
    write_atomic(out / "agent-plan.txt", schedule.agent_plan().render())
    record.stage("plan", areas=[a.name for a in plan.areas], streams=[s.label for s in schedule.streams],
                 schedule=schedule.source)


def record_check(record: RunRecord, plan: Plan, pred: Prediction, obs: Observation, checks: list[Check]) -> None:
    """The check stage in report.json: both sides' events in the kernel's words, and the count of failures."""
    record.data["prediction"] = {"events": [e.text(plan.profile) for e in pred.events],
                                 "cma_total_kb": pred.cma_total_kb,
                                 "areas": [{"name": a.name, "base": a.base, "size": a.size} for a in pred.areas]}
    record.data["observed"] = {"events": [e.text(plan.profile) for e in obs.events],
                               "cma_total_kb": obs.meminfo_boot.get("CmaTotal")}
    record.stage("check", checks=len(checks), failed=sum(1 for c in checks if not c.passed))


def _unshare(out: Path, files: Iterable[str]) -> None:
    """--keep-images: a real copy in the run folder of each file that is a link to the cache's copy."""
    for name in files:
        path = Path(name)
        if path.parent.resolve() == out.resolve() and path.is_file() and path.stat().st_nlink > 1:
            tmp = path.with_name(path.name + ".copy")
            shutil.copyfile(path, tmp)
            os.replace(tmp, path)


def with_lab_section(opts: RunOptions) -> RunOptions:
    """The target, place and coordinator the board file's ``lab:`` section gives, where the options leave them.

    A board that sits in a labgrid place runs there unless told otherwise;
    ``--place``/``--coordinator`` win over the file. A board file that does
    not load is left for the plan stage, which reports every error at once.
    """
    from cma_tool.board.load import read_board

    if opts.target not in (None, "labgrid"):
        return opts
    try:
        board, _ = read_board(opts.board)
    except (OSError, CmaToolError):
        board = None
    lab = board.lab if board is not None else None
    if lab is None:
        return dataclasses.replace(opts, target=opts.target or "emulated")
    return dataclasses.replace(opts, target="labgrid", place=opts.place or lab.place,
                               coordinator=opts.coordinator or lab.coordinator)


def board_resource(target: str, board: Board, console: str | None, place: str | None = None,
                   coordinator: str | None = None) -> str | None:
    """What names the physical board a run takes (its lock), or None: an emulated board is the run's own."""
    if target == "labgrid" and place:
        from cma_tool.deploy.labgrid_place import DEFAULT_COORDINATOR, place_resource

        return place_resource(coordinator or DEFAULT_COORDINATOR, place)
    if target == "serial":
        from cma_tool.deploy.serial_board import resolve_console

        return resolve_console(board, console)
    if target == "ssh" and board.ssh is not None:
        return f"ssh://{board.ssh.user}@{board.ssh.host}:{board.ssh.port}"
    return None


def parse_pins(values: list[str]) -> tuple[tuple[str, int], ...]:
    from cma_tool.sizes import SizeError, parse_size

    pins = []
    for v in values:
        name, sep, base = v.rpartition("=")
        try:
            if not sep or not name:
                raise SizeError(v)
            pins.append((name, parse_size(base)))
        except SizeError:
            raise ConfigError(f"--model-pin {v!r}: expected AREA=BASE, e.g. linux,cma=0x64000000") from None
    return tuple(pins)


def run_with_retries(opts: RunOptions, retries: int, *, backoff: float = 2.0,
                     say: Callable[[str], None] | None = None, note: Callable[[str], None] | None = None,
                     sleep: Callable[[float], None] = time.sleep) -> tuple[int, dict[str, Any], list[Check]]:
    """The run, tried again after an infrastructure failure only, waiting backoff, 2*backoff, ... between.

    Only the lab's failures are worth another try: a wrong input or a board
    that misbehaves fails the same way again, and an interrupted run was
    stopped on purpose. Each attempt keeps its own folder (OUT/retry-K) and
    says in its report which attempt it was; the last attempt's result is
    returned.
    """
    code, report, checks = execute(opts, say=say)
    for attempt in range(1, retries + 1):
        if code != ExitCode.INFRA or "stages" not in report:
            break
        wait = min(backoff * 2 ** (attempt - 1), 300.0)
        if note:
            note(f"infrastructure failure ({report.get('message', '')}); retry {attempt} of {retries} "
                 f"in {wait:g} s")
        sleep(wait)
        code, report, checks = execute(dataclasses.replace(opts, out=opts.out / f"retry-{attempt}",
                                                           attempt=attempt + 1), say=say)
    return code, report, checks


def run_cli(args: argparse.Namespace) -> int:
    board = Path(args.board)
    # The default folder is drawn fresh (time to the ms and a random part, made with mkdir): runs started
    # side by side never share one.
    out = Path(args.out) if args.out else new_run_folder(Path("runs"), board.stem)
    # The way onto the board decides what --kernel is, so the board file's lab: section is read first.
    target = with_lab_section(RunOptions(board=board, out=out, target=args.target)).target
    opts = RunOptions(board=board, out=out, target=target, boot=args.boot, bootargs=args.bootargs or "",
                      scenario=Path(args.scenario) if args.scenario else None,
                      junit=Path(args.junit) if args.junit else None,
                      pins=parse_pins(args.model_pin), cache=Path(args.cache) if args.cache else None,
                      timeout=args.timeout, force=args.force, console=args.console,
                      # emulated: --kernel names a Debian kernel; elsewhere it is the board's kernel file
                      kernel=Path(args.kernel) if args.kernel and target != "emulated" else None,
                      kernel_name=args.kernel if target == "emulated" else None,
                      dtb=Path(args.dtb) if args.dtb else None, suite=args.suite, replace=args.replace,
                      keep_images=args.keep_images, place=args.place or None, coordinator=args.coordinator)
    quiet = (lambda msg: None) if args.json else None
    code, report, checks = run_with_retries(opts, args.retries, backoff=args.retry_backoff, say=quiet,
                                            note=None if args.json else
                                            (lambda msg: print(msg, file=sys.stderr, flush=True)))
    opts = dataclasses.replace(opts, out=Path(str(report.get("out", opts.out))))
    if "stages" not in report:
        # Refused before the run began (its folder or board is another run's): nothing was written.
        print(f"{report['verdict']} error: {report['message']}", file=sys.stderr)
        return code
    if args.json:
        print(report_json(report))
    else:
        print(summary_table(report, checks))
        print(f"artefacts: {opts.out}/ (report.html, console.log, report.json, plan.json, predicted.json, "
              "observed.json)")
    return code
