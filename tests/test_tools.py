"""Every tool a test asks for is one install.sh installs: a fresh machine runs every test.

Read from the sources, not from a list kept by hand: the ``need("...")`` calls
in the tests against tests/tools.py's table, and the table's packages against
install.sh's DEB_PACKAGES and setup.cfg's test extras.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.tools import TOOL_PACKAGES

ROOT = Path(__file__).parents[1]


def install_sh_packages() -> set[str]:
    text = (ROOT / "install.sh").read_text()
    block = re.search(r"^DEB_PACKAGES=\((?P<body>.*?)^\)", text, re.MULTILINE | re.DOTALL)
    assert block, "install.sh has no DEB_PACKAGES=( ... ) list"
    words: set[str] = set()
    for line in block.group("body").splitlines():
        words.update(line.split("#", 1)[0].split())
    return words


def test_every_tool_a_test_needs_is_in_the_table() -> None:
    asked = set()
    for path in (ROOT / "tests").rglob("*.py"):
        if path.name in ("tools.py", "test_tools.py"):
            continue
        asked |= set(re.findall(r"""\bneed\(\s*["']([^"']+)["']\s*\)""", path.read_text()))
    asked |= {"/usr/sbin/sshd", "/usr/lib/openssh/sftp-server"}  # sshd_fixture asks through constants
    assert asked, "no need() calls found: the pattern is wrong"
    assert sorted(asked - set(TOOL_PACKAGES)) == []


def test_every_package_in_the_table_is_installed_by_install_sh() -> None:
    debs = install_sh_packages()
    extras = (ROOT / "setup.cfg").read_text()
    for tool, package in TOOL_PACKAGES.items():
        if package.startswith("pip:"):
            assert re.search(rf"^\s+{re.escape(package[4:])}\b", extras, re.MULTILINE), (tool, package)
        else:
            assert package in debs, f"{tool}: install.sh does not install {package}"
