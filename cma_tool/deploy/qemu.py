"""The emulated board: QEMU virt (armhf, TCG) booting our image with our memory layout.

(An arm64 kernel boots on virt with a Cortex-A57 another way: :mod:`cma_tool.deploy.arm64_boot`.)

How the layout survives: QEMU's ``-dtb`` would replace our /memory with one
bank covering all of ``-m``, so the board's DTB is *appended* to the zImage
(``cat vmlinuz board.dtb``, CONFIG_ARM_APPENDED_DTB) and QEMU gets no -dtb,
-append or -initrd. The bootargs and the initrd's place go into /chosen, and
the initrd is put in RAM by QEMU's generic loader at an address of ours
inside bank 0 (:data:`DEFAULT_INITRD_ADDR`).

The serial console is a Unix socket that QEMU serves (``-chardev
socket,server=on,wait=on``): open ``board.serial_url`` (``unix://@NAME``, an
abstract socket name) with pyserial's ``serial_for_url`` (our
``protocol_unix`` handler). We bind the listening socket ourselves and hand
its descriptor to QEMU, so there is no name race with other boards, and with
``wait=on`` the guest does not start before a reader is connected: no byte of
the boot log is lost.

A boot whose console is only read can give ``console_file`` instead: QEMU
then writes the console into that file (``-chardev file``), never waiting for
a reader, and ``board.serial_url`` follows it (``follow:///PATH?writer=PID``,
our ``protocol_follow`` handler).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import secrets
import shutil
import signal
import socket
import struct
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from cma_tool.deploy import protocol_follow, protocol_unix
from cma_tool.deploy.image import TargetImage, compose_initrd
from cma_tool.errors import CmaToolError, ConfigError, InfraError, TargetError
from cma_tool.sizes import format_size, hexaddr

MiB = 1 << 20
QEMU = "qemu-system-arm"
#: The machine as measured in the reference (TCG: KVM cannot run ARM guests on x86).
MACHINE_ARGS = ("-M", "virt,highmem=off", "-cpu", "cortex-a15", "-nographic", "-nic", "none")
#: QEMU and its machine options by the kernel's architecture: arm64 runs on virt with a Cortex-A57
#: (its RAM ends below 4 GiB with -m 768M, so no highmem option is needed).
MACHINES = {
    "armhf": (QEMU, MACHINE_ARGS),
    "arm64": ("qemu-system-aarch64", ("-M", "virt", "-cpu", "cortex-a57", "-nographic", "-nic", "none")),
}
DEFAULT_MEMORY = "768M"
VIRT_RAM_BASE = 0x4000_0000
#: Where the initrd goes: 64 MiB into bank 0. The kernel decompresses to
#: 0x40008000 and the decompressor moves itself (with the appended DTB) just
#: above the kernel's end, below 0x42000000 for Debian's armmp kernel; the
#: emulated Aquila's bank 0 ends at 0x45000000, so 16 MiB are left for the
#: initrd (ours is ~2 MiB). CMA never lands on it: memblock reserves the
#: initrd before any CMA area is placed, and static (reg) pools are checked
#: against it in :func:`build_board_dtb`.
DEFAULT_INITRD_ADDR = 0x4400_0000
#: Kernel + decompressor room at the bottom of bank 0 that the initrd must not enter.
KERNEL_ROOM = 32 * MiB



@dataclass(frozen=True)
class MemoryBank:
    base: int
    size: int

    @property
    def end(self) -> int:
        return self.base + self.size

    def __str__(self) -> str:
        return f"{hexaddr(self.base)}/{format_size(self.size)}"


#: Aquila's bank sizes (80 MiB on DMC0, 384 MiB on DMC1), disjoint, moved into virt's RAM window.
EMULATED_AQUILA_BANKS = (MemoryBank(0x4000_0000, 80 * MiB), MemoryBank(0x5000_0000, 384 * MiB))


@dataclass(frozen=True)
class BootFiles:
    """What one boot needs, all inside ``workdir``."""

    kernel: Path  # the zImage (a hard link to the cached image's)
    initrd: Path
    initrd_addr: int
    dtb: Path
    dts: Path  # the source dtc compiled (error lines refer to it)
    bootargs: str
    #: Where the direct boot loads ``dtb``: right after the zImage in RAM, as if appended to it.
    dtb_addr: int | None = None
    #: arm64 (cma_tool.deploy.arm64_boot): QEMU gets no -kernel; every file is put in RAM at its
    #: address and the first CPU starts at ``entry`` (a boot stub that jumps into the kernel).
    architecture: str = "armhf"
    loads: tuple[tuple[Path, int], ...] = ()
    entry: int | None = None


#: QEMU's ARM direct boot: RAM starts here on virt, and a zImage is loaded this far into it.
VIRT_LOADER_START = 0x4000_0000
KERNEL_LOAD_OFFSET = 0x1_0000


def zimage_size(path: Path) -> int:
    """The zImage's own length from its header (end - start): where an appended DTB begins."""
    with path.open("rb") as fh:
        head = fh.read(0x30)
    magic, start, end = struct.unpack_from("<III", head, 0x24) if len(head) == 0x30 else (0, 0, 0)
    if magic != 0x016F2818:
        raise InfraError(f"{path} is not an ARM zImage (no zImage magic at 0x24)")
    return int(end - start)


