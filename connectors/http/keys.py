"""API keys of the organization API: who may do what, read from the settings and a keys
file that is re-read when it changes (keys rotate without a restart).

Keys of `METERLINE_API_KEYS` have every right, as they always had. A keys file
(`METERLINE_API_KEYS_FILE`, YAML or JSON) adds keys limited by scope and organization:

    keys:
      - name: eu-producer          # shown in logs and refusals, never the key
        key: mlk_9f2c...           # or sha256: <hex SHA-256 of the key>: no secret on disk
        scopes: [ingest]           # ingest, read, admin; omitted = every right
        org: acme                  # omitted = METERLINE_ORG_ID

- `ingest`: submit measurements and file uploads (and read an upload job's result);
- `read`: usage queries, accounts, account plans, bills, upload jobs;
- `admin`: bill runs and the bill lifecycle (approve, lock), and everything `read` may.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from streams.schemas.errors import problems

log = logging.getLogger(__name__)


class Scope(StrEnum):
    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"


EVERY_SCOPE = frozenset(Scope)
MIN_KEY_LENGTH = 16
# What a scope brings with it: an admin reads what it approves.
IMPLIED = {Scope.ADMIN: frozenset({Scope.ADMIN, Scope.READ})}


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes = b""
    scopes: frozenset[Scope] = EVERY_SCOPE
    org: str | None = None  # None: the deployment's organization

    def allows(self, scope: Scope) -> bool:
        return any(scope in IMPLIED.get(mine, {mine}) for mine in self.scopes)

    def describe_scopes(self) -> str:
        return ", ".join(sorted(self.scopes))


class KeyRing:
    """Known keys, looked up in constant time: keys are compared as SHA-256 digests (one
    length), and the presented key is compared with every key (no early exit)."""

    def __init__(self, keys: Sequence[ApiKey]) -> None:
        self.keys = tuple(keys)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def __len__(self) -> int:
        return len(self.keys)

    def find(self, presented: str) -> ApiKey | None:
        wanted = digest(presented)
        found = None
        for key in self.keys:
            if hmac.compare_digest(wanted, key.digest):
                found = key
        return found


def settings_keys(keys: Iterable[SecretStr]) -> list[ApiKey]:
    """The keys of `METERLINE_API_KEYS`: every right, this deployment's organization."""
    return [
        ApiKey(f"METERLINE_API_KEYS[{i}]", digest(key.get_secret_value()))
        for i, key in enumerate(keys)
    ]


# --- the keys file ----------------------------------------------------------------------


class KeyFileError(ValueError):
    """A keys file that cannot be used; every problem names the entry and field."""


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = Field(default=None, min_length=1, max_length=100)
    key: SecretStr | None = None
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    scopes: list[Scope] | None = Field(default=None, min_length=1)
    org: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")

    @field_validator("key")
    @classmethod
    def _long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and len(key.get_secret_value()) < MIN_KEY_LENGTH:
            raise ValueError(f"a key has at least {MIN_KEY_LENGTH} characters")
        return key

    @model_validator(mode="after")
    def _one_secret(self) -> _Entry:
        if (self.key is None) == (self.sha256 is None):
            raise ValueError("give either key or sha256 (the hex SHA-256 of the key)")
        return self


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[_Entry]


def parse_key_file(text: str, source: str) -> list[ApiKey]:
    """The keys of a keys file's text; KeyFileError lists every problem."""
    try:
        document: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise KeyFileError(f"{source}: not YAML or JSON: {exc}") from None
    try:
        parsed = _File.model_validate(document)
    except ValidationError as exc:
        found = problems(exc, whole="(the file)", plain=True)
        raise KeyFileError(f"{source}: " + "; ".join(map(str, found))) from None
    keys = []
    for i, entry in enumerate(parsed.keys):
        secret = (
            digest(entry.key.get_secret_value())
            if entry.key is not None
            else bytes.fromhex(entry.sha256 or "")
        )
        scopes = frozenset(entry.scopes) if entry.scopes else EVERY_SCOPE
        keys.append(ApiKey(entry.name or f"{source}#keys.{i}", secret, scopes, entry.org))
    return keys


class KeyFile:
    """A keys file, re-read whenever its size, modification time or inode changes (a new
    file renamed over it included). A file that turns invalid is refused and its last
    good keys stay in use, logged with the reason."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self.keys = self._read()

    def _stat(self) -> tuple[int, int, int]:
        status = os.stat(self.path)
        return status.st_ino, status.st_size, status.st_mtime_ns

    def _read(self) -> list[ApiKey]:
        try:
            stamp = self._stat()
            text = self.path.read_text()
        except OSError as exc:
            raise KeyFileError(f"{self.path}: cannot be read ({exc.strerror})") from None
        keys = parse_key_file(text, str(self.path))
        self._stamp = stamp
        return keys

    def current(self) -> list[ApiKey]:
        try:
            if self._stat() == self._stamp:
                return self.keys
            self.keys = self._read()
        except (OSError, KeyFileError) as exc:
            log.error("API keys file not reloaded, the last good keys stay in use: %s", exc)
            with contextlib.suppress(OSError):  # an unchanged bad file is not read again
                self._stamp = self._stat()
            return self.keys
        log.info("API keys reloaded from %s: %d keys", self.path, len(self.keys))
        return self.keys


class ApiKeys:
    """The keys in force: the settings' keys plus the keys file's, as it is now."""

    def __init__(self, fixed: Sequence[ApiKey], file: KeyFile | None = None) -> None:
        self._fixed = list(fixed)
        self._file = file
        self._ring = KeyRing(self._fixed + (file.keys if file else []))
        self._seen: list[ApiKey] | None = file.keys if file else None

    def ring(self) -> KeyRing:
        if self._file is not None:
            keys = self._file.current()
            if keys is not self._seen:
                self._seen = keys
                self._ring = KeyRing(self._fixed + keys)
        return self._ring
