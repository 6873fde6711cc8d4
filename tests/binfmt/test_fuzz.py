"""Property and fuzz tests: damaged inputs give only our own errors; generated data round-trips.

Every decoded DTB is also read by pylibfdt, which must accept it and see the
same tree: our reader is never more permissive than the reference library.
"""

from __future__ import annotations

import gzip
import string
import struct
import subprocess
import zlib

import libfdt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cma_tool.binfmt import atags, fdt, ubootenv
from cma_tool.binfmt.atags import AtagError
from cma_tool.binfmt.fdt import FdtError, MemoryBank, ReservedRegion
from cma_tool.binfmt.ubootenv import EnvError

from . import handmade as hm
from .conftest import DATA, compile_dts, decompile, dtc
from .libfdt_view import libfdt_view, our_view

MiB = 1 << 20
FUZZ = settings(max_examples=1200, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
FEW = settings(max_examples=40, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _bases() -> dict[str, bytes]:
    aquila = compile_dts((DATA / "aquila.dts").read_text(), symbols=True)
    virt = dtc("-I", "dtb", "-O", "dtb", "-", stdin=gzip.decompress((DATA / "qemu-virt-768M.dtb.gz").read_bytes())).stdout
    small = hm.Layout(hm.minimal_structure(), b"model\0").blob()
    v16 = dtc("-I", "dtb", "-O", "dtb", "-V", "16", "-", stdin=aquila).stdout
    return {"aquila": aquila, "virt": virt, "small": small, "v16": v16}


BASES = _bases()


def _reg_nodes(blob: bytes) -> list[tuple[str, int, int]]:
    """(node, base, size) of each /reserved-memory child with a reg in a tree, read by libfdt."""
    f = libfdt.Fdt(blob)
    try:
        parent = f.path_offset("/reserved-memory")
    except libfdt.FdtException:
        return []
    cells = f.getprop(0, "#address-cells").as_uint32(), f.getprop(0, "#size-cells").as_uint32()
    out = []
    node = f.first_subnode(parent, quiet=[libfdt.NOTFOUND])
    while node >= 0:
        reg = f.getprop(node, "reg", quiet=[libfdt.NOTFOUND])
        if not isinstance(reg, int):
            words = struct.unpack(f">{len(reg) // 4}I", bytes(reg))
            base = int("".join(f"{w:08x}" for w in words[: cells[0]]), 16)
            size = int("".join(f"{w:08x}" for w in words[cells[0]: cells[0] + cells[1]]), 16)
            out.append((f.get_name(node), base, size))
        node = f.next_subnode(node, quiet=[libfdt.NOTFOUND])
    return out


BASE_REG_NODES = {name: _reg_nodes(blob) for name, blob in BASES.items()}
INTERESTING_WORDS = [0, 1, 2, 3, 4, 8, 9, 16, 17, 40, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xD00DFEED]


@st.composite
def damaged(draw: st.DrawFn, base: bytes) -> bytes:
    blob = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["byte", "word", "header", "truncate", "delete", "insert"]))
        if not blob:
            break
        # Damage past the magic: a wrong magic is one (tested) early exit, and
        # hypothesis would otherwise spend a third of its cases on it.
        if kind == "byte":
            blob[draw(st.integers(min(4, len(blob) - 1), len(blob) - 1))] = draw(st.integers(0, 255))
        elif kind in ("word", "header"):
            limit = 9 if kind == "header" else max(1, len(blob) // 4 - 1)
            at = 4 * draw(st.integers(1, limit))
            value = draw(st.sampled_from(INTERESTING_WORDS) | st.integers(0, len(blob) + 64))
            blob[at : at + 4] = value.to_bytes(4, "big")
        elif kind == "truncate":
            del blob[draw(st.integers(0, len(blob))) :]
        elif kind == "delete":
            at = draw(st.integers(min(4, len(blob) - 1), len(blob) - 1))
            del blob[at : at + draw(st.sampled_from([1, 4, 8, 12]))]
        else:
            at = draw(st.integers(min(4, len(blob)), len(blob)))
            blob[at:at] = draw(st.binary(min_size=1, max_size=12))
    if len(blob) >= 8 and draw(st.booleans()):
        # Keep the total size true so that the damage inside gets looked at.
        blob[4:8] = len(blob).to_bytes(4, "big")
    return bytes(blob)


def check_dtb(blob: bytes) -> None:
    try:
        tree = fdt.decode(blob, source="fuzz.dtb")
    except FdtError as exc:
        assert exc.offset is None or 0 <= exc.offset <= len(blob)
        assert str(exc).startswith("fuzz.dtb")
        return
    try:
        theirs = libfdt_view(blob)
    except libfdt.FdtException as exc:  # pragma: no cover - a finding, shown in the failure
        pytest.fail(f"we accepted a blob libfdt refuses ({exc}): {blob.hex()}")
    assert our_view(tree) == theirs
    assert our_view(fdt.decode(fdt.encode(tree))) == our_view(tree)
    fdt.show(tree)


@pytest.mark.parametrize("name", ["aquila", "small", "v16"])
@FUZZ
@given(data=st.data())
def test_damaged_dtb_gives_only_fdt_errors(name: str, data: st.DataObject) -> None:
    check_dtb(data.draw(damaged(BASES[name])))


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_damaged_qemu_dtb_gives_only_fdt_errors(data: st.DataObject) -> None:
    check_dtb(data.draw(damaged(BASES["virt"])))


# ---------------------------------------------------------------- generated trees

NODE_CHARS = string.ascii_lowercase + string.digits + ",._+-"
PROP_CHARS = string.ascii_lowercase + string.digits + ",._+?#-"
prop_names = st.text(PROP_CHARS, min_size=1, max_size=12).filter(lambda n: n not in ("phandle", "linux,phandle"))
node_names = st.builds(
    lambda base, unit: base + (f"@{unit:x}" if unit is not None else ""),
    st.text(NODE_CHARS, min_size=1, max_size=10),
    st.none() | st.integers(0, 0xFFFFFFFF),
)
values = st.one_of(
    st.binary(max_size=24),
    st.lists(st.integers(0, 0xFFFFFFFF), max_size=6).map(lambda c: fdt.encode_cells(*c)),
    st.lists(st.text(string.printable.replace("\x0b", "").replace("\x0c", ""), min_size=1, max_size=10), min_size=1, max_size=3).map(
        fdt.encode_strings
    ),
)


def nodes(depth: int) -> st.SearchStrategy[fdt.Node]:
    children = st.just([]) if depth == 0 else st.lists(nodes(depth - 1), max_size=3, unique_by=lambda n: n.name)
    return st.builds(
        lambda name, props, kids: fdt.Node(name, dict(props), kids),
        node_names,
        st.lists(st.tuples(prop_names, values), max_size=5, unique_by=lambda p: p[0]),
        children,
    )


trees = st.builds(
    lambda root, rsv, cpu: fdt.DeviceTree(fdt.Node("", root.properties, root.children), rsv, cpu),
    nodes(3),
    st.lists(st.builds(fdt.MemReservation, st.integers(0, 2**64 - 1), st.integers(1, 2**64 - 1)), max_size=3),
    st.integers(0, 0xFFFFFFFF),
)


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees)
def test_generated_trees_round_trip_and_libfdt_agrees(tree: fdt.DeviceTree) -> None:
    blob = fdt.encode(tree)
    back = fdt.decode(blob)
    assert our_view(back) == our_view(tree)
    assert back.boot_cpuid_phys == tree.boot_cpuid_phys
    assert our_view(back) == libfdt_view(blob)
    assert libfdt.Fdt(blob).boot_cpuid_phys() == tree.boot_cpuid_phys


