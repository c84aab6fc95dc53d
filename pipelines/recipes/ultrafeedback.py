"""UltraFeedback-style AI-feedback preference pairs, exported like HuggingFaceH4/ultrafeedback_binarized.

ingest prompts -> prompts -> dedup_exact -> [decontaminate] -> dedup_near -> complete -> judge -> binarize -> export

Prompts come from `sources` (any format ingest reads: conversations, whose turns up to the last user turn are
the prompt, e.g. an ultrachat export or hh-rlhf pairs; or, with `prompt_kind=text`, one prompt per text) or, by
default, from a small prompt set the project ships. The embedded defaults: completions from SmolLM2-135M (they differ
by principle system prompt and sampling seed, not by model), judged by Qwen2.5-Coder-1.5B (`judge_mode=pointwise`:
what bench/judge_agreement.py measured best for it). List more models in `teacher.pool` (each completion goes to the
next model in turn) and point `judge.base_url` at a strong model for real data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from pipelines.core.calibration import Calibration
from pipelines.core.config import max_tokens_setting
from pipelines.core.errors import ConfigError
from pipelines.core.recipe import Inputs, Recipe, Refresh
from pipelines.core.stage import Stage
from pipelines.recipes._settings import benchmarks_setting, index_setting, test_fraction_setting, threshold_setting
from pipelines.release import preference_card
from pipelines.stages.dedup import Decontaminate, ExactDedup, NearDedup
from pipelines.stages.export_prefs import ExportPrefs
from pipelines.stages.pairs import Binarize, ToPrompts
from pipelines.stages.ultrafeedback import Complete
from pipelines.stages.judge import MODES, Judge, SecondJudge, judge_identity
from pipelines.stages.ingest import Ingest
from pipelines.stages.redact import redact_setting
from pipelines.teacher.config import TeacherConfig
from pipelines.teacher.server import EmbeddedConfig
from pipelines.teacher.weights import DEFAULT_JUDGE

DEFAULT_PROMPTS = str(resources.files("pipelines.data").joinpath("feedback_prompts.jsonl"))


@dataclass(frozen=True)
class Config:
    name: str = field(default="ultrafeedback-convoforge", metadata={"help": "dataset name in the card"})
    sources: tuple[str, ...] = field(default=(), metadata={"help": "prompt files (default: the shipped set)"})
    redact: str = redact_setting()
    n_prompts: int = field(default=8, metadata={"help": "prompts taken from the shipped set (not from sources)",
                                                "range": "[1, 10000000]"})
    prompt_kind: str = field(default="", metadata={"help": "conversation or text (default: text for the shipped "
                                                           "set, conversation for sources)"})
    n_completions: int = field(default=4, metadata={"help": "completions per prompt (a pair needs 2)",
                                                    "range": "[2, 64]"})
    models: tuple[str, ...] = field(default=(), metadata={"help": "pool models to ask in turn (default: all)"})
    temperatures: tuple[float, ...] = field(default=(0.7, 1.0), metadata={"help": "sampling temperatures, in turn",
                                                                          "range": "[0, 2]"})
    max_tokens: int = max_tokens_setting(96, "tokens per completion")
    orderings: int = field(default=2, metadata={"help": "orders of the completions each prompt is judged under",
                                                "range": "[1, 16]"})
    judge_max_tokens: int = max_tokens_setting(96, "tokens per judge answer (listwise; the others need 16)")
    judge_mode: str = field(default="pointwise", metadata={
        "help": "listwise (UltraFeedback: every completion at once, per aspect), pointwise (each alone, 1-9, "
                "expected rating from logprobs) or pairwise (every pair in both orders)", "choices": MODES})
    judge_calibration: str = field(default="", metadata={
        "help": "a calibration file of this judge and mode (python -m pipelines.judge calibrate): pairs are ordered "
                "by the calibrated P(a person prefers chosen)"})
    judge_min_confidence: float = field(default=0.0, metadata={
        "help": "with judge_calibration: drop a pair whose calibrated P(a person prefers chosen) is below this, "
                "as `judge: unsure (p=...)`", "range": "[0, 1]"})
    judge_require_agreement: float = field(default=0.0, metadata={
        "help": "refuse to build from a judge whose calibration measured a lower agreement with people (0: off)",
        "range": "[0, 1]"})
    rule: str = field(default="best_vs_random", metadata={"help": "best_vs_random, best_vs_worst or all_pairs",
                                                          "choices": ("best_vs_random", "best_vs_worst", "all_pairs")})
    score: str = field(default="overall", metadata={"help": "rank by overall (1-10) or mean_aspects (1-5)",
                                                    "choices": ("overall", "mean_aspects")})
    min_margin: float = field(default=0.0, metadata={"help": "drop pairs whose scores differ by less",
                                                     "range": "[0, 9]"})
    seed: int = field(default=0, metadata={"help": "seed of the principles, sampling and pairing",
                                           "range": "[0, 4294967295]"})
    threshold: float = threshold_setting(" on prompts")
    index: str = index_setting(" of prompts")
    benchmarks: tuple[str, ...] = benchmarks_setting()
    test_fraction: float = test_fraction_setting("split")
    # Equal configs share one client (and one embedded server). 8 in flight: judge prompts are long, and 16 of them
    # slowed the embedded server past the request timeout (measured); one re-ask: a second rarely helps a small judge.
    teacher: TeacherConfig = field(default_factory=lambda: TeacherConfig(max_concurrency=8, reasks=1))
    judge: TeacherConfig = field(default_factory=lambda: TeacherConfig(
        max_concurrency=4, reasks=1, embedded=EmbeddedConfig(model=DEFAULT_JUDGE)))
    second_judge: TeacherConfig | None = field(default=None, metadata={
        "help": "off; set any of its keys (every judge.* key: second_judge.base_url=URL, second_judge.model=NAME) for "
                "a second judge of the same completions. Equal to the judge, it is the same judge in "
                "second_judge_mode, on the same server"})
    second_judge_mode: str = field(default="", metadata={
        "help": "the mode the second judge rates in (default: judge_mode); the export is the judge's, the review "
                "app asks first about pairs the two order differently", "choices": ("", *MODES)})

    def cross_check(self) -> str | None:
        if self.score == "mean_aspects" and self.judge_mode != "listwise":
            return (f"score=mean_aspects needs judge_mode=listwise (judge_mode={self.judge_mode} rates overall only): "
                    "--set score=overall or judge_mode=listwise")
        return calibration_problem(self)


def calibration_problem(cfg: Config) -> str | None:
    """Why the judge's calibration settings cannot hold, in one line, or None."""
    if not cfg.judge_calibration:
        if cfg.judge_min_confidence or cfg.judge_require_agreement:
            return ("judge_min_confidence and judge_require_agreement need judge_calibration=FILE, made by python -m "
                    "pipelines.judge calibrate --labels LABELS for this judge and mode")
        return None
    if cfg.judge_mode == "pairwise" and cfg.n_completions != 2:
        return (f"judge_calibration maps the score difference of two answers; judge_mode=pairwise with "
                f"n_completions={cfg.n_completions} counts wins over {cfg.n_completions - 1} others, another scale: "
                "use n_completions=2, or judge_mode=pointwise or listwise")
    if cfg.score != "overall":
        return (f"judge_calibration maps differences of the overall score; score={cfg.score} is another scale: "
                "use score=overall")
    try:
        found = Calibration.load(Path(cfg.judge_calibration), judge_identity(cfg.judge, cfg.judge_mode, cfg.orderings))
    except ConfigError as error:
        return str(error)
    measured = found.measured
    agreement, (low, high) = measured["calibrated_agreement"], measured["calibrated_agreement_ci"]
    if agreement < cfg.judge_require_agreement:
        return (f"the judge's calibration ({cfg.judge_calibration}) measured agreement {agreement:.3f} "
                f"({low:.3f}-{high:.3f}) with people on {measured['pairs']} labelled pairs, below "
                f"judge_require_agreement={cfg.judge_require_agreement}: label more pairs in the review app and "
                "calibrate again, or use another judge")
    return None


