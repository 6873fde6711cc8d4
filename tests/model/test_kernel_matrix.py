"""Replay the recordings of every Debian kernel of the matrix through its profile: event for event.

tests/data/kernel-matrix/<kernel>/<scenario>/ were recorded by record.py there
on the emulated board (armhf and arm64) with Debian's own 5.10, 6.1 and 6.12
kernels. They are the independent truth: the model gets only what the kernel
got (banks, /reserved-memory, command line, the capture plan) and the profile
named after the kernel (whose build values the tool read from the package's
config), and must reproduce the trace buffer event for event, the boot log
lines in order, the allocation failure lines, CmaTotal, CmaFree around
allocations and the vmstat counters. A scenario on which a kernel hangs at
boot is kept as its console log and checked up to where the kernel stopped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from cma_tool.model import PROFILES, Bank, BootInput, KernelProfile, boot, simulate
from cma_tool.model.profiles import DEBIAN_KERNELS

from .recorded import TRACES, assert_counters_match, load, reserved_nodes

MATRIX = TRACES.parent / "kernel-matrix"


def _folders(outcome: str) -> list[Path]:
    found = []
    for kernel in sorted(DEBIAN_KERNELS):
        for folder in sorted((MATRIX / kernel).glob("*/")):
            meta = folder / "scenario.json"
            if not meta.is_file():
                continue
            hang = json.loads(meta.read_text()).get("outcome") == "hang"
            if (outcome == "hang") == hang:
                found.append(folder)
    return found


RUNS = _folders("run")
HANGS = _folders("hang")


def _id(folder: Path) -> str:
    return f"{folder.parent.name}/{folder.name}"


def profile_of(folder: Path) -> KernelProfile:
    return PROFILES[DEBIAN_KERNELS[folder.parent.name].profile]


def _in_order(lines: Sequence[str], log: Sequence[str]) -> None:
    position = 0
    for line in lines:
        assert line in log[position:], f"{line!r} not in the kernel log after line {position}"
        position = log.index(line, position) + 1


def _build_values_match(profile: KernelProfile, config: dict[str, int]) -> None:
    """The bundled profile is the recorded kernel's build (the recorder read its /boot/config-*)."""
    assert config["CMA_SIZE_MBYTES"] == profile.cma_size_mbytes
    assert config["CMA_AREAS"] == profile.config_cma_areas
    assert config["CMA_ALIGNMENT"] == profile.cma_alignment
    assert config["ARCH_FORCE_MAX_ORDER"] == profile.max_order_as_written


@pytest.mark.parametrize("folder", RUNS, ids=[_id(p) for p in RUNS])
def test_replay_matches_the_kernel(folder: Path) -> None:
    rec = load(folder)
    profile = profile_of(folder)
    _build_values_match(profile, rec.kernel_config)
    run = simulate(profile, rec.boot_input, rec.steps, rec.devices)
    assert [e.text(profile) for e in run.events] == [e.text(profile) for e in rec.events]
    assert list(run.events) == list(rec.events)
    _in_order(run.boot.log, rec.dmesg)
    _in_order([m for step in run.steps for m in step.messages], rec.dmesg)
    assert_counters_match(run, rec)


def _console_lines(folder: Path) -> list[str]:
    text = (folder / "console.log").read_bytes().decode(errors="replace").replace("\r\n", "\n")
    return [re.sub(r"^\[\s*[\d.]+\]\s", "", line) for line in text.splitlines()]


@pytest.mark.parametrize("folder", HANGS, ids=[_id(p) for p in HANGS])
def test_hangs_agree_up_to_where_the_kernel_stopped(folder: Path) -> None:
    scenario = json.loads((folder / "scenario.json").read_text())
    console = _console_lines(folder)
    assert not any("Run /init" in line for line in console)  # it never got there
    nodes = reserved_nodes((folder / "reserved-memory.dts").read_text())
    banks = tuple(Bank(int(b["base"], 16), int(b["size"], 16)) for b in scenario["banks"])
    cmdline = (folder / "bootargs.txt").read_text().strip()
    booted = boot(profile_of(folder), BootInput(banks, nodes=nodes, cmdline=cmdline))
    upto = next(i for i, line in enumerate(booted.log) if line.startswith("cma: Reserved"))
    _in_order(booted.log[: upto + 1], console)
    assert console[-1] == booted.log[upto]
    assert any(p.code == "failed-node-hang" for p in booted.problems)
