"""Self-Instruct (Wang et al., 2022) / Alpaca (Taori et al., 2023) distillation with a teacher.

GenerateInstructions: nothing -> instruction_id, instruction, generation
AskInputs:            instruction_id, instruction -> input
AnswerTasks:          instruction_id, instruction, input, generation -> output, messages, source, meta

Generation runs in rounds. Each round sends `requests_per_round` prompts, each listing 8 tasks sampled from the pool
(`seed_examples` seed tasks and `machine_examples` accepted machine tasks; seeds fill in while fewer machine tasks
exist) and asking for more; the numbered lists are parsed and every candidate is filtered, in order, against the pool
as it grows: length, keyword blacklist, junk, then ROUGE-L F-measure above `threshold` against any seed or accepted
instruction (`pipelines/dedup/rouge.py`). Rounds go on until `n_instructions` are accepted or `max_rounds` have run;
candidates past `n_instructions` in the last round are dropped as surplus. A rejected candidate is a dropped row
with its reason; an answer with no parsable task and a failed request are counted events (`parse_failed`,
`request_failed`), as there is no candidate to keep. Then, as in Alpaca, each accepted instruction gets an input
from the teacher (empty when the task needs none) and an output: the answer to the instruction and input as one
user turn. The seed tasks themselves are not exported.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import polars as pl

from pipelines.core.config import max_tokens_setting
from pipelines.core.stage import MESSAGES, Context, Source
from pipelines.dedup.rouge import RougePool, tokenize
from pipelines.prompts import self_instruct as P
from pipelines.teacher.wire import Request, Result
from pipelines.teacher.guards import AI_TALK, is_looping, repeats_words, trim_cut_answer
from pipelines.teacher.stage import Asks, Sampling as BaseSampling, TeacherStage, Verdict

CANDIDATES = {"instruction_id": pl.String, "instruction": pl.String, "generation": pl.String,
              "drop_reason": pl.String}


@dataclass
class Sampling(BaseSampling):
    max_tokens_tasks: int = max_tokens_setting(128, "tokens per instruction-generation answer")
    max_tokens_input: int = max_tokens_setting(48, "tokens per generated input")
    max_tokens_output: int = max_tokens_setting(160, "tokens per answer")

    def params(self, kind: str, seed: str) -> dict:
        """Request params for `kind` (tasks, input, output); `seed` makes each sample its own cache entry."""
        max_tokens = {"tasks": self.max_tokens_tasks, "input": self.max_tokens_input,
                      "output": self.max_tokens_output}[kind]
        return self.request_params(max_tokens, seed)


@dataclass
class GenerateInstructions(Asks, Source):
    """A source with no input rows, so not a per-row `TeacherStage`: each round asks the contract's loop
    (`ask_each`) for `requests_per_round` answers, each showing the pool grown so far, then filters their tasks in
    order against that pool."""

    seed_tasks: tuple[tuple[str, str], ...]  # (id, instruction) of every seed task
    sampling: Sampling
    n_instructions: int = 32
    max_rounds: int = 20
    requests_per_round: int = 8
    seed_examples: int = 6
    machine_examples: int = 2
    new_per_request: int = 4
    threshold: float = 0.7
    min_words: int = 4
    max_words: int = 150
    seed: int = 0
    name = "instructions"
    provides = ("instruction_id", "instruction", "generation")
    prompt_files = (P.PROMPT_FILE,)

    def read(self, ctx: Context):
        target = min(self.n_instructions, ctx.limit or self.n_instructions)
        rng = random.Random(self.seed)
        pool = RougePool()
        pool.extend([text for _, text in self.seed_tasks], [key for key, _ in self.seed_tasks])
        accepted: list[tuple[str, str]] = []
        for round_no in range(1, self.max_rounds + 1):
            if len(accepted) >= target:
                return
            prompts = [self._examples(rng, accepted) for _ in range(self.requests_per_round)]

            def request(q: int, attempt: int) -> Request:
                return Request(P.build_generation([text for _, text in prompts[q]], self.new_per_request),
                               self.sampling.params("tasks", f"{self.seed}/r{round_no}/q{q}"))

            def accept(q: int, result: Result) -> Verdict:
                tasks = P.parse_tasks(result.text)
                return Verdict({"tasks": tasks, "cut": result.finish_reason == "length"},
                               None if tasks else "parse_failed: no task in the answer", final=True,
                               counts={"candidates": len(tasks)} if tasks else {"parse_failed": 1})

            verdicts = self.ask_each(ctx, list(range(len(prompts))), request, accept, retries=0,
                                     desc=f"{self.name} round {round_no}")
            ctx.count("rounds")
            rows = []
            for q, shown in enumerate(prompts):
                verdict = verdicts[q]
                if verdict.reason and verdict.reason.startswith("request_failed"):
                    ctx.count("request_failed")
                if verdict.reason:
                    continue
                tasks = verdict.values["tasks"]
                for k, text in enumerate(tasks):
                    key = f"gen_r{round_no}_q{q}_{k}"
                    reason = self._check(text, pool)
                    if k == len(tasks) - 1 and verdict.values["cut"]:
                        reason = reason or "truncated: the answer was cut by max_tokens"  # as Self-Instruct does
                    if reason is None and len(accepted) >= target:
                        reason = f"surplus: {target} instructions already accepted"
                    if reason is None:
                        accepted.append((key, text))
                        pool.add(text, key)
                    generation = {"round": round_no, "request": q, "examples": [k_ for k_, _ in shown]}
                    rows.append({"instruction_id": key, "instruction": text, "generation": json.dumps(generation),
                                 "drop_reason": reason})
            yield pl.DataFrame(rows, schema=CANDIDATES)
        if len(accepted) < target:
            ctx.log.warning("self_instruct: %d of %d instructions accepted after %d rounds; raise max_rounds",
                            len(accepted), target, self.max_rounds)
            ctx.count("rounds_exhausted")

    def _examples(self, rng: random.Random, accepted: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """Self-Instruct's in-context sample: machine tasks first, seed tasks fill the rest, shuffled."""
        shown = rng.sample(accepted, min(self.machine_examples, len(accepted)))
        total = self.seed_examples + self.machine_examples
        shown += rng.sample(self.seed_tasks, min(total - len(shown), len(self.seed_tasks)))
        rng.shuffle(shown)
        return shown

    def _check(self, text: str, pool: RougePool) -> str | None:
        if reason := P.check_instruction(text, self.min_words, self.max_words):
            return reason
        score, key = pool.most_similar(text, self.threshold)
        return f"too_similar: rouge-l {score:.2f} to {key}" if key is not None else None


