"""Prints how long generation takes (a benchmark, not a test: run it directly).

python3 -m tests.generate.bench_generate

Most of the time is the real tools: dtc for the check tree, mkimage for
boot.scr, git for the patch mail and git apply --check.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from cma_tool.generate import generate_all
from cma_tool.plan import Plan

from .conftest import TREE, load, plan_for


def median_ms(plan: Plan, base: Path, rounds: int = 7, **options: Any) -> float:
    """Median time of ``rounds`` generate_all runs, each into a fresh folder."""
    times = []
    for i in range(rounds):
        start = time.perf_counter()
        generate_all(plan, base / str(i), **options)
        times.append(time.perf_counter() - start)
    return sorted(times)[rounds // 2] * 1000


def main() -> None:
    board = load("aquila")
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        tree = work / "linux"
        shutil.copytree(TREE, tree)
        subprocess.run("git init -q && git add -A && git -c user.name=B -c user.email=b@example.org commit -qm b",
                       shell=True, cwd=tree, check=True)
        for profile in ("linux-6.1", "linux-3.5", "cma-2011"):
            ms = median_ms(plan_for(board, profile), work / profile)
            print(f"{profile:11s} all kinds          {ms:7.1f} ms")
        for profile, kind in (("linux-6.12", "dts"), ("cma-2011", "c")):
            ms = median_ms(plan_for(board, profile), work / f"patch-{profile}", only=[kind], patch=True,
                           kernel_tree=tree)
            print(f"{profile:11s} {kind:4s} + patch + check {ms:7.1f} ms")


if __name__ == "__main__":
    main()
