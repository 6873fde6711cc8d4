"""run_via_serial against the simulated board over a real pty, with a real TFTP server and real YMODEM.

The simulator's U-Boot fetches over TFTP with tftpy's client from our
server, or receives YMODEM; its bootz checks the zImage magic and plays back
the console of a real 6.1 kernel (tests/data/serial-replay). Its power
relay is a real command (tests/sim/power_switch.py) run by CommandPower.

Expected values come from outside the code under test: zlib.crc32 and the
sizes of the files on disk, the recording's own bytes, what the simulator
recorded receiving, the relay's state file.
"""

from __future__ import annotations

import dataclasses
import random
import re
import zlib
from pathlib import Path

import pytest

from cma_tool.board.types import Board
from cma_tool.deploy.serial_board import plan_loads, resolve_console, run_via_serial
from cma_tool.errors import ConfigError, InfraError, TargetError
from cma_tool.generate.dts import compile_dts, standalone_dts
from cma_tool.plan import make_plan
from tests.sim import RECORDED_RUN, SimBoard, write_sim_aquila, zimage

RECORDING = (RECORDED_RUN / "console.log").read_bytes()
RECORDED_LINES = RECORDING.splitlines(keepends=True)
BOOTARGS = (RECORDED_RUN / "cmdline.txt").read_text().strip()
#: The stages of a run that reaches the firmware's last line, in order.
ALL_STAGES = ["console", "power", "uboot", "loaded", "kernel", "init", "captured"]
FAST = 200_000  # bytes/s of playback for the fault tests: the pace is not what they check


def line_number(text: bytes) -> int:
    """1-based number of the first recorded line containing ``text``."""
    return next(n for n, line in enumerate(RECORDED_LINES, start=1) if text in line)


@dataclasses.dataclass
class Files:
    kernel: Path
    dtb: Path
    initrd: Path


def make_files(folder: Path, board: Board, *, kernel_size: int = 300_000, initrd_size: int = 200_000) -> Files:
    """A zImage-shaped kernel, the board's device tree compiled by the real dtc, an initrd of noise."""
    folder.mkdir(parents=True, exist_ok=True)
    kernel = folder / "zImage"
    kernel.write_bytes(zimage(kernel_size, seed=1))
    dts = folder / "board.dts"
    dts.write_text(standalone_dts(board, board.kernel.profile))
    dtb = folder / "board.dtb"
    compile_dts(dts, dtb)
    initrd = folder / "initrd.gz"
    initrd.write_bytes(random.Random(2).randbytes(initrd_size))
    return Files(kernel, dtb, initrd)


def start(tmp_path: Path, *, network: bool = True, faults: tuple[str, ...] = (), bps: int | None = None,
          **files: int) -> tuple[SimBoard, Board, Files]:
    sim = SimBoard(tmp_path / "sim", relay=True, kernel_log=RECORDED_RUN / "console.log", faults=faults,
                   playback_bps=bps)
    board = make_plan(write_sim_aquila(tmp_path, sim, network=network), allow_misfit=True).board
    return sim, board, make_files(tmp_path / "files", board, **files)


def run(sim: SimBoard, board: Board, files: Files, workdir: Path, *, timeout: float = 60.0,
        stages: list[str] | None = None) -> str:
    return run_via_serial(board, kernel=files.kernel, dtb=files.dtb, initrd=files.initrd, bootargs=BOOTARGS,
                          workdir=workdir, timeout=timeout, console_url=sim.path,
                          on_stage=(stages.append if stages is not None else lambda s: None))


def crc_of(path: Path) -> int:
    return zlib.crc32(path.read_bytes())


def test_the_bootargs_we_compose_are_the_recorded_ones() -> None:
    # The playback is only faithful to a boot with the recording's command line.
    board = make_plan(Path(__file__).parents[1] / "sim" / "sim-aquila.yaml").board
    from cma_tool.generate.bootargs import kernel_cmdline

    assert kernel_cmdline(board, board.kernel.profile, agent="run").text == BOOTARGS


