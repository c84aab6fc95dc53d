import pyarrow as pa

from schemas import ARROW_SCHEMAS, check_conversation, conversation_id, json_schema


def test_json_and_arrow_schemas_name_the_same_fields():
    for name, arrow in ARROW_SCHEMAS.items():
        assert set(json_schema(name)["required"]) == set(arrow.names), name
        assert set(json_schema(name)["properties"]) == set(arrow.names), name
    message = json_schema("conversation")["$defs"]["message"]
    assert set(message["required"]) == {f.name for f in ARROW_SCHEMAS["conversation"].field("messages").type.value_type}


def conv(*turns, **extra):
    messages = [{"role": r, "content": c} for r, c in turns]
    return {"id": conversation_id(messages), "messages": messages, "source": "test", "meta": "{}", **extra}


def test_valid_conversations_pass():
    assert check_conversation(conv(("user", "Hi?"), ("assistant", "Hello."))) is None
    assert check_conversation(conv(("system", "Be brief."), ("user", "Hi?"), ("assistant", "Hello."))) is None


def test_invalid_conversations_name_the_problem():
    assert "alternate" in check_conversation(conv(("user", "a"), ("user", "b"), ("assistant", "c")))
    assert "end with an assistant" in check_conversation(conv(("user", "a"), ("assistant", "b"), ("user", "c")))
    assert "role" in check_conversation(conv(("user", "a"), ("robot", "b")))
    assert "content" in check_conversation(conv(("user", "a"), ("assistant", "   ")))
    assert "id" in check_conversation(conv(("user", "a"), ("assistant", "b"), id="not-a-hash"))


def test_conversation_id_is_stable_and_content_sensitive():
    a = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    assert conversation_id(a) == conversation_id([dict(m) for m in a])
    assert conversation_id(a) != conversation_id(a[:1] + [{"role": "assistant", "content": "z"}])
    assert len(conversation_id(a)) == 64 and isinstance(ARROW_SCHEMAS["conversation"], pa.Schema)


def test_the_fast_check_agrees_with_jsonschema():
    """`check_conversation` skips jsonschema for plainly valid records and asks it about one message at a time:
    on every variation below it must reach the verdict of a full jsonschema validation (its reason names the first
    bad message, where jsonschema's best match may name another)."""
    import random

    from schemas.validate import _plainly_valid, _schema_error

    contents = ["Hi", "", " ", "\x1c", "\u3000", "ok\u200b", "x" * 100_001, None, 7, "é"]
    roles = ["user", "assistant", "system", "tool", "robot", None]
    rng = random.Random(0)
    for _ in range(600):
        n = rng.choice([0, 1, 2, 3, 4, 257])
        messages = [{"role": rng.choice(roles[:2] * 6 + roles), "content": rng.choice(contents[:1] * 12 + contents)}
                    for _ in range(n)]
        if rng.random() < 0.05:
            messages.append("not a dict")
        record = {"id": "a" * 64 if rng.random() < 0.95 else "nope", "messages": messages,
                  "source": rng.choice(["s"] * 20 + ["", 3]), "meta": "{}"}
        full = _schema_error("conversation", record)
        assert _plainly_valid(record) == (full is None), record
        reason = check_conversation(record) or ""
        assert reason.startswith("schema: ") == (full is not None), (record, reason, full)
