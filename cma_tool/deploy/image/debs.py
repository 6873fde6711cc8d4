"""Debian packages on disk: each .deb downloaded once into the cache, and unpacked once.

    debs/<package>/<version>/*.deb      apt-get download
    extract/<package>_<version>/        dpkg-deb -x (kernel: plus depmod)

Newer Debian kernels install their modules under /usr/lib/modules; the
extracted package gets a ``lib -> usr/lib`` link so the recipe reads both
layouts alike.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from cma_tool.deploy.image.apt import ARCH, AptState
from cma_tool.deploy.image.tools import run_tool
from cma_tool.errors import InfraError


def extracted_package(
    cache: Path,
    package: str,
    version: str,
    say: Callable[[str], None],
    *,
    depmod_release: str = "",
    apt: AptState | None = None,
    arch: str = ARCH,
) -> Path:
    """The package's files under cache/extract/, downloading and unpacking once."""
    # armhf keeps the folder names it always had; another architecture's copy of a package gets its own.
    suffix = "" if arch == ARCH else f"_{arch}"
    dest = cache / "extract" / f"{package}_{version}{suffix}"
    if dest.is_dir():
        return dest
    deb = _downloaded(cache, package, version, say, apt, arch)
    say(f"unpacking {deb.name}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{package}-", dir=dest.parent))
    try:
        run_tool(["dpkg-deb", "-x", str(deb), str(work)])
        if (work / "usr" / "lib" / "modules").is_dir() and not (work / "lib").exists():
            # Merged-/usr kernels (trixie on) ship /usr/lib/modules; depmod -b
            # (kmod 30) and the recipe look under lib/modules.
            (work / "lib").symlink_to("usr/lib")
        if depmod_release:  # Debian's kernel package ships no modules.dep
            run_tool(["depmod", "-b", str(work), depmod_release])
        try:
            work.rename(dest)
        except OSError:
            if not dest.is_dir():  # else another process unpacked it first
                raise
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return dest


def _downloaded(cache: Path, package: str, version: str, say: Callable[[str], None], apt: AptState | None = None,
                arch: str = ARCH) -> Path:
    folder = cache / "debs" / package / version / ("" if arch == ARCH else arch)
    debs = sorted(folder.glob(f"*_{arch}.deb")) if folder.is_dir() else []
    if debs:
        return debs[0]
    say(f"downloading {package}:{arch} {version}")
    folder.mkdir(parents=True, exist_ok=True)
    # apt drops privileges to _apt for downloads and warns when it cannot write here.
    folder.chmod(0o777)
    options = list(apt.options) if apt is not None else []
    run_tool(["apt-get", *options, "download", "-q", f"{package}:{arch}={version}"], cwd=folder)
    debs = sorted(folder.glob(f"*_{arch}.deb"))
    if not debs:
        raise InfraError(f"apt-get download {package}:{arch}={version} left no .deb in {folder}")
    return debs[0]
