"""python -m pipelines.judge calibrate --labels SOURCE [--judges J1,J2] [--modes pointwise,pairwise] [--target 0.8]

SOURCE: a run dir with the review app's labels, a human-labelled preference export, or a file ingest reads as
preferences (hh-rlhf JSONL). A judge: an embedded model (`qwen2.5-coder-1.5b`, `smollm2-135m`) or an endpoint
`URL?model=NAME[&key_env=VAR]`. Writes to --out (default `calibration/`): `report.md` (the table and the choice),
`reliability.png`, one `<judge>-<mode>.json` per judge and mode, and `calibration.json`, the chosen one, for a
recipe's `judge.calibration`. Answers are cached in `--out/requests.sqlite`: a rerun after more labels asks only about
new pairs.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from pipelines.core.errors import PipelineError
from pipelines.stages.judge import MODES


def judge_config(spec: str, concurrency: int):
    from pipelines.teacher.config import TeacherConfig
    from pipelines.teacher.server import EmbeddedConfig

    if spec.startswith(("http://", "https://")):
        url = urlparse(spec)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if "model" not in query:
            raise PipelineError(f"judge {spec}: name the model (URL?model=NAME)")
        return TeacherConfig(base_url=url._replace(query="").geturl(), model=query["model"],
                             api_key_env=query.get("key_env", "OPENAI_API_KEY"), max_concurrency=concurrency,
                             reasks=1)
    return TeacherConfig(max_concurrency=concurrency, reasks=1, embedded=EmbeddedConfig(model=spec, slots=concurrency))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.judge", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cal = commands.add_parser("calibrate", help="measure judges against people's labels and fit a calibration")
    cal.add_argument("--labels", required=True, help="run dir (review labels), preference export dir, or file")
    cal.add_argument("--judges", default="qwen2.5-coder-1.5b", help="embedded models or URL?model=NAME, comma-separated")
    cal.add_argument("--modes", default="pairwise", help=f"of {', '.join(MODES)}, comma-separated")
    cal.add_argument("--limit", type=int, default=0, help="pairs read at most (0: all)")
    cal.add_argument("--orderings", type=int, default=2, help="orders each pair is judged in (position bias)")
    cal.add_argument("--target", type=float, default=0.8, help="agreement the chosen judge must reach")
    cal.add_argument("--concurrency", type=int, default=4)
    cal.add_argument("--out", default="calibration", help="folder for the report and the calibration files")
    args = parser.parse_args(argv)
    from pipelines.core.locks import LOCKED, Locked

    try:
        return calibrate_command(args)
    except Locked as busy:
        print(f"busy: {busy}", file=sys.stderr)
        return LOCKED
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def calibrate_command(args) -> int:
    from pipelines.core.locks import DirLock
    from pipelines.judge.calibrate import calibrate, choose, reliability_picture, table
    from pipelines.judge.labelled import labelled_pairs
    from pipelines.teacher.client import Teacher

    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if bad := [m for m in modes if m not in MODES]:
        raise PipelineError(f"--modes {','.join(bad)}: expected {', '.join(MODES)}")
    if not 0 < args.target <= 1:
        raise PipelineError(f"--target {args.target}: a share in (0, 1]")
    pairs, labels = labelled_pairs(args.labels, args.limit or None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with DirLock(out / ".lock", "calibration in this folder"):
        judges = {}
        try:
            for spec in (s.strip() for s in args.judges.split(",") if s.strip()):
                config = judge_config(spec, args.concurrency)
                name = re.sub(r"[^A-Za-z0-9_.-]+", "_", config.model if config.base_url else spec)
                judges[name] = (config, Teacher(config, out / "requests.sqlite", out / f"{name}.log",
                                                log=lambda m: print(m, file=sys.stderr), role="judge"))
            found = calibrate(judges, modes, pairs, labels, args.orderings,
                              log=lambda m: print(m, file=sys.stderr))
        finally:
            for _, teacher in judges.values():
                teacher.close()
        for calibration, name in zip(found, [n for n in judges for _ in modes]):
            calibration.save(out / f"{name}-{calibration.judge['mode']}.json")
        pick, line = choose(found, args.target)
        chosen = out / "calibration.json"
        if pick is not None:
            pick.save(chosen)
        else:
            chosen.unlink(missing_ok=True)
        reliability_picture(found, out / "reliability.png")
        left_out = labels.get("left_out") or {}
        report = (f"# Judge calibration\n\nLabels: {labels['source']} ({labels['kind']}), {labels['pairs']} pairs"
                  + (f", left out: {left_out}" if left_out else "") + f", digest {labels['digest']}.\n\n"
                  f"{table(found)}\n\n{line}\n\n![reliability](reliability.png)\n")
        (out / "report.md").write_text(report)
    print(table(found))
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
