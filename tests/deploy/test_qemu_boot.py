"""The emulated board: board DTB building, layout checks, and real boots in QEMU.

Tests marked ``emulated`` boot QEMU (TCG, ~6 s each); the others only run
dtc and QEMU's ``dumpdtb``. Expected values are worked out from the kernel's
rules (top-down placement, 8 MiB CMA unit, 256-page alignment of >= 1 MiB
buffers), never taken from an earlier run.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from cma_tool.deploy.image import TargetImage, default_cache_dir, ensure_image
from cma_tool.deploy.qemu import (
    DEFAULT_INITRD_ADDR,
    EMULATED_AQUILA_BANKS,
    EmulatedBoard,
    MemoryBank,
    build_board_dtb,
    dump_virt_dtb,
    prepare_boot,
    static_reserved_regions,
)
from cma_tool.errors import ConfigError, InfraError
from tests.deploy.plain_boot import open_console, parse_sections, read_console_until, read_until, run_to_poweroff

MiB = 1 << 20
PAGE = 4096
SEED = bytes(range(32))


@pytest.fixture(scope="module")
def image() -> TargetImage:
    return ensure_image(default_cache_dir())


def dts_of(dtb: Path) -> str:
    return subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", str(dtb)], capture_output=True, text=True, check=True).stdout


# ---- the board DTB (dtc + QEMU's dumpdtb, no boot) ---------------------------------


def test_board_dtb_has_our_banks_reserved_memory_and_chosen(tmp_path: Path) -> None:
    virt = dump_virt_dtb(tmp_path / "virt.dtb")
    pool = """
	reserved-memory {
		#address-cells = <2>; #size-cells = <2>; ranges;
		pool@52000000 { compatible = "shared-dma-pool"; reusable; reg = <0x0 0x52000000 0x0 0x800000>; };
	};
