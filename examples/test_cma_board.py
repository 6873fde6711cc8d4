"""A board test file as a team writes it: nothing but pytest; cma-tool's plugin brings the board.

    pytest examples/ --cma-board boards/qemu-aquila.yaml

boots the emulated Aquila once for the whole file, runs each capture step on
it, and fails a step with the model's own explanation when the kernel does
something else. The numbers below are the kernel's rules for this board
(the README's "Run on the emulated Aquila"), not a recording.
"""

from pathlib import Path

import pytest

SCENARIOS = Path(__file__).resolve().parents[1] / "configs" / "requests"
MiB = 1 << 20


def test_the_board_plans_its_areas(cma_board):
    # Nothing boots for this one: the plan is the model's placement.
    areas = {a.name: a for a in cma_board.areas}
    assert areas["linux,cma"].size == 64 * MiB


@pytest.mark.cma_kernel("linux-5.10", "linux-6.1", "linux-6.12")  # armhf: one atomic pool (arm64 has three)
def test_the_model_predicts_before_anything_boots(cma_prediction):
    # The 64 MiB default area lands top-down at 0x64000000 (bank 1 ends at 0x68000000): the atomic
    # pool's 64 pages at its base, then 1013-page 1080p YUYV buffers on 256-page alignment.
    pfns = [e.pfn for e in cma_prediction.events if e.kind == "alloc_finish"]
    assert pfns == [0x64000, 0x64100, 0x64500, 0x64900, 0x64D00]


def test_the_default_capture_matches_the_model(cma_target, cma_assert):
    step = cma_target.capture()  # the board's needs: 4 x 1080p YUYV held together
    cma_assert(step)
    # 1920x1080 YUYV is 4147200 bytes: 1013 pages, each buffer 256-page aligned.
    finishes = [line for line in step.event_lines if line.startswith("cma_alloc_finish")]
    assert len(finishes) == 4 and all("count=1013 align=8" in line for line in finishes)


@pytest.mark.cma_board("qemu-aquila")
def test_one_stream_after_another(cma_target, cma_assert):
    cma_assert(cma_target.capture(SCENARIOS / "one-after-another.yaml"))


def test_the_kernel_counts_every_cma_page(cma_target):
    meminfo = cma_target.shell("grep Cma /proc/meminfo")
    assert meminfo.status == 0
    # linux,cma 64 MiB + region@43000000 16 MiB + region@54000000 16 MiB
    assert "CmaTotal:          98304 kB" in meminfo.output
    assert meminfo.events == ()  # reading meminfo allocates nothing from CMA


@pytest.mark.cma_kernel("linux-6.12")
def test_only_on_the_612_kernel(cma_target):
    assert "trace_event=cma:*" in cma_target.shell("cat /proc/cmdline").output
