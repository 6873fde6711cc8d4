"""The fault matrix: what goes wrong on a bench or in the emulator, and what cma-tool says about it.

Each fault is made the way it happens, on real parts: the pty board
simulator (tests/sim) misbehaving at a point of a real recorded boot (a
reset in the middle of a U-Boot command, a panic, a stall, line noise,
bytes lost on the line, the USB adapter re-enumerating, a power switch that
fails), and the emulated board's QEMU killed mid-boot. Every run goes
through the real CLI. For each, what a lab must be able to rely on:

- the verdict says whose fault it is (infrastructure: exit 3, retried by a
  rack; target: exit 4, not retried), never a model/kernel mismatch;
- it is said within the run's timeout (the time from the stage where the
  fault struck to the run's end is measured);
- console.log holds the bytes that show it, and report.json ends with a
  verdict, an exit code and the stage the run had reached.

``python3 -m tests.faults.matrix`` runs them all and prints the table the
README shows; tests/faults/test_fault_matrix.py asserts every row.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.sim import RECORDED_RUN, SimBoard, write_sim_aquila, zimage
from tests.watching import read_report, stage_at, wait_for_stage

ROOT = Path(__file__).parents[2]
RECORDING = (RECORDED_RUN / "console.log").read_bytes()


def _line_number(marker: bytes) -> int:
    """The 1-based line of the recording where ``marker`` first appears."""
    return RECORDING[: RECORDING.index(marker)].count(b"\n") + 1


def _panic_after_init() -> bytes:
    """The recording up to /init, then the kernel panics (init killed) and says nothing more."""
    end = RECORDING.index(b"\n", RECORDING.index(b"Run /init")) + 1
    return RECORDING[:end] + (b"[    1.800000] Kernel panic - not syncing: Attempted to kill init! "
                              b"exitcode=0x0000000b\r\n[    1.800100] ---[ end Kernel panic - not syncing: "
                              b"Attempted to kill init! exitcode=0x0000000b ]---\r\n")


def _garbage_flood() -> bytes:
    """4 KiB of line noise among the kernel's boot lines (a floating RX line, a baud mismatch burst)."""
    at = RECORDING.index(b"\n", RECORDING.index(b"Run /init")) + 1 - len(b"[    1.766228] Run /init as init process\n")
    noise = bytes((i * 73 + 29) % 256 for i in range(4096)).replace(b"\n", b".").replace(b"\r", b".")
    return RECORDING[:at] + noise + b"\r\n" + RECORDING[at:]


