"""`cma-tool check BOARD LOG`: the cross-check of a board booted by something else, from its console log.

A lab (LAVA, a vendor flasher, a person with minicom) boots the board and
runs the agent (firmware/cmatool-run with a plan; configs/lava/ has a LAVA
test definition that does); the console log it keeps is all this needs. It
is read as plain text (with or without timestamps in front of the lines) or
as a LAVA job log (``- {"dt": ..., "lvl": "target", "msg": "..."}`` lines,
whose ``target`` records are the console), the agent's framed sections are
observed as a run observes them, and the model predicts from what the log
shows the kernel did: its command line, the format each driver granted, the
buffers each REQBUFS asked for. The verdict, the exit code and report.json
are the run's (:func:`cma_tool.run.conclude`).

What a log cannot be checked without is refused, saying what is missing and
how to get it: the agent's sections (meminfo, vmstat, the trace buffer), and
cma tracepoints in the trace when the kernel created CMA areas.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from cma_tool import model as cma_model
from cma_tool.board.types import Board
from cma_tool.captures import Schedule
from cma_tool.check import Check
from cma_tool.deploy.sections import console_text
from cma_tool.errors import ConfigError, Diagnostic, TargetError
from cma_tool.observe import Observation, refuse_damaged, refuse_failed_capture

if TYPE_CHECKING:
    from cma_tool.run import RunRecord

#: A timestamp a host tool puts in front of every console line: printk's own form ("[   12.345678] "),
#: bracketed or bare ISO date-times ("[2024-05-01 10:00:00.123] ", "2024-05-01T10:00:00.123Z ").
_HOST_STAMP = re.compile(
    r"^(?:<\d+>)?\[\s*\d+\.\d+\]\s?"
    r"|^\[\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?\]\s?"
    r"|^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?\s")
_LAVA_LINE = re.compile(r"^- \{.*\}\s*$")
#: "Linux version 6.1.0-57-arm64 (...)": the series, and the release's last word (Debian's arm64 flavour).
_LINUX_VERSION = re.compile(r"Linux version (\d+)\.(\d+)(\S*)")
#: The kernel's own words for a board that failed (console.py's table: Oops, BUG, panic).
_FAILED = re.compile(r"\bOops(?:: | - )|\bBUG: |Kernel panic - not syncing")

HOW_TO_TRACE = ("boot the kernel with trace_event=cma:* on its command line and run the agent on the board "
                "(firmware/cmatool-run PLAN, e.g. through configs/lava/cma-tool-agent.yaml): it prints /proc/meminfo, "
                "the cma vmstat counters, the trace buffer and the kernel log between CMA-TOOL markers")


@dataclass(frozen=True)
class ConsoleLog:
    """A console log as text, whatever form it came in."""

    path: Path
    text: str
    form: str  # "plain" | "lava"
    lines: int  # lines of console read


def read_console_log(path: Path) -> ConsoleLog:
    """The console text of ``path``: a LAVA job log's target records, or a plain log without host timestamps."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the console log: {exc.strerror or exc}",
                          hint="give the file the lab saved the board's console to") from None
    text = console_text(raw)
    first = next((ln for ln in text.splitlines() if ln.strip()), "")
    if _LAVA_LINE.match(first) and ('"lvl"' in first or "lvl:" in first):
        lines = lava_console_lines(text, str(path))
        return ConsoleLog(path, "\n".join(lines) + "\n", "lava", len(lines))
    lines = text.splitlines()
    # A host tool stamps every line it logs, the agent's marker lines too; the kernel's own printk
    # times (in the boot log and in the agent's dmesg section) are the board's words and stay:
    # the sections' declared sizes and sha256 are of them.
    markers = [ln for ln in lines if "==== CMA-TOOL " in ln]
    if markers and all(_HOST_STAMP.match(ln) for ln in markers):
        lines = [_HOST_STAMP.sub("", ln, count=1) for ln in lines]
    return ConsoleLog(path, "\n".join(lines) + "\n", "plain", len(lines))


