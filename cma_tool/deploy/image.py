"""The emulated board's software: Debian's armhf kernel + a tiny initramfs.

The image holds busybox, the vivid capture driver with the modules it needs,
the static ``capture`` program (firmware/capture/capture.c) and firmware/init.
Packages are fetched once into a cache folder; an image is rebuilt only when
one of its inputs changes (package versions, the firmware sources, this
recipe, the cross compiler). A run's capture plan does not go into the cached
image: :func:`compose_initrd` appends it as a second, tiny cpio archive (the
kernel unpacks concatenated archives one after the other).

Two flavours share the recipe. The plain image boots straight into the
capture plan. The ``ssh`` flavour (``ensure_image(ssh=True)``) is a board
reached over the network: it adds Debian's armhf dropbear and sftp-server
with exactly the shared libraries they load, the virtio network drivers,
/etc/passwd, root's authorized_keys and a dropbear host key, and leaves the
capture program out (the host deploys it over SSH). /init starts the network
and dropbear only with ``cmatool.mode=ssh``. The host key and the client key
are made once per cache (``ssh-keys/``); the host learns the host key from
the build, never from the network, so strict host-key checking stays
meaningful.

A newer kernel from another Debian suite (``ensure_image(suite="trixie")``,
e.g. trixie's 6.12 armmp) is fetched through a private apt state inside the
cache: its own sources list (the system's own Debian archive URI, that suite,
main, armhf), lists and package cache, so the system's apt sources are never
touched. Everything else (busybox, the ssh flavour's packages) still comes
from the system's sources: busybox-static runs on any kernel. Newer Debian
kernels install their modules under /usr/lib/modules and compress them with
xz; the extracted package gets a ``lib -> usr/lib`` link so the rest of the
recipe reads both layouts alike, and modules are unpacked into the image (see
:func:`_stage_root`).

Layout of the cache folder::

    debs/<package>/<version>/*.deb      apt-get download
    extract/<package>_<version>/        dpkg-deb -x (kernel: plus depmod)
    images/<key>/vmlinuz, initrd.gz, image.json (ssh flavour: plus capture)
    ssh-keys/                           dropbear host key, client key (ssh flavour)
    apt/<suite>/sources.list, lists/, cache/, resolved.json   private apt state of another suite

Run as ``python3 -m cma_tool.deploy.image [--quiet] [--cache DIR]
[--kernel-package PKG] [--suite SUITE] [--ssh]`` to fetch and build ahead of
time (install.sh does).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from cma_tool.errors import ConfigError, InfraError

Progress = Callable[[str], None]

#: firmware/ at the top of the source tree.
FIRMWARE_DIR = Path(__file__).resolve().parents[2] / "firmware"
#: The driver that stands in for the S5PV210's FIMC, with its module closure.
CAPTURE_DRIVER = "vivid"
BUSYBOX_PACKAGE = "busybox-static"
ARCH = "armhf"
#: Built images kept in the cache; older ones are removed after a build.
KEEP_IMAGES = 4
_KERNEL_PACKAGE = re.compile(r"^linux-image-(6\.1\.0-(\d+)-armmp)$")
#: Any suite's plain armmp kernel: bookworm's linux-image-6.1.0-50-armmp,
#: trixie's linux-image-6.12.117+deb13-armmp; not -rt, -lpae or -dbg.
_ARMMP_PACKAGE = re.compile(r"^linux-image-(\d+(?:\.\d+)+(?:[+~-][a-z0-9.]+)?-armmp)$")
_SUITE_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
#: The system's apt sources, read (never written) for the Debian archive's URI.
SYSTEM_APT_ETC = Path("/etc/apt")
SYSTEM_APT_LISTS = Path("/var/lib/apt/lists")

#: The ssh flavour: the programs it runs, (package, path in the package).
SSH_PROGRAMS = (("dropbear-bin", "usr/sbin/dropbear"), ("openssh-sftp-server", "usr/lib/sftp-server"))
#: Where the shared libraries those programs load come from. Debian's Depends
#: say the same (dropbear-bin: libc6, libcrypt1, libtomcrypt1, libtommath1,
#: zlib1g; libtomcrypt1: libgmp10); the build follows the ELF files' own
#: NEEDED entries through these packages and fails naming any library missing.
SSH_LIBRARY_PACKAGES = ("libc6", "libcrypt1", "zlib1g", "libtomcrypt1", "libtommath1", "libgmp10")
#: Modules the ssh flavour adds (with their modules.dep closure): virt's
#: network card is virtio-net on the virtio-mmio bus.
NETWORK_MODULES = ("virtio_mmio", "virtio_net")
#: Where dropbear (Debian's build) looks for its ed25519 host key.
DROPBEAR_HOST_KEY = "etc/dropbear/dropbear_ed25519_host_key"

#: Tools the build runs, with the Debian package that provides each.
_TOOLS = {
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "depmod": "kmod",
    "cpio": "cpio",
    "arm-linux-gnueabihf-gcc": "gcc-arm-linux-gnueabihf (and libc6-dev-armhf-cross)",
    "arm-linux-gnueabihf-readelf": "binutils-arm-linux-gnueabihf",
}


@dataclass(frozen=True)
class KernelConfig:
    """The kernel build facts CMA's behaviour depends on (from /boot/config-*)."""

    cma_size_mbytes: int
    arch_force_max_order: int
    cma_areas: int
    cma_alignment: int


