from pipelines.prompts import ultrachat as P


def test_parse_user_turn_extracts_the_question():
    assert P.parse_user_turn("I'm glad you asked. Could you give an example?\nMore text") == "Could you give an example?"
    assert P.parse_user_turn('A curious person might ask: "Why is the sky blue?"') == "Why is the sky blue?"
    assert P.parse_user_turn("User: How do tides work?") == "How do tides work?"
    assert P.parse_user_turn("Please write a poem about rain.") == "Please write a poem about rain."


def test_user_turn_guards():
    dialogue = [{"role": "user", "content": "How do volcanoes form?"},
                {"role": "assistant", "content": "Magma rises through the crust and erupts at volcanoes."}]
    assert P.check_user_turn("What makes magma rise through the crust?", dialogue) is None
    assert P.check_user_turn("Magma is molten rock that erupts.", dialogue).startswith("not_a_question")
    assert P.check_user_turn("How do volcanoes form?", dialogue).startswith("repeated_turn")
    assert P.check_user_turn("Is it possible to bake bread quickly?", dialogue).startswith("off_topic")
    assert P.check_user_turn("", dialogue).startswith("empty_turn")
    # the simulator's own words, as a small model sometimes returns them (1 of 39 exported dialogues once)
    assert P.check_user_turn("Write the user's next question.", dialogue).startswith("prompt_echo")
    assert P.check_user_turn("You only ask one short follow-up question about what the assistant said.",
                             dialogue).startswith("prompt_echo")


def test_assistant_turn_guards():
    assert P.check_assistant_turn("As an AI, I cannot have opinions on that.", []).startswith("refusal")
    assert P.check_assistant_turn("Volcanoes form where magma rises.", []) is None
    earlier = [{"role": "assistant", "content": "Volcanoes form where magma rises."}]
    assert P.check_assistant_turn("Volcanoes form where magma rises!", earlier).startswith("repeated_turn")


def test_truncated_answer_is_trimmed_to_a_sentence():
    text = "First sentence is complete. Second sentence is also complete. Third is cut mid"
    assert P.parse_assistant_turn(text, "length") == "First sentence is complete. Second sentence is also complete."
    assert P.parse_assistant_turn(text, "stop") == text


def test_materials_opening_carries_the_passage():
    turn = P.opening_turn("materials", "Tides follow the Moon.", "Why do tides follow the Moon?")
    assert turn.startswith("Tides follow the Moon.") and turn.endswith("?")
    assert P.opening_turn("world", "tides", "Why?") == "Why?"


def test_exclamations_are_not_requests_and_loops_are_caught():
    assert not P.is_question_or_request('What a great opportunity. A message for runners: "Run on')
    assert P.is_question_or_request("Write a haiku about autumn rain.")
    assert P.is_question_or_request("What is a haiku?")
    looping = "A poem of memory,\n" + "A tale of laughter and tears,\n" * 4
    assert P.check_assistant_turn(looping, []).startswith("repeated_turn")
    assert not P.is_looping("Rain falls. The river rises. The town waits for the sun.")


def test_user_turn_that_echoes_the_assistant_is_a_repeat():
    dialogue = [{"role": "user", "content": "Tell a runner to enjoy the moment."},
                {"role": "assistant", "content": "Let's create a marathon with a twist, where the runner forgets "
                                                 "the race and enjoys the moment. What do you have?"}]
    echo = "How about a marathon with a twist, where the runner forgets the race and enjoys the moment?"
    assert P.check_user_turn(echo, dialogue).startswith("repeated_turn")
    assert P.check_user_turn("Why would a runner forget the race during a marathon?", dialogue) is None
