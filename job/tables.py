"""Prepare's input, cut into pieces of whole records: the challenge CSV and the course's JSON lines.

    plain = staged(path, name, staging)                  # a .gz input decompressed once, to local disk
    for piece in pieces(plain, name):                    # byte ranges of CHUNK_ROWS lines each
        frame, columns = parse(piece)                    # in any process: it reads its own range

Nothing here holds the whole file. The cutting process only finds where pieces end: after a line
end outside any quoted CSV field, so a record never spans two pieces (a piece holds more than
CHUNK_ROWS lines where a quoted field holds a line break). `parse` reads a piece's bytes from the
file and parses them with pandas (the options of a whole-file read; CSV cells kept as plain Python
strings). pandas' chunked reader read the same lines a chunk at a time, so the values, and so
prepare's output, are the same. Every problem with the file, in its header or in a piece far into
it, is one UserError that names the file (a CSV error with the file's line number).

JSON lines have no header: a field missing from a piece's records is added as NaN (what the
whole-file read gave such records, and "nan" as text), and prepare refuses the file at its end
when no record had a title or a category.
"""

from __future__ import annotations

import gzip
import io
import re
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from job.errors import UserError

CHUNK_ROWS = 25_000  # lines per piece: what one worker parses and tokenizes at a time (sizes: docs/data.md)
READ_BYTES = 4 << 20  # bytes read at a time while cutting pieces, or decompressing
REQUIRED = ("title", "category")


def _read_header(path: Path, name: str) -> list[str]:
    try:
        with open(path, "rb") as f:
            first = f.readline(1 << 20)
    except OSError as e:
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


def _kind(name: str) -> str:
    base = name[:-3] if name.endswith(".gz") else name
    if base.endswith(".jsonl") or base.endswith(".json"):
        return "jsonl"
    if base.endswith(".csv"):
        return "csv"
    raise UserError(f"{name}: unknown data format (expected .csv, .csv.gz, .jsonl or .jsonl.gz)")


def _user_error(e: Exception, name: str, line_shift: int = 0) -> UserError:
    """The one-line message for an error pandas or the decompressor raised while reading `name`; line_shift
    turns the line (row) numbers of a CSV piece's error into the file's."""
    import pandas as pd

    if isinstance(e, UnicodeDecodeError):
        return UserError(f"{name}: not UTF-8 text (invalid byte at position {e.start})")
    if isinstance(e, pd.errors.EmptyDataError):
        return UserError(f"{name}: empty file")
    if isinstance(e, pd.errors.ParserError):
        message = str(e).strip().splitlines()[-1]
        if line_shift:
            message = re.sub(r"\b(line|row) (\d+)", lambda m: f"{m[1]} {int(m[2]) + line_shift}", message)
        return UserError(f"{name}: malformed CSV: {message}")
    if isinstance(e, (EOFError, OSError, zlib.error)):
        return UserError(f"{name}: cannot read, truncated or corrupt ({type(e).__name__}: {e})")
    return UserError(f"{name}: malformed JSON lines ({str(e).splitlines()[0][:200]})")


_READ_ERRORS = (UnicodeDecodeError, EOFError, OSError, zlib.error, ValueError)  # pandas' parser errors are ValueErrors


@dataclass
class Piece:
    """Whole records of the file, as a byte range: what a worker reads and parses."""

    name: str  # the input's name, for messages
    kind: str  # "csv" or "jsonl"
    path: Path  # the plain (decompressed) file
    header: bytes  # a CSV's header line, parsed ahead of every piece; b"" for JSON lines
    start: int  # byte offsets of the piece in the file: [start, end)
    end: int
    first_line: int  # the file's line number of the piece's first line

    def read(self) -> bytes:
        with open(self.path, "rb") as f:
            f.seek(self.start)
            return f.read(self.end - self.start)


