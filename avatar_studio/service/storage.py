"""Object storage for selfies and avatar models: a local folder (embedded mode) or an S3 bucket.

Why one small protocol with two backends: the embedded app must work offline with no extra services,
while a deployed service keeps its files in S3. The API and the job queue only ever see ``Storage``,
and both backends hand clients short-lived signed URLs, so model files never travel through the API
as JSON and a leaked URL stops working on its own.

Keys are relative POSIX paths chosen by the service (``avatars/<assetId>/model.glb``,
``selfies/<jobId>/selfie.jpg``), never by a client. :func:`validate_key` still refuses anything that
could climb out of the storage root, because a key that is a file path in embedded mode is one
``..`` away from the database.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable
from urllib.parse import quote, urlsplit

if TYPE_CHECKING:
    from avatar_studio.config import Settings

__all__ = [
    "CONTENT_TYPES",
    "MAX_URL_TTL_S",
    "LocalStorage",
    "NotFound",
    "S3Storage",
    "SignatureError",
    "Storage",
    "StorageError",
    "content_type_for",
    "parse_bucket_url",
    "storage_from_settings",
    "validate_key",
]

MAX_URL_TTL_S = 604_800  # SigV4 presigned URLs cannot live longer than 7 days; the local scheme keeps the same cap
MIN_SECRET_BYTES = 32
MAX_KEY_BYTES = 1024  # S3's limit on a key's UTF-8 length

# Control characters would make the signed message ambiguous (it is newline-separated); backslash and
# the characters Windows refuses in file names would make a key mean different files on different
# desktops in embedded mode.
_BAD_KEY_CHARS = re.compile(r'[\x00-\x1f\x7f\\:*?"<>|]')
_EXP_DIGITS = re.compile(r"[0-9]{1,12}")
_BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4 = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")

CONTENT_TYPES = {
    ".glb": "model/gltf-binary",
    ".gltf": "model/gltf+json",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".png": "image/png",
}


class StorageError(Exception):
    """A storage operation failed; the message is safe to show to a user (no credentials, no stack)."""


class NotFound(StorageError, KeyError):
    """No object under this key. Also a ``KeyError`` so callers can treat storage like a mapping."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no stored file {key!r}")
        self.key = key

    def __str__(self) -> str:  # KeyError would print the message as a quoted repr
        return str(self.args[0])


SignatureReason = Literal["malformed", "forged", "expired"]

_SIGNATURE_MESSAGES: dict[str, str] = {
    "malformed": "the download link is incomplete or malformed",
    "forged": "the download link's signature is not valid",
    "expired": "the download link has expired; ask for a new one",
}


class SignatureError(StorageError):
    """A signed URL was refused. ``reason`` lets the route log why; the client only sees a 403."""

    def __init__(self, reason: SignatureReason) -> None:
        super().__init__(_SIGNATURE_MESSAGES[reason])
        self.reason: SignatureReason = reason


def validate_key(key: str) -> str:
    """Return ``key`` if it is a relative POSIX path of safe segments, else raise ``ValueError``.

    Refused: empty keys or segments (``a//b``, a trailing ``/``), ``.`` and ``..`` segments, a
    leading ``/``, backslashes, NUL and other control characters, the characters Windows forbids in
    file names, and keys longer than S3 allows. Spaces and non-ASCII letters are fine.
    """
    if not isinstance(key, str) or not key:
        raise ValueError("a storage key must be a non-empty string")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("a storage key must be valid Unicode text") from None
    if size > MAX_KEY_BYTES:
        raise ValueError(f"a storage key must be at most {MAX_KEY_BYTES} bytes of UTF-8")
    if key.startswith("/"):
        raise ValueError(f"storage key {key!r} must be relative (no leading '/')")
    bad = _BAD_KEY_CHARS.search(key)
    if bad:
        raise ValueError(f"storage key {key!r} contains the forbidden character {bad.group()!r}")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"storage key {key!r} has an empty, '.' or '..' segment")
    return key


