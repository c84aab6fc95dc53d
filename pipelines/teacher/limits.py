"""How hard the client may push: the adaptive concurrency limit (AIMD on 429s), the waits that rate-limit headers
ask for, retry backoff, and the pool's router (a weighted pick that rests failing endpoints)."""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import random
import re
import time
from collections import Counter

from pipelines.teacher.config import Endpoint

RETRYABLE_STATUS = {408, 409, 429, 500, 502, 503, 504}
COOL_AFTER, COOL_DOWN_S = 3, 30.0  # a pool endpoint failing 3 times in a row rests for 30 s


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


class Router:
    """Picks the endpoint of each try: a weighted hash of the request (the same pick on a rerun), the next pick on a
    retry; an endpoint failing COOL_AFTER times in a row (not 429s) rests for COOL_DOWN_S while the others take its
    share."""

    def __init__(self, endpoints: list[Endpoint], stats: Counter):
        self.endpoints, self.stats = endpoints, stats
        self.failing: Counter = Counter()
        self.cooling: dict[Endpoint, float] = {}

    def pick(self, seed: str, attempt: int, endpoints: list[Endpoint]) -> Endpoint:
        """A weighted pick among the endpoints not cooling down (all of them when every one is)."""
        if len(endpoints) == 1:
            return endpoints[0]
        now = time.monotonic()
        healthy = [e for e in endpoints if self.cooling.get(e, 0.0) <= now] or endpoints
        point = int(hashlib.sha256(f"{seed}:{attempt}".encode()).hexdigest()[:12], 16) / 16**12
        total = sum(e.weight for e in healthy)
        for endpoint in healthy:
            point -= endpoint.weight / total
            if point < 0:
                return endpoint
        return healthy[-1]

    def note(self, endpoint: Endpoint, ok: bool, error: str) -> None:
        """Track an endpoint's health: COOL_AFTER failures in a row (not 429s) rest it for COOL_DOWN_S."""
        status = http_status(error)
        if ok or status == 429 or (status is not None and status not in RETRYABLE_STATUS):  # the request's fault
            self.failing[endpoint] = 0
            return
        self.failing[endpoint] += 1
        if self.failing[endpoint] >= COOL_AFTER and len(self.endpoints) > 1:
            self.cooling[endpoint] = time.monotonic() + COOL_DOWN_S
            self.failing[endpoint] = 0
            self.stats["endpoint_cooldowns"] += 1
