"""What Ray workers sending one teacher stage share: one budget and each endpoint's rate-limit state.

`Ledger` runs as one Ray actor per teacher stage on Ray (`pipelines.engines.teachers`), started by the driver with
what the run had spent before the stage (from the run's request cache, as `Budget.refresh` reads it):
- the budget: a worker leases the worst case of up to `LEASE` requests in one round trip, draws each request's
  worst case from it before sending, and gives back what is left with what the answers cost on its next round trip
  (`LedgerBudget`, the same `Budget` arithmetic held in one place), so `max_cost` and `max_tokens` hold across
  workers exactly as in one process: about one round trip per `LEASE` requests when a budget is set, none without;
- rate limits: a worker that gets a 429 tells the ledger under the names of its endpoints, with the wait the
  server asked for; every worker asks the ledger for news every `SYNC_S` while it sends and, for an endpoint it
  uses, halves its concurrency and pauses until then (`SharedLimit`), as it would for its own 429.

If the ledger dies, the next call raises `TeacherError`: the worker sends nothing more, the stage stops with one
line, nothing was sent without a reservation, and a rerun resumes (answers are in the cache shards).
"""

from __future__ import annotations

import asyncio
import time

from pipelines.core.errors import TeacherError
from pipelines.teacher.budget import Budget, Reservation
from pipelines.teacher.limits import AdaptiveLimit

SYNC_S = 0.2  # how often a worker asks the ledger about other workers' 429s
LEASE = 16  # requests' worst case a worker holds per round trip to the ledger
WAIT_LIMIT_S = 60.0  # waiting this long for room in the budget counts as no room
LOST = ("the budget and rate-limit ledger of this stage (a Ray actor) is gone: its workers sent nothing more; rerun "
        "to resume, answered requests are cached")


