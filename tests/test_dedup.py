import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from datasketch import MinHash

from pipelines.core.errors import ConfigError
from pipelines.core.stage import Context
from pipelines.dedup.index import MinHashIndex
from pipelines.dedup.lsh import ALL_PAIRS_UP_TO, band_keys, components, detection_probability, similar_pairs
from pipelines.dedup.minhash import MinHashParams, estimated_jaccard, jaccard, shingle_hashes, signatures
from pipelines.dedup.recall import edit_words, planted_recall
from pipelines.stages.dedup import Decontaminate, ExactDedup, NearDedup
from pipelines.stages.export import separate_splits
from schemas import conversation_id

DATA = Path(__file__).parent / "data" / "dedup"
PASSAGES = [json.loads(line)["text"] for line in (DATA / "passages.jsonl").read_text().splitlines()]
PARAMS = MinHashParams()


def frame(texts, prompts=None):
    prompts = prompts or ["Tell me about it?"] * len(texts)
    msgs = [[{"role": "user", "content": p}, {"role": "assistant", "content": t}] for p, t in zip(prompts, texts)]
    return pl.DataFrame({"id": [conversation_id(m) for m in msgs], "messages": msgs})


def run_two_pass(stage, df, run_dir, fingerprint="run-1"):
    ctx = Context(run_dir=run_dir, config=None, fingerprint=fingerprint)
    stage.scan(iter([df]), ctx)
    out = stage.apply(df, ctx)
    stage.finish(ctx)
    return out, ctx


def edited_pairs(rates=(0.0, 0.01, 0.02, 0.04, 0.06, 0.1, 0.15)):
    """(original, copy) for every passage at several edit rates: true Jaccard from 1.0 down to about 0.3."""
    rng = random.Random(7)
    vocabulary = sorted({w for p in PASSAGES for w in p.split()})
    return [(p, edit_words(p, rate, rng, vocabulary)) for p in PASSAGES for rate in rates]


def test_shingles_fold_case_punctuation_and_unicode():
    hashes, offsets = shingle_hashes(["The cat, the CAT sat!", "the cat the cat sat", "ÇA VA", "ça  va...", "", None],
                                     2)
    docs = [set(hashes[offsets[i]:offsets[i + 1]].tolist()) for i in range(6)]
    assert docs[0] == docs[1] and len(docs[0]) == 3  # "the cat", "cat the", "cat sat"
    assert docs[2] == docs[3] and len(docs[2]) == 1  # shorter than n: one shingle of all its words
    assert docs[4] == docs[5] == set()


def test_estimated_jaccard_tracks_exact_jaccard_on_real_text():
    """Stated tolerance: each estimate within 0.15 of the exact Jaccard (about 4 standard deviations at 128
    permutations), mean absolute error under 0.035 and no bias beyond 0.015."""
    pairs = edited_pairs()
    flat = [t for pair in pairs for t in pair]
    hashes, offsets = shingle_hashes(flat, 5)
    sigs, _ = signatures(flat, PARAMS)
    exact = np.array([jaccard(hashes[offsets[2 * i]:offsets[2 * i + 1]], hashes[offsets[2 * i + 1]:offsets[2 * i + 2]])
                      for i in range(len(pairs))])
    estimate = np.array([estimated_jaccard(sigs[2 * i], sigs[2 * i + 1]) for i in range(len(pairs))])
    assert exact.min() < 0.5 and exact.max() == 1.0  # the pairs cover the range
    errors = estimate - exact
    assert np.abs(errors).max() <= 0.15
    assert np.abs(errors).mean() < 0.035
    assert abs(errors.mean()) < 0.015


def test_agrees_with_datasketch_on_the_same_shingles():
    pairs = edited_pairs()
    flat = [t for pair in pairs for t in pair]
    hashes, offsets = shingle_hashes(flat, 5)
    sigs, _ = signatures(flat, PARAMS)

    def sketch(i):
        m = MinHash(num_perm=128, seed=1)
        m.update_batch([h.tobytes() for h in hashes[offsets[i]:offsets[i + 1]]])
        return m

    ours = np.array([estimated_jaccard(sigs[2 * i], sigs[2 * i + 1]) for i in range(len(pairs))])
    theirs = np.array([sketch(2 * i).jaccard(sketch(2 * i + 1)) for i in range(len(pairs))])
    assert np.abs(ours - theirs).max() <= 0.2
    assert np.abs(ours - theirs).mean() < 0.05


