"""DEITA's scores of each row, asked of the judge, each with its rationale: `complexity` of the instruction and
`quality` of the answer (1-6), their product `deita_score` (DEITA's ranking score), and `reward`, the judge's overall
1-9 rating (the ultrafeedback pointwise judge's).

Score: messages -> complexity, complexity_rationale[, quality, quality_rationale, deita_score][, reward]

Pointwise by default. With `group` (a column such as Evol-Instruct's `root_id`) the variants of one group are ranked
together for complexity, as DEITA scores its evolved pools, on one 1..6 scale; with `anchor` too (a column holding the
text the variants came from, such as `root_prompt`) that text is listed first, so each variant is scored against its
origin (`groups_above_anchor` counts groups whose every variant scored above it). An answer the judge cannot give in
the asked form is asked again (`judge.reasks`), then left null and counted (`<score>_unreadable`); scoring drops
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from pipelines.core.stage import Context, MapStage
from pipelines.prompts import score as S
from pipelines.prompts.ultrafeedback import point_request, point_score
from pipelines.teacher.stage import Asks

COMPLEXITY = ("complexity", "complexity_rationale")
QUALITY = ("quality", "quality_rationale", "deita_score")
SCORES = (*COMPLEXITY, *QUALITY, "reward")  # the columns it adds with every score on
NUMBERS = ("complexity", "quality", "deita_score", "reward")


@dataclass
class Score(Asks, MapStage):
    """Not a `TeacherStage`: with `group`, one complexity request ranks the variants of several rows at once."""

    group: str = ""
    anchor: str = ""
    quality: bool = True
    reward: bool = True
    name = "score"
    requires = ("messages",)
    teacher_role = "judge"
    batch_size = 32
    prompt_files = (S.PROMPT_FILE, "prompts/ultrafeedback.yaml")

    def __post_init__(self):
        self.group_by = self.group or None
        self.requires = ("messages", *(c for c in (self.group, self.anchor) if c))
        self.provides = (*COMPLEXITY, *(QUALITY if self.quality else ()), *(("reward",) if self.reward else ()))

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        turns = batch["messages"].to_list()
        instruction = [next((m["content"] for m in t if m["role"] == "user"), "") for t in turns]
        answer = [next((m["content"] for m in t if m["role"] == "assistant"), "") for t in turns]
        qualities = [S.quality_request(q, a) for q, a in zip(instruction, answer)] if self.quality else []
        groups = self._groups(batch)
        anchors = batch[self.anchor].to_list() if self.anchor else []
        complexity = [S.complexity_request([instruction[i] for i in rows], anchors[rows[0]] if self.anchor else None)
                      for rows in groups]
        rewards = [point_request(q, a) for q, a in zip(instruction, answer)] if self.reward else []
        results = self.ask(ctx, qualities + complexity + rewards)
        columns = {name: [None] * batch.height for name in self.provides}
        for i, result in enumerate(results[: len(qualities)]):
            columns["quality"][i], columns["quality_rationale"][i] = self._rated(result, ctx, "quality")
        for rows, result in zip(groups, results[len(qualities): len(qualities) + len(groups)]):
            if len(rows) == 1 and not self.anchor:
                columns["complexity"][rows[0]], columns["complexity_rationale"][rows[0]] = self._rated(
                    result, ctx, "complexity")
                continue
            data = result.data if result.error is None and isinstance(result.data, dict) else {}
            scores = data.get("scores") if isinstance(data.get("scores"), dict) else {}
            first = 1 + bool(self.anchor)
            for k, i in enumerate(rows, first):
                value = scores.get(str(k))
                ctx.count("complexity_unreadable", value is None)
                columns["complexity"][i] = None if value is None else float(value)
                columns["complexity_rationale"][i] = data.get("rationale")
            if self.anchor:
                ctx.count("groups_above_anchor", "1" in scores and all(
                    str(k) in scores and scores[str(k)] > scores["1"] for k in range(2, len(rows) + 2)))
        if self.quality:
            columns["deita_score"] = [None if c is None or q is None else c * q
                                      for c, q in zip(columns["complexity"], columns["quality"])]
        for i, result in enumerate(results[len(qualities) + len(groups):]):
            columns["reward"][i] = None if result.error else round(point_score(result)[0], 3)
        ctx.count("reward_unreadable", sum(r is None for r in columns["reward"]) if self.reward else 0)
        return batch.with_columns(
            *(pl.Series(name, values, dtype=pl.Float64 if name in NUMBERS else pl.String)
              for name, values in columns.items()))

    def _groups(self, batch: pl.DataFrame) -> list[list[int]]:
        """Row positions scored together: one group per value of `group`, else each row alone."""
        if not self.group:
            return [[i] for i in range(batch.height)]
        groups: dict = {}
        for i, key in enumerate(batch[self.group].to_list()):
            groups.setdefault(key, []).append(i)
        return list(groups.values())

    @staticmethod
    def _rated(result, ctx: Context, what: str) -> tuple[float | None, str | None]:
        data = result.data if result.error is None and isinstance(result.data, dict) else None
        ctx.count(f"{what}_unreadable", data is None)
        return (None, None) if data is None else (float(data["score"]), data["rationale"])
