"""Benchmark (printed, never asserted): loading files into real U-Boot on the emulated board.

One QEMU virt running Debian's u-boot-qemu, one console. On it, in turn:
  ours-ymodem   UBoot.loady (our YMODEM batch on the xmodem package's XMODEM-1K)
  ours-xmodem   UBoot.loadx (the xmodem package's XMODEM-1K)
  lrzsz-sb      `sb -k` (lrzsz YMODEM, 1 KiB blocks) on the same console socket
  lrzsz-sx      `sx -k` (lrzsz XMODEM-1K)
  tftp          UBoot.tftpboot of the kernel from QEMU's built-in TFTP server
Every load is checked with U-Boot's crc32 against zlib.crc32. Each serial
sender moves two payload sizes; the difference gives the steady rate without
the fixed handshake (lrzsz's sb waits for a second 'C' that U-Boot never sends,
so its start costs seconds). Our times are whole UBoot.loady/loadx calls (typing the
command, the transfer, the prompt after); lrzsz's are the sb/sx process alone, the
command typed before the clock starts. QEMU does not pace the emulated UART at its baud rate.

    python3 bench/bench_serial.py [--size-kib 512] [--rounds 1]
"""

from __future__ import annotations

import argparse
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT))

from cma_tool.deploy.console import Console  # noqa: E402
from cma_tool.deploy.emulated_uboot import UBOOT_LINE_LIMIT, UBootBoard, plain_zimage  # noqa: E402
from cma_tool.deploy.uboot import UBoot  # noqa: E402

LOAD_ADDR = 0x41000000
KERNEL_ADDR = 0x40400000


class Session:
    """The console engine on the board; closed and reopened around lrzsz, which needs the socket itself."""

    def __init__(self, board: UBootBoard, logs: Path) -> None:
        self.board = board
        self.logs = logs
        self.console: Console | None = None
        self.uboot: UBoot | None = None

    def attach(self) -> UBoot:
        if self.uboot is None:
            self.console = Console(self.board.serial_url, self.logs, name="console", reconnect_timeout=2.0)
            self.console.open()
            self.uboot = UBoot(self.console, max_line=UBOOT_LINE_LIMIT, silence=0.3)
            self.uboot.attach(timeout=30)
        return self.uboot

    def detach(self) -> None:
        if self.console is not None:
            self.console.close()
        self.console = None
        self.uboot = None


def ours(kind: str) -> Callable[[Session, bytes, Path], float]:
    def send(session: Session, data: bytes, _file: Path) -> float:
        uboot = session.attach()
        start = time.monotonic()
        got = uboot.loady(LOAD_ADDR, data) if kind == "ymodem" else uboot.loadx(LOAD_ADDR, data)
        took = time.monotonic() - start
        if got != len(data):
            raise SystemExit(f"ours-{kind}: U-Boot counted {got} bytes, sent {len(data)}")
        return took

    return send


def lrzsz(tool: str, command: str) -> Callable[[Session, bytes, Path], float]:
    def send(session: Session, data: bytes, file: Path) -> float:
        session.detach()
        port = int(session.board.serial_url.rsplit(":", 1)[1])
        # lrzsz needs a blocking descriptor (a socket with a timeout is non-blocking underneath).
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setblocking(True)
            _type(sock, f"{command} {LOAD_ADDR:#x}\n")
            # Not a byte further: the receiver's first 'C' (or NAK) right behind it is the sender's.
            _read_until(sock, b"download", 10)
            start = time.monotonic()
            done = subprocess.run([tool, "-k", "-q", str(file)], stdin=sock.fileno(), stdout=sock.fileno(),
                                  stderr=subprocess.PIPE, timeout=600, check=False)
            took = time.monotonic() - start
            if done.returncode != 0:
                raise SystemExit(f"{tool} failed ({done.returncode}): {done.stderr.decode(errors='replace')}")
            _read_until(sock, b"\n=> ", 30)
        return took

    return send


def _type(sock: socket.socket, text: str) -> None:
    # U-Boot polls a 16-byte FIFO: QEMU holds back what does not fit, so no pacing is needed here.
    sock.sendall(text.encode())


def _read_until(sock: socket.socket, needle: bytes, timeout: float) -> bytes:
    seen = b""
    sock.settimeout(timeout)
    try:
        while needle not in seen:
            chunk = sock.recv(4096)
            if not chunk:
                raise SystemExit(f"the console closed while waiting for {needle!r}")
            seen += chunk
    finally:
        sock.setblocking(True)
    return seen


