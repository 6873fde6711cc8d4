#!/usr/bin/env python3
"""Record the console the simulated bench Aquila plays back: a real `cma-tool run` of its emulated twin.

    python3 tests/data/serial-replay/record.py [--cache DIR]

Runs ``cma-tool run tests/sim/emulated-twin.yaml`` (QEMU's direct boot of
Debian's 6.1 armmp kernel, our agent, vivid standing in for FIMC) through
the real command line, requires a pass, and keeps here:

    console.log      every byte of the serial console (what tests/sim/board.py's bootz plays back)
    agent-plan.txt   the plan the agent ran
    cmdline.txt      the command line the kernel booted with
    report.json      the run's report (its verdict and checks)

Rerun it when the kernel, the agent or the capture program changes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", help="the image cache (default: cma-tool's)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "cma_tool", "run", "tests/sim/emulated-twin.yaml", "--out", str(out)]
        if args.cache:
            cmd += ["--cache", args.cache]
        done = subprocess.run(cmd, cwd=ROOT, check=False)
        report = json.loads((out / "report.json").read_text())
        if done.returncode != 0 or report["verdict"] != "pass":
            print(f"the twin's run did not pass ({report['verdict']}: {report.get('message')}); nothing recorded",
                  file=sys.stderr)
            return 1
        for name in ("console.log", "agent-plan.txt", "report.json"):
            shutil.copyfile(out / name, HERE / name)
        cmdline = json.loads((out / "observed.json").read_text())["cmdline"]
        (HERE / "cmdline.txt").write_text(cmdline + "\n")
    print(f"recorded {HERE / 'console.log'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
