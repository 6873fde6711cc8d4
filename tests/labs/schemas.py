"""Every report.json and summary.json a run wrote, validated against the schemas the package ships.

A run's folder is one a run claimed (it holds the run's lock file,
.cma-tool.lock), so a test's own toy report.json elsewhere is not taken for
a run's.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from cma_tool.locks import FOLDER_LOCK
from cma_tool.report.meta import schema

KINDS = {"report.json": "report", "summary.json": "summary"}


def validate_file(path: Path) -> list[str]:
    """What is wrong with one report or summary (empty: it is valid)."""
    validator = jsonschema.Draft202012Validator(schema(KINDS[path.name]),
                                                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{path}: not JSON: {exc}"]
    return [f"{path}: {'/'.join(str(p) for p in err.absolute_path) or '(top)'}: {err.message}"
            for err in validator.iter_errors(data)]


def written_by_runs(root: Path) -> list[Path]:
    return sorted(p for name in KINDS for p in root.rglob(name) if (p.parent / FOLDER_LOCK).exists())


def validate_tree(root: Path) -> tuple[int, list[str]]:
    """(files validated, problems) for every run's report and summary under ``root``."""
    files = written_by_runs(root)
    return len(files), [problem for f in files for problem in validate_file(f)]
