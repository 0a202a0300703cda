"""JSON helpers every layer shares: the encoder for numpy values and datetimes, atomic writes, and
readers for files anyone may have written.

A leaf module (it imports nothing from lcdash but `errors`), so that the store, the job engine and
the worker processes can all use it without importing each other.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import datetime
from functools import partial
from pathlib import Path

from lcdash.errors import ModelError, one_line


def json_default(obj, fallback: Callable | None = None):
    """numpy scalars / arrays and datetimes, as results and metrics often hold them; any other object
    goes through `fallback`, or is a TypeError without one."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, datetime):
        return obj.isoformat()
    if fallback is not None:
        return fallback(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def to_json(obj, fallback: Callable | None = None) -> str | None:
    """JSON text for a store JSON column (None stays None: SQL NULL), encoded with json_default."""
    return None if obj is None else json.dumps(obj, default=partial(json_default, fallback=fallback))


def write_json_atomic(path: Path, obj) -> None:
    """Write JSON so that a reader never sees a half-written file (write a temp file, then rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, default=json_default))
    os.replace(tmp, path)


def read_json(path: Path):
    """The parsed file, or None when it is absent or unreadable (a crash mid-write leaves no file)."""
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, json.JSONDecodeError, OSError):
        return None


def read_json_object(path: Path, name: str) -> dict:
    """A JSON object from a file anyone may have written (an encoder's config.json, an official
    archive's conf.json); anything else is a one-line ModelError naming `name`."""
    try:
        obj = json.loads(Path(path).read_text(errors="replace"))
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ModelError(f"{name} is not valid JSON: {one_line(exc)}") from exc
    if not isinstance(obj, dict):
        raise ModelError(f"{name} must hold a JSON object, not {type(obj).__name__}")
    return obj


def read_encoder_config(model_dir: str | os.PathLike) -> dict:
    """config.json of an encoder folder as a dict (a folder may come from anyone: anything else
    is a ModelError)."""
    path = Path(model_dir) / "config.json"
    if not path.exists():
        raise ModelError(f"{model_dir} is not an lcdash encoder folder (no config.json)")
    if path.stat().st_size > 10 * 2**20:
        raise ModelError(f"{path} is larger than 10 MB; not an encoder config")
    return read_json_object(path, str(path))
