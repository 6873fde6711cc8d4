"""`cma-tool check` on real console logs recorded on the emulated board (no QEMU here).

The logs are real runs (tests/data/kernel-traces*/ of the boards in
tests/run/boards/, and tests/data/serial-replay/ with the report its run
wrote); the expectations are the kernel's rules or the recording's own
files (its trace.txt, its report.json), never what check printed earlier.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cma_tool import api
from tests.checklog.lava import lava_job_log

ROOT = Path(__file__).resolve().parents[2]
TRACES = ROOT / "tests" / "data" / "kernel-traces"
TRACES_612 = ROOT / "tests" / "data" / "kernel-traces-6.12"
BOARDS = ROOT / "tests" / "run" / "boards"
REPLAY = ROOT / "tests" / "data" / "serial-replay"
TWIN = ROOT / "tests" / "sim" / "emulated-twin.yaml"
RECORDED = sorted(p.name for p in TRACES.glob("*/") if (p / "console.log").is_file())
TRACEPOINT = re.compile(r" cma_(alloc_start|alloc_finish|alloc_busy_retry|release): ")


def console(path: Path) -> str:
    return path.read_bytes().decode(errors="replace")


def check(tmp_path: Path, board: Path, text: str, name: str = "console.log", **kw: object) -> api.Result:
    log = tmp_path / name
    log.write_text(text)
    return api.check_log(board, log, out=tmp_path / "out", **kw)  # type: ignore[arg-type]


def same_checks(a: list[dict[str, object]] | tuple[api.Check, ...], b: list[dict[str, object]]) -> None:
    got = [c.to_json() if isinstance(c, api.Check) else c for c in a]
    assert got == b


@pytest.mark.parametrize("name", RECORDED)
def test_every_recorded_run_passes_event_for_event(name: str, tmp_path: Path) -> None:
    folder = TRACES / name
    bootargs = (folder / "bootargs.txt").read_text().strip()
    # (e) is invalid on purpose: its 12 MiB node is refused by the kernel, which is what it checks.
    result = api.check_log(BOARDS / f"{name}.yaml", folder / "console.log", out=tmp_path, bootargs=bootargs,
                           force=name.startswith("e-"))
    assert result.exit_code == 0, api.explain(result.checks) + result.report.get("message", "")
    # One event check per tracepoint the kernel recorded (the recording's own trace.txt).
    traced = sum(1 for line in (folder / "trace.txt").read_text().splitlines() if TRACEPOINT.search(line))
    assert sum(1 for c in result.checks if c.group == "events") == traced
    assert next(c for c in result.checks if c.name == "command line").observed == bootargs


@pytest.mark.parametrize("name", ["a-reference-dt-cma", "b-kconfig-default-16m", "d-aquila-two-streams"])
def test_a_612_log_is_predicted_with_the_612_profile_it_shows(name: str, tmp_path: Path) -> None:
    folder = TRACES_612 / name
    result = api.check_log(BOARDS / f"{name}.yaml", folder / "console.log", out=tmp_path)
    assert result.exit_code == 0, api.explain(result.checks)
    plan_stage = next(s for s in result.report["stages"] if s["stage"] == "plan")
    assert plan_stage["profile"] == "linux-6.12" and "Linux 6.12" in plan_stage["note"]
    # Told it is 6.1, the model has no errorno in cma_alloc_finish (6.12 added it): each of those differs.
    told = api.check_log(BOARDS / f"{name}.yaml", folder / "console.log", out=tmp_path / "61", kernel="linux-6.1")
    assert told.exit_code == 5
    finishes = [c for c in told.checks if c.name.endswith("alloc_finish")]
    assert finishes and all(not c.passed and "error code differs" in c.cause for c in finishes)
    assert all(c.passed for c in told.checks if c.group == "events" and c not in finishes)


def test_check_reproduces_the_runs_own_report(tmp_path: Path) -> None:
    """The console of a real run, checked offline: the same verdict and exactly the same checks as the run."""
    report = json.loads((REPLAY / "report.json").read_text())
    result = check(tmp_path, TWIN, console(REPLAY / "console.log"),
                   bootargs=(REPLAY / "cmdline.txt").read_text().strip())
    assert (result.exit_code, result.verdict) == (report["exit_code"], report["verdict"]) == (0, "pass")
    same_checks(result.checks, report["checks"])
    written = json.loads((tmp_path / "out" / "report.json").read_text())
    assert written["command"] == "check" and written["verdict"] == "pass" and written["stage"] == "end"
    assert written["observed"]["events"] == report["observed"]["events"]


def test_a_lava_job_log_gives_the_same_checks(tmp_path: Path) -> None:
    report = json.loads((REPLAY / "report.json").read_text())
    result = check(tmp_path, TWIN, lava_job_log(console(REPLAY / "console.log")), "job-1234.log",
                   bootargs=(REPLAY / "cmdline.txt").read_text().strip())
    assert result.report["stages"][1]["form"] == "lava"
    same_checks(result.checks, report["checks"])


@pytest.mark.parametrize("stamp", ["[2026-01-04 12:00:00.123] ", "[   12.345678] ", "2026-01-04T12:00:00.123Z "])
def test_host_timestamps_in_front_of_every_line_are_read_through(stamp: str, tmp_path: Path) -> None:
    report = json.loads((REPLAY / "report.json").read_text())
    text = "".join(stamp + line + "\n" for line in console(REPLAY / "console.log").splitlines())
    result = check(tmp_path, TWIN, text, bootargs=(REPLAY / "cmdline.txt").read_text().strip())
    same_checks(result.checks, report["checks"])


def test_a_wrong_model_base_is_a_mismatch_naming_the_pfn(tmp_path: Path) -> None:
    result = check(tmp_path, TWIN, console(REPLAY / "console.log"), pins={"linux,cma": 0x60000000})
    assert result.exit_code == 5 and result.verdict == "mismatch"
    # The model puts the pool at 0x60000000 (pfn 0x60000); the kernel put it at 0x64000000 (pfn 0x64000).
    first = next(c for c in result.failures if c.group == "events")
    assert "pfn=0x60000" in first.expected and "pfn=0x64000" in first.observed
    assert "off by the same +0x4000 pages" in first.cause


def test_a_command_line_other_than_the_one_given_fails_its_check(tmp_path: Path) -> None:
    result = check(tmp_path, TWIN, console(REPLAY / "console.log"), bootargs="console=ttyAMA0,115200 cma=32M")
    assert result.exit_code == 5
    (bad,) = result.failures
    assert bad.name == "command line" and "bootloader" in bad.cause


def agent_sections(text: str) -> tuple[str, str]:
    """(the console before the agent's first section, the rest)."""
    at = text.index("==== CMA-TOOL BEGIN ")
    return text[:at], text[at:]


def test_a_log_without_the_agent_is_refused_saying_how_to_trace(tmp_path: Path) -> None:
    boot_only, _ = agent_sections(console(REPLAY / "console.log"))
    result = check(tmp_path, TWIN, boot_only)
    assert result.exit_code == 1 and result.verdict == "configuration"
    message = result.report["message"]
    assert "no trace section" in message and "trace_event=cma:*" in message and "cmatool-run" in message


def test_a_log_without_its_trace_section_is_refused(tmp_path: Path) -> None:
    text = re.sub(r"==== CMA-TOOL BEGIN trace ====.*?==== CMA-TOOL END trace rc=0[^\n]*====\r?\n", "",
                  console(REPLAY / "console.log"), flags=re.S)
    result = check(tmp_path, TWIN, text)
    assert result.exit_code == 1 and "no trace section" in result.report["message"]


def redeclared(text: str, section: str) -> str:
    """The log with ``section``'s END line saying what its text now is (as an agent printing that text would)."""
    import hashlib

    begin = f"==== CMA-TOOL BEGIN {section} ====\n"
    start = text.index(begin) + len(begin)
    end = re.compile(rf"==== CMA-TOOL END {section} rc=(\d+) bytes=\d+ sha256=[0-9a-f]+ ====").search(text, start)
    assert end is not None
    data = text[start:end.start()].encode()
    return (text[:end.start()] + f"==== CMA-TOOL END {section} rc={end.group(1)} bytes={len(data)} "
            f"sha256={hashlib.sha256(data).hexdigest()} ====" + text[end.end():])


def test_a_trace_without_cma_events_while_the_kernel_made_areas_is_refused(tmp_path: Path) -> None:
    lines = console(REPLAY / "console.log").replace("\r\n", "\n").split("\n")
    text = redeclared("\n".join(line for line in lines if not TRACEPOINT.search(line)), "trace")
    result = check(tmp_path, TWIN, text)
    assert result.exit_code == 1
    message = result.report["message"]
    # The three areas of the twin's board: the 64 MiB default and the two static 16 MiB pools.
    assert "no cma event" in message and "linux,cma" in message and "region@43000000" in message
    assert "trace_event=cma:*" in message


def test_a_log_cut_off_inside_the_agent_shows_the_board_stopped(tmp_path: Path) -> None:
    text = console(REPLAY / "console.log")
    result = check(tmp_path, TWIN, text[: text.index("==== CMA-TOOL BEGIN vmstat")])
    assert result.exit_code == 4 and "stops before its trace section" in result.report["message"]


def test_a_kernel_panic_in_the_log_is_the_boards_failure(tmp_path: Path) -> None:
    before, after = agent_sections(console(REPLAY / "console.log"))
    panic = "[    6.100000] Kernel panic - not syncing: Attempted to kill init! exitcode=0x00000100\n"
    result = check(tmp_path, TWIN, before + panic + after)
    assert result.exit_code == 4 and result.verdict == "target"
    assert "Kernel panic - not syncing: Attempted to kill init!" in result.report["message"]


def test_a_capture_program_that_failed_is_the_boards_failure(tmp_path: Path) -> None:
    text = console(REPLAY / "console.log").replace("==== CMA-TOOL END capture rc=0 ", "==== CMA-TOOL END capture rc=1 ")
    result = check(tmp_path, TWIN, text)
    assert result.exit_code == 4 and "capture program failed" in result.report["message"]


def test_a_damaged_lava_log_is_refused_at_its_line(tmp_path: Path) -> None:
    lines = lava_job_log(console(REPLAY / "console.log")).splitlines()
    lines[7] = "- {\"dt\": \"2026-01-04T12:00:00\", \"lvl\": \"target\", \"msg\": "  # cut in the middle
    result = check(tmp_path, TWIN, "\n".join(lines) + "\n", "job.log")
    assert result.exit_code == 1
    assert f"{tmp_path / 'job.log'}:8: error: not a LAVA log record" in result.report["message"]


def test_a_log_of_two_agent_runs_is_refused(tmp_path: Path) -> None:
    # The second run's trace buffer still holds the first run's events: one run is checked at a time.
    text = console(REPLAY / "console.log")
    result = check(tmp_path, TWIN, text + text)
    assert result.exit_code == 1 and "holds 2 runs of the agent" in result.report["message"]


def test_a_log_that_does_not_exist_is_bad_input(tmp_path: Path) -> None:
    result = api.check_log(TWIN, tmp_path / "nope.log", out=tmp_path)
    assert result.exit_code == 1 and "cannot read the console log" in result.report["message"]


def test_streams_are_matched_to_board_devices_by_the_node_they_resolved(tmp_path: Path) -> None:
    # The recording labelled its streams s0 and s1; its resolve lines name driver:vivid:0 and driver:vivid:1,
    # the board's vivid (linux,cma) and vivid1 devices: 720p NV12 is 338 pages, 3 of them: 4056 kB.
    result = api.check_log(BOARDS / "d-aquila-two-streams.yaml", TRACES / "d-aquila-two-streams" / "console.log",
                           out=tmp_path)
    assert result.exit_code == 0
    drop = next(c for c in result.checks if c.name == "CmaFree drop at REQBUFS s0")
    assert drop.observed == f"{3 * 338 * 4} kB" and drop.passed


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cma_tool", "check", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, check=False)


def test_the_command_line_exit_codes_table_json_and_junit(tmp_path: Path) -> None:
    ok = cli(str(TWIN), str(REPLAY / "console.log"), "--out", str(tmp_path / "ok"), "--junit", str(tmp_path / "j.xml"))
    assert ok.returncode == 0, ok.stderr
    assert "cma-tool check:" in ok.stdout and "verdict: pass" in ok.stdout
    junit = (tmp_path / "j.xml").read_text()
    assert 'failures="0"' in junit and junit.count("<testcase") == len(
        json.loads((tmp_path / "ok" / "report.json").read_text())["checks"])

    bad = cli(str(TWIN), str(REPLAY / "console.log"), "--out", str(tmp_path / "bad"), "--json",
              "--model-pin", "linux,cma=0x60000000")
    assert bad.returncode == 5 and json.loads(bad.stdout)["verdict"] == "mismatch"

    empty = tmp_path / "empty.log"
    empty.write_text("U-Boot 2023.01\nStarting kernel ...\n")
    refused = cli(str(TWIN), str(empty), "--out", str(tmp_path / "refused"))
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("configuration error: ") and "Traceback" not in refused.stderr


def test_a_log_whose_sections_arrived_damaged_is_the_links_fault(tmp_path: Path) -> None:
    text = console(REPLAY / "console.log").replace("pfn=0x64500", "pfn=0x6450", 1)
    result = check(tmp_path, TWIN, text)
    assert result.exit_code == 3 and "section trace: " in result.report["message"]


MATRIX = ROOT / "tests" / "data" / "kernel-matrix"
MATRIX_PROFILES = {"debian-5.10-armhf": "linux-5.10", "debian-6.1-armhf": "linux-6.1", "debian-6.12-armhf": "linux-6.12",
                   "debian-5.10-arm64": "linux-5.10-arm64", "debian-6.1-arm64": "linux-6.1-arm64",
                   "debian-6.12-arm64": "linux-6.12-arm64"}


@pytest.mark.parametrize("kernel", list(MATRIX_PROFILES))
@pytest.mark.parametrize("name", ["a-reference-dt-cma", "b-kconfig-default-16m", "d-aquila-two-streams"])
def test_every_kernel_of_the_matrix_is_checked_with_the_profile_its_log_shows(kernel: str, name: str,
                                                                             tmp_path: Path) -> None:
    # The 'Linux version 6.1.0-57-arm64' line picks the series and, by Debian's flavour, the architecture.
    result = api.check_log(BOARDS / f"{name}.yaml", MATRIX / kernel / name / "console.log", out=tmp_path)
    assert result.exit_code == 0, api.explain(result.checks) + result.report.get("message", "")
    plan_stage = next(s for s in result.report["stages"] if s["stage"] == "plan")
    assert plan_stage["profile"] == MATRIX_PROFILES[kernel]
