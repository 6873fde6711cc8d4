"""Shared inputs for the binary-format tests: real blobs from QEMU and dtc, and real readers."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pytest

from tests import tools

DATA = Path(__file__).resolve().parent.parent / "data" / "binfmt"


def need(tool: str) -> str:
    return tools.need(tool)


def dtc(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    need("dtc")
    return subprocess.run(["dtc", *args], input=stdin, capture_output=True, check=False, timeout=60)


def decompile(blob: bytes) -> str:
    """dtc's own dts text for a blob; fails the test on any complaint."""
    done = dtc("-I", "dtb", "-O", "dts", "-", stdin=blob)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b"", done.stderr.decode()
    return done.stdout.decode()


def compile_dts(text: str, *, symbols: bool = False) -> bytes:
    args = ["-I", "dts", "-O", "dtb", "-q"] + (["-@"] if symbols else []) + ["-"]
    done = dtc(*args, stdin=text.encode())
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


@pytest.fixture(scope="session")
def virt_dtb() -> bytes:
    """QEMU 7.2's own tree for -M virt,highmem=off -cpu cortex-a15 -m 768M (1 MiB, mostly free space)."""
    return gzip.decompress((DATA / "qemu-virt-768M.dtb.gz").read_bytes())


@pytest.fixture(scope="session")
def aquila_dtb() -> bytes:
    """tests/data/binfmt/aquila.dts compiled by dtc with -@ (labels kept in /__symbols__)."""
    return compile_dts((DATA / "aquila.dts").read_text(), symbols=True)


@pytest.fixture(scope="session")
def aquila_plain_dtb() -> bytes:
    return compile_dts((DATA / "aquila.dts").read_text())
