"""Scenario YAML, V4L2 sizes, and simulate() end to end."""

from __future__ import annotations

import json

import pytest

from cma_tool.errors import ConfigError
from cma_tool.model import (
    PROFILES,
    Bank,
    BootInput,
    Device,
    ReservedNode,
    memparse,
    parse_cma_cmdline,
    parse_scenario,
    render_text,
    simulate,
    simulate_scenario,
    sizeimage,
)
from cma_tool.model.scenario import AllocStep, CaptureStep, DmaAllocStep, FreeStep, PinStep, ReleaseCaptureStep

MiB = 1 << 20
P61 = PROFILES["linux-6.1"]
TWO_BANKS = (Bank(0x40000000, 256 * MiB), Bank(0x60000000, 256 * MiB))


@pytest.mark.parametrize(
    ("w", "h", "fourcc", "size"),
    [
        (1920, 1080, "YUYV", 1920 * 1080 * 2),  # 4147200, what vivid reported
        (1280, 720, "NV12", 1280 * 720 * 3 // 2),  # 1382400, what vivid reported
        (640, 480, "YUYV", 614400),
        (640, 480, "UYVY", 614400),
        (640, 480, "RGB565", 614400),
        (640, 480, "NV16", 640 * 480 * 2),
        (640, 480, "NV61", 640 * 480 * 2),
        (640, 480, "NV21", 460800),
        (640, 480, "RGB24", 640 * 480 * 3),
        (640, 480, "BGR24", 640 * 480 * 3),
        (640, 480, "GREY", 640 * 480),
        (3, 3, "NV12", 9 + 2 * 2 * 2),  # chroma plane rounds up: 2 bytes x ceil(3/2) x ceil(3/2)
    ],
)
def test_sizeimage(w: int, h: int, fourcc: str, size: int) -> None:
    assert sizeimage(w, h, fourcc) == size


def test_sizeimage_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown pixel format"):
        sizeimage(640, 480, "H264")


def test_memparse_like_the_kernel() -> None:
    assert memparse("64M") == (64 * MiB, 3)
    assert memparse("0x4000000") == (0x4000000, 9)
    assert memparse("010M") == (8 * MiB, 4)  # leading 0: octal
    assert memparse("1g") == (1 << 30, 2)
    assert memparse("2E")[0] == 2 << 60
    assert memparse("abc") == (0, 0)
    c = parse_cma_cmdline('console=ttyAMA0 cma=32M@0x60000000-0x70000000 coherent_pool=1M foo="a b"')
    assert (c.size, c.base, c.limit, c.coherent_pool) == (32 * MiB, 0x60000000, 0x70000000, MiB)
    # A later cma= without @ keeps the earlier base and limit, as the kernel's statics do.
    c = parse_cma_cmdline("cma=32M@0x60000000 cma=16M")
    assert (c.size, c.base, c.limit) == (16 * MiB, 0x60000000, 0x62000000)
    assert parse_cma_cmdline("cma=16M -- cma=32M").size == 16 * MiB
    assert parse_cma_cmdline("").size is None


GOOD = """\
kernel: linux-6.1
bootargs: "cma=16M"
steps:
  - capture: {device: vivid, width: 1920, height: 1080, format: YUYV, buffers: 4}
  - alloc: {area: linux,cma, pages: 1013, align: 8, label: a}
  - dma_alloc: {device: fimc0, size: 4M, label: b}
  - pin: {area: reserved, pfn: 0x6f100, pages: 16}
  - free: {label: a}
  - release_capture: {device: vivid}
"""


def test_parse_the_documented_example() -> None:
    sc = parse_scenario(GOOD, "good.yaml")
    assert sc.kernel == "linux-6.1" and sc.bootargs == "cma=16M"
    assert sc.steps == (
        # A capture without a label is named after its device; its release finds it.
        CaptureStep("vivid", 1920, 1080, "YUYV", 4, 2, line=4, label="vivid"),
        # "linux,cma" in a flow mapping is split by YAML at the comma; it is glued back.
        AllocStep("linux,cma", 1013, 8, "a", line=5),
        DmaAllocStep("fimc0", 4 * MiB, "b", line=6),
        PinStep("reserved", 0x6F100, 16, line=7),
        FreeStep("a", line=8),
        ReleaseCaptureStep("vivid", line=9, label="vivid"),
    )


def test_streams_are_paired_by_label_and_a_device_holds_one_at_a_time() -> None:
    text = """\
steps:
  - capture: {device: vivid, width: 640, height: 480, format: YUYV, buffers: 2, label: a}
  - capture: {device: vivid1, width: 640, height: 480, format: NV12, buffers: 2, frames: 0}
  - release_capture: {label: a}
  - capture: {device: vivid, width: 64, height: 48, format: GREY, buffers: 3}
  - capture: {device: vivid, width: 64, height: 48, format: GREY, buffers: 3}
  - release_capture: {label: nobody}
  - release_capture: {device: vivid2}
  - release_capture: {}
  - capture: {device: vivid2, width: 64, height: 48, format: GREY, buffers: 33, label: "a b"}
  - capture: {device: vivid3, width: 64, height: 48, format: GREY, buffers: 2, label: a}
"""
    with pytest.raises(ConfigError) as err:
        parse_scenario(text, "s.yaml")
    got = [(d.line, d.message.split(":")[0]) for d in err.value.diagnostics]
    assert got == [
        (9, "release_capture names the stream by 'label' or its 'device' (one of them)"),
        (10, "label 'a b' is not a plain name"),
        (10, "buffers must be at most 32 (VIDEO_MAX_FRAME), not 33"),
        (6, "device 'vivid' still holds stream 'vivid-2' (line 5)"),
        (7, "release_capture of stream 'nobody', which holds no buffers here"),
        (8, "release_capture of device 'vivid2', which holds no stream here"),
        (11, "stream label 'a' is already used (line 2)"),
    ]
    ok = parse_scenario(text.split("  - capture: {device: vivid, width: 64, height: 48, format: GREY, buffers: 3}\n")[0]
                        + "  - capture: {device: vivid, width: 64, height: 48, format: GREY, buffers: 3}\n", "ok.yaml")
    assert [(type(s).__name__, s.device, s.label) for s in ok.steps] == [
        ("CaptureStep", "vivid", "a"), ("CaptureStep", "vivid1", "vivid1"), ("ReleaseCaptureStep", "vivid", "a"),
        ("CaptureStep", "vivid", "vivid-2")]
    assert ok.steps[1].frames == 0  # type: ignore[union-attr]


def test_all_errors_at_once_with_positions() -> None:
    bad = """\
kernel: linux-9.9
steps:
  - capture: {device: vivid, width: -1, height: 1080, format: H264, buffers: 4}
  - alloc: {area: x, pages: lots}
  - frobnicate: {}
  - free: {label: never}
  - dma_alloc: {device: d, size: 4Q}
"""
    with pytest.raises(ConfigError) as info:
        parse_scenario(bad, "bad.yaml")
    where = {(d.line, d.col): d.message for d in info.value.diagnostics}
    # Columns are 1-based positions of the offending value, e.g. "-1" is character 37 of line 3.
    assert "unknown kernel profile 'linux-9.9'" in where[(1, 9)]
    assert "width must be at least 1" in where[(3, 37)]
    assert "unknown pixel format 'H264'" in where[(3, 63)]
    assert "pages must be an integer" in where[(4, 29)]
    assert "unknown step kind 'frobnicate'" in where[(5, 5)]
    assert "free of label 'never'" in where[(6, 0)]
    assert "is not a size" in where[(7, 34)]
    assert str(info.value).startswith("bad.yaml:1:9: error:")


def test_yaml_syntax_error_has_a_position() -> None:
    with pytest.raises(ConfigError) as info:
        parse_scenario("steps:\n  - alloc: {area: a\n", "s.yaml")
    (diag,) = info.value.diagnostics
    assert diag.file == "s.yaml" and diag.line == 3


def test_simulate_reports_unknown_area_clearly() -> None:
    nodes = (ReservedNode("linux,cma", size=64 * MiB, alloc_ranges=((0x60000000, 256 * MiB),), reusable=True, cma_default=True),)
    sc = parse_scenario(GOOD)
    devices = {"vivid": Device("vivid"), "fimc0": Device("fimc0")}
    with pytest.raises(ConfigError, match="line 5: no CMA area named 'linux,cma' after boot"):
        simulate_scenario(P61, BootInput(TWO_BANKS, nodes=nodes), sc, devices)


def test_simulate_end_to_end() -> None:
    nodes = (ReservedNode("linux,cma", size=64 * MiB, alloc_ranges=((0x60000000, 256 * MiB),), reusable=True, cma_default=True),)
    steps = parse_scenario(
        """\
steps:
  - capture: {device: vivid, width: 1920, height: 1080, format: YUYV, buffers: 4}
  - dma_alloc: {device: fimc0, size: 4M, label: b}
  - free: {label: b}
  - release_capture: {device: vivid}
"""
    ).steps
    run = simulate(P61, BootInput(TWO_BANKS, nodes=nodes), steps, {"vivid": Device("vivid"), "fimc0": Device("fimc0")})
    cap, dma, free, rel = run.steps
    # Buffers at 0x6c100/0x6c500/0x6c900/0x6cd00 (see test_alloc); CmaFree 98304 - 256 - 16208.
    assert [b.pfn for b in cap.buffers] == [0x6C100, 0x6C500, 0x6C900, 0x6CD00]
    assert cap.cma_free_kb == 65536 - 256 - 4 * 1013 * 4
    # 4 MiB = 1024 pages, align 8: after the 4th buffer (ends at 3328 + 1013 = 4341) -> 4352 = 0x1100.
    assert dma.buffers[0].pfn == 0x6C000 + 4352
    assert [e.kind for e in free.events] == ["release"]
    assert [e.pfn for e in rel.events] == [0x6C100, 0x6C500, 0x6C900, 0x6CD00]
    assert run.counters["vmstat"] == {"cma_alloc_success": 6, "cma_alloc_fail": 0}
    assert run.events[:2] == run.boot.events
    data = json.loads(json.dumps(run.to_json()))
    assert data["trace"][2] == "cma_alloc_start: name=linux,cma count=1013 align=8"
    text = render_text(run)
    assert "#0 linux,cma: 0x6c000000..0x6fffffff" in text and "CmaTotal: 65536 kB" in text


def test_capture_below_minimum_frees_and_fails() -> None:
    # 16 MiB default area, 6 MiB buffers (1536 pages): the pool takes bits 0..63, the 1st buffer
    # lands at 256, the 2nd would need 256-aligned 1792 + 1536 = 3328 <= 4096 -> fits; the 3rd
    # at 3328 + 1536 > 4096 fails. With min_buffers 3 vb2 frees both and REQBUFS fails.
    steps = parse_scenario(
        "steps:\n  - capture: {device: v, width: 1024, height: 1536, format: RGB32, buffers: 3, min_buffers: 3}\n"
    ).steps
    run = simulate(P61, BootInput(TWO_BANKS), steps, {"v": Device("v")})
    (rec,) = run.steps
    assert not rec.ok and rec.buffers == ()
    assert [(e.kind, e.pfn) for e in rec.events if e.kind != "alloc_start"] == [
        ("alloc_finish", 0x6F100),
        ("alloc_finish", 0x6F700),
        ("alloc_finish", -1),
        ("release", 0x6F100),
        ("release", 0x6F700),
    ]


def test_unknown_device_is_a_config_error() -> None:
    steps = parse_scenario("steps:\n  - dma_alloc: {device: ghost, size: 1M}\n").steps
    with pytest.raises(ConfigError, match="line 2: no device named 'ghost'"):
        simulate(P61, BootInput(TWO_BANKS), steps, {"vivid": Device("vivid")})
