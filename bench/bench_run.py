"""Benchmark (printed, never asserted): what `cma-tool run` costs over plain QEMU booting the same files.

In one run of this script, pairs interleaved to share the machine's noise fairly:
  plain -- qemu-system-arm as a user would start it by hand: the same machine options, the
           kernel, DTB and initrd.gz a `cma-tool run` booted, the console to a file, until
           the guest powers off (QEMU exits: -no-reboot). Nothing of ours in the loop.
  tool  -- `python3 -m cma_tool run boards/qemu-aquila.yaml` (warm cache), the whole process.
The ratio reported is the median of the per-pair ratios. With --cold, also one run from an
empty cache (downloads included).

    python3 bench/bench_run.py [--pairs 7] [--cold]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))


def tool_run(out: Path, env: dict[str, str] | None = None) -> float:
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "cma_tool", "run", "boards/qemu-aquila.yaml", "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    took = time.monotonic() - start
    if res.returncode != 0:
        raise SystemExit(f"cma-tool run failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return took


def plain_qemu_command(files: Path, log: Path) -> list[str]:
    """The command line a user would type for the same boot: our machine options, the run's own files.

    The run boots the cached zImage with its DTB loaded right after it in RAM (where an appended DTB
    sits) and the initrd at its address: the same three loads here, the console to a file.
    """
    from cma_tool.deploy.qemu import DEFAULT_INITRD_ADDR, KERNEL_LOAD_OFFSET, MACHINE_ARGS, QEMU, VIRT_LOADER_START, zimage_size

    kernel = files / "vmlinuz"
    dtb_addr = VIRT_LOADER_START + KERNEL_LOAD_OFFSET + zimage_size(kernel)
    return [QEMU, *MACHINE_ARGS, "-m", "768M", "-no-reboot", "-monitor", "none", "-kernel", str(kernel),
            "-device", f"loader,file={files / 'initrd.gz'},addr={DEFAULT_INITRD_ADDR:#x},force-raw=on",
            "-device", f"loader,file={files / 'board.dtb'},addr={dtb_addr:#x},force-raw=on",
            "-serial", f"file:{log}"]


def plain_run(files: Path) -> float:
    log = files / "plain.log"
    start = time.monotonic()
    subprocess.run(plain_qemu_command(files, log), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120, check=True)
    took = time.monotonic() - start
    if b"==== CMA-TOOL DONE rc=0 ====" not in log.read_bytes():
        raise SystemExit(f"plain QEMU run: the agent did not finish; see {log}")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=7)
    ap.add_argument("--cold", action="store_true", help="also time one run from an empty cache")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cma-bench-") as tmp:
        work = Path(tmp)
        tool_run(work / "warmup")  # fills the cache and leaves the generated files to boot plainly
        tools, plains = [], []
        for i in range(args.pairs):
            plains.append(plain_run(work / "warmup"))
            tools.append(tool_run(work / f"tool{i}"))
        t, p = statistics.median(tools), statistics.median(plains)
        print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
              f"load average {os.getloadavg()[0]:.2f} at the end")
        print(f"plain QEMU, same files:  median {p:.2f} s over {len(plains)} ({', '.join(f'{x:.2f}' for x in plains)})")
        print(f"cma-tool run (warm):     median {t:.2f} s over {len(tools)} ({', '.join(f'{x:.2f}' for x in tools)})")
        ratios = sorted(x / y for x, y in zip(tools, plains, strict=True))
        print(f"cma-tool / plain QEMU: median of per-pair ratios {statistics.median(ratios):.3f} "
              f"(range {ratios[0]:.3f}-{ratios[-1]:.3f}; goal <= 1.05; labgrid adds 1.157 to a comparable boot)")
        if args.cold:
            env = dict(os.environ, CMA_TOOL_CACHE=str(work / "empty-cache"))
            cold = tool_run(work / "cold", env=env)
            print(f"cold cma-tool run from an empty cache (downloads included): {cold:.2f} s (goal < 60 s)")


if __name__ == "__main__":
    main()
