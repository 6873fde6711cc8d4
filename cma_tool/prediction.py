"""The model's account of one run: what the kernel will show for this plan, command line and capture steps.

check.py compares it with what the target printed. The steps come either from
the capture schedule (before the board boots: predicted.json) or from what the
capture program reports it actually did (after: the cross-check), so a driver
that granted another format or fewer buffers is followed, not guessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cma_tool import model as cma_model
from cma_tool.errors import TargetError
from cma_tool.model.events import Event
from cma_tool.model.scenario import MAX_BUFFERS, MAX_DIMENSION, CaptureStep, ReleaseCaptureStep, sizeimage
from cma_tool.plan import Plan, boot_input

if TYPE_CHECKING:
    from cma_tool.observe import Observation

#: What a capture schedule asks of the model: REQBUFS N and REQBUFS 0, in order.
Steps = list[CaptureStep | ReleaseCaptureStep]


@dataclass(frozen=True)
class PredictedArea:
    name: str
    base: int
    size: int


@dataclass
class Prediction:
    """What the model says the run will show."""

    areas: list[PredictedArea]
    cma_total_kb: int
    events: list[Event]
    granted: list[tuple[str, int]] = field(default_factory=list)  # (stream label, buffers granted)
    vmstat: dict[str, int] = field(default_factory=dict)  # cma_alloc_success / cma_alloc_fail deltas
    #: (stream label, kB) CmaFree falls by at each REQBUFS N>0 before the run's first release: the
    #: pages it took. Only these compare exactly (see check.observed_free_drops).
    free_drops: list[tuple[str, int]] = field(default_factory=list)
    #: Kernel log lines about CMA the model says will appear, in order (boot, then failures).
    log_lines: list[str] = field(default_factory=list)


def traced_at_boot(cmdline: str) -> bool:
    """Does this command line turn on the cma tracepoints from boot (so the atomic pool is traced too)?"""
    return any(w.startswith("trace_event=") and "cma" in w for w in cmdline.split())


def predict(plan: Plan, cmdline: str, pins: tuple[tuple[str, int], ...], steps: Steps,
            devices: dict[str, cma_model.Device]) -> tuple[Prediction, cma_model.ModelRun]:
    """The model's account of the run: areas, CmaTotal, every event, buffers granted, vmstat.

    A kernel started without ``trace_event=cma:*`` only traces what happens
    after the agent enables the events: then the boot-time events (the atomic
    pool) are left out of the events to compare.
    """
    run = cma_model.simulate(plan.profile, boot_input(plan.board, cmdline, pins), steps, devices)
    granted: list[tuple[str, int]] = []
    drops: list[tuple[str, int]] = []
    page_kb = plan.profile.page_size // 1024
    free = run.boot.cma_total_kb - page_kb * sum(p.count for p in run.boot.preallocations)
    released = False
    for rec in run.steps:
        if isinstance(rec.step, CaptureStep):
            granted.append((rec.step.device, len(rec.buffers)))
            if not released:
                drops.append((rec.step.device, free - rec.cma_free_kb))
        else:
            released = True
        free = rec.cma_free_kb
    vm = run.counters.get("vmstat", {}) if run.steps else {}
    pred = Prediction(
        areas=[PredictedArea(a.name, a.base, a.size) for a in run.boot.areas],
        cma_total_kb=run.boot.cma_total_kb,
        events=list(run.events) if traced_at_boot(cmdline) else [e for rec in run.steps for e in rec.events],
        granted=granted,
        free_drops=drops,
        log_lines=list(run.boot.log) + [m for rec in run.steps for m in rec.messages],
        # /proc/vmstat counts allocations from 5.12 on; 5.10 has only nr_free_cma.
        vmstat={"cma_alloc_success": int(vm.get("cma_alloc_success", 0)),
                "cma_alloc_fail": int(vm.get("cma_alloc_fail", 0))}
        if plan.profile.facts.vmstat_counts_allocations else {},
    )
    return pred, run


@dataclass(frozen=True)
class GrantedFormat:
    """What S_FMT gave a stream: the sizes the model allocates with, and the driver's own sizeimage."""

    label: str
    width: int
    height: int
    pixel_format: str  # the board's name (YUYV, RGB565, ...)
    sizeimage: int  # as the driver reported it


def steps_from_capture(obs: Observation) -> tuple[Steps, list[GrantedFormat]]:
    """The queue operations the target actually made, in order, with the format the driver granted.

    A REQBUFS of a stream whose S_FMT was never reported cannot be modelled
    and is left out (the checks then show the missing events). A line with
    the wrong shape is what the board printed: a TargetError, not our bug.
    """
    from cma_tool.deploy.agent import format_name

    granted: dict[str, GrantedFormat] = {}
    steps: Steps = []
    formats: list[GrantedFormat] = []
    for step in obs.capture:
        data = step.data
        label = str(data.get("label", ""))
        try:
            if step.event == "s_fmt":
                fourcc = str(data["format"])
                try:
                    name = format_name(fourcc)
                except ValueError:
                    name = fourcc  # a code we have no name for: the model refuses it with its own message
                fmt = GrantedFormat(label, int(data["width"]), int(data["height"]), name, int(data["sizeimage"]))
                if not (0 < fmt.width <= MAX_DIMENSION and 0 < fmt.height <= MAX_DIMENSION and fmt.sizeimage >= 0):
                    raise ValueError(f"a frame of {fmt.width}x{fmt.height} (sizeimage {fmt.sizeimage})")
                sizeimage(fmt.width, fmt.height, fmt.pixel_format)  # a format the model cannot size: said here
                granted[label] = fmt
                formats.append(fmt)
            elif step.event == "reqbufs" and label in granted:
                asked = int(data.get("asked", 0))
                if not 0 <= asked <= MAX_BUFFERS:
                    raise ValueError(f"REQBUFS of {asked} buffers")
                if asked > 0:
                    g = granted[label]
                    steps.append(CaptureStep(label, g.width, g.height, g.pixel_format, asked))
                else:
                    steps.append(ReleaseCaptureStep(label))
        except (KeyError, ValueError, TypeError, OverflowError) as exc:  # OverflowError: JSON's 1e999 as an int
            raise TargetError(f"the capture program printed a malformed {step.event} line ({exc!r}): {data}",
                              hint="the console or the link damaged it, or the program on the board is not ours") \
                from None
    return steps, formats
