"""`cma-tool run`: board -> plan -> generate -> boot -> capture -> observe -> check -> report.

Everything a run makes goes into its output folder as soon as it exists: the
plan and the model's prediction before the board boots, the console log byte
by byte while it runs (console.log, console.timing), and report.json after
every stage, so a run that is killed or hangs still leaves a usable record.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import secrets
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from cma_tool import model as cma_model
from cma_tool.board.types import Board, CaptureNeed
from cma_tool.check import Check, PredictedArea, Prediction, check_all
from cma_tool.errors import CmaToolError, ConfigError, ExitCode, InfraError, TargetError
from cma_tool.model.profiles import KernelProfile
from cma_tool.model.scenario import CaptureStep, ReleaseCaptureStep
from cma_tool.observe import Observation, observe
from cma_tool.plan import Plan, make_plan
from cma_tool.report.run_report import junit_xml, report_json, summary_table, write_atomic

#: The kernel each Debian suite's armmp package is, as a model profile.
SUITE_PROFILES = {"bookworm": "linux-6.1", "trixie": "linux-6.12"}


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
    force: bool = False  # run even when validation finds errors
    dtb: Path | None = None  # --target serial: the board's own DTB, patched (default: a generated one)
    suite: str | None = None  # emulated: the Debian suite whose armmp kernel the target runs
    console: str | None = None  # serial: console URL (default: the board file's)
    kernel: Path | None = None  # serial: the board's zImage


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


def capture_plan_files(args: list[str]) -> dict[str, str]:
    """The agent's files for a capture plan: capture.args, one argument per line (firmware/cmatool-run reads it)."""
    for arg in args:
        if "\n" in arg or not arg:
            raise ConfigError(f"capture argument {arg!r} is empty or holds a newline")
    return {"capture.args": "".join(a + "\n" for a in args)}


def vivid_params(board: Board) -> dict[str, str]:
    n = max(1, len([d for d in board.devices if d.captures and (d.driver or "") == "vivid"]))
    return {"n_devs": str(n), "node_types": ",".join(["0x1"] * n), "allocators": ",".join(["1"] * n)}


# --- the model's side ---------------------------------------------------------


Steps = list[CaptureStep | ReleaseCaptureStep]


def _stream_devices(board: Board, streams: list[Stream]) -> dict[str, cma_model.Device]:
    """Each stream is a vb2 queue of its board device: the model device is named after the stream."""
    from cma_tool.modelrun import board_devices

    devices = board_devices(board)
    return {s.label: cma_model.Device(s.label, devices[s.device].area) for s in streams}


def steps_from_capture(obs: Observation) -> tuple[Steps, list[tuple[str, int, int]]]:
    """The queue operations the target actually made, in order, with the format the driver granted.

    Also returns (label, sizeimage the driver reported, width*height-derived model size) per
    stream so a format the driver adjusted shows up as its own check.
    """
    granted_fmt: dict[str, tuple[int, int, str, int]] = {}
    steps: Steps = []
    sizes: list[tuple[str, int, int]] = []
    for step in obs.capture:
        label = str(step.data.get("label", ""))
        if step.event == "s_fmt":
            fmt = (int(step.data["width"]), int(step.data["height"]), str(step.data["format"]),
                   int(step.data["sizeimage"]))
            granted_fmt[label] = fmt
            sizes.append((label, fmt[3], cma_model.sizeimage(fmt[0], fmt[1], fmt[2])))
        elif step.event == "reqbufs" and label in granted_fmt:
            asked = int(step.data.get("asked", 0))
            if asked > 0:
                w, h, fourcc, _ = granted_fmt[label]
                steps.append(CaptureStep(label, w, h, fourcc, asked))
            else:
                steps.append(ReleaseCaptureStep(label))
    return steps, sizes


def steps_from_plan(streams: list[Stream], *, hold: bool) -> Steps:
    """What the target will do, before it runs: the capture program's order of REQBUFS calls."""
    held = hold and len(streams) > 1
    steps: Steps = []
    for s in streams:
        steps.append(CaptureStep(s.label, s.need.width, s.need.height, s.need.fourcc, s.need.buffers))
        if not held:
            steps.append(ReleaseCaptureStep(s.label))
    if held:  # held streams are torn down at the end, in reverse order
        steps += [ReleaseCaptureStep(s.label) for s in reversed(streams)]
    return steps


