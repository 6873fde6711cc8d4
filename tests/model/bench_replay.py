"""Replay speed of the allocator: events per second on a 1 GiB area at order_per_bit 0.

    python -m tests.model.bench_replay [--seconds N]

Prints numbers, asserts nothing. The workload mixes capture-sized buffers
(align 8) with small unaligned allocations and frees a random live one half
of the time, so the bitmap fragments the way a long run does.
"""

from __future__ import annotations

import argparse
import random
import time

from cma_tool.model import PROFILES, CmaArea, CmaState

GiB = 1 << 30


def run(seconds: float, seed: int) -> tuple[int, float, float, int]:
    profile = PROFILES["linux-6.1"]
    base_pfn = 0x40000
    area = CmaArea("bench", base_pfn << 12, GiB, base_pfn, GiB >> 12, 0, "kconfig", 0)
    state = CmaState(profile, (area,))
    rng = random.Random(seed)
    sizes = [(1013, 8), (338, 8), (150, 8), (64, 6), (1, 0), (16, 4), (4096, 8)]
    live: list[tuple[int, int]] = []
    events = 0
    calls = 0
    start = time.perf_counter()
    cpu_start = time.process_time()
    deadline = start + seconds
    while True:
        for _ in range(1000):
            if live and (rng.random() < 0.5 or len(live) > 600):
                pfn, count = live.pop(rng.randrange(len(live)))
                events += len(state.release("bench", pfn, count).events)
            else:
                count, align = sizes[rng.randrange(len(sizes))]
                got = state.alloc("bench", count, align)
                events += len(got.events)
                if got.pfn is not None:
                    live.append((got.pfn, count))
            calls += 1
        if time.perf_counter() >= deadline:
            break
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    return events, elapsed, cpu, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    events, elapsed, cpu, calls = run(args.seconds, args.seed)
    print(f"area 1 GiB, order_per_bit 0, {calls} calls, {events} events in {elapsed:.2f} s wall, {cpu:.2f} s CPU")
    print(f"{events / elapsed:,.0f} events/s wall, {events / cpu:,.0f} events/s CPU  ({calls / cpu:,.0f} calls/s CPU)")
    print("(wall time counts other processes on a shared machine; CPU time is this process alone)")


if __name__ == "__main__":
    main()
