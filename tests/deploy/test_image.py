"""The target image: what goes in it, and when it is rebuilt.

Builds through the real cache (``$CMA_TOOL_CACHE`` or ``~/.cache/cma-tool``):
the first run downloads Debian's armhf kernel and busybox (~45 MB, ~8 s).
Tests that damage or change an image build in a private cache that shares
the downloads (``image_cache.private_cache``).
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from image_cache import private_cache

from cma_tool.deploy.image import (
    FIRMWARE_DIR,
    TargetImage,
    compose_initrd,
    default_cache_dir,
    ensure_image,
    module_closure,
    read_kernel_config,
)
from cma_tool.errors import ConfigError, InfraError

# vivid's dependency closure on Debian's 6.1 armmp kernel, as measured by hand
# (modinfo -F depends, recursively): the reference notes list exactly these.
VIVID_CLOSURE = {
    "vivid",
    "v4l2-tpg",
    "videobuf2-dma-contig",
    "v4l2-dv-timings",
    "videobuf2-vmalloc",
    "videobuf2-memops",
    "videobuf2-v4l2",
    "videobuf2-common",
    "videodev",
    "mc",
    "cec",
    "rc-core",
}


@pytest.fixture(scope="module")
def image() -> TargetImage:
    start = time.monotonic()
    built = ensure_image(default_cache_dir(), progress=lambda m: print("  image:", m))
    print(f"\nensure_image (as found): {time.monotonic() - start:.2f} s")
    return built


def cpio_members(data: bytes) -> dict[str, bytes]:
    """Names and contents of the regular files in a gzip'd newc cpio, unpacked by the real cpio."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run(
            ["cpio", "-i", "-d", "--quiet", "--no-absolute-filenames"],
            input=gzip.decompress(data),
            cwd=work,
            check=True,
        )
        return {str(p.relative_to(work)): p.read_bytes() for p in work.rglob("*") if p.is_file() and not p.is_symlink()}


def test_image_holds_vivid_and_its_whole_closure(image: TargetImage) -> None:
    files = cpio_members(image.initrd.read_bytes())
    moddir = f"lib/modules/{image.kernel_release}/"
    modules = {Path(p).name.split(".ko")[0] for p in files if p.startswith(moddir + "kernel/")}
    assert modules == VIVID_CLOSURE
    # depmod ran on the image: modprobe on the target resolves vivid's dependencies
    dep = files[moddir + "modules.dep"].decode()
    vivid_line = next(line for line in dep.splitlines() if line.split(":")[0].endswith("/vivid.ko"))
    assert {Path(p).name.split(".ko")[0] for p in vivid_line.split(":")[1].split()} == VIVID_CLOSURE - {"vivid"}
    for name in ("init", "bin/busybox", "bin/capture", "bin/cmatool-run"):
        assert name in files, name
    assert files["init"] == (FIRMWARE_DIR / "init").read_bytes()


def test_capture_is_a_static_arm_executable(image: TargetImage, tmp_path: Path) -> None:
    binary = tmp_path / "capture"
    binary.write_bytes(cpio_members(image.initrd.read_bytes())["bin/capture"])
    header = subprocess.run(
        ["arm-linux-gnueabihf-readelf", "-h", "-l", str(binary)], capture_output=True, text=True, check=True
    ).stdout
    assert "ELF32" in header
    assert "Machine:                           ARM" in header
    assert "EXEC (Executable file)" in header
    assert "INTERP" not in header  # no dynamic loader: runs on a bare busybox initramfs
    assert "Requesting program interpreter" not in header


def test_kernel_facts_are_debians_armmp_config(image: TargetImage) -> None:
    # Debian bookworm armmp: the values measured in the reference notes.
    assert image.kernel_release.endswith("-armmp")
    assert image.config.cma_size_mbytes == 16
    assert image.config.arch_force_max_order == 12
    assert image.config.cma_areas == 7
    assert image.config.cma_alignment == 8
    assert image.kernel.read_bytes()[0x24:0x28] == bytes.fromhex("18286f01")  # zImage magic 0x016f2818


