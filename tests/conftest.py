"""Suite-wide: every report.json and summary.json a run writes during the tests follows the packaged schema.

Checked after each test that used tmp_path (the failure names that test),
and once more at the end over every temporary folder of the session (module-
and session-scoped fixtures' runs included).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.labs.schemas import validate_tree


@pytest.fixture(autouse=True)
def _reports_follow_the_schema(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    tmp = request.node.funcargs.get("tmp_path")
    if isinstance(tmp, Path) and tmp.exists():
        _, problems = validate_tree(tmp)
        assert not problems, "reports that do not follow the schema:\n" + "\n".join(problems)


@pytest.fixture(autouse=True, scope="session")
def _every_report_of_the_session_follows_the_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    yield
    _, problems = validate_tree(tmp_path_factory.getbasetemp())
    assert not problems, "reports that do not follow the schema:\n" + "\n".join(problems)
