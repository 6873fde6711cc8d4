"""A private image cache for tests that must build for real, sharing the downloads of the user's cache."""

from __future__ import annotations

import shutil
from pathlib import Path

from cma_tool.deploy.image import default_cache_dir


def private_cache(tmp_path: Path) -> Path:
    """``tmp_path/cache``: its own images and keys, the shared cache's .debs and extracted packages."""
    cache = tmp_path / "cache"
    cache.mkdir()
    shared = default_cache_dir()
    for sub in ("debs", "extract"):
        (cache / sub).symlink_to(shared / sub)
    if (shared / "apt-resolved.json").is_file():
        shutil.copy(shared / "apt-resolved.json", cache / "apt-resolved.json")
    return cache
