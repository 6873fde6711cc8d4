"""Many scenarios on one boot: the cells of a matrix that share a board, a kernel and a command line.

A boot of the emulated board costs seconds; a scenario's captures cost a
fraction of one. So scenarios that would boot the same kernel with the same
command line run one after another on one boot, the board kept at its shell
(:func:`cma_tool.deploy.session.booted_emulated`, the pytest plugin's
session), each through the agent as in a run, each judged as if the board had
just booted for it (the session's rule: the boot's facts plus the step's own
events, log lines and counter changes).

That is sound only while a scenario leaves the allocator as it found it:
every buffer it took given back, nothing failed. The model says whether it
will (:func:`leaves_boot_state`), and the kernel must then have done what
the model said (the step's checks pass). A scenario after which either is
not so ends its boot: the next one gets a fresh boot. So does an error.

Each cell still gets a complete run folder: plan.json, schedule.json,
agent-plan.txt, predicted.json (written before its step), console.log (the
console bytes of its step), observed.json, report.json (``boot: shared``,
which boot and which step it was), report.html and junit.xml. The boot's own
console log is in its boot folder.

``python3 -m cma_tool.shared_boot`` is how `cma-tool matrix` runs a group of
cells in a process of its own; it prints the cells' reports as a JSON list.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cma_tool.check import Check
from cma_tool.errors import CmaToolError, ExitCode
from cma_tool.locks import FolderLock
from cma_tool.model.events import Event
from cma_tool.report.meta import header
from cma_tool.report.run_report import write_atomic


@dataclass(frozen=True)
class SharedCell:
    """One scenario of the group and the folder its run goes to."""

    out: Path
    scenario: Path | None  # None: the board's own needs
    pins: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True)
class Group:
    """Cells that boot the same board, kernel and command line."""

    board: Path
    cells: tuple[SharedCell, ...]
    boots: Path  # the shared boots' folders go here (boot-1, boot-2, ...)
    suite: str | None = None  # a Debian suite's armhf kernel (an alias) ...
    kernel: str | None = None  # ... or a Debian kernel by name (debian-6.1-arm64)
    bootargs: str = ""
    timeout: float = 120.0
    force: bool = False
    cache: Path | None = None


def leaves_boot_state(events: Sequence[Event]) -> bool:
    """Do the model's events of a scenario (not the boot's) give back every page taken, none failing?"""
    held: dict[tuple[str, int], int] = {}
    for e in events:
        if e.kind == "alloc_finish":
            if e.pfn is None or e.failed:
                return False
            held[(e.area, e.pfn)] = held.get((e.area, e.pfn), 0) + 1
        elif e.kind == "release" and e.pfn is not None:
            key = (e.area, e.pfn)
            if held.get(key):
                held[key] -= 1
    return not any(held.values())


class _Boots:
    """The group's boots: the one the next scenario runs on, started when first needed, ended when spoilt."""

    def __init__(self, group: Group, say: Callable[[str], None]) -> None:
        self.group = group
        self.say = say
        self.count = 0
        self.session: Any = None  # a deploy.session.BoardSession while a boot is up
        self._stack = ExitStack()

    def session_for(self, plan: Any, cell: SharedCell) -> Any:
        if self.session is None:
            from cma_tool.deploy.session import booted_emulated

            self.count += 1
            self.say(f"boot {self.count} of {self.group.board.name} for {cell.out.name}")
            self.session = self._stack.enter_context(booted_emulated(
                plan, self.group.boots / f"boot-{self.count}", suite=self.group.suite, kernel=self.group.kernel,
                bootargs=self.group.bootargs, timeout=self.group.timeout, cache=self.group.cache))
        return self.session

    def end(self) -> None:
        """Power the board off (a spoilt boot, or the group's end)."""
        self._stack.close()
        self._stack, self.session = ExitStack(), None


def run_group(group: Group, say: Callable[[str], None] = lambda msg: None) -> list[dict[str, Any]]:
    """Every cell of the group, sharing boots while the allocator is back at its boot state; their reports."""
    reports: list[dict[str, Any]] = []
    boots = _Boots(group, say)
    try:
        for cell in group.cells:
            code, report, clean = _run_cell(group, cell, boots)
            reports.append(report)
            if not clean or code != ExitCode.OK or (boots.session is not None and boots.session.broken):
                boots.end()  # the next scenario boots afresh
    finally:
        boots.end()
    return reports


def _run_cell(group: Group, cell: SharedCell, boots: _Boots) -> tuple[int, dict[str, Any], bool]:
    """(exit code, report, whether the board is left as it booted) for one cell."""
    try:
        with FolderLock(cell.out):
            return _judged(group, cell, boots)
    except CmaToolError as err:  # only the folder claim can be refused here: the run's own errors are judged
        return int(err.exit_code), {"board": str(group.board), "target": "emulated", "boot": "shared",
                                    "out": str(cell.out), "verdict": err.kind, "message": str(err),
                                    "exit_code": int(err.exit_code)}, False


