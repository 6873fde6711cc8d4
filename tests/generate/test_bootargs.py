"""Kernel command line, U-Boot script and environment lines.

Expected values come from the board files (banks, console) and the kernel's
rules (linux-cma.md §4); quoting is checked by reading the script back with
a POSIX-shell word splitter (hush's single quotes mean the same thing) and
the boot.scr image through U-Boot's own dumpimage.
"""

from __future__ import annotations

import dataclasses
import shlex
import struct
import subprocess
from pathlib import Path

import pytest

from cma_tool.board.types import Board
from cma_tool.errors import ConfigError
from cma_tool.generate import bootargs as gb
from cma_tool.model.boot import boot as model_boot
from cma_tool.model.cmdline import parse_cma_cmdline
from cma_tool.model.profiles import PROFILES
from cma_tool.plan import boot_input

from .conftest import need, with_profile

MiB = 1 << 20


def _with(board: Board, *, bootargs: str | None = None, banks_via: str | None = None) -> Board:
    kernel = board.kernel if bootargs is None else dataclasses.replace(board.kernel, bootargs=bootargs)
    boot = board.boot if banks_via is None else dataclasses.replace(board.boot, banks_via=banks_via)
    return dataclasses.replace(board, kernel=kernel, boot=boot)


def test_dt_kernel_gets_console_only(aquila: Board) -> None:
    # A DT kernel takes the default area from the linux,cma-default node: no cma=.
    assert gb.kernel_cmdline(aquila, PROFILES["linux-6.1"]).text == "console=ttySAC2,115200"


def test_mem_per_bank_reads_back_as_the_banks(aquila: Board) -> None:
    text = gb.kernel_cmdline(_with(aquila, banks_via="mem="), PROFILES["linux-6.1"]).text
    assert text == "console=ttySAC2,115200 mem=80M@0x30000000 mem=384M@0x40000000"
    # and through the kernel's memparse(): 80 MiB at 0x30000000, 384 MiB at 0x40000000
    from cma_tool.model.cmdline import memparse

    mems = [w.removeprefix("mem=") for w in text.split() if w.startswith("mem=")]
    read = []
    for word in mems:
        size, end = memparse(word)
        base, _ = memparse(word, end + 1)
        read.append((base, size))
    assert read == [(0x30000000, 80 * MiB), (0x40000000, 384 * MiB)]


def test_linux_35_default_area_comes_from_cma_size(aquila: Board) -> None:
    text = gb.kernel_cmdline(aquila, PROFILES["linux-3.5"]).text
    assert "cma=32M" in text.split()
    assert parse_cma_cmdline(text, with_placement=False).size == 32 * MiB


def test_cma_2011_has_no_cma_argument(aquila: Board) -> None:
    assert "cma=" not in gb.kernel_cmdline(aquila, PROFILES["cma-2011"]).text


def test_cmdline_default_lands_where_the_dt_node_does(aquila: Board) -> None:
    """cma=SIZE@START-END instead of the node: the model boots both to the same base."""
    profile = PROFILES["linux-6.1"]
    board = with_profile(aquila, "linux-6.1", max_order=11)
    text = gb.kernel_cmdline(board, profile, prefer_cmdline=True).text
    assert "cma=32M@0x40000000-0x58000000" in text.split()
    parsed = parse_cma_cmdline(text)
    assert (parsed.size, parsed.base, parsed.limit) == (32 * MiB, 0x40000000, 0x58000000)
    node_boot = model_boot(board.kernel.profile, boot_input(board))
    without_node = dataclasses.replace(board, regions=tuple(r for r in board.regions if not r.cma_default))
    cmd_boot = model_boot(board.kernel.profile, boot_input(without_node, text))
    node_area = node_boot.area("linux,cma")
    cmd_area = cmd_boot.area("reserved")
    assert node_area is not None and cmd_area is not None
    assert (cmd_area.base, cmd_area.size) == (node_area.base, node_area.size) == (0x56000000, 32 * MiB)


