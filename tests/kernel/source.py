"""Debian's linux-source-6.1 as a real kernel tree for the tests: extracted once, shared, never written.

Only what the tests use comes out of the 138 MB tarball (about 10 s): the
Makefiles and every Kconfig file (defconfig reads them all), scripts/ (dtc,
kconfig), arch/arm, include/dt-bindings and include/uapi (the dt-bindings
headers include uapi ones), and Documentation/devicetree/bindings. It lands
in ``<cache>/linux-source/<sha256 of the tarball>/`` as a git repository
with one commit (the tool patches git trees), made under a lock so two
pytest processes do not both extract, and marked complete only at the end.
Tests work in their own ``git worktree`` of it (about 2 s), never in it.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

from cma_tool.generate.kerneltree import cache_root, file_lock
from tests import tools

TOP = "linux-source-6.1"
MEMBERS = ["Makefile", "Kbuild", "*Kconfig*", "scripts/*", "arch/arm/*", "include/dt-bindings/*",
           "include/uapi/*", "Documentation/devicetree/bindings/*"]
GIT = ["git", "-c", "user.name=cma-tool tests", "-c", "user.email=tests@cma-tool.invalid"]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _run(cmd: list[str], cwd: Path) -> None:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False, timeout=900)
    assert done.returncode == 0, f"{' '.join(cmd)}: {done.stderr[-2000:]}"


def extracted_tree() -> Path:
    """The shared extraction (a git repository), made on first use."""
    tarball = Path(tools.need("/usr/src/linux-source-6.1.tar.xz"))
    # make's defconfig builds kconfig with flex, bison; the kernel's Makefile calls bc
    for path in (tools.need("git"), tools.need("make"), tools.need("flex"), tools.need("bison"), tools.need("bc")):
        assert path
    entry = cache_root() / "linux-source" / _sha256(tarball)[:16]
    tree = entry / TOP
    with file_lock(entry.with_suffix(".lock")):
        if (entry / "complete").is_file():
            return tree
        shutil.rmtree(entry, ignore_errors=True)
        entry.mkdir(parents=True)
        _run(["tar", "-xf", str(tarball), "--wildcards", *(f"{TOP}/{m}" for m in MEMBERS)], entry)
        # The tree's .gitignore ignores everything at the top ("/*"): add by force.
        _run([*GIT, "init", "-q"], tree)
        _run([*GIT, "add", "-f", "."], tree)
        _run([*GIT, "commit", "-q", "-m", "linux-source-6.1 (the parts the tests use)"], tree)
        (entry / "complete").write_text(str(tarball) + "\n")
    return tree


def worktree(base: Path, dest: Path) -> Path:
    """A git worktree of ``base`` at ``dest``, at its one commit: a tree a test may patch."""
    with file_lock(base.parent.with_suffix(".lock")):
        _run([*GIT, "worktree", "prune"], base)  # those of earlier sessions, whose tmp folders are gone
        _run([*GIT, "worktree", "add", "-q", "--detach", str(dest), "HEAD"], base)
    return dest


def reset(tree: Path, commit: str) -> None:
    """Back to ``commit``: what a test applied is gone."""
    _run([*GIT, "reset", "-q", "--hard", commit], tree)
    _run([*GIT, "clean", "-q", "-fdx"], tree)


def head(tree: Path) -> str:
    done = subprocess.run([*GIT, "rev-parse", "HEAD"], cwd=tree, capture_output=True, text=True, check=True,
                          timeout=60)
    return done.stdout.strip()


def remove_worktree(base: Path, tree: Path) -> None:
    """Gone, and forgotten by the base repository (rmtree: git's own remove checks every file first)."""
    shutil.rmtree(tree, ignore_errors=True)
    with file_lock(base.parent.with_suffix(".lock")):
        _run([*GIT, "worktree", "prune"], base)
