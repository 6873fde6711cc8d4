"""`cma-tool matrix`: boards x kernels x scenarios, cells side by side, one summary.

Each cell is one ``cma-tool run`` in its own process and its own folder
(``<matrix folder>/<board>~<kernel>~<scenario>``), so a cell that hangs,
crashes or is killed takes nothing else with it, and every cell leaves the
artefacts any run leaves. Up to ``-j`` cells run at once; cells on one
physical board (every target but the emulated one) run one after another,
since the board is locked for a run. The matrix then writes one table,
``summary.json`` (schema ``cma-tool/summary``) and one JUnit document with a
testsuite per cell.

A combination whose scenario names a capture device the board lacks cannot
run (the run would refuse it at plan time, a configuration error). The
matrix finds those before anything boots and leaves them out, listed with
why (table, summary ``skipped``): a cross product of boards and scenarios
naturally holds some; a board or scenario file that is itself wrong is
still a configuration error of the whole matrix.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import yaml

from cma_tool.errors import ConfigError, ExitCode, UsageError
from cma_tool.locks import FolderLock, new_run_folder
from cma_tool.report.meta import header
from cma_tool.report.run_report import junit_document, write_atomic
from cma_tool.signals import sigterm_raises

#: The kernel of the host's own Debian suite (the image's default); any other name is passed as --suite.
DEFAULT_KERNEL = "bookworm"
NEEDS = "needs"  # the scenario "the board's own declared needs"
#: Per-cell options a matrix file may set, as `cma-tool run` spells them.
CELL_OPTIONS = ("model-pin", "bootargs", "timeout", "force")


@dataclass(frozen=True)
class Cell:
    board: str
    kernel: str
    scenario: str  # a file, or NEEDS
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def id(self) -> str:
        scen = NEEDS if self.scenario == NEEDS else Path(self.scenario).stem
        return f"{Path(self.board).stem}~{self.kernel}~{scen}"


@dataclass
class MatrixSpec:
    boards: list[str]
    kernels: list[str]
    scenarios: list[str]
    target: str = "emulated"
    boot: str | None = None
    retries: int = 0
    retry_backoff: float = 2.0
    timeout: float | None = None
    cache: str | None = None
    overrides: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    file: str | None = None
    shared_boots: bool = True  # emulated direct cells of one board, kernel and command line share boots

    def cells(self) -> list[Cell]:
        out = []
        for board in self.boards:
            for kernel in self.kernels:
                for scenario in self.scenarios:
                    opts: dict[str, Any] = {}
                    for match, given in self.overrides:
                        where = {"board": board, "kernel": kernel, "scenario": scenario}
                        if all(_same(where[k], v) for k, v in match.items()):
                            opts.update(given)
                    out.append(Cell(board, kernel, scenario, tuple(sorted(opts.items()))))
        return out


def _same(value: str, wanted: str) -> bool:
    """A match names a file as written in the matrix, or by its stem (`hole-reuse`, `qemu-aquila`)."""
    return value == wanted or Path(value).stem == wanted


def _names(values: Sequence[str] | None) -> list[str]:
    """Command-line lists: repeated options and comma-separated values both work."""
    return [v.strip() for item in values or () for v in item.split(",") if v.strip()]


def load_spec(path: Path | None, args: argparse.Namespace) -> MatrixSpec:
    """The matrix file (if any), with the command line's lists and options on top."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the matrix file: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a matrix file is a mapping: boards, suites, scenarios, cells")
        unknown = sorted(set(loaded) - {"boards", "suites", "scenarios", "target", "boot", "retries", "cells",
                                        "timeout"})
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}",
                              hint="a matrix file has boards, suites, scenarios, target, boot, retries, timeout, "
                                   "cells")
        data = loaded

    def listed(key: str, cli: list[str]) -> list[str]:
        if cli:
            return cli
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: {key} must be a list of names")
        return list(value)

    boards = listed("boards", _names(args.board))
    kernels = listed("suites", _names(args.suite)) or [DEFAULT_KERNEL]
    scenarios = listed("scenarios", _names(args.scenario)) or [NEEDS]
    if not boards:
        raise UsageError("a matrix needs at least one board", hint="--board FILE (repeat it), or boards: in a "
                                                                   "matrix file")
    base = path.parent if path is not None else Path(".")
    overrides = []
    for i, entry in enumerate(data.get("cells", []) or []):
        if not isinstance(entry, dict) or not isinstance(entry.get("match"), dict):
            raise ConfigError(f"{path}: cells[{i}] needs match: {{board, suite, scenario}} and options")
        match = {("kernel" if k == "suite" else k): str(v) for k, v in entry["match"].items()}
        bad = sorted(set(match) - {"board", "kernel", "scenario"}) + \
            sorted(set(entry) - {"match", *CELL_OPTIONS})
        if bad:
            raise ConfigError(f"{path}: cells[{i}]: unknown key(s) {', '.join(bad)}",
                              hint=f"match: board, suite, scenario; options: {', '.join(CELL_OPTIONS)}")
        overrides.append((match, {k: v for k, v in entry.items() if k != "match"}))
    del base  # paths in a matrix file are taken as written, from where cma-tool runs (as `run` takes them)
    retries = args.retries if args.retries is not None else int(data.get("retries", 0))
    timeout = args.timeout if args.timeout is not None else data.get("timeout")
    return MatrixSpec(boards=boards, kernels=kernels, scenarios=scenarios,
                      target=args.target or str(data.get("target", "emulated")),
                      boot=args.boot or data.get("boot"), retries=retries, retry_backoff=args.retry_backoff,
                      timeout=float(timeout) if timeout is not None else None, cache=args.cache,
                      overrides=overrides, file=str(path) if path is not None else None,
                      shared_boots=not getattr(args, "boot_per_cell", False))


