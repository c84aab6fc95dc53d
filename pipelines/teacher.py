"""The teacher client: the only module that opens sockets (and, through server.py, processes).

`Teacher.chat_many(requests)` answers a list of chat requests against any OpenAI-compatible endpoint and returns
results in input order: cache first, then at most `max_concurrency` requests in flight (asyncio +
`openai.AsyncOpenAI`), retried with exponential backoff and jitter on 429, 5xx, timeouts and dropped connections,
honouring `Retry-After`. A request that still fails becomes a `Result` with an `error`, never an exception; an
endpoint that answers nothing at all raises `TeacherError`. With `base_url=None` the embedded SmolLM2 server is
started on the first cache miss, so a fully cached rerun never starts it.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from pipelines import progress
from pipelines.cache import RequestCache, request_key
from pipelines.errors import TeacherError

EMBEDDED = "embedded"


@dataclass(frozen=True)
class TeacherConfig:
    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible URL; empty = embedded SmolLM2"})
    model: str = field(default="SmolLM2-135M-Instruct", metadata={"help": "model name sent to the endpoint"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "environment variable holding the key"})
    max_concurrency: int = field(default=8, metadata={"help": "requests in flight at once"})
    max_retries: int = field(default=4, metadata={"help": "retries per request on 429/5xx/timeouts"})
    timeout_s: float = field(default=300.0, metadata={"help": "per-request timeout in seconds"})

    def identity(self) -> dict:
        """What the answers depend on (fingerprints and cache keys); never the key itself."""
        return {"base_url": self.base_url or EMBEDDED, "model": self.model}


@dataclass(frozen=True)
class Request:
    messages: list[dict]
    params: dict  # max_tokens, temperature, top_p, stop, seed


@dataclass
class Result:
    text: str | None
    error: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False


RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}


class Teacher:
    def __init__(self, config: TeacherConfig, cache_path: Path, server_log: Path, log=print):
        self.config = config
        self.cache = RequestCache(cache_path)
        self.server_log = server_log
        self.log = log
        self.stats: Counter = Counter()
        self._server = None
        self._endpoint: tuple[str, str, str] | None = None  # base_url, model, api key

    def chat_many(self, requests: list[Request], desc: str = "teacher") -> list[Result]:
        """Answer `requests` in order; cached answers are not sent again."""
        ident = self.config.identity()
        keys = [request_key(ident["model"], ident["base_url"], r.messages, r.params) for r in requests]
        results: list[Result | None] = [None] * len(requests)
        for i, key in enumerate(keys):
            hit = self.cache.get(key)
            if hit is not None:
                results[i] = Result(hit["text"], None, hit["finish_reason"], hit["prompt_tokens"] or 0,
                                    hit["completion_tokens"] or 0, cached=True)
                self.stats["cache_hits"] += 1
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            self._ensure_endpoint()
            asyncio.run(self._send_all(requests, keys, todo, results, desc))
            errors = [results[i].error for i in todo]
            if all(e and e.startswith("connection") for e in errors):
                raise TeacherError(
                    f"the teacher at {self._endpoint[0]} did not answer any of {len(todo)} requests "
                    f"({errors[0]}); check that it is running, then rerun: answered requests are cached"
                )
        return results

    async def _send_all(self, requests, keys, todo, results, desc) -> None:
        import openai

        base_url, model, api_key = self._endpoint
        client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=0,
                                    timeout=self.config.timeout_s)
        limit = asyncio.Semaphore(self.config.max_concurrency)
        task = progress.add(f"{desc}: requests", total=len(todo))

        async def one(i: int) -> None:
            async with limit:
                results[i] = await self._send(client, model, requests[i], keys[i])
            progress.advance(task)

        try:
            await asyncio.gather(*(one(i) for i in todo))
        finally:
            progress.remove(task)
            await client.close()

    async def _send(self, client, model: str, request: Request, key: str) -> Result:
        import openai

        params = dict(request.params)
        last = "unknown"
        for attempt in range(self.config.max_retries + 1):
            if attempt:
                self.stats["retries"] += 1
            try:
                self.stats["requests"] += 1
                response = await client.chat.completions.create(model=model, messages=request.messages, **params)
            except openai.APIStatusError as exc:
                last = f"http {exc.status_code}: {str(exc.message)[:200]}"
                if exc.status_code not in RETRYABLE_STATUS:
                    break
                await asyncio.sleep(_backoff(attempt, exc.response.headers.get("retry-after")))
                continue
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                kind = "timeout" if isinstance(exc, openai.APITimeoutError) else "connection"
                last = f"{kind}: {exc.__class__.__name__}"
                await asyncio.sleep(_backoff(attempt, None))
                continue
            choice = response.choices[0] if response.choices else None
            if choice is None or choice.message.content is None:
                last = "malformed: response without message content"
                continue
            usage = response.usage
            answer = {"text": choice.message.content, "finish_reason": choice.finish_reason,
                      "prompt_tokens": usage.prompt_tokens if usage else 0,
                      "completion_tokens": usage.completion_tokens if usage else 0}
            self.cache.put(key, self.config.identity()["model"], {"messages": request.messages, **params}, answer)
            self.stats["tokens_in"] += answer["prompt_tokens"]
            self.stats["tokens_out"] += answer["completion_tokens"]
            return Result(answer["text"], None, answer["finish_reason"], answer["prompt_tokens"],
                          answer["completion_tokens"])
        self.stats["failures"] += 1
        return Result(None, error=last)

    def _ensure_endpoint(self) -> None:
        if self._endpoint is not None:
            return
        if self.config.base_url:
            self._endpoint = (self.config.base_url, self.config.model, self._api_key())
            return
        from pipelines.server import EmbeddedServer

        self._server = EmbeddedServer(self.server_log, log=self.log).start()
        self._endpoint = (self._server.base_url, self._server.model, "unused")

    def _api_key(self) -> str:
        key = os.environ.get(self.config.api_key_env)
        if key:
            return key
        host = urlparse(self.config.base_url).hostname or ""
        if host in ("127.0.0.1", "localhost", "::1"):
            return "EMPTY"  # local vLLM / TGI / transformers servers take any key
        raise TeacherError(f"no API key for {self.config.base_url}: set the {self.config.api_key_env} "
                           f"environment variable (or teacher.api_key_env to the variable that holds it)")

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        self._endpoint = None
        self.cache.close()


def _backoff(attempt: int, retry_after: str | None) -> float:
    """Seconds to wait before retry `attempt`+1: Retry-After when given, else 0.5 * 2^attempt with jitter, cap 30."""
    if retry_after:
        try:
            return min(float(retry_after), 120.0)
        except ValueError:
            pass
    return min(30.0, 0.5 * 2 ** attempt) * (0.5 + random.random())
