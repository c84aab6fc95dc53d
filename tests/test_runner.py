"""Runner contract on toy stages: drops kept with reasons, reruns skip, a failed map stage resumes per part."""

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest

from pipelines.core.parts import read_output
from pipelines.core.runner import Runner
from pipelines.core.stage import Context, MapStage, Source, with_drops


@dataclass
class Numbers(Source):
    n: int = 10
    name = "numbers"
    provides = ("x",)

    def read(self, ctx):
        yield pl.DataFrame({"x": list(range(self.n))})


@dataclass
class DropOdd(MapStage):
    name = "drop_odd"
    requires = ("x",)
    batch_size = 3
    fail_at = -1  # a class attribute, not a setting: a transient fault leaves the fingerprint unchanged
    calls = []

    def process(self, batch, ctx):
        DropOdd.calls.append(batch["x"].to_list())
        if DropOdd.fail_at in batch["x"].to_list():
            raise RuntimeError("boom")
        ctx.count("seen", batch.height)
        return with_drops(batch, [f"odd: {x} is odd" if x % 2 else None for x in batch["x"]])


def run(tmp_path: Path, *stages):
    return Runner(list(stages), Context(run_dir=tmp_path, config=None)).run()


def test_drops_are_kept_with_reasons_and_counted(tmp_path):
    rows = run(tmp_path, Numbers(), DropOdd())
    assert rows[1]["rows_in"] == 10 and rows[1]["rows_out"] == 5
    assert rows[1]["dropped"] == {"odd": 5} and rows[1]["counters"] == {"seen": 10}
    dropped = pl.read_parquet(tmp_path / "01_drop_odd" / "dropped.parquet")
    assert sorted(dropped["x"]) == [1, 3, 5, 7, 9]
    assert dropped["drop_reason"][0].startswith("odd: ")
    assert sorted(read_output(tmp_path / "01_drop_odd")["x"]) == [0, 2, 4, 6, 8]


def test_rerun_skips_and_changed_settings_rerun_downstream(tmp_path):
    run(tmp_path, Numbers(), DropOdd())
    DropOdd.calls.clear()
    rows = run(tmp_path, Numbers(), DropOdd())
    assert [r["status"] for r in rows] == ["skipped", "skipped"] and DropOdd.calls == []
    rows = run(tmp_path, Numbers(n=12), DropOdd())
    assert [r["status"] for r in rows] == ["ran", "ran"] and rows[1]["rows_in"] == 12


def test_failed_map_stage_resumes_after_last_complete_part(tmp_path):
    DropOdd.fail_at = 7
    try:
        with pytest.raises(RuntimeError):
            run(tmp_path, Numbers(), DropOdd())
    finally:
        DropOdd.fail_at = -1
    parts = sorted(p.name for p in (tmp_path / "01_drop_odd").glob("part-*.parquet"))
    assert parts == ["part-00000.parquet", "part-00001.parquet"]
    DropOdd.calls.clear()
    rows = run(tmp_path, Numbers(), DropOdd())
    assert DropOdd.calls == [[6, 7, 8], [9]]  # only the batches not yet written
    assert rows[1]["status"] == "resumed" and rows[1]["rows_out"] == 5 and rows[1]["dropped"] == {"odd": 5}
    assert rows[1]["counters"] == {"seen": 10}