def refusal(cell: Cell) -> str | None:
    """Why this combination cannot run (its scenario needs what the board lacks), or None: it can.

    A board or scenario that is wrong in itself raises ConfigError: that is
    the matrix's input, not a combination, to fix.
    """
    from cma_tool.captures import from_scenario
    from cma_tool.model.scenario import load_scenario
    from cma_tool.plan import make_plan

    if cell.scenario == NEEDS:
        return None
    scenario = load_scenario(Path(cell.scenario))
    plan = make_plan(Path(cell.board), allow_misfit=True, allow_errors=True)
    try:
        from_scenario(plan.board, scenario)
    except ConfigError as err:
        return str(err).splitlines()[0] if str(err) else "the scenario does not fit this board"
    return None


def run_args(cell: Cell, spec: MatrixSpec, out: Path) -> list[str]:
    argv = [sys.executable, "-m", "cma_tool", "run", cell.board, "--out", str(out), "--json",
            "--junit", str(out / "junit.xml"), "--target", spec.target]
    if spec.boot:
        argv += ["--boot", spec.boot]
    if cell.scenario != NEEDS:
        argv += ["--scenario", cell.scenario]
    if spec.retries:
        argv += ["--retries", str(spec.retries), "--retry-backoff", str(spec.retry_backoff)]
    for pin in _pins(cell):
        argv += ["--model-pin", pin]
    return argv + _boot_options(cell, spec)


def _boot_options(cell: Cell, spec: MatrixSpec) -> list[str]:
    """The options `cma-tool run` and a shared boot both take from a cell: kernel, command line, timeout, cache."""
    argv = []
    options = dict(cell.options)
    if cell.kernel != DEFAULT_KERNEL:
        # A Debian kernel's name (debian-6.1-arm64) is run's --kernel; a suite (trixie) its --suite.
        argv += ["--kernel" if cell.kernel.startswith("debian-") else "--suite", cell.kernel]
    if options.get("bootargs"):
        argv += ["--bootargs", str(options["bootargs"])]
    timeout = options.get("timeout", spec.timeout)
    if timeout is not None:
        argv += ["--timeout", str(timeout)]
    if options.get("force"):
        argv.append("--force")
    if spec.cache:
        argv += ["--cache", spec.cache]
    return argv


def _pins(cell: Cell) -> list[str]:
    """The cell's model-pin option: one AREA=BASE or a list of them."""
    pins = dict(cell.options).get("model-pin", [])
    return [str(pin) for pin in ([pins] if isinstance(pins, str) else pins)]


def can_share_boots(spec: MatrixSpec) -> bool:
    """Only the emulated board booted directly can run several scenarios on one boot."""
    return spec.target == "emulated" and spec.boot in (None, "direct")


def boot_groups(cells: Sequence[Cell], spec: MatrixSpec) -> list[list[Cell]]:
    """The cells as units of work: cells that can share boots together, every other cell alone.

    Sharing needs the emulated board booted directly and one command line:
    the same board, kernel, --bootargs, timeout and --force, and a scenario
    that adds nothing to the command line or the kernel (model pins are
    per cell: the model's, not the board's).
    """
    from cma_tool.model.scenario import load_scenario

    if not spec.shared_boots or not can_share_boots(spec):
        return [[c] for c in cells]
    groups: dict[tuple[Any, ...], list[Cell]] = {}
    alone = []
    for cell in cells:
        options = dict(cell.options)
        scenario = load_scenario(Path(cell.scenario)) if cell.scenario != NEEDS else None
        if scenario is not None and (scenario.bootargs or scenario.kernel):
            alone.append([cell])
            continue
        key = (cell.board, cell.kernel, options.get("bootargs") or "", options.get("timeout", spec.timeout),
               bool(options.get("force")))
        groups.setdefault(key, []).append(cell)
    return [*groups.values(), *alone]