@dataclass(frozen=True)
class SshAccess:
    """How the host logs in to an ssh-flavour image: keys made once per cache, baked into the image."""

    host_public_key: str  # "ssh-ed25519 AAAA...": what the image's dropbear presents
    client_key: Path  # OpenSSH private key; its public half is root's authorized_keys in the image


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


@dataclass(frozen=True)
class AptState:
    """Which apt state a query or download uses: the system's, or a suite's private one in the cache."""

    suite: str | None = None  # None: the system's sources and lists
    options: tuple[str, ...] = ()  # ``-o`` options that point apt at the private state
    lists: Path = SYSTEM_APT_LISTS
    memo: str = "apt-resolved.json"  # answers remembered, relative to the cache folder


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
) -> TargetImage:
    """Return the image for the current inputs, building (and fetching) only what is missing.

    ``kernel_package`` pins the kernel (``linux-image-6.1.0-50-armmp``); by
    default the newest 6.1 armmp kernel apt knows is used. ``suite`` takes
    the kernel from another Debian suite instead, through a private apt state
    in the cache (``suite="trixie"``: the newest armmp kernel there, or the
    pinned ``linux-image-6.12.117+deb13-armmp``). ``ssh`` selects the ssh
    flavour (see the module's notes).
    """
    say = progress or (lambda _msg: None)
    cache = (cache or default_cache_dir()).resolve()
    _check_tools()
    sources = _firmware_sources(firmware)

    if suite is None:
        if kernel_package is not None and not _KERNEL_PACKAGE.match(kernel_package):
            raise ConfigError(
                f"kernel package {kernel_package!r} is not a Debian 6.1 armmp kernel",
                hint="name one like linux-image-6.1.0-50-armmp (see: apt-cache search linux-image-6.1.0 armmp)",
            )
        apt = AptState()
    else:
        if not _SUITE_NAME.match(suite):
            raise ConfigError(f"{suite!r} is not a Debian suite name", hint="name one like trixie")
        if kernel_package is not None and not _ARMMP_PACKAGE.match(kernel_package):
            raise ConfigError(
                f"kernel package {kernel_package!r} is not a Debian armmp kernel",
                hint="name one like linux-image-6.12.117+deb13-armmp (plain armmp: not -rt, -lpae or -dbg)",
            )
        apt = suite_apt(cache, suite, say)
    kpkg, kver, bver = _resolve_packages(cache, kernel_package, apt)
    release = kpkg.removeprefix("linux-image-")

    inputs: dict[str, object] = {
        "recipe": _sha256(Path(__file__).read_bytes()),
        "kernel": f"{kpkg}={kver}",
        "busybox": f"{BUSYBOX_PACKAGE}={bver}",
        "cc": _run(["arm-linux-gnueabihf-gcc", "-dumpversion"]).decode().strip(),
        **{name: _sha256(path.read_bytes()) for name, path in sources.items()},
    }
    if suite is not None:
        inputs["suite"] = suite
    access: SshAccess | None = None
    host_key = b""
    ssh_versions: dict[str, str] = {}
    if ssh:
        ssh_versions = _resolve_ssh_packages(cache)
        access, host_key = _ssh_keys(cache)
        inputs["flavour"] = "ssh"
        inputs["ssh-packages"] = ssh_versions
        inputs["host-key"] = _sha256(access.host_public_key.encode())
        inputs["authorized-key"] = _sha256(_public_line(access.client_key).encode())
    key = _sha256(json.dumps(inputs, sort_keys=True).encode())[:20]
    folder = cache / "images" / key
    meta = folder / "image.json"
    if meta.is_file():
        try:
            return _image_from_json(folder, json.loads(meta.read_text()))
        except (KeyError, TypeError, ValueError):
            say(f"image {key}: metadata unreadable, rebuilding")

    kroot = _extracted(cache, kpkg, kver, say, depmod_release=release, apt=apt)
    broot = _extracted(cache, BUSYBOX_PACKAGE, bver, say)
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
        _stage_root(root, sources, broot, moddir, release, modules)
        if access is None:
            _compile_capture(sources["capture.c"], root / "bin" / "capture")
        else:
            _compile_capture(sources["capture.c"], work / "capture")
            roots = {p: _extracted(cache, p, v, say) for p, v in ssh_versions.items()}
            _stage_ssh(root, roots, access, host_key)
        _run(["depmod", "-b", str(root), release])
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
            modules=tuple(_staged_name(m) for m in modules),
            key=key,
            flavour="ssh" if access else "plain",
            ssh=access,
            capture_program=folder / "capture" if access else None,
            suite=suite,
        )
        (work / "image.json").write_text(json.dumps(_image_to_json(image, inputs), indent=2) + "\n")
        if folder.exists() and not meta.is_file():  # a half-built or unreadable earlier attempt
            shutil.rmtree(folder)
        try:
            work.rename(folder)
        except OSError:
            # Another process finished the same image first: theirs is as good.
            if not meta.is_file():
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    _prune_images(cache / "images", keep=KEEP_IMAGES)
    return image


