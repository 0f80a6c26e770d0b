"""File upload of measurements: `POST /organizations/{orgId}/fileuploads/measurements`.

The body is the file itself, by Content-Type: `application/json` (an array of
measurements, or `{"measurements": [...]}`), `application/x-ndjson` / `application/jsonl`
(one measurement per line) or `text/csv`; or `multipart/form-data` whose `file` field is
one of those (format from the part's Content-Type, else its file name extension).

Streamed, never buffered whole: memory holds one body chunk, one partial line or
element (at most `max_request_bytes`, the size of a whole ingest request), and the
per-partition envelopes being filled.
- JSON Lines and CSV are split into lines as chunks arrive. CSV: a header row of field
  names (`uid`, `meter`, `account`, `ts`, `ets`, or `<map>.<field>` such as
  `measure.calls`, `who.user`); number maps' cells become numbers; empty cells are
  omitted; a quoted cell may span lines.
- Numbers are read exactly in every format (`streams.schemas.numbers`: int and Decimal
  from the text, never a float) and judged by the one rule (30 digits before the decimal
  point, 20 after; no NaN or Infinity): refused naming the field, never rounded. A JSON
  Lines line is published byte for byte as sent.
- JSON is parsed element by element with the standard library's incremental scanner
  (`JSONDecoder.raw_decode`) over a sliding buffer.

Every measurement is checked on its own (structure, against the `Measurement` model):
valid ones are published in batch envelopes per partition (one per 500 measurements of
a partition, and the rest at the end), invalid ones are reported; neither affects the
other. Order of effects: 1. publish while reading  2. await every acknowledgement
3. answer `{"jobId", "accepted", "rejected", "errors": [first 100]}`. Each error has the
1-based `line` where the measurement starts (and its `index` in a JSON array).

Not all-or-nothing, unlike the ingest API: a file that cannot be read at all (bad CSV
header, not a JSON array, no `file` field) is a 400 and publishes nothing; a problem that
makes the rest of a file unreadable (e.g. a JSON syntax error) ends the job, reported
as its last error. Beyond the upload size cap the answer is 413, reading stops, and the
body says how many measurements were already accepted. Re-uploading is always safe:
measurements are de-duplicated by uid.

`jobId` is derived from the file's content (the same file gives the same id). Job
results are kept in memory by the process that ran the upload (the last 1,000) and
served at `GET .../fileuploads/measurements/{jobId}`.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import hashlib
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Annotated, Any, Literal, NamedTuple, Protocol

from fastapi import APIRouter, Depends, Path, Request, Response
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from connectors.http.auth import ApiError, ApiRoute, json_response, require_org_key
from connectors.http.ingest import (
    ACK_TIMEOUT_S,
    await_acks,
    check_content_length,
    edge_of,
    json_problem,
    measurement_errors,
    unavailable,
)
from connectors.http.openapi import ORG_ERRORS, errors, upload_body
from connectors.kafka.measurements import Envelope, PartitionBatcher
from connectors.kafka.producer import AsyncProducer
from streams.schemas.measurement import NUMBER_MAPS, STRING_MAPS
from streams.schemas.numbers import (
    DecodeError,
    EncodeError,
    OutOfRange,
    decode_json,
    encode_json,
    json_integer,
    json_number,
)
from streams.settings import Settings

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 100 * 1024 * 1024
BATCH_SIZE = 500
MAX_ERRORS = 100
MAX_JOBS = 1000
MAX_IN_FLIGHT = 32  # envelopes produced but not yet acknowledged before reading pauses

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


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def unsupported(what: str) -> ApiError:
    accepted = ", ".join(sorted({*MEDIA_TYPES, "multipart/form-data"}))
    return ApiError(
        415, "unsupported_media_type", f"{what}; accepted: {accepted}", field="Content-Type"
    )


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


# --- multipart -------------------------------------------------------------------------


class MultipartFile:
    """The bytes of the `file` field of a multipart/form-data body, as they stream in."""

    def __init__(self, content_type: str) -> None:
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise BadUpload("multipart/form-data without a boundary")
        self.content_type: str | None = None
        self.filename: str | None = None
        self._found = False
        self._in_file = False
        self._out: list[bytes] = []
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._headers.clear,
                "on_header_field": self._on_field,
                "on_header_value": self._on_value,
                "on_header_end": self._on_header_end,
                "on_headers_finished": self._on_headers_finished,
                "on_part_data": self._on_data,
                "on_part_end": self._on_part_end,
            },
        )

    @property
    def format(self) -> Format:
        kind = MEDIA_TYPES.get(media_type(self.content_type))
        if kind is None and self.filename:
            kind = EXTENSIONS.get(self.filename[self.filename.rfind(".") :].lower())
        if kind is None:
            raise unsupported(
                f"the uploaded file {self.filename!r} has Content-Type {self.content_type!r}"
            )
        return kind

    def feed(self, chunk: bytes) -> list[bytes]:
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise BadUpload(f"malformed multipart/form-data body: {exc}") from None
        out, self._out = self._out, []
        return out

    def close(self) -> list[bytes]:
        out = self.feed(b"")
        self._parser.finalize()
        if not self._found:
            raise BadUpload("the multipart/form-data body has no 'file' field")
        return out

    def _on_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _on_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[self._field.lower()] = self._value
        self._field = self._value = b""

    def _on_headers_finished(self) -> None:
        _, disposition = parse_options_header(self._headers.get(b"content-disposition"))
        if disposition.get(b"name") == b"file" and not self._found:
            self._found = self._in_file = True
            self.content_type = self._headers.get(b"content-type", b"").decode("latin-1")
            filename = disposition.get(b"filename")
            self.filename = filename.decode("utf-8", "replace") if filename else None

    def _on_data(self, data: bytes, start: int, end: int) -> None:
        if self._in_file:
            self._out.append(data[start:end])

    def _on_part_end(self) -> None:
        self._in_file = False


# --- the job ---------------------------------------------------------------------------


class UploadJob:
    """Validates items one by one and publishes the valid ones in envelopes per partition."""

    def __init__(
        self,
        producer: AsyncProducer,
        topic: str,
        partitions: int,
        *,
        batch_size: int = BATCH_SIZE,
        ack_timeout_s: float = ACK_TIMEOUT_S,
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._batcher = PartitionBatcher(partitions, batch_size)
        self._ack_timeout_s = ack_timeout_s
        self._in_flight: list[tuple[asyncio.Future[Any], int]] = []
        self.read = 0
        self.accepted = 0  # acknowledged by Kafka
        self.rejected = 0
        self.errors: list[dict[str, Any]] = []

    def take(self, item: Item) -> None:
        self.read += 1
        if isinstance(item, Unreadable):
            self._reject(item.line, item.index, [{"field": "measurement", "reason": item.reason}])
            return
        problems = measurement_errors(item.value)
        encoded = item.raw
        if not problems and encoded is None:
            try:
                encoded = encode_json(item.value)
            except (EncodeError, ValueError) as exc:  # e.g. a lone surrogate in a string
                problems = [{"field": "measurement", "reason": f"cannot be encoded: {exc}"}]
        if problems or encoded is None:
            self._reject(item.line, item.index, problems)
            return
        envelope = self._batcher.add(item.value["account"], encoded)
        if envelope is not None:
            self._send(envelope)

    def stop(self, error: BadUpload) -> None:
        """The rest of the file cannot be read: report that as the job's last error."""
        self.rejected += 1
        last = {
            "line": error.line,
            "field": "measurement",
            "reason": f"{error.reason}; the rest of the file was not read",
        }
        self.errors[MAX_ERRORS - 1 :] = [last]  # always listed, even past the first 100

    async def settle(self) -> None:
        """Wait for acknowledgements once too many envelopes are in flight (back-pressure)."""
        if len(self._in_flight) >= MAX_IN_FLIGHT:
            await self._acknowledged()

    async def finish(self) -> None:
        for envelope in self._batcher.drain():
            self._send(envelope)
        await self._acknowledged()

    async def abandon(self) -> None:
        """Publish nothing more; wait for what is in flight (413 mid-stream)."""
        self._batcher = PartitionBatcher(self._batcher.partitions, self._batcher.batch_size)
        await self._acknowledged()

    def result(self, job_id: str) -> dict[str, Any]:
        return {
            "jobId": job_id,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "errors": self.errors,
        }

    def _send(self, envelope: Envelope) -> None:
        future = self._producer.produce(
            self._topic, envelope.value, key=envelope.key, partition=envelope.partition
        )
        self._in_flight.append((future, envelope.count))

    async def _acknowledged(self) -> None:
        in_flight, self._in_flight = self._in_flight, []
        problem = await await_acks([future for future, _ in in_flight], self._ack_timeout_s)
        if problem is not None:
            raise unavailable(problem)
        self.accepted += sum(count for _, count in in_flight)

    def _reject(self, line: int, index: int | None, problems: list[dict[str, str]]) -> None:
        self.rejected += 1
        for problem in problems:
            if len(self.errors) >= MAX_ERRORS:
                return
            where: dict[str, Any] = (
                {"line": line} if index is None else {"line": line, "index": index}
            )
            self.errors.append({**where, **problem})


