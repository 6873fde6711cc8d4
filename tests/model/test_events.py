"""Event text, JSON and the trace-line parser, checked on lines the real kernel wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from cma_tool.model import NO_PFN, PROFILES, Event, parse_trace_line

P61 = PROFILES["linux-6.1"]
P612 = PROFILES["linux-6.12"]
TRACES = Path(__file__).resolve().parent.parent / "data" / "kernel-traces"


def test_parse_real_6_1_lines() -> None:
    start = parse_trace_line("         capture-92      [000] .n...     2.824266: cma_alloc_start: name=linux,cma count=1013 align=8")
    assert start == Event("alloc_start", "linux,cma", 1013, 8)
    assert start is not None and (start.task, start.cpu, start.timestamp) == ("capture", 0, 2.824266)
    finish = parse_trace_line(
        "       swapper/0-1       [000] .....     0.169434: "
        "cma_alloc_finish: name=linux,cma pfn=0x6c000 page=7aa79f37 count=64 align=6"
    )
    assert finish == Event("alloc_finish", "linux,cma", 64, 6, 0x6C000, failed=False)
    assert finish is not None and finish.task == "swapper/0"
    failed = parse_trace_line(
        "         capture-92      [000] .....     3.163103: "
        "cma_alloc_finish: name=reserved pfn=0xffffffff page=00000000 count=1013 align=8"
    )
    assert failed == Event("alloc_finish", "reserved", 1013, 8, NO_PFN, failed=True)
    release = parse_trace_line(
        "         capture-92      [000] .n...     3.822161: cma_release: name=linux,cma pfn=0x6c100 page=900b46dd count=1013"
    )
    assert release == Event("release", "linux,cma", 1013, None, 0x6C100)


def test_parse_variants() -> None:
    # No prefix (a console capture), (ptrval), a tgid column, 6.12's errorno, busy retry.
    assert parse_trace_line("cma_alloc_start: name=reserved count=1 align=0") == Event("alloc_start", "reserved", 1, 0)
    assert parse_trace_line(
        "  kworker/u2:1-42   (   42) [001] d..1.  12.5: cma_alloc_busy_retry: name=a pfn=0x100 page=(ptrval) count=4 align=2"
    ) == Event("busy_retry", "a", 4, 2, 0x100)
    ev = parse_trace_line(
        "x-1 [000] ..... 1.0: cma_alloc_finish: name=r pfn=0xffffffffffffffff page=0000000000000000 count=2 align=1 errorno=-16"
    )
    assert ev == Event("alloc_finish", "r", 2, 1, NO_PFN, failed=True, errorno=-16)
    for junk in ("", "# tracer: nop", "cma_alloc_start: name=x", "random text cma_release: pfn=1"):
        assert parse_trace_line(junk) is None


@pytest.mark.parametrize(
    ("event", "profile", "text"),
    [
        (Event("alloc_start", "linux,cma", 1013, 8), P61, "cma_alloc_start: name=linux,cma count=1013 align=8"),
        (
            Event("alloc_finish", "linux,cma", 1013, 8, 0x6C100),
            P61,
            "cma_alloc_finish: name=linux,cma pfn=0x6c100 page=(ptrval) count=1013 align=8",
        ),
        (
            Event("alloc_finish", "linux,cma", 1013, 8, 0x6C100, errorno=0),
            P612,
            "cma_alloc_finish: name=linux,cma pfn=0x6c100 page=(ptrval) count=1013 align=8 errorno=0",
        ),
        (
            Event("alloc_finish", "reserved", 1013, 8, NO_PFN, failed=True, errorno=-12),
            P612,
            "cma_alloc_finish: name=reserved pfn=0xffffffff page=00000000 count=1013 align=8 errorno=-12",
        ),
    ],
)
def test_text_and_back(event: Event, profile: object, text: str) -> None:
    from cma_tool.model.profiles import KernelProfile

    assert isinstance(profile, KernelProfile)
    assert event.text(profile) == text
    assert parse_trace_line(text) == event


def test_json_round_trip_ignores_prefix_fields_in_equality() -> None:
    ev = Event("busy_retry", "a", 4, 2, 0x100, task="t", cpu=1, timestamp=1.5)
    back = Event.from_json(ev.to_json())
    assert back == ev and back.task == "t" and back.timestamp == 1.5
    assert ev == Event("busy_retry", "a", 4, 2, 0x100)


def test_every_recorded_trace_line_parses() -> None:
    files = sorted(TRACES.glob("*/trace.txt"))
    if not files:
        pytest.skip("no recorded kernel traces")
    for path in files:
        for line in path.read_text().splitlines():
            if line.startswith("#") or not line.strip():
                continue
            ev = parse_trace_line(line)
            assert ev is not None, f"{path}: {line}"
            # Rendering and reparsing gives the same event (the page hash aside).
            assert parse_trace_line(ev.text(P61)) == ev
