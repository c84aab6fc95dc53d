"""Client CPU cost: process CPU seconds per request of `Teacher.chat_many`, against a bare openai flood and a raw
httpx flood of the same requests, then where the teacher's CPU goes.

    python bench/client_cost.py [--requests 5000] [--concurrency 64] [--latency 0.002] [--repeat 3] [--no-profile]

A loopback server (asyncio, its own process, pinned to core 0, answering after `--latency`) answers every request;
the client runs in this process, pinned to the other core, so the server is not the bottleneck (its CPU is shown as
a share of the wall time). Each row: CPU per request of this process (`time.process_time`: every thread, user and
system, including loop and client setup), wall requests/s, the best of `--repeat` runs (the machine is shared).
Every prompt is unique, so nothing is a cache hit; each Teacher run has a fresh cache. Then cProfile of the Teacher
in calls of 64 (as a stage asks) splits its CPU by where it goes; cProfile inflates code of many small Python calls
(the openai client, httpx) against C (sqlite, orjson), so the cache's cost is also measured alone.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))
from loopback import start  # noqa: E402

SCHEMA = {"type": "object", "properties": {"colour": {"type": "string"}}, "required": ["colour"],
          "additionalProperties": False}
def server_cpu(pid: int) -> float:
    """CPU seconds a running process has used (utime + stime from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def requests(n: int, tag: str, structured: bool):
    from pipelines.teacher.wire import Request
    return [Request([{"role": "user", "content": f"{tag} {i}: name a colour, as JSON."}], {"max_tokens": 16},
                    schema=SCHEMA if structured else None) for i in range(n)]


def body_of(request) -> dict:
    """The JSON body every contender posts (the teacher's own: response_format for a schema)."""
    body = {"model": "m", "messages": request.messages, **request.params}
    if request.schema:
        body["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": request.schema}}
    return body


def teacher(url: str, concurrency: int, batch: int):
    """`chat_many` in calls of `batch` requests (0: one call), on a fresh cache."""
    from pipelines.teacher.client import Teacher
    from pipelines.teacher.config import TeacherConfig

    def run(reqs):
        with tempfile.TemporaryDirectory() as tmp:
            t = Teacher(TeacherConfig(base_url=url, model="m", max_concurrency=concurrency),
                        Path(tmp) / "requests.sqlite", Path(tmp) / "server.log", log=lambda m: None)
            step = batch or len(reqs)
            results = [r for i in range(0, len(reqs), step) for r in t.chat_many(reqs[i:i + step])]
            t.close()
        assert all(r.error is None for r in results), [r.error for r in results if r.error][:3]
    return run


def openai_flood(url: str, concurrency: int, parsed: bool):
    """`asyncio.gather` under a semaphore: `chat.completions.create` (pydantic models), or `client.post` to a raw
    response parsed by orjson (the transport the teacher uses)."""
    import openai
    import orjson

    from pipelines.teacher.client import httpx

    def run(reqs):
        async def main():
            client = openai.AsyncOpenAI(base_url=url, api_key="EMPTY", max_retries=0, timeout=600)
            limit = asyncio.Semaphore(concurrency)

            async def one(r):
                async with limit:
                    if parsed:
                        extra = {"response_format": body_of(r)["response_format"]} if r.schema else {}
                        answer = await client.chat.completions.create(model="m", messages=r.messages, **r.params,
                                                                      **extra)
                        return answer.choices[0].message.content
                    raw = await client.post("/chat/completions", body=body_of(r), cast_to=httpx.Response)
                    return orjson.loads(raw.content)["choices"][0]["message"]["content"]

            await asyncio.gather(*(one(r) for r in reqs))
            await client.close()
        asyncio.run(main())
    return run


def httpx_flood(url: str, concurrency: int):
    """The floor of HTTP in Python here: one `httpx.AsyncClient`, orjson both ways."""
    import orjson

    from pipelines.teacher.client import httpx

    def run(reqs):
        async def main():
            limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
            async with httpx.AsyncClient(base_url=url, limits=limits, timeout=600) as client:
                limit = asyncio.Semaphore(concurrency)

                async def one(r):
                    async with limit:
                        raw = await client.post("/chat/completions", content=orjson.dumps(body_of(r)),
                                                headers={"content-type": "application/json"})
                        return orjson.loads(raw.content)["choices"][0]["message"]["content"]

                await asyncio.gather(*(one(r) for r in reqs))
        asyncio.run(main())
    return run


def cache_alone(n: int):
    """The cache's work for `n` unique answers without any HTTP: key, miss, put (one commit each)."""
    from pipelines.teacher.cache import RequestCache, request_key

    def run(reqs):
        answer = {"text": '{"colour": "teal"}', "finish_reason": "stop", "prompt_tokens": 12, "completion_tokens": 6,
                  "cost": 0.0}
        with tempfile.TemporaryDirectory() as tmp:
            cache = RequestCache(Path(tmp) / "requests.sqlite")
            for r in reqs:
                key = request_key("m", "http://x/v1", r.messages, r.params)
                assert cache.get(key) is None
                cache.put(key, "m", {"messages": r.messages, **r.params}, answer, "http://x/v1", 0.0)
            cache.close()
    return run