class JobStore:
    """Results of the last `limit` upload jobs of this process."""

    def __init__(self, limit: int = MAX_JOBS) -> None:
        self.limit = limit
        self._jobs: OrderedDict[str, dict[str, Any]] = OrderedDict()

    def put(self, result: dict[str, Any]) -> None:
        self._jobs[result["jobId"]] = result
        self._jobs.move_to_end(result["jobId"])
        while len(self._jobs) > self.limit:
            self._jobs.popitem(last=False)

    def get(self, job_id: str) -> dict[str, Any] | None:
        return self._jobs.get(job_id)


# --- the routes ------------------------------------------------------------------------


@dataclass(frozen=True)
class UploadLimits:
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_item_bytes: int = 512_000
    batch_size: int = BATCH_SIZE
    ack_timeout_s: float = ACK_TIMEOUT_S


class _TooLarge(Exception):
    pass


async def read_upload(request: Request, job: UploadJob, limits: UploadLimits) -> str:
    """Feed the body through its parser into `job`; return the job id (content digest).

    Raises 415 for an unknown format, 400 when nothing of the file can be read.
    """
    content_type = request.headers.get("content-type", "")
    kind = media_type(content_type)
    if kind != "multipart/form-data" and kind not in MEDIA_TYPES:
        raise unsupported(f"Content-Type {kind or 'missing'!r} is not an upload format")
    digest = hashlib.sha256()
    try:
        await _read(request, job, limits, content_type, digest.update)
    except BadUpload as error:
        if job.read == 0:
            where = f"line {error.line}: " if error.line > 1 else ""
            raise ApiError(400, "invalid_upload", f"{where}{error.reason}", field="file") from None
        job.stop(error)
    return digest.hexdigest()[:32]


