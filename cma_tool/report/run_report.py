"""The run's verdict for people (a summary table), lab CI (JUnit XML) and machines (JSON)."""

from __future__ import annotations

import io
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cma_tool.check import Check


def write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file and rename: a reader (or a crash) never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def junit_testsuite(checks: Sequence[Check], *, suite: str, error: tuple[str, str] | None = None,
                    seconds: float = 0.0, timestamp: str = "", hostname: str = "",
                    properties: dict[str, str] | None = None, system_out: str = "") -> ET.Element:
    """One testsuite: a testcase per check (named by its id), or one errored testcase for a run that died.

    ``properties`` (board, kernel, scenario, target, ...) and ``system_out``
    (the console's tail) are what a CI page shows next to the verdict.
    """
    failures = sum(1 for c in checks if not c.passed)
    attrs = {"name": suite, "tests": str(len(checks) + (1 if error else 0)), "failures": str(failures),
             "errors": "1" if error else "0", "time": f"{seconds:.3f}"}
    if timestamp:
        attrs["timestamp"] = timestamp
    if hostname:
        attrs["hostname"] = hostname
    ts = ET.Element("testsuite", attrs)
    if properties:
        props = ET.SubElement(ts, "properties")
        for key, value in properties.items():
            ET.SubElement(props, "property", name=key, value=value)
    for c in checks:
        # The id, not the name: CI history keys on the testcase name, and the id is the same in every run.
        tc = ET.SubElement(ts, "testcase", classname=f"{suite}.{c.group}", name=c.id)
        if not c.passed:
            f = ET.SubElement(tc, "failure", message=c.cause or "mismatch", type="mismatch")
            f.text = f"{c.name}\nexpected: {c.expected}\nobserved: {c.observed}\ncause: {c.cause}"
    if error:
        kind, message = error
        tc = ET.SubElement(ts, "testcase", classname=f"{suite}.run", name="run")
        e = ET.SubElement(tc, "error", message=message, type=kind)
        e.text = message
    if system_out:
        ET.SubElement(ts, "system-out").text = _xml_safe(system_out)
    return ts


def _xml_safe(text: str) -> str:
    """A console carries control bytes XML 1.0 cannot hold; they are shown as \\xNN."""
    return "".join(ch if ch in "\t\n\r" or ord(ch) >= 0x20 and ch not in "\ufffe\uffff" else f"\\x{ord(ch):02x}"
                   for ch in text)


def junit_document(suites: Sequence[ET.Element]) -> str:
    root = ET.Element("testsuites")
    root.extend(suites)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def junit_xml(checks: Sequence[Check], *, suite: str, error: tuple[str, str] | None = None,
              seconds: float = 0.0) -> str:
    """One run's JUnit document without the run's facts (see :func:`junit_testsuite` for those)."""
    return junit_document([junit_testsuite(checks, suite=suite, error=error, seconds=seconds)])


def summary_table(report: dict[str, Any], checks: Sequence[Check], width: int = 130) -> str:
    # rich is imported here, not with the module: only the terminal table needs it.
    from rich.console import Console
    from rich.table import Table

    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, highlight=False)
    groups: dict[str, list[Check]] = {}
    for c in checks:
        groups.setdefault(c.group, []).append(c)
    console.print(f"cma-tool {report.get('command', 'run')}: {report.get('board')} on {report.get('target')} "
                  f"({report.get('seconds', 0):.1f} s)", markup=False)
    areas = [c for c in checks if c.group == "boot"]
    if areas:
        at = Table(title="CMA areas", title_justify="left")
        for col in ("area", "model", "kernel", ""):
            at.add_column(col)
        for c in areas:
            at.add_row(c.name.removeprefix("area "), c.expected, c.observed, "ok" if c.passed else "MISMATCH")
        console.print(at)
    events = [c for c in checks if c.group == "events"]
    if events:
        et = Table(title="CMA events (kernel tracepoints vs model)", title_justify="left")
        for col in ("#", "kernel", ""):
            et.add_column(col, overflow="fold")
        for i, c in enumerate(events, 1):
            et.add_row(str(i), c.observed, "ok" if c.passed else f"model: {c.expected}")
        console.print(et)
    table = Table(title="checks", title_justify="left")
    for col in ("group", "checks", "passed", "failed"):
        table.add_column(col)
    for group, items in groups.items():
        failed = sum(1 for c in items if not c.passed)
        table.add_row(group, str(len(items)), str(len(items) - failed), str(failed))
    console.print(table)
    bad = [c for c in checks if not c.passed]
    if bad:
        detail = Table(title="mismatches", title_justify="left")
        for col in ("check", "expected (model)", "observed (kernel)", "likely cause"):
            detail.add_column(col, overflow="fold")
        for c in bad[:40]:
            detail.add_row(c.name, c.expected, c.observed, c.cause)
        console.print(detail)
        if len(bad) > 40:
            console.print(f"... and {len(bad) - 40} more in report.json")
    console.print(f"verdict: {report.get('verdict')}  ({report.get('message', '')})", markup=False)
    return out.getvalue().rstrip("\n")


def report_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, default=str)