def measure(run, reqs, repeat: int, server_pid: int | None) -> tuple[float, float, float]:
    """Best of `repeat`: (CPU µs per request, requests per second, server CPU as a share of the wall time)."""
    best = None
    for _ in range(repeat):
        server0 = server_cpu(server_pid) if server_pid else 0.0
        cpu0, wall0 = time.process_time(), time.perf_counter()
        run(reqs)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        busy = (server_cpu(server_pid) - server0) / wall if server_pid else 0.0
        if best is None or cpu < best[0]:
            best = (cpu, wall, busy)
    cpu, wall, busy = best
    return cpu / len(reqs) * 1e6, len(reqs) / wall, busy


# where the teacher's CPU goes: (share, whether it runs inside `Teacher.answer`, how its functions are recognised);
# a share is the cumulative time of its functions, and the rest of `answer` is ours too
SHARES = [
    ("openai client + httpx (client.post)", True, lambda f, n: f.endswith("openai/_base_client.py") and n == "post"),
    ("cache get (miss)", True, lambda f, n: f.endswith("teacher/cache.py") and n == "get"),
    ("cache put (json dumps, insert, commit)", True, lambda f, n: f.endswith("teacher/cache.py") and n == "put"),
    ("request_key (json dumps + sha256)", True, lambda f, n: n == "request_key"),
    ("jsonschema check", True, lambda f, n: f.endswith("teacher/structured.py") and n == "check"),
    ("parse_json", True, lambda f, n: f.endswith("teacher/structured.py") and n == "parse_json"),
    ("orjson.loads of the body", True, lambda f, n: "orjson.loads" in n),
    ("making the openai clients (Teacher._client)", True, lambda f, n: f.endswith("teacher/client.py")
     and n == "_client"),
    ("closing the openai clients", False, lambda f, n: f.endswith("openai/_base_client.py") and n == "close"),
    ("progress bars (rich)", False, lambda f, n: f.endswith("core/progress.py") and n in ("add", "advance", "remove")),
]


def profile(run, reqs) -> list[tuple[str, float]]:
    """Shares of the profiled CPU: the named ones, the rest of our client code, and asyncio and the rest."""
    profiler = cProfile.Profile()
    profiler.runcall(run, reqs)
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (calls, primitive calls, tottime, cumtime, callers)
    total = sum(tt for _, _, tt, _, _ in stats.values())
    shares = {name: sum(cum for (file, _, func), (_, _, _, cum, _) in stats.items() if test(file, func))
              for name, _, test in SHARES}
    answer = sum(cum for (file, _, func), (_, _, _, cum, _) in stats.items()
                 if file.endswith("teacher/client.py") and func == "answer")
    shares["the rest of Teacher.answer (_complete, _post, limits, stats)"] = \
        answer - sum(shares[name] for name, inside, _ in SHARES if inside)
    shares["asyncio, loop, everything else"] = total - sum(shares.values())
    return [(name, seconds / total) for name, seconds in shares.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency", type=float, default=0.002)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-profile", action="store_true")
    args = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    server, port = start(args.latency, content='{"colour": "teal"}', usage=(12, 6), pin=True)
    if len(cores) > 1:
        os.sched_setaffinity(0, set(cores[1:]))
    url = f"http://127.0.0.1:{port}/v1"
    n, c = args.requests, args.concurrency
    contenders = [
        ("bare openai flood: chat.completions.create", openai_flood(url, c, True), False),
        ("openai client.post(cast_to=httpx.Response) + orjson flood", openai_flood(url, c, False), False),
        ("raw httpx.AsyncClient + orjson flood", httpx_flood(url, c), False),
        ("Teacher.chat_many, one call", teacher(url, c, 0), False),
        ("Teacher.chat_many, calls of 64", teacher(url, c, 64), False),
        ("bare openai flood, structured (response_format)", openai_flood(url, c, True), True),
        ("Teacher.chat_many, structured (schema), calls of 64", teacher(url, c, 64), True),
    ]
    rows = []
    try:
        for name, run, structured in contenders:  # warm up imports, pools and caches outside the measurement
            run(requests(64, "warm", structured))
        for k, (name, run, structured) in enumerate(contenders):
            rows.append((name, *measure(run, requests(n, f"r{k}", structured), args.repeat, server.pid)))
        shares = [] if args.no_profile else [profile(teacher(url, c, 64), requests(n, f"profile{s}", s))
                                             for s in (False, True)]
    finally:
        server.terminate()
    base = {False: rows[0][1], True: rows[5][1]}
    print(f"{n} requests @ {c}, server latency {args.latency * 1000:g} ms, best of {args.repeat}; cores {cores}\n")
    print("| client | CPU µs / request | requests / s | vs bare openai CPU | server CPU / wall |\n"
          "|---|---|---|---|---|")
    for (name, cpu, rate, busy), (_, _, structured) in zip(rows, contenders):
        print(f"| {name} | {cpu:,.0f} | {rate:,.0f} | {cpu / base[structured]:.2f}x | {busy:.0%} |")
    cache_us, _, _ = measure(cache_alone(n), requests(n, "cache", False), args.repeat, None)
    print(f"| the cache alone: request_key + get (miss) + put per answer, no HTTP | {cache_us:,.0f} | - | "
          f"{cache_us / base[False]:.2f}x | - |")
    if shares:
        print("\nWhere the CPU of `Teacher.chat_many` in calls of 64 goes (cProfile):\n\n"
              "| part | plain | structured |\n|---|---|---|")
        for (name, plain), (_, structured) in zip(*shares):
            print(f"| {name} | {plain:.1%} | {structured:.1%} |")


if __name__ == "__main__":
    main()
