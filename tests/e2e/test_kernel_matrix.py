"""`cma-tool run boards/qemu-aquila.yaml --kernel K` for each of the six Debian kernels: one boot each.

The expectations are worked out from the kernels' rules, not from an earlier
run's output:

- linux,cma is a dynamic 64 MiB node limited to bank 1 (0x50000000 + 384 MiB),
  placed top-down: 0x68000000 - 64 MiB = 0x64000000 (pfn 0x64000), aligned to
  every kernel's CMA unit (8 MiB armhf, 4 MiB 5.10 arm64, 2 MiB 6.x arm64);
- the atomic pools come first from the default area: ARM32 takes one 256 KiB
  pool (64 pages, order 6); arm64 (dma-direct) takes three, GFP_KERNEL,
  GFP_DMA and GFP_DMA32 (all of RAM is below 4 GiB, so the area is in every
  zone), each max(128 KiB per GiB of RAM, 128 KiB) = 32 pages of order 5;
- each 1080p YUYV buffer is 4147200 bytes = 1013 pages, aligned to
  min(get_order, CONFIG_CMA_ALIGNMENT=8) = 256 pages: the first free aligned
  bit after the pools is 256, so pfns 0x64100, 0x64500, 0x64900, 0x64d00;
- the events' words: 5.10 traces ``cma_alloc``/``cma_release`` without a name
  and with a bare hex pfn; 6.1 and 6.12 name the area; 6.12 adds ``errorno``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.expect import assert_same_artefacts, report
from tests.tools import need

ROOT = Path(__file__).parents[2]
pytestmark = [pytest.mark.emulated, pytest.mark.slow]

KERNELS = {
    # name: (profile, series, architecture)
    "debian-5.10-armhf": ("linux-5.10", "5.10", "armhf"),
    "debian-6.1-armhf": ("linux-6.1", "6.1", "armhf"),
    "debian-6.12-armhf": ("linux-6.12", "6.12", "armhf"),
    "debian-5.10-arm64": ("linux-5.10-arm64", "5.10", "arm64"),
    "debian-6.1-arm64": ("linux-6.1-arm64", "6.1", "arm64"),
    "debian-6.12-arm64": ("linux-6.12-arm64", "6.12", "arm64"),
}
BUFFER_PFNS = (0x64100, 0x64500, 0x64900, 0x64D00)


def expected_events(series: str, arch: str) -> list[str]:
    pools = [(0x64000, 64, 6)] if arch == "armhf" else [(0x64000, 32, 5), (0x64020, 32, 5), (0x64040, 32, 5)]
    allocs = [*pools, *((pfn, 1013, 8) for pfn in BUFFER_PFNS)]
    if series == "5.10":
        return ([f"cma_alloc: pfn={pfn:x} page=(ptrval) count={count} align={align}" for pfn, count, align in allocs]
                + [f"cma_release: pfn={pfn:x} page=(ptrval) count=1013" for pfn in BUFFER_PFNS])
    errorno = " errorno=0" if series == "6.12" else ""
    lines = []
    for pfn, count, align in allocs:
        lines.append(f"cma_alloc_start: name=linux,cma count={count} align={align}")
        lines.append(f"cma_alloc_finish: name=linux,cma pfn={pfn:#x} page=(ptrval) count={count} align={align}{errorno}")
    return lines + [f"cma_release: name=linux,cma pfn={pfn:#x} page=(ptrval) count=1013" for pfn in BUFFER_PFNS]


@pytest.mark.parametrize("kernel", list(KERNELS))
def test_the_emulated_aquila_passes_on_every_kernel(kernel: str, tmp_path: Path) -> None:
    profile, series, arch = KERNELS[kernel]
    need("qemu-system-arm" if arch == "armhf" else "qemu-system-aarch64")
    need("arm-linux-gnueabihf-gcc" if arch == "armhf" else "aarch64-linux-gnu-gcc")  # the image's capture program
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "cma_tool", "run", "boards/qemu-aquila.yaml", "--kernel", kernel,
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    rep = assert_same_artefacts(out)
    assert report(out)["kernel_profile"] == profile
    assert rep["verdict"] == "pass", rep.get("message")
    # The kernel's own trace, as the rules above say, and the model's prediction of it.
    assert rep["observed"]["events"] == expected_events(series, arch)
    assert rep["prediction"]["events"] == rep["observed"]["events"]


@pytest.mark.parametrize(("kernel", "base"), [
    # The emulated Aquila's banks (0x40000000/80M, 0x50000000/384M: RAM ends at 0x68000000), no DT CMA node:
    # arm64 puts the Kconfig 64 MiB under sparse_init()'s struct pages, which sit under the page tables' last
    # 2 MiB. 6.1: present 128 MiB sections 0x40, 0x50, 0x58, 0x60 -> 4 x 2 MiB at 0x67600000..0x67e00000,
    # so 0x67600000 - 64 MiB. 5.10: one 1 GiB section -> 16 MiB, 16 MiB aligned at 0x66000000..0x67000000,
    # so 0x66000000 - 64 MiB.
    pytest.param("debian-6.1-arm64", 0x63600000, id="debian-6.1-arm64"),
    pytest.param("debian-5.10-arm64", 0x62000000, id="debian-5.10-arm64"),
])
def test_arm64_places_the_kconfig_area_under_the_memory_map(kernel: str, base: int, tmp_path: Path) -> None:
    need("qemu-system-aarch64")
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "cma_tool", "run", "configs/no-regions.yaml", "--kernel", kernel,
                          "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert report(out)["verdict"] == "pass", report(out).get("message")
    observed = json.loads((out / "observed.json").read_text())
    assert [(a["name"], a["base"], a["size"]) for a in observed["areas"]] == [("reserved", base, 64 << 20)]


def test_an_arm64_board_is_reached_over_ssh(tmp_path: Path) -> None:
    # The ssh flavour of an arm64 image: arm64 dropbear and sftp-server with their libraries; the same events.
    need("qemu-system-aarch64")
    out = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "cma_tool", "run", "boards/qemu-aquila.yaml", "--kernel",
                          "debian-6.1-arm64", "--boot", "ssh", "--out", str(out)], cwd=ROOT, capture_output=True,
                         text=True, timeout=600, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    rep = report(out)
    assert rep["verdict"] == "pass" and rep["boot"] == "ssh", rep.get("message")
    assert rep["observed"]["events"] == expected_events("6.1", "arm64")
