"""The ssh flavour of the image and SSH into the emulated board (dropbear there, BoardSsh/fabric here).

The image tests only build (no QEMU). Tests marked ``emulated`` share one
boot of the board (~7 s). Expected values come from elsewhere than the code
under test: library needs from readelf over what was packed, key halves
derived again with ``cryptography``/paramiko, the kernel release from the
image's package, file bytes compared on both ends.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from image_cache import private_cache

from cma_tool.deploy.emulated_ssh import SshBoard, booted_over_ssh
from cma_tool.deploy.image import TargetImage, default_cache_dir, ensure_image
from cma_tool.deploy.qemu import prepare_boot
from cma_tool.deploy.ssh import BoardSsh, SshSettings
from cma_tool.errors import InfraError, TargetError

#: The ssh flavour's command line (firmware/init: cmatool.mode=ssh starts dropbear).
SSH_BOOTARGS = "console=ttyAMA0,115200 panic=-1 trace_event=cma:* cmatool.mode=ssh"

VIVID_CLOSURE = {"vivid", "v4l2-tpg", "videobuf2-dma-contig", "v4l2-dv-timings", "videobuf2-vmalloc",
                 "videobuf2-memops", "videobuf2-v4l2", "videobuf2-common", "videodev", "mc", "cec", "rc-core"}
# modules.dep of Debian's 6.1 armmp: virtio_net needs net_failover, which needs failover; virtio_mmio nothing.
NETWORK_CLOSURE = {"virtio_mmio", "virtio_net", "net_failover", "failover"}
LIBRARY_DIRS = ("lib/arm-linux-gnueabihf", "usr/lib/arm-linux-gnueabihf")


@pytest.fixture(scope="module")
def ssh_image() -> TargetImage:
    start = time.monotonic()
    image = ensure_image(default_cache_dir(), ssh=True, progress=lambda m: print("  image:", m))
    print(f"\nensure_image(ssh=True) as found: {time.monotonic() - start:.2f} s")
    return image


@pytest.fixture(scope="module")
def unpacked(ssh_image: TargetImage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ssh image's initrd unpacked by the real cpio."""
    root = tmp_path_factory.mktemp("ssh-initrd")
    subprocess.run(["cpio", "-i", "-d", "--quiet", "--no-absolute-filenames"],
                   input=gzip.decompress(ssh_image.initrd.read_bytes()), cwd=root, check=True)
    return root


def readelf(path: Path) -> str:
    return subprocess.run(["arm-linux-gnueabihf-readelf", "-W", "-l", "-d", str(path)], capture_output=True,
                          text=True, check=True).stdout


# ---- the image (no QEMU) --------------------------------------------------------------------


def test_every_elf_in_the_ssh_image_finds_its_libraries(unpacked: Path) -> None:
    elves = [p for p in unpacked.rglob("*") if p.is_file() and not p.is_symlink() and p.suffix != ".ko"
             and p.read_bytes()[:4] == b"\x7fELF"]
    names = {str(p.relative_to(unpacked)) for p in elves}
    assert {"usr/sbin/dropbear", "usr/lib/openssh/sftp-server", "bin/busybox"} <= names
    for elf in elves:
        info = readelf(elf)
        for line in info.splitlines():
            if "Requesting program interpreter:" in line:
                interp = line.split(":", 1)[1].strip(" ]")
                assert (unpacked / interp.lstrip("/")).exists(), f"{elf}: no interpreter {interp}"
            if "(NEEDED)" in line:
                soname = line.rsplit("[", 1)[1].rstrip("]")
                assert any((unpacked / d / soname).exists() for d in LIBRARY_DIRS), f"{elf} needs {soname}"
    # dropbear runs sftp-server from here (Debian's build); the link must resolve inside the image.
    assert (unpacked / "usr/lib/sftp-server").resolve() == (unpacked / "usr/lib/openssh/sftp-server").resolve()


