"""Tool-use conversations with executed, verified calls (APIGen / xLAM's checks), as SFT and preference splits.

seeds (a tools file, 1-4 of its tools, a kind of request, a persona) -> request (the teacher writes a user request
of that kind) -> dedup_exact -> dedup_near -> [decontaminate] -> use_tools (`samples` trajectories per request:
grammar-enforced calls, run in the sandbox, results back, the final answer; every check) -> validate -> export

Kinds of request: single call, parallel calls, calls in sequence, no tool needed, and none of the tools can serve
(the model must say so). Tools: the shipped library (`pipelines/tools/library/`: arithmetic and units, dates, a
shop database, country facts, text) or a user's tools file (`tools=my_tools.py`), each domain's calls in a sandboxed
worker process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.core.recipe import Inputs, Recipe
from pipelines.core.stage import Stage
from pipelines.recipes._settings import benchmarks_setting, embedded_teacher_setting, test_fraction_setting
from pipelines.stages.dedup import Decontaminate, ExactDedup, NearDedup
from pipelines.stages.tool_use import AskToolRequest, ExportToolUse, SeedToolUse, ToolUseSampling, UseTools
from pipelines.stages.validate import Validate
from pipelines.teacher.config import TeacherConfig
from pipelines.tools import library_files


@dataclass(frozen=True)
class Config:
    name: str = field(default="tool-use-convoforge", metadata={"help": "dataset name in the card"})
    n_requests: int = field(default=20, metadata={"help": "user requests to write (before dedup)",
                                                  "range": "[1, 10000000]"})
    tools: tuple[str, ...] = field(default=(), metadata={
        "help": "tools files: shipped ones by name (" + ", ".join(library_files()) + ") or your .py files "
                "(TOOLS plus a function each); default: every shipped one"})
    samples: int = field(default=2, metadata={"help": "trajectories tried per request (the rejected side of a pair "
                                                      "comes from one that failed a check)", "range": "[1, 16]"})
    follow_ups: float = field(default=0.25, metadata={"help": "share of requests whose user follows up once (the "
                                                             "teacher writes it; a call or none is needed)",
                                                     "range": "[0, 1]"})
    max_rounds: int = field(default=3, metadata={"help": "rounds of calls before each answer",
                                                 "range": "[1, 16]"})
    max_calls: int = field(default=8, metadata={"help": "calls per conversation; more is `over_call_cap`",
                                                "range": "[1, 1000]"})
    calls_via: str = field(default="schema", metadata={
        "help": "how the teacher is asked for calls: schema (a JSON decision under a grammar built from the "
                "tools' schemas: the embedded engine, any endpoint with json_schema) or tools (OpenAI's tools and "
                "tool_choice fields, for an endpoint that parses calls itself)", "choices": ("schema", "tools")})
    judge_answers: bool = field(default=True, metadata={
        "help": "the teacher judges each answer to calls against their results (answer_ignores_result), besides "
                "the string check; the report counts where the two disagree"})
    call_timeout: float = field(default=5.0, metadata={"help": "wall-clock seconds a tool call may take",
                                                       "range": "(0, 600]"})
    seed: int = field(default=0, metadata={"help": "seed of the tools, kinds and personas drawn",
                                           "range": "[0, 4294967295]"})
    near_threshold: float = field(default=0.8, metadata={"help": "MinHash Jaccard above which two requests are "
                                                                 "near-duplicates", "range": "(0, 1]"})
    benchmarks: tuple[str, ...] = benchmarks_setting()
    test_fraction: float = test_fraction_setting()
    sampling: ToolUseSampling = field(default_factory=ToolUseSampling)
    teacher: TeacherConfig = embedded_teacher_setting("qwen2.5-coder-1.5b")


def inputs(cfg: Config) -> Inputs:
    return Inputs(seeds=tuple(t for t in cfg.tools if t.endswith(".py")), benchmarks=cfg.benchmarks,
                  built_in=("data/personas.json",))


def stages(cfg: Config) -> list[Stage]:
    return [
        SeedToolUse(n_requests=cfg.n_requests, tools=cfg.tools, seed=cfg.seed, follow_ups=cfg.follow_ups),
        AskToolRequest(sampling=cfg.sampling),
        ExactDedup(),
        NearDedup(threshold=cfg.near_threshold),
        *([Decontaminate(benchmarks=cfg.benchmarks)] if cfg.benchmarks else []),
        UseTools(sampling=cfg.sampling, samples=cfg.samples, max_rounds=cfg.max_rounds, max_calls=cfg.max_calls,
                 timeout=cfg.call_timeout, tools=cfg.tools, judge=cfg.judge_answers, calls_via=cfg.calls_via),
        Validate(),
        ExportToolUse(test_fraction=cfg.test_fraction),
    ]


def card_values(cfg: Config, run) -> dict:
    import pyarrow.parquet as pq

    checks = run.summaries.get("tool_checks", {})
    calls = [n for f in sorted((run.export_dir / "data").glob("*_sft-*.parquet"))
             for n in pq.read_table(f, columns=["calls"])["calls"].to_pylist()]
    failed = checks.get("failed_by_check") or {}
    tried = checks.get("trajectories") or 0
    return {
        "tools_used": ", ".join(cfg.tools) or "the shipped library (" + ", ".join(library_files()) + ")",
        "simulated": checks.get("simulated", 0), "max_rounds": cfg.max_rounds, "samples": cfg.samples,
        "pass_rate": f"{checks.get('passed')} of {tried} trajectories" if tried else "none tried",
        "failed_checks": ", ".join(f"{k} {n}" for k, n in failed.items()) or "none",
        "calls_per_row": f"{sum(calls) / len(calls):.2f} (0 in {calls.count(0)} of {len(calls)} rows)" if calls
                         else "no rows",
        "answer_judge": judge_text(checks.get("answer_judge") or {}),
        "follow_ups": follow_up_text(checks.get("follow_ups") or {}),
        "calls_by_tool": ", ".join(f"{k} {n}" for k, n in (checks.get("calls_by_tool") or {}).items()) or "none",
    }


def judge_text(counts: dict) -> str:
    """The judge against the string check, on the same answers."""
    if not counts:
        return "not asked"
    both = counts.get("fail_fail", 0) + counts.get("pass_fail", 0)
    return (f"asked about {sum(counts.values())} answers; of the {both} the string check failed, the judge also "
            f"failed {counts.get('fail_fail', 0)}; of the {counts.get('pass_pass', 0) + counts.get('fail_pass', 0)} "
            f"it passed, the judge failed {counts.get('fail_pass', 0)}; {counts.get('unparsed', 0)} verdicts "
            "unreadable. The judge is the teacher itself; no person's labels measure it here")


def follow_up_text(counts: dict) -> str:
    failed = ", ".join(f"{k} {n}" for k, n in (counts.get("failed_by_check") or {}).items()) or "none"
    return (f"{counts.get('rows', 0)} exported conversations have one; {counts.get('written', 0)} follow-ups were "
            f"written ({counts.get('unwritten', 0)} could not be), and those that failed a check went back to their "
            f"first exchange (by check: {failed})")


RECIPE = Recipe(
    name="tool_use", summary="tool-use conversations whose calls were executed and checked: SFT rows with "
                             "OpenAI tool_calls and preference pairs (verified over failed)",
    config=Config, stages=stages, card="tool_use", roles=("teacher",), inputs=inputs,
    card_values=card_values,
)
