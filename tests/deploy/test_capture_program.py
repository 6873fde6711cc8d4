"""The target's agent and capture program (firmware/cmatool-run, firmware/capture/capture.c) driven by plans.

The fast tests compile capture.c for this host and check that it refuses
exactly the plans cma_tool.deploy.agent refuses, on the same line. The
emulated tests boot the emulated Aquila (boards/qemu-aquila.yaml: 64 MiB
default area top-down in bank 1, 16 MiB pools at 0x43000000 and 0x54000000)
once in shell mode, write plans at the prompt and run the agent as the host
will. Expected values come from V4L2's and the kernel's rules, worked out in
the comments, never from an earlier run.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from image_cache import private_cache

from cma_tool.deploy.agent import AGENT_PLAN_PATH, AgentPlan, ModuleLoad, Start, StreamSpec, parse_plan, v4l2_fourcc
from cma_tool.deploy.console import Console
from cma_tool.deploy.image import FIRMWARE_DIR, ensure_image
from cma_tool.deploy.qemu import EmulatedBoard, MemoryBank, prepare_boot
from cma_tool.deploy.sections import split_sections
from cma_tool.deploy.shell import LinuxShell
from cma_tool.errors import ConfigError
from cma_tool.generate.dts import reserved_memory_dts
from cma_tool.model.scenario import sizeimage
from cma_tool.plan import make_plan
from tests.tools import need

BOARD = Path(__file__).resolve().parents[2] / "boards" / "qemu-aquila.yaml"
MiB = 1 << 20
PAGE = 4096
#: The emulated board's vivid: two dma-contig capture instances (the CMA path
#: FIMC takes), each with one HDMI input. vivid's default input 0 is a webcam
#: with discrete sizes (320x180 at the smallest); an HDMI input scales to any
#: size from 16x16 up. One value per instance: instances without one get
#: vivid's defaults (4 inputs, webcam first).
VIVID = "vivid n_devs=2 node_types=0x1,0x1 allocators=1,1 num_inputs=1,1 input_types=0x3,0x3"

# The default area: 64 MiB placed top-down in bank 1 (0x50000000 + 384 MiB =
# 0x68000000), 8 MiB aligned (the 6.1 armmp kernel's MAX_ORDER 12): 0x64000000.
AREA = "linux,cma"
AREA_BASE = 0x6800_0000 - 64 * MiB
BASE_PFN = AREA_BASE // PAGE
#: The atomic pool (256 KiB) takes the area's first 64 pages at boot.
POOL_PAGES = 64


def pages(size: int) -> int:
    return -(-size // PAGE)


def cma_align(size: int) -> int:
    """dma_alloc_from_contiguous's align: get_order(size), capped at CONFIG_CMA_ALIGNMENT (8)."""
    return min(max(0, (pages(size) - 1).bit_length()), 8)


def first_fit(used: list[tuple[int, int]], count: int, align: int) -> int:
    """cma_alloc's bitmap search (order_per_bit 0): the lowest 2**align-aligned run of ``count`` free pages."""
    step = 1 << align
    bit = 0
    while any(bit < start + n and start < bit + count for start, n in used):
        bit += step
    return bit


# ---- the plan checks agree (host build, no board) --------------------------------------


@pytest.fixture(scope="module")
def host_capture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    need("gcc")
    out = tmp_path_factory.mktemp("capture") / "capture"
    subprocess.run(["gcc", "-O2", "-Wall", "-Werror", "-o", str(out), str(FIRMWARE_DIR / "capture" / "capture.c")], check=True)
    return out