def test_ssh_image_contents(ssh_image: TargetImage, unpacked: Path) -> None:
    moddir = unpacked / "lib" / "modules" / ssh_image.kernel_release / "kernel"
    modules = {p.name.split(".ko")[0] for p in moddir.rglob("*.ko*")}
    assert modules == VIVID_CLOSURE | NETWORK_CLOSURE
    assert not (unpacked / "bin" / "capture").exists()  # deployed over SSH instead
    assert ssh_image.capture_program is not None and ssh_image.capture_program.is_file()
    passwd = (unpacked / "etc" / "passwd").read_text().splitlines()
    assert passwd[0].split(":")[0:3] == ["root", "x", "0"] and passwd[0].endswith(":/root:/bin/sh")
    for path, mode in (("root/.ssh", 0o700), ("root/.ssh/authorized_keys", 0o600),
                       ("etc/dropbear/dropbear_ed25519_host_key", 0o600)):
        assert (unpacked / path).stat().st_mode & 0o777 == mode, path


def test_baked_keys_are_the_pairs_the_host_holds(ssh_image: TargetImage, unpacked: Path) -> None:
    assert ssh_image.ssh is not None
    # root's authorized key is the public half of the host's client key (derived again by paramiko).
    client = paramiko.Ed25519Key.from_private_key_file(str(ssh_image.ssh.client_key))
    authorized = (unpacked / "root/.ssh/authorized_keys").read_text().split()
    assert authorized[:2] == ["ssh-ed25519", client.get_base64()]
    # dropbear's key file: string "ssh-ed25519", then 64 bytes: seed, public key (dropbear's ed25519.c).
    blob = (unpacked / "etc/dropbear/dropbear_ed25519_host_key").read_bytes()
    assert blob[:15] == b"\x00\x00\x00\x0bssh-ed25519" and blob[15:19] == b"\x00\x00\x00\x40" and len(blob) == 83
    seed, public = blob[19:51], blob[51:83]
    derived = Ed25519PrivateKey.from_private_bytes(seed).public_key()
    assert derived.public_bytes(Encoding.Raw, PublicFormat.Raw) == public  # the halves belong together
    # ... and the host trusts exactly that key.
    assert ssh_image.ssh.host_public_key == derived.public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()


def test_flavours_differ_and_the_plain_image_is_untouched(ssh_image: TargetImage) -> None:
    plain = ensure_image(default_cache_dir())
    assert plain.key != ssh_image.key
    assert plain.flavour == "plain" and plain.ssh is None and plain.capture_program is None
    names = subprocess.run(["cpio", "-t", "--quiet"], input=gzip.decompress(plain.initrd.read_bytes()),
                           capture_output=True, check=True).stdout.decode().split()
    assert "bin/capture" in names
    assert not [n for n in names if "dropbear" in n or "virtio" in n or n.startswith("etc/")]


def test_new_host_key_means_a_new_image(ssh_image: TargetImage, tmp_path: Path) -> None:
    # A private cache sharing the downloads, whose keys are made afresh.
    cache = private_cache(tmp_path)
    fresh = ensure_image(cache, ssh=True)
    assert fresh.ssh is not None and ssh_image.ssh is not None
    assert fresh.ssh.host_public_key != ssh_image.ssh.host_public_key
    assert fresh.key != ssh_image.key
    assert ensure_image(cache, ssh=True) == fresh  # made once per cache, then reused


# ---- on the emulated board (one boot for all) ----------------------------------------------------


@pytest.fixture(scope="module")
def board(ssh_image: TargetImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshBoard]:
    workdir = tmp_path_factory.mktemp("ssh-board")
    boot = prepare_boot(ssh_image, workdir, bootargs=SSH_BOOTARGS, rng_seed=bytes(range(32)))
    with booted_over_ssh(boot, image=ssh_image, workdir=workdir, memory="768M", timeout=90) as sb:
        print(f"\nQEMU start to the first SSH command answered: {sb.seconds_to_ssh:.2f} s")
        yield sb


@pytest.mark.emulated
def test_uname_over_ssh_is_the_image_kernel(board: SshBoard, ssh_image: TargetImage) -> None:
    out, code = board.ssh.run(["uname", "-r"])
    assert (out.strip(), code) == (ssh_image.kernel_package.removeprefix("linux-image-"), 0)
    times = []
    for _ in range(10):
        start = time.monotonic()
        board.ssh.run("true")
        times.append(time.monotonic() - start)
    print(f"\nlater commands: median {statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms (10 runs)")


