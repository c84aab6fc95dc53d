"""The teacher client: the only module that opens sockets (and, through server.py, processes).

`Teacher.chat_many(requests)` answers chat requests against OpenAI-compatible endpoints and returns results in input
order. What it does for each request:
- Cache first (SQLite, `cache.py`), one row per HTTP answer, written as it arrives: a rerun sends only what is missing.
- A pool: `base_url`/`model` plus any `pool` entries (`URL?model=NAME&weight=W&key_env=VAR`); a request goes to an
  endpoint picked by a weighted hash of the request (the same one on a rerun), a retry to the next pick; an endpoint
  that fails three times in a row (5xx, timeouts, drops) rests for 30 s while the others take its share.
- Concurrency: an adaptive limit (asyncio), at most `max_concurrency` in flight. A 429 halves the limit and pauses
  every request until `Retry-After` (or `retry-after-ms`, or the `x-ratelimit-reset-*` header) has passed; an answer
  with `x-ratelimit-remaining-*: 0` pauses until its reset; each success raises the limit again (AIMD).
- Faults: 429, 5xx, timeouts (`timeout_s` per request), dropped connections and malformed bodies are retried with
  exponential backoff and jitter, up to `max_attempts`; then the request becomes a `Result` with `error` (the stage
  drops the row with that reason) and the run goes on. An endpoint that answers nothing for `down_after_s` (or not
  one of a batch's requests) raises `TeacherError`; whatever was answered is already cached.
- Structured outputs: a request with a `schema` asks for `response_format` (json_schema), parses the answer leniently,
  validates it with jsonschema and asks again with the error, up to `reasks` times; then the error is the reason.
- Accounting in `stats`: requests, retries, cache hits, failures, errors by kind, re-asks, prompt and completion
  tokens (from `usage`, else counted with the tokenizer) and cost from `price_in`/`price_out` per million tokens.
- The embedded server (no `base_url`, server.py) starts on the first cache miss; if it dies mid-run it is restarted
  once, and a second death is a `TeacherError`.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import os
import random
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlparse

import orjson

try:  # the HTTP library of the installed openai client (openai 3 ships a fork, httpx2)
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

from pipelines.core import progress
from pipelines.core.errors import ConfigError, TeacherError
from pipelines.teacher.budget import Budget, estimate_tokens
from pipelines.teacher.cache import RequestCache, request_key
from pipelines.teacher.server import EmbeddedConfig
from pipelines.teacher.structured import check, parse_json, reask_message
from pipelines.teacher.weights import display_name

EMBEDDED = "embedded"
RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
MAX_WAIT_S = 300.0
PENDING = "pending: sent in the next batch"  # batch mode's placeholder while collecting
EMBED_PARAMS = {"embedding": True}  # in the cache key: an embedding is never mistaken for a completion of the text
COOL_AFTER, COOL_DOWN_S = 3, 30.0  # a pool endpoint failing 3 times in a row rests for 30 s


@dataclass(frozen=True)
class Endpoint:
    base_url: str | None  # None: the embedded server
    model: str
    weight: float = 1.0
    key_env: str = "OPENAI_API_KEY"

    @property
    def name(self) -> str:
        return self.base_url or EMBEDDED


def _pool_problem(pool: tuple[str, ...]) -> str | None:
    """Checked when the config is resolved: a malformed entry raises ConfigError, a weight must be > 0."""
    for spec in pool:
        if not 0 < _parse_endpoint(spec, "").weight < float("inf"):
            return f"the weight of {spec!r} must be greater than 0"
    return None


@dataclass(frozen=True)
class TeacherConfig:
    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible URL; empty = the embedded server"})
    model: str = field(default="SmolLM2-135M-Instruct", metadata={"help": "model name sent to base_url"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "environment variable holding the key"})
    pool: tuple[str, ...] = field(default=(), metadata={"help": "more endpoints: URL?model=M&weight=W&key_env=VAR",
                                                        "check": _pool_problem})
    max_concurrency: int = field(default=8, metadata={"help": "requests in flight at most (lowered on 429)",
                                                      "range": "[1, 4096]"})
    max_retries: int = field(default=4, metadata={"help": "retries per request on 429/5xx/timeouts/drops",
                                                  "range": "[0, 100]"})
    timeout_s: float = field(default=300.0, metadata={"help": "per-request timeout in seconds", "range": "(0, 86400]"})
    backoff_s: float = field(default=0.5, metadata={"help": "first retry wait; doubles per attempt, with jitter",
                                                    "range": f"[0, {MAX_WAIT_S:g}]"})
    down_after_s: float = field(default=120.0, metadata={"help": "stop when nothing answers for this long",
                                                         "range": "(0, 86400]"})
    reasks: int = field(default=2, metadata={"help": "re-asks of an answer that fails its JSON Schema",
                                             "range": "[0, 20]"})
    response_format: bool = field(default=True, metadata={"help": "send response_format for structured outputs"})
    price_in: float = field(default=0.0, metadata={"help": "price per million prompt tokens", "range": "[0, inf)"})
    price_out: float = field(default=0.0, metadata={"help": "price per million completion tokens",
                                                    "range": "[0, inf)"})
    tokenizer: str = field(default="", metadata={"help": "tokenizer for counting when usage is missing"})
    max_cost: float = field(default=0.0, metadata={"help": "budget: the most its answers in this run may cost "
                                                           "(price_in/out units; 0 = no limit)", "range": "[0, inf)"})
    max_tokens: int = field(default=0, metadata={"help": "budget: the most prompt + completion tokens its answers in "
                                                         "this run may take (0 = no limit)", "range": "[0, 1000000000000]"})
    mode: str = field(default="online", metadata={"help": "online, or batch: the provider's Batch API (OpenAI's "
                                                           "/v1/files + /v1/batches; half the price, within 24 h)",
                                                   "choices": ("online", "batch")})
    batch_discount: float = field(default=0.5, metadata={"help": "batch price as a share of the online price",
                                                         "range": "[0, 1]"})
    batch_fallback: str = field(default="batch", metadata={
        "help": "requests an expired or failed batch left unanswered: batch (submit again) or online",
        "choices": ("batch", "online")})
    batch_resubmits: int = field(default=2, metadata={"help": "times unanswered requests are submitted again",
                                                      "range": "[0, 100]"})
    batch_max_requests: int = field(default=50_000, metadata={"help": "requests per batch file at most",
                                                              "range": "[1, 50000]"})
    batch_max_bytes: int = field(default=190_000_000, metadata={"help": "bytes per batch file at most",
                                                                "range": "[1000, 200000000]"})
    batch_poll_s: float = field(default=10.0, metadata={"help": "first wait between polls of a batch (grows to "
                                                                "batch_poll_max_s)", "range": "(0, 3600]"})
    batch_poll_max_s: float = field(default=120.0, metadata={"help": "longest wait between polls",
                                                             "range": "(0, 3600]"})
    embedded: EmbeddedConfig = field(default_factory=EmbeddedConfig)  # the server started when base_url is empty

    def endpoints(self) -> list[Endpoint]:
        model = self.model if self.base_url else display_name(self.embedded.model)
        first = Endpoint(self.base_url or None, model, 1.0, self.api_key_env)
        return [first, *(_parse_endpoint(spec, self.api_key_env) for spec in self.pool)]

    def identity(self) -> dict:
        """What the answers depend on (fingerprints and cache keys); never the key itself."""
        ident = {"base_url": self.base_url or EMBEDDED, "model": self.endpoints()[0].model}
        if self.pool:
            ident["pool"] = [[e.name, e.model, e.weight] for e in self.endpoints()[1:]]
        return ident


def _parse_endpoint(spec: str, default_key_env: str) -> Endpoint:
    url, _, query = spec.partition("?")
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = set(options) - {"model", "weight", "key_env"}
    if unknown or "model" not in options:
        raise ConfigError(f"teacher.pool entry {spec!r}: write URL?model=NAME[&weight=W&key_env=VAR]"
                          + (f" (unknown {sorted(unknown)})" if unknown else ""))
    try:
        weight = float(options.get("weight", 1))
    except ValueError:
        raise ConfigError(f"teacher.pool entry {spec!r}: weight must be a number") from None
    return Endpoint(url, options["model"], weight, options.get("key_env", default_key_env))


@dataclass(frozen=True)
class Request:
    """A chat request (`messages`), or with `prompt` a raw text completion on `/v1/completions` (no chat template:
    the caller writes the template, as Magpie does). `params` go into the body as they are: max_tokens,
    temperature, top_p, seed, stop, n (more choices: `Result.texts`), logprobs and top_logprobs (`Result.logprobs`);
    all of them are in the cache key."""

    messages: list[dict]
    params: dict
    schema: dict | None = None  # ask for JSON matching this JSON Schema
    parse: Callable[[str], tuple[object, str | None]] | None = None  # text -> (value, error); replaces JSON+schema
    model: str | None = None  # only the pool's endpoints serving this model may answer
    prompt: str | None = None  # a raw completion of this text instead of a chat

    @property
    def body(self) -> list[dict] | str:
        """What is completed: the messages, or the raw prompt."""
        return self.prompt if self.prompt is not None else self.messages


@dataclass
class Result:
    text: str | None
    error: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    data: object = None  # the parsed JSON of a structured request
    texts: list[str] = field(default_factory=list)  # every choice's text (one unless the request asked for `n`)
    logprobs: list[dict] | None = None  # first choice: [{"token", "logprob", "top": {token: logprob}}] per token


class AdaptiveLimit:
    """At most `limit` requests in flight; 429s halve it and pause everyone, successes raise it back (AIMD)."""

    def __init__(self, maximum: int):
        self.maximum = maximum
        self.limit = float(maximum)
        self.active = 0
        self.resume_at = 0.0
        self.changed = asyncio.Condition()

    async def acquire(self) -> None:
        async with self.changed:
            await self.changed.wait_for(lambda: self.active < max(1, int(self.limit)))
            self.active += 1
        while (delay := self.resume_at - time.monotonic()) > 0:
            await asyncio.sleep(delay)

    async def release(self, ok: bool) -> None:
        async with self.changed:
            self.active -= 1
            if ok:
                self.limit = min(self.maximum, self.limit + 1 / max(1.0, self.limit))
            self.changed.notify(max(1, int(self.limit) - self.active))  # wake only as many as may start

    def throttle(self, wait_s: float) -> None:
        self.limit = max(1.0, self.limit / 2)
        self.pause(wait_s)

    def pause(self, wait_s: float) -> None:
        self.resume_at = max(self.resume_at, time.monotonic() + wait_s)


DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def header_wait(headers, limited: bool) -> float | None:
    """Seconds the server asks us to wait: Retry-After (seconds or a date), retry-after-ms, or, when a limit is hit
    (`limited`, or `x-ratelimit-remaining-*` is 0), the matching `x-ratelimit-reset-*` (`1s`, `6m0s`, `120ms`)."""
    if value := headers.get("retry-after-ms"):
        try:
            return float(value) / 1000
        except ValueError:
            pass
    if value := headers.get("retry-after"):
        try:
            return float(value)
        except ValueError:
            when = email.utils.parsedate_to_datetime(value) if value else None
            if when is not None:
                return max(0.0, when.timestamp() - time.time())
    waits = []
    for kind in ("requests", "tokens"):
        remaining = headers.get(f"x-ratelimit-remaining-{kind}")
        reset = headers.get(f"x-ratelimit-reset-{kind}")
        if reset and (limited or remaining == "0"):
            try:
                waits.append(float(reset))
            except ValueError:
                waits.append(sum(float(n) * UNITS[u] for n, u in DURATION.findall(reset)))
    return max(waits) if waits else None


def http_status(error: str) -> int | None:
    """`"http 503: Service Unavailable"` -> 503; None for an error that is not an HTTP status."""
    return int(error.split()[1].rstrip(":")) if error.startswith("http ") else None


def backoff(attempt: int, base: float = 0.5) -> float:
    """base * 2^attempt, jittered between half and all of it, at most 30 s."""
    return min(30.0, base * 2 ** attempt) * (0.5 + random.random() / 2)


class Teacher:
    def __init__(self, config: TeacherConfig, cache_path: Path, server_log: Path, log=print, role: str = "teacher"):
        self.config = config
        self.endpoints = config.endpoints()
        self.cache = RequestCache(cache_path)
        self.server_log = server_log
        self.log = log
        self.stats: Counter = Counter()
        self._server = None
        self._restarts = 0
        self._keys: dict[str, str] = {}
        self._tokenizer = None
        self.budget = Budget(config, self.cache, self.models(), role)
        self._collect: dict | None = None  # batch mode: requests met on a cache miss, to be sent in a batch
        self._batch_failed: dict[str, str] = {}  # batch mode: cache key -> the error its batch gave
        self._online_only: set[str] = set()  # batch mode: keys a failed batch left to the online path
        self.estimate: dict | None = None  # --dry-run: stage -> what it would send, instead of sending it
        self._desc = "teacher"
        if config.mode == "batch" and (config.base_url is None or config.pool):
            raise ConfigError(f"{role}.mode=batch sends one provider's Batch API: set {role}.base_url to it and no "
                              f"{role}.pool (the embedded server answers online)")
        if config.max_cost and not (config.price_in or config.price_out):
            raise ConfigError(f"{role}.max_cost needs the prices: set {role}.price_in and {role}.price_out (per "
                              f"million tokens), or budget tokens with {role}.max_tokens")

    # --- the interface -------------------------------------------------------------------------------------------

    def chat_many(self, requests: list[Request], desc: str = "teacher") -> list[Result]:
        """Answer `requests` in order; cached answers are not sent again. In batch mode the uncached ones go through
        the provider's Batch API first (`pipelines.teacher.batch`), so the pass below finds them in the cache."""
        results: list[Result | None] = [None] * len(requests)
        self.budget.refresh()
        self._desc = desc
        if self.estimate is not None:  # a dry run: nothing is sent, no server starts
            asyncio.run(self._run(requests, results, desc))
            return results
        if self.config.mode == "batch" and requests:
            from pipelines.teacher.batch import answer_in_batches

            answer_in_batches(self, requests, desc)
        if self._server is None and any(self._uncached_on_embedded(r) for r in requests):
            self._start_embedded()  # before the event loop, so a signal while it starts exits cleanly
        if requests:
            asyncio.run(self._run(requests, results, desc))
        if self.budget.refused:
            raise self.budget.stop(desc)
        return results

    def embed_many(self, texts: list[str], desc: str = "embeddings", batch: int = 32):
        """Vectors of `texts` from `/v1/embeddings`, in order: (float32 array, one row per text; the error of each
        text, or None). A failed text's row is zeros. Cached per text and endpoint; `batch` texts per request, with
        the concurrency, retries, pool and accounting of chat requests."""
        import numpy as np

        keys = [{e: request_key(e.model, e.name, text, EMBED_PARAMS) for e in self.endpoints} for text in texts]
        vectors: list = [None] * len(texts)
        errors: list[str | None] = [None] * len(texts)
        todo = []
        for i, by_endpoint in enumerate(keys):
            hit = next((h for h in map(self.cache.get, by_endpoint.values()) if h is not None), None)
            if hit is None:
                todo.append(i)
            else:
                self.stats["cache_hits"] += 1
                vectors[i] = _vector(hit["text"])  # the cache keeps a vector as its base64 bytes
        groups = [todo[j:j + batch] for j in range(0, len(todo), batch)]
        if groups and self._server is None and any(e.base_url is None for e in self.endpoints):
            self._start_embedded()
        results: list[Result | None] = [None] * len(groups)
        if groups:
            asyncio.run(self._run(groups, results, desc, lambda g: self._embed([texts[i] for i in g],
                                                                                [keys[i] for i in g])))
        for group, result in zip(groups, results):
            for j, i in enumerate(group):
                errors[i] = result.error
                vectors[i] = None if result.error else result.data[j]
        width = next((len(v) for v in vectors if v is not None), 0)
        out = np.zeros((len(texts), width), np.float32)
        for i, vector in enumerate(vectors):
            if vector is not None:
                out[i] = vector
        return out, errors

    def _uncached_on_embedded(self, request: "Request") -> bool:
        return any(e.base_url is None and self.cache.get(
            request_key(e.model, e.name, request.body, self._params(request))) is None
            for e in self._serving(request.model))

    def models(self) -> list[str]:
        """The distinct models of the pool, in config order (a completion stage may ask each of them)."""
        return list(dict.fromkeys(e.model for e in self.endpoints))

    def _serving(self, model: str | None) -> list[Endpoint]:
        if model is None:
            return self.endpoints
        serving = [e for e in self.endpoints if e.model == model]
        if not serving:
            raise ConfigError(f"no teacher endpoint serves model {model!r}; the pool has {self.models()}")
        return serving

    def _params(self, request: "Request") -> dict:
        """The request's sampling params, plus `response_format` for a structured request."""
        if request.schema is None or not self.config.response_format:
            return request.params
        return {**request.params,
                "response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": request.schema}}}

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        self.cache.close()

    # --- one batch -----------------------------------------------------------------------------------------------

    async def _run(self, requests, results, desc, answer=None) -> None:
        self._limit = AdaptiveLimit(self.config.max_concurrency)
        self._clients: dict[str, object] = {}
        self._restart_lock = asyncio.Lock()
        self._last_answer = time.monotonic()
        self._sent_any = False
        self._failing: Counter = Counter()
        self._cooling: dict[Endpoint, float] = {}
        task = progress.add(f"{desc}: requests", total=len(requests))

        async def one(i: int) -> None:
            results[i] = await (answer or self._answer)(requests[i])
            progress.advance(task)

        try:
            async with asyncio.TaskGroup() as group:
                for i in range(len(requests)):
                    group.create_task(one(i))
        except* TeacherError as errors:
            raise errors.exceptions[0] from None
        finally:
            progress.remove(task)
            for client in self._clients.values():
                await client.close()
        errors = [r.error for r in results if r.error]
        if self._sent_any and len(errors) == len(results) and all(e.startswith("connection") for e in errors):
            where = ", ".join(self._server.base_url if e.base_url is None and self._server else e.name
                              for e in self.endpoints)
            raise TeacherError(f"the teacher at {where} did not answer any of {len(results)} requests ({errors[0]}); "
                               "check that it is running, then rerun: answered requests are cached")

    async def _answer(self, request: Request) -> Result:
        params = self._params(request)
        endpoints = self._serving(request.model)
        if request.schema is None and request.parse is None:
            return await self._complete(request.body, params, endpoints)
        messages = request.body if request.prompt is not None else list(request.messages)
        reasks = 0 if request.prompt is not None else self.config.reasks  # a raw prompt has no turns to add
        for ask in range(reasks + 1):
            result = await self._complete(messages, params, endpoints)
            if result.error:
                return result
            if request.parse is not None:
                value, error = request.parse(result.text)
            else:
                value, error = parse_json(result.text)
                error = error or check(value, request.schema)
            if error is None:
                result.data = value
                return result
            if ask < reasks:
                self.stats["reasks"] += 1
                schema = request.schema if request.parse is None else None  # its own format: ask for that again
                messages = messages + [{"role": "assistant", "content": result.text}, reask_message(error, schema)]
        self.stats["failures"] += 1
        self.stats["errors_invalid_json"] += 1
        return Result(result.text, f"invalid_json: {error}", result.finish_reason, result.prompt_tokens,
                      result.completion_tokens, result.cached, texts=result.texts, logprobs=result.logprobs)

    # --- one HTTP answer -----------------------------------------------------------------------------------------

    def _route(self, seed: str, attempt: int, endpoints: list[Endpoint]) -> Endpoint:
        """A weighted pick among the endpoints not cooling down (all of them when every one is)."""
        if len(endpoints) == 1:
            return endpoints[0]
        now = time.monotonic()
        healthy = [e for e in endpoints if self._cooling.get(e, 0.0) <= now] or endpoints
        point = int(hashlib.sha256(f"{seed}:{attempt}".encode()).hexdigest()[:12], 16) / 16**12
        total = sum(e.weight for e in healthy)
        for endpoint in healthy:
            point -= endpoint.weight / total
            if point < 0:
                return endpoint
        return healthy[-1]

    def _note(self, endpoint: Endpoint, ok: bool, error: str) -> None:
        """Track an endpoint's health: COOL_AFTER failures in a row (not 429s) rest it for COOL_DOWN_S."""
        status = http_status(error)
        if ok or status == 429 or (status is not None and status not in RETRYABLE_STATUS):  # the request's fault
            self._failing[endpoint] = 0
            return
        self._failing[endpoint] += 1
        if self._failing[endpoint] >= COOL_AFTER and len(self.endpoints) > 1:
            self._cooling[endpoint] = time.monotonic() + COOL_DOWN_S
            self._failing[endpoint] = 0
            self.stats["endpoint_cooldowns"] += 1

    async def _complete(self, messages: list[dict] | str, params: dict, endpoints: list[Endpoint]) -> Result:
        keys = {e: request_key(e.model, e.name, messages, params) for e in endpoints}
        for key in keys.values():
            if (hit := self.cache.get(key)) is not None:
                self.stats["cache_hits"] += 1
                if self.estimate is not None:
                    self.estimate.setdefault(self._desc, Counter())["cached"] += 1
                return _result(hit, cached=True)
        first = next(iter(keys.values()))
        if self.estimate is not None:
            return self._estimate(messages, params)
        if first in self._batch_failed:  # its batch answered with an error: the row's drop reason
            return Result(None, error=self._batch_failed[first])
        if self._collect is not None:  # batch mode, collecting: sent in the next batch (or left to the online pass)
            if first not in self._online_only:
                self._collect[first] = (endpoints[0], messages, params)
            return Result(None, error=PENDING)
        if self.config.mode == "batch" and first not in self._online_only:  # batch mode answers nothing online
            if not self.budget.on:
                return Result(None, error="batch: no answer")
            self.budget.refused += 1  # its batch was not sent: the budget had no room
            return Result(None, error="budget: not sent")
        held = None
        if self.budget.on:
            held = self.budget.worst_case(self._prompt_tokens(messages), params)
            while (verdict := self.budget.reserve(held)) == "wait":  # requests in flight may leave room
                await asyncio.sleep(0.02)
            if verdict == "never":
                return Result(None, error="budget: not sent")
        answer = None
        try:
            endpoint, answer, error = await self._with_retries(first, endpoints,
                                                               lambda e: self._post(e, messages, params))
        finally:
            self.budget.release(held, answer)
        if answer is None:
            return Result(None, error=error)
        self.store(keys[endpoint], endpoint, messages, params, answer)
        return _result(answer)

    def _estimate(self, messages, params: dict) -> Result:
        """--dry-run: count what this request would take at most (its worst case, online and batch)."""
        prompt = self._prompt_tokens(messages)
        worst = self.budget.worst_case(prompt, params)
        row = self.estimate.setdefault(self._desc, Counter())
        row["requests"] += 1
        row["prompt_tokens"] += prompt
        row["completion_tokens"] += worst.tokens - prompt
        row["cost"] += worst.cost
        row["cost_batch"] += self.budget.worst_case(prompt, params, batch=True).cost
        return Result(None, error="dry run: not sent")

    def store(self, key: str, endpoint: Endpoint, messages, params: dict, answer: dict) -> None:
        """Cache an answer with what it cost (online or batch: the same key either way)."""
        what = "prompt" if isinstance(messages, str) else "messages"
        self.cache.put(key, endpoint.model, {what: messages, **params}, answer, endpoint.name, answer.get("cost"))

    async def _embed(self, texts: list[str], keys: list[dict]) -> Result:
        endpoint, vectors, error = await self._with_retries(keys[0][self.endpoints[0]], self.endpoints,
                                                            lambda e: self._post_embeddings(e, texts))
        if vectors is None:
            return Result(None, error=error)
        for text, by_endpoint, vector in zip(texts, keys, vectors):
            self.cache.put(by_endpoint[endpoint], endpoint.model, {"input": text, **EMBED_PARAMS},
                           {"text": base64.b64encode(vector.tobytes()).decode()}, endpoint.name)
        return Result(None, data=vectors)

    async def _post_embeddings(self, endpoint: Endpoint, texts: list[str]):
        import numpy as np

        body, wait, error = await self._send(endpoint, "/embeddings", {"input": texts})
        if body is None:
            return None, wait, error
        data = body.get("data") if isinstance(body, dict) else None
        if not (isinstance(data, list) and len(data) == len(texts) and all(isinstance(d, dict) for d in data)):
            return None, None, f"malformed: {len(texts)} texts, not as many embeddings"
        data = sorted(data, key=lambda d: d["index"] if isinstance(d.get("index"), int) else 0)
        try:
            vectors = [np.asarray(d["embedding"], dtype=np.float32) if isinstance(d.get("embedding"), list)
                       else _vector(d["embedding"]) for d in data]
        except (KeyError, TypeError, ValueError):
            return None, None, "malformed: an embedding that is not a list of numbers"
        if len({v.shape for v in vectors}) != 1 or vectors[0].ndim != 1 or not vectors[0].size:
            return None, None, "malformed: embeddings of different sizes"
        self._last_answer = time.monotonic()
        usage = body.get("usage") or {}
        self.stats["tokens_in"] += usage.get("prompt_tokens") if isinstance(usage.get("prompt_tokens"), int) else 0
        return vectors, None, ""

    async def _with_retries(self, seed: str, endpoints: list[Endpoint], post) -> tuple[Endpoint, object, str]:
        """`post(endpoint)` until it answers: (the endpoint that answered, its answer or None, the last error)."""
        last = "unknown"
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                self.stats["retries"] += 1
            await self._limit.acquire()
            endpoint = self._route(seed, attempt, endpoints)  # after the wait, so it sees the endpoints' health as it is now
            ok, wait = False, None
            try:
                answer, wait, last = await post(endpoint)
                ok = answer is not None
            finally:
                await self._limit.release(ok)
            self._note(endpoint, ok, last)
            if ok:
                return endpoint, answer, ""
            self.stats["errors_" + last.split(":")[0].replace(" ", "_")] += 1
            status = http_status(last)
            if status is not None and status not in RETRYABLE_STATUS:
                break
            if status != 429:
                await self._check_alive(endpoint, last)
            await asyncio.sleep(wait if wait is not None else backoff(attempt, self.config.backoff_s))
        self.stats["failures"] += 1
        return endpoint, None, last

    async def _send(self, endpoint: Endpoint, path: str, body: dict) -> tuple[dict | None, float | None, str]:
        """POST `body` (plus the model) to `path`: (the parsed answer, seconds to wait before the next try, error)."""
        import openai

        client = await self._client(endpoint)
        self.stats["requests"] += 1
        self._sent_any = True
        model = endpoint.model if endpoint.base_url else self._server.model
        try:  # the openai client's transport, errors and auth, without its per-request pydantic models (2x the CPU)
            raw = await client.post(path, body={"model": model, **body}, cast_to=httpx.Response)
            answer = orjson.loads(raw.content)
        except openai.APIStatusError as exc:
            limited = exc.status_code == 429
            wait = header_wait(exc.response.headers, limited)
            if limited:
                self._limit.throttle(wait if wait is not None else backoff(0, self.config.backoff_s))
            return None, min(wait, MAX_WAIT_S) if wait is not None else None, \
                f"http {exc.status_code}: {str(exc.message)[:200]}"
        except openai.APITimeoutError:
            return None, None, f"timeout: no answer within {self.config.timeout_s:g}s"
        except openai.APIConnectionError as exc:
            return None, None, f"connection: {exc.__cause__.__class__.__name__ if exc.__cause__ else 'dropped'}"
        except (ValueError, httpx.HTTPError) as exc:
            return None, None, f"malformed: {exc.__class__.__name__}"
        if (wait := header_wait(raw.headers, False)) is not None:
            self._limit.pause(min(wait, MAX_WAIT_S))
        return answer, None, ""

    async def _post(self, endpoint: Endpoint, messages, params) -> tuple[dict | None, float | None, str]:
        """(answer, seconds to wait before the next try, error): exactly one of answer and error is meaningful."""
        raw_text = isinstance(messages, str)
        path, what = ("/completions", "prompt") if raw_text else ("/chat/completions", "messages")
        body, wait, error = await self._send(endpoint, path, {what: messages, **params})
        if body is None:
            return None, wait, error
        answer, error = self.read_answer(body, messages)
        if answer is None:
            return None, None, error
        self._last_answer = time.monotonic()
        return answer, None, ""

    def read_answer(self, body, messages, batch: bool = False) -> tuple[dict | None, str]:
        """A completion body as the cache keeps it (text, every choice, logprobs, tokens, cost), counted in the
        stats; or None and what is wrong with it. `batch`: priced at the batch discount."""
        raw_text = isinstance(messages, str)
        choices = body.get("choices") if isinstance(body, dict) else None
        if not (isinstance(choices, list) and choices and all(isinstance(c, dict) for c in choices)):
            return None, "malformed: response without message content"
        # servers may send the `n` choices in any order
        choices = sorted(choices, key=lambda c: c["index"] if isinstance(c.get("index"), int) else 0)
        texts = [_choice_text(c, raw_text) for c in choices]
        if not all(isinstance(t, str) for t in texts):
            return None, "malformed: response without message content"
        usage = body.get("usage") or {}
        if isinstance(usage.get("prompt_tokens"), int) and isinstance(usage.get("completion_tokens"), int):
            prompt, completion = usage["prompt_tokens"], usage["completion_tokens"]
        else:
            prompt, completion = self._count(messages, texts)
        self.stats["tokens_in"] += prompt
        self.stats["tokens_out"] += completion
        online, cost = self.budget.price(prompt, completion), self.budget.price(prompt, completion, batch)
        if cost:
            self.stats["cost"] += cost
        if batch and online:
            self.stats["cost_online"] += online  # what the same answers would have cost online
        answer = {"text": texts[0], "finish_reason": choices[0].get("finish_reason"), "prompt_tokens": prompt,
                  "completion_tokens": completion, "cost": cost}
        if len(texts) > 1:
            answer["texts"] = texts
        if (logprobs := _logprobs(choices[0])) is not None:
            answer["logprobs"] = logprobs
        return answer, ""

    # --- endpoints -----------------------------------------------------------------------------------------------

    async def _client(self, endpoint: Endpoint):
        import openai

        if endpoint.base_url is None:
            async with self._restart_lock:
                if self._server is None:
                    self._start_embedded()  # blocks the loop on purpose: see _start_embedded
            base_url, key = self._server.base_url, "unused"
        else:
            base_url, key = endpoint.base_url, self._api_key(endpoint)
        if base_url not in self._clients:
            pool = httpx.Limits(max_connections=self.config.max_concurrency,
                                max_keepalive_connections=self.config.max_concurrency)
            self._clients[base_url] = openai.AsyncOpenAI(
                base_url=base_url, api_key=key, max_retries=0, timeout=self.config.timeout_s,
                http_client=openai.DefaultAsyncHttpxClient(limits=pool, timeout=self.config.timeout_s))
        return self._clients[base_url]

    def _start_embedded(self) -> None:
        """Started from the thread that runs the event loop, never a worker thread: the server is tied to the
        thread that starts it (PR_SET_PDEATHSIG), and a worker thread ending would stop it."""
        from pipelines.teacher.server import EmbeddedServer

        self._server = EmbeddedServer(self.server_log, log=self.log, config=self.config.embedded).start()

    async def _check_alive(self, endpoint: Endpoint, error: str) -> None:
        """Restart a dead embedded server once; stop the run when nothing has answered for `down_after_s`."""
        if endpoint.base_url is None and self._server is not None and not self._server.alive():
            async with self._restart_lock:
                if not self._server.alive():
                    code = self._server.proc.returncode if self._server.proc else None
                    if self._restarts >= 1:
                        raise TeacherError(f"the embedded teacher died again (exit code {code}) after a restart; see "
                                           f"{self.server_log}; rerun to go on: answered requests are cached")
                    self._restarts += 1
                    self.stats["server_restarts"] += 1
                    self.log(f"the embedded teacher died (exit code {code}); restarting it once")
                    try:
                        self._server.start()  # in this thread, as in _start_embedded
                    except Exception as exc:  # killed again while starting, or a port or memory failure
                        raise TeacherError(f"the embedded teacher died (exit code {code}) and could not be restarted "
                                           f"({exc}); rerun to go on: answered requests are cached") from exc
                    self._last_answer = time.monotonic()
            return
        silent = time.monotonic() - self._last_answer
        if silent > self.config.down_after_s:
            raise TeacherError(f"the teacher at {endpoint.name} has answered nothing for {silent:.0f}s (last error: "
                               f"{error}); check that it is running, then rerun: answered requests are cached")

    def _api_key(self, endpoint: Endpoint) -> str:
        if endpoint.key_env in self._keys:
            return self._keys[endpoint.key_env]
        key = os.environ.get(endpoint.key_env)
        if not key:
            host = urlparse(endpoint.base_url).hostname or ""
            if host not in ("127.0.0.1", "localhost", "::1"):
                raise TeacherError(f"no API key for {endpoint.base_url}: set the {endpoint.key_env} environment "
                                   f"variable (or teacher.api_key_env to the variable that holds it)")
            key = "EMPTY"  # local vLLM / TGI / transformers servers take any key
        self._keys[endpoint.key_env] = key
        return key

    def _prompt_tokens(self, messages: list[dict] | str) -> int:
        """A request's prompt tokens for its budget reservation: counted when a tokenizer is known, else over-
        estimated from its characters."""
        if self.config.tokenizer or self._server is not None:
            counted, _ = self._count(messages, [])
            if counted:
                return counted
        text = messages if isinstance(messages, str) else "".join(str(m.get("content")) for m in messages)
        return estimate_tokens(text) + (0 if isinstance(messages, str) else 4 * len(messages))

    def _count(self, messages: list[dict] | str, completions: list[str]) -> tuple[int, int]:
        """Token counts when the server sends no `usage`: the configured tokenizer, else the embedded model's."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            from pipelines.teacher.weights import checkpoint_dir

            embedded = checkpoint_dir(self.config.embedded.model) if self._server is not None else None
            name = self.config.tokenizer or (str(embedded) if embedded and embedded.is_dir() else "")
            if not name:
                self.stats["tokens_uncounted"] += 1
                return 0, 0
            self._tokenizer = AutoTokenizer.from_pretrained(name)
        if isinstance(messages, str):
            prompt = self._tokenizer.encode(messages, add_special_tokens=False)
        else:
            prompt = self._tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True,
                                                         return_dict=True)["input_ids"]
        self.stats["tokens_counted"] += 1
        return len(prompt), sum(len(self._tokenizer.encode(t, add_special_tokens=False)) for t in completions)


def _vector(value: str):
    """A float32 vector from its base64 bytes (how the cache stores embeddings, and `encoding_format=base64`)."""
    import numpy as np

    return np.frombuffer(base64.b64decode(value), dtype=np.float32).copy()


def _choice_text(choice: dict, raw_text: bool) -> str | None:
    """A choice's text: `text` of a raw completion, `message.content` of a chat answer."""
    if raw_text:
        return choice.get("text")
    message = choice.get("message")
    return message.get("content") if isinstance(message, dict) else None


