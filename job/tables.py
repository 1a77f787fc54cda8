"""Prepare's input, read in chunks of rows: the challenge CSV and the course's JSON lines.

    for chunk in read_chunks(path, "spanish.train.csv.gz"): ...   # DataFrames of at most CHUNK_ROWS rows

Nothing here holds the whole file. Every problem with the file, in its header or in a chunk far
into it, is one UserError that names the file. A chunk reads its columns as the whole-file read
did (pandas, the same options but for CSV cells kept as plain Python strings, which the tokenizing
workers convert as before), so the values, and so prepare's output, are the same.

JSON lines have no header: a field missing from a chunk's records is added as NaN (what the
whole-file read gave such records, and "nan" as text), and the file is refused at its end when no
record had a title or a category.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Iterator

from job.errors import UserError

CHUNK_ROWS = 25_000  # rows per chunk: ~8 MB of text in flight per chunk, ~0.25 s of one core's tokenizing
REQUIRED = ("title", "category")


def _read_header(path: Path, name: str) -> list[str]:
    opener = gzip.open if name.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            first = f.readline(1 << 20)
    except (EOFError, OSError, zlib.error) as e:
        raise UserError(f"{name}: cannot read ({type(e).__name__}: {e})") from None
    if not first.strip():
        raise UserError(f"{name}: empty file (no header line)")
    try:
        line = first.decode("utf-8").lstrip("\ufeff").strip()
    except UnicodeDecodeError:
        raise UserError(f"{name}: not UTF-8 text in the header line (binary file?)") from None
    return [c.strip() for c in line.split(",")]


def _check_csv_header(path: Path, name: str) -> None:
    header = _read_header(path, name)
    dupes = sorted({c for c in header if header.count(c) > 1})
    if dupes:
        raise UserError(f"{name}: duplicate column(s) {', '.join(dupes)}")
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        looks_other = len(header) == 1 and (";" in header[0] or "\t" in header[0])
        hint = " (the file looks ';' or tab separated; expected commas)" if looks_other else ""
        raise UserError(f"{name}: missing column(s) {', '.join(missing)}; found {', '.join(header)[:200]}{hint}")


def _open_reader(path: Path, name: str, rows: int):
    """A pandas chunk reader over the file, after the checks that its header allows."""
    import pandas as pd

    base = name[:-3] if name.endswith(".gz") else name
    compression = "gzip" if name.endswith(".gz") else None
    if base.endswith(".jsonl") or base.endswith(".json"):
        return pd.read_json(path, lines=True, dtype=False, compression=compression, chunksize=rows)
    if base.endswith(".csv"):
        _check_csv_header(path, name)
        return pd.read_csv(path, dtype=object, keep_default_na=False, na_filter=False, encoding="utf-8",
                           compression=compression, chunksize=rows)
    raise UserError(f"{name}: unknown data format (expected .csv, .csv.gz, .jsonl or .jsonl.gz)")


def _user_error(e: Exception, name: str) -> UserError:
    """The one-line message for an error pandas or the decompressor raised while reading `name`."""
    import pandas as pd

    if isinstance(e, UnicodeDecodeError):
        return UserError(f"{name}: not UTF-8 text (invalid byte at position {e.start})")
    if isinstance(e, pd.errors.EmptyDataError):
        return UserError(f"{name}: empty file")
    if isinstance(e, pd.errors.ParserError):
        return UserError(f"{name}: malformed CSV: {str(e).strip().splitlines()[-1]}")
    if isinstance(e, (EOFError, OSError, zlib.error)):
        return UserError(f"{name}: cannot read, truncated or corrupt ({type(e).__name__}: {e})")
    return UserError(f"{name}: malformed JSON lines ({str(e).splitlines()[0][:200]})")


_READ_ERRORS = (UnicodeDecodeError, EOFError, OSError, zlib.error, ValueError)  # pandas' parser errors are ValueErrors


def read_chunks(path: Path, name: str, rows: int = CHUNK_ROWS) -> Iterator:
    """The file's rows as DataFrames of strings with at least title and category, `rows` at a time."""
    import numpy as np

    try:
        reader = _open_reader(path, name, rows)
    except UserError:
        raise
    except _READ_ERRORS as e:
        raise _user_error(e, name) from None
    seen: set[str] = set()
    total = 0
    with reader:
        while True:
            try:
                chunk = next(reader)
            except StopIteration:
                break
            except _READ_ERRORS as e:
                raise _user_error(e, name) from None
            seen.update(chunk.columns)
            total += len(chunk)
            for column in REQUIRED:
                if column not in chunk.columns:
                    chunk[column] = np.nan
            yield chunk
    missing = [c for c in REQUIRED if c not in seen]
    if missing:
        raise UserError(f"{name}: missing field(s) {', '.join(missing)}")
    if total == 0:
        raise UserError(f"{name}: no data rows (header only)")
