"""The steps of an experiment: build a dataset, train on it, export a model to GGUF, evaluate it.

Each step is one of the project's own commands, run as a child process in a directory of its own under
`EXPERIMENT_DIR/steps/`, named by the step and a fingerprint of what it depends on (its settings, the fingerprints
of the steps it reads, the seed where it uses one). Variants whose step is the same share that directory; a finished
step leaves `_DONE.json` (fingerprint, seconds, peak memory) and is skipped on a rerun; a killed step is run again,
and the command resumes inside it (builds and evals from their checkpoints and caches; training restarts).

A setting's value may name another step's output: `{STEP}` is its directory's product (a build's export, a
trained model, an exported GGUF), so `teacher.embedded.model={sft_gguf}` makes a build sample from a trained model.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from pipelines.core.errors import ConfigError, PipelineError
from pipelines.core.files import write_json
from pipelines.core.processes import die_with_parent

REFERENCE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Step:
    name: str
    settings: dict = field(default_factory=dict)  # KEY -> value: what --set / --vary change

    def inputs(self) -> dict:
        return dict(self.settings)

    def product(self, step_dir: Path) -> Path:
        return step_dir

    def valid_keys(self) -> list[str]:
        return []


@dataclass(frozen=True)
class Build(Step):
    recipe: str = "ultrachat"

    def inputs(self) -> dict:
        return {"recipe": self.recipe, **self.settings}

    def product(self, step_dir: Path) -> Path:
        return step_dir / "export"

    def valid_keys(self) -> list[str]:
        from pipelines.core.config import flat_keys
        from pipelines.recipes import load_recipe

        return sorted(flat_keys(load_recipe(self.recipe).config()))

    def command(self, step_dir: Path, values: dict, seed: int) -> list[str]:
        sets = [a for k, v in values.items() if k != "recipe" for a in ("--set", f"{k}={_text(v)}")]
        return ["pipelines.build", self.recipe, "--run-dir", str(step_dir), *sets]


@dataclass(frozen=True)
class Train(Step):
    kind: str = "sft"  # sft or dpo
    data: str = ""  # the build step whose export it trains on
    model: str | None = None  # a train step to start from (None: the embedded SmolLM2-135M)

    def inputs(self) -> dict:
        return {"kind": self.kind, "data": "{" + self.data + "}",
                **({"model": "{" + self.model + "}"} if self.model else {}), **self.settings}

    def product(self, step_dir: Path) -> Path:
        return step_dir / "model"

    def valid_keys(self) -> list[str]:
        import dataclasses

        from pipelines.train.options import DPOOptions, SFTOptions

        options = SFTOptions if self.kind == "sft" else DPOOptions
        return sorted(f.name for f in dataclasses.fields(options) if f.name not in ("export_dir", "model",
                                                                                    "output_dir", "seed"))

    def command(self, step_dir: Path, values: dict, seed: int) -> list[str]:
        flags = []
        for key, value in values.items():
            if key in ("kind", "data", "model"):
                continue
            if isinstance(value, str) and value.lower() in ("true", "false"):  # as `--set sft.lora=false` gives it
                value = value.lower() == "true"
            flag = "--" + key.replace("_", "-")
            flags += [flag] if value is True else ["--no-" + flag[2:]] if value is False else [flag, _text(value)]
        return ["pipelines.train", self.kind, values["data"], *(["--model", values["model"]] if "model" in values
                                                               else []),
                "--output-dir", str(self.product(step_dir)), "--seed", str(seed), *flags]


@dataclass(frozen=True)
class Export(Step):
    model: str = ""
    quant: str = "q8_0"

    def inputs(self) -> dict:
        return {"model": "{" + self.model + "}", "quant": self.quant, **self.settings}

    def product(self, step_dir: Path) -> Path:
        return Path(json.loads((step_dir / "_DONE.json").read_text())["gguf"])

    def command(self, step_dir: Path, values: dict, seed: int) -> list[str]:
        return ["pipelines.train", "export", values["model"], "--quant", values["quant"]]


@dataclass(frozen=True)
class Eval(Step):
    model: str = ""  # a train step's name, or a model spec: `base:smollm2-135m` (its checkpoint, served as q8_0)
    baseline: str | None = None
    suites: tuple[str, ...] = ("ifeval_dev",)

    def inputs(self) -> dict:
        ref = lambda m: "{" + m + "}" if m and m.isidentifier() else m  # noqa: E731 - a step's name, or a spec
        return {"model": ref(self.model), "baseline": ref(self.baseline), "suites": ",".join(self.suites),
                **self.settings}

    def valid_keys(self) -> list[str]:
        return ["limit", "suites", "concurrency", "judge", "prefs_export"]

    def command(self, step_dir: Path, values: dict, seed: int) -> list[str]:
        return ["pipelines.eval", _model(values["model"]), *(["--baseline", _model(values["baseline"])]
                                                             if values.get("baseline") else []),
                "--suites", values["suites"], "--eval-dir", str(step_dir),
                "--cache", str(step_dir.parent.parent / "requests.sqlite"),  # a baseline is answered once
                *(a for k in ("limit", "concurrency", "judge", "prefs_export") if k in values
                  for a in ("--" + k.replace("_", "-"), str(values[k])))]


def needs(values: dict) -> list[str]:
    """The steps whose products a step's settings name (`{STEP}`)."""
    return [m for v in values.values() for m in REFERENCE.findall(str(v))]


