"""The image cache: the image the current inputs name, built only when it is missing or damaged.

An image's folder, ``images/<key>/``, is named by a hash of every input:
package versions, the firmware sources, this package's own source (the
recipe), the cross compiler, and for the ssh flavour its packages and keys.
``image.json`` records the image's facts and the sha256 of each of its files;
every cache hit checks them, so a truncated, bit-flipped or deleted file, or
an unreadable image.json, is rebuilt (saying why) instead of being booted.
A run's files do not go into the cached image: :func:`compose_initrd` appends
them as a second, tiny cpio archive (the kernel unpacks concatenated archives
one after the other).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from cma_tool.deploy.image.apt import BUSYBOX_PACKAGE, apt_state, resolve_packages, resolve_ssh_packages
from cma_tool.deploy.image.debs import extracted_package
from cma_tool.deploy.image.keys import SshAccess, public_line, ssh_keys
from cma_tool.deploy.image.rootfs import (
    CAPTURE_DRIVER,
    FIRMWARE_DIR,
    NETWORK_MODULES,
    SSH_PACKAGES,
    compile_capture,
    firmware_sources,
    module_closure,
    pack_cpio,
    stage_root,
    stage_ssh,
    staged_name,
)
from cma_tool.deploy.image.tools import CROSS_GCC, check_tools, run_tool
from cma_tool.errors import ConfigError, InfraError
from cma_tool.model.profiles import debian_kernel

Progress = Callable[[str], None]

#: Built images kept in the cache; older ones are removed after a build.
KEEP_IMAGES = 4
#: The recipe: every module of this package. Editing any of them makes new images.
RECIPE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class KernelConfig:
    """The kernel build facts CMA's behaviour depends on (from /boot/config-*)."""

    cma_size_mbytes: int
    arch_force_max_order: int
    cma_areas: int
    cma_alignment: int


@dataclass(frozen=True)
class TargetImage:
    """A built image: what QEMU boots, and the facts of the kernel in it."""

    directory: Path
    kernel: Path  # the zImage (Debian calls it vmlinuz)
    initrd: Path  # gzip'd newc cpio
    kernel_release: str  # e.g. 6.1.0-50-armmp (uname -r, /lib/modules/<release>)
    kernel_package: str  # e.g. linux-image-6.1.0-50-armmp
    kernel_version: str  # the package's version, e.g. 6.1.176-1
    busybox_version: str
    config: KernelConfig
    modules: tuple[str, ...]  # paths under /lib/modules/<release>/ in the image
    key: str  # hash of every input; names the image's folder
    flavour: str = "plain"  # or "ssh"
    ssh: SshAccess | None = None  # the ssh flavour's keys
    capture_program: Path | None = None  # ssh flavour: not in the initrd, deployed over SSH
    suite: str | None = None  # the Debian suite the kernel came from; None: the system's own sources
    kernel_name: str = "debian-6.1-armhf"  # the Debian kernel (DEBIAN_KERNELS) the image boots
    architecture: str = "armhf"  # armhf (the zImage) or arm64 (an uncompressed Image)
    #: file name -> sha256 of the image's files, as recorded when it was built and checked at this use
    #: (a fact of this build, not of the image's identity: a rebuild from the same inputs is the same image)
    sha256: Mapping[str, str] = field(default_factory=dict, compare=False)


class _DamagedImage(Exception):
    """A cached image that cannot be used as it is; the message says what is wrong with it."""


