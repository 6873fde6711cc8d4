"""The board description as plain, validated data.

Everything downstream (plan, model, generate, target) reads these classes and
never the YAML. Each item keeps ``where`` so that a later check can still
point at the line the user wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cma_tool.board.yamlpos import NOWHERE, Where
from cma_tool.model.lowmem import ArmLayout
from cma_tool.model.profiles import KernelProfile

#: Where each key of an entry was written: ("size", Where), ("alloc-ranges[1]", Where), ...
FieldWheres = tuple[tuple[str, Where], ...]


def _field_where(fields: FieldWheres, key: str, default: Where) -> Where:
    return next((w for k, w in fields if k == key), default)


@dataclass(frozen=True)
class Bank:
    base: int
    size: int
    where: Where = NOWHERE

    @property
    def end(self) -> int:
        return self.base + self.size

    def contains(self, base: int, size: int) -> bool:
        return self.base <= base and base + size <= self.end


@dataclass(frozen=True)
class Region:
    """A /reserved-memory child, in the kernel binding's terms."""

    node: str  # node name with @unit, as the kernel names the area: "linux,cma", "region@33000000"
    label: str | None
    compatible: str = "shared-dma-pool"
    reusable: bool = False
    no_map: bool = False
    reg: tuple[int, int] | None = None  # static placement (base, size)
    size: int | None = None  # dynamic placement
    alignment: int | None = None
    alloc_ranges: tuple[tuple[int, int], ...] = ()
    cma_default: bool = False
    where: Where = NOWHERE
    fields: FieldWheres = ()
    #: Size keys written as a plain decimal number ("size: 64"): bytes, and rarely meant so.
    bare: frozenset[str] = frozenset()

    def at(self, key: str) -> Where:
        """Where ``key`` (or ``alloc-ranges[i]``) was written; the node's line when it was not."""
        return _field_where(self.fields, key, self.where)

    @property
    def is_cma(self) -> bool:
        return self.compatible == "shared-dma-pool" and self.reusable and not self.no_map

    @property
    def requested_size(self) -> int:
        if self.reg is not None:
            return self.reg[1]
        return self.size or 0

    @property
    def display(self) -> str:
        return self.label or self.node


@dataclass(frozen=True)
class CaptureNeed:
    """A V4L2 capture stream the device must be able to hold at once."""

    width: int
    height: int
    fourcc: str  # YUYV, NV12, NV16, RGB565, ...
    buffers: int
    frames: int = 5
    where: Where = NOWHERE

    @property
    def text(self) -> str:
        return f"{self.width}x{self.height} {self.fourcc} x{self.buffers}"


@dataclass(frozen=True)
class FixedBuffer:
    """A buffer of fixed size a driver allocates (MFC firmware, a scaler's work area)."""

    name: str
    size: int
    region: str | None = None  # label of the region it must come from (None: the device's first)
    where: Where = NOWHERE


@dataclass(frozen=True)
class Device:
    name: str
    compatible: tuple[str, ...] = ()
    reg: tuple[int, int] | None = None
    memory_region: tuple[str, ...] = ()  # labels, in the order the driver takes them
    memory_region_names: tuple[str, ...] = ()  # e.g. ("left", "right") for MFC
    #: Does the driver call of_reserved_mem_device_init()? s5p-mfc does, the
    #: exynos4-is FIMC driver does not (it always uses the default area).
    honours_memory_region: bool = True
    #: Its regions must lie in different memory banks (MFC: two AXI ports).
    regions_in_distinct_banks: bool = False
    dma_mask_bits: int = 32
    captures: tuple[CaptureNeed, ...] = ()
    buffers: tuple[FixedBuffer, ...] = ()
    #: The Linux driver on the target ("s5p-fimc", "vivid", ...) and its V4L2 node.
    driver: str | None = None
    video_node: str | None = None
    where: Where = NOWHERE
    fields: FieldWheres = ()

    def at(self, key: str) -> Where:
        """Where ``key`` (or ``memory-region[i]``) was written; the device's line when it was not."""
        return _field_where(self.fields, key, self.where)

    @property
    def dma_limit(self) -> int:
        return 1 << self.dma_mask_bits


