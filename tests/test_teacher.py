"""Teacher client against a real HTTP server on loopback that misbehaves on purpose.

The fault server is a fake only for faults the real embedded server cannot be made to produce (429s, 5xx, slow and
dropped responses, malformed bodies); each test starts it on 127.0.0.1 and the client talks HTTP to it.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pipelines.core.errors import TeacherError
from pipelines.teacher.cache import RequestCache
from pipelines.teacher.client import Teacher
from pipelines.teacher.config import TeacherConfig
from pipelines.teacher.limits import header_wait
from pipelines.teacher.wire import Request

class FaultServer(ThreadingHTTPServer):
    """Answers `echo <prompt>`; `script` gives the first behaviours in order, then `rates` draws one per request."""

    daemon_threads = True

    def __init__(self, script=(), rates=None, seed=0, timeout_s=1.0, usage=True, answer=None, headers=None):
        super().__init__(("127.0.0.1", 0), Handler)
        self.script, self.rates, self.rng = list(script), rates or {}, random.Random(seed)
        self.timeout_s, self.usage, self.answer, self.extra_headers = timeout_s, usage, answer, headers or {}
        self.hits: list[tuple[float, str, str]] = []  # (time, prompt, behaviour)
        self.delivered: Counter = Counter()  # prompt -> answers sent in full
        self.bodies: list[dict] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        self.limit_in_flight: int | None = None
        self.delay = 0.0  # seconds before each good answer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def behaviour(self) -> str:
        if self.script:
            return self.script.pop(0)
        draw = self.rng.random()
        for name, rate in self.rates.items():
            draw -= rate
            if draw < 0:
                return name
        return "ok"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        server = self.server
        if server.socket.fileno() == -1:  # closed: a server that is down answers no open connection either
            self.close_connection = True
            return
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        prompt = body["messages"][-1]["content"]
        with server.lock:
            server.in_flight += 1
            server.max_in_flight = max(server.max_in_flight, server.in_flight)
            what = server.behaviour()
            if server.limit_in_flight and server.in_flight > server.limit_in_flight:
                what = "429"
            server.hits.append((time.monotonic(), prompt, what))
            server.bodies.append(body)
        try:
            self._respond(server, body, prompt, what)
        finally:
            with server.lock:
                server.in_flight -= 1

    def _respond(self, server, body, prompt, what):
        if what == "drop":
            self.close_connection = True
            self.connection.close()
            return
        if what == "slow":
            time.sleep(server.timeout_s + 0.5)
        elif what == "ok":
            time.sleep(server.delay)
        if what in ("400", "429", "500", "503"):
            return self._send(int(what), {"error": {"message": f"status {what}", "type": "test"}},
                              {"retry-after": "1"} if what == "429" else {})
        if what == "malformed":
            return self._send(200, b'{"id": "x", "choices": [', {})
        content = server.answer(body) if server.answer else "echo " + prompt
        payload = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                   "choices": [{"index": 0, "finish_reason": "stop",
                                "message": {"role": "assistant", "content": content}}]}
        if server.usage:  # True: 3 + 2 tokens; or (prompt, completion) tokens
            tokens_in, tokens_out = server.usage if isinstance(server.usage, tuple) else (3, 2)
            payload["usage"] = {"prompt_tokens": tokens_in, "completion_tokens": tokens_out,
                                "total_tokens": tokens_in + tokens_out}
        if self._send(200, payload, server.extra_headers) and what == "ok":
            with server.lock:
                server.delivered[prompt] += 1

    def _send(self, status, payload, headers) -> bool:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
            return True
        except OSError:
            return False

    def log_message(self, *args):
        pass


@pytest.fixture
def fault_server(serve):
    return lambda *args, **kwargs: serve(FaultServer(*args, **kwargs))


def teacher_for(server, tmp_path, **options):
    config = TeacherConfig(base_url=server.url, model="m", **{"max_concurrency": 1, "backoff_s": 0.05, **options})
    return Teacher(config, tmp_path / "requests.sqlite", tmp_path / "server.log", log=lambda m: None)


def ask(text, schema=None):
    return Request([{"role": "user", "content": text}], {"max_tokens": 4}, schema)


def test_429_is_retried_after_retry_after_and_the_answer_cached(fault_server, tmp_path):
    server = fault_server(["429"])
    teacher = teacher_for(server, tmp_path)
    [result] = teacher.chat_many([ask("hi")])
    assert result.text == "echo hi" and result.error is None
    assert len(server.hits) == 2 and server.hits[1][0] - server.hits[0][0] >= 0.95  # Retry-After: 1 honoured
    assert teacher.stats["retries"] == 1 and teacher.stats["tokens_out"] == 2 and teacher.stats["errors_http_429"] == 1
    [again] = teacher.chat_many([ask("hi")])
    assert again.cached and again.text == "echo hi" and len(server.hits) == 2
    teacher.close()


def test_client_error_is_not_retried_and_becomes_an_error_result(fault_server, tmp_path):
    server = fault_server(["400"])
    teacher = teacher_for(server, tmp_path)
    bad, good = teacher.chat_many([ask("a"), ask("b")])
    assert bad.text is None and bad.error.startswith("http 400") and good.text == "echo b"
    assert len(server.hits) == 2 and teacher.stats["failures"] == 1
    teacher.close()


def test_every_record_ends_answered_or_dropped_with_its_reason_under_mixed_faults(fault_server, tmp_path):
    rates = {"429": 0.05, "500": 0.1, "503": 0.1, "slow": 0.05, "drop": 0.1, "malformed": 0.1}
    server = fault_server(rates=rates, seed=3, timeout_s=1.5)  # "slow" answers 0.5 s after the client gave up
    teacher = teacher_for(server, tmp_path, max_concurrency=8, timeout_s=1.5, max_retries=3)
    prompts = [f"p{i}" for i in range(60)]
    results = teacher.chat_many([ask(p) for p in prompts])

    by_prompt = defaultdict(list)
    for when, prompt, what in server.hits:
        by_prompt[prompt].append((when, what))
    kinds = {"429": "http 429", "500": "http 500", "503": "http 503", "slow": "timeout", "drop": "connection",
             "malformed": "malformed"}
    answered = dropped = 0
    for prompt, result in zip(prompts, results):
        seen = [what for _, what in by_prompt[prompt]]
        assert 1 <= len(seen) <= 4  # at most max_retries + 1 attempts
        if result.error is None:
            answered += 1
            assert result.text == f"echo {prompt}" and seen[-1] == "ok" and "ok" not in seen[:-1]
            assert server.delivered[prompt] == 1  # answered once, never twice
        else:
            dropped += 1
            assert len(seen) == 4 and "ok" not in seen and result.error.startswith(kinds[seen[-1]])
        for (t0, what), (t1, _) in zip(by_prompt[prompt], by_prompt[prompt][1:]):
            if what == "429":
                assert t1 - t0 >= 0.95  # Retry-After waited
    assert answered + dropped == len(prompts) and answered >= 50
    assert teacher.stats["failures"] == dropped
    for fault in ("http_500", "http_503", "timeout", "connection", "malformed"):
        assert teacher.stats[f"errors_{fault}"] > 0
    sent = len(server.hits)
    again = teacher.chat_many([ask(p) for p in prompts])
    for before, after in zip(results, again):
        if before.error is None:
            assert after.cached and after.text == before.text
    assert len(server.hits) - sent <= 4 * dropped  # a rerun sends only what is missing
    teacher.close()


def test_rate_limit_headers_pause_requests():
    assert header_wait({"retry-after-ms": "250"}, True) == 0.25
    assert header_wait({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "6m0s"}, False) == 360
    assert header_wait({"x-ratelimit-remaining-tokens": "10", "x-ratelimit-reset-tokens": "120ms"}, True) == 0.12
    assert header_wait({"x-ratelimit-remaining-tokens": "10", "x-ratelimit-reset-tokens": "120ms"}, False) is None


def test_an_exhausted_rate_limit_pauses_until_its_reset(fault_server, tmp_path):
    server = fault_server(headers={"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "700ms"})
    teacher = teacher_for(server, tmp_path)
    teacher.chat_many([ask("a"), ask("b"), ask("c")])
    times = sorted(t for t, _, _ in server.hits)
    assert min(b - a for a, b in zip(times, times[1:])) >= 0.65  # each request waited for the reset
    teacher.close()


def test_concurrency_adapts_to_429(fault_server, tmp_path):
    server = fault_server()
    server.limit_in_flight = 3  # answers 429 (Retry-After: 1) beyond 3 requests in flight
    server.delay = 0.2
    teacher = teacher_for(server, tmp_path, max_concurrency=16, max_retries=8)
    results = teacher.chat_many([ask(f"q{i}") for i in range(40)])
    assert all(r.error is None for r in results)
    too_many = sum(1 for _, _, what in server.hits if what == "429")
    assert 0 < too_many < 40  # the limit came down instead of hammering the server
    teacher.close()


def test_a_down_endpoint_stops_the_run_after_a_bounded_wait_keeping_answers(fault_server, tmp_path):
    server = fault_server()
    teacher = teacher_for(server, tmp_path, down_after_s=1.0, max_retries=20)
    teacher.chat_many([ask("a")])
    server.shutdown()
    server.server_close()
    started = time.monotonic()
    with pytest.raises(TeacherError, match="answered nothing"):
        teacher.chat_many([ask("a"), ask("b")])
    assert time.monotonic() - started < 10
    assert len(teacher.cache) == 1
    teacher.close()


def test_structured_output_is_validated_and_reasked(fault_server, tmp_path):
    schema = {"type": "object", "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 5}},
              "required": ["score"]}

    def answer(body):
        if body["messages"][0]["content"] == "never":
            return "I would rate it highly."
        reasked = any("not valid" in m["content"] for m in body["messages"])
        return 'Sure! ```json\n{"score": 4,}\n```' if reasked else '{"score": 9}'

    server = fault_server(answer=answer)
    teacher = teacher_for(server, tmp_path, reasks=2)
    good, bad = teacher.chat_many([ask("rate", schema), ask("never", schema)])
    assert good.data == {"score": 4} and good.error is None
    assert bad.data is None and bad.error.startswith("invalid_json:")
    assert sum(1 for _, p, _ in server.hits if p != "rate") == 3 + 1  # "never": first ask and two re-asks
    assert server.bodies[0]["response_format"]["json_schema"]["schema"] == schema
    assert teacher.stats["reasks"] == 3 and teacher.stats["errors_invalid_json"] == 1
    sent = len(server.hits)
    again = teacher.chat_many([ask("rate", schema)])
    assert again[0].data == {"score": 4} and len(server.hits) == sent  # the re-ask is cached too
    teacher.close()


def test_a_weighted_pool_spreads_requests_and_reruns_hit_the_cache(fault_server, tmp_path):
    light, heavy = fault_server(), fault_server()
    config = TeacherConfig(base_url=light.url, model="m", max_concurrency=8,
                           pool=(f"{heavy.url}?model=m2&weight=3",))
    teacher = Teacher(config, tmp_path / "requests.sqlite", tmp_path / "server.log", log=lambda m: None)
    results = teacher.chat_many([ask(f"x{i}") for i in range(80)])
    assert all(r.error is None for r in results)
    assert len(light.hits) + len(heavy.hits) == 80 and 40 <= len(heavy.hits) <= 75
    assert {b["model"] for b in heavy.bodies} == {"m2"}
    teacher.chat_many([ask(f"x{i}") for i in range(80)])
    assert len(light.hits) + len(heavy.hits) == 80
    teacher.close()


def test_a_failing_pool_endpoint_rests_while_the_others_answer(fault_server, tmp_path):
    from pipelines.teacher.server import free_port
    good = fault_server()
    dead = f"http://127.0.0.1:{free_port()}/v1"
    config = TeacherConfig(base_url=dead, model="m", max_concurrency=4, backoff_s=0.01, pool=(f"{good.url}?model=m",))
    teacher = Teacher(config, tmp_path / "requests.sqlite", tmp_path / "server.log", log=lambda m: None)
    results = teacher.chat_many([ask(f"y{i}") for i in range(40)])
    assert all(r.error is None for r in results) and len(good.hits) == 40
    assert teacher.stats["endpoint_cooldowns"] >= 1 and teacher.stats["errors_connection"] <= 8  # not ~20
    teacher.close()


def test_cost_and_counted_tokens(fault_server, tmp_path, teacher_server):
    server = fault_server(usage=False)
    from pipelines.teacher.weights import ensure_checkpoint
    teacher = teacher_for(server, tmp_path, price_in=2.0, price_out=10.0, tokenizer=str(ensure_checkpoint()))
    [result] = teacher.chat_many([ask("How many legs does a spider have?")])
    assert result.prompt_tokens > 8 and result.completion_tokens >= 3  # counted with the SmolLM2 tokenizer
    expected = (result.prompt_tokens * 2.0 + result.completion_tokens * 10.0) / 1e6
    assert teacher.stats["cost"] == pytest.approx(expected) and teacher.stats["tokens_counted"] == 1
    teacher.close()


def test_a_missing_key_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("NO_SUCH_KEY_VAR", raising=False)
    config = TeacherConfig(base_url="https://api.example.invalid/v1", model="m", api_key_env="NO_SUCH_KEY_VAR")
    teacher = Teacher(config, tmp_path / "requests.sqlite", tmp_path / "server.log", log=lambda m: None)
    with pytest.raises(TeacherError, match="set the NO_SUCH_KEY_VAR environment variable"):
        teacher.chat_many([ask("a")])
    teacher.close()


WRITER = """
import sys
from pipelines.teacher.cache import RequestCache
cache = RequestCache(sys.argv[1])
for i in range(300):
    cache.put(f"{sys.argv[2]}-{i}", "m", {"i": i}, {"text": str(i)})
