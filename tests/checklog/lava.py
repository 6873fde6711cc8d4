"""A console as LAVA keeps it in a job log, made the way LAVA makes it (lava_common/log.py).

LAVA writes one record per console line, ``- {"dt": ..., "lvl": "target",
"msg": ...}``, each the YAML flow mapping ``yaml.safe_dump(record,
default_flow_style=True, default_style='"', width=10**5)`` (so a control
character is a YAML escape such as ``\\e``, not JSON), around its own
records (levels info, debug, input, results). Built here from that recipe,
independently of the reader in cma_tool/checklog.py.
"""

from __future__ import annotations

import datetime

import yaml


def _dump(record: dict[str, object]) -> str:
    return "- " + yaml.safe_dump(record, default_flow_style=True, default_style='"', width=10**5)[:-1]


def lava_job_log(console: str, *, start: datetime.datetime | None = None) -> str:
    """``console`` (a console.log's text) as a LAVA job log, with LAVA's own records around it."""
    t = start or datetime.datetime(2026, 1, 4, 12, 0, 0)
    step = datetime.timedelta(milliseconds=3)
    out = [_dump({"dt": t.isoformat(), "lvl": "info", "msg": "start: 1 tftp-deploy (timeout 00:05:00) [common]"}),
           _dump({"dt": t.isoformat(), "lvl": "debug", "msg": "Using kernel zImage"}),
           _dump({"dt": t.isoformat(), "lvl": "input", "msg": "bootz 0x40008000 - 0x42000000\n"})]
    for line in console.replace("\r\n", "\n").split("\n"):
        t += step
        out.append(_dump({"dt": t.isoformat(), "lvl": "target", "msg": line.replace("\r", "")}))
    out.append(_dump({"dt": t.isoformat(), "lvl": "results",
                      "msg": {"definition": "lava", "case": "job", "result": "pass"}}))
    return "\n".join(out) + "\n"
