"""`cma-tool run`: board -> plan -> generate -> boot -> capture -> observe -> check -> report.

Everything a run makes goes into its output folder as soon as it exists: the
plan and the model's prediction before the board boots, the console log byte
by byte while it runs (console.log, console.timing), and report.json after
every stage, so a run that is killed or hangs still leaves a usable record.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from cma_tool.board.types import Board, CaptureNeed, Device
from cma_tool.check import Check, Prediction, PredictedArea, check_all
from cma_tool.errors import CmaToolError, ConfigError, ExitCode, InfraError, TargetError
from cma_tool import model as mboot
from cma_tool.model.area import CmaState
from cma_tool.model.events import Event
from cma_tool.observe import Observation, observe
from cma_tool.plan import Plan, make_plan
from cma_tool.report.run_report import junit_xml, report_json, summary_table, write_atomic


@dataclass(frozen=True)
class Stream:
    """One capture stream the target runs: the board's need bound to a video node."""

    label: str
    device: str  # board device name
    node: str  # /dev/videoN
    need: CaptureNeed


@dataclass
class RunOptions:
    board: Path
    out: Path
    target: str = "emulated"
    boot: str = "direct"
    bootargs: str = ""
    json_output: bool = False
    junit: Path | None = None
    pins: tuple[tuple[str, int], ...] = ()
    cache: Path | None = None
    timeout: float = 120.0
    hold: bool = True  # streams keep their buffers until all have run (worst case for CMA)


