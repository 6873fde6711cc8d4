"""The capture schedule of a run: which streams, on which board device, started and released in which order.

One schedule drives both sides of a run: the agent on the target runs it
(:meth:`Schedule.agent_plan`) and the model predicts it
(:meth:`Schedule.model_steps`). It comes from a scenario file
(``run --scenario``) or, without one, from the board's declared needs.

Where the board's capture device is: the board names its driver (``driver:
s5p-fimc``) and, if it must, its node (``video-node: /dev/video3``). Without
a node the agent looks the device up by driver through sysfs: the board's
N-th device of a driver is that driver's N-th capture node. Only a board that
describes the emulator (an ``emulation:`` section) makes the agent load a
module (vivid, with one capture-only dma-contig instance per board device);
a real board's driver is its kernel's own business.
"""

from __future__ import annotations

from dataclasses import dataclass

from cma_tool import model as cma_model
from cma_tool.board.types import Board, Device
from cma_tool.deploy.agent import AgentPlan, ModuleLoad, Release, Start, StreamSpec, device_for, v4l2_fourcc
from cma_tool.errors import ConfigError, Diagnostic
from cma_tool.model.scenario import CaptureStep, ReleaseCaptureStep, Scenario, to_plain

#: vivid's parameters per instance: a capture node only (node_types bit 0) whose buffers come
#: from videobuf2-dma-contig (allocators=1), the dma_alloc_attrs -> CMA path FIMC takes; one
#: input, an HDMI one (input_types 3): a webcam input snaps every size to its few discrete
#: frames (320x180 at the least), HDMI takes any size from 16x16 up, as a camera interface does.
VIVID_INSTANCE = {"node_types": "0x1", "allocators": "1", "num_inputs": "1", "input_types": "0x3"}


@dataclass(frozen=True)
class Stream:
    """One capture stream: a board device's queue with a format and a buffer count."""

    label: str
    device: str  # the board device
    node: str  # /dev/videoN or driver:NAME:INDEX, as the agent resolves it
    width: int
    height: int
    pixel_format: str  # the board's name: YUYV, NV12, RGB565, ...
    buffers: int
    frames: int
    line: int = 0  # where the scenario (or the board file) asked for it


@dataclass(frozen=True)
class StartStream:
    stream: Stream


#: A release is the same thing in the schedule as in the agent's plan: REQBUFS 0 on a stream.
Op = StartStream | Release


@dataclass(frozen=True)
class Schedule:
    """The streams' starts and releases in order; every start has its release (at the end if not before)."""

    ops: tuple[Op, ...]
    modules: tuple[ModuleLoad, ...]
    source: str  # "the board's needs" or the scenario file

    @property
    def streams(self) -> list[Stream]:
        return [op.stream for op in self.ops if isinstance(op, StartStream)]

    def model_steps(self) -> list[CaptureStep | ReleaseCaptureStep]:
        """What the model is asked: REQBUFS N and REQBUFS 0 per stream, named by the stream's label."""
        steps: list[CaptureStep | ReleaseCaptureStep] = []
        for op in self.ops:
            if isinstance(op, StartStream):
                s = op.stream
                steps.append(CaptureStep(s.label, s.width, s.height, s.pixel_format, s.buffers, line=s.line,
                                         frames=s.frames, label=s.label))
            else:
                steps.append(ReleaseCaptureStep(op.label, label=op.label))
        return steps

    def model_devices(self, board: Board) -> dict[str, cma_model.Device]:
        """Each stream is a vb2 queue of its board device: a model device named after the stream, in its area."""
        from cma_tool.modelrun import board_devices

        devices = board_devices(board)
        return {s.label: cma_model.Device(s.label, devices[s.device].area) for s in self.streams}

    def agent_plan(self) -> AgentPlan:
        """The plan the agent on the target runs (/cmatool/plan)."""
        specs: dict[str, StreamSpec] = {}
        steps: list[Start | Release] = []
        for op in self.ops:
            if isinstance(op, StartStream):
                s = op.stream
                specs.setdefault(s.label, StreamSpec(s.label, s.node, s.width, s.height, s.pixel_format))
                steps.append(Start(s.label, s.buffers, s.frames))
            else:
                steps.append(op)
        return AgentPlan(self.modules, tuple(specs.values()), tuple(steps))

    def to_json(self) -> list[dict[str, object]]:
        return [{"start": op.stream.__dict__} if isinstance(op, StartStream) else {"release": op.label}
                for op in self.ops]


