"""AI feedback: the judge's parser, position-bias control, every binarization rule, and the preference export.

The rules and the parser run on hand-built completions with known scores. The judge runs twice: against a loopback
judge whose ratings we choose (one fair, one that always favours the first text shown, which only a scripted judge
produces on demand), and against the real embedded SmolLM2 server.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import polars as pl
import pytest
from datasets import load_dataset
from trl.data_utils import is_conversational, maybe_extract_prompt

from conftest import run_build

from pipelines.core.stage import Context
from pipelines.prompts import ultrafeedback as F
from pipelines.stages.pairs import COMPLETIONS, Binarize
from pipelines.stages.ultrafeedback import Complete
from pipelines.stages.judge import JUDGED, Judge, agreement, orders, pair_scores
from pipelines.teacher.client import Teacher
from pipelines.teacher.config import TeacherConfig
from pipelines.teacher.server import EmbeddedConfig
from pipelines.teacher.weights import DEFAULT_JUDGE
from test_teacher import fault_server  # noqa: F401,F811  (a pytest fixture)

PROMPT = [{"role": "user", "content": "Name a planet."}]


def completion(content: str, overall: float, aspects=(4, 4, 4, 4)) -> dict:
    ratings = [{"aspect": a, "rating": r, "rationale": "because"} for a, r in zip(F.ASPECTS, aspects)]
    return {"model": "m", "principle": "helpfulness", "content": content, "ratings": ratings, "overall": overall}


def rated_rows(*rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame({
        "messages": [PROMPT] * len(rows),
        "prompt": ["Name a planet."] * len(rows),
        "prompt_id": [f"{i:064x}" for i in range(len(rows))],
        "completions": list(rows),
        "ordering_agreement": [1.0] * len(rows),
    }, schema_overrides={"completions": COMPLETIONS})


def binarize(frame: pl.DataFrame, **options) -> tuple[pl.DataFrame, pl.DataFrame, Context]:
    ctx = Context(run_dir=Path("."), config=None)
    out = Binarize(**options).process(frame, ctx)
    return out.filter(pl.col("drop_reason").is_null()), out.filter(pl.col("drop_reason").is_not_null()), ctx


# --- the judge's parser -------------------------------------------------------------------------------------------

def test_parse_ratings_reads_json_text_blocks_and_bare_lines():
    as_json = '```json\n{"ratings": [{"text": 2, "rating": 3, "rationale": "ok"}, {"text": 1, "rating": 5}]}\n```'
    assert F.parse_ratings(as_json, 2, "helpfulness") == ([{"rating": 5.0, "rationale": ""},
                                                            {"rating": 3.0, "rationale": "ok"}], None)
    blocks = ("Sure.\n#### Output for Text 1\nRating: 2\nRationale: vague.\n\n#### Output for Text 2\n"
              "Rating: **4**\nRationale: clear and right.")
    ratings, error = F.parse_ratings(blocks, 2, "truthfulness")
    assert error is None and [r["rating"] for r in ratings] == [2.0, 4.0] and ratings[1]["rationale"] == "clear and right."
    assert F.parse_ratings("Rating: 7\nRating: 9", 2, F.OVERALL)[0] == [{"rating": 7.0, "rationale": ""},
                                                                          {"rating": 9.0, "rationale": ""}]
    lines = F.parse_ratings("Text 1: 4 - clear and right\nText 2: **2** (wrong)", 2, "helpfulness")
    assert lines == ([{"rating": 4.0, "rationale": "clear and right"}, {"rating": 2.0, "rationale": "wrong"}], None)
    honest, error = F.parse_ratings("Text 1\nRating: N/A\nText 2\nRating: 3", 2, "honesty")
    assert error is None and honest[0]["rating"] is None and honest[1]["rating"] == 3.0


@pytest.mark.parametrize("text, aspect, error", [
    ("Text 1\nRating: N/A\nText 2\nRating: 3", "helpfulness", "text 1: N/A is not allowed for helpfulness"),
    ("Text 1\nRating: 6\nText 2\nRating: 3", "helpfulness", "text 1: rating '6' is outside 1-5"),
    ("Text 1\nRating: 4", "helpfulness", "no helpfulness rating for text 2 of 2"),
    ("Rating: 1-10\nThe text is not helpful.", F.OVERALL, "no overall rating for text 1 of 2"),
    ("Text 1: score - reason\nText 2: score - reason", F.OVERALL, "no overall rating for text 1 of 2"),
    ("", F.OVERALL, "no overall rating for text 1 of 2"),
])
def test_parse_ratings_refuses_what_it_cannot_trust(text, aspect, error):
    assert F.parse_ratings(text, 2, aspect) == (None, error)


def test_the_ratings_schema_sent_to_the_judge_allows_only_a_usable_answer():
    from pipelines.teacher.structured import check

    def answer(*items):
        return {"ratings": [dict(zip(("text", "rationale", "rating"), item)) for item in items]}

    schema = F.ratings_schema(2, "helpfulness")
    assert check(answer((1, "clear", 4), (2, "wrong", 1)), schema) is None
    assert check(answer((1, "clear", 4)), schema) is not None  # one text unrated
    assert check(answer((1, "clear", 4), (3, "no such text", 2)), schema) is not None
    assert check(answer((1, "clear", 4), (2, "as text", "4")), schema) is not None
    assert check(answer((1, "clear", 4), (2, "off the scale", 6)), schema) is not None
    assert check(answer((1, "clear", 4.5), (2, "half", 2)), schema) is not None
    honesty = F.ratings_schema(2, "honesty")
    assert check(answer((1, "unsure", "N/A"), (2, "ok", 5)), honesty) is None
    assert check(answer((1, "unsure", "N/A"), (2, "ok", 5)), schema) is not None
    overall = F.ratings_schema(3, F.OVERALL)
    assert check(answer((1, "a", 10), (2, "b", 1), (3, "c", 7)), overall) is None
    # whatever the schema admits, the parser reads back as the same ratings
    assert F.parse_ratings(json.dumps(answer((2, "b", 1), (1, "a", 10), (3, "c", 7))), 3, F.OVERALL)[0] == [
        {"rating": 10.0, "rationale": "a"}, {"rating": 1.0, "rationale": "b"}, {"rating": 7.0, "rationale": "c"}]


def test_rating_prompt_shows_texts_in_the_order_given():
    messages = F.rating_messages("honesty", "Q?", ["first answer", "second answer"])
    body = messages[-1]["content"]
    assert body.index("first answer") < body.index("second answer") and "N/A" in body
    assert "<text 2>\nsecond answer\n</text 2>" in body


# --- position bias ------------------------------------------------------------------------------------------------

def test_orders_and_agreement():
    assert orders(3, 2) == [[0, 1, 2], [2, 1, 0]]
    assert orders(3, 4) == [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]]
    assert orders(2, 3) == [[0, 1], [1, 0]]  # only two orders of two texts exist
    assert agreement([5, 3, 1], [4, 2, 1]) == (3, 3)
    assert agreement([5, 3, 1], [1, 3, 5]) == (0, 3)
    assert agreement([5, None, 1], [1, 3, 5]) == (0, 1)


def scripted_judge(favour_first: bool):
    """A loopback judge: rates the shown texts by length rank (shortest 1, next 2, ...), or, when `favour_first`,
    rates whatever is shown first highest and the rest 1. Answers in UltraFeedback's text format."""
    def answer(body: dict) -> str:
        content = next(m["content"] for m in body["messages"] if m["role"] == "user")  # the rating request
        texts = re.findall(r"<text (\d+)>\n(.*?)\n</text \1>", content, re.S)
        high = 10 if "1 = useless or harmful; 10" in content else 5
        by_length = sorted(len(t) for _, t in texts)
        blocks = []
        for k, text in texts:
            rating = (high if k == "1" else 1) if favour_first else 1 + by_length.index(len(text))
            blocks.append(f"#### Output for Text {k}\nRating: {rating}\nRationale: length {len(text)}")
        return "\n\n".join(blocks)
    return answer


