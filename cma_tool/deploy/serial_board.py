"""A real board on its serial console: power it, drive U-Boot, load, boot, watch the firmware run.

What ``_boot_and_capture`` does for QEMU, :func:`run_via_serial` does for a
board on a bench: open the console first (so U-Boot's first words and its
autoboot countdown are seen), switch the board on inside
:func:`~cma_tool.deploy.power.powered` (so it is switched off at the end,
whatever happens), stop U-Boot at its prompt, load the kernel, the device
tree and the initrd to the board file's addresses, ``bootz``, and wait for
the firmware's ``==== CMA-TOOL DONE rc=N ====`` line.

Loading: with ``network: server-ip`` the host serves the files with our own
TFTP server and U-Boot fetches them with ``tftpboot``; without, each file
goes over the console with ``loady`` (YMODEM). Either way U-Boot's ``crc32``
of every file must equal the host's before anything boots: a kernel
damaged on the way would fail in ways that look like CMA bugs. A YMODEM
load that cannot finish within the session's timeout at the console's baud
rate is refused before the board is touched.

Every failure names the console log. The console engine's bad patterns
classify what the board says (a U-Boot sign-on where the kernel should be is
a reset; a panic, an Oops; TFTP giving up); silence ends in a timeout that
says what was awaited.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from cma_tool.board.types import Board
from cma_tool.deploy.console import Console
from cma_tool.deploy.power import (
    CommandPower,
    ManualPower,
    NetioPower,
    PowerCommands,
    PowerControl,
    powered,
)
from cma_tool.deploy.uboot import UBoot
from cma_tool.errors import CmaToolError, ConfigError, InfraError
from cma_tool.sizes import format_size, hexaddr

#: The firmware's last line (firmware/cmatool-run), with the capture program's exit code.
DONE_LINE = rb"==== CMA-TOOL DONE rc=-?\d+ ====\r?\n"
#: What the kernel prints as the firmware's ``poweroff -f`` takes effect.
POWER_DOWN = rb"reboot: (?:Power down|System halted|Restarting system)"
#: CONFIG_SYS_FDT_PAD: the room U-Boot adds to a device tree it opens in place (chosen, bootargs, initrd).
FDT_PAD = 0x3000
#: A U-Boot command (setenv, crc32, dhcp) answers well within this.
COMMAND_TIMEOUT = 30.0
#: How long a USB serial adapter named by a udev rule may take to (re)appear.
ADAPTER_WAIT = 5.0
#: After the last line, how long the kernel may take to say it powered down.
POWER_DOWN_WAIT = 5.0


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


def run_via_serial(
    board: Board,
    *,
    kernel: Path,
    dtb: Path,
    initrd: Path,
    bootargs: str,
    workdir: Path,
    timeout: float,
    console_url: str | None = None,
    on_stage: Callable[[str], None] = lambda s: None,
) -> str:
    """Boot ``board`` through U-Boot with these files and bootargs; return the console text (LF line ends).

    ``console_url`` overrides the board file's console (a device path,
    ``socket://``, ``rfc2217://``). ``timeout`` bounds the whole session,
    from power-on to the firmware's last line. Stages reported through
    ``on_stage``: console (opened), power (switched on), uboot (at the
    prompt), loaded (files in RAM and verified, bootargs set), kernel (its
    banner), init, captured. Raises ConfigError before touching the board
    when the board file cannot say where things go; TargetError/InfraError
    (naming ``workdir/console.log``) for what happens on the bench.
    """
    loads = plan_loads(board, kernel=kernel, dtb=dtb, initrd=initrd)
    if board.network.server_ip:
        tftp_names(loads)
    else:
        _check_serial_time(loads, board.console.baud, timeout)
    url = resolve_console(board, console_url)
    power = power_control(board)
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "console.log"
    start = log_path.stat().st_size if log_path.exists() else 0
    deadline = time.monotonic() + timeout

    def left(cap: float | None = None) -> float:
        remaining = max(1.0, deadline - time.monotonic())
        return remaining if cap is None else min(cap, remaining)

    try:
        with Console(url, workdir, name="console", baudrate=board.console.baud,
                     default_timeout=left(COMMAND_TIMEOUT)) as console:
            on_stage("console")
            with powered(power):
                on_stage("power")
                uboot = UBoot(console, prompt=board.boot.uboot_prompt, default_timeout=left(COMMAND_TIMEOUT))
                uboot.attach(timeout=left(COMMAND_TIMEOUT))
                on_stage("uboot")
                if board.network.server_ip:
                    _load_over_tftp(uboot, board, loads, workdir, left)
                else:
                    for load in loads:
                        got = uboot.loady(load.addr, load.path.read_bytes(), filename=load.path.name,
                                          timeout=left())
                        _verify(uboot, load, got, "YMODEM")
                uboot.setenv("bootargs", bootargs)
                on_stage("loaded")
                uboot.boot(bootz_command(loads), timeout=left(60.0))
                on_stage("kernel")
                console.expect(rb"Run /init", left(), waiting_for="the kernel to start /init")
                on_stage("init")
                console.expect(DONE_LINE, left(),
                               waiting_for="the capture plan to finish ('==== CMA-TOOL DONE rc=N ====')")
                on_stage("captured")
                _see_power_down(console)
    except CmaToolError as err:
        if not isinstance(err, ConfigError) and str(log_path) not in err.message:
            err.message += f"\n--- console log: {log_path}"
        raise
    text = log_path.read_bytes()[start:]
    return text.decode(errors="replace").replace("\r\n", "\n")


def resolve_console(board: Board, console_url: str | None = None, *, wait: float = ADAPTER_WAIT) -> str:
    """Where the console is: the explicit URL, else the board's ``console: port``, else its udev rule."""
    if console_url is not None:
        if not console_url.strip():
            raise ConfigError("the console URL given is empty", hint="e.g. --console /dev/ttyUSB0")
        return console_url.strip()
    if board.console.port:
        return board.console.port
    if board.console.udev_match:
        from cma_tool.deploy.discovery import wait_for_console

        return wait_for_console(dict(board.console.udev_match), wait)
    w = board.console.where
    raise ConfigError(
        f"{w.file}:{w.line}: board {board.name!r} does not say how to reach its serial console",
        hint="add console: port: /dev/ttyUSB0 (or a udev: rule, see `cma-tool suggest`), or give the console "
        "on the command line (--console URL)",
    )


