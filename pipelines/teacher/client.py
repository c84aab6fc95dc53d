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

Its parts live beside it: the settings in `config.py`, `Request`/`Result` and the answer readers in `wire.py`, the
limits, waits and the pool's router in `limits.py`, the Batch API in `batch.py` (through the public `sender`,
`answer`, `batch_failed`, `api_key` and `prompt_tokens`), and what happens to a request the cache cannot answer when
it is not sent online in `senders.py` (a dry run, batch mode's collecting and answering passes). What is left
(about 500 lines) is one class on purpose: online sending shares one event loop's state (the limit, the router, the
open connections, the embedded server), and splitting that state across objects would pass it around on every
request.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlparse

import orjson

try:  # the HTTP library of the installed openai client (openai 3 ships a fork, httpx2)
    import httpx2 as httpx
except ImportError:  # pragma: no cover
    import httpx

from pipelines.core import progress
from pipelines.core.errors import ConfigError, TeacherError
from pipelines.teacher.budget import Budget, estimate_tokens
from pipelines.teacher.cache import RequestCache, request_key
from pipelines.teacher.config import MAX_WAIT_S, Endpoint, TeacherConfig
from pipelines.teacher.limits import RETRYABLE_STATUS, AdaptiveLimit, Router, backoff, header_wait, http_status
from pipelines.teacher.senders import AfterBatch, DryRun
from pipelines.teacher.structured import check, parse_json, reask_message
from pipelines.teacher.wire import (EMBED_PARAMS, Request, Result, choice_text, logprobs_of, result_of, tool_calls_of,
                                   vector_of)



