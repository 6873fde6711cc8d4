"""The cross-check against real kernel output recorded on the emulated board.

Each folder of tests/data/kernel-traces holds what the real 6.1 armmp kernel
printed for one scenario (recorded by its record.py). The board files in
tests/run/boards describe the same layouts; observe + model + check must agree
with every recorded event, and a model told a wrong base must name the pfn.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cma_tool import model as cma_model
from cma_tool.captures import from_board
from cma_tool.check import Check, cross_check
from cma_tool.observe import observe
from cma_tool.plan import make_plan

HERE = Path(__file__).parent
TRACES = HERE.parent / "data" / "kernel-traces"
SCENARIOS = ["a-reference-dt-cma", "b-kconfig-default-16m", "c-cmdline-overrides-dt",
             "d-aquila-two-streams", "e-dt-12m-refused", "f-two-dynamic-nodes", "g-three-dynamic-nodes"]


def _cross_check(name: str, pins: tuple[tuple[str, int], ...] = ()) -> list[Check]:
    # (e) is invalid on purpose: the kernel refuses its 12 MiB node, and that is what it checks.
    plan = make_plan(HERE / "boards" / f"{name}.yaml", allow_misfit=True, allow_errors=name.startswith("e-"))
    obs = observe((TRACES / name / "console.log").read_text(errors="replace"))
    # The recordings labelled their streams s0, s1, ... in board order.
    devices = from_board(plan.board).model_devices(plan.board)
    relabelled = {f"s{i}": cma_model.Device(f"s{i}", d.area) for i, d in enumerate(devices.values())}
    bootargs = (TRACES / name / "bootargs.txt").read_text().strip()
    checks, _ = cross_check(plan, bootargs, obs, relabelled, pins, intended_cmdline=bootargs)
    return checks


@pytest.mark.parametrize("name", SCENARIOS)
def test_model_matches_real_kernel(name: str) -> None:
    checks = _cross_check(name)
    failed = [f"{c.name}: expected {c.expected} / observed {c.observed} ({c.cause})" for c in checks if not c.passed]
    assert not failed, "\n".join(failed)
    assert sum(1 for c in checks if c.group == "events") >= 4


def test_observed_facts_of_the_reference_run() -> None:
    obs = observe((TRACES / "a-reference-dt-cma" / "console.log").read_text(errors="replace"))
    # From emulated-board.md: the DT default at 0x6c000000 (64 MiB) and the static pool.
    assert [(a.name, a.base, a.size) for a in obs.areas] == [
        ("linux,cma", 0x6C000000, 64 << 20), ("vidpool@4c000000", 0x4C000000, 32 << 20)]
    assert obs.meminfo_boot["CmaTotal"] == 98304
    assert obs.events[1].pfn == 0x6C000 and obs.events[1].count == 64  # the atomic pool, first
    assert obs.events[3].pfn == 0x6C100 and obs.events[3].count == 1013


def test_exhaustion_is_predicted_and_observed() -> None:
    checks = _cross_check("b-kconfig-default-16m")
    finish = [c for c in checks if c.name.endswith("alloc_finish")]
    # 16 MiB = 4096 pages; pool 64 + three 1013-page buffers on 1024-page steps; the 4th has no room.
    assert "pfn=0xffffffff" in finish[-1].observed and finish[-1].passed
    granted = [c for c in checks if c.name.startswith("REQBUFS")]
    assert granted[0].expected == "3" and granted[0].passed


def test_wrong_model_base_is_a_mismatch_naming_the_pfn() -> None:
    # Tell the model the default area sits 8 MiB lower than the kernel put it.
    checks = _cross_check("a-reference-dt-cma", pins=(("linux,cma", 0x6B800000),))
    failed = [c for c in checks if not c.passed]
    assert failed
    event_fails = [c for c in failed if c.group == "events"]
    assert "pfn=0x6b800" in event_fails[0].expected and "pfn=0x6c000" in event_fails[0].observed
    assert any("off by the same" in c.cause or "base differs" in c.cause for c in failed)


def test_cmafree_drops_are_the_pages_taken() -> None:
    checks = {c.name: c for c in _cross_check("d-aquila-two-streams")}
    # 3 x 338 pages x 4 KiB = 4056 kB; 4 x 150 pages x 4 KiB = 2400 kB (the kernel's own readings)
    assert checks["CmaFree drop at REQBUFS s0"].observed == "4056 kB" and checks["CmaFree drop at REQBUFS s0"].passed
    assert checks["CmaFree drop at REQBUFS s1"].observed == "2400 kB" and checks["CmaFree drop at REQBUFS s1"].passed