def verify(session: Session, data: bytes, name: str) -> None:
    uboot = session.attach()
    crc = uboot.crc32(LOAD_ADDR, len(data))
    if crc != zlib.crc32(data):
        raise SystemExit(f"{name}: U-Boot's crc32 {crc:08x} != {zlib.crc32(data):08x}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-kib", type=int, default=512, help="the smaller payload; the larger is twice it")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()

    from cma_tool.deploy.image import default_cache_dir, ensure_image

    image = ensure_image(args.cache or default_cache_dir())
    sizes = (args.size_kib * 1024, args.size_kib * 2048)
    senders = {"ours-ymodem": ours("ymodem"), "ours-xmodem": ours("xmodem"),
               "lrzsz-sb": lrzsz("sb", "loady"), "lrzsz-sx": lrzsz("sx", "loadx")}
    times: dict[tuple[str, int], list[float]] = {}
    tftp_times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-serial-") as tmp:
        work = Path(tmp)
        tftp = work / "tftp"
        tftp.mkdir()
        kernel = plain_zimage(image.kernel.read_bytes())
        (tftp / "zImage").write_bytes(kernel)
        payloads = {}
        for size in sizes:
            # xyzModem drops a run of >= 3 trailing 0x1a (^Z) as padding: keep the last byte clear of it.
            data = random.Random(size).randbytes(size - 1) + b"\x00"
            path = work / f"payload-{size}.bin"
            path.write_bytes(data)
            payloads[size] = (data, path)
        with UBootBoard(work, tftp_dir=tftp) as board:
            session = Session(board, work)
            uboot = session.attach()
            uboot.setenv("autoload", "no")
            uboot.run_check("dhcp")
            uboot.setenv("serverip", "10.0.2.2")
            for _ in range(args.rounds):
                for name, send in senders.items():  # interleaved: the machine's noise is shared
                    for size in sizes:
                        data, path = payloads[size]
                        took = send(session, data, path)
                        print(f"  {name} {size // 1024} KiB: {took:.2f} s", file=sys.stderr, flush=True)
                        verify(session, data, name)
                        times.setdefault((name, size), []).append(took)
                uboot = session.attach()
                start = time.monotonic()
                got = uboot.tftpboot(KERNEL_ADDR, "zImage")
                tftp_times.append(time.monotonic() - start)
                if got != len(kernel) or uboot.crc32(KERNEL_ADDR, len(kernel)) != zlib.crc32(kernel):
                    raise SystemExit("tftp: the kernel arrived damaged")
            session.detach()

    small, large = sizes
    # Best of the rounds: on a shared machine the emulator loses the CPU now and then, which
    # only ever adds time; the median is printed too, to show how noisy the round was.
    print(f"payloads {small // 1024} KiB and {large // 1024} KiB, {args.rounds} round(s); "
          "times best (median) of the rounds")
    print(f"{'sender':<12} {'t(small) s':>14} {'t(large) s':>14} {'KB/s large':>10} {'KB/s steady':>11} {'fixed s':>8}")
    steady: dict[str, float | None] = {}
    whole: dict[str, float] = {}
    for name in senders:
        t1, t2 = min(times[(name, small)]), min(times[(name, large)])
        m1, m2 = statistics.median(times[(name, small)]), statistics.median(times[(name, large)])
        # Noise can still make the larger payload no slower: no steady rate then.
        rate = (large - small) / 1000 / (t2 - t1) if t2 > t1 else None
        fixed = f"{t1 - small / 1000 / rate:8.2f}" if rate else f"{'-':>8}"
        steady[name], whole[name] = rate, large / 1000 / t2
        shown = f"{rate:11.1f}" if rate else f"{'-':>11}"
        print(f"{name:<12} {t1:6.2f} ({m1:5.2f}) {t2:6.2f} ({m2:5.2f}) {whole[name]:10.1f} {shown} {fixed}")
    for proto, mine, theirs in (("YMODEM", "ours-ymodem", "lrzsz-sb"), ("XMODEM-1K", "ours-xmodem", "lrzsz-sx")):
        a, b = steady[mine], steady[theirs]
        ratio = f"{a / b:.2f}x" if a and b else "-"
        print(f"{proto}: ours/lrzsz steady {ratio}, whole {large // 1024} KiB transfer {whole[mine] / whole[theirs]:.2f}x")
    t = min(tftp_times)
    print(f"tftp kernel {len(kernel)} bytes: {t:.3f} s, {len(kernel) / 1000 / t:.0f} KB/s "
          f"({len(kernel) / 1000 / t / whole['ours-ymodem']:.0f}x our YMODEM's whole-transfer rate)")


if __name__ == "__main__":
    main()
