"""A versioned, documented report: what a run says about itself, its checks' ids, JUnit, interrupts, retries.

One serial run on the bench-board simulator (no QEMU, ~3 s) is the run most
assertions look at; its expected values are worked out here from the files
it was given, never read back from an earlier run.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cma_tool import __version__
from cma_tool.deploy.image.cache import ensure_image
from cma_tool.deploy.qemu import EMULATED_AQUILA_BANKS, prepare_boot
from cma_tool.errors import ExitCode
from cma_tool.run import RunOptions, run_with_retries
from tests.labs.schemas import validate_file
from tests.sim import RECORDED_RUN, SimBoard, write_sim_aquila, zimage

ROOT = Path(__file__).parents[2]
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class SerialRun:
    def __init__(self, tmp: Path, *extra: str, sigterm_at: str | None = None) -> None:
        with SimBoard(tmp / "sim", relay=True, kernel_log=RECORDED_RUN / "console.log") as sim:
            self.board = write_sim_aquila(tmp, sim, board_ip=None)
            self.kernel = tmp / "zImage"
            self.kernel.write_bytes(zimage(500_000, seed=5))
            self.out = tmp / "out"
            proc = subprocess.Popen(
                [sys.executable, "-m", "cma_tool", "run", str(self.board), "--target", "serial", "--console",
                 sim.path, "--kernel", str(self.kernel), "--out", str(self.out), "--junit",
                 str(self.out / "junit.xml"), *extra], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
            if sigterm_at is not None:
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline and not self._reached(sigterm_at):
                    time.sleep(0.02)
                proc.send_signal(signal.SIGTERM)
            self.stdout, self.stderr = proc.communicate(timeout=300)
            self.code = proc.returncode

    def _reached(self, stage: str) -> bool:
        try:
            return stage in [s["stage"] for s in self.report["stages"]]
        except (OSError, ValueError, KeyError):
            return False

    @property
    def report(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.out / "report.json").read_text())
        return data


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SerialRun]:
    yield SerialRun(tmp_path_factory.mktemp("serial"))


def test_the_report_says_which_schema_tool_time_and_host(serial: SerialRun) -> None:
    assert serial.code == 0, serial.stderr
    rep = serial.report
    assert (rep["schema"], rep["schema_version"], rep["tool_version"]) == ("cma-tool/report", 1, __version__)
    assert rep["host"] == socket.gethostname()
    started = time.mktime(time.strptime(rep["started"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
    assert abs(started - (serial.out / "plan.json").stat().st_mtime) < 30
    assert validate_file(serial.out / "report.json") == []


def test_the_report_hashes_what_the_run_was_given_and_what_the_board_got(serial: SerialRun) -> None:
    hashes = serial.report["hashes"]
    # The board file the simulator wrote includes sim-aquila.yaml: both are hashed.
    assert hashes["board_files"] == {str(serial.board): sha256(serial.board),
                                     str(ROOT / "tests/sim/sim-aquila.yaml"): sha256(ROOT / "tests/sim/sim-aquila.yaml")}
    assert hashes["kernel"] == {"path": str(serial.kernel), "sha256": sha256(serial.kernel)}
    assert hashes["initrd"]["sha256"] == sha256(serial.out / "initrd.gz")


def test_check_ids_are_unique_whole_and_name_what_they_check(serial: SerialRun) -> None:
    ids = [c["id"] for c in serial.report["checks"]]
    assert len(ids) == len(set(ids))
    # The pool, then four 1080p buffers (tests/e2e/expect.py): the first buffer is the area's second allocation.
    first_buffer = next(c for c in serial.report["checks"] if c["id"] == "events/linux,cma/alloc_finish#2")
    assert "pfn=0x64100" in first_buffer["observed"]
    assert "boot/area/linux,cma" in ids and "boot/cmdline" in ids and "counters/CmaTotal" in ids
    # A log line longer than 60 characters is whole in its id and name.
    line = "OF: reserved mem: initialized node linux,cma, compatible id shared-dma-pool"
    assert f"log/{line}" in ids and any(c["name"] == f"log: {line}" for c in serial.report["checks"])


def test_junit_carries_time_host_properties_and_the_console_tail(serial: SerialRun) -> None:
    root = ET.parse(serial.out / "junit.xml").getroot()
    (suite,) = root.findall("testsuite")
    assert suite.get("timestamp") == serial.report["started"] and suite.get("hostname") == socket.gethostname()
    props = {p.get("name"): p.get("value") for p in suite.findall("properties/property")}
    assert props["board"] == str(serial.board) and props["target"] == "serial"
    assert props["kernel"] == "linux-6.1" and props["scenario"] == "board needs"
    tail = suite.findtext("system-out") or ""
    console = (serial.out / "console.log").read_text(errors="replace").replace("\r\n", "\n").splitlines()
    assert tail.splitlines()[-1] == console[-1]
    assert [c.get("name") for c in suite.findall("testcase")] == [c["id"] for c in serial.report["checks"]]


def test_progress_lines_say_the_elapsed_time(serial: SerialRun) -> None:
    progress = [ln for ln in serial.stderr.splitlines() if "] [" in ln and "/5]" in ln]
    assert len(progress) == 5
    seconds = [float(ln.split("s]")[0].strip("[ ")) for ln in progress]
    assert seconds == sorted(seconds) and seconds[-1] > 0


def test_sigterm_is_exit_143_and_not_retried(tmp_path: Path) -> None:
    run = SerialRun(tmp_path, "--retries", "2", sigterm_at="console")
    assert run.code == ExitCode.TERMINATED == 143, run.stderr
    assert run.report["verdict"] == "interrupted" and run.report["exit_code"] == 143
    assert not (run.out / "retry-1").exists()


def test_infrastructure_failures_back_off_and_count_attempts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "qemu-system-arm").write_text("#!/bin/sh\necho 'qemu-system-arm: cannot start' >&2\nexit 1\n")
    (fake / "qemu-system-arm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    waits: list[float] = []
    out = tmp_path / "out"
    code, rep, _ = run_with_retries(RunOptions(board=ROOT / "boards/qemu-aquila.yaml", out=out), 3, backoff=2.0,
                                    say=lambda m: None, sleep=waits.append)
    assert code == 3 and waits == [2.0, 4.0, 8.0]
    assert [json.loads((f / "report.json").read_text())["attempt"] for f in
            (out, out / "retry-1", out / "retry-2", out / "retry-3")] == [1, 2, 3, 4]
    assert rep["attempt"] == 4


def test_run_folders_link_the_cached_kernel_and_share_one_initrd(tmp_path: Path) -> None:
    image = ensure_image()
    one = prepare_boot(image, tmp_path / "one", bootargs="console=ttyAMA0", agent_files={"plan": "x"})
    two = prepare_boot(image, tmp_path / "two", bootargs="console=ttyAMA0", agent_files={"plan": "x"})
    # The kernel is the cache's own file; the same plan makes the same initrd: one copy, linked twice.
    assert one.kernel.stat().st_ino == image.kernel.stat().st_ino
    assert one.initrd.stat().st_ino == two.initrd.stat().st_ino
    assert one.initrd.read_bytes().startswith(image.initrd.read_bytes())
    # The DTB is loaded right after the zImage, where an appended one would be: the zImage's own length.
    head = image.kernel.read_bytes()[0x24:0x30]
    start, end = int.from_bytes(head[4:8], "little"), int.from_bytes(head[8:12], "little")
    assert one.dtb_addr == 0x40010000 + end - start
    assert not (tmp_path / "one" / "virt.dtb").exists()
    small = sum(p.stat().st_size for p in (tmp_path / "one").iterdir() if p.stat().st_nlink == 1)
    assert small < 64 * 1024, small
    assert EMULATED_AQUILA_BANKS  # the default banks were used


def test_keep_images_copies_instead(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cma_tool.run import _unshare

    image = ensure_image()
    files = prepare_boot(image, tmp_path / "run", bootargs="console=ttyAMA0", agent_files={"plan": "y"})
    _unshare(tmp_path / "run", [str(files.kernel), str(files.initrd)])
    assert files.kernel.stat().st_nlink == 1 and files.initrd.stat().st_nlink == 1
    assert files.kernel.read_bytes() == image.kernel.read_bytes()
