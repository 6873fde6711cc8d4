"""Model versus kernel: one verdict per fact, each mismatch with its likely cause."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cma_tool.model import Device
from cma_tool.model.events import NO_PFN, Event
from cma_tool.model.profiles import KernelProfile
from cma_tool.observe import Observation
from cma_tool.plan import Plan
from cma_tool.prediction import GrantedFormat, Prediction
from cma_tool.sizes import format_size


@dataclass(frozen=True)
class Check:
    group: str  # boot | log | counters | events | capture
    name: str  # for people: "event 003 alloc_finish"
    passed: bool
    expected: str
    observed: str
    cause: str = ""
    #: What the check is about inside its group ("area/linux,cma", "linux,cma/alloc_finish#2"); with the
    #: group it is the check's id, the same in every run that checks the same thing (a rack's history keys
    #: on it). Empty: the name stands in.
    about: str = ""

    @property
    def id(self) -> str:
        return f"{self.group}/{self.about or self.name}"

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "group": self.group, "name": self.name, "passed": self.passed,
                "expected": self.expected, "observed": self.observed, "cause": self.cause}


def unique_ids(checks: list[Check]) -> list[Check]:
    """The second and later checks about the same thing get #2, #3, ...: every id names one check."""
    seen: dict[str, int] = {}
    out = []
    for c in checks:
        n = seen[c.id] = seen.get(c.id, 0) + 1
        out.append(c if n == 1 else dataclasses.replace(c, about=f"{c.about or c.name}#{n}"))
    return out


def _hex(value: int | None, profile: KernelProfile) -> str:
    if value is None:
        return "-"
    if value == NO_PFN:
        return "none (all ones)"
    return f"0x{value:x}"


def _event_text(e: Event | None, profile: KernelProfile) -> str:
    return e.text(profile) if e is not None else "(no event)"


def check_areas(pred: Prediction, obs: Observation) -> list[Check]:
    out: list[Check] = []
    observed = {a.name: a for a in obs.areas}
    for area in pred.areas:
        seen = observed.pop(area.name, None)
        exp = f"{area.name} at 0x{area.base:08x}, {format_size(area.size)}"
        if seen is None:
            out.append(Check("boot", f"area {area.name}", False, exp, "not created",
                             "the kernel refused or bypassed this node: see the boot log lines in the report",
                             about=f"area/{area.name}"))
            continue
        got = f"{seen.name} at 0x{seen.base:08x}, {format_size(seen.size)}"
        cause = ""
        if seen.size != area.size:
            cause = "size differs: the kernel rounds CMA sizes to its pageblock; check max-order in the kernel profile"
        elif seen.base != area.base:
            cause = (f"base differs by {seen.base - area.base:+#x}: placement (early reservations, alloc-ranges, "
                     "top-down search) or a pinned base does not match this kernel")
        out.append(Check("boot", f"area {area.name}", not cause, exp, got, cause, about=f"area/{area.name}"))
    for extra in observed.values():
        out.append(Check("boot", f"area {extra.name}", False, "no such area",
                         f"{extra.name} at 0x{extra.base:08x}, {format_size(extra.size)}",
                         "the kernel created an area the model did not predict", about=f"area/{extra.name}"))
    return out


def check_counters(pred: Prediction, obs: Observation) -> list[Check]:
    out: list[Check] = []
    total = obs.meminfo_boot.get("CmaTotal", obs.meminfo_end.get("CmaTotal"))
    out.append(Check("counters", "CmaTotal", total == pred.cma_total_kb, f"{pred.cma_total_kb} kB",
                     f"{total} kB" if total is not None else "not read",
                     "" if total == pred.cma_total_kb else "the areas' sizes add up differently", about="CmaTotal"))
    if obs.cma_reserved_kb is not None:
        ok = obs.cma_reserved_kb == pred.cma_total_kb
        out.append(Check("counters", "Memory: cma-reserved", ok, f"{pred.cma_total_kb}K",
                         f"{obs.cma_reserved_kb}K", "" if ok else "the boot log's total differs from the areas",
                         about="cma-reserved"))
    for key, expected in pred.vmstat.items():
        got = obs.vmstat.get(key)
        ok = got == expected
        out.append(Check("counters", f"vmstat {key}", ok, str(expected), str(got) if got is not None else "not read",
                         "" if ok else "the number of allocations that succeeded/failed differs: see the events",
                         about=f"vmstat/{key}"))
    return out


