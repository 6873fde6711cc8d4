"""The CLI as a user meets it: exit codes, --help examples, plan/model output worked out by hand."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def cma_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cma_tool", *args], cwd=ROOT, capture_output=True, text=True,
                          check=False)


@pytest.mark.parametrize("command", ["validate", "plan", "model", "generate", "import", "dtb", "run", "suggest"])
def test_help_shows_an_example(command: str) -> None:
    res = cma_tool(command, "--help")
    assert res.returncode == 0
    assert "example:" in res.stdout and "cma-tool " + command in res.stdout
    assert "exit codes:" in res.stdout


def test_usage_error_exits_2() -> None:
    res = cma_tool("plan")
    assert res.returncode == 2 and "usage:" in res.stderr


def test_plan_json_for_aquila() -> None:
    res = cma_tool("plan", "boards/aquila.yaml", "--json")
    assert res.returncode == 0, res.stderr
    plan = json.loads(res.stdout)
    assert [(b["base"], b["size"]) for b in plan["banks"]] == [("0x30000000", 80 << 20), ("0x40000000", 384 << 20)]
    unit = plan["kernel"]["cma_unit"]
    assert unit == 4 << 20  # max-order 11: pageblock order 10, 1024 pages of 4 KiB
    banks = [(int(b["base"], 16), int(b["end"], 16)) for b in plan["banks"]]
    for r in plan["regions"]:
        base, end = int(r["base"], 16), int(r["end"], 16)
        assert any(lo <= base and end <= hi for lo, hi in banks), r
        assert base % unit == 0 and r["size"] % unit == 0 and r["fits"]
    default = next(r for r in plan["regions"] if r["default"])
    # 32 MiB top-down in bank 1 (ends 0x58000000): 0x56000000.
    assert default["base"] == "0x56000000" and set(default["users"]) == {"fimc0", "fimc1", "fimc2"}


def test_plan_svg_is_well_formed_and_shows_the_layout(tmp_path: Path) -> None:
    svg = tmp_path / "map.svg"
    res = cma_tool("plan", "boards/aquila.yaml", "--svg", str(svg))
    assert res.returncode == 0, res.stderr
    root = ET.parse(svg).getroot()
    text = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    # Names and sizes sit in the legend's columns (tests/report/test_plan_svg.py measures the layout).
    for needle in ("bank 0", "bank 1", "mfc_left 0x33000000–0x34000000 16 MiB",
                   "mfc_right 0x44000000–0x45000000 16 MiB", "cma_default (default) 0x56000000–0x58000000 32 MiB",
                   "0x30000000"):
        assert needle in text, needle


def test_model_prints_the_kernels_own_trace_lines() -> None:
    res = cma_tool("model", "boards/qemu-aquila.yaml")
    assert res.returncode == 0, res.stderr
    # 64 MiB default at 0x64000000: pool (64 pages, align 6) at its base, then 1013-page
    # buffers on 256-page boundaries: 0x64100, 0x64500, 0x64900, 0x64d00.
    for line in ("Reserved memory: created CMA memory pool at 0x64000000, size 64 MiB",
                 "cma_alloc_finish: name=linux,cma pfn=0x64000 page=(ptrval) count=64 align=6",
                 "cma_alloc_finish: name=linux,cma pfn=0x64d00 page=(ptrval) count=1013 align=8"):
        assert line in res.stdout


def test_model_cmdline_bypasses_dt_default_and_rounds_up() -> None:
    res = cma_tool("model", "boards/qemu-aquila.yaml", "--bootargs", "cma=10M", "--json")
    assert res.returncode == 0, res.stderr
    run = json.loads(res.stdout)
    log = run["boot"]["log"]
    assert "Reserved memory: bypass linux,cma node, using cmdline CMA params instead" in log
    # 10 MiB rounds up to the 8 MiB unit: 16 MiB, top-down below 0x68000000.
    assert "cma: Reserved 16 MiB at 0x67000000" in log


def test_model_bad_requests_file_is_a_config_error(tmp_path: Path) -> None:
    req = tmp_path / "r.yaml"
    req.write_text("steps:\n  - alloc: {area: nowhere, pages: -3}\n  - frobnicate: {}\n")
    res = cma_tool("model", "boards/qemu-aquila.yaml", "--requests", str(req))
    assert res.returncode == 1
    assert "Traceback" not in res.stderr and f"{req}:2:" in res.stderr and f"{req}:3:" in res.stderr


def test_missing_board_is_a_config_error() -> None:
    res = cma_tool("plan", "boards/no-such-board.yaml")
    assert res.returncode == 1 and "no such file" in res.stderr and "Traceback" not in res.stderr


# --- --force and --bootargs on validate, plan and model --------------------------------
#
# tests/run/boards/e-dt-12m-refused.yaml: the emulated Aquila (8 MiB pageblocks: max-order 12)
# with a 12 MiB dynamic linux,cma-default node in [0x50000000, 0x68000000). The kernel places
# it top-down on an 8 MiB boundary (0x67000000), refuses it for its size ("incorrect alignment
# of CMA region"), gives the range back, and dma_contiguous_reserve() makes the Kconfig default
# (CONFIG_CMA_SIZE_MBYTES=16) top-down below the end of memory: 0x68000000 - 16 MiB = 0x67000000.
# The atomic pool takes 64 pages (align 6) at its base, then each 1080p YUYV buffer (1013 pages,
# order 10 capped to CONFIG_CMA_ALIGNMENT 8) starts on the next 256-page boundary: 0x67100, 0x67500.

REFUSED = "tests/run/boards/e-dt-12m-refused.yaml"
REFUSED_AT = f"{REFUSED}:7:11"  # the size: line, the value at fault
TRACES = ROOT / "tests" / "data"


def _recorded(folder: str, name: str) -> str:
    return (TRACES / folder / "e-dt-12m-refused" / name).read_text(errors="replace")


def test_model_without_force_stops_at_the_validation_error() -> None:
    res = cma_tool("model", REFUSED)
    assert res.returncode == 1 and res.stdout == ""
    assert f"{REFUSED_AT}: error: reserved-memory node 'linux,cma' size 12 MiB is not a multiple of 8 MiB" in res.stderr


def test_model_force_predicts_the_kernels_fallback() -> None:
    res = cma_tool("model", REFUSED, "--force", "--json")
    assert res.returncode == 0, res.stderr
    assert f"{REFUSED_AT}: error: reserved-memory node 'linux,cma'" in res.stderr
    assert "--force: 1 error(s) overridden" in res.stderr
    run = json.loads(res.stdout)
    assert [(a["name"], a["base"], a["size"], a["source"]) for a in run["boot"]["areas"]] == [
        ("reserved", 0x67000000, 16 << 20, "kconfig")]
    refused = ["Reserved memory: incorrect alignment of CMA region",
               "OF: reserved mem: node linux,cma compatible matching fail",
               "cma: Reserved 16 MiB at 0x67000000"]
    log = run["boot"]["log"]
    assert [line for line in log if line in refused] == refused
    # What Debian's 6.1 kernel printed for this board (tests/data/kernel-traces/e-dt-12m-refused).
    dmesg = _recorded("kernel-traces", "dmesg.txt")
    assert all(line in dmesg for line in refused)
    finishes = [line for line in run["trace"] if line.startswith("cma_alloc_finish")]
    assert [line.split("pfn=")[1].split()[0] for line in finishes] == ["0x67000", "0x67100", "0x67500"]


def test_model_on_612_shows_the_hang_warning_beside_the_error_on_its_line() -> None:
    res = cma_tool("model", REFUSED, "--kernel", "linux-6.12")
    assert res.returncode == 1
    lines = res.stderr.splitlines()
    assert any(line.startswith(f"{REFUSED_AT}: error: ") for line in lines)
    hang = [line for line in lines if line.startswith(f"{REFUSED_AT}: warning: ") and "stop booting" in line]
    assert len(hang) == 1 and "(0x67000000, 16 MiB)" in hang[0] and "(0x67000000, 12 MiB)" in hang[0]

    forced = cma_tool("model", REFUSED, "--kernel", "linux-6.12", "--force")
    assert forced.returncode == 0, forced.stderr
    assert hang[0] in forced.stderr.splitlines()
    # Debian's 6.12 kernel hung on this board right after this line (kernel-traces-6.12/e-dt-12m-refused).
    assert "cma: Reserved 16 MiB at 0x67000000 on node -1" in _recorded("kernel-traces-6.12", "console.log")
    assert "  cma: Reserved 16 MiB at 0x67000000 on node -1" in forced.stdout
    assert "warning: linux,cma: the default area (0x67000000, 16 MiB) lands on the range" in forced.stdout


def test_validate_force_keeps_exit_1_and_says_run_could_go_ahead() -> None:
    res = cma_tool("validate", REFUSED, "--force")
    assert res.returncode == 1
    assert f"{REFUSED_AT}: error: " in res.stderr and f"{REFUSED}: 1 error(s), 0 warning(s)" in res.stderr
    assert "--force: plan, model and run would override the 1 error(s) and go ahead" in res.stderr


def test_plan_force_places_the_fallback_area() -> None:
    assert cma_tool("plan", REFUSED, "--json").returncode == 1
    res = cma_tool("plan", REFUSED, "--force", "--json")
    assert res.returncode == 0, res.stderr
    assert "--force: 1 error(s) overridden" in res.stderr
    plan = json.loads(res.stdout)
    assert [(r["name"], r["base"], r["size"], r["source"], r["default"]) for r in plan["regions"]] == [
        ("reserved", "0x67000000", 16 << 20, "kconfig", True)]


def test_bootargs_cma_bypasses_a_misaligned_default_node_so_it_is_no_error() -> None:
    # cma= makes rmem_cma_setup() bypass the linux,cma-default node before its alignment check.
    res = cma_tool("validate", REFUSED, "--bootargs", "cma=32M")
    assert res.returncode == 0, res.stderr
    assert f"{REFUSED_AT}: warning: reserved-memory node 'linux,cma' is not aligned to 8 MiB, but cma=" in res.stderr
    # And sizing advice: the 32 MiB cma= area holds the pool (64 pages) and two 1080p YUYV buffers
    # (1013 pages each, 256-aligned: 256..1269, 1280..2293): 2293 pages, so 16 MiB would do.
    assert "'reserved' (32 MiB) is more than twice what its users need (9172 KiB with alignment)" in res.stderr
    assert f"{REFUSED}: 0 error(s), 2 warning(s)" in res.stdout


def test_validate_bootargs_judges_the_fit_of_the_cmdline_area(tmp_path: Path) -> None:
    board = tmp_path / "small-default.yaml"
    board.write_text(f"include: {ROOT / 'boards' / 'qemu-aquila.yaml'}\nname: small-default\n"
                     "reserved-memory:\n  linux,cma:\n    size: 8M\n")
    # 8 MiB (2048 pages): the pool and one 1013-page buffer at page 256; the second would end at 2293.
    res = cma_tool("validate", str(board))
    assert res.returncode == 1 and "'cma_default' (8 MiB) cannot hold its users' buffers" in res.stderr
    # cma=32M bypasses the node: 32 MiB top-down below 0x68000000 at 0x66000000 holds the pool and
    # four buffers at pfn 0x66100, 0x66500, 0x66900, 0x66d00 (the last ends at 0x670f5).
    res = cma_tool("validate", str(board), "--bootargs", "cma=32M")
    assert res.returncode == 0, res.stderr
    plan = json.loads(cma_tool("plan", str(board), "--bootargs", "cma=32M", "--json").stdout)
    default = next(r for r in plan["regions"] if r["default"])
    assert (default["name"], default["base"], default["size"], default["source"], default["fits"]) == (
        "reserved", "0x66000000", 32 << 20, "cmdline", True)
    model = json.loads(cma_tool("model", str(board), "--bootargs", "cma=32M", "--json").stdout)
    finishes = [line.split("pfn=")[1].split()[0] for line in model["trace"] if line.startswith("cma_alloc_finish")]
    assert finishes == ["0x66000", "0x66100", "0x66500", "0x66900", "0x66d00"]


def test_plan_prints_its_table_for_a_board_with_errors_marked() -> None:
    # The refused 12 MiB node (8 MiB unit) is not created; the kernel's Kconfig 16 MiB area takes its place.
    res = cma_tool("plan", REFUSED)
    assert res.returncode == 1
    assert "reserved (default)" in res.stdout and "0x67000000" in res.stdout
    assert "✗ cma_default (not created)" in res.stdout and "✗ 1 error(s)" in res.stdout
    assert f"{REFUSED_AT}: error: " in res.stderr
    doc = json.loads(cma_tool("plan", REFUSED, "--json").stdout)
    assert doc["valid"] is False and doc["not_created"] == ["linux,cma"]
    assert [r["name"] for r in doc["regions"]] == ["reserved"]


def test_plan_json_is_a_document_even_for_an_unreadable_board(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [\n")
    res = cma_tool("plan", str(bad), "--json")
    assert res.returncode == 1 and "Traceback" not in res.stderr
    doc = json.loads(res.stdout)
    assert doc["valid"] is False and doc["regions"] == []
    assert doc["diagnostics"][0]["line"] == 2 and "YAML syntax" in doc["diagnostics"][0]["message"]
