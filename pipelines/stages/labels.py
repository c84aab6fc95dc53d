"""What the export stages do with human labels (`labels.sqlite`): a person's decision overrides the AI's.

- A conversation labelled `drop` leaves the export as `human: dropped (<note>)`; `keep` changes nothing. A row
  label on a preference run is about a pair (its `id`): a dropped pair leaves the export the same way.
- A pair labelled `rejected_better` is swapped (answers, scores, models); `tie` and `both_bad` leave the export as
  `human: tie` / `human: both bad`; `chosen_better` confirms the judge.

The counts go into the export stage's summary (`review`), which the card and the review app show: rows and pairs
reviewed, what changed, and how often people agreed with the AI judge's ordering.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from pipelines.core.stage import DROP, Context, with_drops
from pipelines.core.labels import digest, latest, pair_key

SWAPPED = (("chosen", "rejected"), ("score_chosen", "score_rejected"), ("chosen_model", "rejected_model"))
PAIR_DROPS = {"tie": "human: tie", "both_bad": "human: both bad"}


class ReadsLabels:
    """Mixed into an export stage that applies the human labels: their digest is in its fingerprint (a changed
    label exports again) and in its `_SUCCESS.json` (what this export applied, for the review tool)."""

    def identity(self, ctx: Context) -> dict:
        out = super().identity(ctx)
        if labels := digest(ctx.run_dir):
            out["labels"] = labels
        return out

    def records(self, ctx: Context) -> dict:
        return {**super().records(ctx), "labels": digest(ctx.run_dir)}


def row_labels(run_dir: Path) -> dict:
    """The decisions on conversations that count (read once per export, not once per batch)."""
    return latest(run_dir, "row")


def label_rows(data: pl.DataFrame, decided: dict) -> tuple[pl.DataFrame, dict]:
    """Rows labelled `drop` in `decided` (`row_labels`) get their drop reason; returns the rows and the review
    summary (empty: no labels)."""
    if not decided or "id" not in data.columns or not data.height:
        return data, {}
    labels = [decided.get(("row", i)) for i in data["id"].to_list()]
    reasons = [None if x is None or x.label != "drop" else f"human: dropped ({x.note})" if x.note
               else "human: dropped" for x in labels]
    summary = {"rows_reviewed": sum(x is not None for x in labels), "rows_dropped": sum(
        x is not None and x.label == "drop" for x in labels)}
    return with_drops(data, reasons), summary


def label_pairs(data: pl.DataFrame, run_dir: Path) -> tuple[pl.DataFrame, dict]:
    """Pairs dropped by a row label (the review app's rows pages: keep / drop by the pair's `id`), then swapped or
    dropped by their latest pair label; the summary counts both, and agreement with the judge."""
    data, by_row = label_rows(data, row_labels(run_dir))
    rows_review = {f"pair_{k}": v for k, v in by_row.items()}  # pair_rows_reviewed, pair_rows_dropped
    decided = latest(run_dir, "pair")
    if not decided or not data.height:
        return data, rows_review
    keys = [pair_key(p, c, r) for p, c, r in zip(data["prompt_id"], data["chosen"].to_list(),
                                                  data["rejected"].to_list())]
    labels = [None if (x := decided.get(("pair", k))) is None else x.label for k in keys]
    swap = pl.Series([label == "rejected_better" for label in labels])
    data = data.with_columns(
        *(pl.when(swap).then(pl.col(b)).otherwise(pl.col(a)).alias(a) for a, b in SWAPPED if a in data.columns),
        *(pl.when(swap).then(pl.col(a)).otherwise(pl.col(b)).alias(b) for a, b in SWAPPED if a in data.columns))
    if "messages" in data.columns:
        data = data.with_columns(pl.col("chosen").alias("messages"))
    dropped = data[DROP].to_list() if DROP in data.columns else [None] * data.height
    data = with_drops(data, [row or PAIR_DROPS.get(label) for row, label in zip(dropped, labels)])
    agree, disagree = labels.count("chosen_better"), labels.count("rejected_better")
    summary = {**rows_review, "pairs_reviewed": sum(label is not None for label in labels), "pairs_agreeing": agree,
               "pairs_swapped": disagree, "pairs_tied": labels.count("tie"), "pairs_both_bad": labels.count("both_bad"),
               "agreement": round(agree / (agree + disagree), 3) if agree + disagree else None}
    return data, summary


def markdown(review: dict) -> str:
    """The card's section on human review (empty when nobody labelled)."""
    if not review:
        return ""
    lines = ["## Human review", ""]
    if "rows_reviewed" in review:
        lines.append(f"- {review['rows_reviewed']} conversations reviewed in `python -m pipelines.review`; "
                     f"{review['rows_dropped']} dropped by a reviewer (`human: dropped`).")
    if "pair_rows_reviewed" in review:
        lines.append(f"- {review['pair_rows_reviewed']} preference pairs reviewed on the rows pages; "
                     f"{review['pair_rows_dropped']} dropped by a reviewer (`human: dropped`).")
    if "pairs_reviewed" in review:
        agreement = "-" if review["agreement"] is None else f"{review['agreement']:.3f}"
        lines.append(f"- {review['pairs_reviewed']} preference pairs reviewed: people agreed with the AI judge's "
                     f"ordering on {review['pairs_agreeing']} and swapped {review['pairs_swapped']} (agreement "
                     f"{agreement}); {review['pairs_tied']} dropped as `human: tie`, {review['pairs_both_bad']} as "
                     f"`human: both bad`.")
    return "\n".join(lines) + "\n"
