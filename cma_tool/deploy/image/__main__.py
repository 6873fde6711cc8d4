"""``python3 -m cma_tool.deploy.image``: fetch and build the emulated board's image ahead of time (install.sh does)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from cma_tool.deploy.image.cache import ensure_image
from cma_tool.errors import ConfigError, InfraError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m cma_tool.deploy.image", description="Build the emulated board's image.")
    parser.add_argument("--cache", type=Path, help="cache folder (default $CMA_TOOL_CACHE or ~/.cache/cma-tool)")
    parser.add_argument("--kernel-package", help="pin the kernel, e.g. linux-image-6.1.0-50-armmp")
    parser.add_argument("--suite", help="an armhf kernel by its Debian suite (bullseye, bookworm, trixie)")
    parser.add_argument("--kernel", help="the Debian kernel: debian-{5.10,6.1,6.12}-{armhf,arm64}")
    parser.add_argument("--kconfig", action="store_true",
                        help="instead of an image: read every Debian kernel's /boot/config-* into the model's table")
    parser.add_argument("--quiet", action="store_true", help="print only errors")
    parser.add_argument("--ssh", action="store_true", help="build the ssh flavour (dropbear, network)")
    args = parser.parse_args(argv)
    try:
        if args.kconfig:
            from cma_tool.deploy.image.cache import default_cache_dir
            from cma_tool.deploy.image.kconfig import TABLE, write_kconfig_table

            write_kconfig_table((args.cache or default_cache_dir()).resolve(), (lambda _m: None) if args.quiet else print)
            print(f"wrote {TABLE}")
            return 0
        image = ensure_image(args.cache, kernel_package=args.kernel_package, suite=args.suite, kernel=args.kernel,
                             progress=None if args.quiet else print, ssh=args.ssh)
    except (ConfigError, InfraError) as exc:
        print(f"cma_tool.deploy.image: {exc}", file=sys.stderr)
        return int(exc.exit_code)
    if not args.quiet:
        print(f"{image.kernel_package} {image.kernel_version}: {image.kernel}, {image.initrd} ({image.initrd.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