def test_rebuild_only_when_an_input_changes(image: TargetImage, tmp_path: Path) -> None:
    # A private cache sharing the downloads, so this test builds for real every time.
    cache = private_cache(tmp_path)
    firmware = tmp_path / "firmware"
    shutil.copytree(FIRMWARE_DIR, firmware)

    said: list[str] = []
    start = time.monotonic()
    first = ensure_image(cache, firmware=firmware, progress=said.append)
    built = time.monotonic() - start
    assert any(m.startswith("building image") for m in said)
    assert first.key == image.key  # same inputs as the shared image: same key

    said.clear()
    stamp = first.initrd.stat().st_mtime_ns
    start = time.monotonic()
    again = ensure_image(cache, firmware=firmware, progress=said.append)
    warm = time.monotonic() - start
    assert said == []
    assert again == first
    assert again.initrd.stat().st_mtime_ns == stamp

    init = firmware / "init"
    init.write_text(init.read_text() + "\n# changed by test_rebuild_only_when_an_input_changes\n")
    said.clear()
    start = time.monotonic()
    changed = ensure_image(cache, firmware=firmware, progress=said.append)
    rebuilt = time.monotonic() - start
    assert any(m.startswith("building image") for m in said)
    assert changed.key != first.key
    assert cpio_members(changed.initrd.read_bytes())["init"] == init.read_bytes()
    print(
        f"\nimage build with packages cached: {built:.2f} s; warm (nothing changed): {warm * 1000:.1f} ms; "
        f"rebuild after init changed: {rebuilt:.2f} s"
    )


def cpio_entries(data: bytes) -> list[str]:
    """The names in a gzip'd newc cpio, as ``cpio -t`` lists them."""
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=gzip.decompress(data), capture_output=True, check=True)
    return listing.stdout.decode().split()


def test_run_initrd_appends_the_files_as_a_second_archive(image: TargetImage, tmp_path: Path) -> None:
    files = {"capture.args": "--device\n/dev/video0\n--label\nwith space\n", "plan": b"\x00binary\xff"}
    run = compose_initrd(image, files, tmp_path / "run.gz")
    base = image.initrd.read_bytes()
    data = run.read_bytes()
    assert data.startswith(base)  # the cached image is untouched, the files follow it
    appended = data[len(base) :]
    assert sorted(cpio_entries(appended)) == ["cmatool", "cmatool/capture.args", "cmatool/plan"]
    members = cpio_members(appended)
    assert members == {"cmatool/capture.args": b"--device\n/dev/video0\n--label\nwith space\n", "cmatool/plan": b"\x00binary\xff"}
    assert compose_initrd(image, None, tmp_path / "plain.gz").read_bytes() == base


@pytest.mark.parametrize("name", ["", ".", "..", "../init", "a/b", "/etc/passwd", "x..y", "nul\0"])
def test_run_initrd_refuses_a_name_that_is_not_a_plain_file_name(image: TargetImage, tmp_path: Path, name: str) -> None:
    with pytest.raises(ConfigError, match="not a plain file name"):
        compose_initrd(image, {"capture.args": "ok\n", name: "x"}, tmp_path / "bad.gz")
    assert not (tmp_path / "bad.gz").exists()


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-4096])


def drop_hashes(path: Path) -> None:
    meta = json.loads(path.read_text())
    del meta["files"]
    path.write_text(json.dumps(meta))


DAMAGE = {
    "flip a byte of the initrd": ("initrd.gz", flip_a_byte, "initrd.gz is damaged"),
    "truncate the kernel": ("vmlinuz", truncate, "vmlinuz is damaged"),
    "delete the kernel": ("vmlinuz", Path.unlink, "vmlinuz is missing"),
    "delete the initrd": ("initrd.gz", Path.unlink, "initrd.gz is missing"),
    "corrupt image.json": ("image.json", lambda p: p.write_text('{"kernel_release": '), "image.json is unreadable"),
    "image.json without hashes": ("image.json", drop_hashes, "image.json records no sha256"),
    "delete image.json": ("image.json", Path.unlink, "image.json is missing"),
}


@pytest.fixture(scope="module")
def damage_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return private_cache(tmp_path_factory.mktemp("damage"))