def run_judge(tmp_path: Path, base_url: str, model: str, rows: pl.DataFrame, max_tokens: int = 200):
    teacher = Teacher(TeacherConfig(base_url=base_url, model=model, max_concurrency=8, reasks=1),
                      tmp_path / "requests.sqlite", tmp_path / "server.log", log=lambda m: None)
    ctx = Context(run_dir=tmp_path, config=None, clients={"teacher": teacher})
    try:
        return Judge(orderings=2, max_tokens=max_tokens).process(rows, ctx), ctx, teacher
    finally:
        teacher.close()


def unrated(*texts: str) -> list[dict]:
    return [{"model": "m", "principle": "honesty", "content": t, "ratings": [], "overall": None} for t in texts]


def test_judge_maps_ratings_back_through_every_ordering(tmp_path, fault_server):
    texts = ("a" * 12, "b" * 45, "c" * 30)  # length ranks 1, 3, 2 whatever the order shown
    server = fault_server(answer=scripted_judge(favour_first=False))
    out, ctx, teacher = run_judge(tmp_path, server.url, "judge", rated_rows(unrated(*texts)))
    shown = [re.findall(r"<text \d>\n(\w)", b["messages"][-1]["content"]) for b in server.bodies]
    assert sorted(map(tuple, shown)).count(("a", "b", "c")) == len(JUDGED)
    assert sorted(map(tuple, shown)).count(("c", "b", "a")) == len(JUDGED)  # the swap was really shown
    row = out.row(0, named=True)
    assert row["drop_reason"] is None and row["ordering_agreement"] == 1.0
    assert [c["overall"] for c in row["completions"]] == [1.0, 3.0, 2.0]
    assert [r["rating"] for r in row["completions"][1]["ratings"]] == [3.0] * 4
    assert row["completions"][1]["ratings"][0]["rationale"] == "length 45"
    assert ctx.counters["judge_requests"] == 2 * len(JUDGED) and not ctx.counters["judge_parse_failures"]


