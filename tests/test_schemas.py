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