def power_control(board: Board) -> PowerControl:
    """The backend the board file's ``power:`` section names."""
    p = board.power
    where = f"{p.where.file}:{p.where.line}"
    if p.kind == "command":
        if not (p.on and p.off):
            raise ConfigError(f"{where}: power: command: needs 'on' and 'off' command lines")
        return CommandPower(PowerCommands(on=p.on, off=p.off, cycle=p.cycle, state=p.state, where=where))
    if p.kind == "netio":
        if not p.url or p.output is None:
            raise ConfigError(f"{where}: power: netio: needs 'url' and 'output'")
        return NetioPower(p.url, p.output, username=p.user, password=p.password)
    if p.kind == "manual":
        return ManualPower(board.name)
    raise ConfigError(f"{where}: power kind {p.kind!r} is not manual, command or netio")


def plan_loads(board: Board, *, kernel: Path, dtb: Path, initrd: Path) -> tuple[Load, Load, Load]:
    """Where U-Boot puts each file (the board file's boot addresses), checked before the board is touched.

    Each file must lie inside one memory bank, clear of the others (the
    device tree with the room U-Boot adds to it) and of every static
    reserved-memory region: the kernel reserves those regions and the
    initrd and device tree too, and two reservations over the same bytes
    are a broken boot, not a CMA result.
    """
    boot = board.boot
    w = boot.where
    if boot.bootloader != "u-boot":
        raise ConfigError(
            f"{w.file}:{w.line}: board {board.name!r} boots with bootloader '{boot.bootloader}'; a serial "
            "target is driven through U-Boot",
            hint="set boot: bootloader: u-boot with uboot-prompt and the load addresses",
        )
    addrs = {"kernel-addr": boot.kernel_addr, "fdt-addr": boot.fdt_addr, "initrd-addr": boot.initrd_addr}
    missing = [key for key, value in addrs.items() if value is None]
    if missing:
        raise ConfigError(
            f"{w.file}:{w.line}: the boot section has no {', '.join(missing)}: U-Boot must be told where to "
            "load the kernel, the device tree and the initrd",
            hint="e.g. boot: {kernel-addr: 0x30008000, fdt-addr: 0x32000000, initrd-addr: 0x32800000}, "
            "inside bank 0 and clear of the reserved-memory regions",
        )
    files = {"kernel": kernel, "device tree": dtb, "initrd": initrd}
    for what, path in files.items():
        if not path.is_file():
            raise ConfigError(f"the {what} file {path} does not exist")
    assert boot.kernel_addr is not None and boot.fdt_addr is not None and boot.initrd_addr is not None
    loads = (
        Load("kernel", kernel, boot.kernel_addr, kernel.stat().st_size),
        Load("device tree", dtb, boot.fdt_addr, dtb.stat().st_size),
        Load("initrd", initrd, boot.initrd_addr, initrd.stat().st_size),
    )
    problems = _layout_problems(board, loads)
    if problems:
        raise ConfigError(
            f"{w.file}:{w.line}: the boot addresses do not fit these files:\n  " + "\n  ".join(problems),
            hint="move kernel-addr/fdt-addr/initrd-addr so each file lies in a bank, apart from the others "
            "and from the reserved-memory regions",
        )
    return loads