def test_position_biased_judge_is_averaged_and_shows_in_agreement(tmp_path, fault_server):
    server = fault_server(answer=scripted_judge(favour_first=True))
    out, ctx, _ = run_judge(tmp_path, server.url, "judge", rated_rows(unrated("first text", "second text")))
    row = out.row(0, named=True)
    assert row["ordering_agreement"] == 0.0  # each ordering ranks the other text first
    assert [c["overall"] for c in row["completions"]] == [5.5, 5.5]  # (10 + 1) / 2 for both


def test_unreadable_judge_answer_is_asked_again_in_its_own_format(tmp_path, fault_server):
    fair = scripted_judge(favour_first=False)
    server = fault_server(answer=lambda body: fair(body) if len(body["messages"]) > 2 else "The text is fine.")
    out, ctx, teacher = run_judge(tmp_path, server.url, "judge", rated_rows(unrated("short", "longer text")))
    reasks = [b["messages"][-1]["content"] for b in server.bodies if len(b["messages"]) > 2]
    assert len(reasks) == 2 * len(JUDGED) and teacher.stats["reasks"] == 2 * len(JUDGED)
    assert all("could not be read (no " in r and "format asked for" in r and "Schema" not in r for r in reasks)
    assert out["drop_reason"][0] is None and [c["overall"] for c in out["completions"][0]] == [1.0, 2.0]


def test_judge_on_the_embedded_model_parses_or_reports_every_answer(tmp_path, teacher_server):
    rows = rated_rows(unrated("Mars is a planet.", "A planet: Jupiter, the largest one."),
                      unrated("Venus.", "I do not know any planets."))
    out, ctx, teacher = run_judge(tmp_path, teacher_server.base_url, teacher_server.model, rows, max_tokens=60)
    requests = ctx.counters["judge_requests"]
    failed = ctx.counters["judge_parse_failures"] + ctx.counters["judge_failed"]
    assert requests == 2 * 2 * len(JUDGED)
    assert teacher.stats["requests"] >= requests  # re-asks come on top
    kept = out.filter(pl.col("drop_reason").is_null())
    for completions in kept["completions"].to_list():  # whatever was parsed is complete and on its scale
        for c in completions:
            assert 1 <= c["overall"] <= 10 and len(c["ratings"]) == 4
            assert all(r["rating"] is None or 1 <= r["rating"] <= 5 for r in c["ratings"])
    for reason in out["drop_reason"].drop_nulls().to_list():
        assert reason.startswith("judge_failed: ")
    assert failed <= requests
    print(f"embedded judge: {failed}/{requests} answers unreadable, {kept.height}/2 prompts rated")


# --- completions ------------------------------------------------------------------------------------------------

