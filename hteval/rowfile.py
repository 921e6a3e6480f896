"""An append-only CSV table that a run writes one complete row at a time and a later run resumes from.

Whole-model runs (`hteval.network_analysis`, `hteval.layer_comparison`, `hteval.checkpoints`) write each result the
moment it exists, so a kill loses at most the fit in progress. A line goes to the file in one write call, so a kill,
or a disk that fills or turns read-only mid-line, leaves at most one partial line at the end: reading ignores it,
the next run that appends cuts it off before its first row, and its row is computed again. After a failed write a
table takes no more rows from that run, so a partial line is never followed by another. A stop (SIGINT, SIGTERM)
that arrives while a line is written takes effect once it is whole (`hteval.interrupts.signals_deferred`).
Finished lines are never rewritten. A run over a table written with other columns (other models, another hteval
version) is refused rather than mixed into it.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from hteval.errors import InputError, OutputError
from hteval.interrupts import signals_deferred


class RowFile:
    """The table at `path` with these columns; `key` names the columns that identify a row (what resuming skips)."""

    def __init__(self, path: str | Path, columns: Sequence[str], key: Sequence[str]):
        self.path, self.columns, self.key = Path(path), list(columns), tuple(key)

    def key_of(self, row: Mapping[str, Any]) -> tuple[str, ...]:
        """The key of a row as it reads back from the file (missing cells are empty strings)."""
        return tuple(str(cell(row.get(c))) for c in self.key)

    def read(self, bool_columns: Sequence[str] = ()) -> pd.DataFrame:
        """The table as written so far (`read_table`)."""
        return read_table(self.path, bool_columns)

    def finished(self) -> set[tuple[str, ...]]:
        """Keys of the complete rows already in the file; InputError when its header is not these columns."""
        text = complete_lines(self.path)
        if not text:
            return set()
        rows = list(csv.reader(io.StringIO(text)))
        if rows[0] != self.columns:
            raise InputError(f"{self.path} was written for other models or by another hteval version; "
                             "choose a new --out (or delete it to start again)")
        at = [self.columns.index(c) for c in self.key]
        return {tuple(r[i] for i in at) for r in rows[1:]}

    def complete_rows(self) -> int:
        """How many complete rows the file holds."""
        return max(len(list(csv.reader(io.StringIO(complete_lines(self.path))))) - 1, 0)

    @contextmanager
    def appending(self, total: int = 0, on_row: Callable[[Mapping[str, Any], int, int], None] | None = None
                  ) -> Iterator[Writer]:
        """A Writer of rows (each written in one call), with the header first when the file is new and a partial
        last line cut off first; on_row(row, done, total) is called after each row, done counting the rows
        written and those skipped as finished. A failed write raises OutputError (`write_error`)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as err:
            raise write_error(self.path, err, self) from err
        try:
            append = _Appender(self, fd)
            if os.fstat(fd).st_size == 0:
                append(dict(zip(self.columns, self.columns, strict=True)))
            yield Writer(append, total, on_row)
        finally:
            os.close(fd)


class RowList(RowFile):
    """A RowFile kept in memory (a run with nothing written to disk): the same columns and cells, read back as
    the file would be, so that a table does not depend on where its rows were kept."""

    def __init__(self, columns: Sequence[str], key: Sequence[str]):
        self.path, self.columns, self.key = None, list(columns), tuple(key)
        self._text = io.StringIO()
        self._text.write(_line(self.columns, dict(zip(self.columns, self.columns, strict=True))))

    def finished(self) -> set[tuple[str, ...]]:
        return set()

    @contextmanager
    def appending(self, total: int = 0, on_row: Callable[[Mapping[str, Any], int, int], None] | None = None
                  ) -> Iterator[Writer]:
        yield Writer(lambda row: self._text.write(_line(self.columns, row)), total, on_row)

    def read(self, bool_columns: Sequence[str] = ()) -> pd.DataFrame:
        return parse_table(self._text.getvalue(), bool_columns)


class Writer:
    """Writes rows and counts them, with the rows a resumed run skips, for a progress callback."""

    def __init__(self, write: Callable[[Mapping[str, Any]], None], total: int,
                 on_row: Callable[[Mapping[str, Any], int, int], None] | None):
        self._write, self.total, self._on_row, self.done = write, total, on_row, 0

    def __call__(self, row: Mapping[str, Any]) -> None:
        self._write(row)
        self.done += 1
        if self._on_row is not None:
            self._on_row(row, self.done, self.total)

    def skip(self) -> None:
        """Count a row finished by an earlier run."""
        self.done += 1