def _model(value: str) -> str:
    """`base:NAME` is an embedded model's transformers checkpoint, served the way trained models are (q8_0)."""
    if value.startswith("base:"):
        from pipelines.teacher.weights import checkpoint_dir

        return str(checkpoint_dir(value[5:]))
    return value


def _text(value) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


def fingerprint(step: Step, values: dict, upstream: dict[str, str], seed: int | None) -> str:
    payload = {"type": type(step).__name__, **asdict(step), "values": values, "upstream": upstream, "seed": seed}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def run_step(step: Step, step_dir: Path, values: dict, seed: int, log) -> dict:
    """Run the step's command unless `_DONE.json` says it finished with this fingerprint; return what it recorded."""
    done = step_dir / "_DONE.json"
    if done.is_file():
        return json.loads(done.read_text())
    step_dir.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", *step.command(step_dir, values, seed)]
    log(f"{step.name}: {' '.join(argv[2:])}")
    started = time.monotonic()
    with open(step_dir / "step.log", "a") as out:
        # killed with us, even by SIGKILL: a rerun must not find the step's last command still writing in its dir
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:
            os.killpg(proc.pid, signal.SIGTERM)  # the step's command and its servers stop with us
            proc.wait()
            raise
    code = os.waitstatus_to_exitcode(status)
    if code == -signal.SIGKILL and not isinstance(step, Eval):  # the kernel's OOM killer, most likely
        raise PipelineError(f"step {step.name} was killed (SIGKILL: out of memory?); lower its memory with --set "
                            f"{step.name}.batch_size=... or {step.name}.max_length=..., then rerun to resume"
                            if isinstance(step, Train) else f"step {step.name} was killed (SIGKILL); rerun to resume")
    if code != 0:
        tail = [line for line in (step_dir / "step.log").read_text(errors="replace").splitlines() if line.strip()]
        raise PipelineError(f"step {step.name} failed (exit {code}): {tail[-1] if tail else 'no output'} "
                            f"(log: {step_dir / 'step.log'}); rerun the experiment to resume")
    record = {"step": step.name, "command": argv[2:], "seconds": round(time.monotonic() - started, 1),
              "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}  # the command's own (not the servers it starts)
    if isinstance(step, Export):
        record["gguf"] = str(Path(values["model"]) / "gguf" / f"model-{values['quant']}.gguf")
    write_json(done, record)
    return record


def resolve(value, products: dict[str, Path]):
    """`{STEP}` in a setting's value -> that step's product."""
    if not isinstance(value, str):
        return value

    def sub(match):
        if match.group(1) not in products:
            raise ConfigError(f"{value!r} names step {match.group(1)!r}, which does not come before it")
        return str(products[match.group(1)])

    return REFERENCE.sub(sub, value)
