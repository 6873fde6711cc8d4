"""The pytest plugin as a user meets it: their test files, run by a pytest of their own (pytester, a subprocess).

The user files are examples/test_cma_board.py (as the README shows it) and
tests/plugin/data/*.py (a negative control, tests that break, an interrupt,
two boards on two xdist workers). Expectations are the kernel's rules worked
out by hand (pfns in tests/e2e/expect.py), and that no emulator is left
running whatever the tests did.
"""

from __future__ import annotations

import configparser
import os
import subprocess
from importlib.metadata import entry_points
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parent / "data"
AQUILA = str(ROOT / "boards" / "qemu-aquila.yaml")
TWO_STREAMS = str(ROOT / "configs" / "two-streams.yaml")


def plugin_args() -> list[str]:
    """Load the plugin the way this installation does: by its entry point once `pip install -e .` ran."""
    registered = any(e.value == "cma_tool.pytest_plugin" for e in entry_points(group="pytest11"))
    return [] if registered else ["-p", "cma_tool.pytest_plugin"]


@pytest.fixture
def user(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    # This checkout's cma_tool, whatever another checkout installed.
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return pytester


def runpytest(user: pytest.Pytester, *args: str | Path, timeout: float = 300) -> pytest.RunResult:
    return user.runpytest_subprocess(*plugin_args(), "-p", "no:cacheprovider", *[str(a) for a in args],
                                     timeout=timeout)


def emulators_left(out: Path) -> str:
    """QEMU processes booted from anything under ``out`` (the -kernel file lives there)."""
    ps = subprocess.run(["pgrep", "-af", f"qemu-system-arm.*{out}"], capture_output=True, text=True, check=False)
    return ps.stdout.strip()


# ---- inert unless asked -------------------------------------------------------------------


def test_the_plugin_is_declared_as_a_pytest11_entry_point() -> None:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert "cma_tool = cma_tool.pytest_plugin" in cfg["options.entry_points"]["pytest11"].splitlines()
    assert any(line.strip().startswith("pytest-xdist") for line in cfg["options.extras_require"]["test"].splitlines())


def test_without_cma_board_the_plugin_loads_nothing_and_changes_nothing(user: pytest.Pytester) -> None:
    user.makeconftest("""
        import sys
        def pytest_sessionfinish(session):
            loaded = sorted(m for m in sys.modules if m == "cma_tool" or m.startswith("cma_tool."))
            open("cma-modules.txt", "w").write("\\n".join(loaded))
    """)
    user.makepyfile(test_plain="""
        def test_plain(tmp_path):
            assert tmp_path.is_dir()
    """)
    result = runpytest(user)
    result.assert_outcomes(passed=1)
    assert (user.path / "cma-modules.txt").read_text().split() == ["cma_tool", "cma_tool.pytest_plugin"]


def test_a_board_fixture_without_a_board_skips_saying_how(user: pytest.Pytester) -> None:
    user.makepyfile(test_board="""
        def test_needs_a_board(cma_target):
            raise AssertionError("never reached without --cma-board")
    """)
    result = runpytest(user, "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*cma-tool: no --cma-board given (e.g. pytest --cma-board boards/qemu-aquila.yaml)*"])


def test_options_are_listed_and_bad_ones_refused_without_a_traceback(user: pytest.Pytester) -> None:
    helped = runpytest(user, "--help")
    helped.stdout.fnmatch_lines(["*cma-tool: board tests of CMA*", "*--cma-board=FILE*", "*--cma-suite=SUITE*"])
    missing = runpytest(user, "--cma-board", "no-such-board.yaml")
    assert missing.ret == pytest.ExitCode.USAGE_ERROR
    missing.stderr.fnmatch_lines(["*--cma-board no-such-board.yaml: no such file*"])
    assert "Traceback" not in missing.stderr.str()
    serial = runpytest(user, "--cma-board", AQUILA, "--cma-target", "serial")
    assert serial.ret == pytest.ExitCode.USAGE_ERROR
    serial.stderr.fnmatch_lines(["*--cma-target serial: the plugin keeps only the emulated board booted*"])


def test_a_bad_board_file_fails_its_tests_with_the_validators_words(user: pytest.Pytester) -> None:
    user.makefile(".yaml", bad="include: " + AQUILA + "\nreserved-memory:\n  linux,cma: {size: 12M}\n")
    user.makepyfile(test_board="""
        def test_plans(cma_board):
            pass
    """)
    result = runpytest(user, "--cma-board", user.path / "bad.yaml")
    result.assert_outcomes(errors=1)
    out = result.stdout.str()
    assert "cma-tool cannot plan" in out and "bad.yaml:3" in out and "Traceback" not in out


