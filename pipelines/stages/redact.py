"""Redact: replace e-mail addresses, phone numbers, IP addresses and secrets with typed placeholders.

Secrets are API keys of the common providers (OpenAI, Anthropic, AWS, GitHub, Google, Slack, Hugging Face, Stripe),
private key blocks, JWTs and bearer tokens. `scope` picks the rows: "chat_logs" (the default: rows from formats that
record real users, `connectors.*.CHAT_LOG`), "all" or "none". Patterns run as polars (Rust regex) expressions over
whole batches, over the content, `meta` (fields a converter kept) and the `raw` text of quarantined records; counts
per placeholder go to the report, and a changed row gets a new id (ids hash the content). `Ingest` runs it on each
batch before the batch is written, so no secret of the input reaches the run dir.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

from connectors.detect import FORMATS
from pipelines.core.errors import ConfigError
from pipelines.core.stage import DROP, Context, MapStage
from schemas import conversation_id, preference_id, prompt_id, text_id

# (name, Rust regex, replacement): secrets first, so a key that looks like a phone number is named as a key.
PATTERNS = (
    ("private_key", r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----", "<PRIVATE_KEY>"),
    ("anthropic_key", r"\bsk-ant-[A-Za-z0-9_-]{20,}", "<SECRET_ANTHROPIC_KEY>"),
    ("openai_key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}", "<SECRET_OPENAI_KEY>"),
    ("stripe_key", r"\b[sr]k_(?:live|test)_[A-Za-z0-9]{16,}", "<SECRET_STRIPE_KEY>"),
    ("aws_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", "<SECRET_AWS_KEY>"),
    ("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})", "<SECRET_GITHUB_TOKEN>"),
    ("google_key", r"\bAIza[0-9A-Za-z_-]{35}", "<SECRET_GOOGLE_KEY>"),
    ("slack_token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}", "<SECRET_SLACK_TOKEN>"),
    ("hf_token", r"\bhf_[A-Za-z0-9]{30,}", "<SECRET_HF_TOKEN>"),
    ("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}", "<SECRET_JWT>"),
    ("bearer_token", r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/-]{16,}=*", "${1}<SECRET_BEARER_TOKEN>"),
    ("email", r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b", "<EMAIL>"),
    ("ip_address", r"\b(?:(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}"
                   r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\b", "<IP_ADDRESS>"),
    ("ip_address", r"\b(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}\b"
                   r"|\b(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,5})?\b", "<IP_ADDRESS>"),
    # International numbers written with "+", and North American 3-3-4 numbers; plain sums like 1000-450-300 are not.
    ("phone", r"\+\d{1,3}[ .-]?\(?\d{1,4}\)?(?:[ .-]\d{2,4}){2,4}\b"
              r"|(?:\(\d{3}\) ?|\b\d{3}[ .-])\d{3}[ .-]\d{4}\b", "<PHONE>"),
)
CHAT_LOGS = tuple(f.NAME for f in FORMATS if getattr(f, "CHAT_LOG", False))
CONTENT_COLUMNS = {"messages": "messages", "chosen": "messages", "rejected": "messages", "prompt": "text",
                   "text": "text"}  # what a row's id hashes
# and what else may hold a record's text: fields a converter kept in `meta`, a quarantined record as read
TEXT_COLUMNS = {**CONTENT_COLUMNS, "meta": "text", "raw": "text"}


SCOPES = ("chat_logs", "all", "none")


def redact_setting():
    """The `redact` field of a recipe that ingests user files."""
    return field(default="chat_logs", metadata={
        "help": "redact personal data and secrets in: chat_logs (rows of chat-log formats), all rows, or none",
        "choices": SCOPES})


@dataclass
class Redact(MapStage):
    scope: str = "chat_logs"
    name = "redact"
    requires = ("source",)

    def __post_init__(self):
        if self.scope not in SCOPES:
            raise ConfigError(f"redact scope {self.scope!r}: expected chat_logs, all or none")

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        columns = [c for c in TEXT_COLUMNS if c in batch.columns]
        if self.scope == "none" or not batch.height or not columns:
            return batch
        chosen = pl.lit(True) if self.scope == "all" else \
            pl.col("source").str.split(":").list.first().is_in(CHAT_LOGS)
        if DROP in batch.columns:  # a record quarantined unread may come from a chat log: its raw text is redacted too
            chosen = chosen | pl.col(DROP).is_not_null()
        mask = batch.select(chosen.alias("m")).to_series()
        redacted = batch
        for name, pattern, replacement in PATTERNS:  # in order, so a text is counted under the first name it gets
            found = redacted.filter(mask).select(self._matches(c, pattern) for c in columns).sum_horizontal().item()
            if found:
                ctx.count(f"redacted_{name}", found)
                redacted = redacted.with_columns(
                    pl.when(mask).then(self._replaced(c, pattern, replacement)).otherwise(pl.col(c)).alias(c)
                    for c in columns)
        return self._new_ids(batch, redacted)

    @staticmethod
    def _matches(column: str, pattern: str) -> pl.Expr:
        if TEXT_COLUMNS[column] == "text":
            return pl.col(column).str.count_matches(pattern).sum().fill_null(0)
        return pl.col(column).list.eval(pl.element().struct.field("content").str.count_matches(pattern)) \
            .list.sum().sum()

    @staticmethod
    def _replaced(column: str, pattern: str, replacement: str) -> pl.Expr:
        if TEXT_COLUMNS[column] == "text":
            return pl.col(column).str.replace_all(pattern, replacement)
        return pl.col(column).list.eval(
            pl.element().struct.with_fields(pl.field("content").str.replace_all(pattern, replacement)))

    @staticmethod
    def _new_ids(before: pl.DataFrame, after: pl.DataFrame) -> pl.DataFrame:
        """Ids hash the content, so rows that changed get theirs recomputed."""
        if "id" not in after.columns:
            return after
        columns = [c for c in CONTENT_COLUMNS if c in after.columns]
        kept = after[DROP].is_null().to_list() if DROP in after.columns else [True] * after.height
        changed = [i for i, (a, b) in enumerate(zip(before.select(columns).iter_rows(),
                                                    after.select(columns).iter_rows())) if a != b and kept[i]]
        if not changed:
            return after
        ids = after["id"].to_list()
        prompt_ids = after["prompt_id"].to_list() if "prompt_id" in after.columns else None
        for i in changed:
            row = after.row(i, named=True)
            if "chosen" in row:
                ids[i] = preference_id(row["chosen"], row["rejected"])
                prompt_ids[i] = prompt_id(row["prompt"])
            elif "messages" in row:
                ids[i] = conversation_id(row["messages"])
            else:
                ids[i] = text_id(row["text"])
        out = after.with_columns(pl.Series("id", ids, dtype=pl.String))
        return out.with_columns(pl.Series("prompt_id", prompt_ids, dtype=pl.String)) if prompt_ids else out