"""
    dtb = build_board_dtb(
        virt,
        tmp_path / "board.dtb",
        banks=EMULATED_AQUILA_BANKS,
        reserved_memory_dts=pool,
        bootargs='console=ttyAMA0 x="q"',
        initrd=(0x44000000, 0x44100000),
        rng_seed=SEED,
    )
    text = dts_of(dtb)
    memory = re.findall(r"memory@[0-9a-f]+ \{[^}]*\}", text)
    assert len(memory) == 1  # QEMU's own one-bank node is gone
    assert "reg = <0x00 0x40000000 0x00 0x5000000 0x00 0x50000000 0x00 0x18000000>" in memory[0]
    assert 'bootargs = "console=ttyAMA0 x=\\"q\\""' in text
    assert "linux,initrd-start = <0x00 0x44000000>" in text
    assert "linux,initrd-end = <0x00 0x44100000>" in text
    assert static_reserved_regions(dtb) == [("pool@52000000", 0x52000000, 0x800000)]
    assert "pl011@9000000" in text  # the rest of virt's tree is kept


def test_bad_reserved_memory_text_is_a_config_error_naming_the_source(tmp_path: Path) -> None:
    virt = dump_virt_dtb(tmp_path / "virt.dtb")
    with pytest.raises(ConfigError) as err:
        build_board_dtb(
            virt, tmp_path / "board.dtb", banks=EMULATED_AQUILA_BANKS, reserved_memory_dts="reserved-memory { oops", bootargs=""
        )
    assert str(tmp_path / "board.dts") in str(err.value)


def test_static_pool_over_the_initrd_is_refused(tmp_path: Path) -> None:
    virt = dump_virt_dtb(tmp_path / "virt.dtb")
    pool = """reserved-memory { #address-cells = <2>; #size-cells = <2>; ranges;
		p@43800000 { compatible = "shared-dma-pool"; reusable; reg = <0x0 0x43800000 0x0 0x1000000>; }; };"""
    with pytest.raises(ConfigError, match="p@43800000 .* overlaps the initrd"):
        build_board_dtb(
            virt,
            tmp_path / "board.dtb",
            banks=EMULATED_AQUILA_BANKS,
            reserved_memory_dts=pool,
            bootargs="",
            initrd=(0x44000000, 0x44200000),
        )


def test_static_pool_over_the_kernel_is_refused(image: TargetImage, tmp_path: Path) -> None:
    pool = """reserved-memory { #address-cells = <2>; #size-cells = <2>; ranges;
		low@41000000 { compatible = "shared-dma-pool"; reusable; reg = <0x0 0x41000000 0x0 0x800000>; }; };"""
    with pytest.raises(ConfigError, match="low@41000000 at 0x41000000 is inside the first 32 MiB"):
        prepare_boot(image, tmp_path, reserved_memory_dts=pool, bootargs="console=ttyAMA0")


@pytest.mark.parametrize(
    ("banks", "initrd_addr", "complaint"),
    [
        ((MemoryBank(0x40000000, 32 * MiB), MemoryBank(0x50000000, 64 * MiB)), DEFAULT_INITRD_ADDR, "must lie in bank 0"),
        ((MemoryBank(0x40000000, 80 * MiB), MemoryBank(0x60000000, 384 * MiB)), DEFAULT_INITRD_ADDR, "outside virt's RAM"),
        ((MemoryBank(0x40000000, 80 * MiB), MemoryBank(0x44000000, 64 * MiB)), DEFAULT_INITRD_ADDR, "overlap"),
        (EMULATED_AQUILA_BANKS, 0x40100000, "above the kernel"),
        ((MemoryBank(0x48000000, 80 * MiB),), DEFAULT_INITRD_ADDR, "must start at 0x40000000"),
    ],
)
def test_layouts_that_cannot_boot_are_refused(
    image: TargetImage, tmp_path: Path, banks: tuple[MemoryBank, ...], initrd_addr: int, complaint: str
) -> None:
    with pytest.raises(ConfigError, match=complaint):
        prepare_boot(image, tmp_path, banks=banks, initrd_addr=initrd_addr, bootargs="console=ttyAMA0")


def test_sections_are_split_by_name_and_rc() -> None:
    text = (
        "noise\r\n==== CMA-TOOL BEGIN vmstat ====\r\ncma_alloc_success 4\r\n==== CMA-TOOL END vmstat rc=0 ====\r\n"
        "==== CMA-TOOL BEGIN capture ====\n{}\n==== CMA-TOOL END capture rc=1 ====\n"
    )
    sections = parse_sections(text)
    assert sections["vmstat"].text == "cma_alloc_success 4\n" and sections["vmstat"].rc == 0
    assert sections["capture"].rc == 1


# ---- real boots ----------------------------------------------------------------------


def node_line(bank: MemoryBank) -> str:
    return f"node   0: [mem 0x{bank.base:016x}-0x{bank.end - 1:016x}]"


@pytest.mark.emulated
@pytest.mark.slow
def test_emulated_aquila_boots_and_captures(image: TargetImage, tmp_path: Path) -> None:
    """Aquila's banks, no CMA node: the Kconfig default 16 MiB area at the top of bank 1."""
    plan = ("load vivid n_devs=1 node_types=0x1 allocators=1\n"
            "stream cam driver:vivid:0 1920 1080 YUYV\n"
            "start cam 2 3\n"
            "release cam\n")
    start = time.monotonic()
    boot = prepare_boot(image, tmp_path, banks=EMULATED_AQUILA_BANKS, agent_files={"plan": plan}, rng_seed=SEED,
                        bootargs="console=ttyAMA0,115200 panic=-1 trace_event=cma:* cmatool.mode=run")
    prepared = time.monotonic() - start
    run = run_to_poweroff(boot, log_path=tmp_path / "console.log")
    print(
        f"\nprepare {prepared:.2f} s, QEMU start to /init {run.seconds_to_init:.2f} s, "
        f"whole run to power-off {run.seconds_total:.2f} s"
    )
    log = run.text

    for bank in EMULATED_AQUILA_BANKS:
        assert node_line(bank) in log
    # Top-down: the highest 8 MiB-aligned 16 MiB below the end of bank 1.
    area_base = (EMULATED_AQUILA_BANKS[1].end - 16 * MiB) & ~(8 * MiB - 1)
    assert f"cma: Reserved 16 MiB at 0x{area_base:08x}" in log

    events = [json.loads(line) for line in run.sections["capture"].text.splitlines()]
    events = [e for e in events if e["event"] not in ("step", "resolve")]  # the plan's own bookkeeping
    steps = [e["event"] for e in events]
    assert steps[:4] == ["start", "open", "querycap", "s_fmt"]
    assert steps[-4:] == ["munmap", "reqbufs", "close", "done"]
    assert all(e.get("label", "cam") == "cam" for e in events)  # the plan archive reached the target
    s_fmt = events[3]
    assert (s_fmt["width"], s_fmt["height"], s_fmt["format"]) == (1920, 1080, "YUYV")
    assert s_fmt["bytesperline"] == 1920 * 2 and s_fmt["sizeimage"] == 1920 * 2 * 1080
    pages = -(-s_fmt["sizeimage"] // PAGE)
    reqbufs = [e for e in events if e["event"] == "reqbufs"]
    assert (reqbufs[0]["asked"], reqbufs[0]["granted"]) == (2, 2)
    assert reqbufs[0]["cma_total_kb"] == 16 * 1024
    # CmaFree is exact right after allocations: atomic pool (64 pages) + 2 buffers taken.
    assert reqbufs[0]["cma_free_kb"] == 16 * 1024 - (64 + 2 * pages) * PAGE // 1024
    assert sum(e["event"] == "frame" for e in events) == 3
    assert run.capture_rc == 0 and run.sections["capture"].rc == 0

    finishes = re.findall(r"cma_alloc_finish: name=(\S+) pfn=(0x[0-9a-f]+) \S+ count=(\d+) align=(\d+)", run.sections["trace"].text)
    base_pfn = area_base // PAGE
    assert finishes[0] == ("reserved", hex(base_pfn), "64", "6")  # the atomic pool, from boot
    # 1013-page buffers, aligned to 256 pages: bits 256 and 256 + 1024.
    assert finishes[1:] == [("reserved", hex(base_pfn + 0x100), str(pages), "8"), ("reserved", hex(base_pfn + 0x500), str(pages), "8")]
    assert "cma_alloc_success 3" in run.sections["vmstat"].text


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith('{"event"')]


