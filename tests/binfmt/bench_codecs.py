"""Prints how long the codecs take on real inputs (a benchmark, not a test: run it directly).

python3 -m tests.binfmt.bench_codecs
"""

from __future__ import annotations

import gzip
import subprocess
import time
from collections.abc import Callable

from cma_tool.binfmt import atags, fdt, ubootenv
from cma_tool.binfmt.fdt import MemoryBank, ReservedRegion

from .conftest import DATA

MiB = 1 << 20


def per_call(fn: Callable[[], object], rounds: int = 200) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - start) / rounds


def main() -> None:
    virt = gzip.decompress((DATA / "qemu-virt-768M.dtb.gz").read_bytes())
    aquila = subprocess.run(["dtc", "-@", "-I", "dts", "-O", "dtb", str(DATA / "aquila.dts")], capture_output=True, check=True).stdout
    tree = fdt.decode(virt)
    rows = [
        ("fdt.decode qemu virt (7.4 KB used of 1 MiB)", per_call(lambda: fdt.decode(virt))),
        ("fdt.encode qemu virt", per_call(lambda: fdt.encode(tree))),
        ("fdt.decode aquila (-@)", per_call(lambda: fdt.decode(aquila))),
        ("fdt.show qemu virt", per_call(lambda: fdt.show(tree))),
        (
            "fdt.patch qemu virt: 2 banks, 2 regions, chosen",
            per_call(
                lambda: fdt.patch(
                    virt,
                    banks=[MemoryBank(0x40000000, 256 * MiB), MemoryBank(0x60000000, 256 * MiB)],
                    reserved=[
                        ReservedRegion("linux,cma", 64 * MiB, alloc_ranges=(MemoryBank(0x60000000, 256 * MiB),), default=True),
                        ReservedRegion("vidpool", 32 * MiB, base=0x4C000000, consumers=("/pl011@9000000",)),
                    ],
                    bootargs="console=ttyAMA0",
                )
            ),
        ),
        (
            "atags.build+parse, 2 banks + cmdline",
            per_call(lambda: atags.parse(atags.build(atags.boot_tags([(0x30000000, 80 * MiB)], "x" * 200)))),
        ),
        (
            "ubootenv.build+parse, 16 KiB, 20 vars",
            per_call(lambda: ubootenv.parse(ubootenv.build({f"v{i}": "x" * 40 for i in range(20)}, size=0x4000))),
        ),
    ]
    for name, seconds in rows:
        print(f"{seconds * 1e3:8.3f} ms  {name}")


if __name__ == "__main__":
    main()