def compose_initrd(image: TargetImage, capture_args: Sequence[str] | None, dest: Path) -> Path:
    """Write the initrd for one run: the cached image plus, if given, a plan archive.

    The plan archive holds /cmatool/capture.args (one argument per line),
    which firmware/cmatool-run reads. Nothing is appended for ``None``.
    """
    data = image.initrd.read_bytes()
    if capture_args is not None:
        for arg in capture_args:
            if "\n" in arg or not arg:
                raise ConfigError(f"capture argument {arg!r} is empty or holds a newline")
        with tempfile.TemporaryDirectory(prefix="cma-tool-plan-") as tmp:
            plan = Path(tmp) / "cmatool"
            plan.mkdir()
            (plan / "capture.args").write_text("".join(a + "\n" for a in capture_args))
            data += pack_cpio(Path(tmp))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(data)
    return dest


def newest_kernel_package(apt: AptState | None = None) -> str:
    """The newest ``linux-image-6.1.0-N-armmp`` apt knows for armhf; with a suite's ``apt``, that suite's newest armmp kernel."""
    if apt is not None and apt.suite is not None:
        names = _apt_query(["apt-cache", "pkgnames", "linux-image-"], apt)
        found = [(_version_key(m.group(1)), name) for name in names.split() if (m := _ARMMP_PACKAGE.match(name))]
        if not found:
            raise InfraError(f"Debian {apt.suite} has no linux-image-*-armmp package for {ARCH}")
        return max(found)[1]
    names = _apt_query(["apt-cache", "pkgnames", "linux-image-6.1.0-"])
    best = max(
        ((int(m.group(2)), name) for name in names.split() if (m := _KERNEL_PACKAGE.match(name))),
        default=None,
    )
    if best is None:
        raise InfraError(
            "apt knows no linux-image-6.1.0-N-armmp package",
            hint="the armhf architecture must be added (dpkg --add-architecture armhf) "
            "and a bookworm source configured; then apt-get update",
        )
    return best[1]


