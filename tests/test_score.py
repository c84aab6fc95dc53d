"""The score stage on the embedded judge: DEITA's complexity and quality with rationales, pointwise and ranked."""

from __future__ import annotations

import polars as pl

from pipelines.core.stage import MESSAGES, Context
from pipelines.prompts.score import TOP
from pipelines.stages.score import Score
from pipelines.teacher.client import Teacher
from pipelines.teacher.config import TeacherConfig


def rows() -> pl.DataFrame:
    pairs = [("Name a colour.", "Blue."),
             ("Name a colour and explain what mood it evokes in art.", "Blue evokes calm, as in Picasso's Blue Period."),
             ("What is 2 + 2?", "4"),
             ("Explain why the sky is blue.", "Sunlight scatters off air molecules; blue light scatters most.")]
    return pl.DataFrame({"messages": pl.Series([[{"role": "user", "content": q}, {"role": "assistant", "content": a}]
                                                for q, a in pairs], dtype=MESSAGES),
                         "root_id": ["colour", "colour", "sum", "sky"],
                         "root_prompt": ["Name something.", "Name something.", "Add numbers.", "Explain weather."]})


def test_scores_are_on_their_scales_with_rationales_or_counted_unreadable(tmp_path, teacher_server):
    judge = Teacher(TeacherConfig(base_url=teacher_server.base_url, model=teacher_server.model, reasks=1),
                    tmp_path / "requests.sqlite", tmp_path / "server.log", log=lambda m: None)
    ctx = Context(run_dir=tmp_path, config=None, clients={"teacher": judge})
    try:
        for stage in (Score(), Score(group="root_id")):
            ctx.counters.clear()
            out = stage.process(rows(), ctx)
            assert out.height == 4 and "drop_reason" not in out.columns  # scoring drops nothing
            for name in ("complexity", "quality"):
                values, why = out[name].to_list(), out[f"{name}_rationale"].to_list()
                readable = [v for v in values if v is not None]
                assert all(1 <= v <= TOP for v in readable)
                assert all(r for v, r in zip(values, why) if v is not None)  # a score comes with its rationale
                assert len(values) - len(readable) == ctx.counters[f"{name}_unreadable"]
            assert all(r is None or 1 <= r <= 9 for r in out["reward"].to_list())
            product = [None if c is None or q is None else c * q for c, q in zip(out["complexity"], out["quality"])]
            assert out["deita_score"].to_list() == product
        assert stage.group_by == "root_id"  # a batch keeps a root's variants together
        ctx.counters.clear()
        anchored = Score(group="root_id", anchor="root_prompt", quality=False, reward=False)
        assert anchored.provides == ("complexity", "complexity_rationale")
        assert "root_prompt" in anchored.requires
        asked, answers = [], []

        def recorded(context, requests, *args, ask=anchored.ask, **kwargs):  # the judge's answers, to check the stage
            asked.extend(requests)
            answers.extend(ask(context, requests, *args, **kwargs))
            return answers[-len(requests):]

        anchored.ask = recorded
        out = anchored.process(rows(), ctx)
        assert set(out.columns) == {"messages", "root_id", "root_prompt", "complexity", "complexity_rationale"}
        readable = out["complexity"].drop_nulls().to_list()
        assert all(1 <= v <= TOP for v in readable)
        assert out.height - len(readable) == ctx.counters["complexity_unreadable"]
        groups = {"colour": [0, 1], "sum": [2], "sky": [3]}  # one ask a root, its variants listed after its root prompt
        assert len(asked) == len(answers) == 3
        above = 0
        for (root, members), request, answer in zip(groups.items(), asked, answers):
            listing = request.messages[-1]["content"]
            assert f"[1] (the original the others were rewritten from) {rows()['root_prompt'][members[0]]}" in listing
            assert f"[{len(members) + 2}]" not in listing
            scores = answer.data["scores"] if answer.error is None and isinstance(answer.data, dict) else {}
            for k, i in enumerate(members, 2):  # a variant's score is the one at its place in the listing
                assert out["complexity"][i] == (float(scores[str(k)]) if str(k) in scores else None), (root, scores)
            above += "1" in scores and all(str(k) in scores and scores[str(k)] > scores["1"]
                                           for k in range(2, len(members) + 2))
        assert ctx.counters["groups_above_anchor"] == above  # groups whose every variant outscored the root
    finally:
        judge.close()