@FEW
@given(tree=trees)
def test_generated_trees_survive_dtc_and_show(tree: fdt.DeviceTree) -> None:
    blob = fdt.encode(tree)
    done = dtc("-I", "dtb", "-O", "dts", "-q", "-", stdin=blob)
    assert done.returncode == 0, done.stderr
    # show() is dts that dtc compiles back to the same tree
    assert our_view(fdt.decode(compile_dts(fdt.show(tree)))) == our_view(tree)


# ---------------------------------------------------------------- patched DTBs

banks_strategy = st.lists(st.integers(1, 64), min_size=1, max_size=3).map(
    lambda sizes: [MemoryBank(0x30000000 + i * 0x10000000, s * 4 * MiB) for i, s in enumerate(sizes)]
)
regions_strategy = st.lists(
    st.one_of(
        st.builds(
            lambda n, base, size: ReservedRegion(f"pool{n}", size * 4 * MiB, base=0x20000000 + base * 0x1000000),
            st.integers(0, 9),
            st.integers(0, 191),  # stays below 4 GiB: Aquila's root has one address cell
            st.integers(1, 4),
        ),
        st.builds(
            lambda size, align, default: ReservedRegion("linux,cma", size * 4 * MiB, alignment=align, default=default),
            st.integers(1, 16),
            st.none() | st.sampled_from([4 * MiB, 8 * MiB]),
            st.booleans(),
        ),
    ),
    max_size=4,
    unique_by=lambda r: r.node_name,
)