STREAM = "stream a /dev/video0 64 48 GREY\n"


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("load\n", 1),
        ("stream a /dev/video0 64 48\n", 1),
        ("stream a/b /dev/video0 64 48 GREY\nstart a/b 1 1\n", 1),
        ("stream a video0 64 48 GREY\nstart a 1 1\n", 1),
        ("stream a driver:vivid:x 64 48 GREY\nstart a 1 1\n", 1),
        ("stream a /dev/video0 0 48 GREY\nstart a 1 1\n", 1),
        ("stream a /dev/video0 64 48 RGB565\nstart a 1 1\n", 1),  # a name, not the code RGBP
        (STREAM + "stream a /dev/video1 64 48 GREY\nstart a 1 1\n", 2),
        ("start a 1 1\n" + STREAM, 1),
        (STREAM + "start a 1\n", 2),
        (STREAM + "start a 0 1\n", 2),
        (STREAM + "start a 33 1\n", 2),
        (STREAM + "start a 2 x\n", 2),
        (STREAM + "# nothing held yet\nrelease a\n", 3),
        (STREAM + "start a 2 1\nstart a 2 1\n", 3),
        (STREAM + "start a 2 1\nrelease a\nrelease a\n", 4),
        (STREAM + "hold a\n", 2),
    ],
)
def test_capture_refuses_what_the_agent_module_refuses(host_capture: Path, tmp_path: Path, text: str, line: int) -> None:
    with pytest.raises(ConfigError, match=rf"plan:{line}: "):
        parse_plan(text, source="plan")
    plan = tmp_path / "plan"
    plan.write_text(text)
    done = subprocess.run([str(host_capture), "--plan", str(plan)], capture_output=True, text=True, timeout=10, check=False)
    assert done.returncode == 2, done.stdout
    (error,) = [json.loads(x) for x in done.stdout.splitlines()]
    assert (error["event"], error["step"], error["line"]) == ("error", "plan", line)
    assert f"{plan}:{line}: " in done.stderr


def test_capture_takes_what_the_agent_module_writes(host_capture: Path, tmp_path: Path) -> None:
    module, *params = VIVID.split()
    plan = AgentPlan((ModuleLoad(module, tuple((k, v) for k, _, v in (p.partition("=") for p in params))),),
                     (StreamSpec("cam", "driver:vivid:0", 64, 48, "RGB565"),), (Start("cam", 2, 1),))
    (tmp_path / "plan").write_text(plan.render())
    # This host has no vivid: past the plan, capture waits for the node; what it printed by then is enough.
    with pytest.raises(subprocess.TimeoutExpired) as waiting:
        subprocess.run([str(host_capture), "--plan", str(tmp_path / "plan")], capture_output=True, timeout=1, check=False)
    events = [json.loads(x) for x in (waiting.value.stdout or b"").decode().splitlines()]
    assert [(e["event"], e.get("op")) for e in events] == [("start", None), ("step", "start")]
    assert (events[0]["streams"], events[0]["steps"], events[1]["line"]) == (1, 1, 3)


def test_agent_without_a_plan_says_so_and_ends_with_rc_2(tmp_path: Path) -> None:
    done = subprocess.run(["sh", str(FIRMWARE_DIR / "cmatool-run"), str(tmp_path / "none")], capture_output=True, text=True,
                          timeout=10, check=False)
    assert done.returncode == 2
    assert f"no plan at {tmp_path / 'none'}" in done.stdout
    assert done.stdout.splitlines()[-1] == "==== CMA-TOOL DONE rc=2 ===="


# ---- on the emulated board ------------------------------------------------------------


@dataclass
class AgentRun:
    output: str
    rc: int
    sections: dict[str, str]
    events: list[dict[str, Any]]

    def of(self, event: str, label: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == event and (label is None or e.get("label") == label)]

    def trace(self, kind: str) -> list[tuple[int, int]]:
        """(pfn, count) of every ``kind`` tracepoint in the default area, in order."""
        found = re.findall(rf"{kind}: name={re.escape(AREA)} pfn=(0x[0-9a-f]+) \S+ count=(\d+)", self.sections["trace"])
        return [(int(pfn, 16), int(count)) for pfn, count in found]


