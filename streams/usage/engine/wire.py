"""Wire formats of the usage engine: delta messages and snapshot records (version 1).

Every value is JSON written as `orjson.dumps(document, option=OPT_SORT_KEYS)`: compact,
object keys sorted by code point (= UTF-8 byte order), strings escaped as orjson does.
The same state and batch always give the same bytes, so a native implementation can be
checked byte for byte against this one. Integers are JSON integers; exact numbers are
canonical Decimal strings (`streams.usage.canonical`: "12.5", "3", "1E+29"), never floats.

A cell (the usage of one aggregation and segment in one window) is today's state
document (`streams.usage.to_document`) limited to what the aggregation needs:

    {"n": count, "s": sum, "lo": min, "hi": max, "lt": latest ts, "l": latest value,
     "u": [distinct values, sorted]}          # only "n" always; "u" only when non-empty

A piece is one account-hour's share (hour slot = ts // 3,600,000): its windows (the hour,
split at billing boundaries) and the 64-bit uid hashes (`uid_hash`) it adds or holds,
packed as one base64 string (standard alphabet, padded) of sorted big-endian uint64s:

    {"u": "<base64>", "w": {"<window start>": {"<aggregation>": {"<segment>": cell}}}}

Segments leave room for aggregations grouped by a string field; "" is the only segment
today. Keys that are numbers are written in decimal ("1767225600000").

Delta message, key `<partition>|<seq>|<chunk>`, on the delta topic's `partition`:

    {"accounts": {"<account>": {"<slot>": piece}}, "chunk": c, "chunks": n,
     ["expire": {"uids_before": slot, "windows_before": slot},]
     "kind": "delta", "newest": ts, "partition": p, "seq": s, "v": 1}

A piece in a delta holds the batch's contribution (merged into the state on apply).
One batch gives one seq per partition, in chunks 0..n-1 of at most `max_delta_bytes`;
an account's pieces are in one chunk unless they alone exceed it, and a piece (an
account-hour's usage with its uids) is never split. An expiry is a delta of its own,
with no accounts and an `expire` member.

Snapshot topic (compacted), on the account's partition:

    key `<account>|<slot>` (`streams.usage.store.record_key`, today's usage table key)
    {"account": a, "kind": "segment", "partition": p, "seq": S, "slot": h,
     "u": "<base64>", "w": {...}, "v": 1}         # the whole account-hour at seq S
    a tombstone (null value) for a segment that became empty

    key `|partition|<p>` (no account key starts with "|")
    {"expired": {"uids_before": slot, "windows_before": slot}, "kind": "marker",
     "newest": ts, "partition": p, "seq": S, "v": 1}
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from collections.abc import Iterable
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, NamedTuple

import orjson

from streams.tables import split_key
from streams.usage.engine.state import Cell, Cells, WindowCells
from streams.usage.state import canonical
from streams.usage.store import UID_SEPARATOR, record_key

VERSION = 1
SORTED = orjson.OPT_SORT_KEYS
# Bytes of a delta message around its accounts (the other members, at most 20 digits each).
ENVELOPE_BYTES = 256
MARKER_PREFIX = b"|partition|"
DELTA_PREFIX = b"|delta|"


class WireError(ValueError):
    """A delta or snapshot record this engine cannot read: where, and why."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


