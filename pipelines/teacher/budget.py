"""A teacher's budget: `max_cost` and `max_tokens` over everything its models answered in the run.

What is spent comes from the request cache (each answer keeps its tokens and cost), so a rerun counts what earlier
runs paid and a budget holds across reruns. Before a request is sent it reserves its worst case: its prompt tokens
(counted with the tokenizer when there is one, else one token per 3 characters, which overcounts) plus `max_tokens`
for each of its `n` choices, priced online or at the batch price. A request that would not fit is not sent; the
stage stops with one line saying what was spent and how to go on. The reservation is released when the answer comes,
and its real usage counted instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipelines.core.errors import PipelineError

UNBOUNDED_COMPLETION = 4096  # completion tokens reserved for a request that sets no max_tokens


class BudgetError(PipelineError):
    """The next requests would take the run over its budget."""


@dataclass
class Reservation:
    cost: float
    tokens: int

    def __add__(self, other: "Reservation") -> "Reservation":
        return Reservation(self.cost + other.cost, self.tokens + other.tokens)

    def __sub__(self, other: "Reservation") -> "Reservation":
        return Reservation(self.cost - other.cost, self.tokens - other.tokens)


class Budget:
    def __init__(self, config, cache, models: list[str], role: str = "teacher"):
        self.config, self.cache, self.models, self.role = config, cache, models, role
        self.cost = self.tokens = 0.0
        self.reserved = Reservation(0.0, 0)
        self.refused = 0

    @property
    def on(self) -> bool:
        return bool(self.config.max_cost or self.config.max_tokens)

    def refresh(self) -> None:
        """Read what the run has spent so far (once per batch of requests: other roles share the cache)."""
        if self.on:
            self.cost, self.tokens = self.cache.spent(self.models, self.config.price_in, self.config.price_out)
        self.refused = 0

    def price(self, prompt_tokens: int, completion_tokens: int, batch: bool = False) -> float:
        cost = (prompt_tokens * self.config.price_in + completion_tokens * self.config.price_out) / 1e6
        return cost * (self.config.batch_discount if batch else 1.0)

    def worst_case(self, prompt_tokens: int, params: dict, batch: bool = False) -> Reservation:
        completion = (params.get("max_tokens") or params.get("max_completion_tokens") or UNBOUNDED_COMPLETION) \
            * max(1, int(params.get("n") or 1))
        return Reservation(self.price(prompt_tokens, completion, batch), prompt_tokens + completion)

    def _fits(self, want: Reservation, held: Reservation) -> bool:
        c, t = self.config.max_cost, self.config.max_tokens
        total = held + want
        return not ((c and self.cost + total.cost > c + 1e-12) or (t and self.tokens + total.tokens > t))

    def reserve(self, want: Reservation) -> str:
        """"held" when `want` fits beside what is spent and held (it is held now); "wait" when it would fit once
        requests in flight settle; "never" (counted) when it cannot fit."""
        if self._fits(want, self.reserved):
            self.reserved = self.reserved + want
            return "held"
        if (self.reserved.cost or self.reserved.tokens) and self._fits(want, Reservation(0.0, 0)):
            return "wait"
        self.refused += 1
        return "never"

    def release(self, held: Reservation | None, answer: dict | None = None) -> None:
        """Give back a reservation (None: nothing was held); count what `answer` really took (nothing for a request
        that got no answer)."""
        if held is None:
            return
        self.reserved = self.reserved - held
        if answer is not None:
            self.cost += answer["cost"]
            self.tokens += answer["prompt_tokens"] + answer["completion_tokens"]

    def stop(self, desc: str) -> BudgetError:
        c, t = self.config.max_cost, self.config.max_tokens
        limits = " and ".join(x for x in (f"{self.role}.max_cost={c:g}" if c else "",
                                           f"{self.role}.max_tokens={t}" if t else "") if x)
        return BudgetError(
            f"budget {limits} reached: spent {self.cost:.4f} ({int(self.tokens):,} tokens); {self.refused} "
            f"requests of {desc} were not sent and the stages after it did not run. Raise {limits.split('=')[0]} and "
            f"rerun: answered requests are cached and cost nothing again")


def estimate_tokens(text: str) -> int:
    """An upper estimate of a text's tokens without a tokenizer (one per 3 characters; English runs near 4)."""
    return math.ceil(len(text) / 3) + 4