@FEW
@given(
    banks=banks_strategy,
    regions=regions_strategy,
    seed=st.binary(min_size=1, max_size=64),
    args=st.text(string.printable[:94], max_size=80),
)
def test_patched_dtbs_are_read_cleanly_by_dtc_fdtdump_and_libfdt(
    banks: list[MemoryBank], regions: list[ReservedRegion], seed: bytes, args: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    regions = [r for i, r in enumerate(regions) if not r.default or not any(q.default for q in regions[:i])]
    statics = [r for r in regions if r.base is not None]
    # The base tree keeps the reg nodes the patch does not name (Aquila's MFC pools): they count too.
    names = {r.node_name for r in regions}
    kept = [ReservedRegion(name, size, base=base) for name, base, size in BASE_REG_NODES["aquila"] if name not in names]
    statics += kept
    overlap = any(a is not b and a.base is not None and b.base is not None and a.base <= b.base < a.base + a.size
                  for a in statics for b in statics)
    if overlap:  # never written: the kernel would refuse the pair and dtc would warn
        with pytest.raises(fdt.FdtError, match="overlap"):
            fdt.patch(BASES["aquila"], banks=banks, reserved=regions, bootargs=args, rng_seed=seed)
        return
    out = fdt.patch(BASES["aquila"], banks=banks, reserved=regions, bootargs=args, rng_seed=seed)
    decompile(out)  # asserts no complaint on stderr
    path = tmp_path_factory.mktemp("dump") / "p.dtb"
    path.write_bytes(out)
    dump = subprocess.run(["fdtdump", str(path)], capture_output=True, text=True, check=False)
    assert dump.returncode == 0 and [ln for ln in dump.stderr.splitlines() if ln.strip() and not ln.startswith("****")] == []
    assert our_view(fdt.decode(out)) == libfdt_view(out)
    f = libfdt.Fdt(out)
    reg = f.getprop(f.path_offset(f"/memory@{banks[0].base:x}"), "reg")
    assert list(struct.unpack(f">{len(reg) // 4}I", bytes(reg))) == [v for b in banks for v in (b.base, b.size)]
    assert f.getprop(f.path_offset("/chosen"), "rng-seed") == seed


# ---------------------------------------------------------------- ATAGs

atag_items = st.one_of(
    st.builds(atags.AtagMem, st.integers(0, 0x7FFFFFFF), st.integers(1, 0x7FFFFFFF)),
    st.builds(atags.AtagMem, st.integers(0, 2**63), st.integers(1, 2**63), st.just(True)),
    st.builds(atags.AtagInitrd2, st.integers(0, 0x7FFFFFFF), st.integers(0, 0x7FFFFFFF)),
    st.builds(
        atags.AtagCmdline,
        st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), max_size=200).filter(
            lambda t: len(t.encode()) < 1024
        ),
    ),
    st.builds(atags.AtagOther, st.integers(0x54410003, 0x54410008), st.binary(max_size=16).map(lambda b: b + bytes(-len(b) % 4))),
)
atag_lists = st.builds(
    lambda core, rest: [core, *rest],
    st.one_of(
        st.builds(atags.AtagCore, st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF)),
        st.just(atags.AtagCore(short=True)),
    ),
    st.lists(atag_items, max_size=8),
)