def _version_key(release: str) -> tuple[int, ...]:
    """6.12.117+deb13-armmp -> (6, 12, 117, 13): orders releases as their numbers do."""
    return tuple(int(n) for n in re.findall(r"\d+", release))


def candidate_versions(*packages: str, apt: AptState | None = None) -> dict[str, str]:
    """The candidate version of each ``package:armhf`` (one apt-cache call), from the system's or a suite's state."""
    text = _apt_query(["apt-cache", "policy", *(f"{p}:{ARCH}" for p in packages)], apt)
    found = dict(re.findall(r"^(\S+?)(?::armhf)?:\n\s+Installed: .*\n\s+Candidate: (\S+)$", text, re.MULTILINE))
    versions: dict[str, str] = {}
    for p in packages:
        if found.get(p, "(none)") == "(none)":
            raise InfraError(
                f"apt has no candidate version of {p}:{ARCH}",
                hint="dpkg --add-architecture armhf && apt-get update",
            )
        versions[p] = found[p]
    return versions


def _resolve_packages(cache: Path, kernel_package: str | None, apt: AptState | None = None) -> tuple[str, str, str]:
    """(kernel package, its version, busybox version), remembered while apt's lists stay the same.

    Each apt-cache call costs ~0.8 s here (no pkgcache.bin), which would be
    most of a warm ensure_image(); the answer only changes with the lists.
    With a suite's ``apt`` the kernel comes from that suite and busybox from
    the system's sources.
    """
    if apt is not None and apt.suite is not None:
        return (*_resolve_suite_kernel(cache, kernel_package, apt), _resolve_busybox(cache))
    want = kernel_package or "newest"
    memo = _AptMemo(cache)
    known = memo.entries.get(want)
    if isinstance(known, list) and len(known) == 3:
        kpkg, kver, bver = (str(x) for x in known)
        return kpkg, kver, bver
    kpkg = kernel_package or newest_kernel_package()
    versions = candidate_versions(kpkg, BUSYBOX_PACKAGE)
    result = (kpkg, versions[kpkg], versions[BUSYBOX_PACKAGE])
    memo.store(want, list(result))
    return result


def _resolve_suite_kernel(cache: Path, kernel_package: str | None, apt: AptState) -> tuple[str, str]:
    want = kernel_package or "newest"
    memo = _AptMemo(cache, apt)
    known = memo.entries.get(want)
    if isinstance(known, list) and len(known) == 2:
        return str(known[0]), str(known[1])
    kpkg = kernel_package or newest_kernel_package(apt)
    kver = candidate_versions(kpkg, apt=apt)[kpkg]
    memo.store(want, [kpkg, kver])
    return kpkg, kver


def _resolve_busybox(cache: Path) -> str:
    memo = _AptMemo(cache)
    known = memo.entries.get("busybox")
    if isinstance(known, str):
        return known
    version = candidate_versions(BUSYBOX_PACKAGE)[BUSYBOX_PACKAGE]
    memo.store("busybox", version)
    return version


