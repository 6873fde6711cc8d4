"""`cma-tool run` end to end on the emulated Aquila: real QEMU, real kernel, real vivid.

Each test boots the board once (~6-10 s). Expectations are the kernel's rules
worked out by hand (see the comments), not what an earlier run printed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.expect import assert_aquila_1080p_events, assert_same_artefacts

ROOT = Path(__file__).parents[2]
pytestmark = [pytest.mark.emulated, pytest.mark.slow]


def cma_tool(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cma_tool", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, check=False)


def report(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "report.json").read_text())
    return data


def event_lines(rep: dict[str, Any], side: str) -> list[str]:
    return list(rep[side]["events"])


def test_default_board_every_event_matches(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = cma_tool("run", "boards/qemu-aquila.yaml", "--out", str(out), "--junit", str(out / "junit.xml"))
    assert res.returncode == 0, res.stdout + res.stderr
    rep = assert_same_artefacts(out)
    assert rep["boot"] == "direct"
    assert_aquila_1080p_events(rep)
    # The emulated board's agent loads vivid; the kernel's command line carries nothing for it.
    assert (out / "agent-plan.txt").read_text().startswith("load vivid n_devs=1 ")
    assert json.loads((out / "observed.json").read_text())["cmdline"] == \
        "console=ttyAMA0,115200 panic=-1 trace_event=cma:* cmatool.mode=run"
    junit = (out / "junit.xml").read_text()
    assert 'failures="0"' in junit and junit.count("<testcase") == len(rep["checks"])
    assert (out / "console.log").stat().st_size > 10_000


def test_exhaustion_predicted_and_observed(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = cma_tool("run", "configs/exhaust-16m.yaml", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    rep = report(out)
    observed = event_lines(rep, "observed")
    # Kconfig default 16 MiB at the top of bank 1: 0x68000000 - 16 MiB = 0x67000000, pfn 0x67000.
    assert "cma_alloc_finish: name=reserved pfn=0x67000 page=(ptrval) count=64 align=6" in observed
    # 4096 pages: pool (1 step of 256), buffers at 256, 1280, 2304; the 4th would need 3328+1013 > 4096.
    assert observed.count("cma_alloc_finish: name=reserved pfn=0xffffffff page=00000000 count=1013 align=8") == 1
    granted = [c for c in rep["checks"] if c["name"].startswith("REQBUFS")]
    assert granted[0]["observed"] == "3" and granted[0]["passed"]


def test_cmdline_overrides_dt_default(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = cma_tool("run", "configs/cmdline-override.yaml", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    obs = json.loads((out / "observed.json").read_text())
    assert "Reserved memory: bypass linux,cma node, using cmdline CMA params instead" in obs["boot_lines"]
    # cma=32M@0x50000000-0x68000000: top-down, the highest 8 MiB-aligned 32 MiB block below the limit.
    assert {"name": "reserved", "base": 0x66000000, "size": 32 << 20, "source": "cmdline-or-kconfig"} in obs["areas"]


def test_wrong_model_base_is_a_mismatch_naming_the_pfn(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = cma_tool("run", "boards/qemu-aquila.yaml", "--out", str(out), "--model-pin", "linux,cma=0x60000000")
    assert res.returncode == 5, res.stdout + res.stderr
    rep = report(out)
    assert rep["verdict"] == "mismatch"
    bad = [c for c in rep["checks"] if not c["passed"]]
    # The model now puts the pool at pfn 0x60000; the kernel put it at 0x64000.
    assert any("pfn=0x60000" in c["expected"] and "pfn=0x64000" in c["observed"] for c in bad)
    assert "pfn" in res.stdout


def test_killed_mid_boot_leaves_log_and_partial_report(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "cma_tool", "run", "boards/qemu-aquila.yaml", "--out", str(out)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "console.log"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # wait until the kernel is visibly booting
        if log.exists() and b"Booting Linux" in log.read_bytes():
            break
        time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("the kernel never started")
    os.kill(proc.pid, signal.SIGTERM)
    # Stopped on purpose: its own exit code (128 + SIGTERM), never retried.
    assert proc.wait(30) == 143
    assert b"Booting Linux" in log.read_bytes()
    rep = report(out)
    assert rep["verdict"] == "interrupted" and rep["stage"] == "end"
    assert any(s["stage"] == "boot" for s in rep["stages"])
    # QEMU was killed with the run: no stray emulator left behind.
    # (Its command line names the run's board.dtb: QEMU loads it after the cached kernel.)
    ps = subprocess.run(["pgrep", "-f", str(out / "board.dtb")], capture_output=True, text=True, check=False)
    assert ps.stdout.strip() == ""


def test_two_streams_held_together(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = cma_tool("run", "configs/two-streams.yaml", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    finishes = [e for e in event_lines(report(out), "observed") if e.startswith("cma_alloc_finish")]
    # 720p NV12: 1382400 B = 338 pages, order 9 capped at 8: 256-page alignment, so 512-page steps
    # after the pool: 0x64100, 0x64300, 0x64500; then 480p YUYV 150 pages on 256-page steps.
    assert [e.split()[2] for e in finishes[1:]] == ["pfn=0x64100", "pfn=0x64300", "pfn=0x64500",
                                                    "pfn=0x64700", "pfn=0x64800", "pfn=0x64900", "pfn=0x64a00"]


def test_named_pool_is_created_where_the_model_says(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = cma_tool("run", "configs/named-pool.yaml", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    areas = json.loads((out / "observed.json").read_text())["areas"]
    # Top-down in [0x50000000, 0x58000000) below 0x58000000, 8 MiB-aligned: 0x57000000.
    assert {"name": "vidpool", "base": 0x57000000, "size": 16 << 20, "source": "dt"} in areas


def test_the_same_board_on_the_real_612_kernel(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = cma_tool("run", "boards/qemu-aquila.yaml", "--suite", "trixie", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    observed = event_lines(report(out), "observed")
    # 6.12 adds errorno to cma_alloc_finish; the placement and first fit are the 6.1 ones.
    assert "cma_alloc_finish: name=linux,cma pfn=0x64d00 page=(ptrval) count=1013 align=8 errorno=0" in observed
    log = json.loads((out / "observed.json").read_text())["boot_lines"]
    # 6.12 sets up static (reg) pools after the default area: the dynamic default's line comes first.
    first = next(i for i, ln in enumerate(log) if "created CMA memory pool at 0x64000000" in ln)
    assert all(first < i for i, ln in enumerate(log) if "created CMA memory pool at 0x43000000" in ln)


# --- scenarios: the steps run on the target are the steps the model predicts --------------------


def scenario_run(tmp_path: Path, board: str, scenario: str) -> dict[str, Any]:
    out = tmp_path / "run"
    res = cma_tool("run", board, "--scenario", f"configs/requests/{scenario}.yaml", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    rep = assert_same_artefacts(out)
    assert rep["prediction"]["events"] == rep["observed"]["events"]
    return rep


def finishes(rep: dict[str, Any]) -> list[str]:
    """The pfn of every cma_alloc_finish after the atomic pool's, in order."""
    return [e.split()[2] for e in event_lines(rep, "observed") if e.startswith("cma_alloc_finish")][1:]