def group_args(cells: Sequence[Cell], spec: MatrixSpec, root: Path) -> list[str]:
    """`python3 -m cma_tool.shared_boot` for a group of cells (their shared options from the first)."""
    first = cells[0]
    argv = [sys.executable, "-m", "cma_tool.shared_boot", first.board, "--boots",
            str(root / "boots" / f"{Path(first.board).stem}~{first.kernel}"), *_boot_options(first, spec)]
    for cell in cells:
        out = root / cell.id
        argv += ["--cell", f"{out}={cell.scenario}"]
        for pin in _pins(cell):
            argv += ["--pin", f"{out}={pin}"]
    return argv


class _Children:
    """The cells' processes, so an interrupted matrix can stop each (they then write their reports)."""

    def __init__(self) -> None:
        self._procs: set[subprocess.Popen[str]] = set()
        self._lock = threading.Lock()
        self.stopping = False

    def start(self, argv: list[str], log: Path) -> subprocess.Popen[str] | None:
        with self._lock:
            if self.stopping:
                return None
            with log.open("w") as fh:
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=fh, text=True,
                                        start_new_session=True)
            self._procs.add(proc)
            return proc

    def done(self, proc: subprocess.Popen[str]) -> None:
        with self._lock:
            self._procs.discard(proc)

    def stop(self, sig: int) -> None:
        with self._lock:
            self.stopping = True
            for proc in self._procs:
                if proc.poll() is None:
                    proc.send_signal(sig)


def run_group(cells: list[Cell], spec: MatrixSpec, root: Path, children: _Children,
              board_locks: dict[str, threading.Lock], say: Callable[[str], None]) -> list[dict[str, Any]]:
    """A unit of work: one cell as its own run, or cells sharing boots in one process."""
    if len(cells) == 1:
        return [run_cell(cells[0], spec, root, children, board_locks, say)]
    started = time.monotonic()
    (root / "boots").mkdir(parents=True, exist_ok=True)
    log = root / "boots" / f"{Path(cells[0].board).stem}~{cells[0].kernel}.log"
    proc = children.start(group_args(cells, spec, root), log)
    if proc is None:
        return [_row(c, root / c.id, {"verdict": "not run", "exit_code": int(ExitCode.INTERRUPTED),
                                      "message": "the matrix was stopped before this cell started"}, 0.0)
                for c in cells]
    say(f"start {', '.join(c.id for c in cells)} (shared boots)")
    stdout, _ = proc.communicate()
    children.done(proc)
    try:
        reports = json.loads(stdout)
    except ValueError:
        reports = []
    rows = []
    for i, cell in enumerate(cells):
        report = reports[i] if i < len(reports) else {
            "verdict": "bug", "exit_code": proc.returncode,
            "message": f"the shared boot printed no report for this cell (exit {proc.returncode}); see {log}"}
        seconds = float(report.get("seconds", time.monotonic() - started))
        row = _row(cell, root / cell.id, report, seconds)
        if row["exit_code"] == ExitCode.INFRA and spec.retries:
            # The lab failed this cell: it gets a run of its own, with the run's own retries and backoff.
            row = run_cell(cell, spec, root, children, board_locks, say, replace=True)
        else:
            say(f"done  {cell.id}: {row['verdict']} ({row['seconds']:.1f} s, shared boot)")
        rows.append(row)
    return rows