"""


def test_the_cache_takes_concurrent_writers(tmp_path):
    path = tmp_path / "requests.sqlite"
    RequestCache(path).close()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), name]) for name in ("a", "b", "c")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    cache = RequestCache(path)
    assert len(cache) == 900 and cache.get("b-299")["text"] == "299"
    cache.close()


def test_an_old_cache_is_migrated(tmp_path):
    path = tmp_path / "requests.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied REAL)")
    db.execute("CREATE TABLE responses (key TEXT PRIMARY KEY, model TEXT NOT NULL, request TEXT NOT NULL, text TEXT "
               "NOT NULL, finish_reason TEXT, prompt_tokens INTEGER, completion_tokens INTEGER, created REAL NOT NULL)")
    db.execute("INSERT INTO _migrations VALUES ('m001_initial', 0)")
    db.execute("INSERT INTO responses VALUES ('k', 'm', '{}', 'old answer', 'stop', 1, 2, 0)")
    db.commit()
    db.close()
    cache = RequestCache(path)
    assert cache.get("k")["text"] == "old answer"
    cache.put("k2", "m", {}, {"text": "new"}, endpoint="http://a/v1")
    columns = [row[1] for row in cache.db.execute("PRAGMA table_info(responses)")]
    assert "endpoint" in columns and len(cache) == 2
    cache.close()


def test_a_connection_outlives_a_call(fault_server, tmp_path):
    """A stage asks 64 rows per call: the next call goes on the open connection (bench/client_cost.py)."""
    server = fault_server()
    connections = []
    accept = server.process_request
    server.process_request = lambda request, address: (connections.append(address), accept(request, address))
    teacher = teacher_for(server, tmp_path, down_after_s=0.5, max_retries=20)
    teacher.chat_many([ask("a")])
    teacher.chat_many([ask("b")])
    assert len(connections) == 1 and len(server.hits) == 2
    server.script = ["drop"] * 30  # every try fails: the call raises, closing its loop, as asyncio.run did
    with pytest.raises(TeacherError, match="answered nothing"):
        teacher.chat_many([ask("c")])
    server.script = []
    [result] = teacher.chat_many([ask("d")])
    assert result.text == "echo d"  # on a new loop
    teacher.close()