class Target:
    """The board's shell: writes a plan, runs the agent as the host does, reads what it printed."""

    def __init__(self, shell: LinuxShell) -> None:
        self.shell = shell

    def agent(self, plan: str, *, unload: bool = True) -> AgentRun:
        """``plan`` to /cmatool/plan, an empty trace buffer, then ``cmatool-run``."""
        if unload:  # each test loads vivid with its own parameters
            self.shell.run("rmmod vivid 2>/dev/null; true")
        self.shell.run_check(f"mkdir -p /cmatool && : > {AGENT_PLAN_PATH}")
        lines = plan.splitlines()
        for at in range(0, len(lines), 8):  # short commands: the shell's line editor has a limit
            words = " ".join(shlex.quote(x) for x in lines[at : at + 8])
            self.shell.run_check(f"printf '%s\\n' {words} >> {AGENT_PLAN_PATH}")
        self.shell.run_check("echo > /sys/kernel/tracing/trace")
        output, rc = self.shell.run("cmatool-run", timeout=120)
        agent = split_sections(output)
        assert agent.done_rc == rc
        sections = {name: s.text for name, s in agent.sections.items()}
        events = [json.loads(x) for x in sections.get("capture", "").splitlines() if x.startswith("{")]
        return AgentRun(output, rc, sections, events)


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    work = tmp_path_factory.mktemp("board")
    # A private cache: an image built from this tree must not push others' images out of the shared one.
    image = ensure_image(private_cache(work))
    plan = make_plan(BOARD)
    banks = [MemoryBank(b.base, b.size) for b in plan.board.banks]
    boot = prepare_boot(image, work, banks=banks,
                        reserved_memory_dts=reserved_memory_dts(plan.board, plan.profile, address_cells=2, size_cells=2),
                        bootargs="console=ttyAMA0 panic=-1 trace_event=cma:* cmatool.mode=shell", rng_seed=bytes(range(32)))
    with EmulatedBoard(boot) as board, Console(board.serial_url, work, default_timeout=60) as console:
        shell = LinuxShell(console, prompt=rb"cmatool# (?:\x1b\[6n)?", default_timeout=60)
        shell.attach(timeout=120)
        yield Target(shell)
        console.sendline("poweroff -f")
        board.wait(30)


@pytest.mark.emulated
@pytest.mark.slow
def test_boot_reserves_the_default_area_where_the_tests_expect_it(target: Target) -> None:
    log = target.shell.run_check("dmesg")
    assert f"Reserved memory: created CMA memory pool at {AREA_BASE:#010x}, size 64 MiB" in log
    assert "vivid" not in target.shell.run_check("cat /proc/modules")  # nothing loads it but a plan


@pytest.mark.emulated
@pytest.mark.slow
def test_no_plan_no_capture(target: Target) -> None:
    output, rc = target.shell.run(f"rm -f {AGENT_PLAN_PATH}; cmatool-run")
    assert rc == 2
    assert f"no plan at {AGENT_PLAN_PATH}" in output
    assert "CMA-TOOL BEGIN" not in output and output.rstrip().endswith("==== CMA-TOOL DONE rc=2 ====")


#: Bytes per pixel as (numerator, denominator): V4L2's layouts (packed 4:2:2 is
#: 2 bytes, 4:2:0 a full luma plane plus two quarter chroma planes, ...).
BYTES_PER_PIXEL = {"YUYV": (2, 1), "UYVY": (2, 1), "NV12": (3, 2), "NV21": (3, 2), "NV16": (2, 1), "YUV420": (3, 2),
                   "RGB565": (2, 1), "RGB24": (3, 1), "BGR24": (3, 1), "GREY": (1, 1)}


@pytest.mark.emulated
@pytest.mark.slow
def test_every_board_format_is_taken_as_asked_with_v4l2s_sizeimage(target: Target) -> None:
    sizes = [(1920, 1080), (640, 480)]
    plan = [f"load {VIVID}"]
    for name in BYTES_PER_PIXEL:
        for w, h in sizes:
            label = f"{name}-{w}"
            plan += [f"stream {label} driver:vivid:0 {w} {h} {v4l2_fourcc(name)}", f"start {label} 2 1", f"release {label}"]
    run = target.agent("\n".join(plan))
    assert run.rc == 0, run.output[-2000:]
    assert "modprobe vivid n_devs=2" in run.sections["modprobe"]
    for name, (num, den) in BYTES_PER_PIXEL.items():
        for w, h in sizes:
            (fmt,) = run.of("s_fmt", f"{name}-{w}")
            assert (fmt["width"], fmt["height"], fmt["format"]) == (w, h, v4l2_fourcc(name))
            assert fmt["sizeimage"] == w * h * num // den == sizeimage(w, h, name)
            (granted,) = [e["granted"] for e in run.of("reqbufs", f"{name}-{w}") if e["asked"] == 2]
            assert granted == 2


