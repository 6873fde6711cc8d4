"""The agent's framed output: a section that arrives other than it was printed is known to be damaged.

The expected byte counts and digests are computed here with hashlib from the
text as the agent prints it, independently of the reader under test.
"""

from __future__ import annotations

import hashlib

from cma_tool.deploy.sections import split_sections
from cma_tool.observe import observe

BODY = "cma_alloc_success 4\ncma_alloc_fail 1\n"


def framed(body: str, *, declared: str | None = None) -> str:
    data = (declared if declared is not None else body).encode()
    end = f"==== CMA-TOOL END vmstat rc=0 bytes={len(data)} sha256={hashlib.sha256(data).hexdigest()} ===="
    # As a tty shows it: CR before every LF.
    return ("==== CMA-TOOL BEGIN vmstat ====\n" + body + end + "\n").replace("\n", "\r\n")


def test_an_intact_section_adds_up() -> None:
    section = split_sections(framed(BODY)).sections["vmstat"]
    assert section.text == BODY and section.rc == 0
    assert section.declared == (len(BODY), hashlib.sha256(BODY.encode()).hexdigest())
    assert section.damage is None


def test_one_byte_lost_or_changed_is_damage_not_data() -> None:
    lost = split_sections(framed(BODY.replace("success 4", "success "), declared=BODY)).sections["vmstat"]
    assert lost.damage == f"{len(BODY) - 1} bytes arrived of the {len(BODY)} the agent printed"
    changed = split_sections(framed(BODY.replace("success 4", "success 5"), declared=BODY)).sections["vmstat"]
    assert changed.damage == f"its {len(BODY)} bytes arrived changed (sha256 differs)"
    # Line noise that is not text becomes U+FFFD on decoding: more bytes than were printed.
    noise = split_sections(framed(BODY.replace("4", "\ufffd"), declared=BODY)).sections["vmstat"]
    assert noise.damage is not None


def test_a_section_without_a_declaration_cannot_be_judged() -> None:
    # An agent on a board without sha256sum (or a recording from before) says only rc=.
    text = "==== CMA-TOOL BEGIN vmstat ====\r\n" + BODY.replace("\n", "\r\n") + "==== CMA-TOOL END vmstat rc=0 ====\r\n"
    section = split_sections(text).sections["vmstat"]
    assert section.declared is None and section.damage is None and section.text == BODY


def test_the_observation_names_every_damaged_section() -> None:
    text = framed(BODY) + framed(BODY.replace("fail 1", "fail 7"), declared=BODY).replace("vmstat", "trace")
    assert observe(text).damaged == {"trace": f"its {len(BODY)} bytes arrived changed (sha256 differs)"}
