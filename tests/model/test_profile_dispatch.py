"""Kernel differences are data: a new kernel family that nothing handles must fail the type check.

The family is a closed enum and the only code that tells families apart is
an exhaustive ``match`` (profiles.facts_of). These tests copy the package,
add a family member and a profile for it without handling it, and run the
project's own mypy settings on the copy: mypy must name every family
dispatch site and nothing else. The unmodified copy must pass, so the test
fails only for that reason.
"""

from __future__ import annotations

import ast
import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cma_tool.model import profiles as prof
from cma_tool.model.profiles import (
    PROFILES,
    DeviceTreeReservation,
    Family,
    KconfigSymbols,
    KernelFacts,
    KernelProfile,
    facts_of,
)

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "cma_tool"
PROFILES_PY = PACKAGE / "model" / "profiles.py"
FAKE = "LINUX_5_15"
#: Modules that still read ``profile.family`` outside profiles.py, each with the fact that replaces it.
PENDING_FAMILY_READERS: set[str] = set()


def _mypy(folder: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", "setup.cfg", "--cache-dir", str(cache), "--no-error-summary",
         "cma_tool"],
        cwd=folder, capture_output=True, text=True, check=False,
    )


def _family_dispatch_sites(package: Path) -> set[tuple[str, int]]:
    """(file, line) of the assert_never that closes each ``match`` on a family."""
    sites: set[tuple[str, int]] = set()
    for path in sorted(package.rglob("*.py")):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            if not re.match(r"\s*match [\w.]*family:\s*$", line):
                continue
            indent = len(line) - len(line.lstrip())
            for later in range(number + 1, len(lines)):
                body = lines[later]
                if body.strip() and len(body) - len(body.lstrip()) <= indent:
                    break
                if "assert_never(" in body:
                    sites.add((path.relative_to(package.parent).as_posix(), later + 1))
                    break
            else:
                raise AssertionError(f"{path}:{number + 1}: a match on the family without assert_never")
    return sites


def _add_unhandled_family(profiles_py: Path) -> None:
    """A family member and a profile for it, handled nowhere."""
    text = profiles_py.read_text()
    member = re.search(r"^(\s+)LINUX_6_12 = .*$", text, re.M)
    assert member is not None, "Family.LINUX_6_12 not found"
    text = text[: member.end()] + f'\n{member.group(1)}{FAKE} = "5.15"' + text[member.end():]
    base = PROFILES["linux-6.1"]
    values = {f.name: getattr(base, f.name) for f in dataclasses.fields(KernelProfile)}
    values.update(name="linux-5.15")
    args = ", ".join(f"{k}={v!r}" for k, v in values.items() if k != "family")
    entry = f"        KernelProfile({args}, family=Family.{FAKE}),\n"
    anchor = re.search(r"^PROFILES: [^\n]*\n(?:[^\n]*\n)*?\s+for p in \(\n", text, re.M)
    assert anchor is not None, "PROFILES table not found"
    text = text[: anchor.end()] + entry + text[anchor.end():]
    profiles_py.write_text(text)


@pytest.mark.slow
def test_unhandled_family_fails_mypy_at_every_dispatch_site(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(PACKAGE, copy / "cma_tool", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "setup.cfg", copy / "setup.cfg")
    cache = tmp_path / "mypy-cache"

    control = _mypy(copy, cache)
    assert control.returncode == 0, f"the unmodified copy must pass mypy:\n{control.stdout}{control.stderr}"

    _add_unhandled_family(copy / "cma_tool" / "model" / "profiles.py")
    sites = _family_dispatch_sites(copy / "cma_tool")
    closing = _facts_of_assert_never_line(copy / "cma_tool/model/profiles.py")
    assert closing is not None, "facts_of() must end its match on the family with assert_never"
    assert ("cma_tool/model/profiles.py", closing) in sites
    checked = _mypy(copy, cache)
    assert checked.returncode == 1, checked.stdout + checked.stderr
    reported = set()
    for error in (line for line in checked.stdout.splitlines() if ": error: " in line):
        where, _, message = error.partition(": error: ")
        file, line = where.rsplit(":", 1)
        assert "assert_never" in message and f"Family.{FAKE}" in message, error
        reported.add((file, int(line)))
    assert reported == sites, f"mypy named {sorted(reported)}; the family dispatch sites are {sorted(sites)}"

    # And at run time the unhandled family stops at the same place, not in a silent default.
    probe = subprocess.run(
        [sys.executable, "-c", f"from cma_tool.model.profiles import Family, facts_of; facts_of(Family.{FAKE})"],
        cwd=copy, capture_output=True, text=True, check=False,
    )
    assert probe.returncode != 0 and "AssertionError" in probe.stderr


def _facts_of_assert_never_line(profiles_py: Path) -> int | None:
    tree = ast.parse(profiles_py.read_text())
    func = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "facts_of")
    call = next((n for n in ast.walk(func) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "assert_never"),
                None)
    return call.lineno if call is not None else None