def _bytes_lost(every: int) -> bytes:
    """Every ``every``-th byte after /init lost, as a UART overrun loses them."""
    start = RECORDING.index(b"Run /init")
    tail = bytearray(RECORDING[start:])
    del tail[every // 2::every]
    return RECORDING[:start] + bytes(tail)


@dataclass(frozen=True)
class Fault:
    """One row: how the fault is made, and what the run must say."""

    name: str
    how: str
    struck_after: str  # the run's stage after which the fault happens (time to detect counts from it)
    exit_code: int
    says: str  # in report.json's message
    shows: bytes  # in console.log
    sim_faults: tuple[str, ...] = ()
    recording: Callable[[], bytes] | None = None
    power_on: str | None = None  # the board's power-on command, instead of the relay's
    during: Callable[[SimBoard], None] | None = None  # done once the run reaches struck_after
    delay: float = 0.0  # seconds after struck_after that the fault strikes (not counted as detecting)
    timeout: float = 60.0
    emulated: str = ""  # "": the pty simulator; else which emulated-board fault ("qemu-killed", "ssh-reboot")


REPLUG_DELAY = 0.3  # in the middle of the playback, not at its first byte


def _replug(sim: SimBoard) -> None:
    time.sleep(REPLUG_DELAY)
    sim.replug()


SIM_FAULTS = (
    Fault("reset in the middle of a U-Boot command", "U-Boot's crc32 prints a word, then the board resets",
          "uboot", 4, "board reset", b"crc32: working", sim_faults=("reset-on=crc32",)),
    Fault("U-Boot command hangs", "U-Boot stops answering during dhcp", "uboot", 4,
          "dhcp", b"=> ", sim_faults=("hang-on=dhcp",), timeout=15),
    Fault("TFTP server unreachable", 'tftpboot gives "Retry count exceeded"', "uboot", 3,
          "Retry count exceeded", b"Retry count exceeded", sim_faults=("tftp-timeout",)),
    Fault("file damaged on the way", "every file U-Boot stores has one bit flipped", "uboot", 3,
          "crc32", b"crc32", sim_faults=("bitflip",)),
    Fault("boot loop", "bootz resets the board into U-Boot again", "loaded", 4,
          "reset", b"Starting kernel", sim_faults=("bootloop",)),
    Fault("kernel panic", "init is killed right after the kernel starts it", "kernel", 4,
          "Kernel panic", b"Kernel panic - not syncing: Attempted to kill init!", recording=_panic_after_init),
    Fault("reset while Linux boots", "the board resets 60 lines into the kernel's log", "kernel", 4,
          "reset", b"U-Boot", sim_faults=(f"kernel-reset-at={60}",)),
    Fault("stall while the agent runs", "the board goes silent in the middle of the capture section", "kernel", 4,
          "agent to finish", b"CMA-TOOL BEGIN capture", timeout=15,
          sim_faults=(f"kernel-hang-at={_line_number(b'CMA-TOOL BEGIN capture') + 5}",)),
    Fault("garbage flood", "4 KiB of line noise among the kernel's boot lines", "kernel", 0,
          "all 32 checks passed", b"Run /init", recording=_garbage_flood),
    Fault("one byte lost in a trace pfn", "the last 0 of pfn=0x64500 lost on the line", "kernel", 3,
          "section trace: ", b"pfn=0x6450 ",
          recording=lambda: RECORDING.replace(b"name=linux,cma pfn=0x64500", b"name=linux,cma pfn=0x6450", 1)),
    Fault("bytes lost (0.05 %)", "one byte in 2000 after /init lost, as a UART overrun loses them", "kernel", 3,
          "arrived of the", b"CMA-TOOL BEGIN", recording=lambda: _bytes_lost(2000)),
    Fault("console disappears and comes back", "the USB serial adapter re-enumerates while Linux boots",
          "kernel", 0, "all 32 checks passed", b"Booting Linux", during=_replug, delay=REPLUG_DELAY),
    Fault("power switch fails", "the power-on command exits 1", "console", 3,
          "power on command", b"", power_on="false"),
)

QEMU_KILLED = Fault("QEMU killed", "the emulator process is killed (SIGKILL) 0.5 s after Linux starts /init",
                    "init", 3, "QEMU stopped with exit code -9", b"Run /init", emulated="qemu-killed",
                    delay=0.5)
SSH_REBOOT = Fault("SSH dropped during a reboot", "a board reached over SSH is told to reboot into a new kernel and "
                   "dies (its QEMU killed 1.5 s later): it never answers again", "kernel-deployed", 4,
                   "did not answer SSH again", b"", emulated="ssh-reboot", timeout=20, delay=1.5)
FAULTS = (*SIM_FAULTS, QEMU_KILLED, SSH_REBOOT)


@dataclass
class Outcome:
    fault: Fault
    exit_code: int
    report: dict[str, Any]
    console: bytes
    detect_seconds: float
    stderr: str
    leftovers: list[str] = field(default_factory=list)

    @property
    def console_events(self) -> list[str]:
        """The console engine's own notes (port lost, reconnected) from console.timing."""
        path = Path(str(self.report.get("out", ""))) / "console.timing"
        try:
            lines = path.read_text().splitlines()
        except OSError:
            return []
        return [ln.split(" ! ", 1)[1] for ln in lines if " ! " in ln]

    @property
    def verdict(self) -> str:
        return str(self.report.get("verdict"))

    @property
    def last_stage(self) -> str:
        stages = [s["stage"] for s in self.report.get("stages", []) if s["stage"] not in ("end",)]
        return stages[-1] if stages else "?"


def _finish(fault: Fault, proc: subprocess.Popen[str], out: Path) -> Outcome:
    _, stderr = proc.communicate(timeout=fault.timeout + 120)
    rep = read_report(out)
    struck, end = stage_at(rep, fault.struck_after), stage_at(rep, "end")
    detect = (end - struck - fault.delay) if struck is not None and end is not None else float("nan")
    console = (out / "console.log").read_bytes() if (out / "console.log").exists() else b""
    return Outcome(fault, proc.returncode, rep, console, detect, stderr)


def run_sim_fault(fault: Fault, tmp: Path) -> Outcome:
    recording = RECORDED_RUN / "console.log"
    if fault.recording is not None:
        recording = tmp / "recording.log"
        recording.write_bytes(fault.recording())
    with SimBoard(tmp / "sim", relay=True, kernel_log=recording, faults=fault.sim_faults) as sim:
        board = write_sim_aquila(tmp, sim, board_ip=None)
        if fault.power_on is not None:
            lines = board.read_text().splitlines()
            lines = [f'    on: "{fault.power_on}"' if ln.strip().startswith("on:") else ln for ln in lines]
            board.write_text("\n".join(lines) + "\n")
        (tmp / "zImage").write_bytes(zimage(500_000, seed=5))
        out = tmp / "out"
        # The console by its stable name (the symlink that follows the adapter), as a udev rule gives it.
        console = str(sim.link) if fault.during is not None else sim.path
        proc = subprocess.Popen(
            [sys.executable, "-m", "cma_tool", "run", str(board), "--target", "serial", "--console", console,
             "--kernel", str(tmp / "zImage"), "--out", str(out), "--timeout", str(fault.timeout)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if fault.during is not None and wait_for_stage(out, fault.struck_after, proc, fault.timeout):
            fault.during(sim)
        outcome = _finish(fault, proc, out)
        outcome.leftovers = [] if sim.relay_state() == "off" else [f"board left {sim.relay_state()}"]
        return outcome


def qemu_pids(out: Path) -> list[int]:
    """The QEMU processes started for this run (their command line names its folder)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"qemu-system-arm") and any(str(out).encode() in a for a in argv):
            pids.append(int(entry.name))
    return pids


def run_qemu_killed(fault: Fault, tmp: Path) -> Outcome:
    out = tmp / "out"
    proc = subprocess.Popen([sys.executable, "-m", "cma_tool", "run", str(ROOT / "boards" / "qemu-aquila.yaml"),
                             "--out", str(out), "--timeout", str(fault.timeout)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if wait_for_stage(out, fault.struck_after, proc, fault.timeout):
        time.sleep(fault.delay)
        for pid in qemu_pids(out):
            os.kill(pid, signal.SIGKILL)
    outcome = _finish(fault, proc, out)
    outcome.leftovers = [f"QEMU {pid}" for pid in qemu_pids(out)]
    return outcome


def run_ssh_reboot(fault: Fault, tmp: Path) -> Outcome:
    """`--target ssh --kernel --dtb` on the emulated board in SSH mode; the board dies as it reboots.

    The run deploys the new kernel and DTB and says `reboot`; the board's
    QEMU is killed while the run waits for it to come back, so SSH goes away
    and never answers again: what a board whose new kernel does not come up
    looks like from the lab's side of the network.
    """
    from tests.e2e.ssh_board import ssh_board

    out = tmp / "out"
    with ssh_board(tmp) as board:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cma_tool", "run", str(board.board_file), "--target", "ssh", "--kernel",
             str(board.boot.kernel), "--dtb", str(board.boot.dtb), "--out", str(out), "--timeout", str(fault.timeout)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=board.env)
        if wait_for_stage(out, fault.struck_after, proc, 120):
            time.sleep(fault.delay)
            for pid in qemu_pids(board.workdir):
                os.kill(pid, signal.SIGKILL)
        return _finish(fault, proc, out)


def run_fault(fault: Fault, tmp: Path) -> Outcome:
    tmp.mkdir(parents=True, exist_ok=True)
    if fault.emulated == "qemu-killed":
        return run_qemu_killed(fault, tmp)
    if fault.emulated == "ssh-reboot":
        return run_ssh_reboot(fault, tmp)
    return run_sim_fault(fault, tmp)


def table(outcomes: list[Outcome]) -> str:
    rows = ["| fault | made by | detected as | exit | stage reached | time to detect | artefacts left |",
            "|---|---|---|---|---|---|---|"]
    for o in outcomes:
        message = re.sub(r"\s+", " ", str(o.report.get("message", "")).split("\n")[0])[:90]
        arts = sorted(p for p in ("console.log", "report.json", "report.html", "plan.json", "predicted.json")
                      if o.report and (Path(str(o.report.get("out", ""))) / p).exists())
        rows.append(f"| {o.fault.name} | {o.fault.how} | {o.verdict}: {message} | {o.exit_code} | "
                    f"{o.last_stage} | {o.detect_seconds:.1f} s | {', '.join(arts)} |")
    return "\n".join(rows)


def main() -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        outcomes = [run_fault(f, Path(tmp) / f"f{i}") for i, f in enumerate(FAULTS)]
        print(table(outcomes))


if __name__ == "__main__":
    main()
