"""Which package versions an image is built from: apt's answers, from the system's own sources or another Debian suite's.

The system's apt state is only read. Another suite (``trixie``, ``bullseye``)
gets a private apt state inside the cache (:func:`suite_apt`): its own sources
list (the system's own Debian archive URI, that suite, main, armhf and arm64),
lists and package cache. Every query names the architecture (``armhf`` or
``arm64``) and the kernel series (6.1: ``linux-image-6.1.0-N-armmp`` or
``-arm64``), so bookworm's own newer kernels (6.12 from its updates) are never
picked for 6.1. Answers are remembered in the cache while apt's lists stay the same
(``apt-resolved.json``, ``apt/<suite>/resolved.json``): each apt-cache call
costs ~0.8 s here.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cma_tool.errors import ConfigError, InfraError

ARCH = "armhf"  # the emulated board's first architecture, the default everywhere
ARCHITECTURES = ("armhf", "arm64")
BUSYBOX_PACKAGE = "busybox-static"
#: The plain kernel flavour of each architecture (not -rt, -lpae, -cloud, -16k or -dbg).
FLAVOURS = {"armhf": "armmp", "arm64": "arm64"}

#: Any suite's plain kernel: bookworm's linux-image-6.1.0-50-armmp, bullseye's
#: linux-image-5.10.0-32-arm64, trixie's linux-image-6.12.117+deb13-armmp.
_KERNEL_RE = r"^linux-image-((?P<series>\d+\.\d+)(?:\.\d+)*(?:-\d+)?(?:[+~][a-z0-9.]+)?-{flavour})$"


def kernel_package_re(arch: str) -> re.Pattern[str]:
    """The plain kernel package names of ``arch``; group 1 is the release (uname -r), ``series`` e.g. 6.1."""
    return re.compile(_KERNEL_RE.format(flavour=re.escape(FLAVOURS[arch])))
_SUITE_NAME = re.compile(r"^[a-z][a-z0-9-]*$")
#: The system's apt sources, read (never written) for the Debian archive's URI.
SYSTEM_APT_ETC = Path("/etc/apt")
SYSTEM_APT_LISTS = Path("/var/lib/apt/lists")


@dataclass(frozen=True)
class AptState:
    """Which apt state a query or download uses: the system's, or a suite's private one in the cache."""

    suite: str | None = None  # None: the system's sources and lists
    options: tuple[str, ...] = ()  # ``-o`` options that point apt at the private state
    lists: Path = SYSTEM_APT_LISTS
    memo: str = "apt-resolved.json"  # answers remembered, relative to the cache folder


def apt_state(cache: Path, suite: str | None, kernel_package: str | None,
              say: Callable[[str], None] | None = None, *, arch: str = ARCH, series: str = "6.1") -> AptState:
    """The apt state to take the kernel from: the system's, or ``suite``'s private one; refuses a badly named suite or kernel."""
    if suite is not None and not _SUITE_NAME.match(suite):
        raise ConfigError(f"{suite!r} is not a Debian suite name", hint="name one like trixie")
    if kernel_package is not None:
        m = kernel_package_re(arch).match(kernel_package)
        if m is None or m.group("series") != series:
            raise ConfigError(
                f"kernel package {kernel_package!r} is not a Debian {series} {FLAVOURS[arch]} kernel",
                hint=f"name one like linux-image-{series}.0-50-{FLAVOURS[arch]} (plain {FLAVOURS[arch]}: "
                     f"not -rt, -lpae, -cloud or -dbg; see: apt-cache search linux-image-{series})",
            )
    if suite is None:
        return AptState()
    return suite_apt(cache, suite, say)


def newest_kernel_package(apt: AptState | None = None, *, arch: str = ARCH, series: str = "6.1") -> str:
    """The newest plain ``series`` kernel for ``arch`` apt knows, in the system's state or a suite's ``apt``."""
    names = _apt_query(["apt-cache", "pkgnames", f"linux-image-{series}"], apt)
    pattern = kernel_package_re(arch)
    found = [(_version_key(m.group(1)), name) for name in names.split()
             if (m := pattern.match(name)) and m.group("series") == series]
    if not found:
        where = f"Debian {apt.suite}" if apt is not None and apt.suite is not None else "apt"
        raise InfraError(
            f"{where} knows no linux-image-{series}*-{FLAVOURS[arch]} package for {arch}",
            hint=f"the {arch} architecture must be added (dpkg --add-architecture {arch}) "
            "and the suite's source configured; then apt-get update",
        )
    return max(found)[1]


def _version_key(release: str) -> tuple[int, ...]:
    """6.12.117+deb13-armmp -> (6, 12, 117, 13): orders releases as their numbers do."""
    return tuple(int(n) for n in re.findall(r"\d+", release))


def candidate_versions(*packages: str, apt: AptState | None = None, arch: str = ARCH) -> dict[str, str]:
    """The candidate version of each ``package:arch`` (one apt-cache call), from the system's or a suite's state."""
    text = _apt_query(["apt-cache", "policy", *(f"{p}:{arch}" for p in packages)], apt)
    found = dict(re.findall(rf"^(\S+?)(?::{arch})?:\n\s+Installed: .*\n\s+Candidate: (\S+)$", text, re.MULTILINE))
    versions: dict[str, str] = {}
    for p in packages:
        if found.get(p, "(none)") == "(none)":
            raise InfraError(
                f"apt has no candidate version of {p}:{arch}",
                hint=f"dpkg --add-architecture {arch} && apt-get update",
            )
        versions[p] = found[p]
    return versions


def resolve_packages(cache: Path, kernel_package: str | None, apt: AptState | None = None, *, arch: str = ARCH,
                     series: str = "6.1") -> tuple[str, str, str]:
    """(kernel package, its version, busybox version), remembered while apt's lists stay the same.

    Each apt-cache call costs ~0.8 s here (no pkgcache.bin), which would be
    most of a warm ensure_image(); the answer only changes with the lists.
    With a suite's ``apt`` the kernel comes from that suite and busybox from
    the system's sources.
    """
    return (*resolve_kernel(cache, kernel_package, apt, arch=arch, series=series), _resolve_busybox(cache, arch))


def resolve_kernel(cache: Path, kernel_package: str | None, apt: AptState | None = None, *, arch: str = ARCH,
                   series: str = "6.1") -> tuple[str, str]:
    """(kernel package, its version): ``kernel_package`` or the newest of ``series`` for ``arch``, remembered."""
    apt = apt or AptState()
    want = f"kernel:{arch}:{series}:{kernel_package or 'newest'}"
    memo = _AptMemo(cache, apt)
    known = memo.entries.get(want)
    if isinstance(known, list) and len(known) == 2:
        return str(known[0]), str(known[1])
    kpkg = kernel_package or newest_kernel_package(apt, arch=arch, series=series)
    kver = candidate_versions(kpkg, apt=apt, arch=arch)[kpkg]
    memo.store(want, [kpkg, kver])
    return kpkg, kver


def _resolve_busybox(cache: Path, arch: str = ARCH) -> str:
    """busybox-static for ``arch`` from the system's sources: it runs on any of the kernels."""
    memo = _AptMemo(cache)
    want = "busybox" if arch == ARCH else f"busybox:{arch}"
    known = memo.entries.get(want)
    if isinstance(known, str):
        return known
    version = candidate_versions(BUSYBOX_PACKAGE, arch=arch)[BUSYBOX_PACKAGE]
    memo.store(want, version)
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


def suite_apt(cache: Path, suite: str, say: Callable[[str], None] | None = None) -> AptState:
    """The private apt state for ``suite`` in ``cache/apt/<suite>/``, its lists fetched on first use.

    The system's sources and lists stay untouched: apt reads this folder's
    sources.list only (Dir::Etc::sourceparts=- turns off sources.list.d) and
    keeps its lists and package cache here too.
    """
    folder = cache / "apt" / suite
    uri, signed = system_archive()
    opts = [f"arch={','.join(ARCHITECTURES)}"] + ([f"signed-by={signed}"] if signed else [])
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


def resolve_ssh_packages(cache: Path, packages: Sequence[str], arch: str = ARCH) -> dict[str, str]:
    """The candidate version of each of the ssh flavour's ``packages`` for ``arch``, remembered like :func:`resolve_packages`."""
    wanted = list(packages)
    memo = _AptMemo(cache)
    key = "ssh" if arch == ARCH else f"ssh:{arch}"
    known = memo.entries.get(key)
    if isinstance(known, dict) and sorted(known) == sorted(wanted):
        return {str(k): str(v) for k, v in known.items()}
    versions = candidate_versions(*wanted, arch=arch)
    memo.store(key, versions)
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