class Ledger:
    """The shared state (a Ray actor's class: `ray.remote(Ledger)`)."""

    def __init__(self, budgets: dict[str, tuple]):
        """`budgets`: role -> (its TeacherConfig, cost spent so far, tokens spent so far)."""
        self.budgets = {}
        for role, (config, cost, tokens) in budgets.items():
            self.budgets[role] = Budget(config, None, [], role)
            self.budgets[role].cost, self.budgets[role].tokens = cost, tokens
        self.throttles: list[tuple[frozenset, float]] = []  # each 429 a worker reported: (its endpoints, until)

    def settle(self, role: str, returned: Reservation, used: Reservation, want: Reservation | None,
               lease: int) -> tuple[str, Reservation]:
        """Take back what a worker held and no longer needs, count what its answers cost, then lease it the worst
        case of up to `lease` requests like `want` (as many as fit, at least one): (the verdict, what it holds)."""
        budget = self.budgets[role]
        budget.release(returned, {"cost": used.cost, "prompt_tokens": used.tokens, "completion_tokens": 0})
        if want is None:
            return "settled", Reservation(0.0, 0)
        for n in sorted({lease, max(1, lease // 4), 1}, reverse=True):
            block = Reservation(want.cost * n, want.tokens * n)
            if budget.reserve(block) == "held":
                return "held", block
        return budget.reserve(want), Reservation(0.0, 0)

    def spent(self, role: str) -> tuple[float, float]:
        return self.budgets[role].cost, self.budgets[role].tokens

    def throttle(self, endpoints: list[str], until: float) -> None:
        self.throttles.append((frozenset(endpoints), until))

    def news(self, endpoints: list[str]) -> tuple[float, int]:
        """(the latest pause asked for on any of these endpoints, wall clock; how many 429s they have had)."""
        mine = [until for names, until in self.throttles if names & set(endpoints)]
        return max(mine, default=0.0), len(mine)


def _get(ref):
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayActorError:
        raise TeacherError(LOST) from None


class LedgerBudget(Budget):
    """A worker's budget, leased from the stage's ledger: one round trip holds the worst case of up to `LEASE`
    requests, each request draws its own from the lease, and what answered requests really cost goes back with the
    next round trip (or `flush`). Until then the ledger counts it as still held, so the total can only be
    overestimated, never overspent. Waiting more than `WAIT_LIMIT_S` for room (a killed worker's lease is never
    given back) counts as "never": the stage stops with the budget's line, and a rerun's ledger starts from the
    cache."""

    def __init__(self, ledger, config, role: str):
        super().__init__(config, None, [], role)
        self.ledger = ledger
        self.lease = Reservation(0.0, 0)  # held in the ledger, not drawn yet
        self.settled = Reservation(0.0, 0)  # drawn by requests that have ended: to give back
        self.used = Reservation(0.0, 0)  # what those requests cost
        self.waiting_since: float | None = None

    def refresh(self) -> None:  # what is spent lives in the ledger; a new call starts from a clean lease
        self.refused = 0
        self.flush()

    def reserve(self, want: Reservation) -> str:
        if self.lease.cost >= want.cost - 1e-12 and self.lease.tokens >= want.tokens:
            self.lease = self.lease - want
            return "held"
        returned, self.settled = self.settled + self.lease, Reservation(0.0, 0)
        used, self.used, self.lease = self.used, Reservation(0.0, 0), Reservation(0.0, 0)
        verdict, granted = _get(self.ledger.settle.remote(self.role, returned, used, want, LEASE))
        if verdict == "held":
            self.lease, self.waiting_since = granted - want, None
        elif verdict == "wait":
            self.waiting_since = self.waiting_since or time.monotonic()
            if time.monotonic() - self.waiting_since > WAIT_LIMIT_S:
                verdict = "never"
        self.refused += verdict == "never"
        return verdict

    def release(self, held: Reservation | None, answer: dict | None = None) -> None:
        if held is None:
            return
        self.settled = self.settled + held
        if answer is not None:
            self.used = self.used + Reservation(answer["cost"], answer["prompt_tokens"] + answer["completion_tokens"])

    def flush(self) -> None:
        """Give the lease back and report what answered requests cost (a call's end, a task's end)."""
        if self.lease.cost or self.lease.tokens or self.settled.cost or self.settled.tokens:
            returned, used = self.settled + self.lease, self.used
            self.lease = self.settled = self.used = Reservation(0.0, 0)
            _get(self.ledger.settle.remote(self.role, returned, used, None, 0))

    def stop(self, desc: str):
        self.flush()
        self.cost, self.tokens = _get(self.ledger.spent.remote(self.role))
        return super().stop(desc)


class SharedLimit(AdaptiveLimit):
    """A worker's concurrency limit: its 429s go to the ledger, and other workers' 429s on its endpoints slow it."""

    def __init__(self, maximum: int, ledger, endpoints: list[str]):
        super().__init__(maximum)
        self.ledger, self.endpoints = ledger, endpoints
        self.seen: int | None = None
        self.watching: asyncio.Task | None = None
        self.heard: asyncio.Event | None = None
        self.waiting = 0
        self.lost = False

    async def acquire(self) -> None:
        if self.watching is None or self.watching.done():  # it watches while requests wait or are in flight
            self.heard = asyncio.Event()
            self.watching = asyncio.get_running_loop().create_task(self._watch())
        self.waiting += 1
        try:
            await self.heard.wait()  # the first news, before the first request: a pause may be on already
            await super().acquire()  # waits for a slot, then out any pause the watcher has learnt of
        finally:
            self.waiting -= 1
        if self.lost:
            raise TeacherError(LOST)

    async def _watch(self) -> None:
        """Every SYNC_S: other workers' 429s on these endpoints halve the limit once and pause it as they asked."""
        while True:
            try:
                until, count = await self.ledger.news.remote(self.endpoints)
            except Exception:  # noqa: BLE001  (a RayActorError; ray is not imported on the hot path)
                self.lost = True
                self.heard.set()
                return
            if self.seen is not None and count > self.seen:  # another worker's 429 (ours are counted already)
                self.limit = max(1.0, self.limit / 2)
            self.seen = count
            if (wait := until - time.time()) > 0:
                self.pause(wait)
            self.heard.set()
            await asyncio.sleep(SYNC_S)
            if not self.waiting and not self.active:
                return

    def throttle(self, wait_s: float) -> None:
        super().throttle(wait_s)
        self.seen = (self.seen or 0) + 1  # our own 429: halved once, here
        self.ledger.throttle.remote(self.endpoints, time.time() + wait_s)