def default_cache_dir() -> Path:
    """``$CMA_TOOL_CACHE``, else ``~/.cache/cma-tool``."""
    env = os.environ.get("CMA_TOOL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "cma-tool"


def ensure_image(
    cache: Path | None = None,
    *,
    kernel_package: str | None = None,
    suite: str | None = None,
    firmware: Path = FIRMWARE_DIR,
    progress: Progress | None = None,
    ssh: bool = False,
    kernel: str | None = None,
) -> TargetImage:
    """Return the image for the current inputs, building (and fetching) only what is missing.

    ``kernel_package`` pins the kernel (``linux-image-6.1.0-50-armmp``); by
    default the newest 6.1 armmp kernel apt knows is used. ``suite`` takes
    the kernel from another Debian suite instead, through a private apt state
    in the cache (``suite="trixie"``: the newest armmp kernel there, or the
    pinned ``linux-image-6.12.117+deb13-armmp``). ``ssh`` selects the ssh
    flavour (see the package's notes). ``kernel`` names the Debian kernel
    instead (``debian-6.1-arm64``: :data:`~cma_tool.model.profiles.DEBIAN_KERNELS`);
    an arm64 image gets arm64 busybox and capture program and the kernel's
    uncompressed Image. A cached image whose files do not match the hashes
    recorded at build time is rebuilt.
    """
    say = progress or (lambda _msg: None)
    cache = (cache or default_cache_dir()).resolve()
    debian = debian_kernel(kernel, suite)
    arch = debian.architecture
    suite = debian.suite
    check_tools(arch)
    sources = firmware_sources(firmware)
    apt = apt_state(cache, suite, kernel_package, say, arch=arch, series=debian.series)
    kpkg, kver, bver = resolve_packages(cache, kernel_package, apt, arch=arch, series=debian.series)
    release = kpkg.removeprefix("linux-image-")

    inputs: dict[str, object] = {
        "recipe": _recipe_sha256(),
        "kernel": f"{kpkg}={kver}",
        "busybox": f"{BUSYBOX_PACKAGE}={bver}",
        "cc": run_tool([CROSS_GCC[arch][0], "-dumpversion"]).decode().strip(),
        **{name: _sha256(path.read_bytes()) for name, path in sources.items()},
    }
    if suite is not None:
        inputs["suite"] = suite
    if arch != "armhf":
        inputs["arch"] = arch
    access: SshAccess | None = None
    host_key = b""
    ssh_versions: dict[str, str] = {}
    if ssh:
        ssh_versions = resolve_ssh_packages(cache, SSH_PACKAGES, arch)
        access, host_key = ssh_keys(cache)
        inputs["flavour"] = "ssh"
        inputs["ssh-packages"] = ssh_versions
        inputs["host-key"] = _sha256(access.host_public_key.encode())
        inputs["authorized-key"] = _sha256(public_line(access.client_key).encode())
    key = _sha256(json.dumps(inputs, sort_keys=True).encode())[:20]
    folder = cache / "images" / key
    if folder.exists():
        try:
            return _cached_image(folder)
        except _DamagedImage as exc:
            say(f"image {key}: {exc}; rebuilding it")

    kroot = extracted_package(cache, kpkg, kver, say, depmod_release=release, apt=apt, arch=arch)
    broot = extracted_package(cache, BUSYBOX_PACKAGE, bver, say, arch=arch)
    say(f"building image {key} ({kpkg} {kver})")
    config = read_kernel_config(kroot / "boot" / f"config-{release}")
    moddir = kroot / "lib" / "modules" / release
    modules = module_closure(moddir / "modules.dep", CAPTURE_DRIVER)
    if ssh:
        for extra in NETWORK_MODULES:
            modules = sorted(set(modules) | set(module_closure(moddir / "modules.dep", extra)))

    (cache / "images").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".build-{key}-", dir=cache / "images"))
    try:
        root = work / "root"
        stage_root(root, sources, broot, moddir, release, modules)
        if access is None:
            compile_capture(sources["capture.c"], root / "bin" / "capture", arch)
        else:
            compile_capture(sources["capture.c"], work / "capture", arch)
            roots = {p: extracted_package(cache, p, v, say, arch=arch) for p, v in ssh_versions.items()}
            stage_ssh(root, roots, access, host_key, arch)
        run_tool(["depmod", "-b", str(root), release])
        (work / "initrd.gz").write_bytes(pack_cpio(root))
        shutil.copyfile(kroot / "boot" / f"vmlinuz-{release}", work / "vmlinuz")
        shutil.rmtree(root)
        image = TargetImage(
            directory=folder,
            kernel=folder / "vmlinuz",
            initrd=folder / "initrd.gz",
            kernel_release=release,
            kernel_package=kpkg,
            kernel_version=kver,
            busybox_version=bver,
            config=config,
            modules=tuple(staged_name(m) for m in modules),
            key=key,
            flavour="ssh" if access else "plain",
            ssh=access,
            capture_program=folder / "capture" if access else None,
            suite=suite,
            kernel_name=debian.name,
            architecture=arch,
        )
        files = {path.name: _file_sha256(work / path.name) for path in _image_files(image)}
        (work / "image.json").write_text(json.dumps(_image_to_json(image, inputs, files), indent=2) + "\n")
        image = _install(work, replace(image, sha256=files))
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    _prune_images(cache / "images", keep=KEEP_IMAGES)
    return image


def compose_initrd(image: TargetImage, files: Mapping[str, bytes | str] | None, dest: Path) -> Path:
    """Write the initrd for one run: the cached image's, plus, if given, an archive of ``files``.

    Each file goes in as /cmatool/<name> (a str as UTF-8), in a second gzip'd
    cpio archive appended to the image's own. A name must be a plain file
    name. Nothing is appended for ``None``.
    """
    data = image.initrd.read_bytes()
    if files is not None:
        for name in files:
            if not name or name == "." or "/" in name or ".." in name or "\0" in name:
                raise ConfigError(f"agent file name {name!r} is not a plain file name",
                                  hint="it goes in as /cmatool/<name>: no '/', no '..', not empty")
        data += agent_archive({name: content.encode() if isinstance(content, str) else content
                               for name, content in files.items()})
    return reference_run_file(image, data, dest)


