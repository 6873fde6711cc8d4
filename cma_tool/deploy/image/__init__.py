"""The emulated board's software: Debian's armhf kernel + a tiny initramfs.

The image holds busybox, the vivid capture driver with the modules it needs,
the static ``capture`` program (firmware/capture/capture.c) and firmware/init.
Packages are fetched once into a cache folder; an image is rebuilt only when
one of its inputs changes (package versions, the firmware sources, this
recipe, the cross compiler) or its cached files are damaged (image.json
records their sha256; every cache hit checks them). A run's files (the capture
plan) do not go into the cached image: :func:`compose_initrd` appends them as
a second, tiny cpio archive, each as /cmatool/<name>.

Two flavours share the recipe. The plain image boots straight into the
capture plan. The ``ssh`` flavour (``ensure_image(ssh=True)``) is a board
reached over the network: it adds Debian's dropbear (the kernel's architecture) and sftp-server
with exactly the shared libraries they load, the virtio network drivers,
/etc/passwd, root's authorized_keys and a dropbear host key, and leaves the
capture program out (the host deploys it over SSH). /init starts the network
and dropbear only with ``cmatool.mode=ssh``.

The kernel is one of Debian's (``ensure_image(kernel="debian-6.1-arm64")``;
``suite="trixie"`` names a suite's armhf kernel): 5.10 (bullseye), 6.1
(bookworm) or 6.12 (trixie), armhf or arm64. Another suite's kernel is
fetched through a private apt state inside the cache, so the system's apt
sources are never touched. Everything else (busybox, the ssh flavour's
packages) comes from the system's sources, for the kernel's architecture:
busybox-static runs on any kernel. An arm64 image holds arm64 busybox, the
capture program built with aarch64-linux-gnu-gcc, and the kernel's
uncompressed Image. Newer Debian kernels compress their modules with xz;
they are unpacked into the image.

One job per module:

- ``apt``: which package versions (the system's apt state or a suite's private one)
- ``debs``: the .deb files, downloaded and unpacked once
- ``rootfs``: the root file system: staging, module closure, ELF libraries, cpio
- ``keys``: the ssh flavour's host and client keys
- ``cache``: the cache key, building, checking and pruning images; a run's initrd
- ``tools``: the host tools the build runs (the cross compiler by architecture)
- ``kconfig``: each Debian kernel's config values, for the model's profiles

Layout of the cache folder::

    debs/<package>/<version>/*.deb      apt-get download
    extract/<package>_<version>/        dpkg-deb -x (kernel: plus depmod)
    images/<key>/vmlinuz, initrd.gz, image.json (ssh flavour: plus capture)
    ssh-keys/                           dropbear host key, client key (ssh flavour)
    apt/<suite>/sources.list, lists/, cache/, resolved.json   private apt state of another suite (armhf, arm64)

Run as ``python3 -m cma_tool.deploy.image [--quiet] [--cache DIR]
[--kernel-package PKG] [--kernel NAME | --suite SUITE] [--ssh]`` to fetch and
build ahead of time (install.sh does), or with ``--kconfig``.
"""

from cma_tool.deploy.image.apt import system_archive
from cma_tool.deploy.image.cache import TargetImage, compose_initrd, default_cache_dir, ensure_image, read_kernel_config
from cma_tool.deploy.image.keys import SshAccess
from cma_tool.deploy.image.rootfs import FIRMWARE_DIR, module_closure

__all__ = [
    "FIRMWARE_DIR",
    "SshAccess",
    "TargetImage",
    "compose_initrd",
    "default_cache_dir",
    "ensure_image",
    "module_closure",
    "read_kernel_config",
    "system_archive",
]
