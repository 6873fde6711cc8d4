"""`cma-tool model`: the board's boot and requests through the bundled model, printed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cma_tool import model as cma_model
from cma_tool.board.types import Board
from cma_tool.errors import ExitCode
from cma_tool.model.scenario import CaptureStep, DmaAllocStep
from cma_tool.plan import boot_input, forced_note, make_plan


def board_devices(board: Board) -> dict[str, cma_model.Device]:
    """The board's DMA masters as the model sees them: a name and its own CMA area, if any.

    A device whose buffers come from different regions (MFC left/right) becomes
    one model device per region, named ``device/label``.
    """
    out: dict[str, cma_model.Device] = {}
    for dev in board.devices:
        own = None
        if dev.honours_memory_region and dev.memory_region:
            region = board.region(dev.memory_region[0])
            own = region.node if region is not None and region.is_cma else None
        out[dev.name] = cma_model.Device(dev.name, own)
        if dev.honours_memory_region:
            for label in dev.memory_region:
                region = board.region(label)
                if region is not None and region.is_cma:
                    out[f"{dev.name}/{label}"] = cma_model.Device(f"{dev.name}/{label}", region.node)
    return out


def board_steps(board: Board) -> list[CaptureStep | DmaAllocStep]:
    """The board's needs as model requests, all held at once: every capture queue, every fixed buffer."""
    steps: list[CaptureStep | DmaAllocStep] = []
    for dev in board.devices:
        for cap in dev.captures:
            steps.append(CaptureStep(dev.name, cap.width, cap.height, cap.fourcc, cap.buffers,
                                               line=cap.where.line))
        for buf in dev.buffers:
            name = f"{dev.name}/{buf.region}" if buf.region and dev.honours_memory_region else dev.name
            steps.append(DmaAllocStep(name, buf.size, buf.name, line=buf.where.line))
    return steps


def run_model_cli(board_path: Path, *, requests: Path | None, kernel: str | None, bootargs: str | None,
                  as_json: bool, force: bool = False) -> int:
    """`cma-tool model`: every diagnostic on stderr, the prediction on stdout.

    A board that fails validation raises ConfigError unless ``force``: then the
    model predicts what the kernel does with the board as written.
    """
    plan = make_plan(board_path, kernel=kernel, bootargs=bootargs or "", allow_misfit=True, allow_errors=force)
    for d in plan.diagnostics:
        print(str(d), file=sys.stderr)
    note = forced_note(plan.diagnostics) if force else None
    if note:
        print(note, file=sys.stderr)
    board = plan.board
    inp = boot_input(board, bootargs or "")
    devices = board_devices(board)
    if requests is not None:
        scenario = cma_model.load_scenario(requests)
        run = cma_model.simulate_scenario(plan.profile, inp, scenario, devices)
    else:
        run = cma_model.simulate(plan.profile, inp, board_steps(board), devices)
    if as_json:
        print(json.dumps(run.to_json(), indent=2))
    else:
        print(cma_model.render_text(run), end="")
    return ExitCode.OK