def test_two_streams_one_after_the_other(tmp_path: Path) -> None:
    rep = scenario_run(tmp_path, "boards/qemu-aquila.yaml", "one-after-another")
    # 1080p YUYV (1013 pages, 256-aligned) at 0x64100, 0x64500; both released before the second stream
    # asks, so 720p NV12 (338 pages, 256-aligned) starts from the same place: 0x64100, 0x64300, 0x64500.
    assert finishes(rep) == ["pfn=0x64100", "pfn=0x64500", "pfn=0x64100", "pfn=0x64300", "pfn=0x64500"]


def test_a_released_streams_holes_are_reused_first_fit(tmp_path: Path) -> None:
    rep = scenario_run(tmp_path, "configs/two-streams.yaml", "hole-reuse")
    # a: 0x64100, 0x64500; b: 0x64900, 0x64d00; a released; c (150 pages, 256-aligned) first fit in a's hole.
    assert finishes(rep) == ["pfn=0x64100", "pfn=0x64500", "pfn=0x64900", "pfn=0x64d00", "pfn=0x64100",
                             "pfn=0x64200"]
    releases = [e.split()[2] for e in event_lines(rep, "observed") if e.startswith("cma_release")]
    assert releases == ["pfn=0x64100", "pfn=0x64500", "pfn=0x64100", "pfn=0x64200", "pfn=0x64900", "pfn=0x64d00"]
    # CmaFree is compared at a and b's REQBUFS (2 x 1013 pages each: 8104 kB), not after a's release: freed
    # pages wait on the per-CPU lists and serve other movable allocations, so later drops are not exact.
    drops = {c["name"]: c for c in rep["checks"] if c["name"].startswith("CmaFree drop")}
    assert sorted(drops) == ["CmaFree drop at REQBUFS a", "CmaFree drop at REQBUFS b"]
    assert all(d["passed"] and d["observed"] == f"{2 * 1013 * 4} kB" for d in drops.values())


