"""Batch mode (`teacher.mode=batch`): a stage's uncached requests go through the provider's Batch API (OpenAI's
`/v1/files` and `/v1/batches`, through the `openai` client) instead of one HTTP request each.

`answer_in_batches(teacher, requests)` works in rounds. In each, the teacher's own answering logic runs with the
network replaced by a collector (`senders.Collect`): every request it would send is gathered, with its cache key.
Those requests are written as JSONL (`custom_id` = the cache key), split under `batch_max_requests` and
`batch_max_bytes`, uploaded and submitted. Each batch id is recorded in the request cache before polling starts.
Polling backs off from `batch_poll_s` to `batch_poll_max_s` and shows a progress line. The output and error files
are read back into the same cache the online path fills, so the online pass that follows, reruns and `--fresh`
replays find every answer whichever mode gave it. A structured request whose answer fails its schema is re-asked in
the next round, as online.

- A killed run polls the batches it recorded instead of submitting again; a batch of the very same lines that a run
  submitted but did not live to record (found by the `input_sha256` in its metadata) is polled, not paid twice.
- An expired, failed or cancelled batch, or output lines that cannot be read, leave requests unanswered. Those are
  submitted again (`batch_resubmits` times, counted `batch_resubmitted`), or with `batch_fallback=online` left to the
  online pass (`batch_to_online`); past that they fail with the batch's status.
- A request the provider answered with an error becomes that row's drop reason (`http 400: ...`).
- Cost is counted at `batch_discount` times the online price, with `cost_online` beside it.
- The budget reserves each request's worst case before it is submitted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

from pipelines.core import progress
from pipelines.core.errors import TeacherError
from pipelines.teacher.senders import Collect

TERMINAL = ("completed", "expired", "failed", "cancelled")
PATHS = {"chat": "/v1/chat/completions", "completion": "/v1/completions"}


def answer_in_batches(teacher, requests: list, desc: str) -> None:
    """Fill the cache with the answers `requests` need, through batches; the online pass then reads them."""
    answering = teacher.sender  # senders.AfterBatch: what the online pass may send
    for _ in range(teacher.config.reasks + 2):
        saved = teacher.stats.copy()  # the collecting pass answers from the cache: not counted twice
        collect = teacher.sender = Collect(answering.online_only)
        try:
            asyncio.run(_collect(teacher, requests))
        finally:
            teacher.sender = answering
            teacher.stats = saved
        pending = collect.pending
        if not pending:
            return
        Batches(teacher, desc, answering.online_only).answer(pending)
        if teacher.budget.refused:  # the online pass counts what is left unsent; chat_many says how to go on
            teacher.budget.refused = 0
            return


async def _collect(teacher, requests: list) -> None:
    await asyncio.gather(*(teacher.answer(r) for r in requests))


class Batches:
    def __init__(self, teacher, desc: str, online_only: set[str]):
        import openai

        self.teacher, self.config, self.desc, self.online_only = teacher, teacher.config, desc, online_only
        self.endpoint = teacher.endpoints[0]
        self._held: dict = {}  # key -> its budget reservation, until its answer is read back
        self.client = openai.OpenAI(base_url=self.endpoint.base_url, api_key=teacher.api_key(self.endpoint),
                                    max_retries=self.config.max_retries, timeout=self.config.timeout_s)

    def answer(self, pending: dict) -> None:
        """Answer every pending request (key -> (endpoint, messages, params)) into the cache, or record its error."""
        cache = self.teacher.cache
        resumed = [(bid, path, [k for k in keys if k in pending])
                   for bid, path, keys in cache.open_batches(self.endpoint.base_url)]
        resumed = [r for r in resumed if r[2]]
        if resumed:
            self.teacher.stats["batches_resumed"] += len(resumed)
            self.teacher.log(f"{self.desc}: polling {len(resumed)} batch(es) a killed run submitted")
            self._settle(resumed, pending)
        left = [k for k in pending if cache.get(k) is None and k not in self.teacher.batch_failed]
        status = "completed"
        for attempt in range(self.config.batch_resubmits + 1):
            if not left:
                return
            if attempt:
                if self.config.batch_fallback == "online":
                    self.online_only.update(left)
                    self.teacher.stats["batch_to_online"] += len(left)
                    return
                self.teacher.stats["batch_resubmitted"] += len(left)
            submitted = [self._submit(path, chunk, pending) for path, chunk in self._chunks(left, pending)]
            left, status = self._settle([s for s in submitted if s is not None], pending)
            if self.teacher.budget.refused:
                return
        for key in left:
            self.teacher.batch_failed[key] = f"batch {status}: no answer after {self.config.batch_resubmits + 1} " \
                                              f"submissions"
            self.teacher.stats["failures"] += 1

    # --- submit ----------------------------------------------------------------------------------------------------

    def _line(self, key: str, pending: dict) -> tuple[str, str]:
        endpoint, messages, params = pending[key]
        kind = "completion" if isinstance(messages, str) else "chat"
        body = {"model": endpoint.model, ("prompt" if kind == "completion" else "messages"): messages, **params}
        return PATHS[kind], json.dumps({"custom_id": key, "method": "POST", "url": PATHS[kind], "body": body},
                                       ensure_ascii=False)

    def _chunks(self, keys: list[str], pending: dict):
        """(path, keys) under the request and byte limits, each request's worst case reserved in the budget."""
        by_path: dict[str, list[tuple[str, int]]] = {}
        budget = self.teacher.budget
        for key in keys:
            if budget.on:
                _, messages, params = pending[key]
                held = budget.worst_case(self.teacher.prompt_tokens(messages), params, batch=True)
                if budget.reserve(held) != "held":  # what is submitted is held until read back: no waiting
                    continue
                self._held[key] = held
            path, line = self._line(key, pending)
            by_path.setdefault(path, []).append((key, len(line.encode()) + 1))
        for path, items in by_path.items():
            chunk, size = [], 0
            for key, n in items:
                if chunk and (len(chunk) >= self.config.batch_max_requests or size + n > self.config.batch_max_bytes):
                    yield path, chunk
                    chunk, size = [], 0
                chunk.append(key)
                size += n
            if chunk:
                yield path, chunk

    def _submit(self, path: str, keys: list[str], pending: dict) -> tuple[str, str, list[str]] | None:
        import openai

        data = ("\n".join(self._line(k, pending)[1] for k in keys) + "\n").encode()
        digest = hashlib.sha256(data).hexdigest()
        try:
            batch = self._submitted_before(digest)
            if batch is None:
                uploaded = self.client.files.create(file=("requests.jsonl", data), purpose="batch")
                batch = self.client.batches.create(input_file_id=uploaded.id, endpoint=path, completion_window="24h",
                                                   metadata={"convoforge": self.desc[:100], "input_sha256": digest})
            else:
                self.teacher.stats["batches_adopted"] += 1
        except openai.NotFoundError:
            raise TeacherError(f"{self.endpoint.base_url} has no Batch API (404 on /v1/files or /v1/batches): vLLM's "
                               f"OpenAI-compatible server, for one, does not offer it; set mode=online") from None
        except openai.APIError as exc:
            raise TeacherError(f"could not submit a batch to {self.endpoint.base_url}: {exc}; rerun to try again "
                               f"(answered requests are cached)") from None
        self.teacher.cache.record_batch(batch.id, self.endpoint.base_url, path, batch.input_file_id, keys)
        self.teacher.stats["batches"] += 1
        self.teacher.stats["requests"] += len(keys)
        return batch.id, path, keys

    def _submitted_before(self, digest: str):
        """A batch of exactly these lines that is still useful (in progress or completed), submitted by a run killed
        before it recorded the id, or by another run: polled instead of paid for twice."""
        for batch in self.client.batches.list(limit=100).data:
            if (batch.metadata or {}).get("input_sha256") == digest and batch.status not in ("failed", "expired",
                                                                                               "cancelled"):
                return batch
        return None

    # --- poll and read back ----------------------------------------------------------------------------------------

    def _settle(self, batches: list[tuple[str, str, list[str]]], pending: dict) -> tuple[list[str], str]:
        """Poll `batches` until each ends; read their answers into the cache. (keys still unanswered, last status)"""
        left, status = [], "completed"
        if not batches:
            return left, status
        task = progress.add(f"{self.desc}: batch requests", total=sum(len(k) for _, _, k in batches))
        waiting = {bid: (path, keys) for bid, path, keys in batches}
        done_counts: dict[str, int] = {}
        wait = self.config.batch_poll_s
        try:
            while waiting:
                for bid in list(waiting):
                    batch = self._retrieve(bid)
                    counts = batch.request_counts
                    done = (counts.completed + counts.failed) if counts else 0
                    progress.advance(task, done - done_counts.get(bid, 0))
                    done_counts[bid] = done
                    if batch.status in TERMINAL:
                        path, keys = waiting.pop(bid)
                        left += self._read_back(batch, keys, pending)
                        self.teacher.cache.settle_batch(bid, batch.status)
                        if batch.status != "completed":
                            status = batch.status
                            self.teacher.stats[f"batches_{batch.status}"] += 1
                if waiting:
                    time.sleep(wait)
                    wait = min(wait * 1.5, self.config.batch_poll_max_s)
        finally:
            progress.remove(task)
        return left, status

    def _retrieve(self, batch_id: str):
        import openai

        for attempt in range(self.config.max_retries + 1):
            try:
                return self.client.batches.retrieve(batch_id)
            except openai.NotFoundError:
                raise TeacherError(f"batch {batch_id} is unknown to {self.endpoint.base_url}: was the endpoint or "
                                   f"key changed since it was submitted?") from None
            except openai.APIError as exc:
                if attempt == self.config.max_retries:
                    raise TeacherError(f"could not poll batch {batch_id} at {self.endpoint.base_url}: {exc}; rerun "
                                       f"to poll it again") from None
                time.sleep(min(2 ** attempt * self.config.backoff_s, 60))

    def _read_back(self, batch, keys: list[str], pending: dict) -> list[str]:
        """Cache every answered line, record every per-request error; the keys with neither."""
        teacher, seen = self.teacher, set()
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            for raw in self.client.files.content(file_id).text.splitlines():
                if not raw.strip():
                    continue
                try:
                    line = json.loads(raw)
                    key = line["custom_id"]
                except (ValueError, KeyError, TypeError):
                    teacher.stats["batch_malformed_lines"] += 1
                    continue
                if key not in pending or key in seen:
                    continue
                response = line.get("response") or {}
                answer = None
                if response.get("status_code") == 200:
                    endpoint, messages, params = pending[key]
                    answer, _ = teacher.read_answer(response.get("body"), messages, batch=True)
                    if answer is None:  # unreadable: submitted again, reserving again
                        teacher.stats["batch_malformed_lines"] += 1
                        teacher.budget.release(self._held.pop(key, None))
                        continue
                    teacher.store(key, endpoint, messages, params, answer)
                else:
                    teacher.batch_failed[key] = _error_text(line)
                    teacher.stats["failures"] += 1
                    teacher.stats["errors_batch_request"] += 1
                teacher.budget.release(self._held.pop(key, None), answer)
                seen.add(key)
        missing = [k for k in keys if k not in seen and k in pending]
        for key in missing:  # its reservation goes back; a resubmission reserves again
            teacher.budget.release(self._held.pop(key, None))
        return missing


def _error_text(line: dict) -> str:
    response = line.get("response") or {}
    body = response.get("body") if isinstance(response.get("body"), dict) else {}
    message = (body.get("error") or {}).get("message") if isinstance(body.get("error"), dict) else None
    error = line.get("error") if isinstance(line.get("error"), dict) else {}
    status = response.get("status_code")
    text = message or error.get("message") or "no answer"
    return f"http {status}: {text[:200]}" if status else f"batch error {error.get('code') or ''}: {text[:200]}"
