"""Read a recorded emulated-board run (tests/data/kernel-traces/<name>/) into model inputs.

The /reserved-memory fragment goes through the real dtc and is read back with
pylibfdt, so the model sees the nodes the kernel saw. The capture plan becomes
steps following firmware/capture/capture.c's documented order: streams one
after the other (set up, capture, tear down), or with --together all set up
first and torn down in reverse; REQBUFS(0) frees buffers 0..N-1.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import libfdt

from cma_tool.model import Bank, BootInput, Device, Event, ReservedNode, parse_trace_line
from cma_tool.model.scenario import CaptureStep, ReleaseCaptureStep, Step
from cma_tool.model.simulate import ModelRun

TRACES = Path(__file__).resolve().parent.parent / "data" / "kernel-traces"


def recorded_runs() -> list[Path]:
    return sorted(p for p in TRACES.glob("*/") if (p / "trace.txt").is_file())


@dataclass(frozen=True)
class Recorded:
    name: str
    boot_input: BootInput
    steps: tuple[Step, ...]
    devices: dict[str, Device]
    events: tuple[Event, ...]
    dmesg: tuple[str, ...]  # without the "[    0.000000] " stamps
    meminfo_boot: dict[str, int]
    vmstat: dict[str, int]
    reqbufs_free_kb: tuple[tuple[str, int], ...]  # (device, CmaFree after REQBUFS) in order
    kernel_config: dict[str, int]


def _words(data: bytes) -> list[int]:
    return [int.from_bytes(data[i : i + 4], "big") for i in range(0, len(data), 4)]


def _number(words: list[int]) -> int:
    value = 0
    for w in words:
        value = (value << 32) | w
    return value


def _pairs(data: bytes, addr_cells: int, size_cells: int) -> list[tuple[int, int]]:
    words = _words(data)
    step = addr_cells + size_cells
    return [(_number(words[i : i + addr_cells]), _number(words[i + addr_cells : i + step])) for i in range(0, len(words), step)]


def reserved_nodes(dts_fragment: str) -> tuple[ReservedNode, ...]:
    if "reserved-memory" not in dts_fragment:
        return ()
    if shutil.which("dtc") is None:
        raise RuntimeError("dtc is not installed")
    source = "/dts-v1/;\n/ {\n#address-cells = <2>;\n#size-cells = <2>;\n" + dts_fragment + "\n};\n"
    done = subprocess.run(["dtc", "-I", "dts", "-O", "dtb", "-"], input=source.encode(), capture_output=True, check=True)
    fdt = libfdt.Fdt(done.stdout)
    parent = fdt.path_offset("/reserved-memory", (libfdt.NOTFOUND,))
    if parent < 0:
        return ()  # the fragment only mentions the node, e.g. in a comment
    addr_cells = _number(_words(bytes(fdt.getprop(parent, "#address-cells"))))
    size_cells = _number(_words(bytes(fdt.getprop(parent, "#size-cells"))))
    quiet = (libfdt.NOTFOUND,)
    nodes = []
    child = fdt.first_subnode(parent, quiet)
    while child >= 0:

        def prop(name: str, node: int = child) -> bytes | None:
            value = fdt.getprop(node, name, quiet)
            return None if isinstance(value, int) else bytes(value)

        reg = prop("reg")
        size = prop("size")
        alignment = prop("alignment")
        ranges = prop("alloc-ranges")
        compatible = prop("compatible")
        nodes.append(
            ReservedNode(
                name=fdt.get_name(child),
                reg=_pairs(reg, addr_cells, size_cells)[0] if reg is not None else None,
                size=_number(_words(size)) if size is not None else None,
                alignment=_number(_words(alignment)) if alignment is not None else None,
                alloc_ranges=tuple(_pairs(ranges, addr_cells, size_cells)) if ranges is not None else (),
                compatible=compatible.split(b"\0")[0].decode() if compatible else "",
                reusable=prop("reusable") is not None,
                no_map=prop("no-map") is not None,
                cma_default=prop("linux,cma-default") is not None,
            )
        )
        child = fdt.next_subnode(child, quiet)
    return tuple(nodes)


def _streams(args: list[str]) -> tuple[bool, list[dict[str, str]]]:
    together = False
    streams: list[dict[str, str]] = [{}]
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--together":
            together = True
        elif arg == "--stream":
            if streams[-1]:
                streams.append({})
        elif arg == "--hold":
            streams[-1]["hold"] = "1"
        else:
            streams[-1][arg.removeprefix("--")] = args[i + 1]
            i += 1
        i += 1
    return together, streams


def capture_steps(plan: list[str]) -> tuple[tuple[Step, ...], dict[str, Device]]:
    together, streams = _streams(plan)
    steps: list[Step] = []
    devices: dict[str, Device] = {}
    held: list[str] = []
    for s in streams:
        dev = s.get("device", "/dev/video0")
        devices[dev] = Device(dev)  # vivid has no DT node: always the default area
        steps.append(CaptureStep(dev, int(s["width"]), int(s["height"]), s["format"], int(s["buffers"])))
        if together or s.get("hold"):
            held.append(dev)
        else:
            steps.append(ReleaseCaptureStep(dev))
    steps.extend(ReleaseCaptureStep(dev) for dev in reversed(held))
    return tuple(steps), devices


def plan_steps(text: str) -> tuple[tuple[Step, ...], dict[str, Device]]:
    """The agent plan's starts and releases as model steps, one model device per stream (vivid: the default area)."""
    from cma_tool.deploy.agent import Release, Start, parse_plan

    plan = parse_plan(text)
    specs = {s.label: s for s in plan.streams}
    steps: list[Step] = []
    held: list[str] = []
    for step in plan.steps:
        if isinstance(step, Start):
            spec = specs[step.label]
            steps.append(CaptureStep(step.label, spec.width, spec.height, spec.pixel_format, step.buffers))
            held.append(step.label)
        elif isinstance(step, Release):
            steps.append(ReleaseCaptureStep(step.label))
            held.remove(step.label)
    steps.extend(ReleaseCaptureStep(label) for label in reversed(held))  # as the agent does at the end
    return tuple(steps), {label: Device(label) for label in specs}


