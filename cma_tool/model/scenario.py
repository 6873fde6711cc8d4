"""Request scenarios: what a test asks of the board, as YAML, and the V4L2 sizes it implies.

```yaml
kernel: linux-6.1            # optional override
bootargs: "cma=16M"          # optional, appended
steps:
  - capture: {device: vivid, width: 1920, height: 1080, format: YUYV, buffers: 4, frames: 5, label: a}
  - alloc: {area: linux,cma, pages: 1013, align: 8, label: a}
  - dma_alloc: {device: fimc0, size: 4M, label: b}
  - pin: {area: reserved, pfn: 0x6f100, pages: 16}
  - unpin: {area: reserved, pfn: 0x6f100, pages: 16}
  - free: {label: a}
  - release_capture: {label: a}        # or {device: vivid}
```

A capture step holds its buffers until its release_capture (REQBUFS 0); a
device has one queue, so it holds one stream at a time. On a target
(`cma-tool run --scenario`) only capture and release_capture can run; the
other kinds drive the model alone (`cma-tool model --requests`).

Every problem in a file is reported at once, each with its line and column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cma_tool.errors import ConfigError, Diagnostic
from cma_tool.model.profiles import PROFILES
from cma_tool.sizes import SizeError, parse_size

# (bytes per pixel of each plane, horizontal and vertical subsampling of the
# planes after the first), following v4l2_format_info(); plane 0 is never
# subsampled.
_FORMATS: dict[str, tuple[tuple[int, ...], int, int]] = {
    "YUYV": ((2,), 1, 1),
    "YVYU": ((2,), 1, 1),
    "UYVY": ((2,), 1, 1),
    "VYUY": ((2,), 1, 1),
    "RGB565": ((2,), 1, 1),
    "RGBP": ((2,), 1, 1),
    "RGB555": ((2,), 1, 1),
    "RGB24": ((3,), 1, 1),
    "BGR24": ((3,), 1, 1),
    "RGB32": ((4,), 1, 1),
    "BGR32": ((4,), 1, 1),
    "XRGB32": ((4,), 1, 1),
    "XBGR32": ((4,), 1, 1),
    "GREY": ((1,), 1, 1),
    "NV12": ((1, 2), 2, 2),
    "NV21": ((1, 2), 2, 2),
    "NV16": ((1, 2), 2, 1),
    "NV61": ((1, 2), 2, 1),
    "YUV420": ((1, 1, 1), 2, 2),
    "YVU420": ((1, 1, 1), 2, 2),
    "YUV422P": ((1, 1, 1), 2, 1),
}
#: VIDEO_MAX_FRAME: vb2 never allocates more buffers for one queue.
MAX_BUFFERS = 32
#: Larger than any V4L2 driver's frame (vivid's MAX_WIDTH/MAX_HEIGHT are 4096 and 2160).
MAX_DIMENSION = 16384
_LABEL = re.compile(r"[A-Za-z0-9_.-]{1,40}")
_ALIASES = {"YU12": "YUV420", "YV12": "YVU420", "Y8": "GREY", "GRAY": "GREY", "422P": "YUV422P"}


def known_formats() -> tuple[str, ...]:
    return tuple(_FORMATS)


def sizeimage(width: int, height: int, fourcc: str) -> int:
    """The single-plane sizeimage v4l2_fill_pixfmt() computes, before vb2's PAGE_ALIGN.

    ``sizeimage(1920, 1080, "YUYV") == 4147200``; NV12 is w*h*3/2 with the
    chroma plane rounded up for odd sizes.
    """
    key = _ALIASES.get(fourcc.upper(), fourcc.upper())
    if key not in _FORMATS:
        raise ValueError(f"unknown pixel format {fourcc!r} (known: {', '.join(_FORMATS)})")
    if width <= 0 or height <= 0:
        raise ValueError(f"frame size {width}x{height} must be positive")
    bpps, hdiv, vdiv = _FORMATS[key]
    total = 0
    for plane, bpp in enumerate(bpps):
        h = 1 if plane == 0 else hdiv
        v = 1 if plane == 0 else vdiv
        total += bpp * -(-width // h) * -(-height // v)
    return total


# --- steps ---------------------------------------------------------------------


@dataclass(frozen=True)
class CaptureStep:
    """REQBUFS(buffers) on an MMAP queue: one dma_alloc per buffer, stopping at the first failure."""

    device: str
    width: int
    height: int
    fourcc: str
    buffers: int
    min_buffers: int = 2  # vb2 min_buffers_needed; vivid's is 2
    line: int = 0
    frames: int = 5  # frames the target captures before the stream stops (its buffers stay held)
    label: str | None = None  # the stream's name in reports; None: named after the device

    @property
    def buffer_size(self) -> int:
        return sizeimage(self.width, self.height, self.fourcc)


@dataclass(frozen=True)
class AllocStep:
    """A raw cma_alloc(area, pages, align), as cma_debug's alloc file or a test module makes."""

    area: str
    pages: int
    align: int = 0
    label: str | None = None
    line: int = 0