def test_tftp_boot_plays_the_real_kernel_and_switches_off(tmp_path: Path) -> None:
    sim, board, files = start(tmp_path)
    with sim:
        stages: list[str] = []
        text = run(sim, board, files, tmp_path / "run", stages=stages)
        log = (tmp_path / "run" / "console.log").read_bytes()
        assert stages == ALL_STAGES
        # Every byte the board said is in console.log, and is what we were handed.
        assert text == log.decode(errors="replace").replace("\r\n", "\n")
        assert RECORDING in log  # the kernel's output untouched, end to end
        assert log.index(b"Hit any key to stop autoboot") < log.index(b"Starting kernel") < log.index(RECORDING)
        # What reached the "kernel" is what we sent, at the board file's addresses.
        (boot,) = sim.boots()
        assert boot["kernel"] == {"addr": 0x40400000, "size": files.kernel.stat().st_size,
                                  "crc32": crc_of(files.kernel)}
        assert boot["initrd"] == {"addr": 0x44000000, "size": files.initrd.stat().st_size,
                                  "crc32": crc_of(files.initrd), "agent_plan": None}  # noise: no plan in it
        assert boot["fdt"] == {"addr": 0x44C00000, "size": files.dtb.stat().st_size, "crc32": crc_of(files.dtb)}
        assert boot["bootargs"] == BOOTARGS == boot["recorded_cmdline"]
        argvs = sim.argvs("u-boot")
        assert ["setenv", "ipaddr", "127.0.0.2"] in argvs and ["setenv", "serverip", "127.0.0.1"] in argvs
        assert ["setenv", "tftpdstp", str(board.network.tftp_port)] in argvs
        assert [a for a in argvs if a[0] == "tftpboot"] == [
            ["tftpboot", "0x40400000", "zImage"], ["tftpboot", "0x44c00000", "board.dtb"],
            ["tftpboot", "0x44000000", "initrd.gz"]]
        assert [a for a in argvs if a[0] == "crc32"] == [
            ["crc32", "0x40400000", f"{files.kernel.stat().st_size:#x}"],
            ["crc32", "0x44c00000", f"{files.dtb.stat().st_size:#x}"],
            ["crc32", "0x44000000", f"{files.initrd.stat().st_size:#x}"]]
        assert ["bootz", "0x40400000", f"0x44000000:{files.initrd.stat().st_size:#x}", "0x44c00000"] in argvs
        assert sim.relay_state() == "off" and sim.power_events() == ["on", "off"]


def test_ymodem_boot_without_a_network(tmp_path: Path) -> None:
    sim, board, files = start(tmp_path, network=False, bps=FAST, kernel_size=70_000, initrd_size=40_000)
    with sim:
        text = run(sim, board, files, tmp_path / "run")
        assert "==== CMA-TOOL DONE rc=0 ====\n" in text
        headers = [e["ymodem_header"] for e in sim.received("u-boot") if "ymodem_header" in e]
        assert headers == [{"name": f.name, "size": f.stat().st_size} for f in (files.kernel, files.dtb, files.initrd)]
        assert not [a for a in sim.argvs("u-boot") if a[0] in ("tftpboot", "dhcp", "setenv") and
                    a[1:2] in (["serverip"], ["ipaddr"])]
        (boot,) = sim.boots()
        assert [boot[k]["crc32"] for k in ("kernel", "initrd", "fdt")] == [
            crc_of(files.kernel), crc_of(files.initrd), crc_of(files.dtb)]
        assert sim.relay_state() == "off" and sim.power_events() == ["on", "off"]


