"""Errors a user can fix in what they give the connectors: a bad source spec, an unreadable input file.

`pipelines.core.errors` builds on these (its `PipelineError` is `UserError`), so the CLI prints them on one line.
"""

from __future__ import annotations


class UserError(Exception):
    """Base class for errors the user can fix; never shown with a traceback unless --debug."""


class ConfigError(UserError):
    """A flag, recipe name, config key or source spec is wrong."""


class SourceError(UserError):
    """An input file is missing or cannot be read at all."""
