"""The instruction-following suites: our scorer equals IFBench's own `evaluation_lib` on its shipped sample outputs
(with the network off, no nltk download attempted), both suites run end to end on the embedded model with the
network off, the dev set is what `make()` makes, and a user's suite with a bad items line is one error line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile

from conftest import ROOT
from pipelines.teacher.eval_data import IFBENCH, archive, ifbench_file, nltk_ready
from pipelines.eval.suites import ifeval_dev


def offline(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run `cmd` in a network namespace of its own: loopback up, nothing else reachable."""
    assert shutil.which("unshare") and shutil.which("ip"), "the offline tests need util-linux unshare and iproute2"
    script = "ip link set lo up && exec \"$@\""
    return subprocess.run(["unshare", "-n", "sh", "-c", script, "sh", *cmd], capture_output=True, text=True,
                          timeout=900, **kwargs)


REFERENCE = textwrap.dedent('''
    import copy, json, sys, types
    import nltk

    def refuse(*args, **kwargs):
        raise AssertionError(f"nltk.download{args} attempted")

    nltk.download = refuse
    from pipelines.eval.suites import read_jsonl
    from pipelines.prompts import following
    from pipelines.teacher.eval_data import ifbench_file

    items = read_jsonl(ifbench_file("IFBench_test.jsonl"))
    answers = {r["prompt"]: r["response"] for r in read_jsonl(ifbench_file("sample_output.jsonl"))}
    ours = [following.check(answers[i["prompt"]], i, "ifbench") for i in items]

    # IFBench's own evaluation_lib, from the pinned wheel (not installed). Its checker module downloads spaCy's
    # en_core_web_sm when imported, a model no checker loads: only this reference run stubs that download. Its
    # checkers call nltk.download('punkt_tab') while checking; the data is on nltk's path, so that call is a no-op.
    sys.path.insert(0, sys.argv[1])
    cli = types.ModuleType("spacy.cli")
    cli.download = lambda *a, **k: None
    sys.modules.update({"spacy": types.ModuleType("spacy"), "spacy.cli": cli})
    nltk.download = lambda *a, **k: True
    import ifbench.evaluation_lib as evaluation_lib

    inputs = evaluation_lib.read_prompt_list(str(ifbench_file("IFBench_test.jsonl")))
    strict = [evaluation_lib.test_instruction_following_strict(i, answers) for i in inputs]  # as run_eval: strict,
    loose = [evaluation_lib.test_instruction_following_loose(i, answers) for i in inputs]  # then loose
    print(json.dumps({"ours": ours, "strict": [o.follow_instruction_list for o in strict],
                      "loose": [o.follow_instruction_list for o in loose],
                      "report": {**evaluation_lib.generate_report(strict, "strict"),
                                 **evaluation_lib.generate_report(loose, "loose")}}))
''')


def test_our_ifbench_scorer_equals_ifbench_run_eval_on_its_sample_outputs_offline(tmp_path):
    nltk_ready()
    ifbench_file("IFBench_test.jsonl"), ifbench_file("sample_output.jsonl")
    with zipfile.ZipFile(archive(IFBENCH)) as zf:
        zf.extractall(tmp_path / "ifbench_wheel", [n for n in zf.namelist() if n.startswith("ifbench/")])
    found = offline([sys.executable, "-c", REFERENCE, str(tmp_path / "ifbench_wheel")], cwd=ROOT)
    assert found.returncode == 0, found.stderr[-3000:]
    result = json.loads(found.stdout.strip().splitlines()[-1])
    assert len(result["ours"]) == 294
    assert [s for s, _ in result["ours"]] == result["strict"]
    assert [lo for _, lo in result["ours"]] == result["loose"]
    strict = [all(s) for s, _ in result["ours"]]
    assert 0 < sum(strict) < 294  # the sample outputs follow some prompts, not all: the comparison can tell
    for k, mode in enumerate(("strict", "loose")):
        verdicts = [pair[k] for pair in result["ours"]]
        assert result["report"][f"{mode}:prompt-level"] == sum(map(all, verdicts)) / 294
        assert result["report"][f"{mode}:instruction-level"] == sum(map(sum, verdicts)) / sum(map(len, verdicts))