def _logprobs(choice: dict) -> list[dict] | None:
    """A choice's token logprobs as [{"token", "logprob", "top": {token: logprob}}], from the chat format
    (`logprobs.content`) or the legacy completions format (`tokens`, `token_logprobs`, `top_logprobs`)."""
    found = choice.get("logprobs")
    if not isinstance(found, dict):
        return None
    if isinstance(found.get("content"), list):
        return [{"token": t.get("token"), "logprob": t.get("logprob"),
                 "top": {x.get("token"): x.get("logprob") for x in t.get("top_logprobs") or [] if isinstance(x, dict)}}
                for t in found["content"] if isinstance(t, dict)]
    if isinstance(found.get("tokens"), list):
        tops = found.get("top_logprobs") or [None] * len(found["tokens"])
        return [{"token": t, "logprob": lp, "top": dict(top or {})}
                for t, lp, top in zip(found["tokens"], found.get("token_logprobs") or [], tops)]
    return None


def _result(answer: dict, cached: bool = False) -> Result:
    """A Result from an answer as `_post` makes it and the cache stores it."""
    return Result(answer["text"], None, answer.get("finish_reason"), answer.get("prompt_tokens") or 0,
                  answer.get("completion_tokens") or 0, cached=cached, texts=answer.get("texts") or [answer["text"]],
                  logprobs=answer.get("logprobs"))
