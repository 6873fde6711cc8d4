"""The emulated board as a target: QEMU virt is its console and its power, like any bench board's.

Three ways on, one preparation: the image (Debian's kernel and our initrd,
cached), the board's DTB (QEMU's own virt tree with the board's banks and
reserved-memory, :func:`~cma_tool.deploy.qemu.prepare_boot`) and the command
line from :func:`~cma_tool.generate.bootargs.kernel_cmdline`. Then:

- ``direct``: QEMU loads the zImage with the DTB appended, and the initrd;
- ``uboot``: QEMU runs real U-Boot, which loads the same files over QEMU's
  TFTP server and boots them: the very path a bench board takes
  (:mod:`cma_tool.deploy.uboot_boot`);
- ``ssh``: the direct boot of the ssh flavour of the image; the agent and its
  plan go over SSH, as on a board that runs its own Linux.

QEMU starting is power on, QEMU ending is power off: the context managers
kill it on every way out.
"""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING

from cma_tool.deploy.sections import console_text
from cma_tool.deploy.targets import Job, Prepared, TargetOptions
from cma_tool.errors import ConfigError

if TYPE_CHECKING:  # imported where used: `cma-tool run` pays only for the way it takes
    from cma_tool.board.types import Board
    from cma_tool.deploy.image import TargetImage
    from cma_tool.deploy.image.cache import KernelConfig
    from cma_tool.deploy.qemu import BootFiles
    from cma_tool.model.profiles import KernelProfile


