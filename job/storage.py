"""Local paths and s3://bucket/key URIs behind one small set of functions.

S3 goes through boto3 with the default credential chain; `AWS_ENDPOINT_URL`
points it at MinIO or another S3-compatible store. botocore retries slow,
throttled and 5xx responses and dropped connections with backoff (standard
mode, `S3_MAX_ATTEMPTS` tries in all); after that the error becomes one
`UserError` line that names the URI and the number of tries.

Writes never leave a half-written object where a reader would take it as
complete: local files go to a temp name and are renamed, and an S3 PUT is
only visible once the whole object has arrived.

Small objects (results, checkpoints, JSON) go through a `Backend`, local or S3, picked by the URI;
`BACKENDS` is the seam where the reliability tests wrap one with a faulty backend. The local backend's
`replace` (the rename that publishes a finished temp file) is passed in, so that a test process can stop
the real writer between its write and its rename, and kill it there.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Protocol

from job.errors import UserError

_SAFE_PART = re.compile(r"^[A-Za-z0-9_.=+-][A-Za-z0-9_.=+-]*$")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/]*@")  # scheme://user:secret@...


def redact(uri: str) -> str:
    """The URI with any user:secret@ part masked, for messages."""
    return _USERINFO.sub(r"\1***@", str(uri))


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """s3://bucket/key -> (bucket, key); a URI with no bucket is refused."""
    rest = str(uri)[len("s3://"):]
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise UserError(f"{uri}: S3 URI has no bucket (expected s3://bucket/key)")
    if "@" in bucket:
        raise UserError(f"{redact(uri)}: an S3 URI must not hold credentials; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise UserError(f"{uri}: '{bucket}' is not a valid S3 bucket name")
    return bucket, key.strip("/")


def check_uri(uri: str, what: str = "URI") -> str:
    """Validate a user-given URI early, so a typo fails before any work starts."""
    if not uri:
        raise UserError(f"{what}: empty")
    if is_s3(uri):
        split_s3(uri)
    elif "://" in uri:
        raise UserError(f"{redact(uri)}: unsupported {what} scheme (use a local path or s3://bucket/key)")
    return uri


def join(uri: str, *parts: str) -> str:
    """Append path parts; each part must be a plain name so nothing escapes the prefix."""
    out = str(uri).rstrip("/")
    for part in parts:
        for piece in str(part).split("/"):
            if piece in ("", ".", "..") or not _SAFE_PART.match(piece):
                raise UserError(f"{part!r}: not a safe path part under {uri} (letters, digits, . _ - = + only)")
            out = f"{out}/{piece}"
    return out


# --- S3 plumbing -------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def s3_client():
    import boto3
    from botocore.config import Config

    config = Config(
        # total_max_attempts counts the first try too; botocore's `max_attempts` would count retries only
        retries={"mode": "standard", "total_max_attempts": max_attempts()},
        connect_timeout=float(os.environ.get("S3_CONNECT_TIMEOUT", "10")),  # seconds
        read_timeout=float(os.environ.get("S3_READ_TIMEOUT", "60")),  # seconds
    )
    return boto3.session.Session().client("s3", config=config)


def max_attempts() -> int:
    """Tries per S3 request, the first one included (`S3_MAX_ATTEMPTS`, default 5)."""
    text = os.environ.get("S3_MAX_ATTEMPTS", "5")
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"S3_MAX_ATTEMPTS={text!r}: must be a whole number >= 1")
    return int(text)


