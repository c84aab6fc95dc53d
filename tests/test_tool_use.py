"""The tool_use recipe's parts: the checks, the three forms of a conversation, and exported rows rendered by the
Qwen2.5 and Llama 3.1 chat templates (the originals TRL ships in `trl/chat_templates/`)."""

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from pipelines.prompts import tool_use as T
from pipelines.stages.tool_use import answer_problem, mentions, result_values
from pipelines.tools import chat

TEMPLATES = Path(pytest.importorskip("trl").__file__).parent / "chat_templates"
SHOP_TOOL = {"type": "function", "function": {"name": "order_total", "description": "an order's total",
                                              "parameters": {"type": "object", "properties": {
                                                  "order_id": {"type": "string", "pattern": "^O[0-9]{4}$"}}}}}
TOTAL = {"order_id": "O1005", "product": "Insulated water bottle 750 ml", "quantity": 3, "unit_price": 19.99,
         "total": 59.97}


def conversation(parallel: bool = False) -> list[dict]:
    calls = [("call_1", "order_total", {"order_id": "O1005"})]
    if parallel:
        calls.append(("call_2", "order_total", {"order_id": "O1001"}))
    turns = [chat.turn("user", "What did orders O1005 and O1001 cost?"), chat.assistant_calls(calls)]
    turns += [chat.tool_result(cid, {**TOTAL, "order_id": args["order_id"]}) for cid, _, args in calls]
    return turns + [chat.turn("assistant", "Order O1005 cost $59.97.")]


@pytest.mark.parametrize("answer, value, found", [
    ("It costs $59.97 in total.", 59.97, True),
    ("That is 16.09 km.", 16.09344, True),
    ("About 1,000 people.", 1000, True),
    ("It costs $59.", 59.97, False),
    ("The capital is nairobi.", "Nairobi", True),
    ("No number here.", 3, False),
])
def test_mentions(answer, value, found):
    assert mentions(answer, value) is found


def test_result_values_leave_out_the_arguments_and_identifiers():
    values = result_values(TOTAL, {"order_id": "O1005"})
    assert "O1005" not in values and 59.97 in values and "Insulated water bottle 750 ml" in values
    assert result_values({"columns": ["name", "price"], "rows": [[45.0]]}, {}) == [45.0]


@pytest.mark.parametrize("answer, kind, done, reason", [
    ("Order O1005 cost $59.97.", "single", [{"name": "order_total", "arguments": {}, "result": TOTAL}], None),
    ("I think it was about fifty dollars.", "single", [{"name": "order_total", "arguments": {}, "result": TOTAL}],
     "answer_ignores_result"),
    ("Order totals are computed from prices.", "single", [], "missed_call"),
    ("Haiku: leaves fall", "no_tool", [{"name": "order_total", "arguments": {}, "result": TOTAL}], "needless_call"),
    ("I cannot track a parcel; I can look up an order's total.", "unserviceable", [], None),
    ("", "no_tool", [], "empty_answer"),
    ("The user now asks for advice on a first novel.", "no_tool", [], "narrates"),
])
def test_answer_checks(answer, kind, done, reason):
    found = answer_problem(answer, kind, done)
    assert (found or "").split(":")[0] == (reason or "")


def test_a_request_naming_a_tool_identifier_is_refused_but_a_plain_word_is_not():
    weekday = {"type": "function", "function": {"name": "weekday"}}
    assert T.request_problem("What weekday was 4 July 2024?", [weekday]) is None
    assert T.request_problem("Use order_total for O1005", [SHOP_TOOL]).startswith("names_the_tool")
    for echoed in ('```json\n{"name": "weekday"}', '{"name": "weekday"}', "The person replies with a related topic."):
        assert T.request_problem(echoed, [weekday]).startswith("not_a_request"), echoed


def test_the_grammar_schema_keeps_names_and_types_and_drops_bounds():
    schema = T.calls_schema([SHOP_TOOL])
    option = schema["properties"]["tool_calls"]["items"]["anyOf"][0]
    assert option["properties"]["name"] == {"const": "order_total"}
    assert option["properties"]["arguments"] == {"type": "object", "properties": {"order_id": {"type": "string"}}}


def test_canonical_form_writes_calls_as_ingest_does():
    messages = chat.canonical(conversation())
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[1]["content"] == '<tool_call>\n{"name": "order_total", "arguments": {"order_id": "O1005"}}\n' \
                                     "</tool_call>"
    assert json.loads(messages[2]["content"])["total"] == 59.97


