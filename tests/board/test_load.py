"""The board loader: positions, includes, overrides, and errors on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from cma_tool.board.load import read_board
from cma_tool.board.yamlpos import YamlLoadError, load_text

DATA = Path(__file__).parent / "data"
BOARDS = Path(__file__).parents[2] / "boards"


def errors(path: Path) -> list[str]:
    _, sink = read_board(path)
    return [str(d) for d in sink.errors]


def test_aquila_banks_exactly_as_mainline_dts() -> None:
    board, sink = read_board(BOARDS / "aquila.yaml")
    assert board is not None and not sink.errors
    # s5pv210-aquila.dts: reg = <0x30000000 0x05000000>, <0x40000000 0x18000000>
    assert [(b.base, b.size) for b in board.banks] == [(0x30000000, 0x05000000), (0x40000000, 0x18000000)]


def test_include_merges_soc_devices_and_board_overrides() -> None:
    board, _ = read_board(BOARDS / "aquila.yaml")
    assert board is not None
    mfc = board.device("mfc")
    assert mfc is not None
    # From the SoC file:
    assert mfc.compatible == ("samsung,mfc-v5",) and mfc.reg == (0xF1700000, 0x4000)
    assert mfc.regions_in_distinct_banks
    # From the board file:
    assert mfc.memory_region == ("mfc_left", "mfc_right")
    assert board.console.device == "ttySAC2"
    # The SoC's kernel build (max-order 11) gives a 4 MiB CMA unit.
    assert board.kernel.profile.cma_min_bytes == 4 << 20
    assert board.files == (str(BOARDS / "aquila.yaml"), str(BOARDS / "s5pv210.yaml")) or \
        set(board.files) == {str(BOARDS / "aquila.yaml"), str(BOARDS / "s5pv210.yaml")}


def test_null_deletes_an_included_node(tmp_path: Path) -> None:
    (tmp_path / "soc.yaml").write_text("devices:\n  jpeg: {compatible: \"v,x\"}\n  mfc: {compatible: \"v,y\"}\n")
    (tmp_path / "b.yaml").write_text("include: soc.yaml\nmemory: [[0x30000000, 64M]]\ndevices:\n  jpeg: ~\n")
    board, sink = read_board(tmp_path / "b.yaml")
    assert board is not None and not sink.errors
    assert [d.name for d in board.devices] == ["mfc"]


def test_sizes_in_every_spelling(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(
        "memory:\n  - [0x30000000, 80M]\n  - [0x40000000, 0x18000000]\n  - [0x60000000, 4 MiB]\n  - [0x70000000, 16384K]\n")
    board, sink = read_board(tmp_path / "b.yaml")
    assert board is not None and not sink.errors
    assert [b.size for b in board.banks] == [80 << 20, 384 << 20, 4 << 20, 16 << 20]


def test_syntax_error_has_position() -> None:
    (err,) = errors(DATA / "syntax-error.yaml")
    # The unclosed flow sequence on line 3 is noticed at the next mapping key (line 4).
    assert err.startswith(f"{DATA / 'syntax-error.yaml'}:4:")
    assert "YAML syntax" in err


def test_duplicate_key_names_both_lines() -> None:
    (err,) = errors(DATA / "dup-key.yaml")
    assert ":4:1: error: duplicate key 'name' (first written at line 1)" in err


def test_circular_include() -> None:
    errs = errors(DATA / "circular-a.yaml")
    assert len(errs) == 1 and "circular include: circular-a.yaml -> circular-b.yaml -> circular-a.yaml" in errs[0]
    assert errs[0].startswith(f"{DATA / 'circular-b.yaml'}:1:10:")


def test_missing_include() -> None:
    (err,) = errors(DATA / "missing-include.yaml")
    assert ":1:10: error: included file not found" in err


def test_missing_board_file(tmp_path: Path) -> None:
    (err,) = errors(tmp_path / "nope.yaml")
    assert "no such file" in err


def test_anchor_bomb_is_refused() -> None:
    text = "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    prev = "a"
    for name in "bcdefgh":
        text += f"{name}: &{name} [" + ", ".join([f"*{prev}"] * 10) + "]\n"
        prev = name
    with pytest.raises(YamlLoadError, match="expands to more than"):
        load_text(text, "bomb.yaml")


def test_python_tags_are_refused() -> None:
    with pytest.raises(YamlLoadError, match="unsupported YAML value"):
        load_text("a: !!python/object/apply:os.system ['true']\n", "evil.yaml")


@pytest.mark.parametrize("value, message", [
    ("-4M", "is not a size"),
    ("0", "must not be zero"),
    ("12Q", "is not a size"),
    ("0x1_0000_0000_0000_0000", "does not fit in 64 bits"),  # YAML 1.1 ints may hold underscores
    ("99999999999999999999999", "does not fit in 64 bits"),
    ("true", "must be a size"),
])
def test_bad_sizes(tmp_path: Path, value: str, message: str) -> None:
    (tmp_path / "b.yaml").write_text(f"memory:\n  - [0x30000000, {value}]\n")
    errs = errors(tmp_path / "b.yaml")
    assert len(errs) == 1 and message in errs[0] and ":2:" in errs[0], errs


def test_unquoted_compatible_in_flow_list_is_caught(tmp_path: Path) -> None:
    # YAML reads [samsung,aquila, samsung,s5pv210] as four strings: 'samsung', 'aquila', ...
    (tmp_path / "b.yaml").write_text("compatible: [samsung,aquila, samsung,s5pv210]\nmemory: [[0x30000000, 80M]]\n")
    errs = errors(tmp_path / "b.yaml")
    assert errs and all(":1:13: error: compatible 'samsung' has no vendor prefix" in e or "'aquila'" in e
                        or "'s5pv210'" in e for e in errs)
    assert "quote each entry" in errs[0]
    board, _ = read_board(BOARDS / "aquila.yaml")
    assert board is not None and board.compatible == ("samsung,aquila", "samsung,s5pc110", "samsung,s5pv210")


def test_a_lab_section_names_the_place_and_its_coordinator(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(f"include: {BOARDS / 'qemu-aquila.yaml'}\n"
                                     "lab: {place: rack-3, coordinator: 'lab.example:20408'}\n")
    board, sink = read_board(tmp_path / "b.yaml")
    assert board is not None and not sink.errors
    assert board.lab is not None and (board.lab.place, board.lab.coordinator) == ("rack-3", "lab.example:20408")


def test_a_lab_section_without_a_place_or_with_a_bad_coordinator_is_refused_at_its_line(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(f"include: {BOARDS / 'qemu-aquila.yaml'}\n"
                                     "lab:\n  coordinator: lab.example\n  places: x\n")
    _, sink = read_board(tmp_path / "b.yaml")
    said = [(d.line, d.message) for d in sink.errors]
    assert (3, "lab: coordinator 'lab.example' is not HOST:PORT") in said
    assert (3, "lab needs 'place'") in said  # where the section's mapping begins
    assert any(line == 4 and "places" in msg for line, msg in said), said
