"""The emulated board as a lab rack has it: always plugged in, reached through its console and its power.

QEMU virt (the emulated Aquila's machine) runs Debian's U-Boot as its
firmware, its console a TCP socket that any client may (re)connect to, its
network QEMU's user network whose built-in TFTP server serves one folder
(the lab's TFTP server for this board). It starts switched off (paused);
power is QEMU's own QMP: on = reset and run (U-Boot starts from the top,
as after a power cycle), off = stop the CPU. A lab's exporter exports the
console socket as a NetworkSerialPort, the folder as a TFTPProvider and
the switch as a power port, exactly as for a board on a bench.

``python3 -m tests.labs.qemu_bench QMP_SOCKET on|off|state`` is the switch,
as the lab's power relay calls it.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from cma_tool.deploy.emulated_uboot import UBOOT_BIOS
from tests.labs.lab import free_tcp_port
from tests.tools import need

QEMU = "qemu-system-arm"
#: The emulated Aquila's machine (boards/qemu-aquila.yaml, emulation:).
MACHINE = ("-M", "virt,highmem=off", "-cpu", "cortex-a15", "-m", "768M")


def qmp(path: Path, command: str) -> dict[str, Any]:
    """One QMP command on QEMU's monitor socket; its answer.

    QMP is a few JSON lines: the greeting, capabilities, the command; events
    may come in between and are skipped.
    """
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(str(path))
        stream = sock.makefile("rwb")

        def answer() -> dict[str, Any]:
            while True:
                line = stream.readline()
                if not line:
                    raise RuntimeError(f"QEMU closed its QMP socket {path}")
                msg: dict[str, Any] = json.loads(line)
                if "return" in msg or "error" in msg:
                    return msg

        stream.readline()  # the greeting
        for cmd in ("qmp_capabilities", command):
            stream.write(json.dumps({"execute": cmd}).encode() + b"\n")
            stream.flush()
            got = answer()
            if "error" in got:
                raise RuntimeError(f"QMP {cmd}: {got['error']}")
        return got


def switch(path: Path, what: str) -> str:
    if what == "on":
        qmp(path, "system_reset")
        qmp(path, "cont")
    elif what == "off":
        qmp(path, "stop")
    running = bool(qmp(path, "query-status")["return"]["running"])
    return "on" if running else "off"


class QemuBench:
    """One emulated board in a rack: ``console`` (host, port), ``tftp_dir``, ``power_commands()``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.tftp_dir = folder / "tftp"
        self.qmp_path = folder / "qmp.sock"
        self.port = free_tcp_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        need("qemu-system-arm")
        self.tftp_dir.mkdir(parents=True, exist_ok=True)
        tftp = str(self.tftp_dir.resolve()).replace(",", ",,")
        argv = [QEMU, *MACHINE, "-bios", str(UBOOT_BIOS), "-S", "-no-shutdown", "-display", "none", "-monitor", "none",
                "-chardev", f"socket,id=console,host=127.0.0.1,port={self.port},server=on,wait=off",
                "-serial", "chardev:console",
                "-netdev", f"user,id=net0,tftp={tftp}", "-device", "virtio-net-device,netdev=net0",
                "-qmp", f"unix:{self.qmp_path},server=on,wait=off"]
        with (self.folder / "qemu.log").open("wb") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while not self.qmp_path.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("QEMU did not start: " + (self.folder / "qemu.log").read_text())
            time.sleep(0.05)
        return self

    def dump_dtb(self, dest: Path) -> Path:
        """The machine's own device tree, as the lab keeps it for the board (QEMU's dumpdtb)."""
        subprocess.run([QEMU, *MACHINE, "-display", "none", "-nic", "none", "-machine", f"dumpdtb={dest}"], check=True,
                       capture_output=True, timeout=60)
        return dest

    def power_commands(self) -> dict[str, str]:
        base = shlex.join([sys.executable, "-m", "tests.labs.qemu_bench", str(self.qmp_path)])
        return {"on": f"{base} on", "off": f"{base} off", "state": f"{base} state"}

    def state(self) -> str:
        return switch(self.qmp_path, "state")

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


if __name__ == "__main__":
    print(switch(Path(sys.argv[1]), sys.argv[2]))
