"""The U-Boot driver against real U-Boot (Debian's u-boot-qemu) on the emulated board.

Each emulated test starts QEMU with U-Boot as its firmware (prompt in ~0.4 s).
Expected values come from outside the code under test: zlib.crc32 of the
bytes sent, U-Boot's documented defaults for qemu_arm, the zImage header as
the kernel's decompressor reads it, libfdt's view of the DTB written.
"""

from __future__ import annotations

import random
import re
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from cma_tool.deploy.console import Console
from cma_tool.deploy.emulated_uboot import (
    UBOOT_LINE_LIMIT,
    UBootBoard,
    plain_zimage,
    prepare_uboot_files,
)
from cma_tool.deploy.image import TargetImage, default_cache_dir, ensure_image
from cma_tool.deploy.qemu import EMULATED_AQUILA_BANKS, BootFiles, MemoryBank, prepare_boot
from cma_tool.deploy.uboot import UBoot
from cma_tool.errors import ConfigError, InfraError, TargetError


@contextmanager
def uboot_console(board: UBootBoard, log_dir: Path, *, name: str = "console") -> Iterator[Console]:
    """Our console engine on the board's serial socket; once QEMU has gone its port never comes back."""
    with Console(board.serial_url, log_dir, name=name, default_timeout=30.0, reconnect_timeout=2.0) as c:
        yield c


LOAD_ADDR = 0x41000000  # in RAM, clear of U-Boot (relocated near the top) and its stack
MiB = 1 << 20


@pytest.fixture(scope="module")
def image() -> TargetImage:
    return ensure_image(default_cache_dir())


@dataclass
class Session:
    board: UBootBoard
    console: Console
    uboot: UBoot
    tftp: Path

    def log(self) -> bytes:
        return self.console.log_path.read_bytes()


@contextmanager
def start(tmp_path: Path, *, reboot: bool = False) -> Iterator[Session]:
    tftp = tmp_path / "tftp"
    tftp.mkdir(exist_ok=True)
    with UBootBoard(tmp_path, tftp_dir=tftp, reboot=reboot) as board, uboot_console(board, tmp_path) as console:
        uboot = UBoot(console, max_line=UBOOT_LINE_LIMIT, default_timeout=20)
        uboot.attach(timeout=20)
        yield Session(board, console, uboot, tftp)


@pytest.fixture
def session(tmp_path: Path) -> Iterator[Session]:
    with start(tmp_path) as s:
        yield s


# ---- real U-Boot --------------------------------------------------------------------


@pytest.mark.emulated
def test_attach_stops_autoboot_and_printenv_reads_the_defaults(session: Session) -> None:
    env = session.uboot.printenv()
    # u-boot-qemu's qemu_arm defaults (include/configs/qemu-arm.h): kernel 4 MiB, ramdisk 64 MiB into RAM.
    assert env["kernel_addr_r"] == "0x40400000"
    assert env["ramdisk_addr_r"] == "0x44000000"
    assert "fdt_addr_r" not in env  # the reason our bootz names every address itself
    assert env["bootcmd"] == "run distro_bootcmd"
    log = session.log()
    assert b"Hit any key to stop autoboot" in log
    # Had autoboot run, distro_bootcmd would have tried the network (there is a NIC): it did not.
    assert b"BOOTP broadcast" not in log


@pytest.mark.emulated
def test_loady_one_mib_arrives_intact(session: Session) -> None:
    data = random.Random(1).randbytes(MiB + 333)  # not a whole number of blocks
    got = session.uboot.loady(LOAD_ADDR, data, filename="blob.bin")
    assert got == len(data)  # YMODEM's header carries the size: no padding counted
    assert session.uboot.crc32(LOAD_ADDR, len(data)) == zlib.crc32(data)
    assert session.uboot.getenv("filesize") == f"{len(data):x}"


@pytest.mark.emulated
def test_loadx_one_mib_arrives_intact(session: Session) -> None:
    data = random.Random(2).randbytes(MiB + 300)
    assert data[-1] != 0x1A
    got = session.uboot.loadx(LOAD_ADDR, data)
    # XMODEM has no size: the last 1 KiB block is padded with ^Z (0x1a), and U-Boot's
    # xyzModem strips a run of trailing ^Z that is at least three long, so exactly the data counts.
    assert got == len(data)
    assert session.uboot.crc32(LOAD_ADDR, len(data)) == zlib.crc32(data)


