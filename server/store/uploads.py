"""Streaming `multipart/form-data` for adapter uploads: file parts go straight to disk.

`MultipartUpload.feed` takes the body chunk by chunk (blocking file writes: call it from a
worker thread), keeps small form fields in memory, and hands each file part to an `open_file`
callback that returns where to write it — the version's staging directory inside the store,
so the final registration is a rename on the same filesystem. The whole body is counted
against `max_bytes` while it streams, whatever Content-Length said.

A file part's *filename* is its name in the version directory (`curl -F
"f=@dir/adapter_config.json"` sends `adapter_config.json`); names must be plain file names.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from server.errors import AdapterInvalid, InvalidRequest, PayloadTooLarge
from server.store.refs import check_version

_FILE_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
MAX_FIELD_BYTES = 1024  # form fields are short: `version`
MAX_PARTS = 16

OpenFile = Callable[[str, Mapping[str, str]], BinaryIO]


class MultipartUpload:
    """One multipart body being received. Raises `InvalidRequest` for a malformed body,
    `PayloadTooLarge` over `max_bytes`, `AdapterInvalid` (rule `inside-root`) for a file
    name that is not a plain name."""

    def __init__(self, content_type: str, open_file: OpenFile, *, max_bytes: int) -> None:
        _, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if not boundary:
            raise InvalidRequest("multipart/form-data body without a boundary")
        self.fields: dict[str, str] = {}
        self.files: list[str] = []
        self._open_file = open_file
        self._max_bytes = max_bytes
        self._received = 0
        self._parts = 0
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._field: tuple[str, bytearray] | None = None
        self._file: BinaryIO | None = None
        self._parser = MultipartParser(
            boundary,
            {
                "on_part_begin": self._part_begin,
                "on_part_data": self._part_data,
                "on_part_end": self._part_end,
                "on_header_field": self._header_field,
                "on_header_value": self._header_val,
                "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished,
            },
        )

    def feed(self, chunk: bytes) -> None:
        self._received += len(chunk)
        if self._received > self._max_bytes:
            raise PayloadTooLarge(f"upload over {self._max_bytes} bytes")
        try:
            self._parser.write(chunk)
        except FormParserError as exc:
            raise InvalidRequest(f"malformed multipart body: {exc}") from None

    def finish(self) -> None:
        """The body ended; raises `InvalidRequest` if it ended inside a part."""
        try:
            self._parser.finalize()
        except FormParserError as exc:
            raise InvalidRequest(f"malformed multipart body: {exc}") from None
        if self._file is not None or self._field is not None:
            raise InvalidRequest("multipart body ended inside a part")

    def close(self) -> None:
        """Close a file left open by an aborted upload (its directory is removed by the caller)."""
        if self._file is not None:
            self._file.close()
            self._file = None

    # --- parser callbacks ------------------------------------------------------------

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise InvalidRequest(f"more than {MAX_PARTS} parts in the upload")
        self._disposition = b""

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_val(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name")
        if name is None:
            raise InvalidRequest("a multipart part has no Content-Disposition name")
        filename = options.get(b"filename")
        if filename is None:
            self._field = (name.decode("utf-8", "replace"), bytearray())
            return
        text = filename.decode("utf-8", "replace")
        if not _FILE_NAME_RE.fullmatch(text) or ".." in text:
            raise AdapterInvalid(text, "inside-root", "upload file names must be plain names")
        if text in self.files:
            raise InvalidRequest(f"{text} appears twice in the upload")
        self.files.append(text)
        self._file = self._open_file(text, self.fields)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self._file.write(data[start:end])
        elif self._field is not None:
            self._field[1].extend(data[start:end])
            if len(self._field[1]) > MAX_FIELD_BYTES:
                raise InvalidRequest(f"form field {self._field[0]!r} over {MAX_FIELD_BYTES} bytes")

    def _part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        elif self._field is not None:
            self.fields[self._field[0]] = self._field[1].decode("utf-8", "replace")
            self._field = None


class StagingTarget:
    """`open_file` for `MultipartUpload`: enters `open_staging(version)` (a staging directory
    removed on `stack.close()` unless registered) when the first file part arrives — the
    version is known by then, from the query string or a `version` field sent first."""

    def __init__(
        self,
        open_staging: Callable[[str], contextlib.AbstractContextManager[Path]],
        version: str | None,
    ) -> None:
        self.open_staging, self.version = open_staging, version
        self.stack = contextlib.ExitStack()
        self.staging: Path | None = None

    def open(self, filename: str, fields: Mapping[str, str]) -> BinaryIO:
        """Raises `InvalidRequest` when the version is not known yet, `InvalidName`."""
        if self.staging is None:
            version = self.version or fields.get("version")
            if not version:
                raise InvalidRequest(
                    "send the version first: ?version= or a `version` form field before the files",
                    param="version",
                )
            self.version = check_version(version)
            self.staging = self.stack.enter_context(self.open_staging(version))
        return (self.staging / filename).open("xb")
