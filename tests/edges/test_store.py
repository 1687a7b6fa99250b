"""The object store: the local folder and S3 (moto over HTTP) behave the same."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pandas as pd
import pytest

from mlops.errors import DiskFullError
from mlops.store import (
    LocalStore,
    S3Store,
    StoreError,
    get_json,
    get_parquet,
    open_store,
    put_json,
    put_parquet,
)

# Dummy credentials: moto accepts any.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret-key"}


def _s3_store(endpoint: str, bucket: str) -> S3Store:
    return S3Store(
        bucket,
        endpoint_url=endpoint,
        region="us-east-1",
        access_key=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        secret_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    endpoint = request.getfixturevalue("s3_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    return _s3_store(endpoint, bucket)


def test_put_get_roundtrip(store) -> None:
    store.put_bytes("a/b/c.bin", b"\x00\x01hello")
    assert store.get_bytes("a/b/c.bin") == b"\x00\x01hello"


def test_put_overwrites(store) -> None:
    store.put_bytes("k.txt", b"old")
    store.put_bytes("k.txt", b"new")
    assert store.get_bytes("k.txt") == b"new"
    assert store.list("") == ["k.txt"]


def test_exists(store) -> None:
    assert not store.exists("x/y.json")
    store.put_bytes("x/y.json", b"{}")
    assert store.exists("x/y.json")
    # A "folder" is not an object.
    assert not store.exists("x")


def test_list_by_prefix(store) -> None:
    assert store.list("") == []
    for key in ("b/4", "a/2", "ab/3", "a/1"):
        store.put_bytes(key, key.encode())
    assert store.list("") == ["a/1", "a/2", "ab/3", "b/4"]
    assert store.list("a/") == ["a/1", "a/2"]
    assert store.list("a") == ["a/1", "a/2", "ab/3"]
    assert store.list("zzz") == []


def test_delete(store) -> None:
    store.put_bytes("d/e.txt", b"1")
    store.delete("d/e.txt")
    assert not store.exists("d/e.txt")
    assert store.list("d/") == []
    store.delete("d/e.txt")  # deleting a missing object is not an error


def test_put_file_copies_a_local_file_in(store, tmp_path: Path) -> None:
    source = tmp_path / "part.parquet"
    source.write_bytes(os.urandom(3 * 1024 * 1024 + 7))  # more than one sendfile call may do
    store.put_bytes("p/part.parquet", b"old")
    store.put_file("p/part.parquet", source, "application/vnd.apache.parquet")
    assert store.get_bytes("p/part.parquet") == source.read_bytes()
    assert store.list("p/") == ["p/part.parquet"]


def test_missing_key_raises_clear_store_error(store) -> None:
    with pytest.raises(StoreError, match=r"'no/such/key\.json' does not exist"):
        store.get_bytes("no/such/key.json")


def test_json_and_parquet_helpers(store) -> None:
    put_json(store, "m/manifest.json", {"rows": 2, "symbols": ["A", "B"]})
    assert get_json(store, "m/manifest.json") == {"rows": 2, "symbols": ["A", "B"]}
    frame = pd.DataFrame({"symbol": ["A", "B"], "close": [1.5, 2.5]})
    put_parquet(store, "m/data.parquet", frame)
    pd.testing.assert_frame_equal(get_parquet(store, "m/data.parquet"), frame)


# S3 only.


@pytest.mark.parametrize(
    "action",
    [
        lambda s: s.get_bytes("k"),
        lambda s: s.put_bytes("k", b"1"),
        lambda s: s.list(""),
    ],
    ids=["get", "put", "list"],
)
def test_s3_missing_bucket_is_a_clear_error(s3_endpoint: str, s3_credentials, action) -> None:
    store = _s3_store(s3_endpoint, "no-such-bucket-here")
    with pytest.raises(StoreError, match=r"Bucket 'no-such-bucket-here' does not exist"):
        action(store)


def test_s3_unreachable_endpoint_is_a_store_error(s3_credentials, closed_port: int) -> None:
    store = S3Store(
        "bucket",
        endpoint_url=f"http://127.0.0.1:{closed_port}",
        access_key="testing",
        secret_key="testing",
    )
    with pytest.raises(StoreError, match="S3 read of 'k' failed"):
        store.get_bytes("k")


def test_open_store_from_settings(make_settings, tmp_path: Path, s3_endpoint, s3_bucket) -> None:
    local = open_store(make_settings(tmp_path))
    assert isinstance(local, LocalStore)
    assert local.root == (tmp_path / "store").resolve()

    settings = make_settings(
        tmp_path,
        STORE_BACKEND="s3",
        S3_BUCKET=s3_bucket,
        S3_ENDPOINT_URL=s3_endpoint,
        **CREDENTIALS,
    )
    remote = open_store(settings)
    assert isinstance(remote, S3Store)
    remote.put_bytes("hello.txt", b"hi")
    assert _s3_store(s3_endpoint, s3_bucket).get_bytes("hello.txt") == b"hi"
    assert remote.uri("hello.txt") == f"s3://{s3_bucket}/hello.txt"


# LocalStore only.


def _visible_and_hidden(folder: Path) -> tuple[list[str], list[str]]:
    names = sorted(p.name for p in folder.iterdir())
    return [n for n in names if not n.startswith(".")], [n for n in names if n.startswith(".")]


def test_local_leaves_no_temp_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("f/obj.bin", b"x" * 100_000)
    store.put_bytes("f/obj.bin", b"y" * 10)
    visible, hidden = _visible_and_hidden(tmp_path / "f")
    assert visible == ["obj.bin"]
    assert hidden == []


def test_local_failed_write_keeps_old_object(tmp_path: Path, monkeypatch) -> None:
    store = LocalStore(tmp_path)
    store.put_bytes("f/obj.bin", b"old contents")
    real_fdopen = os.fdopen

    class HalfWriter:
        """Writes half of the data, then fails like a full disk."""

        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.handle.close()
            return False

        def write(self, data: bytes) -> int:
            self.handle.write(data[: len(data) // 2])
            self.handle.flush()
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(DiskFullError, match=r"cannot write 'f/obj\.bin': No space left on device;"):
        store.put_bytes("f/obj.bin", b"new contents that never fully land")
    monkeypatch.undo()

    assert store.get_bytes("f/obj.bin") == b"old contents"
    visible, hidden = _visible_and_hidden(tmp_path / "f")
    assert visible == ["obj.bin"]
    assert hidden == []


def test_local_failed_write_of_new_key_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    store = LocalStore(tmp_path)

    def boom(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(StoreError, match=r"cannot write 'g/new\.bin': Input/output error"):
        store.put_bytes("g/new.bin", b"data")
    monkeypatch.undo()
    assert not store.exists("g/new.bin")
    assert store.list("") == []
    assert list((tmp_path / "g").iterdir()) == []


@pytest.mark.parametrize("key", ["../outside.txt", "a/../../outside.txt", "/etc/passwd", "", "."])
def test_local_refuses_keys_outside_the_root(tmp_path: Path, key: str) -> None:
    store = LocalStore(tmp_path / "root")
    for action in (
        lambda: store.put_bytes(key, b"x"),
        lambda: store.get_bytes(key),
        lambda: store.exists(key),
        lambda: store.delete(key),
    ):
        with pytest.raises(StoreError, match="outside the store"):
            action()
    assert not (tmp_path / "outside.txt").exists()


def test_local_refuses_symlink_escape(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    store = LocalStore(root)
    with pytest.raises(StoreError, match="outside the store"):
        store.put_bytes("link/x.txt", b"x")
    assert not (tmp_path / "elsewhere" / "x.txt").exists()


def test_local_list_on_missing_root_is_empty(tmp_path: Path) -> None:
    assert LocalStore(tmp_path / "never-created").list("") == []


def test_local_put_file_links_on_one_file_system_and_copies_across(
    tmp_path: Path, monkeypatch
) -> None:
    store = LocalStore(tmp_path / "store")
    source = tmp_path / "part.parquet"
    source.write_bytes(b"the staged part")
    store.put_file("a/part.parquet", source)
    assert (tmp_path / "store" / "a" / "part.parquet").stat().st_ino == source.stat().st_ino

    def other_device(*_args: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", other_device)
    store.put_file("b/part.parquet", source)
    copied = tmp_path / "store" / "b" / "part.parquet"
    assert copied.stat().st_ino != source.stat().st_ino
    assert copied.read_bytes() == b"the staged part"
    assert _visible_and_hidden(tmp_path / "store" / "b") == (["part.parquet"], [])


def test_local_failed_file_copy_keeps_old_object(tmp_path: Path, monkeypatch) -> None:
    """A full disk in the middle of ``put_file``'s copy (the source on another file
    system): its sentence, the old object, no temp file."""
    store = LocalStore(tmp_path / "store")
    store.put_bytes("f/part.parquet", b"old contents")
    source = tmp_path / "part.parquet"
    source.write_bytes(b"new contents that never fully land")
    real_sendfile = os.sendfile

    def other_device(*_args: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", other_device)

    def half(out_fd: int, in_fd: int, offset: int, count: int) -> int:
        if offset > 0:
            raise OSError(28, "No space left on device")
        return real_sendfile(out_fd, in_fd, offset, max(1, count // 2))

    monkeypatch.setattr(os, "sendfile", half)
    with pytest.raises(DiskFullError, match=r"cannot write 'f/part\.parquet': No space left"):
        store.put_file("f/part.parquet", source)
    monkeypatch.undo()
    assert store.get_bytes("f/part.parquet") == b"old contents"
    visible, hidden = _visible_and_hidden(tmp_path / "store" / "f")
    assert (visible, hidden) == (["part.parquet"], [])
