"""`cma-tool plan --svg`: rendered by a real browser to PNG, every label's box measured, none overlapping.

Headless Chromium (installed by install.sh, as for the report page) lays the SVG out with
real fonts; a script in the page asks each <text> for its getBBox() and the test compares
every pair. Positions that come from the kernel's numbers are checked against arithmetic
done here.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

from tests.report.browser import Node, browse

ROOT = Path(__file__).parents[2]
_MEASURE = """
const out = [];
const svg = document.querySelector('svg');
for (const t of svg.querySelectorAll('text')) {
  const b = t.getBBox();
  out.push({text: t.textContent, x: b.x, y: b.y, w: b.width, h: b.height});
}
document.getElementById('boxes').textContent = JSON.stringify(
  {texts: out, width: +svg.getAttribute('width'), height: +svg.getAttribute('height')});
"""


def _render(board: Path, tmp_path: Path, *extra: str) -> tuple[dict[str, object], Node, str]:
    svg = tmp_path / f"{board.stem}.svg"
    res = subprocess.run([sys.executable, "-m", "cma_tool", "plan", str(board), "--svg", str(svg), *extra],
                         cwd=ROOT, capture_output=True, text=True, check=False)
    assert svg.is_file(), res.stderr
    text = svg.read_text(encoding="utf-8")
    boxes, dom = _measure(text, tmp_path, board.stem)
    return boxes, dom, text


def _measure(svg_text: str, tmp_path: Path, name: str) -> tuple[dict[str, object], Node]:
    """Every <text>'s box as Chromium lays the SVG out (and a PNG of it beside, the rendering itself)."""
    page = tmp_path / f"{name}.html"
    page.write_text(f"<!doctype html><html><head><meta charset='utf-8'></head><body style='margin:0'>{svg_text}"
                    f"<pre id='boxes'></pre><script>{_MEASURE}</script></body></html>", encoding="utf-8")
    dom = browse(page, tmp_path / f"{name}.png", width=1200, height=1400)
    return json.loads(dom.find("pre", id="boxes").text()), dom


def _assert_no_overlap(boxes: dict[str, object]) -> None:
    texts = boxes["texts"]
    assert isinstance(texts, list) and texts
    for t in texts:
        # On the canvas, whole.
        assert t["x"] >= 0 and t["x"] + t["w"] <= boxes["width"] and t["y"] >= 0 and t["y"] + t["h"] <= boxes["height"], t
    clashes = []
    for a, b in itertools.combinations(texts, 2):
        dx = min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"])
        dy = min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"])
        if dx > 0.5 and dy > 0.5:  # sharing more than a hairline
            clashes.append((a["text"], b["text"]))
    assert not clashes, clashes


def _assert_legend_matches(dom: Node) -> None:
    regions = dom.find_all("rect", cls="region")
    assert regions
    for rect in regions:
        (swatch,) = dom.find_all("rect", cls="swatch", data_name=rect.attrs["data-name"])
        assert (swatch.attrs["fill"], swatch.attrs["fill-opacity"]) == (rect.attrs["fill"], rect.attrs["fill-opacity"])


def test_aquila_map(tmp_path: Path) -> None:
    boxes, dom, text = _render(ROOT / "boards" / "aquila.yaml", tmp_path)
    _assert_no_overlap(boxes)
    _assert_legend_matches(dom)
    # Both banks drawn, each with its own ends; need against size for every region in the legend.
    assert [r.attrs["data-base"] for r in dom.find_all("rect", cls="bank")] == ["0x30000000", "0x40000000"]
    for addr in ("0x30000000", "0x35000000", "0x40000000", "0x58000000"):
        assert f">{addr}<" in text
    assert "27224 KiB" in text and "fits, 5544 KiB free" in text  # cma_default: 32 MiB - 6806 pages


