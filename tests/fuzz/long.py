"""The long fuzz tier: N inputs per class through the real code paths, one table.

    python3 -m tests.fuzz.long [--inputs 10000] [--class board ...] [--seed 0]

Each class runs in its own process with its address space capped at
``--memory`` MiB (RLIMIT_AS), so a run that would take more fails as a
MemoryError there, and its peak resident memory is measured. The table:
class, inputs, outcomes by kind, slowest input, peak memory. Internal errors
and hangs are printed with the input that caused them (and each is a
regression test to write: tests/fuzz/test_regressions.py).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
from collections import Counter
from typing import Any

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st


def run_class(name: str, inputs: int, seed: int, memory_mib: int, queue: Any) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_mib << 20, memory_mib << 20))
    from tests.fuzz.classes import CLASSES
    from tests.fuzz.harness import judge

    cls = CLASSES[name]
    counts: Counter[str] = Counter()
    slowest = (0.0, "")
    findings: list[dict[str, str]] = []

    @settings(max_examples=inputs, deadline=None, database=None, derandomize=False,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(st.data())
    def drive(data: st.DataObject) -> None:
        nonlocal slowest
        value = data.draw(cls.strategy)
        outcome = judge(cls, value)
        counts[outcome.kind] += 1
        if outcome.seconds > slowest[0]:
            slowest = (outcome.seconds, repr(value)[:80])
        if outcome.bad and len(findings) < 20:
            findings.append({"kind": outcome.kind, "detail": outcome.detail[:300], "input": repr(value)[:500]})

    import random
    random.seed(seed)
    drive()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"class": name, "inputs": sum(counts.values()), "outcomes": dict(counts),
               "slowest_s": round(slowest[0], 3), "slowest_input": slowest[1], "peak_mib": round(peak_mib),
               "findings": findings})


def main(argv: list[str] | None = None) -> int:
    from tests.fuzz.classes import CLASSES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=int, default=10000)
    ap.add_argument("--class", dest="classes", action="append", choices=sorted(CLASSES))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--memory", type=int, default=1024, help="address-space cap per class, MiB")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows = []
    ctx = multiprocessing.get_context("fork")
    for name in args.classes or sorted(CLASSES):
        queue = ctx.Queue()
        proc = ctx.Process(target=run_class, args=(name, args.inputs, args.seed, args.memory, queue))
        proc.start()
        proc.join()
        rows.append(queue.get() if not queue.empty() else {"class": name, "inputs": 0, "outcomes": {
            "crashed": 1}, "slowest_s": 0, "slowest_input": "", "peak_mib": 0,
            "findings": [{"kind": "crash", "detail": f"the class's process exited {proc.exitcode}", "input": ""}]})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(f"{'class':10} {'inputs':>7}  {'outcomes':58} {'slowest':>8} {'peak MiB':>8}")
        for r in rows:
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted(r["outcomes"].items()))
            print(f"{r['class']:10} {r['inputs']:>7}  {outcomes:58} {r['slowest_s']:>7.2f}s {r['peak_mib']:>8}")
        for r in rows:
            for f in r["findings"]:
                print(f"\n{r['class']}: {f['kind']}: {f['detail']}\n  input: {f['input']}")
    bad = sum(r["outcomes"].get(k, 0) for r in rows for k in ("internal", "hang", "crashed"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
