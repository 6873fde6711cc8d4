"""Nothing collides: fresh output folders, a claimed --out, a locked board.

The runs here fail fast on purpose, after the part under test: boards/aquila.yaml
(a real board, no emulation section) on the emulated target is a configuration
error (exit 1) found after the run has chosen and claimed its folder.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cma_tool.errors import InfraError, UsageError
from cma_tool.locks import BoardLock, FolderLock, lock_file_name, lock_folder, new_run_folder, utc_stamp
from cma_tool.run import RunOptions, execute

ROOT = Path(__file__).parents[2]
AQUILA = ROOT / "boards" / "aquila.yaml"
ENV = dict(os.environ, PYTHONPATH=str(ROOT))


def cma_tool(*args: str, cwd: Path = ROOT) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "cma_tool", "run", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_stamp_is_utc_to_the_millisecond() -> None:
    # 1_800_000_000 s after the epoch is 2027-01-15 08:00:00 UTC.
    assert utc_stamp(1_800_000_000.25) == "20270115T080000.250Z"


def test_a_name_already_taken_is_drawn_again(tmp_path: Path) -> None:
    tokens = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    first = new_run_folder(tmp_path, "b", clock=lambda: 0.0, token=lambda: next(tokens))
    second = new_run_folder(tmp_path, "b", clock=lambda: 0.0, token=lambda: next(tokens))
    assert first.name == "b-19700101T000000.000Z-aaaaaa"
    assert second.name == "b-19700101T000000.000Z-bbbbbb"


def test_ten_runs_started_at_once_get_ten_folders(tmp_path: Path) -> None:
    procs = [cma_tool(str(AQUILA), cwd=tmp_path) for _ in range(10)]
    results = [(p.wait(120), p.stderr.read() if p.stderr else "") for p in procs]
    for p in procs:
        for stream in (p.stdout, p.stderr):
            if stream:
                stream.close()
    assert [rc for rc, _ in results] == [1] * 10, results
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 10
    for folder in folders:
        assert folder.name.startswith("aquila-")
        rep = json.loads((folder / "report.json").read_text())
        # Each report is its own run's: it names the folder it is in.
        assert rep["out"] == str(Path("runs") / folder.name) and rep["verdict"] == "configuration"


def test_two_runs_into_one_out_one_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    procs = [cma_tool(str(AQUILA), "--out", str(out)) for _ in range(2)]
    codes = sorted(p.wait(120) for p in procs)
    errors = "".join(p.stderr.read() if p.stderr else "" for p in procs)
    for p in procs:
        for stream in (p.stdout, p.stderr):
            if stream:
                stream.close()
    # One ran (to its configuration error); the other found the folder busy or already used.
    assert codes == [1, 2], errors
    assert f"--out {out}" in errors and ("is in use" in errors or "earlier run's report.json" in errors)


def test_a_folder_in_use_is_refused_naming_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with FolderLock(out):
        res = subprocess.run([sys.executable, "-m", "cma_tool", "run", str(AQUILA), "--out", str(out)], cwd=ROOT,
                             env=ENV, capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 2
    assert f"usage error: --out {out} is in use: a run (pid {os.getpid()}" in res.stderr
    assert not (out / "report.json").exists(), "nothing is written into another run's folder"


def test_an_earlier_report_is_kept_unless_replace(tmp_path: Path) -> None:
    out = tmp_path / "out"
    first = execute(RunOptions(board=AQUILA, out=out), say=lambda m: None)
    assert first[0] == 1
    before = (out / "report.json").read_bytes()
    code, rep, _ = execute(RunOptions(board=AQUILA, out=out), say=lambda m: None)
    assert code == 2 and "holds an earlier run's report.json" in rep["message"] and "--replace" in rep["message"]
    assert (out / "report.json").read_bytes() == before
    code, rep, _ = execute(RunOptions(board=AQUILA, out=out, replace=True), say=lambda m: None)
    assert code == 1 and (out / "report.json").read_bytes() != before


HOLD = """
import sys, time
from pathlib import Path
from cma_tool.locks import BoardLock
with BoardLock(sys.argv[1], out=Path(sys.argv[2]), folder=Path(sys.argv[3])):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_locked_console_is_refused_within_a_second_naming_the_holder(tmp_path: Path) -> None:
    leader, follower = os.openpty()
    console = os.ttyname(follower)
    locks = tmp_path / "locks"
    locks.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, console, "runs/holder-run", str(locks)], env=ENV,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        # Warm the imports a run makes, so the time below is the refusal's, not Python's first import.
        execute(RunOptions(board=AQUILA, out=tmp_path / "warm"), say=lambda m: None)
        opts = RunOptions(board=AQUILA, out=tmp_path / "second", target="serial", console=console,
                          kernel=tmp_path / "zImage", lock_folder=locks)
        started = time.monotonic()
        code, rep, _ = execute(opts, say=lambda m: None)
        took = time.monotonic() - started
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout:
            holder.stdout.close()
        os.close(leader)
        os.close(follower)
    assert code == 3 and rep["verdict"] == "infrastructure"
    assert f"board {console} is locked: a run (pid {holder.pid}" in rep["message"]
    assert "writing runs/holder-run" in rep["message"]
    assert took < 1.0, took
    # Refused before the board was touched: no console stage.
    assert "console" not in [s["stage"] for s in rep["stages"]]


def test_a_board_lock_dies_with_its_holder(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, "socket://bench:4001", "x", str(tmp_path)], env=ENV,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    with pytest.raises(InfraError, match="is locked"), BoardLock("socket://bench:4001", folder=tmp_path):
        pass
    holder.kill()
    holder.wait()
    holder.stdout.close()
    with BoardLock("socket://bench:4001", folder=tmp_path):
        pass


def test_a_device_and_its_symlink_are_one_board(tmp_path: Path) -> None:
    device = tmp_path / "ttyUSB0"
    device.touch()
    link = tmp_path / "by-id-adapter"
    link.symlink_to(device)
    with BoardLock(str(device), folder=tmp_path), pytest.raises(InfraError), BoardLock(str(link), folder=tmp_path):
        pass
    assert lock_file_name("/dev/a b") != lock_file_name("/dev/a_b")


def test_the_lock_folder_falls_back_when_the_first_choice_is_not_writable(tmp_path: Path) -> None:
    folder = lock_folder({"XDG_RUNTIME_DIR": str(tmp_path)})
    assert folder in (Path("/run/lock/cma-tool"), tmp_path / "cma-tool")
    assert os.access(folder, os.W_OK)


def test_a_folder_refusal_is_a_usage_error(tmp_path: Path) -> None:
    with FolderLock(tmp_path / "o"), pytest.raises(UsageError), FolderLock(tmp_path / "o"):
        pass


@pytest.mark.emulated
@pytest.mark.slow
def test_ten_emulated_runs_started_at_once_all_pass_in_ten_folders(tmp_path: Path) -> None:
    # The lab's case: ten boots of the emulated Aquila side by side on one host, default --out. Each QEMU is
    # its run's own board, so all ten pass, each with the hand-worked pfns, in a folder of its own.
    from tests.e2e.expect import assert_aquila_1080p_events

    board = ROOT / "boards" / "qemu-aquila.yaml"
    procs = [cma_tool(str(board), "--timeout", "300", cwd=tmp_path) for _ in range(10)]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * 10, [err[-1500:] for _, err in results]
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 10
    for folder in folders:
        rep = json.loads((folder / "report.json").read_text())
        assert rep["out"] == str(Path("runs") / folder.name)
        assert_aquila_1080p_events(rep)