def system_archive(etc: Path = SYSTEM_APT_ETC) -> tuple[str, str | None]:
    """(URI, Signed-By keyring or None) of the Debian archive in the system's own apt sources.

    The main archive is the first ``deb`` entry with the ``main`` component
    and a suite without a dash (bookworm, not bookworm-updates or
    bookworm-security). Reads sources.list and sources.list.d/*.list
    (one-line form) and sources.list.d/*.sources (deb822), as apt does.
    """
    entries: list[tuple[str, list[str], list[str], str | None]] = []  # (uri, suites, components, signed-by)
    one_line = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]
    for path in one_line:
        for line in _read_text(path).splitlines():
            m = re.match(r"^\s*deb\s+(?:\[(?P<opts>[^\]]*)\]\s+)?(?P<uri>\S+)\s+(?P<suite>\S+)\s+(?P<comps>.*)$", line)
            if m:
                keyring = re.search(r"signed-by=(\S+)", m.group("opts") or "")
                entries.append((m.group("uri"), [m.group("suite")], m.group("comps").split(), keyring.group(1) if keyring else None))
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", _read_text(path)):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                for uri in fields.get("uris", "").split():
                    entries.append((uri, fields.get("suites", "").split(), fields.get("components", "").split(),
                                    fields.get("signed-by") or None))
    for uri, suites, components, signed in entries:
        if "main" in components and any("-" not in s and "/" not in s for s in suites):
            return uri.rstrip("/"), signed
    raise InfraError(
        f"no Debian archive in the system's apt sources ({etc}/sources.list, {etc}/sources.list.d)",
        hint="configure a 'deb <archive URI> bookworm main' source; its URI is used for the other suite",
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def suite_apt(cache: Path, suite: str, say: Progress | None = None) -> AptState:
    """The private apt state for ``suite`` in ``cache/apt/<suite>/``, its lists fetched on first use.

    The system's sources and lists stay untouched: apt reads this folder's
    sources.list only (Dir::Etc::sourceparts=- turns off sources.list.d) and
    keeps its lists and package cache here too.
    """
    folder = cache / "apt" / suite
    uri, signed = system_archive()
    opts = [f"arch={ARCH}"] + ([f"signed-by={signed}"] if signed else [])
    line = f"deb [{' '.join(opts)}] {uri} {suite} main\n"
    lists, pkgcache = folder / "lists", folder / "cache"
    for d in (lists / "partial", pkgcache / "archives" / "partial"):
        d.mkdir(parents=True, exist_ok=True)
    sources = folder / "sources.list"
    if not sources.is_file() or sources.read_text() != line:
        sources.write_text(line)
        for old in lists.glob("*_dists_*"):  # lists of another archive or options
            old.unlink()
    apt = AptState(
        suite=suite,
        options=(
            "-o", f"Dir::Etc::sourcelist={sources}",
            "-o", "Dir::Etc::sourceparts=-",
            "-o", f"Dir::State::Lists={lists}",
            "-o", f"Dir::Cache={pkgcache}",
        ),
        lists=lists,
        memo=str(Path("apt") / suite / "resolved.json"),
    )
    if not any(lists.glob("*Packages*")):
        if say is not None:
            say(f"fetching Debian {suite}'s package lists ({uri})")
        out = subprocess.run(["apt-get", *apt.options, "update", "-q"], capture_output=True, text=True, check=False)
        if out.returncode != 0 or not any(lists.glob("*Packages*")):
            raise InfraError(
                f"apt-get update for Debian {suite} ({uri}) failed: {(out.stderr or out.stdout).strip()[-400:]}",
                hint="is the suite name right and the archive reachable?",
            )
    return apt


def _resolve_ssh_packages(cache: Path) -> dict[str, str]:
    """The candidate version of every ssh-flavour package, remembered like :func:`_resolve_packages`."""
    wanted = [p for p, _ in SSH_PROGRAMS] + list(SSH_LIBRARY_PACKAGES)
    memo = _AptMemo(cache)
    known = memo.entries.get("ssh")
    if isinstance(known, dict) and sorted(known) == sorted(wanted):
        return {str(k): str(v) for k, v in known.items()}
    versions = candidate_versions(*wanted)
    memo.store("ssh", versions)
    return versions


class _AptMemo:
    """cache/apt-resolved.json: answers from apt-cache, valid while /var/lib/apt/lists is unchanged."""

    def __init__(self, cache: Path, apt: AptState | None = None) -> None:
        apt = apt or AptState()
        lists = apt.lists
        self.path = cache / apt.memo
        self.fingerprint = sorted(
            [p.name, p.stat().st_mtime_ns, p.stat().st_size] for p in lists.glob("*Packages*") if p.is_file()
        )
        memo: dict[str, object] = {}
        try:
            memo = json.loads(self.path.read_text())
        except (OSError, ValueError):
            pass
        entries = memo.get("entries") if memo.get("lists") == self.fingerprint else None
        self.entries: dict[str, object] = dict(entries) if isinstance(entries, dict) else {}

    def store(self, want: str, value: object) -> None:
        if not self.fingerprint:  # no lists to tell a stale answer by
            return
        self.entries[want] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"lists": self.fingerprint, "entries": self.entries}))


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
        # Kconfig's default when an arch does not force it (MAX_ORDER 11).
        arch_force_max_order=number("ARCH_FORCE_MAX_ORDER", 11),
        cma_areas=number("CMA_AREAS"),
        cma_alignment=number("CMA_ALIGNMENT"),
    )


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
    archive = _run(
        ["cpio", "--create", "--format=newc", "--owner=0:0", "--quiet", "--null"],
        cwd=root,
        stdin="\0".join(names).encode(),
    )
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", compresslevel=9, mtime=0) as gz:
        gz.write(archive)
    return out.getvalue()