def run_cell(cell: Cell, spec: MatrixSpec, root: Path, children: _Children,
             board_locks: dict[str, threading.Lock], say: Callable[[str], None],
             replace: bool = False) -> dict[str, Any]:
    out = root / cell.id
    started = time.monotonic()
    # One physical board takes one run at a time (the run locks it); an emulated board is each run's own.
    gate = board_locks.get(cell.board) if spec.target != "emulated" else None
    with gate if gate is not None else _nothing():
        out.mkdir(parents=True, exist_ok=True)
        proc = children.start(run_args(cell, spec, out) + (["--replace"] if replace else []), out / "run.log")
        if proc is None:
            return _row(cell, out, {"verdict": "not run", "exit_code": int(ExitCode.INTERRUPTED),
                                    "message": "the matrix was stopped before this cell started"}, 0.0)
        say(f"start {cell.id}")
        stdout, _ = proc.communicate()
        children.done(proc)
    try:
        report: dict[str, Any] = json.loads(stdout)
    except ValueError:
        report = {"verdict": "bug", "exit_code": proc.returncode,
                  "message": f"the cell's run printed no report (exit {proc.returncode}); see {out}/run.log"}
    row = _row(cell, out, report, time.monotonic() - started)
    say(f"done  {cell.id}: {row['verdict']} ({row['seconds']:.1f} s"
        + (f", attempt {row['attempts']}" if row["attempts"] > 1 else "") + ")")
    return row


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _row(cell: Cell, out: Path, report: dict[str, Any], seconds: float) -> dict[str, Any]:
    checks = report.get("checks", [])
    return {"id": cell.id, "board": cell.board, "kernel": cell.kernel,
            "scenario": NEEDS if cell.scenario == NEEDS else cell.scenario,
            "options": dict(cell.options), "out": str(report.get("out", out)),
            "verdict": str(report.get("verdict", "bug")), "exit_code": int(report.get("exit_code", ExitCode.BUG)),
            "message": str(report.get("message", "")),
            "failed_checks": [str(c.get("id", c.get("name"))) for c in checks if not c.get("passed")],
            "checks": len(checks), "seconds": round(seconds, 3),
            "attempts": int(report.get("attempt", 1 if report.get("stages") else 0))}


def default_jobs() -> int:
    """One cell per core: QEMU's TCG runs the guest on one host thread, and our side mostly waits on reads."""
    return max(1, os.cpu_count() or 1)


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


def run_matrix(spec: MatrixSpec, root: Path, *, jobs: int, replace: bool = False,
               junit: Path | None = None, say: Callable[[str], None]) -> tuple[int, dict[str, Any]]:
    started_wall, started = time.time(), time.monotonic()
    cells, skipped = [], []
    for cell in spec.cells():
        why = refusal(cell)
        if why is None:
            cells.append(cell)
        else:
            skipped.append({"board": cell.board, "kernel": cell.kernel, "scenario": cell.scenario, "why": why})
    if not cells:
        raise ConfigError("no combination of the matrix can run: " + "; ".join(
            f"{s['board']} x {s['scenario']}: {s['why']}" for s in skipped))
    ids = [c.id for c in cells]
    if len(set(ids)) != len(ids):
        raise ConfigError("two cells would share a folder: boards, kernels or scenarios with the same name "
                          f"({', '.join(sorted({i for i in ids if ids.count(i) > 1}))})")
    summary: dict[str, Any] = {**header("summary", started_wall), "out": str(root), "matrix_file": spec.file,
                               "jobs": jobs, "skipped": skipped}
    children = _Children()
    board_locks = {b: threading.Lock() for b in spec.boards}
    rows: dict[str, dict[str, Any]] = {}
    stopped: _Stop | None = None

    with FolderLock(root, replace=replace, report_name="summary.json"):
        with sigterm_raises(_Stop):
            say(f"matrix: {len(cells)} cells ({len(skipped)} combinations left out), {jobs} at a time, in {root}")
            groups = boot_groups(cells, spec)
            with ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = [pool.submit(run_group, g, spec, root, children, board_locks, say) for g in groups]
                try:
                    for fut in futures:
                        rows.update((r["id"], r) for r in fut.result())
                except (KeyboardInterrupt, _Stop) as exc:
                    stopped = exc if isinstance(exc, _Stop) else _Stop(signal.SIGINT)
                    children.stop(stopped.signum)
                    for fut in futures:
                        rows.update((r["id"], r) for r in fut.result())
        ordered = [rows[c.id] for c in cells]
        failing = [r for r in ordered if r["exit_code"] != 0]
        if stopped is not None:
            code = ExitCode.TERMINATED if stopped.signum == signal.SIGTERM else ExitCode.INTERRUPTED
            verdict = "interrupted"
        else:
            code = ExitCode(failing[0]["exit_code"]) if failing else ExitCode.OK
            verdict = "fail" if failing else "pass"
        summary.update({"seconds": round(time.monotonic() - started, 3), "verdict": verdict,
                        "exit_code": int(code), "cells": ordered, "shared_boots": spec.shared_boots,
                        "boots": sum(len(_boots_of(g, root)) for g in groups)})
        write_atomic(root / "summary.json", json.dumps(summary, indent=2))
        if junit is not None:
            junit.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(junit, matrix_junit(ordered, skipped))
    return int(code), summary


