"""Booting through U-Boot on a console: the one path the emulated board (``--boot uboot``) and a bench board share.

Stop U-Boot at its prompt, load the kernel, the device tree and the initrd
to their addresses, check each with U-Boot's ``crc32`` against the host's
(a file damaged on the way would fail in ways that look like CMA bugs), set
the command line, ``bootz``. How the files travel is a :class:`Loader`:
QEMU's built-in TFTP server (the emulator's user network), our own TFTP
server on the lab network (tftpy), or YMODEM over the console itself. What
gives the console and the power (QEMU, or a serial port and a power switch)
is the caller's.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Protocol

from cma_tool.board.types import Board
from cma_tool.deploy.console import Console
from cma_tool.deploy.uboot import UBoot
from cma_tool.errors import ConfigError, InfraError
from cma_tool.sizes import format_size, hexaddr

#: CONFIG_SYS_FDT_PAD: the room U-Boot adds to a device tree it opens in place (chosen, bootargs, initrd).
FDT_PAD = 0x3000
#: A U-Boot command (setenv, crc32, dhcp) answers well within this.
COMMAND_TIMEOUT = 30.0


@dataclass(frozen=True)
class Load:
    """One file U-Boot puts in RAM."""

    what: str  # "kernel", "device tree", "initrd"
    path: Path
    addr: int
    size: int

    @property
    def end(self) -> int:
        return self.addr + self.size


class Loads(NamedTuple):
    """The files of one boot, in load order: the initrd last."""

    kernel: Load
    dtb: Load
    initrd: Load


class Loader(Protocol):
    """How files reach U-Boot's RAM."""

    name: str  # "TFTP", "YMODEM": said in errors

    def prepare(self, uboot: UBoot, left: Callable[[float], float]) -> None:
        """Set U-Boot up for the loads (its network, the server)."""

    def load(self, uboot: UBoot, load: Load, left: Callable[[float], float]) -> int:
        """Put one file at its address; the byte count U-Boot reports."""


@dataclass
class TftpLoader:
    """``tftpboot`` from a server on ``server_ip`` serving ``folder``; the board's address by dhcp or fixed."""

    server_ip: str
    folder: Path
    board_ip: str | None = None
    port: int = 69
    prefix: str = ""  # the folder the server serves ``folder`` under (a lab server's), "" for our own server
    name: str = "TFTP"

    def prepare(self, uboot: UBoot, left: Callable[[float], float]) -> None:
        if self.board_ip:
            uboot.setenv("ipaddr", self.board_ip)
        else:
            uboot.setenv("autoload", "no")  # dhcp only configures the interface, loads nothing
            uboot.run_check("dhcp", timeout=left(60.0))
        # After dhcp: a DHCP server's next-server would otherwise replace ours.
        uboot.setenv("serverip", self.server_ip)
        if self.port != 69:
            uboot.setenv("tftpdstp", str(self.port))  # U-Boot's CONFIG_TFTP_PORT variable

    def load(self, uboot: UBoot, load: Load, left: Callable[[float], float]) -> int:
        return uboot.tftpboot(load.addr, self.prefix + load.path.name, timeout=left(120.0))


@dataclass
class YmodemLoader:
    """``loady`` over the console: no network needed, ~12 KB/s at 115200 baud."""

    name: str = "YMODEM"

    def prepare(self, uboot: UBoot, left: Callable[[float], float]) -> None:
        pass

    def load(self, uboot: UBoot, load: Load, left: Callable[[float], float]) -> int:
        return uboot.loady(load.addr, load.path.read_bytes(), filename=load.path.name, timeout=left(1e9))


#: CONFIG_SYS_CBSIZE of a board that does not say: U-Boot's long-standing default.
DEFAULT_MAX_LINE = 256


def boot_with_uboot(console: Console, loads: Loads, loader: Loader, *, bootargs: str, prompt: str,
                    left: Callable[[float], float], on_stage: Callable[[str], None],
                    max_line: int = DEFAULT_MAX_LINE) -> None:
    """From power-on to the kernel's banner: stages "uboot", "loaded" (every file verified), "kernel"."""
    uboot = UBoot(console, prompt=prompt, max_line=max_line, default_timeout=left(COMMAND_TIMEOUT))
    uboot.attach(timeout=left(COMMAND_TIMEOUT))
    on_stage("uboot")
    loader.prepare(uboot, left)
    for load in loads:
        got = loader.load(uboot, load, left)
        uboot.check_loaded(load.addr, load.path.read_bytes(), got=got, what=f"the {load.what} ({load.path.name})",
                           how=loader.name)
    uboot.setenv("bootargs", bootargs)
    on_stage("loaded")
    uboot.boot(bootz_command(loads), timeout=left(60.0))
    on_stage("kernel")