def calibration_text(cfg: Config, run) -> str:
    """The card's line on the judge's calibration, or that it has none."""
    if not cfg.judge_calibration:
        return ("none: how far this judge agrees with people on this data was not measured (python -m "
                "pipelines.judge calibrate --labels LABELS)")
    found = Calibration.load(Path(cfg.judge_calibration))
    m, used = found.measured, run.summaries.get("calibration", {})
    return (f"{Path(cfg.judge_calibration).name}, fitted on {found.labels.get('pairs')} pairs people labelled "
            f"({found.labels.get('kind')}): agreement {m['calibrated_agreement']:.3f} "
            f"({m['calibrated_agreement_ci'][0]:.3f}-{m['calibrated_agreement_ci'][1]:.3f}) held out, ECE "
            f"{m['ece']:.3f}, {m['agreement_at_half_coverage']:.3f} on the surer half; here it swapped "
            f"{used.get('swapped', 0)} pairs and dropped {used.get('unsure', 0)} as unsure (below "
            f"{cfg.judge_min_confidence})")


def inputs(cfg: Config) -> Inputs:
    return Inputs(sources=cfg.sources, benchmarks=cfg.benchmarks,
                  built_in=() if cfg.sources else ("data/feedback_prompts.jsonl",))


def card_values(cfg: Config, run) -> dict:
    return {"prompt_source": ", ".join(cfg.sources) or "the project's shipped prompt set (pipelines/data)",
            **preference_card.values(run, cfg.judge or cfg.teacher, cfg.judge_mode),
            "judge_calibration": calibration_text(cfg, run), "second_opinion": second_opinion_text(cfg, run)}


