"""The artefact TFTP server, fetched from by real clients: tftpy's and curl's."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest
import tftpy

from cma_tool.deploy.tftp import serve_tftp
from cma_tool.errors import ConfigError, InfraError
from tests.tools import need

FIVE_MB = 5 * 1000 * 1000


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def artefacts(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    # Random bytes: a transfer that drops, repeats or reorders a block changes the digest.
    (folder / "zImage").write_bytes(os.urandom(FIVE_MB))
    (folder / "board.dtb").write_bytes(os.urandom(3000))
    (folder / "sub").mkdir()
    (folder / "sub" / "boot.scr").write_bytes(b"echo hello\n")
    (tmp_path / "secret").write_bytes(b"not for the board\n")
    (folder / "escape").symlink_to(tmp_path / "secret")
    return folder


def fetch(port: int, name: str, dest: Path) -> None:
    tftpy.TftpClient("127.0.0.1", port, options={"blksize": 1468}).download(name, str(dest), timeout=2, retries=3)


def test_five_megabytes_arrive_intact_with_tftpy(artefacts: Path, tmp_path: Path) -> None:
    want = hashlib.sha256((artefacts / "zImage").read_bytes()).hexdigest()
    with serve_tftp(artefacts, port=free_udp_port()) as tftp:
        start = time.perf_counter()
        fetch(tftp.port, "zImage", tmp_path / "got")
        took = time.perf_counter() - start
    assert hashlib.sha256((tmp_path / "got").read_bytes()).hexdigest() == want
    assert [r.name for r in tftp.requests if r.served] == ["zImage"]
    print(f"\ntftpy client, 5 MB, blksize 1468: {took:.3f} s ({FIVE_MB / took / 1e6:.1f} MB/s)")


def test_five_megabytes_arrive_intact_with_curl(artefacts: Path, tmp_path: Path) -> None:
    need("curl")
    # Debian's curl is built with TFTP: one without it is not what install.sh installs.
    assert "tftp" in subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout
    want = hashlib.sha256((artefacts / "zImage").read_bytes()).hexdigest()
    with serve_tftp(artefacts, port=free_udp_port()) as tftp:
        for blksize in (512, 1468):
            out = tmp_path / f"curl-{blksize}"
            start = time.perf_counter()
            done = subprocess.run(
                ["curl", "-sS", "--tftp-blksize", str(blksize), "-o", str(out),
                 f"tftp://127.0.0.1:{tftp.port}/zImage"],
                capture_output=True, text=True, timeout=120,
            )
            took = time.perf_counter() - start
            assert done.returncode == 0, done.stderr
            assert hashlib.sha256(out.read_bytes()).hexdigest() == want
            print(f"\ncurl, 5 MB, blksize {blksize}: {took:.3f} s ({FIVE_MB / took / 1e6:.1f} MB/s)")


def test_subfolders_are_served(artefacts: Path, tmp_path: Path) -> None:
    with serve_tftp(artefacts, port=free_udp_port()) as tftp:
        fetch(tftp.port, "sub/boot.scr", tmp_path / "a")
        fetch(tftp.port, "/board.dtb", tmp_path / "b")  # a leading slash means the folder's top, as with tftpd -s
    assert (tmp_path / "a").read_bytes() == b"echo hello\n"
    assert (tmp_path / "b").read_bytes() == (artefacts / "board.dtb").read_bytes()


@pytest.mark.parametrize("name", ["escape", "../secret", "sub/../../secret", "missing"])
def test_names_outside_the_folder_or_missing_are_refused(artefacts: Path, tmp_path: Path, name: str) -> None:
    with serve_tftp(artefacts, port=free_udp_port()) as tftp:
        with pytest.raises(tftpy.TftpException):
            fetch(tftp.port, name, tmp_path / "got")
        # The server is still serving after a refusal.
        fetch(tftp.port, "board.dtb", tmp_path / "ok")
    assert not (tmp_path / "got").exists() or (tmp_path / "got").read_bytes() != b"not for the board\n"
    assert (tmp_path / "ok").read_bytes() == (artefacts / "board.dtb").read_bytes()
    if name in ("escape", "missing"):  # the others are stopped by tftpy itself before our hook
        assert [r.name for r in tftp.refused] == [name]


def test_uploads_are_refused(artefacts: Path, tmp_path: Path) -> None:
    payload = tmp_path / "upload"
    payload.write_bytes(b"overwrite\n")
    before = (artefacts / "board.dtb").read_bytes()
    with serve_tftp(artefacts, port=free_udp_port()) as tftp, pytest.raises(tftpy.TftpException):
        tftpy.TftpClient("127.0.0.1", tftp.port).upload("board.dtb", str(payload), timeout=2, retries=2)
    assert (artefacts / "board.dtb").read_bytes() == before
    assert [r.reason for r in tftp.refused] == ["uploads are refused"]


def test_port_zero_picks_a_free_port_and_the_port_is_released(artefacts: Path) -> None:
    with serve_tftp(artefacts, port=0) as tftp:
        assert tftp.port > 0
        port = tftp.port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))  # fails if the server still held it


def test_busy_port_is_an_infrastructure_error(artefacts: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        with pytest.raises(InfraError, match="already in use"), serve_tftp(artefacts, port=s.getsockname()[1]):
            pass


def test_missing_folder_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"), serve_tftp(tmp_path / "nope", port=0):
        pass