@pytest.mark.emulated
def test_shell_mode_and_the_capture_programs_exit_paths(image: TargetImage, tmp_path: Path) -> None:
    """cmatool.mode=shell gives a prompt; capture's errors, shortfalls and --hold seen from the shell."""
    boot = prepare_boot(image, tmp_path, bootargs="console=ttyAMA0 panic=-1 cmatool.mode=shell", rng_seed=SEED)
    start = time.monotonic()
    outputs: dict[str, str] = {}
    with EmulatedBoard(boot) as board, (tmp_path / "console.log").open("wb") as log:
        console = open_console(board)
        read_until(board, console, [b"cmatool# "], timeout=60, log=log)
        at_shell = time.monotonic() - start
        commands = {
            "A": "dmesg -n 1; modprobe vivid n_devs=2 node_types=0x1,0x1 allocators=1,1; sleep 1; capture --device /dev/nope",
            # the same node twice, the first one held: vivid refuses S_FMT while buffers exist (vb2_is_busy)
            "B": "capture --width 640 --height 480 --buffers 2 --frames 1 --hold "
            "--stream --width 640 --height 480 --buffers 2 --frames 1",
            # two nodes, the first one held while the second one runs
            "C": "capture --device /dev/video0 --width 640 --height 480 --buffers 2 --frames 1 --label held --hold "
            "--stream --device /dev/video1 --width 640 --height 480 --buffers 2 --frames 1 --label next",
            "D": "capture --frames many",
        }
        for name, command in commands.items():
            console.write(f"{command}; echo END-{name}-$?\n".encode())
            needles = [f"END-{name}-{rc}".encode() for rc in range(4)]
            seen = bytearray()
            hit, seen = read_console_until(console, needles, timeout=30, log=log, buffer=seen)
            outputs[name] = seen.decode(errors="replace").replace("\r\n", "\n") + "|" + hit.decode()
        console.write(b"poweroff -f\n")
        assert board.wait(30) == 0
        console.close()
    print(f"\nQEMU start to shell prompt: {at_shell:.2f} s")

    assert outputs["A"].endswith("END-A-1")  # open() failing is fatal: exit 1
    (err,) = [e for e in json_lines(outputs["A"]) if e["event"] == "error"]
    assert (err["step"], err["errno"], err["fatal"]) == ("open", 2, True)  # ENOENT

    assert outputs["B"].endswith("END-B-1")
    b = json_lines(outputs["B"])
    assert [e["event"] for e in b if e.get("label") == "s0"][-1] == "streamoff"  # held, not released yet
    (err,) = [e for e in b if e["event"] == "error"]
    assert (err["label"], err["step"], err["errno"]) == ("s1", "s_fmt", 16)  # EBUSY: s0 still holds buffers

    assert outputs["C"].endswith("END-C-0")
    c = [(e["label"], e["event"]) for e in json_lines(outputs["C"]) if "label" in e]
    held_release = c.index(("held", "munmap"))
    assert c.index(("held", "streamoff")) < c.index(("next", "reqbufs")) < c.index(("next", "close")) < held_release
    reqbufs = [e for e in json_lines(outputs["C"]) if e["event"] == "reqbufs" and e["asked"] == 2]
    assert [(e["label"], e["granted"]) for e in reqbufs] == [("held", 2), ("next", 2)]
    # 640x480 YUYV = 150 pages, below 1 MiB: align get_order = 8, so each takes a 256-page step.
    assert int(str(reqbufs[1]["cma_free_kb"])) == int(str(reqbufs[0]["cma_free_kb"])) - 2 * 150 * PAGE // 1024

    assert outputs["D"].endswith("END-D-2")  # bad usage
    (err,) = [e for e in json_lines(outputs["D"]) if e["event"] == "error"]
    assert err["step"] == "usage"


@pytest.mark.emulated
def test_qemu_failing_to_start_is_an_infra_error_with_its_words(image: TargetImage, tmp_path: Path) -> None:
    boot = prepare_boot(image, tmp_path, bootargs="console=ttyAMA0")
    with (
        pytest.raises(InfraError, match="no-such-device"),
        EmulatedBoard(boot, extra_args=["-device", "no-such-device"]) as board,
    ):
        read_until(board, open_console(board), [b"Run /init"], timeout=20)
