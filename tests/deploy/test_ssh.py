"""SSH deployment against a real OpenSSH server on 127.0.0.1; a temp folder is the board."""

from __future__ import annotations

import shlex
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sshd_fixture import Sshd, free_tcp_port, keygen, sshd

from cma_tool.deploy.ssh import BoardSsh, Deployment, SshSettings
from cma_tool.errors import ConfigError, InfraError, TargetError

__all__ = ["sshd"]  # the fixture, imported for pytest

# Names a board file could hold that a careless shell line would split, unquote or execute.
HOSTILE = "we ird 'name\"; $(touch cma-pwned-a) `touch cma-pwned-b` & x|y"
HOSTILE_VALUE = "console=ttyS0 ';$(touch /tmp/cma-pwned-c)' \"q\" \\ $HOME -x"


def pwned() -> list[Path]:
    return [p for p in (Path.home() / "cma-pwned-a", Path.home() / "cma-pwned-b", Path("/tmp/cma-pwned-c"))
            if p.exists()]


@pytest.fixture
def board(tmp_path: Path) -> Path:
    """The board's file system: a folder whose own name needs quoting."""
    root = tmp_path / f"board {HOSTILE}"
    root.mkdir()
    return root


@pytest.fixture
def session(sshd: Sshd) -> BoardSsh:
    sshd.trust()
    ssh = BoardSsh(sshd.settings())
    ssh.connect(timeout=20)
    return ssh


def test_run_returns_stdout_and_exit_code(session: BoardSsh) -> None:
    with session:
        assert session.run("echo $HOME")[0].endswith("/sshd/home\n")  # the fixture's plain shell, see there
        assert session.run("echo hello; echo err >&2") == ("hello\n", 0)
        start = time.perf_counter()
        for _ in range(20):
            session.run("true")
        print(f"\nssh command round trip on one reused connection: {(time.perf_counter() - start) / 20 * 1000:.1f} ms")
        assert session.run("exit 3", check=False) == ("", 3)
        assert session.run(["printf", "%s|", "a b", "c'd", "$(id)"]) == ("a b|c'd|$(id)|", 0)
        with pytest.raises(TargetError) as err:
            session.run("echo 'no such video device' >&2; exit 2")
        assert "exit code 2" in str(err.value) and "no such video device" in str(err.value)


def test_a_command_that_hangs_times_out(session: BoardSsh) -> None:
    with session, pytest.raises(TargetError, match="did not finish within 0.5 s"):
        session.run("sleep 20", timeout=0.5)


