"""`python -m pipelines.eval MODEL [--baseline MODEL] [--suites ifbench,ifeval_dev,gsm8k,judged,prefs,tool_calls]
[--limit N] [--eval-dir DIR] [--judge MODEL] [--prefs-export DIR] [--tools-export DIR]`: evaluate a model (and a
baseline, on the same items) and write what it found.

Generation goes through the one teacher client at fixed, seeded greedy sampling, with the request cache in
`EVAL_DIR/requests.sqlite`: a rerun replays every answer (the same numbers, 0 requests) and a killed eval resumes
where it stopped. The eval directory is locked while an eval runs in it (a second one gets one `busy:` line).
Writes `EVAL_DIR/<suite>.json` (per item: what was asked, each model's output, the score and its verdict; the
summary with 95% bootstrap CIs and, with a baseline, the paired difference) and `EVAL_DIR/report.md`.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

from pipelines.cli import Parser, main_guard
from pipelines.core.errors import ConfigError
from pipelines.core.files import write_json, write_text
from pipelines.core.locks import DirLock
from pipelines.eval.lineage import decontaminate, training_exports, training_index
from pipelines.eval.models import Model, resolve
from pipelines.eval.stats import beyond, ci_text, mean_ci, paired_ci, rounded
from pipelines.eval.suites import SuiteContext, load_suite, names
from pipelines.teacher.weights import DEFAULT_JUDGE
from pipelines.train.card import record_eval

DEFAULT_SUITES = "ifbench,ifeval_dev,gsm8k"
SMALL_JUDGE = ("the embedded Qwen2.5-Coder-1.5B judge agrees 0.954 with graded good-vs-broken answer pairs and is "
               "at or below chance on hh-rlhf harmlessness labels (bench/judge_agreement.py): it tells broken "
               "answers from sound ones, not better ones by taste")


def make_parser() -> Parser:
    p = Parser(prog="pipelines.eval", description="Evaluate a model on suites, against a baseline.")
    p.add_argument("model", metavar="MODEL", help="a trained model dir, a .gguf file, an embedded model name, or "
                                                 "base_url=URL,model=NAME")
    p.add_argument("--baseline", default=None, metavar="MODEL", help="the model to compare with, on the same items")
    p.add_argument("--suites", default=None, help=f"comma-separated, of: {', '.join(names())} (default: "
                   f"{DEFAULT_SUITES}, and judged with --baseline)")
    p.add_argument("--limit", type=int, default=None, help="items per suite (default: each suite's own)")
    p.add_argument("--eval-dir", type=Path, default=None, help="where to write (default evals/MODEL[-vs-BASELINE])")
    p.add_argument("--judge", default=DEFAULT_JUDGE, metavar="MODEL", help="the judge of the judged suite")
    p.add_argument("--prefs-export", type=Path, default=None, metavar="DIR",
                   help="the prefs suite's export (an ultrafeedback-style export with test_prefs)")
    p.add_argument("--tools-export", type=Path, default=None, metavar="DIR",
                   help="the tool_calls suite's export (a tool_use export with test_sft)")
    p.add_argument("--cache", type=Path, default=None, metavar="FILE",
                   help="the request cache (default EVAL_DIR/requests.sqlite); evals sharing one replay each other's "
                        "answers of the same model to the same items")
    p.add_argument("--concurrency", type=int, default=4,
                   help="requests in flight per model (and embedded slots; 1 makes decoding batch-exact)")
    p.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    return p


def summarize(suite, rows: list[dict], baseline: Model | None) -> dict:
    scored = [r["score"] for r in rows if r.get("score") is not None]
    out = {"items": len(rows), "scored": len(scored), "score": rounded(mean_ci(scored)),
           "verdicts": dict(Counter(str(r.get("verdict")) for r in rows))}
    paired = [(r["score"], r["baseline_score"]) for r in rows
              if r.get("score") is not None and r.get("baseline_score") is not None]
    if baseline is not None and paired:
        out["baseline_score"] = rounded(mean_ci([b for _, b in paired]))
        out["difference"] = rounded(paired_ci([a for a, _ in paired], [b for _, b in paired]))
        out["beyond_ci"] = beyond(out["difference"])
    if hasattr(suite, "summary"):
        out.update(suite.summary(rows))
    return out


def report(model: Model, baseline: Model | None, judge: str | None, results: dict[str, dict]) -> str:
    lines = [f"# Evaluation of `{model.spec}`" + (f" against `{baseline.spec}`" if baseline else ""), "",
             "| suite | items | model (95% CI) | baseline (95% CI) | difference (paired 95% CI) | this run (s) "
             "| more |",
             "|---|---|---|---|---|---|---|"]
    for name, found in results.items():
        s = found["summary"]
        more = []
        if s.get("length_controlled"):
            more.append(f"length-controlled {ci_text(s['length_controlled'])}")
        more += [f"{what} {ci_text(ci)}" for what, ci in s.get("also", {}).items()]
        if s.get("order_agreement") is not None:
            more.append(f"judge's orders agree {s['order_agreement']:.2f}")
        more.append(", ".join(f"{k}: {v}" for k, v in sorted(s["verdicts"].items())))
        if s.get("decontamination", {}).get("removed"):
            more.append(f"{s['decontamination']['removed']} items removed: in the training data")
        diff = ci_text(s.get("difference")) + (" **beyond the CI**" if s.get("beyond_ci") else "")
        lines.append(f"| {name} | {s['scored']}/{s['items']} | {ci_text(s['score'])} | "
                     f"{ci_text(s.get('baseline_score'))} | "
                     f"{diff if s.get('difference') else '-'} | {found['seconds']:.0f} | {'; '.join(more)} |")
    lines += ["", *(f"- `{n}`: {found['about']}" for n, found in results.items())]
    if judge is not None:
        lines.append(f"- judge: `{judge}`" + (f"; {SMALL_JUDGE}" if judge == DEFAULT_JUDGE else ""))
    lines.append("- small models are noisy: read a difference by its CI, never by its point value")
    return "\n".join(lines) + "\n"


def evaluate(args) -> int:
    from pipelines.teacher.client import Teacher

    wanted = args.suites or DEFAULT_SUITES + (",judged" if args.baseline else "")
    suites = {name: load_suite(name) for name in (s.strip() for s in wanted.split(",")) if name}
    options = {"prefs_export": args.prefs_export, "tools_export": args.tools_export}
    if args.limit is not None and args.limit < 1:
        raise ConfigError("--limit must be at least 1")
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    model = resolve(args.model, log, args.concurrency)
    baseline = resolve(args.baseline, log, args.concurrency) if args.baseline else None
    judge = resolve(args.judge, log, args.concurrency) if "judged" in suites else None
    eval_dir = args.eval_dir or Path("evals") / (model.name + (f"-vs-{baseline.name}" if baseline else ""))
    if eval_dir.exists() and not eval_dir.is_dir():
        raise ConfigError(f"--eval-dir {eval_dir} is a file, not a directory")
    eval_dir.mkdir(parents=True, exist_ok=True)
    cache = args.cache or eval_dir / "requests.sqlite"
    with DirLock(eval_dir / ".lock", f"eval of {model.name} in {eval_dir}"):
        clients: dict[str, Teacher] = {}

        def client(m: Model, role: str) -> Teacher:
            if m.name not in clients:
                clients[m.name] = Teacher(m.config, cache, eval_dir / f"{m.name}.server.log",
                                          log=log, role=role)
            return clients[m.name]

        ctx = SuiteContext(model=model, baseline=baseline,
                           generate=lambda m, requests, desc: client(m, "teacher").chat_many(requests, desc),
                           judge=(lambda requests, desc: client(judge, "judge").chat_many(requests, desc))
                           if judge else None)
        results = {}
        exports, notes = [], []
        for m in (model, baseline):
            found, why = training_exports(m.checkpoint if m else None)
            exports, notes = exports + found, notes + why
        index = training_index(exports)
        try:
            for name, suite in suites.items():
                items = suite.items(args.limit or suite.DEFAULT_LIMIT, options)
                items, decontamination = decontaminate(items, [suite.prompt_of(i) for i in items], index)
                started = time.monotonic()
                rows = suite.run(items, ctx)
                found = {"suite": name, "about": suite.ABOUT, "model": model.spec,
                         "baseline": baseline and baseline.spec, "seconds": round(time.monotonic() - started, 1),
                         "judge": judge.spec if judge and name == "judged" else None,
                         "summary": {**summarize(suite, rows, baseline), "decontamination": decontamination,
                                     "lineage_notes": notes}, "items": rows}
                write_json(eval_dir / f"{name}.json", found)
                results[name] = found
                if model.checkpoint is not None:  # the model's card gets the result
                    record_eval(model.checkpoint, name, found["summary"], eval_dir.resolve(),
                                baseline.spec if baseline else None)
        finally:
            requests = sum(c.stats.get("requests", 0) for c in clients.values())
            for c in clients.values():
                c.close()
        text = report(model, baseline, judge.spec if judge else None, results)
        write_text(eval_dir / "report.md", text)
    print(text + f"\nthis run: {requests} requests (the rest from {cache})\n"
          f"items: {', '.join(str(eval_dir / f'{n}.json') for n in results)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return main_guard(lambda a: evaluate(make_parser().parse_args(a)), sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
