"""Command line: argument parsing only; each subcommand calls one function.

Imports happen inside the subcommand functions so that `cma-tool run` does not
pay for modules it never uses (start-up time shows in every emulated run).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from cma_tool import __version__
from cma_tool.errors import CmaToolError, ConfigError, ExitCode

EXIT_CODES = """\
exit codes:
  0   ok
  1   configuration: the input is wrong (board file, scenario, arguments' values)
  2   usage: the command line is malformed or asks for what cannot apply (an option of another target)
  3   infrastructure: serial, network, power, QEMU or a download failed (retry may help)
  4   target: the board misbehaved (panic, reset, boot or capture failed)
  5   mismatch: the bundled model and the kernel disagree
  70  internal bug in cma-tool (a report file is written)
  130 interrupted: SIGINT (Ctrl-C); never retried
  143 terminated: SIGTERM (a scheduler's timeout); never retried
"""

EXAMPLES: dict[str, str] = {
    "validate": "cma-tool validate boards/aquila.yaml",
    "plan": "cma-tool plan boards/aquila.yaml --json --svg aquila-map.svg",
    "size": "cma-tool size boards/qemu-aquila.yaml --scenario configs/requests/one-after-another.yaml",
    "model": "cma-tool model boards/qemu-aquila.yaml --requests configs/two-streams.yaml --bootargs 'cma=32M'",
    "generate": "cma-tool generate boards/aquila.yaml --out out/aquila --kernel linux-3.5 --only c,kconfig",
    "import": "cma-tool import linux/arch/arm/boot/dts/s5pv210-galaxys.dts -o boards/galaxys.yaml",
    "dtb": "cma-tool dtb patch vendor.dtb --board boards/aquila.yaml -o patched.dtb",
    "run": "cma-tool run boards/qemu-aquila.yaml --out runs/first --junit runs/first/junit.xml",
    "suggest": "cma-tool suggest",
    "report": "cma-tool report runs/first",
    "check": "cma-tool check boards/qemu-aquila.yaml lava-job-1234.log --out runs/lava-1234",
    "matrix": "cma-tool matrix --board boards/qemu-aquila.yaml --board configs/two-streams.yaml "
              "--suite bookworm,trixie --scenario configs/requests/one-after-another.yaml -j 2",
}


def _print_diagnostics(err: ConfigError) -> None:
    for d in err.diagnostics:
        print(str(d), file=sys.stderr)
    n_err = sum(1 for d in err.diagnostics if d.severity == "error")
    n_warn = len(err.diagnostics) - n_err
    if err.diagnostics:
        print(f"{n_err} error(s), {n_warn} warning(s)", file=sys.stderr)
    else:
        print(f"error: {err}", file=sys.stderr)


def _cmd_validate(args: argparse.Namespace) -> int:
    from cma_tool.plan import load_checked_board

    result = load_checked_board(Path(args.board), bootargs=args.bootargs or "", advise=True)
    for d in result.diagnostics:
        print(str(d), file=sys.stderr)
    n_err = sum(1 for d in result.diagnostics if d.severity == "error")
    n_warn = len(result.diagnostics) - n_err
    print(f"{args.board}: {n_err} error(s), {n_warn} warning(s)", file=sys.stderr if n_err else sys.stdout)
    if args.force and n_err:
        # --force never makes a board valid; it says whether plan, model and run --force can go ahead.
        if result.plan is not None:
            print(f"--force: plan, model and run would override the {n_err} error(s) and go ahead", file=sys.stderr)
        else:
            print("--force: cannot override these: the board could not be planned at all", file=sys.stderr)
    return ExitCode.CONFIG if n_err else ExitCode.OK


def _cmd_plan(args: argparse.Namespace) -> int:
    from cma_tool.plan import forced_note, plan_or_errors
    from cma_tool.report.plan_text import plan_json, plan_table

    # The table (or JSON) is printed even for a board with errors, each area with its errors
    # marked: where the kernel would put things is what a person fixing the board needs to see.
    plan, diagnostics, doc = plan_or_errors(Path(args.board), kernel=args.kernel, bootargs=args.bootargs or "")
    for d in diagnostics:
        print(str(d), file=sys.stderr)
    n_err = sum(1 for d in diagnostics if d.severity == "error")
    note = forced_note(diagnostics) if args.force else None
    if note:
        print(note, file=sys.stderr)
    if plan is None:
        print(f"{n_err} error(s), {len(diagnostics) - n_err} warning(s)", file=sys.stderr)
        if args.json:
            print(doc)
        return ExitCode.CONFIG
    if args.svg:
        from cma_tool.report.svg import memory_map_svg

        Path(args.svg).write_text(memory_map_svg(plan), encoding="utf-8")
    print(plan_json(plan) if args.json else plan_table(plan))
    if n_err and not args.force:
        print(f"{args.board}: {n_err} error(s): the plan above is what the kernel would do with the board as written",
              file=sys.stderr)
        return ExitCode.CONFIG
    return ExitCode.OK


def _cmd_size(args: argparse.Namespace) -> int:
    import json

    from cma_tool.plan import load_checked_board
    from cma_tool.sizing import size_board, sizing_text

    # allow_misfit: an area too small for its needs is a warning here, since sizing is the answer to it;
    # any error left means the board is not what it says.
    checked = load_checked_board(Path(args.board), kernel=args.kernel, allow_misfit=True)
    if checked.board is None or any(d.severity == "error" for d in checked.diagnostics):
        raise ConfigError(diagnostics=checked.diagnostics)
    sizing = size_board(checked.board, kernel=args.kernel, scenarios=tuple(Path(s) for s in args.scenario or ()))
    print(json.dumps(sizing.to_json(), indent=2) if args.json else sizing_text(sizing))
    return ExitCode.OK


def _cmd_model(args: argparse.Namespace) -> int:
    from cma_tool.modelrun import run_model_cli

    return run_model_cli(Path(args.board), requests=Path(args.requests) if args.requests else None,
                         kernel=args.kernel, bootargs=args.bootargs, as_json=args.json, force=args.force)


def _cmd_generate(args: argparse.Namespace) -> int:
    from cma_tool.generate import generate_cli

    return generate_cli(Path(args.board), Path(args.out), kernel=args.kernel,
                        only=[k for k in (args.only or "").split(",") if k], patch=args.patch,
                        kernel_tree=Path(args.kernel_tree) if args.kernel_tree else None)


def _cmd_import(args: argparse.Namespace) -> int:
    from cma_tool.importdt import import_cli

    return import_cli(Path(args.source), Path(args.output) if args.output else None, name=args.name,
                      includes=[Path(d) for d in args.include], kernel=args.kernel, max_order=args.max_order)


def _cmd_dtb(args: argparse.Namespace) -> int:
    from cma_tool.dtbcmd import dtb_patch_cli, dtb_show_cli

    if args.dtb_command == "show":
        return dtb_show_cli(Path(args.file))
    return dtb_patch_cli(Path(args.file), Path(args.board), Path(args.output), bootargs=args.bootargs)


def _cmd_run(args: argparse.Namespace) -> int:
    from cma_tool.run import run_cli

    return run_cli(args)


def _cmd_report(args: argparse.Namespace) -> int:
    from cma_tool.report.html import write_report

    print(write_report(Path(args.folder)))
    return ExitCode.OK


def _cmd_check(args: argparse.Namespace) -> int:
    from cma_tool.checklog import check_cli

    return check_cli(args)


def _cmd_matrix(args: argparse.Namespace) -> int:
    from cma_tool.matrix import matrix_cli

    return matrix_cli(args)


def _cmd_suggest(args: argparse.Namespace) -> int:
    from cma_tool.deploy.discovery import suggest_cli

    return suggest_cli()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cma-tool",
        description="Plan, generate, deploy and cross-check Linux CMA (Contiguous Memory Allocator) reservations.",
        epilog="examples:\n" + "\n".join(f"  {v}" for v in EXAMPLES.values()) + "\n\n" + EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cma-tool {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_text: str, func: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text,
                           epilog=f"example:\n  {EXAMPLES[name]}\n\n{EXIT_CODES}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    kernel_help = ("kernel profile (linux-5.10, linux-6.1, linux-6.12, each also -arm64; linux-3.5, cma-2011) or "
                   "the Debian kernel it is (debian-6.1-arm64); default: the board's")
    bootargs_help = "extra kernel command line, added to the board's own as run adds it, e.g. 'cma=64M'"

    p = add("validate", "check a board file; print every error at once", _cmd_validate)
    p.add_argument("board", help="board YAML file")
    p.add_argument("--bootargs", metavar="ARGS", help=bootargs_help)
    p.add_argument("--force", action="store_true",
                   help="also say whether plan, model and run --force could go ahead despite the errors "
                        "(the exit code stays 1 when there are errors)")

    p = add("plan", "place every CMA region as the kernel would and show needs vs sizes", _cmd_plan)
    p.add_argument("board")
    p.add_argument("--kernel", metavar="PROFILE", help=kernel_help)
    p.add_argument("--bootargs", metavar="ARGS", help=bootargs_help)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--svg", metavar="FILE", help="also write a memory-map picture")
    p.add_argument("--force", action="store_true",
                   help="exit 0 for a board that fails validation (the plan is printed either way, errors marked)")

    p = add("size", "the smallest CMA areas (and cma=) that hold every declared need and scenario", _cmd_size)
    p.add_argument("board")
    p.add_argument("--scenario", action="append", metavar="FILE",
                   help="a scenario whose steps must fit too (repeat for several; default: the board's needs only)")
    p.add_argument("--kernel", metavar="PROFILE", help="kernel profile (default: the board's)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("model", "predict every CMA event the kernel will produce", _cmd_model)
    p.add_argument("board")
    p.add_argument("--requests", metavar="FILE", help="scenario YAML (default: the board's device needs)")
    p.add_argument("--kernel", metavar="PROFILE", help=kernel_help)
    p.add_argument("--bootargs", metavar="ARGS", help=bootargs_help)
    p.add_argument("--json", action="store_true")
    p.add_argument("--force", action="store_true",
                   help="predict for a board that fails validation, e.g. to see the kernel's own fallback "
                        "(errors are still printed) and exit 0")

    p = add("generate", "write bootargs, device tree, board-file C, Kconfig and patches", _cmd_generate)
    p.add_argument("board")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument("--kernel", metavar="PROFILE", help=kernel_help)
    p.add_argument("--only", metavar="KIND,...", help="bootargs,dts,c,kconfig,uboot (default: all that apply)")
    p.add_argument("--patch", action="store_true", help="also write git format-patch files")
    p.add_argument("--kernel-tree", metavar="PATH",
                   help="the git kernel tree to patch: the patch adds to its .dts/.dtsi and is checked there "
                        "(git apply --check; a dts patch also with its Makefile and dt-validate)")

    p = add("dtb", "show or patch a binary device tree", _cmd_dtb)
    dsub = p.add_subparsers(dest="dtb_command", required=True)
    s = dsub.add_parser("show", help="print a DTB as text")
    s.add_argument("file")
    s = dsub.add_parser("patch", help="rewrite /memory, /reserved-memory and bootargs from a board")
    s.add_argument("file")
    s.add_argument("--board", required=True)
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--bootargs", help="set /chosen/bootargs (default: the generated ones)")

    p = add("run", "generate, boot, capture, observe and cross-check against the model", _cmd_run)
    p.add_argument("board")
    p.add_argument("--target", default=None, choices=("emulated", "serial", "ssh", "labgrid"),
                   help="emulated (QEMU), serial (a board on its console, booted by U-Boot), ssh (a board "
                        "running Linux, reached with the board file's ssh: section) or labgrid (a board in a "
                        "labgrid place: --place, or the board file's lab: section); default: labgrid for a board "
                        "with a lab: section, else emulated")
    p.add_argument("--boot", choices=("direct", "uboot", "ssh"), default=None,
                   help="how the target is booted: emulated: direct (default: QEMU loads the kernel), uboot (real "
                        "U-Boot loads it over TFTP) or ssh (the agent runs over SSH); serial: uboot; ssh: ssh")
    p.add_argument("--scenario", metavar="FILE",
                   help="the capture steps to run (configs/requests/*.yaml; default: the board's needs, held together)")
    p.add_argument("--bootargs", metavar="ARGS", help="extra kernel command line")
    p.add_argument("--out", metavar="DIR",
                   help="output folder (default: a fresh runs/<board>-<UTC time>-<random>); a folder another run "
                        "is writing is refused, one with an earlier report.json too unless --replace")
    p.add_argument("--replace", action="store_true",
                   help="write into --out even though it holds an earlier run's report.json (its artefacts go)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML, one testcase per check")
    p.add_argument("--model-pin", action="append", default=[], metavar="AREA=BASE",
                   help="tell the model an area's base (e.g. to test the cross-check)")
    p.add_argument("--cache", metavar="DIR", help="download/image cache (default: $CMA_TOOL_CACHE or ~/.cache/cma-tool)")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds for the whole target session")
    p.add_argument("--console", metavar="URL",
                   help="serial only: the console (/dev/ttyUSB0, /dev/pts/N, socket://, rfc2217://); "
                   "default: the board file's console port or udev rule")
    p.add_argument("--kernel", metavar="NAME|FILE",
                   help="emulated: the Debian kernel to boot and predict, debian-{5.10,6.1,6.12}-{armhf,arm64} "
                        "(default: debian-6.1-armhf with the board's profile); serial: the board's kernel (a zImage, "
                        "required); ssh: a kernel to install and reboot into")
    p.add_argument("--dtb", metavar="FILE",
                   help="serial, ssh: the board's own DTB, patched with the plan (serial default: a generated one)")
    p.add_argument("--place", metavar="NAME", help="labgrid: the place the board is in (acquired for the run)")
    p.add_argument("--coordinator", metavar="HOST:PORT",
                   help="labgrid: the coordinator (default 127.0.0.1:20408)")
    p.add_argument("--retries", type=int, default=0, metavar="N",
                   help="retry up to N times after an infrastructure failure (exit 3) only; each try in OUT/retry-K")
    p.add_argument("--retry-backoff", type=float, default=2.0, metavar="SECONDS",
                   help="wait SECONDS before the first retry, twice as long before each next one (default 2)")
    p.add_argument("--keep-images", action="store_true",
                   help="copy the kernel and initrd into the output folder (default: hard links to the cache's "
                        "copies, named by sha256 in report.json)")
    p.add_argument("--suite", metavar="SUITE",
                   help="emulated: the armhf kernel of Debian SUITE (bullseye: 5.10, bookworm: 6.1, trixie: 6.12); "
                        "the same as --kernel debian-<version>-armhf")
    p.add_argument("--force", action="store_true",
                   help="run a board that fails validation (to watch the kernel's fallback); errors become warnings")

    p = add("report", "rewrite a run folder's report.html from the files the run left there", _cmd_report)
    p.add_argument("folder", metavar="OUT_FOLDER", help="the --out folder of a cma-tool run")
    p = add("import", "write a board file from a kernel .dts (with its includes) or a .dtb", _cmd_import)
    p.add_argument("source", help="the board's .dts (preprocessed as Kbuild does) or a .dtb")
    p.add_argument("-o", "--output", metavar="BOARD.yaml", help="write here and validate it (default: print)")
    p.add_argument("--name", help="the board's name (default: the dts name without its SoC prefix)")
    p.add_argument("--include", "-I", action="append", default=[], metavar="DIR",
                   help="more folders for the .dts's includes (its kernel tree's are found by themselves)")
    p.add_argument("--kernel", default="linux-6.1", help="kernel profile for the board (default linux-6.1)")
    p.add_argument("--max-order", type=int, default=11, metavar="N",
                   help="CONFIG_ARCH_FORCE_MAX_ORDER of the board's kernel (default 11, ARM's Kconfig default)")

    p = add("check", "cross-check a console log of a board booted elsewhere (LAVA, a flasher, by hand)", _cmd_check)
    p.add_argument("board", help="board YAML file the board was set up from")
    p.add_argument("log", help="the console log: plain text (timestamps or not) or a LAVA job log (YAML lines)")
    p.add_argument("--kernel", metavar="PROFILE",
                   help="kernel profile (default: the one of the kernel the log shows booting if there is one, "
                        "else the board's)")
    p.add_argument("--bootargs", metavar="CMDLINE",
                   help="the command line the board was given, checked against the one the log shows "
                        "(default: the log's 'Kernel command line:', unchecked)")
    p.add_argument("--scenario", metavar="FILE",
                   help="the scenario the capture ran (for its labels and kernel; default: the board's needs)")
    p.add_argument("--model-pin", action="append", default=[], metavar="AREA=BASE",
                   help="tell the model an area's base (e.g. to test the cross-check)")
    p.add_argument("--force", action="store_true", help="check a board that fails validation")
    p.add_argument("--out", metavar="DIR", help="output folder (default: runs/<board>-check-<time>)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--junit", metavar="FILE", help="write JUnit XML, one testcase per check")
    p = add("matrix", "run boards x kernels x scenarios, cells in parallel, one summary (table, summary.json, JUnit)",
            _cmd_matrix)
    p.add_argument("matrix", nargs="?", metavar="MATRIX_FILE",
                   help="YAML: boards, suites, scenarios lists, optional target/boot/retries/timeout and cells "
                        "(per-cell options: match + model-pin, bootargs, timeout, force)")
    p.add_argument("--board", action="append", metavar="FILE", help="a board (repeat, or comma-separate)")
    p.add_argument("--suite", action="append", metavar="SUITE",
                   help="a kernel: a Debian suite's armhf one (bullseye, bookworm, trixie) or a Debian kernel "
                        "by name (debian-6.1-arm64)")
    p.add_argument("--scenario", action="append", metavar="FILE", help="a scenario file, or 'needs' (the board's own)")
    p.add_argument("--target", choices=("emulated", "serial", "ssh"), default=None)
    p.add_argument("--boot", choices=("direct", "uboot", "ssh"), default=None)
    p.add_argument("-j", "--jobs", type=int, default=None, metavar="N",
                   help="cells at a time (default: the number of cores: each QEMU guest takes one)")
    p.add_argument("--out", metavar="DIR", help="the matrix folder (default: a fresh runs/matrix-<UTC time>-<random>)")
    p.add_argument("--replace", action="store_true", help="write into --out even though it holds a summary.json")
    p.add_argument("--junit", metavar="FILE", help="JUnit XML, one testsuite per cell (default: OUT/junit.xml)")
    p.add_argument("--json", action="store_true", help="print summary.json instead of the table")
    p.add_argument("--retries", type=int, default=None, metavar="N",
                   help="retry a cell up to N times after an infrastructure failure only")
    p.add_argument("--retry-backoff", type=float, default=2.0, metavar="SECONDS")
    p.add_argument("--timeout", type=float, default=None, help="seconds for each cell's target session")
    p.add_argument("--cache", metavar="DIR")
    p.add_argument("--boot-per-cell", action="store_true",
                   help="boot the emulated board once per cell (default: cells of one board, kernel and command "
                        "line share boots while each scenario leaves the allocator as it found it)")

    p = add("suggest", "list attached USB-serial adapters with a match rule to paste", _cmd_suggest)
    return parser


def _report_bug(exc: BaseException) -> int:
    fd, path = tempfile.mkstemp(prefix="cma-tool-bug-", suffix=".txt")
    with os.fdopen(fd, "w") as fh:
        fh.write(f"cma-tool {__version__}\nargv: {sys.argv!r}\n\n")
        fh.write("".join(traceback.format_exception(exc)))
    print(f"internal error: {type(exc).__name__}: {exc}\n"
          f"This is a bug in cma-tool, not in your input. Details: {path}", file=sys.stderr)
    return ExitCode.BUG


def main(argv: Sequence[str] | None = None) -> int:
    import logging

    # paramiko logs (with a traceback) every connection attempt a rebooting board refuses;
    # our own errors say what failed, so its records are not for the terminal.
    paramiko_log = logging.getLogger("paramiko")
    paramiko_log.addHandler(logging.NullHandler())
    paramiko_log.propagate = False
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as err:
        _print_diagnostics(err)
        return ExitCode.CONFIG
    except CmaToolError as err:
        print(f"{err.kind} error: {err}", file=sys.stderr)
        return int(err.exit_code)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return ExitCode.INTERRUPTED
    except BrokenPipeError:
        return ExitCode.OK
    except Exception as exc:  # noqa: BLE001 - last line of defence: a bug, said as one
        return _report_bug(exc)


def program() -> int:
    """The process's entry point (the ``cma-tool`` script, ``python3 -m cma_tool``): :func:`main`, then a quick exit."""
    # Loading our ~240 modules allocates ~100k objects, which with the default threshold (700)
    # sets off ~35 young-generation collections before a run's board even boots (~5 ms measured),
    # each finding nothing to free: import-time objects live as long as the process. A higher
    # threshold collects as surely, less often; the two older generations keep their defaults.
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(50_000, older, oldest)
    code = main()
    # The command is done and every file it wrote is written and closed. What is left is the
    # interpreter's exit, whose last garbage collection walks every object the ~240 loaded modules
    # made, only to free memory the process gives back as it ends: 20-35 ms measured, a tenth of a
    # warm run's cost over plain QEMU. Frozen objects are left out of that walk; nothing else
    # changes (objects are still freed as their last reference goes, atexit handlers still run).
    # Not in main(): called in-process (tests), it would keep the caller's garbage cycles forever.
    gc.freeze()
    return code


if __name__ == "__main__":
    raise SystemExit(program())
