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

The parts: `parsers` (JSON, JSON Lines, CSV; pure), `multipart` (the `file` field of a
multipart/form-data body; pure), `job` (validate and publish), `routes` (HTTP).
"""

from connectors.http.uploads.routes import UploadLimits, uploads_router

__all__ = ["UploadLimits", "uploads_router"]
