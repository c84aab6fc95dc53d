"""`python -m pipelines.experiment` on a small experiment of the user's own: build -> train -> eval against the
base, an ablation that shares the steps it does not change, a variant whose build exports nothing (reported, never
trained), a rerun that skips finished steps, and bad settings as one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT


def hh(question: str, good: str, bad: str) -> dict:
    return {"chosen": f"\n\nHuman: {question}\n\nAssistant: {good}",
            "rejected": f"\n\nHuman: {question}\n\nAssistant: {bad}"}


def test_an_experiment_runs_its_steps_compares_variants_and_resumes(tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(hh(f"What is {i} plus {i}?", f"{i} plus {i} is {2 * i}.", "No idea.")) + "\n"
                             for i in range(12)))
    nothing = tmp_path / "nothing.jsonl"
    nothing.write_text(json.dumps(hh("Same?", "Same.", "Same.")) + "\n")  # identical answers: quarantined
    folder = tmp_path / "experiments"
    folder.mkdir()
    (folder / "tiny.py").write_text(textwrap.dedent(f'''
        from pipelines.experiment.steps import Build, Eval, Export, Train
        ABOUT = "a tiny SFT on arithmetic pairs"
        STEPS = (
            Build("rows", recipe="ingest", settings={{"kind": "preference", "sources": {str(pairs)!r}}}),
            Train("sft", kind="sft", data="rows", settings={{"max_steps": 2, "max_length": 128, "batch_size": 2}}),
            Export("sft_gguf", model="sft"),
            Eval("eval", model="sft", baseline="base:smollm2-135m", suites=("gsm8k",), settings={{"limit": 2}}),
        )
    '''))
    env = {**os.environ, "PIPELINES_EXPERIMENT_PATH": str(folder)}
    args = [sys.executable, "-m", "pipelines.experiment", "tiny", "--dir", str(tmp_path / "ex"),
            "--vary", f"rows.sources={nothing}", "--vary", "eval.limit=3"]
    run = lambda *extra: subprocess.run(args + list(extra), cwd=ROOT, env=env, capture_output=True, text=True,  # noqa
                                        timeout=900)
    for step in ("sft", "sft_gguf"):  # SIGKILL while training, then while exporting: no orphan goes on writing
        kill_during(args, env, tmp_path / "ex", step)
    first = run()
    assert first.returncode == 0, first.stderr[-3000:]
    ran = [line.split(":")[0] for line in first.stderr.splitlines() if ": pipelines." in line]
    assert "sft" not in ran and ran.count("sft_gguf") == 1  # trained (again) during the second start, kept
    found = json.loads((tmp_path / "ex" / "report.json").read_text())
    rows = {r["variant"]: r for r in found["rows"]}
    assert set(rows) == {"control", "eval.limit=3"}
    assert [rows["control"]["items"], rows["eval.limit=3"]["items"]] == [2, 3]
    assert rows["eval.limit=3"]["difference"] == [0.0, 0.0, 0.0]  # the same model on the two items they share
    assert rows["control"]["baseline"][0] is not None
    assert "no train_sft rows to train on" in found["failed"][f"rows.sources={nothing}"]
    dirs = {(s["variant"], s["step"]): s["dir"] for s in found["steps"]}
    for step in ("rows", "sft"):  # shared: neither changed
        assert dirs[("control", step)] == dirs[("eval.limit=3", step)]
    assert dirs[("control", "eval")] != dirs[("eval.limit=3", "eval")]
    assert (tmp_path / "ex" / "report.png").stat().st_size > 1000
    assert "| eval | gsm8k | eval.limit=3 | 1 | 3 |" in (tmp_path / "ex" / "report.md").read_text()
    from starlette.testclient import TestClient

    from pipelines.review.app import create_app

    web = TestClient(create_app(tmp_path / "ex", "t", {"testserver"}))  # the review app's page for it
    assert web.get("/", follow_redirects=False).headers["location"] == "/experiment"
    page = web.get("/experiment").text
    assert "Experiment <code>tiny</code>" in page and 'src="/files/report.png"' in page and "eval.limit=3" in page
    assert web.get("/files/report.png").headers["content-type"] == "image/png"
    assert web.get("/files/report.json").status_code == 404

    dirs = {k: str(tmp_path / "ex" / v) for k, v in dirs.items()}
    os.unlink(os.path.join(dirs[("control", "eval")], "_DONE.json"))  # as if killed during the control's eval
    again = run()
    assert again.returncode == 0, again.stderr[-3000:]
    ran = [line.split(":")[0] for line in again.stderr.splitlines() if ": pipelines." in line]
    assert ran == ["eval"]  # only the unfinished step ran again
    log = open(os.path.join(dirs[("control", "eval")], "step.log")).read()
    assert log.rsplit("this run: ", 1)[1].startswith("0 requests")  # its answers replayed from the shared cache
    assert json.loads((tmp_path / "ex" / "report.json").read_text())["rows"] == found["rows"]

    from pipelines.core.locks import LOCKED, DirLock

    with DirLock(tmp_path / "ex" / ".lock", "another experiment"):  # two experiments on one directory
        busy = run()
    assert busy.returncode == LOCKED and busy.stderr.strip().splitlines()[-1].startswith("busy:")
    bad = subprocess.run(args[:6] + ["--vary", "sft.colour=red"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1].startswith(
        "error: --vary 'sft.colour=red': step sft has no setting 'colour'; valid keys: batch_size,")


def test_shipped_experiments_load_and_a_misspelt_setting_is_one_line(tmp_path, monkeypatch):
    from pipelines.core.errors import ConfigError
    from pipelines.experiment import _modules, load_experiment

    shipped = [n for n, where in _modules().items() if isinstance(where, str)]
    assert {"zephyr", "verified_if"} <= set(shipped)
    for name in shipped:
        assert load_experiment(name).STEPS  # every setting of every step is one its command takes
    (tmp_path / "typo.py").write_text('from pipelines.experiment.steps import Train\nABOUT = "x"\n'
                                      'STEPS = (Train("sft", kind="sft", data="d", settings={"learning_rat": 1}),)\n')
    monkeypatch.setenv("PIPELINES_EXPERIMENT_PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="step sft has no setting 'learning_rat'; valid keys: batch_size,"):
        load_experiment("typo")


def kill_during(args: list[str], env: dict, root, step: str) -> None:
    """Start the experiment, SIGKILL it once `step` has run for a moment, and check that the step's command and its
    own children died with it and left no `_DONE.json`."""
    import signal
    import time

    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (logs := list(root.glob(f"steps/{step}-*/step.log"))) or not logs[0].stat().st_size:
        assert proc.poll() is None and time.monotonic() < deadline, f"the experiment ended before {step} started"
        time.sleep(0.2)
    time.sleep(1.5)
    family = descendants(proc.pid)
    assert family, f"{step} has no running command"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for _ in range(100):
        if not (alive := [p for p in family if os.path.exists(f"/proc/{p}") and _state(p) != "Z"]):
            break
        time.sleep(0.1)
    assert not alive, f"{step}'s commands {alive} outlived the killed experiment"
    assert not (logs[0].parent / "_DONE.json").exists()


def descendants(pid: int) -> list[int]:
    parents = {}
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            parents[int(p)] = int(open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            pass
    found, todo = [], [pid]
    while todo:
        pid = todo.pop()
        children = [c for c, parent in parents.items() if parent == pid]
        found += children
        todo += children
    return found


def _state(pid: int) -> str:
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


def test_a_step_that_names_another_in_a_setting_depends_on_it():
    from pipelines.experiment.steps import Build, fingerprint, needs

    pairs = Build("pairs", recipe="ultrafeedback")
    values = {**pairs.inputs(), "teacher.embedded.model": "{sft_gguf}"}  # as `--set pairs.teacher...={sft_gguf}`
    assert needs(values) == ["sft_gguf"]
    one, other = ({n: fp for n in needs(values)} for fp in ("a" * 64, "b" * 64))
    assert fingerprint(pairs, values, one, None) != fingerprint(pairs, values, other, None)


def test_a_suite_whose_items_were_all_decontaminated_away_reports_no_score(tmp_path):
    from pipelines.eval.__main__ import report as eval_report, summarize as eval_summary
    from pipelines.eval.models import resolve
    from pipelines.eval.suites import load_suite
    from pipelines.experiment.report import markdown, summarize

    suite = load_suite("gsm8k")
    summary = eval_summary(suite, [], None)  # every item was in the training data
    assert summary["items"] == 0 and summary["score"] == [None, None, None]
    model = resolve("smollm2-135m")
    assert "| gsm8k | 0/0 | - | - | - |" in eval_report(model, None, None, {"gsm8k": {
        "summary": summary, "about": suite.ABOUT, "seconds": 0.0}})
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "gsm8k.json").write_text(json.dumps({"items": [], "summary": summary}))
    rows = summarize({"control": [{"eval": str(tmp_path / "ev")}]}, {"eval": ("gsm8k",)})
    assert rows[0]["items"] == 0 and rows[0]["score"] == [None, None, None] and rows[0]["vs_baseline"] is None
    assert "| eval | gsm8k | control | 1 | 0 | - | - | - |" in markdown("x", "x", rows, {}, [])