def staged(path: Path, name: str, staging: Path) -> Path:
    """The input as a plain file: a .gz one decompressed into staging (once: every worker then reads its own range
    of it), any other as it is. A CSV's header is checked here."""
    kind = _kind(name)
    if name.endswith(".gz"):
        plain = staging / f"input.{kind}"
        try:
            with gzip.open(path, "rb") as f, open(plain, "wb") as out:
                shutil.copyfileobj(f, out, READ_BYTES)
        except (EOFError, OSError, zlib.error) as e:
            raise _user_error(e, name) from None
        path = plain
    if kind == "csv":
        _check_csv_header(path, name)
    return path


# A CSV field is quoted when a '"' starts it (at the start of a record, or after a ',' or a line end);
# a '"' anywhere else is a character of the field (pandas' C parser, as in 'TV 32" LED'). A quoted
# field ends at a '"' that is not one of a doubled pair: the pattern takes every pair first.
_QUOTED = re.compile(rb'"[^"]*+(?:""[^"]*+)*+"')


def _piece_end(buf: bytes, newlines, rows: int, eof: bool, quoted: bool) -> int | None:
    """Where the piece of `rows` lines from the start of buf ends: after a line end outside any quoted
    field (the first such one from the rows-th on). None: more data is needed to tell."""
    k = rows - 1
    pos = 0
    while True:
        if k >= len(newlines):
            return len(buf) if eof else None
        cut = int(newlines[k])
        opening = buf.find(b'"', pos, cut) if quoted else -1
        while opening > 0 and buf[opening - 1] not in b",\r\n":  # a '"' inside a field: a character
            opening = buf.find(b'"', opening + 1, cut)
        if opening < 0:
            return cut + 1
        closing = _QUOTED.match(buf, opening)
        if closing is None or (closing.end() == len(buf) and not eof):  # still open in what was read
            return len(buf) if eof else None  # at the end: pandas reports the open quote
        pos = closing.end()
        if pos > cut:  # the line end was inside the quoted field: the next one after it
            k = int(np.searchsorted(newlines, pos))


def pieces(path: Path, name: str, rows: int = CHUNK_ROWS) -> Iterator[Piece]:
    """The plain file's records in pieces of `rows` lines (more where a quoted field holds a line break), found
    without parsing; a file with no data rows gives one empty piece, which still tells a CSV's columns."""
    kind = _kind(name)
    with open(path, "rb") as f:
        header = f.readline() if kind == "csv" else b""
        start, line = len(header), 1 + header.count(b"\n")
        buf, newlines, eof, cut = b"", np.zeros(0, dtype=np.int64), False, 0
        while True:
            end = _piece_end(buf, newlines, rows, eof, kind == "csv")
            if end is None:  # more data is needed to tell
                block = f.read(READ_BYTES)
                eof = not block
                found = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n"))
                buf, newlines = buf + block, np.concatenate([newlines, found + len(buf)])
                continue
            if end == 0:  # the end of the file
                if cut == 0:
                    yield Piece(name, kind, path, header, start, start, line)
                return
            yield Piece(name, kind, path, header, start, start + end, line)
            taken = int(np.searchsorted(newlines, end))  # line ends in the piece
            start, line, cut = start + end, line + taken, cut + 1
            buf, newlines = buf[end:], newlines[taken:] - end


def parse(piece: Piece) -> tuple:
    """(a DataFrame of strings with at least title and category, NaN where a JSON record has none; the columns read)."""
    import pandas as pd

    try:
        data = piece.read()
        if piece.kind == "csv":
            frame = pd.read_csv(io.BytesIO(piece.header + data), dtype=object, keep_default_na=False,
                                na_filter=False, encoding="utf-8")
        else:
            frame = pd.read_json(io.BytesIO(data), lines=True, dtype=False)
    except _READ_ERRORS as e:
        raise _user_error(e, piece.name, piece.first_line - 1 - piece.header.count(b"\n")) from None
    columns = tuple(frame.columns)
    for column in REQUIRED:
        if column not in columns:
            frame[column] = np.nan
    return frame, columns


def check_whole(name: str, seen: set, rows: int) -> None:
    """After the last piece: the file's records had a title and a category (in any piece), and there was a row."""
    missing = [c for c in REQUIRED if c not in seen]
    if missing:
        raise UserError(f"{name}: missing field(s) {', '.join(missing)}")
    if rows == 0:
        raise UserError(f"{name}: no data rows (header only)")
