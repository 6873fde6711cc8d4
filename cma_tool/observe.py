"""Turn what the target printed into observations: areas, counters, events, capture steps.

Input is text (a console log, or the sections the target agent framed with
markers); output is plain data that check.py compares with the model. No I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from cma_tool.deploy.sections import ANSI, split_sections
from cma_tool.model.events import Event, parse_trace_line

_PRINTK_TIME = re.compile(r"^\s*(?:<\d+>)?\[\s*\d+\.\d+\]\s?")

_DT_POOL = re.compile(r"Reserved memory: created CMA memory pool at (?P<base>0x[0-9a-f]+), size (?P<mib>\d+) MiB")
_DT_INIT = re.compile(r"OF: reserved mem: initialized node (?P<name>\S+), compatible id (?P<compat>\S+)")
_CMA_RESERVED = re.compile(r"cma: Reserved (?P<mib>\d+) MiB at (?P<base>0x[0-9a-f]+)")
_MEMORY = re.compile(r"Memory: (?P<avail>\d+)K/(?P<total>\d+)K available .*?(?P<cma>\d+)K cma-reserved")
_NODE_RANGE = re.compile(r"node\s+\d+: \[mem (?P<start>0x[0-9a-f]+)-(?P<end>0x[0-9a-f]+)\]")
_ALLOC_FAILED = re.compile(r"cma: (?:__)?cma_alloc: (?P<name>\S+): alloc failed, req-size: (?P<pages>\d+) pages, ret: (?P<ret>-?\d+)")
#: Boot lines about CMA worth keeping verbatim for the report and the line-by-line check.
_CMA_LINE = re.compile(
    r"(Reserved memory: |OF: reserved mem: |cma: |DMA: preallocated .* pool for atomic|Kernel command line:)")


def clean_line(line: str) -> str:
    """One console line without printk time, terminal escapes or CR."""
    line = ANSI.sub("", line.replace("\r", ""))
    return _PRINTK_TIME.sub("", line)


@dataclass
class ObservedArea:
    name: str
    base: int
    size: int
    source: str  # "dt" | "cmdline-or-kconfig"


@dataclass
class CaptureStep:
    """One JSON line of the capture program."""

    event: str
    data: dict[str, Any]


@dataclass
class Observation:
    sections: dict[str, str] = field(default_factory=dict)
    section_rc: dict[str, int] = field(default_factory=dict)
    done_rc: int | None = None
    cmdline: str | None = None
    boot_lines: list[str] = field(default_factory=list)
    areas: list[ObservedArea] = field(default_factory=list)
    memory_ranges: list[tuple[int, int]] = field(default_factory=list)
    cma_reserved_kb: int | None = None
    meminfo_boot: dict[str, int] = field(default_factory=dict)
    meminfo_end: dict[str, int] = field(default_factory=dict)
    vmstat: dict[str, int] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    capture: list[CaptureStep] = field(default_factory=list)
    alloc_failures: list[tuple[str, int, int]] = field(default_factory=list)  # (area, pages, ret)
    problems: list[str] = field(default_factory=list)
    #: Sections that arrived other than the agent printed them (name -> how): the link's fault.
    damaged: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "cmdline": self.cmdline,
            "areas": [{"name": a.name, "base": a.base, "size": a.size, "source": a.source} for a in self.areas],
            "memory_ranges": [{"start": s, "end": e} for s, e in self.memory_ranges],
            "cma_reserved_kb": self.cma_reserved_kb,
            "meminfo_boot": self.meminfo_boot,
            "meminfo_end": self.meminfo_end,
            "vmstat": self.vmstat,
            "events": [e.to_json() for e in self.events],
            "capture": [dict(s.data) for s in self.capture],
            "alloc_failures": [{"area": a, "pages": p, "ret": r} for a, p, r in self.alloc_failures],
            "boot_lines": self.boot_lines,
            "done_rc": self.done_rc,
            "problems": self.problems,
            "damaged": self.damaged,
        }


def parse_keyvalues(text: str) -> dict[str, int]:
    """/proc/meminfo ("CmaTotal:  98304 kB") or /proc/vmstat ("cma_alloc_success 4")."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.replace(":", " ").split()
        if len(parts) >= 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


