"""Judges measured against people: `python -m pipelines.judge calibrate` (`calibrate.py`) reads labelled pairs
(`labelled.py`), rates them with each judge and mode, and writes the calibration a recipe can use
(`pipelines.core.calibration`)."""
