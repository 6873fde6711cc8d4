#!/usr/bin/env python3
"""Record the kernel-traces scenarios again with Debian trixie's 6.12 armmp kernel.

    python3 tests/data/kernel-traces-6.12/record.py [--cache DIR] [--kernel-package PKG] [SCENARIO ...]

The same five scenarios, capture plans and files as
tests/data/kernel-traces/record.py (whose record() does the work), booted on
an image whose kernel comes from Debian trixie (ensure_image(suite="trixie"),
fetched through a private apt state in the cache), plus scenarios of its own
(:data:`EXTRA`). Writes tests/data/kernel-traces-6.12/<scenario>/ and
README.md here. Boots QEMU, one scenario at a time.

A scenario whose kernel never reaches /init (6.12.117 hangs early after a
device-tree CMA node fails to initialise) is booted once more with an early
console (``earlycon=pl011,0x09000000``, virt's UART) for
:data:`HANG_SECONDS`; its folder then holds scenario.json with
``"outcome": "hang"``, the inputs, and console.log up to where the kernel
stopped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
SUITE = "trixie"
sys.path.insert(0, str(HERE.parents[2]))

from cma_tool.deploy.image import TargetImage, ensure_image  # noqa: E402
from cma_tool.deploy.qemu import EMULATED_AQUILA_BANKS  # noqa: E402
from cma_tool.errors import CmaToolError  # noqa: E402
from tests.deploy.plain_boot import REFERENCE_BANKS, run_to_poweroff  # noqa: E402

#: virt's PL011 as an early console: shows how far a kernel that hangs got.
EARLYCON = "earlycon=pl011,0x09000000"
#: A good boot reaches /init in ~4 s here; a boot silent this long has hung.
HANG_SECONDS = 30.0
#: Files of a complete recording, removed when a scenario is re-recorded as a hang.
RUN_FILES = ("trace.txt", "meminfo-boot.txt", "meminfo.txt", "vmstat.txt", "capture.jsonl", "dmesg.txt")

STATIC_POOL_DTS = """\
	reserved-memory {
		#address-cells = <2>;
		#size-cells = <2>;
		ranges;

		vidpool@4c000000 {
			compatible = "shared-dma-pool";
			reusable;
			reg = <0x0 0x4c000000 0x0 0x02000000>;
		};
	};
"""
STATIC_12M_POOL_DTS = STATIC_POOL_DTS.replace("0x02000000", "0x00c00000")
TWO_STATIC_POOLS_DTS = """\
	reserved-memory {
		#address-cells = <2>;
		#size-cells = <2>;
		ranges;

		pool@4e000000 {
			compatible = "shared-dma-pool";
			reusable;
			reg = <0x0 0x4e000000 0x0 0x01000000>;
		};

		pool@4c000000 {
			compatible = "shared-dma-pool";
			reusable;
			reg = <0x0 0x4c000000 0x0 0x01000000>;
		};
	};