def _kv(path: Path) -> dict[str, int]:
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^(\w+):?\s+(\d+)", line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


def load(folder: Path) -> Recorded:
    scenario = json.loads((folder / "scenario.json").read_text())
    banks = tuple(Bank(int(b["base"], 16), int(b["size"], 16)) for b in scenario["banks"])
    nodes = reserved_nodes((folder / "reserved-memory.dts").read_text())
    cmdline = (folder / "bootargs.txt").read_text().strip()
    if (folder / "agent-plan.txt").is_file():
        steps, devices = plan_steps((folder / "agent-plan.txt").read_text())
    else:  # recorded before the agent took a plan: the capture program's arguments
        steps, devices = capture_steps((folder / "capture-plan.txt").read_text().split())
    events = tuple(ev for line in (folder / "trace.txt").read_text().splitlines() if (ev := parse_trace_line(line)) is not None)
    dmesg = tuple(re.sub(r"^\[\s*[\d.]+\]\s", "", line) for line in (folder / "dmesg.txt").read_text().splitlines())
    reqbufs = []
    for line in (folder / "capture.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("event") == "reqbufs" and rec.get("asked", 0) > 0:
            reqbufs.append((rec["label"], int(rec["cma_free_kb"])))
    return Recorded(
        name=folder.name,
        boot_input=BootInput(banks, nodes=nodes, cmdline=cmdline),
        steps=steps,
        devices=devices,
        events=events,
        dmesg=dmesg,
        meminfo_boot=_kv(folder / "meminfo-boot.txt"),
        vmstat=_kv(folder / "vmstat.txt"),
        reqbufs_free_kb=tuple(reqbufs),
        kernel_config={k: int(v) for k, v in scenario.get("kernel_config", {}).items()},
    )


def assert_counters_match(run: ModelRun, rec: Recorded) -> None:
    """/proc/meminfo and /proc/vmstat as the kernel printed them, against the model's run.

    CmaFree is compared right after each REQBUFS only until the first release:
    after it the kernel's CmaFree reads low (freed pages wait on per-CPU lists).
    """
    assert run.boot.cma_total_kb == rec.meminfo_boot["CmaTotal"]
    assert run.boot.new_state().cma_free_kb == rec.meminfo_boot["CmaFree"]  # after the atomic pool
    # /proc/vmstat counts every cma_alloc, the boot-time pool included (5.12 on; 5.10 has no such lines).
    if run.profile.facts.vmstat_counts_allocations:
        assert run.counters["vmstat"]["cma_alloc_success"] == rec.vmstat["cma_alloc_success"]
        assert run.counters["vmstat"]["cma_alloc_fail"] == rec.vmstat["cma_alloc_fail"]
    else:
        assert "cma_alloc_success" not in rec.vmstat and "cma_alloc_fail" not in rec.vmstat
    released = False
    captures = iter(rec.reqbufs_free_kb)
    for record in run.steps:
        if isinstance(record.step, ReleaseCaptureStep):
            released = True
        elif isinstance(record.step, CaptureStep):
            _label, free_kb = next(captures)
            if not released:
                assert record.cma_free_kb == free_kb