def _crowded(tmp_path: Path) -> Path:
    # Eight 8 MiB pools side by side in a 1 GiB bank: each is 900 px * 8 MiB / 1 GiB = 7 px wide, far
    # narrower than any name: every label must move off the bar without touching another.
    lines = ["name: crowded", "model: eight small pools side by side", "memory: [[0x40000000, 1G], [0x90000000, 1G]]",
             "kernel: {profile: linux-3.5, max-order: 11}", "boot:", "  early-reservations:",
             "    kernel: [0x40008000, 12M]", "reserved-memory:"]
    for i in range(8):
        base = 0x41000000 + i * 0x800000
        lines += [f"  region@{base:x}:", f"    label: pool_{chr(97 + i)}", "    compatible: shared-dma-pool",
                  "    reusable: true", f"    reg: [{base:#x}, 8M]"]
    lines += ["devices:"]
    for i in range(8):
        lines += [f"  dev{i}:", "    driver: d", f"    memory-region: [pool_{chr(97 + i)}]", "    needs:",
                  "      buffers:", f"        - {{name: b, size: {1 + i % 4}M}}"]
    board = tmp_path / "crowded.yaml"
    board.write_text("\n".join(lines) + "\n")
    return board


def test_small_adjacent_regions_get_leader_lines_and_no_label_overlaps(tmp_path: Path) -> None:
    boxes, dom, _ = _render(_crowded(tmp_path), tmp_path)
    _assert_no_overlap(boxes)
    _assert_legend_matches(dom)
    assert len(dom.find_all("line", cls="leader")) == 9  # 8 pools and the kernel image, all too narrow


def test_lowmem_boundary_is_drawn_where_the_kernel_computes_it(tmp_path: Path) -> None:
    # linux-3.5, one 2 GiB bank at 0x40000000 (the bar is 900 px for 2 GiB): lowmem ends at
    # __pa(0xef800000) = 0x6f800000 (tests/model/test_lowmem.py), 0x2f800000 = 796917760 bytes in:
    # x = 150 + 796917760 * 900 / 2^31 = 483.98.
    board = tmp_path / "big.yaml"
    board.write_text("name: big\nmemory: [[0x40000000, 2G]]\nkernel: {profile: linux-3.5, max-order: 11}\n"
                     "devices:\n  cam:\n    driver: s5p-fimc\n    needs:\n      captures:\n"
                     "        - {width: 1920, height: 1080, format: YUYV, buffers: 3}\n")
    boxes, dom, text = _render(board, tmp_path)
    _assert_no_overlap(boxes)
    (line,) = dom.find_all("line", cls="lowmem")
    assert line.attrs["data-addr"] == "0x6f800000" and line.attrs["x1"] == "483.98"
    (high,) = dom.find_all("rect", cls="highmem")  # shaded from there to the bank's end: 150 + 900 - 483.98
    assert (high.attrs["x"], high.attrs["width"]) == ("483.98", "566.02")
    assert "lowmem ends 0x6f800000" in text


def test_the_run_reports_bank_overview_keeps_names_apart(tmp_path: Path) -> None:
    # report.html's banks picture: eight 4 MiB areas side by side in a 512 MiB bank (7 px each), two of them
    # where the kernel put them elsewhere: every name and mismatch line apart from every other.
    from cma_tool.report.svg import BankArea, banks_svg

    mib = 1 << 20
    areas = [BankArea(i, f"region@{0x41000000 + i * 4 * mib:x}", f"pool number {i} (region@{0x41000000 + i * 4 * mib:x})",
                      (0x41000000 + i * 4 * mib, 4 * mib),
                      (0x41000000 + i * 4 * mib + (8 * mib if i in (2, 5) else 0), 4 * mib), i in (2, 5))
             for i in range(8)]
    text = banks_svg([(0x40000000, 512 * mib)], areas)
    boxes, dom = _measure(text, tmp_path, "banks")
    _assert_no_overlap(boxes)
    assert len(dom.find_all("line", cls="leader")) == 8