"""


def _recorder() -> ModuleType:
    # kernel-traces/ is a data folder, not a package: load its script by path.
    path = HERE.parent / "kernel-traces" / "record.py"
    spec = importlib.util.spec_from_file_location("kernel_traces_record", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def extra_scenarios(rec: ModuleType) -> list[Any]:
    """Scenarios only this folder has: they tell apart what the five cannot on 6.12."""
    return [
        rec.Scenario(
            "f-static-pool-and-cmdline",
            "banks as (a); a static 32M pool vidpool@4c000000 and no linux,cma node; "
            "cma=32M@0x60000000-0x70000000 makes the default area; 4 x 1080p YUYV "
            "(6.12 initialises reg nodes after the default area: log order and area index)",
            REFERENCE_BANKS,
            STATIC_POOL_DTS,
            rec.FOUR_1080P,
            cmdline="cma=32M@0x60000000-0x70000000",
        ),
        # g..j tell apart when 6.12.117 hangs (c and e do): a dynamic CMA node
        # that fails to initialise, with the default area then placed over the
        # range that node had taken and given back.
        rec.Scenario(
            "g-failed-static-pool",
            "banks as (a); a static 12M pool vidpool@4c000000 (not a multiple of 8 MiB): refused late, "
            "after the Kconfig default 16M area; 2 x 1080p YUYV",
            REFERENCE_BANKS,
            STATIC_12M_POOL_DTS,
            rec.TWO_1080P,
        ),
        rec.Scenario(
            "h-failed-dynamic-apart",
            "emulated Aquila banks; dynamic 12M linux,cma node (no linux,cma-default) in bank 0 "
            "(alloc-ranges 0x40000000+64M): refused; Kconfig default 16M in bank 1, away from it; 2 x 1080p YUYV",
            EMULATED_AQUILA_BANKS,
            rec.AQUILA_12M_DTS.replace("\t\t\tlinux,cma-default;\n", "").replace(
                "<0x0 0x50000000 0x0 0x18000000>", "<0x0 0x40000000 0x0 0x04000000>"
            ),
            rec.TWO_1080P,
        ),
        rec.Scenario(
            "i-failed-dynamic-overlap",
            "as (e) without linux,cma-default: the refused 12M node's range is given back and the "
            "Kconfig default 16M area is placed over it; 2 x 1080p YUYV",
            EMULATED_AQUILA_BANKS,
            rec.AQUILA_12M_DTS.replace("\t\t\tlinux,cma-default;\n", ""),
            rec.TWO_1080P,
        ),
        rec.Scenario(
            "j-failed-dynamic-cma0",
            "as (e) with cma=0: the refused node is bypassed, no default area, no CMA at all; "
            "2 x 1080p YUYV from normal pages",
            EMULATED_AQUILA_BANKS,
            rec.AQUILA_12M_DTS,
            rec.TWO_1080P,
            cmdline="cma=0",
        ),
        rec.Scenario(
            "k-two-static-pools-dt-order",
            "banks as (a); two static 16M pools, pool@4e000000 written before pool@4c000000; Kconfig "
            "default 16M; 2 x 1080p YUYV (6.12 initialises reg nodes in device-tree order, 6.1 by base)",
            REFERENCE_BANKS,
            TWO_STATIC_POOLS_DTS,
            rec.TWO_1080P,
        ),
    ]


def record_hang(rec: ModuleType, scenario: Any, image: TargetImage, work: Path, out_root: Path = HERE) -> str:
    """Boot again with an early console and keep what the kernel printed before it stopped."""
    out = out_root / scenario.name
    out.mkdir(parents=True, exist_ok=True)
    boot = rec.prepare_scenario(scenario, image, work, extra_cmdline=EARLYCON)
    try:
        run_to_poweroff(boot, log_path=out / "console.log", timeout=HANG_SECONDS)
    except (CmaToolError, subprocess.TimeoutExpired):
        pass  # the expected end: nothing more on the console
    else:
        raise SystemExit(f"{scenario.name}: hung without an early console but booted with one; record it again")
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
    lines = (out / "console.log").read_bytes().decode(errors="replace").replace("\r\n", "\n").strip().splitlines()
    meta = {
        "name": scenario.name, "summary": scenario.summary, "outcome": "hang", "hang_seconds": HANG_SECONDS,
        "last_line": lines[-1] if lines else "",
        "banks": [{"base": f"{b.base:#010x}", "size": f"{b.size:#010x}"} for b in scenario.banks],
        "initrd_addr": f"{boot.initrd_addr:#010x}", "memory": scenario.memory, "kernel_package": image.kernel_package,
        "kernel_version": image.kernel_version, "kernel": image.kernel_name, "architecture": image.architecture,
        "kernel_config": {"CMA_SIZE_MBYTES": image.config.cma_size_mbytes,
                          "ARCH_FORCE_MAX_ORDER": image.config.arch_force_max_order,
                          "CMA_AREAS": image.config.cma_areas, "CMA_ALIGNMENT": image.config.cma_alignment},
    }
    (out / "scenario.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "reserved-memory.dts").write_text(
        scenario.reserved_memory_dts or "/* no reserved-memory node: the board DTS has none */\n")
    (out / "bootargs.txt").write_text(boot.bootargs + "\n")
    (out / "agent-plan.txt").write_text(scenario.plan.render())
    return f"{scenario.name}: the kernel hung; last console line: {meta['last_line']}"


def main(argv: list[str] | None = None) -> int:
    rec = _recorder()
    rec.SCENARIOS.extend(extra_scenarios(rec))  # write_readme() lists them too
    names = [s.name for s in rec.SCENARIOS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cache", type=Path, help="image cache (default $CMA_TOOL_CACHE or ~/.cache/cma-tool)")
    parser.add_argument("--kernel-package", help=f"pin the kernel (default: {SUITE}'s newest armmp)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cma-tool-record-6.12"), help="scratch folder")
    parser.add_argument("scenarios", nargs="*", help=f"names (default: all of {', '.join(names)})")
    args = parser.parse_args(argv)
    unknown = set(args.scenarios) - set(names)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    chosen = [s for s in rec.SCENARIOS if not args.scenarios or s.name in args.scenarios]
    try:
        image = ensure_image(args.cache, kernel_package=args.kernel_package, suite=SUITE, progress=print)
        print(f"kernel: {image.kernel_package} {image.kernel_version} ({image.kernel_release})")
        for scenario in chosen:
            start = time.monotonic()
            try:
                line = rec.record(scenario, args.cache, args.work, image=image, out_root=HERE)
            except (CmaToolError, subprocess.TimeoutExpired) as exc:
                # TimeoutExpired: the console deadline passed while QEMU still ran.
                print(f"{scenario.name}: no complete run ({type(exc).__name__}); booting with an early console")
                line = record_hang(rec, scenario, image, args.work)
            print(line, f"({time.monotonic() - start:.2f} s)")
    except CmaToolError as exc:
        print(f"record.py: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    write_readme(rec.SCENARIOS)
    return 0


def write_readme(scenarios: list[Any]) -> None:
    lines = [
        "# Real kernel CMA traces: Debian trixie's 6.12 armmp kernel (emulated board)",
        "",
        "Recorded by `record.py` here (the scenarios of ../kernel-traces/record.py plus",
        "its own) on QEMU virt armhf; kernel package, version and config in each",
        "`scenario.json`. Same files as ../kernel-traces/. A folder whose scenario.json",
        'says `"outcome": "hang"` holds only the inputs and console.log (booted with',
        "an early console): the kernel stopped before /init.",
        "",
    ]
    for s in scenarios:
        meta = HERE / s.name / "scenario.json"
        if meta.is_file():
            data = json.loads(meta.read_text())
            hang = f" **Hangs on this kernel** after `{data.get('last_line', '')[15:]}`." if data.get("outcome") == "hang" else ""
            lines.append(f"- `{s.name}/`: {s.summary}.{hang}")
    (HERE / "README.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