@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_cached_image_is_rebuilt_saying_why(damage_cache: Path, case: str) -> None:
    name, damage, reason = DAMAGE[case]
    healthy = ensure_image(damage_cache)
    damage(healthy.directory / name)
    said: list[str] = []
    rebuilt = ensure_image(damage_cache, progress=said.append)
    assert said[0].startswith(f"image {healthy.key}: {reason}")
    assert said[0].endswith("; rebuilding it")
    assert any(m.startswith(f"building image {healthy.key}") for m in said)
    assert rebuilt == healthy  # same inputs, same image, same folder
    assert rebuilt.kernel.read_bytes()[0x24:0x28] == bytes.fromhex("18286f01")
    assert "init" in cpio_members(rebuilt.initrd.read_bytes())
    assert not [p for p in (damage_cache / "images").iterdir() if p.name.startswith(".")]  # nothing left aside
    # Healthy again: a hit, nothing said, nothing rewritten.
    said.clear()
    stamp = rebuilt.initrd.stat().st_mtime_ns
    assert ensure_image(damage_cache, progress=said.append) == rebuilt
    assert said == []
    assert rebuilt.initrd.stat().st_mtime_ns == stamp


def test_the_ssh_flavours_capture_program_is_checked_too(tmp_path: Path) -> None:
    cache = private_cache(tmp_path)
    healthy = ensure_image(cache, ssh=True)
    assert healthy.capture_program is not None
    flip_a_byte(healthy.capture_program)
    said: list[str] = []
    assert ensure_image(cache, ssh=True, progress=said.append) == healthy
    assert said[0] == f"image {healthy.key}: capture is damaged (its sha256 is not the one recorded when it was built); rebuilding it"
    said.clear()
    assert ensure_image(cache, ssh=True, progress=said.append) == healthy
    assert said == []


def test_module_closure_follows_dependencies(tmp_path: Path) -> None:
    dep = tmp_path / "modules.dep"
    dep.write_text(
        "kernel/a/top-mod.ko: kernel/b/mid.ko kernel/c/leaf.ko\n"
        "kernel/b/mid.ko: kernel/c/leaf.ko\n"
        "kernel/c/leaf.ko:\n"
        "kernel/d/other.ko:\n"
    )
    assert module_closure(dep, "top_mod") == ["kernel/a/top-mod.ko", "kernel/b/mid.ko", "kernel/c/leaf.ko"]
    assert module_closure(dep, "leaf") == ["kernel/c/leaf.ko"]
    with pytest.raises(InfraError, match="no module 'vivid'"):
        module_closure(dep, "vivid")


def test_kernel_config_reading(tmp_path: Path) -> None:
    cfg = tmp_path / "config"
    cfg.write_text("CONFIG_CMA=y\nCONFIG_CMA_SIZE_MBYTES=32\nCONFIG_CMA_AREAS=19\nCONFIG_CMA_ALIGNMENT=9\n")
    facts = read_kernel_config(cfg)
    assert (facts.cma_size_mbytes, facts.cma_areas, facts.cma_alignment) == (32, 19, 9)
    assert facts.arch_force_max_order == 11  # not forced: Kconfig's default
    cfg.write_text("CONFIG_CMA=y\n")
    with pytest.raises(InfraError, match="CONFIG_CMA_SIZE_MBYTES is not set"):
        read_kernel_config(cfg)
    # 5.10 spells the max order FORCE_MAX_ZONEORDER (Debian's bullseye armmp: 12).
    cfg.write_text("CONFIG_CMA_SIZE_MBYTES=16\nCONFIG_CMA_AREAS=7\nCONFIG_CMA_ALIGNMENT=8\nCONFIG_FORCE_MAX_ZONEORDER=12\n")
    assert read_kernel_config(cfg).arch_force_max_order == 12


def test_kernel_package_names_by_architecture_and_series() -> None:
    from cma_tool.deploy.image.apt import kernel_package_re

    def series(arch: str, name: str) -> str | None:
        m = kernel_package_re(arch).match(name)
        return m.group("series") if m else None

    assert series("armhf", "linux-image-6.1.0-57-armmp") == "6.1"
    assert series("armhf", "linux-image-5.10.0-32-armmp") == "5.10"
    assert series("arm64", "linux-image-6.12.117+deb13-arm64") == "6.12"
    assert series("arm64", "linux-image-6.12.118+deb12-arm64") == "6.12"  # bookworm's own 6.12: not 6.1
    # Only the plain flavour: not -rt, -lpae, -cloud, 16K pages, signed-off copies or debug symbols.
    for other in ("linux-image-6.1.0-57-rt-armmp", "linux-image-6.1.0-57-armmp-lpae", "linux-image-6.1.0-57-cloud-arm64",
                  "linux-image-6.12.117+deb13-arm64-16k", "linux-image-6.1.0-57-arm64-unsigned",
                  "linux-image-6.1.0-57-arm64-dbg", "linux-image-arm64"):
        assert series("arm64", other) is None and series("armhf", other) is None, other
