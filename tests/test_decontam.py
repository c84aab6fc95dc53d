"""Benchmark files for decontamination: every container ingest reads, the layouts benchmarks use, `?field=`."""

import csv
import gzip
import hashlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from pipelines.core.errors import ConfigError
from pipelines.core.stage import Context
from pipelines.dedup.decontam import Benchmark, Contamination
from pipelines.stages.dedup import Decontaminate
from schemas import conversation_id

DATA = Path(__file__).parent / "data" / "decontam"
REAL = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "real"
MT_BENCH = [json.loads(line) for line in (DATA / "mtbench.jsonl").read_text().splitlines()]


def prompts(spec) -> list[str]:
    found, _ = Benchmark.parse(str(spec)).read()
    return found


@pytest.mark.parametrize("file, count, first", [
    ("mtbench.jsonl", 6, MT_BENCH[0]["turns"][0]),  # every turn of every question
    ("math.jsonl", 2, "What is the smallest positive integer $n$ such that $17n \\equiv 1234 \\pmod{7}$?"),
    ("mmlu.csv", 2, "Which of the following is true?\nA circular argument proves its conclusion\nAn appeal to "
                    "authority is always fallacious\nA straw man misrepresents an opponent's position\nA red herring "
                    "strengthens an argument"),
    ("arc.jsonl", 2, "An astronomer observes that a planet rotates faster after a meteorite impact. Which is the most "
                     "likely effect of this increase in rotation?\nPlanetary density will decrease.\nPlanetary years "
                     "will become longer.\nPlanetary days will become shorter.\nPlanetary gravity will become "
                     "stronger."),
    ("humaneval.jsonl", 1, json.loads((DATA / "humaneval.jsonl").read_text())["prompt"]),
    ("ifeval.jsonl", 2, "Write a 300+ word summary of the wikipedia page about the history of the printing press. Do "
                        "not use any commas and highlight at least 3 sections with markdown."),
    ("bigbench.jsonl", 2, "Q: Which sentence has the correct adjective order: Options: (A) rubber terrible ship (B) "
                          "terrible rubber ship"),
], ids=["mt-bench turns", "math problem", "mmlu question+choices", "arc question+choices{text,label}",
        "humaneval prompt", "ifeval prompt", "bigbench input"])
def test_benchmark_layouts(file, count, first):
    found = prompts(DATA / file)
    assert len(found) == count and found[0] == first