def one_word_changed(text: str) -> str:
    """A copy with its middle word replaced: about 10 of ~90 shingles differ, true Jaccard about 0.89."""
    words = text.split()
    words[len(words) // 2] = "zebra"
    return " ".join(words)


def test_planted_copies_are_found_and_longest_kept(tmp_path):
    copies = [one_word_changed(p) for p in PASSAGES]
    df = frame(PASSAGES + copies)
    stage = NearDedup()
    out, ctx = run_two_pass(stage, df, tmp_path)
    reasons = out["drop_reason"].to_list()
    lengths = [len(t) for t in PASSAGES + copies]
    n = len(PASSAGES)
    for i in range(n):  # exactly one of each original/copy pair survives: the longer, then the smaller id
        pair = (i, n + i)
        kept = [k for k in pair if reasons[k] is None]
        assert len(kept) == 1
        best = min(pair, key=lambda k: (-lengths[k], df["id"][k]))
        assert kept == [best]
        other = pair[1 - pair.index(best)]
        assert reasons[other] == f"near_duplicate: of {df['id'][best]}"
    assert ctx.counters["near_clusters"] == n
    clusters = pl.read_parquet(tmp_path / "dedup" / "clusters.parquet")
    assert clusters.height == 2 * n and clusters["kept"].sum() == n and clusters["preview"].null_count() == 0
    stats = stage.summary(dict(ctx.counters))["near"]  # what _SUCCESS.json, the report and the card show
    assert stats["pairs"] == n and stats["dropped"] == n and stats["planted"]["pairs"] == 2 * n
    assert stats["planted"]["recall_at_0.9"] == 1.0


def test_distinct_texts_are_all_kept(tmp_path):
    out, ctx = run_two_pass(NearDedup(), frame(PASSAGES), tmp_path)
    assert out["drop_reason"].null_count() == len(PASSAGES)
    assert ctx.counters["near_pairs"] == 0


def test_prompt_dedup_compares_only_the_first_user_turn(tmp_path):
    prompt = "Explain how glaciers carve valleys, and why they are U-shaped rather than V-shaped, in plain words."
    df = frame(PASSAGES[:3], prompts=[prompt] * 3)
    by_prompt, _ = run_two_pass(NearDedup(compare="prompt"), df, tmp_path / "a")
    by_conversation, _ = run_two_pass(NearDedup(), df, tmp_path / "b")
    assert by_prompt["drop_reason"].null_count() == 1
    assert by_conversation["drop_reason"].null_count() == 3


def test_large_buckets_stay_linear_and_connected():
    """A templated corpus puts hundreds of documents in one bucket: they are compared with the bucket's first
    member and their neighbour only, and still form one cluster."""
    base = PASSAGES[0]
    texts = [f"{base} Ticket number {i}." for i in range(5 * ALL_PAIRS_UP_TO)]
    sigs, counts = signatures(texts, PARAMS)
    pairs = similar_pairs(sigs, band_keys(sigs, 16, 8), 0.8, active=counts > 0)
    assert len(pairs) < 2 * 16 * len(texts)
    assert len(np.unique(components(len(texts), pairs))) == 1


def test_planted_recall_and_detection_probability():
    assert detection_probability(0.9, 16, 8) > 0.999 and 0.94 < detection_probability(0.8, 16, 8) < 0.95
    result = planted_recall(PASSAGES * 4, PARAMS, 0.8, seed=3)
    assert result["pairs"] == 4 * len(PASSAGES) and result["pairs_at_0.9"] > 0
    assert result["recall_at_0.9"] == 1.0 and result["recall_at_0.8"] >= 0.85


def test_refresh_against_a_persisted_index(tmp_path):
    index = tmp_path / "index"
    first, _ = run_two_pass(NearDedup(index=str(index)), frame(PASSAGES[:8]), tmp_path / "run1", "run-1")
    assert first["drop_reason"].null_count() == 8
    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["format"] == 2 and manifest["shards"][0]["rows"] == 8
    assert manifest["settings"]["num_perm"] == 128 and manifest["settings"]["compare"] == "conversation"

    resubmitted, near_copy, new = PASSAGES[0], one_word_changed(PASSAGES[1]), PASSAGES[9]
    second, _ = run_two_pass(NearDedup(index=str(index)), frame([resubmitted, near_copy, new]), tmp_path / "run2",
                             "run-2")
    reasons = second["drop_reason"].to_list()
    assert reasons[0].startswith("exact_duplicate:") and reasons[0].endswith("(indexed)")
    assert reasons[1].startswith("near_duplicate:") and reasons[1].endswith("(indexed)")
    assert reasons[2] is None
    assert len(MinHashIndex(index, manifest["settings"])) == 9

    again, _ = run_two_pass(NearDedup(index=str(index)), frame(PASSAGES[:8]), tmp_path / "run1", "run-1")
    assert again["drop_reason"].null_count() == 8  # a rerun of the same run does not find itself


def test_an_index_built_with_other_settings_is_refused(tmp_path):
    index = tmp_path / "index"
    run_two_pass(NearDedup(index=str(index)), frame(PASSAGES[:3]), tmp_path / "run1")
    with pytest.raises(ConfigError, match="ngram: index has 5, this run uses 4"):
        run_two_pass(NearDedup(index=str(index), ngram=4), frame(PASSAGES[3:5]), tmp_path / "run2", "run-2")
    with pytest.raises(ConfigError, match="compare: index has 'conversation', this run uses 'prompt'"):
        run_two_pass(NearDedup(index=str(index), compare="prompt"), frame(PASSAGES[3:5]), tmp_path / "run2", "run-2")


def test_a_format_1_index_is_migrated(tmp_path):
    index = tmp_path / "index"
    run_two_pass(NearDedup(index=str(index)), frame(PASSAGES[:5]), tmp_path / "run1")
    manifest = json.loads((index / "manifest.json").read_text())
    shard = index / manifest["shards"][0]["file"]
    keys = pq.read_table(shard)["band_keys"]
    pq.write_table(pq.read_table(shard).drop_columns(["band_keys"]), shard)  # what format 1 stored
    (index / "manifest.json").write_text(json.dumps({**manifest, "format": 1}))

    out, _ = run_two_pass(NearDedup(index=str(index)), frame(PASSAGES[:2] + PASSAGES[5:6]), tmp_path / "run2", "run-2")
    assert out["drop_reason"].null_count() == 1
    assert json.loads((index / "manifest.json").read_text())["format"] == 2
    assert pq.read_table(shard)["band_keys"].equals(keys)


def test_exact_dedup_keeps_first(tmp_path):
    ctx = Context(run_dir=tmp_path, config=None)
    out = pl.concat(list(ExactDedup().run(iter([frame(["a b c", "a b c", "d e f"])]), ctx)))
    assert out["drop_reason"].to_list()[1].startswith("exact_duplicate")
    assert out["drop_reason"].null_count() == 2


def test_decontamination_names_the_benchmark(tmp_path):
    question = json.loads((DATA / "benchmark.jsonl").read_text().splitlines()[0])["question"]
    stage = Decontaminate(benchmarks=(f"mathbench={DATA / 'benchmark.jsonl'}",))
    df = frame([f"Sure. {question[20:]} Let me think.", "Red, yellow and blue.", PASSAGES[0]],
               prompts=["Solve this one", "name three primary colors", "Name three primary colors of paint please"])
    out = stage.process(df, Context(run_dir=tmp_path, config=None))
    assert out["drop_reason"].to_list() == ["contaminated: mathbench (13-gram overlap)",
                                            "contaminated: mathbench (same prompt)", None]
    with pytest.raises(ConfigError, match="does not exist"):
        Decontaminate(benchmarks=(str(tmp_path / "missing.jsonl"),))


def test_no_near_duplicate_straddles_train_and_test(tmp_path):
    texts = PASSAGES + [one_word_changed(p) for p in PASSAGES]
    splits = ["train_sft"] * len(PASSAGES) + ["test_sft"] * len(PASSAGES)
    splits[3] = "test_sft"  # a cluster already whole in test stays there
    ctx = Context(run_dir=tmp_path, config=None)
    out, leakage = separate_splits(pl.Series(texts), splits, 0.8, ctx)
    n = len(PASSAGES)
    assert out[3] == "test_sft" and out[n + 3] == "test_sft"
    assert all(out[n + i] == "train_sft" for i in range(n) if i != 3)
    assert leakage["moved"] == n - 1 and leakage["after"] == 0 and leakage["pairs_across"] == n - 1


def test_dedup_recipe_end_to_end(tmp_path):
    import datasets

    from tests.conftest import ROOT
    corpus = tmp_path / "corpus.jsonl"
    rows = frame(PASSAGES + [one_word_changed(p) for p in PASSAGES[:4]] + PASSAGES[:2]).select("messages")
    rows.write_ndjson(corpus)
    cmd = [sys.executable, "-m", "pipelines.build", "dedup", "--run-dir", str(tmp_path / "run"),
           "--set", f"sources={corpus}", "--set", f"benchmarks=math={DATA / 'benchmark.jsonl'}",
           "--set", f"index={tmp_path / 'index'}"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    run = tmp_path / "run"
    report = json.loads((run / "report.json").read_text())
    dropped = {r["stage"]: r["dropped"] for r in report["stages"]}
    assert dropped["01_dedup_exact"] == {"exact_duplicate": 2}
    assert dropped["03_dedup_near"] == {"near_duplicate": 4}
    assert report["dedup"]["near"]["planted"]["pairs"] == len(PASSAGES) + 4  # a sample of the rows it compared
    exported = datasets.load_dataset(str(run / "export"), cache_dir=str(tmp_path / "hf"))
    assert exported["train"].num_rows == len(PASSAGES)
    card = (run / "export" / "README.md").read_text()
    assert "4 pairs, 4 clusters, 4 rows dropped" in card and "Measured recall on 18 planted" in card
    assert "math (2 prompts" in card
    assert pl.read_parquet(run / "dedup" / "clusters.parquet").height == 8

    newer = tmp_path / "newer.jsonl"
    frame([PASSAGES[5], "A new passage about tides: the moon pulls the oceans, and twice a day the sea rises and "
                        "falls along every coast, more at spring tides than at neap tides."]).select(
        "messages").write_ndjson(newer)
    cmd[cmd.index(f"sources={corpus}")] = f"sources={newer}"
    cmd[cmd.index(str(run))] = str(tmp_path / "run2")
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    second = json.loads((tmp_path / "run2" / "report.json").read_text())
    assert {r["stage"]: r["rows_out"] for r in second["stages"]}["04_export"] == 1
    assert second["dedup"]["near"]["indexed_before"] == len(PASSAGES)


def test_the_dedup_section_comes_from_the_summaries_of_the_stages_that_ran():
    from pipelines.dedup.summary import markdown, sections

    rows = [{"stage": "03_dedup_exact", "summary": {}},
            {"stage": "05_export", "summary": {"leakage": {"threshold": 0.8, "pairs_across": 2, "moved": 2,
                                                           "after": 0}}}]
    found = sections(rows)
    assert found["leakage"]["stage"] == "05_export" and "2 test rows moved to train" in markdown(found)
    assert "Decontamination" not in markdown(found)  # no stage of this run decontaminated
    rows.append({"stage": "04_decontaminate", "summary": {"decontamination": {
        "ngram": 13, "prompts": {"gsm8k": 1}, "sha256": {"gsm8k": "ab" * 32}, "dropped": {"gsm8k": 3}}}})
    assert "rows dropped gsm8k: 3" in markdown(sections(rows))
