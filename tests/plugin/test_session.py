"""A board kept booted (api.boot): many steps on one boot, each judged as if the board had just booted.

Values are the kernel's rules for the emulated Aquila, worked out by hand in
tests/e2e (expect.py, test_run_emulated.py): the atomic pool at pfn 0x64000,
1080p YUYV buffers at 0x64100, 0x64500, 0x64900, 0x64d00; every step gives
its buffers back, so every step starts from the boot's bitmap.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cma_tool import api

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.emulated, pytest.mark.slow]


def finishes(lines: tuple[str, ...]) -> list[str]:
    return [line.split()[2] for line in lines if line.startswith("cma_alloc_finish")]


def test_steps_on_one_boot_each_match_the_model_as_if_just_booted(tmp_path: Path) -> None:
    plan = api.load_board(ROOT / "boards" / "qemu-aquila.yaml")
    out = tmp_path / "board"
    with api.boot(plan, out=out) as board:
        assert [e.text(plan.profile) for e in board.boot_events] == [
            "cma_alloc_start: name=linux,cma count=64 align=6",
            "cma_alloc_finish: name=linux,cma pfn=0x64000 page=(ptrval) count=64 align=6"]

        first = board.capture()
        assert first.passed, api.explain(first.checks)
        assert finishes(first.event_lines) == ["pfn=0x64100", "pfn=0x64500", "pfn=0x64900", "pfn=0x64d00"]
        assert sum(1 for line in first.event_lines if line.startswith("cma_release")) == 4
        assert first.notes == ()

        # Both 1080p buffers released before 720p NV12 asks: the second stream starts where the first did.
        second = board.capture(ROOT / "configs" / "requests" / "one-after-another.yaml")
        assert second.passed, api.explain(second.checks)
        assert finishes(second.event_lines) == ["pfn=0x64100", "pfn=0x64500", "pfn=0x64100", "pfn=0x64300",
                                                "pfn=0x64500"]
        # After a release, CmaFree before a step misses pages waiting on the per-CPU lists: that drop is left out.
        assert len(second.notes) == 1 and "CmaFree drop at REQBUFS first" in second.notes[0]
        assert not any(c.name == "CmaFree drop at REQBUFS first" for c in second.checks)

        meminfo = board.shell("grep Cma /proc/meminfo")
        assert meminfo.status == 0 and "CmaTotal:          98304 kB" in meminfo.output and meminfo.events == ()

        pinned = board.capture(pins={"linux,cma": 0x60000000})
        assert not pinned.passed
        # The third step still looks like a fresh boot's: the pool (1) and four buffers (4) succeeded.
        assert pinned.observation.vmstat["cma_alloc_success"] == 1 + 4
        assert "Reserved memory: created CMA memory pool at 0x64000000, size 64 MiB" in pinned.observation.boot_lines
        bad = next(c for c in pinned.failures if c.group == "events")
        assert "pfn=0x60000" in bad.expected and "pfn=0x64000" in bad.observed
        assert (pinned.folder / "agent-output.txt").read_text().count("==== CMA-TOOL DONE rc=0 ====") == 1

    assert (out / "console.log").read_bytes().rstrip().endswith(b"reboot: Power down")
    left = subprocess.run(["pgrep", "-f", f"qemu-system-arm.*{out}"], capture_output=True, check=False)
    assert left.stdout == b""
    # Every step's agent output is on the session's console too, as it came: three runs.
    assert (out / "console.log").read_bytes().count(b"==== CMA-TOOL DONE rc=0 ====") == 3


def test_an_error_in_the_block_kills_the_board_at_once(tmp_path: Path) -> None:
    plan = api.load_board(ROOT / "boards" / "qemu-aquila.yaml")
    out = tmp_path / "board"
    with pytest.raises(RuntimeError, match="the test broke"), api.boot(plan, out=out) as board:
        board.shell("true")
        raise RuntimeError("the test broke")
    assert b"reboot: Power down" not in (out / "console.log").read_bytes()
    left = subprocess.run(["pgrep", "-f", f"qemu-system-arm.*{out}"], capture_output=True, check=False)
    assert left.stdout == b""
