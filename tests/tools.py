"""The host tools the tests call, each with what installs it, and the one way a test asks for one.

On a developer's machine a missing tool skips the test, naming the package.
Under CI (``CI=true``) it fails the test instead: a green CI must not hide an
install step that install.sh lacks. tests/test_tools.py checks that every tool
asked for is listed here and every package here is one install.sh installs.
"""

from __future__ import annotations

import os
import shutil

import pytest

#: tool -> the Debian package install.sh installs it from ("pip:" for the test extras).
TOOL_PACKAGES = {
    "dtc": "device-tree-compiler",
    "fdtdump": "device-tree-compiler",
    "fdtget": "device-tree-compiler",
    "cpp": "cpp",
    "gcc": "gcc",
    "arm-linux-gnueabihf-gcc": "gcc-arm-linux-gnueabihf",
    "dt-validate": "pip:dtschema",
    "dt-mk-schema": "pip:dtschema",
    "make": "make",
    "flex": "flex",
    "bison": "bison",
    "bc": "bc",
    "/usr/src/linux-source-6.1.tar.xz": "linux-source-6.1",
    "mkimage": "u-boot-tools",
    "dumpimage": "u-boot-tools",
    "mkenvimage": "u-boot-tools",
    "fw_printenv": "libubootenv-tool",
    "fw_setenv": "libubootenv-tool",
    "git": "git",
    "curl": "curl",
    "cpio": "cpio",
    "qemu-system-arm": "qemu-system-arm",
    "qemu-system-aarch64": "qemu-system-arm",
    "aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu",
    "aarch64-linux-gnu-objdump": "binutils-aarch64-linux-gnu",
    "sb": "lrzsz",
    "sx": "lrzsz",
    "ssh-keygen": "openssh-client",
    "/usr/sbin/sshd": "openssh-server",
    "/usr/lib/openssh/sftp-server": "openssh-sftp-server",
    "chromium": "chromium",
    "ser2net": "ser2net",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str, package: str) -> None:
    """Skip (a developer's machine) or fail (CI) for something install.sh should have put there."""
    message = f"{what} is not installed: install.sh installs it from {package!r} (run ./install.sh)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)


def need(tool: str) -> str:
    """The path of ``tool``; a tool the table does not know is a mistake in the test itself."""
    package = TOOL_PACKAGES[tool]
    if tool.startswith("/"):
        # An absolute path: an executable, or a file a package installs (a source tarball).
        path = tool if os.access(tool, os.R_OK if tool.endswith(".tar.xz") else os.X_OK) else None
    else:
        path = shutil.which(tool)
    if path is None:
        missing(tool, package)
    assert path is not None
    return path
