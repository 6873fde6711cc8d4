"""The model end to end: boot a board, run a scenario's steps, record what the kernel would show."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

from cma_tool.errors import ConfigError, Diagnostic
from cma_tool.model.area import CmaState, errno_name
from cma_tool.model.boot import BootInput, BootResult, boot
from cma_tool.model.dma import Device, DmaBuffer, dma_alloc, dma_free
from cma_tool.model.events import Event
from cma_tool.model.profiles import PROFILES, KernelProfile
from cma_tool.model.scenario import (
    AllocStep,
    CaptureStep,
    DmaAllocStep,
    FreeStep,
    PinStep,
    ReleaseCaptureStep,
    Scenario,
    Step,
    UnpinStep,
    to_plain,
)
from cma_tool.sizes import format_size


@dataclass(frozen=True)
class StepRecord:
    """What one step did and what /proc showed after it."""

    index: int
    step: Step
    summary: str
    ok: bool
    events: tuple[Event, ...]
    messages: tuple[str, ...]
    cma_total_kb: int
    cma_free_kb: int
    counters: dict[str, Any]
    buffers: tuple[DmaBuffer, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "step": to_plain(self.step),
            "summary": self.summary,
            "ok": self.ok,
            "events": [e.to_json() for e in self.events],
            "messages": list(self.messages),
            "cma_total_kb": self.cma_total_kb,
            "cma_free_kb": self.cma_free_kb,
            "counters": self.counters,
            "buffers": [b.to_json() for b in self.buffers],
        }


@dataclass(frozen=True)
class ModelRun:
    profile: KernelProfile
    boot: BootResult
    steps: tuple[StepRecord, ...]
    #: Boot events then every step's events, in kernel order.
    events: tuple[Event, ...] = field(default=())

    @property
    def boot_lines(self) -> tuple[str, ...]:
        return self.boot.log

    @property
    def counters(self) -> dict[str, Any]:
        return self.steps[-1].counters if self.steps else {}

    def trace_lines(self) -> list[str]:
        return [e.text(self.profile) for e in self.events]

    def to_json(self) -> dict[str, Any]:
        return {
            "profile": self.profile.name,
            "boot": self.boot.to_json(),
            "steps": [s.to_json() for s in self.steps],
            "events": [e.to_json() for e in self.events],
            "trace": self.trace_lines() if self.profile.facts.has_tracepoints else [],
        }


class _Runner:
    def __init__(self, profile: KernelProfile, booted: BootResult, devices: Mapping[str, Device],
                 source: str = "") -> None:
        self.source = source  # the scenario file, when the caller knows it: errors then carry file:line
        self.profile = profile
        self.booted = booted
        self.devices = devices
        self.state: CmaState = booted.new_state()
        self.labels: dict[str, DmaBuffer | tuple[str, int, int]] = {}
        self.captures: dict[str, list[DmaBuffer]] = {}

    def device(self, name: str, line: int) -> Device:
        dev = self.devices.get(name)
        if dev is None:
            known = ", ".join(sorted(self.devices)) or "none"
            self._fail(line, f"no device named {name!r} on this board (devices: {known})",
                       "name a device the board describes")
        assert dev is not None
        return dev

    def area_name(self, name: str, line: int) -> str:
        if self.booted.area(name) is None:
            known = ", ".join(a.name for a in self.booted.areas) or "none"
            self._fail(line, f"no CMA area named {name!r} after boot (areas: {known})",
                       "the boot log says which areas the kernel created")
        return name

    def _fail(self, line: int, message: str, hint: str) -> NoReturn:
        if self.source:
            raise ConfigError(diagnostics=[Diagnostic(message, self.source, line, 0, "error", hint)])
        raise ConfigError(f"{_where(line)}{message}", hint=hint)

    def run(self, index: int, step: Step) -> StepRecord:
        events: list[Event] = []
        messages: list[str] = []
        buffers: list[DmaBuffer] = []
        ok = True
        summary: str
        if isinstance(step, CaptureStep):
            ok, summary = self._capture(step, events, messages, buffers)
        elif isinstance(step, ReleaseCaptureStep):
            freed = self._release_capture(step.device, events)
            summary = f"REQBUFS(0) on {step.device}: {freed} buffer(s) freed"
        elif isinstance(step, AllocStep):
            area = self.area_name(step.area, step.line)
            result = self.state.alloc(area, step.pages, step.align)
            events.extend(result.events)
            messages.extend(result.messages)
            ok = result.ok
            if result.ok and result.pfn is not None:
                if step.label:
                    self.labels[step.label] = (area, result.pfn, step.pages)
                summary = f"cma_alloc({area}, {step.pages}, {step.align}) = pfn 0x{result.pfn:x}"
            else:
                summary = f"cma_alloc({area}, {step.pages}, {step.align}) failed: {errno_name(result.ret)}"
        elif isinstance(step, DmaAllocStep):
            dev = self.device(step.device, step.line)
            got = dma_alloc(self.state, self.booted.default_area, dev, step.size)
            events.extend(got.events)
            messages.extend(got.messages)
            ok = got.buffer is not None
            if got.buffer is not None:
                buffers.append(got.buffer)
                if step.label:
                    self.labels[step.label] = got.buffer
            summary = f"dma_alloc({step.device}, {format_size(step.size)}): " + _describe(got.buffer)
        elif isinstance(step, PinStep):
            self.state.pin(self.area_name(step.area, step.line), step.pfn, step.pages)
            summary = f"pinned {step.pages} page(s) at pfn 0x{step.pfn:x} in {step.area}"
        elif isinstance(step, UnpinStep):
            self.state.unpin(self.area_name(step.area, step.line), step.pfn, step.pages)
            summary = f"unpinned {step.pages} page(s) at pfn 0x{step.pfn:x} in {step.area}"
        else:
            assert isinstance(step, FreeStep)
            summary = self._free(step, events)
        return StepRecord(
            index=index,
            step=step,
            summary=summary,
            ok=ok,
            events=tuple(events),
            messages=tuple(messages),
            cma_total_kb=self.state.cma_total_kb,
            cma_free_kb=self.state.cma_free_kb,
            counters=self.state.counters.snapshot(),
            buffers=tuple(buffers),
        )

    def _free(self, step: FreeStep, events: list[Event]) -> str:
        held = self.labels.pop(step.label, None)
        if held is None:
            return f"free {step.label}: nothing to free (its allocation failed)"
        if isinstance(held, DmaBuffer):
            events.extend(dma_free(self.state, held))
            return f"dma_free {step.label}: " + _describe(held)
        area, pfn, count = held
        events.extend(self.state.release(area, pfn, count).events)
        return f"cma_release({area}, pfn 0x{pfn:x}, {count})"

    def _release_capture(self, device: str, events: list[Event]) -> int:
        held = self.captures.pop(device, [])
        for buf in held:  # vb2 frees buffers 0..N-1
            events.extend(dma_free(self.state, buf))
        return len(held)

    def _capture(self, step: CaptureStep, events: list[Event], messages: list[str], buffers: list[DmaBuffer]) -> tuple[bool, str]:
        dev = self.device(step.device, step.line)
        # REQBUFS on a queue that still has buffers frees them first.
        self._release_capture(step.device, events)
        size = step.buffer_size
        wanted = max(step.buffers, step.min_buffers)
        got: list[DmaBuffer] = []
        for _ in range(wanted):
            result = dma_alloc(self.state, self.booted.default_area, dev, size)
            events.extend(result.events)
            messages.extend(result.messages)
            if result.buffer is None:
                break  # __vb2_queue_alloc stops at the first failure
            got.append(result.buffer)
        label = f"REQBUFS({step.buffers}) {step.width}x{step.height} {step.fourcc} on {step.device}"
        # queue_setup() is asked again with what was allocated; the driver's
        # minimum decides whether vb2 keeps them or frees all and fails.
        if len(got) < wanted and len(got) < max(step.min_buffers, 1):
            for buf in got:
                events.extend(dma_free(self.state, buf))
            return False, f"{label}: failed after {len(got)} of {wanted} buffer(s), -ENOMEM"
        self.captures[step.device] = got
        buffers.extend(got)
        ok = len(got) == wanted
        return ok, f"{label}: {len(got)} of {wanted} buffer(s) of {size} bytes"


def _where(line: int) -> str:
    return f"line {line}: " if line else ""


def _describe(buf: DmaBuffer | None) -> str:
    if buf is None:
        return "failed (NULL)"
    if buf.source == "cma" and buf.pfn is not None:
        return f"{buf.count} pages from {buf.area} at pfn 0x{buf.pfn:x}"
    return f"{format_size(buf.size)} from {'normal pages' if buf.source == 'pages' else 'vmalloc'}"


def simulate(
    profile: KernelProfile,
    boot_input: BootInput,
    steps: Sequence[Step],
    devices: Mapping[str, Device],
) -> ModelRun:
    """Boot, then run each step; every event, log line and counter the kernel would show."""
    return run_steps(profile, boot(profile, boot_input), steps, devices)


def run_steps(
    profile: KernelProfile,
    booted: BootResult,
    steps: Sequence[Step],
    devices: Mapping[str, Device],
    after_step: Callable[[CmaState], None] | None = None,
    source: str = "",
) -> ModelRun:
    """Run each step on an already booted model; ``after_step`` sees the allocator after every step
    (sizing reads the highest page each area held); ``source`` names the scenario file for errors."""
    runner = _Runner(profile, booted, devices, source)
    records = []
    for i, step in enumerate(steps):
        records.append(runner.run(i, step))
        if after_step is not None:
            after_step(runner.state)
    events = list(booted.events)
    for rec in records:
        events.extend(rec.events)
    return ModelRun(profile, booted, tuple(records), tuple(events))


def simulate_scenario(
    profile: KernelProfile,
    boot_input: BootInput,
    scenario: Scenario,
    devices: Mapping[str, Device],
) -> ModelRun:
    """simulate() with the scenario's own ``kernel:`` override and ``bootargs:`` appended."""
    if scenario.kernel is not None:
        profile = PROFILES[scenario.kernel]
    if scenario.bootargs:
        cmdline = f"{boot_input.cmdline} {scenario.bootargs}".strip()
        boot_input = dataclasses.replace(boot_input, cmdline=cmdline)
    return simulate(profile, boot_input, scenario.steps, devices)


