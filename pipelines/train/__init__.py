"""Bundled trainers for exported datasets: `python -m pipelines.train sft EXPORT_DIR` (TRL, CPU by default)."""
