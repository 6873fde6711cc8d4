"""Replay the recorded runs of Debian trixie's real 6.12 kernel through the model's linux-6.12 profile.

The recordings (tests/data/kernel-traces-6.12/, made by record.py there on
the emulated board with linux-image-6.12.117+deb13-armmp) are the
independent truth: the model gets only what the kernel got (banks,
/reserved-memory, command line, the kernel's own config, the capture plan)
and must reproduce the trace buffer event for event, the boot log lines in
their order, the allocation failure lines, CmaTotal, CmaFree around
allocations and the vmstat counters. Scenarios on which this kernel hangs
at boot are kept as console logs (booted with an early console) and
checked for the lines printed before it stopped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from cma_tool.model import PROFILES, Bank, BootInput, KernelProfile, boot, simulate
from cma_tool.model.profiles import profile_from_kconfig_max_order

from .recorded import TRACES, assert_counters_match, load, reserved_nodes

TRACES_612 = TRACES.parent / "kernel-traces-6.12"
RUNS = sorted(p for p in TRACES_612.glob("*/") if (p / "trace.txt").is_file())
HANGS = sorted(
    p
    for p in TRACES_612.glob("*/")
    if (p / "scenario.json").is_file() and json.loads((p / "scenario.json").read_text()).get("outcome") == "hang"
)
pytestmark = pytest.mark.skipif(not RUNS, reason="no recorded 6.12 kernel traces in tests/data/kernel-traces-6.12")

SZ_1M = 1 << 20


def _profile(config: dict[str, int]) -> KernelProfile:
    """linux-6.12 with the recorded kernel's config; ARCH_FORCE_MAX_ORDER as 6.12's .config spells it."""
    return profile_from_kconfig_max_order(
        "linux-6.12",
        config["ARCH_FORCE_MAX_ORDER"],
        cma_size_mbytes=config["CMA_SIZE_MBYTES"],
        config_cma_areas=config["CMA_AREAS"],
        cma_alignment=config["CMA_ALIGNMENT"],
    )


def _in_order(lines: Sequence[str], log: Sequence[str]) -> None:
    """Every line appears in ``log``, in the same order."""
    position = 0
    for line in lines:
        assert line in log[position:], f"{line!r} not in the kernel log after line {position}"
        position = log.index(line, position) + 1


def _console_lines(folder: Path) -> list[str]:
    text = (folder / "console.log").read_bytes().decode(errors="replace").replace("\r\n", "\n")
    return [re.sub(r"^\[\s*[\d.]+\]\s", "", line) for line in text.splitlines()]


@pytest.mark.parametrize("folder", RUNS, ids=[p.name for p in RUNS])
def test_replay_matches_kernel_612(folder: Path) -> None:
    rec = load(folder)
    run = simulate(_profile(rec.kernel_config), rec.boot_input, rec.steps, rec.devices)

    # Every tracepoint, in order, with the same fields (errorno included; page hashes aside).
    assert list(run.events) == list(rec.events)

    # The boot lines the model predicts, in the kernel's order: on 6.12 the
    # static pools' lines come after the default area's (see model/boot.py).
    _in_order(run.boot.log, rec.dmesg)

    # __cma_alloc's failure lines: the message and the free-run dump.
    _in_order([m for step in run.steps for m in step.messages], rec.dmesg)

    assert_counters_match(run, rec)


def test_bundled_profile_is_debians_612_build() -> None:
    # The linux-6.12 profile as shipped must be the recorded kernel's build:
    # its .config says ARCH_FORCE_MAX_ORDER=11 (MAX_PAGE_ORDER, inclusive),
    # so pageblocks and the CMA unit are 8 MiB, as on 6.1's "12".
    config = load(RUNS[0]).kernel_config
    assert _profile(config) == PROFILES["linux-6.12"]
    assert PROFILES["linux-6.12"].cma_min_bytes == 8 * SZ_1M
    assert PROFILES["linux-6.12"].area_slots == config["CMA_AREAS"]


def test_static_pools_are_initialised_after_the_default_area() -> None:
    # f: a static pool and a cmdline default area. 6.12 logs the default area
    # first and indexes it first; 6.1 does the opposite.
    folder = TRACES_612 / "f-static-pool-and-cmdline"
    if not (folder / "trace.txt").is_file():
        pytest.skip("f-static-pool-and-cmdline was not recorded")
    rec = load(folder)
    cma_line = "cma: Reserved 32 MiB at 0x6e000000 on node -1"
    pool_line = "Reserved memory: created CMA memory pool at 0x4c000000, size 32 MiB"
    assert rec.dmesg.index(cma_line) < rec.dmesg.index(pool_line)  # what the kernel did
    booted = boot(_profile(rec.kernel_config), rec.boot_input)
    assert booted.log.index(cma_line) < booted.log.index(pool_line)
    assert [a.name for a in booted.areas] == ["reserved", "vidpool@4c000000"]
    assert [a.name for a in boot(PROFILES["linux-6.1"], rec.boot_input).areas] == ["vidpool@4c000000", "reserved"]


@pytest.mark.parametrize("folder", HANGS, ids=[p.name for p in HANGS])
def test_hang_recordings_agree_up_to_where_the_kernel_stopped(folder: Path) -> None:
    scenario = json.loads((folder / "scenario.json").read_text())
    console = _console_lines(folder)
    last = scenario["last_line"]
    assert last and re.sub(r"^\[\s*[\d.]+\]\s", "", last) in console
    assert not any("Run /init" in line for line in console)  # it never got there
    nodes = reserved_nodes((folder / "reserved-memory.dts").read_text())
    banks = tuple(Bank(int(b["base"], 16), int(b["size"], 16)) for b in scenario["banks"])
    cmdline = (folder / "bootargs.txt").read_text().strip()
    booted = boot(_profile(scenario["kernel_config"]), BootInput(banks, nodes=nodes, cmdline=cmdline))
    # The model's lines up to the default area's reservation are the kernel's
    # last words, in order; the model warns that this layout stops 6.12.
    upto = next(i for i, line in enumerate(booted.log) if line.startswith("cma: Reserved"))
    _in_order(booted.log[: upto + 1], console)
    assert console[-1] == booted.log[upto]
    assert any(p.code == "failed-node-hang" for p in booted.problems)


def test_no_hang_warning_where_612_boots() -> None:
    for folder in RUNS:
        rec = load(folder)
        booted = boot(_profile(rec.kernel_config), rec.boot_input)
        assert not any(p.code == "failed-node-hang" for p in booted.problems), folder.name
