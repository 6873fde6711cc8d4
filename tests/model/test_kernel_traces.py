"""Replay every recorded run of the real 6.1 kernel through the model: event for event.

The recordings (tests/data/kernel-traces/, made by record.py there on the
emulated board) are the independent truth here: the model gets only what the
kernel got (banks, /reserved-memory, command line, kernel config, the capture
plan) and must reproduce the trace buffer, the boot log lines, CmaTotal,
CmaFree around allocations and the vmstat counters.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from cma_tool.model import KernelProfile, profile_with, simulate
from cma_tool.model.scenario import CaptureStep, ReleaseCaptureStep

from .recorded import load, recorded_runs

RUNS = recorded_runs()
pytestmark = pytest.mark.skipif(not RUNS, reason="no recorded kernel traces in tests/data/kernel-traces")


def _profile(config: dict[str, int]) -> KernelProfile:
    return profile_with(
        "linux-6.1",
        max_order=config.get("ARCH_FORCE_MAX_ORDER", 12),
        cma_size_mbytes=config.get("CMA_SIZE_MBYTES", 16),
        config_cma_areas=config.get("CMA_AREAS", 7),
        cma_alignment=config.get("CMA_ALIGNMENT", 8),
    )


@pytest.mark.parametrize("folder", RUNS, ids=[p.name for p in RUNS])
def test_replay_matches_kernel(folder: Path) -> None:
    rec = load(folder)
    run = simulate(_profile(rec.kernel_config), rec.boot_input, rec.steps, rec.devices)

    # Every tracepoint, in order, with the same fields (page hashes aside).
    assert list(run.events) == list(rec.events)

    # Each boot line the model predicts appears in the kernel log, in the same order.
    position = 0
    for line in run.boot.log:
        assert line in rec.dmesg[position:], f"{line!r} not in dmesg after line {position}"
        position = rec.dmesg.index(line, position) + 1

    # /proc/meminfo before the capture: CmaTotal, and CmaFree after the atomic pool.
    assert run.boot.cma_total_kb == rec.meminfo_boot["CmaTotal"]
    boot_state = run.boot.new_state()
    assert boot_state.cma_free_kb == rec.meminfo_boot["CmaFree"]

    # /proc/vmstat counts every cma_alloc, the boot-time pool included.
    assert run.counters["vmstat"]["cma_alloc_success"] == rec.vmstat["cma_alloc_success"]
    assert run.counters["vmstat"]["cma_alloc_fail"] == rec.vmstat["cma_alloc_fail"]

    # CmaFree right after each REQBUFS, as long as nothing was released before it
    # (after a release the kernel's CmaFree reads low: pages on per-CPU lists).
    released = False
    captures = iter(rec.reqbufs_free_kb)
    for record in run.steps:
        if isinstance(record.step, ReleaseCaptureStep):
            released = True
        elif isinstance(record.step, CaptureStep):
            _label, free_kb = next(captures)
            if not released:
                assert record.cma_free_kb == free_kb