def _judged(group: Group, cell: SharedCell, boots: _Boots) -> tuple[int, dict[str, Any], bool]:
    from cma_tool.run import RunRecord, conclude, record_check, record_plan, record_schedule

    # Whether the step passed and the model says it gave back all it took: only then may the boot go on.
    clean = False

    record = RunRecord(cell.out / "report.json", {
        **header("report", time.time()), "board": str(group.board), "target": "emulated", "boot": "shared",
        "suite": group.suite, "scenario": str(cell.scenario) if cell.scenario else None, "attempt": 1,
        "verdict": "running", "out": str(cell.out), "hashes": {}})
    record.stage("start")

    def stages() -> list[Check]:
        nonlocal clean
        from cma_tool.api import target_kernel_profile
        from cma_tool.captures import from_board, from_scenario
        from cma_tool.generate.bootargs import kernel_cmdline
        from cma_tool.model.scenario import load_scenario
        from cma_tool.plan import make_plan
        from cma_tool.prediction import predict

        scenario = load_scenario(cell.scenario) if cell.scenario is not None else None
        plan = make_plan(group.board, kernel=target_kernel_profile("emulated", suite=group.suite, kernel=group.kernel),
                         bootargs=group.bootargs, allow_misfit=True, allow_errors=group.force)
        record_plan(record, plan, group.board, cell.scenario)
        schedule = from_scenario(plan.board, scenario) if scenario is not None else from_board(plan.board)
        record_schedule(record, plan, schedule)
        cmdline = kernel_cmdline(plan.board, plan.profile, agent="shell", extra=group.bootargs).text
        _, model_run = predict(plan, cmdline, cell.pins, schedule.model_steps(),
                               schedule.model_devices(plan.board))
        write_atomic(cell.out / "predicted.json", json.dumps(model_run.to_json(), indent=2))
        record.stage("prepare", cmdline=cmdline, cmdline_is_ours=True)
        board = boots.session_for(plan, cell)
        log = board.console_log
        start = log.stat().st_size
        record.stage("boot", shared_boot=str(board.out), step=board.steps + 1)
        step = board.capture(schedule, cell.pins)
        with log.open("rb") as fh:  # only this step's bytes: the session's log grows with every step
            fh.seek(start)
            write_atomic(cell.out / "console.log", fh.read().decode("utf-8", "replace"))
        write_atomic(cell.out / "observed.json", json.dumps(step.observation.to_json(), indent=2))
        record.stage("captured")
        record.stage("observe", events=len(step.observation.events),
                     areas=[a.name for a in step.observation.areas])
        if step.notes:
            record.data["notes"] = list(step.notes)
        record_check(record, plan, step.prediction, step.observation, list(step.checks))
        clean = step.passed and leaves_boot_state([e for rec in model_run.steps for e in rec.events])
        return list(step.checks)

    code, _ = conclude(record, stages, junit=cell.out / "junit.xml")
    return code, record.data, clean


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m cma_tool.shared_boot",
                                description="run scenarios of one board and kernel on shared boots (used by "
                                            "cma-tool matrix); prints the cells' reports as a JSON list")
    p.add_argument("board")
    p.add_argument("--boots", required=True, help="folder for the shared boots' own files")
    p.add_argument("--cell", action="append", default=[], metavar="OUT=SCENARIO",
                   help="a cell: its folder and its scenario file ('needs': the board's own)")
    p.add_argument("--pin", action="append", default=[], metavar="OUT=AREA=BASE",
                   help="a model pin for the cell whose folder is OUT")
    p.add_argument("--suite", help="a Debian suite: its armhf kernel")
    p.add_argument("--kernel", help="a Debian kernel by name (debian-6.1-arm64)")
    p.add_argument("--bootargs", default="")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--force", action="store_true")
    p.add_argument("--cache")
    args = p.parse_args(argv)
    from cma_tool.run import parse_pins

    cells = []
    for text in args.cell:
        out, _, scenario = text.partition("=")
        pins = parse_pins([pin.split("=", 1)[1] for pin in args.pin if pin.split("=", 1)[0] == out])
        cells.append(SharedCell(Path(out), None if scenario in ("", "needs") else Path(scenario), pins))
    group = Group(Path(args.board), tuple(cells), Path(args.boots), suite=args.suite, kernel=args.kernel,
                  bootargs=args.bootargs,
                  timeout=args.timeout, force=args.force, cache=Path(args.cache) if args.cache else None)
    reports = run_group(group, say=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(json.dumps(reports))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