def test_layouts_of_records_written_here(tmp_path):
    gsm = tmp_path / "gsm.jsonl"
    gsm.write_text(json.dumps({"question": "Tom has 3 apples and buys 4 more. How many now?", "answer": "7"}) + "\n")
    alpaca = tmp_path / "alpaca.json"
    alpaca.write_text(json.dumps([{"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
                                  {"instruction": "Name a prime.", "input": "", "output": "7"}]))
    chat_prompt = tmp_path / "chat.jsonl"  # TRL's conversational prompt/completion: the user turns of `prompt`
    chat_prompt.write_text(json.dumps({"prompt": [{"role": "system", "content": "Be brief."},
                                                  {"role": "user", "content": "What is a quasar?"}],
                                       "completion": [{"role": "assistant", "content": "A bright galaxy core."}]}))
    assert prompts(gsm) == ["Tom has 3 apples and buys 4 more. How many now?"]
    assert prompts(alpaca) == ["Translate to French.\n\nGood morning", "Name a prime."]
    assert prompts(chat_prompt) == ["What is a quasar?"]


def write_containers(rows: list[dict], root: Path) -> list[Path]:
    """The same records as JSONL.gz, a JSON array (bz2 would do as well), CSV, Parquet, Arrow and `datasets`."""
    import datasets

    paths = [root / "b.jsonl.gz", root / "b.json", root / "b.csv", root / "b.parquet", root / "b.arrow", root / "ds"]
    with gzip.open(paths[0], "wt") as handle:
        handle.writelines(json.dumps(r) + "\n" for r in rows)
    paths[1].write_text(json.dumps(rows, indent=1))
    with open(paths[2], "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in r.items()} for r in rows)
    table = pa.Table.from_pylist(rows)
    pq.write_table(table, paths[3])
    feather.write_feather(table, paths[4])
    datasets.Dataset.from_list(rows).save_to_disk(str(paths[5]))
    return paths


def test_every_container_ingest_reads(tmp_path):
    expected = [t for r in MT_BENCH for t in r["turns"]]
    for path in write_containers(MT_BENCH, tmp_path):
        assert prompts(path) == expected, path
        assert prompts(f"mt={path}?field=turns") == expected, path
    arc = [json.loads(line) for line in (DATA / "arc.jsonl").read_text().splitlines()]
    arc_dir = tmp_path / "arc"
    arc_dir.mkdir()
    for path in write_containers(arc, arc_dir):  # choices as a struct of lists in Parquet, Arrow and `datasets`
        assert prompts(path) == prompts(DATA / "arc.jsonl"), path


def test_field_override(tmp_path):
    bench = Benchmark.parse(f"mt={DATA / 'mtbench.jsonl'}?field=turns")
    assert (bench.name, bench.path, bench.field) == ("mt", DATA / "mtbench.jsonl", "turns")
    assert bench.read() == ([t for r in MT_BENCH for t in r["turns"]], 0)
    # dotted, a missing field skipped and counted, a list value giving several prompts
    assert Benchmark.parse(f"{DATA / 'nested.jsonl'}?field=data.question").read() == (
        ["How many legs do three spiders and two ants have together, counting every leg?",
         "Name the capital of Australia.", "Name the capital of New Zealand."], 1)
    # a field the layouts would not pick, and a path through a list (BIG-Bench's `examples`)
    assert prompts(f"{DATA / 'ifeval.jsonl'}?field=kwargs.relation") == ["at least"]
    task = tmp_path / "task.jsonl"
    task.write_text(json.dumps({"name": "t", "examples": [{"input": "2 + 2 =", "target": "4"},
                                                          {"input": "3 + 5 =", "target": "8"}]}) + "\n")
    assert prompts(f"{task}?field=examples.input") == ["2 + 2 =", "3 + 5 ="]
    with pytest.raises(ConfigError, match=r"no text at field 'data\.nothing' in any record"):
        prompts(f"{DATA / 'nested.jsonl'}?field=data.nothing")
    for bad in (f"{DATA / 'nested.jsonl'}?field=", f"{DATA / 'nested.jsonl'}?format=qa"):
        with pytest.raises(ConfigError, match=r"write \[NAME=\]PATH or \[NAME=\]PATH\?field=FIELD"):
            Benchmark.parse(bad)


def test_the_field_is_part_of_the_digest():
    plain = Benchmark.parse(str(DATA / "mtbench.jsonl"))
    assert plain.digest() == hashlib.sha256((DATA / "mtbench.jsonl").read_bytes()).hexdigest()  # as lineage has it
    assert Benchmark.parse(f"{DATA / 'mtbench.jsonl'}?field=turns").digest() != plain.digest()


def test_an_unknown_layout_is_one_clear_line():
    path = DATA / "unknown.jsonl"
    with pytest.raises(ConfigError) as error:
        prompts(f"odd={path}")
    message = str(error.value)
    assert "\n" not in message
    assert f"benchmark odd: no prompt field (turns, problem, question, prompt, instruction, input) nor conversation " \
           f"in {path}; its records have fields ['body', 'label', 'uid']" in message
    assert f"benchmarks=odd={path}?field=FIELD" in message


def test_real_gsm8k_and_alpaca_eval():
    assert REAL.is_dir(), f"{REAL} is missing: CI runs with ../shared beside the repository"
    gsm = prompts(REAL / "gsm8k_test.jsonl")
    assert len(gsm) == 1319 and gsm[0].startswith("Janet\u2019s ducks lay 16 eggs per day.")
    alpaca = prompts(f"alpaca_eval={REAL / 'alpaca_eval_example_outputs.json'}")
    assert len(alpaca) == 805
    assert alpaca[0] == "What are the names of some famous actors that started their careers on Broadway?"
    contamination = Contamination([Benchmark.parse(f"gsm8k={REAL / 'gsm8k_test.jsonl'}"),
                                   Benchmark.parse(f"alpaca_eval={REAL / 'alpaca_eval_example_outputs.json'}")])
    assert contamination.prompt_counts == {"gsm8k": 1319, "alpaca_eval": 805}
    texts = [f"Here is a word problem. {gsm[100]} Answer carefully.", alpaca[3],  # "What is some cool music ..."
             f"My friend asked: {alpaca[2]}", "What is some cool music from the 1930s?"]
    assert contamination.match(texts, np.arange(4), 4) == [
        "contaminated: gsm8k (13-gram overlap)", "contaminated: alpaca_eval (same prompt)",
        "contaminated: alpaca_eval (13-gram overlap)", None]


def test_a_record_quoting_an_mt_bench_turn_is_flagged(tmp_path):
    turn = MT_BENCH[2]["turns"][0]  # coding: "Write a Python function that reads every text file in a folder ..."
    prompts_ = ["Please help me with this task: " + turn.lower(), "Tell me about the Faroe Islands."]
    msgs = [[{"role": "user", "content": p}, {"role": "assistant", "content": "Sure, here you go."}] for p in prompts_]
    msgs.append([{"role": "user", "content": MT_BENCH[1]["turns"][1]}, {"role": "assistant", "content": "Last."}])
    df = pl.DataFrame({"id": [conversation_id(m) for m in msgs], "messages": msgs})
    for spec in (f"mt_bench={DATA / 'mtbench.jsonl'}", f"mt_bench={DATA / 'mtbench.jsonl'}?field=turns"):
        ctx = Context(run_dir=tmp_path, config=None)
        out = Decontaminate(benchmarks=(spec,)).process(df, ctx)
        assert out["drop_reason"].to_list() == ["contaminated: mt_bench (13-gram overlap)", None,
                                                "contaminated: mt_bench (13-gram overlap)"]


def test_the_dedup_recipe_runs_end_to_end_with_a_field_override(tmp_path):
    """The whole recipe, card and lineage included, takes a `?field=` benchmark spec."""
    from pipelines.build import main

    turn = json.loads((DATA / "mtbench.jsonl").read_text().splitlines()[0])["turns"][0]
    chats = tmp_path / "chats.jsonl"
    chats.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": text},
                                                        {"role": "assistant", "content": "Here it is."}]})
                               for text in (f"Please help. {turn}", "What is the capital of Peru?")) + "\n")
    run = tmp_path / "run"
    code = main(["dedup", "--set", f"sources={chats}", "--set", f"benchmarks=mt={DATA / 'mtbench.jsonl'}?field=turns",
                 "--run-dir", str(run)])
    assert code == 0
    quarantine = pl.read_parquet(run / "quarantine.parquet")
    assert quarantine["reason"].to_list() == ["contaminated: mt (13-gram overlap)"]
    assert "mtbench.jsonl" in (run / "export" / "README.md").read_text()
