"""The host tools the image build runs: which must be installed, and running one."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from cma_tool.errors import InfraError

#: Tools the build runs, with the Debian package that provides each.
BUILD_TOOLS = {
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg-deb": "dpkg",
    "depmod": "kmod",
    "cpio": "cpio",
    "arm-linux-gnueabihf-gcc": "gcc-arm-linux-gnueabihf (and libc6-dev-armhf-cross)",
}
#: The C cross compiler for the capture program, by the target's architecture, with its Debian packages.
CROSS_GCC = {
    "armhf": ("arm-linux-gnueabihf-gcc", "gcc-arm-linux-gnueabihf (and libc6-dev-armhf-cross)"),
    "arm64": ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu (and libc6-dev-arm64-cross)"),
}
#: readelf for the ssh flavour's programs and libraries, by architecture.
CROSS_READELF = {
    "armhf": ("arm-linux-gnueabihf-readelf", "binutils-arm-linux-gnueabihf"),
    "arm64": ("aarch64-linux-gnu-readelf", "binutils-aarch64-linux-gnu"),
}


def check_tools(arch: str = "armhf") -> None:
    """Fail naming every missing tool and the Debian package that provides it."""
    tools = {**BUILD_TOOLS, CROSS_GCC[arch][0]: CROSS_GCC[arch][1], CROSS_READELF[arch][0]: CROSS_READELF[arch][1]}
    missing = [f"{tool} (Debian package {pkg})" for tool, pkg in tools.items() if shutil.which(tool) is None]
    if missing:
        raise InfraError("tools needed to build the target image are missing: " + "; ".join(missing))


def run_tool(cmd: list[str], *, cwd: Path | None = None, stdin: bytes | None = None) -> bytes:
    """Run ``cmd`` and return its stdout; a failure (or a tool that cannot start) is an InfraError with its stderr."""
    try:
        out = subprocess.run(cmd, cwd=cwd, input=stdin, capture_output=True, check=False)
    except OSError as exc:
        raise InfraError(f"cannot run {cmd[0]}: {exc}") from exc
    if out.returncode != 0:
        err = out.stderr.decode(errors="replace").strip()
        raise InfraError(f"{' '.join(cmd)} failed (exit {out.returncode}): {err}")
    return out.stdout
