"""Reading light-curve files, guessing their columns, and validating them before ingest.

Three steps the Data page and the CLI share:

1. `read_table(path_or_buffer, name)` / `read_inputs(paths)`: CSV, Parquet, FITS, VOTable, ECSV
   (a file, a folder of files or a zip of files) into pandas frames.
2. `guess_mapping(columns)`: which column holds the object id, time, mag, mag_err, band (and for an
   objects table: label, period, ra, dec, survey). The user may correct it; `prepare` takes the
   corrected mapping.
3. `prepare(frames, mapping, objects=...)`: one tidy long table of observations (object_id, band,
   time, mag, mag_err; sorted by object, band, time; unique times) plus an objects table, and a
   `ValidationReport`. Every problem found is either an error (the ingest must not go ahead) or
   fixed by a documented rule and reported:

   ========================  ==================================================================
   rule                      action
   ========================  ==================================================================
   missing_column            error: time or mag (or the object id for a long table) not found
   unknown_column            error: the mapping names a column the file does not have
   non_numeric               error: time/mag/mag_err (or period/ra/dec) values that are not
                             numbers (text, booleans, dates, lists); the rows are named
   flux                      error: the magnitude column looks like a flux (by name or values);
                             the hint says how to convert
   negative_error            error: mag_err < 0 (usually a wrong column)
   duplicate_object          error: an object id repeated in the objects table
   missing_time              fixed: rows whose time is NaN/inf are dropped
   missing_mag               fixed: rows whose mag is NaN/inf are dropped
   sentinel_mag              fixed: rows whose |mag| >= 90 (99, 99.999, -99: "no measurement"
                             codes) are dropped, when they are a minority of the rows
   missing_error             fixed: NaN/inf errors (and errors beyond float32) are stored as NULL
   zero_error                fixed: errors equal to 0 are stored as NULL (no information)
   unsorted_time             fixed: observations are sorted by time
   duplicate_row             fixed: exact duplicate (object, band, time, mag, mag_err) rows dropped
   duplicate_time            fixed: rows sharing (object, band, time) but not values are averaged
                             (mag = mean, mag_err = sqrt(sum err^2) / k); or an error when
                             ``duplicates="error"``
   too_few_observations      fixed: (object, band) series with fewer than ``min_obs`` points are
                             dropped, and objects left without observations
   nothing_left              error: no observation is left after the fixes
   empty_table               error: no data rows at all (a header only); a header-only file among
                             several is skipped
   timestamp_time            fixed: a time column of timestamps is converted to MJD (UTC)
   bad_id                    error: an id or band column of lists, structs, booleans or binary
                             values that are not UTF-8 text
   ambiguous_object          error: no id column (the file name is the id) but times repeat or go
                             backwards: several stars in one table? (``allow_merge`` overrides)
   same_object_files         error: two files give the same object id (a/star.csv, b/star.csv),
                             or two files hold one (object, band, time) with different values
                             (two stars with one id; ``allow_merge`` overrides both)
   possible_band_column      warning: times repeat within light curves, no band column is mapped,
                             and an unmapped text column has 2-10 values (a band column missed?)
   unknown_object            fixed: objects-table rows without observations are ignored
   ========================  ==================================================================

Row numbers in the report count data rows from 1 in each file (the header is not a row).

Before any of this, `read_table` / `read_inputs` refuse input beyond the limits MAX_INPUT_BYTES
(one file after decompression, or all members of a zip), MAX_ROWS (one ingest), MAX_COLUMNS,
MAX_LINE_BYTES (one line of a text table) and MAX_FILES (one folder or zip), each with one line
naming the file.
"""

from __future__ import annotations

import io as _io
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from lcdash.errors import ValidationError, one_line

OBS_ROLES = ("object_id", "time", "mag", "mag_err", "band")
OBJECT_ROLES = ("object_id", "label", "period", "ra", "dec", "survey")

# Normalised aliases (lower case, only letters and digits), best first.
_ALIASES: dict[str, tuple[str, ...]] = {
    "object_id": (
        "objectid",
        "oid",
        "id",
        "sourceid",
        "objid",
        "starid",
        "source",
        "object",
        "name",
        "star",
        "target",
        "targetid",
        "lcid",
    ),
    "time": (
        "time",
        "mjd",
        "hjd",
        "bjd",
        "jd",
        "timemjd",
        "mjdobs",
        "hmjd",
        "bmjd",
        "btjd",
        "obstime",
        "timejd",
        "t",
        "date",
        "epoch",
    ),
    "mag": ("mag", "magnitude", "mags", "m", "magpsf", "magauto", "magap", "magnitudes"),
    "mag_err": (
        "magerr",
        "magerror",
        "sigma",
        "emag",
        "errmag",
        "sigmag",
        "sigmamag",
        "dmag",
        "magnitudeerr",
        "magnitudeerror",
        "magpsferr",
        "magsigma",
        "err",
        "error",
        "merr",
        "sigmapsf",
        "emagnitude",
    ),
    "band": (
        "band",
        "filter",
        "fid",
        "passband",
        "filtercode",
        "bandpass",
        "filtername",
        "filterid",
        "bandname",
    ),
    "label": (
        "label",
        "class",
        "type",
        "classname",
        "vartype",
        "variabletype",
        "target",
        "category",
        "classification",
    ),
    "period": ("period", "periodday", "perioddays", "p", "per", "pdays"),
    "ra": ("ra", "radeg", "raj2000", "raicrs", "alpha"),
    "dec": ("dec", "decdeg", "dej2000", "decj2000", "deicrs", "delta"),
    "survey": ("survey", "surveyname"),
}
_FLUX = re.compile(r"flux|^f(lux)?_?(psf|ap|auto)?$|^counts?$|^adu$|^e_?per_?s", re.I)
_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".txt": "txt",
    ".dat": "txt",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".fits": "fits",
    ".fit": "fits",
    ".fts": "fits",
    ".vot": "votable",
    ".votable": "votable",
    ".xml": "votable",
    ".ecsv": "ecsv",
}
MAX_ROWS_LISTED = 20


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


# --------------------------------------------------------------------------------------------
# Validation report


@dataclass
class Problem:
    """One finding: where (file, column, rows), which rule, and what was done about it."""

    file: str
    column: str | None
    rule: str
    action: str  # "error" or "fixed: <what was done>"
    message: str
    rows: list[int] = field(default_factory=list)  # 1-based data rows (at most MAX_ROWS_LISTED)
    count: int = 0  # how many rows/objects the problem touches

    @property
    def is_error(self) -> bool:
        return self.action == "error"

    @property
    def is_warning(self) -> bool:
        return self.action.startswith("warning")

    def __str__(self) -> str:
        where = self.file + (f", column {self.column!r}" if self.column else "")
        if self.rows:
            more = f" (+{self.count - len(self.rows)} more)" if self.count > len(self.rows) else ""
            where += f", row{'s' if len(self.rows) > 1 else ''} " + ", ".join(map(str, self.rows)) + more
        return f"{where}: {self.message} [{self.rule}; {self.action}]"