def read_table(path: str | Path, bool_columns: Sequence[str] = ()) -> pd.DataFrame:
    """A row file as a DataFrame (a trailing line cut short by a kill is ignored); each of `bool_columns` is a
    bool column, False where its cell is empty."""
    return parse_table(complete_lines(Path(path)), bool_columns)


def parse_table(text: str, bool_columns: Sequence[str] = ()) -> pd.DataFrame:
    """Complete CSV lines (header first) as read_table reads them."""
    if not text:
        return pd.DataFrame()
    table = pd.read_csv(io.StringIO(text))
    for column in bool_columns:
        if column in table:
            table[column] = table[column].map(lambda c: str(c) == "True")
    return table


def in_order(table: pd.DataFrame, column: str, order: Sequence[str]) -> pd.DataFrame:
    """The rows sorted stably by the position of their `column` value in `order` (values not in it last), with
    a fresh index: a run's table in its network or step order, whatever order the rows were written in."""
    if table.empty:
        return table
    rank = {value: i for i, value in enumerate(dict.fromkeys(order))}
    table = table.sort_values(column, key=lambda c: c.map(rank).fillna(len(rank)), kind="stable")
    return table.reset_index(drop=True)


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """write(handle) into a temporary file that then replaces `path`: a reader never sees half a file. A write that
    fails leaves `path` as it was, removes the temporary file and raises OutputError (`write_error`)."""
    partial = path.with_name(path.name + ".partial")
    try:
        with partial.open("wb") as handle:
            write(handle)
        partial.replace(path)
    except BaseException as err:
        try:
            partial.unlink(missing_ok=True)
        except OSError:  # a read-only folder never had it
            pass
        if isinstance(err, OSError):
            raise write_error(path, err) from err
        raise


def write_error(path: str | Path, err: OSError, table: RowFile | None = None) -> OutputError:
    """The OutputError of a write to `path` that failed with `err`; with `table`, it says how many complete rows
    the table keeps for the run that resumes it."""
    message = f"cannot write {path}: {err.strerror or err}"
    rows = None
    if table is not None and table.path is not None:
        rows = table.complete_rows()
        where = "" if Path(path) == table.path else f" to {table.path}"
        message += (f"; the {rows} row{'' if rows == 1 else 's'} already written{where} "
                    f"{'is' if rows == 1 else 'are'} kept, and the same command resumes")
    return OutputError(message, path=str(path), errno=err.errno, rows=rows)


def cell(value):
    """How a value is written: lists as AxB, non-finite floats and None as empty cells, floats round-trip exact."""
    if value is None:
        return ""
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    if isinstance(value, (float, np.floating)):
        return repr(float(value)) if np.isfinite(value) else ""
    return value


def complete_lines(path: Path) -> str:
    """The file's text up to its last newline (a line cut short by a kill or a failed write is left out)."""
    if not path.exists():
        return ""
    data = path.read_bytes()
    return data[: data.rfind(b"\n") + 1].decode("utf-8")


class _Appender:
    """Writes a table's rows to its open file, each line in one call, after cutting off a partial last line.
    After a failed write it refuses every row: a line after a partial one would join it into one bad row."""

    def __init__(self, table: RowFile, fd: int):
        self._table, self._fd, self._failed = table, fd, None
        try:
            _cut_partial_line(fd)
        except OSError as err:
            raise write_error(table.path, err, table) from err

    def __call__(self, row: Mapping[str, Any]) -> None:
        if self._failed is not None:
            raise write_error(self._table.path, self._failed, self._table) from self._failed
        data = _line(self._table.columns, row).encode("utf-8")
        try:
            with signals_deferred():  # a stop signal, or the command line's immediate exit, waits for the line
                while data:
                    data = data[os.write(self._fd, data):]
        except OSError as err:
            self._failed = err
            raise write_error(self._table.path, err, self._table) from err


def _cut_partial_line(fd: int) -> None:
    size = os.fstat(fd).st_size
    end = size
    while end > 0:  # back to the last newline, a block at a time
        start = max(end - 65536, 0)
        at = os.pread(fd, end - start, start).rfind(b"\n")
        if at >= 0:
            end = start + at + 1
            break
        end = start
    if end < size:
        os.ftruncate(fd, end)


def _line(columns, row) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([cell(row.get(c)) for c in columns])
    return buffer.getvalue()
