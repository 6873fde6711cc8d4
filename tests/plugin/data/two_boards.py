"""One test file, two boards (--cma-board twice), one pytest-xdist worker each.

The pfns are the kernel's first fit, worked out in tests/e2e (expect.py and
test_two_streams_held_together): 1080p YUYV is 1013 pages on 256-page
alignment; 720p NV12 is 338 pages (512-page steps), 480p YUYV 150 (256-page steps).
"""

import os

FIRST_FIT = {
    "qemu-aquila": ["pfn=0x64100", "pfn=0x64500", "pfn=0x64900", "pfn=0x64d00"],
    "two-streams": ["pfn=0x64100", "pfn=0x64300", "pfn=0x64500",
                    "pfn=0x64700", "pfn=0x64800", "pfn=0x64900", "pfn=0x64a00"],
}


def test_each_board_places_its_buffers_first_fit(cma_target, cma_assert, cma_board_file):
    step = cma_target.capture()
    cma_assert(step)
    finishes = [line.split()[2] for line in step.event_lines if line.startswith("cma_alloc_finish")]
    assert finishes == FIRST_FIT[cma_board_file.stem]


def test_each_board_runs_on_its_own_worker(cma_target, cma_board_file):
    worker = os.environ["PYTEST_XDIST_WORKER"]
    assert cma_target.console_log.parent.name == f"{cma_board_file.stem}-{worker}"
    assert "cmatool.mode=shell" in cma_target.shell("cat /proc/cmdline").output