@dataclass
class ValidationReport:
    """Every problem `prepare` found; `ok` is False when any of them is an error."""

    problems: list[Problem] = field(default_factory=list)
    n_rows_read: int = 0
    n_rows_kept: int = 0
    n_objects: int = 0

    def add(self, file, column, rule, action, message, rows=None, count=None) -> Problem:
        rows = [int(r) for r in (rows if rows is not None else [])]
        p = Problem(
            str(file),
            column,
            rule,
            action,
            message,
            rows[:MAX_ROWS_LISTED],
            int(count if count is not None else len(rows)),
        )
        self.problems.append(p)
        return p

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.is_error]

    @property
    def fixes(self) -> list[Problem]:
        return [p for p in self.problems if not p.is_error and not p.is_warning]

    @property
    def warnings(self) -> list[Problem]:
        """Findings that change nothing but may mean the mapping is wrong (read them)."""
        return [p for p in self.problems if p.is_warning]

    @property
    def ok(self) -> bool:
        return not self.errors

    def raise_if_errors(self) -> None:
        """Raise a ValidationError whose message names the first error (and how many more)."""
        errs = self.errors
        if errs:
            more = (
                f" (and {len(errs) - 1} more problem{'s' if len(errs) > 2 else ''})" if len(errs) > 1 else ""
            )
            raise ValidationError(str(errs[0]) + more)

    def to_frame(self) -> pd.DataFrame:
        cols = ["file", "column", "rows", "count", "rule", "action", "message"]
        return pd.DataFrame(
            [
                [p.file, p.column, ", ".join(map(str, p.rows)), p.count, p.rule, p.action, p.message]
                for p in self.problems
            ],
            columns=cols,
        )

    def summary(self) -> str:
        head = (
            f"{self.n_rows_read:,} rows read, {self.n_rows_kept:,} kept, {self.n_objects:,} objects; "
            f"{len(self.errors)} error(s), {len(self.fixes)} fix(es)"
            + (f", {len(self.warnings)} warning(s)" if self.warnings else "")
        )
        return "\n".join([head] + [f"  - {p}" for p in self.problems])

    def __str__(self) -> str:
        return self.summary()


# --------------------------------------------------------------------------------------------
# Reading


def table_format(name: str) -> str:
    """The reader for a file name ('csv', 'parquet', 'fits', ...); raises for unknown suffixes."""
    lower = str(name).lower()
    if lower.endswith(".gz"):
        lower = lower[:-3]
    fmt = _FORMATS.get(Path(lower).suffix)
    if fmt is None:
        raise ValidationError(f"{name}: unknown file type; expected one of {', '.join(sorted(_FORMATS))}")
    return fmt


def read_table(path_or_buffer, name: str | None = None) -> pd.DataFrame:
    """Read one table (CSV/TSV/TXT, Parquet, FITS, VOTable, ECSV) from a path or a file-like object.

    `name` gives the file name (and so the format) for buffers, e.g. a Streamlit upload. Gzip input
    (a .gz name or gzip bytes) is decompressed first. The limits (MAX_INPUT_BYTES, MAX_COLUMNS,
    MAX_LINE_BYTES, MAX_ROWS) are checked before the bulk of the work; every failure is one
    ValidationError line naming the file.
    """
    if name is None:
        if isinstance(path_or_buffer, (str, Path)):
            name = str(path_or_buffer)
        else:
            name = getattr(path_or_buffer, "name", None)
            if name is None:
                raise ValidationError("read_table: a buffer needs a file name to tell its format")
    fmt = table_format(name)
    label = _label(name)
    src = path_or_buffer
    try:
        if hasattr(src, "read") and not isinstance(src, (str, Path)):
            data = src.read(MAX_INPUT_BYTES + 1)
            data = data if isinstance(data, bytes) else str(data).encode()
            if len(data) > MAX_INPUT_BYTES:
                raise _too_big(label)
            src = _io.BytesIO(data)
        elif Path(src).stat().st_size > MAX_INPUT_BYTES:
            raise _too_big(label)
        if _is_gzip(src):  # decompress once, within the limit: a small .gz can hold gigabytes
            src = _io.BytesIO(_gunzip(src, label))
        if fmt == "parquet":
            frame = _read_parquet(src, label)
        elif fmt in ("csv", "tsv", "txt"):
            _check_lines(src, label)
            frame = _read_text(src, fmt, label)
        else:
            if fmt == "ecsv":
                _check_lines(src, label)
            frame = _read_astropy(src, fmt, label)
    except ValidationError:
        raise
    except MemoryError as exc:
        raise ValidationError(f"{label}: too large to read into memory") from exc
    except Exception as exc:  # readers raise many types; the user needs the file and the reason
        raise ValidationError(f"{label}: cannot read as {fmt}: {one_line(exc)}") from exc
    _check_shape(frame, label)
    return _tame_big_integers(frame)


def _tame_big_integers(frame: pd.DataFrame) -> pd.DataFrame:
    """Integers beyond int64 (a 400-digit number in a CSV) become floats (inf when beyond float64):
    as Python ints they break Arrow, so the app's preview and every later step."""
    for c in frame.columns:
        col = frame[c]
        if col.dtype != object or pd.api.types.infer_dtype(col, skipna=True) not in (
            "integer",
            "mixed-integer",
            "mixed-integer-float",
        ):
            continue
        big = col.map(lambda v: isinstance(v, int) and not -(2**63) <= v < 2**63).to_numpy(dtype=bool)
        if big.any():
            values = col.to_numpy(dtype=object).copy()
            values[big] = [_to_float(v) for v in values[big]]
            try:
                frame[c] = pd.to_numeric(pd.Series(values, index=frame.index))
            except (ValueError, TypeError):  # text as well: keep the column as objects
                frame[c] = values
    return frame


# Limits for untrusted input (README "Ingestion rules"); module constants so a deployment can
# change them. A small compressed file can expand a thousandfold, and one very wide row can cost
# minutes in the CSV parser, so each is checked before the expensive step.
MAX_INPUT_BYTES = 2 * 2**30  # one file after decompression; all members of one zip together
MAX_ROWS = 50_000_000  # rows of one ingest, all files together
MAX_COLUMNS = 1_000  # columns of one table
MAX_LINE_BYTES = 64 * 2**10  # one line of a text table
MAX_FILES = 100_000  # files in one folder or zip