def test_deploy_boot_config_run_and_fetch_with_hostile_names(session: BoardSsh, board: Path, tmp_path: Path) -> None:
    local = tmp_path / "local"
    local.mkdir()
    kernel = local / "zImage"
    kernel.write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    dtb = local / f"{HOSTILE}.dtb"
    dtb.write_bytes(b"\xd0\x0d\xfe\xed" + b"\x00" * 60)
    program = local / "cma-capture"
    program.write_text("#!/bin/sh\necho \"captured $# args: $*\"\n")
    tree = local / "modroot"
    (tree / "lib/modules/6.1.0-test/kernel").mkdir(parents=True)
    (tree / "lib/modules/6.1.0-test/kernel/vivid.ko").write_bytes(b"\x7fELF fake module")
    tarball = local / "modules.tar.gz"
    subprocess.run(["tar", "-czf", str(tarball), "-C", str(tree), "lib"], check=True)

    with session:
        done = session.deploy(Deployment(kernel=kernel, dtb=dtb, modules_tarball=tarball, capture_program=program,
                                         boot_dir=f"{board}/boot", modules_root=str(board),
                                         program_dir=f"{board}/usr/local/bin"))
        assert done.kernel == f"{board}/boot/zImage"
        assert done.dtb == f"{board}/boot/{dtb.name}"
        assert done.bytes_sent == kernel.stat().st_size + dtb.stat().st_size + program.stat().st_size \
            + tarball.stat().st_size
        # Checked on the "board" side directly, not through our own reading of it.
        assert (board / "boot/zImage").read_bytes() == kernel.read_bytes()
        assert (board / "boot" / dtb.name).read_bytes() == dtb.read_bytes()
        assert (board / "lib/modules/6.1.0-test/kernel/vivid.ko").read_bytes() == b"\x7fELF fake module"
        assert (board / "usr/local/bin/cma-capture").stat().st_mode & 0o777 == 0o755
        assert not list(Path("/tmp").glob("cma-tool-*modules.tar.gz"))  # the scratch tarball was removed
        print(f"\ndeploy over SSH to localhost: {done.bytes_sent} bytes in {done.seconds:.3f} s")

        out, code = session.run([f"{board}/usr/local/bin/cma-capture", HOSTILE, "2"])
        assert (out, code) == (f"captured 2 args: {HOSTILE} 2\n", 0)

        extlinux = f"label cma\n  kernel ../zImage\n  fdt ../{dtb.name}\n  append {HOSTILE_VALUE}\n"
        session.write_boot_config(f"{board}/boot/extlinux/extlinux.conf", extlinux)
        assert (board / "boot/extlinux/extlinux.conf").read_text() == extlinux
        assert not [p for p in (board / "boot/extlinux").iterdir() if p.name != "extlinux.conf"]

        results = board / f"results {HOSTILE}.json"
        results.write_text('{"buffers": 4}\n')
        got = session.get(str(results), tmp_path / "fetched" / "results.json")
        assert got.read_text() == '{"buffers": 4}\n'
    assert pwned() == []


def test_boot_script_image_arrives_as_mkimage_made_it(session: BoardSsh, board: Path, tmp_path: Path) -> None:
    cmd = tmp_path / "boot.cmd"
    cmd.write_text(f"setenv bootargs '{HOSTILE_VALUE}'\nbootz ${{kernel_addr_r}} - ${{fdt_addr_r}}\n")
    scr = tmp_path / "boot.scr"
    subprocess.run(["mkimage", "-A", "arm", "-T", "script", "-C", "none", "-n", "t", "-d", str(cmd), str(scr)],
                   check=True, capture_output=True)
    with session:
        session.write_boot_config(f"{board}/boot/boot.scr", scr.read_bytes())
    listing = subprocess.run(["mkimage", "-l", str(board / "boot/boot.scr")], capture_output=True, text=True)
    assert "Script" in listing.stdout
    assert (board / "boot/boot.scr").read_bytes() == scr.read_bytes()


def test_uboot_variables_set_with_fw_setenv(session: BoardSsh, board: Path, tmp_path: Path) -> None:
    env = tmp_path / "uboot.env"  # fw_env.config splits on blanks: the device path itself cannot hold one
    (board / "env.txt").write_text("bootdelay=3\nstale=yes\n")
    subprocess.run(["mkenvimage", "-s", "0x4000", "-o", str(env), str(board / "env.txt")], check=True)
    config = board / "fw_env.config"
    config.write_text(f"{env} 0x0 0x4000\n")
    values = {"bootargs": HOSTILE_VALUE, "dash": "-x", "empty_looking": " ", "stale": None}
    with session:
        session.set_uboot_env(values, config=str(config))
    printed = subprocess.run(["fw_printenv", "-c", str(config)], capture_output=True, text=True, check=True).stdout
    assert sorted(printed.splitlines()) == sorted(
        ["bootdelay=3", f"bootargs={HOSTILE_VALUE}", "dash=-x", "empty_looking= "])
    assert pwned() == []


@pytest.mark.parametrize("name", ["", "a=b", "two words", "nl\n"])
def test_bad_uboot_variable_names_are_configuration_errors(session: BoardSsh, name: str) -> None:
    with session, pytest.raises(ConfigError):
        session.set_uboot_env({name: "1"})


