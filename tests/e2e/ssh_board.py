"""The emulated board booted on its own in SSH mode, as a lab's board running Linux: what `--target ssh` is given."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cma_tool.deploy.emulated_ssh import booted_over_ssh
from cma_tool.deploy.image import default_cache_dir, ensure_image
from cma_tool.deploy.qemu import BootFiles, MemoryBank, prepare_boot
from cma_tool.generate.bootargs import kernel_cmdline
from cma_tool.generate.dts import reserved_memory_dts
from cma_tool.plan import make_plan

ROOT = Path(__file__).parents[2]


@dataclass(frozen=True)
class SshBoard:
    board_file: Path  # the emulated Aquila with an ssh: section naming this board
    env: dict[str, str]  # HOME with a known_hosts holding the board's host key, as a lab has it
    boot: BootFiles  # what the board booted (its kernel and DTB)
    workdir: Path  # its QEMU's folder


@contextmanager
def ssh_board(tmp: Path) -> Iterator[SshBoard]:
    """Boot the board (trace_event=cma:* on its command line, standing in for its own boot); yield how to reach it."""
    image = ensure_image(ssh=True)
    assert image.ssh is not None
    plan = make_plan(ROOT / "boards" / "qemu-aquila.yaml")
    board = plan.board
    workdir = tmp / "board"
    boot = prepare_boot(image, workdir, banks=[MemoryBank(b.base, b.size) for b in board.banks],
                        reserved_memory_dts=reserved_memory_dts(board, plan.profile, address_cells=2, size_cells=2),
                        bootargs=kernel_cmdline(board, plan.profile, agent="ssh").text,
                        rng_seed=secrets.token_bytes(32))
    with booted_over_ssh(boot, image=image, workdir=workdir, memory="768M", timeout=120) as sb:
        board_file = tmp / "lab-aquila.yaml"
        board_file.write_text(f"include: {ROOT / 'boards' / 'qemu-aquila.yaml'}\n"
                              f"ssh: {{host: 127.0.0.1, port: {sb.port}, user: root, key: '{image.ssh.client_key}'}}\n")
        home = tmp / "home"
        (home / ".ssh").mkdir(parents=True)
        (home / ".ssh" / "known_hosts").write_text(sb.known_hosts.read_text())
        yield SshBoard(board_file, {**os.environ, "HOME": str(home), "CMA_TOOL_CACHE": str(default_cache_dir())},
                       boot, workdir)