def link_cached(source: Path, dest: Path) -> Path:
    """``dest`` as a hard link to a cached file (a copy where no link can be made: another file system)."""
    dest.unlink(missing_ok=True)
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)
    return dest


def dump_virt_dtb(dest: Path, *, memory: str = DEFAULT_MEMORY, architecture: str = "armhf") -> Path:
    """QEMU's own device tree for the virt machine (``-machine dumpdtb=``)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    qemu, machine = MACHINES[architecture]
    _need(qemu, "qemu-system-arm")
    out = subprocess.run(
        [qemu, *machine, "-m", memory, "-machine", f"dumpdtb={dest}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0 or not dest.is_file():
        raise InfraError(f"{qemu} -machine dumpdtb failed (exit {out.returncode}): {out.stderr.strip()}")
    return dest


def cached_virt_dts(folder: Path, *, memory: str = DEFAULT_MEMORY, architecture: str = "armhf") -> Path:
    """QEMU's own device tree as :func:`dump_virt_dtb` gives it, decompiled, kept in ``folder`` for the next run.

    Dumping it starts QEMU (about 0.1 s) and decompiling it starts dtc: every
    run paid both for the same text. The tree depends only on the QEMU binary
    and the machine's options, so those name the cached copy; a new QEMU
    (another size or time) gets a new one. Written under a temporary name and
    renamed, so runs side by side never read half a file.
    """
    qemu, machine = MACHINES[architecture]
    binary = Path(shutil.which(qemu) or qemu).resolve()
    try:
        st = binary.stat()
    except OSError:  # dump_virt_dtb says what is missing
        return dump_virt_dtb(folder / "virt.dtb", memory=memory, architecture=architecture)
    key = hashlib.sha256(repr((str(binary), st.st_size, st.st_mtime_ns, machine, memory))
                         .encode()).hexdigest()[:16]
    cached = folder / f"virt-{key}.dts"
    if not cached.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        fresh = dump_virt_dtb(folder / f".virt-{key}-{os.getpid()}.dtb", memory=memory, architecture=architecture)
        try:
            text = _decompile(fresh)
        finally:
            fresh.unlink(missing_ok=True)
        tmp = fresh.with_suffix(".dts")
        tmp.write_text(text)
        os.replace(tmp, cached)
    return cached


def _decompile(dtb: Path) -> str:
    _need("dtc", "device-tree-compiler")
    out = subprocess.run(["dtc", "-q", "-I", "dtb", "-O", "dts", str(dtb)], capture_output=True, check=False)
    if out.returncode != 0:
        raise InfraError(f"dtc cannot decompile {dtb}: {out.stderr.decode(errors='replace').strip()}")
    return out.stdout.decode()


def build_board_dtb(
    base: Path,
    dest: Path,
    *,
    banks: Sequence[MemoryBank],
    reserved_memory_dts: str = "",
    bootargs: str,
    initrd: tuple[int, int] | None = None,
    rng_seed: bytes | None = None,
) -> Path:
    """Compile ``base`` (a DTB, or the DTS it decompiles to) with our /memory, /reserved-memory and /chosen into ``dest``.

    ``reserved_memory_dts`` is DTS text placed in the root node, normally a
    whole ``reserved-memory { ... };`` node written with the root's cells
    (virt: #address-cells = #size-cells = 2). ``initrd`` is (start, end).
    The source dtc compiled is kept beside ``dest`` as ``.dts``: dtc's
    error lines refer to it. The edits use dtc's own merging of repeated
    node definitions (and /delete-node/), not text surgery on the dump.
    """
    _need("dtc", "device-tree-compiler")
    if not banks:
        raise ConfigError("the board has no memory banks")
    base_text = base.read_text() if base.suffix == ".dts" else _decompile(base)
    memory_nodes = re.findall(r"^\t(memory@[0-9a-fA-F]+) \{", base_text, re.MULTILINE)

    cells = ", ".join(f"<{_cells(b.base)} {_cells(b.size)}>" for b in banks)
    chosen = [f'\t\tbootargs = "{_dts_string(bootargs)}";']
    if initrd is not None:
        chosen.append(f"\t\tlinux,initrd-start = <{_cells(initrd[0])}>;")
        chosen.append(f"\t\tlinux,initrd-end = <{_cells(initrd[1])}>;")
    if rng_seed is not None:
        chosen.append(f"\t\trng-seed = [{rng_seed.hex()}];")
    text = (
        base_text
        + "\n/ {\n"
        + "".join(f"\t/delete-node/ {name};\n" for name in memory_nodes)
        + "};\n\n/ {\n"
        + f'\tmemory@{banks[0].base:x} {{\n\t\tdevice_type = "memory";\n\t\treg = {cells};\n\t}};\n\n'
        + "\t/* ---- reserved memory, as given ---- */\n"
        + reserved_memory_dts
        + "\n\t/* ---- end of reserved memory ---- */\n\n"
        + "\tchosen {\n"
        + "\n".join(chosen)
        + "\n\t};\n};\n"
    )
    dts = dest.with_suffix(".dts")
    dts.parent.mkdir(parents=True, exist_ok=True)
    dts.write_text(text)
    out = subprocess.run(["dtc", "-q", "-I", "dts", "-O", "dtb", "-o", str(dest), str(dts)], capture_output=True, check=False)
    if out.returncode != 0:
        raise ConfigError(
            f"dtc rejected the board device tree: {out.stderr.decode(errors='replace').strip()}",
            hint=f"the source is {dts}; the reserved-memory text given starts after the 'reserved memory, as given' comment",
        )
    if initrd is not None:
        for name, start, size in static_reserved_regions(dest):
            if start < initrd[1] and initrd[0] < start + size:
                raise ConfigError(
                    f"reserved-memory node {name} ({hexaddr(start)}, {format_size(size)}) overlaps the initrd "
                    f"at {hexaddr(initrd[0])}..{hexaddr(initrd[1])}",
                    hint="move the region or pass another initrd address",
                )
    return dest


def static_reserved_regions(dtb: Path) -> list[tuple[str, int, int]]:
    """(node name, base, size) of every /reserved-memory child with a ``reg``."""
    import libfdt  # python3-libfdt; lazy: only DTB checks need it

    fdt = libfdt.Fdt(dtb.read_bytes())
    root_ac = fdt.getprop(0, "#address-cells").as_uint32()
    root_sc = fdt.getprop(0, "#size-cells").as_uint32()
    try:
        parent = fdt.path_offset("/reserved-memory")
    except libfdt.FdtException:
        return []
    regions = []
    node = fdt.first_subnode(parent, quiet=[libfdt.NOTFOUND])
    while node >= 0:
        reg = fdt.getprop(node, "reg", quiet=[libfdt.NOTFOUND])
        if not isinstance(reg, int):
            words = [int.from_bytes(bytes(reg)[i : i + 4], "big") for i in range(0, len(reg), 4)]
            step = root_ac + root_sc
            for i in range(0, len(words) - step + 1, step):
                start = _join_cells(words[i : i + root_ac])
                size = _join_cells(words[i + root_ac : i + step])
                regions.append((fdt.get_name(node), start, size))
        node = fdt.next_subnode(node, quiet=[libfdt.NOTFOUND])
    return regions


def board_dtb(workdir: Path, *, banks: Sequence[MemoryBank], reserved_memory_dts: str, bootargs: str,
              initrd: tuple[int, int], rng_seed: bytes | None, memory: str, architecture: str = "armhf",
              image: TargetImage | None = None) -> Path:
    """``workdir/board.dtb``: QEMU's own virt tree for ``architecture`` with the board's banks, pools and /chosen.

    With an ``image``, QEMU's tree is taken from (and kept in) the image
    cache beside it (:func:`cached_virt_dts`), else dumped for this boot alone.
    """
    virt_cache = image.directory.parent / "qemu-dtb" if image is not None else None
    if virt_cache is not None:
        base = cached_virt_dts(virt_cache, memory=memory, architecture=architecture)
    else:
        base = dump_virt_dtb(workdir / "virt.dtb", memory=memory, architecture=architecture)
    dtb = build_board_dtb(base, workdir / "board.dtb", banks=banks, reserved_memory_dts=reserved_memory_dts,
                          bootargs=bootargs, initrd=initrd, rng_seed=rng_seed)
    if virt_cache is None:
        base.unlink(missing_ok=True)  # QEMU's own tree (1 MiB, mostly padding) was only the base of board.dtb
    return dtb


def prepare_boot(
    image: TargetImage,
    workdir: Path,
    *,
    banks: Sequence[MemoryBank] = EMULATED_AQUILA_BANKS,
    reserved_memory_dts: str = "",
    bootargs: str,
    agent_files: Mapping[str, bytes | str] | None = None,
    initrd_addr: int = DEFAULT_INITRD_ADDR,
    rng_seed: bytes | None = None,
    memory: str = DEFAULT_MEMORY,
) -> BootFiles:
    """Write everything one boot needs into ``workdir``: run initrd, board DTB, zImage+DTB.

    ``agent_files`` go into the run initrd as /cmatool/<name> (see :func:`compose_initrd`).
    An arm64 image is prepared by :func:`cma_tool.deploy.arm64_boot.prepare_arm64_boot` instead.
    """
    if image.architecture == "arm64":
        from cma_tool.deploy.arm64_boot import prepare_arm64_boot

        return prepare_arm64_boot(image, workdir, banks=banks, reserved_memory_dts=reserved_memory_dts,
                                  bootargs=bootargs, agent_files=agent_files, initrd_addr=initrd_addr,
                                  rng_seed=rng_seed, memory=memory)
    workdir.mkdir(parents=True, exist_ok=True)
    initrd = compose_initrd(image, agent_files, workdir / "initrd.gz")
    initrd_end = initrd_addr + initrd.stat().st_size
    _check_layout(banks, initrd_addr, initrd_end, memory)
    dtb = board_dtb(workdir, banks=banks, reserved_memory_dts=reserved_memory_dts, bootargs=bootargs,
                    initrd=(initrd_addr, initrd_end), rng_seed=rng_seed, memory=memory, image=image)
    low = min(banks, key=lambda b: b.base).base
    for name, start, _size in static_reserved_regions(dtb):
        if start < low + KERNEL_ROOM:
            raise ConfigError(
                f"reserved-memory node {name} at {hexaddr(start)} is inside the first {format_size(KERNEL_ROOM)} "
                f"of bank 0, where the kernel is decompressed and the appended DTB lands",
                hint=f"place static pools at or above {hexaddr(low + KERNEL_ROOM)}",
            )
    # The cached zImage itself (a hard link, never a copy), and the board DTB loaded into RAM right after
    # it: where the decompressor looks for an appended DTB. QEMU's -dtb is no use here: QEMU rewrites that
    # tree's /memory to one bank, and the emulated Aquila has two.
    kernel = link_cached(image.kernel, workdir / "vmlinuz")
    dtb_addr = VIRT_LOADER_START + KERNEL_LOAD_OFFSET + zimage_size(kernel)
    return BootFiles(kernel, initrd, initrd_addr, dtb, dtb.with_suffix(".dts"), bootargs, dtb_addr)


def die_with_parent() -> None:
    """In the child before exec: the kernel kills it when the run that started it dies, SIGKILL included.

    Our own cleanup stops QEMU on every way out Python sees; a SIGKILL'd run
    sees none, and its QEMU would go on booting (and holding the CPU) for
    seconds. PR_SET_PDEATHSIG is Linux's; there is no library call for it in
    the standard library, so ctypes.
    """
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)


class VirtMachine:
    """A QEMU virt machine whose console is a socket of ours, or a file it writes; leaving the block kills QEMU.

    Subclasses say what it boots (:meth:`boot_args`). ``with Board(...) as
    board:`` then open ``board.serial_url`` with pyserial (QEMU holds the
    guest until a reader connects), or use :meth:`open_console`.
    ``board.process`` is the QEMU process.
    """

    def __init__(
        self,
        *,
        memory: str = DEFAULT_MEMORY,
        workdir: Path,
        extra_args: Sequence[str] = (),
        reboot: bool = False,
        architecture: str = "armhf",
        console_file: Path | None = None,
    ) -> None:
        self.memory = memory
        #: None: the console is a socket (read and written); else the file QEMU writes it to (only read).
        self.console_file = console_file
        self.qemu, self.machine_args = MACHINES[architecture]
        self.workdir = workdir
        self.extra_args = tuple(extra_args)
        # -no-reboot: a guest that reboots (panic=-1, a watchdog) makes QEMU exit
        # instead of starting over; ``reboot=True`` lets it start again (a boot loop).
        self.reboot = reboot
        self.serial_url = ""
        self.stderr_path = self.workdir / "qemu.stderr"
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError("the board is not running: use it as a context manager")
        return self._process

    def boot_args(self) -> list[str]:
        """What the machine boots: QEMU options after the machine, memory and console ones."""
        raise NotImplementedError

    def command(self, serial_fd: int | None) -> list[str]:
        """QEMU's command line; the console on the listening socket ``serial_fd``, or into :attr:`console_file`."""
        # A file: QEMU's option syntax writes a comma inside a value twice. A Unix socket (see
        # deploy/protocol_unix.py): QEMU's UART writes a byte at a time, which over TCP cost the guest
        # ~0.3 s a boot with Nagle off, and U-Boot's echo ~44 ms per 16-byte chunk with it on (held
        # until our delayed ACK).
        console = (f"file,id=console,path={str(self.console_file).replace(',', ',,')}" if serial_fd is None
                   else f"socket,id=console,fd={serial_fd},server=on,wait=on")
        return [
            self.qemu,
            *self.machine_args,
            "-m",
            self.memory,
            *([] if self.reboot else ["-no-reboot"]),
            "-monitor",
            "none",
            *self.boot_args(),
            "-chardev",
            console,
            "-serial",
            "chardev:console",
            *self.extra_args,
        ]

    def __enter__(self) -> Self:
        _need(self.qemu, "qemu-system-arm")
        protocol_unix.register()  # so any pyserial user can open the URLs we hand out
        if self.console_file is not None:
            # Empty before QEMU starts, so a reader may open it at once; QEMU appends from byte 0.
            self.console_file.parent.mkdir(parents=True, exist_ok=True)
            self.console_file.write_bytes(b"")
            self._start(self.command(None), pass_fds=())
            self.serial_url = protocol_follow.follow_url(self.console_file, self.process.pid)
            return self
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # An abstract name (Linux): nothing on disk to clean up, no path-length limit from deep run folders.
        name = f"cma-tool-console-{os.getpid()}-{secrets.token_hex(6)}"
        try:
            listener.bind("\0" + name)
            listener.listen(1)
            self._start(self.command(listener.fileno()), pass_fds=(listener.fileno(),))
        finally:
            listener.close()
        self.serial_url = f"unix://@{name}"
        return self

    def _start(self, cmd: list[str], pass_fds: Sequence[int]) -> None:
        try:
            self._stderr = self.stderr_path.open("wb")
            try:
                self._process = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=self._stderr,
                    stderr=self._stderr,
                    pass_fds=pass_fds,
                    start_new_session=True,  # a Ctrl-C on our terminal reaches us, not QEMU
                    preexec_fn=die_with_parent,
                )
            except OSError as exc:
                raise InfraError(f"cannot start {self.qemu}: {exc}") from exc
        except BaseException:
            self._cleanup()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._cleanup()

    def qemu_stderr(self) -> str:
        if self._stderr is not None:
            self._stderr.flush()
        try:
            text = self.stderr_path.read_text(errors="replace").strip()
        except OSError:
            text = ""
        return f"QEMU said: {text}" if text else "QEMU said nothing"

    def wait_for_power_off(self, timeout: float) -> None:
        """Give the guest's ``poweroff -f`` time to end QEMU (-no-reboot); the context manager kills it after."""
        try:
            self.wait(timeout)
        except TargetError:
            pass

    def wait(self, timeout: float) -> int:
        """Wait for QEMU to exit (the guest powered off or rebooted); its exit code."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise TargetError(f"the emulated board did not power off within {timeout:g} s") from exc

    def _cleanup(self) -> None:
        proc = self._process
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGKILL)
            except ProcessLookupError:
                pass
        if proc is not None:
            proc.wait()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None


class EmulatedBoard(VirtMachine):
    """The emulated board booting our kernel directly: QEMU loads zImage+DTB and the initrd.

    (Booting through U-Boot instead: :mod:`cma_tool.deploy.emulated_uboot`.)
    """

    def __init__(
        self,
        boot: BootFiles,
        *,
        memory: str = DEFAULT_MEMORY,
        workdir: Path | None = None,
        extra_args: Sequence[str] = (),
        console_file: Path | None = None,
    ) -> None:
        super().__init__(memory=memory, workdir=workdir or boot.kernel.parent, extra_args=extra_args,
                         architecture=boot.architecture, console_file=console_file)
        self.boot = boot

    def boot_args(self) -> list[str]:
        if self.boot.entry is not None:  # arm64: files in RAM, the first CPU starts in the boot stub
            return [*(a for path, addr in self.boot.loads
                      for a in ("-device", f"loader,file={path},addr={addr:#x},force-raw=on")),
                    "-device", f"loader,addr={self.boot.entry:#x},cpu-num=0"]
        return [
            "-kernel",
            str(self.boot.kernel),
            "-device",
            f"loader,file={self.boot.initrd},addr={self.boot.initrd_addr:#x},force-raw=on",
            *(["-device", f"loader,file={self.boot.dtb},addr={self.boot.dtb_addr:#x},force-raw=on"]
              if self.boot.dtb_addr is not None else []),
        ]


@contextmanager
def blame_qemu(machine: VirtMachine) -> Iterator[None]:
    """A failure while QEMU itself has died of an error is QEMU's (InfraError), not the board's.

    A guest that panics reboots, and QEMU (-no-reboot) exits 0: that stays the board's fault.
    """
    try:
        yield
    except CmaToolError as err:
        code = machine.process.poll()
        if code is None:
            try:
                code = machine.process.wait(0.5)
            except subprocess.TimeoutExpired:  # still running: the error stands as it is
                raise err from None
        if code != 0:
            raise InfraError(f"QEMU stopped with exit code {code}; {machine.qemu_stderr()}") from err
        raise


# ---- helpers ----------------------------------------------------------------


def _check_layout(banks: Sequence[MemoryBank], initrd_start: int, initrd_end: int, memory: str) -> None:
    from cma_tool.sizes import parse_size

    ram_end = VIRT_RAM_BASE + parse_size(memory)
    problems = []
    ordered = sorted(banks, key=lambda b: b.base)
    for bank in ordered:
        if bank.base < VIRT_RAM_BASE or bank.end > ram_end:
            problems.append(f"bank {bank} is outside virt's RAM ({hexaddr(VIRT_RAM_BASE)}..{hexaddr(ram_end)} with -m {memory})")
    for a, b in itertools.pairwise(ordered):
        if b.base < a.end:
            problems.append(f"banks {a} and {b} overlap")
    first = ordered[0] if ordered else None
    if first is not None and first.base != VIRT_RAM_BASE:
        problems.append(
            f"the lowest bank must start at {hexaddr(VIRT_RAM_BASE)} (QEMU loads the kernel there), not {hexaddr(first.base)}"
        )
    if first is not None and not (first.base + KERNEL_ROOM <= initrd_start and initrd_end <= first.end):
        problems.append(
            f"the initrd ({hexaddr(initrd_start)}..{hexaddr(initrd_end)}) must lie in bank 0 "
            f"above the kernel's {format_size(KERNEL_ROOM)} ({hexaddr(first.base + KERNEL_ROOM)}..{hexaddr(first.end)})"
        )
    if problems:
        raise ConfigError("the emulated board's memory layout cannot boot: " + "; ".join(problems))


def _cells(value: int) -> str:
    return f"0x{value >> 32:x} 0x{value & 0xFFFF_FFFF:x}"


def _join_cells(words: Sequence[int]) -> int:
    value = 0
    for w in words:
        value = (value << 32) | w
    return value


def _dts_string(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        raise InfraError(f"{tool} is not installed", hint=f"apt-get install {package}")
