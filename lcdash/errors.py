"""Exceptions that carry a message meant for the user (CLI stderr, app st.error)."""


class LcdashError(Exception):
    """Base class: the message names the problem (file, column, row) in plain words."""


class ValidationError(LcdashError):
    """Input data cannot be ingested as given."""


class SQLSandboxError(LcdashError):
    """A user SQL query was refused (writes, file/network access) or timed out."""


class ModelError(LcdashError):
    """A model or checkpoint cannot be loaded, converted or run."""


class JobError(LcdashError):
    """A background job failed, was cancelled, or cannot be started."""