# ---- building -----------------------------------------------------------------


def _prune_images(images: Path, *, keep: int) -> None:
    """Remove all but the ``keep`` newest built images (each is ~7 MB; every firmware edit makes one)."""
    built = sorted(
        (p for p in images.iterdir() if (p / "image.json").is_file()),
        key=lambda p: (p / "image.json").stat().st_mtime_ns,
        reverse=True,
    )
    for old in built[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def _firmware_sources(firmware: Path) -> dict[str, Path]:
    sources = {
        "init": firmware / "init",
        "cmatool-run": firmware / "cmatool-run",
        "capture.c": firmware / "capture" / "capture.c",
    }
    missing = [str(p) for p in sources.values() if not p.is_file()]
    if missing:
        raise InfraError(f"firmware sources missing: {', '.join(missing)}", hint="run from a full source tree")
    return sources


def _stage_root(
    root: Path,
    sources: dict[str, Path],
    busybox_root: Path,
    moddir: Path,
    release: str,
    modules: Iterable[str],
) -> None:
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
        dest = target / _staged_name(rel)
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


def _staged_name(module: str) -> str:
    """A module's path in the image: compressed modules go in unpacked."""
    return module.removesuffix(".xz")


def _ssh_keys(cache: Path) -> tuple[SshAccess, bytes]:
    """The cache's dropbear host key and client key, made on first use: (access, dropbear host key file).

    dropbearkey from the armhf package cannot run on this x86 host, so the
    keys are made here with ``cryptography`` (paramiko's own dependency) and
    the host key is written in dropbear's format by :func:`dropbear_ed25519_key`.
    """
    folder = cache / "ssh-keys"
    if not (folder / "host_ed25519.pub").is_file():
        _make_ssh_keys(folder)
    try:
        host_public = (folder / "host_ed25519.pub").read_text().strip()
        host_key = (folder / "host_ed25519.dropbear").read_bytes()
    except OSError as exc:
        raise InfraError(f"the SSH keys in {folder} are unreadable: {exc}", hint=f"remove {folder} to make new ones") from exc
    client = folder / "client_ed25519"
    if not client.is_file():
        raise InfraError(f"{client} is missing", hint=f"remove {folder} to make new keys")
    return SshAccess(host_public_key=" ".join(host_public.split()[:2]), client_key=client), host_key


def _make_ssh_keys(folder: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".ssh-keys-", dir=folder.parent))
    try:
        host = Ed25519PrivateKey.generate()
        client = Ed25519PrivateKey.generate()
        raw = serialization.Encoding.Raw
        seed = host.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        public = host.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
        openssh = serialization.Encoding.OpenSSH
        _write_private(work / "host_ed25519.dropbear", dropbear_ed25519_key(seed, public))
        (work / "host_ed25519.pub").write_bytes(
            host.public_key().public_bytes(openssh, serialization.PublicFormat.OpenSSH) + b" cma-tool-emulated-board\n")
        _write_private(work / "client_ed25519", client.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))
        (work / "client_ed25519.pub").write_bytes(
            client.public_key().public_bytes(openssh, serialization.PublicFormat.OpenSSH) + b" cma-tool\n")
        try:
            work.rename(folder)
        except OSError:
            if not (folder / "host_ed25519.pub").is_file():  # else another process made them first: use theirs
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def dropbear_ed25519_key(seed: bytes, public: bytes) -> bytes:
    """An ed25519 private key in dropbear's own file format (what ``dropbear -r`` reads).

    Hand-written because no Python library writes it and dropbearconvert is
    not installed for this host: SSH wire encoding of the string
    "ssh-ed25519", then a 64-byte string of the 32-byte seed and the 32-byte
    public key (dropbear's ed25519.c, buf_put_ed25519_priv_key).
    """
    if len(seed) != 32 or len(public) != 32:
        raise ValueError("an ed25519 seed and public key are 32 bytes each")
    name = b"ssh-ed25519"
    return len(name).to_bytes(4, "big") + name + (64).to_bytes(4, "big") + seed + public


