"""A board on a bench, on its serial console: the ``--target serial`` way, and its session.

What QEMU is for the emulated board, a serial port and a power switch are
here: the console is opened first (so U-Boot's first words and its autoboot
countdown are seen), the board is switched on inside
:func:`~cma_tool.deploy.power.powered` (so it is switched off at the end,
whatever happens), and then the boot is the one every U-Boot board gets
(:mod:`cma_tool.deploy.uboot_boot`): the board's own kernel, our initrd with
the agent's plan, and the board's own DTB patched with the plan (or one we
generate), each checked with ``crc32``; then the agent runs the schedule
(:func:`~cma_tool.deploy.watch.watch_agent`).

Loading: with ``network: server-ip`` the host serves the files with our own
TFTP server and U-Boot fetches them with ``tftpboot``; without, each file
goes over the console with ``loady`` (YMODEM). A YMODEM load that cannot
finish within the session's timeout at the console's baud rate is refused
before the board is touched.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from cma_tool.board.types import Board
from cma_tool.deploy.console import Console
from cma_tool.deploy.power import CommandPower, ManualPower, NetioPower, PowerCommands, PowerControl, powered
from cma_tool.deploy.sections import console_text
from cma_tool.deploy.targets import Job, Prepared, TargetOptions
from cma_tool.deploy.uboot_boot import (
    COMMAND_TIMEOUT,
    Loader,
    Loads,
    TftpLoader,
    YmodemLoader,
    boot_with_uboot,
    check_serial_time,
    host_tftp,
    layout_problems,
    make_loads,
    stage_in,
    tftp_names,
)
from cma_tool.deploy.watch import watch_agent
from cma_tool.errors import CmaToolError, ConfigError

#: How long a USB serial adapter named by a udev rule may take to (re)appear.
ADAPTER_WAIT = 5.0


@dataclass(frozen=True)
class LabTftp:
    """A TFTP server the lab runs (a labgrid place's TFTPProvider) instead of ours.

    The files are staged into ``folder`` (the server's root for this board,
    on this host) and U-Boot asks for them under ``prefix``.
    """

    folder: Path
    prefix: str = ""


class SerialTarget:
    """``--target serial``: the board's kernel, our initrd, its DTB patched, booted by its U-Boot."""

    kernel_profile: str | None = None  # the board file's: the kernel is the board's own

    def __init__(self, options: TargetOptions) -> None:
        self.options = options
        self._initrd: Path | None = None
        self._dtb: Path | None = None

    def prepare(self, job: Job) -> Prepared:
        from cma_tool.deploy import image as timage
        from cma_tool.generate.bootargs import kernel_cmdline
        from cma_tool.generate.dts import compile_dts, standalone_dts

        board, profile = job.plan.board, job.plan.profile
        cmdline = kernel_cmdline(board, profile, agent="run", extra=job.extra_bootargs)
        dtb = job.out / "board.dtb"
        if self.options.dtb is not None:
            # A real board boots its own DTB: patch memory, reserved-memory and bootargs into it.
            from cma_tool.dtbcmd import patch_for_board, read_dtb

            dtb.write_bytes(patch_for_board(read_dtb(self.options.dtb), board, cmdline.text,
                                            source=str(self.options.dtb)))
        else:
            (job.out / "board.dts").write_text(standalone_dts(board, profile))
            compile_dts(job.out / "board.dts", dtb)
        job.say("      agent initrd (cached image)")
        image = timage.ensure_image(job.cache, progress=lambda m: job.say(f"      {m}"))
        job.stage("image", kernel=str(self.options.kernel), initrd_from=image.kernel_package)
        self._initrd = timage.compose_initrd(image, {"plan": job.agent_plan_text}, job.out / "initrd.gz")
        self._dtb = dtb
        return Prepared(cmdline.text, files={"dtb": str(dtb), "initrd": str(self._initrd),
                                             "kernel": str(self.options.kernel)}, notes=cmdline.notes)

    def run(self, job: Job, prepared: Prepared) -> str:
        assert self._initrd is not None and self._dtb is not None and self.options.kernel is not None
        return run_via_serial(job.plan.board, kernel=self.options.kernel, dtb=self._dtb, initrd=self._initrd,
                              bootargs=prepared.cmdline, workdir=job.out, timeout=job.timeout,
                              console_url=self.options.console, on_stage=job.stage)


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
    lab_tftp: LabTftp | None = None,
) -> str:
    """Boot ``board`` through U-Boot with these files and bootargs; return the console text (LF line ends).

    ``console_url`` overrides the board file's console (a device path,
    ``socket://``, ``rfc2217://``). ``timeout`` bounds the whole session,
    from power-on to the agent's last line. Stages reported through
    ``on_stage``: console (opened), power (switched on), uboot (at the
    prompt), loaded (files in RAM and verified, bootargs set), kernel (its
    banner), init, captured. With ``lab_tftp`` U-Boot fetches from the
    lab's TFTP server (at the board file's ``network: server-ip``) instead of
    ours. Raises ConfigError before touching the board
    when the board file cannot say where things go; TargetError/InfraError
    (naming ``workdir/console.log``) for what happens on the bench.
    """
    loads = plan_loads(board, kernel=kernel, dtb=dtb, initrd=initrd)
    if lab_tftp is not None and not board.network.server_ip:
        raise ConfigError(f"{board.path}: the lab serves this board's files by TFTP, but the board file has "
                          "no network: server-ip",
                          hint="network: server-ip: the lab TFTP server's address as the board reaches it")
    if board.network.server_ip:
        tftp_names(loads)
    else:
        check_serial_time(loads, board.console.baud, timeout)
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
                with ExitStack() as stack:  # the TFTP server lives while U-Boot loads, no longer
                    loader: Loader = YmodemLoader()
                    net = board.network
                    if net.server_ip and lab_tftp is not None:
                        loads = stage_in(lab_tftp.folder, loads)
                        loader = TftpLoader(net.server_ip, lab_tftp.folder, board_ip=net.board_ip,
                                            port=net.tftp_port, prefix=lab_tftp.prefix)
                    elif net.server_ip:
                        loads = stage_in(workdir, loads)
                        port = stack.enter_context(host_tftp(workdir, host=net.server_ip, port=net.tftp_port))
                        loader = TftpLoader(net.server_ip, workdir, board_ip=net.board_ip, port=port)
                    boot_with_uboot(console, loads, loader, bootargs=bootargs, prompt=board.boot.uboot_prompt,
                                    left=left, on_stage=on_stage)
                watch_agent(console, left, on_stage)
    except CmaToolError as err:
        if not isinstance(err, ConfigError) and str(log_path) not in err.message:
            err.message += f"\n--- console log: {log_path}"
        raise
    return console_text(log_path.read_bytes()[start:])


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


def plan_loads(board: Board, *, kernel: Path, dtb: Path, initrd: Path) -> Loads:
    """Where U-Boot puts each file (the board file's boot addresses), checked before the board is touched."""
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
    assert boot.kernel_addr is not None and boot.fdt_addr is not None and boot.initrd_addr is not None
    loads = make_loads((kernel, boot.kernel_addr), (dtb, boot.fdt_addr), (initrd, boot.initrd_addr))
    problems = layout_problems(board, loads)
    if problems:
        raise ConfigError(
            f"{w.file}:{w.line}: the boot addresses do not fit these files:\n  " + "\n  ".join(problems),
            hint="move kernel-addr/fdt-addr/initrd-addr so each file lies in a bank, apart from the others "
            "and from the reserved-memory regions",
        )
    return loads