class EmulatedTarget:
    """QEMU virt shaped like the board's ``emulation:`` section, booted ``direct``, through ``uboot`` or for ``ssh``."""

    def __init__(self, boot: str, options: TargetOptions) -> None:
        from cma_tool.model.profiles import debian_kernel

        chosen = options.kernel_name is not None or options.suite is not None
        #: The Debian kernel the emulator boots (--kernel debian-6.1-arm64, or --suite's armhf kernel).
        self.kernel = debian_kernel(options.kernel_name, options.suite)
        if self.kernel.architecture != "armhf" and boot == "uboot":
            # QEMU's arm64 U-Boot rewrites /memory, and arm64 takes no mem=SIZE@BASE to put a bank back.
            raise ConfigError(f"--boot uboot is armhf only; {self.kernel.name} boots direct or for ssh",
                              hint="leave out --boot (QEMU loads the arm64 Image, DTB and initrd itself)")
        self.boot = boot
        self.options = options
        # Without --kernel/--suite the board file's profile stands (its own build values).
        self.kernel_profile = self.kernel.profile if chosen else None
        self._files: BootFiles | None = None
        self._image: TargetImage | None = None

    def prepare(self, job: Job) -> Prepared:
        from cma_tool.deploy import image as timage
        from cma_tool.deploy import qemu
        from cma_tool.generate.bootargs import kernel_cmdline
        from cma_tool.generate.dts import reserved_memory_dts

        board, profile = job.plan.board, job.plan.profile
        if board.emulation is None:
            raise ConfigError(f"{board.path} has no 'emulation' section: it cannot run on the emulated target",
                              hint="use boards/qemu-aquila.yaml, or include it and override")
        job.say("      target image (cached)")
        image = timage.ensure_image(job.cache, progress=lambda m: job.say(f"      {m}"), ssh=self.boot == "ssh",
                                    kernel=self.kernel.name)
        check_kernel_matches(board, profile, image.config)
        job.stage("image", kernel=image.kernel_package, version=image.kernel_version)
        cmdline = kernel_cmdline(board, profile, agent="ssh" if self.boot == "ssh" else "run",
                                 extra=job.extra_bootargs)
        files = qemu.prepare_boot(
            image, job.out, banks=[qemu.MemoryBank(b.base, b.size) for b in board.banks],
            reserved_memory_dts=reserved_memory_dts(board, profile, address_cells=2, size_cells=2),
            bootargs=cmdline.text, memory=self.memory(job),
            # Over SSH the plan travels with the agent; on a console boot it is in the initrd.
            agent_files=None if self.boot == "ssh" else {"plan": job.agent_plan_text},
            # /chosen/rng-seed: the guest's RNG is ready at once (dropbear's keys need it); fresh every run.
            rng_seed=secrets.token_bytes(32),
        )
        self._files, self._image = files, image
        # The run's kernel is a link to (or a copy of) the cached one, checked against its record just now.
        known = {str(files.kernel): image.sha256[image.kernel.name]} if image.kernel.name in image.sha256 else {}
        return Prepared(cmdline.text, files={"dtb": str(files.dtb), "kernel": str(files.kernel),
                                             "initrd": str(files.initrd)}, notes=cmdline.notes, sha256=known)

    @staticmethod
    def memory(job: Job) -> str:
        emulation = job.plan.board.emulation
        assert emulation is not None
        return f"{emulation.memory >> 20}M"

    def run(self, job: Job, prepared: Prepared) -> str:
        files = self._files
        assert files is not None, "prepare() runs first"
        deadline = time.monotonic() + job.timeout
        if self.boot == "ssh":
            return self._run_ssh(job, files, deadline)
        return self._run_console(job, files, deadline)

    def _run_console(self, job: Job, files: BootFiles, deadline: float) -> str:
        from cma_tool.deploy.console import Console
        from cma_tool.deploy.qemu import EmulatedBoard, VirtMachine, blame_qemu
        from cma_tool.deploy.watch import watch_agent

        def left(cap: float | None = None) -> float:
            remaining = max(1.0, deadline - time.monotonic())
            return remaining if cap is None else min(cap, remaining)

        board = job.plan.board
        machine: VirtMachine
        if self.boot == "uboot":
            from cma_tool.deploy.emulated_uboot import TFTP_SERVER, UBOOT_LINE_LIMIT, UBootBoard, prepare_uboot_files
            from cma_tool.deploy.qemu import MemoryBank
            from cma_tool.deploy.uboot_boot import TftpLoader, boot_with_uboot

            loads = prepare_uboot_files(files, job.out, banks=[MemoryBank(b.base, b.size) for b in board.banks])
            machine = UBootBoard(job.out, memory=self.memory(job), tftp_dir=job.out)
        else:
            # Only read: QEMU writes the console straight into console.log and never waits for us.
            machine = EmulatedBoard(files, memory=self.memory(job), workdir=job.out,
                                    console_file=job.out / "console.log")
        with machine as qb:
            job.stage("boot", serial=qb.serial_url, qemu_stderr=str(qb.stderr_path))
            # Once QEMU has gone its port never comes back: give up reconnecting quickly.
            with Console(qb.serial_url, job.out, name="console", default_timeout=job.timeout,
                         reconnect_timeout=2.0) as console, blame_qemu(qb):
                if self.boot == "uboot":
                    boot_with_uboot(console, loads, TftpLoader(TFTP_SERVER, job.out), bootargs=files.bootargs,
                                    prompt="=> ", max_line=UBOOT_LINE_LIMIT, left=left, on_stage=job.stage)
                watch_agent(console, left, job.stage)
            qb.wait_for_power_off(15)
        return console_text((job.out / "console.log").read_bytes())

    def _run_ssh(self, job: Job, files: BootFiles, deadline: float) -> str:
        from cma_tool.deploy.emulated_ssh import booted_over_ssh
        from cma_tool.deploy.ssh_board import capture_over_ssh

        image = self._image
        assert image is not None, "prepare() runs first"
        if image.capture_program is None:
            raise ConfigError(f"image {image.key} is the {image.flavour} flavour: it has no capture program to "
                              "deploy", hint="build it with ensure_image(ssh=True)")
        with booted_over_ssh(files, image=image, workdir=job.out, memory=self.memory(job), timeout=job.timeout,
                             on_stage=job.stage) as sb:
            out = capture_over_ssh(sb.ssh, capture_program=image.capture_program, plan=job.agent_plan_text,
                                   workdir=job.out, deadline=deadline, on_stage=job.stage,
                                   console=sb.console)
        # The boot log came on the console; the agent's sections over SSH: observe reads them as one text.
        return console_text((job.out / "console.log").read_bytes()).rstrip("\n") + "\n" + out


def check_kernel_matches(board: Board, profile: KernelProfile, config: KernelConfig) -> None:
    """The model must predict the kernel the target runs: its build facts must be the profile's."""
    written = profile.max_order_as_written
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
                          + "; ".join(diffs),
                          hint="fix the kernel: section so the model predicts this kernel; for a Debian kernel "
                               "whose package changed, read the packages' configs again: "
                               "python3 -m cma_tool.deploy.image --kconfig")
