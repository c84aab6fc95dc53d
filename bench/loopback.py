"""The loopback OpenAI-compatible server the teacher benchmarks send to: asyncio, in its own process.

`start(latency, ...)` returns (the process, its port). Every POST is answered with one chat completion after
`latency` seconds, at most `capacity` at once (the rest queue, as on a GPU server's batch); `GET /count` returns how
many it answered. `pin` moves it to one core (the lowest), so a client measured on the other core has it to itself.
"""

from __future__ import annotations

import json
import subprocess
import sys

SERVER = r"""
import asyncio, json, os, sys
spec = json.loads(sys.argv[1])
if spec["pin"] and len(os.sched_getaffinity(0)) > 1:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
prompt, completion = spec["usage"]
BODY = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [{"index": 0,
    "finish_reason": "stop", "message": {"role": "assistant", "content": spec["content"]}}],
    "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
              "total_tokens": prompt + completion}}).encode()
served = 0
async def handle(reader, writer):
    global served
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length")), 0)
            await reader.readexactly(length)
            if head.startswith(b"GET"):
                data = str(served).encode()
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(data) + data)
            else:
                async with gate:
                    await asyncio.sleep(spec["latency"])
                served += 1
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                             b"content-length: %d\r\n\r\n" % len(BODY) + BODY)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    global gate
    gate = asyncio.Semaphore(spec["capacity"])
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def start(latency: float, capacity: int = 1_000_000, content: str = "ok", usage: tuple[int, int] = (5, 1),
          pin: bool = False) -> tuple[subprocess.Popen, int]:
    spec = {"latency": latency, "capacity": capacity, "content": content, "usage": list(usage), "pin": pin}
    proc = subprocess.Popen([sys.executable, "-c", SERVER, json.dumps(spec)], stdout=subprocess.PIPE, text=True)
    return proc, int(proc.stdout.readline())


def answered(port: int) -> int:
    """How many requests the server at `port` has answered."""
    import urllib.request

    return int(urllib.request.urlopen(f"http://127.0.0.1:{port}/count").read())
