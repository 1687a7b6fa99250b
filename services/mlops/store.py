"""Object store: one interface, a local directory or S3 (MinIO), with the same key layout.

Every write is atomic for its key: a reader sees the old object, the new one, or none,
never half of one. Multi-file artifacts (datasets) are made visible by writing their
manifest last; readers only read what a manifest names.

Failures are one sentence of their class (``mlops.errors``): an unreachable or failing
store is a ``StoreError``, a full disk a ``DiskFullError``, a read-only folder or a
refused S3 write a ``PermissionDeniedError``, rejected S3 credentials a ``ConfigError``.
S3 calls have connect and read time limits and a bounded number of attempts
(``S3_CONNECT_TIMEOUT_SECONDS``, ``S3_READ_TIMEOUT_SECONDS``, ``S3_MAX_ATTEMPTS``); each
failed attempt is logged.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from mlops.errors import (
    ConfigError,
    DiskFullError,
    MlopsError,
    PermissionDeniedError,
    StoreError,
    classify,
)

if TYPE_CHECKING:
    import pandas as pd

    from mlops.settings import Settings

__all__ = ["LocalStore", "ObjectStore", "S3Store", "StoreError", "open_store"]

log = logging.getLogger(__name__)


class ObjectStore(Protocol):
    """Keys are POSIX-style paths such as ``datasets/features/2017-12-01-ab12cd/manifest.json``."""

    def put_bytes(self, key: str, data: bytes, content_type: str = ...) -> None: ...

    def put_file(self, key: str, source: Path, content_type: str = ...) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str) -> list[str]: ...

    def delete(self, key: str) -> None: ...

    def uri(self, key: str) -> str: ...


class LocalStore:
    """A directory on disk; the embedded default."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:  # the root itself is not an object either
            raise StoreError(f"Key {key!r} points outside the store.")
        return path

    def put_bytes(self, key: str, data: bytes, content_type: str = "") -> None:
        def fill(handle: BinaryIO, tmp: Path) -> None:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())

        self._write_atomically(key, fill)

    def put_file(self, key: str, source: Path, content_type: str = "") -> None:
        """``put_bytes`` of a local file's content, atomic for the key alike, without the
        bytes passing through Python (a dataset part is tens of MB): a hard link to the
        file when it is on the store's file system, else a copy by the kernel. Either
        way the file must not change afterwards (a staged part never does)."""

        def fill(handle: BinaryIO, tmp: Path) -> None:
            if _linked(Path(source), tmp):
                with open(tmp, "rb") as linked:
                    os.fsync(linked.fileno())
            else:
                _copy(Path(source), handle)

        self._write_atomically(key, fill)

    def _write_atomically(self, key: str, fill: Callable[[BinaryIO, Path], None]) -> None:
        """``fill`` a temporary file beside the key's path, then move it into place: a
        reader sees the old object or the new one, never part of it."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        except OSError as exc:
            raise self._failure("write", key, exc) from exc
        try:
            with os.fdopen(fd, "wb") as handle:
                fill(handle, Path(tmp))
            os.replace(tmp, path)
        except BaseException as exc:
            Path(tmp).unlink(missing_ok=True)
            if isinstance(exc, OSError):
                raise self._failure("write", key, exc) from exc
            raise

    def _failure(self, action: str, key: str, exc: OSError) -> MlopsError:
        """One sentence for a failed file operation: disk full, read-only, or other."""
        error = classify(exc)
        what = f"The store at {self.root} cannot {action} {key!r}"
        detail = os.strerror(exc.errno) if exc.errno else str(exc)
        if isinstance(error, DiskFullError):
            return DiskFullError(f"{what}: {detail}; free some space, then rerun.")
        if isinstance(error, PermissionDeniedError):
            return PermissionDeniedError(
                f"{what}: {detail}; check the folder's owner, mode and mount."
            )
        return StoreError(f"{what}: {detail}.")

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"Object {key!r} does not exist in the store.") from None
        except OSError as exc:
            raise self._failure("read", key, exc) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str) -> list[str]:
        # Only the prefix's folder is walked (a key under the prefix lies in it).
        base = self.root / prefix.rpartition("/")[0]
        if not base.exists():
            return []
        keys = []
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink(missing_ok=True)
        except OSError as exc:
            raise self._failure("delete", key, exc) from exc

    def uri(self, key: str) -> str:
        return self._path(key).as_uri()


def _linked(source: Path, target: Path) -> bool:
    """Replace the (empty) ``target`` with a hard link to ``source``; False when the file
    systems or their kinds do not allow it (nothing changed then)."""
    spare = target.with_name(target.name + ".link")
    try:
        os.link(source, spare)
    except OSError as exc:
        if exc.errno in {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES}:
            return False
        raise
    try:
        os.replace(spare, target)
    except BaseException:
        spare.unlink(missing_ok=True)
        raise
    return True


def _copy(source: Path, handle: Any) -> None:
    """Copy ``source`` into the open file ``handle`` in the kernel (sendfile), then fsync."""
    with open(source, "rb") as data:
        size = os.fstat(data.fileno()).st_size
        sent = 0
        while sent < size:
            done = os.sendfile(handle.fileno(), data.fileno(), sent, size - sent)
            if done == 0:
                raise OSError(errno.EIO, f"{source} ended early while copying it")
            sent += done
    os.fsync(handle.fileno())


class S3Store:
    """A bucket on S3 or MinIO, through boto3."""

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key: str | None = None,
        secret_key: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 4,
    ) -> None:
        import boto3
        from botocore.config import Config

        self.bucket = bucket
        self.endpoint = endpoint_url or "AWS S3"
        self.max_attempts = max_attempts
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            config=Config(
                retries={"total_max_attempts": max_attempts, "mode": "standard"},
                s3={"addressing_style": "path"},
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
            ),
        )
        self.client.meta.events.register("needs-retry.s3", self._log_retry)

    def _log_retry(self, attempts: int = 0, caught_exception: Any = None, **_: Any) -> None:
        """Say so when an S3 call failed and botocore is about to try again."""
        if caught_exception is not None and attempts < self.max_attempts:
            log.warning(
                "Object store at %s not answering (%s), attempt %d of %d",
                self.endpoint,
                _short(caught_exception),
                attempts,
                self.max_attempts,
            )

    def _call(self, action: str, key: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "403":  # a HEAD answer has no body: ask once more to learn why
                code = self._refusal_code() or code
            if code in {"NoSuchKey", "404", "NotFound"}:
                raise StoreError(
                    f"Object {key!r} does not exist in bucket {self.bucket}."
                ) from None
            if code == "NoSuchBucket":
                raise StoreError(
                    f"Bucket {self.bucket!r} does not exist; create it first."
                ) from None
            if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken"}:
                raise ConfigError(
                    f"The object store at {self.endpoint} rejected the credentials ({code}): "
                    "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
                ) from None
            if code in {"AccessDenied", "403", "AllAccessDisabled"}:
                raise PermissionDeniedError(
                    f"The object store at {self.endpoint} refused the {action} of {key!r} "
                    f"in bucket {self.bucket} ({code}): check the credentials' permissions."
                ) from None
            raise StoreError(f"S3 {action} of {key!r} failed: {code or exc}.") from None
        except BotoCoreError as exc:
            raise StoreError(
                f"S3 {action} of {key!r} failed: the object store at {self.endpoint} is not "
                f"answering ({_short(exc)}) after {self.max_attempts} attempt"
                f"{'s' if self.max_attempts > 1 else ''}."
            ) from None

    def _refusal_code(self) -> str:
        """The error code of a listing, to tell refused keys from refused permissions."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
        except ClientError as exc:
            return str(exc.response.get("Error", {}).get("Code", ""))
        except BotoCoreError:
            return ""
        return ""

    def put_bytes(
        self, key: str, data: bytes, content_type: str = "application/octet-stream"
    ) -> None:
        # A single PUT is atomic on S3: readers see the whole object or none.
        self._call(
            "write", key, self.client.put_object, Key=key, Body=data, ContentType=content_type
        )

    def put_file(
        self, key: str, source: Path, content_type: str = "application/octet-stream"
    ) -> None:
        self.put_bytes(key, Path(source).read_bytes(), content_type)  # one PUT, as above

    def get_bytes(self, key: str) -> bytes:
        response = self._call("read", key, self.client.get_object, Key=key)
        return response["Body"].read()

    def exists(self, key: str) -> bool:
        try:
            self._call("head", key, self.client.head_object, Key=key)
        except StoreError as exc:
            if "does not exist" in str(exc) and "Bucket" not in str(exc):
                return False
            raise
        return True

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call("list", prefix, self.client.list_objects_v2, **kwargs)
            keys.extend(item["Key"] for item in page.get("Contents", []))
            if not page.get("IsTruncated"):
                return sorted(keys)
            token = page["NextContinuationToken"]

    def delete(self, key: str) -> None:
        self._call("delete", key, self.client.delete_object, Key=key)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def open_store(settings: Settings) -> ObjectStore:
    """The store the settings name."""
    if settings.store_backend == "local":
        return LocalStore(settings.store_root)
    if not settings.s3_bucket:
        raise ConfigError("Setting S3_BUCKET is required when STORE_BACKEND=s3.")
    return S3Store(
        settings.s3_bucket,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region,
        access_key=_secret(settings.aws_access_key_id),
        secret_key=_secret(settings.aws_secret_access_key),
        connect_timeout=settings.s3_connect_timeout_seconds,
        read_timeout=settings.s3_read_timeout_seconds,
        max_attempts=settings.s3_max_attempts,
    )


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def _short(exc: object) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:197] + "..."


# Helpers shared by the stages.


def put_json(store: ObjectStore, key: str, payload: Any) -> None:
    data = json.dumps(payload, indent=2, sort_keys=True, default=str).encode()
    store.put_bytes(key, data, "application/json")


def get_json(store: ObjectStore, key: str) -> Any:
    return json.loads(store.get_bytes(key))


def put_parquet(store: ObjectStore, key: str, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    store.put_bytes(key, buffer.getvalue(), "application/vnd.apache.parquet")


def get_parquet(store: ObjectStore, key: str) -> pd.DataFrame:
    import pandas as pd

    return pd.read_parquet(io.BytesIO(store.get_bytes(key)))