@pytest.mark.parametrize(
    ("fault", "error", "message", "stage"),
    [
        # A reset halfway through the kernel's boot: U-Boot signs on again.
        (f"kernel-reset-at={line_number(b'Zone ranges:') + 40}", TargetError,
         r"the board reset: U-Boot signed on again", "kernel"),
        (f"kernel-hang-at={line_number(b'Run /init') + 3}", TargetError,
         r"timed out after \d+\.\d s waiting for the agent to finish its plan", "init"),
        ("hang-after-starting-kernel", TargetError, "timed out after .* waiting for the kernel banner", "loaded"),
        ("bootloop", TargetError, "boot loop: U-Boot signed on again after 'Starting kernel", "loaded"),
        ("tftp-timeout", InfraError, "a network transfer gave up", "uboot"),
        # U-Boot's crc32 of what it stored is not the file's: nothing is booted.
        ("bitflip", InfraError, r"the kernel \(zImage\) at 0x40400000 is corrupt after TFTP: U-Boot's crc32 is "
         r"[0-9a-f]{8}, the file's [0-9a-f]{8}", "uboot"),
    ],
)
def test_faults_are_classified_name_the_log_and_leave_the_board_off(
    tmp_path: Path, fault: str, error: type[Exception], message: str, stage: str
) -> None:
    sim, board, files = start(tmp_path, faults=(fault,), bps=FAST)
    with sim:
        stages: list[str] = []
        with pytest.raises(error, match=message) as caught:
            run(sim, board, files, tmp_path / "run", timeout=8, stages=stages)
        assert stages[-1] == stage  # how far it got
        assert str(tmp_path / "run" / "console.log") in str(caught.value)
        assert sim.relay_state() == "off" and sim.power_events()[-1] == "off"


def test_a_reset_shows_in_the_log_after_the_recorded_lines_it_interrupted(tmp_path: Path) -> None:
    cut = line_number(b"Zone ranges:") + 40
    sim, board, files = start(tmp_path, faults=(f"kernel-reset-at={cut}",), bps=FAST)
    with sim, pytest.raises(TargetError):
        run(sim, board, files, tmp_path / "run", timeout=8)
    log = (tmp_path / "run" / "console.log").read_bytes()
    played = b"".join(RECORDED_LINES[:cut])
    assert played in log and b"".join(RECORDED_LINES[: cut + 1]) not in log
    assert re.search(rb"U-Boot 2023\.01", log[log.index(played) + len(played):])


def test_load_addresses_that_do_not_fit_are_refused_before_power_on(tmp_path: Path) -> None:
    sim, board, files = start(tmp_path)
    inside_pool = dataclasses.replace(board, boot=dataclasses.replace(board.boot, fdt_addr=0x43800000))
    with sim:
        with pytest.raises(ConfigError, match=r"(?s)device tree .* overlaps reserved-memory region mfc_left"):
            run(sim, inside_pool, files, tmp_path / "run")
        assert sim.power_events() == [] and not (tmp_path / "run" / "console.log").exists()


def test_files_tftp_cannot_tell_apart_are_refused_before_power_on(tmp_path: Path) -> None:
    sim, board, files = start(tmp_path)
    (tmp_path / "other").mkdir()
    same_name = tmp_path / "other" / files.kernel.name
    same_name.write_bytes(files.initrd.read_bytes())
    with sim:
        with pytest.raises(ConfigError, match="both called 'zImage'"):
            run_via_serial(board, kernel=files.kernel, dtb=files.dtb, initrd=same_name, bootargs=BOOTARGS,
                           workdir=tmp_path / "run", timeout=10, console_url=sim.path)
        assert sim.power_events() == []