@contextlib.contextmanager
def s3_errors(uri: str):
    """Turn boto errors into one line that names the URI and what to check."""
    from boto3.exceptions import S3UploadFailedError
    from botocore import exceptions as bx
    from s3transfer.exceptions import RetriesExceededError

    try:
        yield
    except bx.ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        tries = e.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
        if code in ("NoSuchBucket",):
            raise UserError(f"{uri}: S3 bucket does not exist") from None
        if code in ("NoSuchKey", "404", "NotFound"):
            # A HEAD answers a bare 404 for a missing bucket too: ask the bucket to tell them apart.
            if code != "NoSuchKey" and not _bucket_exists(split_s3(uri)[0]):
                raise UserError(f"{uri}: S3 bucket does not exist") from None
            raise UserError(f"{uri}: no such S3 object") from None
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "ExpiredToken"):
            raise UserError(f"{uri}: S3 refused the credentials ({code}); check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY") from None
        message = str(e.response.get("Error", {}).get("Message", "")).splitlines()[0:1]
        raise UserError(f"{uri}: S3 error {code or status} (HTTP {status}) after {tries} attempt(s)"
                        + (f": {message[0][:200]}" if message and message[0] else "")) from None
    except bx.NoCredentialsError:
        raise UserError(f"{uri}: no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a profile)") from None
    except (bx.EndpointConnectionError, bx.ConnectionClosedError, bx.ReadTimeoutError, bx.ConnectTimeoutError) as e:
        raise UserError(f"{uri}: cannot reach S3 after {max_attempts()} attempt(s) ({type(e).__name__})") from None
    except S3UploadFailedError as e:  # upload_file wraps the last error in one message
        raise UserError(f"{uri}: S3 upload failed ({str(e).splitlines()[0].split(': ', 1)[-1][:300]})") from None
    except RetriesExceededError as e:  # download_file: the object stream broke on every try
        raise UserError(f"{uri}: S3 download failed after retries ({type(e.last_exception).__name__})") from None


def _bucket_exists(bucket: str) -> bool:
    from botocore import exceptions as bx

    try:
        s3_client().head_bucket(Bucket=bucket)
        return True
    except bx.ClientError as e:
        return str(e.response.get("Error", {}).get("Code")) not in ("404", "NoSuchBucket", "NotFound")
    except bx.BotoCoreError:
        return True


