"""The U-Boot driver against the simulated board over a real pty.

Expected values come from outside the code under test: zlib.crc32 of the
bytes sent, the file sizes on disk, what the simulator recorded receiving.
"""

from __future__ import annotations

import random
import re
import zlib
from pathlib import Path

import pytest

from cma_tool.deploy.console import Console
from cma_tool.deploy.uboot import UBoot
from cma_tool.errors import ConfigError, InfraError, TargetError
from tests.sim import FAKE_ZIMAGE, SimBoard, powered_board

KERNEL_ADDR = 0x40400000
LOAD_ADDR = 0x41000000


@pytest.fixture
def tftp_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "tftp"
    folder.mkdir()
    (folder / "zImage").write_bytes(FAKE_ZIMAGE)
    (folder / "board.dtb").write_bytes(random.Random(7).randbytes(5000))
    return folder


def attached(console: Console, **options: object) -> UBoot:
    uboot = UBoot(console, default_timeout=5, **options)  # type: ignore[arg-type]
    uboot.attach(timeout=10)
    return uboot


@pytest.mark.parametrize(
    ("flavour", "prompt"), [("2023", "=> "), ("2011", "Aquila # "), ("2011", "SMDKV210 # ")]
)
def test_attach_stops_autoboot_then_commands_return_output_and_status(
    tmp_path: Path, flavour: str, prompt: str
) -> None:
    with powered_board(tmp_path, flavour=flavour, prompt=prompt) as (sim, console):
        uboot = attached(console, prompt=prompt)
        assert uboot.run("echo one  two") == ("one two", 0)
        assert uboot.run("false") == ("", 1)
        assert uboot.run("nosuchcommand") == ("Unknown command 'nosuchcommand' - try 'help'", 1)
        # Autoboot was stopped: bootcmd never ran, only what we typed did.
        assert all("echo" in e["line"] for e in sim.received("u-boot") if "line" in e)


def test_reattach_to_an_already_interrupted_uboot(tmp_path: Path) -> None:
    with SimBoard(tmp_path) as sim:
        with Console(sim.path, tmp_path / "first") as first:
            sim.power_on()
            attached(first)
        # A later run finds U-Boot idle at its prompt, with nothing printing.
        with Console(sim.path, tmp_path / "second") as second:
            uboot = UBoot(second, silence=0.3, default_timeout=5)
            uboot.attach(timeout=5)
            assert uboot.run("echo again") == ("again", 0)
            assert b"<INTERRUPT>" in second.log_path.read_bytes()


def test_a_silent_line_is_the_labs_fault_a_wrong_prompt_the_boards(tmp_path: Path) -> None:
    with SimBoard(tmp_path) as sim, Console(sim.path, tmp_path) as console:
        with pytest.raises(InfraError, match="nothing at all came"):
            UBoot(console, silence=0.2).attach(timeout=0.6)  # never powered on
        sim.power_on()
        with pytest.raises(TargetError, match="no U-Boot prompt 'U-Boot> '"):
            UBoot(console, prompt="U-Boot> ", silence=0.3).attach(timeout=1.2)


def test_the_crc32_arrow_is_never_taken_for_the_prompt(tmp_path: Path, tftp_dir: Path) -> None:
    with powered_board(tmp_path, tftp_dir=tftp_dir) as (_, console):
        uboot = attached(console)
        assert uboot.tftpboot(KERNEL_ADDR, "zImage") == len(FAKE_ZIMAGE)
        console.sendline(f"crc32 {KERNEL_ADDR:#x} 0x100")
        m = console.expect(uboot.prompt_re)
        assert "==> " in m.before  # the prompt that matched came after the arrow
        assert uboot.crc32(KERNEL_ADDR, len(FAKE_ZIMAGE)) == zlib.crc32(FAKE_ZIMAGE)


@pytest.mark.parametrize("flavour", ["2023", "2011"])
def test_tftpboot_and_crc32(tmp_path: Path, tftp_dir: Path, flavour: str) -> None:
    dtb = (tftp_dir / "board.dtb").read_bytes()
    with powered_board(tmp_path, tftp_dir=tftp_dir, flavour=flavour) as (_, console):
        uboot = attached(console, prompt="=> " if flavour == "2023" else "Aquila # ")
        assert uboot.tftpboot(0x48000000, "board.dtb") == len(dtb)
        assert uboot.getenv("filesize") == f"{len(dtb):x}"
        assert uboot.crc32(0x48000000, len(dtb)) == zlib.crc32(dtb)


@pytest.mark.parametrize(
    ("faults", "filename", "error", "message"),
    [
        ([], "missing", InfraError, "File not found"),
        (["tftp-timeout"], "zImage", InfraError, "tftp-retry"),
        (["reserved=0x40000000:0x1000000"], "zImage", TargetError, "(?s)tftp-reserved.*reserved-memory"),
    ],
)
def test_tftp_failures_are_classified(
    tmp_path: Path, tftp_dir: Path, faults: list[str], filename: str, error: type[Exception], message: str
) -> None:
    with powered_board(tmp_path, tftp_dir=tftp_dir, faults=faults) as (_, console):
        uboot = attached(console)
        with pytest.raises(error, match=message):
            uboot.tftpboot(KERNEL_ADDR, filename)
        assert b"TFTP from server" in console.log_path.read_bytes()