def test_one_call_per_turn_keeps_each_result_after_its_call():
    turns = chat.one_call_per_turn(conversation(parallel=True))
    assert [t["role"] for t in turns] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    assert [t["tool_call_id"] for t in turns if t["role"] == "tool"] == ["call_1", "call_2"]
    assert turns[1]["tool_calls"][0]["id"] == "call_1" and turns[3]["tool_calls"][0]["id"] == "call_2"


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from pipelines.teacher.weights import ensure_checkpoint

    return AutoTokenizer.from_pretrained(ensure_checkpoint(log=lambda *_: None))


def render(tokenizer, template: str, turns: list[dict], tools: list[dict]) -> str:
    return tokenizer.apply_chat_template(chat.template_turns(turns), tools=tools, chat_template=template,
                                         tokenize=False)


def test_qwen25_template_renders_calls_results_and_tools(tokenizer):
    text = render(tokenizer, (TEMPLATES / "qwen2_5.jinja").read_text(), conversation(parallel=True), [SHOP_TOOL])
    assert '{"name": "order_total", "arguments": {"order_id": "O1005"}}' in text  # parsed, not a quoted string
    assert text.count("<tool_response>") == 2 and '"total": 59.97' in text
    assert '"name": "order_total", "description": "an order\'s total"' in text  # the tools in the system turn


def test_llama31_template_renders_calls_one_per_turn(tokenizer):
    template = (TEMPLATES / "llama3_1.jinja").read_text()
    with pytest.raises(Exception, match="single tool-calls"):
        render(tokenizer, template, conversation(parallel=True), [SHOP_TOOL])
    text = render(tokenizer, template, chat.one_call_per_turn(conversation(parallel=True)), [SHOP_TOOL])
    assert '{"name": "order_total", "parameters": {"order_id": "O1005"}}' in text
    assert text.count("<|start_header_id|>ipython<|end_header_id|>") == 2


def test_a_template_without_tools_gets_hermes_text(tokenizer):
    """SmolLM2's template prints neither calls nor tools: training text then carries them as Hermes text."""
    assert not chat.renders_calls(tokenizer)
    [text] = chat.training_texts(tokenizer, [(conversation(parallel=True), [SHOP_TOOL])])
    assert "<tools>" in text and '"name": "order_total", "arguments": {"order_id": "O1001"}' in text
    assert text.count("<tool_response>") == 2 and text.count("<|im_start|>user") == 2  # both results, one turn


def test_a_thousand_calls_in_one_turn_are_refused_before_any_runs():
    from pipelines.stages.tool_use import Trajectory, UseTools

    state = Trajectory([chat.turn("user", "add these")])
    UseTools(max_calls=8)._run_calls(state, [{"name": "calculate", "arguments": {"expression": "1"}}] * 1000,
                                     [], {"id": "0" * 64, "domain": "math_units"}, 0, {}, {})
    assert state.failure == "over_call_cap: 1000 calls (max 8)" and state.finished and not state.done


def test_calls_are_checked_then_run_in_the_sandbox():
    from pipelines.stages.tool_use import Trajectory, UseTools, tools_files
    from pipelines.tools.sandbox import Sandbox

    paths = tools_files(("math_units",))
    with Sandbox(paths["math_units"]) as box:
        tools = box.describe()
    stage, boxes, row = UseTools(), {}, {"id": "ab" * 32, "domain": "math_units"}
    try:
        good = Trajectory([chat.turn("user", "7 * 6?")])
        stage._run_calls(good, [{"name": "calculate", "arguments": {"expression": "7 * 6"}}], tools, row, 0, boxes,
                         paths)
        assert good.failure is None and good.done[0]["result"]["result"] == 42
        assert good.turns[1]["tool_calls"][0]["id"] == "call_abababab_0_0" and good.turns[2]["tool_call_id"] == \
            "call_abababab_0_0"
        cases = [({"name": "rm", "arguments": {}}, "unknown_tool"),
                 ({"name": "calculate", "arguments": {"expression": 7}}, "bad_arguments: expression: 7 is not"),
                 ({"name": "calculate", "arguments": {"expression": "__import__('os')"}}, "execution_error"),
                 ({"name": "convert_units", "arguments": {"value": 1, "from_unit": "kg", "to_unit": "km"}},
                  "execution_error: ValueError: cannot convert")]
        for call, reason in cases:
            bad = Trajectory([chat.turn("user", "x")])
            stage._run_calls(bad, [call], tools, row, 0, boxes, paths)
            assert bad.failure.startswith(reason) and "(call " in bad.failure, bad.failure
            assert bad.turns[-1]["role"] == "assistant"  # a failed trajectory ends at the call that failed
        stage._run_calls(good, [{"name": "calculate", "arguments": {"expression": "7 * 6"}}], tools, row, 1, boxes,
                         paths)
        assert good.failure is None and good.finished and good.repeats == 1 and len(good.done) == 1
        assert len(good.turns) == 3  # the repeated call is left out of the conversation
        assert len(boxes) == 1  # one worker for the domain, kept for the stage's batch
    finally:
        for box in boxes.values():
            box.close()