def _short(value, width: int = 40) -> str:
    """repr of a value from the data, cut to `width` characters for messages."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 4] + "...'"


def _columns_text(cols, n: int = 20) -> str:
    cols = [one_line(c, 40) for c in cols]
    more = f", ... ({len(cols)} columns)" if len(cols) > n else ""
    return ", ".join(cols[:n]) + more


def _label(name) -> str:
    return one_line(str(name), 120)


def _too_big(label: str) -> ValidationError:
    return ValidationError(
        f"{label}: more than {_size_text(MAX_INPUT_BYTES)} of data (after decompression); "
        "split it into several files or use Parquet"
    )


def _size_text(n: int) -> str:
    return f"{n / 2**30:g} GB" if n >= 2**30 else f"{n / 2**20:g} MB"


def _is_gzip(src) -> bool:
    if isinstance(src, (str, Path)):
        with open(src, "rb") as fh:
            head = fh.read(2)
    else:
        pos = src.tell()
        head = src.read(2)
        src.seek(pos)
    return head == b"\x1f\x8b"


def _gunzip(src, label: str) -> bytes:
    """Decompress gzip in chunks, stopping as soon as the output passes MAX_INPUT_BYTES."""
    import gzip
    import zlib

    out = _io.BytesIO()
    try:
        with gzip.open(src) as fh:
            while chunk := fh.read(16 * 2**20):
                out.write(chunk)
                if out.tell() > MAX_INPUT_BYTES:
                    raise _too_big(label)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValidationError(f"{label}: not valid gzip data ({one_line(exc)})") from exc
    return out.getvalue()


def _check_lines(src, label: str) -> None:
    """Refuse text tables with a line longer than MAX_LINE_BYTES (scanned in chunks with numpy)."""
    fh = open(src, "rb") if isinstance(src, (str, Path)) else src
    pos = None if isinstance(src, (str, Path)) else src.tell()
    try:
        run, line = 0, 1
        while chunk := fh.read(16 * 2**20):
            nl = np.flatnonzero(np.frombuffer(chunk, np.uint8) == 10)
            lengths = np.diff(np.r_[-1, nl]) - 1 if nl.size else np.zeros(0, np.int64)
            if lengths.size:
                lengths[0] += run
            longest = int(lengths.max()) if lengths.size else 0
            run = (len(chunk) - 1 - int(nl[-1])) if nl.size else run + len(chunk)
            if max(longest, run) > MAX_LINE_BYTES:
                where = (
                    line + int(np.argmax(lengths > MAX_LINE_BYTES))
                    if longest > MAX_LINE_BYTES
                    else line + nl.size
                )
                raise ValidationError(
                    f"{label}: line {where} is longer than {MAX_LINE_BYTES // 1024} KB; a light-curve "
                    "table has short rows (is this the right file, or the right separator?)"
                )
            line += nl.size
    finally:
        if pos is None:
            fh.close()
        else:
            src.seek(pos)


def _check_shape(frame: pd.DataFrame, label: str) -> None:
    if frame.shape[1] > MAX_COLUMNS:
        raise ValidationError(f"{label}: {frame.shape[1]:,} columns; the limit is {MAX_COLUMNS:,}")
    if len(frame) > MAX_ROWS:
        raise ValidationError(f"{label}: {len(frame):,} rows; the limit for one ingest is {MAX_ROWS:,}")
    cols = [str(c) for c in frame.columns]
    if len(set(cols)) < len(cols):
        dup = next(c for c in cols if cols.count(c) > 1)
        raise ValidationError(f"{label}: the column name {_short(dup)} appears more than once")


def _read_parquet(src, label: str = "") -> pd.DataFrame:
    """Parquet with string columns read as categoricals (dictionary-encoded): ids repeat on every
    row, and codes make grouping millions of observations cheap. The footer's row, column and
    uncompressed-byte counts are checked before any data is read."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(src).metadata
    if hasattr(src, "seek"):
        src.seek(0)
    if meta.num_columns > MAX_COLUMNS:
        raise ValidationError(f"{label}: {meta.num_columns:,} columns; the limit is {MAX_COLUMNS:,}")
    if meta.num_rows > MAX_ROWS:
        raise ValidationError(f"{label}: {meta.num_rows:,} rows; the limit for one ingest is {MAX_ROWS:,}")
    if sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)) > MAX_INPUT_BYTES:
        raise _too_big(label)
    schema = meta.schema.to_arrow_schema()
    names = list(schema.names)
    if len(set(names)) < len(names):
        dup = next(c for c in names if names.count(c) > 1)
        raise ValidationError(f"{label}: the column name {_short(dup)} appears more than once")
    strings = [f.name for f in schema if str(f.type) in ("string", "large_string", "string_view")]
    return pq.read_table(src, read_dictionary=strings).to_pandas()