HOSTILE = [
    "a;b",
    "$(reboot)",
    "`reboot`",
    '"double" quoted',
    "x && reset",
    "${bootcmd}",
    "semi; reset; echo",
    "two  spaces",
    "console=ttySAC2,115200 cma=64M@0x60000000 mem=256M@0x40000000 mem=256M@0x60000000",
]


def test_hostile_values_reach_the_environment_literally(tmp_path: Path) -> None:
    with powered_board(tmp_path) as (sim, console):
        uboot = attached(console)
        for value in HOSTILE:
            uboot.setenv("bootargs", value)
            assert uboot.getenv("bootargs") == value
        setenvs = [argv for argv in sim.argvs("u-boot") if argv[0] == "setenv"]
        assert setenvs == [["setenv", "bootargs", value] for value in HOSTILE]
        ran = {argv[0] for argv in sim.argvs("u-boot")}
        assert ran == {"echo", "setenv", "printenv"}  # no reset, reboot, run...


@pytest.mark.parametrize("value", ["it's", "back\\slash", "new\nline", "tab\there", "caf\u00e9", "cr\rhere"])
def test_values_hush_cannot_take_are_refused_before_anything_is_typed(tmp_path: Path, value: str) -> None:
    with powered_board(tmp_path) as (sim, console):
        uboot = attached(console)
        typed_before = sim.received("u-boot")
        with pytest.raises(ConfigError, match="cannot be typed into U-Boot"):
            uboot.setenv("bootargs", value)
        with pytest.raises(ConfigError):
            uboot.tftpboot(KERNEL_ADDR, value)
        with pytest.raises(ConfigError, match="not a usable U-Boot environment variable"):
            uboot.setenv("boot args", "x")
        assert uboot.run("echo still-in-step") == ("still-in-step", 0)
        lines = [e["line"] for e in sim.received("u-boot")[len(typed_before) :] if "line" in e]
        assert len(lines) == 1 and "still-in-step" in lines[0]  # nothing else reached the board


def test_a_line_longer_than_the_boards_buffer_is_refused(tmp_path: Path) -> None:
    with powered_board(tmp_path) as (sim, console):
        uboot = attached(console, max_line=256)
        with pytest.raises(ConfigError, match="exceeds the board's limit"):
            uboot.setenv("bootargs", "x" * 220)
        assert not [e for e in sim.received("u-boot") if "x" * 220 in e.get("line", "")]


def test_paced_typing_survives_a_board_that_drops_what_overflows_its_fifo(tmp_path: Path) -> None:
    value = "console=ttySAC2,115200 " + "cma=64M@0x60000000 " * 6
    with powered_board(tmp_path, faults=["slow-echo=0.001"]) as (sim, console):
        uboot = attached(console)
        uboot.setenv("bootargs", value)
        assert uboot.getenv("bootargs") == value
        # The same board loses characters when a line is sent in one go:
        # this is what the pacing protects against.
        unpaced = f"echo '{value}'"
        console.send(unpaced)
        console.expect(re.escape(unpaced[:16]))
        console.drain(quiet=0.3)
        console.sendline()  # the first newline may have been lost too
        console.expect(uboot.prompt_re)
        lines = [e["line"] for e in sim.received("u-boot") if "line" in e]
        assert lines[-1] != unpaced and len(lines[-1]) < len(unpaced)


@pytest.mark.parametrize(
    ("method", "faults"),
    [("loady", []), ("loady", ["ymodem-c-after-header"]), ("loadx", [])],
    ids=["ymodem-uboot-receiver", "ymodem-lrzsz-style-receiver", "xmodem1k"],
)
def test_serial_transfers_land_intact(tmp_path: Path, method: str, faults: list[str]) -> None:
    data = random.Random(3).randbytes(300 * 1024 + 100)  # a partial last block
    with powered_board(tmp_path, faults=faults) as (sim, console):
        uboot = attached(console)
        count = uboot.loady(LOAD_ADDR, data, filename="zImage") if method == "loady" else uboot.loadx(LOAD_ADDR, data)
        assert count == len(data)
        assert uboot.getenv("filesize") == f"{len(data):x}"
        assert uboot.crc32(LOAD_ADDR, len(data)) == zlib.crc32(data)
        assert uboot.run("echo after") == ("after", 0)
        if method == "loady":
            headers = [e["ymodem_header"] for e in sim.received("u-boot") if "ymodem_header" in e]
            assert headers == [{"name": "zImage", "size": len(data)}]


