"""The agent plan (cma_tool/deploy/agent.py): rendering, parsing, every refusal, the format table."""

from __future__ import annotations

import pytest

from cma_tool.deploy.agent import (
    AGENT_PLAN_PATH,
    AgentPlan,
    ModuleLoad,
    Release,
    Start,
    StreamSpec,
    device_for,
    format_name,
    parse_plan,
    v4l2_fourcc,
)
from cma_tool.errors import ConfigError
from cma_tool.model.scenario import known_formats

VIVID = ModuleLoad("vivid", (("n_devs", "2"), ("node_types", "0x1,0x1"), ("allocators", "1,1")))
A = StreamSpec("a", "driver:vivid:0", 1920, 1080, "YUYV")
B = StreamSpec("b", "driver:vivid:1", 1920, 1080, "RGB565")
C = StreamSpec("c", "/dev/video0", 640, 480, "YUV420")
HOLE_REUSE = AgentPlan(
    modules=(VIVID,),
    streams=(A, B, C),
    steps=(Start("a", 2, 1), Start("b", 2, 1), Release("a"), Start("c", 2, 1)),
)
HOLE_REUSE_TEXT = """\
load vivid n_devs=2 node_types=0x1,0x1 allocators=1,1
stream a driver:vivid:0 1920 1080 YUYV
stream b driver:vivid:1 1920 1080 RGBP
stream c /dev/video0 640 480 YU12
start a 2 1
start b 2 1
release a
start c 2 1
"""


def test_the_plan_lives_where_the_agent_reads_it() -> None:
    assert AGENT_PLAN_PATH == "/cmatool/plan"


def test_render_writes_one_directive_per_line_with_fourccs() -> None:
    assert HOLE_REUSE.render() == HOLE_REUSE_TEXT


def test_parse_is_the_inverse_of_render() -> None:
    assert parse_plan(HOLE_REUSE.render()) == HOLE_REUSE


def test_parse_reads_comments_blank_lines_and_interleaved_declarations() -> None:
    text = """
    # the emulated board only
    load vivid n_devs=1   # one instance

    stream a /dev/video3 64 48 GREY
    start a 1 0
    stream b driver:exynos4-fimc:0 32 32 NV12
    release a
    start a 3 2
    start b 1 1
    """
    plan = parse_plan(text)
    assert plan.modules == (ModuleLoad("vivid", (("n_devs", "1"),)),)
    assert plan.streams == (StreamSpec("a", "/dev/video3", 64, 48, "GREY"), StreamSpec("b", "driver:exynos4-fimc:0", 32, 32, "NV12"))
    assert plan.steps == (Start("a", 1, 0), Release("a"), Start("a", 3, 2), Start("b", 1, 1))


def test_a_plan_without_modules_loads_nothing() -> None:
    plan = AgentPlan((), (StreamSpec("cam", "driver:exynos4-fimc:0", 1280, 720, "NV12"),), (Start("cam", 3, 5),))
    assert plan.render() == "stream cam driver:exynos4-fimc:0 1280 720 NV12\nstart cam 3 5\n"


@pytest.mark.parametrize(
    ("name", "code"),
    [("YUYV", "YUYV"), ("UYVY", "UYVY"), ("NV12", "NV12"), ("NV21", "NV21"), ("NV16", "NV16"), ("NV61", "NV61"),
     ("YUV420", "YU12"), ("YVU420", "YV12"), ("YUV422P", "422P"), ("RGB565", "RGBP"), ("RGB555", "RGBO"),
     ("RGB24", "RGB3"), ("BGR24", "BGR3"), ("GREY", "GREY"), ("RGB32", "RGB4"), ("BGR32", "BGR4"),
     ("XRGB32", "BX24"), ("XBGR32", "XR24"), ("YVYU", "YVYU"), ("VYUY", "VYUY")],
)
def test_format_names_and_fourccs(name: str, code: str) -> None:
    # The codes are videodev2.h's V4L2_PIX_FMT_* v4l2_fourcc() arguments.
    assert v4l2_fourcc(name) == code
    assert format_name(code) == name


def test_aliases_and_codes_are_accepted_as_names() -> None:
    assert v4l2_fourcc("rgb565") == "RGBP"
    assert v4l2_fourcc("GRAY") == v4l2_fourcc("Y8") == "GREY"
    assert v4l2_fourcc("RGBP") == "RGBP"  # already a code
    assert v4l2_fourcc("YU12") == "YU12"


def test_every_format_the_model_knows_has_a_fourcc() -> None:
    for name in known_formats():
        assert format_name(v4l2_fourcc(name)) in known_formats()