def test_a_follow_up_sees_the_first_exchange_and_a_failed_one_goes_back_to_it():
    """`ask_next` keeps the first exchange; the decision and the answer then see it (its request, results and
    answer) and only the follow-up's own calls; a follow-up that fails a check returns to the first exchange, and a
    preference pair holds the first exchange on both sides."""
    from pipelines.prompts import tool_use as T
    from pipelines.stages.tool_use import Trajectory, pref_row

    state = Trajectory([chat.turn("user", "What is 7 * 6?")], "What is 7 * 6?", "single")
    state.done.append({"name": "calculate", "arguments": {"expression": "7 * 6"}, "result": {"value": 42}})
    state.turns += [chat.assistant_calls([("c0", "calculate", {"expression": "7 * 6"})]), chat.tool_result("c0", 42),
                    chat.turn("assistant", "It is 42.")]
    first = list(state.turns)
    state.ask_next("And 42 in words?", "no_tool")
    assert state.calls == [] and state.follow_up == "no_tool" and not state.finished
    assert [t["role"] for t in state.turns].count("user") == 2
    decide = T.decide_messages([], state.request, state.calls, state.earlier)[1]["content"]
    assert decide.index("What is 7 * 6?") < decide.index('"value": 42') < decide.index("It is 42.") < \
        decide.index("And 42 in words?")
    answer = T.answer_messages(state.request, state.calls, state.earlier)[1]["content"]
    assert "It is 42." in answer and answer.endswith("And 42 in words?")
    assert T.decide_messages([], "What is 7 * 6?", [])[1]["content"] == "What is 7 * 6?"  # no follow-up: as before
    state.turns.append(chat.turn("assistant", "forty-two"))
    state.fail("needless_call: x")
    assert state.keep_first() == "needless_call"
    assert state.turns == first and state.failure is None and state.follow_up is None and len(state.done) == 1
    row = {"prompt": "p", "prompt_id": "i", "kind": "single", "follow_up": "no_tool", "domain": "d", "tools": "[]",
           "tool_messages": json.dumps(first + [chat.turn("user", "more")]), "chosen_tool_messages": json.dumps(first),
           "rejected_tool_messages": json.dumps(first[:2]), "failed_check": "execution_error"}
    assert pref_row(row)["chosen"] == first and pref_row(row)["follow_up"] == "no_tool"