def predict(plan: Plan, cmdline: str, pins: tuple[tuple[str, int], ...], steps: Steps,
            devices: dict[str, cma_model.Device], *, boot_events: bool = True) -> tuple[Prediction, cma_model.ModelRun]:
    """The model's account of the run: areas, CmaTotal, every event, buffers granted, vmstat.

    ``boot_events`` false leaves out the boot-time events (the atomic pool): a kernel
    started without ``trace_event=cma:*`` only traces what happens after the agent
    enables the events.
    """
    from cma_tool.plan import boot_input

    run = cma_model.simulate(plan.profile, boot_input(plan.board, cmdline, pins), steps, devices)
    granted: list[tuple[str, int]] = []
    drops: list[tuple[str, int]] = []
    page_kb = plan.profile.page_size // 1024
    free = run.boot.cma_total_kb - page_kb * sum(p.count for p in run.boot.preallocations)
    for rec in run.steps:
        if isinstance(rec.step, CaptureStep):
            granted.append((rec.step.device, len(rec.buffers)))
            drops.append((rec.step.device, free - rec.cma_free_kb))
        free = rec.cma_free_kb
    vm = run.counters.get("vmstat", {}) if run.steps else {}
    pred = Prediction(
        areas=[PredictedArea(a.name, a.base, a.size) for a in run.boot.areas],
        cma_total_kb=run.boot.cma_total_kb,
        events=list(run.events) if boot_events else [e for rec in run.steps for e in rec.events],
        granted=granted,
        free_drops=drops,
        log_lines=list(run.boot.log) + [m for rec in run.steps for m in rec.messages],
        vmstat={"cma_alloc_success": int(vm.get("cma_alloc_success", 0)),
                "cma_alloc_fail": int(vm.get("cma_alloc_fail", 0))},
    )
    return pred, run


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
    if opts.target not in ("emulated", "serial", "ssh"):
        raise ConfigError(f"target '{opts.target}' is not emulated, serial or ssh",
                          hint="--target emulated (QEMU), serial (a board on a serial console) or ssh (a board "
                               "running Linux, reached over SSH)")
    if opts.target == "ssh":
        return _execute_ssh(opts, record, say)
    if opts.target == "serial" and opts.kernel is None:
        raise ConfigError("--target serial needs the board's kernel: --kernel FILE (a zImage)")
    say(f"[1/6] plan {opts.board}")
    kernel = None
    if opts.suite is not None:
        if opts.suite not in SUITE_PROFILES:
            raise ConfigError(f"--suite {opts.suite}: no kernel profile for that suite's kernel",
                              hint=f"known: {', '.join(SUITE_PROFILES)}")
        kernel = SUITE_PROFILES[opts.suite]
    plan = make_plan(opts.board, kernel=kernel, bootargs=opts.bootargs, allow_misfit=True, allow_errors=opts.force)
    board = plan.board
    if opts.target == "emulated" and board.emulation is None:
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
    from cma_tool.deploy import image as timage

    over_ssh = opts.boot == "ssh"
    image = timage.ensure_image(opts.cache, progress=lambda m: say(f"      {m}"), ssh=over_ssh, suite=opts.suite)
    if opts.target == "emulated":
        _check_kernel_matches(board, plan.profile, image.config)
    record.stage("image", kernel=image.kernel_package, version=image.kernel_version)

    say("[3/6] generate DTB and boot arguments")
    from cma_tool.deploy import qemu
    from cma_tool.generate.dts import reserved_memory_dts

    extra = " ".join(a for a in (board.kernel.bootargs, opts.bootargs) if a)
    if opts.target == "serial":
        return _execute_serial(opts, record, say, plan, image, streams, args, extra)
    assert board.emulation is not None
    if over_ssh:
        from cma_tool.deploy.emulated_ssh import ssh_bootargs

        bootargs = ssh_bootargs(extra, vivid=vivid_params(board))
    else:
        bootargs = qemu.compose_bootargs(extra, vivid=vivid_params(board))
    banks = [qemu.MemoryBank(b.base, b.size) for b in board.banks]
    memory = f"{board.emulation.memory >> 20}M"
    boot = qemu.prepare_boot(
        image, opts.out, banks=banks,
        reserved_memory_dts=reserved_memory_dts(board, plan.profile, address_cells=2, size_cells=2),
        bootargs=bootargs, agent_files=None if over_ssh else capture_plan_files(args), memory=memory,
        # /chosen/rng-seed: the guest's RNG is ready at once (dropbear's keys need it); fresh every run.
        rng_seed=secrets.token_bytes(32),
    )
    pins = opts.pins
    devices = _stream_devices(board, streams)
    _, pre_run = predict(plan, bootargs, pins, steps_from_plan(streams, hold=opts.hold), devices)
    write_atomic(opts.out / "predicted.json", json.dumps(pre_run.to_json(), indent=2))
    record.stage("generate", bootargs=bootargs, dtb=str(boot.dtb))

    say("[4/6] boot the emulated board and capture")
    if over_ssh:
        from cma_tool.deploy.emulated_ssh import run_via_ssh

        console_text = run_via_ssh(boot, image=image, workdir=opts.out, memory=memory, capture_args=args,
                                   timeout=opts.timeout, on_stage=record.stage)
    elif opts.boot == "uboot":
        from cma_tool.deploy.emulated_uboot import run_via_uboot

        console_text = run_via_uboot(boot, workdir=opts.out, memory=memory, banks=banks, bootargs=bootargs,
                                     timeout=opts.timeout, on_stage=record.stage)
    else:
        console_text = _boot_and_capture(boot, opts, board, record)

    return _observe_and_check(opts, record, say, plan, bootargs, devices, console_text)


