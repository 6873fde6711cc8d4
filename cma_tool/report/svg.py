"""A memory-map picture of a plan: one bar per bank, CMA regions in place, needs inside.

Written as SVG text directly: the picture is a few dozen rectangles and labels,
and a plotting library would add a heavy dependency for no gain.
"""

from __future__ import annotations

from html import escape

from cma_tool.plan import Plan
from cma_tool.sizes import format_size, hexaddr

_BAR_W = 900
_BAR_H = 46
_ROW_H = 150
_LEFT = 150
_COLOURS = ("#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2", "#9d755d")


def memory_map_svg(plan: Plan) -> str:
    banks = sorted(plan.board.banks, key=lambda b: b.base)
    digits = plan.profile.address_digits
    largest = max((b.size for b in banks), default=1)
    height = 90 + _ROW_H * len(banks) + 60
    parts: list[str] = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_LEFT + _BAR_W + 60}" height="{height}" '
        'font-family="DejaVu Sans, Arial, sans-serif" font-size="12">',
        '<defs><pattern id="need" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
        '<rect width="3" height="6" fill="#000" fill-opacity="0.35"/></pattern></defs>',
        '<rect width="100%" height="100%" fill="#ffffff"/>',
        f'<text x="20" y="28" font-size="18" font-weight="bold">{escape(plan.board.name)}: CMA memory map</text>',
        f'<text x="20" y="50" fill="#444">{escape(plan.board.model)} · kernel {escape(plan.profile.name)} · '
        f'CMA unit {escape(format_size(plan.profile.cma_min_bytes))} · bar length to scale within the largest bank</text>',
    ]
    colour_of = {a.name: _COLOURS[i % len(_COLOURS)] for i, a in enumerate(plan.areas)}
    for row, bank in enumerate(banks):
        y = 90 + row * _ROW_H
        scale = _BAR_W / largest
        bar_w = bank.size * scale
        parts.append(f'<text x="20" y="{y + 18}" font-weight="bold">bank {row}</text>')
        parts.append(f'<text x="20" y="{y + 34}" fill="#444">{escape(format_size(bank.size))}</text>')
        parts.append(f'<rect x="{_LEFT}" y="{y}" width="{bar_w:.1f}" height="{_BAR_H}" fill="#eeeeee" stroke="#555"/>')
        parts.append(f'<text x="{_LEFT}" y="{y + _BAR_H + 16}" fill="#444">{hexaddr(bank.base, digits)}</text>')
        parts.append(f'<text x="{_LEFT + bar_w:.1f}" y="{y + _BAR_H + 16}" text-anchor="end" fill="#444">'
                     f'{hexaddr(bank.end, digits)}</text>')
        for what, base, size in plan.board.boot.early_reservations:
            if bank.base <= base < bank.end:
                x = _LEFT + (base - bank.base) * scale
                w = max(min(size, bank.end - base) * scale, 2)
                parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{_BAR_H}" fill="#bbbbbb">'
                             f'<title>{escape(what)} {hexaddr(base, digits)} +{escape(format_size(size))}</title></rect>')
                parts.append(f'<text x="{x + 3:.1f}" y="{y + 14}" font-size="10" fill="#333">{escape(what)}</text>')
        for i, area in enumerate(a for a in plan.areas if bank.base <= a.base < bank.end):
            x = _LEFT + (area.base - bank.base) * scale
            w = max(area.size * scale, 3)
            colour = colour_of[area.name]
            title = (f"{area.name} {hexaddr(area.base, digits)}..{hexaddr(area.end, digits)} "
                     f"{format_size(area.size)}; users: {', '.join(area.users) or 'none'}; "
                     f"need {format_size(area.need)}")
            parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{_BAR_H}" fill="{colour}" '
                         f'fill-opacity="0.75" stroke="#222"><title>{escape(title)}</title></rect>')
            if area.footprint:
                fw = min(area.footprint, area.size) * scale
                parts.append(f'<rect x="{x:.1f}" y="{y + 8}" width="{fw:.1f}" height="{_BAR_H - 16}" fill="url(#need)"/>')
            if not area.fits:
                parts.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{_BAR_H}" fill="none" '
                             'stroke="#d00" stroke-width="3"/>')
            label = area.label or area.name
            if area.is_default:
                label += " (default)"
            # Labels of regions in the right half hang leftwards from the region's end,
            # so they stay on the canvas.
            right_half = x + w / 2 > _LEFT + _BAR_W / 2
            tx, anchor = (x + w, "end") if right_half else (x, "start")
            ly = y - 8 - (i % 2) * 14
            parts.append(f'<text x="{tx:.1f}" y="{ly}" text-anchor="{anchor}" font-weight="bold" fill="{colour}">'
                         f'{escape(label)} {escape(format_size(area.size))}</text>')
            detail = f"{hexaddr(area.base, digits)} · {', '.join(area.users) or 'no users'}"
            if area.need:
                detail += f" · need {format_size(area.need)}" + ("" if area.fits else " · DOES NOT FIT")
            parts.append(f'<text x="{tx:.1f}" y="{y + _BAR_H + 34 + (i % 2) * 14}" text-anchor="{anchor}" '
                         f'fill="#222">{escape(detail)}</text>')
    ly = 90 + _ROW_H * len(banks) + 10
    parts.append(f'<rect x="20" y="{ly}" width="14" height="14" fill="#4c78a8" fill-opacity="0.75"/>'
                 f'<text x="40" y="{ly + 12}">CMA region</text>')
    parts.append(f'<rect x="150" y="{ly}" width="14" height="14" fill="url(#need)" stroke="#999"/>'
                 f'<text x="170" y="{ly + 12}">space the needed buffers span (alignment included)</text>')
    parts.append(f'<rect x="500" y="{ly}" width="14" height="14" fill="#bbbbbb"/>'
                 f'<text x="520" y="{ly + 12}">kernel / early reservations</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