@pytest.mark.parametrize("method", ["loady", "loadx"])
def test_a_reset_during_a_serial_transfer_is_the_boards_fault(tmp_path: Path, method: str) -> None:
    data = random.Random(5).randbytes(100 * 1024)
    with powered_board(tmp_path, faults=["reset-during-transfer"]) as (_, console):
        uboot = attached(console)
        with pytest.raises(TargetError, match="uboot-signon"):
            uboot.loady(LOAD_ADDR, data) if method == "loady" else uboot.loadx(LOAD_ADDR, data)


def test_a_uboot_without_hush_is_reported_not_misread(tmp_path: Path) -> None:
    with powered_board(tmp_path, faults=["simple-parser"]) as (_, console):
        uboot = attached(console)
        with pytest.raises(TargetError, match="CONFIG_HUSH_PARSER"):
            uboot.run("echo x")


def test_a_reset_in_the_middle_of_a_command_is_the_boards_fault(tmp_path: Path, tftp_dir: Path) -> None:
    with powered_board(tmp_path, tftp_dir=tftp_dir, faults=["reset-on=tftpboot"]) as (_, console):
        uboot = attached(console)
        with pytest.raises(TargetError, match="uboot-signon") as err:
            uboot.tftpboot(KERNEL_ADDR, "zImage")
        assert "tftpboot: working" in str(err.value)
        log = console.log_path.read_bytes()
        assert log.index(b"tftpboot: working") < log.rindex(b"U-Boot 2023.01")


def test_a_board_that_stops_answering_times_out_naming_what_was_awaited(tmp_path: Path) -> None:
    with powered_board(tmp_path, faults=["hang-on=crc32"]) as (_, console):
        uboot = attached(console)
        uboot.default_timeout = 1
        with pytest.raises(TargetError, match=r"timed out after 1\.0 s waiting for the end of 'crc32") as err:
            uboot.crc32(LOAD_ADDR, 16)
        assert str(console.log_path) in str(err.value)


def test_boot_reaches_the_kernel_with_our_bootargs(tmp_path: Path, tftp_dir: Path) -> None:
    bootargs = "console=ttyAMA0 cma=64M@0x60000000-0x70000000 mem=256M@0x40000000 mem=256M@0x60000000"
    with powered_board(tmp_path, tftp_dir=tftp_dir) as (_, console):
        uboot = attached(console)
        uboot.tftpboot(KERNEL_ADDR, "zImage")
        uboot.setenv("bootargs", bootargs)
        uboot.boot(f"bootz {KERNEL_ADDR:#x} - 0x48000000")
        m = console.expect(rb"Kernel command line: ([^\r\n]*)\r\n")
        assert m.groups == (bootargs,)


@pytest.mark.parametrize(
    ("faults", "error", "message", "in_log"),
    [
        (["bootloop"], TargetError, "boot loop: U-Boot signed on again after 'Starting", rb"kernel \.\.\.\s+U-Boot 20"),
        (["hang-after-starting-kernel"], TargetError, "the kernel banner", rb"Starting kernel \.\.\.\s+$"),
        (["ramdisk-corrupt"], InfraError, "ramdisk-corrupt", rb"Ramdisk image is corrupt or invalid"),
        (["panic-at-boot"], TargetError, "kernel-panic", rb"Kernel panic - not syncing: VFS"),
    ],
)
def test_boot_failures_are_detected_and_classified(
    tmp_path: Path, tftp_dir: Path, faults: list[str], error: type[Exception], message: str, in_log: bytes
) -> None:
    with powered_board(tmp_path, tftp_dir=tftp_dir, faults=faults) as (_, console):
        uboot = attached(console)
        uboot.tftpboot(KERNEL_ADDR, "zImage")
        with pytest.raises(error, match=message):
            uboot.boot(f"bootz {KERNEL_ADDR:#x}", timeout=1.5)
            # A panic comes after the banner: the next wait sees it.
            console.expect("Please press Enter", timeout=1.5)
        assert re.search(in_log, console.log_path.read_bytes())


def test_a_kernel_that_is_not_a_kernel(tmp_path: Path) -> None:
    with powered_board(tmp_path) as (_, console), pytest.raises(InfraError, match="bad-image-magic"):
        attached(console).boot(f"bootz {KERNEL_ADDR:#x}")


def test_line_noise_and_byte_by_byte_output(tmp_path: Path, tftp_dir: Path) -> None:
    with powered_board(tmp_path, tftp_dir=tftp_dir, faults=["garbage", "bytewise"]) as (_, console):
        uboot = attached(console)
        env = uboot.printenv()
        assert env["kernel_addr_r"] == "0x40400000" and env["fdt_high"] == "0xffffffff"
        assert uboot.run("echo one; false") == ("one", 1)
        assert uboot.tftpboot(KERNEL_ADDR, "zImage") == len(FAKE_ZIMAGE)
        log = console.log_path.read_bytes()
        assert any(b >= 0x80 for b in log[: log.index(b"U-Boot 2023")])  # the noise is on record