def test_static_default_is_fixed_on_the_cmdline(aquila: Board) -> None:
    default = aquila.default_region
    assert default is not None
    fixed = dataclasses.replace(default, reg=(0x44000000, 32 * MiB), size=None, alloc_ranges=())
    arg = gb.cma_argument(fixed, PROFILES["linux-6.1"])
    assert arg == "cma=32M@0x44000000"
    parsed = parse_cma_cmdline(arg)
    assert parsed.base + (parsed.size or 0) == parsed.limit  # the kernel's test for "fixed"


def test_coherent_pool_only_when_not_the_default() -> None:
    assert gb.memparse_text(512 * 1024) == "512K"
    assert gb.memparse_text(3 * MiB) == "3M"
    assert gb.memparse_text(4097) == "4097"


def test_coherent_pool_appears_for_other_sizes(aquila: Board) -> None:
    board = with_profile(aquila, "linux-6.1", atomic_pool_bytes=1 * MiB)
    assert "coherent_pool=1M" in gb.kernel_cmdline(board, board.kernel.profile).text.split()
    assert "coherent_pool" not in gb.kernel_cmdline(aquila, PROFILES["linux-6.1"]).text


def test_board_bootargs_come_last(aquila: Board) -> None:
    text = gb.kernel_cmdline(_with(aquila, bootargs="quiet cma=64M"), PROFILES["linux-3.5"])
    assert text.text.endswith("quiet cma=64M")
    assert parse_cma_cmdline(text.text, with_placement=False).size == 64 * MiB  # the last one wins
    assert text.notes  # and the user is told


HOSTILE_BUT_LITERAL = [
    'init=/bin/sh -c "echo $HOME; reset"',
    "a;reset b${bootcmd} c$(x) `y` |z &w >v",
    "quiet   spaced",
]


@pytest.mark.parametrize("extra", HOSTILE_BUT_LITERAL)
def test_hostile_values_stay_one_literal_word(aquila: Board, tmp_path: Path, extra: str) -> None:
    board = _with(aquila, bootargs=extra)
    cmdline = gb.kernel_cmdline(board, PROFILES["linux-6.1"]).text
    files = gb.BootFiles(dtb="aquila.dtb")
    script = gb.boot_script(board, PROFILES["linux-6.1"], cmdline, files)
    setenv = next(line for line in script.splitlines() if line.startswith("setenv bootargs "))
    assert shlex.split(setenv) == ["setenv", "bootargs", cmdline]
    env = gb.uboot_env(board, cmdline, files)
    words = [shlex.split(line) for line in env.splitlines()]
    assert ["setenv", "bootargs", cmdline] in words
    # the boot command is one word too, with ${...} left for U-Boot to expand at run time
    boot = next(w for w in words if w[1] == "cmabootcmd")
    assert len(boot) == 3 and "${kernel_addr_r}" in boot[2]


@pytest.mark.parametrize("extra", ["it's", "back\\slash", "new\nline", "tab\there", "caf\u00e9"])
def test_values_hush_cannot_hold_are_refused(aquila: Board, extra: str) -> None:
    board = _with(aquila, bootargs=extra)
    cmdline = gb.kernel_cmdline(board, PROFILES["linux-6.1"]).text
    with pytest.raises(ConfigError) as err:
        gb.boot_script(board, PROFILES["linux-6.1"], cmdline, gb.BootFiles())
    assert "bootargs" in str(err.value) and "hint" in str(err.value)


@pytest.mark.parametrize("name", ["z;reset", "a b", "$x", ""])
def test_file_names_must_be_plain(aquila: Board, name: str) -> None:
    with pytest.raises(ConfigError):
        gb.uboot_commands(aquila, "console=x", gb.BootFiles(kernel=name))


