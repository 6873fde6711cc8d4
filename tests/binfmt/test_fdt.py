"""The DTB codec against dtc, fdtget, fdtdump and pylibfdt on real blobs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import libfdt
import pytest

from cma_tool.binfmt import fdt
from cma_tool.binfmt.fdt import FdtError, MemoryBank, ReservedRegion
from cma_tool.errors import ConfigError

from . import handmade as hm
from .conftest import compile_dts, decompile, dtc, need
from .libfdt_view import libfdt_view, our_view

MiB = 1 << 20


def fdtget(blob: bytes, tmp_path: Path, node: str, prop: str, kind: str = "x") -> str:
    need("fdtget")
    path = tmp_path / "get.dtb"
    path.write_bytes(blob)
    done = subprocess.run(["fdtget", "-t", kind, str(path), node, prop], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def fdtdump_clean(blob: bytes, tmp_path: Path) -> str:
    need("fdtdump")
    path = tmp_path / "dump.dtb"
    path.write_bytes(blob)
    done = subprocess.run(["fdtdump", str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0
    # fdtdump always prints its "low-level debugging tool" banner on stderr;
    # anything else there is a complaint about the blob.
    complaints = [line for line in done.stderr.splitlines() if line.strip() and not line.startswith("****")]
    assert complaints == []
    return done.stdout


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", ["virt_dtb", "aquila_dtb", "aquila_plain_dtb"])
def test_reencoded_blob_decompiles_to_the_same_dts(name: str, request: pytest.FixtureRequest) -> None:
    original = request.getfixturevalue(name)
    assert decompile(fdt.encode(fdt.decode(original))) == decompile(original)


def test_dtc_output_reencodes_byte_for_byte(aquila_dtb: bytes, virt_dtb: bytes) -> None:
    packed_virt = dtc("-I", "dtb", "-O", "dtb", "-", stdin=virt_dtb).stdout
    for blob in (aquila_dtb, packed_virt):
        assert fdt.encode(fdt.decode(blob)) == blob


def test_qemu_blob_keeps_its_free_space_out(virt_dtb: bytes) -> None:
    # QEMU's dump is 1 MiB with the tree at the front; libfdt says how much is used.
    f = libfdt.Fdt(virt_dtb)
    assert f.totalsize() == 1 << 20
    out = fdt.encode(fdt.decode(virt_dtb))
    assert len(out) == 40 + 16 + f.size_dt_struct() + f.size_dt_strings()


@pytest.mark.parametrize("name", ["virt_dtb", "aquila_dtb"])
def test_reader_agrees_with_libfdt(name: str, request: pytest.FixtureRequest) -> None:
    blob = request.getfixturevalue(name)
    assert our_view(fdt.decode(blob)) == libfdt_view(blob)


def test_written_header_is_what_libfdt_expects(aquila_dtb: bytes) -> None:
    out = fdt.encode(fdt.decode(aquila_dtb))
    f = libfdt.Fdt(out)
    assert (f.magic(), f.version(), f.last_comp_version(), f.totalsize()) == (0xD00DFEED, 17, 16, len(out))
    assert f.off_mem_rsvmap() == 40 and f.off_mem_rsvmap() % 8 == 0


def test_version_16_blob_reads_like_version_17(aquila_dtb: bytes) -> None:
    v16 = dtc("-I", "dtb", "-O", "dtb", "-V", "16", "-", stdin=aquila_dtb).stdout
    assert int.from_bytes(v16[20:24], "big") == 16
    assert our_view(fdt.decode(v16)) == our_view(fdt.decode(aquila_dtb))


def test_aquila_values_match_the_source(aquila_dtb: bytes) -> None:
    tree = fdt.decode(aquila_dtb)
    assert tree.reservations == [fdt.MemReservation(0x30000000, 0x1000)]
    memory = tree.find("/memory@30000000")
    assert memory is not None
    assert fdt.decode_ranges(memory.properties["reg"], 1, 1) == [(0x30000000, 80 * MiB), (0x40000000, 384 * MiB)]
    assert fdt.decode_strings(tree.root.properties["compatible"]) == ["samsung,aquila", "samsung,s5pv210"]
    cma = tree.find("/reserved-memory/linux,cma")
    assert cma is not None and cma.properties["reusable"] == b"" and "linux,cma-default" in cma.properties
    assert cma.u32("size") == 32 * MiB
    # dtc numbers phandles in the order they are first referenced: vic0 1, clk 2, mfc_left 3, mfc_right 4.
    codec = tree.find("/soc/codec@f1700000")
    assert codec is not None and fdt.decode_cells(codec.properties["memory-region"]) == (3, 4)
    symbols = tree.find("/__symbols__")
    assert symbols is not None and fdt.decode_string(symbols.properties["mfc_left"]) == "/reserved-memory/region@33000000"


def test_value_helpers_round_trip_and_refuse_bad_values() -> None:
    assert fdt.encode_cells(1, 0xFFFFFFFF) == bytes.fromhex("00000001ffffffff")
    assert fdt.encode_strings(["a", "bc"]) == b"a\0bc\0"
    assert fdt.encode_ranges([(0x1_2345_6789, 0x10)], 2, 1) == bytes.fromhex("000000012345678900000010")
    with pytest.raises(FdtError):
        fdt.decode_cells(b"\0\0\0")
    with pytest.raises(FdtError):
        fdt.decode_strings(b"abc")
    with pytest.raises(FdtError):
        fdt.encode_number(1 << 32, 1)
    with pytest.raises(FdtError):
        fdt.encode_cells(-1)


@pytest.mark.parametrize("name", ["virt_dtb", "aquila_dtb"])
def test_show_output_compiles_back_to_the_same_tree(name: str, request: pytest.FixtureRequest) -> None:
    blob = request.getfixturevalue(name)
    text = fdt.show(fdt.decode(blob))
    assert decompile(compile_dts(text)) == decompile(blob)


def test_show_states_sizes_and_ranges(aquila_dtb: bytes) -> None:
    text = fdt.show(fdt.decode(aquila_dtb))
    assert "0x30000000..0x34ffffff 80 MiB, 0x40000000..0x57ffffff 384 MiB" in text
    assert "size = <0x2000000>; /* 32 MiB */" in text
    assert "/memreserve/ 0x0000000030000000 0x0000000000001000;" in text
    assert 'compatible = "samsung,aquila", "samsung,s5pv210";' in text
    # labels come back from /__symbols__ (the source has them, dtc -@ kept them)
    assert "\tmfc_left: region@33000000 {" in text and "\tmfc: codec@f1700000 {" in text


# ---------------------------------------------------------------- edits


def _libfdt_phandles(blob: bytes) -> list[int]:
    f = libfdt.Fdt(blob)
    found, offset, depth = [], 0, 0
    while offset >= 0:
        if f.get_phandle(offset):
            found.append(f.get_phandle(offset))
        offset, depth = f.next_node(offset, depth, (libfdt.NOTFOUND,))
    return found


def test_patch_virt_with_two_banks_cma_and_chosen(virt_dtb: bytes, tmp_path: Path) -> None:
    seed = bytes(range(32))
    out = fdt.patch(
        virt_dtb,
        banks=[MemoryBank(0x40000000, 256 * MiB), MemoryBank(0x60000000, 256 * MiB)],
        reserved=[
            ReservedRegion("linux,cma", 64 * MiB, alignment=8 * MiB, alloc_ranges=(MemoryBank(0x60000000, 256 * MiB),), default=True),
            ReservedRegion("vidpool", 32 * MiB, base=0x4C000000, consumers=("/pl011@9000000",)),
        ],
        bootargs="console=ttyAMA0 trace_event=cma:*",
        initrd=(0x4A000000, 0x4A123456),
        usable_memory=[MemoryBank(0x40000000, 256 * MiB), MemoryBank(0x60000000, 256 * MiB)],
        rng_seed=seed,
    )
    # QEMU's root has #address-cells = #size-cells = 2: every address and size is two cells.
    assert fdtget(out, tmp_path, "/memory@40000000", "reg") == "0 40000000 0 10000000 0 60000000 0 10000000"
    assert fdtget(out, tmp_path, "/memory@40000000", "device_type", "s") == "memory"
    assert fdtget(out, tmp_path, "/reserved-memory", "#address-cells") == "2"
    assert fdtget(out, tmp_path, "/reserved-memory/linux,cma", "size") == "0 4000000"
    assert fdtget(out, tmp_path, "/reserved-memory/linux,cma", "alignment") == "0 800000"
    assert fdtget(out, tmp_path, "/reserved-memory/linux,cma", "alloc-ranges") == "0 60000000 0 10000000"
    assert fdtget(out, tmp_path, "/reserved-memory/vidpool@4c000000", "reg") == "0 4c000000 0 2000000"
    assert fdtget(out, tmp_path, "/chosen", "linux,initrd-start") == "0 4a000000"
    assert fdtget(out, tmp_path, "/chosen", "linux,initrd-end") == "0 4a123456"
    assert fdtget(out, tmp_path, "/chosen", "bootargs", "s") == "console=ttyAMA0 trace_event=cma:*"
    assert fdtget(out, tmp_path, "/chosen", "linux,usable-memory-range") == "0 40000000 0 10000000 0 60000000 0 10000000"
    assert fdtget(out, tmp_path, "/chosen", "rng-seed", "bx").split() == [f"{b:x}" for b in seed]

    f = libfdt.Fdt(out)
    pool = f.path_offset("/reserved-memory/vidpool@4c000000")
    phandle = f.get_phandle(pool)
    assert phandle != 0
    assert f.node_offset_by_phandle(phandle) == pool  # unique: libfdt finds this node for it
    assert fdtget(out, tmp_path, "/pl011@9000000", "memory-region") == f"{phandle:x}"
    assert f.getprop(f.path_offset("/reserved-memory"), "ranges") == b""
    # Only one memory node is left.
    memory_nodes = [n for n in fdt.decode(out).root.children if n.properties.get("device_type") == b"memory\0"]
    assert [n.name for n in memory_nodes] == ["memory@40000000"]
    decompile(out)
    fdtdump_clean(out, tmp_path)


def test_patch_aquila_replaces_a_region_and_keeps_its_phandle(aquila_dtb: bytes, tmp_path: Path) -> None:
    out = fdt.patch(
        aquila_dtb,
        reserved=[
            ReservedRegion("region", 16 * MiB, base=0x33000000, label="mfc_left"),
            ReservedRegion("linux,cma", 64 * MiB, alloc_ranges=(MemoryBank(0x40000000, 384 * MiB),), default=True),
        ],
    )
    tree = fdt.decode(out)
    left = tree.find("/reserved-memory/region@33000000")
    assert left is not None and left.u32("phandle") == 3  # the phandle dtc gave it
    assert fdtget(out, tmp_path, "/reserved-memory/region@33000000", "reg") == "33000000 1000000"
    assert fdtget(out, tmp_path, "/reserved-memory/linux,cma", "size") == "4000000"
    assert fdtget(out, tmp_path, "/soc/codec@f1700000", "memory-region") == "3 4"
    decompile(out)
    fdtdump_clean(out, tmp_path)


def test_consumers_by_alias_and_label_get_phandles_in_region_order(aquila_dtb: bytes, tmp_path: Path) -> None:
    out = fdt.patch(
        aquila_dtb,
        reserved=[
            ReservedRegion("fimc", 16 * MiB, base=0x34000000, consumers=("mfc",), label="fimc_pool"),
            ReservedRegion("region", 16 * MiB, base=0x44000000, consumers=("mfc", "fimc0")),
        ],
    )
    f = libfdt.Fdt(out)
    new = f.get_phandle(f.path_offset("/reserved-memory/fimc@34000000"))
    assert new == max(_libfdt_phandles(aquila_dtb)) + 1
    assert fdtget(out, tmp_path, "/soc/codec@f1700000", "memory-region") == f"{new:x} 4"
    assert fdtget(out, tmp_path, "/soc/fimc@fb200000", "memory-region") == "4"
    assert fdtget(out, tmp_path, "/__symbols__", "fimc_pool", "s") == "/reserved-memory/fimc@34000000"
    decompile(out)


def test_clearing_regions_that_are_still_referenced_is_refused(aquila_dtb: bytes) -> None:
    with pytest.raises(FdtError, match="memory-region still refers"):
        fdt.patch(aquila_dtb, reserved=[ReservedRegion("linux,cma", 32 * MiB, default=True)], clear_reserved=True)
    out = fdt.patch(
        aquila_dtb,
        reserved=[ReservedRegion("mfc", 32 * MiB, base=0x50000000, consumers=("/soc/codec@f1700000",))],
        clear_reserved=True,
    )
    tree = fdt.decode(out)
    parent = tree.find("/reserved-memory")
    assert parent is not None and [c.name for c in parent.children] == ["mfc@50000000"]
    symbols = tree.find("/__symbols__")
    assert symbols is not None and "mfc_left" not in symbols.properties


def test_default_area_moves_to_the_new_region(aquila_dtb: bytes) -> None:
    out = fdt.patch(aquila_dtb, reserved=[ReservedRegion("cma", 64 * MiB, base=0x48000000, default=True)])
    tree = fdt.decode(out)
    defaults = [p for p, n in tree.walk() if "linux,cma-default" in n.properties]
    assert defaults == ["/reserved-memory/cma@48000000"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"banks": [MemoryBank(0x1_0000_0000, MiB)]}, "does not fit in 1 cell"),
        ({"banks": [MemoryBank(0x30000000, 64 * MiB), MemoryBank(0x33000000, MiB)]}, "overlap"),
        ({"banks": []}, "no memory banks"),
        ({"reserved": [ReservedRegion("x", MiB, no_map=True)]}, "exclude each other"),
        ({"reserved": [ReservedRegion("x", MiB, base=0x40000000, alignment=MiB)]}, "without a fixed base"),
        ({"reserved": [ReservedRegion("x", MiB, alignment=3 * MiB)]}, "not a power of two"),
        ({"reserved": [ReservedRegion("x", 0)]}, "size must be positive"),
        ({"reserved": [ReservedRegion("x", MiB, consumers=("/nowhere",))]}, "is not a node"),
        ({"initrd": (0x5000, 0x4000)}, "empty or inverted"),
    ],
)
def test_bad_edits_are_clear_errors(aquila_dtb: bytes, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(FdtError, match=message) as info:
        fdt.patch(aquila_dtb, source="aquila.dtb", **kwargs)  # type: ignore[arg-type]
    assert isinstance(info.value, ConfigError)
    assert str(info.value).startswith("aquila.dtb: ")


def test_root_without_cells_is_refused_for_memory_edits() -> None:
    blob = compile_dts("/dts-v1/; / { chosen { }; };")
    with pytest.raises(FdtError, match="no #address-cells"):
        fdt.patch(blob, banks=[MemoryBank(0x40000000, MiB)])
    # bootargs need no cells
    assert b"root=/dev/ram" in fdt.patch(blob, bootargs="root=/dev/ram")


def test_reserved_memory_with_other_cells_is_refused() -> None:
    blob = compile_dts(
        "/dts-v1/; / { #address-cells = <1>; #size-cells = <1>;"
        " reserved-memory { #address-cells = <2>; #size-cells = <2>; ranges; old { size = <0 0x100000>; }; }; };"
    )
    with pytest.raises(FdtError, match="cells"):
        fdt.patch(blob, reserved=[ReservedRegion("linux,cma", MiB)])
    # With the odd child cleared, the cells are put right.
    out = fdt.patch(blob, reserved=[ReservedRegion("linux,cma", MiB)], clear_reserved=True)
    node = fdt.decode(out).find("/reserved-memory")
    assert node is not None and (node.u32("#address-cells"), node.u32("#size-cells")) == (1, 1)


# ---------------------------------------------------------------- bad blobs


def _fail(blob: bytes) -> FdtError:
    with pytest.raises(FdtError) as info:
        fdt.decode(blob, source="bad.dtb")
    assert str(info.value).startswith("bad.dtb: byte ")
    return info.value


def test_handmade_blob_is_valid() -> None:
    layout = hm.Layout(hm.minimal_structure(), b"model\0")
    tree = fdt.decode(layout.blob())
    assert tree.root.properties == {"model": b"x\0"}
    assert [c.name for c in tree.root.children] == ["child"]
    assert our_view(tree) == libfdt_view(layout.blob())


def test_wrong_magic() -> None:
    blob = bytearray(hm.Layout(hm.minimal_structure(), b"model\0").blob())
    blob[0:4] = b"\x27\x05\x19\x56"  # a uImage
    err = _fail(bytes(blob))
    assert err.offset == 0 and "magic is 0x27051956" in err.what


@pytest.mark.parametrize("cut", [0, 3, 20, 39])
def test_truncated_header(cut: int) -> None:
    blob = hm.Layout(hm.minimal_structure(), b"model\0").blob()[:cut]
    err = _fail(blob)
    assert "truncated" in err.what


def test_blob_shorter_than_totalsize() -> None:
    blob = hm.Layout(hm.minimal_structure(), b"model\0").blob()
    err = _fail(blob[:-1])
    assert err.offset == 4 and "total size" in err.what


@pytest.mark.parametrize(
    ("field", "value", "offset", "text"),
    [
        ("off_dt_struct", 0x10000, 8, "structure block offset 0x10000 lies outside"),
        ("off_dt_struct", 58, 8, "not 4-byte aligned"),
        ("off_mem_rsvmap", 44, 16, "not 8-byte aligned"),
        ("off_dt_strings", 4, 12, "lies outside"),
        ("size_dt_strings", 0xFFFFFFF0, 32, "runs past the end of the blob"),
        ("size_dt_struct", 0x7FFFFFFF, 36, "runs past the end of the blob"),
        ("version", 3, 20, "predates version 16"),
        ("last_comp_version", 18, 24, "newer than 17"),
        ("totalsize", 10, 4, "smaller than the 40-byte header"),
    ],
)
def test_header_fields_out_of_range(field: str, value: int, offset: int, text: str) -> None:
    layout = hm.Layout(hm.minimal_structure(), b"model\0", overrides={field: value})
    err = _fail(layout.blob())
    assert err.offset == offset and text in err.what


def test_overlapping_blocks() -> None:
    layout = hm.Layout(hm.minimal_structure(), b"model\0")
    o = layout.offsets()
    layout.overrides = {"off_dt_strings": o["struct"], "size_dt_strings": 8}
    err = _fail(layout.blob())
    assert err.offset == 12 and "overlaps the structure block" in err.what


def test_reservation_block_without_terminator() -> None:
    layout = hm.Layout(hm.minimal_structure(), b"model\0", reservations=bytes.fromhex("00000000300000000000000000001000"))
    err = _fail(layout.blob())
    assert err.offset == 40 + 16 and "terminating entry" in err.what


def test_unknown_token_names_its_offset() -> None:
    structure = hm.begin("") + hm.token(7) + hm.token(hm.END_NODE) + hm.token(hm.END)
    layout = hm.Layout(structure)
    err = _fail(layout.blob())
    assert err.offset == layout.offsets()["struct"] + 8 and "unknown token 0x00000007" in err.what


def test_misaligned_property_value_shows_as_bad_token() -> None:
    # A value 1 byte long written without its 3 padding bytes: the next token is misread.
    structure = (
        hm.begin("")
        + hm.token(hm.PROP)
        + (1).to_bytes(4, "big")
        + (0).to_bytes(4, "big")
        + b"x"
        + hm.token(hm.END_NODE)
        + hm.token(hm.END)
    )
    layout = hm.Layout(structure, b"model\0")
    err = _fail(layout.blob())
    assert "unknown token" in err.what


def test_absurd_property_length() -> None:
    structure = hm.begin("") + hm.prop(0, b"x\0", length=0xFFFFFFFF) + hm.token(hm.END_NODE) + hm.token(hm.END)
    layout = hm.Layout(structure, b"model\0")
    err = _fail(layout.blob())
    assert err.offset == layout.offsets()["struct"] + 8 + 4 and "4294967295" in err.what


def test_property_name_outside_strings_block() -> None:
    structure = hm.begin("") + hm.prop(100, b"x\0") + hm.token(hm.END_NODE) + hm.token(hm.END)
    layout = hm.Layout(structure, b"model\0")
    err = _fail(layout.blob())
    assert err.offset == layout.offsets()["struct"] + 8 + 8 and "outside the strings block" in err.what


def test_unterminated_property_name() -> None:
    structure = hm.begin("") + hm.prop(0, b"x\0") + hm.token(hm.END_NODE) + hm.token(hm.END)
    layout = hm.Layout(structure, b"model")
    err = _fail(layout.blob())
    assert err.offset == layout.offsets()["strings"] and "not NUL-terminated" in err.what


def test_unterminated_node_name() -> None:
    structure = hm.token(hm.BEGIN) + b"abcdefgh"
    layout = hm.Layout(structure)
    err = _fail(layout.blob())
    assert err.offset == layout.offsets()["struct"] + 4 and "not NUL-terminated" in err.what


def test_node_that_never_closes() -> None:
    structure = hm.begin("") + hm.begin("a") + hm.token(hm.END_NODE) + hm.token(hm.END)
    layout = hm.Layout(structure)
    err = _fail(layout.blob())
    assert err.offset == layout.offsets()["struct"] and "never closes" in err.what


def test_structure_without_end_token() -> None:
    structure = hm.begin("") + hm.token(hm.END_NODE)
    layout = hm.Layout(structure)
    err = _fail(layout.blob())
    assert "without an FDT_END" in err.what


def test_nesting_deeper_than_the_limit() -> None:
    depth = fdt.MAX_DEPTH + 1
    structure = (
        hm.begin("") + b"".join(hm.begin(f"n{i}") for i in range(depth)) + hm.token(hm.END_NODE) * (depth + 1) + hm.token(hm.END)
    )
    err = _fail(hm.Layout(structure).blob())
    assert "deeper than" in err.what


@pytest.mark.parametrize(
    ("structure", "text"),
    [
        (hm.token(hm.END_NODE) + hm.token(hm.END), "must start with the root"),
        (hm.prop(0, b"") + hm.token(hm.END), "must start with the root"),
        (hm.begin("") + hm.token(hm.END_NODE) + hm.token(hm.END_NODE) + hm.token(hm.END), "FDT_END_NODE without an open node"),
        (hm.begin("") + hm.token(hm.END_NODE) + hm.begin("") + hm.token(hm.END_NODE) + hm.token(hm.END), "second top-level node"),
        (
            hm.begin("") + hm.begin("a") + hm.token(hm.END_NODE) + hm.prop(0, b"") + hm.token(hm.END_NODE) + hm.token(hm.END),
            "follows a child node",
        ),
        (hm.begin("") + hm.prop(0, b"") + hm.prop(0, b"") + hm.token(hm.END_NODE) + hm.token(hm.END), "two properties named"),
        (
            hm.begin("")
            + hm.begin("a")
            + hm.token(hm.END_NODE)
            + hm.begin("a")
            + hm.token(hm.END_NODE)
            + hm.token(hm.END_NODE)
            + hm.token(hm.END),
            "two children named",
        ),
        (hm.begin("") + hm.begin("a\x01") + hm.token(hm.END_NODE) + hm.token(hm.END_NODE) + hm.token(hm.END), "not printable ASCII"),
        (hm.token(hm.END), "must start with the root"),
        (hm.token(hm.NOP) + hm.begin("") + hm.token(hm.END_NODE) + hm.token(hm.END), "must start with the root"),
    ],
)
def test_malformed_structure(structure: bytes, text: str) -> None:
    err = _fail(hm.Layout(structure, b"model\0").blob())
    assert text in err.what


def test_nops_are_skipped_like_libfdt_does() -> None:
    structure = hm.begin("") + hm.token(hm.NOP) + hm.prop(0, b"x\0") + hm.token(hm.NOP) + hm.token(hm.END_NODE) + hm.token(hm.END)
    blob = hm.Layout(structure, b"model\0").blob()
    assert our_view(fdt.decode(blob)) == libfdt_view(blob)


def test_reservation_list_ends_at_the_first_zero_size_like_libfdt() -> None:
    rsv = bytes.fromhex("0000000000001000000000000000000000000000300000000000000000001000") + b"\0" * 16
    blob = hm.Layout(hm.minimal_structure(), b"model\0", reservations=rsv).blob()
    assert fdt.decode(blob).reservations == []
    assert libfdt.Fdt(blob).num_mem_rsv() == 0


def test_a_new_static_region_over_a_node_the_tree_keeps_is_refused(aquila_dtb: bytes) -> None:
    # Found by the patched-DTB fuzzer: Aquila's tree has region@44000000 (16 MiB); a pool at 0x44000000
    # beside it would be two reservations of the same bytes (the kernel: "OVERLAP DETECTED"; dtc warns).
    with pytest.raises(FdtError, match="pool0@44000000 overlaps region@44000000, which the tree already has"):
        fdt.patch(aquila_dtb, banks=[MemoryBank(0x30000000, 0x4000000)],
                  reserved=[ReservedRegion("pool0", 4 << 20, base=0x44000000)], bootargs="")
    # Naming the existing node replaces it instead: allowed.
    out = fdt.patch(aquila_dtb, banks=[MemoryBank(0x30000000, 0x4000000)],
                    reserved=[ReservedRegion("region", 4 << 20, base=0x44000000)], bootargs="")
    assert b"region@44000000" in out


def test_no_regions_adds_no_reserved_memory_node(virt_dtb: bytes) -> None:
    # 6.12 logs "No reserved-memory node in the DT" only when there is none: an empty one is another boot.
    out = fdt.patch(virt_dtb, reserved=[], bootargs="console=ttyAMA0")
    assert fdt.decode(out).root.child("reserved-memory") is None
