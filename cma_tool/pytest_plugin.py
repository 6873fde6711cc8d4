"""cma-tool's pytest plugin: board tests that boot a board once and check every capture against the model.

Installed with cma-tool (the ``pytest11`` entry point ``cma_tool``), so it is
loaded into every pytest session of anyone who has cma-tool: it does nothing
at all unless ``--cma-board`` is given or a test asks for one of its
fixtures. It imports only ``cma_tool.api``, and only then.

    pytest tests/board/ --cma-board boards/qemu-aquila.yaml [--cma-board configs/two-streams.yaml -n 2 --dist loadgroup]

Options: ``--cma-board FILE`` (repeat it: every test that uses a board
fixture runs once per board), ``--cma-target`` (emulated), ``--cma-kernel``, ``--cma-suite``
(the emulated board's Debian kernel: bookworm, trixie), ``--cma-scenario
FILE`` (the default capture step), ``--cma-bootargs``, ``--cma-out DIR``
(console logs and each step's files; default: pytest's temporary folder),
``--cma-timeout``, ``--cma-cache``.

Fixtures (a user's test file needs nothing but ``import pytest``):

- ``cma_board``: the planned board (:class:`cma_tool.api.Plan`), session-wide; nothing boots;
- ``cma_schedule``, ``cma_prediction``: the default capture step and the model's account of it;
- ``cma_target``: the board booted to its shell, session-wide, powered off at the end whatever
  happens; ``cma_target.capture(scenario=None, pins=None)`` runs one capture step and checks it,
  ``cma_target.shell(command)`` runs a command and returns its output, status and CMA events;
- ``cma_assert``: ``cma_assert(step)`` fails the test with the explanation `cma-tool run` gives
  (expected by the model, observed from the kernel, likely cause) when any check failed.

Markers: ``@pytest.mark.cma_board("qemu-aquila", ...)`` runs a test only on
those boards (file name or stem), ``@pytest.mark.cma_kernel("linux-6.12",
...)`` only when the model's kernel profile is one of those.

With pytest-xdist each worker boots its own boards; ``--dist loadgroup``
keeps each board's tests on one worker, so each board boots once.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

if TYPE_CHECKING:
    from cma_tool import api

#: The fixture every board fixture rests on; a test that reaches it is parametrized over --cma-board.
BOARD_PARAM = "cma_board_file"
TARGETS = ("emulated",)
T = TypeVar("T")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("cma-tool", "cma-tool: board tests of CMA against the model (inert without --cma-board)")
    group.addoption("--cma-board", action="append", default=[], metavar="FILE",
                    help="board YAML file; repeat for several boards (each test runs once per board)")
    group.addoption("--cma-target", default="emulated", metavar="TARGET",
                    help="how the board is reached: emulated (QEMU) [default: emulated]")
    group.addoption("--cma-suite", default=None, metavar="SUITE",
                    help="emulated: the Debian suite whose armhf kernel the board boots (bullseye: 5.10, bookworm: "
                         "6.1, trixie: 6.12)")
    group.addoption("--cma-kernel", default=None, metavar="NAME",
                    help="emulated: the Debian kernel the board boots, debian-{5.10,6.1,6.12}-{armhf,arm64}")
    group.addoption("--cma-scenario", default=None, metavar="FILE",
                    help="the capture steps of cma_target.capture() and cma_prediction (default: the board's needs)")
    group.addoption("--cma-bootargs", default="", metavar="ARGS", help="extra kernel command line")
    group.addoption("--cma-out", default=None, metavar="DIR",
                    help="where console logs and step files go (default: pytest's temporary folder)")
    group.addoption("--cma-timeout", type=float, default=120.0, metavar="SECONDS",
                    help="seconds for the boot and for each command on the board")
    group.addoption("--cma-cache", default=None, metavar="DIR", help="cma-tool's image cache")


def pytest_configure(config: pytest.Config) -> None:
    # Only descriptions: a test file marked for cma-tool still loads without --cma-board (and --strict-markers).
    config.addinivalue_line("markers", "cma_board(*names): run only on these --cma-board boards (file name or stem)")
    config.addinivalue_line("markers", "cma_kernel(*profiles): run only when the model's kernel profile is one of "
                                       "these (linux-6.1, linux-6.12, ...)")
    boards = config.getoption("cma_board")
    if not boards:
        return
    missing = [b for b in boards if not Path(b).is_file()]
    if missing:
        raise pytest.UsageError(f"--cma-board {', '.join(missing)}: no such file (give a board YAML file, e.g. "
                                "boards/qemu-aquila.yaml)")
    if config.getoption("cma_target") not in TARGETS:
        raise pytest.UsageError(f"--cma-target {config.getoption('cma_target')}: the plugin keeps only the emulated "
                                "board booted across tests; run a serial or SSH board whole with cma-tool run, or "
                                "check its console log with cma-tool check")
    scenario = config.getoption("cma_scenario")
    if scenario is not None and not Path(scenario).is_file():
        raise pytest.UsageError(f"--cma-scenario {scenario}: no such file")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if BOARD_PARAM not in metafunc.fixturenames:
        return
    boards: list[str] = metafunc.config.getoption("cma_board")
    if not boards:
        return  # the fixture skips, saying why
    wanted = [str(n) for m in metafunc.definition.iter_markers("cma_board") for n in m.args]
    chosen = [b for b in boards if not wanted or _board_matches(b, wanted)]
    if not chosen:
        reason = f"cma_board({', '.join(wanted)}): none of the boards given ({', '.join(boards)})"
        metafunc.parametrize(BOARD_PARAM, [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-board")],
                             indirect=True, scope="session")
        return
    metafunc.parametrize(BOARD_PARAM, chosen, indirect=True, scope="session", ids=[Path(b).stem for b in chosen])


@pytest.hookimpl(tryfirst=True)  # before xdist turns xdist_group marks into the node ids loadgroup reads
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("cma_board"):
        return
    profiles: dict[str, str | None] = {}
    grouping = config.pluginmanager.hasplugin("xdist")
    for item in items:
        callspec = getattr(item, "callspec", None)
        board = callspec.params.get(BOARD_PARAM) if callspec is not None else None
        if board is None:
            continue
        if grouping:  # --dist loadgroup: one worker per board, so each board boots once
            item.add_marker(pytest.mark.xdist_group(name=f"cma-{Path(board).stem}"))
        kernels = [str(k) for m in item.iter_markers("cma_kernel") for k in m.args]
        if kernels:
            if board not in profiles:
                profiles[board] = _profile_of(config, board)
            profile = profiles[board]
            if profile is not None and profile not in kernels:
                item.add_marker(pytest.mark.skip(reason=f"cma_kernel({', '.join(kernels)}): {Path(board).name} "
                                                        f"runs {profile}"))


# ---- fixtures --------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cma_board_file(request: pytest.FixtureRequest) -> Path:
    """The --cma-board file this test runs on."""
    board = getattr(request, "param", None)
    if board is None:
        pytest.skip("cma-tool: no --cma-board given (e.g. pytest --cma-board boards/qemu-aquila.yaml)")
    return Path(board)


@pytest.fixture(scope="session")
def cma_board(request: pytest.FixtureRequest, cma_board_file: Path) -> api.Plan:
    """The board, validated and planned (areas, diagnostics) for the kernel it will boot."""
    from cma_tool import api

    opts = _Options.of(request.config)
    return _or_fail(f"cma-tool cannot plan {cma_board_file}",
                    lambda: api.load_board(cma_board_file, kernel=opts.kernel, suite=opts.suite,
                                                  bootargs=opts.bootargs))


@pytest.fixture(scope="session")
def cma_schedule(request: pytest.FixtureRequest, cma_board: api.Plan) -> api.Schedule:
    """The default capture step: --cma-scenario's, or the board's needs."""
    from cma_tool import api

    opts = _Options.of(request.config)
    return _or_fail("cma-tool cannot make the capture schedule", lambda: api.capture_schedule(cma_board, opts.scenario))


@pytest.fixture(scope="session")
def cma_prediction(request: pytest.FixtureRequest, cma_board: api.Plan, cma_schedule: api.Schedule) -> api.Prediction:
    """The model's account of the default capture step on a freshly booted board."""
    from cma_tool import api

    opts = _Options.of(request.config)
    cmdline = api.boot_cmdline(cma_board, bootargs=opts.bootargs, agent="shell")
    return api.predict(cma_board, cma_schedule, cmdline=cmdline)


