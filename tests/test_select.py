"""Embeddings on the embedded embedder, and score-first diverse selection against its one-row-at-a-time oracle."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from pipelines.core.stage import MESSAGES, Context
from pipelines.dedup.diverse import KEPT, TOO_CLOSE, select_diverse, select_loop
from pipelines.stages.select import Embed, Select
from pipelines.teacher.client import Teacher
from pipelines.teacher.config import TeacherConfig
from pipelines.teacher.server import EmbeddedConfig

DATA = Path(__file__).parent / "data"


def clustered(n: int, width: int = 32, centres: int = 40, spread: float = 0.35, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    middle = rng.normal(size=(centres, width))
    vectors = middle[rng.integers(0, centres, n)] + spread * rng.normal(size=(n, width))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("keep, min_distance, block", [(50, 0.3, 64), (400, 0.1, 128), (3000, 0.02, 500),
                                                       (200, 0.0, 64), (10_000, 0.5, 1024)])
def test_the_blocked_selection_keeps_exactly_what_the_loop_keeps(keep, min_distance, block):
    vectors = clustered(3000)
    order = np.random.default_rng(1).permutation(len(vectors))
    fast, slow = select_diverse(vectors, order, keep, min_distance, block), select_loop(vectors, order, keep,
                                                                                          min_distance)
    assert np.array_equal(fast.status, slow.status)
    assert 0 < len(fast.kept) <= keep
    close = fast.status == TOO_CLOSE
    assert np.all(fast.cosine[close] > 1 - min_distance)  # a dropped row names a kept row it is too close to
    assert np.all(fast.status[fast.nearest[close]] == KEPT)
    kept = vectors[fast.kept]
    sims = kept @ kept.T - 2 * np.eye(len(kept))
    assert sims.max() <= 1 - min_distance + 1e-6 or min_distance == 0  # the floor holds between kept rows


def test_the_best_scores_come_first_and_exact_duplicates_go():
    vectors = clustered(10, width=8)
    vectors[3] = vectors[7]  # a duplicate of a better row
    order = np.array([7, 3, 0, 1, 2, 4, 5, 6, 8, 9])
    picked = select_diverse(vectors, order, keep=5, min_distance=0.01)
    assert picked.status[7] == KEPT and picked.status[3] == TOO_CLOSE and picked.nearest[3] == 7
    assert len(picked.kept) == 5


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("embedder")
    client = Teacher(TeacherConfig(embedded=EmbeddedConfig(model="e5-small")), folder / "requests.sqlite",
                     folder / "server.log", log=lambda m: None)
    yield client
    client.close()


def test_the_embedded_embedder_tells_related_from_unrelated_and_caches(embedder):
    texts = ["How do I bake sourdough bread at home?", "What is a simple recipe for homemade sourdough?",
             "When is the deadline for filing my quarterly taxes?", "How do I bake sourdough bread at home?"]
    vectors, errors = embedder.embed_many(texts)
    assert errors == [None] * 4 and vectors.shape == (4, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-3)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.1  # a paraphrase is nearer than another subject
    sent = embedder.stats["requests"]
    again, _ = embedder.embed_many(texts)
    assert embedder.stats["requests"] == sent and np.array_equal(again, vectors)  # cached per text
    with sqlite3.connect(embedder.cache.path) as db:
        assert db.execute("SELECT count(*) FROM responses").fetchone()[0] == 3  # one entry per distinct text


def test_the_embedder_ranks_labelled_paraphrases_above_unrelated_and_mostly_above_same_topic_requests(embedder):
    """The labelled pairs of tests/data/semantic (a person-style paraphrase and a same-topic different request per
    instruction). Measured: AUC 0.69 against same-topic requests, 1.0 against unrelated ones (bench/semantic_dedup)."""
    pairs = [json.loads(line) for line in (DATA / "semantic" / "paraphrase_pairs.jsonl").read_text().splitlines()]
    n = len(pairs)
    vectors, errors = embedder.embed_many([p[k] for k in ("text", "paraphrase", "different") for p in pairs])
    assert errors == [None] * 3 * n
    same, para, other = vectors[:n], vectors[n: 2 * n], vectors[2 * n:]
    paraphrase, same_topic = np.sum(same * para, axis=1), np.sum(same * other, axis=1)
    unrelated = (same @ same.T)[~np.eye(n, dtype=bool)]
    assert (paraphrase[:, None] > unrelated[None, :]).mean() > 0.95
    assert (paraphrase[:, None] > same_topic[None, :]).mean() > 0.6  # words alone rank them the wrong way round
    assert (paraphrase > same_topic).mean() >= 0.65


def rows(texts: list[str], rewards: list[float | None]) -> pl.DataFrame:
    return pl.DataFrame({"messages": pl.Series([[{"role": "user", "content": t}, {"role": "assistant",
                                                                                "content": "ok"}] for t in texts],
                                               dtype=MESSAGES),
                         "reward": pl.Series(rewards, dtype=pl.Float64)})


def test_embed_then_select_keeps_the_best_of_each_paraphrase_group(embedder, tmp_path):
    texts = ["How do I bake sourdough bread at home?", "How can I bake sourdough bread at home?",
             "Explain how photosynthesis works in plants.", "Explain how plants do photosynthesis.",
             "Write a haiku about the first snow of winter."]
    ctx = Context(run_dir=tmp_path, config=None, clients={"embedder": embedder})
    embedded = Embed().process(rows(texts, [5.0, 7.0, 6.0, None, 4.0]), ctx)
    assert embedded["embedding"].dtype == pl.Array(pl.Float32, 384)
    stage = Select(score="reward", min_distance=0.05)
    out = list(stage.run(iter([embedded]), ctx))[0]
    reasons = dict(zip([m[0]["content"] for m in out["messages"].to_list()], out["drop_reason"].to_list()))
    assert reasons[texts[1]] is None and reasons[texts[0]].startswith("too_close: cosine")  # 7.0 beats 5.0
    assert reasons[texts[2]] is None and reasons[texts[3]].startswith("too_close")  # a null score comes last
    assert reasons[texts[4]] is None
    summary = stage.summary({})["selection"]
    assert summary["kept"] == 3 and sum(summary["kept_hist"]) == 3 and sum(summary["dropped_hist"]) == 2
    picked = list(Select(score="reward", keep=2, min_distance=0.0).run(iter([embedded]), ctx))[0]
    assert picked["drop_reason"].is_null().sum() == 2
    assert sorted(r for r in picked["drop_reason"].to_list() if r)[0].startswith("not_selected: below the 2 rows")


def test_a_failed_embedding_drops_its_row_with_the_reason(tmp_path):
    client = Teacher(TeacherConfig(base_url="http://127.0.0.1:9/v1", model="none", max_retries=0,
                                   down_after_s=0.5), Path(tmp_path) / "r.sqlite", Path(tmp_path) / "s.log")
    ctx = Context(run_dir=tmp_path, config=None, clients={"embedder": client})
    with pytest.raises(Exception, match="did not answer|answered nothing"):  # nothing listens there: the run stops
        Embed().process(rows(["a question"], [1.0]), ctx)
    client.close()


def test_semantic_dedup_drops_planted_paraphrases_that_minhash_keeps(embedder, tmp_path):
    from pipelines.dedup.lsh import pairs_of_texts
    from pipelines.dedup.minhash import MinHashParams
    from pipelines.stages.select import SemanticDedup

    pairs = [("How do I bake sourdough bread at home?", "What is the way to make sourdough bread in my own kitchen?"),
             ("Explain how photosynthesis works in plants.", "Describe the process by which plants carry out "
                                                             "photosynthesis."),
             ("List three tips for staying healthy.", "Give me three pieces of advice for keeping healthy.")]
    others = ["Write a haiku about the first snow of winter.", "Convert 5 miles to kilometres.",
              "Who painted the Mona Lisa?", "Summarise the plot of Hamlet in two sentences."]
    texts = [t for pair in pairs for t in pair] + others
    assert not len(pairs_of_texts(pl.Series(texts), MinHashParams(), 0.5))  # MinHash sees no pair at all
    ctx = Context(run_dir=tmp_path, config=None, clients={"embedder": embedder})
    embedded = Embed().process(rows(texts, [1.0] * len(texts)), ctx)
    stage = SemanticDedup(eps=0.1, clusters=2)
    out = list(stage.run(iter([embedded]), ctx))[0]
    reasons = out["drop_reason"].to_list()
    for k in range(len(pairs)):  # the second of each pair goes, naming the first
        assert reasons[2 * k] is None and reasons[2 * k + 1].startswith("semantic_duplicate: of "), reasons
    assert reasons[len(pairs) * 2:] == [None] * len(others)
    assert stage.summary({})["semantic_dedup"]["dropped"] == len(pairs)


def test_semantic_dedup_keeps_the_best_scored_copy():
    from pipelines.dedup.diverse import semantic_dedup

    vectors = clustered(6, width=8)
    vectors[4] = vectors[1]
    found = semantic_dedup(vectors, np.array([4, 0, 1, 2, 3, 5]), np.zeros(6, np.int64), eps=0.01)
    assert found.status[4] == KEPT and found.status[1] == TOO_CLOSE and found.nearest[1] == 4


def test_the_dedup_recipe_drops_paraphrases_with_semantic_dedup(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import ROOT, report, run_build

    source = ROOT / "tests" / "data" / "dedup" / "paraphrases.jsonl"
    run_dir = tmp_path / "dedup"
    sets = (f"sources={source}", "compare=prompt", "semantic=true", "semantic_eps=0.1", "semantic_clusters=2")
    run_build(run_dir, *sets, recipe="dedup")
    stages = report(run_dir)
    assert stages["dedup_near"]["rows_out"] == 11  # MinHash keeps every paraphrase
    assert stages["semantic_dedup"]["dropped"] == {"semantic_duplicate": 3}
    exported = pl.read_parquet(next((run_dir / "export" / "data").glob("*.parquet")))
    assert exported.height == 8 and "embedding" not in exported.columns
    again = run_build(run_dir, *sets, recipe="dedup", extra=("--fresh",))
    assert "requests 0" in again.stdout  # embeddings come from the cache


def test_refused_embeddings_drop_their_rows_with_the_reason(tmp_path):
    from conftest import error_endpoint

    with error_endpoint(lambda path: 400, "model does not support embeddings") as url:  # as an API answers
        client = Teacher(TeacherConfig(base_url=url, model="chat-only"), tmp_path / "r.sqlite", tmp_path / "s.log",
                         log=lambda m: None)
        ctx = Context(run_dir=tmp_path, config=None, clients={"embedder": client})
        try:
            out = Embed().process(rows(["a question", "another"], [1.0, 2.0]), ctx)
        finally:
            client.close()
    assert [r.split(":")[0] for r in out["drop_reason"].to_list()] == ["embedding_failed"] * 2
    assert "does not support embeddings" in out["drop_reason"][0]