@dataclass
class AskInputs(TeacherStage):
    shots: tuple[tuple[str, str], ...]  # (instruction, input) examples; '' input shows <noinput>
    sampling: Sampling
    name = "inputs"
    requires = ("instruction_id", "instruction")
    provides = ("input",)
    retries = 0  # as Alpaca: one input per instruction
    prompt_files = (P.PROMPT_FILE,)

    def requests(self, row: dict, attempt: int) -> list[Request]:
        return [Request(P.build_input(row["instruction"], self.shots),
                        self.sampling.params("input", f"{row['instruction_id']}/input"))]

    def accept(self, row: dict, results: list[Result]) -> Verdict:
        given, emptied = P.parse_input(results[0].text, row["instruction"])
        counts = {emptied: 1} if emptied else {} if given else {"no_input": 1}
        return Verdict({"input": given}, "repeated: the input loops" if loops(given) else None, counts=counts)


@dataclass
class AnswerTasks(TeacherStage):
    sampling: Sampling
    name = "outputs"
    requires = ("instruction_id", "instruction", "input", "generation")
    provides = ("output", "messages", "source", "meta")
    dtypes = {"messages": MESSAGES}
    retries = 0
    prompt_files = (P.PROMPT_FILE,)

    def requests(self, row: dict, attempt: int) -> list[Request]:
        prompt = P.user_turn(row["instruction"], row["input"])
        return [Request([{"role": "user", "content": prompt}],
                        self.sampling.params("output", f"{row['instruction_id']}/output"))]

    def accept(self, row: dict, results: list[Result]) -> Verdict:
        output = trim_cut_answer(results[0].text or "", results[0].finish_reason)
        messages = [{"role": "user", "content": P.user_turn(row["instruction"], row["input"])},
                    {"role": "assistant", "content": output}]
        meta = json.dumps({"instruction_id": row["instruction_id"], **json.loads(row["generation"])})
        return Verdict({"output": output, "messages": messages, "source": "self_instruct:generated", "meta": meta},
                       check_output(output, row["instruction"], row["input"]))


def loops(text: str) -> bool:
    """True if a run of 6 words comes back 3 times, as in the small model's loops inside one sentence."""
    return repeats_words(tokenize(text))


def check_output(output: str, instruction: str, given: str) -> str | None:
    """Why an output is unusable, or None: `"empty_output: no text"`, `"refusal: ..."`, `"repeated: ..."`."""
    if not output.strip():
        return "empty_output: no text"
    if AI_TALK.search(output):
        return "refusal: the output refuses or talks about being an AI"
    if is_looping(output) or loops(output):
        return "repeated: the output loops"
    if tokenize(output) in (tokenize(instruction), tokenize(given)):
        return "repeated: the output copies the instruction or the input"
    return None
