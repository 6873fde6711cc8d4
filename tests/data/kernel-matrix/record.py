#!/usr/bin/env python3
"""Record the kernel-traces scenarios, and more, on every Debian kernel of the matrix.

    python3 tests/data/kernel-matrix/record.py KERNEL [--cache DIR] [SCENARIO ...]
    python3 tests/data/kernel-matrix/record.py all

KERNEL is debian-{5.10,6.1,6.12}-{armhf,arm64} (``all``: each in turn). Each
scenario boots once on QEMU virt (armhf: cortex-a15, the zImage with our DTB
after it; arm64: cortex-a57, the Image, DTB and initrd put in RAM with a boot
stub) and writes tests/data/kernel-matrix/<KERNEL>/<scenario>/ with the files
../kernel-traces/record.py describes (its record() does the work), and a
README.md per kernel. A scenario whose kernel never reaches /init is booted
again with an early console; its folder then holds the inputs, console.log
and scenario.json with ``"outcome": "hang"``.

The scenarios: (a)-(g) of ../kernel-traces (DT dynamic and static areas,
the Kconfig default with exhaustion, cma= over a DT node, two holders, a
node the CMA unit refuses, several dynamic nodes), and the ones below: every
other ``cma=`` form (size only, fixed base, 0), exhaustion on every kernel,
``coherent_pool=``, single-page buffers next to big ones, a freed hole
reused, a static (``reg``) default area, and alloc-ranges in bank 0 and
over both banks.
"""

from __future__ import annotations

import argparse
import json
import runpy
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[2]))

from cma_tool.deploy.image import TargetImage, ensure_image  # noqa: E402
from cma_tool.deploy.qemu import EMULATED_AQUILA_BANKS, MemoryBank  # noqa: E402
from cma_tool.errors import CmaToolError  # noqa: E402
from cma_tool.model.profiles import DEBIAN_KERNELS  # noqa: E402
from tests.deploy.plain_boot import REFERENCE_BANKS  # noqa: E402

#: kernel-traces-6.12/record.py's functions (a data folder's script, not a package: run by its path):
#: its _recorder() loads kernel-traces/record.py, and its record_hang() keeps what a kernel that stops
#: before /init printed.
SIBLING = runpy.run_path(str(HERE.parent / "kernel-traces-6.12" / "record.py"), run_name="kernel_traces_612_record")


def _recorder() -> ModuleType:
    """kernel-traces/record.py: the scenarios, their boot and record()."""
    recorder: ModuleType = SIBLING["_recorder"]()
    return recorder


def scenarios(rec: ModuleType) -> list[Any]:
    """(a)-(g) of kernel-traces, then this folder's own."""
    single_page = rec.held_together((1920, 1080, "YUYV", 2, 3), (64, 48, "GREY", 3, 3))
    # configs/requests/hole-reuse.yaml: a and b held, a released, c (smaller) takes a's hole.
    two_vivids = rec.held_together((1920, 1080, "YUYV", 2, 3), (1920, 1080, "YUYV", 2, 3)).modules
    hole_reuse = rec.AgentPlan(
        two_vivids,
        (rec.StreamSpec("a", "driver:vivid:0", 1920, 1080, "YUYV"), rec.StreamSpec("b", "driver:vivid:1", 1920, 1080, "YUYV"),
         rec.StreamSpec("c", "driver:vivid:0", 640, 480, "YUYV")),
        (rec.Start("a", 2, 3), rec.Start("b", 2, 3), rec.Release("a"), rec.Start("c", 2, 3), rec.Release("c"),
         rec.Release("b")),
    )
    static_default = rec._reserved(rec._pool(
        "linux,cma@60000000", "\t\t\treg = <0x0 0x60000000 0x0 0x02000000>;\n\t\t\tlinux,cma-default;\n"))
    def default_in(ranges: str, size: str) -> str:
        return rec._reserved(rec._pool("linux,cma", f"\t\t\tsize = <0x0 {size}>;\n\t\t\talloc-ranges = {ranges};\n"
                                                   "\t\t\tlinux,cma-default;\n"))

    return [
        *rec.SCENARIOS,
        rec.Scenario(
            "h-cmdline-size-16m",
            "banks as (a), no DT CMA node; cma=16M (size only: top-down anywhere); 4 x 1080p YUYV, the 4th fails",
            REFERENCE_BANKS, "", rec.FOUR_1080P, cmdline="cma=16M",
        ),
        rec.Scenario(
            "i-cmdline-fixed-32m",
            "banks as (a), no DT CMA node; cma=32M@0x60000000 (a fixed base); 4 x 1080p YUYV",
            REFERENCE_BANKS, "", rec.FOUR_1080P, cmdline="cma=32M@0x60000000",
        ),
        rec.Scenario(
            "j-cma0",
            "banks as (a), no DT CMA node; cma=0: no CMA at all, 2 x 1080p YUYV from normal pages",
            REFERENCE_BANKS, "", rec.TWO_1080P, cmdline="cma=0",
        ),
        rec.Scenario(
            "k-coherent-pool-1m",
            "as (a) with coherent_pool=1M: the atomic pool(s) at boot; 2 x 1080p YUYV",
            REFERENCE_BANKS, rec.REFERENCE_DTS, rec.TWO_1080P, cmdline="coherent_pool=1M",
        ),
        rec.Scenario(
            "l-single-page",
            "emulated Aquila banks; linux,cma 64M default in bank 1; 1080p YUYV x2 and 64x48 GREY x3 "
            "(3072 bytes: one page each) held together",
            EMULATED_AQUILA_BANKS, rec.AQUILA_64M_DTS, single_page,
        ),
        rec.Scenario(
            "m-hole-reuse",
            "emulated Aquila banks; linux,cma 64M default in bank 1; 1080p YUYV x2 as a and b held, a released, "
            "then 640x480 YUYV x2 as c: c's buffers land in the hole a left",
            EMULATED_AQUILA_BANKS, rec.AQUILA_64M_DTS, hole_reuse,
        ),
        rec.Scenario(
            "n-dt-static-default",
            "banks as (a); a static default area linux,cma@60000000 (reg, 32M, linux,cma-default); 4 x 1080p YUYV",
            REFERENCE_BANKS, static_default, rec.FOUR_1080P,
        ),
        rec.Scenario(
            "o-alloc-ranges-bank0",
            "banks as (a); linux,cma 16M default with alloc-ranges in bank 0's upper half (0x48000000+128M, clear "
            "of the kernel, initrd and DTB); 2 x 1080p YUYV",
            REFERENCE_BANKS, default_in("<0x0 0x48000000 0x0 0x08000000>", "0x01000000"), rec.TWO_1080P,
        ),
        rec.Scenario(
            "p-alloc-ranges-two-banks",
            "banks as (a); linux,cma 64M default with two alloc-ranges, bank 0's upper half then bank 1: "
            "the first range that fits takes it; 2 x 1080p YUYV",
            REFERENCE_BANKS,
            default_in("<0x0 0x48000000 0x0 0x08000000>, <0x0 0x60000000 0x0 0x10000000>", "0x04000000"),
            rec.TWO_1080P,
        ),
        rec.Scenario(
            "q-two-gib",
            "banks 0x40000000/256M + 0x60000000/1536M (QEMU -m 2048M), no DT CMA node: the Kconfig default "
            "area under more page tables and struct pages, and larger atomic pools; 2 x 1080p YUYV",
            (MemoryBank(0x4000_0000, 256 << 20), MemoryBank(0x6000_0000, 1536 << 20)), "", rec.TWO_1080P,
            memory="2048M",
        ),
    ]


