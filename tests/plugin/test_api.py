"""cma_tool.api, the typed calls the plugin (and anyone's board test) builds on; no QEMU here.

Predicted values are the kernel's rules for the emulated Aquila worked out
by hand (tests/e2e/expect.py): the 64 MiB default area top-down at
0x64000000, the atomic pool's 64 pages at its base, 1013-page 1080p YUYV
buffers on 256-page alignment.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

from cma_tool import api

ROOT = Path(__file__).resolve().parents[2]
AQUILA = ROOT / "boards" / "qemu-aquila.yaml"
REPLAY = ROOT / "tests" / "data" / "serial-replay"


def test_the_plugin_uses_nothing_private_of_cma_tool() -> None:
    source = ROOT / "cma_tool" / "pytest_plugin.py"
    tree = ast.parse(source.read_text(), str(source))
    imported: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cma_tool"):
            imported += [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            imported += [alias.name for alias in node.names if alias.name.startswith("cma_tool")]
    assert imported and all(name.startswith("cma_tool.api") or name == "cma_tool.api" for name in imported), imported
    assert not [n for n in imported if any(part.startswith("_") for part in n.split("."))]
    # Nothing underscored reached through the api module either (api._x).
    private = [node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
               and isinstance(node.value, ast.Name) and node.value.id == "api" and node.attr.startswith("_")]
    assert private == []


def test_every_public_call_is_typed_and_documented() -> None:
    for name in api.__all__:
        obj = getattr(api, name)
        if inspect.isfunction(obj):
            sig = inspect.signature(obj)
            assert obj.__doc__, name
            assert sig.return_annotation is not inspect.Signature.empty, name
            assert all(p.annotation is not inspect.Parameter.empty for p in sig.parameters.values()), name


def test_a_board_is_planned_and_predicted_before_anything_boots() -> None:
    plan = api.load_board(AQUILA)
    assert {(a.name, a.base, a.size) for a in plan.areas} >= {("linux,cma", 0x64000000, 64 << 20)}
    prediction = api.predict(plan)
    finishes = [e for e in prediction.events if e.kind == "alloc_finish"]
    assert [e.pfn for e in finishes] == [0x64000, 0x64100, 0x64500, 0x64900, 0x64D00]
    assert [e.count for e in finishes] == [64, 1013, 1013, 1013, 1013]
    assert prediction.cma_total_kb == (64 + 16 + 16) * 1024
    # A model told another base puts everything 0x4000 pages lower.
    pinned = api.predict(plan, pins={"linux,cma": 0x60000000})
    assert [e.pfn for e in pinned.events if e.kind == "alloc_finish"][:2] == [0x60000, 0x60100]


def test_the_emulated_boards_suite_picks_the_kernel_profile() -> None:
    assert api.target_kernel_profile("emulated", suite="trixie") == "linux-6.12"
    assert api.load_board(AQUILA, suite="trixie").profile.name == "linux-6.12"
    with pytest.raises(api.ConfigError, match="no Debian kernel is known for suite .sid."):
        api.load_board(AQUILA, suite="sid")


def test_the_emulated_boards_kernel_name_picks_its_profile() -> None:
    # A suite names its armhf kernel; a kernel name says the architecture too.
    assert api.target_kernel_profile("emulated", suite="bullseye") == "linux-5.10"
    assert api.target_kernel_profile("emulated", kernel="debian-6.12-arm64") == "linux-6.12-arm64"
    plan = api.load_board(AQUILA, kernel="debian-5.10-arm64")
    assert (plan.profile.name, plan.profile.architecture) == ("linux-5.10-arm64", "arm64")
    with pytest.raises(api.ConfigError, match="both a kernel"):
        api.target_kernel_profile("emulated", suite="trixie", kernel="debian-6.12-arm64")


def test_a_scenario_for_another_kernel_is_refused(tmp_path: Path) -> None:
    scenario = tmp_path / "s.yaml"
    scenario.write_text("kernel: linux-6.12\nsteps:\n"
                        "  - capture: {device: vivid, width: 640, height: 480, format: YUYV, buffers: 2}\n")
    with pytest.raises(api.ConfigError, match="the scenario is for kernel profile linux-6.12"):
        api.capture_schedule(api.load_board(AQUILA), scenario)


def test_bad_pins_are_said_as_such() -> None:
    assert api.pins_from([("linux,cma", 1)]) == (("linux,cma", 1),)
    with pytest.raises(api.ConfigError, match="expected an area name and an integer base"):
        api.pins_from({"linux,cma": "0x60000000"})  # type: ignore[dict-item]


def test_only_the_emulated_board_is_kept_booted(tmp_path: Path) -> None:
    plan = api.load_board(AQUILA)
    with pytest.raises(api.UsageError, match="emulated board only"), api.boot(plan, out=tmp_path, target="serial"):
        pass
    with pytest.raises(api.ConfigError, match="runs linux-6.12"), api.boot(plan, out=tmp_path, suite="trixie"):
        pass


def test_observe_and_cross_check_a_real_console() -> None:
    plan = api.load_board(ROOT / "tests" / "sim" / "emulated-twin.yaml")
    obs = api.observe((REPLAY / "console.log").read_bytes().decode(errors="replace"))
    checks, prediction = api.cross_check(plan, obs)
    assert all(c.passed for c in checks) and api.explain(checks) == f"all {len(checks)} checks passed"
    assert [e.pfn for e in prediction.events if e.kind == "alloc_finish"] == [0x64000, 0x64100, 0x64500, 0x64900,
                                                                             0x64D00]
    checks, _ = api.cross_check(plan, obs, pins={"linux,cma": 0x60000000})
    text = api.explain(checks)
    assert "expected (model):  cma_alloc_finish: name=linux,cma pfn=0x60000 page=(ptrval) count=64 align=6" in text
    assert "observed (kernel): cma_alloc_finish: name=linux,cma pfn=0x64000 page=(ptrval) count=64 align=6" in text
    assert "likely cause:      every later pfn of linux,cma is off by the same +0x4000 pages" in text
