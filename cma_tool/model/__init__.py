"""The bundled model of the kernel's CMA: pure functions and data, no I/O.

Public surface:

- :func:`boot` -- where areas land, the boot log, boot-time events
- :class:`CmaState` -- cma_alloc / cma_release / pins / counters over booted areas
- :func:`dma_alloc`, :func:`dma_free` -- the DMA API paths into CMA
- :class:`Event`, :func:`parse_trace_line` -- one event type for predicted and observed
- :func:`parse_scenario`, :func:`load_scenario`, :func:`sizeimage` -- request scenarios
- :func:`simulate`, :func:`simulate_scenario`, :class:`ModelRun`, :func:`render_text`
"""

from cma_tool.model.area import AllocResult, CmaArea, CmaState, Counters, ReleaseResult
from cma_tool.model.boot import (
    Bank,
    BootInput,
    BootProblem,
    BootResult,
    EarlyReservation,
    Preallocation,
    ReservedNode,
    boot,
    get_order,
)
from cma_tool.model.cmdline import CmaCmdline, memparse, parse_cma_cmdline
from cma_tool.model.dma import Device, DmaAllocResult, DmaBuffer, dma_alloc, dma_free
from cma_tool.model.events import NO_PFN, Event, parse_trace_line
from cma_tool.model.profiles import PROFILES, KernelProfile, profile_with
from cma_tool.model.scenario import Scenario, load_scenario, parse_scenario, sizeimage
from cma_tool.model.simulate import (
    ModelRun,
    StepRecord,
    render_text,
    simulate,
    simulate_scenario,
)

__all__ = [
    "NO_PFN",
    "PROFILES",
    "AllocResult",
    "Bank",
    "BootInput",
    "BootProblem",
    "BootResult",
    "CmaArea",
    "CmaCmdline",
    "CmaState",
    "Counters",
    "Device",
    "DmaAllocResult",
    "DmaBuffer",
    "EarlyReservation",
    "Event",
    "KernelProfile",
    "ModelRun",
    "Preallocation",
    "ReleaseResult",
    "ReservedNode",
    "Scenario",
    "StepRecord",
    "boot",
    "dma_alloc",
    "dma_free",
    "get_order",
    "load_scenario",
    "memparse",
    "parse_cma_cmdline",
    "parse_scenario",
    "parse_trace_line",
    "profile_with",
    "render_text",
    "simulate",
    "simulate_scenario",
    "sizeimage",
]
