"""`cma-tool check` against `cma-tool run` on the emulated board: the same verdict from the run's own console.log.

Each emulated scenario of tests/e2e/test_run_emulated.py is run once (a
module fixture: each boot happens the first time a test asks for it; the
suite runs under the machine's QEMU lock, `flock /tmp/cma-tool-qemu.lock`,
which a child taking it again would wait on forever, so nothing here takes
it), then its console.log is checked offline: the exit code, the verdict and
every check (name, expected, observed, cause) must be the run's. The run's
own verdicts are the ones test_run_emulated.py works out by hand: all pass
but the negative control.

The LAVA test definition (configs/lava/) runs here too, on the emulated
board booted to its shell, laid out as a LAVA test shell lays it out; the
console it leaves, wrapped as LAVA wraps it, must check as a pass.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from cma_tool import api
from tests.checklog.lava import lava_job_log

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.emulated, pytest.mark.slow]


@dataclass(frozen=True)
class Scenario:
    board: str
    scenario: str | None = None
    suite: str | None = None
    pins: dict[str, int] = field(default_factory=dict)
    exit_code: int = 0  # what the run must conclude (test_run_emulated.py's expectations)


RUNS = {
    "default": Scenario("boards/qemu-aquila.yaml"),
    "exhaust-16m": Scenario("configs/exhaust-16m.yaml"),
    "cmdline-override": Scenario("configs/cmdline-override.yaml"),
    "wrong-model-base": Scenario("boards/qemu-aquila.yaml", pins={"linux,cma": 0x60000000}, exit_code=5),
    "two-streams": Scenario("configs/two-streams.yaml"),
    "named-pool": Scenario("configs/named-pool.yaml"),
    "trixie-612": Scenario("boards/qemu-aquila.yaml", suite="trixie"),
    "one-after-another": Scenario("boards/qemu-aquila.yaml", "configs/requests/one-after-another.yaml"),
    "hole-reuse": Scenario("configs/two-streams.yaml", "configs/requests/hole-reuse.yaml"),
    "rgb565-nv12": Scenario("configs/two-streams.yaml", "configs/requests/rgb565-nv12.yaml"),
    "tiny-and-1080p": Scenario("configs/two-streams.yaml", "configs/requests/tiny-and-1080p.yaml"),
    "no-regions-612": Scenario("configs/no-regions.yaml", suite="trixie"),
}

Runs = Callable[[str], tuple[api.Result, Path]]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    done: dict[str, tuple[api.Result, Path]] = {}

    def get(name: str) -> tuple[api.Result, Path]:
        if name not in done:
            spec = RUNS[name]
            out = tmp_path_factory.mktemp(name)
            result = api.run(ROOT / spec.board, out=out, suite=spec.suite, pins=spec.pins,
                             scenario=ROOT / spec.scenario if spec.scenario else None)
            done[name] = (result, out)
        return done[name]

    return get


def intended_cmdline(result: api.Result) -> str:
    return str(next(s for s in result.report["stages"] if s["stage"] == "prepare")["cmdline"])


@pytest.mark.parametrize("name", list(RUNS))
def test_check_reproduces_the_runs_verdict_from_its_console_log(name: str, runs: Runs, tmp_path: Path) -> None:
    spec = RUNS[name]
    run, out = runs(name)
    assert run.exit_code == spec.exit_code, run.report.get("message")
    checked = api.check_log(ROOT / spec.board, out / "console.log", out=tmp_path, bootargs=intended_cmdline(run),
                            pins=spec.pins, scenario=ROOT / spec.scenario if spec.scenario else None)
    assert (checked.exit_code, checked.verdict) == (run.exit_code, run.verdict)
    assert [c.to_json() for c in checked.checks] == [c.to_json() for c in run.checks]
    assert checked.report["observed"] == run.report["observed"]


def test_the_runs_console_as_a_lava_job_log_checks_the_same(runs: Runs, tmp_path: Path) -> None:
    run, out = runs("default")
    job = tmp_path / "job.log"
    job.write_text(lava_job_log((out / "console.log").read_bytes().decode(errors="replace")))
    checked = api.check_log(ROOT / "boards/qemu-aquila.yaml", job, out=tmp_path / "check")
    # Without --bootargs the log's own command line is used and not checked: one check fewer.
    assert [c.to_json() for c in checked.checks] == [c.to_json() for c in run.checks if c.name != "command line"]
    assert checked.exit_code == 0


#: What LAVA's own lava-test-case prints (lava_test_shell/lava-test-case): the signal its log parser reads.
LAVA_TEST_CASE = """#!/bin/sh
id=$1; shift; result=; measurement=; units=
while [ $# -gt 0 ]; do
  case $1 in --result) result=$2; shift 2;; --measurement) measurement=$2; shift 2;; --units) units=$2; shift 2;;
  *) shift;; esac