@dataclass(frozen=True)
class DmaAllocStep:
    device: str
    size: int
    label: str | None = None
    line: int = 0


@dataclass(frozen=True)
class PinStep:
    area: str
    pfn: int
    pages: int
    line: int = 0


@dataclass(frozen=True)
class UnpinStep:
    area: str
    pfn: int
    pages: int
    line: int = 0


@dataclass(frozen=True)
class FreeStep:
    label: str
    line: int = 0


@dataclass(frozen=True)
class ReleaseCaptureStep:
    """REQBUFS(0): vb2 frees the queue's buffers 0..N-1 in order."""

    device: str
    line: int = 0
    label: str | None = None  # the stream released, as its capture step named it


Step = CaptureStep | AllocStep | DmaAllocStep | PinStep | UnpinStep | FreeStep | ReleaseCaptureStep


@dataclass(frozen=True)
class Scenario:
    steps: tuple[Step, ...]
    kernel: str | None = None
    bootargs: str = ""
    file: str = "<input>"


# --- loading -------------------------------------------------------------------


def _is_split_name(prev_value: yaml.Node, key: yaml.Node, value: yaml.Node) -> bool:
    return (
        isinstance(prev_value, yaml.ScalarNode)
        and prev_value.style is None
        and isinstance(key, yaml.ScalarNode)
        and key.style is None
        and isinstance(value, yaml.ScalarNode)
        and value.tag == "tag:yaml.org,2002:null"
        and value.value == ""
        and key.start_mark.index == prev_value.end_mark.index + 1
    )