@pytest.mark.emulated
@pytest.mark.slow
def test_tiny_buffers_need_vivids_hdmi_input(target: Target) -> None:
    run = target.agent(f"load {VIVID}\n"
                       "stream grey driver:vivid:0 64 48 GREY\nstream odd driver:vivid:0 33 17 GREY\n"
                       "stream dot driver:vivid:0 8 8 GREY\nstream full driver:vivid:1 1920 1080 YUYV\n"
                       "start grey 2 1\nstart full 2 1\nrelease grey\nstart odd 2 1\nrelease odd\nstart dot 2 1\n")
    assert run.rc == 0, run.output[-2000:]
    size = {label: (e["width"], e["height"], e["sizeimage"]) for e in run.of("s_fmt") if (label := e["label"])}
    assert size == {"grey": (64, 48, 64 * 48), "odd": (33, 17, 33 * 17),
                    "dot": (16, 16, 16 * 16),  # vivid's smallest frame is 16x16
                    "full": (1920, 1080, 1920 * 2 * 1080)}  # the HDMI input still gives 1080p YUYV
    # One page each (get_order 0: no alignment), first fit right after the atomic pool;
    # 1080p: 1013 pages on 256-page steps (align 8), from bit 256.
    grey = [(BASE_PFN + POOL_PAGES, 1), (BASE_PFN + POOL_PAGES + 1, 1)]
    full = [(BASE_PFN + 0x100, pages(4147200)), (BASE_PFN + 0x500, pages(4147200))]
    assert run.trace("cma_alloc_finish") == [*grey, *full, *grey, *grey]  # odd and dot reuse grey's pages
    assert sum(1 for _ in run.trace("cma_release")) == 8


@pytest.mark.emulated
@pytest.mark.slow
def test_a_module_already_loaded_is_left_as_it_is(target: Target) -> None:
    target.shell.run_check("rmmod vivid 2>/dev/null; modprobe vivid n_devs=1 node_types=0x1 allocators=1")
    run = target.agent(f"load {VIVID}\nstream cam driver:vivid:0 64 48 GREY\nstart cam 2 1\n", unload=False)
    assert run.rc == 0, run.output[-2000:]
    assert "vivid is already loaded: left as it is" in run.sections["modprobe"]
    # vivid's default input 0 is a webcam: 64x48 snaps to its smallest discrete size.
    (fmt,) = run.of("s_fmt", "cam")
    assert (fmt["width"], fmt["height"], fmt["sizeimage"]) == (320, 180, 320 * 180)


@pytest.mark.emulated
@pytest.mark.slow
def test_a_released_streams_hole_is_reused(target: Target) -> None:
    run = target.agent(f"load {VIVID}\n"
                       "stream a driver:vivid:0 1920 1080 YUYV\nstream b driver:vivid:1 1920 1080 YUYV\n"
                       "stream c driver:vivid:0 640 480 YUYV\n"
                       "start a 2 1\nstart b 2 1\nrelease a\nstart c 2 1\n")
    assert run.rc == 0, run.output[-2000:]
    assert [(e["label"], e["node"], e["driver"]) for e in run.of("resolve")] == [
        ("a", "/dev/video0", "vivid"), ("b", "/dev/video1", "vivid"), ("c", "/dev/video0", "vivid")]
    # b and c still hold buffers at the end: released newest start first, as steps without a line.
    assert [(e["label"], e["op"], e["line"]) for e in run.of("step")] == [
        ("a", "start", 5), ("b", "start", 6), ("a", "release", 7), ("c", "start", 8), ("c", "release", 0), ("b", "release", 0)]

    big, small = 1920 * 2 * 1080, 640 * 2 * 480
    assert (pages(big), cma_align(big), pages(small), cma_align(small)) == (1013, 8, 150, 8)
    used = [(0, POOL_PAGES)]
    expected: dict[str, list[int]] = {}
    for label, size in (("a", big), ("a", big), ("b", big), ("b", big)):
        bit = first_fit(used, pages(size), cma_align(size))
        used.append((bit, pages(size)))
        expected.setdefault(label, []).append(bit)
    used = [u for u in used if u[0] not in expected["a"]]  # release a
    for size in (small, small):
        bit = first_fit(used, pages(size), cma_align(size))
        used.append((bit, pages(size)))
        expected.setdefault("c", []).append(bit)
    # By hand: a at 0x100 and 0x500 (1013 pages each, 256-page steps after the pool), b at
    # 0x900 and 0xd00; c's 150-page buffers first-fit into a's hole at 0x100 and 0x200.
    assert expected == {"a": [0x100, 0x500], "b": [0x900, 0xD00], "c": [0x100, 0x200]}

    def at(label: str, count: int) -> list[tuple[int, int]]:
        return [(BASE_PFN + bit, count) for bit in expected[label]]

    assert run.trace("cma_alloc_finish") == at("a", 1013) + at("b", 1013) + at("c", 150)
    assert run.trace("cma_release") == at("a", 1013) + at("c", 150) + at("b", 1013)
    hole = range(BASE_PFN + 0x100, BASE_PFN + 0x500 + 1013)
    assert all(pfn in hole for pfn, _ in at("c", 150))


