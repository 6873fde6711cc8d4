"""The emulated board with U-Boot as its firmware: the machine, and where each file U-Boot loads goes.

QEMU virt runs Debian's ``u-boot-qemu`` as its firmware (``-bios``); the
console is our socket, as for the direct boot. The boot itself is the one a
bench board gets (:mod:`cma_tool.deploy.uboot_boot`): stop autoboot, load
the plain zImage, the board DTB and the initrd (over QEMU's built-in TFTP
server), check each with ``crc32``, ``bootz``.

How the board's banks survive U-Boot: U-Boot rewrites the first /memory node
with its own DRAM, one bank covering all of ``-m``. Of the two ways that keep
two banks we put them in ``/chosen/linux,usable-memory-range``, which U-Boot
leaves alone: the kernel (drivers/of/fdt.c, 5.18+) caps memory to the first
range and adds the second, so memblock ends up with exactly the banks the
direct boot's /memory gives. The other way, ``mem=`` words, would change the
kernel command line: the model predicts from the command line the run
composed, and it would be longer to type. The kernel takes at most two
usable ranges (MAX_USABLE_RANGES), so a board with more banks is refused.

Where things go (the same CMA placement as the direct boot): the initrd at
the direct boot's address (``BootFiles.initrd_addr``); the zImage at
U-Boot's usual ``kernel_addr_r`` (4 MiB into bank 0), from where it
decompresses itself to the bottom of bank 0 like the direct boot's; the DTB
just above the initrd, in bank 0 and clear of every static reserved-memory
region. Nothing lands where the kernel places a dynamic CMA area (those are
placed top-down after the initrd and the DTB are reserved, and only the
static ones could collide, which is checked).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Self

from cma_tool.deploy.qemu import (
    DEFAULT_MEMORY,
    KERNEL_ROOM,
    BootFiles,
    MemoryBank,
    VirtMachine,
    static_reserved_regions,
)
from cma_tool.deploy.uboot_boot import Loads, make_loads
from cma_tool.errors import ConfigError, InfraError
from cma_tool.sizes import format_size, hexaddr, round_up

MiB = 1 << 20
#: Debian's u-boot-qemu (2023.01): U-Boot for QEMU's 32-bit ARM virt machine.
UBOOT_BIOS = Path("/usr/lib/u-boot/qemu_arm/u-boot.bin")
#: QEMU user networking's host side, where its built-in TFTP server answers.
TFTP_SERVER = "10.0.2.2"
#: This U-Boot's CONFIG_SYS_CBSIZE, measured: a 512-character line is taken,
#: the 513th character rings the bell and is dropped.
UBOOT_LINE_LIMIT = 512
#: The kernel reads at most this many ranges from linux,usable-memory-range.
MAX_USABLE_RANGES = 2
#: Where the zImage is loaded: U-Boot's kernel_addr_r for qemu_arm, 4 MiB into bank 0.
KERNEL_LOAD_OFFSET = 4 * MiB
#: U-Boot opens the DTB in place with CONFIG_SYS_FDT_PAD (12 KiB) more room; keep a margin.
FDT_GROWTH = 64 * 1024


class UBootBoard(VirtMachine):
    """QEMU virt with U-Boot as its firmware; with ``tftp_dir``, a virtio NIC on QEMU's user network.

    QEMU's built-in TFTP server (at :data:`TFTP_SERVER` from the guest)
    serves ``tftp_dir``. ``reboot=True`` lets a reset start U-Boot again
    instead of ending QEMU (to see a boot loop as a real board shows it).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        memory: str = DEFAULT_MEMORY,
        tftp_dir: Path | None = None,
        bios: Path = UBOOT_BIOS,
        reboot: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(memory=memory, workdir=workdir, extra_args=extra_args, reboot=reboot)
        self.tftp_dir = tftp_dir
        self.bios = bios

    def boot_args(self) -> list[str]:
        args = ["-bios", str(self.bios)]
        if self.tftp_dir is not None:
            # -nic user,tftp= wants ipxe's efi-virtio.rom (not installed), and
            # virtio-net-device is no -nic model: a -netdev/-device pair it is.
            # QEMU's option syntax doubles a comma inside a value.
            folder = str(self.tftp_dir.resolve()).replace(",", ",,")
            args += ["-netdev", f"user,id=net0,tftp={folder}", "-device", "virtio-net-device,netdev=net0"]
        return args

    def __enter__(self) -> Self:
        if not self.bios.is_file():
            raise InfraError(f"U-Boot for QEMU is not at {self.bios}", hint="apt-get install u-boot-qemu")
        if self.tftp_dir is not None and not self.tftp_dir.is_dir():
            raise InfraError(f"the TFTP folder {self.tftp_dir} does not exist")
        super().__enter__()
        return self


