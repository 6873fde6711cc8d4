"""The agent's plan: what the host tells the target to load and capture, as one text file.

The host writes the plan to :data:`AGENT_PLAN_PATH` (into the initrd for
console boots, over SSH otherwise); ``firmware/cmatool-run`` modprobes its
``load`` lines and ``firmware/capture/capture.c`` runs the rest. One
directive per line, words separated by blanks, ``#`` starts a comment::

    load MODULE [PARAM=VALUE ...]            # only the emulated board loads one (vivid)
    stream LABEL DEVICE WIDTH HEIGHT FOURCC  # DEVICE: /dev/videoN or driver:NAME:INDEX
    start LABEL BUFFERS FRAMES               # allocate, stream FRAMES frames, keep the buffers
    release LABEL                            # free the buffers (REQBUFS 0) and close

Steps run in file order; a stream still holding buffers at the end is
released by the target, newest start first. The target takes V4L2
four-character codes, so the board's format names (RGB565, YUV420) are
translated here, the one place that knows both.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from cma_tool.errors import ConfigError

#: Where the agent looks for its plan on the target.
AGENT_PLAN_PATH = "/cmatool/plan"
#: capture.c's limit on the buffers one REQBUFS may ask for.
MAX_BUFFERS = 32

#: The board's format names (cma_tool.model.scenario's) -> V4L2 fourccs
#: (include/uapi/linux/videodev2.h, V4L2_PIX_FMT_*).
_FOURCCS: dict[str, str] = {
    "YUYV": "YUYV",
    "YVYU": "YVYU",
    "UYVY": "UYVY",
    "VYUY": "VYUY",
    "RGB565": "RGBP",
    "RGB555": "RGBO",
    "RGB24": "RGB3",
    "BGR24": "BGR3",
    "RGB32": "RGB4",
    "BGR32": "BGR4",
    "XRGB32": "BX24",
    "XBGR32": "XR24",
    "GREY": "GREY",
    "NV12": "NV12",
    "NV21": "NV21",
    "NV16": "NV16",
    "NV61": "NV61",
    "YUV420": "YU12",
    "YVU420": "YV12",
    "YUV422P": "422P",
}
_NAMES = {code: name for name, code in _FOURCCS.items()}
#: Other spellings the model accepts for the same formats.
_ALIASES = {"Y8": "GREY", "GRAY": "GREY"}

#: capture.c keeps labels in 64 bytes.
_LABEL = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")
_NODE = re.compile(r"^/dev/video\d+$")
_DRIVER_DEVICE = re.compile(r"^driver:(?P<name>[^:\s#]+):(?P<index>\d+)$")
_MODULE = re.compile(r"^[A-Za-z0-9_-]+$")
_PARAM_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_PARAM_VALUE = re.compile(r"^[^\s#]+$")


def v4l2_fourcc(name: str) -> str:
    """The V4L2 code of a board format name: ``RGB565`` -> ``RGBP``; a code itself is returned as it is.

    Unknown -> ValueError naming the known names.
    """
    key = name.upper()
    key = _ALIASES.get(key, key)
    if key in _FOURCCS:
        return _FOURCCS[key]
    if name in _NAMES:
        return name
    raise ValueError(f"unknown pixel format {name!r} (known: {', '.join(_FOURCCS)})")


def format_name(fourcc: str) -> str:
    """The board's name of a V4L2 code: ``RGBP`` -> ``RGB565``. Unknown -> ValueError naming the known codes."""
    if fourcc in _NAMES:
        return _NAMES[fourcc]
    raise ValueError(f"unknown V4L2 fourcc {fourcc!r} (known: {', '.join(_NAMES)})")


def device_for(driver: str, index: int, node: str | None) -> str:
    """The plan's DEVICE word: the explicit ``node`` if the board names one, else ``driver:NAME:INDEX``."""
    if node:
        return node
    return f"driver:{driver}:{index}"


