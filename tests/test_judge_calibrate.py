"""`python -m pipelines.judge calibrate`: labelled pairs from a run's review labels, an export or a file; the isotonic
map and ECE; a calibration refused for another judge; the command on the embedded judge."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.calibration import (Calibration, apply, expected_calibration_error, fit_isotonic, fit_map,
                                        fit_platt)
from pipelines.eval.stats import mean_ci
from pipelines.core.errors import ConfigError
from pipelines.judge.labelled import labelled_pairs

ROOT = Path(__file__).resolve().parents[1]
LABELS = Path(__file__).parent / "data" / "judge_labels.jsonl"


def test_isotonic_map_pools_violators_and_holds_the_ends():
    xs, ys = fit_isotonic([1, 2, 3, 4, 4], [0, 1, 0, 1, 1])
    assert xs == [1, 2, 3, 4] and ys == [0, 0.5, 0.5, 1]
    assert apply(xs, ys, 2.5) == 0.5 and apply(xs, ys, 3.5) == 0.75
    assert apply(xs, ys, -10) == 0 and apply(xs, ys, 10) == 1 and apply([], [], 3) == 0.5
    assert all(a <= b for a, b in zip(ys, ys[1:]))


def test_ece_is_zero_when_predictions_are_the_frequencies_and_large_when_not():
    outcomes = [1.0] * 7 + [0.0] * 3
    assert expected_calibration_error([0.7] * 10, outcomes) == pytest.approx(0.0)
    assert expected_calibration_error([0.1] * 10, outcomes) == pytest.approx(0.6)
    mean, low, high = mean_ci(outcomes)
    assert mean == pytest.approx(0.7) and low < mean < high


def test_a_perfect_judge_calibrates_to_certainty_and_a_coin_stays_at_chance():
    """`measure` on the same labelled pairs: scores that always side with the person, and scores drawn at random.
    Fitting on one half and measuring on the other must not leak which answer the person preferred."""
    import hashlib
    import random

    from pipelines.judge.calibrate import measure

    pairs, _ = labelled_pairs(str(LABELS))
    pairs = [{**p, "id": hashlib.sha256(f"{k}/{p['id']}".encode()).hexdigest()[:16]} for k in range(20)
             for p in pairs]  # 240 pairs
    perfect = [1.0 + (k % 3) if p["human"] else -1.0 - (k % 3) for k, p in enumerate(pairs)]
    measured, xs, ys = measure(perfect, pairs)
    assert measured["agreement"] == 1.0 and measured["calibrated_agreement"] == 1.0
    assert measured["ece"] < 0.05 and ys[0] == 0.0 and ys[-1] == 1.0
    rng = random.Random(1)
    coin = [rng.uniform(-1, 1) for _ in pairs]
    measured, _, _ = measure(coin, pairs)
    assert abs(measured["agreement"] - 0.5) < 0.1 and measured["ece"] < 0.1
    # the copies share their A/B draw, so A is preferred in 5 of 12: a map can learn that base rate, nothing more
    base = sum(p["human"] for p in pairs) / len(pairs)
    assert measured["map"].startswith("constant") and measured["calibrated_agreement"] <= max(base, 1 - base) + 1e-9
    assert measured["unrated"] == 0 and set(measured["held_out"]) == {"agrees", "surety"}


def test_the_map_is_the_fit_that_cross_validates_best():
    """A score that tells nothing gets the base rate (mirrored: 0.5), not isotonic steps fitted to noise; a score
    that separates the labels gets a map that does; the logistic fit never slopes down."""
    import random

    rng = random.Random(3)
    noise = [rng.uniform(-3, 3) for _ in range(80)]
    coin = [float(rng.random() < 0.5) for _ in noise]
    method, xs, ys = fit_map(noise, coin, mirror=True)
    assert method in ("constant mirrored", "platt mirrored") and abs(apply(xs, ys, 0.0) - 0.5) < 0.05
    assert max(ys) - min(ys) < 0.3
    telling = [rng.uniform(-3, 3) for _ in range(80)]
    told = [float(s + rng.gauss(0, 0.5) > 0) for s in telling]
    method, xs, ys = fit_map(telling, told, mirror=True)
    assert method != "constant" and apply(xs, ys, -3) < 0.1 and apply(xs, ys, 3) > 0.9
    xs, ys = fit_platt([1, 2, 3, 4], [1, 1, 0, 0])  # leans the wrong way: the base rate, not a falling curve
    assert ys == [0.5]
    assert fit_map([1.0, 2.0], [0.0, 1.0])[0] == "isotonic"  # too few labels to cross-validate


def test_pairs_from_a_file_show_the_preferred_answer_first_or_second_by_a_hash():
    pairs, info = labelled_pairs(str(LABELS))
    assert info["pairs"] == 12 and len(info["digest"]) == 16
    rows = [json.loads(line) for line in LABELS.read_text().splitlines()]
    for pair, row in zip(pairs, rows):
        preferred = pair["a"] if pair["human"] == 1.0 else pair["b"]
        assert preferred == row["chosen"] and {pair["a"], pair["b"]} == {row["chosen"], row["rejected"]}
        assert pair["slices"]["length"] in ("short", "long") and pair["slices"]["category"] in ("facts", "language")
        assert len(pair["slices"]["language"]) == 2
    assert 0 < sum(p["human"] for p in pairs) < 12  # both sides shown first
    assert sum(p["slices"]["language"] == "en" for p in pairs) >= 8  # langid, unsure on a six-word question
    assert labelled_pairs(str(LABELS))[0] == pairs  # the same draw every time


def test_pairs_from_an_export_and_from_a_runs_review_labels(tmp_path):
    """An export's chosen is the person's; in a run, the latest review label of each pair counts, chosen_better and
    rejected_better are used, a tie is counted and left out, an unlabelled pair is not read."""
    from pipelines.core.labels import pair_key, record

    msgs = lambda text: [{"role": "user", "content": "q"}, {"role": "assistant", "content": text}]  # noqa: E731
    rows = [{"prompt": f"question {k}", "prompt_id": f"p{k}", "chosen": msgs(f"good {k}"), "rejected": msgs(f"bad {k}")}
            for k in range(4)]
    export = tmp_path / "export" / "data"
    export.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), export / "train_prefs-00000-of-00001.parquet")
    pairs, _ = labelled_pairs(str(tmp_path / "export"))
    assert sorted(p["a"] if p["human"] else p["b"] for p in pairs) == [f"good {k}" for k in range(4)]

    run = tmp_path / "run"
    (run / "04_binarize").mkdir(parents=True)
    pl.DataFrame(rows).write_parquet(run / "04_binarize" / "part-00000.parquet")
    key = [pair_key(r["prompt_id"], r["chosen"], r["rejected"]) for r in rows]
    record(run, "pair", key[0], "rejected_better", reviewer="ann")
    record(run, "pair", key[0], "chosen_better", reviewer="bob")  # two reviewers disagree: the latest counts
    record(run, "pair", key[1], "rejected_better")
    record(run, "pair", key[2], "tie")
    pairs, info = labelled_pairs(str(run))
    preferred = sorted(p["a"] if p["human"] else p["b"] for p in pairs)
    assert preferred == ["bad 1", "good 0"] and info["left_out"] == {"tie": 1}
    assert "04_binarize" in info["kind"] or "binarize" in info["kind"]
    with pytest.raises(ConfigError, match="no such run dir"):
        labelled_pairs(str(tmp_path / "missing"))
    other = tmp_path / "other"  # labels copied from another run: none is about this run's pairs
    (other / "04_binarize").mkdir(parents=True)
    pl.DataFrame(rows[:1]).with_columns(pl.lit("another prompt").alias("prompt_id")).write_parquet(
        other / "04_binarize" / "part-00000.parquet")
    (other / "labels.sqlite").write_bytes((run / "labels.sqlite").read_bytes())
    with pytest.raises(ConfigError, match="no labelled pairs found"):
        labelled_pairs(str(other))


def test_a_calibration_made_for_another_judge_is_refused(tmp_path):
    judge = {"model": "embedded:qwen2.5-coder-1.5b", "endpoint": "embedded", "mode": "pairwise", "orderings": 2,
             "prompts": "abc"}
    Calibration(judge, [0.0, 1.0], [0.2, 0.9], {"agreement": 0.7}, {"digest": "d"}).save(tmp_path / "c.json")
    found = Calibration.load(tmp_path / "c.json", judge)
    assert found.probability(0.5) == pytest.approx(0.55)
    with pytest.raises(ConfigError, match="another judge .*mode"):
        Calibration.load(tmp_path / "c.json", {**judge, "mode": "pointwise"})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a calibration file"):
        Calibration.load(tmp_path / "bad.json")


def test_calibrate_on_the_embedded_judge_writes_the_report_and_reuses_its_answers(tmp_path, teacher_server):
    out = tmp_path / "cal"
    judge = f"{teacher_server.base_url}?model={teacher_server.model}"
    cmd = [sys.executable, "-m", "pipelines.judge", "calibrate", "--labels", str(LABELS), "--judges", judge,
           "--modes", "pairwise", "--target", "0.99", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| pairwise | 12 |" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1].startswith(("chosen:", "no judge meets agreement 0.99"))
    found = Calibration.load(out / f"{teacher_server.model}-pairwise.json")
    m = found.measured
    assert m["pairs"] == 12 and 0 <= m["agreement"] <= 1 and m["agreement_ci"][0] <= m["agreement"] <= \
        m["agreement_ci"][1]
    assert 0 <= m["ece"] <= 1 and set(m["by_slice"]) >= {"length=short", "length=long", "category=facts"}
    assert all(a <= b for a, b in zip(found.ys, found.ys[1:]))  # the map is monotone
    assert found.judge["endpoint"] == teacher_server.base_url and found.labels["pairs"] == 12
    assert (out / "reliability.png").stat().st_size > 1000 and "| judge | mode |" in (out / "report.md").read_text()
    assert (out / "calibration.json").exists() == proc.stdout.strip().splitlines()[-1].startswith("chosen:")
    import sqlite3

    count = lambda: sqlite3.connect(out / "requests.sqlite").execute(  # noqa: E731
        "SELECT count(*) FROM responses").fetchone()[0]
    before = count()
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and count() == before  # the rerun asked nothing anew
    bad = subprocess.run([*cmd[:-2], "--modes", "pairwise,rubric"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: --modes rubric: expected listwise")


def write_calibration(path: Path, judge: dict, xs, ys, agreement: float = 0.75) -> Path:
    Calibration(judge, xs, ys, {"calibrated_agreement": agreement, "calibrated_agreement_ci": [0.6, 0.9],
                                "pairs": 40, "ece": 0.04, "agreement_at_half_coverage": 0.85},
                {"pairs": 40, "kind": "review labels", "digest": "d"}).save(path)
    return path


def test_binarize_orders_pairs_by_the_calibrated_probability_and_drops_the_unsure(tmp_path):
    """A map under which people prefer the lower-rated answer when the gap is small swaps those pairs; pairs whose
    calibrated probability is below min_confidence leave as `judge: unsure`; the file is in the fingerprint."""
    from pipelines.core.stage import MESSAGES, Context
    from pipelines.stages.pairs import COMPLETIONS, Binarize
    from schemas import prompt_id

    path = write_calibration(tmp_path / "c.json", {"model": "m"}, [0.0, 1.0, 4.0], [0.2, 0.3, 0.95])
    completion = lambda text, overall: {"model": text, "principle": None, "content": text, "ratings": [],  # noqa
                                        "overall": overall}
    rows = [{"messages": [{"role": "user", "content": f"q{k}"}], "prompt": f"q{k}", "prompt_id": prompt_id(f"q{k}"),
             "completions": [completion(f"hi {k}", high), completion(f"lo {k}", 5.0)]}
            for k, high in enumerate([9.0, 6.0, 5.5])]  # gaps 4 (p .95), 1 (p .3: swapped, .7), 0.5 (p .25 -> .75)
    frame = pl.DataFrame(rows, schema={"messages": MESSAGES, "prompt": pl.String, "prompt_id": pl.String,
                                       "completions": COMPLETIONS})
    ctx = Context(run_dir=tmp_path, config=None)
    stage = Binarize(rule="best_vs_worst", calibration=str(path), min_confidence=0.72)
    out = stage.process(frame, ctx).to_dicts()
    chosen = {r["prompt"]: (r["chosen"][-1]["content"] if r["chosen"] else None, r["drop_reason"]) for r in out}
    assert chosen["q0"] == ("hi 0", None)
    assert chosen["q1"][1] == "judge: unsure (p=0.70)"
    assert chosen["q2"] == ("lo 2", None)  # swapped: people prefer the lower-rated answer at this gap
    assert json.loads(next(r for r in out if r["prompt"] == "q2")["meta"])["p_person"] == 0.75
    assert stage.summary(ctx.counters)["calibration"] == {"file": str(path), "swapped": 2, "unsure": 1,
                                                          "min_confidence": 0.72}
    before = stage.identity(ctx)["calibration"]
    write_calibration(path, {"model": "m"}, [0.0, 1.0], [0.5, 0.9])
    assert stage.identity(ctx)["calibration"] != before  # a new calibration reruns binarize


def test_calibration_settings_are_checked_before_a_build(tmp_path):
    """Another judge's file, a judge below the required agreement, a mode whose scores the map does not take, and
    min_confidence without a file: each one line; the build refuses before it starts."""
    from pipelines.recipes.ultrafeedback import Config, calibration_problem
    from pipelines.stages.judge import judge_identity

    cfg = Config()
    mine = write_calibration(tmp_path / "mine.json", judge_identity(cfg.judge, "pointwise", 2), [0.0, 1.0], [0.4, 0.8])
    assert calibration_problem(Config(judge_calibration=str(mine), judge_require_agreement=0.7)) is None
    low = calibration_problem(Config(judge_calibration=str(mine), judge_require_agreement=0.8))
    assert low.startswith("the judge's calibration") and "0.750 (0.600-0.900)" in low and "40 labelled" in low
    other = write_calibration(tmp_path / "other.json", judge_identity(cfg.judge, "pairwise", 2), [0.0], [0.5])
    assert "another judge (differs in mode" in calibration_problem(Config(judge_calibration=str(other)))
    assert "n_completions=4" in calibration_problem(Config(judge_calibration=str(other), judge_mode="pairwise"))
    listwise = write_calibration(tmp_path / "listwise.json", judge_identity(cfg.judge, "listwise", 2), [0.0], [0.5])
    assert calibration_problem(Config(judge_calibration=str(listwise), judge_mode="listwise")) is None
    assert "score=mean_aspects is another scale" in calibration_problem(
        Config(judge_calibration=str(listwise), judge_mode="listwise", score="mean_aspects"))
    assert "need judge_calibration=FILE" in calibration_problem(Config(judge_min_confidence=0.7))
    proc = subprocess.run([sys.executable, "-m", "pipelines.build", "ultrafeedback", "--run-dir", str(tmp_path / "r"),
                           "--set", f"judge_calibration={mine}", "--set", "judge_require_agreement=0.9"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "0.750" in proc.stderr
    assert not (tmp_path / "r" / "00_ingest").exists()


def test_the_review_app_asks_about_the_judges_least_sure_pairs_first_and_shows_the_running_agreement(tmp_path):
    """order=unsure: the calibrated probability nearest 0.5 first (else the smallest score margin), with the label
    filter; the progress line counts the labels and the agreement with the judge's order, with its CI."""
    from test_review import client

    from pipelines.core.labels import pair_key, record
    from pipelines.review.data import label_progress, pairs_page

    msgs = lambda text: [{"role": "user", "content": "q"}, {"role": "assistant", "content": text}]  # noqa: E731
    surety = {"a": 0.95, "b": 0.52, "c": 0.70, "d": 0.60}  # p_person of each pair
    rows = [{"prompt": f"question {k}", "prompt_id": f"p{k}", "chosen": msgs(f"good {k}"), "rejected": msgs(f"bad {k}"),
             "score_chosen": 7.0, "score_rejected": 5.0, "meta": json.dumps({"p_person": p}), "ordering_agreement": 1.0}
            for k, p in surety.items()]
    run = tmp_path / "run"
    (run / "04_binarize").mkdir(parents=True)
    pl.DataFrame(rows).write_parquet(run / "04_binarize" / "part-00000.parquet")
    stage, page, total = pairs_page(run, 1, size=3, order="unsure")
    assert stage == "binarize" and total == 4 and [r["prompt_id"] for r in page] == ["pb", "pd", "pc"]
    record(run, "pair", pair_key("pb", rows[1]["chosen"], rows[1]["rejected"]), "chosen_better")
    record(run, "pair", pair_key("pd", rows[3]["chosen"], rows[3]["rejected"]), "rejected_better")
    record(run, "pair", pair_key("pc", rows[2]["chosen"], rows[2]["rejected"]), "tie")
    _, page, total = pairs_page(run, 1, size=3, show="unlabelled", order="unsure")
    assert total == 1 and [r["prompt_id"] for r in page] == ["pa"]
    progress = label_progress(run)
    assert progress["labelled"] == 3 and progress["decided"] == 2 and progress["agreement"] == 0.5
    html = client(run).get("/pairs?order=unsure&show=labelled").text
    assert "people agreed with the judge's order on 0.50 of 2 decided pairs" in html
    assert html.index("good b") < html.index("good d") < html.index("good c")