def parse_boot_log(lines: list[str], obs: Observation) -> None:
    pending_pool: tuple[int, int] | None = None
    for raw in lines:
        line = clean_line(raw)
        if _CMA_LINE.search(line):
            obs.boot_lines.append(line.strip())
        if m := _DT_POOL.search(line):
            pending_pool = (int(m.group("base"), 16), int(m.group("mib")) << 20)
        elif m := _DT_INIT.search(line):
            if pending_pool is not None:
                obs.areas.append(ObservedArea(m.group("name"), pending_pool[0], pending_pool[1], "dt"))
            pending_pool = None
        elif m := _CMA_RESERVED.search(line):
            obs.areas.append(ObservedArea("reserved", int(m.group("base"), 16), int(m.group("mib")) << 20,
                                          "cmdline-or-kconfig"))
        elif m := _MEMORY.search(line):
            obs.cma_reserved_kb = int(m.group("cma"))
        elif m := _NODE_RANGE.search(line):
            obs.memory_ranges.append((int(m.group("start"), 16), int(m.group("end"), 16) + 1))
        elif m := _ALLOC_FAILED.search(line):
            obs.alloc_failures.append((m.group("name"), int(m.group("pages")), int(m.group("ret"))))
        elif line.startswith("Kernel command line:"):
            obs.cmdline = line.split(":", 1)[1].strip()


def observe(console_text: str) -> Observation:
    """Everything the run's console log says about CMA."""
    agent = split_sections(console_text)
    sections = {name: s.text for name, s in agent.sections.items()}
    rcs = {name: s.rc for name, s in agent.sections.items() if s.rc is not None}
    outside = agent.outside
    obs = Observation(sections=sections, section_rc=rcs, done_rc=agent.done_rc,
                      damaged={name: why for name, s in agent.sections.items() if (why := s.damage)})
    # The dmesg section holds the whole boot log even when the console dropped
    # lines; without it (a run that died early) use what the console showed.
    boot_source = sections["dmesg"].splitlines() if "dmesg" in sections else outside
    parse_boot_log(boot_source, obs)
    if "cmdline" in sections:
        obs.cmdline = sections["cmdline"].strip() or obs.cmdline
    obs.meminfo_boot = parse_keyvalues(sections.get("meminfo-boot", ""))
    obs.meminfo_end = parse_keyvalues(sections.get("meminfo", ""))
    obs.vmstat = parse_keyvalues(sections.get("vmstat", ""))
    for line in sections.get("trace", "").splitlines():
        event = parse_trace_line(line)
        if event is not None:
            obs.events.append(event)
    for line in sections.get("capture", "").splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            obs.problems.append(f"capture printed a line that is not JSON: {line[:120]}")
            continue
        if isinstance(data, dict) and "event" in data:
            obs.capture.append(CaptureStep(str(data["event"]), data))
    if "trace" not in sections:
        obs.problems.append("the target printed no trace section (the run ended early)")
    return obs


def refuse_damaged(obs: Observation, where: str = "the agent's output") -> None:
    """InfraError when a section arrived other than the agent printed it: never compared with the model.

    Numbers that arrived changed would be judged as if the kernel had said them; the
    link (a noisy or overrun serial line, a log cut and pasted) is at fault, not the model.
    """
    from cma_tool.errors import InfraError

    if obs.damaged:
        raise InfraError(f"{where} arrived damaged: " + "; ".join(
            f"section {name}: {why}" for name, why in obs.damaged.items()),
            hint="the console lost or changed bytes on the way; nothing was compared with the model. The log "
                 "keeps what arrived; a retry (--retries) may pass")


def refuse_failed_capture(obs: Observation, where: str = "", *, see: str = "console.log", hint: str = "") -> None:
    """TargetError when the capture program or the agent ended non-zero: the board's failure, not a verdict."""
    from cma_tool.errors import TargetError

    rc = obs.section_rc.get("capture")
    if rc not in (0, None) or obs.done_rc not in (0, None):
        errors = [s.data for s in obs.capture if s.event == "error"]
        prefix = f"{where}: " if where else ""
        raise TargetError(f"{prefix}the capture program failed on the board (exit {rc}, agent DONE rc="
                          f"{obs.done_rc}): {errors[:1] or 'see ' + see}", hint=hint)