def test_completions_go_to_each_model_of_the_pool_in_turn_with_sampled_principles(tmp_path, fault_server):
    def answer(body):
        return f"{body['model']} answers: {body['messages'][-1]['content']}"
    first, second = fault_server(answer=answer), fault_server(answer=answer)
    config = TeacherConfig(base_url=first.url, model="model-a", pool=(f"{second.url}?model=model-b",))
    teacher = Teacher(config, tmp_path / "requests.sqlite", tmp_path / "server.log", log=lambda m: None)
    ctx = Context(run_dir=tmp_path, config=None, clients={"teacher": teacher})
    rows = pl.DataFrame({"messages": [PROMPT, [{"role": "user", "content": "Name a star."}]],
                         "prompt_id": ["a" * 64, "b" * 64]})
    try:
        out = Complete(n_completions=4, temperatures=(0.5, 1.0)).process(rows, ctx)
    finally:
        teacher.close()
    for completions in out["completions"].to_list():
        assert [c["model"] for c in completions] == ["model-a", "model-b", "model-a", "model-b"]
        assert all(c["content"].startswith(c["model"]) for c in completions)  # answered by that model's endpoint
        assert all(c["principle"] in F.PRINCIPLES for c in completions)
    assert {b["model"] for b in first.bodies} == {"model-a"} and {b["model"] for b in second.bodies} == {"model-b"}
    systems = {b["messages"][0]["content"] for b in first.bodies + second.bodies}
    assert len(systems) >= 3 and all(b["messages"][0]["role"] == "system" for b in first.bodies)
    assert sorted(b["temperature"] for b in first.bodies) == [0.5, 0.5, 1.0, 1.0]  # k // models picks it
    again = Complete(n_completions=4).plan("a" * 64, ["m"])
    assert again == Complete(n_completions=4).plan("a" * 64, ["m"])  # principles and seeds are reproducible


# --- binarization ---------------------------------------------------------------------------------------------------

SCORED = [completion("Mercury.", 6), completion("Mars, the red planet.", 9), completion("Pluto?", 2),
          completion("Earth.", 5)]


def test_best_vs_random_picks_the_best_and_a_seeded_other():
    kept, dropped, _ = binarize(rated_rows(SCORED, SCORED), rule="best_vs_random", seed=3)
    assert kept.height == 2 and dropped.height == 0
    for row in kept.iter_rows(named=True):
        assert row["chosen"][-1]["content"] == "Mars, the red planet." and row["score_chosen"] == 9
        assert row["rejected"][-1]["content"] in {"Mercury.", "Pluto?", "Earth."}
        assert row["messages"] == row["chosen"] and row["chosen"][:-1] == PROMPT
        assert len(row["completions"]) == 4
    again, _, _ = binarize(rated_rows(SCORED, SCORED), rule="best_vs_random", seed=3)
    assert again["rejected"].to_list() == kept["rejected"].to_list()  # deterministic per prompt and seed
    picks = {binarize(rated_rows(SCORED), rule="best_vs_random", seed=s)[0]["score_rejected"][0] for s in range(30)}
    assert picks == {6.0, 2.0, 5.0}  # every other completion can be drawn


def test_best_vs_worst_and_all_pairs():
    kept, _, _ = binarize(rated_rows(SCORED), rule="best_vs_worst")
    assert (kept["score_chosen"][0], kept["score_rejected"][0]) == (9.0, 2.0)
    pairs, _, _ = binarize(rated_rows(SCORED), rule="all_pairs")
    assert pairs.height == 6  # 4 distinct scores: every unordered pair once
    assert all(c > r for c, r in zip(pairs["score_chosen"], pairs["score_rejected"]))
    assert pairs["id"].n_unique() == 6


def test_ties_identical_texts_and_small_margins_are_dropped_with_reasons():
    tie = [completion("Mars.", 7), completion("Venus.", 7)]
    same = [completion("Mars.", 9), completion("Mars.", 3)]
    close = [completion("Mars.", 8), completion("Venus.", 7.5)]
    kept, dropped, _ = binarize(rated_rows(tie, same, close), rule="best_vs_worst", min_margin=1.0)
    assert kept.height == 0
    assert dropped["drop_reason"].to_list() == ["tie: both scored 7", "identical_texts: chosen and rejected are "
                                                "the same text", "low_margin: 0.5 < min_margin 1"]
    kept, dropped, ctx = binarize(rated_rows(tie + [completion("Pluto.", 3)]), rule="all_pairs")
    assert kept.height == 2 and ctx.counters["pairs_not_formed"] == 0  # the tied pair is never a candidate


