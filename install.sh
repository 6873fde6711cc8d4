#!/usr/bin/env bash
# Installs everything cma-tool needs on a Debian 12 (bookworm) machine, as root:
# the host tools (QEMU, dtc, the ARM cross compiler, U-Boot for QEMU, sshd),
# the Python package with its test extras, and the emulated board's image.
# Safe to run again: every step is idempotent.
set -euo pipefail
cd "$(dirname "$0")"

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

DEB_PACKAGES=(
  qemu-system-arm         # the emulated Aquila: QEMU virt, armhf and arm64 (the package holds qemu-system-aarch64 too)
  device-tree-compiler    # dtc, fdtdump
  gcc-arm-linux-gnueabihf libc6-dev-armhf-cross   # the on-target capture program (armhf)
  gcc-aarch64-linux-gnu libc6-dev-arm64-cross     # the on-target capture program (arm64)
  binutils-aarch64-linux-gnu  # readelf for the arm64 ssh flavour's libraries; objdump: the tests read the boot stub
  cpio kmod               # initramfs, depmod
  u-boot-qemu u-boot-tools  # real U-Boot for the emulated board; mkimage
  libubootenv-tool        # fw_printenv, fw_setenv (the U-Boot environment tests)
  openssh-server openssh-sftp-server openssh-client   # a real sshd on 127.0.0.1 for the SSH deploy tests
  gcc cpp git curl        # the tests' host harnesses, the patch checks, curl's TFTP client
  linux-source-6.1        # a real 6.1 tree: the dts patch and import tests build its s5pv210 DTBs
  make flex bison bc      # ... with its own Makefile (defconfig builds kconfig; scripts/dtc)
  lrzsz                   # sb/sx: the reference YMODEM sender for the benchmark
  chromium fonts-liberation  # headless: the report tests open report.html in a real browser (fonts: legible screenshots)
  ser2net                 # labgrid's exporter serves a place's serial console through it (the lab tests)
  python3-pip python3-venv
)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  case "$p" in \#*) continue ;; esac
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# The target's Debian packages (kernels, busybox-static) are fetched per architecture.
for arch in armhf arm64; do
  if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
    $SUDO dpkg --add-architecture "$arch"
    missing+=(foreign-lists)
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install.sh: apt-get install ${missing[*]}"
  # A mirror that is mid-sync can fail one index (seen for bookworm-security armhf);
  # the main archive is enough, so a partial update is not fatal.
  $SUDO apt-get update -q || echo "install.sh: apt-get update reported errors; continuing with what it fetched"
  pkgs=()
  for p in "${missing[@]}"; do [ "$p" = foreign-lists ] || pkgs+=("$p"); done
  if [ ${#pkgs[@]} -gt 0 ]; then
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${pkgs[@]}"
  fi
fi

# sshd (the SSH tests start their own on 127.0.0.1) refuses to start without this folder.
mkdir -p -m 0755 /run/sshd

# The interpreter itself, not a version manager's shim: pyenv's shim runs a
# "rehash" after pip that waits on a lock file and fails the install when a
# stale lock is left behind.
PY=$(python3 -c 'import sys; print(sys.executable)')
"$PY" -m pip install -q -e '.[test]'
# Byte-compile the package now, as pip does for a regular install: an editable
# install leaves it to the first import, and with PYTHONDONTWRITEBYTECODE set
# (as on some CI hosts) every run would compile ~100 modules again (~0.1 s).
"$PY" -m compileall -q cma_tool >/dev/null
if ! command -v cma-tool >/dev/null 2>&1 || ! cma-tool --version >/dev/null 2>&1; then
  # No shim for the new console script (pyenv without a rehash): a plain wrapper.
  printf '#!/bin/sh\nexec "%s" -m cma_tool "$@"\n' "$PY" | $SUDO tee /usr/local/bin/cma-tool >/dev/null
  $SUDO chmod 755 /usr/local/bin/cma-tool
fi

# Fetch the target's Debian packages and build the emulated board's image once;
# later runs reuse the cache and rebuild only when an input changed.
"$PY" -m cma_tool.deploy.image --quiet
"$PY" -m cma_tool.deploy.image --quiet --ssh   # the SSH flavour (dropbear) for --boot ssh
# Every kernel of the matrix (--kernel debian-{5.10,6.1,6.12}-{armhf,arm64}); bullseye and trixie through
# private apt states in the cache. The tests boot each once.
for k in debian-5.10-armhf debian-6.12-armhf debian-5.10-arm64 debian-6.1-arm64 debian-6.12-arm64; do
  "$PY" -m cma_tool.deploy.image --quiet --kernel "$k"
done
"$PY" -m cma_tool.deploy.image --quiet --kernel debian-6.1-arm64 --ssh   # the arm64 board over SSH
echo "install.sh: done"