def lava_console_lines(text: str, where: str) -> list[str]:
    """The ``target`` messages of a LAVA job log (its YAML-lines form), in order.

    Each line is one record: ``- {"dt": ..., "lvl": ..., "msg": ...}``,
    written by LAVA as a YAML flow mapping in double-quoted style (JSON for
    plain text; YAML escapes for control characters), so it is read as JSON
    first and as YAML when that fails. ``target`` records are the board's
    console; the rest (LAVA's own log, what it typed, results) is not.
    """
    out: list[str] = []
    problems: list[Diagnostic] = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        record = _lava_record(line)
        if record is None:
            problems.append(Diagnostic("not a LAVA log record ('- {\"dt\": ..., \"lvl\": ..., \"msg\": ...}')",
                                       where, number, hint="give the job's whole log as LAVA saved it, or the plain "
                                       "console text"))
            if len(problems) >= 5:
                break
            continue
        if record.get("lvl") == "target" and isinstance(record.get("msg"), str):
            out.append(str(record["msg"]).replace("\r", ""))
    if problems:
        raise ConfigError(diagnostics=problems)
    return out


def _lava_record(line: str) -> dict[str, Any] | None:
    if not _LAVA_LINE.match(line):
        return None
    body = line[2:].strip()
    try:
        value = json.loads(body)
    except json.JSONDecodeError:
        try:
            value = yaml.load(body, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        except yaml.YAMLError:
            return None
    return value if isinstance(value, dict) and "lvl" in value else None


def board_failure(text: str) -> str | None:
    """The kernel's own line saying the board failed (Oops, BUG, panic), or None."""
    for line in text.splitlines():
        if _FAILED.search(line):
            return line.strip()
    return None


def refuse_untraced(obs: Observation, log: ConsoleLog) -> None:
    """Refuse (ConfigError) a log whose CMA events cannot be known; TargetError for an agent that failed."""
    from cma_tool.deploy.sections import DONE_MARK

    where = f"{log.path} ({log.form}, {log.lines} lines)"
    runs = sum(1 for line in log.text.splitlines() if line.strip().startswith(DONE_MARK))
    if runs > 1:
        # The trace buffer of a later run still holds the earlier runs' events: one run's log is checked alone.
        raise ConfigError(f"{where}: the log holds {runs} runs of the agent (DONE lines); one run is checked at a "
                          "time", hint="cut the log after the first run's '==== CMA-TOOL DONE' line, or keep "
                                       "one console log per boot")
    if not obs.sections:
        raise ConfigError(f"{where}: no output of the cma-tool agent (no '==== CMA-TOOL BEGIN ...' sections): the "
                          "log holds no trace section, so the kernel's CMA events are not in it", hint=HOW_TO_TRACE)
    refuse_damaged(obs, where)
    refuse_failed_capture(obs, where, see="the capture section")
    if "trace" not in obs.sections:
        if obs.done_rc is None:
            raise TargetError(f"{where}: the agent's output stops before its trace section (it printed: "
                              f"{', '.join(obs.sections)}): the board stopped or the log was cut off",
                              hint="look at the end of the log: a hang, a reset, or the lab's timeout")
        raise ConfigError(f"{where}: the agent printed no trace section", hint=HOW_TO_TRACE)
    if obs.section_rc.get("trace") not in (0, None):
        raise ConfigError(f"{where}: the board could not read its trace buffer (trace section exit "
                          f"{obs.section_rc.get('trace')}): no tracefs, or a kernel without tracing",
                          hint="a kernel with CONFIG_FTRACE and tracefs at /sys/kernel/tracing; " + HOW_TO_TRACE)
    if not obs.events and obs.areas:
        raise ConfigError(f"{where}: the trace section holds no cma event, but the kernel created CMA area(s) "
                          f"{', '.join(a.name for a in obs.areas)}: the cma tracepoints were not enabled",
                          hint=HOW_TO_TRACE)


def kernel_profile_from_log(obs: Observation, given: str | None, board: Board) -> tuple[str | None, str | None]:
    """The kernel profile to predict with, and a note when it came from the log's 'Linux version' line.

    ``given`` (--kernel) always wins. Otherwise a profile named after the
    kernel the log shows booting (linux-6.12 for "Linux version 6.12.57...")
    is taken when there is one and the board's own profile is another.
    """
    if given is not None:
        return given, None
    found = next((m for line in obs.sections.get("dmesg", "").splitlines() + obs.boot_lines
                  if (m := _LINUX_VERSION.search(line))), None)
    if found is None:
        return None, None
    # A Debian arm64 kernel's release ends in -arm64: its profile is the series' arm64 one.
    arch = "-arm64" if found.group(3).endswith("-arm64") else ""
    name = f"linux-{found.group(1)}.{found.group(2)}{arch}"
    if name in cma_model.PROFILES and name != board.kernel.profile.name:
        return name, f"kernel profile {name}: the log shows Linux {found.group(1)}.{found.group(2)} booting " \
                     f"(the board file says {board.kernel.profile.name}; --kernel to choose)"
    return None, None


def devices_from_log(board: Board, obs: Observation, schedule: Schedule | None) -> dict[str, cma_model.Device]:
    """Each stream label the capture program printed, as the model device of the board device it ran on.

    The capture program names the node it resolved for each stream (its
    ``resolve`` line: driver:NAME:INDEX or /dev/videoN), which is how the
    agent's plan names a board device, and the driver behind it (older
    capture programs: only ``open`` and ``querycap``); a driver the board
    gives one device is enough. Labels of the schedule (the board's needs or
    --scenario) are the fallback for a log without those lines.
    """
    from cma_tool.deploy.agent import device_for
    from cma_tool.modelrun import board_devices

    areas = board_devices(board)
    by_node: dict[str, str] = {}
    drivers: dict[str, list[str]] = {}
    for dev in board.devices:
        if dev.driver or dev.video_node:
            same = [d.name for d in board.devices if d.driver == dev.driver]
            by_node[device_for(dev.driver or "", same.index(dev.name), dev.video_node)] = dev.name
            drivers.setdefault(dev.driver or "", []).append(dev.name)
    from_schedule = schedule.model_devices(board) if schedule is not None else {}
    out: dict[str, cma_model.Device] = {}
    problems: list[str] = []
    labels = [str(s.data.get("label")) for s in obs.capture if s.event in ("s_fmt", "reqbufs") and "label" in s.data]
    for label in dict.fromkeys(labels):
        # resolve: the plan's device word and the node; open: the node; querycap: the driver.
        resolved: dict[str, Any] = {}
        for s in obs.capture:
            if s.event in ("querycap", "open", "resolve") and s.data.get("label") == label:
                resolved.update({k: s.data[k] for k in ("device", "node", "driver") if k in s.data})
        name = by_node.get(str(resolved.get("device", ""))) or by_node.get(str(resolved.get("node", "")))
        if name is None and len(drivers.get(str(resolved.get("driver", "")), [])) == 1:
            name = drivers[str(resolved["driver"])][0]
        if name is not None:
            out[label] = cma_model.Device(label, areas[name].area)
        elif label in from_schedule:
            out[label] = from_schedule[label]
        elif label in areas:
            out[label] = cma_model.Device(label, areas[label].area)
        else:
            problems.append(f"stream {label!r} (node {resolved.get('device') or '?'}, driver "
                            f"{resolved.get('driver') or '?'})")
    if problems:
        raise ConfigError(f"the log's capture streams {', '.join(problems)} are no device of board {board.name!r}",
                          hint="check the log against the board file the plan was made from, or give --scenario "
                               "with the labels the run used")
    return out


@dataclass
class CheckOptions:
    board: Path
    log: Path
    out: Path
    kernel: str | None = None
    bootargs: str | None = None  # the command line the board was given; None: the log's
    scenario: Path | None = None
    pins: tuple[tuple[str, int], ...] = ()
    force: bool = False
    junit: Path | None = None


def execute_check(opts: CheckOptions, say: Callable[[str], None] | None = None) -> tuple[int, dict[str, Any],
                                                                                       list[Check]]:
    """The whole offline check. Returns (exit code, report, checks) like a run; never raises CmaToolError."""
    from cma_tool.run import ARTEFACTS, RunRecord, conclude

    say = say or (lambda msg: None)
    opts.out.mkdir(parents=True, exist_ok=True)
    for name in ARTEFACTS:
        (opts.out / name).unlink(missing_ok=True)
    record = RunRecord(opts.out / "report.json", {"command": "check", "board": str(opts.board),
                                                   "target": f"console log {opts.log}", "boot": None,
                                                   "log": str(opts.log), "verdict": "running", "out": str(opts.out)})
    record.stage("start")
    code, checks = conclude(record, lambda: _check_stages(opts, record, say), junit=opts.junit, say=say)
    return code, record.data, checks


def _check_stages(opts: CheckOptions, record: RunRecord, say: Callable[[str], None]) -> list[Check]:
    from cma_tool.captures import from_board, from_scenario
    from cma_tool.check import cross_check
    from cma_tool.model.scenario import load_scenario
    from cma_tool.observe import observe
    from cma_tool.plan import load_checked_board, make_plan
    from cma_tool.report.plan_text import plan_dict
    from cma_tool.report.run_report import write_atomic
    from cma_tool.run import record_check

    log = read_console_log(opts.log)
    record.stage("read", form=log.form, lines=log.lines)
    failed = board_failure(log.text)
    if failed is not None:
        raise TargetError(f"{opts.log}: the board failed: {failed}", hint="the kernel's own words; see the log there")
    obs = observe(log.text)
    refuse_untraced(obs, log)
    write_atomic(opts.out / "observed.json", json.dumps(obs.to_json(), indent=2))
    record.stage("observe", events=len(obs.events), areas=[a.name for a in obs.areas])

    cmdline = obs.cmdline or opts.bootargs
    if cmdline is None:
        raise ConfigError(f"{opts.log}: the log shows neither the kernel's 'Kernel command line:' nor the agent's "
                          "cmdline section", hint="give --bootargs with the command line the board booted")
    scenario = load_scenario(opts.scenario) if opts.scenario is not None else None
    checked = load_checked_board(opts.board, kernel=opts.kernel, bootargs=cmdline, allow_misfit=True)
    if checked.board is None:
        raise ConfigError(diagnostics=checked.diagnostics)
    kernel, note = kernel_profile_from_log(obs, opts.kernel or (scenario.kernel if scenario else None), checked.board)
    if note:
        say(f"note: {note}")
    plan = make_plan(opts.board, kernel=kernel, bootargs=cmdline, allow_misfit=True, allow_errors=opts.force)
    for d in plan.diagnostics:
        say(str(d))
    write_atomic(opts.out / "plan.json", json.dumps(plan_dict(plan), indent=2))
    schedule = from_scenario(plan.board, scenario) if scenario is not None else None
    if schedule is None and any(d.captures for d in plan.board.devices):
        schedule = from_board(plan.board)
    devices = devices_from_log(plan.board, obs, schedule)
    record.stage("plan", profile=plan.profile.name, areas=[a.name for a in plan.areas], cmdline=cmdline,
                 cmdline_from="--bootargs" if obs.cmdline is None else "the log", streams=sorted(devices),
                 **({"note": note} if note else {}))

    checks, pred = cross_check(plan, cmdline, obs, devices, opts.pins, intended_cmdline=opts.bootargs)
    record_check(record, plan, pred, obs, checks)
    return checks


def check_cli(args: Any) -> int:
    from cma_tool.report.run_report import report_json, summary_table
    from cma_tool.run import parse_pins

    board, log = Path(args.board), Path(args.log)
    out = Path(args.out) if args.out else Path("runs") / f"{board.stem}-check-{time.strftime('%Y%m%d-%H%M%S')}"
    opts = CheckOptions(board=board, log=log, out=out, kernel=args.kernel, bootargs=args.bootargs,
                        scenario=Path(args.scenario) if args.scenario else None, pins=parse_pins(args.model_pin),
                        force=args.force, junit=Path(args.junit) if args.junit else None)
    say = (lambda msg: None) if args.json else (lambda msg: print(msg, file=sys.stderr, flush=True))
    code, report, checks = execute_check(opts, say=say)
    if args.json:
        print(report_json(report))
    elif checks:
        print(summary_table(report, checks))
    else:  # refused before any check: the reason is all there is to say
        print(f"{report['verdict']} error: {report.get('message', '')}", file=sys.stderr)
    if not args.json:
        made = [name for name in ("report.json", "plan.json", "observed.json") if (opts.out / name).is_file()]
        print(f"artefacts: {opts.out}/ ({', '.join(made)})", file=sys.stderr if not checks else sys.stdout)
    return code
