"""The wire format: what a stage asks (`Request`), what it gets back (`Result`), and how an OpenAI-compatible answer
body becomes the dict the cache keeps and a `Result` again."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Callable

EMBED_PARAMS = {"embedding": True}  # in the cache key: an embedding is never mistaken for a completion of the text


@dataclass(frozen=True)
class Request:
    """A chat request (`messages`), or with `prompt` a raw text completion on `/v1/completions` (no chat template:
    the caller writes the template, as Magpie does). `params` go into the body as they are: max_tokens,
    temperature, top_p, seed, stop, n (more choices: `Result.texts`), logprobs and top_logprobs (`Result.logprobs`),
    tools and tool_choice (`Result.tool_calls`); all of them are in the cache key."""

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
    tool_calls: list[dict] | None = None  # first choice's calls, asked with `tools`: [{"name", "arguments"}]


def vector_of(value: str):
    """A float32 vector from its base64 bytes (how the cache stores embeddings, and `encoding_format=base64`)."""
    import numpy as np

    return np.frombuffer(base64.b64decode(value), dtype=np.float32).copy()


def choice_text(choice: dict, raw_text: bool) -> str | None:
    """A choice's text: `text` of a raw completion, `message.content` of a chat answer."""
    if raw_text:
        return choice.get("text")
    message = choice.get("message")
    if not isinstance(message, dict):
        return None
    if message.get("content") is None and message.get("tool_calls"):
        return ""  # an answer that is calls only
    return message.get("content")


def tool_calls_of(choice: dict) -> list[dict] | None:
    """A chat answer's tool calls as [{"name", "arguments"}], the arguments as the endpoint sent them (a JSON
    string in OpenAI's shape); None when it made none."""
    message = choice.get("message")
    calls = message.get("tool_calls") if isinstance(message, dict) else None
    if not isinstance(calls, list) or not calls:
        return None
    return [{"name": c["function"].get("name"), "arguments": c["function"].get("arguments")} for c in calls
            if isinstance(c, dict) and isinstance(c.get("function"), dict)]


def logprobs_of(choice: dict) -> list[dict] | None:
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


def result_of(answer: dict, cached: bool = False) -> Result:
    """A Result from an answer as `_post` makes it and the cache stores it."""
    return Result(answer["text"], None, answer.get("finish_reason"), answer.get("prompt_tokens") or 0,
                  answer.get("completion_tokens") or 0, cached=cached, texts=answer.get("texts") or [answer["text"]],
                  logprobs=answer.get("logprobs"), tool_calls=answer.get("tool_calls"))
