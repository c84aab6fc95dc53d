"""Teacher client benchmark: how close `Teacher.chat_many` gets to ideal on a slow endpoint and on the real model.

    python bench/teacher.py [--requests 2000] [--concurrency 64] [--latency 0.2] [--skip-embedded]
                            [--embedded-requests 48] [--embedded-concurrency 16]

(a) A loopback OpenAI-compatible server (asyncio, its own process) that answers every request after a fixed latency:
    `chat_many` with `--requests` requests at `--concurrency`, against the ideal requests / concurrency * latency, and
    against a bare `asyncio.gather` flood through `openai.AsyncOpenAI` (the floor the client library sets).
(b) The embedded SmolLM2 server: completion tokens per second of `chat_many` against a bare `asyncio.gather` flood
    of the same requests through `openai.AsyncOpenAI` with the same concurrency (fresh prompts each, so nothing is
    cached).
(c) The same loopback workload through distilabel's `OpenAILLM` when distilabel is installed (peers venv).
(d) The embedded engines on the same model (SmolLM2-135M): llama-server against `transformers serve`, completion
    tokens per second of a bare flood at concurrency 1 and 16 (`--engine-requests` fresh prompts, max_tokens 128),
    one engine at a time, back to back. `--only-engines` runs just this part.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from loopback import start  # noqa: E402

PEERS_PYTHON = HERE / ".peers-venv" / "bin" / "python"  # bench/README.md says how to make it
MAKE_PEERS = ("python3 -m venv bench/.peers-venv && bench/.peers-venv/bin/pip install -r bench/requirements-peers.txt "
              "(or --peer-python PATH)")

def loopback(latency: float) -> tuple[subprocess.Popen, str]:
    proc, port = start(latency)
    return proc, f"http://127.0.0.1:{port}/v1"


def requests(n: int, tag: str, max_tokens: int = 8):
    from pipelines.teacher.wire import Request
    return [Request([{"role": "user", "content": f"{tag} {i}: name a colour."}], {"max_tokens": max_tokens})
            for i in range(n)]


def run_ours(base_url: str, model: str, reqs, concurrency: int) -> tuple[float, int]:
    from pipelines.teacher.client import Teacher
    from pipelines.teacher.config import TeacherConfig

    with tempfile.TemporaryDirectory() as tmp:
        teacher = Teacher(TeacherConfig(base_url=base_url, model=model, max_concurrency=concurrency),
                          Path(tmp) / "requests.sqlite", Path(tmp) / "server.log", log=lambda m: None)
        started = time.perf_counter()
        results = teacher.chat_many(reqs)
        seconds = time.perf_counter() - started
        teacher.close()
    assert all(r.error is None for r in results), [r.error for r in results if r.error][:3]
    return seconds, sum(r.completion_tokens for r in results)


def run_flood(base_url: str, model: str, reqs, concurrency: int) -> tuple[float, int]:
    import openai

    async def main():
        client = openai.AsyncOpenAI(base_url=base_url, api_key="EMPTY", max_retries=0, timeout=600)
        limit = asyncio.Semaphore(concurrency)

        async def one(r):
            async with limit:
                response = await client.chat.completions.create(model=model, messages=r.messages, **r.params)
                return response.usage.completion_tokens if response.usage else 0

        started = time.perf_counter()
        tokens = await asyncio.gather(*(one(r) for r in reqs))
        seconds = time.perf_counter() - started
        await client.close()
        return seconds, sum(tokens)

    return asyncio.run(main())


def run_distilabel(base_url: str, n: int, concurrency: int, python: str) -> float | str:
    code = f"""
import time
from distilabel.models.llms import OpenAILLM
llm = OpenAILLM(model="m", base_url="{base_url}", api_key="EMPTY", max_retries=0)
llm.load()
inputs = [[{{"role": "user", "content": f"d {{i}}: name a colour."}}] for i in range({n})]
started = time.perf_counter()
for i in range(0, len(inputs), {concurrency}):
    llm.generate(inputs=inputs[i:i + {concurrency}], max_new_tokens=8)