# ---- on the emulated board ------------------------------------------------------------------


@pytest.mark.emulated
@pytest.mark.slow
def test_a_users_tests_pass_fail_with_the_models_explanation_and_the_board_goes_off(
        user: pytest.Pytester, tmp_path: Path) -> None:
    out = tmp_path / "boards"
    result = runpytest(user, ROOT / "examples" / "test_cma_board.py", DATA / "board_negative_control.py",
                       DATA / "board_errors.py", "--cma-board", AQUILA, "--cma-out", out, "-rA")
    # examples: 5 pass, the 6.12-only test skips on 6.1; the negative control and the raising test fail;
    # the raising fixture errors.
    result.assert_outcomes(passed=5, skipped=1, failed=2, errors=1)
    text = result.stdout.str()
    # The model put the default area at 0x60000000 (pfn 0x60000); the kernel at 0x64000000 (pfn 0x64000).
    result.stdout.fnmatch_lines([
        "*the kernel did not do what the model predicts*",
        "*  area linux,cma:",
        "*    expected (model):  linux,cma at 0x60000000, 64 MiB",
        "*    observed (kernel): linux,cma at 0x64000000, 64 MiB",
        "*    likely cause:      base differs by +0x4000000*",
        "*  event 002 alloc_finish:",
        "*    expected (model):  cma_alloc_finish: name=linux,cma pfn=0x60000 page=(ptrval) count=64 align=6",
        "*    observed (kernel): cma_alloc_finish: name=linux,cma pfn=0x64000 page=(ptrval) count=64 align=6",
        "*    likely cause:      every later pfn of linux,cma is off by the same +0x4000 pages*",
    ])
    assert "the user's test broke while the board was up" in text
    assert "the user's fixture broke while the board was up" in text
    # One boot for the whole session; powered off from its shell at the end, no emulator left.
    (board,) = out.iterdir()
    assert board.name == "qemu-aquila"
    # Each boot opens the console once (the timing log's header says so).
    assert sum(1 for line in (board / "console.timing").read_text().splitlines() if " opened " in line) == 1
    assert (board / "console.log").read_bytes().rstrip().endswith(b"reboot: Power down")
    assert emulators_left(out) == ""


@pytest.mark.emulated
@pytest.mark.slow
def test_ctrl_c_still_powers_the_board_off(user: pytest.Pytester, tmp_path: Path) -> None:
    out = tmp_path / "boards"
    result = runpytest(user, DATA / "board_interrupted.py", "--cma-board", AQUILA, "--cma-out", out)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    assert "the session was interrupted before this test" not in result.stdout.str()
    assert (out / "qemu-aquila" / "console.log").read_bytes().rstrip().endswith(b"reboot: Power down")
    assert emulators_left(out) == ""


@pytest.mark.emulated
@pytest.mark.slow
def test_sigterm_mid_command_kills_the_board(user: pytest.Pytester, tmp_path: Path) -> None:
    out = tmp_path / "boards"
    result = runpytest(user, DATA / "board_terminated.py", "--cma-board", AQUILA, "--cma-out", out)
    assert result.ret == pytest.ExitCode.INTERRUPTED
    console = (out / "qemu-aquila" / "console.log").read_bytes()
    assert b"sleep 20" in console and b"reboot: Power down" not in console  # killed, not waited for
    assert emulators_left(out) == ""


@pytest.mark.emulated
@pytest.mark.slow
def test_two_boards_on_two_xdist_workers(user: pytest.Pytester, tmp_path: Path) -> None:
    pytest.importorskip("xdist")
    out = tmp_path / "boards"
    result = runpytest(user, DATA / "two_boards.py", "--cma-board", AQUILA, "--cma-board", TWO_STREAMS,
                       "--cma-out", out, "-n", "2", "--dist", "loadgroup")
    result.assert_outcomes(passed=4)
    # Each board booted once, each on its own worker.
    folders = sorted(p.name for p in out.iterdir())
    assert len(folders) == 2
    (aquila,) = [f for f in folders if f.startswith("qemu-aquila-gw")]
    (two,) = [f for f in folders if f.startswith("two-streams-gw")]
    assert aquila.rsplit("-", 1)[1] != two.rsplit("-", 1)[1]
    assert emulators_left(out) == ""
