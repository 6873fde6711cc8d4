"""What `cma-tool run` loads before the board boots, and what it leaves for the wait while it boots.

Every millisecond before QEMU starts is a millisecond over plain QEMU
(bench/bench_run.py). The modules that judge and report a run are not
needed until the board is done: they are loaded on a thread while it boots
(run.preload_when_started). These tests run in fresh interpreters, so what
they see in sys.modules is what a real `cma-tool run` process would have.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from cma_tool.run import AFTER_BOOT_MODULES

ROOT = Path(__file__).parents[2]


def fresh_python(code: str) -> str:
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                         check=False)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_the_path_to_the_boot_does_not_load_what_judges_the_run() -> None:
    # Everything `cma-tool run` imports up to starting QEMU (the direct boot, the default way).
    out = fresh_python(
        "import sys, json\n"
        "import cma_tool.cli, cma_tool.run, cma_tool.captures, cma_tool.prediction, cma_tool.report.plan_text\n"
        "import cma_tool.deploy.emulated, cma_tool.deploy.image, cma_tool.deploy.qemu, cma_tool.deploy.console\n"
        "import cma_tool.deploy.watch, cma_tool.generate.bootargs, cma_tool.generate.dts\n"
        f"print(json.dumps(sorted(m for m in {list(AFTER_BOOT_MODULES)!r} if m in sys.modules)))\n")
    assert json.loads(out) == []


def test_the_preload_starts_at_the_first_stage_once_and_loads_the_modules() -> None:
    out = fresh_python(
        "import sys, threading, time, json\n"
        "from cma_tool.run import AFTER_BOOT_MODULES, preload_when_started\n"
        "seen = []\n"
        "stage = preload_when_started(lambda name, **facts: seen.append([name, facts]), AFTER_BOOT_MODULES)\n"
        "before = [m for m in AFTER_BOOT_MODULES if m in sys.modules]\n"
        "stage('boot', serial='unix://@x')\n"
        "stage('init')\n"
        "threads = [t.name for t in threading.enumerate() if t.name == 'cma-tool-preload']\n"
        "deadline = time.monotonic() + 30\n"
        "while time.monotonic() < deadline and not all(m in sys.modules for m in AFTER_BOOT_MODULES):\n"
        "    time.sleep(0.05)\n"
        "print(json.dumps({'before': before, 'seen': seen, 'threads': threads,\n"
        "                  'after': [m for m in AFTER_BOOT_MODULES if m in sys.modules]}))\n")
    got = json.loads(out)
    assert got["before"] == []
    assert got["seen"] == [["boot", {"serial": "unix://@x"}], ["init", {}]]  # every stage still recorded
    assert got["threads"] == ["cma-tool-preload"]  # one thread, started by the first stage only
    assert got["after"] == list(AFTER_BOOT_MODULES)