def _read_text(src, fmt: str, label: str = "") -> pd.DataFrame:
    """CSV/TSV/TXT. Id and band columns are read as text, so ids such as 00123 keep their zeros."""
    if fmt == "txt":
        # comma separated if the header has commas, else whitespace; '#' starts a comment
        if isinstance(src, (str, Path)):
            with open(src, encoding="utf-8", errors="replace") as fh:
                first = next((ln for ln in fh if ln.strip() and not ln.startswith("#")), "")
        else:
            pos = src.tell()
            text = src.read().decode("utf-8", errors="replace")
            src.seek(pos)
            first = next((ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")), "")
        kwargs = {"sep": "," if "," in first else r"\s+", "comment": "#"}
    else:
        kwargs = {"sep": "\t" if fmt == "tsv" else ","}
    kwargs["encoding_errors"] = "replace"
    pos = None if isinstance(src, (str, Path)) else src.tell()
    header = pd.read_csv(src, nrows=0, **kwargs).columns
    if pos is not None:
        src.seek(pos)
    if len(header) > MAX_COLUMNS:
        raise ValidationError(f"{label}: {len(header):,} columns; the limit is {MAX_COLUMNS:,}")
    text_cols = {
        c
        for g in (guess_mapping(header), guess_mapping(header, kind="objects"))
        for role, c in g.items()
        if c is not None and role in ("object_id", "band")
    }
    # index_col=False: a row with more fields than the header is an error, not an index
    return pd.read_csv(src, dtype={c: str for c in text_cols}, index_col=False, **kwargs)


def _read_astropy(src, fmt: str, label: str) -> pd.DataFrame:
    from astropy.table import Table  # heavy import, only when needed

    if fmt != "fits":
        astro_fmt = {"votable": "votable", "ecsv": "ascii.ecsv"}[fmt]
        return _table_to_frame(Table.read(src, format=astro_fmt))
    return _table_to_frame(_fits_table(src, label))


def _fits_table(src, label: str):
    """The FITS table HDU that holds rows: the first one, or the only non-empty one when the first
    is empty; several tables with rows are an error (which one is meant is not ours to guess)."""
    from astropy.io import fits
    from astropy.table import Table

    with fits.open(src, memmap=False) as hdul:
        tables = [(i, h) for i, h in enumerate(hdul) if isinstance(h, (fits.BinTableHDU, fits.TableHDU))]
        if not tables:
            raise ValidationError(f"{label}: the FITS file has no table HDU")
        for _, h in tables:
            if h.header.get("TFIELDS", 0) > MAX_COLUMNS:
                raise ValidationError(f"{label}: more than {MAX_COLUMNS:,} columns")
            if h.header.get("NAXIS2", 0) > MAX_ROWS:
                raise ValidationError(f"{label}: more than {MAX_ROWS:,} rows")
        full = [(i, h) for i, h in tables if h.header.get("NAXIS2", 0) > 0]
        if len(full) > 1 and full[0][0] != tables[0][0]:
            raise ValidationError(
                f"{label}: the first table HDU is empty and HDUs {', '.join(str(i) for i, _ in full)} "
                "hold rows; save the light curves in one table"
            )
        i, hdu = full[0] if full else tables[0]
        return Table.read(hdu)


def _table_to_frame(table) -> pd.DataFrame:
    """astropy Table -> DataFrame: drop multidimensional columns, masked -> NaN/None, bytes -> str."""
    keep = [c for c in table.colnames if len(table[c].shape) <= 1]
    table = table[keep]
    out = {}
    for c in keep:
        col = table[c]
        values = np.asarray(
            col.filled() if hasattr(col, "filled") and getattr(col, "mask", None) is not None else col
        )
        mask = np.asarray(getattr(col, "mask", np.zeros(len(col), bool)), dtype=bool)
        if values.dtype.kind == "S":
            values = np.char.decode(values, "utf-8", errors="replace")
        if mask.any():
            values = values.astype(float) if values.dtype.kind in "iufb" else values.astype(object)
            values[mask] = np.nan if values.dtype.kind == "f" else None
        out[c] = values
    return pd.DataFrame(out)


def read_inputs(paths: Iterable[str | Path] | str | Path) -> list[tuple[str, pd.DataFrame]]:
    """Read files, folders (every readable file inside, sorted) and zips into (name, frame) pairs.

    The name is the file name, with its folder inside a given folder or zip (``a/star.csv``); for
    one-file-per-object inputs its stem becomes the object id. At most MAX_ROWS rows in all.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames: list[tuple[str, pd.DataFrame]] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ValidationError(f"{_label(p)}: no such file or folder")
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and _readable(f.name))
            if not files:
                raise ValidationError(f"{_label(p)}: the folder holds no readable table files")
            if len(files) > MAX_FILES:
                raise ValidationError(f"{_label(p)}: {len(files):,} files; the limit is {MAX_FILES:,}")
            for f in files:
                frames.append((f.relative_to(p).as_posix(), read_table(f)))
                _check_total_rows(frames, p)
        elif p.suffix.lower() == ".zip":
            frames += read_zip(p)
        else:
            frames.append((p.name, read_table(p)))
        _check_total_rows(frames, p)
    return frames


def _check_total_rows(frames, where) -> None:
    total = sum(len(f) for _, f in frames)
    if total > MAX_ROWS:
        raise ValidationError(f"{_label(where)}: more than {MAX_ROWS:,} rows in one ingest; ingest in parts")


def read_zip(path_or_buffer, name: str | None = None) -> list[tuple[str, pd.DataFrame]]:
    """Every readable table inside a zip (path or buffer), as (member path, frame) pairs.

    The members' sizes count against MAX_INPUT_BYTES together, checked from the directory and
    again while decompressing (the directory can lie)."""
    import zlib

    label = _label(name or str(getattr(path_or_buffer, "name", path_or_buffer)))
    try:
        zf = zipfile.ZipFile(path_or_buffer)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as exc:
        raise ValidationError(f"{label}: not a zip file ({one_line(exc)})") from exc
    with zf:
        infos = sorted(
            (
                m
                for m in zf.infolist()
                if not m.is_dir() and not Path(m.filename).name.startswith(".") and _readable(m.filename)
            ),
            key=lambda m: m.filename,
        )
        if not infos:
            raise ValidationError(f"{label}: the zip holds no readable table files")
        if len(infos) > MAX_FILES:
            raise ValidationError(f"{label}: {len(infos):,} files; the limit is {MAX_FILES:,}")
        if sum(m.file_size for m in infos) > MAX_INPUT_BYTES:
            raise _too_big(label)
        out, budget = [], MAX_INPUT_BYTES
        shown = _without_common_folder([m.filename for m in infos])
        for m, short in zip(infos, shown, strict=True):
            member = f"{label}:{m.filename}"
            try:
                with zf.open(m) as fh:
                    data = fh.read(budget + 1)
            except (
                zipfile.BadZipFile,
                zlib.error,
                OSError,
                EOFError,
                RuntimeError,
                NotImplementedError,
            ) as exc:
                raise ValidationError(f"{_label(member)}: cannot unpack ({one_line(exc)})") from exc
            if len(data) > budget:
                raise _too_big(label)
            budget -= len(data)
            out.append((short, read_table(_io.BytesIO(data), f"{label}:{m.filename}")))
            _check_total_rows(out, label)
        return out


def _without_common_folder(names: list[str]) -> list[str]:
    """Member paths without the folders every member shares (a zipped folder 'lcs/a.csv' -> 'a.csv')."""
    parts = [n.split("/") for n in names]
    k = 0
    while all(len(p) > k + 1 for p in parts) and len({p[k] for p in parts}) == 1:
        k += 1
    return ["/".join(p[k:]) for p in parts]


def _readable(name: str) -> bool:
    try:
        table_format(name)
        return True
    except ValidationError:
        return False


def file_stem(name: str) -> str:
    """Object id from a file name: the name without its (possibly double) extension."""
    base = Path(str(name)).name
    if base.lower().endswith(".gz"):
        base = base[:-3]
    return Path(base).stem


# --------------------------------------------------------------------------------------------
# Column mapping


def guess_mapping(columns: Iterable[str], kind: str = "observations") -> dict[str, str | None]:
    """Guess which column plays each role; roles without a match map to None.

    kind: "observations" (object_id, time, mag, mag_err, band) or "objects" (object_id, label,
    period, ra, dec, survey). Exact alias matches win over looser ones (e.g. 'mag_v', 'vmag').
    """
    roles = OBS_ROLES if kind == "observations" else OBJECT_ROLES
    cols = [str(c) for c in columns]
    normed = {c: _norm(c) for c in cols}
    out: dict[str, str | None] = {}
    used: set[str] = set()
    for role in roles:
        hit = None
        for alias in _ALIASES[role]:
            hit = next((c for c in cols if normed[c] == alias and c not in used), None)
            if hit:
                break
        if hit is None and kind == "observations":
            hit = _loose_match(role, cols, normed, used)
        out[role] = hit
        if hit:
            used.add(hit)
    return out


def _loose_match(role, cols, normed, used):
    free = [c for c in cols if c not in used]
    if role == "time":
        return next(
            (c for c in free if re.search(r"(^|[^a-z])(b|h)?m?jd", c.lower()) or "time" in normed[c]), None
        )
    if role == "mag":
        return next(
            (c for c in free if ("mag" in normed[c]) and not re.search(r"err|sig|unc", normed[c])), None
        )
    if role == "mag_err":
        return next((c for c in free if "mag" in normed[c] and re.search(r"err|sig|unc", normed[c])), None)
    return None


def looks_like_flux_name(column: str) -> bool:
    return bool(_FLUX.search(_norm(column))) and "mag" not in _norm(column)


# --------------------------------------------------------------------------------------------
# Preparation


FramesLike = pd.DataFrame | Mapping[str, pd.DataFrame] | Iterable[tuple[str, pd.DataFrame]]


def _as_frames(frames: FramesLike, name: str) -> list[tuple[str, pd.DataFrame]]:
    if isinstance(frames, pd.DataFrame):
        return [(name, frames)]
    if isinstance(frames, Mapping):
        return list(frames.items())
    return [(str(n), f) for n, f in frames]


def _numeric(series: pd.Series, file: str, column: str, report: ValidationReport) -> np.ndarray:
    """Column as float64; values that are present but not numbers are an error naming the rows.
    Booleans, dates and nested values are not numbers; numbers too large for a float become inf."""
    kind = series.dtype.kind
    what = {"b": "true/false values", "M": "dates", "m": "time spans"}.get(kind)
    if what is None and kind == "O":
        first = series.dropna().head(1).tolist()
        if first and isinstance(first[0], (bool, np.bool_)):
            what = "true/false values"
        elif first and isinstance(first[0], (list, tuple, dict, np.ndarray, bytes)):
            what = "lists, structs or binary values"
    if what is not None:
        report.add(file, column, "non_numeric", "error", f"the column holds {what}, not numbers")
        return np.full(len(series), np.nan)
    if kind in "iuf":
        return series.to_numpy(dtype=np.float64, na_value=np.nan)
    try:
        conv = pd.to_numeric(series, errors="coerce")
    except (OverflowError, TypeError, ValueError):  # e.g. a 400-digit integer
        conv = pd.Series([_to_float(v) for v in series.tolist()], index=series.index, dtype=float)
    values = conv.to_numpy(dtype=np.float64, na_value=np.nan)
    present = np.array(series.notna(), dtype=bool)
    if series.dtype.kind in "OUST" or str(series.dtype).startswith(("str", "string")):
        stripped = series.astype("string").str.strip().str.lower()
        present &= ~stripped.isin(["", "nan", "null", "none", "na", "n/a", "--"]).to_numpy(
            dtype=bool, na_value=False
        )
    bad = np.flatnonzero(present & np.isnan(values))
    if bad.size:
        examples = ", ".join(_short(series.iloc[i]) for i in bad[:3])
        report.add(
            file,
            column,
            "non_numeric",
            "error",
            f"{bad.size} value(s) are not numbers (e.g. {examples})",
            bad + 1,
            bad.size,
        )
    return values


def _to_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return np.nan
    except OverflowError:
        return np.inf


def prepare(
    frames: FramesLike,
    mapping: Mapping[str, str | None] | None = None,
    *,
    objects: pd.DataFrame | None = None,
    objects_mapping: Mapping[str, str | None] | None = None,
    objects_name: str = "objects table",
    band: str | None = None,
    min_obs: int = 5,
    duplicates: str = "average",
    name: str = "observations",
    allow_merge: bool = False,
) -> tuple[pd.DataFrame, pd.DataFrame, ValidationReport]:
    """Validate and tidy observations (+ an optional objects table) for `Store.ingest`.

    frames: one long table, or (file name, frame) pairs (e.g. one file per object: the object id
    comes from the file name when the frame has no id column). mapping: role -> column for the
    observation frames, overriding `guess_mapping` (a role mapped to None is switched off).
    band: the band name for frames without a band column (default "default").
    duplicates: "average" (rows sharing a time are averaged) or "error".
    allow_merge: when object ids come from file names (no id column), rows whose times repeat or
    go backwards, and files of the same name in different folders, are one object anyway (by
    default an error: they are usually several stars).

    Returns (observations, objects, report). observations: object_id, band (categoricals), time
    (float64), mag (float64), mag_err (float64, NaN = none), sorted by (object_id, band, time) with
    unique times. objects: object_id, label, period, ra, dec, survey, meta (JSON text of the other
    columns) for every object kept. Check `report.ok` (or call `report.raise_if_errors()`) before
    ingesting: on errors the frames returned are empty.
    """
    if duplicates not in ("average", "error"):
        raise ValueError("duplicates must be 'average' or 'error'")
    report = ValidationReport()
    pairs = _as_frames(frames, name)
    if not pairs:
        raise ValidationError("no observation tables given")
    user_map = dict(mapping or {})
    parts = []
    for file_no, (fname, frame) in enumerate(pairs):
        part = _prepare_frame(fname, frame, user_map, band, len(pairs) > 1, report)
        report.n_rows_read += len(frame)
        if part is not None:
            part["file"] = np.full(len(part["time"]), file_no, np.int32)
            parts.append(part)
    if report.ok and report.n_rows_read == 0:
        report.add(
            pairs[0][0] if len(pairs) == 1 else name,
            None,
            "empty_table",
            "error",
            "no data rows: the table has a header only" if len(pairs) == 1 else "no table has data rows",
        )
    obj_frame = None
    if objects is not None:
        obj_frame = _prepare_objects(objects, objects_mapping, objects_name, report)
    if not report.ok or not parts:
        return _empty_obs(), _empty_objects(), report

    file_names = [p[0] for p in pairs]
    obs = _clean_rows(parts, file_names, min_obs, duplicates, report, allow_merge)
    if report.ok and len(obs) == 0:
        report.add(
            file_names[0] if len(file_names) == 1 else name,
            None,
            "nothing_left",
            "error",
            f"no observations are left after the fixes above ({report.n_rows_read:,} row(s) read)",
        )
    if not report.ok:
        return _empty_obs(), _empty_objects(), report
    kept_ids = obs["object_id"].cat.categories
    objects_out = _join_objects(kept_ids, obj_frame, objects_name, report)
    report.n_rows_kept = len(obs)
    report.n_objects = len(objects_out)
    return obs, objects_out, report


def _column_roles(cols: list[str], user_map, kind: str, fname, report) -> dict[str, str | None] | None:
    """Guessed roles overridden by the user's mapping; None (with an error in `report`) when the
    mapping names a column the table lacks."""
    roles = OBS_ROLES if kind == "observations" else OBJECT_ROLES
    m = {**guess_mapping(cols, kind=kind), **{k: v for k, v in dict(user_map or {}).items() if k in roles}}
    for role, col in m.items():
        if col is not None and col not in cols:
            table = "file" if kind == "observations" else "objects table"
            report.add(
                fname,
                col,
                "unknown_column",
                "error",
                f"the mapping gives {role}={col!r} but the {table} has no such column "
                f"(columns: {', '.join(cols)})",
            )
            return None
    return m


def _prepare_frame(fname, frame, user_map, band, many, report):
    cols = [str(c) for c in frame.columns]
    frame = frame.set_axis(cols, axis=1)
    m = _column_roles(cols, user_map, "observations", fname, report)
    if m is None:
        return None
    if len(frame) == 0:
        if many:
            report.add(fname, None, "empty_table", "fixed: skipped", "no data rows (a header only)")
        return None
    flux_cols = [c for c in cols if looks_like_flux_name(c)]
    if m["mag"] is None:
        if flux_cols:
            report.add(
                fname,
                flux_cols[0],
                "flux",
                "error",
                "no magnitude column, but a flux column; convert fluxes to magnitudes first "
                "(mag = zeropoint - 2.5 log10(flux), mag_err = 1.0857 flux_err / flux)",
            )
        else:
            report.add(
                fname,
                None,
                "missing_column",
                "error",
                f"no magnitude column found among {_columns_text(cols)}; map one (e.g. --map mag=COLUMN)",
            )
        return None
    if looks_like_flux_name(m["mag"]):
        report.add(
            fname,
            m["mag"],
            "flux",
            "error",
            "the magnitude column is named like a flux; convert fluxes to magnitudes first "
            "(mag = zeropoint - 2.5 log10(flux)) or map the right column",
        )
        return None
    if m["time"] is None:
        report.add(
            fname,
            None,
            "missing_column",
            "error",
            f"no time column found among {_columns_text(cols)}; map one (e.g. --map time=COLUMN)",
        )
        return None
    n = len(frame)
    from_name = m["object_id"] is None
    if m["object_id"] is not None:
        ids = _id_column(frame[m["object_id"]], fname, m["object_id"], report)
        if ids is None:
            return None
        missing = np.flatnonzero(ids.isna().to_numpy())
        if missing.size:
            report.add(
                fname,
                m["object_id"],
                "missing_column",
                "error",
                f"{missing.size} row(s) have no object id",
                missing + 1,
                missing.size,
            )
            return None
    elif many or Path(fname).suffix:
        # one file per object: the id is the file name
        ids = pd.Series(np.full(n, file_stem(fname), dtype=object), dtype="string")
    else:
        report.add(
            fname,
            None,
            "missing_column",
            "error",
            f"no object id column found among {_columns_text(cols)}; map one (e.g. --map object_id=COLUMN)",
        )
        return None
    if m["band"] is not None:
        bands = _id_column(frame[m["band"]], fname, m["band"], report)
        if bands is None:
            return None
        if bands.isna().any():
            bands = bands.astype("string").fillna(band or "default")
    else:
        bands = pd.Series(np.full(n, band or "default", dtype=object), dtype="string")
    tcol = frame[m["time"]]
    if tcol.dtype.kind == "M":  # Parquet / FITS timestamps: MJD in UTC, as astronomers use
        time = _timestamps_to_mjd(tcol)
        report.add(
            fname,
            m["time"],
            "timestamp_time",
            "fixed: converted to MJD",
            "the time column holds timestamps; stored as MJD (days since 1858-11-17, UTC)",
        )
    else:
        time = _numeric(tcol, fname, m["time"], report)
    mag = _numeric(frame[m["mag"]], fname, m["mag"], report)
    err = (
        _numeric(frame[m["mag_err"]], fname, m["mag_err"], report)
        if m["mag_err"] is not None
        else np.full(n, np.nan)
    )
    if not report.ok:
        return None
    return {
        "object_id": ids,
        "band": bands,
        "time": time,
        "mag": mag,
        "mag_err": err,
        "row": np.arange(1, n + 1),
        "cols": m,
        "from_name": from_name,
        "band_hint": _band_candidates(frame, m) if m["band"] is None else [],
    }


def _timestamps_to_mjd(col: pd.Series) -> np.ndarray:
    values = col.dt.tz_convert("UTC").dt.tz_localize(None) if getattr(col.dt, "tz", None) else col
    ns = values.to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
    mjd = ns / 86_400e9 + 40_587.0  # 1970-01-01 is MJD 40587
    mjd[values.isna().to_numpy()] = np.nan
    return mjd


def _band_candidates(frame: pd.DataFrame, m) -> list[str]:
    """Unmapped text columns with 2-10 distinct values: perhaps a band column the guess missed."""
    used = {c for c in m.values() if c}
    out = []
    head = frame.head(100_000)
    for c in head.columns:
        col = head[c]
        if c in used or not (
            isinstance(col.dtype, pd.CategoricalDtype)
            or col.dtype.kind in "OSU"
            or str(col.dtype).startswith("str")
        ):
            continue
        try:
            k = col.nunique(dropna=True)
        except TypeError:  # unhashable values
            continue
        if 2 <= k <= 10:
            out.append(str(c))
    return out


def _id_column(col: pd.Series, fname, column, report) -> pd.Series | None:
    """An id or band column as strings; lists, structs, floats with fractions and undecodable
    binary values are an error (None, with the problem in `report`)."""
    bad = None
    if col.dtype.kind == "O":
        sample = col.dropna()
        kinds = {type(v) for v in sample.head(1000).tolist()}
        if kinds & {list, tuple, dict, np.ndarray}:
            bad = "lists or structs"
        elif bytes in kinds:
            try:
                col = col.map(lambda v: v.decode("utf-8") if isinstance(v, bytes) else v)
            except UnicodeDecodeError:
                bad = "binary values that are not text"
    elif col.dtype.kind == "b":
        bad = "true/false values"
    if bad is not None:
        report.add(
            fname,
            column,
            "bad_id",
            "error",
            f"the column holds {bad}; ids and bands must be text or integers",
        )
        return None
    return _as_id_strings(col)


def _as_id_strings(s: pd.Series) -> pd.Series:
    """Ids as strings (categoricals stay categorical with string categories: no per-row strings);
    integral floats (ids read next to NaNs) lose their '.0'."""
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = s.cat.categories
        if cats.dtype.kind == "f" and np.all(cats == np.round(cats)):
            cats = cats.astype("Int64")
        return s.cat.rename_categories(pd.Index(cats.astype(str), dtype="string"))
    if s.dtype.kind == "f":
        vals = s.to_numpy()
        finite = np.isfinite(vals)
        if np.all(vals[finite] == np.round(vals[finite])):
            return s.astype("Int64").astype("string")
    return s.astype("string")


def _codes(s: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer codes numbered in order of first appearance, and the values they stand for.

    A categorical (Parquet dictionary columns) reuses its codes, renumbered from the run starts,
    instead of hashing millions of strings again."""
    if not isinstance(s.dtype, pd.CategoricalDtype):
        codes, uniq = pd.factorize(s, sort=False)
        return codes.astype(np.int64), pd.Index(uniq, dtype="string")
    codes = s.cat.codes.to_numpy().astype(np.int64)
    cats = s.cat.categories
    if codes.size == 0:
        return codes, pd.Index([], dtype="string")
    starts = codes[np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])]
    _, first = np.unique(starts, return_index=True)
    present = np.unique(starts)
    order = present[np.argsort(first, kind="stable")]  # categories in order of first appearance
    rank = np.full(len(cats), -1, np.int64)
    rank[order] = np.arange(order.size)
    return rank[codes], pd.Index(np.asarray(cats, dtype=object)[order], dtype="string")


