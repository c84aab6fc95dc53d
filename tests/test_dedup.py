import polars as pl

from pipelines.stage import Context
from pipelines.stages.dedup import ExactDedup, MinHashDedup, shingles
from schemas import conversation_id

BASE = ("The printing press changed how knowledge spread across Europe. Books became cheaper, literacy rose, "
        "and ideas moved faster than ever before, from science to religion to politics and trade.")


def frame(texts):
    msgs = [[{"role": "user", "content": "Tell me about it?"}, {"role": "assistant", "content": t}] for t in texts]
    return pl.DataFrame({"id": [conversation_id(m) for m in msgs], "messages": msgs})


def run(stage, df, tmp_path):
    ctx = Context(run_dir=tmp_path, config=None)
    out = pl.concat(list(stage.run(iter([df]), ctx)))
    return out, ctx


def test_shingles_fold_case_and_punctuation():
    assert shingles("The cat, the CAT sat", 2) == {"the cat", "cat the", "cat sat"}


def test_exact_dedup_keeps_first(tmp_path):
    out, _ = run(ExactDedup(), frame(["a b c", "a b c", "d e f"]), tmp_path)
    assert out["drop_reason"].to_list()[1].startswith("exact_duplicate")
    assert out["drop_reason"].null_count() == 2


def test_planted_near_duplicates_are_clustered_and_longest_kept(tmp_path):
    near = BASE.replace("cheaper", "much cheaper")  # one word added: Jaccard of 5-grams about 0.85
    other = "Volcanoes form where magma rises through cracks in the crust and erupts as lava, ash and gas."
    out, ctx = run(MinHashDedup(threshold=0.7), frame([BASE, near, other]), tmp_path)
    reasons = out["drop_reason"].to_list()
    assert reasons[0].startswith("near_duplicate") and reasons[1] is None and reasons[2] is None
    assert ctx.counters["near_duplicate_clusters"] == 1