def uid_hash(meter: str, uid: str) -> int:
    """The 64-bit de-duplication hash of (meter, uid): the same 8 bytes as
    `streams.usage.store.uid_key`, as an int (36 bytes in memory instead of 60)."""
    digest = hashlib.blake2b(meter.encode() + UID_SEPARATOR + uid.encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big")


# --- cells, pieces ---------------------------------------------------------------------


def number_text(number: Decimal) -> str:
    """`str(canonical(number))`, without `canonical`'s cost when the text already is."""
    text = str(number)
    if "E" in text or (
        text[-1] == "0" if "." in text else len(text) - (text[0] == "-") > 28 or text == "-0"
    ):
        return str(canonical(number))
    return text


@lru_cache(maxsize=4096)
def json_key(text: str) -> bytes:
    """A JSON string (an object key), as orjson writes it."""
    return orjson.dumps(text)


def cell_document(cell: Cell) -> dict[str, Any]:
    """The cell's document: `streams.usage.to_document` of its state."""
    count, sum_, min_, max_, latest, unique = cell
    document: dict[str, Any] = {"n": count}
    if sum_ is not None:
        document["s"] = number_text(sum_)
    if min_ is not None:
        document["lo"] = number_text(min_)
    if max_ is not None:
        document["hi"] = number_text(max_)
    if latest is not None:
        document["lt"] = latest[0]
        document["l"] = number_text(latest[1])
    if unique:
        document["u"] = sorted(unique)
    return document


def windows_document(windows: WindowCells) -> dict[str, Any]:
    """{"<start>": {"<aggregation>": {"<segment>": cell}}}."""
    out: dict[str, Any] = {}
    for start, cells in windows.items():
        codes: dict[str, dict[str, Any]] = {}
        for (code, segment), cell in cells.items():
            segments = codes.get(code)
            if segments is None:
                codes[code] = {segment: cell_document(cell)}
            else:
                segments[segment] = cell_document(cell)
        out[str(start)] = codes
    return out


def pack_uids(hashes: Iterable[int]) -> str:
    """Sorted big-endian uint64s, base64 (standard alphabet, padded)."""
    ordered = sorted(hashes)
    return base64.b64encode(struct.pack(f">{len(ordered)}Q", *ordered)).decode()


def unpack_uids(text: str, where: str) -> list[int]:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise WireError(where, f"not base64: {exc}") from None
    if len(raw) % 8:
        raise WireError(where, "not a whole number of 8-byte hashes")
    return list(struct.unpack(f">{len(raw) // 8}Q", raw))


def piece_document(windows: WindowCells, hashes: Iterable[int]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    packed = pack_uids(hashes)
    if packed:
        document["u"] = packed
    if windows:
        document["w"] = windows_document(windows)
    return document


def encode_piece(windows: WindowCells, hashes: Iterable[int]) -> bytes:
    return orjson.dumps(piece_document(windows, hashes), option=SORTED)


def sum_slack(windows: WindowCells, per_sum: int, wide: int) -> int | None:
    """`per_sum` bytes for each sum in these windows; None if one is written with an
    exponent or in more than `wide` characters (how much merging it can lengthen a sum
    is then not bounded by its own length)."""
    slack = 0
    for cells in windows.values():
        for cell in cells.values():
            total = cell[1]
            if total is not None:
                text = str(total)
                if len(text) > wide or "E" in text:
                    return None
                slack += per_sum
    return slack


# --- deltas ----------------------------------------------------------------------------


def delta_key(partition: int, seq: int, chunk: int) -> bytes:
    """`|delta|p|seq|chunk`: an account code never starts with `|` (it is escaped in
    keys), so a delta's key never meets a segment's in the one log they share."""
    return DELTA_PREFIX + f"{partition}|{seq}|{chunk}".encode()


def is_delta_key(key: bytes) -> bool:
    return key.startswith(DELTA_PREFIX)


def delta_partition(key: bytes) -> int:
    try:
        return int(key[len(DELTA_PREFIX) :].split(b"|", 1)[0])
    except ValueError:
        raise WireError("delta key", f"{key!r} is not '|delta|<partition>|<seq>|<chunk>'") from None


class Entry(NamedTuple):
    """An account-hour piece, encoded, ready to be packed into a delta message."""

    account: str
    slot: int
    piece: bytes


def entry_bytes(account_key: bytes, slot: int, piece: bytes) -> int:
    """Most bytes an entry adds to a message that does not hold its account yet."""
    return len(account_key) + 4 + len(str(slot)) + 4 + len(piece)


def pack(entries: list[Entry], budget: int) -> list[list[Entry]]:
    """Entries (grouped by account, in account order) into messages of at most `budget`
    bytes: an account's entries stay in one message unless they alone exceed it. Each
    entry must fit alone (`entry_bytes` + ENVELOPE_BYTES <= budget)."""
    chunks: list[list[Entry]] = [[]]
    size = ENVELOPE_BYTES
    index = 0
    while index < len(entries):
        account = entries[index].account
        end = index
        while end < len(entries) and entries[end].account == account:
            end += 1
        group = entries[index:end]
        key = json_key(account)
        whole = len(key) + 4 + sum(len(str(e.slot)) + 4 + len(e.piece) for e in group)
        if size + whole > budget and chunks[-1] and ENVELOPE_BYTES + whole <= budget:
            chunks.append([])
            size = ENVELOPE_BYTES
        if size + whole <= budget:
            chunks[-1].extend(group)
            size += whole
        else:  # alone bigger than a message: split between its hours
            holds_account = False
            for entry in group:
                body = len(str(entry.slot)) + 4 + len(entry.piece)
                need = body + (0 if holds_account else len(key) + 4)
                if size + need > budget and chunks[-1]:
                    chunks.append([])
                    size = ENVELOPE_BYTES
                    need = body + len(key) + 4
                chunks[-1].append(entry)
                size += need
                holds_account = True
        index = end
    return [chunk for chunk in chunks if chunk] or [[]]


def delta_value(
    partition: int,
    seq: int,
    chunk: int,
    chunks: int,
    newest: int,
    entries: list[Entry],
    expire: tuple[int, int] | None = None,
) -> bytes:
    """One delta message. Equal to `orjson.dumps(document, option=OPT_SORT_KEYS)` of the
    document it encodes; built from the pieces already encoded, to encode each once."""
    accounts: list[bytes] = []
    index = 0
    while index < len(entries):
        account = entries[index].account
        group: list[Entry] = []
        while index < len(entries) and entries[index].account == account:
            group.append(entries[index])
            index += 1
        if len(group) > 1:
            group.sort(key=lambda entry: str(entry.slot))  # JSON keys sort as text
        slots = b",".join(b'"%d":%s' % (entry.slot, entry.piece) for entry in group)
        accounts.append(json_key(account) + b":{" + slots + b"}")
    rest: dict[str, Any] = {
        "chunk": chunk,
        "chunks": chunks,
        "kind": "delta",
        "newest": newest,
        "partition": partition,
        "seq": seq,
        "v": VERSION,
    }
    if expire is not None:
        rest["expire"] = {"uids_before": expire[0], "windows_before": expire[1]}
    tail = orjson.dumps(rest, option=SORTED)
    return b'{"accounts":{' + b",".join(accounts) + b"}," + tail[1:]


class DeltaMessage(NamedTuple):
    partition: int
    seq: int
    chunk: int
    chunks: int
    newest: int
    accounts: dict[str, dict[int, Any]]  # account -> slot -> piece document
    expire: tuple[int, int] | None

    @property
    def key(self) -> bytes:
        return delta_key(self.partition, self.seq, self.chunk)


def decode_delta(value: bytes) -> DeltaMessage:
    document = _document(value, "delta")
    accounts = _member(document, "accounts", dict, "delta")
    slots: dict[str, dict[int, Any]] = {}
    for account, pieces in accounts.items():
        where = f"delta.accounts[{account!r}]"
        if not account or type(pieces) is not dict:
            raise WireError(where, "expected a non-empty account code and an object of hours")
        slots[account] = {_slot(text, f"{where}[{text}]"): piece for text, piece in pieces.items()}
    expire = document.get("expire")
    return DeltaMessage(
        _natural(document, "partition", "delta"),
        _natural(document, "seq", "delta", least=1),
        _natural(document, "chunk", "delta"),
        _natural(document, "chunks", "delta", least=1),
        _integer(document, "newest", "delta"),
        slots,
        None if expire is None else _thresholds(expire, "delta.expire"),
    )


def decode_piece(document: Any, where: str) -> tuple[WindowCells, list[int]]:
    if type(document) is not dict:
        raise WireError(where, "expected an object")
    packed = document.get("u", "")
    if type(packed) is not str:
        raise WireError(f"{where}.u", "expected a base64 string")
    return _windows(document.get("w", {}), f"{where}.w"), unpack_uids(packed, f"{where}.u")


def _windows(document: Any, where: str) -> WindowCells:
    if type(document) is not dict:
        raise WireError(where, "expected an object")
    windows: WindowCells = {}
    for start_text, codes in document.items():
        here = f"{where}[{start_text}]"
        start = _number_key(start_text, here)
        if type(codes) is not dict:
            raise WireError(here, "expected an object of aggregations")
        cells: Cells = {}
        for code, segments in codes.items():
            if type(segments) is not dict:
                raise WireError(f"{here}[{code}]", "expected an object of segments")
            for segment, cell in segments.items():
                cells[(code, segment)] = cell_from_document(cell, f"{here}[{code}][{segment!r}]")
        windows[start] = cells
    return windows


def cell_from_document(document: Any, where: str) -> Cell:
    if type(document) is not dict:
        raise WireError(where, "expected a cell object")
    count = document.get("n")
    if type(count) is not int or count < 1:
        raise WireError(f"{where}.n", "expected a count >= 1")
    latest = None
    if "l" in document:
        stamp = document.get("lt")
        number = _decimal(document, "l", where)
        if type(stamp) is not int or number is None:
            raise WireError(f"{where}.lt", "expected the latest ts (an integer)")
        latest = (stamp, number)
    unique = document.get("u")
    if unique is not None and (
        type(unique) is not list or not unique or not all(type(item) is str for item in unique)
    ):
        raise WireError(f"{where}.u", "expected a non-empty list of strings")
    return (
        count,
        _decimal(document, "s", where),
        _decimal(document, "lo", where),
        _decimal(document, "hi", where),
        latest,
        dict.fromkeys(unique) if unique else None,
    )


# --- snapshots -------------------------------------------------------------------------


def segment_key(account: str, slot: int) -> bytes:
    return record_key(account, slot).encode()


def marker_key(partition: int) -> bytes:
    return MARKER_PREFIX + str(partition).encode()


def segment_value(
    partition: int, account: str, slot: int, seq: int, windows: WindowCells, hashes: Iterable[int]
) -> bytes:
    document = piece_document(windows, hashes)
    document.update(
        account=account, kind="segment", partition=partition, seq=seq, slot=slot, v=VERSION
    )
    return orjson.dumps(document, option=SORTED)


def marker_value(partition: int, seq: int, newest: int, expired: tuple[int, int]) -> bytes:
    document = {
        "expired": {"uids_before": expired[0], "windows_before": expired[1]},
        "kind": "marker",
        "newest": newest,
        "partition": partition,
        "seq": seq,
        "v": VERSION,
    }
    return orjson.dumps(document, option=SORTED)


class Segment(NamedTuple):
    partition: int
    account: str
    slot: int
    seq: int
    windows: WindowCells
    uids: list[int]


class Marker(NamedTuple):
    partition: int
    seq: int
    newest: int
    expired: tuple[int, int]


class Tombstone(NamedTuple):
    account: str
    slot: int


def decode_snapshot(key: bytes, value: bytes | None) -> Segment | Marker | Tombstone | None:
    """A record of the snapshot topic; None for a marker's tombstone (nothing to do)."""
    if key.startswith(MARKER_PREFIX):
        if value is None:
            return None
        document = _document(value, "marker")
        return Marker(
            _natural(document, "partition", "marker"),
            _natural(document, "seq", "marker"),
            _integer(document, "newest", "marker"),
            _thresholds(_member(document, "expired", dict, "marker"), "marker.expired"),
        )
    try:
        account, rest = split_key(key)
    except UnicodeDecodeError:
        raise WireError("segment key", "not UTF-8") from None
    if not account or rest is None:
        raise WireError("segment key", f"{key!r} is not '<account>|<slot>'")
    slot = _slot(rest, "segment key")
    if value is None:
        return Tombstone(account, slot)
    document = _document(value, "segment")
    if document.get("account") != account or document.get("slot") != slot:
        raise WireError("segment", f"its account and slot do not match its key {key!r}")
    windows, uids = decode_piece(document, "segment")
    return Segment(
        _natural(document, "partition", "segment"),
        account,
        slot,
        _natural(document, "seq", "segment"),
        windows,
        uids,
    )


# --- reading helpers -------------------------------------------------------------------


def _document(value: bytes, kind: str) -> dict[str, Any]:
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise WireError(kind, f"not JSON: {exc}") from None
    if type(document) is not dict:
        raise WireError(kind, "expected an object")
    if document.get("v") != VERSION:
        raise WireError(f"{kind}.v", f"version {document.get('v')!r} is not {VERSION}")
    if document.get("kind") != kind:
        raise WireError(f"{kind}.kind", f"expected {kind!r}, got {document.get('kind')!r}")
    return document


def _member(document: dict[str, Any], name: str, kind: type, where: str) -> Any:
    value = document.get(name)
    if type(value) is not kind:
        raise WireError(f"{where}.{name}", f"expected {kind.__name__}")
    return value


def _integer(document: dict[str, Any], name: str, where: str) -> int:
    value: int = _member(document, name, int, where)
    return value


def _natural(document: dict[str, Any], name: str, where: str, least: int = 0) -> int:
    value = _integer(document, name, where)
    if value < least:
        raise WireError(f"{where}.{name}", f"must be >= {least}")
    return value


def _thresholds(document: Any, where: str) -> tuple[int, int]:
    if type(document) is not dict:
        raise WireError(where, "expected an object")
    return _integer(document, "uids_before", where), _integer(document, "windows_before", where)


def _number_key(text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise WireError(where, "expected an integer key") from None


def _slot(text: str, where: str) -> int:
    return _number_key(text, where)


def _decimal(document: dict[str, Any], name: str, where: str) -> Decimal | None:
    text = document.get(name)
    if text is None:
        return None
    try:
        number = Decimal(text) if type(text) is str else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite():
        raise WireError(f"{where}.{name}", "expected an exact number as a string")
    return number