def test_mean_aspects_score_ranks_by_the_aspect_ratings():
    rows = rated_rows([completion("Mars.", 9, (2, 2, None, 2)), completion("Venus.", 3, (5, 5, 5, 4))])
    kept, _, _ = binarize(rows, rule="best_vs_worst", score="mean_aspects")
    assert kept["chosen"][0][-1]["content"] == "Venus." and kept["score_chosen"][0] == pytest.approx(19 / 4)
    assert kept["score_rejected"][0] == 2.0  # honesty N/A is left out of the mean


def test_unknown_rule_is_a_config_error():
    from pipelines.core.errors import ConfigError

    with pytest.raises(ConfigError, match="best_vs_random"):
        Binarize(rule="best")


# --- the recipe end to end ------------------------------------------------------------------------------------------

def test_ultrafeedback_recipe_exports_what_trl_reads(tmp_path, teacher_server, fault_server):
    """The whole recipe on the embedded teacher, with the judge on the scripted loopback judge (so that pairs are
    formed whatever the tiny model writes): splits, columns, TRL's prompt extraction, the card."""
    judge = fault_server(answer=scripted_judge(favour_first=False))
    run_build(tmp_path / "uf", f"judge.base_url={judge.url}", "judge.model=scripted", "judge_mode=listwise", "n_prompts=5",
              "n_completions=3", "max_tokens=48", "test_fraction=0.3", server=teacher_server, recipe="ultrafeedback")
    export = tmp_path / "uf" / "export"
    loaded = load_dataset(str(export), cache_dir=str(tmp_path / "hf"))
    assert {"train_prefs", "train_sft", "train_gen"} <= set(loaded)
    prefs = loaded["train_prefs"]
    assert prefs.column_names[:7] == ["prompt", "prompt_id", "chosen", "rejected", "messages", "score_chosen",
                                      "score_rejected"]
    for row in prefs:
        assert row["score_chosen"] > row["score_rejected"]
        assert is_conversational({"chosen": row["chosen"], "rejected": row["rejected"]})
        extracted = maybe_extract_prompt({"chosen": row["chosen"], "rejected": row["rejected"]})
        assert extracted["prompt"] == [{"role": "user", "content": row["prompt"]}]
        assert len(extracted["chosen"]) == 1 and extracted["chosen"][0]["role"] == "assistant"
        assert len(row["completions"]) >= 2 and all(c["overall"] is not None for c in row["completions"])
    card = (export / "README.md").read_text()
    words = " ".join(card.split())
    assert "rule `best_vs_random`" in words and "Mean agreement between orderings" in words
    assert "$" not in card.split("---")[2]  # every placeholder filled
    report = json.loads((tmp_path / "uf" / "report.json").read_text())
    judge_row = next(r for r in report["stages"] if r["stage"].endswith("judge"))
    assert judge_row["counters"]["judge_requests"] == 2 * len(JUDGED) * judge_row["rows_in"]
    assert report["judge"].startswith("judge: 0 of ") and "agreement between orderings 1.000" in report["judge"]

    # DPOTrainer takes the export as written (through `python -m pipelines.train dpo`)
    from pipelines.train.dpo import train_dpo
    from pipelines.train.options import DPOOptions

    result = train_dpo(DPOOptions(str(export), output_dir=str(tmp_path / "dpo"), max_steps=1, max_length=160),
                       log=lambda *_: None)
    metrics = json.loads((tmp_path / "dpo" / "preference_metrics.json").read_text())
    assert result["steps"] == 1 and metrics["pairs"] >= 1 and 0 <= metrics["after"]["reward_accuracy"] <= 1


# --- pointwise and pairwise judging -------------------------------------------------------------------------------

def test_expected_rating_comes_from_the_digit_tokens_probabilities():
    tokens = [{"token": "{\"", "logprob": 0.0, "top": {}}, {"token": "rating", "logprob": 0.0, "top": {}},
              {"token": "7", "logprob": math.log(0.6), "top": {"7": math.log(0.6), "8": math.log(0.2),
                                                                "x": math.log(0.1), "12": math.log(0.05)}}]
    distribution = F.digit_distribution(tokens, range(1, 10))
    assert distribution == pytest.approx({7: 0.75, 8: 0.25})  # renormalized over the allowed digits only
    assert F.expected(distribution) == pytest.approx(7.25)
    assert F.digit_distribution(None, range(1, 10)) is None
    assert F.digit_distribution([{"token": "{", "logprob": 0.0, "top": {}}], range(1, 10)) is None