def test_unknown_formats_name_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown pixel format 'MJPG' \(known: YUYV, .*RGB565"):
        v4l2_fourcc("MJPG")
    with pytest.raises(ValueError, match=r"unknown V4L2 fourcc 'MJPG' \(known: YUYV, .*RGBP"):
        format_name("MJPG")


def test_device_for_prefers_the_board_named_node() -> None:
    assert device_for("vivid", 1, None) == "driver:vivid:1"
    assert device_for("exynos4-fimc", 0, "") == "driver:exynos4-fimc:0"
    assert device_for("vivid", 1, "/dev/video7") == "/dev/video7"


def plan_with(*, modules: tuple[ModuleLoad, ...] = (), streams: tuple[StreamSpec, ...] = (A,),
              steps: tuple[Start | Release, ...] = (Start("a", 2, 1),)) -> AgentPlan:
    return AgentPlan(modules, streams, steps)


@pytest.mark.parametrize(
    ("plan", "complaint"),
    [
        (plan_with(modules=(ModuleLoad("vi vid"),)), "module name 'vi vid'"),
        (plan_with(modules=(ModuleLoad("vivid", (("n devs", "1"),)),)), "cannot be written as one word"),
        (plan_with(modules=(ModuleLoad("vivid", (("n_devs", ""),)),)), "cannot be written as one word"),
        (plan_with(modules=(ModuleLoad("vivid", (("n_devs", "1#2"),)),)), "cannot be written as one word"),
        (plan_with(streams=(StreamSpec("a/b", "/dev/video0", 64, 48, "GREY"),), steps=(Start("a/b", 1, 1),)),
         "label 'a/b'"),
        (plan_with(streams=(StreamSpec("", "/dev/video0", 64, 48, "GREY"),), steps=()), "label ''"),
        (plan_with(streams=(StreamSpec("x" * 64, "/dev/video0", 64, 48, "GREY"),), steps=()), "must be 1 to 63"),
        (plan_with(streams=(A, A)), "declared twice"),
        (plan_with(streams=(StreamSpec("a", "video0", 64, 48, "GREY"),)), "neither /dev/videoN nor driver:NAME:INDEX"),
        (plan_with(streams=(StreamSpec("a", "driver:vivid", 64, 48, "GREY"),)), "neither"),
        (plan_with(streams=(StreamSpec("a", "driver:vivid:x", 64, 48, "GREY"),)), "neither"),
        (plan_with(streams=(StreamSpec("a", "/dev/video0", 0, 48, "GREY"),)), "0x48 must be positive"),
        (plan_with(streams=(StreamSpec("a", "/dev/video0", 64, 48, "MJPG"),)), "unknown pixel format 'MJPG'"),
        (plan_with(steps=(Start("z", 1, 1),)), "start z: no such stream"),
        (plan_with(steps=(Start("a", 1, 1), Release("z"))), "release z: no such stream"),
        (plan_with(steps=(Start("a", 1, 1), Start("a", 1, 1))), "still holds its buffers"),
        (plan_with(steps=(Release("a"),)), "release a: the stream holds no buffers"),
        (plan_with(steps=(Start("a", 1, 1), Release("a"), Release("a"))), "holds no buffers"),
        (plan_with(steps=(Start("a", 0, 1),)), "buffers must be 1..32, not 0"),
        (plan_with(steps=(Start("a", 33, 1),)), "not 33"),
        (plan_with(steps=(Start("a", 2, -1),)), "frames must not be negative"),
        (plan_with(steps=()), "the plan starts no stream"),
    ],
)
def test_render_refuses_what_the_target_would(plan: AgentPlan, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        plan.render()


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("load\n", "plan.txt:1: 'load' needs a module name"),
        ("load vivid n_devs\n", "plan.txt:1: module parameter 'n_devs' is not PARAM=VALUE"),
        ("stream a /dev/video0 64 48\n", "plan.txt:1: 'stream' takes 5 words"),
        ("stream a /dev/video0 64 4x8 GREY\n", "plan.txt:1: frame size 64x4x8"),
        ("stream a /dev/video0 64 48 RGB565\n", "plan.txt:1: unknown V4L2 fourcc 'RGB565'"),
        ("stream a /dev/video0 64 48 GREY\nstart a 1\n", "plan.txt:2: 'start' takes 3 word"),
        ("stream a /dev/video0 64 48 GREY\nstart a one 1\n", "plan.txt:2: buffers 'one'"),
        ("stream a /dev/video0 64 48 GREY\nstart a 1 1\nrelease\n", "plan.txt:3: 'release' takes 1 word"),
        ("start a 1 1\nstream a /dev/video0 64 48 GREY\n", "plan.txt:1: no stream 'a' is declared above this line"),
        ("stream a /dev/video0 64 48 GREY\nhold a\n", "plan.txt:2: unknown directive 'hold'"),
        # faults _check finds are placed on their own line too
        ("load vivid\n\nstream a /dev/video0 64 48 GREY\n# note\nrelease a\n", "plan.txt:5: release a: the stream holds no buffers"),
        ("stream a /dev/video0 64 48 GREY\nstream a /dev/video1 64 48 GREY\nstart a 1 1\n",
         "plan.txt:2: stream 'a' is declared twice"),
        ("load vi.vid\nstream a /dev/video0 64 48 GREY\nstart a 1 1\n", "plan.txt:1: module name 'vi.vid'"),
        ("stream a /dev/video0 64 48 GREY\n", "plan.txt: the plan starts no stream"),
    ],
)
def test_parse_errors_name_the_file_and_line(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_plan(text, source="plan.txt")
    assert complaint in str(err.value)