class Teacher:
    def __init__(self, config: TeacherConfig, cache_path: Path, server_log: Path, log=print, role: str = "teacher",
                 cache: RequestCache | None = None):
        """`cache`: where answers are read and written (default: a RequestCache at `cache_path`; a Ray worker passes
        its shard over the run's cache, `pipelines.engines.teachers`)."""
        self.config = config
        self.endpoints = config.endpoints()
        self.cache = cache if cache is not None else RequestCache(cache_path)
        self.make_limit = AdaptiveLimit  # the concurrency limit of each batch (a Ray worker's shares its 429s)
        self.server_log = server_log
        self.log = log
        self.stats: Counter = Counter()
        self._server = None
        self._restarts = 0
        self._keys: dict[str, str] = {}
        self._tokenizer = None
        self.budget = Budget(config, self.cache, self.models(), role)
        # what takes a request the cache cannot answer instead of sending it online (`senders.py`); batch mode
        # answers online only what a failed batch left to it
        self.sender = AfterBatch(set()) if config.mode == "batch" else None
        self.batch_failed: dict[str, str] = {}  # batch mode: cache key -> the error its batch gave
        self.desc = "teacher"  # the stage asking now (a dry run counts per stage)
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
        self.desc = desc
        if isinstance(self.sender, DryRun):  # nothing is sent, no server starts
            self._on_loop(self._run(requests, results, desc))
            return results
        if self.config.mode == "batch" and requests:
            from pipelines.teacher.batch import answer_in_batches

            answer_in_batches(self, requests, desc)
        if self._server is None and any(self._uncached_on_embedded(r) for r in requests):
            self._start_embedded()  # before the event loop, so a signal while it starts exits cleanly
        if requests:
            self._on_loop(self._run(requests, results, desc))
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
                vectors[i] = vector_of(hit["text"])  # the cache keeps a vector as its base64 bytes
        groups = [todo[j:j + batch] for j in range(0, len(todo), batch)]
        if groups and self._server is None and any(e.base_url is None for e in self.endpoints):
            self._start_embedded()
        results: list[Result | None] = [None] * len(groups)
        if groups:
            self._on_loop(self._run(groups, results, desc, lambda g: self._embed([texts[i] for i in g],
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
        self._close_loop()
        if self._server is not None:
            self._server.stop()
            self._server = None
        self.cache.close()

    # --- one batch -----------------------------------------------------------------------------------------------

    _runner: asyncio.Runner | None = None  # the event loop of every call (its HTTP clients: `_clients`)
    _runner_pid = 0

    def _on_loop(self, coro):
        """Run `coro` on this teacher's event loop. The loop and its clients (so their open connections) outlive a
        call: a stage asks 64 rows at a time, and a new loop with new connections per call took 1.7x the CPU per
        request (bench/README.md). Idle connections expire after httpx's 5 s keep-alive. A call that fails closes
        them, as `asyncio.run` would; a forked child starts its own."""
        if self._runner is None or self._runner_pid != os.getpid():
            self._runner, self._runner_pid, self._clients = asyncio.Runner(loop_factory=asyncio.new_event_loop), \
                os.getpid(), {}
        try:
            return self._runner.run(coro)
        except BaseException:
            self._close_loop()
            raise

    def _close_loop(self) -> None:
        async def close_clients(clients):
            # a call stopped from outside its tasks (SIGTERM's SystemExit out of the loop) leaves them pending:
            # cancel them first, as asyncio.run does, so none runs on into closed clients
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            for client in clients:
                await client.close()

        runner, self._runner = self._runner, None
        if runner is not None and self._runner_pid == os.getpid():
            try:
                runner.run(close_clients(self._clients.values()))
            finally:
                runner.close()

    async def _run(self, requests, results, desc, answer=None) -> None:
        self._limit = self.make_limit(self.config.max_concurrency)
        self._restart_lock = asyncio.Lock()
        self._last_answer = time.monotonic()
        self._sent_any = False
        self._router = Router(self.endpoints, self.stats)
        task = progress.add(f"{desc}: requests", total=len(requests))

        async def one(i: int) -> None:
            results[i] = await (answer or self.answer)(requests[i])
            progress.advance(task)

        try:
            async with asyncio.TaskGroup() as group:
                for i in range(len(requests)):
                    group.create_task(one(i))
        except* TeacherError as errors:
            raise errors.exceptions[0] from None
        finally:
            progress.remove(task)
        errors = [r.error for r in results if r.error]
        if self._sent_any and len(errors) == len(results) and all(e.startswith("connection") for e in errors):
            where = ", ".join(self._server.base_url if e.base_url is None and self._server else e.name
                              for e in self.endpoints)
            raise TeacherError(f"the teacher at {where} did not answer any of {len(results)} requests ({errors[0]}); "
                               "check that it is running, then rerun: answered requests are cached")

    async def answer(self, request: Request) -> Result:
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

    async def _complete(self, messages: list[dict] | str, params: dict, endpoints: list[Endpoint]) -> Result:
        keys = {e: request_key(e.model, e.name, messages, params) for e in endpoints}
        for key in keys.values():
            if (hit := self.cache.get(key)) is not None:
                self.stats["cache_hits"] += 1
                if self.sender is not None:
                    self.sender.cached(self.desc)
                return result_of(hit, cached=True)
        first = next(iter(keys.values()))
        if first in self.batch_failed:  # its batch answered with an error: the row's drop reason
            return Result(None, error=self.batch_failed[first])
        if self.sender is not None and (taken := self.sender.take(self, first, endpoints[0], messages, params)):
            return taken
        held = None
        if self.budget.on:
            held = self.budget.worst_case(self.prompt_tokens(messages), params)
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
        return result_of(answer)

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
                       else vector_of(d["embedding"]) for d in data]
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
            endpoint = self._router.pick(seed, attempt, endpoints)  # after the wait, so it sees the endpoints' health as it is now
            ok, wait = False, None
            try:
                answer, wait, last = await post(endpoint)
                ok = answer is not None
            finally:
                await self._limit.release(ok)
            self._router.note(endpoint, ok, last)
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
        texts = [choice_text(c, raw_text) for c in choices]
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
        if (logprobs := logprobs_of(choices[0])) is not None:
            answer["logprobs"] = logprobs
        if not raw_text and (calls := tool_calls_of(choices[0])) is not None:
            answer["tool_calls"] = calls
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
            base_url, key = endpoint.base_url, self.api_key(endpoint)
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

    def api_key(self, endpoint: Endpoint) -> str:
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

    def prompt_tokens(self, messages: list[dict] | str) -> int:
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