def prepare_uboot_files(boot: BootFiles, workdir: Path, *, banks: Sequence[MemoryBank]) -> Loads:
    """Write what U-Boot loads into ``workdir`` (the TFTP folder) and choose where each file goes.

    ``zImage``: the plain kernel (U-Boot passes the DTB; the one appended to
    ``boot.kernel`` is cut off). ``board-uboot.dtb``: the board DTB with
    both banks in ``/chosen/linux,usable-memory-range`` and without the
    direct boot's initrd properties (U-Boot writes its own).
    """
    from cma_tool.binfmt import fdt

    workdir.mkdir(parents=True, exist_ok=True)
    if not banks:
        raise ConfigError("the board has no memory banks")
    if len(banks) > MAX_USABLE_RANGES:
        raise ConfigError(
            f"the board has {len(banks)} memory banks; through U-Boot the emulated board can keep at most "
            f"{MAX_USABLE_RANGES} (the kernel reads that many ranges from linux,usable-memory-range)",
            hint="merge adjacent banks, or use --boot direct",
        )
    low = min(banks, key=lambda b: b.base)

    kernel = workdir / "zImage"
    kernel.write_bytes(plain_zimage(boot.kernel.read_bytes(), source=str(boot.kernel)))

    tree = fdt.decode(boot.dtb.read_bytes(), source=str(boot.dtb))
    fdt.set_chosen(tree, usable_memory=[fdt.MemoryBank(b.base, b.size) for b in banks])
    chosen = tree.root.ensure_child("chosen")
    for prop in ("linux,initrd-start", "linux,initrd-end"):
        chosen.properties.pop(prop, None)
    dtb = workdir / "board-uboot.dtb"
    dtb.write_bytes(fdt.encode(tree))

    initrd = boot.initrd
    if initrd.resolve().parent != workdir.resolve():
        initrd = workdir / boot.initrd.name
        initrd.write_bytes(boot.initrd.read_bytes())
    initrd_end = boot.initrd_addr + initrd.stat().st_size

    kernel_addr = low.base + KERNEL_LOAD_OFFSET
    fdt_addr = round_up(initrd_end, MiB)
    fdt_end = fdt_addr + dtb.stat().st_size + FDT_GROWTH
    problems = []
    if kernel_addr + kernel.stat().st_size > low.base + KERNEL_ROOM:
        problems.append(f"the zImage ({format_size(kernel.stat().st_size)}) does not fit below "
                        f"{hexaddr(low.base + KERNEL_ROOM)}")
    if fdt_end > low.end:
        problems.append(f"the DTB at {hexaddr(fdt_addr)} (after the initrd) runs past bank 0's end {hexaddr(low.end)}")
    for name, start, size in static_reserved_regions(dtb):
        if start < fdt_end and fdt_addr < start + size:
            problems.append(f"the DTB at {hexaddr(fdt_addr)}..{hexaddr(fdt_end)} overlaps reserved-memory "
                            f"node {name} ({hexaddr(start)}, {format_size(size)})")
    if problems:
        raise ConfigError(
            "no room in bank 0 for what U-Boot loads: " + "; ".join(problems),
            hint="leave room above the initrd in bank 0, or use --boot direct",
        )
    return make_loads((kernel, kernel_addr), (dtb, fdt_addr), (initrd, boot.initrd_addr))


def plain_zimage(data: bytes, *, source: str = "zImage") -> bytes:
    """The zImage alone, without an appended DTB: as long as its header's end field says.

    The decompressor finds an appended DTB at exactly that offset, so the
    header is the kernel's own word on where the zImage stops.
    """
    from construct import Bytes, ConstructError, Int32ul, Struct

    header = Struct("code" / Bytes(0x24), "magic" / Int32ul, "start" / Int32ul, "end" / Int32ul)
    try:
        fields = header.parse(data)
    except ConstructError:
        raise InfraError(f"{source} is too short to be a zImage ({len(data)} bytes)") from None
    if fields.magic != 0x016F2818:
        raise InfraError(f"{source} is not an ARM zImage (magic {fields.magic:#010x}, not 0x016f2818)")
    size = fields.end - fields.start
    if not 0x30 <= size <= len(data):
        raise InfraError(f"{source}: the zImage header gives a size of {size} bytes; the file has {len(data)}")
    return data[:size]