def record_kernel(rec: ModuleType, kernel: str, chosen: list[Any], cache: Path | None, work: Path) -> None:
    out_root = HERE / kernel
    out_root.mkdir(exist_ok=True)
    image = ensure_image(cache, kernel=kernel, progress=print)
    print(f"{kernel}: {image.kernel_package} {image.kernel_version}")
    for scenario in chosen:
        start = time.monotonic()
        try:
            line = rec.record(scenario, cache, work / kernel, image=image, out_root=out_root)
        except (CmaToolError, subprocess.TimeoutExpired) as exc:
            print(f"{scenario.name}: no complete run ({type(exc).__name__}: {exc}); booting with an early console")
            line = SIBLING["record_hang"](rec, scenario, image, work / kernel, out_root)
        print(line, f"({time.monotonic() - start:.2f} s)")
    write_readme(kernel, image, scenarios(rec))


def write_readme(kernel: str, image: TargetImage, listed: list[Any]) -> None:
    lines = [
        f"# Real kernel CMA traces: {kernel} ({image.kernel_package}, emulated board)",
        "",
        "Recorded by `../record.py` on QEMU virt "
        + ("armhf (cortex-a15)" if image.architecture == "armhf" else "arm64 (cortex-a57)")
        + "; kernel package, version and config in each `scenario.json`. Same files as",
        "../../kernel-traces/. A folder whose scenario.json says `\"outcome\": \"hang\"` holds only",
        "the inputs and console.log (booted with an early console): the kernel stopped before /init.",
        "",
    ]
    for s in listed:
        meta = HERE / kernel / s.name / "scenario.json"
        if meta.is_file():
            data = json.loads(meta.read_text())
            hang = f" **Hangs on this kernel** after `{data.get('last_line', '')[15:]}`." \
                if data.get("outcome") == "hang" else ""
            lines.append(f"- `{s.name}/`: {s.summary}.{hang}")
    (HERE / kernel / "README.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    rec = _recorder()
    every = scenarios(rec)
    names = [s.name for s in every]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    parser.add_argument("kernel", help=f"one of {', '.join(DEBIAN_KERNELS)}, or all")
    parser.add_argument("--cache", type=Path, help="image cache (default $CMA_TOOL_CACHE or ~/.cache/cma-tool)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cma-tool-record-matrix"), help="scratch folder")
    parser.add_argument("scenarios", nargs="*", help=f"names (default: all of {', '.join(names)})")
    args = parser.parse_args(argv)
    kernels = list(DEBIAN_KERNELS) if args.kernel == "all" else [args.kernel]
    if not set(kernels) <= set(DEBIAN_KERNELS):
        parser.error(f"unknown kernel {args.kernel!r}")
    unknown = set(args.scenarios) - set(names)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    chosen = [s for s in every if not args.scenarios or s.name in args.scenarios]
    try:
        for kernel in kernels:
            record_kernel(rec, kernel, chosen, args.cache, args.work)
    except CmaToolError as exc:
        print(f"record.py: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    return 0


if __name__ == "__main__":
    sys.exit(main())