def from_board(board: Board) -> Schedule:
    """The board's declared needs: every device's streams held together, released in reverse at the end.

    Holding them together is the worst case for CMA, and what the board's
    validation sized the areas for. A device that declares several streams
    has one queue: its second stream starts after its first is released.
    """
    ops: list[Op] = []
    held: dict[str, str] = {}  # device -> label
    for dev in board.devices:
        for n, need in enumerate(dev.captures):
            label = f"{dev.name}-{n}" if len(dev.captures) > 1 else dev.name
            if dev.name in held:
                ops.append(Release(held.pop(dev.name)))
            ops.append(StartStream(Stream(label, dev.name, _node(board, dev), need.width, need.height, need.fourcc,
                                          need.buffers, need.frames, need.where.line)))
            held[dev.name] = label
    ops += [Release(label) for label in reversed(list(held.values()))]
    return Schedule(tuple(ops), _modules(board), "the board's needs")


def from_scenario(board: Board, scenario: Scenario) -> Schedule:
    """A scenario file's capture steps, on this board; every step the target cannot run is an error at its line.

    Streams still holding buffers when the scenario ends are released in
    reverse order of their start, as the agent does.
    """
    diags: list[Diagnostic] = []
    ops: list[Op] = []
    held: list[str] = []
    for step in scenario.steps:
        if isinstance(step, CaptureStep):
            dev = board.device(step.device)
            problem = _capture_problem(board, dev, step)
            if problem:
                diags.append(Diagnostic(problem[0], scenario.file, step.line, hint=problem[1]))
                continue
            assert dev is not None and step.label is not None
            ops.append(StartStream(Stream(step.label, dev.name, _node(board, dev), step.width, step.height,
                                          step.fourcc, step.buffers, step.frames, step.line)))
            held.append(step.label)
        elif isinstance(step, ReleaseCaptureStep):
            if step.label in held:  # a step whose capture was refused above is already said
                ops.append(Release(step.label))
                held.remove(step.label)
        else:
            kind = to_plain(step)["kind"]
            diags.append(Diagnostic(
                f"step '{kind}' cannot run on a target: the agent drives capture streams only", scenario.file,
                step.line, hint="run it through the model alone: cma-tool model BOARD --requests FILE"))
    if not ops and not diags:
        diags.append(Diagnostic("the scenario starts no capture stream: nothing would run on the target",
                                scenario.file, hint="add a '- capture: {device: ..., ...}' step"))
    if diags:
        raise ConfigError(diagnostics=diags)
    ops += [Release(label) for label in reversed(held)]
    return Schedule(tuple(ops), _modules(board), scenario.file)


def _capture_problem(board: Board, dev: Device | None, step: CaptureStep) -> tuple[str, str] | None:
    capture_devices = [d.name for d in board.devices if d.driver]
    if dev is None:
        return (f"board {board.name!r} has no device {step.device!r}",
                f"capture devices of this board: {', '.join(capture_devices) or 'none'}")
    if not dev.driver:
        return (f"device {dev.name!r} names no capture driver: the agent cannot find its video node",
                "add 'driver: NAME' (the Linux driver, e.g. s5p-fimc or vivid) to the device in the board file")
    try:
        v4l2_fourcc(step.fourcc)
    except ValueError as exc:
        return (f"pixel format {step.fourcc!r}: {exc}", "")
    return None


def _node(board: Board, dev: Device) -> str:
    """Where the agent finds this device's capture node: the board's node, else by driver and index."""
    if not dev.driver and not dev.video_node:
        w = dev.where
        raise ConfigError(f"{w.file}:{w.line}: device {dev.name!r} captures but names no driver: the agent cannot "
                          "find its video node", hint="add 'driver: NAME' (the Linux driver, e.g. s5p-fimc or vivid)")
    same = [d.name for d in board.devices if d.driver == dev.driver]
    return device_for(dev.driver or "", same.index(dev.name), dev.video_node)


def _modules(board: Board) -> tuple[ModuleLoad, ...]:
    """The module the emulated board's agent loads: vivid, one instance per board device it stands in for."""
    emu = board.emulation
    if emu is None:
        return ()
    n = max(1, sum(1 for d in board.devices if d.driver == emu.capture_driver))
    if emu.capture_driver != "vivid":
        return (ModuleLoad(emu.capture_driver),)
    params = {"n_devs": str(n), **{k: ",".join([v] * n) for k, v in VIVID_INSTANCE.items()}}
    return (ModuleLoad("vivid", tuple(params.items())),)
