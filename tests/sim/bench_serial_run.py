"""Time of each stage of run_via_serial on the simulated Aquila, over TFTP and over YMODEM.

Prints numbers; asserts nothing. The simulator's TFTP client and YMODEM
receiver are Python, a pty has no baud rate, and the kernel's console is
played back at a 115200-baud pace (~3.1 s for the 35 KB recording), so the
numbers say where time goes, not what a real board takes. Run from the
project root:

    python3 tests/sim/bench_serial_run.py [KERNEL_KIB]   (default 5400, a Debian armmp zImage)
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from cma_tool.deploy.serial_board import run_via_serial  # noqa: E402
from cma_tool.generate.dts import compile_dts, standalone_dts  # noqa: E402
from cma_tool.plan import make_plan  # noqa: E402
from tests.sim import RECORDED_RUN, SimBoard, write_sim_aquila, zimage  # noqa: E402


def one_run(folder: Path, kernel_kib: int, *, network: bool) -> list[tuple[str, float]]:
    with SimBoard(folder / "sim", relay=True, kernel_log=RECORDED_RUN / "console.log") as sim:
        board = make_plan(write_sim_aquila(folder, sim, network=network), allow_misfit=True).board
        (folder / "board.dts").write_text(standalone_dts(board, board.kernel.profile))
        compile_dts(folder / "board.dts", folder / "board.dtb")
        (folder / "zImage").write_bytes(zimage(kernel_kib * 1024))
        (folder / "initrd.gz").write_bytes(random.Random(1).randbytes(2 * 1024 * 1024 if network else 256 * 1024))
        marks: list[tuple[str, float]] = []
        start = time.perf_counter()
        run_via_serial(board, kernel=folder / "zImage", dtb=folder / "board.dtb", initrd=folder / "initrd.gz",
                       bootargs=(RECORDED_RUN / "cmdline.txt").read_text().strip(), workdir=folder / "out",
                       timeout=600, console_url=sim.path,
                       on_stage=lambda s: marks.append((s, time.perf_counter() - start)))
        marks.append(("returned", time.perf_counter() - start))
        return marks


def main() -> None:
    kib = int(sys.argv[1]) if len(sys.argv) > 1 else 5400
    with tempfile.TemporaryDirectory() as tmp:
        for network, size in ((True, kib), (False, min(kib, 1024))):
            how = "TFTP  " if network else "YMODEM"
            marks = one_run(Path(tmp) / how.strip(), size, network=network)
            shown = "  ".join(f"{name} {at:5.2f}" for name, at in marks)
            print(f"{how} kernel {size:5d} KiB + initrd {'2048' if network else ' 256'} KiB: {shown}")


if __name__ == "__main__":
    main()
