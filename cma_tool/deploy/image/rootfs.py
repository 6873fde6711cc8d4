"""The image's root file system: what goes in it, staged in a folder and packed as the initrd.

The root holds busybox, the vivid capture driver with the modules it needs
(:func:`module_closure`), the static ``capture`` program
(firmware/capture/capture.c), firmware/init and firmware/cmatool-run. The ssh
flavour (:func:`stage_ssh`) adds Debian's dropbear (of the kernel's architecture) and sftp-server with
exactly the shared libraries they load (:func:`elf_dependencies`), the virtio
network drivers, /etc/passwd, root's authorized_keys and a dropbear host key,
and leaves the capture program out (the host deploys it over SSH).
"""

from __future__ import annotations

import gzip
import io
import lzma
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from cma_tool.deploy.image.keys import SshAccess, public_line, write_private
from cma_tool.deploy.image.tools import CROSS_GCC, CROSS_READELF, run_tool
from cma_tool.errors import InfraError

#: firmware/ at the top of the source tree.
FIRMWARE_DIR = Path(__file__).resolve().parents[3] / "firmware"
#: The driver that stands in for the S5PV210's FIMC, with its module closure.
CAPTURE_DRIVER = "vivid"
#: The ssh flavour: the programs it runs, (package, path in the package).
SSH_PROGRAMS = (("dropbear-bin", "usr/sbin/dropbear"), ("openssh-sftp-server", "usr/lib/sftp-server"))
#: Where the shared libraries those programs load come from. Debian's Depends
#: say the same (dropbear-bin: libc6, libcrypt1, libtomcrypt1, libtommath1,
#: zlib1g; libtomcrypt1: libgmp10); the build follows the ELF files' own
#: NEEDED entries through these packages and fails naming any library missing.
SSH_LIBRARY_PACKAGES = ("libc6", "libcrypt1", "zlib1g", "libtomcrypt1", "libtommath1", "libgmp10")
#: Every Debian package the ssh flavour takes files from.
SSH_PACKAGES = tuple(p for p, _ in SSH_PROGRAMS) + SSH_LIBRARY_PACKAGES
#: Modules the ssh flavour adds (with their modules.dep closure): virt's
#: network card is virtio-net on the virtio-mmio bus.
NETWORK_MODULES = ("virtio_mmio", "virtio_net")
#: Where dropbear (Debian's build) looks for its ed25519 host key.
DROPBEAR_HOST_KEY = "etc/dropbear/dropbear_ed25519_host_key"


def firmware_sources(firmware: Path) -> dict[str, Path]:
    """The files of ``firmware`` the image is made from, by name: init, cmatool-run, capture.c."""
    sources = {
        "init": firmware / "init",
        "cmatool-run": firmware / "cmatool-run",
        "capture.c": firmware / "capture" / "capture.c",
    }
    missing = [str(p) for p in sources.values() if not p.is_file()]
    if missing:
        raise InfraError(f"firmware sources missing: {', '.join(missing)}", hint="run from a full source tree")
    return sources


def stage_root(
    root: Path,
    sources: dict[str, Path],
    busybox_root: Path,
    moddir: Path,
    release: str,
    modules: Iterable[str],
) -> None:
    """Stage the plain image's root in ``root``: busybox, the firmware, and ``modules`` (paths under ``moddir``)."""
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "proc", "sys", "dev", "tmp", "root", "cmatool"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(busybox_root / "bin" / "busybox", root / "bin" / "busybox")
    (root / "bin" / "sh").symlink_to("busybox")
    shutil.copy2(sources["init"], root / "init")
    shutil.copy2(sources["cmatool-run"], root / "bin" / "cmatool-run")
    for p in (root / "init", root / "bin" / "cmatool-run"):
        p.chmod(0o755)
    target = root / "lib" / "modules" / release
    for rel in modules:
        dest = target / staged_name(rel)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(".xz"):
            # busybox's modprobe hands the file to init_module() as it is; the
            # kernel decompresses only through finit_module() with
            # MODULE_INIT_COMPRESSED_FILE, which busybox 1.35 does not use.
            # The module signature sits inside the xz stream and survives.
            dest.write_bytes(lzma.decompress((moddir / rel).read_bytes()))
        else:
            shutil.copy2(moddir / rel, dest)
    for name in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (moddir / name).is_file():
            shutil.copy2(moddir / name, target / name)


def staged_name(module: str) -> str:
    """A module's path in the image: compressed modules go in unpacked."""
    return module.removesuffix(".xz")