class _Reader:
    """Turns composed YAML nodes into steps, collecting every problem with its position."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.diags: list[Diagnostic] = []

    def error(self, node: yaml.Node | None, message: str, hint: str = "") -> None:
        line = col = 0
        if node is not None:
            line, col = node.start_mark.line + 1, node.start_mark.column + 1
        self.diags.append(Diagnostic(message, self.file, line, col, "error", hint))

    def scalar(self, node: yaml.Node, what: str) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, f"{what} must be a single value")
            return None
        return str(node.value)

    def integer(self, node: yaml.Node, what: str, minimum: int = 0) -> int | None:
        text = self.scalar(node, what)
        if text is None:
            return None
        try:
            value = int(text.replace("_", ""), 0)
        except ValueError:
            self.error(node, f"{what} must be an integer, not {text!r}")
            return None
        if value < minimum:
            self.error(node, f"{what} must be at least {minimum}, not {value}")
            return None
        return value

    def size(self, node: yaml.Node, what: str) -> int | None:
        text = self.scalar(node, what)
        if text is None:
            return None
        try:
            value = parse_size(text)
        except SizeError as exc:
            self.error(node, f"{what}: {exc}", exc.hint)
            return None
        if value == 0:
            self.error(node, f"{what} must not be 0")
            return None
        return value

    def mapping(self, node: yaml.Node, what: str) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping (key: value)")
            return None
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        prev: tuple[str, yaml.Node] | None = None
        for key, value in node.value:
            if prev is not None and _is_split_name(prev[1], key, value):
                # In a flow mapping "{area: linux,cma}" YAML splits at the
                # comma into area=linux plus a key "cma" with no value. Area
                # names are full of commas, so glue the pieces back together
                # when they were written with nothing between them.
                merged = yaml.ScalarNode("tag:yaml.org,2002:str", f"{prev[1].value},{key.value}", prev[1].start_mark, key.end_mark)
                out[prev[0]] = (out[prev[0]][0], merged)
                prev = (prev[0], merged)
                continue
            name = str(key.value) if isinstance(key, yaml.ScalarNode) else "?"
            prev = (name, value)
            if name in out:
                self.error(key, f"{what}: key {name!r} given twice")
            out[name] = (key, value)
        return out

    def fields(
        self,
        kind: str,
        node: yaml.Node,
        required: tuple[str, ...],
        optional: tuple[str, ...] = (),
    ) -> dict[str, yaml.Node] | None:
        mapping = self.mapping(node, f"step '{kind}'")
        if mapping is None:
            return None
        ok = True
        for name, (key, _) in mapping.items():
            if name not in required and name not in optional:
                allowed = ", ".join(required + optional)
                self.error(key, f"step '{kind}' has no field {name!r}", hint=f"fields of '{kind}': {allowed}")
                ok = False
        for name in required:
            if name not in mapping:
                self.error(node, f"step '{kind}' needs a '{name}' field")
                ok = False
        return {name: value for name, (_, value) in mapping.items()} if ok else None

    def step(self, node: yaml.Node) -> Step | None:
        entry = self.mapping(node, "a step")
        if entry is None:
            return None
        if len(entry) != 1:
            self.error(node, "each step is one 'kind: {fields}' mapping", hint="e.g. - free: {label: a}")
            return None
        kind, (key, body) = next(iter(entry.items()))
        line = key.start_mark.line + 1
        parser = getattr(self, "step_" + kind, None)
        if parser is None:
            self.error(
                key,
                f"unknown step kind {kind!r}",
                hint="one of: capture, alloc, dma_alloc, pin, unpin, free, release_capture",
            )
            return None
        result: Step | None = parser(body, line)
        return result

    def step_capture(self, body: yaml.Node, line: int) -> Step | None:
        f = self.fields("capture", body, ("device", "width", "height", "format", "buffers"),
                        ("min_buffers", "frames", "label"))
        if f is None:
            return None
        device = self.scalar(f["device"], "device")
        width = self.integer(f["width"], "width", 1)
        height = self.integer(f["height"], "height", 1)
        fourcc = self.scalar(f["format"], "format")
        buffers = self.integer(f["buffers"], "buffers", 1)
        min_buffers = self.integer(f["min_buffers"], "min_buffers", 0) if "min_buffers" in f else 2
        frames = self.integer(f["frames"], "frames", 0) if "frames" in f else 5
        label = self.label(f["label"]) if "label" in f else None
        if buffers is not None and buffers > MAX_BUFFERS:
            self.error(f["buffers"], f"buffers must be at most {MAX_BUFFERS} (VIDEO_MAX_FRAME), not {buffers}")
            buffers = None
        if width is not None and height is not None and (width > MAX_DIMENSION or height > MAX_DIMENSION):
            self.error(f["width"], f"a frame of {width}x{height} is larger than V4L2's {MAX_DIMENSION} pixels a side")
            width = None
        if fourcc is not None and _ALIASES.get(fourcc.upper(), fourcc.upper()) not in _FORMATS:
            self.error(f["format"], f"unknown pixel format {fourcc!r}", hint="known: " + ", ".join(_FORMATS))
            fourcc = None
        if None in (device, width, height, fourcc, buffers, min_buffers, frames) or ("label" in f and label is None):
            return None
        assert device is not None and width is not None and height is not None
        assert fourcc is not None and buffers is not None and min_buffers is not None and frames is not None
        return CaptureStep(device, width, height, fourcc.upper(), buffers, min_buffers, line, frames, label)

    def label(self, node: yaml.Node) -> str | None:
        text = self.scalar(node, "label")
        if text is not None and not _LABEL.fullmatch(text):
            self.error(node, f"label {text!r} is not a plain name", hint="letters, digits, '_', '.', '-'")
            return None
        return text

    def step_alloc(self, body: yaml.Node, line: int) -> Step | None:
        f = self.fields("alloc", body, ("area", "pages"), ("align", "label"))
        if f is None:
            return None
        area = self.scalar(f["area"], "area")
        pages = self.integer(f["pages"], "pages", 0)
        align = self.integer(f["align"], "align", 0) if "align" in f else 0
        label = self.scalar(f["label"], "label") if "label" in f else None
        if area is None or pages is None or align is None:
            return None
        return AllocStep(area, pages, align, label, line)

    def step_dma_alloc(self, body: yaml.Node, line: int) -> Step | None:
        f = self.fields("dma_alloc", body, ("device", "size"), ("label",))
        if f is None:
            return None
        device = self.scalar(f["device"], "device")
        size = self.size(f["size"], "size")
        label = self.scalar(f["label"], "label") if "label" in f else None
        if device is None or size is None:
            return None
        return DmaAllocStep(device, size, label, line)

    def _pin_fields(self, kind: str, body: yaml.Node) -> tuple[str, int, int] | None:
        f = self.fields(kind, body, ("area", "pfn", "pages"))
        if f is None:
            return None
        area = self.scalar(f["area"], "area")
        pfn = self.integer(f["pfn"], "pfn", 0)
        pages = self.integer(f["pages"], "pages", 1)
        if area is None or pfn is None or pages is None:
            return None
        return area, pfn, pages

    def step_pin(self, body: yaml.Node, line: int) -> Step | None:
        got = self._pin_fields("pin", body)
        return PinStep(*got, line=line) if got else None

    def step_unpin(self, body: yaml.Node, line: int) -> Step | None:
        got = self._pin_fields("unpin", body)
        return UnpinStep(*got, line=line) if got else None

    def step_free(self, body: yaml.Node, line: int) -> Step | None:
        f = self.fields("free", body, ("label",))
        if f is None:
            return None
        label = self.scalar(f["label"], "label")
        return FreeStep(label, line) if label is not None else None

    def step_release_capture(self, body: yaml.Node, line: int) -> Step | None:
        f = self.fields("release_capture", body, (), ("device", "label"))
        if f is None:
            return None
        if ("device" in f) == ("label" in f):
            self.error(body, "release_capture names the stream by 'label' or its 'device' (one of them)")
            return None
        if "label" in f:
            label = self.label(f["label"])
            return ReleaseCaptureStep("", line, label) if label is not None else None
        device = self.scalar(f["device"], "device")
        return ReleaseCaptureStep(device, line) if device is not None else None


def parse_scenario(text: str, file: str = "<input>") -> Scenario:
    """Read a scenario from YAML text; ConfigError listing every problem with file:line:col."""
    from cma_tool.board.yamlpos import compose

    reader = _Reader(file)
    try:
        root = compose(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise ConfigError(diagnostics=[Diagnostic(f"not valid YAML: {exc.problem}", file, line, col)]) from None
    except yaml.YAMLError as exc:
        raise ConfigError(diagnostics=[Diagnostic(f"not valid YAML: {exc}", file)]) from None
    if root is None:
        raise ConfigError(diagnostics=[Diagnostic("the scenario is empty", file, hint="add a 'steps:' list")])
    top = reader.mapping(root, "the scenario")
    if top is None:
        raise ConfigError(diagnostics=reader.diags)
    kernel: str | None = None
    bootargs = ""
    steps: list[Step] = []
    for name, (key, value) in top.items():
        if name == "kernel":
            kernel = reader.scalar(value, "kernel")
            if kernel is not None and kernel not in PROFILES:
                reader.error(value, f"unknown kernel profile {kernel!r}", hint="one of: " + ", ".join(PROFILES))
        elif name == "bootargs":
            bootargs = reader.scalar(value, "bootargs") or ""
        elif name == "steps":
            if not isinstance(value, yaml.SequenceNode):
                reader.error(value, "'steps' must be a list")
                continue
            for item in value.value:
                step = reader.step(item)
                if step is not None:
                    steps.append(step)
        else:
            reader.error(key, f"unknown top-level key {name!r}", hint="keys: kernel, bootargs, steps")
    if "steps" not in top:
        reader.error(root, "the scenario has no 'steps' list")
    _check_labels(steps, reader)
    steps = _pair_captures(steps, reader)
    if reader.diags:
        raise ConfigError(diagnostics=reader.diags)
    return Scenario(tuple(steps), kernel, bootargs, file)


def _pair_captures(steps: list[Step], reader: _Reader) -> list[Step]:
    """Name every stream and tie each release to the capture it ends; a device holds one stream at a time.

    A capture without a label is named after its device (``vivid``, then
    ``vivid-2`` for the device's second stream); a release by device ends the
    stream that device holds, a release by label finds its device.
    """
    held: dict[str, CaptureStep] = {}  # device -> the stream holding it
    used: dict[str, int] = {}  # label -> the line of its capture
    count: dict[str, int] = {}
    out: list[Step] = []
    for step in steps:
        if isinstance(step, CaptureStep):
            count[step.device] = count.get(step.device, 0) + 1
            label = step.label or (step.device if count[step.device] == 1 else f"{step.device}-{count[step.device]}")
            if step.device in held:
                other = held[step.device]
                reader.diags.append(Diagnostic(
                    f"device {step.device!r} still holds stream {other.label!r} (line {other.line}): a device has "
                    "one capture queue", reader.file, step.line,
                    hint=f"add '- release_capture: {{label: {other.label}}}' before this step, or use another device"))
            elif label in used:
                # A label names one stream (its format and device) in the reports and the agent's plan.
                reader.diags.append(Diagnostic(f"stream label {label!r} is already used (line {used[label]})",
                                               reader.file, step.line, hint="give this capture its own label"))
            step = CaptureStep(step.device, step.width, step.height, step.fourcc, step.buffers, step.min_buffers,
                               step.line, step.frames, label)
            held[step.device] = step
            used.setdefault(label, step.line)
        elif isinstance(step, ReleaseCaptureStep):
            if step.label is not None:
                device = next((d for d, s in held.items() if s.label == step.label), None)
                if device is None:
                    reader.diags.append(Diagnostic(f"release_capture of stream {step.label!r}, which holds no buffers "
                                                   "here", reader.file, step.line,
                                                   hint="release a stream an earlier capture step started"))
                    continue
            else:
                device = step.device
                if device not in held:
                    reader.diags.append(Diagnostic(f"release_capture of device {device!r}, which holds no stream "
                                                   "here", reader.file, step.line,
                                                   hint="release a device an earlier capture step started"))
                    continue
            step = ReleaseCaptureStep(device, step.line, held.pop(device).label)
        out.append(step)
    return out


def _check_labels(steps: list[Step], reader: _Reader) -> None:
    live: dict[str, int] = {}
    for step in steps:
        if isinstance(step, (AllocStep, DmaAllocStep)) and step.label is not None:
            if step.label in live:
                reader.diags.append(
                    Diagnostic(
                        f"label {step.label!r} is still in use (set on line {live[step.label]})",
                        reader.file,
                        step.line,
                        hint="free it first or pick another label",
                    )
                )
            live[step.label] = step.line
        elif isinstance(step, FreeStep):
            if step.label not in live:
                reader.diags.append(
                    Diagnostic(
                        f"free of label {step.label!r}, which no earlier alloc or dma_alloc set",
                        reader.file,
                        step.line,
                    )
                )
            live.pop(step.label, None)


def load_scenario(path: str | Path) -> Scenario:
    """Read a scenario file (the one I/O function here)."""
    from cma_tool.board.yamlpos import read_text

    p = Path(path)
    try:
        text = read_text(p)
    except OSError as exc:
        raise ConfigError(f"cannot read scenario {p}: {exc.strerror or exc}", hint="check the path") from None
    except ValueError as exc:  # NUL in the path, or not UTF-8
        raise ConfigError(f"cannot read scenario {p}: {exc}", hint="a scenario is a UTF-8 YAML text file") from None
    return parse_scenario(text, str(p))


def to_plain(step: Step) -> dict[str, Any]:
    """A step as JSON-ready data (for reports)."""
    kind = {
        CaptureStep: "capture",
        AllocStep: "alloc",
        DmaAllocStep: "dma_alloc",
        PinStep: "pin",
        UnpinStep: "unpin",
        FreeStep: "free",
        ReleaseCaptureStep: "release_capture",
    }[type(step)]
    body = {k: v for k, v in step.__dict__.items() if k != "line"}
    return {"kind": kind, **body, "line": step.line}