async def _read(
    request: Request,
    job: UploadJob,
    limits: UploadLimits,
    content_type: str,
    on_file_bytes: Callable[[bytes], None],
) -> None:
    kind = media_type(content_type)
    unpack = MultipartFile(content_type) if kind == "multipart/form-data" else None
    parser = None if unpack is not None else parser_for(MEDIA_TYPES[kind], limits.max_item_bytes)

    def take(pieces: list[bytes]) -> None:
        nonlocal parser
        for piece in pieces:
            if parser is None:
                assert unpack is not None
                parser = parser_for(unpack.format, limits.max_item_bytes)
            on_file_bytes(piece)
            for item in parser.feed(piece):
                job.take(item)

    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limits.max_upload_bytes:
            raise _TooLarge
        take(unpack.feed(chunk) if unpack is not None else [chunk])
        await job.settle()
    if unpack is not None:
        take(unpack.close())
    if parser is None:  # an empty file field
        assert unpack is not None
        parser = parser_for(unpack.format, limits.max_item_bytes)
    for item in parser.close():
        job.take(item)


def uploads_router(settings: Settings, limits: UploadLimits | None = None) -> APIRouter:
    """The upload and job routes; `limits` default to 100 MB uploads and the ingest sizes."""
    limits = limits or UploadLimits(max_item_bytes=settings.max_request_bytes)
    router = APIRouter(route_class=ApiRoute, tags=["ingest"])
    authorized_org = require_org_key(settings)
    jobs = JobStore()
    path = "/organizations/{orgId}/fileuploads/measurements"

    @router.post(
        path,
        summary="Upload a file of measurements",
        responses=errors(*ORG_ERRORS, 413, 415, 503),
        openapi_extra=upload_body(MEDIA_TYPES, settings.max_measurements_per_request),
    )
    async def upload_measurements(
        request: Request, org_id: str = Depends(authorized_org)
    ) -> Response:
        edge = edge_of(request)
        counter = edge.metrics.measurements
        check_content_length(request, limits.max_upload_bytes)
        job = UploadJob(
            edge.producer,
            edge.topics.measurements,
            edge.topics.partitions,
            batch_size=limits.batch_size,
            ack_timeout_s=limits.ack_timeout_s,
        )
        try:
            job_id = await read_upload(request, job, limits)
            await job.finish()
        except _TooLarge:
            await job.abandon()
            counter.labels("upload", "accepted").inc(job.accepted)
            raise ApiError(
                413,
                "payload_too_large",
                f"the upload exceeds {limits.max_upload_bytes} bytes; reading stopped there, "
                f"{job.accepted} measurements before that point were accepted",
                field="body",
                accepted=job.accepted,
            ) from None
        counter.labels("upload", "accepted").inc(job.accepted)
        counter.labels("upload", "rejected").inc(job.rejected)
        result = job.result(job_id)
        jobs.put(result)
        log.info(
            "org %s: upload job %s accepted %d, rejected %d measurements",
            org_id,
            job_id,
            job.accepted,
            job.rejected,
        )
        return json_response(result)

    @router.get(
        path + "/{jobId}", summary="The result of an upload job", responses=errors(*ORG_ERRORS)
    )
    async def upload_job(
        job_id: Annotated[str, Path(alias="jobId")], org_id: str = Depends(authorized_org)
    ) -> Response:
        result = jobs.get(job_id)
        if result is None:
            raise ApiError(
                404,
                "not_found",
                f"no upload job {job_id!r} in this process (it keeps the results of its "
                f"last {jobs.limit} uploads in memory)",
                field="jobId",
            )
        return json_response(result)

    return router