print(time.perf_counter() - started)
"""
    if shutil.which(python) is None:  # no peers venv: skipped like a missing module, with how to add it
        return f"no peers python at {python}; make it with {MAKE_PEERS}"
    proc = subprocess.run([python, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or ["failed"])[-1][:120]
    return float(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--embedded-requests", type=int, default=48)
    parser.add_argument("--embedded-concurrency", type=int, default=16)
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument("--engine-requests", type=int, default=48)
    parser.add_argument("--only-engines", action="store_true")
    parser.add_argument("--peer-python", default=str(PEERS_PYTHON),
                        help="python of the peers' virtualenv (bench/README.md says how to make it)")
    args = parser.parse_args()
    rows = []
    if args.only_engines:
        rows += compare_engines(args.engine_requests)
        return print_rows(rows)

    server, url = loopback(args.latency)
    try:
        ideal = args.requests / args.concurrency * args.latency
        seconds, _ = run_ours(url, "m", requests(args.requests, "loop"), args.concurrency)
        rows.append(("(a) loopback, fixed latency", f"{args.requests} req @ {args.concurrency}",
                     f"ideal {ideal:.2f} s", f"ours {seconds:.2f} s", f"{seconds / ideal:.3f}x ideal"))
        flood, _ = run_flood(url, "m", requests(args.requests, "bare"), args.concurrency)
        rows.append(("(a) the same through a bare openai asyncio.gather flood", f"{args.requests} req @ "
                     f"{args.concurrency}", f"ideal {ideal:.2f} s", f"flood {flood:.2f} s",
                     f"{flood / ideal:.3f}x ideal; ours {seconds / flood:.3f}x the flood"))
        peer = run_distilabel(url, args.requests, args.concurrency, args.peer_python)
        if isinstance(peer, float):
            rows.append(("(c) distilabel OpenAILLM, same loopback", f"{args.requests} req @ {args.concurrency}",
                         f"ideal {ideal:.2f} s", f"distilabel {peer:.2f} s", f"ours {peer / seconds:.2f}x faster"))
        else:
            rows.append(("(c) distilabel OpenAILLM", "-", "-", "-", f"not run: {peer}"))
    finally:
        server.terminate()

    if not args.skip_embedded:
        from pipelines.teacher.server import EmbeddedServer

        with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(Path(tmp) / "server.log", log=lambda m: None) as s:
            n, c = args.embedded_requests, args.embedded_concurrency
            run_flood(s.base_url, s.model, requests(c, "warm", 4), c)
            flood_s, flood_tokens = run_flood(s.base_url, s.model, requests(n, "flood", 64), c)
            ours_s, ours_tokens = run_ours(s.base_url, s.model, requests(n, "ours", 64), c)
            ratio = (ours_tokens / ours_s) / (flood_tokens / flood_s)
            rows.append(("(b) embedded SmolLM2, tokens/s", f"{n} req @ {c}",
                         f"gather flood {flood_tokens / flood_s:.1f} tok/s", f"ours {ours_tokens / ours_s:.1f} tok/s",
                         f"{ratio:.1%} of the flood"))

        rows += compare_engines(args.engine_requests)
    print_rows(rows)


def compare_engines(n: int) -> list[tuple]:
    """(d): tok/s of each engine at concurrency 1 and 16 on the same model and prompts."""
    from pipelines.teacher.server import EmbeddedConfig, EmbeddedServer

    speed = {}
    for engine in ("llama", "transformers"):
        config = EmbeddedConfig(engine=engine, slots=16)
        with tempfile.TemporaryDirectory() as tmp, EmbeddedServer(Path(tmp) / "server.log", log=lambda m: None,
                                                                  config=config) as s:
            run_flood(s.base_url, s.model, requests(4, "warm", 4), 4)
            for concurrency in (1, 16):
                seconds, tokens = run_flood(s.base_url, s.model, requests(n, f"{engine}{concurrency}", 128),
                                            concurrency)
                speed[engine, concurrency] = tokens / seconds
    return [(f"(d) embedded SmolLM2-135M, concurrency {c}", f"{n} req, max_tokens 128",
             f"transformers serve {speed['transformers', c]:.1f} tok/s", f"llama-server {speed['llama', c]:.1f} tok/s",
             f"{speed['llama', c] / speed['transformers', c]:.2f}x") for c in (1, 16)]


def print_rows(rows: list[tuple]) -> None:
    print("| workload | size | baseline | ours | ratio |\n|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(json.dumps({"rows": rows}))


if __name__ == "__main__":
    main()