def test_no_module_but_profiles_reads_the_family() -> None:
    """Code asks for a kernel fact, never which kernel it is."""
    readers = set()
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(ROOT).as_posix()
        if rel == "cma_tool/model/profiles.py":
            continue
        if re.search(r"\.family\b", path.read_text()):
            readers.add(rel)
    assert readers <= PENDING_FAMILY_READERS, f"read profile.family outside profiles.py: {sorted(readers)}"


_DECLARED = (KernelProfile, KernelFacts, DeviceTreeReservation, KconfigSymbols)


@pytest.mark.parametrize("cls", _DECLARED, ids=lambda c: c.__name__)
def test_no_field_has_a_default(cls: type) -> None:
    """A kernel fact or build value nobody wrote down would be a silent guess."""
    defaulted = [f.name for f in dataclasses.fields(cls)
                 if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING]
    assert not defaulted, f"{cls.__name__} fields with defaults: {defaulted}"


def test_profiles_py_names_every_field_in_every_declaration() -> None:
    """Each profile and each family's facts spell out every field by name (no positional values, no ``**``)."""
    names = {cls.__name__: {f.name for f in dataclasses.fields(cls)} for cls in _DECLARED}
    seen = dict.fromkeys(names, 0)
    for node in ast.walk(ast.parse(PROFILES_PY.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names):
            continue
        cls = node.func.id
        seen[cls] += 1
        assert not node.args, f"line {node.lineno}: {cls} with positional values"
        given = [k.arg for k in node.keywords]
        assert None not in given, f"line {node.lineno}: {cls} with **values"
        assert set(given) == names[cls], f"line {node.lineno}: {cls} misses {sorted(names[cls] - set(given))}"
    # The typed profiles, and the one call that makes every Debian kernel's profile from its package's config.
    debian = {k.profile for k in prof.DEBIAN_KERNELS.values()}
    assert seen["KernelProfile"] == len(set(PROFILES) - debian) + 1
    assert debian <= set(PROFILES), "every Debian kernel's config is in debian-kconfig.json"
    assert seen["KernelFacts"] == len(Family)


def test_every_family_has_facts_and_a_bundled_profile() -> None:
    assert {p.family for p in PROFILES.values()} == set(Family)
    for family in Family:
        assert isinstance(facts_of(family), KernelFacts)


def _varies(values: list[object]) -> bool:
    return len({repr(v) for v in values}) > 1


def test_every_kernel_fact_tells_two_kernels_apart() -> None:
    """A fact every modelled kernel agrees on is not a difference between kernels: it belongs in code."""
    facts = [facts_of(f) for f in Family]
    same = [f.name for f in dataclasses.fields(KernelFacts) if not _varies([getattr(x, f.name) for x in facts])]
    assert not same, f"KernelFacts fields equal for every family: {same}"
    dts = [x.reservation for x in facts if isinstance(x.reservation, DeviceTreeReservation)]
    same = [f.name for f in dataclasses.fields(DeviceTreeReservation)
            if not _varies([getattr(x, f.name) for x in dts])]
    assert not same, f"DeviceTreeReservation fields equal for every device-tree kernel: {same}"
    kconfigs = [x.kconfig for x in facts]
    same = [f.name for f in dataclasses.fields(KconfigSymbols) if not _varies([getattr(x, f.name) for x in kconfigs])]
    assert not same, f"KconfigSymbols fields equal for every family: {same}"


def test_facts_are_what_the_recordings_and_sources_say() -> None:
    """Spot checks that tie a few facts to the kernel behaviour they stand for."""
    p61, p612 = PROFILES["linux-6.1"], PROFILES["linux-6.12"]
    # 6.1: MAX_CMA_AREAS = 1 + CONFIG_CMA_AREAS; 6.12: CONFIG_CMA_AREAS (tests/model/test_kernel_612.py).
    assert (p61.area_slots, p612.area_slots) == (p61.config_cma_areas + 1, p612.config_cma_areas)
    # The same 8 MiB pageblock build reads ARCH_FORCE_MAX_ORDER 12 on 6.1 and 11 on 6.12.
    assert (p61.max_order_as_written, p612.max_order_as_written) == (12, 11)
    assert p61.reads_device_tree and p612.reads_device_tree
    assert not PROFILES["linux-3.5"].reads_device_tree and not PROFILES["cma-2011"].reads_device_tree
    assert PROFILES["linux-3.5"].facts.reservation is prof.BoardFileApi.DMA_DECLARE_CONTIGUOUS
