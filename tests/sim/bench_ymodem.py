"""Throughput of our YMODEM/XMODEM sender over a pty into the simulated U-Boot.

Prints numbers; asserts nothing (the sim's receiver, in Python, is part of
what is measured, and a pty has no baud rate). Run from the project root:

    python3 tests/sim/bench_ymodem.py [SIZE_KIB ...]
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere

from cma_tool.deploy.uboot import UBoot  # noqa: E402
from tests.sim import powered_board  # noqa: E402


def main() -> None:
    sizes = [int(arg) for arg in sys.argv[1:]] or [256, 1024, 4096]
    with tempfile.TemporaryDirectory() as tmp:
        for protocol in ("loady", "loadx"):
            for kib in sizes:
                data = random.Random(kib).randbytes(kib * 1024)
                with powered_board(Path(tmp) / f"{protocol}-{kib}", timeout=30) as (_, console):
                    uboot = UBoot(console, default_timeout=30)
                    uboot.attach(timeout=10)
                    start = time.perf_counter()
                    if protocol == "loady":
                        count = uboot.loady(0x41000000, data)
                    else:
                        count = uboot.loadx(0x41000000, data)
                    elapsed = time.perf_counter() - start
                    ok = uboot.crc32(0x41000000, len(data)) == zlib.crc32(data)
                print(
                    f"{protocol} {kib:6d} KiB: {elapsed:6.2f} s, {kib / elapsed:8.0f} KiB/s"
                    f" (count {count}, crc {'ok' if ok else 'MISMATCH'})"
                )


if __name__ == "__main__":
    main()