def test_tool_use_build_on_the_embedded_teacher(tmp_path, teacher_server):
    """The whole recipe on the session's SmolLM2 teacher: every request accounted for, every drop a named check,
    every exported row in OpenAI's tool shape and rendered by Qwen2.5's template; a rerun redoes nothing."""
    import polars as pl
    from transformers import AutoTokenizer

    from conftest import report, run_build
    from pipelines.teacher.weights import ensure_checkpoint

    run_dir = tmp_path / "run"
    settings = ("n_requests=4", "samples=2", "max_rounds=1", "tools=math_units,dates", "follow_ups=1")
    run_build(run_dir, *settings, server=teacher_server, recipe="tool_use")
    stages = report(run_dir)
    used = stages["use_tools"]
    assert used["rows_in"] == used["rows_out"] + sum(used["dropped"].values())
    known = {"unknown_tool", "bad_arguments", "execution_error", "timeout", "killed", "output_too_large",
             "over_call_cap", "missed_call", "needless_call", "answer_ignores_result", "empty_answer", "repeated",
             "unparsed_calls", "request_failed", "narrates"}
    assert set(used["dropped"]) <= known, used["dropped"]
    export = run_dir / "export" / "data"
    tokenizer = AutoTokenizer.from_pretrained(ensure_checkpoint(log=lambda *_: None))
    template = (TEMPLATES / "qwen2_5.jinja").read_text()
    for split in sorted(export.glob("*_sft-*.parquet")):
        for row in pl.read_parquet(split).to_dicts():
            tools = json.loads(row["tools"])
            assert row["messages"][0]["role"] == "user" and row["messages"][-1]["role"] == "assistant"
            assert render(tokenizer, template, row["messages"], tools)
            assert row["calls"] == sum(len(m["tool_calls"] or []) for m in row["messages"])
            users = [m["role"] for m in row["messages"]].count("user")
            assert users == (2 if row["follow_up"] else 1) and row["follow_up"] in (None, "single", "no_tool")
    follow = used["summary"]["tool_checks"]["follow_ups"]  # every request was seeded with a follow-up
    with_follow_up = sum(pl.read_parquet(f)["follow_up"].is_not_null().sum() for f in export.glob("*_sft-*"))
    assert with_follow_up <= follow["rows"] <= follow["written"] and \
        sum(follow["failed_by_check"].values()) <= follow["written"]
    for split in sorted(export.glob("*_prefs-*.parquet")):
        assert pl.read_parquet(split)["failed_check"].null_count() == 0
    run_build(run_dir, *settings, server=teacher_server, recipe="tool_use")
    assert {row["status"] for row in report(run_dir).values()} == {"skipped"}