def agent_archive(files: Mapping[str, bytes]) -> bytes:
    """/cmatool/<name> for each file, as a gzip'd newc cpio the same bytes every time for the same files.

    Written here rather than by cpio(1), which records each file's inode and
    mtime: the same plan must make the same initrd, so runs can share it
    (:func:`reference_run_file`).
    """
    entries = [("cmatool", 0o040755, b"")] + [(f"cmatool/{n}", 0o100644, files[n]) for n in sorted(files)]
    out = bytearray()
    for ino, (name, mode, body) in enumerate([*entries, ("TRAILER!!!", 0, b"")], start=1):
        raw = name.encode() + b"\0"
        fields = (ino if name != "TRAILER!!!" else 0, mode, 0, 0, 2 if mode & 0o040000 else 1, 0, len(body),
                  0, 0, 0, 0, len(raw), 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + raw
        out += b"\0" * (-len(out) % 4)
        out += body
        out += b"\0" * (-len(out) % 4)
    out += b"\0" * (-len(out) % 512)  # cpio(1)'s 512-byte block, as the image's own archive is padded
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(bytes(out))
    return buf.getvalue()


#: A run file no run folder links to any more is removed after this many seconds.
RUN_FILE_GRACE = 24 * 3600.0


def reference_run_file(image: TargetImage, data: bytes, dest: Path) -> Path:
    """Put ``data`` at ``dest`` as a hard link to one copy kept by content hash in the image's folder.

    Each run's kernel (+ its DTB) and initrd (+ its plan) are a few MB made
    of the cached image plus a few KB; runs of one board and scenario make
    the same bytes, so every run folder links the one copy
    (``images/<key>/runs/<sha256>-<name>``) instead of holding its own. A
    hard link (not a symlink) because QEMU's TFTP and our stage-in serve the
    run folder's own file; ``dest`` is unlinked first, never written
    through, so a link never changes the shared copy. Where no hard link can
    be made (another file system) the bytes are written as before. Copies no
    run folder links to any more are pruned after a day.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    store = image.directory / "runs"
    digest = hashlib.sha256(data).hexdigest()
    shared = store / f"{digest}-{dest.name}"
    try:
        store.mkdir(exist_ok=True)
        if not shared.exists():
            fd, name = tempfile.mkstemp(prefix=".tmp-", dir=store)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.chmod(name, 0o444)
            os.replace(name, shared)
        os.link(shared, dest)
    except OSError:
        dest.write_bytes(data)
        return dest
    _prune_run_files(store)
    return dest


def _prune_run_files(store: Path) -> None:
    now = time.time()
    for path in store.iterdir():
        if path.name.startswith(".tmp-"):
            continue  # another run's copy being written
        try:
            st = path.stat()
            if st.st_nlink == 1 and now - st.st_mtime > RUN_FILE_GRACE:
                path.unlink()
        except OSError:
            continue  # another run pruned or linked it meanwhile


def read_kernel_config(path: Path) -> KernelConfig:
    """Read the CMA facts from a kernel .config (``/boot/config-<release>``)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^CONFIG_([A-Z0-9_]+)=(.*)$", line)
        if m:
            values[m.group(1)] = m.group(2)

    def number(name: str, default: int | None = None) -> int:
        if name in values:
            return int(values[name], 0)
        if default is None:
            raise InfraError(f"{path}: CONFIG_{name} is not set", hint="is this a kernel built with CMA?")
        return default

    return KernelConfig(
        cma_size_mbytes=number("CMA_SIZE_MBYTES"),
        # 5.10 calls it FORCE_MAX_ZONEORDER; Kconfig's default when an arch does not force it (MAX_ORDER 11).
        arch_force_max_order=number("ARCH_FORCE_MAX_ORDER", number("FORCE_MAX_ZONEORDER", 11)),
        cma_areas=number("CMA_AREAS"),
        cma_alignment=number("CMA_ALIGNMENT"),
    )


def _cached_image(folder: Path) -> TargetImage:
    """The image built in ``folder``, its files checked against image.json; _DamagedImage says what is wrong."""
    try:
        data = json.loads((folder / "image.json").read_text())
    except FileNotFoundError:
        raise _DamagedImage("image.json is missing") from None
    except (OSError, ValueError) as exc:
        raise _DamagedImage(f"image.json is unreadable ({exc})") from None
    try:
        image = _image_from_json(folder, data)
    except (KeyError, TypeError, ValueError) as exc:
        raise _DamagedImage(f"image.json is malformed ({type(exc).__name__}: {exc})") from None
    recorded = data.get("files")
    if not isinstance(recorded, dict):
        raise _DamagedImage("image.json records no sha256 of the image's files")
    for path in _image_files(image):
        want = recorded.get(path.name)
        if not isinstance(want, str):
            raise _DamagedImage(f"image.json records no sha256 of {path.name}")
        try:
            got = _file_sha256(path)
        except FileNotFoundError:
            raise _DamagedImage(f"{path.name} is missing") from None
        except OSError as exc:
            raise _DamagedImage(f"{path.name} is unreadable ({exc.strerror})") from None
        if got != want:
            raise _DamagedImage(f"{path.name} is damaged (its sha256 is not the one recorded when it was built)")
    if image.ssh is not None and not image.ssh.client_key.is_file():
        raise _DamagedImage(f"its client key {image.ssh.client_key} is missing")
    return replace(image, sha256={path.name: recorded[path.name] for path in _image_files(image)})


def _image_files(image: TargetImage) -> list[Path]:
    """The files of a built image whose sha256 image.json records: kernel, initrd, and the ssh flavour's capture program."""
    return [image.kernel, image.initrd, *([image.capture_program] if image.capture_program is not None else [])]


def _file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, read in chunks."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _install(work: Path, image: TargetImage) -> TargetImage:
    """Move the image built in ``work`` into its folder, replacing a damaged one there.

    If another process finished the same image first, theirs is as good: it
    is kept and returned.
    """
    folder = image.directory
    for _ in range(3):
        try:
            work.rename(folder)
            return image
        except OSError:
            if not folder.exists():
                raise
        try:
            return _cached_image(folder)
        except _DamagedImage:
            pass
        aside = Path(tempfile.mkdtemp(prefix=f".damaged-{folder.name}-", dir=folder.parent))
        try:
            folder.replace(aside)  # onto the empty folder just made: atomic
        except OSError:
            pass  # another process moved it first
        shutil.rmtree(aside, ignore_errors=True)
    raise InfraError(f"cannot replace the damaged image in {folder}", hint=f"remove {folder}")


def _recipe_sha256() -> str:
    """sha256 over the name and bytes of every module of this package."""
    digest = hashlib.sha256()
    for path in sorted(RECIPE_DIR.glob("*.py")):
        data = path.read_bytes()
        digest.update(f"{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _image_to_json(image: TargetImage, inputs: Mapping[str, object], files: Mapping[str, str]) -> dict[str, object]:
    return {
        "kernel_release": image.kernel_release,
        "kernel_package": image.kernel_package,
        "kernel_version": image.kernel_version,
        "busybox_version": image.busybox_version,
        "config": asdict(image.config),
        "modules": list(image.modules),
        "key": image.key,
        "flavour": image.flavour,
        "ssh": None if image.ssh is None else {"host_public_key": image.ssh.host_public_key,
                                                "client_key": str(image.ssh.client_key)},
        "inputs": inputs,
        "suite": image.suite,
        "kernel_name": image.kernel_name,
        "architecture": image.architecture,
        "files": dict(files),  # sha256 of each file, checked on every cache hit
    }


def _image_from_json(folder: Path, data: dict[str, object]) -> TargetImage:
    config = data["config"]
    modules = data["modules"]
    if not isinstance(config, dict) or not isinstance(modules, list):
        raise TypeError("malformed image.json")
    image = TargetImage(
        directory=folder,
        kernel=folder / "vmlinuz",
        initrd=folder / "initrd.gz",
        kernel_release=str(data["kernel_release"]),
        kernel_package=str(data["kernel_package"]),
        kernel_version=str(data["kernel_version"]),
        busybox_version=str(data["busybox_version"]),
        config=KernelConfig(**{k: int(v) for k, v in config.items()}),
        modules=tuple(str(m) for m in modules),
        key=str(data["key"]),
        suite=str(data["suite"]) if data.get("suite") is not None else None,
        kernel_name=str(data.get("kernel_name", "debian-6.1-armhf")),
        architecture=str(data.get("architecture", "armhf")),
    )
    ssh = data.get("ssh")
    if data.get("flavour", "plain") == "ssh":
        if not isinstance(ssh, dict):
            raise TypeError("malformed image.json: no ssh keys")
        access = SshAccess(host_public_key=str(ssh["host_public_key"]), client_key=Path(str(ssh["client_key"])))
        image = replace(image, flavour="ssh", ssh=access, capture_program=folder / "capture")
    return image


def _prune_images(images: Path, *, keep: int) -> None:
    """Remove all but the ``keep`` newest built images (each is ~7 MB; every firmware edit makes one)."""
    built = sorted(
        (p for p in images.iterdir() if (p / "image.json").is_file()),
        key=lambda p: (p / "image.json").stat().st_mtime_ns,
        reverse=True,
    )
    for old in built[keep:]:
        shutil.rmtree(old, ignore_errors=True)
