"""Booting an arm64 kernel on QEMU virt with the board's own memory banks.

QEMU's ``-kernel``/``-dtb`` rewrites the tree's /memory into one bank
covering all of ``-m``; Debian's 6.12 honours two ranges of
/chosen/linux,usable-memory-range, but 5.10 honours only the first. So the
arm64 board is booted the way a boot loader would: QEMU's generic loader puts
the kernel's Image, our DTB and the initrd into RAM at addresses of ours, and
a boot stub of six instructions, also put in RAM, is where the first CPU
starts. The stub does what the arm64 boot protocol asks of a loader
(Documentation/arch/arm64/booting.rst): x0 = the DTB's physical address,
x1 = x2 = x3 = 0, then branch to the Image's first byte, with the MMU off (as
QEMU starts the CPU). The guest sees exactly the banks our DTB describes.

Layout in bank 0 (the kernel, the tree and the initrd stay clear of the
CMA areas: memblock reserves all three before any area is placed):

    RAM base          QEMU's own tree when no kernel is given (1 MiB; left alone)
    RAM base + 1 MiB  the boot stub
    RAM base + 2 MiB  the Image (2 MiB aligned, plus the header's text_offset)
    initrd address    the initrd (qemu.DEFAULT_INITRD_ADDR), then the DTB
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from pathlib import Path

from cma_tool.deploy.image import TargetImage, compose_initrd
from cma_tool.deploy.qemu import (
    DEFAULT_INITRD_ADDR,
    DEFAULT_MEMORY,
    EMULATED_AQUILA_BANKS,
    BootFiles,
    MemoryBank,
    board_dtb,
    link_cached,
    static_reserved_regions,
)
from cma_tool.errors import ConfigError, InfraError
from cma_tool.sizes import format_size, hexaddr

MiB = 1 << 20
#: The arm64 Image header's magic ("ARM\x64") at offset 56.
IMAGE_MAGIC = b"ARM\x64"


def image_header(path: Path) -> tuple[int, int]:
    """(text_offset, image_size) from an arm64 Image's header; InfraError if it is not one."""
    with path.open("rb") as fh:
        head = fh.read(64)
    if len(head) < 64 or head[56:60] != IMAGE_MAGIC:
        raise InfraError(f"{path} is not an arm64 Image (no 'ARM\\x64' magic at offset 56)",
                         hint="Debian's arm64 vmlinuz is an uncompressed Image; rebuild the image cache")
    text_offset, image_size = struct.unpack_from("<QQ", head, 8)
    return int(text_offset), int(image_size)


def boot_stub(dtb_addr: int, kernel_addr: int) -> bytes:
    """Six AArch64 instructions and two literals: x0 = DTB, x1..x3 = 0, branch to the kernel.

    Encoded by hand (A64: LDR literal, ORR with XZR, BR) so that no assembler
    is needed; tests/deploy/test_arm64_boot.py disassembles it with binutils.
    """
    words = (
        0x580000C0,  # ldr x0, [pc, #0x18]  -> the DTB's address (the first literal)
        0x580000E4,  # ldr x4, [pc, #0x1c]  -> the kernel's address (the second literal, at 0x20)
        0xAA1F03E1,  # mov x1, xzr
        0xAA1F03E2,  # mov x2, xzr
        0xAA1F03E3,  # mov x3, xzr
        0xD61F0080,  # br x4
    )
    return struct.pack("<6I", *words) + struct.pack("<QQ", dtb_addr, kernel_addr)


def prepare_arm64_boot(
    image: TargetImage,
    workdir: Path,
    *,
    banks: Sequence[MemoryBank] = EMULATED_AQUILA_BANKS,
    reserved_memory_dts: str = "",
    bootargs: str,
    agent_files: Mapping[str, bytes | str] | None = None,
    initrd_addr: int = DEFAULT_INITRD_ADDR,
    rng_seed: bytes | None = None,
    memory: str = DEFAULT_MEMORY,
) -> BootFiles:
    """Write everything one arm64 boot needs into ``workdir``: run initrd, board DTB, boot stub; their addresses."""
    workdir.mkdir(parents=True, exist_ok=True)
    if not banks:
        raise ConfigError("the board has no memory banks")
    bank0 = min(banks, key=lambda b: b.base)
    kernel = link_cached(image.kernel, workdir / "Image")
    text_offset, image_size = image_header(kernel)
    stub_addr = bank0.base + MiB
    kernel_addr = bank0.base + 2 * MiB + text_offset
    initrd = compose_initrd(image, agent_files, workdir / "initrd.gz")
    initrd_end = initrd_addr + initrd.stat().st_size
    dtb_addr = (initrd_end + 0xFFFF) & ~0xFFFF  # 64 KiB past the initrd: 8-byte aligned, as the protocol asks
    dtb = board_dtb(workdir, banks=banks, reserved_memory_dts=reserved_memory_dts, bootargs=bootargs,
                    initrd=(initrd_addr, initrd_end), rng_seed=rng_seed, memory=memory, architecture="arm64",
                    image=image)
    dtb_end = dtb_addr + dtb.stat().st_size
    kernel_end = kernel_addr + image_size
    problems = []
    if not (kernel_end <= initrd_addr and dtb_end <= bank0.end):
        problems.append(f"the kernel ({hexaddr(kernel_addr)}..{hexaddr(kernel_end)}), initrd "
                        f"({hexaddr(initrd_addr)}..{hexaddr(initrd_end)}) and DTB (..{hexaddr(dtb_end)}) "
                        f"must follow each other inside bank 0 ({bank0})")
    for name, start, size in static_reserved_regions(dtb):
        for what, lo, hi in (("the kernel", kernel_addr, kernel_end), ("the DTB", dtb_addr, dtb_end)):
            if start < hi and lo < start + size:
                problems.append(f"reserved-memory node {name} ({hexaddr(start)}, {format_size(size)}) overlaps "
                                f"{what} at {hexaddr(lo)}..{hexaddr(hi)}")
    if problems:
        raise ConfigError("the emulated arm64 board's memory layout cannot boot: " + "; ".join(problems),
                          hint=f"keep static pools above {hexaddr(kernel_end)} and clear of the initrd")
    stub = workdir / "boot-stub.bin"
    stub.write_bytes(boot_stub(dtb_addr, kernel_addr))
    return BootFiles(kernel, initrd, initrd_addr, dtb, dtb.with_suffix(".dts"), bootargs, dtb_addr,
                     architecture="arm64",
                     loads=((kernel, kernel_addr), (initrd, initrd_addr), (dtb, dtb_addr), (stub, stub_addr)),
                     entry=stub_addr)