def test_parse_choice_reads_json_or_a_bare_number_and_refuses_out_of_range():
    assert F.parse_choice('{"rating": 6}', "rating", range(1, 10)) == (6, None)
    assert F.parse_choice("Rating: 8 because", "rating", range(1, 10)) == (8, None)
    assert F.parse_choice('{"better": "2"}', "better", range(1, 3)) == (2, None)
    assert F.parse_choice('{"rating": 10}', "rating", range(1, 10))[0] is None
    assert F.parse_choice("no idea", "better", range(1, 3))[0] is None


def test_pair_scores_count_expected_wins_and_call_a_split_verdict_a_tie():
    # 0 beats 1 in both orders; 0 vs 2: each order picks the answer shown first (position bias) -> a tie
    first = {(0, 1): (0.9, 1), (1, 0): (0.2, 2), (0, 2): (0.8, 1), (2, 0): (0.7, 1)}
    expected, wins, same, compared = pair_scores(3, first)
    assert expected[0] == pytest.approx((0.9 + 0.8) / 2 + (0.8 + 0.3) / 2)
    assert expected[1] == pytest.approx(1 - (0.9 + 0.8) / 2) and expected[2] == pytest.approx(1 - 0.55)
    assert wins == [1.5, 0.0, 0.5] and (same, compared) == (1, 2)
    assert pair_scores(2, {(0, 1): (1.0, 1)}) == ([None, None], [0.0, 0.0], 0, 0)  # one order only: not compared


def test_the_embedded_judge_tells_a_good_answer_from_a_bad_one_in_both_modes(tmp_path):
    """The default judge (Qwen2.5-Coder-1.5B on llama-server), grammar-enforced, with logprobs."""
    question = "What is the boiling point of water at sea level in degrees Celsius?"
    good = "Water boils at 100 degrees Celsius at sea level (standard atmospheric pressure)."
    bad = "I'm sorry, but I can't help with that request."
    rows = rated_rows(unrated(bad, good)).with_columns(pl.Series("prompt", [question]))
    config = TeacherConfig(max_concurrency=4, embedded=EmbeddedConfig(model=DEFAULT_JUDGE))
    teacher = Teacher(config, tmp_path / "requests.sqlite", tmp_path / "judge.log", log=lambda m: None)
    ctx = Context(run_dir=tmp_path, config=None, clients={"teacher": teacher})
    try:
        for mode in ("pointwise", "pairwise"):
            out = Judge(mode=mode).process(rows, ctx)
            scores = {c["content"]: c["overall"] for c in out["completions"][0]}
            assert scores[good] > scores[bad], (mode, scores)
    finally:
        teacher.close()
    assert ctx.counters["judge_parse_failures"] == 0 and ctx.counters["judge_sampled_ratings"] == 0
    assert ctx.counters["judge_expected_ratings"] == 4 and ctx.counters["judge_verdicts"] == 2