def _public_line(private_key: Path) -> str:
    return private_key.with_name(private_key.name + ".pub").read_text().strip()


def _stage_ssh(root: Path, packages: Mapping[str, Path], access: SshAccess, host_key: bytes) -> None:
    """Add dropbear, sftp-server, the libraries they load, the accounts and the keys to ``root``."""
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
        interp, needed = elf_dependencies(elf)
        wanted = ([interp.lstrip("/")] if interp else []) + [f"?{soname}" for soname in needed]
        for want in wanted:
            if want in seen:
                continue
            seen.add(want)
            found = _find_library(library_roots, want)
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
    _write_private(root / DROPBEAR_HOST_KEY, host_key)
    (root / "root" / ".ssh").chmod(0o700)
    _write_private(root / "root" / ".ssh" / "authorized_keys", (_public_line(access.client_key) + "\n").encode())


def elf_dependencies(path: Path) -> tuple[str | None, list[str]]:
    """(program interpreter, NEEDED sonames) of an ARM ELF file, as the cross binutils' readelf reads them."""
    text = _run(["arm-linux-gnueabihf-readelf", "-W", "-l", "-d", str(path)]).decode(errors="replace")
    interp = re.search(r"\[Requesting program interpreter: ([^\]]+)\]", text)
    return (interp.group(1) if interp else None), re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", text)


#: ld.so's search path for a Debian armhf system without /etc/ld.so.cache.
_LIBRARY_DIRS = ("lib/arm-linux-gnueabihf", "usr/lib/arm-linux-gnueabihf", "lib", "usr/lib")


def _find_library(roots: Sequence[Path], want: str) -> tuple[Path, str] | None:
    """(package root, path in it) of a library: ``?soname`` is searched for, anything else is a path."""
    candidates = [f"{d}/{want[1:]}" for d in _LIBRARY_DIRS] if want.startswith("?") else [want]
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


def _compile_capture(source: Path, dest: Path) -> None:
    _run(["arm-linux-gnueabihf-gcc", "-static", "-O2", "-Wall", "-s", "-o", str(dest), str(source)])


def _extracted(
    cache: Path, package: str, version: str, say: Progress, *, depmod_release: str = "", apt: AptState | None = None
) -> Path:
    """The package's files under cache/extract/, downloading and unpacking once."""
    dest = cache / "extract" / f"{package}_{version}"
    if dest.is_dir():
        return dest
    deb = _downloaded(cache, package, version, say, apt)
    say(f"unpacking {deb.name}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{package}-", dir=dest.parent))
    try:
        _run(["dpkg-deb", "-x", str(deb), str(work)])
        if (work / "usr" / "lib" / "modules").is_dir() and not (work / "lib").exists():
            # Merged-/usr kernels (trixie on) ship /usr/lib/modules; depmod -b
            # (kmod 30) and the recipe look under lib/modules.
            (work / "lib").symlink_to("usr/lib")
        if depmod_release:  # Debian's kernel package ships no modules.dep
            _run(["depmod", "-b", str(work), depmod_release])
        try:
            work.rename(dest)
        except OSError:
            if not dest.is_dir():  # else another process unpacked it first
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return dest


