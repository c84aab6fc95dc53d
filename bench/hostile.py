"""The hostile-user probes of issue 15, run against a checkout: what a user sees for each.

    python bench/hostile.py                   # this checkout
    python bench/hostile.py --repo /tmp/old   # another one (git worktree add /tmp/old <commit>), same venv

Each probe builds a small run in a temp dir through the real CLI (`python -m pipelines.build ...`, cwd = the
checkout, so its code is what runs) and reports one outcome: the exit code, what was exported and quarantined, or
the last line of stderr (a traceback shows as its exception). Prints a markdown table, probe -> outcome. Probes that
need root (a size-limited or read-only tmpfs) say so when run without it. Two concurrent builds on one run dir are
tested in tests/test_hostile.py (they need a bigger corpus and time).
"""

from __future__ import annotations

import argparse
import bz2
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import polars as pl
import zstandard

ROOT = Path(__file__).resolve().parent.parent


def chat(i: int, text: str | None = None) -> str:
    user = text or f"Question number {i}: what do rivers carry to the sea, and why does it matter for fish {i}?"
    return json.dumps({"messages": [{"role": "user", "content": user},
                                    {"role": "assistant", "content": f"Answer {i}: silt, nutrients and cold water."}]})


def lines(n: int, bad: dict[int, bytes] | None = None) -> bytes:
    """`n` JSONL lines, line k (1-based) replaced by `bad[k]`."""
    out = [chat(i).encode() for i in range(1, n + 1)]
    for k, line in (bad or {}).items():
        out[k - 1] = line
    return b"\n".join(out) + b"\n"


def build(repo: Path, work: Path, recipe: str, *sets: str, run: Path | None = None, timeout: int = 120,
          prefix=()) -> str:
    run = run or work / "run"
    cmd = [*prefix, sys.executable, "-m", "pipelines.build", recipe, "--run-dir", str(run)]
    for item in sets:
        cmd += ["--set", item]
    try:
        proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"hangs (killed after {timeout} s)"
    return outcome(proc, run)


def outcome(proc: subprocess.CompletedProcess, run: Path) -> str:
    err = [line for line in proc.stderr.splitlines() if line.strip()]
    if proc.returncode == 0:
        parts = sorted((run / "export" / "data").glob("*.parquet"))
        exported = sum(pl.read_parquet(p).height for p in parts)
        quarantine = pl.read_parquet(run / "quarantine.parquet")
        reasons = sorted(set(r.split(":")[0] for r in quarantine["reason"]))
        return f"exit 0, {exported} exported, {quarantine.height} quarantined" + (f" ({', '.join(reasons)})"
                                                                                 if reasons else "")
    last = err[-1] if err else ""
    blank = " (blank line before it)" if len(proc.stderr.rstrip("\n").split("\n")) > 1 and \
        not proc.stderr.rstrip("\n").split("\n")[-2].strip() else ""
    kind = "traceback: " if "Traceback" in proc.stderr else ""
    return f"exit {proc.returncode}, {kind}{last[:150]}{blank}"


