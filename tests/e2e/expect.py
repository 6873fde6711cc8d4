"""What every way onto the emulated Aquila must show: the same artefacts, the same kernel events.

The events are the kernel's rules worked out by hand for boards/qemu-aquila.yaml
(and every board with its layout: the simulated bench Aquila replays a run of
its emulated twin), never an earlier run's output:

- the 64 MiB default node lands top-down at 0x64000000 (bank 1 ends at
  0x68000000, the CMA unit is 8 MiB on Debian's armmp kernel): pfn 0x64000;
- the atomic pool takes 64 pages at the area's base (align 6: 256 KiB);
- 1920x1080 YUYV is 4147200 bytes, 1013 pages, aligned to 256 pages (order
  10 capped at CONFIG_CMA_ALIGNMENT 8): first fit puts four of them at
  0x64100, 0x64500, 0x64900, 0x64d00; REQBUFS 0 releases all four.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: What every run writes, whatever the way onto the board.
ARTEFACTS = ("plan.json", "schedule.json", "agent-plan.txt", "predicted.json", "console.log", "observed.json",
             "report.html",
             "report.json")
#: The stages a run reports once the board has been reached (any of them marks "the board was touched").
BOARD_STAGES = ("boot", "console", "ssh")

AQUILA_POOL = ["cma_alloc_start: name=linux,cma count=64 align=6",
               "cma_alloc_finish: name=linux,cma pfn=0x64000 page=(ptrval) count=64 align=6"]
AQUILA_1080P_PFNS = ["pfn=0x64100", "pfn=0x64500", "pfn=0x64900", "pfn=0x64d00"]


def report(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "report.json").read_text())
    return data


def assert_same_artefacts(out: Path) -> dict[str, Any]:
    """Every artefact is there, and the prediction was written before the board was touched."""
    rep = report(out)
    missing = [name for name in ARTEFACTS if not (out / name).is_file()]
    assert not missing, f"missing artefacts: {missing}"
    stages = [s["stage"] for s in rep["stages"]]
    first_board_stage = min(stages.index(s) for s in BOARD_STAGES if s in stages)
    assert stages.index("prepare") < first_board_stage, stages
    assert stages[-3:] == ["observe", "check", "end"], stages
    predicted = json.loads((out / "predicted.json").read_text())
    assert predicted["events"], "the prediction made before the boot has events"
    return rep


def assert_aquila_1080p_events(rep: dict[str, Any], *, traced_at_boot: bool = True) -> None:
    """The emulated Aquila's default capture: the pool, four 1080p YUYV buffers, four releases."""
    observed = list(rep["observed"]["events"])
    if traced_at_boot:
        assert observed[:2] == AQUILA_POOL
    finishes = [e for e in observed if e.startswith("cma_alloc_finish") and "count=1013" in e]
    assert [e.split()[2] for e in finishes] == AQUILA_1080P_PFNS
    assert sum(1 for e in observed if e.startswith("cma_release")) == 4
    assert rep["verdict"] == "pass", rep.get("message")
    assert rep["prediction"]["events"] == rep["observed"]["events"]
