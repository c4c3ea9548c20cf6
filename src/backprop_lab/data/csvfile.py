"""One CSV reader for every table the project takes in: training data (``data.read_csv``) and
predict.py's ``input_csv`` (``predict.read_inputs``).

A file is read as written or rejected in one line that names the file, the row and column, and the
fix; nothing is dropped or changed on the way in. There are no comment lines (a cell ``#1`` is not a
number), quoted fields are read as the text inside the quotes, a number is what Python's
``float()`` reads, and a value that does not fit the precision asked for is an error, not an inf.
The one thing skipped is a line with nothing on it, not even a space: an editor's trailing blank
line holds no data. Rows are numbered as the file shows them, the header being row 1 (a quoted
field that spans lines counts as one row).

The text must be UTF-8, with or without the byte-order mark that spreadsheets write.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from backprop_lab.errors import BackpropLabError

#: The precisions to suggest for a value too large for the one asked for, as trainer.precision
#: names them.
PRECISIONS = {torch.float32: "32", torch.float64: "64"}
#: Anything but a line end: a data row after the header.
_ANY_DATA = re.compile(r"[^\r\n]")


@dataclass(frozen=True)
class Source:
    """How the messages name a file: what it is ("data file"), the setting that gives its path,
    the fix for a missing column, and the error to raise."""

    what: str
    setting: str
    columns_fix: str
    error: type[BackpropLabError] = BackpropLabError


@dataclass(frozen=True)
class Table:
    """A CSV as read: its header, every data row as text, and the named columns as numbers."""

    header: list[str]
    rows: list[list[str]]
    values: Tensor


def read_columns(
    path: str | Path, columns: Sequence[str], source: Source, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The named ``columns`` of the headed CSV at ``path``, a (rows, columns) tensor of ``dtype``.

    A plain numeric file goes through numpy's C parser (10^6 rows in about 0.5 s); anything else,
    and every bad file, through the csv module, which reads it or names what is wrong."""
    path = Path(path).expanduser()
    text = read_text(path, source)
    values = _read_plain(text, columns, dtype)
    if values is None:
        values = _parse(path, text, columns, source, dtype, keep_rows=False).values
    return values


def read_table(
    path: str | Path, columns: Sequence[str], source: Source, dtype: torch.dtype = torch.float64
) -> Table:
    """The whole CSV at ``path``, its rows kept as text beside the named ``columns`` as numbers."""
    path = Path(path).expanduser()
    return _parse(path, read_text(path, source), columns, source, dtype, keep_rows=True)


def read_text(path: Path, source: Source) -> str:
    """The file's text (a leading byte-order mark dropped), or an error saying what the file is
    instead: missing, a directory, unreadable, or not UTF-8."""
    where = f"{source.what} {path}"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise source.error(f"{where} does not exist; check {source.setting}") from None
    except IsADirectoryError:
        raise source.error(
            f"{where} is a directory, not a CSV file; check {source.setting}"
        ) from None
    except OSError as e:
        raise source.error(
            f"{where} cannot be read ({e.strerror}); check {source.setting}"
        ) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        row = raw.count(b"\n", 0, e.start) + 1
        utf16 = raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
        mark = ", a UTF-16 byte-order mark" if utf16 else ""
        raise source.error(
            f"{where} is not UTF-8 text (byte 0x{raw[e.start]:02x} at row {row}{mark}); "
            "save it as UTF-8"
        ) from None
    nul = text.find("\x00")  # valid UTF-8, but what UTF-16 without a byte-order mark looks like
    if nul >= 0:
        row = text.count("\n", 0, nul) + 1
        raise source.error(
            f"{where} is not UTF-8 text (a NUL byte at row {row}, as in UTF-16); save it as UTF-8"
        )
    return text


def _read_plain(text: str, columns: Sequence[str], dtype: torch.dtype) -> Tensor | None:
    """The named columns by numpy's C parser, in half the csv module's time and a fraction of its
    memory, for a file of plain numbers: no quotes (numpy's quoting is laxer than the csv
    module's: it reads ``"1"5`` as 15), every column numeric, every row as wide as the header,
    every used value finite in ``dtype``. None for any other file, for :func:`_parse` to read or
    reject.

    numpy and the csv module split rows and fields alike in a file without quotes, skip the same
    empty lines, and read numbers as float() does, so either reads such a file to the same values.
    """
    if '"' in text:
        return None
    lines = io.StringIO(text, newline="")
    header = [name.strip() for name in next(csv.reader(lines), [])]
    if not header or len(set(header)) < len(header) or not set(columns) <= set(header):
        return None
    if not _ANY_DATA.search(text, lines.tell()):  # no data rows: numpy would only warn
        return None
    try:
        table = np.loadtxt(lines, delimiter=",", comments=None, dtype=np.float64, ndmin=2)
    except ValueError:  # a non-numeric cell or a ragged row
        return None
    if table.shape[1] != len(header):
        return None
    values = torch.from_numpy(table[:, [header.index(c) for c in columns]]).to(dtype)
    return values if bool(torch.isfinite(values).all()) else None


