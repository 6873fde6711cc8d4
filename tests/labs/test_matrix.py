"""`cma-tool matrix`: boards x kernels x scenarios, cells side by side, one summary."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cma_tool.errors import ConfigError
from cma_tool.matrix import load_spec

ROOT = Path(__file__).parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))
MATRIX = ROOT / "tests/labs/data/matrix.yaml"


def cma_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cma_tool", *args], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=900, check=False)


def cli(**given: object) -> argparse.Namespace:
    args = dict(board=None, suite=None, scenario=None, target=None, boot=None, retries=None, retry_backoff=2.0,
                timeout=None, cache=None)
    args.update(given)
    return argparse.Namespace(**args)


def test_a_matrix_file_names_cells_and_their_own_options() -> None:
    spec = load_spec(MATRIX, cli())
    cells = spec.cells()
    assert len(cells) == 12
    pinned = [c for c in cells if c.options]
    assert [c.id for c in pinned] == ["qemu-aquila~trixie~needs"]
    assert dict(pinned[0].options) == {"model-pin": ["linux,cma=0x60000000"]}


def test_command_line_lists_replace_the_files_and_take_commas() -> None:
    spec = load_spec(MATRIX, cli(board=["boards/qemu-aquila.yaml"], suite=["bookworm,trixie"]))
    assert [c.id for c in spec.cells()] == [f"qemu-aquila~{k}~{s}" for k in ("bookworm", "trixie")
                                            for s in ("needs", "hole-reuse", "tiny-and-1080p")]


def test_an_unknown_key_in_a_matrix_file_is_a_configuration_error(tmp_path: Path) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text("boards: [a.yaml]\nkernels: [trixie]\n")
    with pytest.raises(ConfigError, match="unknown key.*kernels"):
        load_spec(bad, cli())


def test_a_matrix_where_nothing_can_run_is_a_configuration_error(tmp_path: Path) -> None:
    res = cma_tool("matrix", "--board", "boards/qemu-aquila.yaml", "--scenario", "configs/requests/hole-reuse.yaml",
                   "--out", str(tmp_path / "m"))
    assert res.returncode == 1
    assert "no combination of the matrix can run" in res.stderr and "no device 'vivid1'" in res.stderr


def test_cells_on_one_physical_board_take_turns_and_each_is_reported(tmp_path: Path) -> None:
    # On a bench board (serial) every cell without --kernel is refused before it touches anything (exit 2):
    # the point is the matrix's handling: cells of one board one after the other, each in the summary.
    out = tmp_path / "m"
    res = cma_tool("matrix", "--board", "configs/two-streams.yaml", "--target", "serial", "--scenario",
                   "needs,configs/requests/hole-reuse.yaml", "-j", "2", "--out", str(out))
    assert res.returncode == 2, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [c["id"] for c in summary["cells"]] == ["two-streams~bookworm~needs", "two-streams~bookworm~hole-reuse"]
    assert all(c["verdict"] == "usage" and "needs --kernel" in c["message"] for c in summary["cells"])
    starts = [ln for ln in res.stderr.splitlines() if "] start " in ln or "] done " in ln]
    assert [ln.split("] ")[1].split()[0] for ln in starts] == ["start", "done", "start", "done"]


@pytest.mark.emulated
@pytest.mark.slow
def test_two_boards_two_kernels_three_scenarios_in_parallel(tmp_path: Path) -> None:
    out = tmp_path / "m"
    res = cma_tool("matrix", str(MATRIX), "-j", "2", "--out", str(out))
    # The negative control's mismatch is the matrix's exit code; it is the only failing cell.
    assert res.returncode == 5, res.stdout + res.stderr
    assert res.stdout.count("cma-tool matrix: 8 cells") == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "fail" and summary["jobs"] == 2
    rows = {c["id"]: c for c in summary["cells"]}
    assert sorted(rows) == sorted(["qemu-aquila~bookworm~needs", "qemu-aquila~trixie~needs"]
                                  + [f"two-streams~{k}~{s}" for k in ("bookworm", "trixie")
                                     for s in ("needs", "hole-reuse", "tiny-and-1080p")])
    failing = [cid for cid, c in rows.items() if c["exit_code"] != 0]
    assert failing == ["qemu-aquila~trixie~needs"], {cid: rows[cid]["message"] for cid in failing}
    assert "boot/area/linux,cma" in rows["qemu-aquila~trixie~needs"]["failed_checks"]
    assert "failed: qemu-aquila~trixie~needs)" in res.stdout
    assert len(summary["skipped"]) == 4 and all("no device 'vivid1'" in s["why"] for s in summary["skipped"])
    # Each cell ran its own kernel: the trixie cells' reports say the 6.12 profile.
    for cid, row in rows.items():
        rep = json.loads((Path(row["out"]) / "report.json").read_text())
        assert rep["kernel_profile"] == ("linux-6.12" if "~trixie~" in cid else "linux-6.1")
        assert row["attempts"] == 1
    # -j 2: at some moment two cells ran at once, never three.
    spans = []
    for row in rows.values():
        rep = json.loads((Path(row["out"]) / "report.json").read_text())
        begin = time.mktime(time.strptime(rep["started"][:19], "%Y-%m-%dT%H:%M:%S")) + float(rep["started"][19:-1])
        spans.append((begin, begin + rep["seconds"]))
    overlap = [sum(1 for b, e in spans if b <= t < e) for t, _ in spans]
    assert max(overlap) == 2
    junit = ET.parse(out / "junit.xml").getroot()
    suites = {s.get("name"): s for s in junit.findall("testsuite")}
    assert set(suites) == set(rows) | {"left-out"}
    assert suites["qemu-aquila~trixie~needs"].get("failures") != "0"
    assert all(suites[cid].get("failures") == "0" for cid in rows if cid != "qemu-aquila~trixie~needs")


@pytest.mark.emulated
def test_sigterm_stops_the_matrix_and_its_running_cell_with_exit_143(tmp_path: Path) -> None:
    # A CI job's timeout: the matrix passes the signal on to its running cell, which powers its board off and
    # writes its report; the summary says the matrix was interrupted; 143 = 128 + SIGTERM, which no rack retries.
    out = tmp_path / "m"
    proc = subprocess.Popen([sys.executable, "-m", "cma_tool", "matrix", "--board", "boards/qemu-aquila.yaml",
                             "--out", str(out)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 120
    booting = None
    while time.monotonic() < deadline and booting is None:
        for report in out.glob("**/report.json"):
            try:
                if any(s["stage"] == "boot" for s in json.loads(report.read_text()).get("stages", [])):
                    booting = report
            except (OSError, ValueError):  # being replaced this instant
                pass
        time.sleep(0.05)
    assert booting is not None, "the cell never reached its boot"
    proc.send_signal(15)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stdout + stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdict"] == "interrupted"
    cell = json.loads(booting.read_text())
    assert cell["verdict"] == "interrupted" and cell["stage"] == "end"
    leftover = subprocess.run(["pgrep", "-f", f"qemu-system-arm.*{booting.parent}"], capture_output=True, check=False)
    assert leftover.stdout == b""  # the cell's QEMU is gone with it