@settings(max_examples=500, deadline=None, database=None)
@given(tags=atag_lists)
def test_atag_lists_round_trip(tags: list[atags.Atag]) -> None:
    assert atags.parse(atags.build(tags)) == tags


@FUZZ
@given(tags=atag_lists, data=st.data())
def test_damaged_atag_lists_give_only_atag_errors(tags: list[atags.Atag], data: st.DataObject) -> None:
    blob = bytearray(atags.build(tags))
    for _ in range(data.draw(st.integers(1, 3))):
        at = 4 * data.draw(st.integers(0, len(blob) // 4 - 1))
        blob[at : at + 4] = data.draw(
            st.sampled_from([0, 1, 2, 3, 5, 0xFFFFFFFF, 0x54410001, 0x54410009]) | st.integers(0, 2**32 - 1)
        ).to_bytes(4, "little")
    if data.draw(st.booleans()):
        del blob[data.draw(st.integers(0, len(blob))) :]
    try:
        parsed = atags.parse(bytes(blob))
    except AtagError as exc:
        assert exc.offset is not None and 0 <= exc.offset <= len(blob)
        return
    try:
        rebuilt = atags.build(parsed)
    except AtagError:
        return  # e.g. a bank reaching past 4 GiB: readable, but we refuse to write it
    assert atags.parse(rebuilt) == parsed


# ---------------------------------------------------------------- U-Boot environments

env_names = st.text(st.characters(blacklist_characters="=\0", blacklist_categories=["Cs"]), min_size=1, max_size=12)
env_values = st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), max_size=40)
environments = st.dictionaries(env_names, env_values, max_size=8)


@settings(max_examples=500, deadline=None, database=None)
@given(variables=environments, redundant=st.booleans(), fill=st.sampled_from([0x00, 0xFF]), flags=st.integers(0, 255))
def test_environments_round_trip(variables: dict[str, str], redundant: bool, fill: int, flags: int) -> None:
    image = ubootenv.build(variables, size=1024, redundant=redundant, fill=fill, flags=flags)
    assert len(image) == 1024
    parsed = ubootenv.parse(image, size=1024, redundant=redundant)
    assert list(parsed.variables.items()) == list(variables.items())
    assert parsed.flags == (flags if redundant else None)


@FUZZ
@given(variables=environments, redundant=st.booleans(), fix_crc=st.booleans(), data=st.data())
def test_damaged_environments_give_only_env_errors(
    variables: dict[str, str], redundant: bool, fix_crc: bool, data: st.DataObject
) -> None:
    blob = bytearray(ubootenv.build(variables, size=512, redundant=redundant))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(blob) - 1))
        blob[at] = data.draw(st.sampled_from([0, ord("="), 0xFF]) | st.integers(0, 255))
    if data.draw(st.booleans()):
        del blob[data.draw(st.integers(0, len(blob))) :]
    head = ubootenv.header_size(redundant=redundant)
    if fix_crc and len(blob) > head:
        # A correct CRC over damaged data drives the entry parser, not just the CRC check.
        blob[:4] = zlib.crc32(bytes(blob[head:])).to_bytes(4, "little")
    try:
        parsed = ubootenv.parse(bytes(blob), redundant=redundant)
    except EnvError as exc:
        assert exc.offset is None or 0 <= exc.offset <= len(blob)
        return
    again = ubootenv.parse(ubootenv.build(parsed.variables, size=len(blob), redundant=redundant), redundant=redundant)
    assert again.variables == parsed.variables
