"""A rack: two emulated boards and a bench board as three labgrid places, run side by side.

The lab is real labgrid (coordinator, exporter) on 127.0.0.1. The bench
board is the pty simulator behind ser2net (tests/sim); the two emulated
boards are QEMU virt with real U-Boot as a rack has them (tests/labs/
qemu_bench.py): console socket, power by QMP, QEMU's TFTP server as the
lab's TFTPProvider, Debian's armmp kernel and the machine's own DTB given
as a bench board's are. Every board's events are the emulated Aquila's
direct boot's, worked out by hand in tests/e2e/expect.py: the rack board's
one 768 MiB bank places the default area where the two-bank Aquila does
(top-down in alloc-ranges 0x50000000-0x68000000: pfn 0x64000).
"""

from __future__ import annotations

import getpass
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from cma_tool.deploy.image import ensure_image
from tests.e2e.expect import assert_aquila_1080p_events, assert_same_artefacts
from tests.labs.lab import PLACE, Lab, Place, sim_place
from tests.labs.qemu_bench import QemuBench
from tests.sim import RECORDED_RUN, SimBoard, write_sim_aquila, zimage
from tests.watching import wait_for_stage

ROOT = Path(__file__).parents[2]
RACK_BOARD = ROOT / "tests" / "labs" / "data" / "qemu-rack.yaml"
pytestmark = [pytest.mark.slow, pytest.mark.emulated]


def qemu_place(name: str, bench: QemuBench) -> Place:
    console = {"cls": "NetworkSerialPort", "host": "127.0.0.1", "port": bench.port, "speed": 115200,
               "protocol": "raw"}
    return Place(name, console, bench.power_commands(), tftp=bench.tftp_dir)


def started(lab: Lab, argv: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "cma_tool", "run", *argv, "--coordinator", lab.address],
                            cwd=ROOT, env=lab.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def report(out: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / "report.json").read_text())
    return data


def span(rep: dict[str, Any]) -> tuple[float, float]:
    begin = time.mktime(time.strptime(rep["started"][:19], "%Y-%m-%dT%H:%M:%S")) + float(rep["started"][19:-1])
    return begin, begin + float(rep["seconds"])


def test_two_emulated_boards_and_a_bench_board_run_side_by_side_as_three_places(tmp_path: Path) -> None:
    kernel = ensure_image(None).kernel  # Debian's armmp zImage: what the rack's emulated boards boot
    fake_kernel = tmp_path / "zImage"  # the simulator plays back a recorded boot whatever it is given
    fake_kernel.write_bytes(zimage(500_000, seed=5))
    with (SimBoard(tmp_path / "sim", relay=True, kernel_log=RECORDED_RUN / "console.log") as sim,
          QemuBench(tmp_path / "q1") as q1, QemuBench(tmp_path / "q2") as q2):
        dtb = q1.dump_dtb(tmp_path / "virt.dtb")  # the machine's own DTB, as a lab keeps it for a board
        sim_board = write_sim_aquila(tmp_path, sim, board_ip=None)
        with Lab(tmp_path / "lab", sim_place(sim), qemu_place("qemu-rack-1", q1), qemu_place("qemu-rack-2", q2)) \
                as lab:
            outs = {name: tmp_path / name for name in (PLACE, "qemu-rack-1", "qemu-rack-2")}
            procs = {
                PLACE: started(lab, [str(sim_board), "--target", "labgrid", "--place", PLACE,
                                     "--kernel", str(fake_kernel), "--out", str(outs[PLACE])]),
                # The first rack board's place comes from its board file's lab: section, and so does the target.
                "qemu-rack-1": started(lab, [str(RACK_BOARD), "--kernel", str(kernel), "--dtb", str(dtb),
                                             "--out", str(outs["qemu-rack-1"])]),
                "qemu-rack-2": started(lab, [str(RACK_BOARD), "--place", "qemu-rack-2", "--kernel", str(kernel),
                                             "--dtb", str(dtb), "--out", str(outs["qemu-rack-2"])]),
            }
            assert wait_for_stage(outs["qemu-rack-1"], "place", procs["qemu-rack-1"])
            me = f"{socket.gethostname()}/{getpass.getuser()}"
            assert lab.holder("qemu-rack-1") == me
            # Another labgrid user, and another cma-tool run, are both refused the place while it is in use.
            bob = lab.client("-p", "qemu-rack-1", "acquire", user="bob")
            assert bob.returncode != 0 and "acquired" in bob.stderr, bob
            second = started(lab, [str(RACK_BOARD), "--kernel", str(kernel), "--dtb", str(dtb),
                                   "--out", str(tmp_path / "second")])
            _, err = second.communicate(timeout=120)
            assert second.returncode == 3, err
            # On this host the run's own board lock says so first (naming the run that holds it); from
            # another host, labgrid's place lock would (test_labgrid.py: "is acquired by").
            refusal = report(tmp_path / "second")["message"]
            assert "qemu-rack-1 is locked: a run (pid" in refusal, refusal

            results = {name: proc.communicate(timeout=600) for name, proc in procs.items()}
            for name, proc in procs.items():
                assert proc.returncode == 0, (name, results[name])
            reps = {name: assert_same_artefacts(out) for name, out in outs.items()}
            for name, rep in reps.items():
                assert (rep["target"], rep["boot"]) == ("labgrid", "uboot"), name
                assert_aquila_1080p_events(rep)
                place = next(s for s in rep["stages"] if s["stage"] == "place")
                assert place["place"] == name
            # The rack boards fetched their files from the lab's TFTP server (the place's TFTPProvider).
            for name, bench in (("qemu-rack-1", q1), ("qemu-rack-2", q2)):
                place = next(s for s in reps[name]["stages"] if s["stage"] == "place")
                assert place["tftp"] == str(bench.tftp_dir) + "/" or place["tftp"] == str(bench.tftp_dir)
                assert "TFTP from server 10.0.2.2" in (outs[name] / "console.log").read_text(errors="replace")
            # Side by side: at one moment all three were running.
            spans = [span(rep) for rep in reps.values()]
            assert max(b for b, _ in spans) < min(e for _, e in spans), spans
            # Every place is free again and every board switched off.
            assert [lab.holder(name) for name in outs] == ["None"] * 3
            assert (q1.state(), q2.state(), sim.relay_state()) == ("off", "off", "off")
