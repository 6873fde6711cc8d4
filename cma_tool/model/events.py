"""CMA events: one record for what the model predicts and what the kernel traced.

The comparable fields are exactly what a tracepoint line carries, so a
predicted event and an observed one compare with ``==``. Where the trace
cannot tell two outcomes apart (6.1's cma_alloc_finish has no errno), the
model leaves the field empty too, and the error code lives in the allocation
result instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from cma_tool.model.profiles import KernelProfile

EventKind = Literal["alloc_start", "alloc_finish", "busy_retry", "release"]
EVENT_KINDS: tuple[EventKind, ...] = ("alloc_start", "alloc_finish", "busy_retry", "release")

#: The pfn of a finish event when no candidate range was found: the kernel's
#: ``unsigned long pfn = -1``. Kept as -1 so it is the same on 32 and 64 bits.
NO_PFN = -1

_TRACEPOINT: dict[EventKind, str] = {
    "alloc_start": "cma_alloc_start",
    "alloc_finish": "cma_alloc_finish",
    "busy_retry": "cma_alloc_busy_retry",
    "release": "cma_release",
}
_KIND_OF: dict[str, EventKind] = {v: k for k, v in _TRACEPOINT.items()}


# Not frozen: a frozen dataclass sets each field through object.__setattr__,
# which made construction 4x slower, and events are the replay's hot path.
# Treat instances as values all the same (the hash assumes nobody mutates them).
@dataclass(slots=True, unsafe_hash=True)
class Event:
    """One cma tracepoint, predicted or observed.

    ``failed`` is true on a finish event whose page is NULL. ``errorno`` is set
    only where the trace prints it (6.12's cma_alloc_finish). ``task``,
    ``cpu`` and ``timestamp`` come from a trace line's prefix and never take
    part in comparisons.
    """

    kind: EventKind
    area: str
    count: int
    align: int | None = None  # None on release
    pfn: int | None = None  # None on alloc_start; NO_PFN when nothing was found
    failed: bool = False
    errorno: int | None = None
    task: str = field(default="", compare=False)
    cpu: int | None = field(default=None, compare=False)
    timestamp: float | None = field(default=None, compare=False)

    def text(self, profile: KernelProfile) -> str:
        """The line as the kernel's TP_printk renders it (without the trace prefix)."""
        if not profile.facts.tracepoints_name_area:
            return self._text_unnamed(profile)
        head = f"{_TRACEPOINT[self.kind]}: name={self.area}"
        if self.kind == "alloc_start":
            return f"{head} count={self.count} align={self.align}"
        pfn = self.pfn if self.pfn is not None else NO_PFN
        pfn_text = f"0x{pfn & ((1 << profile.long_bits) - 1):x}"
        # %p of a live page prints as a hash (6.12, and 6.1 once its hash key is
        # ready) or "(ptrval)" (6.1's boot-time traces); the hash cannot be
        # predicted and never takes part in comparisons, so "(ptrval)" stands in.
        # A NULL page prints as zeros.
        page = "0" * profile.pointer_digits if self.failed else "(ptrval)"
        text = f"{head} pfn={pfn_text} page={page} count={self.count}"
        if self.kind == "release":
            return text
        text += f" align={self.align}"
        if self.kind == "alloc_finish" and profile.facts.finish_has_errorno:
            text += f" errorno={self.errorno if self.errorno is not None else 0}"
        return text

    def _text_unnamed(self, profile: KernelProfile) -> str:
        """5.10's two events: ``cma_alloc`` (the finish) and ``cma_release``, pfn in bare hex, no name."""
        pfn = (self.pfn if self.pfn is not None else NO_PFN) & ((1 << profile.long_bits) - 1)
        page = "0" * profile.pointer_digits if self.failed else "(ptrval)"
        tracepoint = "cma_release" if self.kind == "release" else "cma_alloc"
        text = f"{tracepoint}: pfn={pfn:x} page={page} count={self.count}"
        return text if self.kind == "release" else f"{text} align={self.align}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "area": self.area, "count": self.count}
        if self.align is not None:
            out["align"] = self.align
        if self.pfn is not None:
            out["pfn"] = self.pfn
        if self.kind == "alloc_finish":
            out["failed"] = self.failed
        if self.errorno is not None:
            out["errorno"] = self.errorno
        if self.task:
            out["task"] = self.task
        if self.cpu is not None:
            out["cpu"] = self.cpu
        if self.timestamp is not None:
            out["timestamp"] = self.timestamp
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        kind = data["kind"]
        if kind not in EVENT_KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        return cls(
            kind=kind,
            area=str(data["area"]),
            count=int(data["count"]),
            align=data.get("align"),
            pfn=data.get("pfn"),
            failed=bool(data.get("failed", False)),
            errorno=data.get("errorno"),
            task=str(data.get("task", "")),
            cpu=data.get("cpu"),
            timestamp=data.get("timestamp"),
        )


# "  kworker/0:1-42  [000] d..1.  12.345678: cma_alloc_start: name=..." The
# flags column and the "(tgid)" column appear only with some trace options,
# and a line read from a console capture may have lost the prefix entirely.
_PREFIX_RE = re.compile(
    r"^\s*(?P<task>.+?)-(?P<pid>\d+)\s+(?:\(\s*[\d-]+\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>[^\s:]{4,6})\s+)?(?P<ts>\d+\.\d+):\s+"
)
_EVENT_RE = re.compile(r"(?P<tp>cma_alloc_start|cma_alloc_finish|cma_alloc_busy_retry|cma_release|cma_alloc):\s+(?P<body>.*)$")
#: 5.10's tracepoints: ``cma_alloc`` when an allocation ends, ``cma_release``; neither names the area.
_UNNAMED_KIND: dict[str, EventKind] = {"cma_alloc": "alloc_finish", "cma_release": "release"}
# The name comes first and is the only field that could hold odd characters;
# it ends where the next known key starts.
_NAME_RE = re.compile(r"^name=(?P<name>.*?)\s+(?=(?:count|pfn)=)")
_FIELD_RE = re.compile(r"(?P<key>pfn|page|count|align|errorno)=(?P<value>\S+)")


def _is_null_page(text: str) -> bool:
    return text in ("(null)", "0") or (len(text) >= 8 and set(text) == {"0"})


def parse_trace_line(line: str) -> Event | None:
    """Turn one line of trace / trace_pipe into an Event; None for anything else."""
    line = line.rstrip("\r\n")
    match = _EVENT_RE.search(line)
    if not match:
        return None
    task, cpu, timestamp = "", None, None
    prefix = _PREFIX_RE.match(line[: match.start()] + " ") if match.start() else None
    if prefix:
        task = prefix.group("task").strip()
        cpu = int(prefix.group("cpu"))
        timestamp = float(prefix.group("ts"))
    body = match.group("body")
    name_match = _NAME_RE.match(body)
    tracepoint = match.group("tp")
    if name_match:
        area, rest = name_match.group("name"), body[name_match.end() :]
        kind: EventKind = _KIND_OF.get(tracepoint, "alloc_finish")
    elif tracepoint in _UNNAMED_KIND and body.startswith("pfn="):
        area, rest = "", body
        kind = _UNNAMED_KIND[tracepoint]
    else:
        return None
    if tracepoint == "cma_alloc" and name_match:
        return None  # no kernel prints a named cma_alloc event
    fields = {m.group("key"): m.group("value") for m in _FIELD_RE.finditer(rest)}
    try:
        count = int(fields["count"])
        align = int(fields["align"]) if "align" in fields else None
        pfn: int | None = None
        if "pfn" in fields:
            raw = int(fields["pfn"], 16)
            # All ones of either width is the kernel's "no candidate" -1.
            pfn = NO_PFN if raw in (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF) else raw
        errorno = int(fields["errorno"]) if "errorno" in fields else None
    except (KeyError, ValueError):
        return None
    if kind == "alloc_start":
        if align is None:
            return None
    elif pfn is None or kind != "release" and align is None:
        return None
    failed = kind == "alloc_finish" and _is_null_page(fields.get("page", "(ptrval)"))
    return Event(
        kind=kind,
        area=area,
        count=count,
        align=align,
        pfn=pfn,
        failed=failed,
        errorno=errorno,
        task=task,
        cpu=cpu,
        timestamp=timestamp,
    )
