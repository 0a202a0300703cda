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


def one_line(exc_or_text, width: int = 300) -> str:
    """An exception (or text) as one short line: readers and torch put tables, tracebacks and
    whole state dicts in their messages."""
    text = " ".join(str(exc_or_text).split())
    if not text and isinstance(exc_or_text, BaseException):
        text = type(exc_or_text).__name__
    return text if len(text) <= width else text[: width - 3] + "..."


_PLAIN = {
    MemoryError: "not enough memory for this input",
    OverflowError: "a number is too large",
    UnicodeError: "text that is not valid UTF-8",
    RecursionError: "the input is nested too deeply",
    ZeroDivisionError: "a division by zero (is a size or count 0?)",
}


def user_message(exc: BaseException, width: int = 600) -> str:
    """One plain line for any exception, for the CLI's stderr and the app's st.error: a
    LcdashError's own message; for anything else what went wrong in words and the first line of
    its text, never a traceback or a bare 'OverflowError: ...'."""
    text = " ".join(str(exc).split())
    if isinstance(exc, LcdashError):
        out = text or type(exc).__name__
    else:
        what = next((v for k, v in _PLAIN.items() if isinstance(exc, k)), None)
        if what is None:
            what = "an unexpected problem"
        out = f"{what} ({text})" if text else what
    return out if len(out) <= width else out[: width - 3] + "..."
