"""The teacher's settings: `TeacherConfig` (the `teacher.*` / `judge.*` / `embedder.*` keys of a recipe) and the
pool's `Endpoint`s. Recipes import this, not the client."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs

from pipelines.core.errors import ConfigError
from pipelines.teacher.server import EmbeddedConfig
from pipelines.teacher.weights import display_name

EMBEDDED = "embedded"
MAX_WAIT_S = 300.0  # the longest a rate-limit header may make a request wait


@dataclass(frozen=True)
class Endpoint:
    base_url: str | None  # None: the embedded server
    model: str
    weight: float = 1.0
    key_env: str = "OPENAI_API_KEY"

    @property
    def name(self) -> str:
        return self.base_url or EMBEDDED


def pool_problem(pool: tuple[str, ...]) -> str | None:
    """Checked when the config is resolved: a malformed entry raises ConfigError, a weight must be > 0."""
    for spec in pool:
        if not 0 < parse_endpoint(spec, "").weight < float("inf"):
            return f"the weight of {spec!r} must be greater than 0"
    return None


@dataclass(frozen=True)
class TeacherConfig:
    base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible URL; empty = the embedded server"})
    model: str = field(default="SmolLM2-135M-Instruct", metadata={"help": "model name sent to base_url"})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "environment variable holding the key"})
    pool: tuple[str, ...] = field(default=(), metadata={"help": "more endpoints: URL?model=M&weight=W&key_env=VAR",
                                                        "check": pool_problem})
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
        return [first, *(parse_endpoint(spec, self.api_key_env) for spec in self.pool)]

    def identity(self) -> dict:
        """What the answers depend on (fingerprints and cache keys); never the key itself."""
        ident = {"base_url": self.base_url or EMBEDDED, "model": self.endpoints()[0].model}
        if self.pool:
            ident["pool"] = [[e.name, e.model, e.weight] for e in self.endpoints()[1:]]
        return ident


def parse_endpoint(spec: str, default_key_env: str) -> Endpoint:
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
