"""`cma-tool size`: the smallest areas for every need and scenario, worked out by hand.

Aquila on linux-6.1 with max-order 11: CMA unit 4 MiB = 1024 pages; CONFIG_CMA_ALIGNMENT 8 caps a
buffer's alignment at 256 pages. The default area starts on a unit boundary, so every aligned
start below is a multiple of 256 pages from its base (page numbers are relative to the base).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
PAGE = 4096
MIB = 1 << 20


def cma_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cma_tool", *args], cwd=ROOT, capture_output=True, text=True,
                          check=False)


def _areas(res: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    assert res.returncode == 0, res.stderr
    return {a["label"]: a for a in json.loads(res.stdout)["areas"]}


def test_aquila_board_needs() -> None:
    # Atomic pool: 256 KiB = 64 pages at 0 (order 6).
    # fimc0 1080p YUYV: 4147200 B = 1013 pages, order 10 -> 8: at 256, 1280, 2304, 3328 (ends 4341).
    # fimc1 720p NV12: 1382400 B = 338 pages, order 9 -> 8: first free 256-aligned windows 4352, 4864, 5376.
    # fimc2 480p YUYV: 614400 B = 150 pages, order 8: the holes below 5714 have no free aligned 150-page
    # window (4608 and 5120 and 5632 overlap fimc1's buffers), so 5888, 6144, 6400, 6656 -> ends 6806.
    peak = 6656 + 150
    areas = _areas(cma_tool("size", "boards/aquila.yaml", "--json"))
    default = areas["cma_default"]
    assert default["peak"] == peak * PAGE
    # 6806 pages -> 7 units of 1024 pages = 28 MiB; headroom 7168 - 6806 = 362 pages.
    assert default["smallest"] == 28 * MIB and default["headroom"] == (7 * 1024 - peak) * PAGE
    # mfc: firmware 1 MiB (256 pages) in mfc_left, decoder context 4 MiB (1024 pages) in mfc_right.
    assert (areas["mfc_left"]["peak"], areas["mfc_left"]["smallest"]) == (MIB, 4 * MIB)
    assert (areas["mfc_right"]["peak"], areas["mfc_right"]["smallest"], areas["mfc_right"]["headroom"]) == (
        4 * MIB, 4 * MIB, 0)
    assert json.loads(cma_tool("size", "boards/aquila.yaml", "--json").stdout)["cma"] == "cma=28M"


def test_on_35_the_unit_is_dma_declare_contiguous_alignment() -> None:
    # 3.5 rounds board-file areas to PAGE_SIZE << max(MAX_ORDER 11, pageblock_order 10) = 8 MiB = 2048 pages:
    # 6806 pages -> 4 units = 32 MiB (headroom 8192 - 6806 = 1386 pages); 1 MiB and 4 MiB -> 8 MiB each.
    doc = json.loads(cma_tool("size", "boards/aquila.yaml", "--kernel", "linux-3.5", "--json").stdout)
    assert doc["cma_unit"] == 8 * MIB and doc["cma"] == "cma=32M"
    areas = {a["label"]: a for a in doc["areas"]}
    assert (areas["cma_default"]["smallest"], areas["cma_default"]["headroom"]) == (32 * MIB, (8192 - 6806) * PAGE)
    assert areas["mfc_left"]["smallest"] == areas["mfc_right"]["smallest"] == 8 * MIB


def test_a_scenario_that_needs_more_sets_the_size(tmp_path: Path) -> None:
    # Eight 1080p YUYV buffers at once on fimc0: 256 + 1024 * k for k = 0..7; the last ends at
    # 7424 + 1013 = 8437 pages > the board needs' 6806: 9 units = 36 MiB, headroom 9216 - 8437 = 779 pages.
    scenario = tmp_path / "eight.yaml"
    scenario.write_text("steps:\n  - capture: {device: fimc0, width: 1920, height: 1080, format: YUYV, "
                        "buffers: 8, frames: 1, label: big}\n")
    res = cma_tool("size", "boards/aquila.yaml", "--scenario", str(scenario), "--json")
    default = _areas(res)["cma_default"]
    assert (default["peak"], default["smallest"], default["set_by"]) == (8437 * PAGE, 36 * MIB, "eight.yaml")
    assert default["headroom"] == (9 * 1024 - 8437) * PAGE
    table = cma_tool("size", "boards/aquila.yaml", "--scenario", str(scenario))
    assert table.returncode == 0 and "36 MiB" in table.stdout and "cma=36M" in table.stdout


def test_the_size_it_gives_fits_and_one_unit_less_does_not(tmp_path: Path) -> None:
    # The answer checked against validate's own fit replay: 28 MiB holds every need, 24 MiB does not.
    for size, fits in (("28M", True), ("24M", False)):
        board = tmp_path / f"a{size}.yaml"
        board.write_text(f"include: {ROOT / 'boards/aquila.yaml'}\nreserved-memory:\n  linux,cma:\n    size: {size}\n")
        res = cma_tool("validate", str(board))
        assert (res.returncode == 0) == fits, res.stderr


def test_size_refuses_a_board_with_errors_other_than_misfits(tmp_path: Path) -> None:
    board = tmp_path / "b.yaml"
    board.write_text(f"include: {ROOT / 'boards/aquila.yaml'}\nreserved-memory:\n  linux,cma:\n    size: 64MB\n")
    res = cma_tool("size", str(board))
    assert res.returncode == 1 and "'MB' is not a unit" in res.stderr and "Traceback" not in res.stderr


def test_waste_and_unused_areas_are_warned_by_plan_and_validate(tmp_path: Path) -> None:
    # A 128 MiB default area for a 6806-page (26.6 MiB) need, and a 16 MiB pool no device names.
    board = tmp_path / "b.yaml"
    board.write_text(f"include: {ROOT / 'boards/aquila.yaml'}\nreserved-memory:\n  linux,cma:\n    size: 128M\n"
                     "  region@4c000000:\n    label: spare\n    compatible: shared-dma-pool\n    reusable: true\n"
                     "    reg: [0x4c000000, 16M]\n")
    for command in ("validate", "plan"):
        res = cma_tool(command, str(board))
        assert res.returncode == 0, res.stderr
        assert ":4:11: warning: 'cma_default' (128 MiB) is more than twice what its users need" in res.stderr
        assert "28 MiB holds every declared need" in res.stderr
        assert ":9:10: warning: 'spare' (16 MiB) has no user" in res.stderr


def test_a_scenario_step_on_a_device_the_board_lacks_is_refused_at_its_line(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text("steps:\n  - capture: {device: fimc0, width: 640, height: 480, format: YUYV, buffers: 1}\n"
                        "  - capture: {device: vivid, width: 640, height: 480, format: YUYV, buffers: 1}\n")
    res = cma_tool("size", "boards/aquila.yaml", "--scenario", str(scenario))
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert f"{scenario}:3: error: no device named 'vivid' on this board" in res.stderr
