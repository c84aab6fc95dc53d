"""User-facing errors: each message says what is wrong and what to do. The CLI prints it on one line, exit 2."""


class PipelineError(Exception):
    """Base class for errors the user can fix; never shown with a traceback unless --debug."""


class ConfigError(PipelineError):
    """A flag, recipe name or config key is wrong."""


class SourceError(PipelineError):
    """An input file is missing or cannot be read at all."""


class TeacherError(PipelineError):
    """The teacher endpoint cannot be reached, started or authenticated."""


class SchemaError(PipelineError):
    """Data does not have the columns or types a stage requires."""