@pytest.mark.emulated
def test_crc32_arrow_is_not_taken_for_the_prompt(session: Session) -> None:
    uboot = session.uboot
    uboot.run_check(f"mw.b {LOAD_ADDR:#x} 0xa5 0x10000")
    assert uboot.crc32(LOAD_ADDR, 0x10000) == zlib.crc32(b"\xa5" * 0x10000)
    lines = [line for line in session.log().splitlines() if b"crc32 for" in line and b"==>" in line]
    assert lines, "U-Boot printed no crc32 result line"
    # The line holds "=> " (a naive prompt match would stop there) but not at its start.
    assert all(b"=> " in line for line in lines)
    assert not any(uboot.prompt_re.search(line) for line in lines)
    assert uboot.run("echo after") == ("after", 0)  # input and output still line up


@pytest.mark.emulated
def test_hostile_bootargs_stay_literal_or_are_refused(session: Session) -> None:
    uboot = session.uboot
    hostile = "console=ttyAMA0 a;echo PWNED; $(reset) ${kernel_addr_r} `version` # x=\"y\" &&"
    uboot.setenv("bootargs", hostile)
    assert uboot.getenv("bootargs") == hostile
    # Nothing inside ran: no PWNED line of its own, no version banner, no reset.
    log = session.log()
    assert not re.search(rb"(?m)^PWNED\r?$", log)
    assert b"U-Boot 2023" not in log.split(b"Hit any key")[-1]
    for bad in ("it's", "back\\slash", "new\nline"):
        sent_before = session.console.timing_path.read_text()
        with pytest.raises(ConfigError, match="cannot be typed into U-Boot"):
            uboot.setenv("bootargs", bad)
        assert session.console.timing_path.read_text() == sent_before  # refused before typing
    assert uboot.getenv("bootargs") == hostile


@pytest.mark.emulated
def test_corrupt_zimage_is_a_classified_error_with_the_bytes_in_the_log(session: Session, image: TargetImage) -> None:
    kernel = bytearray(image.kernel.read_bytes())
    kernel[0x24:0x28] = b"\0\0\0\0"  # the zImage magic
    (session.tftp / "zImage").write_bytes(kernel)
    uboot = session.uboot
    uboot.setenv("autoload", "no")
    uboot.run_check("dhcp")
    uboot.setenv("serverip", "10.0.2.2")
    assert uboot.tftpboot(0x40400000, "zImage") == len(kernel)
    with pytest.raises(InfraError) as caught:
        uboot.boot("bootz 0x40400000 - ${fdt_addr}", timeout=20)
    message = str(caught.value)
    # U-Boot 2023.01 (arch/arm/lib/zimage.c) says "zimage: Bad magic!"; older ones
    # said "Bad Linux ARM zImage magic!". Either is the bad-image-magic pattern, raised
    # as soon as it shows, not the boot's deadline.
    assert "bad-image-magic" in message and "timed out" not in message
    assert "zimage: Bad magic!" in message
    assert b"zimage: Bad magic!" in session.log()


@pytest.mark.emulated
def test_reset_where_the_kernel_should_start_is_a_boot_loop(tmp_path: Path) -> None:
    with start(tmp_path, reboot=True) as s:
        with pytest.raises(TargetError, match="boot loop: U-Boot signed on again"):
            s.uboot.boot("reset", timeout=20)
        assert s.log().count(b"U-Boot 2023.01") == 2


# ---- what U-Boot is given (no QEMU boot) -------------------------------------------


@pytest.mark.emulated  # needs the firmware cache's kernel
def test_plain_zimage_is_the_kernel_without_the_appended_dtb(image: TargetImage) -> None:
    kernel = image.kernel.read_bytes()
    _magic, start_, end = struct.unpack_from("<III", kernel, 0x24)
    assert end - start_ == len(kernel)  # Debian's vmlinuz is a bare zImage
    assert plain_zimage(kernel + b"\xd0\x0d\xfe\xed" + bytes(200)) == kernel