def _s3_missing(e) -> bool:
    from botocore import exceptions as bx

    return isinstance(e, bx.ClientError) and str(e.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound")


# --- the API used by the steps -------------------------------------------------


class Backend(Protocol):
    """Where whole objects are read and written. This protocol is the whole of that surface."""

    def exists(self, uri: str) -> bool: ...

    def read_bytes(self, uri: str) -> bytes: ...

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write all of `data`, or leave nothing a reader takes for the object."""

    def put_file(self, local: Path, uri: str) -> None:
        """Move a finished local file to the object, all of it or nothing; the local file is gone after."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_beside(path: Path) -> tuple[int, str]:
    """A temp file in the target's folder (so the rename is atomic), with the mode a plain open() gives."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; outputs are shared like any other file
    return fd, tmp


class LocalBackend:
    """Files: written to a temp name beside the target, synced, then renamed over it."""

    def __init__(self, replace: Callable[[str | Path, Path], None] = os.replace):
        self.replace = replace  # moves a finished file over the target, atomically: the one step that publishes a write

    def exists(self, uri: str) -> bool:
        return Path(uri).exists()

    def read_bytes(self, uri: str) -> bytes:
        try:
            return Path(uri).read_bytes()
        except FileNotFoundError:
            raise UserError(f"{uri}: no such file") from None
        except IsADirectoryError:
            raise UserError(f"{uri}: is a directory, expected a file") from None

    def write_bytes(self, uri: str, data: bytes) -> None:
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _temp_beside(path)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def put_file(self, local: Path, uri: str) -> None:
        dest = Path(uri)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.replace(local, dest)  # atomic: readers see the old file or the whole new one
        except OSError:  # another filesystem
            _copy_local(local, dest)
            os.unlink(local)


class S3Backend:
    """Objects: one PUT each, which S3 shows only once the whole body has arrived."""

    def exists(self, uri: str) -> bool:
        bucket, key = split_s3(uri)
        from botocore import exceptions as bx

        with s3_errors(uri):
            try:
                s3_client().head_object(Bucket=bucket, Key=key)
                return True
            except bx.ClientError as e:
                if _s3_missing(e):
                    return False
                raise

    def read_bytes(self, uri: str) -> bytes:
        bucket, key = split_s3(uri)
        with s3_errors(uri):
            return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()

    def write_bytes(self, uri: str, data: bytes) -> None:
        bucket, key = split_s3(uri)
        with s3_errors(uri):
            s3_client().put_object(Bucket=bucket, Key=key, Body=data)

    def put_file(self, local: Path, uri: str) -> None:
        bucket, key = split_s3(uri)
        with s3_errors(uri):
            s3_client().upload_file(str(local), bucket, key)  # multipart for large files: visible when complete
        os.unlink(local)


# The backend of each kind of URI. The seam for tests: they wrap an entry (storage.BACKENDS["s3"] = ...).
BACKENDS: dict[str, Backend] = {"local": LocalBackend(), "s3": S3Backend()}


def backend(uri: str) -> Backend:
    return BACKENDS["s3" if is_s3(uri) else "local"]


def exists(uri: str) -> bool:
    return backend(uri).exists(uri)


def read_bytes(uri: str) -> bytes:
    return backend(uri).read_bytes(uri)


def write_bytes(uri: str, data: bytes) -> None:
    backend(uri).write_bytes(uri, data)


def read_text(uri: str) -> str:
    return read_bytes(uri).decode("utf-8")


def write_text(uri: str, text: str) -> None:
    write_bytes(uri, text.encode("utf-8"))


def read_json(uri: str):
    try:
        return json.loads(read_bytes(uri))
    except json.JSONDecodeError as e:
        raise UserError(f"{uri}: not valid JSON ({e.msg} at line {e.lineno})") from None


def write_json(uri: str, obj) -> None:
    write_text(uri, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _copy_local(source: str | Path, dest: Path) -> None:
    """Copy a local file through a temp name beside the destination."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if Path(source).resolve() == dest.resolve():
        return
    fd, tmp = _temp_beside(dest)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def put_file(local: str | Path, uri: str) -> None:
    """Publish a finished local file at a URI, moving it: a rename on the same filesystem, else a copy or
    an upload (large S3 objects go up in parts, visible only when complete)."""
    backend(uri).put_file(Path(local), uri)


def download_file(uri: str, local: str | Path) -> Path:
    """Fetch a URI into a local file (temp then rename); returns the local path."""
    local = Path(local)
    local.parent.mkdir(parents=True, exist_ok=True)
    if not is_s3(uri):
        if not Path(uri).is_file():
            raise UserError(f"{uri}: no such file")
        _copy_local(uri, local)
        return local
    bucket, key = split_s3(uri)
    fd, tmp = _temp_beside(local)
    os.close(fd)
    try:
        with s3_errors(uri):
            s3_client().download_file(bucket, key, tmp)
        os.replace(tmp, local)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return local


def local_copy(uri: str, cache_dir: str | Path | None = None) -> Path:
    """A local path to read `uri` from: the path itself, or a cached download of the S3 object."""
    if not is_s3(uri):
        path = Path(uri)
        if not path.exists():
            raise UserError(f"{uri}: no such file")
        if path.is_dir():
            raise UserError(f"{uri}: is a directory, expected a file")
        return path
    bucket, key = split_s3(uri)
    if not key:
        raise UserError(f"{uri}: S3 URI names a bucket but no object key")
    cache = Path(cache_dir or default_cache_dir()) / "objects" / bucket / key
    etag = fingerprint(uri)
    marker = cache.with_name(cache.name + ".etag")
    if cache.exists() and marker.exists() and marker.read_text() == etag:
        return cache
    download_file(uri, cache)
    marker.write_text(etag)
    return cache


def default_cache_dir() -> Path:
    return Path(os.environ.get("MELI_CACHE", Path(tempfile.gettempdir()) / "meli-sweep-cache"))


def fingerprint(uri: str) -> str:
    """A content identity for caching: sha256 of a local file, ETag and size of an S3 object."""
    if not is_s3(uri):
        path = Path(uri)
        if not path.is_file():
            raise UserError(f"{uri}: no such file")
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return "sha256:" + h.hexdigest()
    bucket, key = split_s3(uri)
    with s3_errors(uri):
        head = s3_client().head_object(Bucket=bucket, Key=key)
    return f"etag:{head['ETag'].strip(chr(34))}:{head['ContentLength']}"


def list_dirs(uri: str) -> list[str]:
    """Names of the immediate sub-folders (S3: common prefixes) of a URI."""
    if not is_s3(uri):
        path = Path(uri)
        if not path.is_dir():
            return []
        return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    bucket, key = split_s3(uri)
    prefix = f"{key}/" if key else ""
    names = []
    with s3_errors(uri):
        for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
            names += [p["Prefix"][len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", [])]
    return sorted(names)