done
echo "<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=$id RESULT=$result${measurement:+ MEASUREMENT=$measurement}${units:+ UNITS=$units}>"
"""


def test_the_lava_definition_runs_the_agent_and_its_job_log_checks(tmp_path: Path) -> None:
    definition = yaml.safe_load((ROOT / "configs/lava/cma-tool-agent.yaml").read_text())
    plan = api.load_board(ROOT / "boards/qemu-aquila.yaml")
    files = {"plan": api.capture_schedule(plan).agent_plan().render(), "lava-test-case": LAVA_TEST_CASE,
             "cmatool-lava.sh": (ROOT / "configs/lava/cmatool-lava.sh").read_text()}
    with api.boot(plan, out=tmp_path / "board", files=files) as board:
        # A LAVA test shell: the definition's repository checked out (here: the two files its step uses),
        # lava-test-case on PATH, the parameters set in the shell that runs the steps.
        setup = board.shell("mkdir -p /tmp/lava/bin /tmp/repo/configs/lava /tmp/repo/firmware"
                            " && cp /cmatool/lava-test-case /tmp/lava/bin/ && chmod 755 /tmp/lava/bin/lava-test-case"
                            " && cp /cmatool/cmatool-lava.sh /tmp/repo/configs/lava/"
                            ' && ln -s "$(command -v cmatool-run)" /tmp/repo/firmware/cmatool-run')
        assert setup.status == 0, setup.output
        params = "; ".join(f"{key}={shlex.quote(str(value))}" for key, value in definition["params"].items())
        outputs = [board.shell(f"cd /tmp/repo && PATH=/tmp/lava/bin:$PATH sh -c {shlex.quote(params + '; ' + step)}")
                   for step in definition["run"]["steps"]]
        cmdline = board.cmdline
    signals = dict(re.findall(r"<LAVA_SIGNAL_TESTCASE TEST_CASE_ID=(\S+) RESULT=(\w+)", outputs[-1].output))
    sections = ["cmdline", "meminfo-boot", "modprobe", "capture", "meminfo", "vmstat", "trace", "dmesg"]
    assert signals == {**{f"cmatool-{s}": "pass" for s in sections}, "cmatool-trace-events": "pass",
                       "cmatool-agent": "pass"}
    # The pool and four 1080p buffers, allocated and released: 2 + 4 x 2 + 4 tracepoints.
    assert "TEST_CASE_ID=cmatool-trace-events RESULT=pass MEASUREMENT=14 UNITS=events" in outputs[-1].output

    job = tmp_path / "job.log"
    job.write_text(lava_job_log((tmp_path / "board" / "console.log").read_bytes().decode(errors="replace")))
    checked = api.check_log(ROOT / "boards/qemu-aquila.yaml", job, out=tmp_path / "check", bootargs=cmdline)
    assert checked.exit_code == 0, api.explain(checked.checks) + checked.report.get("message", "")
    # The 64 MiB default area top-down at 0x64000000: the atomic pool at its base, then 1013-page buffers
    # on 256-page alignment: 0x64100, 0x64500, 0x64900, 0x64d00.
    finishes = [e.split()[2] for e in checked.report["observed"]["events"] if e.startswith("cma_alloc_finish")]
    assert finishes == ["pfn=0x64000", "pfn=0x64100", "pfn=0x64500", "pfn=0x64900", "pfn=0x64d00"]
