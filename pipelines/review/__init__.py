"""Look at a run and correct it: `python -m pipelines.review RUN_DIR` (see `__main__`), a local web app over the
run's Parquet files whose human labels (`pipelines.core.labels`) the export stages apply."""
