"""Run reports: JUnit XML a CI server reads, JSON written atomically."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from cma_tool.check import Check
from cma_tool.report.run_report import junit_xml, report_json, summary_table, write_atomic


def test_junit_one_testcase_per_check_with_failure_details() -> None:
    checks = [Check("boot", "area linux,cma", True, "a", "a", about="area/linux,cma"),
              Check("events", "event 002 alloc_finish", False, "pfn=0x64000", "pfn=0x6c000", "base differs",
                    about="linux,cma/alloc_finish#1")]
    root = ET.fromstring(junit_xml(checks, suite="cma-tool.qemu-aquila", seconds=6.5))
    suite = root.find("testsuite")
    assert suite is not None and suite.get("tests") == "2" and suite.get("failures") == "1"
    cases = suite.findall("testcase")
    # Named by id (group/what it is about): the name a CI history keys on stays the same run after run.
    assert [c.get("name") for c in cases] == ["boot/area/linux,cma", "events/linux,cma/alloc_finish#1"]
    failure = cases[1].find("failure")
    assert failure is not None and failure.get("message") == "base differs"
    assert "expected: pfn=0x64000" in (failure.text or "") and "observed: pfn=0x6c000" in (failure.text or "")


def test_junit_for_a_run_that_died_has_an_error_case() -> None:
    root = ET.fromstring(junit_xml([], suite="s", error=("infrastructure", "QEMU exited early")))
    suite = root.find("testsuite")
    assert suite is not None and suite.get("errors") == "1"
    err = suite.find("testcase/error")
    assert err is not None and err.get("type") == "infrastructure"


def test_write_atomic_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "report.json"
    write_atomic(target, report_json({"verdict": "running"}))
    write_atomic(target, report_json({"verdict": "pass"}))
    assert json.loads(target.read_text())["verdict"] == "pass"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_summary_names_the_mismatch() -> None:
    checks = [Check("events", "event 002 alloc_finish", False, "pfn=0x64000", "pfn=0x6c000", "base differs")]
    text = summary_table({"board": "b", "target": "emulated", "verdict": "mismatch", "message": "1 of 1"}, checks)
    assert "pfn=0x6c000" in text and "base differs" in text and "verdict: mismatch" in text