def second_opinion_text(cfg: Config, run) -> str:
    """The card's line on the second judge: how often it ordered the exported pairs as the judge did."""
    if cfg.second_judge is None:
        return "none (second_judge is off)"
    found = run.summaries.get("second_opinion", {})
    total = sum(v for k, v in found.items() if k != "stage")
    second = cfg.second_judge
    who = second.model if second.base_url else second.embedded.model
    return (f"{who} ({cfg.second_judge_mode or cfg.judge_mode}) ordered {found.get('agree', 0)} of {total} pairs as "
            f"the judge did, {found.get('disagree', 0)} the other way and tied {found.get('undecided', 0)}; the "
            "pairs stay the judge's, and the review app asks about the disagreements first")


def stages(cfg: Config) -> list[Stage]:
    kind = cfg.prompt_kind or ("conversation" if cfg.sources else "text")
    return [
        Ingest(sources=cfg.sources or (f"{DEFAULT_PROMPTS}?max_rows={cfg.n_prompts}",), kind=kind,
               redact=cfg.redact),
        ToPrompts(),
        ExactDedup(),
        *([Decontaminate(benchmarks=cfg.benchmarks)] if cfg.benchmarks else []),
        NearDedup(threshold=cfg.threshold, index=cfg.index),
        Complete(n_completions=cfg.n_completions, models=cfg.models, temperatures=cfg.temperatures,
                 max_tokens=cfg.max_tokens, seed=cfg.seed),
        Judge(orderings=cfg.orderings, max_tokens=cfg.judge_max_tokens, mode=cfg.judge_mode),
        *([SecondJudge(orderings=cfg.orderings, max_tokens=cfg.judge_max_tokens,
                       mode=cfg.second_judge_mode or cfg.judge_mode)] if cfg.second_judge is not None else []),
        Binarize(rule=cfg.rule, min_margin=cfg.min_margin, score=cfg.score, seed=cfg.seed,
                 calibration=cfg.judge_calibration, min_confidence=cfg.judge_min_confidence),
        ExportPrefs(test_fraction=cfg.test_fraction, leakage_threshold=cfg.threshold),
    ]


RECIPE = Recipe(
    name="ultrafeedback", summary="preference pairs: several completions rated by a judge, binarized (UltraFeedback)",
    config=Config, stages=stages, card="ultrafeedback", roles=("teacher", "judge", "second_judge"),
    inputs=inputs,
    card_values=card_values, refresh=Refresh(),
)
