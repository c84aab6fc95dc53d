"""The teacher-stage contract (`pipelines/teacher/stage.py`): its docstring example runs as written against the
embedded server, rows are re-asked with their attempt number, a verdict's counts come from the row's last verdict
only, and a row whose every request failed is dropped as `request_failed` unless the stage sees failures."""

from __future__ import annotations

import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import error_endpoint  # noqa: E402
from pipelines.core.stage import DROP, Context  # noqa: E402
from pipelines.teacher import stage as contract  # noqa: E402
from pipelines.teacher.client import Teacher  # noqa: E402
from pipelines.teacher.config import TeacherConfig  # noqa: E402
from pipelines.teacher.wire import Request  # noqa: E402
from pipelines.teacher.stage import Sampling, TeacherStage, Verdict  # noqa: E402


def context(tmp_path: Path, base_url: str, model: str) -> Context:
    teacher = Teacher(TeacherConfig(base_url=base_url, model=model, max_retries=0), tmp_path / "requests.sqlite",
                      tmp_path / "server.log", log=lambda m: None)
    return Context(run_dir=tmp_path, config=None, clients={"teacher": teacher})


def docstring_example() -> type:
    """The `class Summarize` block of the contract's docstring, executed."""
    block = re.search(r"\n( {4}@dataclass\n {4}class Summarize.*?)\n\n(?! )", contract.__doc__, re.S).group(1)
    namespace = {"dataclass": dataclass, "field": field, "Request": Request, "Sampling": Sampling,
                 "TeacherStage": TeacherStage, "Verdict": Verdict}
    exec(textwrap.dedent(block), namespace)
    return namespace["Summarize"]


def test_the_docstring_example_runs_as_written(tmp_path, teacher_server):
    summarize = docstring_example()()
    ctx = context(tmp_path, teacher_server.base_url, teacher_server.model)
    texts = ["Bees dance to show where flowers are.", "Copper carries electricity well, so wires use it."]
    out = summarize.process(pl.DataFrame({"id": ["a", "b"], "text": texts}), ctx)
    ctx.clients["teacher"].close()
    assert out.columns == ["id", "text", "summary", DROP] and out.height == 2
    assert all(s.strip() for s in out["summary"]) and out[DROP].null_count() == 2


@dataclass
class Never(TeacherStage):
    """Asks two requests per row and refuses every answer (so every row is re-asked `retries` times)."""

    retries: int = 2
    name = "never"
    requires = ("id",)
    provides = ("got",)

    def requests(self, row, attempt):
        self.asked.append((row["id"], attempt))
        return [Request([{"role": "user", "content": f"Say {w}."}], {"max_tokens": 4, "temperature": 0.0,
                                                                     "seed": attempt}) for w in ("yes", "no")]

    def accept(self, row, results):
        return Verdict({"got": str(len(results))}, "refused: never good enough", counts={"verdicts": 1})


def test_refused_rows_are_asked_again_with_their_attempt_and_counted_once(tmp_path, teacher_server):
    stage = Never()
    stage.asked = []
    ctx = context(tmp_path, teacher_server.base_url, teacher_server.model)
    out = stage.process(pl.DataFrame({"id": ["a", "b"]}), ctx)
    ctx.clients["teacher"].close()
    assert stage.asked == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]
    assert ctx.counters["never_reasked"] == 4 and ctx.counters["verdicts"] == 2  # the last verdicts only
    assert out["got"].to_list() == ["2", "2"] and out[DROP].to_list() == ["refused: never good enough"] * 2


@dataclass
class Tally(Never):
    retries: int = 0
    sees_failures = False

    def accept(self, row, results):
        return Verdict({"got": ",".join(r.error or "ok" for r in results)})


def test_a_row_whose_every_request_failed_is_dropped_unless_the_stage_sees_failures(tmp_path):
    with error_endpoint(lambda path: 400, "bad request: no such model") as url:
        stage = Tally()
        stage.asked = []
        ctx = context(tmp_path, url, "m")
        out = stage.process(pl.DataFrame({"id": ["a"]}), ctx)
        assert out["got"].to_list() == [None] and out[DROP][0].startswith("request_failed: ")
        assert "no such model" in out[DROP][0]
        stage.sees_failures = True
        seen = stage.process(pl.DataFrame({"id": ["a"]}), ctx)
        ctx.clients["teacher"].close()
    assert seen[DROP].to_list() == [None]
    assert [x.startswith("http_400") or "no such model" in x for x in seen["got"][0].split(",")] == [True, True]