def test_script_loads_at_board_addresses_initrd_last(aquila: Board) -> None:
    cmds = gb.uboot_commands(aquila, "console=ttySAC2,115200", gb.BootFiles(dtb="aquila.dtb"))
    assert "setenv kernel_addr_r 0x30008000" in cmds
    assert "setenv fdt_addr_r 0x32000000" in cmds
    assert "setenv ramdisk_addr_r 0x32800000" in cmds
    loads = [c for c in cmds if c.startswith("tftpboot")]
    # ${filesize} in bootz must be the initrd's: its load is the last before bootz.
    assert loads[-1] == "tftpboot ${ramdisk_addr_r} initrd.gz"
    assert cmds[-1] == "bootz ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdt_addr_r}"


def test_board_file_kernel_boots_without_fdt(aquila: Board) -> None:
    cmds = gb.uboot_commands(aquila, "x", gb.BootFiles(dtb=None, initrd=None, source="mmc 0:1"))
    assert cmds[-2:] == ["load mmc 0:1 ${kernel_addr_r} zImage", "bootz ${kernel_addr_r} -"]


def test_addresses_the_board_omits_come_from_uboot(goni: Board) -> None:
    cmds = gb.uboot_commands(goni, "x", gb.BootFiles())
    assert not any(c.startswith("setenv fdt_addr_r") for c in cmds)
    assert "tftpboot ${fdt_addr_r} board.dtb" in cmds


def test_boot_scr_is_a_uboot_script_image_of_boot_cmd(aquila: Board, tmp_path: Path) -> None:
    need("mkimage")
    dumpimage = need("dumpimage")
    cmdline = gb.kernel_cmdline(aquila, PROFILES["linux-6.1"]).text
    cmd = tmp_path / "boot.cmd"
    cmd.write_text(gb.boot_script(aquila, PROFILES["linux-6.1"], cmdline, gb.BootFiles()))
    scr = tmp_path / "boot.scr"
    gb.make_boot_scr(cmd, scr)
    blob = scr.read_bytes()
    magic, _hcrc, _time, size = struct.unpack(">IIII", blob[:16])
    assert magic == 0x27051956  # IH_MAGIC
    assert blob[28:31] == bytes([5, 2, 6])  # IH_OS_LINUX, IH_ARCH_ARM, IH_TYPE_SCRIPT
    payload = tmp_path / "payload"
    subprocess.run([dumpimage, "-T", "script", "-p", "0", "-o", str(payload), str(scr)], check=True,
                   capture_output=True, timeout=60)
    data = payload.read_bytes()
    # A script image is a multi-file image: a length table ended by 0, then the text.
    length, end = struct.unpack(">II", data[:8])
    assert (length, end) == (len(cmd.read_bytes()), 0)
    assert data[8:] == cmd.read_bytes()
    assert size == len(data)


def test_a_run_adds_the_agents_words_after_the_boards_line_and_its_own_last(aquila: Board) -> None:
    # What `generate` writes is the start of what `run` boots: one builder for both.
    board = _with(aquila, bootargs="quiet")
    generated = gb.kernel_cmdline(board, PROFILES["linux-6.1"]).text
    run = gb.kernel_cmdline(board, PROFILES["linux-6.1"], agent="run", extra="cma=32M").text
    assert generated == "console=ttySAC2,115200 quiet"
    # panic=-1 reboots (QEMU -no-reboot then exits) instead of hanging; trace_event=cma:* traces the atomic
    # pool at boot; --bootargs comes last so that early_param keeps its value. Nothing for vivid.
    assert run == "console=ttySAC2,115200 panic=-1 trace_event=cma:* cmatool.mode=run quiet cma=32M"
    assert parse_cma_cmdline(run).size == 32 * MiB
    with pytest.raises(ConfigError, match="agent mode 'interactive'"):
        gb.kernel_cmdline(board, PROFILES["linux-6.1"], agent="interactive")