def stage_ssh(root: Path, packages: Mapping[str, Path], access: SshAccess, host_key: bytes, arch: str = "armhf") -> None:
    """Add dropbear, sftp-server, the libraries they load (all of ``arch``), the accounts and the keys to ``root``."""
    for d in ("etc/dropbear", "root/.ssh", "usr/local/bin", "var/run", "var/log"):
        (root / d).mkdir(parents=True, exist_ok=True)
    placed: list[Path] = []
    for package, rel in SSH_PROGRAMS:
        placed += _place(packages[package], rel, root)
    library_roots = [packages[p] for p in SSH_LIBRARY_PACKAGES]
    seen: set[str] = set()
    todo = [p for p in placed if not p.is_symlink()]
    while todo:
        elf = todo.pop()
        interp, needed = elf_dependencies(elf, arch)
        wanted = ([interp.lstrip("/")] if interp else []) + [f"?{soname}" for soname in needed]
        for want in wanted:
            if want in seen:
                continue
            seen.add(want)
            found = _find_library(library_roots, want, arch)
            if found is None:
                what = want[1:] if want.startswith("?") else "/" + want
                raise InfraError(
                    f"{elf.relative_to(root)} needs {what}, which none of "
                    f"{', '.join(SSH_LIBRARY_PACKAGES)} provides",
                    hint="add the Debian package that ships it to SSH_LIBRARY_PACKAGES",
                )
            lib_root, rel = found
            todo += [p for p in _place(lib_root, rel, root) if not p.is_symlink()]
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\n")
    write_private(root / DROPBEAR_HOST_KEY, host_key)
    (root / "root" / ".ssh").chmod(0o700)
    write_private(root / "root" / ".ssh" / "authorized_keys", (public_line(access.client_key) + "\n").encode())


def elf_dependencies(path: Path, arch: str = "armhf") -> tuple[str | None, list[str]]:
    """(program interpreter, NEEDED sonames) of an ELF file of ``arch``, as the cross binutils' readelf reads them."""
    text = run_tool([CROSS_READELF[arch][0], "-W", "-l", "-d", str(path)]).decode(errors="replace")
    interp = re.search(r"\[Requesting program interpreter: ([^\]]+)\]", text)
    return (interp.group(1) if interp else None), re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", text)


#: ld.so's search path for a Debian system of each architecture without /etc/ld.so.cache.
_LIBRARY_DIRS = {arch: (f"lib/{triplet}", f"usr/lib/{triplet}", "lib", "usr/lib")
                 for arch, triplet in (("armhf", "arm-linux-gnueabihf"), ("arm64", "aarch64-linux-gnu"))}


def _find_library(roots: Sequence[Path], want: str, arch: str = "armhf") -> tuple[Path, str] | None:
    """(package root, path in it) of a library: ``?soname`` is searched for, anything else is a path."""
    candidates = [f"{d}/{want[1:]}" for d in _LIBRARY_DIRS[arch]] if want.startswith("?") else [want]
    for rel in candidates:
        for lib_root in roots:
            if (lib_root / rel).exists():  # follows symlinks: a dangling one does not count
                return lib_root, rel
    return None


def _place(package_root: Path, rel: str, root: Path) -> list[Path]:
    """Copy one path of an extracted package into the image; a symlink is kept, and so is what it points at.

    Returns every path written in ``root``.
    """
    src = package_root / rel
    dest = root / rel
    if dest.exists() or dest.is_symlink():
        return []
    dest.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        link = os.readlink(src)
        dest.symlink_to(link)
        target = os.path.normpath(link.lstrip("/") if link.startswith("/") else os.path.join(os.path.dirname(rel), link))
        return [dest, *_place(package_root, target, root)]
    if not src.is_file():
        raise InfraError(f"{package_root.name} has no {rel}", hint="the package's layout changed: update SSH_PROGRAMS")
    shutil.copy2(src, dest)
    return [dest]


def compile_capture(source: Path, dest: Path, arch: str = "armhf") -> None:
    """Cross-compile the capture program for ``arch``, static and stripped."""
    run_tool([CROSS_GCC[arch][0], "-static", "-O2", "-Wall", "-s", "-o", str(dest), str(source)])


def module_closure(modules_dep: Path, module: str) -> list[str]:
    """``module`` and everything it depends on, as paths relative to /lib/modules/<release>."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[_module_name(path)] = path
    want = module.replace("-", "_")
    if want not in by_name:
        raise InfraError(f"{modules_dep}: no module {module!r}", hint="is the kernel built with it as a module?")
    closure: list[str] = []
    todo = [by_name[want]]
    while todo:
        path = todo.pop()
        if path not in closure:
            closure.append(path)
            todo.extend(deps.get(path, []))
    return sorted(closure)


def pack_cpio(root: Path) -> bytes:
    """A gzip'd newc cpio of ``root`` (owner root, fixed gzip header), as the kernel unpacks it."""
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    archive = run_tool(
        ["cpio", "--create", "--format=newc", "--owner=0:0", "--quiet", "--null"],
        cwd=root,
        stdin="\0".join(names).encode(),
    )
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(archive)
    return out.getvalue()


def _module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    return base.split(".ko", 1)[0].replace("-", "_")
