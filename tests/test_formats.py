"""Every input format through `Ingest`, on small hand-written files in each format's real-world shape.

`tests/data/formats/` holds one file per format (plus a few for options and odd cases), each with good records
and known-bad ones at known lines. The tables below say what every record of a file SHOULD become: its canonical
messages (or preference pair, or text) when kept, its quarantine reason when not. A record that yields no row at
all (an OpenAssistant message inside a longer path, the HelpSteer response used as the rejected one) is simply
not in its table; `test_no_unexpected_rows` checks that nothing else comes out.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import polars as pl
import pytest

from pipelines.core.errors import SourceError
from pipelines.core.stage import Context
from pipelines.stages.ingest import Ingest

DATA = Path(__file__).parent / "data" / "formats"


# ---------------------------------------------------------------------------------------------------- helpers


def system(text: str) -> dict:
    return {"role": "system", "content": text}


def user(text: str) -> dict:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict:
    return {"role": "assistant", "content": text}


def tool(text: str) -> dict:
    return {"role": "tool", "content": text}


@dataclass(frozen=True)
class Bad:
    """A quarantined record: `drop_reason` is "category: ..." and contains `detail`."""

    category: str
    detail: str


@dataclass(frozen=True)
class Pair:
    """A kept preference pair. `rejected_from` lists (answer, score, model) choices when rejected is drawn at random;
    `completions` is how many scored completions the pair lists (their contents are checked in their own tests)."""

    prompt: list
    chosen: str
    rejected: str | None = None
    score_chosen: float | None = None
    score_rejected: float | None = None
    chosen_model: str | None = None
    rejected_model: str | None = None
    rejected_from: tuple = ()
    completions: int = 0


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Case:
    file: str
    fmt: str  # the format auto-detection should pick: rows' `source` is "fmt:file"
    kind: str
    records: dict  # locator -> list of messages (kept conversation) | Pair | Text | Bad

    def __str__(self) -> str:
        return f"{self.kind}:{self.file}"


_CACHE: dict = {}


@cache
def scratch_dir() -> Path:
    """run_dir for reads that need no tmp_path of their own (Ingest writes nothing there)."""
    return Path(tempfile.mkdtemp(prefix="test-formats-"))


def ingest(*sources: str | Path, kind: str = "conversation", run_dir: Path | None = None) -> tuple[list[dict], Context]:
    """All rows `Ingest` gives for these sources (kept and quarantined), and its Context (for counters)."""
    ctx = Context(run_dir=run_dir or scratch_dir(), config=None)
    frames = list(Ingest(sources=tuple(str(s) for s in sources), kind=kind).read(ctx))
    return pl.concat(frames, how="vertical").to_dicts(), ctx


def rows_of(file: str, kind: str) -> dict[str, dict]:
    """The rows of a fixture file by locator, read once per session."""
    if (file, kind) not in _CACHE:
        rows, _ = ingest(DATA / file, kind=kind)
        by_locator = {}
        for row in rows:
            loc = locator(row)
            assert loc not in by_locator, f"two rows at {loc}"
            by_locator[loc] = row
        _CACHE[file, kind] = by_locator
    return _CACHE[file, kind]


def locator(row: dict) -> str:
    """Quarantined rows carry `locator`; kept rows have it in `meta`."""
    return row["locator"] if row["drop_reason"] is not None else json.loads(row["meta"])["locator"]


def meta(row: dict) -> dict:
    return json.loads(row["meta"])


def kept(row: dict) -> dict:
    assert row["drop_reason"] is None, f"dropped: {row['drop_reason']}"
    return row


def source_line(file: str, loc: str) -> str:
    number = int(loc.split(":")[1].split("#")[0])
    return (DATA / file).read_text(encoding="utf-8").split("\n")[number - 1]


# ---------------------------------------------------------------------------------------------------- expectations

MONOPSONY = 'Can you write a short introduction about the relevance of the term "monopsony" in economics?'
MONOPSONY_A1 = ("Monopsony refers to a market with a single buyer, such as one big employer in a small town, which can "
                "push wages below the competitive level.")
MONOPSONY_A2 = "Monopsony is a market in which there is only one buyer."
TOOL_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
NATALIA = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips to her friends in "
           "May. How many clips did Natalia sell altogether in April and May?")
NATALIA_ANSWER = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
                  "altogether in April and May.\n#### 72")
BOIL = "What is the boiling point of water at sea level?"
BOIL_GOOD, BOIL_BAD = "Water boils at 100 °C (212 °F) at sea level.", "Water boils at 90 degrees."
SUMMARY = "Summarize in one sentence: The city council voted to extend the library's opening hours on weekends."
SEA = "Write a haiku about the sea."
SEA_GPT4 = "Waves fold on the shore,\nsalt wind carries gull voices,\nthe tide breathes and goes."
EMPTY = Bad("schema", "'' should be non-empty")
OPEN_END = Bad("turn_order", "does not end with an assistant turn")
HS_TIE = Bad("tie", "all 2 responses to this prompt rank equal")

OASST_BAD = {  # the same rows are unusable whichever kind is asked for
        "oasst.jsonl:6": Bad("removed", "deleted or failed review"),
        "oasst.jsonl:7": Bad("removed", "under a removed message"),
        "oasst.jsonl:8": Bad("orphan", "parent 00000000-0000-4000-8000-000000000000"),
        "oasst.jsonl:9": Bad("not_json", "Unterminated string"),
        "oasst.jsonl:10": Bad("unknown_role", "'moderator'"),
        "oasst.jsonl:11": Bad("bad_field", "'text' is missing"),
}


CASES = [
    Case("sharegpt.jsonl", "sharegpt", "conversation", {
        "sharegpt.jsonl:1": [system("You are a helpful assistant."), user("What is the capital of France?"),
                             assistant("The capital of France is Paris."), user("And of Italy?"),
                             assistant("Rome is the capital of Italy.")],
        "sharegpt.jsonl:2": [user("Search the news about the Mars rover."),
                             assistant("Here is what I found: the rover collected a new rock sample this week.")],
        "sharegpt.jsonl:3": [user("Write a haiku about autumn."),
                             assistant("Crisp leaves drift and fall,\nthe maple burns red and gold,\n"
                                       "the year exhales slow."),
                             user("Another one, please."),
                             assistant("Golden light fades fast,\ngeese stitch the sky going south,\n"
                                       "woodsmoke in the dusk.")],
        "sharegpt.jsonl:4": Bad("not_json", "Expecting ',' delimiter"),
        "sharegpt.jsonl:5": Bad("unknown_role", "'narrator' at conversations[1]"),
        "sharegpt.jsonl:6": Bad("bad_field", "conversations[1] value is NoneType"),
        "sharegpt.jsonl:7": OPEN_END,
        "sharegpt.jsonl:8": Bad("schema", "messages/0/content: '' should be non-empty"),
        "sharegpt.jsonl:9": Bad("turn_order", "at message 0: assistant where user was expected"),
    }),
    Case("messages.jsonl", "messages", "conversation", {
        "messages.jsonl:1": [system("You are a concise assistant."), user("Name a primary color."), assistant("Red.")],
        "messages.jsonl:2": [system("You can look up the weather."), user("What's the weather in Paris?"),
                             assistant(TOOL_CALL), tool('{"temp_c": 18, "sky": "clear"}'),
                             assistant("It is 18 °C and clear in Paris.")],
        "messages.jsonl:3": [system("Answer in one word."), user("Translate 'chat' from French to English."),
                             assistant("Cat.")],
        "messages.jsonl:4": Bad("unsupported", "messages[0] has image_url content"),
        "messages.jsonl:5": Bad("unknown_role", "'bot' at messages[1]"),
        "messages.jsonl:6": Bad("not_json", "Expecting value"),
        "messages.jsonl:7": OPEN_END,
        "messages.jsonl:8": Bad("schema", "messages/1/content: '' should be non-empty"),
        "messages.jsonl:9": Bad("unknown_role", "None at messages[0]"),
    }),
    Case("prompt_completion.jsonl", "prompt_completion", "conversation", {
        "prompt_completion.jsonl:1": [user("The sky is"), assistant(" blue.")],
        "prompt_completion.jsonl:2": [system("You are a weather bot."), user("What color is the sky?"),
                                      assistant("It is blue.")],
        "prompt_completion.jsonl:3": Bad("bad_field", "'prompt' is int, not text or messages"),
        "prompt_completion.jsonl:4": Bad("not_json", "Expecting property name"),
        "prompt_completion.jsonl:5": Bad("bad_record", "'completion'"),
        "prompt_completion.jsonl:6": Bad("turn_order", "at message 1: user where assistant was expected"),
        "prompt_completion.jsonl:7": Bad("schema", "messages/1/content: '' should be non-empty"),
    }),
    Case("preference.jsonl", "preference", "preference", {
        "preference.jsonl:1": Pair([user("What color is the sky?")], "It is blue.", "It is green."),
        "preference.jsonl:2": Pair([user("What is 2 + 2?")], "2 + 2 = 4.", "2 + 2 = 5."),
        "preference.jsonl:3": Pair([user("Name a planet.")], "Mars.", "The Moon.", score_chosen=9.0,
                                   score_rejected=2.5),
        "preference.jsonl:4": Pair([system("You are a math tutor."), user("What is 3 + 4?"), assistant("3 + 4 = 7."),
                                    user("And 7 times 2?")], "7 times 2 is 14.", "7 times 2 is 72."),
        "preference.jsonl:5": Bad("not_json", "Expecting ',' delimiter"),
        "preference.jsonl:6": Bad("identical", "chosen and rejected are the same"),
        "preference.jsonl:7": Bad("prompt_mismatch", "differ before their last assistant turn"),
        "preference.jsonl:8": Bad("bad_record", "'rejected'"),
        "preference.jsonl:9": EMPTY,
        "preference.jsonl:10": Pair([user("How many legs does a spider have?")], "A spider has eight legs.",
                                    "A spider has six legs.", score_chosen=8.0, score_rejected=5.0),
    }),
    Case("alpaca.json", "alpaca", "conversation", {  # a JSON array: locators are the lines where elements start
        "alpaca.json:2": [user("Give three tips for staying healthy."),
                          assistant("1. Eat a balanced diet.\n2. Exercise regularly.\n3. Get enough sleep.")],
        "alpaca.json:7": [user("Translate the sentence into French.\n\nGood morning."), assistant("Bonjour.")],
        "alpaca.json:12": [user("Name a famous painter."), assistant("Leonardo da Vinci.")],
        "alpaca.json:17": Bad("bad_field", "'output' is missing"),
        "alpaca.json:21": Bad("schema", "messages/1/content: '' should be non-empty"),
        "alpaca.json:26": Bad("bad_field", "'instruction' is list, not text"),
        "alpaca.json:34": Bad("not_object", "a JSON str"),
        "alpaca.json:35": Bad("not_json", "the rest of the array is unreadable"),
    }),
    Case("dolly.jsonl", "dolly", "conversation", {
        "dolly.jsonl:1": [user("When did Virgin Australia start operating?\n\nVirgin Australia, the trading name of "
                               "Virgin Australia Airlines Pty Ltd, is an Australian-based airline. It commenced "
                               "services on 31 August 2000 as Virgin Blue, with two aircraft on a single route."),
                          assistant("Virgin Australia commenced services on 31 August 2000 as Virgin Blue, with two "
                                    "aircraft on a single route.")],
        "dolly.jsonl:2": [user("Which is a species of fish? Tope or Rope"), assistant("Tope")],
        "dolly.jsonl:3": Bad("not_json", "Unterminated string"),
        "dolly.jsonl:4": Bad("bad_field", "'response' is missing"),
        "dolly.jsonl:5": Bad("schema", "messages/1/content: '' should be non-empty"),
        "dolly.jsonl:6": Bad("schema", "messages/0/content: '   ' does not match"),
    }),
    Case("openorca.jsonl", "openorca", "conversation", {
        "openorca.jsonl:1": [system("You are an AI assistant. User will you give you a task. Your goal is to "
                                    "complete the task as faithfully as you can."),
                             user("Translate to German: The weather is nice today."),
                             assistant("Das Wetter ist heute schön.")],
        "openorca.jsonl:2": [user("Premise: A man is playing a guitar. Hypothesis: A man is playing an instrument. "
                                  "Is the hypothesis entailed by the premise?"),
                             assistant("Yes. A guitar is an instrument, so the hypothesis is entailed.")],
        "openorca.jsonl:3": Bad("not_json", "Extra data"),
        "openorca.jsonl:4": Bad("bad_field", "'question' is missing"),
        "openorca.jsonl:5": Bad("schema", "messages/2/content: '' should be non-empty"),
    }),
    Case("self_instruct.jsonl", "self_instruct", "conversation", {  # one conversation per instance: `#n`
        "self_instruct.jsonl:1#0": [user("Convert the given temperature from Celsius to Fahrenheit.\n\n25 °C"),
                                    assistant("77 °F")],
        "self_instruct.jsonl:1#1": [user("Convert the given temperature from Celsius to Fahrenheit.\n\n-40 °C"),
                                    assistant("-40 °F")],
        "self_instruct.jsonl:2": [user("Is there anything I can eat for a breakfast that doesn't include eggs, yet "
                                       "includes protein, and has roughly 700-1000 calories?"),
                                  assistant("Yes, you can have 1 oatmeal banana protein shake and 4 strips of bacon.")],
        "self_instruct.jsonl:3": Bad("empty", "the task has no instances"),
        "self_instruct.jsonl:4": Bad("not_json", "Expecting ',' delimiter"),
        "self_instruct.jsonl:5": Bad("bad_field", "'output' is missing"),
        "self_instruct.jsonl:6#0": [user("Is the sentiment of the review positive or negative?\n\n"
                                         "I loved every minute of it."), assistant("Positive")],
        "self_instruct.jsonl:6#1": Bad("schema", "messages/1/content: '' should be non-empty"),
    }),
    Case("ultrachat.jsonl", "ultrachat", "conversation", {  # line 2 is blank
        "ultrachat.jsonl:1": [user("How can cross training benefit groups like runners, swimmers, or weightlifters?"),
                              assistant("Cross training helps each group build strength and endurance in muscles "
                                        "their main sport neglects."),
                              user("Can you recommend some cross training exercises for runners?"),
                              assistant("Sure: swimming, cycling, and strength training for the legs and core all "
                                        "work well.")],
        "ultrachat.jsonl:3": [user("What is the tallest mountain on Earth?"),
                              assistant("Mount Everest, at 8,849 metres above sea level.")],
        "ultrachat.jsonl:4": OPEN_END,
        "ultrachat.jsonl:5": Bad("bad_field", "data[1] is NoneType, not text"),
        "ultrachat.jsonl:6": Bad("not_json", "Unterminated string"),
        "ultrachat.jsonl:7": Bad("schema", "messages/0/content: '' should be non-empty"),
    }),
    Case("lmsys.jsonl", "lmsys", "conversation", {
        "lmsys.jsonl:1": [user("Answer the following question: What is the capital of Japan?"),
                          assistant("The capital of Japan is Tokyo.")],
        "lmsys.jsonl:2": [user("Hi, my name is NAME_1."), assistant("Hello NAME_1! How can I help you?"),
                          user("Qual é a capital do Brasil?"), assistant("A capital do Brasil é Brasília.")],
        "lmsys.jsonl:3": Bad("not_json", "Expecting value"),
        "lmsys.jsonl:4": Bad("unknown_role", "'human' at conversation[0]"),
        "lmsys.jsonl:5": OPEN_END,
        "lmsys.jsonl:6": Bad("schema", "messages/1/content: '' should be non-empty"),
    }),
    Case("gsm8k.jsonl", "qa", "conversation", {
        "gsm8k.jsonl:1": [user(NATALIA), assistant(NATALIA_ANSWER)],
        "gsm8k.jsonl:2": [user("Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of "
                               "babysitting. How much did she earn?"),
                          assistant("Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\nWorking 50 minutes, she "
                                    "earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10")],
        "gsm8k.jsonl:3": Bad("not_json", "Expecting value"),
        "gsm8k.jsonl:4": Bad("bad_field", "'answer' is int, not text"),
        "gsm8k.jsonl:5": Bad("schema", "messages/1/content: '' should be non-empty"),
    }),
    Case("hh_rlhf.jsonl", "hh_rlhf", "preference", {
        "hh_rlhf.jsonl:1": Pair([user("How do I make a cup of tea?")],
                                "Boil water, pour it over a tea bag, and let it steep for three to five minutes.",
                                "Why would you want tea?"),
        "hh_rlhf.jsonl:2": Pair([user("What should I bring on a day hike?"),
                                 assistant("Water, snacks, sunscreen and a map."), user("Anything else?")],
                                "A first-aid kit and a warm layer, in case the weather turns.", "No."),
        "hh_rlhf.jsonl:3": Bad("not_json", "Expecting value"),
        "hh_rlhf.jsonl:4": Bad("identical", "chosen and rejected are the same"),
        "hh_rlhf.jsonl:5": Bad("bad_layout", "'chosen' has text before the first 'Human:' turn"),
        "hh_rlhf.jsonl:6": Bad("schema", "rejected/1/content: '' should be non-empty"),
        "hh_rlhf.jsonl:7": Bad("prompt_mismatch", "differ before their last assistant turn"),
    }),
    Case("hh_rlhf.jsonl", "hh_rlhf", "conversation", {  # SFT from preference data: the chosen conversation
        "hh_rlhf.jsonl:1": [user("How do I make a cup of tea?"),
                            assistant("Boil water, pour it over a tea bag, and let it steep for three to five "
                                      "minutes.")],
        "hh_rlhf.jsonl:2": [user("What should I bring on a day hike?"),
                            assistant("Water, snacks, sunscreen and a map."), user("Anything else?"),
                            assistant("A first-aid kit and a warm layer, in case the weather turns.")],
        "hh_rlhf.jsonl:3": Bad("not_json", "Expecting value"),
        "hh_rlhf.jsonl:4": Bad("identical", "chosen and rejected are the same"),
        "hh_rlhf.jsonl:5": Bad("bad_layout", "'chosen' has text before the first 'Human:' turn"),
        "hh_rlhf.jsonl:6": [user("Tell me a fact."), assistant("Honey never spoils.")],  # only `rejected` is empty
        "hh_rlhf.jsonl:7": Bad("prompt_mismatch", "differ before their last assistant turn"),
    }),
    Case("ultrafeedback.jsonl", "ultrafeedback", "preference", {
        "ultrafeedback.jsonl:1": Pair([user(SEA)], SEA_GPT4, score_chosen=5.0, chosen_model="gpt-4", rejected_from=(
            ("The sea is big and blue,\nit has many fish.", 4.0, "llama-2-13b-chat"),
            ("Sea sea sea.", 2.0, "falcon-40b-instruct"),
            ("Blue water rolling,\nsunlight on the moving waves.", 3.0, "wizardlm-7b")), completions=4),
        "ultrafeedback.jsonl:2": Pair([user("What is the boiling point of water in Fahrenheit?")],
                                      "Water boils at 212 °F at sea level.", "Water boils at 100 °F.",
                                      score_chosen=4.5, score_rejected=2.75, chosen_model="gpt-3.5-turbo",
                                      rejected_model="pythia-12b", completions=2),
        "ultrafeedback.jsonl:3": Bad("not_json", "Unterminated string"),
        "ultrafeedback.jsonl:4": Bad("too_few", "1 rated completions"),
        "ultrafeedback.jsonl:5": Bad("tie", "every rated completion has the same score"),
        "ultrafeedback.jsonl:6": Bad("bad_field", "'instruction' is missing"),
    }),
    Case("helpsteer.jsonl", "helpsteer", "conversation", {  # one conversation per response row
        "helpsteer.jsonl:1": [user(BOIL), assistant(BOIL_GOOD)],
        "helpsteer.jsonl:2": [user(BOIL), assistant(BOIL_BAD)],
        "helpsteer.jsonl:3": [user(SUMMARY), assistant("The council extended the library's weekend hours.")],
        "helpsteer.jsonl:4": [user(SUMMARY), assistant("Weekend library hours were extended by the city council.")],
        "helpsteer.jsonl:5": Bad("not_json", "Expecting ',' delimiter"),
        "helpsteer.jsonl:6": Bad("bad_field", "'helpfulness' is 'high', not a 0-4 score"),
        "helpsteer.jsonl:7": Bad("bad_field", "'response' is missing"),
        "helpsteer.jsonl:8": [user("What is a prime number?"),  # HelpSteer2 multi-turn prompt (<extra_id_1>)
                              assistant("A whole number greater than 1 whose only divisors are 1 and itself."),
                              user("Is 9 prime?"), assistant("No. 9 is divisible by 3.")],
    }),
    Case("helpsteer.jsonl", "helpsteer", "preference", {  # line 2 is the rejected answer of line 1's pair
        "helpsteer.jsonl:1": Pair([user(BOIL)], BOIL_GOOD, BOIL_BAD, score_chosen=4.0, score_rejected=1.0,
                                  completions=2),
        "helpsteer.jsonl:3": HS_TIE,
        "helpsteer.jsonl:4": HS_TIE,
        "helpsteer.jsonl:5": Bad("not_json", "Expecting ',' delimiter"),
        "helpsteer.jsonl:6": Bad("bad_field", "'helpfulness' is 'high', not a 0-4 score"),
        "helpsteer.jsonl:7": Bad("bad_field", "'response' is missing"),
        "helpsteer.jsonl:8": Bad("too_few", "only one response to this prompt"),
    }),
    Case("oasst.jsonl", "oasst", "conversation", {  # one conversation per root-to-leaf path, at the leaf
        "oasst.jsonl:3": [user(MONOPSONY), assistant(MONOPSONY_A2)],
        "oasst.jsonl:5": [user(MONOPSONY), assistant(MONOPSONY_A1), user("Now explain it to a dog."),
                          assistant("Imagine only one person in the park gives out treats: they decide how many you "
                                    "get.")],
        **OASST_BAD,
        "oasst.jsonl:12": Bad("too_short", "a prompt without an answer"),
    }),
    Case("oasst.jsonl", "oasst", "preference", {  # rank 0 against each lower-ranked sibling, at the prompt
        "oasst.jsonl:1": Pair([user(MONOPSONY)], MONOPSONY_A1, MONOPSONY_A2),
        **OASST_BAD,
    }),
    Case("text.jsonl", "text", "text", {
        "text.jsonl:1": Text("The quick brown fox jumps over the lazy dog."),
        "text.jsonl:2": Bad("not_json", "Unterminated string"),
        "text.jsonl:3": Bad("schema", "text: '   ' does not match"),
        "text.jsonl:4": Bad("bad_field", "'text' is int, not text"),
        "text.jsonl:5": Text("Lighthouses guide ships with a pattern of flashes.\n\nEach one is different."),
    }),
]

# Where the code disagrees with the format's real-world shape: (kind, locator) -> why. Listed in the report too.


def record_params():
    for case in CASES:
        for loc, expected in case.records.items():
            yield pytest.param(case, loc, expected, id=f"{case.kind}:{loc}")


# ---------------------------------------------------------------------------------------------------- per fixture


@pytest.mark.parametrize("case", CASES, ids=str)
def test_source_names_the_detected_format(case):
    rows = rows_of(case.file, case.kind).values()
    assert rows and {row["source"] for row in rows} == {f"{case.fmt}:{case.file}"}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_no_unexpected_rows(case):
    assert set(rows_of(case.file, case.kind)) <= set(case.records)


@pytest.mark.parametrize("case, loc, expected", list(record_params()))
def test_record(case, loc, expected):
    rows = rows_of(case.file, case.kind)
    assert loc in rows, f"no row at {loc}; rows at {sorted(rows)}"
    row = rows[loc]
    if isinstance(expected, Bad):
        check_bad(case, loc, row, expected)
    elif isinstance(expected, Pair):
        check_pair(kept(row), expected)
    elif isinstance(expected, Text):
        assert kept(row)["text"] == expected.text
    else:
        assert kept(row)["messages"] == expected


def check_bad(case: Case, loc: str, row: dict, expected: Bad) -> None:
    reason = row["drop_reason"]
    assert reason is not None, f"kept, expected {expected}"
    category, _, detail = reason.partition(": ")
    assert category == expected.category, reason
    assert expected.detail in detail, reason
    assert row["locator"] == loc
    if case.file.endswith(".jsonl"):
        assert row["raw"] == source_line(case.file, loc)
    else:  # a JSON array element as written
        assert row["raw"].lstrip().startswith(('{', '"'))


def check_pair(row: dict, expected: Pair) -> None:
    chosen = expected.prompt + [assistant(expected.chosen)]
    assert row["chosen"] == chosen and row["messages"] == chosen
    last_user = next(m["content"] for m in reversed(expected.prompt) if m["role"] == "user")
    assert (row["prompt"], row["prompt_id"]) == (last_user, hashlib.sha256(last_user.encode()).hexdigest())
    assert len(row["completions"]) == expected.completions
    assert (row["score_chosen"], row["chosen_model"]) == (expected.score_chosen, expected.chosen_model)
    assert row["rejected"][:-1] == expected.prompt and row["rejected"][-1]["role"] == "assistant"
    got = (row["rejected"][-1]["content"], row["score_rejected"], row["rejected_model"])
    if expected.rejected_from:
        assert got in expected.rejected_from
    else:
        assert got == (expected.rejected, expected.score_rejected, expected.rejected_model)


# ---------------------------------------------------------------------------------------------------- format details


def test_openai_tool_call_is_written_hermes_style_and_its_tools_kept_as_a_column():
    row = rows_of("messages.jsonl", "conversation")["messages.jsonl:2"]
    assert row["messages"][2:4] == [assistant(TOOL_CALL), tool('{"temp_c": 18, "sky": "clear"}')]
    details = meta(row)
    assert details["tool_calls"] == {"2": [{"id": "call_abc123", "type": "function", "function": {
        "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]}
    assert details["tool_results"] == {"3": {"tool_call_id": "call_abc123"}}
    assert "tools" not in details and [t["function"]["name"] for t in json.loads(row["tools"])] == ["get_weather"]


def test_lmsys_keeps_model_language_and_moderation_in_meta():
    details = meta(kept(rows_of("lmsys.jsonl", "conversation")["lmsys.jsonl:2"]))
    assert {k: details[k] for k in ("conversation_id", "model", "turn", "language", "redacted")} == {
        "conversation_id": "1e2f9c2a0b7d4d3c8e6f5a4b3c2d1e0f", "model": "vicuna-13b", "turn": 2,
        "language": "Portuguese", "redacted": True}
    assert len(details["openai_moderation"]) == 4 and details["openai_moderation"][0]["flagged"] is False


def test_row_fields_go_to_meta():
    rows = rows_of("self_instruct.jsonl", "conversation")
    assert [meta(rows[f"self_instruct.jsonl:1#{n}"])["instance"] for n in (0, 1)] == [0, 1]
    assert meta(rows["self_instruct.jsonl:1#0"])["name"] == "temperature_conversion"
    assert meta(rows_of("dolly.jsonl", "conversation")["dolly.jsonl:1"])["category"] == "closed_qa"
    assert meta(rows_of("openorca.jsonl", "conversation")["openorca.jsonl:2"])["id"] == "flan.564327"
    assert meta(rows_of("hh_rlhf.jsonl", "conversation")["hh_rlhf.jsonl:1"])["from_pair"] == "chosen"
    assert {k: v for k, v in meta(rows_of("helpsteer.jsonl", "conversation")["helpsteer.jsonl:2"]).items()
            if k != "locator"} == {"helpfulness": 1.0, "correctness": 0.0, "coherence": 3.0, "complexity": 1.0,
                                   "verbosity": 2.0}
    oasst = meta(rows_of("oasst.jsonl", "preference")["oasst.jsonl:1"])
    assert (oasst["chosen_rank"], oasst["rejected_rank"], oasst["lang"]) == (0, 1, "en")


def rating(aspect, value, rationale):
    return {"aspect": aspect, "rating": value, "rationale": rationale}


def uf_ratings(helpfulness, honesty, following, truthfulness):
    return [rating("helpfulness", helpfulness, "The response is clear and relevant."),
            rating("honesty", honesty, "The model expresses appropriate confidence."),
            rating("instruction_following", following, "The text follows the instruction."),
            rating("truthfulness", truthfulness, "No hallucinations.")]


def test_ultrafeedback_keeps_every_completion_with_its_ratings():
    row = kept(rows_of("ultrafeedback.jsonl", "preference")["ultrafeedback.jsonl:1"])
    assert row["completions"] == [
        {"model": "gpt-4", "principle": "helpfulness", "content": SEA_GPT4,
         "ratings": uf_ratings(5.0, 5.0, 5.0, 5.0), "overall": 5.0},
        {"model": "llama-2-13b-chat", "principle": "honesty", "content": "The sea is big and blue,\nit has many fish.",
         "ratings": uf_ratings(4.0, None, 3.0, 5.0), "overall": 4.0},  # "N/A" is no rating
        {"model": "falcon-40b-instruct", "principle": "truthfulness", "content": "Sea sea sea.",
         "ratings": uf_ratings(2.0, 3.0, 2.0, 1.0), "overall": 2.0},
        {"model": "wizardlm-7b", "principle": "verbalized_calibration",
         "content": "Blue water rolling,\nsunlight on the moving waves.",
         "ratings": uf_ratings(3.0, 3.0, 3.0, 3.0), "overall": 3.0},
    ]
    assert {k: meta(row)[k] for k in ("source", "models")} == {
        "source": "evol_instruct", "models": ["gpt-4", "llama-2-13b-chat", "falcon-40b-instruct", "wizardlm-7b"]}


def test_ultrafeedback_random_rejected_is_the_same_on_every_read(tmp_path):
    first, _ = ingest(DATA / "ultrafeedback.jsonl", kind="preference", run_dir=tmp_path)
    second, _ = ingest(DATA / "ultrafeedback.jsonl", kind="preference", run_dir=tmp_path)
    assert [r["rejected"] for r in first] == [r["rejected"] for r in second]


def test_helpsteer_pair_lists_both_responses_best_first():
    row = kept(rows_of("helpsteer.jsonl", "preference")["helpsteer.jsonl:1"])
    names = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")

    def response(content, *scores):
        return {"model": None, "principle": None, "content": content, "overall": scores[0],
                "ratings": [rating(name, score, None) for name, score in zip(names, scores)]}

    assert row["completions"] == [response(BOIL_GOOD, 4.0, 4.0, 4.0, 1.0, 1.0),
                                  response(BOIL_BAD, 1.0, 0.0, 3.0, 1.0, 2.0)]


def test_gsm8k_row_missing_its_answer_is_quarantined(tmp_path):
    rows, _ = ingest(DATA / "gsm8k_missing_answer.jsonl", run_dir=tmp_path)
    assert [kept(r)["messages"] for r in rows if r["drop_reason"] is None] == [[user(NATALIA),
                                                                                assistant(NATALIA_ANSWER)]]
    [bad] = [r for r in rows if r["drop_reason"] is not None]
    assert bad["locator"] == "gsm8k_missing_answer.jsonl:2"
    assert bad["drop_reason"].startswith("bad_field: ") and "'answer'" in bad["drop_reason"]


# ---------------------------------------------------------------------------------------------------- source specs


def test_conversation_source_cannot_give_preference_pairs(tmp_path):
    with pytest.raises(SourceError, match=r"sharegpt\.jsonl is sharegpt data"):
        ingest(DATA / "sharegpt.jsonl", kind="preference", run_dir=tmp_path)


def test_file_of_unknown_format_is_a_source_error_naming_it(tmp_path):
    with pytest.raises(SourceError, match=r"cannot tell the format of .*unknown\.jsonl.*\?format=NAME"):
        ingest(DATA / "unknown.jsonl", run_dir=tmp_path)


def test_format_option_overrides_detection(tmp_path):
    """tatsu-lab/alpaca rows also hold the rendered prompt in `text`: detected as Alpaca, read as text on request."""
    path = DATA / "alpaca_text.jsonl"
    detected, _ = ingest(path, run_dir=tmp_path)
    assert {r["source"] for r in detected} == {"alpaca:alpaca_text.jsonl"}
    assert detected[0]["messages"][0] == user("Give three tips for staying healthy.")
    forced, _ = ingest(f"{path}?format=text", kind="text", run_dir=tmp_path)
    assert {r["source"] for r in forced} == {"text:alpaca_text.jsonl"}
    assert [r["drop_reason"] for r in forced] == [None, None]
    assert forced[1]["text"] == ("Below is an instruction that describes a task. Write a response that appropriately "
                                 "completes the request.\n\n### Instruction:\nWhat are the three primary colors?\n\n"
                                 "### Response:\nThe three primary colors are red, blue, and yellow.")
    with pytest.raises(SourceError, match=r"alpaca_text\.jsonl is text data"):
        ingest(f"{path}?format=text", kind="conversation", run_dir=tmp_path)
    with pytest.raises(SourceError, match="unknown format 'nope'"):
        ingest(f"{path}?format=nope", run_dir=tmp_path)


def test_max_rows_stops_after_that_many_kept_records(tmp_path):
    rows, _ = ingest(f"{DATA / 'sharegpt.jsonl'}?max_rows=2", run_dir=tmp_path)
    assert [locator(r) for r in rows] == ["sharegpt.jsonl:1", "sharegpt.jsonl:2"]  # the bad lines come later
    rows, _ = ingest(f"{DATA / 'hh_rlhf.jsonl'}?max_rows=3", run_dir=tmp_path)
    assert [(locator(r), r["drop_reason"] is None) for r in rows] == [
        ("hh_rlhf.jsonl:1", True), ("hh_rlhf.jsonl:2", True), ("hh_rlhf.jsonl:3", False), ("hh_rlhf.jsonl:4", False),
        ("hh_rlhf.jsonl:5", False), ("hh_rlhf.jsonl:6", True)]  # bad records before the cap still quarantined


def test_weight_keeps_a_deterministic_subset(tmp_path):
    path = tmp_path / "gsm8k_many.jsonl"
    lines = [json.dumps({"question": f"What is {n} + {n}?", "answer": f"{n} + {n} = {2 * n}\n#### {2 * n}"})
             for n in range(64)]
    path.write_text("\n".join(lines + ["{not json"]) + "\n")
    everything, _ = ingest(path, run_dir=tmp_path)
    first, ctx = ingest(f"{path}?weight=0.5", run_dir=tmp_path)
    second, _ = ingest(f"{path}?weight=0.5", run_dir=tmp_path)
    chosen = [r["id"] for r in first if r["drop_reason"] is None]
    assert chosen == [r["id"] for r in second if r["drop_reason"] is None]
    assert 16 <= len(chosen) <= 48
    assert set(chosen) < {r["id"] for r in everything if r["drop_reason"] is None}
    assert ctx.counters["not_sampled"] == 64 - len(chosen)
    assert [r["locator"] for r in first if r["drop_reason"] is not None] == ["gsm8k_many.jsonl:65"]