def _event_cause(exp: Event, got: Event, pred: list[Event], obs: list[Event], index: int) -> str:
    if exp.kind != got.kind:
        return ("the sequence diverges here: the kernel "
                + ("retried after -EBUSY (movable pages it could not migrate)" if got.kind == "busy_retry"
                   else f"traced {got.kind} where the model expected {exp.kind}"))
    if exp.area != got.area:
        return ("another area served the request: the device's memory-region was not used, or cma= "
                "bypassed the DT default node")
    if exp.count != got.count:
        return "buffer size differs: pixel format, sizeimage or PAGE_ALIGN of the request"
    if exp.align != got.align:
        return "alignment differs: CONFIG_CMA_ALIGNMENT or get_order(size) of the request"
    if exp.failed != got.failed:
        return ("the kernel " + ("failed" if got.failed else "succeeded")
                + " where the model did not: the area's free space differs (other users, size, placement)")
    if exp.pfn is not None and got.pfn is not None and exp.pfn != got.pfn:
        delta = got.pfn - exp.pfn
        later = [(p, o) for p, o in zip(pred[index + 1:], obs[index + 1:], strict=False)
                 if p.area == exp.area and p.pfn not in (None, NO_PFN) and o.pfn not in (None, NO_PFN)]
        if later and all(o.pfn - p.pfn == delta for p, o in later if p.pfn is not None and o.pfn is not None):
            return (f"every later pfn of {exp.area} is off by the same {delta:+#x} pages: the area's base "
                    f"differs (model base wrong by {delta * 4096:+#x} bytes with 4 KiB pages)")
        return "pfn differs: the bitmap state differs (an earlier allocation, free or pinned page)"
    if exp.errorno != got.errorno:
        return "error code differs: -EBUSY (busy pages) versus -ENOMEM (no room)"
    return ""


def check_events(pred: Prediction, obs: Observation, profile: KernelProfile) -> list[Check]:
    out: list[Check] = []
    n = max(len(pred.events), len(obs.events))
    ordinal: dict[tuple[str, str], int] = {}
    for i in range(n):
        exp = pred.events[i] if i < len(pred.events) else None
        got = obs.events[i] if i < len(obs.events) else None
        label = (exp or got).kind if (exp or got) else "event"  # type: ignore[union-attr]
        name = f"event {i + 1:03d} {label}"
        # The model's event names what the check is about (the kernel's when the model has none): the
        # n-th <kind> in <area>, which stays the same id when an unrelated area's events come and go.
        area = (exp or got).area if (exp or got) else "?"  # type: ignore[union-attr]
        k = ordinal[(area, label)] = ordinal.get((area, label), 0) + 1
        about = f"{area}/{label}#{k}"
        if exp is not None and got is not None:
            cause = "" if exp == got else (_event_cause(exp, got, pred.events, obs.events, i) or "fields differ")
            out.append(Check("events", name, exp == got, _event_text(exp, profile), _event_text(got, profile), cause,
                             about=about))
        elif exp is not None:
            out.append(Check("events", name, False, _event_text(exp, profile), "(no event)",
                             "the kernel traced fewer events: the run ended early, the trace buffer overflowed, "
                             "or trace_event=cma:* was missing at boot", about=about))
        elif got is not None:
            out.append(Check("events", name, False, "(no event)", _event_text(got, profile),
                             "the kernel traced an allocation the model was not told about (another driver?)",
                             about=about))
    return out


def check_capture(pred: Prediction, obs: Observation) -> list[Check]:
    out: list[Check] = []
    granted = [(str(s.data.get("label", "")), int(s.data.get("granted", -1)))
               for s in obs.capture if s.event == "reqbufs" and int(s.data.get("asked", s.data.get("count", 0)) or 0) > 0]
    for i, (label, n) in enumerate(pred.granted):
        got = granted[i][1] if i < len(granted) else None
        ok = got == n
        out.append(Check("capture", f"REQBUFS {label} granted", ok, str(n), str(got) if got is not None else "not run",
                         "" if ok else "the kernel granted a different number of buffers than the model predicts",
                         about=f"reqbufs/{label}"))
    return out


def observed_free_drops(obs: Observation) -> list[tuple[str, int]]:
    """How far CmaFree fell at each REQBUFS N>0 until the run's first release, from the capture program's readings.

    Each drop is from the reading just before to the one just after. Only
    these are exact: once buffers have been released, their pages wait on
    the per-CPU free lists (uncounted) until an allocation drains them, and
    freed CMA pages also serve other movable allocations meanwhile (measured:
    hole reuse off by 262 pages, one stream after another off by one page).
    """
    drops: list[tuple[str, int]] = []
    before: int | None = None
    for step in obs.capture:
        free = step.data.get("cma_free_kb")
        if not isinstance(free, int):
            continue
        if step.event == "reqbufs":
            if int(step.data.get("asked", 0)) <= 0:
                break  # the first release: later drops are not the pages taken alone
            if before is not None:
                drops.append((str(step.data.get("label", "")), before - free))
        before = free
    return drops