def test_rgb565_and_nv12_streams(tmp_path: Path) -> None:
    rep = scenario_run(tmp_path, "configs/two-streams.yaml", "rgb565-nv12")
    # 720p RGB565: 1843200 bytes (450 pages); 1080p NV12: 3110400 bytes (760 pages); all 256-aligned.
    assert finishes(rep) == ["pfn=0x64100", "pfn=0x64300", "pfn=0x64500", "pfn=0x64800"]
    sizes = {c["name"]: c for c in rep["checks"] if c["name"].startswith("sizeimage")}
    assert sizes["sizeimage rgb"]["observed"] == str(1280 * 720 * 2) and sizes["sizeimage rgb"]["passed"]
    assert sizes["sizeimage nv12"]["observed"] == str(1920 * 1080 * 3 // 2) and sizes["sizeimage nv12"]["passed"]


def test_tiny_buffers_next_to_1080p_ones(tmp_path: Path) -> None:
    rep = scenario_run(tmp_path, "configs/two-streams.yaml", "tiny-and-1080p")
    # 64x48 GREY is 3072 bytes: one page, no alignment: first fit fills the gap after the atomic pool.
    assert finishes(rep) == ["pfn=0x64100", "pfn=0x64500", "pfn=0x64040", "pfn=0x64041", "pfn=0x64042"]
    assert "cma_alloc_start: name=linux,cma count=1 align=0" in event_lines(rep, "observed")


def test_a_board_without_regions_on_the_real_612_kernel(tmp_path: Path) -> None:
    out = tmp_path / "run"
    res = cma_tool("run", "configs/no-regions.yaml", "--suite", "trixie", "--out", str(out))
    assert res.returncode == 0, res.stdout + res.stderr
    rep = assert_same_artefacts(out)
    # No node in the DT we booted (an empty one would be another boot), and the kernel says so.
    assert "reserved-memory" not in (out / "board.dts").read_text()
    boot_lines = json.loads((out / "observed.json").read_text())["boot_lines"]
    assert "OF: reserved mem: Reserved memory: No reserved-memory node in the DT" in boot_lines
    # Kconfig's 16 MiB at the top of bank 1: 0x68000000 - 16 MiB = 0x67000000; pool, then two 1080p buffers.
    finishes = [e.split()[2] for e in event_lines(rep, "observed") if e.startswith("cma_alloc_finish")]
    assert finishes == ["pfn=0x67000", "pfn=0x67100", "pfn=0x67500"]
