"""`cma-tool report` and the run's page writing, without a board: bad folders, and a page that cannot be drawn."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cma_tool.report import html
from cma_tool.run import RunOptions, execute

ROOT = Path(__file__).parents[2]


def _report(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cma_tool", "report", *args], cwd=ROOT, capture_output=True,
                          text=True, check=False)


def test_a_folder_without_report_json_is_refused_by_name(tmp_path: Path) -> None:
    done = _report(str(tmp_path))
    assert done.returncode == 1
    assert f"{tmp_path}: not a run folder: it has no report.json" in done.stderr and "Traceback" not in done.stderr
    missing = tmp_path / "nope"
    done = _report(str(missing))
    assert done.returncode == 1 and f"{missing}: no such folder" in done.stderr
    (tmp_path / "report.json").write_text("{not json")
    done = _report(str(tmp_path))
    assert done.returncode == 1 and "report.json: not a run report" in done.stderr and "Traceback" not in done.stderr


def test_a_run_that_failed_before_its_plan_still_leaves_a_page(tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, report, _ = execute(RunOptions(board=tmp_path / "no-board.yaml", out=out), say=lambda _: None)
    assert code == 1 and report["verdict"] == "configuration"
    text = (out / "report.html").read_text()
    assert "! CONFIGURATION" in text and "no-board.yaml" in text
    assert "No CMA area is known" in text and "No console.log" in text


def test_a_page_that_cannot_be_drawn_never_changes_the_verdict(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("an old run's page")

    def broken(run: html.RunFiles) -> str:
        raise RuntimeError("boom")

    monkeypatch.setattr(html, "render_report", broken)
    said: list[str] = []
    code, report, _ = execute(RunOptions(board=tmp_path / "no-board.yaml", out=out), say=said.append)
    assert code == 1 and report["verdict"] == "configuration"  # the run's own result, untouched
    assert report["message"].endswith("(report.html was not written: a bug in cma-tool: RuntimeError: boom)")
    assert json.loads((out / "report.json").read_text())["message"] == report["message"]
    assert said[-1].endswith("] report.html was not written: a bug in cma-tool: RuntimeError: boom")  # after its time
    assert not (out / "report.html").exists(), "an old page would pass for this run's"