def check_free_drops(pred: Prediction, obs: Observation) -> list[Check]:
    out: list[Check] = []
    seen = observed_free_drops(obs)
    for i, (label, kb) in enumerate(pred.free_drops):
        got = seen[i][1] if i < len(seen) else None
        ok = got == kb
        out.append(Check("counters", f"CmaFree drop at REQBUFS {label}", ok, f"{kb} kB",
                         f"{got} kB" if got is not None else "not read",
                         "" if ok else "the pages taken differ: buffer count, size or alignment, or another user "
                                       "of CMA pages ran at the same time", about=f"cmafree-drop/{label}"))
    return out


def check_log(pred: Prediction, obs: Observation) -> list[Check]:
    """Each kernel log line the model predicts, found in the kernel's log after the previous one."""
    out: list[Check] = []
    lines = obs.boot_lines
    pos = 0
    for line in pred.log_lines:
        try:
            found = lines.index(line, pos)
        except ValueError:
            anywhere = line in lines
            out.append(Check("log", f"log: {line}", False, line, "out of order" if anywhere else "not logged",
                             "the kernel logged this elsewhere in the order" if anywhere else
                             "the kernel took another path here: see the boot log in observed.json", about=line))
            continue
        pos = found + 1
        out.append(Check("log", f"log: {line}", True, line, line, about=line))
    return out


def check_all(pred: Prediction, obs: Observation, profile: KernelProfile) -> list[Check]:
    return check_areas(pred, obs) + check_log(pred, obs) + check_counters(pred, obs) + \
        check_free_drops(pred, obs) + check_capture(pred, obs) + check_events(pred, obs, profile)


def check_formats(formats: list[GrantedFormat]) -> list[Check]:
    """The driver's sizeimage for each S_FMT against V4L2's formula for the format it granted."""
    from cma_tool.model.scenario import sizeimage

    out: list[Check] = []
    for fmt in formats:
        try:
            model = sizeimage(fmt.width, fmt.height, fmt.pixel_format)
        except ValueError as exc:
            out.append(Check("capture", f"sizeimage {fmt.label}", False, "a format the model knows",
                             f"{fmt.pixel_format} {fmt.width}x{fmt.height}", str(exc), about=f"sizeimage/{fmt.label}"))
            continue
        ok = model == fmt.sizeimage
        out.append(Check("capture", f"sizeimage {fmt.label}", ok, str(model), str(fmt.sizeimage),
                         "" if ok else f"the driver's sizeimage for {fmt.pixel_format} {fmt.width}x{fmt.height} "
                                       "differs from V4L2's formula (padding or alignment the model lacks)",
                         about=f"sizeimage/{fmt.label}"))
    return out


def check_cmdline(intended: str, obs: Observation) -> list[Check]:
    """The kernel booted with the command line we gave it (U-Boot or a DTB did not change it on the way)."""
    if obs.cmdline is None:
        return [Check("boot", "command line", False, intended, "not shown",
                      "the target printed neither /proc/cmdline nor the kernel's 'Kernel command line:'",
                      about="cmdline")]
    ok = obs.cmdline.split() == intended.split()
    return [Check("boot", "command line", ok, intended, obs.cmdline,
                  "" if ok else "the kernel booted another command line than the one given: the bootloader's "
                                "environment or the DTB's /chosen/bootargs replaced it", about="cmdline")]


def cross_check(plan: Plan, cmdline: str, obs: Observation, devices: dict[str, Device],
                pins: tuple[tuple[str, int], ...] = (), *,
                intended_cmdline: str | None = None) -> tuple[list[Check], Prediction]:
    """Everything the target printed against the model fed with what the target actually did.

    ``cmdline`` is the command line the kernel booted with (the model
    predicts with it); ``intended_cmdline``, when the run chose the command
    line, is checked against what the kernel shows. ``devices`` maps each
    stream label to its model device (its CMA area); ``pins`` force an area's
    base in the model (a negative control). This is the run's check stage,
    whatever carried the output: a console, SSH, or a log read later.
    """
    from cma_tool.prediction import predict, steps_from_capture

    steps, formats = steps_from_capture(obs)
    pred, _ = predict(plan, cmdline, pins, steps, devices)
    checks = check_cmdline(intended_cmdline, obs) if intended_cmdline is not None else []
    return unique_ids(checks + check_formats(formats) + check_all(pred, obs, plan.profile)), pred
