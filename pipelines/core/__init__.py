"""The core layer: the stage and recipe contracts, the runner, configs, errors, locks, files and progress.

It may import `schemas`, `connectors` and `pipelines.data` (the layer below and beside it, tests/test_layers.py), and
knows no stage, teacher or recipe by name: they plug into the contracts defined here.
"""
