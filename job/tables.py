"""Prepare's input, cut into pieces of whole records: the challenge CSV and the course's JSON lines.

    for piece in pieces(path, "spanish.train.csv.gz"): frame = parse(piece)   # at most CHUNK_ROWS rows each

Nothing here holds the whole file. The reading process only decompresses and cuts: each piece is
the bytes of CHUNK_ROWS lines (more where a quoted CSV field holds a line break), and `parse`, which
prepare's workers run, reads a piece with pandas (the options of a whole-file read, but for CSV
cells kept as plain Python strings, which the tokenizing workers convert as before). A record never
spans two pieces, and pandas' chunked reader read the same lines a chunk at a time, so the values,
and so prepare's output, are the same. Every problem with the file, in its header or in a piece
far into it, is one UserError that names the file (a CSV error with the file's line number).

JSON lines have no header: a field missing from a piece's records is added as NaN (what the
whole-file read gave such records, and "nan" as text), and prepare refuses the file at its end
when no record had a title or a category.
"""

from __future__ import annotations

import gzip
import io
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from job.errors import UserError

CHUNK_ROWS = 25_000  # rows per piece: ~8 MB of text in flight per piece, ~0.25 s of one core's tokenizing
TAIL_SPLIT = 4  # the file's last pieces (pieces(tail=...)) are cut this many times smaller
READ_BYTES = 4 << 20  # decompressed bytes read at a time while cutting pieces
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
    """Whole records of the file, as bytes: what a worker parses."""

    name: str  # the file's name, for messages
    kind: str  # "csv" or "jsonl"
    header: bytes  # a CSV's header line, parsed ahead of every piece; b"" for JSON lines
    data: bytes
    first_line: int  # the file's line number of the piece's first line


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


def pieces(path: Path, name: str, rows: int = CHUNK_ROWS, tail: int = 0) -> Iterator[Piece]:
    """The file's records in pieces of `rows` lines, cut without parsing: for parse(), in any process. The last
    `tail` pieces' worth of lines, estimated from how far into the (compressed) file the reading is, are cut
    TAIL_SPLIT times smaller: processes that share the pieces out then finish closer together. Where the pieces
    end changes nothing in what they hold."""
    kind = _kind(name)
    if kind == "csv":
        _check_csv_header(path, name)
    opener = gzip.open if name.endswith(".gz") else open
    size = path.stat().st_size
    try:
        with opener(path, "rb") as f:
            raw = getattr(f, "fileobj", f)  # a gzip file's compressed file, where its position is known
            header = f.readline() if kind == "csv" else b""
            line = 1 + header.count(b"\n")
            buf, newlines = b"", np.zeros(0, dtype=np.int64)
            eof = more = False
            yielded = False
            while True:
                if not eof and (more or len(newlines) < rows):
                    block = f.read(READ_BYTES)
                    if block:
                        found = np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n"))
                        newlines = np.concatenate([newlines, found + len(buf)])
                        buf, more = buf + block, False
                        continue
                    eof = True
                if not buf:
                    if not yielded:  # no data rows: one empty piece still tells the columns (a CSV's header)
                        yield Piece(name, kind, header, b"", line)
                    return
                end = _piece_end(buf, newlines, _rows_now(rows, tail, len(newlines), line + len(newlines), raw.tell(), size),
                                 eof, kind == "csv")
                if end is None:
                    more = True
                    continue
                yield Piece(name, kind, header, buf[:end], line)
                yielded = True
                taken = int(np.searchsorted(newlines, end))  # line ends in the piece
                line += taken
                buf, newlines = buf[end:], newlines[taken:] - end
    except (EOFError, OSError, zlib.error) as e:
        raise _user_error(e, name) from None


def _rows_now(rows: int, tail: int, buffered: int, lines_read: int, position: int, size: int) -> int:
    """The next piece's lines: `rows`, or rows / TAIL_SPLIT once fewer than `tail` pieces' worth seem to be left (the
    lines read but not yet cut, and the rest of the file at the average size of the lines read so far)."""
    if not tail or position <= 0:
        return rows
    lines_left = buffered + (size - position) * lines_read / position
    return max(1, rows // TAIL_SPLIT) if lines_left < tail * rows else rows


def parse(piece: Piece) -> tuple:
    """(a DataFrame of strings with at least title and category, NaN where a JSON record has none; the columns read)."""
    import pandas as pd

    try:
        if piece.kind == "csv":
            frame = pd.read_csv(io.BytesIO(piece.header + piece.data), dtype=object, keep_default_na=False,
                                na_filter=False, encoding="utf-8")
        else:
            frame = pd.read_json(io.BytesIO(piece.data), lines=True, dtype=False)
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