def _layout_problems(board: Board, loads: Sequence[Load]) -> list[str]:
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


def bootz_command(loads: tuple[Load, Load, Load]) -> str:
    """``bootz kernel initrd:size fdt``: the initrd's size given, not taken from ``${filesize}``."""
    kernel, fdt, initrd = loads
    return f"bootz {kernel.addr:#x} {initrd.addr:#x}:{initrd.size:#x} {fdt.addr:#x}"


def _load_over_tftp(uboot: UBoot, board: Board, loads: Sequence[Load], workdir: Path,
                    left: Callable[[float | None], float]) -> None:
    from cma_tool.deploy.tftp import serve_tftp

    net = board.network
    assert net.server_ip is not None
    names = tftp_names(loads)
    _stage_in(workdir, loads)
    with ExitStack() as stack:
        try:
            tftp = stack.enter_context(serve_tftp(workdir, host=net.server_ip, port=net.tftp_port))
        except InfraError as err:
            err.hint = err.hint or (f"network: server-ip ({net.server_ip}) must be an address of this host, "
                                    "the one the board reaches it by")
            raise
        if net.board_ip:
            uboot.setenv("ipaddr", net.board_ip)
        else:
            uboot.setenv("autoload", "no")  # dhcp only configures the interface, loads nothing
            uboot.run_check("dhcp", timeout=left(60.0))
        # After dhcp: a DHCP server's next-server would otherwise replace ours.
        uboot.setenv("serverip", net.server_ip)
        if tftp.port != 69:
            uboot.setenv("tftpdstp", str(tftp.port))  # U-Boot's CONFIG_TFTP_PORT variable
        for load, name in zip(loads, names, strict=True):
            got = uboot.tftpboot(load.addr, name, timeout=left(120.0))
            _verify(uboot, load, got, "TFTP")


def tftp_names(loads: Sequence[Load]) -> list[str]:
    """The names U-Boot asks the TFTP server for: the files' own, which must differ."""
    names = [load.path.name for load in loads]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"two of the files to load are both called {name!r}: over TFTP each needs its own "
                              "name", hint="give the kernel, the device tree and the initrd different file names")
    return names


def _stage_in(folder: Path, loads: Sequence[Load]) -> None:
    """Put a copy of each file in the served ``folder`` unless it is there already."""
    root = folder.resolve()
    for load in loads:
        source = load.path.resolve()
        target = root / load.path.name
        if target.resolve() == source and not target.is_symlink():
            continue
        target.unlink(missing_ok=True)  # a stale copy, or a link the server would refuse to follow
        shutil.copyfile(source, target)


def ymodem_seconds(size: int, baud: int) -> float:
    """The least time ``size`` bytes take over YMODEM at ``baud``: 10 bits a byte (8N1), 1029 bytes a 1 KiB block."""
    blocks = -(-size // 1024)
    return blocks * 1029 * 10 / baud


def _check_serial_time(loads: Sequence[Load], baud: int, timeout: float) -> None:
    # A UART cannot beat its baud rate: say so now rather than after minutes of transfer.
    needed = sum(ymodem_seconds(load.size, baud) for load in loads)
    if needed > timeout:
        total = sum(load.size for load in loads)
        raise ConfigError(
            f"sending {format_size(total)} over the console with YMODEM at {baud} baud takes at least "
            f"{needed:.0f} s, more than the {timeout:.0f} s this session may take",
            hint="raise the timeout (--timeout), or give the board a network (network: server-ip) so U-Boot "
            "fetches the files over TFTP",
        )


def _verify(uboot: UBoot, load: Load, got: int, how: str) -> None:
    uboot.check_loaded(load.addr, load.path.read_bytes(), got=got, what=f"the {load.what} ({load.path.name})", how=how)


def _see_power_down(console: Console) -> None:
    """Keep the kernel's last words in the log; the run is complete whatever they are."""
    everything = [bad.name for bad in console.bad_patterns]
    with console.disable_check(*everything):
        console.try_expect(POWER_DOWN, POWER_DOWN_WAIT)

