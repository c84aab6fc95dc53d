"""`python -m pipelines.experiment EXPERIMENT [--dir DIR] [--set STEP.KEY=VALUE ...] [--vary STEP.KEY=V1,V2 ...]
[--seeds N]`: run an experiment's steps (build -> train -> export -> eval), then its ablations.

The control is the experiment as written (with `--set`); each `--vary` value is one more variant, which changes that
one setting and reruns only the steps that depend on it (steps are shared by fingerprint: `pipelines.experiment.steps`).
Every variant trains with the same seeds (`--seeds N`: 0..N-1) and is evaluated on the same items. A variant whose
build exports no row to train on is reported, never trained. The directory is locked while an experiment runs in
it; a rerun skips finished steps and resumes the one that was stopped.

Writes `DIR/report.md` (each variant's score per suite with its 95% CI, its paired difference from the control,
the seed spread, every step's time and peak memory), `report.json` and `report.png` (the scores with their CIs).
"""

from __future__ import annotations

import sys
from pathlib import Path

from pipelines.cli import Parser, main_guard
from pipelines.core.errors import ConfigError, PipelineError
from pipelines.core.files import write_json, write_text
from pipelines.core.locks import DirLock
from pipelines.experiment import load_experiment
from pipelines.experiment.report import chart, markdown, summarize
from pipelines.experiment.steps import Eval, Train, fingerprint, needs, resolve, run_step

TRAIN_SPLITS = {"sft": "train_sft", "dpo": "train_prefs"}


def make_parser() -> Parser:
    p = Parser(prog="pipelines.experiment", description="Build, train and evaluate; compare variants with CIs.")
    p.add_argument("experiment", help="an experiment's name (pipelines/experiments/ or PIPELINES_EXPERIMENT_PATH)")
    p.add_argument("--dir", type=Path, default=None, help="where to run (default experiments/EXPERIMENT)")
    p.add_argument("--set", action="append", default=[], metavar="STEP.KEY=VALUE", help="change a step's setting")
    p.add_argument("--vary", action="append", default=[], metavar="STEP.KEY=V1,V2",
                   help="one variant per value of a step's setting, compared with the control")
    p.add_argument("--seeds", type=int, default=1, help="training seeds per variant (0..N-1; default 1)")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def parse_assignment(text: str, steps: dict, flag: str) -> tuple[str, str, str]:
    target, sep, value = text.partition("=")
    step, dot, key = target.partition(".")
    if not sep or not dot:
        raise ConfigError(f"{flag} {text!r}: write STEP.KEY=VALUE (steps: {', '.join(steps)})")
    if step not in steps:
        raise ConfigError(f"{flag} {text!r}: no step {step!r}; steps: {', '.join(steps)}")
    valid = steps[step].valid_keys()
    if key not in valid:
        raise ConfigError(f"{flag} {text!r}: step {step} has no setting {key!r}; valid keys: {', '.join(valid)}")
    return step, key, value


def train_rows(export: Path, kind: str) -> int:
    import pyarrow.parquet as pq

    files = sorted((export / "data").glob(f"{TRAIN_SPLITS[kind]}-*.parquet"))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def run_variant(experiment, root: Path, overrides: dict, seed: int, variant: str, log, steps_log: list) -> dict:
    """Run every step for one variant and seed; returns {eval step name: eval dir}."""
    products, fingerprints, evals = {}, {}, {}
    for step in experiment.STEPS:
        values = {**step.inputs(), **overrides.get(step.name, {})}
        upstream = {n: fingerprints[n] for n in needs(values) if n in fingerprints}  # --set/--vary ones too
        seeded = isinstance(step, Train)  # the data is what is compared: builds keep their own seeds
        fp = fingerprint(step, values, upstream, seed if seeded else None)
        step_dir = root / "steps" / f"{step.name}-{fp[:12]}"
        resolved = {k: resolve(v, products) for k, v in values.items() if v is not None}
        if isinstance(step, Train) and (rows := train_rows(Path(resolved["data"]), step.kind)) == 0:
            raise PipelineError(f"step {step.name}: {resolved['data']} has no {TRAIN_SPLITS[step.kind]} rows to train "
                                "on (the build exported none)")
        record = run_step(step, step_dir, resolved, seed, log)
        steps_log.append({"variant": variant, "seed": seed, "step": step.name, "dir": str(step_dir.relative_to(root)),
                          "seconds": record.get("seconds"), "peak_rss_mb": record.get("peak_rss_mb"),
                          **({"rows": rows} if isinstance(step, Train) else {})})
        products[step.name], fingerprints[step.name] = step.product(step_dir), fp
        if isinstance(step, Eval):
            evals[step.name] = str(step_dir)
    return evals


def experiment(args) -> int:
    module = load_experiment(args.experiment)
    steps = {s.name: s for s in module.STEPS}
    if args.seeds < 1:
        raise ConfigError("--seeds must be at least 1")
    control: dict[str, dict] = {}
    for text in args.set:
        step, key, value = parse_assignment(text, steps, "--set")
        control.setdefault(step, {})[key] = value
    variants = {"control": control}
    for text in args.vary:
        step, key, values = parse_assignment(text, steps, "--vary")
        for value in filter(None, values.split(",")):
            variants[f"{step}.{key}={value}"] = {**control, step: {**control.get(step, {}), key: value}}
    root = args.dir or Path("experiments") / args.experiment
    root.mkdir(parents=True, exist_ok=True)
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    with DirLock(root / ".lock", f"experiment {args.experiment} in {root}"):
        runs, failed, steps_log = {}, {}, []
        for variant, overrides in variants.items():
            runs[variant] = []
            for seed in range(args.seeds):
                log(f"== {variant}, seed {seed}")
                try:
                    runs[variant].append(run_variant(module, root, overrides, seed, variant, log, steps_log))
                except PipelineError as exc:
                    if variant == "control":
                        raise
                    failed[variant] = str(exc)
                    break
        suites = {s.name: s.suites if "suites" not in control.get(s.name, {}) else
                  tuple(control[s.name]["suites"].split(",")) for s in module.STEPS if isinstance(s, Eval)}
        rows = summarize(runs, suites)
        write_json(root / "report.json", {"experiment": args.experiment, "seeds": args.seeds, "variants": variants,
                                          "rows": rows, "failed": failed, "steps": steps_log})
        chart(rows, root / "report.png")
        text = markdown(args.experiment, module.ABOUT, rows, failed, steps_log)
        write_text(root / "report.md", text)
    print(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_guard(lambda a: experiment(make_parser().parse_args(a)), sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
