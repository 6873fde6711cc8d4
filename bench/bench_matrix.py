"""Benchmark (printed, never asserted): scenarios per minute of a matrix, one boot per cell vs shared boots.

The matrix: 2 boards (the emulated Aquila, and configs/two-streams.yaml with
two capture devices) x 2 kernels (bookworm's 6.1, trixie's 6.12) x 4
scenarios (the board's needs, one-after-another, hole-reuse,
tiny-and-1080p). hole-reuse and tiny-and-1080p need two capture devices, so
the matrix leaves those 4 combinations out: 12 cells run. Three ways, one
after the other in one run of this script:

  per cell      -- `cma-tool matrix --boot-per-cell -j 1`: every cell boots (what a loop of runs does)
  shared        -- `cma-tool matrix -j 1`: cells of one board and kernel share boots
  shared, -j 2  -- `cma-tool matrix -j 2`

    python3 bench/bench_matrix.py
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).parents[1]
MATRIX = ["--board", "boards/qemu-aquila.yaml,configs/two-streams.yaml", "--suite", "bookworm,trixie",
          "--scenario", "needs,configs/requests/one-after-another.yaml,configs/requests/hole-reuse.yaml,"
                        "configs/requests/tiny-and-1080p.yaml"]


def matrix(out: Path, *extra: str) -> tuple[float, dict[str, object]]:
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "cma_tool", "matrix", *MATRIX, "--out", str(out), "--json", *extra],
                         cwd=ROOT, capture_output=True, text=True, check=False)
    took = time.monotonic() - start
    if res.returncode != 0:
        raise SystemExit(f"cma-tool matrix {' '.join(extra)} failed ({res.returncode}):\n{res.stderr[-3000:]}")
    summary: dict[str, object] = json.loads(res.stdout)
    return took, summary


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cma-bench-matrix-") as tmp:
        rows = []
        for name, extra in (("one boot per cell, -j 1", ("--boot-per-cell", "-j", "1")),
                            ("shared boots, -j 1", ("-j", "1")),
                            ("shared boots, -j 2", ("-j", "2"))):
            took, summary = matrix(Path(tmp) / name.replace(" ", "").replace(",", "-"), *extra)
            cells = summary["cells"]
            assert isinstance(cells, list)
            rows.append((name, len(cells), summary.get("boots"), took))
        print(f"machine: {os.cpu_count()} cores, {platform.processor() or platform.machine()}, "
              f"load average {os.getloadavg()[0]:.2f} at the end")
        base = rows[0][3]
        print(f"{'way':26} {'cells':>5} {'boots':>5} {'seconds':>8} {'scenarios/min':>14} {'speed-up':>9}")
        for name, cells, boots, took in rows:
            print(f"{name:26} {cells:>5} {boots!s:>5} {took:>8.1f} {cells * 60 / took:>14.1f} {base / took:>8.2f}x")


if __name__ == "__main__":
    main()