@pytest.fixture(scope="session")
def cma_target(request: pytest.FixtureRequest, cma_board: api.Plan, cma_board_file: Path,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[CmaTarget]:
    """The board booted to its shell for the whole session; powered off at the end, whatever ends it."""
    from cma_tool import api

    opts = _Options.of(request.config)
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    name = cma_board_file.stem + (f"-{worker}" if worker else "")
    out = Path(opts.out) / name if opts.out else tmp_path_factory.mktemp(f"cma-{name}")
    with ExitStack() as stack:
        stack.enter_context(_sigterm_interrupts())
        booted = _or_fail(f"cma-tool could not boot {cma_board_file} (console: {out / 'console.log'})",
                          lambda: stack.enter_context(api.boot(cma_board, out=out, target=opts.target,
                                                               suite=opts.suite, kernel=opts.kernel, bootargs=opts.bootargs,
                                                               timeout=opts.timeout, cache=opts.cache)))
        yield CmaTarget(booted, opts.scenario)


@pytest.fixture
def cma_assert() -> Callable[[api.StepRun | api.Result], None]:
    """``cma_assert(step)``: fail the test with the model's explanation when any check of ``step`` failed.

    Takes what ``cma_target.capture()`` returns, or the result of ``api.run``/``api.check_log``.
    """

    def check(result: api.StepRun | api.Result) -> None:
        from cma_tool import api

        checks = tuple(getattr(result, "checks", ()))
        if not checks:
            pytest.fail(f"cma_assert: {result!r} has no checks (give it what cma_target.capture() returned)",
                        pytrace=False)
        if all(c.passed for c in checks):
            return
        notes = [f"note: {n}" for n in getattr(result, "notes", ())]
        folder = getattr(result, "folder", None)
        where = [f"artefacts: {folder}/ (agent-plan.txt, agent-output.txt, observed.json, checks.json)"] if folder else []
        pytest.fail("\n".join(["the kernel did not do what the model predicts", api.explain(checks), *notes, *where]),
                    pytrace=False)

    return check


class CmaTarget:
    """What ``cma_target`` gives a test: capture steps and shell commands on the booted board.

    An error on the board fails the test with cma-tool's own words (whose
    fault, what to do) instead of a traceback.
    """

    def __init__(self, board: api.BootedBoard, scenario: str | None) -> None:
        self.board = board
        self.default_scenario = scenario

    @property
    def plan(self) -> api.Plan:
        return self.board.plan

    @property
    def cmdline(self) -> str:
        return self.board.cmdline

    @property
    def console_log(self) -> Path:
        return self.board.console_log

    @property
    def boot_events(self) -> tuple[api.Event, ...]:
        return self.board.boot_events

    def capture(self, scenario: Any = None, *, pins: Any = None) -> api.StepRun:
        """One capture step: a scenario file (default: --cma-scenario, else the board's needs), checked."""
        return _or_fail("the capture step failed", lambda: self.board.capture(
            scenario if scenario is not None else self.default_scenario, pins=pins))

    def shell(self, command: str, timeout: float | None = None) -> api.ShellRun:
        """A shell command on the board: output, exit status, and the CMA events it caused."""
        return _or_fail(f"the board could not run {command!r}", lambda: self.board.shell(command, timeout))


# ---- helpers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _Options:
    target: str
    suite: str | None
    kernel: str | None
    scenario: str | None
    bootargs: str
    out: str | None
    timeout: float
    cache: Path | None

    @classmethod
    def of(cls, config: pytest.Config) -> _Options:
        cache = config.getoption("cma_cache")
        return cls(target=config.getoption("cma_target"), suite=config.getoption("cma_suite"),
                   kernel=config.getoption("cma_kernel"),
                   scenario=config.getoption("cma_scenario"), bootargs=config.getoption("cma_bootargs"),
                   out=config.getoption("cma_out"), timeout=config.getoption("cma_timeout"),
                   cache=Path(cache) if cache else None)


def _board_matches(board: str, wanted: list[str]) -> bool:
    path = Path(board)
    return any(w in (board, path.name, path.stem) for w in wanted)


def _profile_of(config: pytest.Config, board: str) -> str | None:
    """The kernel profile the board's tests run with; None when it cannot be planned (its fixture says why)."""
    from cma_tool import api

    opts = _Options.of(config)
    try:
        return api.load_board(board, kernel=opts.kernel, suite=opts.suite, bootargs=opts.bootargs).profile.name
    except api.CmaToolError:
        return None


def _or_fail(what: str, call: Callable[[], T]) -> T:
    """``call()``, or the test fails with cma-tool's own words for what went wrong (whose fault, what to do)."""
    from cma_tool import api

    try:
        return call()
    except api.CmaToolError as err:
        message = f"{what}: {err.kind} error: {err}"
    # Failed outside the except block: the report shows cma-tool's words, not a chain of tracebacks.
    pytest.fail(message, pytrace=False)


def _sigterm_interrupts() -> AbstractContextManager[None]:
    """While a board is up, SIGTERM (a CI job's timeout) unwinds like Ctrl-C, so teardown powers it off."""
    from cma_tool import api

    return api.sigterm_raises(lambda signum: KeyboardInterrupt(f"terminated by signal {signum}"))
