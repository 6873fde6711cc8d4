"""5.10's cma tracepoints name no area: the report draws each event in the area its pfn lies in."""

from __future__ import annotations

from cma_tool.model.events import NO_PFN, Event
from cma_tool.report.html import EventRow, _named_by_pfn
from cma_tool.report.svg import Span


def test_a_nameless_event_is_drawn_in_the_area_its_pfn_lies_in() -> None:
    # linux,cma at pfn 0x64000 (64 MiB: 16384 pages), region@43000000 at 0x43000 (4096 pages).
    areas = {"linux,cma": Span(0x64000, 16384), "region@43000000": Span(0x43000, 4096)}
    alloc = Event("alloc_finish", "", 1013, 8, 0x64100)
    failed = Event("alloc_finish", "", 1013, 8, NO_PFN, failed=True)
    named = Event("alloc_finish", "reserved", 1013, 8, 0x43100)
    rows = [EventRow(n, e, e, None, None, "vivid", None) for n, e in enumerate((alloc, failed, named), start=1)]
    out = _named_by_pfn(rows, areas, areas)
    assert [(r.model.area if r.model else None, r.kernel.area if r.kernel else None) for r in out] == [
        ("linux,cma", "linux,cma"),  # inside linux,cma
        ("", ""),  # no pfn to go by: stays nameless
        ("reserved", "reserved"),  # a named event keeps its name
    ]