def probes(repo: Path, work: Path) -> dict[str, str]:
    out = {}

    def fresh(name: str) -> Path:
        place = work / name
        place.mkdir()
        return place

    w = fresh("utf8")
    (w / "m.jsonl").write_bytes(lines(10, {5: chat(5, "bad \udcff").encode("utf-8", "surrogateescape")
                                           .replace(b"\\udcff", b"\xff\xfe")}))
    out["1. invalid UTF-8 in a messages JSONL (line 5 of 10)"] = build(repo, w, "dedup", f"sources={w / 'm.jsonl'}")
    w = fresh("deep")
    (w / "d.jsonl").write_bytes(lines(20, {7: b"[" * 100_000}))
    out["2. a line of '[' x 100000 inside a good file"] = build(repo, w, "dedup", f"sources={w / 'd.jsonl'}")
    w = fresh("deepvalue")
    (w / "d.jsonl").write_bytes(lines(20, {7: b'{"messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"}))
    out["2. closed nesting 100000 deep inside `messages`"] = build(repo, w, "dedup", f"sources={w / 'd.jsonl'}")
    w = fresh("cycle")
    (w / "d").mkdir()
    (w / "d" / "a.jsonl").write_bytes(lines(100))
    os.symlink(".", w / "d" / "self")
    out["3. `ln -s . d/self` beside a 100-row file"] = build(repo, w, "dedup", f"sources={w / 'd'}")
    os.symlink(".", w / "d" / "b")
    out["3. two such links"] = build(repo, w, "dedup", f"sources={w / 'd'}", run=w / "run2", timeout=60)
    w = fresh("selflink")
    os.symlink("loop", w / "loop")
    out["7. a symlink to itself as source"] = build(repo, w, "dedup", f"sources={w / 'loop'}")

    w = fresh("runfile")
    (w / "a.jsonl").write_bytes(lines(10))
    (w / "taken").write_text("x")
    out["5. --run-dir naming a file"] = build(repo, w, "dedup", f"sources={w / 'a.jsonl'}", run=w / "taken")
    out["5. index= naming a file"] = build(repo, w, "dedup", f"sources={w / 'a.jsonl'}", f"index={w / 'taken'}")
    out["5. seed=-1"] = build(repo, w, "dedup", f"sources={w / 'a.jsonl'}", "seed=-1", run=w / "r1")
    out["5. num_perm=100000000"] = build(repo, w, "dedup", f"sources={w / 'a.jsonl'}", "num_perm=100000000",
                                          run=w / "r2")
    locked = fresh("locked")
    locked.chmod(0o555)
    drop = ["setpriv", "--inh-caps=-dac_override,-dac_read_search",
            "--bounding-set=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
    out["5. a directory without write permission"] = build(repo, w, "dedup", f"sources={w / 'a.jsonl'}",
                                                           run=locked / "run", prefix=drop)
    if os.geteuid() == 0:
        ro = fresh("ro")
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True)
        try:
            out["5. a read-only filesystem"] = build(repo, w, "dedup", f"sources={w / 'a.jsonl'}", run=ro / "run")
        finally:
            subprocess.run(["umount", "-l", str(ro)], check=False)
        full = fresh("full")
        (w / "big.jsonl").write_bytes(lines(20_000))
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(full)], check=True)
        try:
            out["5. disk full (3 MB tmpfs)"] = build(repo, w, "dedup", f"sources={w / 'big.jsonl'}", run=full / "r")
            subprocess.run(["mount", "-o", "remount,size=512m", str(full)], check=True)
            out["5. ... rerun after freeing space"] = build(repo, w, "dedup", f"sources={w / 'big.jsonl'}",
                                                            run=full / "r")
        finally:
            subprocess.run(["umount", "-l", str(full)], check=False)
    else:
        out["5. a read-only filesystem / disk full"] = "not probed (needs root to mount a tmpfs)"

    for setting in ("bands=0", "rows=0", "decontamination_ngram=0", "decontamination_ngram=-3"):
        bench = w / "bench.jsonl"
        bench.write_text(json.dumps({"question": "what do rivers carry to the sea?", "answer": "silt"}) + "\n")
        out[f"6. {setting}"] = build(repo, w, "dedup", f"sources={w / 'a.jsonl'}", setting,
                                     f"benchmarks=b={bench}", run=w / f"r-{setting}")

    w = fresh("limits")
    turns = [{"role": r, "content": f"turn {k}"} for k in range(2500) for r in ("user", "assistant")]
    (w / "l.jsonl").write_bytes(lines(5, {2: json.dumps({"messages": turns}).encode(),
                                          4: chat(4, "x" * (30 << 20)).encode()}))
    out["7. 5,000 turns and a 30 MB content"] = build(repo, w, "dedup", f"sources={w / 'l.jsonl'}")
    reasons = pl.read_parquet(w / "run" / "quarantine.parquet")["reason"] \
        if (w / "run" / "quarantine.parquet").exists() else []
    out["7. ... their reasons"] = "; ".join(r[:60] for r in reasons) or "-"

    w = fresh("zst")
    data = lines(3000)
    (w / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(data)[: -2000])
    (w / "a.jsonl.bz2").write_bytes(bz2.compress(data)[: len(bz2.compress(data)) * 2 // 3])
    out["7. truncated .zst"] = build(repo, w, "dedup", f"sources={w / 'a.jsonl.zst'}", run=w / "rz")
    out["7. truncated .bz2"] = build(repo, w, "dedup", f"sources={w / 'a.jsonl.bz2'}", run=w / "rb")

    w = fresh("locator")
    (w / "a.jsonl").write_bytes(lines(10) + lines(2))
    build(repo, w, "dedup", f"sources={w / 'a.jsonl'}")
    quarantine = pl.read_parquet(w / "run" / "quarantine.parquet")
    out["7. locator of an exact duplicate"] = ", ".join(quarantine["locator"].to_list())

    w = fresh("secrets")
    key = "sk-proj-" + "Zq3" * 10
    (w / "a.jsonl").write_bytes(lines(4, {2: chat(2, f"my key is {key}").encode(),
                                          3: f'{{"messages": [{{"content": "{key}'.encode()}))
    build(repo, w, "dedup", f"sources={w / 'a.jsonl'}", "redact=chat_logs")
    leaks = sorted(str(p.relative_to(w / "run")) for p in (w / "run").rglob("*.parquet")
                   if key in pl.read_parquet(p).write_ndjson())
    out["7. redaction on: files of the run dir holding the key"] = ", ".join(leaks) or "none"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=ROOT, help="the checkout to probe (default: this one)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hostile-"))
    try:
        results = probes(args.repo.resolve(), work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"| probe | outcome ({args.repo}) |\n|---|---|")
    for probe, result in results.items():
        print(f"| {probe} | {result.replace('|', '/')} |")


if __name__ == "__main__":
    main()
