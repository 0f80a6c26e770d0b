"""Streaming parsers of uploaded measurement files: JSON, JSON Lines and CSV. Pure: no
HTTP here.

A parser is fed the file's bytes chunk by chunk (`feed`, then `close`) and yields an
`Item` per measurement candidate: a decoded `Record` (with the 1-based line where it
starts) or an `Unreadable` line or element. `BadUpload` means the file, or the rest of
it from `line` on, cannot be read. Memory holds one chunk and one partial line or
element (at most `max_item_bytes`).
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, NamedTuple, Protocol

from connectors.http.validation import json_problem
from streams.schemas.measurement import NUMBER_MAPS, STRING_MAPS
from streams.schemas.numbers import (
    DecodeError,
    OutOfRange,
    decode_json,
    json_integer,
    json_number,
)

Format = Literal["json", "jsonl", "csv"]
MEDIA_TYPES: dict[str, Format] = {
    "application/json": "json",
    "application/x-ndjson": "jsonl",
    "application/jsonl": "jsonl",
    "application/x-jsonl": "jsonl",
    "application/jsonlines": "jsonl",
    "application/x-jsonlines": "jsonl",
    "text/csv": "csv",
}
EXTENSIONS: dict[str, Format] = {
    ".json": "json",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
}
_BOM = codecs.BOM_UTF8


# --- what parsers produce --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One decoded measurement candidate, where it starts, and its JSON bytes if reusable."""

    line: int
    value: Any
    raw: bytes | None = None
    index: int | None = None  # position in a JSON array


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A line or element that could not even be decoded."""

    line: int
    reason: str
    index: int | None = None


Item = Record | Unreadable


class BadUpload(Exception):
    """The file (or from `line` on, the rest of it) cannot be read."""

    def __init__(self, reason: str, line: int = 1) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


class Parser(Protocol):
    def feed(self, chunk: bytes) -> Iterator[Item]: ...
    def close(self) -> Iterator[Item]: ...


class UnsupportedFormat(Exception):
    """A file in none of the formats (`MEDIA_TYPES`, `EXTENSIONS`); says what it is."""


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def format_of(content_type: str | None, filename: str | None) -> Format:
    """The format of an uploaded file: from its Content-Type, else its name's extension."""
    kind = MEDIA_TYPES.get(media_type(content_type))
    if kind is None and filename:
        kind = EXTENSIONS.get(filename[filename.rfind(".") :].lower())
    if kind is None:
        raise UnsupportedFormat(f"the uploaded file {filename!r} has Content-Type {content_type!r}")
    return kind


# --- lines -----------------------------------------------------------------------------


class LineSplitter:
    """Complete lines (numbered from 1, without `\\r\\n`) out of arbitrary chunks.

    A line longer than `max_line_bytes` comes out once as None and is skipped.
    """

    def __init__(self, max_line_bytes: int) -> None:
        self.max_line_bytes = max_line_bytes
        self._rest = b""
        self._line = 0
        self._overlong = False

    def feed(self, chunk: bytes) -> Iterator[tuple[int, bytes | None]]:
        data = self._rest + chunk if self._rest else chunk
        start = 0
        while (end := data.find(b"\n", start)) != -1:
            self._line += 1
            if self._overlong:
                self._overlong = False
            else:
                yield self._line, self._cut(data[start:end])
            start = end + 1
        rest = data[start:]
        if not self._overlong and len(rest) > self.max_line_bytes:
            self._overlong = True
            yield self._line + 1, None
        self._rest = b"" if self._overlong else rest

    def close(self) -> Iterator[tuple[int, bytes | None]]:
        if self._rest and not self._overlong:
            self._line += 1
            yield self._line, self._cut(self._rest)
        self._rest = b""

    def _cut(self, line: bytes) -> bytes | None:
        if len(line) > self.max_line_bytes:
            return None
        if self._line == 1:
            line = line.removeprefix(_BOM)
        return line[:-1] if line.endswith(b"\r") else line


class JsonLinesParser:
    """One JSON measurement per line; blank lines are skipped."""

    def __init__(self, max_line_bytes: int) -> None:
        self._lines = LineSplitter(max_line_bytes)

    def feed(self, chunk: bytes) -> Iterator[Item]:
        for line, text in self._lines.feed(chunk):
            yield from self._item(line, text)

    def close(self) -> Iterator[Item]:
        for line, text in self._lines.close():
            yield from self._item(line, text)

    def _item(self, line: int, text: bytes | None) -> Iterator[Item]:
        if text is None:
            yield Unreadable(line, f"the line is longer than {self._lines.max_line_bytes} bytes")
            return
        text = text.strip()
        if not text:
            return
        try:
            value = decode_json(text)
        except DecodeError as exc:
            yield Unreadable(line, f"not valid JSON: {json_problem(text, exc, line=False)}")
        else:
            yield Record(line, value, text)


