"""The `file` field of a multipart/form-data upload, streamed out of the body as it
arrives (python-multipart's push parser). Pure: no HTTP framework here."""

from __future__ import annotations

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from connectors.http.uploads.parsers import BadUpload, Format, format_of


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
        """The file's format (UnsupportedFormat if it is none of ours)."""
        return format_of(self.content_type, self.filename)

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