def _downloaded(cache: Path, package: str, version: str, say: Progress, apt: AptState | None = None) -> Path:
    folder = cache / "debs" / package / version
    debs = sorted(folder.glob("*.deb")) if folder.is_dir() else []
    if debs:
        return debs[0]
    say(f"downloading {package}:{ARCH} {version}")
    folder.mkdir(parents=True, exist_ok=True)
    # apt drops privileges to _apt for downloads and warns when it cannot write here.
    folder.chmod(0o777)
    options = list(apt.options) if apt is not None else []
    _run(["apt-get", *options, "download", "-q", f"{package}:{ARCH}={version}"], cwd=folder)
    debs = sorted(folder.glob("*.deb"))
    if not debs:
        raise InfraError(f"apt-get download {package}:{ARCH}={version} left no .deb in {folder}")
    return debs[0]


def _apt_query(cmd: list[str], apt: AptState | None = None) -> str:
    """Run an apt-cache query; if it finds nothing, update the lists once and ask again."""
    options = list(apt.options) if apt is not None else []
    cmd = [cmd[0], *options, *cmd[1:]]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode == 0 and out.stdout.strip():
        return out.stdout
    # A partial update is fine: bookworm's security mirror sometimes fails to
    # sync its armhf index while the main archive (which we need) is there.
    subprocess.run(["apt-get", *options, "update", "-q"], capture_output=True, text=True, check=False)
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise InfraError(f"{' '.join(cmd)} failed (exit {out.returncode}): {out.stderr.strip()}")
    return out.stdout


def _check_tools() -> None:
    missing = [f"{tool} (Debian package {pkg})" for tool, pkg in _TOOLS.items() if shutil.which(tool) is None]
    if missing:
        raise InfraError("tools needed to build the target image are missing: " + "; ".join(missing))


def _run(cmd: list[str], *, cwd: Path | None = None, stdin: bytes | None = None) -> bytes:
    try:
        out = subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, check=False)
    except OSError as exc:
        raise InfraError(f"cannot run {cmd[0]}: {exc}") from exc
    if out.returncode != 0:
        err = out.stderr.decode(errors="replace").strip()
        raise InfraError(f"{' '.join(cmd)} failed (exit {out.returncode}): {err}")
    return out.stdout


def _module_name(path: str) -> str:
    base = path.rsplit("/", 1)[-1]
    return base.split(".ko", 1)[0].replace("-", "_")


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _image_to_json(image: TargetImage, inputs: Mapping[str, object]) -> dict[str, object]:
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
    )
    ssh = data.get("ssh")
    if data.get("flavour", "plain") == "ssh":
        if not isinstance(ssh, dict):
            raise TypeError("malformed image.json: no ssh keys")
        access = SshAccess(host_public_key=str(ssh["host_public_key"]), client_key=Path(str(ssh["client_key"])))
        image = replace(image, flavour="ssh", ssh=access, capture_program=folder / "capture")
        if not (access.client_key.is_file() and (folder / "capture").is_file()):
            raise ValueError("image files missing")
    if not (image.kernel.is_file() and image.initrd.is_file()):
        raise ValueError("image files missing")
    return image


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m cma_tool.deploy.image", description="Build the emulated board's image.")
    parser.add_argument("--cache", type=Path, help="cache folder (default $CMA_TOOL_CACHE or ~/.cache/cma-tool)")
    parser.add_argument("--kernel-package", help="pin the kernel, e.g. linux-image-6.1.0-50-armmp")
    parser.add_argument("--suite", help="take the kernel from this Debian suite (e.g. trixie) through a private apt state")
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    parser.add_argument("--ssh", action="store_true", help="build the ssh flavour (dropbear, network)")
    args = parser.parse_args(argv)
    try:
        image = ensure_image(args.cache, kernel_package=args.kernel_package, suite=args.suite,
                             progress=None if args.quiet else print, ssh=args.ssh)
    except (ConfigError, InfraError) as exc:
        print(f"cma_tool.deploy.image: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    if not args.quiet:
        print(f"{image.kernel_package} {image.kernel_version}: {image.kernel}, {image.initrd} ({image.initrd.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
