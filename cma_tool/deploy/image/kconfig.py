"""Each Debian kernel's CMA-relevant Kconfig values, read from its package's own /boot/config-*.

The model's Debian profiles (:data:`cma_tool.model.profiles.DEBIAN_KERNELS`)
take their build values from cma_tool/model/debian-kconfig.json, which
:func:`write_kconfig_table` writes from the packages themselves, so no value
is typed in by hand. A run checks the kernel it boots against its profile
(:func:`cma_tool.deploy.emulated.check_kernel_matches`): a newer package with
other values is refused until the table is read again::

    python3 -m cma_tool.deploy.image --kconfig
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

from cma_tool.deploy.image.apt import apt_state, resolve_kernel
from cma_tool.deploy.image.debs import extracted_package
from cma_tool.model.profiles import DEBIAN_KERNELS, KCONFIG_FILE

#: The symbols the profiles are made of (and a few that explain them: zones, NUMA, per-NUMA CMA).
SYMBOLS = (
    "CMA", "DMA_CMA", "CMA_SIZE_MBYTES", "CMA_SIZE_SEL_MBYTES", "CMA_SIZE_SEL_PERCENTAGE", "CMA_SIZE_PERCENTAGE",
    "CMA_AREAS", "CMA_ALIGNMENT", "CMA_DEBUGFS", "CMA_SYSFS", "ARCH_FORCE_MAX_ORDER", "FORCE_MAX_ZONEORDER",
    "ARM_LPAE", "HUGETLB_PAGE", "ARM64_4K_PAGES", "ARM64_16K_PAGES", "ARM64_64K_PAGES", "ZONE_DMA", "ZONE_DMA32",
    "NUMA", "DMA_PERNUMA_CMA", "VIDEO_VIVID", "VIDEOBUF2_DMA_CONTIG",
)
TABLE = Path(__file__).resolve().parents[2] / "model" / KCONFIG_FILE


def config_values(path: Path) -> dict[str, str]:
    """The :data:`SYMBOLS` a kernel .config sets, as written (``y``, ``m``, a number)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^CONFIG_([A-Z0-9_]+)=(.*)$", line)
        if m and m.group(1) in SYMBOLS:
            values[m.group(1)] = m.group(2).strip('"')
    return values


def write_kconfig_table(cache: Path, say: Callable[[str], None], dest: Path = TABLE) -> dict[str, object]:
    """Fetch each Debian kernel's package (the newest of its series), read its config, write ``dest``."""
    table: dict[str, object] = {}
    for kernel in DEBIAN_KERNELS.values():
        arch = kernel.architecture
        apt = apt_state(cache, kernel.suite, None, say, arch=arch, series=kernel.series)
        package, version = resolve_kernel(cache, None, apt, arch=arch, series=kernel.series)
        release = package.removeprefix("linux-image-")
        root = extracted_package(cache, package, version, say, depmod_release=release, apt=apt, arch=arch)
        table[kernel.name] = {"package": package, "version": version,
                              "config": config_values(root / "boot" / f"config-{release}")}
        say(f"{kernel.name}: {package} {version}")
    dest.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    return table