def _observe_and_check(opts: RunOptions, record: RunRecord, say: Any, plan: Plan, bootargs: str,
                       devices: dict[str, cma_model.Device], console_text: str) -> list[Check]:
    """Stages 5 and 6, whatever the target: what the console said, against the model."""
    pins = opts.pins
    say("[5/6] observe")
    obs = observe(console_text)
    write_atomic(opts.out / "observed.json", json.dumps(obs.to_json(), indent=2))
    record.stage("observe", events=len(obs.events), areas=[a.name for a in obs.areas])
    capture_rc = obs.section_rc.get("capture")
    if capture_rc not in (0, None) or obs.done_rc not in (0, None):
        errors = [s.data for s in obs.capture if s.event == "error"]
        raise TargetError(f"the capture program failed (exit {capture_rc}): {errors[:1] or 'see console.log'}")

    say("[6/6] cross-check with the model")
    steps, sizes = steps_from_capture(obs)
    if opts.target == "ssh" and obs.cmdline:
        bootargs = obs.cmdline  # a board we did not boot: predict the command line it did boot with
    traced_at_boot = obs.cmdline is None or any(
        w.startswith("trace_event=") and "cma" in w for w in obs.cmdline.split())
    pred, _ = predict(plan, bootargs, pins, steps, devices, boot_events=traced_at_boot)
    checks = [Check("capture", f"sizeimage {label}", got == model, str(model), str(got),
                    "" if got == model else "the driver's sizeimage differs from V4L2's formula for this format")
              for label, got, model in sizes]
    checks += check_all(pred, obs, plan.profile)
    record.data["prediction"] = {"events": [e.text(plan.profile) for e in pred.events],
                                 "cma_total_kb": pred.cma_total_kb}
    record.data["observed"] = {"events": [e.text(plan.profile) for e in obs.events],
                               "cma_total_kb": obs.meminfo_boot.get("CmaTotal")}
    record.stage("check", checks=len(checks), failed=sum(1 for c in checks if not c.passed))
    return checks


def _execute_ssh(opts: RunOptions, record: RunRecord, say: Any) -> list[Check]:
    """--target ssh: a board already running Linux; deploy over SSH (and reboot into --kernel/--dtb if given)."""
    from cma_tool.deploy import image as timage
    from cma_tool.deploy.ssh_board import run_over_ssh
    from cma_tool.report.plan_text import plan_dict

    say(f"[1/6] plan {opts.board}")
    plan = make_plan(opts.board, bootargs=opts.bootargs, allow_misfit=True, allow_errors=opts.force)
    board = plan.board
    write_atomic(opts.out / "plan.json", json.dumps(plan_dict(plan), indent=2))
    streams = capture_streams(board)
    args = capture_args(streams, hold=opts.hold)
    record.stage("plan", areas=[a.name for a in plan.areas], streams=[s.label for s in streams])
    say("[2/6] capture program (cached)")
    image = timage.ensure_image(opts.cache, progress=lambda m: say(f"      {m}"), ssh=True)
    assert image.capture_program is not None
    say("[3/6] boot files")
    dtb = None
    if opts.dtb is not None:
        from cma_tool.dtbcmd import patch_for_board, read_dtb
        from cma_tool.generate.bootargs import kernel_cmdline

        dtb = opts.out / "board.dtb"
        dtb.write_bytes(patch_for_board(read_dtb(opts.dtb), board, kernel_cmdline(board, plan.profile).text,
                                        source=str(opts.dtb)))
    record.stage("generate")
    say("[4/6] deploy over SSH and capture")
    text = run_over_ssh(board, capture_program=image.capture_program, capture_args=args, workdir=opts.out,
                        timeout=opts.timeout, kernel=opts.kernel, dtb=dtb, on_stage=record.stage)
    return _observe_and_check(opts, record, say, plan, board.kernel.bootargs, _stream_devices(board, streams), text)