def test_both_suites_run_on_the_embedded_model_with_the_network_off(tmp_path):
    nltk_ready(), ifbench_file("IFBench_test.jsonl")  # fetched beforehand, as by a first online run
    found = offline([sys.executable, "-m", "pipelines.eval", "smollm2-135m", "--suites", "ifeval_dev,ifbench",
                     "--limit", "3", "--eval-dir", str(tmp_path / "ev")], cwd=ROOT)
    assert found.returncode == 0, found.stderr[-3000:]
    for suite in ("ifeval_dev", "ifbench"):
        result = json.loads((tmp_path / "ev" / f"{suite}.json").read_text())
        assert len(result["items"]) == 3
        for row in result["items"]:
            assert len(row["strict"]) == len(row["loose"]) == len(row["instruction_id_list"])
            assert row["score"] == float(all(row["strict"])) and all(lo or not s for s, lo in
                                                                     zip(row["strict"], row["loose"]))
            assert row["verdict"] in ("followed all", "missed some", "empty answer")
        also = result["summary"]["also"]
        assert set(also) == {"prompt-level loose", "instruction-level strict", "instruction-level loose"}
    assert "instruction-level strict" in (tmp_path / "ev" / "report.md").read_text()


def test_the_shipped_dev_set_is_what_make_makes_from_the_project_seed_instructions():
    shipped = (ROOT / "pipelines" / "data" / "ifeval_dev.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in shipped] == ifeval_dev.make()
    lines = ifbench_file("IFBench_test.jsonl").read_text().splitlines()
    ifbench_prompts = {json.loads(line)["prompt"] for line in lines}
    bases = ifeval_dev.seed_instructions()
    assert len(shipped) == len(bases) and not any(b in p for b in bases for p in ifbench_prompts)


def test_a_user_suite_is_found_by_its_folder_and_a_bad_items_line_is_one_error(tmp_path):
    folder = tmp_path / "suites"
    folder.mkdir()
    (folder / "items.jsonl").write_text('{"prompt": "Say hi. Use no commas.", "instruction_id_list": '
                                        '["punctuation:no_comma"], "kwargs": [{}]}\n{"prompt": oops}\n')
    (folder / "mine.py").write_text(textwrap.dedent(f'''
        from pipelines.eval import following
        from pipelines.eval.suites import read_jsonl
        ABOUT, DEFAULT_LIMIT = "my IFEval-style items", 10
        def items(limit, options=None):
            return [dict(r, id=f"mine-{{k}}") for k, r in enumerate(read_jsonl({str(folder / "items.jsonl")!r}, limit))]
        prompt_of = lambda item: item["prompt"]
        run = lambda rows, ctx: following.run(rows, ctx, "ifeval", {{"max_tokens": 64}}, "mine")
    '''))
    env = {**__import__("os").environ, "PIPELINES_SUITE_PATH": str(folder)}
    bad = subprocess.run([sys.executable, "-m", "pipelines.eval", "smollm2-135m", "--suites", "mine",
                          "--eval-dir", str(tmp_path / "ev")], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    assert bad.returncode != 0 and bad.stderr.strip().splitlines()[-1] == \
        f"error: {folder / 'items.jsonl'}:2: not a JSON line (Expecting value: line 1 column 12 (char 11))"
    unknown = subprocess.run([sys.executable, "-m", "pipelines.eval", "smollm2-135m", "--suites", "theirs"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert unknown.returncode != 0 and "choose among ifbench, ifeval_dev, gsm8k, judged, prefs, tool_calls, mine" in unknown.stderr


def test_an_eval_on_a_full_disk_is_one_line_and_the_rerun_completes(tmp_path):
    import threading

    from test_teacher import FaultServer

    assert os.geteuid() == 0, "mounting a size-limited tmpfs needs root"
    server = FaultServer(answer=lambda body: "word " * 400)  # 2 kB answers: the cache outgrows the disk
    threading.Thread(target=server.serve_forever, daemon=True).start()
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(disk)], check=True)
    args = [sys.executable, "-m", "pipelines.eval", f"base_url={server.url},model=wordy", "--suites", "ifeval_dev",
            "--limit", "120", "--eval-dir", str(disk / "ev")]
    try:
        full = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        again = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)
        result = json.loads((disk / "ev" / "ifeval_dev.json").read_text()) if again.returncode == 0 else None
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
        server.shutdown()
        server.server_close()
    lines = full.stderr.strip().splitlines()
    assert full.returncode == 2 and "Traceback" not in full.stderr, full.stderr[-2000:]
    assert lines[-1].startswith("error:") and "no space left" in lines[-1] and str(disk) in lines[-1], lines[-1]
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(result["items"]) == 120 and all(r["output"] == "word " * 400 for r in result["items"])
    assert int(again.stdout.split("this run: ")[1].split()[0]) < 120  # the answers cached before the disk filled
