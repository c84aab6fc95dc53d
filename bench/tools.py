"""Tool sandbox overhead: what running a call in the sandbox costs over calling the function in this process.

    python bench/tools.py [--calls 1000]

For each shipped tools file: a worker's start (process, limits, audit hook, importing the tools file), then the
per-call latency of `--calls` calls through one worker (p50, p95), against the same function called directly here,
and the worker's resident memory before and after the calls (a leak would grow it).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CALLS = {
    "math_units": ("calculate", lambda i: {"expression": f"({i} + 4) * 2.5"}),
    "dates": ("add_days", lambda i: {"date": "2024-02-28", "days": i}),
    "countries": ("country_facts", lambda i: {"country": "Kenya"}),
    "shop": ("query_shop", lambda i: {"sql": f"SELECT name FROM products WHERE price > {i % 200}"}),
    "text": ("count_text", lambda i: {"text": "One two. Three four five! " * (1 + i % 20)}),
}


def rss_kb(pid: int) -> int:
    return int(Path(f"/proc/{pid}/status").read_text().split("VmRSS:")[1].split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()
    from pipelines.tools import library_files
    from pipelines.tools.sandbox import Limits, Sandbox, can_unshare

    print(f"network namespace per worker: {'yes (unshare)' if can_unshare() else 'no (audit hook only)'}")
    print("| tools | worker start ms | sandboxed call p50 ms | p95 ms | direct call p50 ms | overhead p50 ms | "
          "worker RSS before -> after calls (MB) | failed |")
    print("|---|---|---|---|---|---|---|---|")
    for domain, path in library_files().items():
        name, make = CALLS[domain]
        spec = importlib.util.spec_from_file_location(f"direct_{domain}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        direct = []
        for i in range(args.calls):
            started = time.perf_counter()
            getattr(module, name)(**make(i))
            direct.append(time.perf_counter() - started)
        with Sandbox(path, Limits(max_calls=args.calls)) as box:
            started = time.perf_counter()
            box.describe()
            start_ms = (time.perf_counter() - started) * 1000
            before = rss_kb(box.process.pid)
            outcomes = box.run([(name, make(i)) for i in range(args.calls)])
            after = rss_kb(box.process.pid)
        sandboxed = sorted(o.seconds for o in outcomes)
        p50, p95 = statistics.median(sandboxed) * 1000, sandboxed[int(0.95 * len(sandboxed))] * 1000
        d50 = statistics.median(direct) * 1000
        print(f"| {domain} | {start_ms:.0f} | {p50:.3f} | {p95:.3f} | {d50:.3f} | {p50 - d50:.3f} | "
              f"{before / 1024:.1f} -> {after / 1024:.1f} | {sum(not o.ok for o in outcomes)} |")


if __name__ == "__main__":
    main()
