"""What dedup did in a run, for the report and the card, from the stages' summaries (`Stage.summary`).

`sections(rows)` gathers the summaries of a run's stages (the runner's rows, one per stage of the recipe as it is
now, so a stage the config no longer runs reports nothing) as `{section: {"stage": ..., **values}}`;
`markdown(sections)` writes the card's dedup section: near-duplicates, decontamination, cross-split leakage.
"""

from __future__ import annotations


def sections(rows: list[dict]) -> dict:
    return {name: {"stage": row["stage"], **values} for row in rows
            for name, values in (row.get("summary") or {}).items()}


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(found: dict) -> str:
    """A card section; says so when the run did no dedup."""
    lines = []
    if near := found.get("near"):
        probs = ", ".join(f"{_fmt(p)} at J={j}" for j, p in near["detection_probability"].items())
        planted = near["planted"]
        lines += [
            f"- Near-duplicates (MinHash LSH on the {near['compare']}, word {near['ngram']}-grams, "
            f"{near['num_perm']} permutations, {near['bands']} bands x {near['rows']} rows, pairs verified at "
            f"estimated Jaccard >= {near['threshold']}): {near['pairs']} pairs, {near['clusters']} clusters, "
            f"{near['dropped']} rows dropped; {near['indexed_before']} rows were in the persistent index before.",
            f"- Theoretical chance a pair becomes a candidate: {probs}.",
            f"- Measured recall on {planted['pairs']} planted edited copies of this run's texts: "
            f"{_fmt(planted.get('recall_at_0.8'))} at true Jaccard >= 0.8 ({planted.get('pairs_at_0.8', 0)} pairs), "
            f"{_fmt(planted.get('recall_at_0.9'))} at >= 0.9 ({planted.get('pairs_at_0.9', 0)} pairs).",
        ]
    if decon := found.get("decontamination"):
        dropped = ", ".join(f"{k}: {v}" for k, v in decon.get("dropped", {}).items()) or "none"
        lines.append(f"- Decontamination ({decon['ngram']}-gram overlap with "
                     + ", ".join(f"{k} ({n} prompts, sha256 {decon['sha256'][k][:12]})"
                                 for k, n in decon["prompts"].items()) + f"): rows dropped {dropped}.")
    if leak := found.get("leakage"):
        lines.append(f"- Cross-split leakage check: {leak['pairs_across']} near-duplicate pairs straddled train and "
                     f"test; {leak['moved']} test rows moved to train; {leak['after']} remain.")
    return "\n".join(lines) or "- No deduplication in this recipe."