def render_text(run: ModelRun) -> str:
    """The human report ``cma-tool model`` prints."""
    p = run.profile
    out: list[str] = [f"kernel profile {p.name} (CMA unit {format_size(p.cma_min_bytes)}, page {p.page_size})"]
    b = run.boot
    out.append("")
    out.append("areas:")
    if not b.areas:
        out.append("  (none)")
    for a in b.areas:
        default = "  [default]" if a.name == b.default_area else ""
        out.append(
            f"  #{a.index} {a.name}: {hex(a.base)}..{hex(a.base + a.size - 1)} "
            f"({format_size(a.size)}, pfn 0x{a.base_pfn:x}+{a.count}, {a.source}){default}"
        )
    out.append(f"CmaTotal: {b.cma_total_kb} kB")
    out.append("")
    out.append("boot log:")
    out.extend(f"  {line}" for line in b.log)
    if b.problems:
        out.append("")
        out.append("problems:")
        out.extend(f"  {pr.severity}: {pr.subject}: {pr.message}" for pr in b.problems)
    if b.events:
        out.append("")
        out.append("boot-time events:")
        out.extend(f"  {e.text(p)}" for e in b.events)
    for rec in run.steps:
        out.append("")
        mark = "ok" if rec.ok else "FAILED"
        out.append(f"step {rec.index + 1}{f' (line {rec.step.line})' if rec.step.line else ''}: {rec.summary} [{mark}]")
        out.extend(f"  {e.text(p)}" for e in rec.events)
        out.extend(f"  log: {m}" for m in rec.messages)
        out.append(f"  CmaTotal {rec.cma_total_kb} kB, CmaFree {rec.cma_free_kb} kB (allocations only)")
    if run.steps:
        vm = run.counters.get("vmstat", {})
        out.append("")
        out.append(f"vmstat: cma_alloc_success {vm.get('cma_alloc_success', 0)}, cma_alloc_fail {vm.get('cma_alloc_fail', 0)}")
    return "\n".join(out) + "\n"