def test_missing_remote_file_is_a_target_error(session: BoardSsh, board: Path, tmp_path: Path) -> None:
    with session, pytest.raises(TargetError, match="No such file"):
        session.get(f"{board}/no-results.json", tmp_path / "x")


def test_upload_into_a_read_only_place_is_a_target_error(session: BoardSsh, board: Path, tmp_path: Path) -> None:
    local = tmp_path / "f"
    local.write_bytes(b"x")
    (board / "file").write_text("a file, not a folder")
    with session, pytest.raises(TargetError):
        session.put(local, f"{board}/file/inside")


def test_bad_parameters_are_configuration_errors(sshd: Sshd, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="port 70000"):
        BoardSsh(sshd.settings(port=70000))
    with pytest.raises(ConfigError, match="key file"):
        BoardSsh(sshd.settings(key_file=tmp_path / "nokey"))
    with pytest.raises(ConfigError, match="host"):
        BoardSsh(sshd.settings(host=""))
    sshd.trust()
    with BoardSsh(sshd.settings()) as ssh:
        ssh.connect(timeout=20)
        with pytest.raises(ConfigError, match="absolute"):
            ssh.put(sshd.client_key, "relative/path")
        with pytest.raises(ConfigError, match="no such file"):
            ssh.put(tmp_path / "missing", "/tmp/x")
        with pytest.raises(ConfigError) as err:
            ssh.deploy(Deployment(kernel=tmp_path / "zImage", dtb=tmp_path / "a.dtb", boot_dir="boot"))
        assert "zImage" in str(err.value) and "a.dtb" in str(err.value) and "boot_dir" in str(err.value)


def test_calls_before_connect_are_refused(sshd: Sshd) -> None:
    with pytest.raises(ConfigError, match="connect"):
        BoardSsh(sshd.settings()).run("true")


# --- host keys --------------------------------------------------------------------------------------


def test_unknown_host_key_is_refused_by_default(sshd: Sshd) -> None:
    ssh = BoardSsh(sshd.settings())
    with pytest.raises(InfraError) as err:
        ssh.connect(timeout=20)
    fp = subprocess.run(["ssh-keygen", "-lf", f"{sshd.host_key}.pub"], capture_output=True, text=True).stdout.split()[1]
    assert f"[127.0.0.1]:{sshd.port}" in str(err.value)
    assert fp in str(err.value)  # the fingerprint, to compare with the board's own
    assert "accept_new_host_keys" in str(err.value)
    assert not (sshd.folder / "lab" / "known_hosts").exists()


def test_new_host_key_is_accepted_and_recorded_with_the_flag(sshd: Sshd) -> None:
    lab = sshd.folder / "lab" / "known_hosts"
    with BoardSsh(sshd.settings(accept_new_host_keys=True)) as ssh:
        ssh.connect(timeout=20)
        assert ssh.run("echo $BOARD_BOOT") == ("1\n", 0)
    # OpenSSH's own tool finds the recorded key, and it is the server's.
    found = subprocess.run(["ssh-keygen", "-F", f"[127.0.0.1]:{sshd.port}", "-f", str(lab)],
                           capture_output=True, text=True)
    assert found.returncode == 0
    assert sshd.host_key.with_suffix(".pub").read_text().split()[1] in found.stdout
    # Once recorded, the key is known without the flag.
    with BoardSsh(sshd.settings()) as ssh:
        ssh.connect(timeout=20)


def test_hashed_known_hosts_entries_are_honoured(sshd: Sshd) -> None:
    sshd.trust()
    subprocess.run(["ssh-keygen", "-H", "-f", str(sshd.folder / "known_hosts")], check=True, capture_output=True)
    assert "[127.0.0.1]" not in (sshd.folder / "known_hosts").read_text()
    with BoardSsh(sshd.settings()) as ssh:
        ssh.connect(timeout=20)