def bootz_command(loads: Loads) -> str:
    """``bootz kernel initrd:size fdt``: the initrd's size given, not taken from ``${filesize}``."""
    kernel, fdt, initrd = loads
    return f"bootz {kernel.addr:#x} {initrd.addr:#x}:{initrd.size:#x} {fdt.addr:#x}"


def make_loads(kernel: tuple[Path, int], dtb: tuple[Path, int], initrd: tuple[Path, int]) -> Loads:
    """(file, address) of each into Loads; a missing file is a ConfigError before the board is touched."""
    out = []
    for what, (path, addr) in (("kernel", kernel), ("device tree", dtb), ("initrd", initrd)):
        if not path.is_file():
            raise ConfigError(f"the {what} file {path} does not exist")
        out.append(Load(what, path, addr, path.stat().st_size))
    return Loads(*out)


def layout_problems(board: Board, loads: Sequence[Load]) -> list[str]:
    """Each file must lie inside one bank, clear of the others (the DTB with U-Boot's pad) and of static regions.

    The kernel reserves the static reserved-memory regions and the initrd and
    device tree too: two reservations over the same bytes are a broken boot,
    not a CMA result.
    """
    def span(load: Load) -> tuple[int, int]:
        return load.addr, load.end + (FDT_PAD if load.what == "device tree" else 0)

    def show(load: Load) -> str:
        lo, hi = span(load)
        return f"the {load.what} ({load.path.name}, {format_size(load.size)}) at {hexaddr(lo)}..{hexaddr(hi)}"

    problems = []
    for load in loads:
        lo, hi = span(load)
        if not any(bank.base <= lo and hi <= bank.end for bank in board.banks):
            problems.append(f"{show(load)} is not inside one memory bank")
        for region in board.regions:
            if region.reg is not None and lo < region.reg[0] + region.reg[1] and region.reg[0] < hi:
                problems.append(f"{show(load)} overlaps reserved-memory region {region.display} "
                                f"({hexaddr(region.reg[0])}, {format_size(region.reg[1])})")
    for i, first in enumerate(loads):
        for second in loads[i + 1 :]:
            a, b = span(first), span(second)
            if a[0] < b[1] and b[0] < a[1]:
                problems.append(f"{show(first)} overlaps {show(second)}")
    return problems


def tftp_names(loads: Sequence[Load]) -> list[str]:
    """The names U-Boot asks the TFTP server for: the files' own, which must differ."""
    names = [load.path.name for load in loads]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"two of the files to load are both called {name!r}: over TFTP each needs its own "
                              "name", hint="give the kernel, the device tree and the initrd different file names")
    return names


def stage_in(folder: Path, loads: Sequence[Load]) -> Loads:
    """A copy of each file in the served ``folder`` unless it is there already; the loads as served."""
    root = folder.resolve()
    root.mkdir(parents=True, exist_ok=True)
    staged = []
    for load in loads:
        source = load.path.resolve()
        target = root / load.path.name
        if not (target.resolve() == source and not target.is_symlink()):
            target.unlink(missing_ok=True)  # a stale copy, or a link the server would refuse to follow
            shutil.copyfile(source, target)
        staged.append(Load(load.what, target, load.addr, load.size))
    return Loads(*staged)


@contextmanager
def host_tftp(folder: Path, *, host: str, port: int) -> Iterator[int]:
    """Our TFTP server (tftpy) on the lab network serving ``folder``; yields the port it listens on."""
    from cma_tool.deploy.tftp import serve_tftp

    try:
        with serve_tftp(folder, host=host, port=port) as tftp:
            yield tftp.port
    except InfraError as err:
        err.hint = err.hint or (f"network: server-ip ({host}) must be an address of this host, the one the board "
                                "reaches it by")
        raise


def ymodem_seconds(size: int, baud: int) -> float:
    """The least time ``size`` bytes take over YMODEM at ``baud``: 10 bits a byte (8N1), 1029 bytes a 1 KiB block."""
    blocks = -(-size // 1024)
    return blocks * 1029 * 10 / baud


def check_serial_time(loads: Sequence[Load], baud: int, timeout: float) -> None:
    """A UART cannot beat its baud rate: say so now rather than after minutes of transfer."""
    needed = sum(ymodem_seconds(load.size, baud) for load in loads)
    if needed > timeout:
        total = sum(load.size for load in loads)
        raise ConfigError(
            f"sending {format_size(total)} over the console with YMODEM at {baud} baud takes at least "
            f"{needed:.0f} s, more than the {timeout:.0f} s this session may take",
            hint="raise the timeout (--timeout), or give the board a network (network: server-ip) so U-Boot "
            "fetches the files over TFTP",
        )
