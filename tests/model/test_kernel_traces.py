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

from .recorded import assert_counters_match, load, recorded_runs

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

    assert_counters_match(run, rec)
