"""Every fault of the matrix (tests/faults/matrix.py) is classified, in time, with its bytes and a whole report.

The expectations are the lab's rules, not what the tool printed: a fault of
the link or the lab (TFTP, a damaged transfer, bytes lost, a power switch,
QEMU) is infrastructure, exit 3, which a rack retries; a fault of the board
(a reset, a hang, a panic, a boot loop) is the target's, exit 4; neither is
ever a model/kernel mismatch (exit 5); line noise outside the agent's
sections and a console that comes back with nothing lost change nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.matrix import FAULTS, Fault, run_fault

VERDICT_OF_EXIT = {0: "pass", 3: "infrastructure", 4: "target"}


def _marks(fault: Fault) -> list[pytest.MarkDecorator]:
    return [pytest.mark.slow] + ([pytest.mark.emulated] if fault.emulated else [])


@pytest.mark.parametrize("fault", [pytest.param(f, id=f.name.replace(" ", "-"), marks=_marks(f)) for f in FAULTS])
def test_the_fault_is_classified_in_time_with_its_bytes_and_a_whole_report(fault: Fault, tmp_path: Path) -> None:
    got = run_fault(fault, tmp_path)
    rep = got.report
    assert got.exit_code == fault.exit_code, (got.exit_code, rep.get("message"), got.stderr[-2000:])
    assert rep["verdict"] == VERDICT_OF_EXIT[fault.exit_code] and rep["exit_code"] == fault.exit_code
    assert rep["stage"] == "end" and rep["stages"][-1]["stage"] == "end"  # the report was finished, not left running
    assert fault.says in rep["message"], rep["message"]
    assert fault.shows in got.console, "console.log keeps the bytes that show the fault"
    assert "Traceback" not in got.stderr
    # Said within the run's timeout, counted from the moment the fault struck.
    assert 0 <= got.detect_seconds <= fault.timeout + 2, got.detect_seconds
    assert not got.leftovers, got.leftovers  # the board switched off, no QEMU left behind
    if fault.during is not None:
        # The console really went away and came back during the run.
        assert "reconnected" in got.console_events and any(e.startswith("port lost") for e in got.console_events)
