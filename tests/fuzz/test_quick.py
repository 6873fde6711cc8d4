"""The quick fuzz tier, in the README's test command: a few hundred inputs per class, none may crash the tool.

Structure-aware inputs (tests/fuzz/classes.py) through the CLI's own code
paths, in process; every outcome must be one the tool documents (a clear
error is fine), never an internal error (exit 70, or an exception escaping)
nor a hang. The long tier, 10,000 inputs per class with a table:
``python3 -m tests.fuzz.long``. Failures hypothesis finds are kept in
tests/fuzz/examples (committed) and tried first on every run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

from tests.fuzz.classes import CLASSES
from tests.fuzz.harness import judge

EXAMPLES = DirectoryBasedExampleDatabase(str(Path(__file__).with_name("examples")))
QUICK = settings(max_examples=150, deadline=None, database=EXAMPLES, suppress_health_check=list(HealthCheck))


def _no_crash(name: str, data: st.DataObject) -> None:
    cls = CLASSES[name]
    value: Any = data.draw(cls.strategy)
    outcome = judge(cls, value)
    assert not outcome.bad, f"{outcome.kind} after {outcome.seconds:.2f} s: {outcome.detail}\ninput: {value!r:.400}"


# One test per class, so each keeps its own failures in the example database.
@QUICK
@given(st.data())
def test_no_board_file_crashes_the_tool(data: st.DataObject) -> None:
    _no_crash("board", data)


@QUICK
@given(st.data())
def test_no_scenario_crashes_the_tool(data: st.DataObject) -> None:
    _no_crash("scenario", data)


@QUICK
@given(st.data())
def test_no_command_line_crashes_the_model(data: st.DataObject) -> None:
    _no_crash("bootargs", data)


@QUICK
@given(st.data())
def test_no_damaged_dtb_crashes_the_tool(data: st.DataObject) -> None:
    _no_crash("dtb", data)


@QUICK
@given(st.data())
def test_no_console_a_board_prints_crashes_the_check(data: st.DataObject) -> None:
    _no_crash("console", data)


@QUICK
@given(st.data())
def test_no_agent_output_however_odd_crashes_the_check(data: st.DataObject) -> None:
    _no_crash("agent", data)


@QUICK
@given(st.data())
def test_no_atag_list_crashes_the_reader(data: st.DataObject) -> None:
    _no_crash("atags", data)


@QUICK
@given(st.data())
def test_no_uboot_environment_crashes_the_reader(data: st.DataObject) -> None:
    _no_crash("ubootenv", data)


def test_every_class_has_its_quick_test() -> None:
    assert set(CLASSES) == {"board", "scenario", "bootargs", "dtb", "console", "agent", "atags", "ubootenv"}