@dataclass(frozen=True)
class ModuleLoad:
    """``load MODULE PARAM=VALUE ...``: modprobed by the agent unless already loaded."""

    module: str
    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class StreamSpec:
    """``stream ...``: a capture queue; ``pixel_format`` is the board's name (RGB565), not the fourcc."""

    label: str
    device: str
    width: int
    height: int
    pixel_format: str


@dataclass(frozen=True)
class Start:
    """``start ...``: REQBUFS ``buffers``, stream ``frames`` frames, keep the buffers."""

    label: str
    buffers: int
    frames: int


@dataclass(frozen=True)
class Release:
    """``release ...``: free the stream's buffers (REQBUFS 0) and close it."""

    label: str


Step = Start | Release


@dataclass(frozen=True)
class AgentPlan:
    modules: tuple[ModuleLoad, ...]
    streams: tuple[StreamSpec, ...]
    steps: tuple[Step, ...]

    def render(self) -> str:
        """The plan file's text; a plan the target would refuse raises ConfigError naming the fault."""
        _check(self, lambda _item: "agent plan: ")
        lines = [" ".join(["load", m.module, *(f"{k}={v}" for k, v in m.params)]) for m in self.modules]
        lines += [f"stream {s.label} {s.device} {s.width} {s.height} {v4l2_fourcc(s.pixel_format)}" for s in self.streams]
        for step in self.steps:
            if isinstance(step, Start):
                lines.append(f"start {step.label} {step.buffers} {step.frames}")
            else:
                lines.append(f"release {step.label}")
        return "".join(line + "\n" for line in lines)


