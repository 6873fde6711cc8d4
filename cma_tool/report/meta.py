"""What every report and summary says about itself: schema, tool, when, where, and the inputs by hash.

A rack compares runs across hosts, days and tool versions; a report that
says which schema it follows, which cma-tool wrote it, when (UTC), on which
host, and the sha256 of the board files, kernel and initrd it ran with can be
compared without guessing. The schemas (JSON Schema draft 2020-12) ship in
the package: ``cma_tool/report/schema/{report,summary}.schema.json``.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from cma_tool import __version__

#: Raised when a field is removed or changes meaning; adding an optional field keeps it.
SCHEMA_VERSION = 1


def iso_utc(epoch: float) -> str:
    """ISO 8601 in UTC to the millisecond: 2026-12-05T07:16:22.123Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch * 1000) % 1000:03d}Z"


def header(kind: str, started: float) -> dict[str, Any]:
    """The fields every report ("report") and summary ("summary") starts with."""
    return {"schema": f"cma-tool/{kind}", "schema_version": SCHEMA_VERSION, "tool_version": __version__,
            "started": iso_utc(started), "host": socket.gethostname()}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_hashes(paths: Iterable[str | Path]) -> dict[str, str]:
    """path -> sha256 for each file that exists (a file that went away is left out, not guessed)."""
    out = {}
    for p in paths:
        path = Path(p)
        if path.is_file():
            out[str(p)] = sha256_file(path)
    return out


def schema(kind: str) -> dict[str, Any]:
    """The packaged JSON Schema for "report" or "summary"."""
    text = resources.files("cma_tool.report").joinpath("schema", f"{kind}.schema.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data
