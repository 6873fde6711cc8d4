"""Shared inputs for the generator tests: the project's boards, their plans, a synthetic kernel tree."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from cma_tool.board.load import read_board
from cma_tool.board.types import Board
from cma_tool.model.profiles import PROFILES
from cma_tool.plan import Plan, plan_board
from tests import tools
from tests.kernel.tree import Tree, fresh, linux_tree

DATA = Path(__file__).resolve().parent / "data"
BOARDS = Path(__file__).resolve().parents[2] / "boards"
INCLUDE = DATA / "include"
TREE = DATA / "kernel-tree"


def need(tool: str) -> str:
    return tools.need(tool)


def load(name: str) -> Board:
    """A project board, boards/<name>.yaml."""
    board, sink = read_board(BOARDS / f"{name}.yaml")
    assert board is not None, [str(d) for d in sink.items]
    assert not sink.errors, [str(d) for d in sink.errors]
    return board


def plan_for(board: Board, profile: str | None = None) -> Plan:
    return plan_board(board, kernel=profile)


def with_profile(board: Board, profile: str, **overrides: object) -> Board:
    """The board with another kernel profile (and profile values) as if its YAML said so."""
    prof = dataclasses.replace(PROFILES[profile], **overrides)  # type: ignore[arg-type]
    return dataclasses.replace(board, kernel=dataclasses.replace(board.kernel, profile=prof))


@pytest.fixture(scope="session")
def aquila() -> Board:
    return load("aquila")


@pytest.fixture(scope="session")
def goni() -> Board:
    return load("goni")


@pytest.fixture(scope="session")
def qemu_aquila() -> Board:
    return load("qemu-aquila")


def git(tree: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=Test", "-c", "user.email=test@example.org", *args], cwd=tree,
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 0, f"git {' '.join(args)}: {done.stderr}"
    return done.stdout


@pytest.fixture
def kernel_tree(tmp_path: Path) -> Path:
    """The synthetic kernel tree as a fresh git repository with one commit."""
    need("git")
    tree = tmp_path / "linux"
    shutil.copytree(TREE, tree)
    git(tree, "init", "-q")
    git(tree, "config", "user.name", "Test")
    git(tree, "config", "user.email", "test@example.org")
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", "base")
    return tree


def arm_syntax_check(source: Path, api: str) -> subprocess.CompletedProcess[str]:
    """The real ARM cross compiler, syntax only, against our stub headers of one API generation."""
    gcc = need("arm-linux-gnueabihf-gcc")
    return subprocess.run(
        [gcc, "-fsyntax-only", "-std=gnu89", "-Wall", "-Wdeclaration-after-statement", "-Werror", "-nostdinc",
         f"-I{DATA / ('api-' + api)}", f"-I{INCLUDE}", str(source)],
        capture_output=True, text=True, check=False, timeout=60)


@pytest.fixture(scope="session")
def linux(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tree]:
    """Debian's linux-source-6.1 (the parts the tests use), extracted once into the cache, in a worktree."""
    yield from linux_tree(tmp_path_factory)


@pytest.fixture
def tree(linux: Tree) -> Iterator[Tree]:
    yield from fresh(linux)
