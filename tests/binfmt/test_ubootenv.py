"""U-Boot environment images against u-boot-tools: mkenvimage writes, fw_printenv reads."""

from __future__ import annotations

import subprocess
import zlib
from pathlib import Path

import pytest

from cma_tool.binfmt import ubootenv
from cma_tool.binfmt.ubootenv import EnvError

from .conftest import need

ENV = {
    "bootdelay": "2",
    "bootargs": "console=ttyAMA0 cma=64M@0x60000000-0x70000000",
    "bootcmd": "tftpboot ${kernel_addr_r} zImage; bootz ${kernel_addr_r} - ${fdt_addr_r}",
    "fdt_addr_r": "0x48000000",
}
SIZE = 0x4000


def mkenvimage(tmp_path: Path, variables: dict[str, str], *args: str) -> bytes:
    need("mkenvimage")
    src = tmp_path / "env.txt"
    src.write_text("".join(f"{k}={v}\n" for k, v in variables.items()))
    out = tmp_path / "env.bin"
    subprocess.run(["mkenvimage", *args, "-s", str(SIZE), "-o", str(out), str(src)], check=True)
    return out.read_bytes()


def fw_printenv(tmp_path: Path, *images: bytes) -> subprocess.CompletedProcess[str]:
    """fw_printenv with a fw_env.config naming one file per copy (two copies = redundant)."""
    need("fw_printenv")
    lines = []
    for index, image in enumerate(images):
        path = tmp_path / f"copy{index}.env"
        path.write_bytes(image)
        lines.append(f"{path} 0x0 0x{SIZE:x}\n")
    config = tmp_path / "fw_env.config"
    config.write_text("".join(lines))
    return subprocess.run(["fw_printenv", "-c", str(config)], capture_output=True, text=True, check=False, timeout=30)


def printed(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert done.returncode == 0, done.stderr
    assert "Bad CRC" not in done.stderr
    return dict(line.split("=", 1) for line in done.stdout.splitlines())


@pytest.mark.parametrize("redundant", [False, True])
def test_image_is_byte_identical_to_mkenvimage_with_ff_padding(tmp_path: Path, redundant: bool) -> None:
    theirs = mkenvimage(tmp_path, ENV, *(["-r"] if redundant else []))
    ours = ubootenv.build(ENV, size=SIZE, redundant=redundant, fill=0xFF)
    assert ours == theirs
    parsed = ubootenv.parse(theirs, size=SIZE, redundant=redundant)
    assert parsed.variables == ENV and list(parsed.variables) == list(ENV)
    assert parsed.flags == (1 if redundant else None)


def test_empty_environment_matches_mkenvimage(tmp_path: Path) -> None:
    assert ubootenv.build({}, size=SIZE, fill=0xFF) == mkenvimage(tmp_path, {})
    assert ubootenv.parse(ubootenv.build({}, size=SIZE)).variables == {}


def test_default_padding_is_zero_as_saveenv_writes() -> None:
    image = ubootenv.build({"a": "1"}, size=64)
    assert image[4:] == b"a=1\0\0" + bytes(64 - 4 - 5)
    assert int.from_bytes(image[:4], "little") == zlib.crc32(image[4:])


@pytest.mark.parametrize("fill", [0x00, 0xFF])
def test_fw_printenv_reads_a_single_image(tmp_path: Path, fill: int) -> None:
    assert printed(fw_printenv(tmp_path, ubootenv.build(ENV, size=SIZE, fill=fill))) == ENV


def test_fw_printenv_reads_the_newer_redundant_copy(tmp_path: Path) -> None:
    older = ubootenv.build({**ENV, "copy": "older"}, size=SIZE, redundant=True, flags=1)
    newer = ubootenv.build({**ENV, "copy": "newer"}, size=SIZE, redundant=True, flags=2)
    assert printed(fw_printenv(tmp_path, older, newer))["copy"] == "newer"
    assert printed(fw_printenv(tmp_path, newer, older))["copy"] == "newer"


def test_fw_printenv_falls_back_from_a_corrupt_copy(tmp_path: Path) -> None:
    good = ubootenv.build({"copy": "good"}, size=SIZE, redundant=True, flags=1)
    bad = bytearray(ubootenv.build({"copy": "bad"}, size=SIZE, redundant=True, flags=2))
    bad[100] ^= 0xFF  # inside the CRC-covered padding
    with pytest.raises(EnvError, match="bad CRC"):
        ubootenv.parse(bytes(bad), redundant=True)
    assert printed(fw_printenv(tmp_path, bytes(bad), good)) == {"copy": "good"}


def test_reading_with_the_wrong_layout_is_a_crc_error() -> None:
    image = ubootenv.build(ENV, size=SIZE, redundant=True)
    with pytest.raises(EnvError, match="bad CRC") as info:
        ubootenv.parse(image, redundant=False, source="uboot.env")
    assert info.value.offset == 0 and "redundant" in info.value.hint


def _with_data(data: bytes, size: int = 64) -> bytes:
    body = data + bytes(size - 4 - len(data))
    return zlib.crc32(body).to_bytes(4, "little") + body


@pytest.mark.parametrize(
    ("data", "offset", "text"),
    [
        (b"novalue\0\0", 4, "has no '='"),
        (b"a=1\0=2\0\0", 8, "empty name"),
        (b"a=1\0a=2\0\0", 8, "defined twice"),
        (b"a=\xff\0\0", 6, "not UTF-8"),
    ],
)
def test_malformed_entries(data: bytes, offset: int, text: str) -> None:
    with pytest.raises(EnvError) as info:
        ubootenv.parse(_with_data(data))
    assert info.value.offset == offset and text in info.value.what


def test_data_without_terminator() -> None:
    body = b"a=" + b"x" * 58
    with pytest.raises(EnvError, match="without a NUL"):
        ubootenv.parse(zlib.crc32(body).to_bytes(4, "little") + body)
    body = b"a=" + b"x" * 57 + b"\0"
    with pytest.raises(EnvError, match="no terminating empty entry"):
        ubootenv.parse(zlib.crc32(body).to_bytes(4, "little") + body)


def test_wrong_size_and_truncation() -> None:
    image = ubootenv.build(ENV, size=SIZE)
    with pytest.raises(EnvError, match="expected the environment size 8192"):
        ubootenv.parse(image, size=0x2000)
    with pytest.raises(EnvError, match="truncated"):
        ubootenv.parse(image[:4])


@pytest.mark.parametrize(
    ("variables", "size", "text"),
    [
        ({"a": "x" * 100}, 64, "the variables take 104 bytes but the image holds 60"),
        ({"a=b": "1"}, 64, "hold no '='"),
        ({"": "1"}, 64, "non-empty"),
        ({"a": "1\0"}, 64, "NUL"),
        ({}, 5, "no room"),
    ],
)
def test_what_cannot_be_built(variables: dict[str, str], size: int, text: str) -> None:
    with pytest.raises(EnvError, match=text):
        ubootenv.build(variables, size=size)


def test_fullest_image_that_fits() -> None:
    # name=value\0 plus the final \0 fill the 60 data bytes exactly.
    variables = {"a": "x" * (60 - 2 - 2)}
    image = ubootenv.build(variables, size=64)
    assert image.endswith(b"\0\0") and ubootenv.parse(image).variables == variables