def test_a_second_judge_marks_the_pairs_it_orders_otherwise_and_the_review_app_asks_about_them_first(tmp_path):
    """binarize notes in meta whether `second_scores` order each pair as the judge did (true, false, null for a
    tie), counts them; order=unsure puts the disagreements first, however sure the judge is of them."""
    from test_review import client

    from pipelines.core.stage import MESSAGES, Context
    from pipelines.review.data import pairs_page
    from pipelines.stages.pairs import COMPLETIONS, Binarize
    from schemas import prompt_id

    completion = lambda text, overall: {"model": text, "principle": None, "content": text, "ratings": [],  # noqa
                                        "overall": overall}
    seconds = {"agrees": [8.0, 2.0], "disagrees": [1.0, 6.0], "ties": [3.0, 3.0]}
    rows = [{"messages": [{"role": "user", "content": q}], "prompt": q, "prompt_id": prompt_id(q),
             "completions": [completion(f"hi {q}", 9.0), completion(f"lo {q}", 4.0)], "second_scores": s}
            for q, s in seconds.items()]
    frame = pl.DataFrame(rows, schema={"messages": MESSAGES, "prompt": pl.String, "prompt_id": pl.String,
                                       "completions": COMPLETIONS, "second_scores": pl.List(pl.Float64)})
    ctx = Context(run_dir=tmp_path, config=None)
    stage = Binarize(rule="best_vs_worst")
    out = stage.process(frame, ctx)
    agree = {r["prompt"]: json.loads(r["meta"])["judges_agree"] for r in out.to_dicts()}
    assert agree == {"agrees": True, "disagrees": False, "ties": None}
    assert all(r["chosen"][-1]["content"].startswith("hi") for r in out.to_dicts())  # the judge's pairs, unchanged
    assert stage.summary(ctx.counters)["second_opinion"] == {"agree": 1, "disagree": 1, "undecided": 1}
    plain = Binarize(rule="best_vs_worst").process(frame.drop("second_scores"), Context(run_dir=tmp_path, config=None))
    assert all("judges_agree" not in json.loads(m) for m in plain["meta"])
    run = tmp_path / "run"
    (run / "04_binarize").mkdir(parents=True)
    out.write_parquet(run / "04_binarize" / "part-00000.parquet")
    _, page, total = pairs_page(run, 1, size=3, order="unsure")
    assert total == 3 and page[0]["prompt"] == "disagrees" and page[0]["judges_agree"] is False
    html = client(run).get("/pairs?order=unsure").text
    assert html.index("hi disagrees") < min(html.index("hi agrees"), html.index("hi ties"))
    assert html.count("the second judge prefers rejected") == 1 and "the second judge ties them" in html
