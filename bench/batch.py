"""A 20,000-request stage through a loopback server speaking OpenAI's Files and Batch APIs, against the same stage
sent online to the same server.

    python bench/batch.py [--requests 20000] [--per-batch 5000]

The batch run meets what providers do: of its four first batches one expires half done and one answers a third of
its lines with a 400; what the expired batch left is submitted again. Prices are gpt-4o's (2.50 / 10.00 per million
tokens) at the default batch discount of 0.5. Prints wall time, batches, requests resubmitted, rows dropped by a
per-request error, and cost batch vs online.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from batch_server import BatchServer  # noqa: E402
from pipelines.teacher.client import Teacher  # noqa: E402
from pipelines.teacher.config import TeacherConfig  # noqa: E402
from pipelines.teacher.wire import Request  # noqa: E402

PRICES = {"price_in": 2.5, "price_out": 10.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--per-batch", type=int, default=5_000)
    args = parser.parse_args()
    requests = [Request([{"role": "system", "content": "Answer briefly."},
                         {"role": "user", "content": f"Write one sentence about topic number {i}."}],
                        {"max_tokens": 64, "temperature": 0.7, "seed": i}) for i in range(args.requests)]
    rows = []
    for mode in ("batch", "online"):
        server = BatchServer(outcomes=["completed", "expired", "partial", "completed"])
        threading.Thread(target=server.serve_forever, daemon=True).start()
        folder = Path(tempfile.mkdtemp(prefix=f"bench-batch-{mode}-"))
        config = TeacherConfig(base_url=server.url, model="gpt-4o", mode=mode, max_concurrency=64,
                               batch_max_requests=args.per_batch, batch_poll_s=0.2, batch_poll_max_s=1.0, **PRICES)
        client = Teacher(config, folder / "requests.sqlite", folder / "server.log", log=lambda m: None)
        started = time.perf_counter()
        results = client.chat_many(requests, desc=f"bench {mode}")
        seconds = time.perf_counter() - started
        client.close()
        server.shutdown()
        stats = client.stats
        rows.append((mode, seconds, stats["batches"], stats["batch_resubmitted"], sum(r.error is not None
                                                                                     for r in results),
                     stats["cost"], stats.get("cost_online", stats["cost"]), server.batch_sizes))
    print(f"{args.requests:,} requests, batches of at most {args.per_batch:,}; the batch server expires one batch "
          f"half done and answers a third of another's lines with a 400")
    print("| mode | seconds | batches | requests resubmitted | rows dropped (per-request errors) | cost | "
          "cost online |")
    print("|---|---|---|---|---|---|---|")
    for mode, seconds, batches, resubmitted, dropped, cost, online, _ in rows:
        print(f"| {mode} | {seconds:.1f} | {batches} | {resubmitted:,} | {dropped:,} | {cost:.4f} | {online:.4f} |")
    print(f"\nbatch sizes: {rows[0][7]}; batch cost / online cost: {rows[0][5] / rows[1][5]:.2f}")


if __name__ == "__main__":
    main()