@pytest.mark.emulated
@pytest.mark.slow
def test_a_multiplanar_capture_node_allocates_every_plane(target: Target) -> None:
    """FIMC's capture node is VIDEO_CAPTURE_MPLANE only; vivid multiplanar=2 is the same API."""
    run = target.agent("load vivid n_devs=1 node_types=0x1 allocators=1 multiplanar=2 num_inputs=1 input_types=0x3\n"
                       "stream m driver:vivid:0 640 480 NM12\nstart m 2 1\n")
    assert run.rc == 0, run.output[-2000:]
    (fmt,) = run.of("s_fmt", "m")
    luma, chroma = 640 * 480, 640 * 480 // 2  # NV12M: Y in one buffer, interleaved CbCr in another
    assert (fmt["api"], fmt["planes"], fmt["plane_sizeimage"], fmt["sizeimage"]) == ("multi-planar", 2, [luma, chroma], luma + chroma)
    # vb2 allocates buffer by buffer, plane by plane; each plane its own cma_alloc.
    used = [(0, POOL_PAGES)]
    expected = []
    for size in (luma, chroma, luma, chroma):
        bit = first_fit(used, pages(size), cma_align(size))
        used.append((bit, pages(size)))
        expected.append((BASE_PFN + bit, pages(size)))
    # By hand: 75 pages on 128-page steps at 0x80; 38 pages on 64-page steps into the
    # gap at 0x40; then 0x100 and, past everything below, 0x180.
    assert [pfn - BASE_PFN for pfn, _ in expected] == [0x80, 0x40, 0x100, 0x180]
    assert run.trace("cma_alloc_finish") == expected


@pytest.mark.emulated
@pytest.mark.slow
def test_a_driver_without_such_a_capture_node_is_an_error_naming_the_nodes(target: Target) -> None:
    # node_types 0x101: a capture node, then an output node (not counted).
    run = target.agent("load vivid n_devs=1 node_types=0x101 allocators=1\n"
                       "stream cap driver:vivid:0 640 480 YUYV\nstream out driver:vivid:1 640 480 YUYV\n"
                       "start cap 2 1\nstart out 2 1\n")
    assert run.rc == 1
    (error,) = run.of("error")
    assert (error["label"], error["step"], error["driver"], error["index"]) == ("out", "resolve", "vivid", 1)
    assert error["nodes"] == "/dev/video0 (vivid, capture), /dev/video1 (vivid)"
    assert [e["label"] for e in run.of("reqbufs")] == ["cap"]


@pytest.mark.emulated
@pytest.mark.slow
def test_a_plan_without_load_lines_loads_nothing(target: Target) -> None:
    # The real Aquila's plan: its FIMC driver is the board's own; here there is none.
    run = target.agent("stream cam driver:exynos4-fimc:0 1280 720 NV12\nstart cam 3 1\n")
    assert run.rc == 1
    assert run.sections["modprobe"] == ""
    (error,) = run.of("error")
    assert (error["step"], error["driver"], error["nodes"]) == ("resolve", "exynos4-fimc", "none")
    assert "vivid" not in target.shell.run_check("cat /proc/modules")
