"""The dedup library: MinHash, LSH, ROUGE-L, the persistent near-duplicate index, diverse selection,
decontamination and dedup summaries, as functions over texts and tables; the stages in `pipelines.stages` call them.

It may import `schemas`, `connectors`, `pipelines.core`, `pipelines.data` and its peer layer `pipelines.teacher`
(tests/test_layers.py), never a stage, engine or recipe.
"""
