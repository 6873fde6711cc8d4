"""The simulated board's power relay, as a lab's relay tool: ``power_switch.py SOCKET STATE on|off|state``.

``on``/``off`` ask the simulator's relay socket (board.py ``--power-socket``)
and return once the board has switched, then write the state file, the way
a relay's read-back follows its contact. ``state`` prints the state file
("off" when there is none: a relay starts open). A simulator that is not
there is a relay that does not answer: exit status 1 and a message.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path


def switch(sock_path: str, word: str) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(10)
        conn.connect(sock_path)
        conn.sendall(word.encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            got = conn.recv(64)
            if not got:
                break
            answer += got
    return answer.decode(errors="replace").strip()


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[2] not in ("on", "off", "state"):
        print("usage: power_switch.py SOCKET STATE-FILE on|off|state", file=sys.stderr)
        return 2
    sock_path, state_path, word = argv
    state = Path(state_path)
    if word == "state":
        print(state.read_text().strip() if state.exists() else "off")
        return 0
    try:
        answer = switch(sock_path, word)
    except OSError as exc:
        print(f"relay at {sock_path} does not answer: {exc}", file=sys.stderr)
        return 1
    if answer != "ok":
        print(f"relay at {sock_path} said {answer!r}", file=sys.stderr)
        return 1
    tmp = state.with_name(state.name + ".new")
    tmp.write_text(word + "\n")
    tmp.replace(state)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