@dataclass
class RunRecord:
    """report.json, rewritten after every stage."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def stage(self, name: str, **facts: Any) -> None:
        self.data.setdefault("stages", []).append(
            {"stage": name, "at": round(time.monotonic() - self.started, 3), **facts})
        self.data["stage"] = name
        self.flush()

    def flush(self) -> None:
        self.data["seconds"] = round(time.monotonic() - self.started, 3)
        write_atomic(self.path, report_json(self.data))


def capture_streams(board: Board) -> list[Stream]:
    """The board's capture needs, one stream each, on the video nodes the emulated target creates.

    vivid makes one capture node per instance (node_types=0x1), numbered in
    the order of the board's capture devices; a device may name its node.
    """
    streams: list[Stream] = []
    capture_devices = [d for d in board.devices if d.captures]
    for index, dev in enumerate(capture_devices):
        node = dev.video_node or f"/dev/video{index}"
        for n, need in enumerate(dev.captures):
            streams.append(Stream(f"{dev.name}-{n}" if len(dev.captures) > 1 else dev.name, dev.name, node, need))
    return streams


def capture_args(streams: list[Stream], *, hold: bool) -> list[str]:
    args: list[str] = []
    for i, s in enumerate(streams):
        if i:
            args.append("--stream")
        args += ["--device", s.node, "--width", str(s.need.width), "--height", str(s.need.height),
                 "--format", s.need.fourcc, "--buffers", str(s.need.buffers), "--frames", str(s.need.frames),
                 "--label", s.label]
        if hold and len(streams) > 1:
            args.append("--hold")
    return args


def vivid_params(board: Board) -> dict[str, str]:
    n = max(1, len([d for d in board.devices if d.captures and (d.driver or "") == "vivid"]))
    return {"n_devs": str(n), "node_types": ",".join(["0x1"] * n), "allocators": ",".join(["1"] * n)}


# --- the model's side ---------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """A buffer queue the target asked for: REQBUFS ``buffers`` of ``size`` bytes, later freed."""

    label: str
    size: int  # sizeimage; PAGE_ALIGN'd per buffer by vb2
    buffers: int
    area: str | None  # None: the default area


def _device_area(board: Board, dev: Device | None, default: str | None) -> str | None:
    from cma_tool.plan import device_area

    return device_area(board, dev, None, default) if dev is not None else default


def requests_from_capture(obs: Observation, board: Board, streams: list[Stream],
                          default_area: str | None) -> list[tuple[str, Request | None]]:
    """The allocations the target actually made, in order: ("alloc", req) at REQBUFS N, ("free", label) at REQBUFS 0."""
    sizes: dict[str, int] = {}
    by_label = {s.label: s for s in streams}
    out: list[tuple[str, Request | None]] = []
    for step in obs.capture:
        label = str(step.data.get("label", ""))
        if step.event == "s_fmt":
            sizes[label] = int(step.data["sizeimage"])
        elif step.event == "reqbufs":
            asked = int(step.data.get("asked", 0))
            stream = by_label.get(label)
            dev = board.device(stream.device) if stream else None
            if asked > 0 and label in sizes:
                out.append(("alloc", Request(label, sizes[label], asked, _device_area(board, dev, default_area))))
            elif asked == 0:
                out.append(("free:" + label, None))
    return out


def requests_from_plan(board: Board, streams: list[Stream], default_area: str | None,
                       *, hold: bool) -> list[tuple[str, Request | None]]:
    """What the target will ask for, before it runs (sizes from the model's sizeimage)."""
    from cma_tool.model.scenario import sizeimage

    out: list[tuple[str, Request | None]] = []
    frees: list[tuple[str, Request | None]] = []
    for s in streams:
        req = Request(s.label, sizeimage(s.need.width, s.need.height, s.need.fourcc), s.need.buffers,
                      _device_area(board, board.device(s.device), default_area))
        out.append(("alloc", req))
        if hold and len(streams) > 1:
            frees.insert(0, ("free:" + s.label, None))  # held streams are torn down in reverse
        else:
            out.append(("free:" + s.label, None))
    return out + frees


def predict(plan: Plan, cmdline: str, pins: tuple[tuple[str, int], ...],
            steps: list[tuple[str, Request | None]]) -> tuple[Prediction, mboot.BootResult]:
    """Boot the model with the run's command line and replay the queue allocations as vb2 makes them.

    ARM32's dma_alloc_attrs reaches cma_alloc(area, PAGE_ALIGN(size) >> PAGE_SHIFT,
    min(get_order(size), CONFIG_CMA_ALIGNMENT)) once per buffer; vb2 stops at the
    first buffer that fails and frees the queue in buffer order.
    """
    from cma_tool.plan import boot_input

    profile = plan.profile
    booted = mboot.boot(profile, boot_input(plan.board, cmdline, pins))
    state: CmaState = CmaState(profile, booted.areas)
    events: list[Event] = list(booted.events)
    for pre in booted.preallocations:
        state.alloc(pre.area, pre.count, pre.align)
    live: dict[str, list[tuple[str | None, int, int]]] = {}
    granted: list[tuple[str, int]] = []
    for action, req in steps:
        if req is not None:
            page = profile.page_size
            count = -(-req.size // page)
            align = min(mboot.get_order(count * page, profile.page_shift), profile.cma_alignment)
            area = req.area
            got: list[tuple[str | None, int, int]] = []
            for _ in range(req.buffers):
                if area is None:
                    break  # no CMA at all: vb2 gets normal pages, no cma events
                result = state.alloc(area, count, align)
                events.extend(result.events)
                if result.pfn is None:
                    break
                got.append((area, result.pfn, count))
            granted.append((req.label, len(got) if area is not None else req.buffers))
            live[req.label] = got
        else:
            label = action.split(":", 1)[1]
            for area_name, pfn, count in live.pop(label, []):
                events.extend(state.release(area_name, pfn, count).events)
    pred = Prediction(
        areas=[PredictedArea(a.name, a.base, a.size) for a in booted.areas],
        cma_total_kb=booted.cma_total_kb,
        events=events,
        granted=granted,
        vmstat={"cma_alloc_success": state.counters.cma_alloc_success,
                "cma_alloc_fail": state.counters.cma_alloc_fail},
    )
    return pred, booted


# --- the run ------------------------------------------------------------------


class _Terminated(Exception):
    pass


@contextmanager
def _sigterm_as_exception() -> Iterator[None]:
    """A lab scheduler's SIGTERM unwinds like Ctrl-C: QEMU is killed and the report written."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Terminated(f"terminated by signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def execute(opts: RunOptions, say: Any = None) -> tuple[int, dict[str, Any], list[Check]]:
    """The whole run. Returns (exit code, report, checks); never raises CmaToolError."""
    say = say or (lambda msg: print(msg, file=sys.stderr, flush=True))
    opts.out.mkdir(parents=True, exist_ok=True)
    record = RunRecord(opts.out / "report.json", {"board": str(opts.board), "target": opts.target,
                                                   "boot": opts.boot, "verdict": "running", "out": str(opts.out)})
    record.stage("start")
    checks: list[Check] = []
    code = ExitCode.OK
    try:
        with _sigterm_as_exception():
            checks = _execute(opts, record, say)
        failed = [c for c in checks if not c.passed]
        if failed:
            code = ExitCode.MISMATCH
            record.data["verdict"] = "mismatch"
            record.data["message"] = f"{len(failed)} of {len(checks)} checks failed; first: {failed[0].name}: " \
                                     f"expected {failed[0].expected}, observed {failed[0].observed}"
        else:
            record.data["verdict"] = "pass"
            record.data["message"] = f"all {len(checks)} checks passed"
    except CmaToolError as err:
        code = err.exit_code
        record.data["verdict"] = err.kind
        record.data["message"] = str(err)
        if isinstance(err, ConfigError) and err.diagnostics:
            record.data["diagnostics"] = [str(d) for d in err.diagnostics]
    except (KeyboardInterrupt, _Terminated) as exc:
        code = ExitCode.INFRA
        record.data["verdict"] = "interrupted"
        record.data["message"] = str(exc) or "interrupted"
    record.data["exit_code"] = int(code)
    record.data["checks"] = [c.to_json() for c in checks]
    record.stage("end")
    if opts.junit:
        error = None if record.data["verdict"] in ("pass", "mismatch") else (
            str(record.data["verdict"]), str(record.data.get("message", "")))
        opts.junit.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(opts.junit, junit_xml(checks, suite=f"cma-tool.{Path(opts.board).stem}", error=error,
                                           seconds=float(record.data.get("seconds", 0.0))))
    return int(code), record.data, checks


def _execute(opts: RunOptions, record: RunRecord, say: Any) -> list[Check]:
    if opts.target != "emulated":
        raise ConfigError(f"target '{opts.target}' is not supported by this command yet",
                          hint="use --target emulated (real boards: see README, 'Real boards')")
    say(f"[1/6] plan {opts.board}")
    plan = make_plan(opts.board, bootargs=opts.bootargs, allow_misfit=True)
    board = plan.board
    if board.emulation is None:
        raise ConfigError(f"{opts.board} has no 'emulation' section: it cannot run on the emulated target",
                          hint="use boards/qemu-aquila.yaml, or include it and override")
    from cma_tool.report.plan_text import plan_dict

    write_atomic(opts.out / "plan.json", json.dumps(plan_dict(plan), indent=2))
    for d in plan.diagnostics:
        say(f"      {d}")
    streams = capture_streams(board)
    args = capture_args(streams, hold=opts.hold)
    record.stage("plan", areas=[a.name for a in plan.areas], streams=[s.label for s in streams])

    say("[2/6] target image (cached)")
    from cma_tool.target import image as timage

    image = timage.ensure_image(opts.cache, progress=lambda m: say(f"      {m}"))
    _check_kernel_matches(board, image.config)
    record.stage("image", kernel=image.kernel_package, version=image.kernel_version)

    say("[3/6] generate DTB and boot arguments")
    from cma_tool.generate.dts import reserved_memory_dts
    from cma_tool.target import qemu

    extra = " ".join(a for a in (board.kernel.bootargs, opts.bootargs) if a)
    bootargs = qemu.compose_bootargs(extra, vivid=vivid_params(board))
    banks = [qemu.MemoryBank(b.base, b.size) for b in board.banks]
    boot = qemu.prepare_boot(
        image, opts.out, banks=banks,
        reserved_memory_dts=reserved_memory_dts(board, plan.profile, address_cells=2, size_cells=2),
        bootargs=bootargs, capture_args=args, memory=str(board.emulation.memory),
        rng_seed=bytes(range(32)),
    )
    pins = opts.pins
    early = tuple(board.boot.early_reservations)
    del early
    pre, _ = predict(plan, bootargs, pins, requests_from_plan(board, streams, None, hold=opts.hold))
    write_atomic(opts.out / "predicted.json", json.dumps(
        {"events": [e.to_json() for e in pre.events], "areas": [a.__dict__ for a in pre.areas],
         "cma_total_kb": pre.cma_total_kb}, indent=2))
    record.stage("generate", bootargs=bootargs, dtb=str(boot.dtb))

    say("[4/6] boot the emulated board and capture")
    console_text = _boot_and_capture(boot, opts, board, record)

    say("[5/6] observe")
    obs = observe(console_text)
    write_atomic(opts.out / "observed.json", json.dumps(obs.to_json(), indent=2))
    record.stage("observe", events=len(obs.events), areas=[a.name for a in obs.areas])
    capture_rc = obs.section_rc.get("capture")
    if capture_rc not in (0, None) or obs.done_rc not in (0, None):
        errors = [s.data for s in obs.capture if s.event == "error"]
        raise TargetError(f"the capture program failed (exit {capture_rc}): {errors[:1] or 'see console.log'}")

    say("[6/6] cross-check with the model")
    booted_default = mboot.boot(plan.profile, _boot_input(plan, bootargs, pins)).default_area
    steps = requests_from_capture(obs, board, streams, booted_default)
    pred, _ = predict(plan, bootargs, pins, steps)
    checks = check_all(pred, obs, plan.profile)
    record.data["prediction"] = {"events": [e.text(plan.profile) for e in pred.events],
                                 "cma_total_kb": pred.cma_total_kb}
    record.data["observed"] = {"events": [e.text(plan.profile) for e in obs.events],
                               "cma_total_kb": obs.meminfo_boot.get("CmaTotal")}
    record.stage("check", checks=len(checks), failed=sum(1 for c in checks if not c.passed))
    return checks


def _boot_input(plan: Plan, cmdline: str, pins: tuple[tuple[str, int], ...]) -> mboot.BootInput:
    from cma_tool.plan import boot_input

    return boot_input(plan.board, cmdline, pins)


def _check_kernel_matches(board: Board, config: Any) -> None:
    profile = board.kernel.profile
    diffs = []
    if config.arch_force_max_order != profile.max_order:
        diffs.append(f"max-order {profile.max_order} but the kernel has ARCH_FORCE_MAX_ORDER={config.arch_force_max_order}")
    if config.cma_size_mbytes != profile.cma_size_mbytes:
        diffs.append(f"cma-size-mbytes {profile.cma_size_mbytes} but the kernel has {config.cma_size_mbytes}")
    if config.cma_alignment != profile.cma_alignment:
        diffs.append(f"cma-alignment {profile.cma_alignment} but the kernel has {config.cma_alignment}")
    if config.cma_areas != profile.config_cma_areas:
        diffs.append(f"cma-areas {profile.config_cma_areas} but the kernel has {config.cma_areas}")
    if diffs:
        w = board.kernel.where
        raise ConfigError(f"{w.file}:{w.line}: the board's kernel profile does not match the target kernel: "
                          + "; ".join(diffs), hint="fix the kernel: section so the model predicts this kernel")


def _boot_and_capture(boot: Any, opts: RunOptions, board: Board, record: RunRecord) -> str:
    from cma_tool.target.console import Console
    from cma_tool.target.qemu import DONE_MARK, EmulatedBoard

    deadline = time.monotonic() + opts.timeout
    memory = str(board.emulation.memory) if board.emulation else "768M"
    with EmulatedBoard(boot, memory=memory, workdir=opts.out) as qb:
        record.stage("boot", serial=qb.serial_url, qemu_stderr=str(qb.stderr_path))
        with Console(qb.serial_url, opts.out, name="console", default_timeout=opts.timeout) as console:
            try:
                console.expect([rb"Run /init"], timeout=max(1.0, deadline - time.monotonic()),
                               waiting_for="the kernel to start /init")
                record.stage("init")
                console.expect([DONE_MARK.encode() + rb"-?\d+"], timeout=max(1.0, deadline - time.monotonic()),
                               waiting_for="the capture plan to finish")
            except TargetError as err:
                if qb.process.poll() is not None:
                    raise InfraError(f"QEMU exited early: {qb.qemu_stderr()}") from err
                raise
            record.stage("captured")
            # poweroff -f: QEMU (-no-reboot) exits once the guest is down.
            try:
                qb.wait(15)
            except TargetError:
                pass
        return console.log_path.read_bytes().decode(errors="replace").replace("\r\n", "\n")


def parse_pins(values: list[str]) -> tuple[tuple[str, int], ...]:
    from cma_tool.sizes import SizeError, parse_size

    pins = []
    for v in values:
        name, sep, base = v.rpartition("=")
        try:
            if not sep or not name:
                raise SizeError(v)
            pins.append((name, parse_size(base)))
        except SizeError:
            raise ConfigError(f"--model-pin {v!r}: expected AREA=BASE, e.g. linux,cma=0x64000000") from None
    return tuple(pins)


def run_cli(args: argparse.Namespace) -> int:
    board = Path(args.board)
    out = Path(args.out) if args.out else Path("runs") / f"{board.stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    opts = RunOptions(board=board, out=out, target=args.target, boot=args.boot, bootargs=args.bootargs or "",
                      json_output=args.json, junit=Path(args.junit) if args.junit else None,
                      pins=parse_pins(args.model_pin), cache=Path(args.cache) if args.cache else None,
                      timeout=args.timeout)
    quiet = (lambda msg: None) if args.json else None
    code, report, checks = execute(opts, say=quiet)
    if args.json:
        print(report_json(report))
    else:
        print(summary_table(report, checks))
        print(f"artefacts: {out}/ (console.log, report.json, plan.json, predicted.json, observed.json)")
    return code