def _clean_rows(parts, file_names, min_obs, duplicates, report, allow_merge=False) -> pd.DataFrame:
    """Drop/fix bad rows, sort, resolve duplicates and short light curves (vectorised over all files)."""
    if len(parts) > 1:
        ids = pd.concat([p["object_id"].astype("string") for p in parts], ignore_index=True)
        bands = pd.concat([p["band"].astype("string") for p in parts], ignore_index=True)
    else:
        ids, bands = parts[0]["object_id"], parts[0]["band"]
    time = np.concatenate([p["time"] for p in parts])
    mag = np.concatenate([p["mag"] for p in parts])
    err = np.concatenate([p["mag_err"] for p in parts])
    row_all = np.concatenate([p["row"] for p in parts])
    file_all = np.concatenate([p["file"] for p in parts])
    col_of = {role: [p["cols"][role] for p in parts] for role in ("time", "mag", "mag_err")}

    def report_rows(idx, rule, action, message, role):
        """One problem per file for the rows at positions idx (of the concatenated input)."""
        if idx.size == 0:
            return
        files = file_all[idx]
        for f in np.unique(files):
            sel = idx[files == f]
            report.add(
                file_names[f],
                col_of[role][f] if role else None,
                rule,
                action,
                message.format(n=sel.size),
                row_all[sel],
                sel.size,
            )

    # NaN / inf
    bad_t = ~np.isfinite(time)
    report_rows(
        np.flatnonzero(bad_t),
        "missing_time",
        "fixed: rows dropped",
        "{n} row(s) with a missing or infinite time",
        "time",
    )
    bad_m = ~np.isfinite(mag) & ~bad_t
    report_rows(
        np.flatnonzero(bad_m),
        "missing_mag",
        "fixed: rows dropped",
        "{n} row(s) with a missing or infinite magnitude",
        "mag",
    )
    if any(c is not None for c in col_of["mag_err"]):
        # errors are stored as float32: beyond its range they would become inf
        finite_e = np.isfinite(err) & (np.abs(err) <= np.finfo(np.float32).max)
        bad_e = ~finite_e & ~bad_t & ~bad_m
        report_rows(
            np.flatnonzero(bad_e),
            "missing_error",
            "fixed: stored as NULL",
            "{n} row(s) with a missing, infinite or out-of-range error",
            "mag_err",
        )
        err = np.where(finite_e, err, np.nan)
        zero = err == 0
        report_rows(
            np.flatnonzero(zero),
            "zero_error",
            "fixed: stored as NULL",
            "{n} row(s) with an error of 0",
            "mag_err",
        )
        err[zero] = np.nan
        report_rows(
            np.flatnonzero(err < 0),
            "negative_error",
            "error",
            "{n} negative error(s); errors must be >= 0 (is the right column mapped?)",
            "mag_err",
        )
    keep = ~(bad_t | bad_m)
    # 99 / 99.999 / -99 are the usual "no measurement" codes; a minority of them are sentinels, a
    # majority means the column holds something else (fluxes: the check below)
    sentinel = keep & (np.abs(mag) >= 90)
    if sentinel.any() and sentinel.sum() < 0.5 * keep.sum():
        report_rows(
            np.flatnonzero(sentinel),
            "sentinel_mag",
            "fixed: rows dropped",
            "{n} row(s) with a magnitude of 90 or more in size (a 'no measurement' code such as 99)",
            "mag",
        )
        keep &= ~sentinel
    # flux given as magnitudes: magnitudes of real sources lie within about -30..40
    sample = mag[keep][:: max(1, int(keep.sum()) // 100_000)]
    if sample.size:
        lo, med, hi = np.percentile(sample, [1, 50, 99])
        if med > 40 or lo < -30 or hi > 60:
            f = int(file_all[np.flatnonzero(keep)[0]])
            report.add(
                file_names[f],
                col_of["mag"][f],
                "flux",
                "error",
                f"values from {lo:.3g} to {hi:.3g} (median {med:.3g}) look like fluxes, not magnitudes; "
                "convert them (mag = zeropoint - 2.5 log10(flux)) or map the magnitude column",
            )
    if not report.ok:
        return _empty_obs()

    # codes in order of first appearance: a file sorted by object gives increasing codes (no re-sort)
    oc, ouniq = _codes(ids)
    bc, buniq = _codes(bands)
    nb = max(len(buniq), 1)
    series = oc.astype(np.int64) * nb + bc  # one integer per (object, band)
    idx = np.arange(time.size)  # position in the concatenated input, for row numbers in reports
    if not keep.all():
        series, time, mag, err, idx = series[keep], time[keep], mag[keep], err[keep], idx[keep]
    if not allow_merge and any(p["from_name"] for p in parts):
        _check_file_objects(
            parts, file_names, series // nb, series, time, idx, file_all, row_all, ouniq, report
        )
        if not report.ok:
            return _empty_obs()

    # sort by (object, band, time); report light curves whose times were out of order
    if series.size > 1:
        same = series[1:] == series[:-1]
        back = np.flatnonzero(same & (time[1:] < time[:-1])) + 1
        if back.size:
            files = file_all[idx[back]]
            for f in np.unique(files):
                sel = back[files == f]
                report.add(
                    file_names[f],
                    col_of["time"][f],
                    "unsorted_time",
                    "fixed: sorted by time",
                    f"times out of order in {np.unique(series[sel]).size} light curve(s)",
                    row_all[idx[sel]],
                    sel.size,
                )
        if back.size or not np.all(series[1:] >= series[:-1]):
            order = np.lexsort((time, series))
            series, time, mag, err, idx = series[order], time[order], mag[order], err[order], idx[order]

    # duplicated (object, band, time): exact copies dropped, differing values averaged (or an error)
    if series.size > 1:
        later = np.flatnonzero((series[1:] == series[:-1]) & (time[1:] == time[:-1])) + 1
        if later.size:
            # work on the few rows involved only: each later row's group head is the row before
            # its run of equal (object, band, time) rows
            start = np.ones(series.size, bool)
            start[later] = False
            cont = np.r_[False, later[1:] == later[:-1] + 1]
            head_of = np.maximum.accumulate(np.where(cont, 0, later - 1))
            gid = np.cumsum(np.r_[True, head_of[1:] != head_of[:-1]]) - 1
            heads = head_of[np.r_[True, head_of[1:] != head_of[:-1]]]
            same_vals = (mag[later] == mag[later - 1]) & (
                (err[later] == err[later - 1]) | (np.isnan(err[later]) & np.isnan(err[later - 1]))
            )
            differing = np.bincount(gid, ~same_vals, minlength=heads.size) > 0
            exact = later[~differing[gid]]
            report_rows(
                idx[exact],
                "duplicate_row",
                "fixed: dropped",
                "{n} exact duplicate row(s) of (object, band, time, mag, mag_err)",
                None,
            )
            hints = sorted({c for p in parts for c in p["band_hint"]})
            if hints:
                f = int(file_all[idx[later[0]]])
                report.add(
                    file_names[f],
                    None,
                    "possible_band_column",
                    "warning: check the band mapping",
                    f"{later.size} row(s) repeat a time within a light curve and no band column is mapped, "
                    f"but {', '.join(repr(h) for h in hints[:3])} hold{'s' if len(hints) == 1 else ''} a few "
                    "text values: if that is the band, map it (--map band=COLUMN), or the bands are merged "
                    "into one light curve",
                    count=later.size,
                )
            avg = later[differing[gid]]
            # the same (object, band, time) with other values in another file: two stars that
            # share an id, not a re-export of one (exact copies were dropped above)
            other = avg[file_all[idx[avg]] != file_all[idx[head_of[differing[gid]]]]] if avg.size else avg
            if other.size and not allow_merge:
                i = int(other[0])
                f1, f2 = int(file_all[idx[head_of[np.searchsorted(later, i)]]]), int(file_all[idx[i]])
                report.add(
                    file_names[f2],
                    col_of["time"][f2],
                    "same_object_files",
                    "error",
                    f"object {_short(str(ouniq[series[i] // nb]))} has other values at the same times in "
                    f"{file_names[f1]} and {file_names[f2]} ({other.size} row(s)): two stars with one id? "
                    "Give them distinct ids, or pass --allow-merge if they are one star",
                    row_all[idx[other]],
                    other.size,
                )
                return _empty_obs()
            if avg.size:
                if duplicates == "error":
                    report_rows(
                        idx[avg],
                        "duplicate_time",
                        "error",
                        "{n} row(s) repeat the (object, band, time) of another row with other values",
                        "time",
                    )
                    return _empty_obs()
                report_rows(
                    idx[avg],
                    "duplicate_time",
                    "fixed: averaged",
                    "{n} row(s) repeat the (object, band, time) of another row with other values; "
                    "averaged (mag mean, error sqrt(sum err^2)/k)",
                    "time",
                )
                g = heads.size
                k = 1.0 + np.bincount(gid, minlength=g)
                mag_mean = (mag[heads] + np.bincount(gid, mag[later], minlength=g)) / k
                nan_err = np.isnan(err[heads]) | (np.bincount(gid, np.isnan(err[later]), minlength=g) > 0)
                e2 = np.nan_to_num(err[heads]) ** 2 + np.bincount(
                    gid, np.nan_to_num(err[later]) ** 2, minlength=g
                )
                err_mean = np.where(nan_err, np.nan, np.sqrt(e2) / k)
                mag[heads[differing]] = mag_mean[differing]
                err[heads[differing]] = err_mean[differing]
            series, time, mag, err, idx = series[start], time[start], mag[start], err[start], idx[start]

    # too few observations per (object, band)
    if series.size:
        s_start = np.r_[True, series[1:] != series[:-1]]
        s_id = np.cumsum(s_start) - 1
        s_len = np.bincount(s_id)
        short = s_len < min_obs
        if short.any():
            drop = short[s_id]
            short_series = series[s_start][short]
            kept_objects = np.unique(series[~drop] // nb)
            short_objects = np.unique(short_series // nb)
            lost = np.setdiff1d(short_objects, kept_objects)
            names = ", ".join(str(ouniq[i]) for i in short_objects[:5])
            report_rows(
                idx[drop],
                "too_few_observations",
                f"fixed: {int(short.sum())} light curve(s) dropped",
                f"{int(short.sum())} (object, band) light curve(s) have fewer than {min_obs} observations "
                f"({lost.size} object(s) left without any), e.g. {names}; {{n}} row(s)",
                None,
            )
            keep3 = ~drop
            series, time, mag, err = series[keep3], time[keep3], mag[keep3], err[keep3]

    # compact the object categories to those kept, preserving their order
    oc = series // nb
    used = np.bincount(oc, minlength=len(ouniq)) > 0 if oc.size else np.zeros(len(ouniq), bool)
    remap = np.cumsum(used) - 1
    cats = pd.Index(np.asarray(ouniq, dtype=object)[used], dtype="string")
    return pd.DataFrame(
        {
            "object_id": pd.Categorical.from_codes(remap[oc] if oc.size else oc, categories=cats),
            "band": pd.Categorical.from_codes(series % nb, categories=pd.Index(buniq, dtype="string")),
            "time": time,
            "mag": mag,
            "mag_err": err,
        },
        copy=False,  # no consolidation copy of millions of rows
    )


def _check_file_objects(parts, file_names, oc, series, time, idx, file_all, row_all, ouniq, report) -> None:
    """Objects named after their file must be one star: an error when two files give the same
    name (a/star.csv, b/star.csv) or when times repeat or go backwards inside one (band of a)
    file, the sign of a long table whose id column was not recognised."""
    from_name = np.zeros(len(file_names), bool)
    time_col = {}
    for p in parts:
        if len(p["file"]):
            from_name[p["file"][0]] = p["from_name"]
            time_col[int(p["file"][0])] = p["cols"]["time"]
    rows_file = file_all[idx]
    named = from_name[rows_file]
    if not named.any():
        return
    # one object, several files
    pairs = np.unique(np.c_[oc[named], rows_file[named]], axis=0)
    objs, counts = np.unique(pairs[:, 0], return_counts=True)
    if (counts > 1).any():
        o = objs[counts > 1][0]
        files = [file_names[int(f)] for f in pairs[pairs[:, 0] == o, 1]]
        report.add(
            files[1],
            None,
            "same_object_files",
            "error",
            f"{len(files)} files give the object id {_short(str(ouniq[o]))} "
            f"({', '.join(files[:3])}): object ids come from file names, so these would be merged into "
            "one star; rename the files, ingest them separately, or pass --allow-merge if they are one star",
            count=int((counts > 1).sum()),
        )
        return
    # repeated or backward times within one file's light curve, in file order
    sel = np.flatnonzero(named)
    order = sel[np.argsort(series[sel], kind="stable")]
    s, t = series[order], time[order]
    bad = np.flatnonzero((s[1:] == s[:-1]) & (t[1:] <= t[:-1])) + 1
    if bad.size:
        f = int(rows_file[order[bad[0]]])
        report.add(
            file_names[f],
            time_col.get(f),
            "ambiguous_object",
            "error",
            f"no object id column, so the file is one object {_short(file_stem(file_names[f]))}, but its "
            f"times repeat or go backwards in {bad.size} row(s): it looks like several stars in one table. "
            "Map the id column (--map object_id=COLUMN), or pass --allow-merge if it is one star",
            row_all[idx[order[bad]]],
            bad.size,
        )


def _prepare_objects(objects, objects_mapping, fname, report) -> pd.DataFrame | None:
    cols = [str(c) for c in objects.columns]
    objects = objects.set_axis(cols, axis=1)
    m = _column_roles(cols, objects_mapping, "objects", fname, report)
    if m is None:
        return None
    if m["object_id"] is None:
        report.add(
            fname, None, "missing_column", "error", f"no object id column found among {', '.join(cols)}"
        )
        return None
    ids = _as_id_strings(objects[m["object_id"]])
    dup = np.flatnonzero(ids.duplicated(keep="first").to_numpy())
    if dup.size:
        report.add(
            fname,
            m["object_id"],
            "duplicate_object",
            "error",
            f"{dup.size} object id(s) appear more than once (e.g. {ids.iloc[dup[0]]!r})",
            dup + 1,
            dup.size,
        )
    out = pd.DataFrame({"object_id": ids.to_numpy(dtype=object)})
    lab = m["label"]
    out["label"] = (
        objects[lab].astype("string").str.strip().replace("", pd.NA).to_numpy(dtype=object, na_value=None)
        if lab
        else None
    )
    for role in ("period", "ra", "dec"):
        out[role] = _numeric(objects[m[role]], fname, m[role], report) if m[role] else np.nan
    out["survey"] = (
        objects[m["survey"]].astype("string").to_numpy(dtype=object, na_value=None) if m["survey"] else None
    )
    used = {c for c in m.values() if c}
    extra = [c for c in cols if c not in used]
    out["meta"] = _meta_json(objects[extra]) if extra else None
    return out


def _meta_json(frame: pd.DataFrame) -> list[str]:
    """The other catalogue columns of each row as a JSON object (NaN -> null; pandas' C writer)."""
    frame = frame.reset_index(drop=True)
    for c in frame.columns:  # categoricals would be written as codes by some writers: make them text
        if isinstance(frame[c].dtype, pd.CategoricalDtype):
            frame[c] = frame[c].astype(object)
    text = frame.to_json(orient="records", lines=True, date_format="iso", default_handler=str)
    return text.rstrip("\n").split("\n") if len(frame) else []


def _join_objects(kept_ids, obj_frame, fname, report) -> pd.DataFrame:
    base = pd.DataFrame({"object_id": np.asarray(kept_ids, dtype=object)})
    if obj_frame is None:
        for c in ("label", "survey", "meta"):
            base[c] = None
        for c in ("period", "ra", "dec"):
            base[c] = np.nan
        return base[list(_OBJECT_COLUMNS)]
    out = base.merge(obj_frame, on="object_id", how="left")
    kept = set(base["object_id"].tolist())  # a set: Series.isin on arrow strings is slow here
    unknown = np.array([o not in kept for o in obj_frame["object_id"].tolist()], dtype=bool)
    if unknown.any():
        idx = np.flatnonzero(unknown)
        report.add(
            fname,
            None,
            "unknown_object",
            "fixed: ignored",
            f"{idx.size} object(s) have no observations (e.g. {obj_frame['object_id'].iloc[idx[0]]!r})",
            idx + 1,
            idx.size,
        )
    out = out.astype({"label": object, "survey": object, "meta": object})
    out = out.where(out.notna(), None) if len(out) else out
    for c in ("period", "ra", "dec"):
        out[c] = pd.to_numeric(out[c], errors="coerce").astype(float)
    return out[list(_OBJECT_COLUMNS)]


_OBJECT_COLUMNS = ("object_id", "label", "period", "ra", "dec", "survey", "meta")


def _empty_obs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "object_id": pd.Categorical([]),
            "band": pd.Categorical([]),
            "time": np.zeros(0),
            "mag": np.zeros(0),
            "mag_err": np.zeros(0),
        }
    )


def _empty_objects() -> pd.DataFrame:
    return pd.DataFrame({c: [] for c in _OBJECT_COLUMNS})


def parse_mapping(items: Iterable[str] | None) -> dict[str, str | None]:
    """CLI `--map` pairs -> mapping. ROLE=COLUMN (or COLUMN=ROLE: the side naming a role is the
    role); `ROLE=` switches a role off; `objects.ROLE=COLUMN` maps a column of the objects table
    when it differs from the observations' (e.g. objects.object_id=name)."""
    roles = set(OBS_ROLES) | set(OBJECT_ROLES) | {f"objects.{r}" for r in OBJECT_ROLES}
    out: dict[str, str | None] = {}
    for item in items or []:
        left, sep, right = (x.strip() for x in item.partition("="))
        if sep and left in roles:
            out[left] = right or None
        elif sep and right in roles and left:
            out[right] = left
        else:
            raise ValidationError(
                f"--map {item!r}: expected ROLE=COLUMN with ROLE one of "
                f"{', '.join(OBS_ROLES + OBJECT_ROLES[1:])} (objects.ROLE for the objects table)"
            )
    return out


def split_mapping(mapping: Mapping[str, str | None]) -> tuple[dict, dict]:
    """A parsed --map -> (observations mapping, objects mapping).

    Catalogue roles (label, period, ra, dec, survey) and objects.* entries go to the objects table;
    the object id to both unless objects.object_id is given."""
    obs = {k: v for k, v in mapping.items() if k in OBS_ROLES}
    objs = {k: v for k, v in mapping.items() if k in OBJECT_ROLES and k != "object_id"}
    objs.update({k.split(".", 1)[1]: v for k, v in mapping.items() if k.startswith("objects.")})
    if "object_id" in mapping and "object_id" not in objs:
        objs["object_id"] = mapping["object_id"]
    return obs, objs


__all__ = [
    "OBS_ROLES",
    "OBJECT_ROLES",
    "Problem",
    "ValidationReport",
    "read_table",
    "read_inputs",
    "read_zip",
    "guess_mapping",
    "prepare",
    "parse_mapping",
    "file_stem",
    "table_format",
    "looks_like_flux_name",
]
