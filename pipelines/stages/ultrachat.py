"""UltraChat: seeds in three sectors, an opening question, then a dialogue between a simulated user and the teacher.

SeedUltraChat:    nothing -> seed_id, sector, seed, persona
AskOpening:       seed_id, sector, seed, persona -> question
SimulateDialogue: question, persona -> messages, source, meta

Three sectors as in UltraChat (Ding et al., 2023): questions about the world (seeded by topics), writing and
creation (by writing types), assistance on existing materials (by text passages). Topics, writing types and personas
are project-written (`pipelines/data/`); materials come from the standard library's documentation topics unless
`sources` names the user's own text files.

The teacher plays two separate roles: the assistant (answers the dialogue as it stands) and a user simulator (a
separate chat prompted with the dialogue so far and a persona). A bad user turn is asked again up to
`retries` times with another sampling seed; if it stays bad the dialogue ends at its last good exchange, and a
dialogue with fewer than `min_turns` exchanges is dropped with the reason of the turn that ended it.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass

import polars as pl

from connectors.text import read_passages
from pipelines.core.config import max_tokens_setting
from pipelines.core.errors import ConfigError, SourceError
from pipelines.core.stage import MESSAGES, Context, MapStage, Source, with_drops
from pipelines.data import load_list
from pipelines.data.materials import passages_from_pydoc
from pipelines.prompts import ultrachat as P
from pipelines.teacher.stage import Asks, Sampling as BaseSampling, TeacherStage, Verdict
from pipelines.teacher.wire import Request, Result

SECTORS = ("world", "writing", "materials")


@dataclass
class SeedUltraChat(Source):
    n_dialogues: int
    seed: int = 0
    sources: tuple[str, ...] = ()
    sectors: tuple[str, ...] = SECTORS
    name = "seeds"
    provides = ("seed_id", "sector", "seed", "persona")

    def __post_init__(self):
        unknown = [s for s in self.sectors if s not in SECTORS]
        if unknown or not self.sectors:
            raise ConfigError(f"sectors {list(self.sectors)}: choose among {', '.join(SECTORS)}")

    def read(self, ctx: Context):
        rng = random.Random(self.seed)
        pools = {"world": load_list("topics.json"), "writing": load_list("writing_types.json"),
                 "materials": [p["text"] for p in self.materials(ctx)]}
        for pool in pools.values():
            rng.shuffle(pool)
        personas = load_list("personas.json")
        rows = []
        for n in range(self.n_dialogues):
            sector = self.sectors[n % len(self.sectors)]
            pool = pools[sector]
            seed = pool[(n // len(self.sectors)) % len(pool)]
            rows.append({
                "seed_id": hashlib.sha256(f"{self.seed}/{n}/{sector}/{seed}".encode()).hexdigest()[:16],
                "sector": sector, "seed": seed, "persona": rng.choice(personas),
            })
        yield pl.DataFrame(rows, schema={"seed_id": pl.String, "sector": pl.String, "seed": pl.String,
                                         "persona": pl.String})

    def materials(self, ctx: Context) -> list[dict]:
        if not self.sources:
            return passages_from_pydoc()
        problems: list[str] = []
        passages = [p for path in self.sources for p in read_passages(path, problems=problems)]
        if problems:  # counted in the report and named in the log, never skipped silently
            ctx.count("materials_lines_unusable", len(problems))
            ctx.log.warning("%d unusable lines in sources, first: %s", len(problems), problems[0])
        if not passages:
            raise SourceError(f"no usable text in {', '.join(self.sources)}; give .txt, .md or JSONL with 'text'")
        return passages


@dataclass
class Sampling(BaseSampling):
    max_tokens_user: int = max_tokens_setting(40, "tokens per user turn")
    max_tokens_assistant: int = max_tokens_setting(112, "tokens per assistant turn")

    def params(self, role: str, seed: str) -> dict:
        return self.request_params(self.max_tokens_user if role == "user" else self.max_tokens_assistant, seed)


@dataclass
class AskOpening(TeacherStage):
    sampling: Sampling
    retries: int = 1
    name = "opening"
    requires = ("seed_id", "sector", "seed")
    provides = ("question",)
    prompt_files = (P.PROMPT_FILE,)

    def requests(self, row: dict, attempt: int) -> list[Request]:
        return [Request(P.build_opening(row["sector"], row["seed"]),
                        self.sampling.params("user", f"{row['seed_id']}/open/{attempt}"))]

    def accept(self, row: dict, results: list[Result]) -> Verdict:
        turn = P.parse_user_turn(results[0].text)
        reason = P.check_user_turn(turn, []) or P.check_on_topic(turn, row["seed"])
        return Verdict({"question": None if reason else P.opening_turn(row["sector"], row["seed"], turn)}, reason)


@dataclass
class SimulateDialogue(Asks, MapStage):
    sampling: Sampling
    turns: int = 3
    min_turns: int = 2
    retries: int = 1
    name = "dialogue"
    requires = ("seed_id", "sector", "seed", "persona", "question")
    provides = ("messages", "source", "meta")
    batch_size = 64
    prompt_files = (P.PROMPT_FILE,)

    def process(self, batch: pl.DataFrame, ctx: Context) -> pl.DataFrame:
        rows = batch.to_dicts()
        dialogues = [[{"role": "user", "content": r["question"]}] for r in rows]
        ended: list[str | None] = [None] * len(rows)
        for turn in range(self.turns):
            self._answer(rows, dialogues, ended, turn, ctx)
            if turn + 1 < self.turns:
                self._ask(rows, dialogues, ended, turn, ctx)
        reasons = []
        for i, dialogue in enumerate(dialogues):
            exchanges = len(dialogue) // 2
            if exchanges < self.min_turns:
                reasons.append(ended[i] or "too_short: fewer exchanges than min_turns")
            else:
                reasons.append(None)
                if ended[i]:
                    ctx.count(f"truncated_by_{ended[i].split(':')[0]}")
        out = batch.with_columns(
            pl.Series("messages", [d[: len(d) // 2 * 2] for d in dialogues], dtype=MESSAGES),
            pl.Series("source", [f"ultrachat:{r['sector']}" for r in rows], dtype=pl.String),
            pl.Series("meta", [json.dumps({k: r[k] for k in ("seed_id", "sector", "seed", "persona")})
                               for r in rows], dtype=pl.String),
        )
        return with_drops(out, reasons)

    def _answer(self, rows, dialogues, ended, turn, ctx) -> None:
        def request(i: int, attempt: int) -> Request:
            return Request(list(dialogues[i]), self.sampling.params("assistant", f"{rows[i]['seed_id']}/a{turn}"))

        def accept(i: int, result: Result) -> Verdict:
            text = P.parse_assistant_turn(result.text, result.finish_reason)
            reason = P.check_assistant_turn(text, dialogues[i])
            if reason is None:
                dialogues[i].append({"role": "assistant", "content": text})
            return Verdict(reason=reason)

        self._end(ended, self.ask_each(ctx, self._active(ended), request, accept, retries=0,
                                       desc=f"{self.name} answer {turn + 1}"))

    def _ask(self, rows, dialogues, ended, turn, ctx) -> None:
        def request(i: int, attempt: int) -> Request:
            return Request(P.build_user_turn(dialogues[i], rows[i]["persona"]),
                           self.sampling.params("user", f"{rows[i]['seed_id']}/u{turn}/{attempt}"))

        def accept(i: int, result: Result) -> Verdict:
            text = P.parse_user_turn(result.text)
            reason = P.check_user_turn(text, dialogues[i])
            if reason is None:
                dialogues[i].append({"role": "user", "content": text})
            return Verdict(reason=reason)

        self._end(ended, self.ask_each(ctx, self._active(ended), request, accept, retries=self.retries,
                                       desc=f"{self.name} user {turn + 2}", counter="user_turn_reasked"))

    @staticmethod
    def _active(ended: list[str | None]) -> list[int]:
        return [i for i, reason in enumerate(ended) if reason is None]

    @staticmethod
    def _end(ended: list[str | None], verdicts: dict) -> None:
        """A dialogue whose turn stayed refused ends at its last good exchange, with that turn's reason."""
        for i, verdict in verdicts.items():
            ended[i] = verdict.reason