def test_what_is_not_a_zimage_is_refused() -> None:
    with pytest.raises(InfraError, match="not an ARM zImage"):
        plain_zimage(bytes(4096))
    with pytest.raises(InfraError, match="too short"):
        plain_zimage(b"abc")
    header = bytearray(0x30)
    header[0x24:0x30] = struct.pack("<III", 0x016F2818, 0, 0x10000)  # claims 64 KiB
    with pytest.raises(InfraError, match="size of 65536 bytes; the file has 48"):
        plain_zimage(bytes(header))


@pytest.mark.emulated  # needs the firmware cache's kernel and initrd
def test_uboot_dtb_carries_both_banks_in_chosen(tmp_path: Path, image: TargetImage) -> None:
    import libfdt

    boot = prepare_boot(image, tmp_path, rng_seed=bytes(32), bootargs="console=ttyAMA0 panic=-1 cmatool.mode=run")
    layout = prepare_uboot_files(boot, tmp_path, banks=EMULATED_AQUILA_BANKS)
    fdt = libfdt.Fdt(layout.dtb.path.read_bytes())
    chosen = fdt.path_offset("/chosen")
    words = struct.unpack(">8I", bytes(fdt.getprop(chosen, "linux,usable-memory-range")))
    # #address-cells = #size-cells = 2 on virt: (base, size) pairs of two cells each.
    assert words == (0, 0x40000000, 0, 80 * MiB, 0, 0x50000000, 0, 384 * MiB)
    assert fdt.getprop(chosen, "linux,initrd-start", quiet=[libfdt.NOTFOUND]) == -libfdt.NOTFOUND
    assert layout.kernel.path.read_bytes() == image.kernel.read_bytes()
    assert layout.initrd.addr == boot.initrd_addr  # the direct boot's initrd address
    # The DTB sits above the initrd, in bank 0.
    assert boot.initrd_addr + boot.initrd.stat().st_size <= layout.dtb.addr < EMULATED_AQUILA_BANKS[0].end


def test_more_banks_than_the_kernel_reads_are_refused(tmp_path: Path) -> None:
    # Refused before any file is read: the paths need not exist.
    boot = BootFiles(tmp_path / "zImage-dtb", tmp_path / "initrd.gz", 0x44000000, tmp_path / "board.dtb",
                     tmp_path / "board.dts", "")
    banks = [MemoryBank(0x40000000, 80 * MiB), MemoryBank(0x50000000, 128 * MiB), MemoryBank(0x60000000, 64 * MiB)]
    with pytest.raises(ConfigError, match="at most 2"):
        prepare_uboot_files(boot, tmp_path, banks=banks)


@pytest.mark.emulated
def test_missing_tftp_file_is_an_infra_error(session: Session) -> None:
    uboot = session.uboot
    uboot.setenv("autoload", "no")
    uboot.run_check("dhcp")
    uboot.setenv("serverip", "10.0.2.2")
    with pytest.raises(InfraError, match="tftpboot 0x40400000 'no-such-file'"):
        uboot.tftpboot(0x40400000, "no-such-file", timeout=20)
    assert uboot.run("echo still here") == ("still here", 0)


@pytest.mark.emulated
def test_qemu_that_cannot_start_is_an_infra_error(tmp_path: Path) -> None:
    # QEMU accepts the console connection (wait=on) before it builds the devices, then exits.
    with UBootBoard(tmp_path, extra_args=["-device", "no-such-device"]) as board, uboot_console(board, tmp_path) as c:
        with pytest.raises(InfraError, match="was lost"):
            UBoot(c).attach(timeout=10)
        assert board.process.wait(5) != 0
    assert "no-such-device" in (tmp_path / "qemu.stderr").read_text()


def test_missing_uboot_is_an_infra_error_naming_the_package(tmp_path: Path) -> None:
    with pytest.raises(InfraError) as caught, UBootBoard(tmp_path, bios=tmp_path / "nope.bin"):
        pass
    assert caught.value.hint == "apt-get install u-boot-qemu"
