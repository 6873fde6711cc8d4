"""Scenarios on a shared boot give the same events and verdicts as one boot each; a spoilt boot is not reused.

The same three cells run twice on the emulated Aquila: each as its own
`cma-tool run`, and together through `python3 -m cma_tool.shared_boot` (what
`cma-tool matrix` runs for cells of one board, kernel and command line).
The second cell is a negative control (the model told the default area sits
at 0x60000000): its mismatch must end the shared boot, so the third cell
boots afresh. The pfns are the ones worked out by hand in
configs/requests/one-after-another.yaml and tests/e2e/expect.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.expect import assert_aquila_1080p_events

ROOT = Path(__file__).parents[2]
BOARD = "boards/qemu-aquila.yaml"
ONE_AFTER_ANOTHER = "configs/requests/one-after-another.yaml"
PIN = "linux,cma=0x60000000"
pytestmark = [pytest.mark.emulated, pytest.mark.slow]


def single(out: Path, *extra: str) -> dict[str, Any]:
    subprocess.run([sys.executable, "-m", "cma_tool", "run", BOARD, "--out", str(out), *extra], cwd=ROOT,
                   capture_output=True, text=True, timeout=300, check=False)
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    return report


def finishes(report: dict[str, Any]) -> list[str]:
    return [e.split()[2] for e in report["observed"]["events"] if e.startswith("cma_alloc_finish")]


def test_shared_boots_match_one_boot_each_and_a_mismatch_ends_its_boot(tmp_path: Path) -> None:
    cells = {"needs": ("needs", []), "pinned": ("needs", [PIN]), "oaa": (ONE_AFTER_ANOTHER, [])}
    argv = [sys.executable, "-m", "cma_tool.shared_boot", BOARD, "--boots", str(tmp_path / "boots")]
    for name, (scenario, pins) in cells.items():
        argv += ["--cell", f"{tmp_path / 'shared' / name}={scenario}"]
        argv += [a for pin in pins for a in ("--pin", f"{tmp_path / 'shared' / name}={pin}")]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    shared = dict(zip(cells, json.loads(done.stdout), strict=True))

    alone = {name: single(tmp_path / "alone" / name, *(["--scenario", s] if s != "needs" else []),
                          *[a for pin in pins for a in ("--model-pin", pin)])
             for name, (s, pins) in cells.items()}

    for name in cells:
        one, many = alone[name], shared[name]
        assert (many["verdict"], many["exit_code"]) == (one["verdict"], one["exit_code"]), name
        # The kernel did the same on the shared boot as on a boot of its own, event for event,
        # and the model said the same.
        assert many["observed"]["events"] == one["observed"]["events"], name
        assert many["prediction"]["events"] == one["prediction"]["events"], name
        assert many["boot"] == "shared" and one["boot"] == "direct"
    assert_aquila_1080p_events(shared["needs"])
    assert finishes(shared["oaa"])[-5:] == ["pfn=0x64100", "pfn=0x64500", "pfn=0x64100", "pfn=0x64300",
                                            "pfn=0x64500"]
    assert shared["pinned"]["verdict"] == "mismatch"

    def boot_of(report: dict[str, Any]) -> tuple[str, int]:
        stage = next(s for s in report["stages"] if s["stage"] == "boot")
        return Path(stage["shared_boot"]).name, int(stage["step"])

    # needs and the negative control on boot 1 (steps 1, 2); the mismatch spoilt it, so boot 2 for the last.
    assert [boot_of(shared[n]) for n in cells] == [("boot-1", 1), ("boot-1", 2), ("boot-2", 1)]
    for name in cells:
        folder = tmp_path / "shared" / name
        assert {"plan.json", "schedule.json", "agent-plan.txt", "predicted.json", "console.log", "observed.json",
                "report.json", "report.html", "junit.xml"} <= {p.name for p in folder.iterdir()}, name