def _boots_of(group: list[Cell], root: Path) -> set[str]:
    """The boots a unit of work took: its cells' shared boot folders, or one per cell."""
    if len(group) == 1:
        return {group[0].id}
    boots: set[str] = set()
    for cell in group:
        try:
            report = json.loads((root / cell.id / "report.json").read_text())
        except (OSError, ValueError):
            continue
        boots.update(s["shared_boot"] for s in report.get("stages", []) if s.get("stage") == "boot"
                     and "shared_boot" in s)
    return boots


def matrix_junit(rows: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> str:
    """One testsuite per cell (its run's own, renamed to the cell), and one for the combinations left out."""
    suites = []
    for row in rows:
        suite = None
        path = Path(row["out"]) / "junit.xml"
        try:
            suite = ET.parse(path).getroot().find("testsuite")
        except (OSError, ET.ParseError):
            suite = None
        if suite is None:  # the cell never got as far as writing one
            suite = ET.Element("testsuite", tests="1", failures="0", errors="1", time=f"{row['seconds']:.3f}")
            case = ET.SubElement(suite, "testcase", classname=f"{row['id']}.run", name="run")
            ET.SubElement(case, "error", type=row["verdict"], message=row["message"]).text = row["message"]
        suite.set("name", row["id"])
        suites.append(suite)
    if skipped:
        suite = ET.Element("testsuite", name="left-out", tests=str(len(skipped)), failures="0", errors="0",
                           skipped=str(len(skipped)), time="0.000")
        for s in skipped:
            case = ET.SubElement(suite, "testcase", classname="left-out",
                                 name=f"{Path(s['board']).stem}~{s['kernel']}~{Path(s['scenario']).stem}")
            ET.SubElement(case, "skipped", message=s["why"])
        suites.append(suite)
    return junit_document(suites)


def matrix_table(summary: dict[str, Any], width: int = 140) -> str:
    import io

    from rich.console import Console
    from rich.table import Table

    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, highlight=False)
    table = Table(title=f"cma-tool matrix: {len(summary['cells'])} cells, {summary['seconds']:.1f} s",
                  title_justify="left")
    for col in ("board", "kernel", "scenario", "verdict", "failed checks", "time", "tries"):
        table.add_column(col, overflow="fold")
    for row in summary["cells"]:
        failed = row["failed_checks"]
        shown = ", ".join(failed[:3]) + (f" (+{len(failed) - 3})" if len(failed) > 3 else "")
        if not failed and row["verdict"] not in ("pass", "mismatch"):
            shown = row["message"].splitlines()[0][:80] if row["message"] else ""
        table.add_row(Path(row["board"]).stem, row["kernel"],
                      NEEDS if row["scenario"] == NEEDS else Path(row["scenario"]).stem,
                      row["verdict"] if row["verdict"] == "pass" else row["verdict"].upper(), shown,
                      f"{row['seconds']:.1f} s", str(row["attempts"]))
    console.print(table)
    for s in summary.get("skipped", []):
        console.print(f"left out: {Path(s['board']).stem} x {s['kernel']} x {Path(s['scenario']).stem}: {s['why']}",
                      markup=False)
    bad = [r for r in summary["cells"] if r["exit_code"] != 0]
    console.print(f"verdict: {summary['verdict']} ({len(summary['cells']) - len(bad)} of {len(summary['cells'])} "
                  f"cells passed" + (f"; failed: {', '.join(r['id'] for r in bad)}" if bad else "") + ")",
                  markup=False)
    return out.getvalue().rstrip("\n")


def matrix_cli(args: argparse.Namespace) -> int:
    spec = load_spec(Path(args.matrix) if args.matrix else None, args)
    if args.boot_per_cell and not can_share_boots(spec):
        raise UsageError(f"--boot-per-cell is for the emulated board booted directly, not --target {spec.target}"
                         + (f" --boot {spec.boot}" if spec.boot else ""),
                         hint="every other way boots once per cell already")
    jobs = args.jobs or default_jobs()
    if jobs < 1:
        raise UsageError(f"-j {jobs}: at least one cell must run at a time")
    root = Path(args.out) if args.out else new_run_folder(Path("runs"), "matrix")
    t0 = time.monotonic()

    def say(msg: str) -> None:
        if not args.json:
            print(f"[{time.monotonic() - t0:6.1f}s] {msg}", file=sys.stderr, flush=True)

    code, summary = run_matrix(spec, root, jobs=jobs, replace=args.replace,
                               junit=Path(args.junit) if args.junit else root / "junit.xml", say=say)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(matrix_table(summary))
        print(f"summary: {root}/summary.json, JUnit: {args.junit or root / 'junit.xml'}")
    return code