def _parse(
    path: Path,
    text: str,
    columns: Sequence[str],
    source: Source,
    dtype: torch.dtype,
    keep_rows: bool,
) -> Table:
    """Read ``text`` row by row with the csv module, raising at the first bad row, cell or value."""
    where = f"{source.what} {path}"
    records = _records(text, where, source)
    first = next(records, None)
    if first is None:
        raise source.error(f"{where} is empty; it needs a header row and at least one data row")
    header = [name.strip() for name in first[1]]
    index = _column_index(where, header, columns, source)
    rows, numbers, flat = [], [], []
    for number, row in records:
        if len(row) != len(header):
            raise source.error(
                f"{where}, row {number}: {len(row)} field(s), but the header has {len(header)}"
                f"{_no_comments(row[0])}; check that row for a missing or extra comma"
            )
        try:
            flat.extend([float(row[i]) for i in index])
        except ValueError:
            raise _bad_cell(f"{where}, row {number}", row, header, index, source) from None
        numbers.append(number)
        if keep_rows:
            rows.append(row)
    if not numbers:
        raise source.error(f"{where} has a header but no data rows")
    values = torch.tensor(flat, dtype=torch.float64).view(len(numbers), len(index))
    return Table(header, rows, _fit(where, values, dtype, numbers, columns, source))


def _records(text: str, where: str, source: Source) -> Iterator[tuple[int, list[str]]]:
    """(row number, fields) of every row that is not an empty line."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    number = 0
    while True:
        number += 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:  # strict: a stray or unclosed quote is an error, not a guess
            raise source.error(
                f"{where}, row {number}: {e}; check the quotes in that row (a quoted field is "
                'quoted whole and closed, as "1.5")'
            ) from None
        if row:
            yield number, row


def _column_index(
    where: str, header: list[str], columns: Sequence[str], source: Source
) -> list[int]:
    """Where each of ``columns`` is in ``header``; an ambiguous or missing column is an error."""
    duplicated = [name for name, count in Counter(header).items() if count > 1]
    if duplicated:
        raise source.error(
            f"{where} has duplicate column name(s) {duplicated} in its header; give each column "
            "its own name"
        )
    missing = [c for c in columns if c not in header]
    if missing:
        raise source.error(
            f"{where} has no column(s) {missing}; its columns are {header}. {source.columns_fix}"
        )
    return [header.index(c) for c in columns]


def _bad_cell(
    place: str, row: list[str], header: list[str], index: list[int], source: Source
) -> BackpropLabError:
    """The error for the first of the used cells of ``row`` that float() does not read."""
    for i in index:
        cell = row[i]
        try:
            float(cell)
        except ValueError:
            if not cell.strip():
                return source.error(
                    f"{place}, column '{header[i]}' is empty; fill it in or remove that row"
                )
            return source.error(
                f"{place}, column '{header[i]}': {cell!r} is not a number{_no_comments(cell)}; "
                "fix or remove that row"
            )
    raise AssertionError("no cell of the row is bad")


def _no_comments(cell: str) -> str:
    """A note for a cell that looks like the start of a comment, which other readers skip."""
    return (
        " (# starts no comment here: every line is data)" if cell.lstrip().startswith("#") else ""
    )


def _fit(
    where: str,
    values: Tensor,
    dtype: torch.dtype,
    numbers: list[int],
    columns: Sequence[str],
    source: Source,
) -> Tensor:
    """``values`` (float64) in ``dtype``; a value not finite, or too large for ``dtype``, is an
    error naming its row and column."""
    converted = values.to(dtype)
    bad = ~torch.isfinite(converted)
    if not bad.any():
        return converted
    row, col = bad.nonzero()[0].tolist()  # the first in reading order
    value = values[row, col].item()
    place = f"{where}, row {numbers[row]}, column '{columns[col]}'"
    if not math.isfinite(value):
        raise source.error(f"{place}: value {value} is not finite; remove or fix that row")
    wider = next(t for t in PRECISIONS if torch.finfo(t).max >= abs(value))
    raise source.error(
        f"{place}: value {value:g} does not fit {_name(dtype)} (largest "
        f"{torch.finfo(dtype).max:.2g}); train in {_name(wider)} with "
        f"trainer.precision={PRECISIONS[wider]}, or rescale the data"
    )


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
