"""Watching a run from outside, as a lab's watcher does: its report.json, rewritten after every stage."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any


def read_report(out: Path) -> dict[str, Any]:
    """``out/report.json`` as it is now; {} while it does not exist or is being replaced."""
    try:
        data: dict[str, Any] = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        return {}
    return data


def stage_at(report: dict[str, Any], name: str) -> float | None:
    """Seconds into the run at which it reached stage ``name`` (None: not yet)."""
    for s in report.get("stages", []):
        if s["stage"] == name:
            return float(s["at"])
    return None


def wait_for_stage(out: Path, stage: str, proc: subprocess.Popen[str], timeout: float = 60) -> bool:
    """Whether the run ``proc`` writing ``out`` reaches ``stage`` within ``timeout`` s (False once it has ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if stage_at(read_report(out), stage) is not None:
            return True
        time.sleep(0.02)
    return False
