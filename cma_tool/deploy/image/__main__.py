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
