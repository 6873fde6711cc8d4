"""The plan as a table for people and as JSON for machines."""

from __future__ import annotations

import io
import json

from cma_tool.model.profiles import area_alignment
from cma_tool.plan import Plan, area_errors, diagnostic_dict, missing_regions
from cma_tool.sizes import format_size, hexaddr


def plan_dict(plan: Plan) -> dict[str, object]:
    digits = plan.profile.address_digits
    unit = area_alignment(plan.profile)
    errors = area_errors(plan)
    return {
        "board": plan.board.name,
        "kernel": {"profile": plan.profile.name, "cma_unit": unit,
                   "max_order": plan.profile.max_order, "page_size": plan.profile.page_size},
        "cmdline": plan.cmdline,
        "banks": [{"base": hexaddr(b.base, digits), "size": b.size, "size_text": format_size(b.size),
                   "end": hexaddr(b.end, digits)} for b in plan.board.banks],
        "regions": [
            {
                "name": a.name, "label": a.label, "source": a.source, "default": a.is_default,
                "base": hexaddr(a.base, digits), "size": a.size, "size_text": format_size(a.size),
                "end": hexaddr(a.end, digits),
                "bank": hexaddr(a.bank.base, digits) if a.bank else None,
                "alignment": unit,
                "aligned": a.base % unit == 0 and a.size % unit == 0,
                "users": list(a.users), "need": a.need, "footprint": a.footprint,
                "headroom": a.headroom if a.fits else None, "fits": a.fits,
                "errors": [d.message for d in errors.get(a.name, [])],
            }
            for a in plan.areas
        ],
        "not_created": [r.node for r in missing_regions(plan)],
        "boot_log": plan.boot_lines,
        "valid": not any(d.severity == "error" for d in plan.diagnostics),
        "diagnostics": [diagnostic_dict(d) for d in plan.diagnostics],
    }


def plan_json(plan: Plan) -> str:
    return json.dumps(plan_dict(plan), indent=2)


def plan_table(plan: Plan, width: int = 120) -> str:
    # rich is imported here, not at the top: `cma-tool run` writes plan.json before the board boots and
    # never draws the table, so it does not pay rich's ~20 ms import on that path.
    from rich.console import Console
    from rich.table import Table

    digits = plan.profile.address_digits
    unit = area_alignment(plan.profile)
    table = Table(title=f"{plan.board.name}: CMA plan ({plan.profile.name}, unit {format_size(unit)})",
                  title_justify="left")
    for col in ("region", "bank", "base", "size", "end", "align", "users", "need", "headroom"):
        table.add_column(col, justify="right" if col in ("size", "need", "headroom") else "left")
    errors = area_errors(plan)
    for a in plan.areas:
        name = a.label or a.name
        if a.is_default:
            name += " (default)"
        if a.name in errors:
            name = f"✗ {name} ({len(errors[a.name])} error{'s' if len(errors[a.name]) > 1 else ''})"
        headroom = format_size(a.headroom) if a.fits else "DOES NOT FIT"
        table.add_row(name, hexaddr(a.bank.base, digits) if a.bank else "-", hexaddr(a.base, digits),
                      format_size(a.size), hexaddr(a.end, digits), format_size(unit),
                      ", ".join(a.users) or "-", format_size(a.need) if a.need else "-", headroom)
    for region in missing_regions(plan):
        table.add_row(f"✗ {region.display} (not created)", "-", "-", format_size(region.requested_size), "-", "-",
                      "-", "-", "-")
    out = io.StringIO()
    console = Console(file=out, width=width, color_system=None, highlight=False)
    console.print(table)
    n_err = sum(1 for d in plan.diagnostics if d.severity == "error")
    if n_err:
        console.print(f"✗ {n_err} error(s) (printed above): this is what the kernel would do with the board as "
                      "written, not what it means", markup=False)
    if plan.cmdline:
        console.print(f"kernel command line: {plan.cmdline}")
    for line in plan.boot_lines:
        console.print(f"  boot: {line}", markup=False)
    return out.getvalue().rstrip("\n")
