"""Eval throughput: `pipelines.eval`'s generation (GSM8K items through `Teacher.chat_many`, a fresh request cache)
against a bare `asyncio.gather` flood of the same requests through `openai.AsyncOpenAI`, on one embedded SmolLM2
server, at the same concurrency.

    python bench/eval.py [--items 16] [--concurrency 4]

Two halves of the items, run in the order flood A, eval A, eval B, flood B (so llama-server's prompt cache and the
machine's warm-up favour neither), completion tokens per second summed over both halves. Target: eval >= 0.9x flood.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.eval.suites import gsm8k  # noqa: E402
from pipelines.teacher.client import Teacher  # noqa: E402
from pipelines.teacher.config import TeacherConfig  # noqa: E402
from pipelines.teacher.wire import Request  # noqa: E402
from pipelines.teacher.server import EmbeddedConfig, EmbeddedServer  # noqa: E402


def flood(server: EmbeddedServer, requests: list[Request], concurrency: int) -> tuple[int, float]:
    from openai import AsyncOpenAI

    async def run() -> int:
        client = AsyncOpenAI(base_url=server.base_url, api_key="none", max_retries=0)
        gate = asyncio.Semaphore(concurrency)

        async def one(request: Request) -> int:
            async with gate:
                answer = await client.chat.completions.create(model=server.model, messages=request.messages,
                                                              **request.params)
                return answer.usage.completion_tokens

        tokens = sum(await asyncio.gather(*(one(r) for r in requests)))
        await client.close()
        return tokens

    started = time.perf_counter()
    tokens = asyncio.run(run())
    return tokens, time.perf_counter() - started


def ours(server: EmbeddedServer, requests: list[Request], concurrency: int) -> tuple[int, float]:
    work = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    teacher = Teacher(TeacherConfig(base_url=server.base_url, model=server.model, max_concurrency=concurrency,
                                    reasks=0), work / "requests.sqlite", work / "server.log", log=lambda m: None)
    started = time.perf_counter()
    try:
        results = teacher.chat_many(requests, "eval")
    finally:
        teacher.close()
    return sum(r.completion_tokens for r in results), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", type=int, default=16)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    items = gsm8k.items(args.items)
    requests = [Request([{"role": "user", "content": gsm8k.ASK.format(question=i["question"])}], gsm8k.PARAMS)
                for i in items]
    half = len(requests) // 2
    a, b = requests[:half], requests[half:]
    server = EmbeddedServer(Path(tempfile.mkdtemp()) / "server.log", log=lambda m: None,
                            config=EmbeddedConfig(engine="llama", slots=args.concurrency)).start()
    totals = {"flood": [0, 0.0], "eval": [0, 0.0]}
    try:
        for who, part in (("flood", a), ("eval", a), ("eval", b), ("flood", b)):
            tokens, seconds = (flood if who == "flood" else ours)(server, part, args.concurrency)
            totals[who][0] += tokens
            totals[who][1] += seconds
    finally:
        server.stop()
    print(f"| path | completion tokens | seconds | tokens/s |  ({len(requests)} GSM8K items, SmolLM2-135M, "
          f"concurrency {args.concurrency})")
    print("|---|---|---|---|")
    for who, (tokens, seconds) in totals.items():
        print(f"| {who} | {tokens:,} | {seconds:.1f} | {tokens / seconds:.1f} |")
    ratio = (totals["eval"][0] / totals["eval"][1]) / (totals["flood"][0] / totals["flood"][1])
    print(f"\neval throughput: {ratio:.2f}x the bare flood (target >= 0.9)")


if __name__ == "__main__":
    main()
