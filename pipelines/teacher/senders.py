"""What the client does with a request its cache cannot answer, when it does not send it online: one object per way,
set as `Teacher.sender` (None: send online).

- `DryRun` (`--dry-run`): count what the request would take at most (tokens, cost online and in a batch), per stage.
- `Collect` (batch mode's first pass, `batch.py`): keep the request to send in the next batch.
- `AfterBatch` (batch mode's answering pass): only what a failed batch left to the online path goes online; every
  other request the batches did not answer gets its reason.
"""

from __future__ import annotations

from collections import Counter

from pipelines.teacher.wire import Result

PENDING = "pending: sent in the next batch"  # Collect's placeholder answer


class Sender:
    """Takes a request the cache cannot answer: a `Result` to return instead of sending it, or None to send it
    online; told of each request the cache did answer (`cached`)."""

    def cached(self, desc: str) -> None:
        pass

    def take(self, teacher, key: str, endpoint, messages, params: dict) -> Result | None:
        raise NotImplementedError


class DryRun(Sender):
    """Counts, per stage (`desc`), the requests the cache cannot answer and their worst-case tokens and cost."""

    def __init__(self):
        self.rows: dict[str, Counter] = {}

    def cached(self, desc: str) -> None:
        self.rows.setdefault(desc, Counter())["cached"] += 1

    def take(self, teacher, key: str, endpoint, messages, params: dict) -> Result:
        prompt = teacher.prompt_tokens(messages)
        worst = teacher.budget.worst_case(prompt, params)
        row = self.rows.setdefault(teacher.desc, Counter())
        row["requests"] += 1
        row["prompt_tokens"] += prompt
        row["completion_tokens"] += worst.tokens - prompt
        row["cost"] += worst.cost
        row["cost_batch"] += teacher.budget.worst_case(prompt, params, batch=True).cost
        return Result(None, error="dry run: not sent")


class Collect(Sender):
    """Gathers `key -> (endpoint, messages, params)` of every request to send in the next batch; a key in
    `online_only` (a failed batch left it to the online path) is not gathered."""

    def __init__(self, online_only: set[str]):
        self.pending: dict[str, tuple] = {}
        self.online_only = online_only

    def take(self, teacher, key: str, endpoint, messages, params: dict) -> Result:
        if key not in self.online_only:
            self.pending[key] = (endpoint, messages, params)
        return Result(None, error=PENDING)


class AfterBatch(Sender):
    """Batch mode answers nothing online but what `online_only` names; a request its batch could not take for the
    budget is counted as refused, so the run stops with the budget's message."""

    def __init__(self, online_only: set[str]):
        self.online_only = online_only

    def take(self, teacher, key: str, endpoint, messages, params: dict) -> Result | None:
        if key in self.online_only:
            return None  # sent online
        if not teacher.budget.on:
            return Result(None, error="batch: no answer")
        teacher.budget.refused += 1  # its batch was not sent: the budget had no room
        return Result(None, error="budget: not sent")
