"""`cma-tool import` on damaged DTBs: every outcome is a board file or a clear error, never a crash.

The input is a real tree (linux-source-6.1's Galaxy S DTB when the tree is
there, else a small one compiled here with dtc) with bytes changed, cut or
repeated, read in process the way the command reads it.
"""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

from cma_tool.errors import CmaToolError
from cma_tool.importdt import board_yaml, read_tree
from cma_tool.plan import load_checked_board

from .conftest import need

SMALL = """/dts-v1/;
/ {
	model = "Damage \\"test\\" board";
	compatible = "vendor,board", "vendor,soc";
	#address-cells = <1>;
	#size-cells = <1>;
	aliases { serial0 = &uart0; };
	chosen { stdout-path = "serial0:115200n8"; bootargs = "console=ttySAC0,115200 root=/dev/mmcblk0p2 rootwait"; };
	memory@40000000 { device_type = "memory"; reg = <0x40000000 0x10000000>, <0x60000000 0x10000000>; };
	reserved-memory {
		#address-cells = <1>;
		#size-cells = <1>;
		ranges;
		pool: pool@48000000 { compatible = "shared-dma-pool"; reusable; reg = <0x48000000 0x800000>; };
		linux,cma { compatible = "shared-dma-pool"; reusable; size = <0x1000000>;
			alloc-ranges = <0x60000000 0x10000000>; linux,cma-default; };
		ramoops@4f000000 { compatible = "ramoops"; reg = <0x4f000000 0x100000>; };
	};
	uart0: serial@e2900000 { compatible = "samsung,s5pv210-uart"; reg = <0xe2900000 0x100>; };
	codec: codec@f1700000 { compatible = "samsung,mfc-v5"; reg = <0xf1700000 0x10000>;
		memory-region = <&pool>; memory-region-names = "left"; };
};
"""


def _damaged(blob: bytes, rng: random.Random) -> bytes:
    data = bytearray(blob)
    kind = rng.randrange(4)
    if kind == 0:  # bytes changed
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 1:  # cut
        del data[rng.randrange(len(data)):]
    elif kind == 2:  # a run repeated
        at = rng.randrange(len(data))
        data[at:at] = data[at:at + rng.randint(1, 64)]
    else:  # a 32-bit field set to an edge value
        at = rng.randrange(0, len(data) - 4, 4)
        data[at:at + 4] = rng.choice([b"\0\0\0\0", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\0\0\0\x03"])
    return bytes(data)


def test_damaged_dtbs_give_a_board_or_a_clear_error(tmp_path: Path) -> None:
    dtc = need("dtc")
    blob = subprocess.run([dtc, "-q", "-@", "-I", "dts", "-O", "dtb", "-"], input=SMALL.encode(), check=True,
                          capture_output=True, timeout=60).stdout
    # the undamaged one imports and validates: the damage is what is tested below
    view, how = read_tree(_write(tmp_path / "good.dtb", blob))
    good = tmp_path / "good.yaml"
    good.write_text(board_yaml(view, name="board", read_as=how, profile="linux-6.1", max_order=11))
    result = load_checked_board(good)
    assert [str(d) for d in result.diagnostics if d.severity == "error"] == []
    rng = random.Random(12)
    outcomes = {"board": 0, "error": 0}
    for i in range(300):
        path = _write(tmp_path / f"d{i}.dtb", _damaged(blob, rng))
        try:
            view, how = read_tree(path)
            text = board_yaml(view, name="board", read_as=how, profile="linux-6.1", max_order=11)
        except CmaToolError as err:
            assert str(err)
            outcomes["error"] += 1
            continue
        out = tmp_path / f"d{i}.yaml"
        out.write_text(text)
        load_checked_board(out)  # what it wrote may be refused, but only with diagnostics
        outcomes["board"] += 1
    assert outcomes["board"] and outcomes["error"], outcomes


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
