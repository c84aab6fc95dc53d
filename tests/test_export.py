from pipelines.stages.export import SPLITS, assign_split, fill_empty_splits


def test_every_split_gets_a_row_and_assignment_is_stable():
    ids = [f"{i:064x}" for i in range(5)]
    splits = fill_empty_splits(ids, [assign_split(p, 0.1, 0.25) for p in ids])
    assert set(splits) == set(SPLITS)
    assert splits == fill_empty_splits(ids, [assign_split(p, 0.1, 0.25) for p in ids])
    assert fill_empty_splits(ids[:2], ["train_sft", "train_sft"]) == ["train_sft", "train_sft"]
    assert set(fill_empty_splits(ids[:4], ["train_gen"] * 4)) == set(SPLITS)