def _execute_serial(opts: RunOptions, record: RunRecord, say: Any, plan: Plan, image: Any, streams: list[Stream],
                    args: list[str], extra: str) -> list[Check]:
    """--target serial: our initrd and the board's DTB, booted by U-Boot over the board's console."""
    from cma_tool.deploy import image as timage
    from cma_tool.deploy import qemu
    from cma_tool.deploy.serial_board import run_via_serial
    from cma_tool.generate.dts import compile_dts, standalone_dts

    board = plan.board
    assert opts.kernel is not None
    bootargs = qemu.compose_bootargs(extra, vivid=vivid_params(board), console=board.console.device)
    dtb = opts.out / "board.dtb"
    if opts.dtb is not None:
        # A real board boots its own DTB: patch memory, reserved-memory and bootargs into it.
        from cma_tool.dtbcmd import patch_for_board, read_dtb

        dtb.write_bytes(patch_for_board(read_dtb(opts.dtb), board, bootargs, source=str(opts.dtb)))
    else:
        (opts.out / "board.dts").write_text(standalone_dts(board, plan.profile))
        compile_dts(opts.out / "board.dts", dtb)
    initrd = timage.compose_initrd(image, capture_plan_files(args), opts.out / "initrd.gz")
    devices = _stream_devices(board, streams)
    _, pre_run = predict(plan, bootargs, opts.pins, steps_from_plan(streams, hold=opts.hold), devices)
    write_atomic(opts.out / "predicted.json", json.dumps(pre_run.to_json(), indent=2))
    record.stage("generate", bootargs=bootargs, dtb=str(dtb))

    say("[4/6] boot the board over its serial console and capture")
    console_text = run_via_serial(board, kernel=opts.kernel, dtb=dtb, initrd=initrd, bootargs=bootargs,
                                  workdir=opts.out, timeout=opts.timeout, console_url=opts.console,
                                  on_stage=record.stage)
    return _observe_and_check(opts, record, say, plan, bootargs, devices, console_text)


def _check_kernel_matches(board: Board, profile: KernelProfile, config: Any) -> None:
    """The model must predict the kernel the target runs: its build facts must be the profile's."""
    # 6.4 and later write CONFIG_ARCH_FORCE_MAX_ORDER as the largest order itself (one less).
    written = profile.max_order - 1 if profile.family == "6.12" else profile.max_order
    diffs = []
    if config.arch_force_max_order != written:
        diffs.append(f"max-order {profile.max_order} (ARCH_FORCE_MAX_ORDER={written} on {profile.name}) but the "
                     f"kernel has ARCH_FORCE_MAX_ORDER={config.arch_force_max_order}")
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
    from cma_tool.deploy.console import Console
    from cma_tool.deploy.qemu import EmulatedBoard
    from cma_tool.deploy.sections import DONE_MARK

    deadline = time.monotonic() + opts.timeout
    memory = f"{board.emulation.memory >> 20}M" if board.emulation else "768M"
    with EmulatedBoard(boot, memory=memory, workdir=opts.out) as qb:
        record.stage("boot", serial=qb.serial_url, qemu_stderr=str(qb.stderr_path))
        with Console(qb.serial_url, opts.out, name="console", default_timeout=opts.timeout) as console:
            try:
                console.expect([rb"Run /init"], timeout=max(1.0, deadline - time.monotonic()),
                               waiting_for="the kernel to start /init")
                record.stage("init")
                console.expect([DONE_MARK.encode() + rb"-?\d+ ====\r?\n"], timeout=max(1.0, deadline - time.monotonic()),
                               waiting_for="the capture plan to finish")
            except TargetError as err:
                # A kernel panic ends QEMU with status 0 (-no-reboot): that stays the board's fault.
                if qb.process.poll() not in (None, 0):
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
                      timeout=args.timeout, force=args.force, console=args.console,
                      kernel=Path(args.kernel) if args.kernel else None,
                      dtb=Path(args.dtb) if args.dtb else None, suite=args.suite)
    quiet = (lambda msg: None) if args.json else None
    code, report, checks = execute(opts, say=quiet)
    # Only the lab's failures are worth another try: a wrong input or a board that
    # misbehaves fails the same way again. Each attempt keeps its own folder.
    for attempt in range(1, args.retries + 1):
        if code != ExitCode.INFRA or report.get("verdict") == "interrupted":
            break
        if not args.json:
            print(f"infrastructure failure ({report.get('message', '')}); retry {attempt} of {args.retries}",
                  file=sys.stderr)
        opts = dataclasses.replace(opts, out=out / f"retry-{attempt}")
        code, report, checks = execute(opts, say=quiet)
    if args.json:
        print(report_json(report))
    else:
        print(summary_table(report, checks))
        print(f"artefacts: {opts.out}/ (console.log, report.json, plan.json, predicted.json, observed.json)")
    return code
