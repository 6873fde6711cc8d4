"""--retries: a lab failure is tried again (each try in its own folder); a wrong input is not."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A lab host whose QEMU is broken: a qemu-system-arm that fails the way a missing
    # KVM/ROM or a full disk makes it fail, first on the PATH.
    fake = tmp_path / "bin"
    fake.mkdir(exist_ok=True)
    qemu = fake / "qemu-system-arm"
    qemu.write_text("#!/bin/sh\necho 'qemu-system-arm: failed to initialize the machine' >&2\nexit 1\n")
    qemu.chmod(0o755)
    env = dict(os.environ, PATH=f"{fake}:{os.environ['PATH']}")
    return subprocess.run([sys.executable, "-m", "cma_tool", "run", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def test_infrastructure_failures_are_retried_into_their_own_folders(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run(tmp_path, "boards/qemu-aquila.yaml", "--out", str(out), "--retries", "2")
    assert res.returncode == 3, res.stderr
    assert res.stderr.count("retry ") == 2
    for folder in (out, out / "retry-1", out / "retry-2"):
        report = json.loads((folder / "report.json").read_text())
        assert report["verdict"] == "infrastructure" and "failed to initialize the machine" in report["message"]
    assert not (out / "retry-3").exists()


def test_configuration_errors_are_not_retried(tmp_path: Path) -> None:
    out = tmp_path / "out"
    res = run(tmp_path, "tests/board/data/every-error.yaml", "--out", str(out), "--retries", "2")
    assert res.returncode == 1
    assert not (out / "retry-1").exists()
