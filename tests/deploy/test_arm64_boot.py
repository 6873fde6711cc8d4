"""The arm64 board's pieces without QEMU: the boot stub, the Image header, and naming a kernel."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from cma_tool.deploy.arm64_boot import boot_stub, image_header
from cma_tool.errors import InfraError
from tests.tools import need

ROOT = Path(__file__).parents[2]


def test_the_boot_stub_does_what_the_arm64_boot_protocol_asks(tmp_path: Path) -> None:
    stub = tmp_path / "stub.bin"
    stub.write_bytes(boot_stub(0x44F00000, 0x40200000))
    objdump = need("aarch64-linux-gnu-objdump")
    text = subprocess.run([objdump, "-D", "-b", "binary", "-m", "aarch64", str(stub)], capture_output=True,
                          text=True, check=True).stdout
    code = [re.sub(r"\s+", " ", m.group(1)).strip() for m in re.finditer(r"^\s+[0-9a-f]+:\s+[0-9a-f]{8}\s+(.*)$",
                                                                          text, re.M)]
    # Binutils' own reading: x0 and x4 from the two literals, x1..x3 zero, then the jump.
    assert code[:6] == ["ldr x0, 0x18", "ldr x4, 0x20", "mov x1, xzr", "mov x2, xzr", "mov x3, xzr", "br x4"]
    assert struct.unpack_from("<QQ", stub.read_bytes(), 0x18) == (0x44F00000, 0x40200000)


def test_an_image_header_is_read_and_anything_else_refused(tmp_path: Path) -> None:
    image = tmp_path / "Image"
    head = bytearray(64)
    struct.pack_into("<QQ", head, 8, 0, 0x2010000)  # text_offset, image_size
    head[56:60] = b"ARM\x64"
    image.write_bytes(bytes(head) + b"\0" * 64)
    assert image_header(image) == (0, 0x2010000)
    zimage = tmp_path / "zImage"
    zimage.write_bytes(b"\0" * 128)
    with pytest.raises(InfraError, match="not an arm64 Image"):
        image_header(zimage)


def cma_tool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cma_tool", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, check=False)


def test_an_unknown_kernel_name_is_a_config_error_with_a_hint(tmp_path: Path) -> None:
    res = cma_tool("run", "boards/qemu-aquila.yaml", "--kernel", "debian-6.1-arm65", "--out", str(tmp_path / "r"))
    said = res.stdout + res.stderr
    assert res.returncode == 1, said
    assert "'debian-6.1-arm65' is not a Debian kernel the emulated board can boot" in said
    assert "hint: did you mean debian-6.1-arm64?" in said
    assert "Traceback" not in said


def test_arm64_boots_only_directly(tmp_path: Path) -> None:
    res = cma_tool("run", "boards/qemu-aquila.yaml", "--kernel", "debian-6.1-arm64", "--boot", "uboot",
                   "--out", str(tmp_path / "r"))
    said = res.stdout + res.stderr
    assert res.returncode == 1, said
    assert "--boot uboot is armhf only" in said and "Traceback" not in said


def test_model_plan_and_generate_agree_on_the_name() -> None:
    # The Debian kernel's name and its profile's name are one kernel to every command.
    by_kernel = cma_tool("model", "boards/qemu-aquila.yaml", "--kernel", "debian-6.1-arm64", "--json")
    by_profile = cma_tool("model", "boards/qemu-aquila.yaml", "--kernel", "linux-6.1-arm64", "--json")
    assert by_kernel.returncode == 0, by_kernel.stderr
    assert by_kernel.stdout == by_profile.stdout
    plan = cma_tool("plan", "boards/qemu-aquila.yaml", "--kernel", "debian-5.10-arm64", "--json")
    assert plan.returncode == 0, plan.stderr
    assert '"linux-5.10-arm64"' in plan.stdout
    text = cma_tool("model", "boards/qemu-aquila.yaml", "--kernel", "debian-6.1-arm64").stdout
    # 64 MiB top-down in bank 1: 0x68000000 - 64 MiB; then dma-direct's three 128 KiB atomic pools (32 pages,
    # order 5) from it, one after the other.
    assert "#0 linux,cma: 0x64000000..0x67ffffff (64 MiB" in text
    assert [line.strip() for line in text.splitlines() if "cma_alloc_finish" in line][:3] == [
        f"cma_alloc_finish: name=linux,cma pfn={pfn} page=(ptrval) count=32 align=5"
        for pfn in ("0x64000", "0x64020", "0x64040")]
