"""report.html: one run folder as one self-contained page a person would rather look at than read.

The page answers "where did my buffers go, and where did the kernel disagree
with the plan?": the verdict and the run's facts on top, the banks and, per
CMA area, every allocation the model predicted beside the one the kernel
traced (svg.py draws them), the events with the checks' explanations, CmaFree
over time, the checks as a filterable table, and the console log with its CMA
lines highlighted and linked from the events they carried.

Everything comes from the files a run leaves in its folder (report.json,
plan.json, predicted.json, observed.json, schedule.json, console.log), so the
page can be rebuilt later (``cma-tool report OUT``) and a run that stopped
early gets a page of what it knew. The page references nothing outside
itself: styles and the few lines of script are inline, pictures are inline
SVG, links are fragments. Everything the board printed is escaped.

:func:`render_report` is pure; :func:`read_run`, :func:`write_report` and
:func:`write_index` are the only I/O.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from cma_tool import __version__
from cma_tool.deploy.sections import ANSI
from cma_tool.errors import ConfigError
from cma_tool.model.events import NO_PFN, Event, parse_trace_line
from cma_tool.report.run_report import write_atomic
from cma_tool.report.svg import (
    BOOT_COLOUR,
    MISMATCH_COLOUR,
    OWNER_COLOURS,
    AreaPanel,
    BankArea,
    Placement,
    Row,
    Span,
    area_map_svg,
    banks_svg,
    free_plot_svg,
)
from cma_tool.sizes import format_size

REPORT_HTML = "report.html"
INDEX_HTML = "index.html"

#: A console longer than this shows its head and tail (the whole log stays in console.log).
_MAX_CONSOLE_LINES = 20000
#: Control characters HTML does not allow in text; the console can carry line noise.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_CMA_TEXT = re.compile(r"Reserved memory: |OF: reserved mem: |\bcma: |\bCMA\b|Cma(?:Total|Free)|"
                       r"DMA: preallocated .* pool|cma-reserved|Kernel command line:")
_BAD_TEXT = re.compile(r"alloc failed|Kernel panic|Oops|BUG:|Unable to handle")
_MARKER = re.compile(r"^==== CMA-TOOL (BEGIN|END) (\S+)")


@dataclass(frozen=True)
class RunFiles:
    """What a run folder holds; None for a file the run never wrote (it stopped before that stage)."""

    folder: Path
    report: dict[str, Any]
    plan: dict[str, Any] | None = None
    predicted: dict[str, Any] | None = None
    observed: dict[str, Any] | None = None
    schedule: dict[str, Any] | None = None
    console: str | None = None
    problems: tuple[str, ...] = ()  # files present but unreadable


def _read_json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except (OSError, ValueError) as exc:
        problems.append(f"{path.name} could not be read: {exc}")
        return None
    if not isinstance(data, dict):
        problems.append(f"{path.name} is not a JSON object")
        return None
    return data


def read_run(folder: Path) -> RunFiles:
    """The run's files; a folder without a readable report.json is not a run folder (ConfigError)."""
    report_path = folder / "report.json"
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder", hint="give the --out folder of a cma-tool run")
    if not report_path.is_file():
        raise ConfigError(f"{folder}: not a run folder: it has no report.json",
                          hint="give the --out folder of a cma-tool run")
    problems: list[str] = []
    report = _read_json(report_path, problems)
    if report is None:
        raise ConfigError(f"{report_path}: not a run report: {problems[0] if problems else 'unreadable'}")
    console_path = folder / "console.log"
    console = console_path.read_bytes().decode("utf-8", errors="replace") if console_path.is_file() else None
    return RunFiles(folder=folder, report=report, plan=_read_json(folder / "plan.json", problems),
                    predicted=_read_json(folder / "predicted.json", problems),
                    observed=_read_json(folder / "observed.json", problems),
                    schedule=_read_json(folder / "schedule.json", problems), console=console,
                    problems=tuple(problems))


def write_report(folder: Path) -> Path:
    """Rebuild FOLDER/report.html from the folder's files."""
    dest = folder / REPORT_HTML
    run = read_run(folder)
    # An old page must not outlive a failed rendering and pass for this run's.
    dest.unlink(missing_ok=True)
    write_atomic(dest, render_report(run))
    return dest


# --- the run's events, paired by position as the cross-check paired them ---


@dataclass(frozen=True)
class EventRow:
    number: int  # 1-based, as in the checks' names ("event 004 ...")
    model: Event | None
    kernel: Event | None
    check: dict[str, Any] | None  # the events check of this position (None: not compared)
    check_anchor: str | None
    owner: str
    console_line: int | None  # the console line the kernel's event was read from

    @property
    def mismatch(self) -> bool:
        return self.check is not None and not bool(self.check.get("passed"))


def _events_from_text(lines: object) -> list[Event]:
    out: list[Event] = []
    for line in lines if isinstance(lines, list) else []:
        event = parse_trace_line(str(line))
        if event is not None:
            out.append(event)
    return out


def _events_from_json(items: object) -> list[Event]:
    out: list[Event] = []
    for item in items if isinstance(items, list) else []:
        try:
            out.append(Event.from_json(item))
        except (KeyError, ValueError, TypeError):
            continue
    return out


def _model_events(run: RunFiles) -> tuple[list[Event], str]:
    """The events the cross-check compared; before a cross-check, the prediction made before boot."""
    prediction = run.report.get("prediction")
    if isinstance(prediction, dict) and "events" in prediction:
        return _events_from_text(prediction["events"]), "the cross-check's prediction"
    if run.predicted is not None:
        return _events_from_json(run.predicted.get("events")), "the prediction made before boot (predicted.json)"
    return [], "no prediction"


