"""The streaming multipart reader, fed the bytes a real client (httpx) sends, in small chunks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from server.errors import AdapterInvalid, InvalidRequest, PayloadTooLarge
from server.store.uploads import MultipartUpload, StagingTarget

FILES = {"adapter_config.json": b'{"r": 4}', "adapter_model.safetensors": bytes(range(256)) * 40}


def body(fields: dict[str, str], files: dict[str, bytes]) -> tuple[str, bytes]:
    request = httpx.Request(
        "POST", "http://x/", data=fields, files=[("file", (n, c)) for n, c in files.items()]
    )
    return request.headers["content-type"], request.read()


def feed(upload: MultipartUpload, data: bytes, chunk: int = 7) -> None:
    for i in range(0, len(data), chunk):
        upload.feed(data[i : i + chunk])
    upload.finish()


def target(tmp_path: Path, version: str | None = None) -> StagingTarget:
    @contextlib.contextmanager
    def staging(v: str) -> Iterator[Path]:
        path = tmp_path / f"staging-{v}"
        path.mkdir()
        yield path

    return StagingTarget(staging, version)


def test_fields_and_files_stream_to_the_staging_directory(tmp_path: Path) -> None:
    content_type, data = body({"version": "v3"}, FILES)
    t = target(tmp_path)
    upload = MultipartUpload(content_type, t.open, max_bytes=len(data))

    feed(upload, data)

    assert upload.fields == {"version": "v3"} and t.version == "v3"
    assert upload.files == list(FILES)
    for name, content in FILES.items():
        assert (tmp_path / "staging-v3" / name).read_bytes() == content


def test_the_limit_counts_streamed_bytes(tmp_path: Path) -> None:
    content_type, data = body({"version": "v3"}, FILES)
    upload = MultipartUpload(content_type, target(tmp_path).open, max_bytes=len(data) - 1)
    with pytest.raises(PayloadTooLarge, match=f"over {len(data) - 1} bytes"):
        feed(upload, data, chunk=4096)
    upload.close()


@pytest.mark.parametrize("name", ["../escape.json", ".hidden", "a/b.json", "x..y"])
def test_file_names_must_be_plain(tmp_path: Path, name: str) -> None:
    content_type, data = body({"version": "v3"}, {name: b"{}"})
    upload = MultipartUpload(content_type, target(tmp_path).open, max_bytes=10**6)
    with pytest.raises(AdapterInvalid, match=r"\[inside-root\]"):
        feed(upload, data)
    assert not list(tmp_path.rglob("*.json"))


def test_the_version_must_come_before_the_files(tmp_path: Path) -> None:
    content_type, data = body({}, FILES)
    upload = MultipartUpload(content_type, target(tmp_path).open, max_bytes=10**6)
    with pytest.raises(InvalidRequest, match="send the version first"):
        feed(upload, data)
    content_type, data = body({}, FILES)  # ... or in the query string
    t = target(tmp_path, version="v4")
    feed(MultipartUpload(content_type, t.open, max_bytes=10**6), data)
    assert (tmp_path / "staging-v4" / "adapter_config.json").exists()


def test_malformed_and_truncated_bodies_are_invalid_requests(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="boundary"):
        MultipartUpload("multipart/form-data", target(tmp_path).open, max_bytes=10)
    content_type, data = body({"version": "v3"}, FILES)
    upload = MultipartUpload(content_type, target(tmp_path).open, max_bytes=10**6)
    with pytest.raises(InvalidRequest):
        feed(upload, data[: len(data) // 2])
    upload.close()