def content_type_for(key: str) -> str:
    """The media type to serve a locally stored file with, from its extension.

    The local backend does not keep the ``content_type`` given to ``put`` (a sidecar file per object
    would double the writes); the service's keys carry the right extension instead.
    """
    return CONTENT_TYPES.get(Path(key).suffix.lower(), "application/octet-stream")


def _check_ttl(expires_in: int) -> None:
    if isinstance(expires_in, bool) or not isinstance(expires_in, int) or not 1 <= expires_in <= MAX_URL_TTL_S:
        raise ValueError(f"expires_in must be an integer from 1 to {MAX_URL_TTL_S} seconds, not {expires_in!r}")


def _folder_key(prefix: str) -> str:
    """The folder named by a ``delete_prefix`` argument: ``avatars/a1`` and ``avatars/a1/`` are the same.

    Why a folder and not a raw string prefix: deleting ``avatars/a1`` must not also delete
    ``avatars/a10/...``, and an empty prefix (which would wipe everything) must be refused.
    """
    folder = prefix[:-1] if isinstance(prefix, str) and prefix.endswith("/") else prefix
    return validate_key(folder)


@runtime_checkable
class Storage(Protocol):
    """What the API and the workers need from object storage."""

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``key`` atomically: readers see the old object or the new one, never half."""
        ...

    def get(self, key: str) -> bytes:
        """The stored bytes; :class:`NotFound` when there is no such object."""
        ...

    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""
        ...

    def delete(self, key: str) -> None:
        """Remove the object; deleting a missing object is not an error (retries must be safe)."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Remove every object under the folder ``prefix`` (e.g. ``avatars/<assetId>``); return how many."""
        ...

    def signed_url(self, key: str, expires_in: int) -> str:
        """A URL anyone holding it can GET for ``expires_in`` seconds (1 to 604800)."""
        ...


