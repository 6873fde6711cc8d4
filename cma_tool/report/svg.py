"""Memory-map pictures: a plan's banks with its CMA regions and needs (``cma-tool plan --svg``), and for
report.html a run's banks and, per area, every allocation the model predicted beside the one the kernel made.

Written as SVG text directly: the picture is a few dozen rectangles and labels,
and a plotting library would add a heavy dependency for no gain.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from html import escape

from cma_tool.model.lowmem import lowmem_end
from cma_tool.model.profiles import area_alignment
from cma_tool.plan import PlacedArea, Plan
from cma_tool.sizes import format_size, hexaddr

_BAR_W = 900
_BAR_H = 46
_LEFT = 150
#: The plan's map tells up to ten areas apart by colour (Tableau 10); their numbers tell them apart beyond.
_PLAN_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2", "#9d755d", "#eeca3b", "#ff9da6",
                 "#bab0ac")
_EARLY_COLOUR = "#bbbbbb"
_LOWMEM_COLOUR = "#8e24aa"
_REGION_OPACITY = 0.75
#: Label tiers above a bank's bar: a tag that would touch another goes one tier up.
_TIERS = 4
_TIER_H = 15
_LEGEND_ROW_H = 34
_WIDTH = _LEFT + _BAR_W + 60
#: Conservative text widths (px per character at 12 px, DejaVu Sans's widest common glyphs): layout
#: decisions use them so that a real renderer's narrower text never touches its neighbour.
_CHAR_W = 7.8
_BOLD_CHAR_W = 8.6


def _text_w(text: str, *, bold: bool = False) -> float:
    return len(text) * (_BOLD_CHAR_W if bold else _CHAR_W)


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


@dataclass(frozen=True)
class _Item:
    """One thing drawn on a bank's bar: a CMA area or an early reservation."""

    tag: str  # its number in the legend
    name: str
    base: int
    size: int
    colour: str
    opacity: float
    title: str
    area: PlacedArea | None = None  # None: an early reservation


#: A white outline under a label's glyphs: leader lines passing behind it stop short of its letters.
_HALO = 'stroke="#fff" stroke-width="3" paint-order="stroke"'
#: How far a label may slide right of its box before it takes a tier of its own (twice its width if more).
_MAX_SLIDE = 240


def _place_tags(wanted: list[tuple[float, float, str]]) -> list[tuple[float, int]]:
    """Left x and tier for labels of (centre x, width, text), so that no two share any pixel.

    Greedy, left to right: each label wants to be centred over its box (kept on
    the bar's span); it takes the lowest tier where it fits there or slid right
    of that tier's last label, not too far (the labels of one tier keep
    their boxes' order, so their leader lines fan out without crossing), and
    opens a new tier when none has room. Returned in the order given.
    """
    ends: list[float] = []  # per tier, where its last label ends
    out: dict[int, tuple[float, int]] = {}
    for i in sorted(range(len(wanted)), key=lambda i: wanted[i][0]):
        cx, w, _ = wanted[i]
        want = min(max(cx - w / 2, _LEFT), _LEFT + _BAR_W - w)
        slid = ((t, max(want, end + 4)) for t, end in enumerate(ends))
        reach = max(_MAX_SLIDE, 2 * w)  # a long name may slide past a neighbour or two
        fit = next(((t, x) for t, x in slid if x - want <= reach and x + w <= _LEFT + _BAR_W), None)
        if fit is None:
            fit = (len(ends), want)
            ends.append(0.0)
        tier, left = fit
        ends[tier] = left + w
        out[i] = (left, tier)
    return [out[i] for i in range(len(wanted))]


def _tiers(spots: list[tuple[float, int]]) -> int:
    """Tiers a bank's labels need above its bar (at least _TIERS: rows line up when there is room)."""
    return max([_TIERS] + [tier + 1 for _, tier in spots])


