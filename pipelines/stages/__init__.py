"""Stages, one kind per module. Each module opens with `requires -> provides`."""