class LocalStorage:
    """Files under one private folder, served by the app itself through HMAC-signed ``/files/`` URLs.

    ``public_base_url`` is where clients reach the service (``http://127.0.0.1:<port>``). The embedded
    server only learns its port after binding, so it may be set after construction; ``signed_url``
    raises :class:`StorageError` while it is unset.
    """

    def __init__(self, root: str | os.PathLike[str], secret: bytes, *, public_base_url: str | None = None) -> None:
        if not isinstance(secret, bytes | bytearray) or len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the URL-signing secret must be at least {MIN_SECRET_BYTES} random bytes")
        folder = Path(root).expanduser()
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the storage folder {folder}: {exc.strerror}") from exc
        self.root = Path(os.path.realpath(folder))
        self._secret = bytes(secret)
        self._public_base_url: str | None = None
        self.public_base_url = public_base_url

    @property
    def public_base_url(self) -> str | None:
        return self._public_base_url

    @public_base_url.setter
    def public_base_url(self, value: str | None) -> None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"public_base_url must be an http(s) URL, not {value!r}")
        self._public_base_url = value.rstrip("/") if value else None

    def __repr__(self) -> str:  # never show the secret
        return f"LocalStorage(root={str(self.root)!r}, public_base_url={self._public_base_url!r})"

    # -- paths -------------------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        """The file for ``key``, after checking that it resolves inside the root (symlinks included)."""
        validate_key(key)
        path = self.root.joinpath(*key.split("/"))
        real = os.path.realpath(path)
        if not real.startswith(str(self.root) + os.sep):
            raise StorageError(f"storage key {key!r} leads outside the storage folder")
        return path

    def _prune_empty_parents(self, folder: Path) -> None:
        """Remove folders left empty by a delete, so one folder per finished job does not pile up."""
        while folder != self.root and self.root in folder.parents:
            try:
                folder.rmdir()
            except OSError:
                return
            folder = folder.parent

    # -- objects -----------------------------------------------------------------------------------

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """Write to a temporary file in the same folder, fsync it, then ``os.replace`` it into place.

        ``content_type`` is not stored: files are served with :func:`content_type_for`.
        """
        path = self._path(key)
        tmp: str | None = None
        try:
            for attempt in range(3):
                path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                try:
                    fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".part", dir=path.parent)
                    break
                except FileNotFoundError:  # a concurrent delete pruned the empty folder in between
                    if attempt == 2:
                        raise
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
            tmp = None
            _fsync_dir(path.parent)
        except OSError as exc:
            raise StorageError(f"could not store {key!r}: {exc.strerror or exc}") from exc
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(key) from None
        except OSError as exc:
            raise StorageError(f"could not read {key!r}: {exc.strerror or exc}") from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            if path.is_symlink() or path.is_file():
                path.unlink(missing_ok=True)
        except OSError as exc:
            raise StorageError(f"could not delete {key!r}: {exc.strerror or exc}") from exc
        self._prune_empty_parents(path.parent)

    def delete_prefix(self, prefix: str) -> int:
        folder_key = _folder_key(prefix)
        folder = self._path(folder_key)
        if folder.is_symlink() or not folder.is_dir():
            return 0
        count = sum(len(files) for _, _, files in os.walk(folder))
        try:
            shutil.rmtree(folder)
        except OSError as exc:
            raise StorageError(f"could not delete the files under {folder_key!r}: {exc.strerror or exc}") from exc
        self._prune_empty_parents(folder.parent)
        return count

    # -- signed URLs -------------------------------------------------------------------------------

    def _mac(self, key: str, exp: int) -> bytes:
        """HMAC-SHA256 over method, decoded key and absolute expiry, as unpadded urlsafe base64.

        The expiry is in the MAC so raising ``exp`` in a URL breaks it; the key is the decoded one so
        keys with spaces or non-ASCII letters verify after the route has unquoted the path.
        """
        message = b"GET\n" + key.encode("utf-8") + b"\n" + str(exp).encode("ascii")
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=")

    def signed_url(self, key: str, expires_in: int, *, now: float | None = None) -> str:
        """``{public_base_url}/files/{quoted key}?exp=…&sig=…``; ``now`` lets tests sign in the past."""
        validate_key(key)
        _check_ttl(expires_in)
        if self._public_base_url is None:
            raise StorageError(
                "cannot make a download link: the service's public address (public_base_url) is not known yet"
            )
        exp = int(time.time() if now is None else now) + expires_in
        sig = self._mac(key, exp).decode("ascii")
        return f"{self._public_base_url}/files/{quote(key)}?exp={exp}&sig={sig}"

    def verify(self, key: str, exp: str | None, sig: str | None, *, now: float | None = None) -> Path:
        """The file a ``/files/{key}?exp=&sig=`` request may read, or an exception saying why not.

        ``key`` is the decoded path parameter. Order matters: the MAC is checked before the expiry so
        a forged URL never learns whether it would have expired, and it is compared in constant time.
        Raises :class:`SignatureError` (→ 403), :class:`NotFound` for a validly signed key whose file is
        gone, and :class:`StorageError` if the key resolves outside the root.
        """
        if not isinstance(exp, str) or not isinstance(sig, str) or not _EXP_DIGITS.fullmatch(exp):
            raise SignatureError("malformed")
        try:
            validate_key(key)
        except ValueError:
            raise SignatureError("malformed") from None
        expected = self._mac(key, int(exp))
        if not hmac.compare_digest(expected, sig.encode("utf-8", "replace")):
            raise SignatureError("forged")
        if (time.time() if now is None else now) >= int(exp):
            raise SignatureError("expired")
        path = Path(os.path.realpath(self._path(key)))
        if not path.is_file():
            raise NotFound(key)
        return path


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX); platforms that cannot open a folder skip this."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _check_bucket_name(bucket: str) -> None:
    if not isinstance(bucket, str) or not _BUCKET_NAME.fullmatch(bucket) or ".." in bucket or _IPV4.fullmatch(bucket):
        raise ValueError("an S3 bucket name must be 3–63 lowercase letters, digits, dots and hyphens")