def parse_plan(text: str, *, source: str = "agent plan") -> AgentPlan:
    """The inverse of :meth:`AgentPlan.render`, checked as the target checks it; formats come back as names.

    Errors name ``source`` and the line.
    """
    modules: list[ModuleLoad] = []
    streams: list[StreamSpec] = []
    steps: list[Step] = []
    # The line of every item, in _check's order: modules, streams, steps.
    lines: dict[str, list[int]] = {"load": [], "stream": [], "step": []}

    for number, raw in enumerate(text.splitlines(), start=1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        directive, args = words[0], words[1:]

        def fault(message: str, hint: str = "", line: int = number) -> ConfigError:
            return ConfigError(f"{source}:{line}: {message}", hint=hint)

        if directive == "load":
            if not args:
                raise fault("'load' needs a module name", "load MODULE [PARAM=VALUE ...]")
            params = []
            for word in args[1:]:
                key, eq, value = word.partition("=")
                if not eq:
                    raise fault(f"module parameter {word!r} is not PARAM=VALUE")
                params.append((key, value))
            modules.append(ModuleLoad(args[0], tuple(params)))
            lines["load"].append(number)
        elif directive == "stream":
            if len(args) != 5:
                raise fault("'stream' takes 5 words", "stream LABEL DEVICE WIDTH HEIGHT FOURCC")
            label, device, width, height, fourcc = args
            if not (width.isdigit() and height.isdigit()):
                raise fault(f"frame size {width}x{height} is not two whole numbers")
            try:
                name = format_name(fourcc)
            except ValueError as exc:
                raise fault(str(exc)) from None
            streams.append(StreamSpec(label, device, int(width), int(height), name))
            lines["stream"].append(number)
        elif directive in ("start", "release"):
            usage = "start LABEL BUFFERS FRAMES" if directive == "start" else "release LABEL"
            if len(args) != len(usage.split()) - 1:
                raise fault(f"'{directive}' takes {len(usage.split()) - 1} word(s)", usage)
            if not any(s.label == args[0] for s in streams):
                # The target reads the file once, top to bottom.
                raise fault(f"no stream {args[0]!r} is declared above this line",
                            f"add 'stream {args[0]} DEVICE WIDTH HEIGHT FOURCC' before it")
            if directive == "start":
                if not (args[1].isdigit() and args[2].isdigit()):
                    raise fault(f"buffers {args[1]!r} and frames {args[2]!r} must be whole numbers")
                steps.append(Start(args[0], int(args[1]), int(args[2])))
            else:
                steps.append(Release(args[0]))
            lines["step"].append(number)
        else:
            raise fault(f"unknown directive {directive!r}", "the directives are load, stream, start and release")
    plan = AgentPlan(tuple(modules), tuple(streams), tuple(steps))
    order = lines["load"] + lines["stream"] + lines["step"]
    _check(plan, lambda item: f"{source}:{order[item]}: " if item < len(order) else f"{source}: ")
    return plan


def _check(plan: AgentPlan, where: Callable[[int], str]) -> None:
    """Raise ConfigError for the first thing the target would refuse; ``where(i)`` prefixes item i's message.

    Items are numbered modules first, then streams, then steps; ``where(len)`` is the plan as a whole.
    """
    item = 0
    for m in plan.modules:
        if not _MODULE.match(m.module):
            raise ConfigError(f"{where(item)}module name {m.module!r} is not a module name (A-Z a-z 0-9 _ -)")
        for key, value in m.params:
            if not _PARAM_NAME.match(key) or not _PARAM_VALUE.match(value):
                raise ConfigError(f"{where(item)}module parameter {key}={value!r} of {m.module} cannot be written "
                                  "as one word", hint="names are A-Z a-z 0-9 _ . -; values hold no blank or '#'")
        item += 1
    declared: set[str] = set()
    for s in plan.streams:
        at = where(item)
        if not _LABEL.match(s.label):
            raise ConfigError(f"{at}stream label {s.label!r} must be 1 to 63 of A-Z a-z 0-9 _ . -")
        if s.label in declared:
            raise ConfigError(f"{at}stream {s.label!r} is declared twice", hint="give every stream its own label")
        declared.add(s.label)
        if not (_NODE.match(s.device) or _DRIVER_DEVICE.match(s.device)):
            raise ConfigError(f"{at}stream {s.label}: device {s.device!r} is neither /dev/videoN nor driver:NAME:INDEX",
                              hint="e.g. /dev/video0, or driver:vivid:0 for vivid's first capture node")
        if s.width <= 0 or s.height <= 0:
            raise ConfigError(f"{at}stream {s.label}: frame size {s.width}x{s.height} must be positive")
        try:
            v4l2_fourcc(s.pixel_format)
        except ValueError as exc:
            raise ConfigError(f"{at}stream {s.label}: {exc}") from None
        item += 1
    holding: set[str] = set()
    for step in plan.steps:
        at = where(item)
        verb = "start" if isinstance(step, Start) else "release"
        if step.label not in declared:
            raise ConfigError(f"{at}{verb} {step.label}: no such stream is declared",
                              hint=f"declared: {', '.join(sorted(declared)) or 'none'}")
        if isinstance(step, Start):
            if step.label in holding:
                raise ConfigError(f"{at}start {step.label}: the stream still holds its buffers",
                                  hint=f"release {step.label} before starting it again")
            if not 1 <= step.buffers <= MAX_BUFFERS:
                raise ConfigError(f"{at}start {step.label}: buffers must be 1..{MAX_BUFFERS}, not {step.buffers}")
            if step.frames < 0:
                raise ConfigError(f"{at}start {step.label}: frames must not be negative, not {step.frames}")
            holding.add(step.label)
        else:
            if step.label not in holding:
                raise ConfigError(f"{at}release {step.label}: the stream holds no buffers",
                                  hint=f"a release follows a 'start {step.label}'")
            holding.discard(step.label)
        item += 1
    if not any(isinstance(step, Start) for step in plan.steps):
        raise ConfigError(f"{where(item)}the plan starts no stream", hint="add a 'start LABEL BUFFERS FRAMES' step")
