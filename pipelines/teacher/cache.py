"""The request cache: one SQLite row per answered teacher request, written as each answer arrives.

WAL mode and a commit per answer mean a SIGKILL loses only requests still in flight; several processes may write one
cache at once (WAL, a 30 s busy timeout, and INSERT OR IGNORE: the first answer for a key wins). The key is sha256 of
{model, base_url, messages, sampling params}; the parser is not in it, so changing a parser reuses answers already
paid for. The schema evolves by numbered migrations recorded in `_migrations` (as sqlite-utils does).
"""

from __future__ import annotations

import errno
import hashlib
import json
import sqlite3
import time
from pathlib import Path


def request_key(model: str, base_url: str, messages: list[dict] | str, params: dict) -> str:
    """The cache key; `messages` is a raw prompt's text for a text completion."""
    payload = {"model": model, "base_url": base_url, "messages": messages, "params": params}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def m001_initial(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE responses (
            key TEXT PRIMARY KEY,
            model TEXT NOT NULL,
            request TEXT NOT NULL,
            text TEXT NOT NULL,
            finish_reason TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            created REAL NOT NULL
        )"""
    )


def m002_endpoint(db: sqlite3.Connection) -> None:
    """Which endpoint of a pool answered (older rows: unknown)."""
    db.execute("ALTER TABLE responses ADD COLUMN endpoint TEXT")


def m003_extra(db: sqlite3.Connection) -> None:
    """What an answer holds besides its text: every choice (`n`) and the token logprobs, as JSON."""
    db.execute("ALTER TABLE responses ADD COLUMN extra TEXT")


def m004_batches(db: sqlite3.Connection) -> None:
    """What each answer cost (batch answers at the batch price), and the provider batches a run submitted: recorded
    before polling starts, so a killed run polls them again instead of paying twice."""
    db.execute("ALTER TABLE responses ADD COLUMN cost REAL")
    db.execute(
        """CREATE TABLE batches (
            id TEXT PRIMARY KEY,
            base_url TEXT NOT NULL,
            path TEXT NOT NULL,
            input_file TEXT NOT NULL,
            keys TEXT NOT NULL,
            status TEXT NOT NULL,
            created REAL NOT NULL,
            finished REAL
        )"""
    )


MIGRATIONS = [m001_initial, m002_endpoint, m003_extra, m004_batches]
EXTRA = ("texts", "logprobs")


class RequestCache:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self._migrate()

    def _migrate(self) -> None:
        self.db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied REAL)")
        done = {row[0] for row in self.db.execute("SELECT name FROM _migrations")}
        for migration in MIGRATIONS:
            if migration.__name__ not in done:
                with self.db:
                    self.db.execute("BEGIN")
                    migration(self.db)
                    self.db.execute("INSERT INTO _migrations VALUES (?, ?)", (migration.__name__, time.time()))

    def get(self, key: str) -> dict | None:
        row = self.db.execute(
            "SELECT text, finish_reason, prompt_tokens, completion_tokens, extra FROM responses WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        answer = dict(zip(("text", "finish_reason", "prompt_tokens", "completion_tokens"), row))
        return {**answer, **json.loads(row[4])} if row[4] else answer

    def put(self, key: str, model: str, request: dict, answer: dict, endpoint: str | None = None,
            cost: float | None = None) -> None:
        try:
            self._insert(key, model, request, answer, endpoint, cost)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:  # the answers before it are kept
                raise OSError(errno.ENOSPC, str(exc), str(self.path)) from exc
            raise

    def _insert(self, key, model, request, answer, endpoint, cost) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO responses (key, model, request, text, finish_reason, prompt_tokens, "
            "completion_tokens, created, endpoint, extra, cost) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (key, model, json.dumps(request, ensure_ascii=False), answer["text"], answer.get("finish_reason"),
             answer.get("prompt_tokens"), answer.get("completion_tokens"), time.time(), endpoint,
             json.dumps(extra, ensure_ascii=False) if (extra := {k: answer[k] for k in EXTRA if k in answer}) else None,
             cost),
        )

    def spent(self, models: list[str], price_in: float, price_out: float) -> tuple[float, int]:
        """What the answers of `models` in this cache cost and how many tokens they took (the budget's spent part);
        answers cached before costs were kept are priced at the given prices."""
        marks = ",".join("?" * len(models))
        cost, tokens = self.db.execute(
            f"SELECT SUM(COALESCE(cost, (COALESCE(prompt_tokens, 0) * ? + COALESCE(completion_tokens, 0) * ?) / 1e6)),"
            f" SUM(COALESCE(prompt_tokens, 0) + COALESCE(completion_tokens, 0)) FROM responses WHERE model IN "
            f"({marks})", (price_in, price_out, *models)).fetchone()
        return cost or 0.0, tokens or 0

    def record_batch(self, batch_id: str, base_url: str, path: str, input_file: str, keys: list[str]) -> None:
        self.db.execute("INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?, 'submitted', ?, NULL)",
                        (batch_id, base_url, path, input_file, json.dumps(keys), time.time()))

    def open_batches(self, base_url: str) -> list[tuple[str, str, list[str]]]:
        """Batches submitted to `base_url` and not settled yet: (id, path, keys), oldest first."""
        rows = self.db.execute("SELECT id, path, keys FROM batches WHERE base_url = ? AND finished IS NULL "
                               "ORDER BY created", (base_url,)).fetchall()
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    def settle_batch(self, batch_id: str, status: str) -> None:
        self.db.execute("UPDATE batches SET status = ?, finished = ? WHERE id = ?", (status, time.time(), batch_id))

    def __len__(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    @classmethod
    def read_only(cls, path: Path) -> "RequestCache":
        """The cache at `path` as an immutable snapshot: no locks, no WAL (what was checkpointed into the file), no
        writes; safe to read from many processes, on a shared filesystem too."""
        cache = cls.__new__(cls)
        cache.path = Path(path)
        cache.db = sqlite3.connect(read_only_uri(path, immutable=True), uri=True, check_same_thread=False)
        return cache

    def close(self) -> None:
        self.db.close()


def read_only_uri(path: Path, immutable: bool = False) -> str:
    """SQLite's URI for reading `path` only (percent-encoded: a run dir may hold `?`, `#` or `%`)."""
    return f"{Path(path).resolve().as_uri()}?mode=ro" + ("&immutable=1" if immutable else "")