def test_the_default_ultrafeedback_build_exports_pairs_and_says_what_its_judge_can_tell(tmp_path, teacher_server):
    """The default recipe end to end with the embedded 1.5B judge (pointwise, logprob-weighted): pairs come out."""
    run_build(tmp_path / "uf", "n_prompts=3", "n_completions=2", "max_tokens=48", server=teacher_server,
              recipe="ultrafeedback")
    report = json.loads((tmp_path / "uf" / "report.json").read_text())
    judge_row = next(r for r in report["stages"] if r["stage"].endswith("judge"))
    assert judge_row["counters"]["judge_expected_ratings"] == judge_row["counters"]["judge_requests"] == 6
    pairs = pl.read_parquet(tmp_path / "uf" / "export" / "data" / "*_prefs-*.parquet")
    assert pairs.height >= 2 and (pairs["score_chosen"] > pairs["score_rejected"]).all()
    words = " ".join((tmp_path / "uf" / "export" / "README.md").read_text().split())
    assert "mode `pointwise`" in words and "Qwen2.5-Coder-1.5B-Instruct-Q4_K_M" in words
    assert "no better than chance" in words and "Do not mistake these pairs for human-grade preferences" in words
    assert "The judge's calibration against people's labels: none" in words
    # a calibration of this judge: the rebuild reruns binarize and export only, and drops the pairs it is unsure of
    from pipelines.core.calibration import Calibration
    from pipelines.recipes.ultrafeedback import Config
    from pipelines.stages.judge import judge_identity

    calibration = tmp_path / "calibration.json"
    Calibration(judge_identity(Config().judge, "pointwise", 2), [0.0, 2.0, 8.0], [0.5, 0.6, 1.0],
                {"calibrated_agreement": 0.7, "calibrated_agreement_ci": [0.6, 0.8], "pairs": 50, "ece": 0.05,
                 "agreement_at_half_coverage": 0.8}, {"pairs": 50, "kind": "review labels"}).save(calibration)
    run_build(tmp_path / "uf", "n_prompts=3", "n_completions=2", "max_tokens=48", f"judge_calibration={calibration}",
              "judge_min_confidence=0.55", server=teacher_server, recipe="ultrafeedback")
    report = json.loads((tmp_path / "uf" / "report.json").read_text())
    status = {r["stage"].split("_", 1)[1]: r["status"] for r in report["stages"]}
    assert status["judge"] == "skipped" and status["binarize"] == "ran" and status["export"] == "ran"
    used = next(r for r in report["stages"] if r["stage"].endswith("binarize"))["summary"]["calibration"]
    quarantine = pl.read_parquet(tmp_path / "uf" / "quarantine.parquet")
    assert quarantine["reason"].str.starts_with("judge: unsure").sum() == used["unsure"]
    kept = [json.loads(m) for f in (tmp_path / "uf").glob("*_binarize/part-*.parquet")
            for m in pl.read_parquet(f)["meta"]]
    assert len(kept) + used["unsure"] >= 2 and all(m["p_person"] >= 0.55 for m in kept)
    words = " ".join((tmp_path / "uf" / "export" / "README.md").read_text().split())
    assert f"dropped {used['unsure']} as unsure" in words and "calibration.json, fitted on 50 pairs" in words
    # every pair abstained (no score gap reaches 0.95 on this map): no pairs, the build ends well, the card says why
    unsure = Calibration.load(calibration)
    unsure.ys = [0.5, 0.6, 0.9]
    unsure.save(calibration)
    proc = run_build(tmp_path / "uf", "n_prompts=3", "n_completions=2", "max_tokens=48",
                     f"judge_calibration={calibration}", "judge_min_confidence=0.95", server=teacher_server,
                     recipe="ultrafeedback")
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "uf" / "export" / "data").glob("*_prefs-*.parquet"))
    used = next(r for r in json.loads((tmp_path / "uf" / "report.json").read_text())["stages"]
                if r["stage"].endswith("binarize"))["summary"]["calibration"]
    words = " ".join((tmp_path / "uf" / "export" / "README.md").read_text().split())
    assert used["unsure"] >= 2 and f"dropped {used['unsure']} as unsure (below 0.95)" in words
    # a second opinion: the same judge asked pairwise (one server, shared); the export stays the judge's, every kept
    # pair says whether the second opinion orders it the same way, and the card counts them
    second = ("second_judge.embedded.model=qwen2.5-coder-1.5b", "second_judge.max_concurrency=4",
              "second_judge.reasks=1", "second_judge_mode=pairwise")
    run_build(tmp_path / "uf", "n_prompts=3", "n_completions=2", "max_tokens=48", *second, server=teacher_server,
              recipe="ultrafeedback")
    report = json.loads((tmp_path / "uf" / "report.json").read_text())
    rows = {r["stage"].split("_", 1)[1]: r for r in report["stages"]}
    assert rows["judge"]["status"] == "skipped" and rows["second_judge"]["status"] == "ran"
    assert rows["second_judge"]["counters"]["judge_requests"] == 6  # 3 prompts x 2 orders of 2 completions
    assert not (tmp_path / "uf" / "second_judge-server.log").exists()  # equal to the judge: its client, its server
    kept = [json.loads(m) for f in (tmp_path / "uf").glob("*_binarize/part-*.parquet")
            for m in pl.read_parquet(f)["meta"]]
    seconded = rows["binarize"]["summary"]["second_opinion"]
    assert kept and all("judges_agree" in m for m in kept)
    assert sum(v for k, v in seconded.items() if k != "stage") == len(kept)
    assert seconded.get("disagree", 0) == sum(m["judges_agree"] is False for m in kept)
    words = " ".join((tmp_path / "uf" / "export" / "README.md").read_text().split())
    assert f"qwen2.5-coder-1.5b (pairwise) ordered {seconded.get('agree', 0)} of {len(kept)} pairs" in words
