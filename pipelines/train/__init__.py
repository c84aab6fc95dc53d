"""Bundled trainers for exported datasets: `python -m pipelines.train {sft,dpo} EXPORT_DIR` (TRL; CPU unless CUDA).

options.py (the dataclasses the CLI is made of), common.py (shared steps), sft.py, dpo.py, metrics.py (preferences).
"""