def parse_bucket_url(url: str) -> tuple[str, str]:
    """``s3://bucket[/prefix]`` → ``(bucket, prefix)``; the prefix has no leading or trailing ``/``.

    The value is never echoed in errors: a mistyped ``s3://KEY:SECRET@bucket`` must not end up in a log.
    """
    if not isinstance(url, str):
        raise ValueError("STORAGE_BUCKET must be a string like s3://bucket-name[/prefix]")
    parts = urlsplit(url.strip())
    if parts.scheme != "s3":
        raise ValueError("STORAGE_BUCKET must look like s3://bucket-name[/prefix] (only s3:// is supported)")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError("STORAGE_BUCKET must not have a query or fragment: s3://bucket-name[/prefix]")
    try:
        _check_bucket_name(parts.netloc)
    except ValueError:
        raise ValueError(
            "STORAGE_BUCKET has an invalid bucket name: 3–63 lowercase letters, digits, dots and hyphens"
            " (s3://bucket-name[/prefix])"
        ) from None
    prefix = parts.path.strip("/")
    if prefix:
        try:
            validate_key(prefix)
        except ValueError as exc:
            raise ValueError(f"STORAGE_BUCKET has an invalid key prefix: {exc}") from None
    return parts.netloc, prefix


_DENIED_CODES = frozenset({
    "403", "AccessDenied", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled",
    "AccountProblem", "InvalidToken", "ExpiredToken", "InvalidSecurity", "RequestTimeTooSkewed",
})
_MISSING_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