def test_sft_trains_on_a_tool_export(tmp_path):
    """A tool-use export (OpenAI-shaped messages, a tools column) as ExportToolUse writes it: `pipelines.train sft`
    renders it for SmolLM2's template (no tool format: Hermes text) and trains."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipelines.stages.tool_use import SFT_SCHEMA, sft_row
    from pipelines.train.options import SFTOptions
    from pipelines.train.sft import tool_texts, train_sft
    from pipelines.teacher.weights import ensure_checkpoint

    rows = [sft_row({"prompt": "What did orders O1005 and O1001 cost?", "prompt_id": str(k), "kind": "parallel",
                     "domain": "shop", "tools": json.dumps([SHOP_TOOL]), "calls": 2,
                     "tool_messages": json.dumps(conversation(parallel=True))}) for k in range(2)]
    data = tmp_path / "export" / "data"
    data.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SFT_SCHEMA), data / "train_sft-00000-of-00001.parquet")
    texts = tool_texts([data / "train_sft-00000-of-00001.parquet"], str(ensure_checkpoint(log=lambda *_: None)))
    assert texts.num_rows == 2 and '"arguments": {"order_id": "O1001"}' in texts[0]["text"]
    metrics = train_sft(SFTOptions(str(tmp_path / "export"), max_steps=1, batch_size=2, max_length=256,
                                   output_dir=str(tmp_path / "model")), log=lambda *_: None)
    assert metrics["steps"] == 1 and metrics["tokens"] > 100 and metrics["loss"] > 0


def test_ast_match_is_order_free_and_exact_on_arguments():
    from pipelines.eval.suites.tool_calls import ast_match, first_calls

    reference = first_calls(conversation(parallel=True))
    assert reference == [{"name": "order_total", "arguments": {"order_id": "O1005"}},
                         {"name": "order_total", "arguments": {"order_id": "O1001"}}]
    assert ast_match(list(reversed(reference)), reference)
    assert not ast_match(reference[:1], reference)
    assert not ast_match([{"name": "order_total", "arguments": {"order_id": "O1005 "}}], reference[:1])
    assert ast_match([], first_calls([chat.turn("user", "hi"), chat.turn("assistant", "hello")]))


def test_tool_calls_suite_scores_a_model_on_a_tool_export(tmp_path):
    """`pipelines.eval --suites tool_calls` on a tool export's test_sft, with the embedded SmolLM2: every item
    scored by AST match of its calls (checked here again) and, for the shipped tools, by execution."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import subprocess
    import sys

    from pipelines.eval.suites.tool_calls import ast_match
    from pipelines.stages.tool_use import SFT_SCHEMA, sft_row
    from pipelines.tools import library_files
    from pipelines.tools.sandbox import Sandbox

    with Sandbox(library_files()["shop"]) as box:
        shop = box.describe()
    single = [chat.turn("user", "What did order O1005 cost?"),
              chat.assistant_calls([("c1", "order_total", {"order_id": "O1005"})]),
              chat.tool_result("c1", TOTAL), chat.turn("assistant", "It cost $59.97.")]
    direct = [chat.turn("user", "Write a haiku about hiking."), chat.turn("assistant", "Boots on the trail...")]
    rows = [sft_row({"prompt": t[0]["content"], "prompt_id": str(k), "kind": kind, "domain": "shop",
                     "tools": json.dumps(shop), "calls": calls, "tool_messages": json.dumps(t)})
            for k, (t, kind, calls) in enumerate([(single, "single", 1), (direct, "no_tool", 0)])]
    data = tmp_path / "export" / "data"
    data.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=SFT_SCHEMA), data / "test_sft-00000-of-00001.parquet")
    proc = subprocess.run([sys.executable, "-m", "pipelines.eval", "smollm2-135m", "--suites", "tool_calls",
                           "--tools-export", str(tmp_path / "export"), "--eval-dir", str(tmp_path / "ev")],
                          cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    found = json.loads((tmp_path / "ev" / "tool_calls.json").read_text())
    assert found["summary"]["items"] == 2 and found["summary"]["execution_accuracy"] is not None
    for item in found["items"]:
        assert item["score"] == float(ast_match(item["calls"], item["reference"]))
        assert item["exec_score"] in (0.0, 1.0)
        if item["kind"] == "no_tool":
            assert item["exec_score"] == float(item["calls"] == [])


def test_a_simulated_tool_is_played_by_the_teacher(tmp_path, teacher_server):
    """A call of a tool marked `simulated` is not run: the teacher writes its JSON result (grammar-enforced), the
    trajectory counts it, and the exported `tools` lose the flag."""
    from pipelines.core.stage import Context
    from pipelines.stages.tool_use import Trajectory, UseTools, common, tools_files
    from pipelines.teacher.client import Teacher
    from pipelines.teacher.config import TeacherConfig
    from pipelines.tools.sandbox import Sandbox

    tools_file = str(Path(__file__).parent / "data" / "tools_simulated.py")
    paths = tools_files((tools_file,))
    with Sandbox(paths["tools_simulated"]) as box:
        tools = box.describe()
        assert box.implemented == ["add"]
    teacher = Teacher(TeacherConfig(base_url=teacher_server.base_url, model=teacher_server.model, max_retries=0),
                      tmp_path / "requests.sqlite", tmp_path / "server.log", log=lambda m: None)
    ctx = Context(run_dir=tmp_path, config=None, clients={"teacher": teacher})
    stage, boxes, row = UseTools(tools=(tools_file,)), {}, {"id": "cd" * 32, "domain": "tools_simulated"}
    state = Trajectory([chat.turn("user", "Add 2 and 3, and tell me the weather in Oslo.")])
    try:
        stage._run_calls(state, [{"name": "add", "arguments": {"a": 2, "b": 3}},
                                 {"name": "get_weather", "arguments": {"city": "Oslo"}}], tools, row, 0, boxes, paths)
        assert state.done == [{"name": "add", "arguments": {"a": 2, "b": 3}, "result": {"sum": 5}}]
        assert [p[0] for p in state.pending] == ["call_cdcdcdcd_0_1"]
        stage._simulate(ctx, [row], [(0, 0)], [state], 0)
    finally:
        teacher.close()
        for box in boxes.values():
            box.close()
    assert state.failure is None and state.simulated == 1 and not state.pending
    assert state.done[1]["name"] == "get_weather" and set(state.done[1]["result"]) == {"temperature_c", "sky"}
    assert [t["tool_call_id"] for t in state.turns if t["role"] == "tool"] == ["call_cdcdcdcd_0_0", "call_cdcdcdcd_0_1"]
    exported = json.loads(common({"prompt": "p", "prompt_id": "i", "kind": "single", "domain": "d",
                                  "tools": json.dumps(tools)})["tools"])
    assert all(set(t) == {"type", "function"} for t in exported)


class ToolsEndpoint(ThreadingHTTPServer):
    """An endpoint that parses calls itself, as an API does with `tools` (the embedded llama-server ignores the
    field for SmolLM2, so no real part here answers with `tool_calls`): it calls `calculate` until a result is in
    the conversation, answers plainly otherwise, and says a judged answer is faithful."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), ToolsHandler)
        self.bodies = []


class ToolsHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        self.server.bodies.append(body)
        message = {"role": "assistant", "content": "The result is 42."}
        if "tools" in body and not any(m["role"] == "tool" for m in body["messages"]):
            message = {"role": "assistant", "content": None, "tool_calls": [{"id": "x", "type": "function", "function": {
                "name": "calculate", "arguments": json.dumps({"expression": "7 * 6"})}}]}
        elif "response_format" in body:
            message["content"] = json.dumps({"reason": "it states 42", "faithful": True})
        data = json.dumps({"choices": [{"index": 0, "finish_reason": "stop", "message": message}],
                           "usage": {"prompt_tokens": 10, "completion_tokens": 5}}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def test_calls_an_endpoint_parsed_go_through_the_argument_checks_parser():
    """A JSON string becomes an object; one the check refuses (not JSON, nested past recursion, over the size limit)
    stays a string for the check to refuse as bad_arguments, never an exception in the stage."""
    from pipelines.tools.validate import MAX_ARGUMENT_CHARS

    deep = "[" * 100_000 + "]" * 100_000
    found = T.native_calls([{"name": "f", "arguments": '{"a": 1}'}, {"name": "g", "arguments": "{oops"},
                            {"name": "h", "arguments": deep}, {"name": "i", "arguments": " " * (MAX_ARGUMENT_CHARS + 1)}])
    assert found[0] == {"name": "f", "arguments": {"a": 1}}
    assert [c["arguments"] for c in found[1:]] == ["{oops", deep, " " * (MAX_ARGUMENT_CHARS + 1)]
    assert T.native_calls(None) == []


def test_calls_through_the_tools_field_of_an_endpoint_that_parses_them(tmp_path, serve):
    """`calls_via=tools`: the decision goes out as the conversation with OpenAI's `tools` (without our own keys) and
    `tool_choice`, the endpoint's parsed `tool_calls` run in the sandbox, their results go back as `tool` turns, and
    a turn without calls ends the calling; the checks and the export are the same as on the grammar path."""
    import polars as pl

    from pipelines.core.stage import Context
    from pipelines.stages.tool_use import UseTools, tools_files
    from pipelines.teacher.client import Teacher
    from pipelines.teacher.config import TeacherConfig
    from pipelines.tools.sandbox import Sandbox

    endpoint = serve(ToolsEndpoint())
    with Sandbox(tools_files(("math_units",))["math_units"]) as box:
        tools = [{**t, "returns": {"type": "object"}} for t in box.describe() if t["function"]["name"] == "calculate"]
    teacher = Teacher(TeacherConfig(base_url=f"http://127.0.0.1:{endpoint.server_port}/v1", model="m", max_retries=0),
                      tmp_path / "requests.sqlite", tmp_path / "server.log", log=lambda m: None)
    ctx = Context(run_dir=tmp_path, config=None, clients={"teacher": teacher})
    batch = pl.DataFrame([{"id": "ab" * 32, "text": "What is 7 times 6?", "tools": json.dumps(tools), "kind": "single",
                           "domain": "math_units", "follow_up": None}])
    try:
        out = UseTools(samples=1, max_rounds=3, tools=("math_units",), calls_via="tools").process(batch, ctx)
    finally:
        teacher.close()
    turns = json.loads(out["tool_messages"][0])
    assert [t["role"] for t in turns] == ["user", "assistant", "tool", "assistant"]
    assert turns[1]["tool_calls"][0]["function"] == {"name": "calculate", "arguments": '{"expression": "7 * 6"}'}
    assert json.loads(turns[2]["content"]) == {"expression": "7 * 6", "result": 42}
    assert turns[3]["content"] == "The result is 42." and out["calls"][0] == 1
    native = [b for b in endpoint.bodies if "tools" in b]
    assert len(native) == 2 and native[0]["tool_choice"] == "auto"
    assert native[0]["tools"] == [{"type": "function", "function": tools[0]["function"]}]  # no `returns`
    assert native[0]["messages"][0]["role"] == "system" and native[0]["messages"][1] == {
        "role": "user", "content": "What is 7 times 6?"}
    assert native[1]["messages"][-1]["role"] == "tool" and native[1]["messages"][-1]["tool_call_id"] == \
        turns[1]["tool_calls"][0]["id"]
    assert any("response_format" in b for b in endpoint.bodies)  # the judge was asked about the answer