def test_changed_host_key_is_refused_even_with_the_flag(sshd: Sshd) -> None:
    with BoardSsh(sshd.settings(accept_new_host_keys=True)) as ssh:
        ssh.connect(timeout=20)
    lab = sshd.folder / "lab" / "known_hosts"
    recorded = lab.read_text()
    sshd.stop()
    sshd.start(host_key=keygen(sshd.folder / "impostor_key"))
    with pytest.raises(InfraError, match="CHANGED") as err:
        BoardSsh(sshd.settings(accept_new_host_keys=True)).connect(timeout=20)
    assert "ssh-keygen -R" in str(err.value)
    assert lab.read_text() == recorded


def test_refused_login_fails_at_once_without_retrying(sshd: Sshd) -> None:
    sshd.trust()
    stranger = keygen(sshd.folder / "stranger_key")
    with pytest.raises(InfraError, match="refused the login") as err:
        BoardSsh(sshd.settings(key_file=stranger)).connect(timeout=60)
    assert "attempts" not in str(err.value)


# --- the board coming and going ---------------------------------------------------------------------


def test_connect_retries_until_the_board_answers(sshd: Sshd) -> None:
    sshd.trust()
    sshd.stop()
    starter = threading.Timer(1.5, sshd.start)
    starter.start()
    try:
        with BoardSsh(sshd.settings()) as ssh:
            ssh.connect(timeout=30)
            assert ssh.run("echo $BOARD_BOOT") == ("2\n", 0)
    finally:
        starter.join()


def test_connect_gives_up_at_the_deadline_naming_host_port_and_last_error(sshd: Sshd) -> None:
    port = free_tcp_port()
    with pytest.raises(InfraError) as err:
        BoardSsh(sshd.settings(port=port)).connect(timeout=1.5)
    text = str(err.value)
    assert f"root@127.0.0.1:{port}" in text and "within 1.5 s" in text
    assert "Unable to connect" in text or "refused" in text.lower()


def test_dropped_connection_is_an_infrastructure_error(session: BoardSsh, sshd: Sshd) -> None:
    with session:
        sshd.stop()
        with pytest.raises(InfraError):
            session.run("true")


def test_reboot_waits_for_the_board_to_go_and_come_back(session: BoardSsh, sshd: Sshd, board: Path) -> None:
    flag = board / "reboot requested"
    events: dict[str, float] = {}

    def play_the_board() -> None:
        deadline = time.monotonic() + 30
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        sshd.stop()
        events["gone"] = time.monotonic()
        time.sleep(1.0)  # the board boots
        sshd.start()

    player = threading.Thread(target=play_the_board)
    player.start()
    try:
        with session:
            assert session.run("echo $BOARD_BOOT") == ("1\n", 0)
            took = session.reboot(command=f"touch {shlex.quote(str(flag))}", timeout=30, poll=0.2)
            events["back"] = time.monotonic()
            assert session.run("echo $BOARD_BOOT") == ("2\n", 0)  # the new server answers
    finally:
        player.join()
    assert events["gone"] < events["back"]
    print(f"\nreboot: board back {took:.2f} s after the reboot command was started")


def test_a_board_that_does_not_reboot_is_a_target_error(session: BoardSsh) -> None:
    with session, pytest.raises(TargetError, match="did not reboot"):
        session.reboot(command="true", timeout=2, poll=0.2)


def test_a_board_that_does_not_come_back_is_a_target_error(session: BoardSsh, sshd: Sshd, board: Path) -> None:
    flag = board / "reboot"
    def stop_for_good() -> None:
        _wait_for(flag)
        sshd.stop()

    stopper = threading.Thread(target=stop_for_good)
    stopper.start()
    try:
        with session, pytest.raises(TargetError, match="did not answer SSH again") as err:
            session.reboot(command=f"touch {shlex.quote(str(flag))}", timeout=4, poll=0.2)
        assert "last error" in str(err.value)
    finally:
        stopper.join()


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 30
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_settings_default_to_the_persons_known_hosts() -> None:
    settings = SshSettings(host="aquila.lab")
    assert settings.known_hosts == Path("~/.ssh/known_hosts")
    assert settings.accept_new_host_keys is False
