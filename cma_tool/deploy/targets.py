"""The ways onto a board, behind one small protocol, and the one registry that picks a way.

A way onto a board (labgrid would call it a strategy over a console and a
power provider) does two things for a run, in this order:

- :meth:`Target.prepare`: everything the board needs, built and checked
  before it is touched (the image, the device tree, the command line the
  kernel will boot with, so the model can predict before the boot);
- :meth:`Target.run`: power on or reach the board, boot, let the agent run
  the capture schedule, power off (always, errors included); return the text
  to observe (the console as it arrived, or the agent's output over SSH).

The registry maps ``(--target, --boot)`` to a way and checks once, before
anything runs, that the pair exists and that every option given applies to
it: an impossible pair or a flag of another way is a usage error (exit 2),
never ignored. A new way onto a board is one module and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from cma_tool.captures import Schedule
from cma_tool.errors import UsageError
from cma_tool.plan import Plan


@dataclass(frozen=True)
class TargetOptions:
    """The command-line options that only some ways use; None/empty when not given."""

    suite: str | None = None  # emulated: the Debian suite whose armhf kernel the emulator boots (an alias)
    kernel_name: str | None = None  # emulated: the Debian kernel the emulator boots (debian-6.1-arm64), as --kernel
    console: str | None = None  # serial: the console URL, instead of the board file's
    kernel: Path | None = None  # serial: the board's zImage; ssh: a kernel to install and reboot into
    dtb: Path | None = None  # serial, ssh: the board's own DTB, patched with the plan
    bootargs: str = ""  # extra kernel command line
    place: str | None = None  # labgrid: the place the board is in
    coordinator: str | None = None  # labgrid: the coordinator's HOST:PORT

    def given(self) -> dict[str, str]:
        """Option name (as typed) -> value, for the ones given."""
        out = {}
        if self.suite is not None:
            out["--suite"] = self.suite
        if self.console is not None:
            out["--console"] = self.console
        if self.kernel is not None:
            out["--kernel"] = str(self.kernel)
        if self.kernel_name is not None:  # the same option on the command line; a name, not a file
            out["--kernel NAME"] = self.kernel_name
        if self.dtb is not None:
            out["--dtb"] = str(self.dtb)
        if self.bootargs.strip():
            out["--bootargs"] = self.bootargs
        if self.place is not None:
            out["--place"] = self.place
        if self.coordinator is not None:
            out["--coordinator"] = self.coordinator
        return out


@dataclass(frozen=True)
class Job:
    """One run, decided before the board is touched: what every way gets."""

    plan: Plan
    schedule: Schedule
    options: TargetOptions
    out: Path
    timeout: float
    cache: Path | None
    extra_bootargs: str  # --bootargs and the scenario's bootargs, in that order
    say: Callable[[str], None]
    stage: Callable[..., None]  # stage(name, **facts): recorded in report.json as it happens

    @property
    def agent_plan_text(self) -> str:
        return self.schedule.agent_plan().render()


@dataclass(frozen=True)
class Prepared:
    """What ``prepare`` made: the command line the kernel will boot with, and the files for the report."""

    cmdline: str
    #: False when the board boots its own command line (a running board reached over SSH): the model
    #: then predicts with the one the board's log shows it booted.
    cmdline_is_ours: bool = True
    files: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    #: path -> sha256 for those of ``files`` whose bytes the target has just hashed (a cached
    #: kernel checked against its record): the report takes these rather than reading them again.
    sha256: dict[str, str] = field(default_factory=dict)


class Target(Protocol):
    """One way onto a board."""

    #: The kernel profile the target's kernel forces on the model (the emulator's Debian
    #: kernel), or None: the board file's profile stands.
    kernel_profile: str | None

    def prepare(self, job: Job) -> Prepared: ...

    def run(self, job: Job, prepared: Prepared) -> str: ...


@dataclass(frozen=True)
class Way:
    """A registry entry: which (target, boot) pair, what it is, which options it uses."""

    target: str
    boot: str
    what: str
    make: Callable[[TargetOptions], Target]
    uses: frozenset[str]
    needs: frozenset[str] = frozenset()


def _emulated(boot: str) -> Callable[[TargetOptions], Target]:
    def make(options: TargetOptions) -> Target:
        from cma_tool.deploy.emulated import EmulatedTarget

        return EmulatedTarget(boot, options)

    return make


def _serial(options: TargetOptions) -> Target:
    from cma_tool.deploy.serial_board import SerialTarget

    return SerialTarget(options)


def _labgrid(options: TargetOptions) -> Target:
    from cma_tool.deploy.labgrid_place import LabgridTarget

    return LabgridTarget(options)


def _ssh(options: TargetOptions) -> Target:
    from cma_tool.deploy.ssh_board import SshTarget

    return SshTarget(options)


WAYS: dict[tuple[str, str], Way] = {
    (w.target, w.boot): w
    for w in (
        Way("emulated", "direct", "QEMU virt loads our kernel and DTB itself", _emulated("direct"),
            frozenset({"--kernel NAME", "--suite", "--bootargs"})),
        Way("emulated", "uboot", "QEMU virt boots real U-Boot, which loads everything over QEMU's TFTP",
            _emulated("uboot"), frozenset({"--kernel NAME", "--suite", "--bootargs"})),
        Way("emulated", "ssh", "QEMU virt boots our kernel; the agent is deployed and run over SSH (dropbear)",
            _emulated("ssh"), frozenset({"--kernel NAME", "--suite", "--bootargs"})),
        Way("serial", "uboot", "a board on a serial console: U-Boot loads the board's kernel, our initrd and the "
            "patched DTB over TFTP or YMODEM", _serial, frozenset({"--console", "--kernel", "--dtb", "--bootargs"}),
            frozenset({"--kernel"})),
        Way("ssh", "ssh", "a board already running Linux, reached over SSH (optionally rebooted into --kernel/--dtb)",
            _ssh, frozenset({"--kernel", "--dtb", "--bootargs"})),
        Way("labgrid", "uboot", "a board in a labgrid place: the place acquired through the coordinator, its "
            "console and power used, U-Boot loads the board's kernel, our initrd and the patched DTB", _labgrid,
            frozenset({"--place", "--coordinator", "--kernel", "--dtb", "--bootargs"}),
            frozenset({"--place", "--kernel"})),
    )
}
DEFAULT_BOOT = {"emulated": "direct", "serial": "uboot", "ssh": "ssh", "labgrid": "uboot"}


def resolve_target(target: str, boot: str | None, options: TargetOptions) -> tuple[Way, Target]:
    """The way for ``--target``/``--boot``, with every given option checked against it (UsageError if not)."""
    if target not in DEFAULT_BOOT:
        raise UsageError(f"--target {target!r} is not one of {', '.join(DEFAULT_BOOT)}")
    chosen = boot or DEFAULT_BOOT[target]
    way = WAYS.get((target, chosen))
    if way is None:
        boots = [b for (t, b) in WAYS if t == target]
        raise UsageError(f"--target {target} cannot boot with --boot {chosen}",
                         hint=f"--target {target} boots with: {', '.join(boots)}")
    stray = [name for name in options.given() if name not in way.uses]
    if stray:
        users = {name: sorted(f"--target {w.target} --boot {w.boot}" for w in WAYS.values() if name in w.uses)
                 for name in stray}
        raise UsageError(
            "; ".join(f"{name} does not apply to --target {target} --boot {chosen}" for name in stray),
            hint="; ".join(f"{name} is for {' or '.join(u) or 'no target'}" for name, u in users.items()))
    missing = sorted(way.needs - set(options.given()))
    if missing:
        raise UsageError(f"--target {target} --boot {chosen} needs {', '.join(missing)}",
                         hint="--kernel FILE: the board's own kernel (a zImage) that U-Boot boots; --place NAME: "
                              "the labgrid place the board is in")
    return way, way.make(options)
