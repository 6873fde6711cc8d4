"""The Kconfig fragment writes exactly the symbols each kernel's facts name, with values kconfig.py knows."""

from __future__ import annotations

import pytest

from cma_tool.board.types import Board
from cma_tool.generate.kconfig import kconfig_fragment
from cma_tool.model.profiles import PROFILES

from .test_kconfig import parse


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_fragment_sets_every_cma_symbol_the_kernel_has(aquila: Board, name: str) -> None:
    profile = PROFILES[name]
    cfg = parse(kconfig_fragment(aquila, profile))
    symbols = profile.facts.kconfig
    cma = {k for k in cfg if not k.startswith(("CONFIG_MEDIA", "CONFIG_VIDEO", "CONFIG_V4L"))}
    assert cma == {f"CONFIG_{s}" for s in (*symbols.cma, symbols.max_order)}
    assert cfg[f"CONFIG_{symbols.max_order}"] == str(profile.max_order_as_written)