@dataclass(frozen=True)
class Console:
    uart: str | None = None  # "UART2"
    device: str = "ttyS0"  # Linux console device: "ttySAC2", "ttyAMA0"
    baud: int = 115200
    #: How the host reaches it: a device path, "socket://host:port", "rfc2217://...",
    #: or udev match properties for a USB-serial adapter.
    port: str | None = None
    udev_match: tuple[tuple[str, str], ...] = ()
    where: Where = NOWHERE


@dataclass(frozen=True)
class Boot:
    bootloader: str = "u-boot"  # "u-boot" | "none" (QEMU loads the kernel directly)
    uboot_prompt: str = "=> "  # CONFIG_SYS_PROMPT: "Aquila # " on 2011-era boards
    kernel_addr: int | None = None
    fdt_addr: int | None = None
    initrd_addr: int | None = None
    #: Memory the kernel reserves before CMA (image, DTB, initrd): placement avoids it.
    early_reservations: tuple[tuple[str, int, int], ...] = ()
    #: How the banks reach the kernel when the bootloader rewrites /memory.
    banks_via: str = "dt"  # "dt" | "mem=" | "usable-memory-range"
    where: Where = NOWHERE


@dataclass(frozen=True)
class Emulation:
    """What stands in for the board in QEMU (qemu-aquila only)."""

    machine: str = "virt,highmem=off"
    cpu: str = "cortex-a15"
    memory: int = 768 << 20
    capture_driver: str = "vivid"
    notes: str = ""
    where: Where = NOWHERE


@dataclass(frozen=True)
class Power:
    """How the lab switches the board: by a person, by commands, or by a NETIO PDU output."""

    kind: str = "manual"  # manual | command | netio
    on: str | None = None
    off: str | None = None
    cycle: str | None = None
    state: str | None = None
    url: str | None = None  # netio
    output: int | None = None  # netio output number
    user: str | None = None
    password: str | None = None
    where: Where = NOWHERE


@dataclass(frozen=True)
class Network:
    """The board's network as U-Boot sees it, for TFTP from the host."""

    server_ip: str | None = None  # the host, as the board reaches it
    board_ip: str | None = None  # None: dhcp
    tftp_port: int = 69
    where: Where = NOWHERE


@dataclass(frozen=True)
class LabPlace:
    """Where the board sits in a lab rack: its labgrid place (``--target labgrid`` uses it)."""

    place: str
    coordinator: str | None = None  # HOST:PORT; None: --coordinator, else labgrid's default
    where: Where = NOWHERE


@dataclass(frozen=True)
class SshTarget:
    """Linux on the board over SSH, once it is up."""

    host: str
    port: int = 22
    user: str = "root"
    key: str | None = None
    accept_new_host_keys: bool = False
    where: Where = NOWHERE


@dataclass(frozen=True)
class Kernel:
    profile: KernelProfile
    bootargs: str = ""  # extra arguments beyond what the plan generates
    where: Where = NOWHERE
    #: PAGE_OFFSET, PHYS_OFFSET, the machine's DMA zone: where board-file era kernels' lowmem ends.
    layout: ArmLayout = field(default_factory=ArmLayout)
    fields: FieldWheres = ()

    def at(self, key: str) -> Where:
        """Where ``key`` of the kernel section was written; the section's line when it was not."""
        return _field_where(self.fields, key, self.where)


@dataclass(frozen=True)
class Board:
    name: str
    path: str
    model: str
    compatible: tuple[str, ...]
    banks: tuple[Bank, ...]
    regions: tuple[Region, ...]
    devices: tuple[Device, ...]
    kernel: Kernel
    console: Console
    boot: Boot
    emulation: Emulation | None = None
    power: Power = field(default_factory=Power)
    network: Network = field(default_factory=Network)
    ssh: SshTarget | None = None
    lab: LabPlace | None = None
    files: tuple[str, ...] = field(default=())  # the board file and everything it included

    def region(self, label_or_node: str) -> Region | None:
        for r in self.regions:
            if label_or_node in (r.label, r.node):
                return r
        return None

    def device(self, name: str) -> Device | None:
        for d in self.devices:
            if d.name == name:
                return d
        return None

    @property
    def cma_regions(self) -> tuple[Region, ...]:
        return tuple(r for r in self.regions if r.is_cma)

    @property
    def default_region(self) -> Region | None:
        for r in self.regions:
            if r.cma_default and r.is_cma:
                return r
        return None
