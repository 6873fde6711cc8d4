"""Benchmark (printed, never asserted): what `cma-tool run` adds to a bare boot + capture.

In one run of this script, alternating to share the machine's noise fairly:
  bare  -- qemu-system-arm on the very files a `cma-tool run` generated, read by a
           minimal blocking socket reader until the firmware's DONE line and power-off;
  tool  -- `python3 -m cma_tool run boards/qemu-aquila.yaml` (warm cache), whole process.
Also, with --cold, one run from an empty cache (downloads included).

    python3 bench/bench_run.py [--rounds 5] [--cold]
"""

from __future__ import annotations

import argparse
import os
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


def bare_run(files: Path) -> float:
    from cma_tool.deploy.qemu import BootFiles
    from tests.deploy.plain_boot import run_to_poweroff

    boot = BootFiles(files / "zImage-dtb", files / "initrd.gz", 0x44000000, files / "board.dtb",
                     files / "board.dts", "")
    start = time.monotonic()
    out = run_to_poweroff(boot, log_path=files / "bare.log", timeout=120)
    took = time.monotonic() - start
    if out.capture_rc != 0:
        raise SystemExit("bare run: capture failed")
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cold", action="store_true", help="also time one run from an empty cache")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="cma-bench-") as tmp:
        work = Path(tmp)
        tool_run(work / "warmup")  # fills the cache and leaves the generated files to boot bare
        tools, bares = [], []
        for i in range(args.rounds):
            bares.append(bare_run(work / "warmup"))
            tools.append(tool_run(work / f"tool{i}"))
        t, b = statistics.median(tools), statistics.median(bares)
        print(f"bare QEMU boot + capture: median {b:.2f} s over {len(bares)} ({', '.join(f'{x:.2f}' for x in bares)})")
        print(f"cma-tool run (warm):      median {t:.2f} s over {len(tools)} ({', '.join(f'{x:.2f}' for x in tools)})")
        ratios = [x / y for x, y in zip(tools, bares, strict=True)]
        print(f"tool / bare: median of per-pair ratios {statistics.median(ratios):.3f} "
              f"(goal <= 1.10; labgrid adds 1.157 to the same kind of boot)")
        if args.cold:
            env = dict(os.environ, CMA_TOOL_CACHE=str(work / "empty-cache"))
            cold = tool_run(work / "cold", env=env)
            print(f"cold cma-tool run from an empty cache (downloads included): {cold:.2f} s (goal < 60 s)")


if __name__ == "__main__":
    main()