def _owners(predicted: dict[str, Any] | None, n_events: int) -> list[str]:
    """Who each predicted event was for: the boot-time user, then each capture step's stream."""
    if predicted is None:
        return [""] * n_events
    steps = predicted.get("steps") if isinstance(predicted.get("steps"), list) else []
    step_owners: list[str] = []
    for step in steps or []:
        if not isinstance(step, dict):
            continue
        what = step.get("step") if isinstance(step.get("step"), dict) else {}
        label = str((what or {}).get("label") or (what or {}).get("device") or "")
        step_owners += [label] * len(step.get("events") or [])
    boot = predicted.get("boot") if isinstance(predicted.get("boot"), dict) else {}
    pre = [str(p.get("what", "boot")) for p in (boot or {}).get("preallocations") or [] if isinstance(p, dict)]
    all_events = predicted.get("events") if isinstance(predicted.get("events"), list) else []
    n_boot = max(len(all_events or []) - len(step_owners), 0)
    # Each boot-time allocation is a start and a finish event.
    boot_owners = [pre[i // 2] if i // 2 < len(pre) else "boot" for i in range(n_boot)]
    # A kernel not traced from boot leaves the boot events out of the comparison.
    owners = boot_owners + step_owners if n_events != len(step_owners) else step_owners
    return (owners + [""] * n_events)[:n_events]


def _console_lines_of(events: list[Event], lines: list[str]) -> list[int | None]:
    """For each kernel event, the console line (1-based) its trace line was read from."""
    found: list[int | None] = []
    pos = 0
    for event in events:
        hit = None
        for i in range(pos, len(lines)):
            if "cma_" not in lines[i]:
                continue
            parsed = parse_trace_line(_clean(lines[i]))
            if parsed == event and (event.timestamp is None or parsed.timestamp == event.timestamp):
                hit = i
                break
        found.append(hit + 1 if hit is not None else None)
        if hit is not None:
            pos = hit + 1
    return found


def _event_rows(run: RunFiles, checks: list[dict[str, Any]], console_lines: list[str]) -> list[EventRow]:
    model, _ = _model_events(run)
    kernel = _events_from_json(run.observed.get("events")) if run.observed is not None else []
    n = max(len(model), len(kernel))
    event_checks = [(i, c) for i, c in enumerate(checks) if c.get("group") == "events"]
    # check_events emits one check per position, in order; anything else is not ours to pair.
    paired = event_checks if len(event_checks) == n else []
    owners = _owners(run.predicted, len(model))
    lines = _console_lines_of(kernel, console_lines)
    rows = []
    for i in range(n):
        check = paired[i][1] if paired else None
        rows.append(EventRow(
            number=i + 1, model=model[i] if i < len(model) else None, kernel=kernel[i] if i < len(kernel) else None,
            check=check, check_anchor=f"check-{paired[i][0]}" if paired else None,
            owner=owners[i] if i < len(owners) else "", console_line=lines[i] if i < len(lines) else None))
    return rows


def _describe(e: Event | None) -> str:
    if e is None:
        return "(no event)"
    if e.kind == "alloc_start":
        return f"asks {e.count} pages (align order {e.align}) from {e.area}"
    if e.kind == "alloc_finish":
        if e.failed or e.pfn in (None, NO_PFN):
            return f"allocation of {e.count} pages from {e.area} failed"
        return f"got {e.count} pages at pfn 0x{e.pfn:x}"
    if e.kind == "release":
        return f"released {e.count} pages at pfn 0x{(e.pfn or 0):x}"
    return f"busy retry: {e.count} pages at pfn 0x{(e.pfn or 0):x} could not be migrated"


def _placed(e: Event | None) -> bool:
    return e is not None and e.kind == "alloc_finish" and not e.failed and e.pfn not in (None, NO_PFN)


# --- the map ---


def _area_spans(run: RunFiles, page: int) -> tuple[dict[str, Span], dict[str, Span]]:
    model: dict[str, Span] = {}
    kernel: dict[str, Span] = {}
    boot = run.predicted.get("boot") if run.predicted is not None else None
    for a in (boot or {}).get("areas") or [] if isinstance(boot, dict) else []:
        if isinstance(a, dict) and isinstance(a.get("base"), int) and isinstance(a.get("size"), int):
            model[str(a["name"])] = Span(a["base"] // page, a["size"] // page)
    for a in (run.observed or {}).get("areas") or []:
        if isinstance(a, dict) and isinstance(a.get("base"), int) and isinstance(a.get("size"), int):
            kernel[str(a["name"])] = Span(a["base"] // page, a["size"] // page)
    return model, kernel


def _area_titles(plan: dict[str, Any] | None) -> dict[str, str]:
    titles: dict[str, str] = {}
    for r in (plan or {}).get("regions") or []:
        if isinstance(r, dict) and "name" in r:
            label = str(r.get("label") or "")
            title = str(r["name"]) + (f" ({label})" if label and label != r["name"] else "")
            if r.get("default"):
                title += ", the default area"
            users = ", ".join(str(u) for u in r.get("users") or [])
            titles[str(r["name"])] = title + (f"; for {users}" if users else "")
    return titles


def _named_by_pfn(rows: list[EventRow], model_areas: dict[str, Span], kernel_areas: dict[str, Span]) -> list[EventRow]:
    """5.10's tracepoints name no area: each such event is drawn in the area (of its own side) its pfn lies in."""

    def named(e: Event | None, areas: dict[str, Span]) -> Event | None:
        if e is None or e.area or e.pfn is None:
            return e
        hit = next((name for name, span in areas.items() if span.pfn <= e.pfn < span.end), None)
        return dataclasses.replace(e, area=hit) if hit is not None else e

    return [dataclasses.replace(r, model=named(r.model, model_areas), kernel=named(r.kernel, kernel_areas))
            for r in rows]


def _panels(run: RunFiles, rows: list[EventRow], checks: list[dict[str, Any]], page: int) -> list[AreaPanel]:
    model_areas, kernel_areas = _area_spans(run, page)
    rows = _named_by_pfn(rows, model_areas, kernel_areas)
    titles = _area_titles(run.plan)
    area_checks = {str(c.get("name", "")).removeprefix("area "): c for c in checks
                   if c.get("group") == "boot" and str(c.get("name", "")).startswith("area ")}
    names: list[str] = []
    for r in rows:
        for e in (r.model, r.kernel):
            if e is not None and e.area not in names:
                names.append(e.area)
    names = list(dict.fromkeys(names + list(model_areas) + list(kernel_areas)))

    placements: dict[str, list[Placement]] = {n: [] for n in names}
    for lane in ("model", "kernel"):
        held: dict[tuple[str, int, int], tuple[int, str, str, bool]] = {}
        count_of: dict[str, int] = {}
        for r in rows:
            e = r.model if lane == "model" else r.kernel
            if e is None:
                continue
            if _placed(e) and e.pfn is not None:
                owner = r.owner or "?"
                count_of[owner] = count_of.get(owner, 0) + 1
                name = f"{owner} #{count_of[owner]}" if r.owner else f"buffer {sum(count_of.values())}"
                held[(e.area, e.pfn, e.count)] = (r.number, owner, name, r.mismatch)
            elif e.kind == "release" and e.pfn is not None:
                start = held.pop((e.area, e.pfn, e.count), None)
                if start is not None:
                    placements[e.area].append(Placement(lane, Span(e.pfn, e.count), start[0], r.number,
                                                        start[1], start[2], start[3]))
        for (area, pfn, count), (step, owner, name, bad) in held.items():
            placements[area].append(Placement(lane, Span(pfn, count), step, None, owner, name, bad))

    panels = []
    for index, name in enumerate(names):
        area_rows = []
        for r in rows:
            events = [(lane, e) for lane, e in (("model", r.model), ("kernel", r.kernel))
                      if e is not None and e.area == name and e.kind != "alloc_start"]
            if not events:
                continue
            marks = tuple((lane, _describe(e)) for lane, e in events if not _placed(e) and e.kind != "release")
            who = f"{r.owner}: " if r.owner else ""
            note = f"{who}{_describe(r.kernel if r.kernel is not None else r.model)}"
            if r.mismatch and r.check is not None:
                note = f"✗ MISMATCH {who}model {_describe(r.model)}, kernel {_describe(r.kernel)}: " \
                       f"{r.check.get('cause', '')}"
            elif r.check is not None:
                note += " ✓"
            area_rows.append(Row(r.number, note, r.mismatch, marks))
        check = area_checks.get(name)
        panels.append(AreaPanel(
            index=index, name=name, title=titles.get(name, name), model=model_areas.get(name),
            kernel=kernel_areas.get(name),
            area_note=("" if check is None else "✓ as planned" if check.get("passed") else
                       f"✗ {check.get('observed', '')} (model: {check.get('expected', '')}): {check.get('cause', '')}"),
            area_mismatch=check is not None and not check.get("passed"),
            placements=tuple(sorted(placements[name], key=lambda p: (p.step, p.lane))),
            rows=tuple(area_rows), page_size=page))
    # Areas that held buffers first: that is where the reader's question is.
    return sorted(panels, key=lambda p: (not p.placements and not p.rows, p.index))


def _span_text(span: Span | None, page: int) -> str:
    if span is None:
        return '<span class="mm">✗ none</span>'
    return f"0x{span.pfn * page:08x}, {escape(format_size(span.pages * page))}"


def _owner_colours(rows: list[EventRow]) -> dict[str, str]:
    colours: dict[str, str] = {}
    streams = [r.owner for r in rows if r.owner]
    for owner in dict.fromkeys(streams):
        boot = owner in ("boot",) or "pool" in owner
        colours[owner] = BOOT_COLOUR if boot else OWNER_COLOURS[len([c for c in colours.values()
                                                                     if c != BOOT_COLOUR]) % len(OWNER_COLOURS)]
    return colours


def _hexint(text: object) -> int | None:
    try:
        return int(str(text), 0)
    except ValueError:
        return None


def _banks(run: RunFiles, panels: list[AreaPanel]) -> str:
    if run.plan is None:
        return ""
    banks = []
    for b in run.plan.get("banks") or []:
        base = _hexint(b.get("base")) if isinstance(b, dict) else None
        if base is not None and isinstance(b.get("size"), int):
            banks.append((base, int(b["size"])))
    planned = {str(r["name"]): (_hexint(r.get("base")), r.get("size")) for r in run.plan.get("regions") or []
               if isinstance(r, dict) and "name" in r}
    areas = []
    for p in panels:
        base, size = planned.get(p.name, (None, None))
        areas.append(BankArea(
            index=p.index, name=p.name, title=p.title.split(";")[0],
            planned=(base, size) if base is not None and isinstance(size, int) else None,
            kernel=(p.kernel.pfn * p.page_size, p.kernel.pages * p.page_size) if p.kernel else None,
            mismatch=p.area_mismatch))
    return banks_svg(banks, areas) if banks else ""


# --- the page ---


def _clean(line: str) -> str:
    return _CONTROL.sub("\ufffd", ANSI.sub("", line.replace("\r", "")))


def _verdict_class(verdict: str) -> str:
    return {"pass": "pass", "mismatch": "mismatch", "running": "running"}.get(verdict, "error")


_VERDICT_WORD = {"pass": "✓ PASS", "mismatch": "✗ MISMATCH", "running": "… RUNNING"}


def _fact(name: str, value: str, wide: bool = False) -> str:
    return f'<div{" class=wide" if wide else ""}><dt>{escape(name)}</dt><dd>{value}</dd></div>'


def _stages_html(stages: list[dict[str, Any]]) -> str:
    prev = 0.0
    spans = []
    for s in stages:
        at = float(s.get("at", prev) or 0.0)
        spans.append((str(s.get("stage", "?")), max(at - prev, 0.0)))
        prev = at
    total = sum(d for _, d in spans) or 1.0
    shown = [(n, d) for n, d in spans if n not in ("start", "end")]
    bar = "".join(f'<span class="seg seg{i % 6}" style="flex-grow:{d / total:.4f}" title="{escape(n)}: {d:.3f} s">'
                  f'{escape(n) if d / total > 0.08 else ""}</span>' for i, (n, d) in enumerate(shown) if d > 0)
    table = "".join(f'<li><i class="seg{i % 6}"></i>{escape(n)} <b>{d:.3f} s</b></li>' for i, (n, d) in enumerate(shown)
                    if d > 0)
    return (f'<div class="stagebar" role="img" aria-label="time per stage">{bar}</div>'
            f'<ul class="stages">{table}</ul>')


def _header(run: RunFiles, checks: list[dict[str, Any]]) -> str:
    rep = run.report
    verdict = str(rep.get("verdict", "unknown"))
    plan = run.plan or {}
    board = str(plan.get("board") or Path(str(rep.get("board", "?"))).stem)
    kernel = plan.get("kernel") if isinstance(plan.get("kernel"), dict) else {}
    profile = str((kernel or {}).get("profile") or (run.predicted or {}).get("profile") or "not planned")
    stages = [s for s in rep.get("stages") or [] if isinstance(s, dict)]
    scenario = next((str(s["schedule"]) for s in stages if s.get("stage") == "plan" and "schedule" in s), None) \
        or str((run.schedule or {}).get("source") or "not planned")
    cmdline = (run.observed or {}).get("cmdline") or next(
        (s.get("cmdline") for s in stages if s.get("stage") == "prepare"), None)
    failed = sum(1 for c in checks if not c.get("passed"))
    facts = [
        _fact("board", f"<b>{escape(board)}</b> <span class=dim>{escape(str(rep.get('board', '')))}</span>", True),
        _fact("kernel", f"{escape(profile)}" + (f" <code>{escape(str(cmdline))}</code>" if cmdline else ""), True),
        _fact("target", f"{escape(str(rep.get('target', '?')))} / boot {escape(str(rep.get('boot') or 'default'))}"),
        _fact("scenario", escape(scenario)),
        _fact("checks", f"{len(checks) - failed} passed, <b>{failed} failed</b>" if failed
              else f"{len(checks)} passed" if checks else "none run"),
        _fact("took", f"{float(rep.get('seconds', 0) or 0):.1f} s (exit {escape(str(rep.get('exit_code', '?')))})"),
        _fact("folder", f"<code>{escape(str(run.folder))}</code>"),
    ]
    diag = "".join(f"<li>{escape(str(d))}</li>" for d in rep.get("diagnostics") or [])
    problems = "".join(f"<li>{escape(p)}</li>" for p in run.problems)
    cls = _verdict_class(verdict)
    word = _VERDICT_WORD.get(verdict, f"! {verdict.upper()}")
    return (f'<header class="top {cls}"><div class="verdict {cls}" data-verdict="{escape(verdict)}">'
            f'{escape(word)}</div><div class="headline"><h1>{escape(board)}: CMA run report</h1>'
            f'<p class="message">{escape(str(rep.get("message", "")))}</p></div></header>'
            f'<section class="facts"><dl>{"".join(facts)}</dl>'
            f'<div class="timing"><h3>timings</h3>{_stages_html(stages)}</div></section>'
            + (f'<ul class="diagnostics">{diag}</ul>' if diag else "")
            + (f'<ul class="problems">{problems}</ul>' if problems else ""))


def _legend(colours: dict[str, str]) -> str:
    owners = "".join(f'<span class="key"><i style="background:{c}"></i>{escape(o)}</span>' for o, c in colours.items())
    return ('<div class="legend">'
            '<span class="key"><i class="model-key"></i>model: where it predicted (dashed outline)</span>'
            '<span class="key"><i class="kernel-key"></i>kernel: where the trace says (filled)</span>'
            '<span class="key"><i class="mismatch-key"></i><b class="mm">✗ mismatch</b> (hatched and labelled)</span>'
            f"{owners}</div>")


def _map_section(run: RunFiles, rows: list[EventRow], checks: list[dict[str, Any]], page: int) -> str:
    panels = _panels(run, rows, checks, page)
    colours = _owner_colours(rows)
    _, source = _model_events(run)
    out = ['<section id="map"><h2>Where the buffers went</h2>',
           f'<p class="lede">Each CMA area: the model\'s lane ({escape(source)}) beside the kernel\'s (its trace), '
           "addresses left to right, time downwards: a buffer is a box from the event that allocated it to the one "
           "that released it. Numbers (#) are the events below.</p>"]
    banks = _banks(run, panels)
    if banks:
        out.append(f'<figure class="banks">{banks}</figure>')
    if rows:
        out.append(f'<div class="controls" id="stepper"><button type="button" id="prev" title="previous event">◀'
                   f'</button><input type="range" id="step" min="1" max="{len(rows)}" value="{len(rows)}" '
                   f'aria-label="event"><button type="button" id="next" title="next event">▶</button>'
                   f'<button type="button" id="show-all">all at once</button><span id="step-label">all '
                   f'{len(rows)} events at once: move the slider or click an event to step through them</span></div>')
    out.append(_legend(colours))
    unused = []
    for p in panels:
        note = f' <span class="{"mm" if p.area_mismatch else "ok"}">{escape(p.area_note)}</span>' if p.area_note \
            else ""
        if not p.rows:
            unused.append(f'<tr id="area-{p.index}" class="area-row{" mismatch" if p.area_mismatch else ""}">'
                          f"<td><b>{escape(p.title)}</b></td><td>{_span_text(p.model, p.page_size)}</td>"
                          f"<td>{_span_text(p.kernel, p.page_size)}</td><td>{note}</td></tr>")
            continue
        out.append(f'<figure class="area" id="area-{p.index}"><figcaption><b>{escape(p.title)}</b>{note}'
                   f"</figcaption>{area_map_svg(p, colours)}</figure>")
    if unused:
        out.append('<table class="unused"><thead><tr><th>areas no buffer came from</th><th>model</th>'
                   "<th>kernel</th><th>verdict</th></tr></thead><tbody>" + "".join(unused) + "</tbody></table>")
    if not panels:
        out.append('<p class="none">No CMA area is known: the run stopped before the model or the kernel '
                   "described one.</p>")
    out.append("</section>")
    return "\n".join(out)


def _events_section(rows: list[EventRow]) -> str:
    if not rows:
        return ('<section id="events"><h2>Events</h2><p class="none">No CMA event was predicted or traced.</p>'
                "</section>")
    body = []
    for r in rows:
        # The compared texts are the tracepoint lines as the kernel prints them; unpaired, our own spelling.
        k_text = escape(str(r.check.get("observed"))) if r.check is not None else _event_line(r.kernel)
        m_text = escape(str(r.check.get("expected"))) if r.check is not None else _event_line(r.model)
        if r.check is None:
            result = '<td class="na">not compared</td>'
        elif r.mismatch:
            result = '<td class="mm result"><b>✗ mismatch</b></td>'
        else:
            result = '<td class="ok result">✓ ok</td>'
        cause = escape(str(r.check.get("cause", ""))) if r.check is not None else ""
        links = []
        if r.console_line is not None:
            links.append(f'<a href="#L{r.console_line}">console line {r.console_line}</a>')
        if r.check_anchor:
            links.append(f'<a href="#{r.check_anchor}">check</a>')
        summary = f"#{r.number} {r.owner + ': ' if r.owner else ''}{_describe(r.kernel or r.model)}" + (
            " — MISMATCH" if r.mismatch else "")
        body.append(f'<tr class="event{" mismatch" if r.mismatch else ""}" id="ev-{r.number}" '
                    f'data-step="{r.number}" data-summary="{escape(summary)}"><td class=num>#{r.number}</td>'
                    f"<td>{escape(r.owner)}</td><td><code>{k_text}</code></td><td><code>{m_text}</code></td>"
                    f'{result}<td class="cause">{cause}</td><td class="links">{" · ".join(links)}</td></tr>')
    failed = sum(1 for r in rows if r.mismatch)
    return (f'<section id="events"><h2>Events <small>{len(rows)} in trace order'
            f'{f", {failed} mismatched" if failed else ""}</small></h2>'
            '<table class="events"><thead><tr><th>#</th><th>for</th><th>kernel (traced)</th><th>model</th>'
            "<th>result</th><th>why</th><th>from</th></tr></thead><tbody>" + "\n".join(body) + "</tbody></table>"
            "</section>")


def _event_line(e: Event | None) -> str:
    if e is None:
        return "(no event)"
    head = {"alloc_start": "cma_alloc_start", "alloc_finish": "cma_alloc_finish", "busy_retry": "cma_alloc_busy_retry",
            "release": "cma_release"}[e.kind]
    fields = [f"name={e.area}"]
    if e.pfn is not None:
        fields.append("pfn=none" if e.pfn == NO_PFN else f"pfn=0x{e.pfn:x}")
    fields.append(f"count={e.count}")
    if e.align is not None:
        fields.append(f"align={e.align}")
    if e.kind == "alloc_finish" and e.failed:
        fields.append("FAILED")
    if e.errorno is not None:
        fields.append(f"errorno={e.errorno}")
    return escape(f"{head}: {' '.join(fields)}")


def _free_section(run: RunFiles) -> str:
    points: list[tuple[float, int, str]] = []
    total: int | None = None
    for i, step in enumerate((run.observed or {}).get("capture") or []):
        if not isinstance(step, dict) or not isinstance(step.get("cma_free_kb"), int):
            continue
        t = step.get("t")
        label = ""
        if step.get("event") == "reqbufs":
            change = int(step["cma_free_kb"]) - points[-1][1] if points else 0
            label = f"{step.get('label', '')} REQBUFS {step.get('asked', '?')}" + (f": {change:+} kB" if change else "")
        points.append((float(t) if isinstance(t, (int, float)) else float(i), int(step["cma_free_kb"]), label))
        if isinstance(step.get("cma_total_kb"), int):
            total = int(step["cma_total_kb"])
    if not points:
        return ('<section id="cmafree"><h2>CmaFree over time</h2><p class="none">The capture program reported no '
                "readings (it did not run, or the run stopped before it).</p></section>")
    return ('<section id="cmafree"><h2>CmaFree over time</h2><p class="lede">/proc/meminfo\'s CmaFree at every step '
            "the capture program reported. Pages a release gives back can wait on the per-CPU free lists, uncounted, "
            "until the next allocation drains them, so a rise after REQBUFS 0 may show late.</p>"
            f"<figure>{free_plot_svg(points, total)}</figure></section>")


def _checks_section(checks: list[dict[str, Any]]) -> str:
    if not checks:
        return ('<section id="checks"><h2>Checks</h2><p class="none">No check was run: the run stopped before the '
                "cross-check.</p></section>")
    groups = list(dict.fromkeys(str(c.get("group", "")) for c in checks))
    options = "".join(f'<option value="{escape(g)}">{escape(g)}</option>' for g in groups)
    rows = []
    for i, c in enumerate(checks):
        ok = bool(c.get("passed"))
        rows.append(f'<tr id="check-{i}" class="check{"" if ok else " mismatch"}" data-group="{escape(str(c.get("group", "")))}" '
                    f'data-result="{"pass" if ok else "fail"}"><td>{escape(str(c.get("group", "")))}</td>'
                    f'<td>{escape(str(c.get("name", "")))}</td>'
                    f'<td class="{"ok" if ok else "mm"} result">{"✓ pass" if ok else "<b>✗ fail</b>"}</td>'
                    f'<td><code>{escape(str(c.get("expected", "")))}</code></td>'
                    f'<td><code>{escape(str(c.get("observed", "")))}</code></td>'
                    f'<td class="cause">{escape(str(c.get("cause", "")))}</td></tr>')
    failed = sum(1 for c in checks if not c.get("passed"))
    return (f'<section id="checks"><h2>Checks <small>{len(checks)}, {failed} failed</small></h2>'
            '<div class="controls filters"><label>group <select id="f-group"><option value="all">all</option>'
            f'{options}</select></label><label>result <select id="f-result"><option value="all">all</option>'
            '<option value="fail">failed</option><option value="pass">passed</option></select></label>'
            '<span id="f-count"></span></div>'
            '<table class="checks"><thead><tr><th>group</th><th>check</th><th>result</th><th>expected (model)</th>'
            "<th>observed (kernel)</th><th>likely cause</th></tr></thead><tbody>" + "\n".join(rows)
            + "</tbody></table></section>")


def _console_section(run: RunFiles, rows: list[EventRow]) -> str:
    if run.console is None:
        return ('<section id="console"><h2>Console</h2><p class="none">No console.log: the run stopped before the '
                "board was reached.</p></section>")
    lines = run.console.splitlines()
    back: dict[int, list[int]] = {}
    for r in rows:
        if r.console_line is not None:
            back.setdefault(r.console_line, []).append(r.number)
    keep: Iterable[int] = range(len(lines))
    cut = ""
    if len(lines) > _MAX_CONSOLE_LINES:
        half = _MAX_CONSOLE_LINES // 2
        keep = list(range(half)) + list(range(len(lines) - half, len(lines)))
        cut = f"… {len(lines) - _MAX_CONSOLE_LINES} lines left out here: the whole log is console.log …"
    out = []
    previous = -1
    n_cma = 0
    for i in keep:
        if i != previous + 1 and cut:
            out.append(f'<span class="cut">{escape(cut)}</span>')
        previous = i
        text = _clean(lines[i])
        classes = ["ln"]
        if i + 1 in back or ("cma_" in text and parse_trace_line(text) is not None):
            classes.append("trace")
        elif _MARKER.match(text):
            classes.append("marker")
        elif _BAD_TEXT.search(text):
            classes.append("bad")
        elif _CMA_TEXT.search(text):
            classes.append("cma")
        if len(classes) > 1 and classes[1] != "marker":
            n_cma += 1
        links = "".join(f' <a class="back" href="#ev-{n}">→ event #{n}</a>' for n in back.get(i + 1, []))
        out.append(f'<span id="L{i + 1}" class="{" ".join(classes)}"><span class="no">{i + 1}</span>'
                   f"{escape(text)}{links}</span>")
    return (f'<section id="console"><h2>Console <small>{len(lines)} lines, {n_cma} about CMA highlighted</small></h2>'
            '<p class="lede"><span class="swatch trace">trace events</span> <span class="swatch cma">CMA boot lines'
            '</span> <span class="swatch bad">failures</span>: each traced event links back to its row.</p>'
            # Each line is a block of its own: newlines between them would double the spacing.
            '<pre class="console">' + "".join(out) + "</pre></section>")


def render_report(run: RunFiles) -> str:
    """The whole page for one run folder's data."""
    checks = [c for c in run.report.get("checks") or [] if isinstance(c, dict)]
    page = 4096
    kernel = (run.plan or {}).get("kernel")
    if isinstance(kernel, dict) and isinstance(kernel.get("page_size"), int) and kernel["page_size"] > 0:
        page = int(kernel["page_size"])
    console_lines = run.console.splitlines() if run.console is not None else []
    rows = _event_rows(run, checks, console_lines)
    verdict = str(run.report.get("verdict", "unknown"))
    plan = run.plan or {}
    board = str(plan.get("board") or Path(str(run.report.get("board", "run"))).stem)
    nav = ('<nav><a href="#map">map</a><a href="#events">events</a><a href="#cmafree">CmaFree</a>'
           '<a href="#checks">checks</a><a href="#console">console</a></nav>')
    body = "\n".join([
        _header(run, checks), nav, _map_section(run, rows, checks, page), _events_section(rows),
        _free_section(run), _checks_section(checks), _console_section(run, rows),
        f'<footer>cma-tool {escape(__version__)} · rebuild this page with <code>cma-tool report '
        f"{escape(str(run.folder))}</code></footer>",
    ])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(board)}: {escape(verdict)} — cma-tool run report</title>"
            f"<style>{_CSS}</style></head>\n<body class=\"verdict-{_verdict_class(verdict)}\">\n{body}\n"
            f"<script>{_JS}</script></body></html>\n")


# --- many runs: the matrix's index ---


def render_index(entries: Sequence[tuple[str, dict[str, Any] | None, bool]], title: str = "cma-tool runs") -> str:
    """One row per run: (link to its folder relative to the index, its report.json or None, has report.html)."""
    rows = []
    counts: dict[str, int] = {}
    for link, report, has_page in entries:
        verdict = str(report.get("verdict", "unknown")) if report is not None else "no report"
        counts[verdict] = counts.get(verdict, 0) + 1
        cls = _verdict_class(verdict) if report is not None else "error"
        name = escape(link.rstrip("/") or ".")
        cell = f'<a href="{escape(quote(link.rstrip("/") + "/" + REPORT_HTML))}">{name}</a>' if has_page else name
        checks = [c for c in (report or {}).get("checks") or [] if isinstance(c, dict)]
        failed = sum(1 for c in checks if not c.get("passed"))
        word = _VERDICT_WORD.get(verdict, f"! {verdict.upper()}")
        rows.append(f'<tr class="run {cls}" data-verdict="{escape(verdict)}"><td>{cell}</td>'
                    f'<td><span class="badge {cls}">{escape(word)}</span></td>'
                    f'<td>{escape(Path(str((report or {}).get("board", ""))).name)}</td>'
                    f'<td>{escape(str((report or {}).get("target", "")))}</td>'
                    f'<td class=num>{len(checks) - failed}/{len(checks)}</td>'
                    f'<td>{escape(str((report or {}).get("message", "no report.json: the run did not start")))}'
                    f"</td></tr>")
    summary = ", ".join(f"{n} {escape(v)}" for v, n in counts.items())
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{_CSS}</style></head><body><header class=\"top\"><div class=\"headline\">"
            f"<h1>{escape(title)}</h1><p class=\"message\">{len(entries)} runs: {summary}</p></div></header>"
            '<table class="index"><thead><tr><th>run</th><th>verdict</th><th>board</th><th>target</th>'
            "<th>checks passed</th><th>message</th></tr></thead><tbody>" + "\n".join(rows)
            + "</tbody></table></body></html>\n")


def write_index(run_folders: Sequence[Path], dest: Path) -> Path:
    """Write DEST (index.html) linking each run folder's report.html with its verdict.

    For the matrix command: one page over its cells. Links are relative to
    DEST's folder, so the tree can be moved or archived as a whole. A folder
    without report.json is listed as such (a cell that never started); a
    folder that does not exist is an error.
    """
    entries: list[tuple[str, dict[str, Any] | None, bool]] = []
    for folder in run_folders:
        if not folder.is_dir():
            raise ConfigError(f"{folder}: no such run folder")
        report = None
        if (folder / "report.json").is_file():
            report = _read_json(folder / "report.json", [])
        link = Path(os.path.relpath(folder, dest.parent)).as_posix()
        entries.append((link, report, (folder / REPORT_HTML).is_file()))
    dest.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(dest, render_index(entries))
    return dest


_CSS = """
:root{--pass:#1b7f3b;--mm:""" + MISMATCH_COLOUR + """;--err:#c25400;--ink:#1d1d1f;--dim:#666;--line:#e3e3e3}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 "DejaVu Sans","Liberation Sans",Arial,sans-serif;color:var(--ink);background:#f6f7f9}
body>*{margin-left:24px;margin-right:24px}
code,pre{font-family:"DejaVu Sans Mono","Liberation Mono",monospace;font-size:12px}
header.top{display:flex;gap:20px;align-items:center;margin:0;padding:18px 24px;background:#fff;
 border-bottom:4px solid var(--line)}
header.top.pass{border-color:var(--pass)}header.top.mismatch{border-color:var(--mm)}header.top.error{border-color:var(--err)}
.verdict{font-size:26px;font-weight:bold;color:#fff;padding:10px 18px;border-radius:8px;white-space:nowrap;background:#777}
.verdict.pass{background:var(--pass)}.verdict.mismatch{background:var(--mm)}.verdict.error{background:var(--err)}
h1{font-size:22px;margin:0}h2{font-size:18px;margin:28px 0 8px}h2 small{font-weight:normal;color:var(--dim);font-size:13px}
h3{font-size:13px;margin:0 0 6px;color:var(--dim);text-transform:uppercase;letter-spacing:.04em}
.message{margin:4px 0 0;color:#333}
.facts{display:grid;grid-template-columns:minmax(0,3fr) minmax(0,2fr);gap:24px;background:#fff;padding:14px 18px;
 margin-top:16px;border-radius:8px;border:1px solid var(--line)}
dl{margin:0;display:grid;grid-template-columns:1fr 1fr;gap:3px 18px}dl div{display:flex;gap:10px}
dl div.wide{grid-column:1/-1}
dt{width:80px;flex:none;color:var(--dim)}dd{margin:0;min-width:0;overflow-wrap:anywhere}.dim{color:var(--dim)}
.stagebar{display:flex;height:22px;border-radius:4px;overflow:hidden;margin-bottom:6px;font-size:11px;color:#fff}
.seg{min-width:2px;padding:2px 4px;white-space:nowrap;overflow:hidden}
.seg0{background:#4c78a8}.seg1{background:#72b7b2}.seg2{background:#54a24b}.seg3{background:#b279a2}
.seg4{background:#9d755d}.seg5{background:#f58518}
ul.stages{list-style:none;margin:0;padding:0;display:flex;flex-wrap:wrap;gap:2px 14px;font-size:12px}
ul.stages i{display:inline-block;width:9px;height:9px;border-radius:2px;margin-right:4px}
table{border-collapse:collapse;background:#fff;width:100%}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{background:#eef0f3;font-weight:600;font-size:12px}
.num{text-align:right}
nav{display:flex;gap:16px;margin-top:14px;font-size:13px}a{color:#2457a6}
figure{margin:10px 0;background:#fff;border:1px solid var(--line);border-radius:8px;padding:10px;overflow-x:auto}
figcaption{margin-bottom:6px}svg{max-width:100%;height:auto;display:block}
.lede{color:#444;max-width:1100px;margin:4px 0 10px}.none{color:var(--dim);font-style:italic}
.ok{color:var(--pass)}.mm{color:var(--mm)}.na{color:var(--dim)}
.legend{display:flex;flex-wrap:wrap;gap:6px 18px;font-size:12px;margin:8px 0}
.key{display:inline-flex;align-items:center;gap:6px}.key i{display:inline-block;width:22px;height:12px;border-radius:2px}
.model-key{border:1.5px dashed #666;background:rgba(120,120,120,.18)}.kernel-key{background:#777}
.mismatch-key{border:2px solid var(--mm);background:repeating-linear-gradient(45deg,var(--mm) 0 3px,#fde7ef 3px 6px)}
.controls{display:none}.js .controls{display:flex;gap:8px;align-items:center;flex-wrap:wrap}
#stepper{position:sticky;top:0;z-index:2;background:#fff;border:1px solid var(--line);border-radius:8px;padding:6px 10px}
#step{flex:0 1 320px}#step-label{font-size:13px}button{font:inherit;padding:2px 10px}
.filters{margin-bottom:6px}.filters label{font-size:13px}
.stepping rect.alloc.future{opacity:.1}.stepping rect.alloc.gone{opacity:.3}
rect.alloc.current{stroke:#000;stroke-width:3;stroke-dasharray:none}
g.row.current rect.rowbg{fill:#fff3bf}
tr.event{cursor:pointer}tr.event.current td{background:#fff3bf}tr.mismatch td{background:#fdf0f4}
tr.event.mismatch td:first-child,tr.check.mismatch td:first-child{box-shadow:inset 4px 0 var(--mm)}
td.cause{max-width:480px;color:#333}td.result{white-space:nowrap}td.links{white-space:nowrap;font-size:12px}
.filtered{display:none}
pre.console{background:#15171a;color:#d5d7da;padding:10px 0;border-radius:8px;max-height:70vh;overflow:auto;
 line-height:1.35}
pre.console .ln{display:block;padding:0 12px 0 0}.no{display:inline-block;width:56px;text-align:right;
 padding-right:10px;color:#6b6f75;user-select:none}
.ln.trace{background:#103a5c;color:#fff}.ln.cma{background:#2e3a1f;color:#e9f5d8}.ln.bad{background:#5c1030;color:#fff}
.ln.marker{color:#8aa3c2}.ln:target{outline:2px solid #ffd43b}.cut{display:block;color:#ffd43b;padding-left:66px}
.back{color:#9cc7ff;font-size:11px}
.swatch{padding:1px 6px;border-radius:3px;font-size:12px}.swatch.trace{background:#103a5c;color:#fff}
.swatch.cma{background:#2e3a1f;color:#e9f5d8}.swatch.bad{background:#5c1030;color:#fff}
.badge{font-weight:bold;padding:1px 8px;border-radius:4px;color:#fff;background:#777;white-space:nowrap}
.badge.pass{background:var(--pass)}.badge.mismatch{background:var(--mm)}.badge.error{background:var(--err)}
table.index{margin-top:16px}
ul.diagnostics,ul.problems{background:#fff6e5;border:1px solid #f0d9a8;border-radius:8px;padding:8px 30px}
footer{color:var(--dim);font-size:12px;margin:30px 24px 20px}
@media print{
 body{background:#fff;font-size:11px}body>*{margin-left:0;margin-right:0}
 .controls,#stepper,nav{display:none!important}
 .filtered{display:table-row}
 rect.alloc{opacity:1!important}rect.alloc.current{stroke-width:1}g.row.current rect.rowbg{fill:transparent}
 tr.event.current td{background:none}
 pre.console{max-height:none;overflow:visible;white-space:pre-wrap;background:#fff;color:#000;border:1px solid #999}
 .ln.trace{background:#dbe9f7;color:#000}.ln.cma{background:#eaf4dc;color:#000}.ln.bad{background:#f9d9e4;color:#000}
 .no{color:#777}.back{color:#2457a6}
 figure,tr{break-inside:avoid}figure{overflow:visible;border:0;padding:0}
 header.top{padding:8px 0}
}
"""

# Reads only the page's own attributes and writes only classes and textContent:
# nothing the board printed is ever parsed as HTML here.
_JS = """
(function () {
  var root = document.documentElement, body = document.body;
  root.classList.add('js');
  var slider = document.getElementById('step');
  var label = document.getElementById('step-label');
  var events = Array.prototype.slice.call(document.querySelectorAll('tr.event'));
  var allocs = Array.prototype.slice.call(document.querySelectorAll('rect.alloc'));
  var rows = Array.prototype.slice.call(document.querySelectorAll('g.row'));
  function at(k) {
    if (!slider) return;
    k = Math.max(1, Math.min(+slider.max, k));
    slider.value = k;
    body.classList.add('stepping');
    allocs.forEach(function (el) {
      var from = +el.getAttribute('data-step');
      var u = el.getAttribute('data-until');
      var until = u === null ? Infinity : +u;
      el.classList.toggle('future', from > k);
      el.classList.toggle('gone', until < k);
      el.classList.toggle('current', from === k || until === k);
    });
    rows.forEach(function (el) { el.classList.toggle('current', +el.getAttribute('data-row') === k); });
    events.forEach(function (tr) { tr.classList.toggle('current', +tr.getAttribute('data-step') === k); });
    var tr = document.getElementById('ev-' + k);
    label.textContent = tr ? tr.getAttribute('data-summary') : '';
  }
  function all() {
    body.classList.remove('stepping');
    allocs.concat(rows, events).forEach(function (el) { el.classList.remove('current', 'future', 'gone'); });
    if (slider) { slider.value = slider.max; label.textContent = 'all ' + slider.max + ' events at once'; }
  }
  if (slider) {
    slider.addEventListener('input', function () { at(+slider.value); });
    document.getElementById('prev').addEventListener('click', function () { at(+slider.value - 1); });
    document.getElementById('next').addEventListener('click', function () { at(+slider.value + 1); });
    document.getElementById('show-all').addEventListener('click', all);
    events.forEach(function (tr) {
      tr.addEventListener('click', function (ev) {
        if (ev.target.closest('a')) return;
        at(+tr.getAttribute('data-step'));
        document.getElementById('map').scrollIntoView({behavior: 'smooth'});
      });
    });
  }
  var group = document.getElementById('f-group'), result = document.getElementById('f-result');
  var count = document.getElementById('f-count');
  function filter() {
    var shown = 0, checks = document.querySelectorAll('tr.check');
    Array.prototype.forEach.call(checks, function (tr) {
      var ok = (group.value === 'all' || tr.getAttribute('data-group') === group.value) &&
               (result.value === 'all' || tr.getAttribute('data-result') === result.value);
      tr.classList.toggle('filtered', !ok);
      if (ok) shown++;
    });
    count.textContent = shown + ' of ' + checks.length + ' shown';
  }
  if (group) { group.addEventListener('change', filter); result.addEventListener('change', filter); filter(); }
  window.addEventListener('beforeprint', all);
  body.setAttribute('data-ready', 'yes');
})();
"""
