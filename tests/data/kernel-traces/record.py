#!/usr/bin/env python3
"""Record real kernel CMA traces on the emulated board, as test data for the model.

    python3 tests/data/kernel-traces/record.py [--cache DIR] [SCENARIO ...]

Boots each scenario once (QEMU virt, Debian's 6.1 armmp kernel, vivid) and
writes into tests/data/kernel-traces/<scenario>/:

    scenario.json        banks, initrd address, kernel package and version, vivid parameters
    reserved-memory.dts  the /reserved-memory part of the board DTS (virt's root cells: 2/2)
    bootargs.txt         the whole kernel command line
    agent-plan.txt       the agent's plan (/cmatool/plan); recordings made before the agent took a
                         plan have capture-plan.txt instead: the capture program's arguments
    console.log          every byte of the serial console
    trace.txt            /sys/kernel/tracing/trace after the run (trace_event=cma:* from boot)
    meminfo-boot.txt     /proc/meminfo before vivid is loaded
    meminfo.txt          /proc/meminfo after the run
    vmstat.txt           the cma lines of /proc/vmstat after the run
    capture.jsonl        the capture program's JSON lines
    dmesg.txt            the kernel log (boot-time reservations, allocation failures)

and rewrites README.md here, one line per scenario. Only this script boots QEMU
for the recordings; rerun it when the kernel or the firmware changes.
tests/data/kernel-traces-6.12/record.py records the same scenarios with
another kernel through :func:`record`'s ``image`` and ``out_root``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
# A script run from anywhere: make the source tree's package importable.
sys.path.insert(0, str(HERE.parents[2]))

from cma_tool.captures import VIVID_INSTANCE  # noqa: E402
from cma_tool.deploy.agent import AgentPlan, ModuleLoad, Release, Start, StreamSpec  # noqa: E402
from cma_tool.deploy.image import TargetImage, ensure_image  # noqa: E402
from cma_tool.deploy.qemu import EMULATED_AQUILA_BANKS, BootFiles, MemoryBank, prepare_boot  # noqa: E402
from cma_tool.errors import CmaToolError  # noqa: E402
from tests.deploy.plain_boot import REFERENCE_BANKS, run_to_poweroff  # noqa: E402

# Fixed so that a re-recording differs only where the kernel does.
RNG_SEED = bytes(range(32))

#: What the kernel is booted with; a scenario's own words come after.
BASE_CMDLINE = "console=ttyAMA0 panic=-1 trace_event=cma:* cmatool.mode=run"


def held_together(*streams: tuple[int, int, str, int, int]) -> AgentPlan:
    """Streams s0, s1, ... on vivid instances 0, 1, ...: all started, then released newest first.

    Each is (width, height, format, buffers, frames); vivid as the emulated board loads it.
    """
    n = len(streams)
    vivid = ModuleLoad("vivid", (("n_devs", str(n)), *((k, ",".join([v] * n)) for k, v in VIVID_INSTANCE.items())))
    specs = tuple(StreamSpec(f"s{i}", f"driver:vivid:{i}", w, h, fmt) for i, (w, h, fmt, _, _) in enumerate(streams))
    starts = [Start(f"s{i}", buffers, frames) for i, (_, _, _, buffers, frames) in enumerate(streams)]
    releases = [Release(f"s{i}") for i in reversed(range(n))]
    return AgentPlan((vivid,), specs, (*starts, *releases))


FOUR_1080P = held_together((1920, 1080, "YUYV", 4, 5))
TWO_STREAMS_TOGETHER = held_together((1280, 720, "NV12", 3, 4), (640, 480, "YUYV", 4, 4))
TWO_1080P = held_together((1920, 1080, "YUYV", 2, 3))

def _pool(name: str, body: str) -> str:
    return f"\t\t{name} {{\n\t\t\tcompatible = \"shared-dma-pool\";\n\t\t\treusable;\n{body}\t\t}};\n"


def _reserved(*pools: str) -> str:
    head = "\treserved-memory {\n\t\t#address-cells = <2>;\n\t\t#size-cells = <2>;\n\t\tranges;\n\n"
    return head + "\n".join(pools) + "\t};\n"


REFERENCE_DTS = _reserved(
    _pool("linux,cma", "\t\t\tsize = <0x0 0x04000000>;\n\t\t\talloc-ranges = <0x0 0x60000000 0x0 0x10000000>;\n"
                       "\t\t\tlinux,cma-default;\n"),
    _pool("vidpool@4c000000", "\t\t\treg = <0x0 0x4c000000 0x0 0x02000000>;\n"),
)
AQUILA_64M_DTS = _reserved(
    _pool("linux,cma", "\t\t\tsize = <0x0 0x04000000>;\n\t\t\talloc-ranges = <0x0 0x50000000 0x0 0x18000000>;\n"
                       "\t\t\tlinux,cma-default;\n"),
)
AQUILA_12M_DTS = AQUILA_64M_DTS.replace("0x04000000", "0x00c00000")


# Several dynamic nodes: the kernel's unstable heapsort decides their order.
TWO_DYNAMIC_DTS = _reserved(
    _pool("linux,cma", "\t\t\tsize = <0x0 0x04000000>;\n\t\t\talloc-ranges = <0x0 0x50000000 0x0 0x18000000>;\n"
                       "\t\t\tlinux,cma-default;\n"),
    _pool("region@43000000", "\t\t\treg = <0x0 0x43000000 0x0 0x01000000>;\n"),
    _pool("region@54000000", "\t\t\treg = <0x0 0x54000000 0x0 0x01000000>;\n"),
    _pool("vidpool", "\t\t\tsize = <0x0 0x01000000>;\n\t\t\talloc-ranges = <0x0 0x50000000 0x0 0x08000000>;\n"),
)
THREE_DYNAMIC_DTS = _reserved(
    _pool("linux,cma", "\t\t\tsize = <0x0 0x02000000>;\n\t\t\talloc-ranges = <0x0 0x50000000 0x0 0x18000000>;\n"
                       "\t\t\tlinux,cma-default;\n"),
    _pool("region@43000000", "\t\t\treg = <0x0 0x43000000 0x0 0x01000000>;\n"),
    _pool("poolb", "\t\t\tsize = <0x0 0x01000000>;\n\t\t\talloc-ranges = <0x0 0x50000000 0x0 0x18000000>;\n"),
    _pool("poolc", "\t\t\tsize = <0x0 0x00800000>;\n\t\t\talloc-ranges = <0x0 0x50000000 0x0 0x18000000>;\n"),
    _pool("region@54000000", "\t\t\treg = <0x0 0x54000000 0x0 0x01000000>;\n"),
)


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    banks: tuple[MemoryBank, ...]
    reserved_memory_dts: str
    plan: AgentPlan
    cmdline: str = ""
    memory: str = "768M"  # QEMU's -m: RAM enough for the banks


SCENARIOS = [
    Scenario(
        "a-reference-dt-cma",
        "banks 0x40000000/256M + 0x60000000/256M; linux,cma 64M dynamic in bank 1 (alloc-ranges), "
        "default; named static 32M pool vidpool@4c000000; 4 x 1080p YUYV",
        REFERENCE_BANKS,
        REFERENCE_DTS,
        FOUR_1080P,
    ),
    Scenario(
        "b-kconfig-default-16m",
        "banks as (a); no DT CMA node, no cma=: Kconfig default 16M area 'reserved'; 4 x 1080p YUYV, the 4th buffer fails",
        REFERENCE_BANKS,
        "",
        FOUR_1080P,
    ),
    Scenario(
        "c-cmdline-overrides-dt",
        "(a) plus cma=32M@0x60000000-0x70000000: the linux,cma node is bypassed; 4 x 1080p YUYV",
        REFERENCE_BANKS,
        REFERENCE_DTS,
        FOUR_1080P,
        cmdline="cma=32M@0x60000000-0x70000000",
    ),
    Scenario(
        "d-aquila-two-streams",
        "emulated Aquila banks 0x40000000/80M + 0x50000000/384M; linux,cma 64M default in bank 1; "
        "two vivid instances held together: 1280x720 NV12 x3 and 640x480 YUYV x4",
        EMULATED_AQUILA_BANKS,
        AQUILA_64M_DTS,
        TWO_STREAMS_TOGETHER,
    ),
    Scenario(
        "e-dt-12m-refused",
        "emulated Aquila banks; dynamic 12M linux,cma node, not a multiple of armhf's 8 MiB unit: "
        "refused, Kconfig default 16M 'reserved' instead (arm64's 2 and 4 MiB units accept it); 2 x 1080p YUYV",
        EMULATED_AQUILA_BANKS,
        AQUILA_12M_DTS,
        TWO_1080P,
    ),
    Scenario(
        "f-two-dynamic-nodes",
        "emulated Aquila banks; dynamic linux,cma 64M default, static region@43000000 and region@54000000, then a "
        "dynamic 16M vidpool in the first 128M of bank 1: the kernel's heapsort puts vidpool first; 4 x 1080p YUYV",
        EMULATED_AQUILA_BANKS,
        TWO_DYNAMIC_DTS,
        FOUR_1080P,
    ),
    Scenario(
        "g-three-dynamic-nodes",
        "emulated Aquila banks; dynamic linux,cma 32M default, static region@43000000, dynamic poolb 16M and poolc 8M, "
        "static region@54000000: the order the heapsort leaves three equal keys in; 4 x 1080p YUYV",
        EMULATED_AQUILA_BANKS,
        THREE_DYNAMIC_DTS,
        FOUR_1080P,
    ),
]


def prepare_scenario(scenario: Scenario, image: TargetImage, work_root: Path, *, extra_cmdline: str = "") -> BootFiles:
    """The boot files of ``scenario`` on ``image``, in ``work_root/<name>/``."""
    cmdline = " ".join(w for w in (BASE_CMDLINE, scenario.cmdline, extra_cmdline) if w)
    return prepare_boot(
        image,
        work_root / scenario.name,
        banks=scenario.banks,
        reserved_memory_dts=scenario.reserved_memory_dts,
        bootargs=cmdline,
        agent_files={"plan": scenario.plan.render()},
        rng_seed=RNG_SEED,
        memory=scenario.memory,
    )


def record(
    scenario: Scenario, cache: Path | None, work_root: Path, *, image: TargetImage | None = None, out_root: Path = HERE
) -> str:
    """Boot ``scenario`` once on ``image`` (default: the 6.1 image) and write its files into ``out_root/<name>/``."""
    image = image or ensure_image(cache)
    out = out_root / scenario.name
    out.mkdir(exist_ok=True)
    boot = prepare_scenario(scenario, image, work_root)
    run = run_to_poweroff(boot, log_path=out / "console.log", memory=scenario.memory)
    sections = run.sections
    missing = [n for n in ("capture", "meminfo-boot", "meminfo", "vmstat", "trace", "dmesg") if n not in sections]
    if missing:
        raise SystemExit(f"{scenario.name}: the run printed no {', '.join(missing)} section; see {out / 'console.log'}")

    (out / "scenario.json").write_text(
        json.dumps(
            {
                "name": scenario.name,
                "summary": scenario.summary,
                "banks": [{"base": f"{b.base:#010x}", "size": f"{b.size:#010x}"} for b in scenario.banks],
                "initrd_addr": f"{boot.initrd_addr:#010x}",
                "memory": scenario.memory,
                "kernel_package": image.kernel_package,
                "kernel_version": image.kernel_version,
                **({"suite": image.suite} if image.suite is not None else {}),
                "kernel": image.kernel_name,
                "architecture": image.architecture,
                "kernel_config": {
                    "CMA_SIZE_MBYTES": image.config.cma_size_mbytes,
                    "ARCH_FORCE_MAX_ORDER": image.config.arch_force_max_order,
                    "CMA_AREAS": image.config.cma_areas,
                    "CMA_ALIGNMENT": image.config.cma_alignment,
                },
                "capture_rc": run.capture_rc,
            },
            indent=2,
        )
        + "\n"
    )
    (out / "reserved-memory.dts").write_text(scenario.reserved_memory_dts or "/* no reserved-memory node: the board DTS has none */\n")
    (out / "bootargs.txt").write_text(boot.bootargs + "\n")
    (out / "capture-plan.txt").unlink(missing_ok=True)  # the argument list of recordings made before the plan
    (out / "agent-plan.txt").write_text(scenario.plan.render())
    files = {
        "trace.txt": "trace",
        "meminfo-boot.txt": "meminfo-boot",
        "meminfo.txt": "meminfo",
        "vmstat.txt": "vmstat",
        "capture.jsonl": "capture",
        "dmesg.txt": "dmesg",
    }
    for filename, section in files.items():
        (out / filename).write_text(sections[section].text)
    return (
        f"{scenario.name}: booted to /init in {run.seconds_to_init:.2f} s, "
        f"whole run {run.seconds_total:.2f} s, capture rc={run.capture_rc}"
    )


def write_readme(out_root: Path = HERE, kernel: str = "Debian's 6.1 armmp kernel") -> None:
    lines = [
        "# Real kernel CMA traces (emulated board)",
        "",
        f"Recorded by `record.py` here on QEMU virt armhf with {kernel}",
        "(kernel package and version in each `scenario.json`). Each folder: the DTS",
        "/reserved-memory part, the command line, the capture plan, the console, the",
        "trace buffer, meminfo, vmstat, the capture program's JSON lines and the kernel log.",
        "",
    ]
    for s in SCENARIOS:
        if (out_root / s.name / "scenario.json").is_file():
            lines.append(f"- `{s.name}/`: {s.summary}")
    (out_root / "README.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1] if __doc__ else None)
    parser.add_argument("--cache", type=Path, help="image cache (default $CMA_TOOL_CACHE or ~/.cache/cma-tool)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/cma-tool-record"), help="scratch folder")
    parser.add_argument("scenarios", nargs="*", help="names (default: all)")
    args = parser.parse_args(argv)
    chosen = [s for s in SCENARIOS if not args.scenarios or s.name in args.scenarios]
    unknown = set(args.scenarios) - {s.name for s in SCENARIOS}
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    try:
        for scenario in chosen:
            start = time.monotonic()
            print(record(scenario, args.cache, args.work), f"(with image: {time.monotonic() - start:.2f} s)")
    except CmaToolError as exc:
        print(f"record.py: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    write_readme()
    return 0


if __name__ == "__main__":
    sys.exit(main())
