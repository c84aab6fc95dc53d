"""Shipped experiments (`python -m pipelines.experiment NAME`): one module each, defining ABOUT and STEPS."""