def memory_map_svg(plan: Plan) -> str:
    """The plan's memory map: each bank to scale with its CMA areas, early reservations and the lowmem end.

    Every label keeps clear of every other (tests/report/test_plan_svg.py measures
    them in a real browser): an area's name goes inside its box when it fits there,
    otherwise a number above the bar, with a leader line down to the box and the
    area's row in the legend below, which draws the same colour as the box and
    its need against its size.
    """
    banks = sorted(plan.board.banks, key=lambda b: b.base)
    digits = plan.profile.address_digits
    largest = max((b.size for b in banks), default=1)
    scale = _BAR_W / largest
    lowmem = lowmem_end(plan.profile, [(b.base, b.size) for b in banks], plan.board.kernel.layout, plan.cmdline)
    colour_of = {a.name: _PLAN_COLOURS[i % len(_PLAN_COLOURS)] for i, a in enumerate(plan.areas)}
    items: list[_Item] = []
    for i, placed in enumerate(plan.areas):
        label = (placed.label or placed.name) + (" (default)" if placed.is_default else "")
        items.append(_Item(str(i + 1), label, placed.base, placed.size, colour_of[placed.name], _REGION_OPACITY,
                           f"{placed.name} {hexaddr(placed.base, digits)}..{hexaddr(placed.end, digits)} "
                           f"{format_size(placed.size)}; users: {', '.join(placed.users) or 'none'}; "
                           f"need {format_size(placed.footprint or placed.need)}", placed))
    for j, (what, base, size) in enumerate(plan.board.boot.early_reservations):
        items.append(_Item(chr(ord("a") + j % 26), f"{what} (early reservation)", base, size, _EARLY_COLOUR, 1.0,
                           f"{what} {hexaddr(base, digits)} +{format_size(size)}"))
    # Each bank's boxes, and which names go inside them and which above as tags (a name goes inside
    # its box when it fits there and no other box overlaps it), before drawing: tags set row heights.
    layouts = []
    for bank in banks:
        boxes = [(it, _LEFT + (it.base - bank.base) * scale, max(min(it.size, bank.end - it.base) * scale, 3))
                 for it in items if bank.base <= it.base < bank.end]
        inside: list[tuple[_Item, float, float]] = []
        tags: list[tuple[_Item, float, float]] = []
        for it, x, w in boxes:
            alone = all(o is it or x + w <= ox or ox + ow <= x for o, ox, ow in boxes)
            (inside if alone and _text_w(f"{it.tag} {it.name}", bold=True) + 8 <= w else tags).append((it, x, w))
        spots = _place_tags([(x + w / 2, _text_w(it.tag, bold=True) + 4, it.tag) for it, x, w in tags])
        layouts.append((boxes, inside, tags, spots))
    row_tops = [90]
    for *_, spots in layouts:
        row_tops.append(row_tops[-1] + 22 + _tiers(spots) * _TIER_H + _BAR_H + 46)
    legend_top = row_tops[-1] + 10
    height = legend_top + 24 + _LEGEND_ROW_H * len(items) + 40
    parts: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{height}" '
        f'viewBox="0 0 {_WIDTH} {height}" font-family="DejaVu Sans, Arial, sans-serif" font-size="12">',
        '<defs><pattern id="need" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        '<rect width="3" height="6" fill="#000" fill-opacity="0.35"/></pattern></defs>',
        '<rect width="100%" height="100%" fill="#ffffff"/>',
        f'<text class="label" x="20" y="28" font-size="18" font-weight="bold">'
        f'{escape(_clip(plan.board.name, 40))}: CMA memory map</text>',
        f'<text class="label" x="20" y="50" fill="#444">{escape(_clip(plan.board.model, 40))} · kernel '
        f'{escape(plan.profile.name)} · CMA unit {escape(format_size(area_alignment(plan.profile)))} · '
        'bars to scale within the largest bank</text>',
    ]
    drew_lowmem = False
    for row, (bank, (boxes, inside, tags, spots)) in enumerate(zip(banks, layouts, strict=True)):
        y = row_tops[row] + 22 + _tiers(spots) * _TIER_H
        parts.append(f'<text class="label" x="20" y="{y + 18}" font-weight="bold">bank {row}</text>')
        parts.append(f'<text class="label" x="20" y="{y + 34}" fill="#444">{escape(format_size(bank.size))}</text>')
        parts.append(f'<rect class="bank" data-base="{hexaddr(bank.base, digits)}" x="{_LEFT}" y="{y}" '
                     f'width="{bank.size * scale:.1f}" height="{_BAR_H}" fill="#eeeeee" stroke="#555"/>')
        start_text, end_text = hexaddr(bank.base, digits), hexaddr(bank.end, digits)
        if bank.size * scale >= _text_w(start_text) + _text_w(end_text) + 12:
            parts.append(f'<text class="label" x="{_LEFT}" y="{y + _BAR_H + 16}" fill="#444">{start_text}</text>')
            parts.append(f'<text class="label" x="{_LEFT + bank.size * scale:.1f}" y="{y + _BAR_H + 16}" '
                         f'text-anchor="end" fill="#444">{end_text}</text>')
        else:  # a bar too short for both ends under it: one range, reading on to the right
            parts.append(f'<text class="label" x="{_LEFT}" y="{y + _BAR_H + 16}" fill="#444">'
                         f'{start_text}–{end_text}</text>')
        for it, x, w in boxes:
            area = it.area
            parts.append(f'<rect class="{"region" if area else "early"}" data-name="{escape(it.name)}" '
                         f'x="{x:.1f}" y="{y}" width="{w:.1f}" height="{_BAR_H}" fill="{it.colour}" '
                         f'fill-opacity="{it.opacity}" stroke="#222"><title>{escape(it.title)}</title></rect>')
            if area is not None and area.footprint:
                fw = min(area.footprint, area.size) * scale
                parts.append(f'<rect class="need" x="{x:.1f}" y="{y + 8}" width="{fw:.1f}" height="{_BAR_H - 16}" '
                             'fill="url(#need)"/>')
            if area is not None and not area.fits:
                parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{_BAR_H}" fill="none" '
                             'stroke="#d00" stroke-width="3"/>')
        for it, x, _ in inside:
            parts.append(f'<text class="label" x="{x + 4:.1f}" y="{y + _BAR_H - 6}" font-weight="bold" '
                         f'fill="#000">{escape(f"{it.tag} {it.name}")}</text>')
        labels = []
        for (it, x, w), (left, tier) in zip(tags, spots, strict=True):
            ty = y - 6 - tier * _TIER_H
            tw = _text_w(it.tag, bold=True) + 4
            parts.append(f'<line class="leader" x1="{x + w / 2:.1f}" y1="{y}" x2="{left + tw / 2:.1f}" y2="{ty + 2}" '
                         'stroke="#555" stroke-width="1"/>')
            labels.append(f'<text class="label tag" x="{left + 2:.1f}" y="{ty}" font-weight="bold" {_HALO} '
                          f'fill="{it.colour if it.colour != _EARLY_COLOUR else "#555"}">{escape(it.tag)}</text>')
        parts += labels  # over every leader line, so that a line to a higher tier never hides a name
        if lowmem is not None and bank.base < lowmem < bank.end:
            drew_lowmem = True
            lx = _LEFT + (lowmem - bank.base) * scale
            parts.append(f'<rect class="highmem" x="{lx:.2f}" y="{y}" width="{_LEFT + bank.size * scale - lx:.2f}" '
                         f'height="{_BAR_H}" fill="{_LOWMEM_COLOUR}" fill-opacity="0.08"/>')
            parts.append(f'<line class="lowmem" data-addr="{hexaddr(lowmem, digits)}" x1="{lx:.2f}" x2="{lx:.2f}" '
                         f'y1="{y - 4}" y2="{y + _BAR_H + 22}" stroke="{_LOWMEM_COLOUR}" stroke-width="2" '
                         'stroke-dasharray="5 3"/>')
            note = f"lowmem ends {hexaddr(lowmem, digits)} · highmem above"
            nx = min(max(lx - _text_w(note) / 2, _LEFT), _WIDTH - 10 - _text_w(note))
            parts.append(f'<text class="label" x="{nx:.1f}" y="{y + _BAR_H + 36}" fill="{_LOWMEM_COLOUR}">'
                         f'{escape(note)}</text>')
        elif lowmem is not None and lowmem <= bank.base:
            parts.append(f'<rect class="highmem" x="{_LEFT}" y="{y}" width="{bank.size * scale:.2f}" '
                         f'height="{_BAR_H}" fill="{_LOWMEM_COLOUR}" fill-opacity="0.08"/>')
            parts.append(f'<text class="label" x="{_LEFT}" y="{y + _BAR_H + 36}" fill="{_LOWMEM_COLOUR}">'
                         'all highmem (lowmem ended below this bank)</text>')
    # The legend: one row per thing on the bars, in the box's own colour, need against size.
    ly = legend_top
    for x, text in ((20, "#"), (64, "region"), (290, "range"), (520, "size"), (610, "need"), (710, "need of size"),
                    (870, "status")):
        parts.append(f'<text class="label" x="{x}" y="{ly + 12}" font-weight="bold">{text}</text>')
    for k, it in enumerate(items):
        ry = ly + 24 + k * _LEGEND_ROW_H
        area = it.area
        parts.append(f'<text class="label" x="20" y="{ry + 12}" font-weight="bold">{escape(it.tag)}</text>')
        parts.append(f'<rect class="swatch" data-name="{escape(it.name)}" x="40" y="{ry + 1}" width="16" height="14" '
                     f'fill="{it.colour}" fill-opacity="{it.opacity}" stroke="#222"/>')
        parts.append(f'<text class="label" x="64" y="{ry + 12}">{escape(_clip(it.name, 26))}</text>')
        parts.append(f'<text class="label" x="290" y="{ry + 12}">{hexaddr(it.base, digits)}–'
                     f'{hexaddr(it.base + it.size, digits)}</text>')
        parts.append(f'<text class="label" x="520" y="{ry + 12}">{escape(format_size(it.size))}</text>')
        if area is None:
            continue
        need = area.footprint or area.need
        parts.append(f'<text class="label" x="610" y="{ry + 12}">{escape(format_size(need)) if need else "-"}</text>')
        parts.append(f'<rect x="710" y="{ry + 2}" width="150" height="12" fill="#ffffff" stroke="#555"/>')
        if need:
            parts.append(f'<rect class="need-bar" x="710" y="{ry + 2}" width="{min(need / area.size, 1) * 150:.1f}" '
                         f'height="12" fill="{it.colour}" fill-opacity="{it.opacity}"/>')
        status = (f"fits, {format_size(area.headroom)} free" if area.fits else "DOES NOT FIT") if need else "no need declared"
        parts.append(f'<text class="label" x="870" y="{ry + 12}" fill="{"#d00" if not area.fits else "#222"}">'
                     f'{escape(status)}</text>')
        users = ", ".join(area.users) or "none"
        parts.append(f'<text class="label" x="64" y="{ry + 27}" font-size="11" fill="#555">'
                     f'{escape(_clip("users: " + users, 110))}</text>')
    ky = height - 22
    parts.append(f'<rect x="20" y="{ky}" width="14" height="14" fill="url(#need)" stroke="#999"/>'
                 f'<text class="label" x="40" y="{ky + 12}">need: the buffers\' span, alignment included</text>')
    if drew_lowmem:
        parts.append(f'<line x1="420" x2="420" y1="{ky - 2}" y2="{ky + 16}" stroke="{_LOWMEM_COLOUR}" '
                     f'stroke-width="2" stroke-dasharray="5 3"/><text class="label" x="430" y="{ky + 12}">'
                     'end of lowmem (highmem shaded)</text>')
    parts.append(f'<rect x="680" y="{ky}" width="14" height="14" fill="none" stroke="#d00" stroke-width="3"/>'
                 f'<text class="label" x="700" y="{ky + 12}">does not fit its need</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


# --- A run's map: where each allocation went, the model's lane beside the kernel's ---
#
# Used by report.html (html.py). Each CMA area is one panel with two lanes
# side by side, "model" (predicted: a dashed outline) and "kernel" (traced:
# a solid fill), at one scale. Addresses run left to right as in the plan's
# map, each lane from its own side's area base, so a buffer the two sides
# put at the same offset lines up even when the area itself moved (the
# axis labels then differ, and the area is marked). Time runs down, one row
# per placement event (cma_alloc_finish, cma_release, cma_alloc_busy_retry):
# a buffer is a box from the row that allocated it to the row that released
# it, and a reused hole reads as a later box in the same columns.
#
# The scale is part of the page's contract (the tests measure it): each
# panel <g class="area-map"> carries data-first-pfn-model,
# data-first-pfn-kernel (each lane's left edge: its area's base pfn),
# data-px-per-page, data-lane-x-model and data-lane-x-kernel; an allocation
# <rect class="alloc"> of pages [data-pfn, data-pfn + data-count) in lane L
# is drawn at
#     x = lane-x-L + (data-pfn - first-pfn-L) * px-per-page
# (rounded to 0.01 px), width max(data-count * px-per-page, MIN_BOX_W), and
# its top is its event's row's top + 2 (rows carry data-y).

LANE_W = 340
LANE_GAP = 24
AXIS_W = 52
NOTES_GAP = 18
NOTES_W = 600
ROW_H = 22
LINE_H = 14
MAP_HEAD = 58
MIN_BOX_W = 2.0
#: Characters of a note line at the notes' font size (bold, the widest case); a note wraps onto 3 lines at most.
NOTE_CHARS = 84
NOTE_LINES = 3
MISMATCH_COLOUR = "#c2185b"
#: Stream colours: the plan's palette without its red, which would sit too close to a mismatch.
OWNER_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#b279a2", "#72b7b2", "#9d755d", "#eeca3b")
BOOT_COLOUR = "#9e9e9e"
LANES = ("model", "kernel")
#: A window narrower than this many pages (or the area, if smaller) would draw a lone small buffer as a full lane.
_MIN_WINDOW = 2048


@dataclass(frozen=True)
class Span:
    """Pages [pfn, pfn + pages)."""

    pfn: int
    pages: int

    @property
    def end(self) -> int:
        return self.pfn + self.pages


@dataclass(frozen=True)
class Placement:
    """One allocation as one side (model or kernel) placed it."""

    lane: str  # "model" | "kernel"
    span: Span
    step: int  # event number (1-based) of its cma_alloc_finish
    until: int | None  # event number of its cma_release; None: still held when the trace ended
    owner: str  # the stream, or the boot-time user, it was allocated for
    name: str  # e.g. "a #2"
    mismatch: bool  # the check of its cma_alloc_finish failed


@dataclass(frozen=True)
class Row:
    """One placement event of an area: what the notes column says, and marks without a box."""

    step: int
    note: str
    mismatch: bool
    marks: tuple[tuple[str, str], ...] = ()  # (lane, text): a failed allocation, a busy retry, ...


@dataclass(frozen=True)
class AreaPanel:
    index: int
    name: str
    title: str
    model: Span | None  # the area as the model has it (None: the model has no such area)
    kernel: Span | None  # the area as the kernel created it (None: not created / not known)
    area_note: str  # the boot check's verdict on the area ("" when not checked)
    area_mismatch: bool
    placements: tuple[Placement, ...]
    rows: tuple[Row, ...]
    page_size: int = 4096


def lane_windows(panel: AreaPanel) -> tuple[dict[str, int], int]:
    """Each lane's first pfn (its area's base) and the pages both lanes show."""
    areas = {"model": panel.model, "kernel": panel.kernel}
    used = {lane: [p.span for p in panel.placements if p.lane == lane] for lane in LANES}
    first: dict[str, int] = {}
    for lane in LANES:
        other = areas["kernel" if lane == "model" else "model"]
        area = areas[lane] or other
        starts = [s.pfn for s in used[lane]]
        first[lane] = min([area.pfn] + starts) if area is not None else min(starts, default=0)
    largest = max((s.pages for s in areas.values() if s is not None), default=1)
    reach = max((s.end - first[lane] for lane in LANES for s in used[lane]), default=0)
    if not reach:
        return first, largest
    # A little room past the last buffer, so the end of the used range reads as an end.
    pages = min(reach + max(reach // 16, 1), largest)
    return first, max(pages, reach, min(_MIN_WINDOW, largest))


def _addr(pfn: int, page_size: int) -> str:
    return f"0x{pfn * page_size:08x}"


def _wrap(text: str) -> list[str]:
    """A note on at most NOTE_LINES lines (the whole text is in its <title>)."""
    lines = textwrap.wrap(text, NOTE_CHARS) or [""]
    if len(lines) > NOTE_LINES:
        lines = lines[:NOTE_LINES]
        lines[-1] = lines[-1][: NOTE_CHARS - 1] + "…"
    return lines


def area_map_svg(panel: AreaPanel, colour_of: dict[str, str]) -> str:
    """One area's panel: two lanes at one scale, a row per placement event, notes on the right."""
    first, pages = lane_windows(panel)
    ppp = LANE_W / pages
    lane_x = {"model": AXIS_W, "kernel": AXIS_W + LANE_W + LANE_GAP}
    notes_x = AXIS_W + 2 * LANE_W + LANE_GAP + NOTES_GAP
    rows = panel.rows or (Row(0, "no allocation in this area", False),)
    notes = [_wrap(r.note) for r in rows]
    tops = [MAP_HEAD]
    for lines in notes:
        tops.append(tops[-1] + ROW_H + (len(lines) - 1) * LINE_H)
    row_of = {r.step: i for i, r in enumerate(rows)}
    body_h = tops[-1] - MAP_HEAD
    width = notes_x + NOTES_W
    height = tops[-1] + 26
    pat = f"mismatch-{panel.index}"

    def x_of(pfn: int, lane: str) -> float:
        return round(lane_x[lane] + (pfn - first[lane]) * ppp, 2)

    parts = [
        f'<svg class="area-svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(panel.name)}: allocations, model beside kernel" '
        'font-family="DejaVu Sans, Liberation Sans, Arial, sans-serif" font-size="12">',
        f'<defs><pattern id="{pat}" width="7" height="7" patternUnits="userSpaceOnUse" '
        f'patternTransform="rotate(45)"><rect width="7" height="7" fill="#fde7ef"/>'
        f'<rect width="3.5" height="7" fill="{MISMATCH_COLOUR}"/></pattern></defs>',
        f'<g class="area-map" data-area="{escape(panel.name)}" data-first-pfn-model="{first["model"]}" '
        f'data-first-pfn-kernel="{first["kernel"]}" data-pages="{pages}" data-px-per-page="{ppp!r}" '
        f'data-lane-x-model="{lane_x["model"]}" data-lane-x-kernel="{lane_x["kernel"]}" '
        f'data-page-size="{panel.page_size}">',
    ]
    for lane in LANES:
        x0 = lane_x[lane]
        area = panel.model if lane == "model" else panel.kernel
        what = "model (predicted)" if lane == "model" else "kernel (traced)"
        last = first[lane] + pages
        parts.append(f'<text x="{x0}" y="16" font-weight="bold" font-size="13">{what}</text>')
        parts.append(f'<text x="{x0}" y="{MAP_HEAD - 8}" fill="#555" font-size="11">'
                     f'{_addr(first[lane], panel.page_size)}</text><text x="{x0 + LANE_W}" y="{MAP_HEAD - 8}" '
                     f'fill="#555" font-size="11" text-anchor="end">{_addr(last, panel.page_size)}</text>')
        parts.append(f'<rect x="{x0}" y="{MAP_HEAD}" width="{LANE_W}" height="{body_h}" fill="#fafafa" '
                     'stroke="#d0d0d0"/>')
        if area is None:
            parts.append(f'<text x="{x0}" y="32" fill="{MISMATCH_COLOUR}" font-size="11" font-weight="bold">'
                         '✗ no such area on this side</text>')
            continue
        ax, aend = max(area.pfn, first[lane]), min(area.end, last)
        if aend > ax:
            cls = "area-box mismatch" if panel.area_mismatch else "area-box"
            stroke = f'stroke="{MISMATCH_COLOUR}" stroke-width="2" stroke-dasharray="6 3"' if panel.area_mismatch \
                else 'stroke="#8a8a8a"'
            parts.append(f'<rect class="{cls}" data-lane="{lane}" data-pfn="{area.pfn}" data-count="{area.pages}" '
                         f'x="{x_of(ax, lane)}" y="{MAP_HEAD}" width="{(aend - ax) * ppp:.2f}" height="{body_h}" '
                         f'fill="#eef2f7" {stroke}><title>{escape(panel.name)} ({lane}): '
                         f'{_addr(area.pfn, panel.page_size)}..{_addr(area.end, panel.page_size)}</title></rect>')
        detail = f"area at {_addr(area.pfn, panel.page_size)}, {format_size(area.pages * panel.page_size)}"
        colour = MISMATCH_COLOUR if panel.area_mismatch else "#444"
        mark = "✗ " if panel.area_mismatch else ""
        parts.append(f'<text x="{x0}" y="32" fill="{colour}" font-size="11">{mark}{escape(detail)}</text>')
    parts.append(f'<text x="{notes_x}" y="16" font-weight="bold" font-size="13">what happened</text>')
    parts.append(f'<text x="{notes_x}" y="{MAP_HEAD - 8}" fill="#555" font-size="11">time runs down: a row per '
                 'allocation, release or retry, numbered as in the events</text>')
    marks: list[str] = []
    for i, (row, lines) in enumerate(zip(rows, notes, strict=True)):
        y, h = tops[i], tops[i + 1] - tops[i]
        cls = "row mismatch" if row.mismatch else "row"
        parts.append(f'<g class="{cls}" data-row="{row.step}" data-y="{y}">')
        parts.append(f'<rect class="rowbg" x="0" y="{y}" width="{width}" height="{h}" fill="transparent"/>')
        if i:
            parts.append(f'<line x1="{AXIS_W}" x2="{notes_x - NOTES_GAP}" y1="{y}" y2="{y}" stroke="#ececec"/>')
        if row.step:
            parts.append(f'<a href="#ev-{row.step}"><text x="{AXIS_W - 8}" y="{y + 15}" text-anchor="end" '
                         f'fill="#555" font-size="11">#{row.step}</text></a>')
        for lane, text in row.marks:
            # Drawn last, over the boxes of buffers held at the time.
            marks.append(f'<text class="mark" data-lane="{escape(lane)}" x="{lane_x.get(lane, AXIS_W) + 4}" '
                         f'y="{y + 15}" font-size="11" font-weight="bold" fill="#8d4a00" stroke="#fff" '
                         f'stroke-width="3" paint-order="stroke">{escape(text if len(text) <= 48 else text[:47] + "…")}'
                         "</text>")
        fill = MISMATCH_COLOUR if row.mismatch else "#222"
        weight = ' font-weight="bold"' if row.mismatch else ""
        spans = "".join(f'<tspan x="{notes_x}" dy="{0 if j == 0 else LINE_H}">{escape(line)}</tspan>'
                        for j, line in enumerate(lines))
        parts.append(f'<text class="note" x="{notes_x}" y="{y + 15}" fill="{fill}" font-size="11.5"{weight}>'
                     f'<title>{escape(row.note)}</title>{spans}</text>')
        parts.append("</g>")
    for p in panel.placements:
        top = row_of.get(p.step)
        if top is None:
            continue
        bottom = row_of.get(p.until, len(rows) - 1) if p.until is not None else len(rows) - 1
        x = x_of(p.span.pfn, p.lane)
        w = max(p.span.pages * ppp, MIN_BOX_W)
        y = tops[top] + 2
        h = tops[bottom + 1] - tops[top] - 4
        colour = colour_of.get(p.owner, BOOT_COLOUR)
        if p.mismatch:
            look = f'fill="url(#{pat})" stroke="{MISMATCH_COLOUR}" stroke-width="2"'
        elif p.lane == "model":
            look = f'fill="{colour}" fill-opacity="0.22" stroke="{colour}" stroke-width="1.5" stroke-dasharray="4 2"'
        else:
            look = f'fill="{colour}" fill-opacity="0.9" stroke="#1a1a1a" stroke-opacity="0.6"'
        cls = "alloc mismatch" if p.mismatch else "alloc"
        until = f' data-until="{p.until}"' if p.until is not None else ""
        held = "" if p.until is not None else ", held to the end"
        title = (f"{p.name} ({p.lane}): {p.span.pages} pages at pfn 0x{p.span.pfn:x} "
                 f"({_addr(p.span.pfn, panel.page_size)}), event #{p.step}{held}"
                 + (" — MISMATCH" if p.mismatch else ""))
        parts.append(f'<rect class="{cls}" data-lane="{p.lane}" data-area="{escape(panel.name)}" '
                     f'data-pfn="{p.span.pfn}" data-count="{p.span.pages}" data-step="{p.step}"{until} '
                     f'data-owner="{escape(p.owner)}" data-mismatch="{str(p.mismatch).lower()}" '
                     f'x="{x}" y="{y}" width="{w:.2f}" height="{h}" rx="2" {look}>'
                     f'<title>{escape(title)}</title></rect>')
        halo = 'stroke="#fff" stroke-width="3" paint-order="stroke"'
        if p.mismatch:
            # Not colour alone: the box says it in words (the notes column says why), inside when it fits.
            tx = x + 3 if w >= 74 else x + w + 3
            parts.append(f'<text class="mismatch-label" data-lane="{p.lane}" data-step="{p.step}" x="{tx:.2f}" '
                         f'y="{y + 13}" font-size="11" font-weight="bold" fill="{MISMATCH_COLOUR}" {halo}>'
                         '✗ mismatch</text>')
        elif w >= 7.2 * len(p.name) + 6:
            ink = 'fill="#fff"' if p.lane == "kernel" else f'fill="{colour}" font-weight="bold"'
            parts.append(f'<text x="{x + 4:.2f}" y="{y + 13}" font-size="11" {ink} pointer-events="none">'
                         f'{escape(p.name)}</text>')
    parts += marks
    largest = max((a.pages for a in (panel.model, panel.kernel) if a is not None), default=pages)
    shown = f"the first {format_size(pages * panel.page_size)} of each area (no buffer beyond)" if pages < largest \
        else f"{format_size(pages * panel.page_size)} wide"
    parts.append(f'<text x="{AXIS_W}" y="{tops[-1] + 18}" fill="#666" font-size="11">'
                 f'scale: {ppp * (1 << 20) / panel.page_size:.2f} px per MiB; each lane from its own area base; '
                 f'{shown}</text>')
    parts.append("</g></svg>")
    return "\n".join(parts)


@dataclass(frozen=True)
class BankArea:
    """An area on the banks' overview: where the plan put it, and where the kernel did."""

    index: int
    name: str
    title: str
    planned: tuple[int, int] | None  # (base, size) in bytes
    kernel: tuple[int, int] | None
    mismatch: bool


def banks_svg(banks: list[tuple[int, int]], areas: list[BankArea]) -> str:
    """The board's banks to scale with every CMA area: the plan's on the bar, the kernel's in a strip under it.

    Area names go above the bar in tiers with leader lines (the plan map's placement,
    :func:`_place_tags`), so small neighbouring areas never print over each other.
    """
    banks = sorted(banks)
    largest = max((size for _, size in banks), default=1)
    scale = _BAR_W / largest
    # One neutral colour for areas: on this page colours belong to the streams that own buffers.
    fill, ink = "#6f84a3", "#2f4058"
    # Per bank: the tiers of names, the bar and strip, the ends, and one line per mismatch.
    mismatches = [sum(1 for a in areas if a.mismatch and a.kernel is not None and base <= a.kernel[0] < base + size)
                  for base, size in banks]
    named = [[(a, _LEFT + (a.planned[0] - base) * scale, max(a.planned[1] * scale, 3)) for a in areas
              if a.planned is not None and base <= a.planned[0] < base + size] for base, size in banks]
    spots_of = [_place_tags([(x + w / 2, _text_w(_clip(a.title, 40), bold=True), a.title) for a, x, w in row])
                for row in named]
    row_hs = [14 + _tiers(spots) * _TIER_H + 62 + 14 * n for spots, n in zip(spots_of, mismatches, strict=True)]
    height = 20 + sum(row_hs) + 20
    parts = [f'<svg class="banks-svg" viewBox="0 0 {_LEFT + _BAR_W + 40} {height}" width="{_LEFT + _BAR_W + 40}" '
             f'height="{height}" role="img" aria-label="memory banks and CMA areas" '
             'font-family="DejaVu Sans, Liberation Sans, Arial, sans-serif" font-size="12">',
             f'<defs><pattern id="bank-mismatch" width="6" height="6" patternUnits="userSpaceOnUse" '
             f'patternTransform="rotate(45)"><rect width="3" height="6" fill="{MISMATCH_COLOUR}"/></pattern></defs>']
    top = 20
    for row, (base, size) in enumerate(banks):
        y = top + 14 + _tiers(spots_of[row]) * _TIER_H
        top += row_hs[row]
        end = base + size
        parts.append(f'<text x="10" y="{y + 15}" font-weight="bold">bank {row}</text>'
                     f'<text x="10" y="{y + 30}" fill="#555">{escape(format_size(size))}</text>')
        parts.append(f'<rect x="{_LEFT}" y="{y}" width="{size * scale:.1f}" height="22" fill="#eeeeee" '
                     'stroke="#666"/>')
        parts.append(f'<text x="{_LEFT}" y="{y + 48}" fill="#555" font-size="11">0x{base:08x}</text>'
                     f'<text x="{_LEFT + size * scale:.1f}" y="{y + 48}" fill="#555" font-size="11" '
                     f'text-anchor="end">0x{end:08x}</text>')
        for a, x, w in named[row]:
            parts.append(f'<a href="#area-{a.index}"><rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="22" '
                         f'fill="{fill}" stroke="#222"><title>{escape(a.title)} (plan)</title></rect></a>')
        n_mismatch = 0
        for a in areas:
            if a.kernel is not None and base <= a.kernel[0] < end:
                x = _LEFT + (a.kernel[0] - base) * scale
                w = max(a.kernel[1] * scale, 3)
                look = f'fill="url(#bank-mismatch)" stroke="{MISMATCH_COLOUR}"' if a.mismatch else \
                    f'fill="{fill}" fill-opacity="0.45" stroke="#222"'
                parts.append(f'<rect class="kernel-area" x="{x:.1f}" y="{y + 25}" width="{w:.1f}" height="8" '
                             f'{look}><title>{escape(a.name)} as the kernel created it</title></rect>')
                if a.mismatch:
                    parts.append(f'<text x="{_LEFT}" y="{y + 64 + 14 * n_mismatch}" font-size="11" '
                                 f'font-weight="bold" fill="{MISMATCH_COLOUR}">✗ mismatch: the kernel put '
                                 f'{escape(_clip(a.name, 40))} at 0x{a.kernel[0]:08x}</text>')
                    n_mismatch += 1
        labels = []
        for (a, x, w), (left, tier) in zip(named[row], spots_of[row], strict=True):
            text = _clip(a.title, 40)
            ty = y - 6 - tier * _TIER_H
            parts.append(f'<line class="leader" x1="{x + w / 2:.1f}" y1="{y}" '
                         f'x2="{left + _text_w(text, bold=True) / 2:.1f}" y2="{ty + 2}" stroke="#999"/>')
            labels.append(f'<a href="#area-{a.index}"><text x="{left:.1f}" y="{ty}" font-weight="bold" {_HALO} '
                          f'fill="{ink}">{escape(text)}</text></a>')
        parts += labels  # over every leader line
    parts.append(f'<text x="10" y="{height - 4}" fill="#666" font-size="11">bars to scale within the largest bank; '
                 'the plan\'s areas on the bar, the kernel\'s in the strip under it</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def free_plot_svg(points: list[tuple[float, int, str]], total_kb: int | None) -> str:
    """CmaFree (kB) against the capture program's clock; labelled points are the REQBUFS readings."""
    w, h, left, top, right_pad, bottom = 1100, 240, 70, 20, 30, 40
    if not points:
        return ""
    ts = [p[0] for p in points]
    kbs = [p[1] for p in points] + ([total_kb] if total_kb else [])
    t0, t1 = min(ts), max(ts)
    lo, hi = min(kbs), max(kbs)
    pad = max((hi - lo) // 10, 64)
    lo, hi = max(lo - pad, 0), hi + pad
    span_t = (t1 - t0) or 1.0

    def px(t: float) -> float:
        return left + (t - t0) / span_t * (w - left - right_pad)

    def py(kb: int) -> float:
        return top + (hi - kb) / (hi - lo) * (h - top - bottom)

    parts = [f'<svg class="free-svg" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" '
             'aria-label="CmaFree over time" font-family="DejaVu Sans, Liberation Sans, Arial, sans-serif" '
             'font-size="11">',
             f'<rect x="{left}" y="{top}" width="{w - left - right_pad}" height="{h - top - bottom}" fill="#fafafa" '
             'stroke="#ccc"/>']
    for kb in (lo, (lo + hi) // 2, hi):
        parts.append(f'<text x="{left - 6}" y="{py(kb) + 4:.1f}" text-anchor="end" fill="#555">{kb / 1024:.1f}</text>'
                     f'<line x1="{left}" x2="{w - right_pad}" y1="{py(kb):.1f}" y2="{py(kb):.1f}" stroke="#eee"/>')
    parts.append(f'<text x="{left}" y="{h - 10}" fill="#555">{t0:.2f} s</text>'
                 f'<text x="{w - right_pad}" y="{h - 10}" text-anchor="end" fill="#555">{t1:.2f} s '
                 '(capture program clock)</text>'
                 f'<text x="{left - 6}" y="12" text-anchor="end" fill="#555">MiB</text>')
    if total_kb:
        parts.append(f'<line x1="{left}" x2="{w - right_pad}" y1="{py(total_kb):.1f}" y2="{py(total_kb):.1f}" '
                     f'stroke="#888" stroke-dasharray="5 3"/><text x="{w - right_pad - 4}" y="{py(total_kb) - 4:.1f}" '
                     f'text-anchor="end" fill="#666">CmaTotal {total_kb / 1024:.1f} MiB</text>')
    # A step line: CmaFree holds its value until the next reading.
    path: list[str] = []
    for i, (t, kb, _) in enumerate(points):
        if i:
            path.append(f"{px(t):.1f},{py(points[i - 1][1]):.1f}")
        path.append(f"{px(t):.1f},{py(kb):.1f}")
    parts.append(f'<polyline points="{" ".join(path)}" fill="none" stroke="#4c78a8" stroke-width="2"/>')
    n = 0
    for t, kb, label in points:
        r = 4 if label else 2
        parts.append(f'<circle class="reading" data-t="{t}" data-kb="{kb}" cx="{px(t):.1f}" cy="{py(kb):.1f}" '
                     f'r="{r}" fill="#4c78a8"><title>{escape(label or "reading")}: {kb} kB at {t:.3f} s</title>'
                     '</circle>')
        if label:
            right = px(t) > left + (w - left - right_pad) / 2
            tx, anchor = (px(t) - 6, "end") if right else (px(t) + 6, "start")
            parts.append(f'<text x="{tx:.1f}" y="{py(kb) + (16 if n % 2 else -8):.1f}" text-anchor="{anchor}" '
                         f'fill="#222">{escape(label)}</text>')
            n += 1
    parts.append("</svg>")
    return "\n".join(parts)