@pytest.mark.emulated
def test_only_the_key_from_the_build_is_trusted(board: SshBoard, ssh_image: TargetImage, tmp_path: Path) -> None:
    assert ssh_image.ssh is not None
    assert board.known_hosts.read_text() == f"[127.0.0.1]:{board.port} {ssh_image.ssh.host_public_key}\n"
    # OpenSSH's fingerprint of the key from the build: SHA-256 of the key blob, unpadded base64.
    blob = base64.b64decode(ssh_image.ssh.host_public_key.split()[1])
    expected = "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")

    def settings(known_hosts: Path) -> SshSettings:
        assert ssh_image.ssh is not None
        return SshSettings(host="127.0.0.1", port=board.port, key_file=ssh_image.ssh.client_key, known_hosts=None,
                           lab_known_hosts=known_hosts)

    # Without the key from the build the board is refused, and the key it shows is the baked one.
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(InfraError, match="is not in the known hosts") as err, \
            BoardSsh(settings(empty)) as stranger:
        stranger.connect(timeout=10)
    assert expected in str(err.value)

    # A different key on record for this address: refused as a changed key.
    other = Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH).decode()
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:{board.port} {other}\n")
    with pytest.raises(InfraError, match="CHANGED"), BoardSsh(settings(wrong)) as spoofed:
        spoofed.connect(timeout=10)


@pytest.mark.emulated
def test_put_and_get_one_mebibyte(board: SshBoard, tmp_path: Path) -> None:
    data = hashlib.shake_256(b"cma-tool ssh transfer").digest(1 << 20)
    local = tmp_path / "blob"
    local.write_bytes(data)
    start = time.monotonic()
    assert board.ssh.put(local, "/tmp/blob") == 1 << 20
    put_s = time.monotonic() - start
    out, _ = board.ssh.run("sha256sum /tmp/blob")
    assert out.split()[0] == hashlib.sha256(data).hexdigest()  # the board's own hash of what arrived
    start = time.monotonic()
    back = board.ssh.get("/tmp/blob", tmp_path / "back")
    get_s = time.monotonic() - start
    assert back.read_bytes() == data
    print(f"\nput 1 MiB: {put_s:.2f} s; get 1 MiB: {get_s:.2f} s")


# ---- failures, each on its own boot -----------------------------------------------------------------


@pytest.mark.emulated
@pytest.mark.slow
def test_board_without_a_network_card_is_a_target_error(ssh_image: TargetImage, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import cma_tool.deploy.emulated_ssh as emulated_ssh

    monkeypatch.setattr(emulated_ssh, "network_args", lambda port: [])  # QEMU gets no virtio-net device
    boot = prepare_boot(ssh_image, tmp_path, bootargs=SSH_BOOTARGS, rng_seed=bytes(range(32)))
    with pytest.raises(TargetError, match="could not start its SSH server: no eth0"), \
            booted_over_ssh(boot, image=ssh_image, workdir=tmp_path, memory="768M", timeout=60):
        pytest.fail("the board came up without a network card")


@pytest.mark.emulated
@pytest.mark.slow
def test_ssh_never_answering_is_an_infra_error_naming_the_address(ssh_image: TargetImage, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import cma_tool.deploy.emulated_ssh as emulated_ssh

    # The host port forwards to the board's port 23, where nothing listens: dropbear is up, SSH is not reachable.
    real = emulated_ssh.network_args
    monkeypatch.setattr(emulated_ssh, "network_args", lambda port: [a.replace("-:22", "-:23") for a in real(port)])
    boot = prepare_boot(ssh_image, tmp_path, bootargs=SSH_BOOTARGS, rng_seed=bytes(range(32)))
    with pytest.raises(InfraError) as err, \
            booted_over_ssh(boot, image=ssh_image, workdir=tmp_path, memory="768M", timeout=15):
        pytest.fail("SSH answered on a port where nothing listens")
    port = (tmp_path / "known_hosts").read_text().split()[0]  # "[127.0.0.1]:PORT", written before the boot
    message = str(err.value)
    assert f"root@127.0.0.1:{port.rsplit(':', 1)[1]}" in message and "last error" in message
    assert b"cma-tool: ssh ready" in (tmp_path / "console.log").read_bytes()  # the board did its part
