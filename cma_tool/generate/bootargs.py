"""The kernel command line and the U-Boot script that boots with it.

What goes on the command line (linux-cma.md §4):

- ``console=DEV,BAUD`` from the board;
- ``mem=SIZE@BASE`` per bank when the bootloader rewrites /memory
  (``banks-via: mem=``): U-Boot replaces the first /memory node with its own
  single bank, the command line survives;
- ``cma=`` only where the command line, not a device-tree node, makes the
  default area: linux-3.5 (its parser reads only a size; the arch code places
  it with dma_contiguous_reserve()), or a DT kernel asked to use the command
  line. The 2011 series has no ``cma=``: its board file reserves the area;
- ``coherent_pool=`` when the profile's atomic pool is not the kernel's 256 KiB
  (6.x only: older kernels have no such parameter);
- then the board's own ``bootargs``, last, so that they win (early_param
  keeps the last value).
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import assert_never

from cma_tool.board.types import Board, Region
from cma_tool.errors import ConfigError, InfraError
from cma_tool.hush import hush_quote
from cma_tool.model.cmdline import parse_cma_cmdline
from cma_tool.model.profiles import CmdlineCma, KernelProfile

_KERNEL_DEFAULT_POOL = 256 * 1024
_SUFFIXES = ((60, "E"), (50, "P"), (40, "T"), (30, "G"), (20, "M"), (10, "K"))


def memparse_text(value: int) -> str:
    """``value`` as memparse() reads it back exactly: the largest suffix that divides it."""
    for shift, suffix in _SUFFIXES:
        if value and value % (1 << shift) == 0:
            return f"{value >> shift}{suffix}"
    return str(value)


def dt_kernel(profile: KernelProfile) -> bool:
    """Does this kernel read /reserved-memory (else: board-file calls)?"""
    return profile.reads_device_tree


def cma_on_cmdline(board: Board, profile: KernelProfile, *, prefer_cmdline: bool = False) -> bool:
    """Whether the default area is made by ``cma=`` (True) or by a DT node / board file (False).

    A board-file kernel that parses ``cma=`` makes its global area from the
    command line (dma_contiguous_reserve()), not from the board file; a DT
    kernel does so only when asked to.
    """
    if board.default_region is None or profile.facts.cmdline_cma is CmdlineCma.ABSENT:
        return False
    if not dt_kernel(profile):
        return True
    return prefer_cmdline


def cma_argument(region: Region, profile: KernelProfile) -> str:
    """``cma=`` for the default region, in the spelling this kernel parses."""
    size = memparse_text(region.requested_size)
    match profile.facts.cmdline_cma:
        case CmdlineCma.ABSENT:
            raise ConfigError(f"kernel profile {profile.name} has no cma= parameter",
                              hint="its board file reserves every area; leave cma= off its command line")
        case CmdlineCma.SIZE_ONLY:
            return f"cma={size}"
        case CmdlineCma.PLACEMENT:
            pass
        case _ as unhandled:
            assert_never(unhandled)
    if region.reg is not None:
        # SIZE@BASE without an end is fixed at BASE (limit = base + size).
        return f"cma={size}@{region.reg[0]:#x}"
    if region.alloc_ranges:
        # One range only: the command line cannot say more. The first is the
        # one the kernel tries first for the node too.
        start, length = region.alloc_ranges[0]
        return f"cma={size}@{start:#x}-{start + length:#x}"
    return f"cma={size}"


@dataclass(frozen=True)
class Cmdline:
    text: str
    #: Words the kernel will read differently from what a reader may expect.
    notes: tuple[str, ...] = ()


#: What our agent needs on the command line when the board boots our initrd: panic=-1 reboots
#: (and so ends QEMU, -no-reboot) instead of hanging; trace_event=cma:* traces the boot-time
#: allocations (the atomic pool) too; cmatool.mode tells firmware/init what to do.
AGENT_MODES = ("run", "ssh", "shell")


def kernel_cmdline(board: Board, profile: KernelProfile, *, mem_banks: bool | None = None,
                   prefer_cmdline: bool = False, agent: str | None = None, extra: str = "") -> Cmdline:
    """The whole kernel command line for ``board`` on ``profile``: the one owner of every command line.

    ``mem_banks`` None follows the board (``banks-via: mem=``). ``agent``
    ("run", "ssh", "shell") adds what our firmware needs when the board boots
    our initrd; ``extra`` (a run's ``--bootargs`` and its scenario's) comes
    last, after the board's own bootargs, so that it wins.
    """
    words: list[str] = [f"console={board.console.device},{board.console.baud}"]
    notes: list[str] = []
    if mem_banks if mem_banks is not None else board.boot.banks_via == "mem=":
        words += [f"mem={memparse_text(b.size)}@{b.base:#x}" for b in board.banks]
    default = board.default_region
    if default is not None and cma_on_cmdline(board, profile, prefer_cmdline=prefer_cmdline):
        words.append(cma_argument(default, profile))
        if len(default.alloc_ranges) > 1 and profile.has_cmdline_placement:
            notes.append(f"cma= can name one range; {default.display} lists {len(default.alloc_ranges)}: "
                         "only the first is used")
    if dt_kernel(profile) and profile.atomic_pool_bytes != _KERNEL_DEFAULT_POOL:
        words.append(f"coherent_pool={memparse_text(profile.atomic_pool_bytes)}")
    if agent is not None:
        if agent not in AGENT_MODES:
            raise ConfigError(f"agent mode {agent!r} is not one of {', '.join(AGENT_MODES)}")
        words += ["panic=-1", "trace_event=cma:*", f"cmatool.mode={agent}"]
    for given in (board.kernel.bootargs.strip(), extra.strip()):
        if not given:
            continue
        if any(w.startswith("cma=") for w in words) and parse_cma_cmdline(given).given:
            notes.append("the board's own bootargs or --bootargs carry cma= too; the kernel keeps the last one")
        words.append(given)
    return Cmdline(" ".join(words), tuple(notes))


# ------------------------------------------------------------------ U-Boot

_SAFE_FILE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-/+")


def _file_word(name: str, what: str) -> str:
    if not name or not set(name) <= _SAFE_FILE:
        raise ConfigError(f"{what} {name!r} is not a plain file name",
                          hint="use letters, digits and . _ - / + only")
    return name


@dataclass(frozen=True)
class BootFiles:
    """The file names U-Boot loads and where from."""

    kernel: str = "zImage"
    dtb: str | None = "board.dtb"  # None: a kernel without device tree (ATAGs)
    initrd: str | None = "initrd.gz"
    #: "tftp" (tftpboot, serverip from the environment) or "<interface> <dev:part>" for ``load``.
    source: str = "tftp"


def _load(files: BootFiles, addr_var: str, name: str) -> str:
    target = "${" + addr_var + "}"
    if files.source == "tftp":
        return f"tftpboot {target} {name}"
    parts = files.source.split()
    if len(parts) != 2 or not all(set(p) <= _SAFE_FILE | {":"} for p in parts):
        raise ConfigError(f"boot source {files.source!r} is not 'tftp' or '<interface> <dev:part>'",
                          hint="e.g. 'mmc 0:1'")
    return f"load {parts[0]} {parts[1]} {target} {name}"


def uboot_commands(board: Board, cmdline: str, files: BootFiles) -> list[str]:
    """The U-Boot commands that boot ``board``: bootargs, addresses, loads, bootz.

    Addresses the board file leaves out come from U-Boot's own environment
    (kernel_addr_r, fdt_addr_r, ramdisk_addr_r are standard since 2012).
    """
    boot = board.boot
    cmds = [f"setenv bootargs {hush_quote(cmdline, what='bootargs')}"]
    for var, addr in (("kernel_addr_r", boot.kernel_addr), ("fdt_addr_r", boot.fdt_addr),
                      ("ramdisk_addr_r", boot.initrd_addr)):
        if addr is not None:
            cmds.append(f"setenv {var} {addr:#x}")
    cmds.append(_load(files, "kernel_addr_r", _file_word(files.kernel, "kernel file")))
    if files.dtb is not None:
        cmds.append(_load(files, "fdt_addr_r", _file_word(files.dtb, "device tree file")))
    initrd_arg = "-"
    if files.initrd is not None:
        # Last load before bootz: ${filesize} must still be the initrd's.
        cmds.append(_load(files, "ramdisk_addr_r", _file_word(files.initrd, "initrd file")))
        initrd_arg = "${ramdisk_addr_r}:${filesize}"
    fdt_arg = " ${fdt_addr_r}" if files.dtb is not None else ""
    cmds.append(f"bootz ${{kernel_addr_r}} {initrd_arg}{fdt_arg}")
    return cmds


def boot_script(board: Board, profile: KernelProfile, cmdline: str, files: BootFiles) -> str:
    """``boot.cmd``: the text mkimage wraps into ``boot.scr``."""
    head = [
        f"# U-Boot script for {board.model}: boot with the planned CMA reservations.",
        f"# Generated by cma-tool from {Path(board.path).name} (kernel profile {profile.name}).",
        "# Rebuild boot.scr after editing: mkimage -A arm -T script -C none -d boot.cmd boot.scr",
    ]
    cmds = uboot_commands(board, cmdline, files)
    return "\n".join(head + cmds) + "\n"


def uboot_env(board: Board, cmdline: str, files: BootFiles) -> str:
    """``uboot-env.txt``: the same as ``setenv`` lines to type or paste at the prompt; ``run cmabootcmd`` boots."""
    cmds = uboot_commands(board, cmdline, files)
    setenvs = [c for c in cmds if c.startswith("setenv ")]
    rest = [c for c in cmds if not c.startswith("setenv ")]
    lines = [*setenvs, f"setenv cmabootcmd {hush_quote('; '.join(rest), what='boot command')}"]
    return "\n".join(lines) + "\n"


def make_boot_scr(cmd_file: Path, scr_file: Path) -> None:
    """Wrap ``boot.cmd`` with the real mkimage (u-boot-tools), as U-Boot's ``source`` expects."""
    if shutil.which("mkimage") is None:
        raise InfraError("mkimage is not installed", hint="apt-get install u-boot-tools")
    result = subprocess.run(["mkimage", "-A", "arm", "-T", "script", "-C", "none", "-n", "cma-tool boot script",
                             "-d", str(cmd_file), str(scr_file)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise InfraError(f"mkimage failed on {cmd_file}: {(result.stderr or result.stdout).strip()}")