def test_a_serial_transfer_that_cannot_finish_in_time_is_refused_up_front(tmp_path: Path) -> None:
    board = make_plan(Path(__file__).parents[1] / "sim" / "sim-aquila.yaml").board
    no_network = dataclasses.replace(board, network=dataclasses.replace(board.network, server_ip=None))
    files = make_files(tmp_path, board, kernel_size=5_400_000, initrd_size=2_000_000)
    # 7.4 MB in 1 KiB blocks of 1029 bytes on the wire, 10 bits a byte at 115200 baud: about 660 s.
    blocks = -(-5_400_000 // 1024) + -(-2_000_000 // 1024) + 1
    assert blocks * 1029 * 10 / 115200 > 600
    with pytest.raises(ConfigError, match=r"takes at least 6\d\d s, more than the 120 s"):
        run_via_serial(no_network, kernel=files.kernel, dtb=files.dtb, initrd=files.initrd, bootargs=BOOTARGS,
                       workdir=tmp_path / "run", timeout=120, console_url=str(tmp_path / "no-such-tty"))
    assert not (tmp_path / "run").exists()  # nothing was opened or switched


def test_plan_loads_names_every_problem(tmp_path: Path) -> None:
    board = make_plan(Path(__file__).parents[1] / "sim" / "sim-aquila.yaml").board
    files = make_files(tmp_path, board, kernel_size=0x200000)
    # The kernel runs into the initrd; the initrd runs past bank 0 (ends 0x50000000).
    bad = dataclasses.replace(board, boot=dataclasses.replace(board.boot, kernel_addr=0x43F00000,
                                                              initrd_addr=0x4FFF0000))
    with pytest.raises(ConfigError) as caught:
        plan_loads(bad, kernel=files.kernel, dtb=files.dtb, initrd=files.initrd)
    text = str(caught.value)
    assert "the initrd (initrd.gz" in text and "is not inside one memory bank" in text
    assert "sim-aquila.yaml:" in text  # where to fix it
    no_addr = dataclasses.replace(board, boot=dataclasses.replace(board.boot, fdt_addr=None))
    with pytest.raises(ConfigError, match="the boot section has no fdt-addr"):
        plan_loads(no_addr, kernel=files.kernel, dtb=files.dtb, initrd=files.initrd)


def test_the_console_comes_from_the_url_then_the_port_then_udev() -> None:
    board = make_plan(Path(__file__).parents[1] / "sim" / "sim-aquila.yaml").board
    with_port = dataclasses.replace(board, console=dataclasses.replace(board.console, port="/dev/ttyUSB3"))
    assert resolve_console(with_port, "socket://127.0.0.1:5000") == "socket://127.0.0.1:5000"
    assert resolve_console(with_port) == "/dev/ttyUSB3"
    with pytest.raises(ConfigError, match=r"sim-aquila\.yaml:\d+: board 'sim-aquila' does not say how to reach"):
        resolve_console(board)
    nowhere = dataclasses.replace(board, console=dataclasses.replace(
        board.console, udev_match=(("ID_SERIAL_SHORT", "no-such-adapter-4711"),)))
    with pytest.raises(ConfigError, match="no serial device matches udev rule"):
        resolve_console(nowhere, wait=0.2)


def test_the_simulators_tftpboot_is_a_real_tftp_client(tmp_path: Path) -> None:
    from cma_tool.deploy.tftp import serve_tftp
    from cma_tool.deploy.uboot import UBoot
    from tests.sim import powered_board

    served = tmp_path / "served"
    served.mkdir()
    data = zimage(50_000, seed=9)
    (served / "zImage").write_bytes(data)
    with powered_board(tmp_path / "sim", timeout=5) as (_, console), serve_tftp(served, port=0) as tftp:
        uboot = UBoot(console, default_timeout=5)
        uboot.attach(timeout=10)
        with pytest.raises(InfraError, match=r"(?s)\*\*\* ERROR: `ipaddr' not set"):
            uboot.tftpboot(0x40400000, "zImage")
        uboot.setenv("ipaddr", "127.0.0.2")
        uboot.setenv("serverip", "127.0.0.1")
        uboot.setenv("tftpdstp", str(tftp.port))
        assert uboot.tftpboot(0x40400000, "zImage") == len(data)
        assert uboot.crc32(0x40400000, len(data)) == zlib.crc32(data)
        with pytest.raises(InfraError, match="TFTP error: 'File not found'"):
            uboot.tftpboot(0x40400000, "missing")
    # The server saw both requests, from the simulator's own socket.
    assert [(r.name, r.served is not None) for r in tftp.requests] == [("zImage", True), ("missing", False)]
