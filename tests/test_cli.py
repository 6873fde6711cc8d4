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


@pytest.mark.parametrize("command", ["validate", "plan", "model", "generate", "dtb", "run", "suggest"])
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
    for needle in ("bank 0", "bank 1", "mfc_left 16 MiB", "mfc_right 16 MiB", "cma_default (default) 32 MiB",
                   "0x30000000", "0x56000000"):
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