# --- CSV -------------------------------------------------------------------------------

_SCALARS = ("uid", "meter", "account", "ts", "ets")
_INTEGER = re.compile(r"-?\d+")
_DECIMAL = re.compile(r"-?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


class Column(NamedTuple):
    group: str | None  # the map (e.g. "measure"), None for uid, meter, account, ts, ets
    code: str
    numeric: bool


def parse_header(names: list[str]) -> list[Column]:
    """Columns from a header row; BadUpload naming the first column that is not a field."""
    columns: list[Column] = []
    for position, raw_name in enumerate(names, start=1):
        name = raw_name.strip()
        group, _, code = name.partition(".")
        if not code and name in _SCALARS:
            columns.append(Column(None, name, False))
        elif code and group in STRING_MAPS + NUMBER_MAPS:
            columns.append(Column(group, code, group in NUMBER_MAPS))
        else:
            raise BadUpload(
                f"CSV header column {position} {name!r} is not a measurement field: use "
                f"{', '.join(_SCALARS)} or <map>.<field> with map one of "
                f"{', '.join(STRING_MAPS + NUMBER_MAPS)}"
            )
    seen: set[str] = set()
    for name in (name.strip() for name in names):
        if name in seen:
            raise BadUpload(f"CSV header names column {name!r} twice")
        seen.add(name)
    return columns


def csv_number(cell: str) -> int | Decimal | OutOfRange | str:
    """The exact number a cell spells, as JSON would; anything else stays text (and fails
    validation)."""
    text = cell.strip()
    if _INTEGER.fullmatch(text):
        return json_integer(text)
    if _DECIMAL.fullmatch(text):
        return json_number(text)
    return cell


def row_to_measurement(columns: list[Column], cells: list[str]) -> dict[str, Any]:
    measurement: dict[str, Any] = {}
    for column, cell in zip(columns, cells, strict=True):
        if cell == "":
            continue
        if column.group is None:
            measurement[column.code] = cell
        else:
            value = csv_number(cell) if column.numeric else cell
            measurement.setdefault(column.group, {})[column.code] = value
    return measurement


class CsvParser:
    """A header row, then one measurement per record; blank lines are skipped."""

    def __init__(self, max_record_bytes: int) -> None:
        self._lines = LineSplitter(max_record_bytes)
        self._columns: list[Column] | None = None
        self._pending: list[bytes] = []
        self._pending_line = 0
        self._pending_size = 0
        self._quotes = 0

    def feed(self, chunk: bytes) -> Iterator[Item]:
        for line, text in self._lines.feed(chunk):
            yield from self._line(line, text)

    def close(self) -> Iterator[Item]:
        for line, text in self._lines.close():
            yield from self._line(line, text)
        if self._pending:
            self._pending = []
            yield Unreadable(self._pending_line, "a quoted cell is never closed")
        if self._columns is None:
            raise BadUpload("the CSV file has no header row")

    def _line(self, line: int, text: bytes | None) -> Iterator[Item]:
        if text is None:
            start = self._pending_line if self._pending else line
            self._pending = []
            yield Unreadable(start, f"the record is longer than {self._lines.max_line_bytes} bytes")
            return
        if not self._pending:
            if not text.strip():
                return
            self._pending_line, self._pending_size, self._quotes = line, 0, 0
        self._pending.append(text)
        self._pending_size += len(text) + 1
        self._quotes += text.count(b'"')
        if self._pending_size > self._lines.max_line_bytes:
            self._pending = []
            yield Unreadable(
                self._pending_line, f"the record is longer than {self._lines.max_line_bytes} bytes"
            )
        elif self._quotes % 2 == 0:  # an odd count means a quoted cell continues below
            record, self._pending = b"\n".join(self._pending), []
            yield from self._record(self._pending_line, record)

    def _record(self, line: int, record: bytes) -> Iterator[Item]:
        try:
            cells = next(csv.reader([record.decode()]))
        except (UnicodeDecodeError, csv.Error) as exc:
            if self._columns is None:
                raise BadUpload(f"the CSV header row cannot be read: {exc}") from None
            yield Unreadable(line, f"the CSV record cannot be read: {exc}")
            return
        if self._columns is None:
            self._columns = parse_header(cells)
        elif len(cells) != len(self._columns):
            yield Unreadable(line, f"{len(cells)} cells, but the header has {len(self._columns)}")
        else:
            yield Record(line, row_to_measurement(self._columns, cells))


# --- JSON ------------------------------------------------------------------------------

_OPENING = re.compile(r'\s*(\{\s*"measurements"\s*:\s*)?\[')
_SPACE = re.compile(r"\s*")


class JsonArrayParser:
    """Elements of `[...]` or `{"measurements": [...]}`, decoded one by one as data arrives.

    The buffer holds the undecoded tail: at most one chunk plus one element. An element
    that does not decode is waited on until `max_element_bytes` follow it; then (or at
    the end of the file) it is a syntax error, which ends the file: BadUpload.
    """

    def __init__(self, max_element_bytes: int) -> None:
        self.max_element_bytes = max_element_bytes
        self._text = codecs.getincrementaldecoder("utf-8-sig")()
        # Numbers exactly, as `decode_json` reads them; NaN and Infinity (which this decoder
        # would take) become Decimals that validation refuses, naming the field.
        self._scan = json.JSONDecoder(
            parse_float=json_number, parse_int=json_integer, parse_constant=Decimal
        ).raw_decode
        self._buf = ""
        self._pos = 0
        self._state: Literal["opening", "elements", "closing", "done"] = "opening"
        self._wrapped = False  # the closing '}' of {"measurements": [...]} is still due
        self._comma = False  # a ',' (or the closing ']') must come next
        self._index = 0
        self._line = 1
        self._counted = 0  # buffer position up to which newlines are counted in _line

    def feed(self, chunk: bytes) -> Iterator[Item]:
        yield from self._decode(chunk, end=False)

    def close(self) -> Iterator[Item]:
        yield from self._decode(b"", end=True)
        if self._state != "done":
            where = self._line_at(self._pos)
            raise BadUpload("the file ends before the measurements array is closed", where)

    def _decode(self, chunk: bytes, end: bool) -> Iterator[Item]:
        try:
            text = self._text.decode(chunk, final=end)
        except UnicodeDecodeError as exc:
            raise BadUpload(f"not valid UTF-8: {exc.reason}", self._line_at(self._pos)) from None
        self._line_at(self._pos)
        self._buf = self._buf[self._pos :] + text
        self._counted -= self._pos
        self._pos = 0
        yield from self._parse(end)

    def _parse(self, end: bool) -> Iterator[Item]:
        if self._state == "opening" and not self._open(end):
            return
        if self._state == "elements":
            yield from self._elements(end)
        if self._state in ("closing", "done"):
            self._close()

    def _open(self, end: bool) -> bool:
        opening = _OPENING.match(self._buf)
        if opening is None:
            if not end and len(self._buf.strip()) < 32:
                return False
            raise BadUpload(
                'a JSON upload must be an array of measurements or {"measurements": [...]}'
            )
        self._wrapped = opening.group(1) is not None
        self._pos = opening.end()
        self._state = "elements"
        return True

    def _elements(self, end: bool) -> Iterator[Item]:
        buf, size = self._buf, len(self._buf)
        while True:
            pos = _SPACE.match(buf, self._pos).end()  # type: ignore[union-attr]
            self._pos = pos
            if pos == size:
                return
            if buf[pos] == "]":
                self._pos = pos + 1
                self._state = "closing"
                return
            if self._comma:
                if buf[pos] != ",":
                    raise BadUpload("expected ',' or ']' between measurements", self._line_at(pos))
                self._pos, self._comma = pos + 1, False
                continue
            try:
                value, stop = self._scan(buf, pos)
            except (ValueError, RecursionError) as exc:
                if not end and size - pos <= self.max_element_bytes:
                    return  # most likely cut by the chunk boundary: wait for more
                if isinstance(exc, json.JSONDecodeError):
                    raise BadUpload(f"not valid JSON: {exc.msg}", self._line_at(exc.pos)) from None
                raise BadUpload(f"not valid JSON: {exc}", self._line_at(pos)) from None
            if stop == size and not end:
                return  # a number or literal may go on in the next chunk
            line = self._line_at(pos)
            if stop - pos > self.max_element_bytes:
                reason = f"the measurement is longer than {self.max_element_bytes} bytes"
                yield Unreadable(line, reason, self._index)
            else:
                yield Record(line, value, None, self._index)
            self._index += 1
            self._pos, self._comma = stop, True

    def _close(self) -> None:
        """After the array: only whitespace, and the wrapper's `}` if it had one."""
        buf = self._buf
        while True:
            pos = _SPACE.match(buf, self._pos).end()  # type: ignore[union-attr]
            self._pos = pos
            if pos == len(buf):
                if not self._wrapped:
                    self._state = "done"  # stays done unless more content arrives
                return
            if self._wrapped and buf[pos] == "}":
                self._pos, self._wrapped = pos + 1, False
                continue
            raise BadUpload("unexpected content after the measurements array", self._line_at(pos))

    def _line_at(self, pos: int) -> int:
        if pos > self._counted:
            self._line += self._buf.count("\n", self._counted, pos)
            self._counted = pos
        return self._line


def parser_for(kind: Format, max_item_bytes: int) -> Parser:
    if kind == "json":
        return JsonArrayParser(max_item_bytes)
    if kind == "jsonl":
        return JsonLinesParser(max_item_bytes)
    return CsvParser(max_item_bytes)