class S3Storage:
    """Objects in an S3(-compatible) bucket, optionally under a key prefix; downloads by presigned GET.

    The client always signs with SigV4 (boto3 still presigns with SigV2 in us-east-1 otherwise) and
    uses path-style addressing (loopback and most self-hosted servers have no per-bucket hostnames).
    Without ``endpoint_url`` botocore reads ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` itself.
    The host is part of a SigV4 signature: presigned URLs point at the endpoint this client uses.
    """

    list_page_size = 1000  # S3's maximum; attributes so tests can exercise paging with a few objects
    delete_batch_size = 1000  # DeleteObjects takes at most 1000 keys

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        _check_bucket_name(bucket)
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
        self.bucket = bucket
        self.prefix = prefix
        if client is None:
            import boto3  # imported here: embedded mode should not pay boto3's ~0.2 s import
            from botocore.config import Config

            config = Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=10,
            )
            with self._errors("set up the client"):
                client = boto3.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)
        self.client = client

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, prefix={self.prefix!r}, endpoint={self._endpoint()!r})"

    def _endpoint(self) -> str:
        """The endpoint for messages, without any user:password part."""
        client = getattr(self, "client", None)
        url = str(getattr(getattr(client, "meta", None), "endpoint_url", "") or "the default AWS endpoint")
        parts = urlsplit(url)
        if parts.username or parts.password:
            url = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else "")).geturl()
        return url

    def _full(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextlib.contextmanager
    def _errors(self, action: str, key: str | None = None) -> Iterator[None]:
        """Turn botocore errors into user-facing :class:`StorageError`.

        Chaining is cut (``from None``) so that nothing from the request, such as signed headers,
        can reach a user or a log through the traceback; the message carries the S3 error code.
        """
        from botocore.exceptions import (
            BotoCoreError,
            ClientError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
        )
        from botocore.exceptions import ConnectionError as BotoConnectionError

        try:
            yield
        except ClientError as exc:
            raise self._client_error(exc, action, key) from None
        except (BotoConnectionError, HTTPClientError):
            raise StorageError(
                f"cannot reach the S3 endpoint {self._endpoint()} to {action}: is the storage server running?"
            ) from None
        except (NoCredentialsError, PartialCredentialsError):
            raise StorageError(
                "no usable S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or an AWS profile"
            ) from None
        except BotoCoreError as exc:
            raise StorageError(f"S3 could not {action}: {type(exc).__name__}") from None

    def _client_error(self, exc: Any, action: str, key: str | None) -> StorageError:
        response = getattr(exc, "response", {}) or {}
        error = response.get("Error", {}) or {}
        code = str(error.get("Code", "") or response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _MISSING_CODES and key is not None:
            return NotFound(key)
        if code == "NoSuchBucket":
            return StorageError(f"the S3 bucket {self.bucket!r} does not exist at {self._endpoint()}")
        if code in _DENIED_CODES:
            return StorageError(
                f"access to the S3 bucket {self.bucket!r} was denied ({code}): check the credentials and their"
                " permissions"
            )
        message = str(error.get("Message", "") or "")
        return StorageError(f"S3 could not {action} ({code}){': ' + message if message else ''}")

    def put(self, key: str, data: bytes, content_type: str) -> None:
        """One ``PutObject``: S3 makes the object visible only once it is complete."""
        full = self._full(key)
        with self._errors(f"store {key!r}", key):
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data, ContentType=content_type)

    def get(self, key: str) -> bytes:
        full = self._full(key)
        with self._errors(f"read {key!r}", key):
            response = self.client.get_object(Bucket=self.bucket, Key=full)
            with contextlib.closing(response["Body"]) as body:
                return bytes(body.read())

    def exists(self, key: str) -> bool:
        """``HeadObject``; a 404 is ``False`` (S3 gives a HEAD no body to tell a missing bucket apart)."""
        full = self._full(key)
        try:
            with self._errors(f"look up {key!r}", key):
                self.client.head_object(Bucket=self.bucket, Key=full)
        except NotFound:
            return False
        return True

    def delete(self, key: str) -> None:
        full = self._full(key)
        with self._errors(f"delete {key!r}"):
            self.client.delete_object(Bucket=self.bucket, Key=full)

    def delete_prefix(self, prefix: str) -> int:
        """List everything under the folder first, then ``DeleteObjects`` in batches of at most 1000.

        Listing before deleting keeps paging independent of the deletions.
        """
        folder_key = _folder_key(prefix)
        folder = self._full(folder_key) + "/"
        keys: list[str] = []
        with self._errors(f"delete the files under {folder_key!r}"):
            paginator = self.client.get_paginator("list_objects_v2")
            pages = paginator.paginate(
                Bucket=self.bucket, Prefix=folder, PaginationConfig={"PageSize": self.list_page_size}
            )
            for page in pages:
                keys.extend(item["Key"] for item in page.get("Contents", []) or [])
            for start in range(0, len(keys), self.delete_batch_size):
                batch = keys[start : start + self.delete_batch_size]
                response = self.client.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )
                failed = response.get("Errors") or []
                if failed:
                    raise StorageError(
                        f"S3 refused to delete {len(failed)} file(s) under {folder_key!r}"
                        f" ({failed[0].get('Code', 'unknown error')})"
                    )
        return len(keys)

    def signed_url(self, key: str, expires_in: int) -> str:
        """A SigV4 presigned ``GetObject`` URL (computed locally; no request is made)."""
        full = self._full(key)
        _check_ttl(expires_in)
        with self._errors(f"sign a link to {key!r}"):
            return str(
                self.client.generate_presigned_url(
                    "get_object", Params={"Bucket": self.bucket, "Key": full}, ExpiresIn=expires_in
                )
            )


def storage_from_settings(settings: Settings) -> Storage:
    """S3 when ``STORAGE_BUCKET`` is set, else the local folder with HMAC-signed URLs."""
    if settings.storage_bucket:
        bucket, prefix = parse_bucket_url(settings.storage_bucket)
        return S3Storage(bucket, prefix)
    return LocalStorage(settings.storage_dir, settings.signing_secret, public_base_url=settings.public_base_url)
