"""Storage backends: the local folder with HMAC-signed URLs, and S3 against real HTTP servers on loopback.

Two S3 servers, for two different questions:

* ``moto`` (``ThreadedMotoServer``) answers the functional questions: do put/get/delete/delete_prefix,
  key prefixes, content types and presigned downloads work over real HTTP? It is well known and starts
  instantly, but it does **not** check presigned signatures or expiry: it returned 200 for a tampered
  signature, a wrong secret and an expired URL (backend design notes §2).
* ``nanio`` (pinned 0.1.7) checks SigV4 signatures and expiry, so it is the server that can show a
  forged or expired presigned URL is refused (403). It runs as a subprocess on 127.0.0.1.

Every credential here is fake and set through environment variables for the S3 tests only; no
request leaves 127.0.0.1.
"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import boto3
import httpx
import pytest
from botocore.config import Config

from avatar_studio.config import Settings
from avatar_studio.service.storage import (
    LocalStorage,
    NotFound,
    S3Storage,
    SignatureError,
    Storage,
    StorageError,
    parse_bucket_url,
    storage_from_settings,
    validate_key,
)

SECRET = bytes(range(32))
BASE = "http://127.0.0.1:8765"
FAKE_KEY_ID = "test-access-key"
FAKE_SECRET = "test-secret-key-not-real"
GLB = b"glTF\x02\x00\x00\x00" + bytes(range(256)) * 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _split_signed(url: str) -> tuple[str, str | None, str | None]:
    """What the ``/files/{key:path}`` route sees: the decoded key and the ``exp``/``sig`` query values."""
    parts = urlsplit(url)
    assert parts.path.startswith("/files/")
    query = parse_qs(parts.query)
    return unquote(parts.path[len("/files/") :]), query.get("exp", [None])[0], query.get("sig", [None])[0]


# ---------------------------------------------------------------------------------------------------
# Keys
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["avatars/0f8c/model.glb", "selfies/j1/selfie.jpg", "a", "ä ö/模型 1.glb", ".hidden/x", "a..b/c"]
)
def test_valid_keys_are_accepted(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    ["", "/etc/passwd", "a//b", "a/", "./a", "a/./b", "../a", "a/../b", "a/..", "a\\b", "a\x00b", "a\nb", "C:/x",
     "a" * 1025],
)
def test_unsafe_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="key"):
        validate_key(key)


# ---------------------------------------------------------------------------------------------------
# Local storage
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def local(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "storage", SECRET, public_base_url=BASE + "/")


def test_local_root_is_private_and_storage_protocol_holds(local: LocalStorage) -> None:
    assert stat.S_IMODE(local.root.stat().st_mode) == 0o700
    assert isinstance(local, Storage)
    assert local.public_base_url == BASE  # trailing slash dropped, so URLs have no '//files'
    assert "0001020304" not in repr(local)


def test_local_round_trip(local: LocalStorage) -> None:
    key = "avatars/a1/model.glb"
    assert not local.exists(key)
    local.put(key, GLB, "model/gltf-binary")
    assert local.exists(key) and local.get(key) == GLB
    local.put(key, b"v2", "model/gltf-binary")
    assert local.get(key) == b"v2"
    local.delete(key)
    local.delete(key)  # idempotent
    assert not local.exists(key)
    assert not (local.root / "avatars").exists()  # emptied folders are pruned
    with pytest.raises(NotFound) as caught:
        local.get(key)
    assert isinstance(caught.value, KeyError) and isinstance(caught.value, StorageError)
    assert str(caught.value) == "no stored file 'avatars/a1/model.glb'"


def test_local_put_failure_keeps_old_content_and_leaves_no_temp_file(
    local: LocalStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "avatars/a1/model.glb"
    local.put(key, b"old", "model/gltf-binary")

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(StorageError, match="No space left on device"):
        local.put(key, b"new content that never lands", "model/gltf-binary")
    monkeypatch.undo()
    assert local.get(key) == b"old"
    assert sorted(p.name for p in (local.root / "avatars" / "a1").iterdir()) == ["model.glb"]


def test_local_put_refuses_unsafe_keys_and_symlink_escapes(local: LocalStorage, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="segment"):
        local.put("../outside.txt", b"x", "text/plain")
    outside = tmp_path / "outside"
    outside.mkdir()
    (local.root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageError, match="outside the storage folder"):
        local.put("link/evil.glb", b"x", "model/gltf-binary")
    assert list(outside.iterdir()) == []


def test_local_delete_prefix_is_a_folder_not_a_string_prefix(local: LocalStorage) -> None:
    for key in ["avatars/a1/model.glb", "avatars/a1/lod/1.glb", "avatars/a10/model.glb", "selfies/j1/selfie.jpg"]:
        local.put(key, b"x", "application/octet-stream")
    assert local.delete_prefix("avatars/a1") == 2
    assert local.exists("avatars/a10/model.glb") and local.exists("selfies/j1/selfie.jpg")
    assert local.delete_prefix("selfies/j1/") == 1
    assert not (local.root / "selfies").exists()
    assert local.delete_prefix("selfies/unknown") == 0
    with pytest.raises(ValueError, match="key"):
        local.delete_prefix("")


def test_local_needs_a_real_secret(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="32"):
        LocalStorage(tmp_path, b"short")


def test_signed_url_verifies(local: LocalStorage) -> None:
    local.put("avatars/a1/model.glb", GLB, "model/gltf-binary")
    url = local.signed_url("avatars/a1/model.glb", 3600)
    assert url.startswith(BASE + "/files/avatars/a1/model.glb?exp=")
    key, exp, sig = _split_signed(url)
    assert sig is not None and "=" not in sig and len(sig) == 43
    assert local.verify(key, exp, sig).read_bytes() == GLB


def test_signed_url_needs_a_public_base_url(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path, SECRET)
    with pytest.raises(StorageError, match="public address"):
        storage.signed_url("avatars/a1/model.glb", 60)
    storage.public_base_url = "http://127.0.0.1:41234"  # the embedded server learns its port later
    assert storage.signed_url("avatars/a1/model.glb", 60).startswith("http://127.0.0.1:41234/files/")


@pytest.mark.parametrize("ttl", [0, -1, 604_801, 1.5, True])
def test_signed_url_lifetime_is_bounded(local: LocalStorage, ttl: int) -> None:
    with pytest.raises(ValueError, match="expires_in"):
        local.signed_url("avatars/a1/model.glb", ttl)


def _signed(local: LocalStorage, key: str = "avatars/a1/model.glb") -> tuple[str, str, str]:
    local.put(key, GLB, "model/gltf-binary")
    got_key, exp, sig = _split_signed(local.signed_url(key, 3600))
    assert exp is not None and sig is not None
    return got_key, exp, sig


def test_tampered_signature_is_refused(local: LocalStorage) -> None:
    key, exp, sig = _signed(local)
    forged = sig[:-1] + ("A" if sig[-1] != "A" else "B")
    with pytest.raises(SignatureError) as caught:
        local.verify(key, exp, forged)
    assert caught.value.reason == "forged"


def test_raised_expiry_with_the_same_signature_is_refused(local: LocalStorage) -> None:
    key, exp, sig = _signed(local)
    with pytest.raises(SignatureError) as caught:
        local.verify(key, str(int(exp) + 10), sig)
    assert caught.value.reason == "forged"


def test_signature_of_one_key_does_not_open_another(local: LocalStorage) -> None:
    _, exp, sig = _signed(local)
    local.put("avatars/a2/model.glb", b"someone else's", "model/gltf-binary")
    with pytest.raises(SignatureError) as caught:
        local.verify("avatars/a2/model.glb", exp, sig)
    assert caught.value.reason == "forged"


def test_signature_from_another_secret_is_refused(local: LocalStorage) -> None:
    other = LocalStorage(local.root, b"\xff" * 32, public_base_url=BASE)
    key, exp, sig = _split_signed(other.signed_url("avatars/a1/model.glb", 60))
    with pytest.raises(SignatureError) as caught:
        local.verify(key, exp, sig)
    assert caught.value.reason == "forged"


@pytest.mark.parametrize(
    ("exp", "sig"),
    [(None, None), (None, "x"), ("1", None), ("", "x"), ("soon", "x"), ("1.5e9", "x"), ("-1", "x"), (" 1", "x"),
     ("١٢٣", "x"), ("9" * 13, "x")],
)
def test_missing_or_malformed_parameters_are_refused(local: LocalStorage, exp: str | None, sig: str | None) -> None:
    key, _, _ = _signed(local)
    with pytest.raises(SignatureError) as caught:
        local.verify(key, exp, sig)
    assert caught.value.reason == "malformed"


def test_non_ascii_signature_is_refused_not_crashing(local: LocalStorage) -> None:
    key, exp, _ = _signed(local)
    with pytest.raises(SignatureError):
        local.verify(key, exp, "ä" * 43)


def test_expired_url_is_refused_and_the_mac_is_checked_first(local: LocalStorage) -> None:
    local.put("avatars/a1/model.glb", GLB, "model/gltf-binary")
    signed_at = time.time() - 120
    key, exp, sig = _split_signed(local.signed_url("avatars/a1/model.glb", 60, now=signed_at))
    assert exp is not None and sig is not None
    assert local.verify(key, exp, sig, now=signed_at + 30).is_file()  # was valid at the time
    with pytest.raises(SignatureError) as caught:
        local.verify(key, exp, sig)
    assert caught.value.reason == "expired"
    with pytest.raises(SignatureError) as caught:  # a forged, expired URL learns only "forged"
        local.verify(key, exp, sig[::-1])
    assert caught.value.reason == "forged"


def test_expiry_is_absolute(local: LocalStorage) -> None:
    """The URL dies at ``exp`` whatever the server's TTL setting is later (unlike max_age checks)."""
    key, exp, sig = _signed(local)
    assert local.verify(key, exp, sig, now=int(exp) - 1).is_file()
    with pytest.raises(SignatureError, match="expired"):
        local.verify(key, exp, sig, now=int(exp))


def test_encoded_traversal_is_refused(local: LocalStorage) -> None:
    (local.root / "avatar.db").write_bytes(b"secret rows")
    _, exp, sig = _signed(local)
    # A client swaps the path for %2e%2e/avatar.db; the route decodes it before calling verify.
    decoded = unquote("%2e%2e/avatar.db")
    assert decoded == "../avatar.db"
    with pytest.raises(SignatureError) as caught:
        local.verify(decoded, exp, sig)
    assert caught.value.reason == "malformed"
    with pytest.raises(SignatureError):
        local.verify(unquote("avatars/%2e%2e/avatar.db"), exp, sig)


def test_validly_signed_symlink_out_of_the_root_is_refused(local: LocalStorage, tmp_path: Path) -> None:
    """Defence in depth: even a key the service signed must resolve inside the root."""
    secret_file = tmp_path / "elsewhere.txt"
    secret_file.write_bytes(b"not yours")
    (local.root / "avatars").mkdir()
    (local.root / "avatars" / "leak.glb").symlink_to(secret_file)
    key, exp, sig = _split_signed(local.signed_url("avatars/leak.glb", 60))
    with pytest.raises(StorageError, match="outside the storage folder"):
        local.verify(key, exp, sig)


def test_valid_signature_for_a_deleted_file_is_not_found(local: LocalStorage) -> None:
    key, exp, sig = _signed(local)
    local.delete(key)
    with pytest.raises(NotFound):
        local.verify(key, exp, sig)


@pytest.mark.parametrize("key", ["avatars/mon avatar/modèle 1.glb", "avatars/Анна/模型.glb", "selfies/j 1/a%20b+c.png"])
def test_keys_with_spaces_and_non_ascii_work_end_to_end(local: LocalStorage, key: str) -> None:
    local.put(key, GLB, "model/gltf-binary")
    url = local.signed_url(key, 60)
    assert url.isascii() and " " not in url
    got_key, exp, sig = _split_signed(url)
    assert got_key == key
    assert local.verify(got_key, exp, sig).read_bytes() == GLB


def test_storage_from_settings_local(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url="sqlite://", signing_secret=SECRET)
    storage = storage_from_settings(settings)
    assert isinstance(storage, LocalStorage)
    assert storage.root == Path(os.path.realpath(settings.storage_dir))
    with pytest.raises(StorageError):
        storage.signed_url("avatars/a1/model.glb", 60)
    storage = storage_from_settings(settings.with_(public_base_url="http://127.0.0.1:9"))
    assert storage.signed_url("avatars/a1/model.glb", 60).startswith("http://127.0.0.1:9/files/")


# ---------------------------------------------------------------------------------------------------
# STORAGE_BUCKET parsing
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [("s3://avatars", ("avatars", "")), ("s3://avatars/", ("avatars", "")),
     ("s3://my.bucket-1/some/prefix/", ("my.bucket-1", "some/prefix")), (" s3://b12/p ", ("b12", "p"))],
)
def test_parse_bucket_url(url: str, expected: tuple[str, str]) -> None:
    assert parse_bucket_url(url) == expected


@pytest.mark.parametrize(
    "url",
    ["avatars", "https://avatars", "s3://", "s3://Upper", "s3://ab", "s3://a_b", "s3://b..c", "s3://192.168.1.1",
     "s3://bucket?x=1", "s3://bucket/a/../b", "s3://AKIAXX:hunter2@bucket", "s3://bucket:9000"],
)
def test_parse_bucket_url_refuses_the_rest_without_echoing_it(url: str) -> None:
    with pytest.raises(ValueError, match="STORAGE_BUCKET") as caught:
        parse_bucket_url(url)
    assert "hunter2" not in str(caught.value)


# ---------------------------------------------------------------------------------------------------
# S3 functional tests, on moto over real HTTP
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fake credentials only, and no chance of picking up a developer's real AWS config."""
    nothing = tmp_path_factory.mktemp("aws") / "none"
    with pytest.MonkeyPatch.context() as mp:
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                     "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_ACCESS_KEY_ID", FAKE_KEY_ID)
        mp.setenv("AWS_SECRET_ACCESS_KEY", FAKE_SECRET)
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("AWS_CONFIG_FILE", str(nothing))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(nothing))
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setattr(boto3, "DEFAULT_SESSION", None)  # a session made earlier would keep its cached credentials
        yield


@pytest.fixture(scope="module")
def moto_endpoint(aws_env: None) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _raw_client(endpoint: str, secret: str = FAKE_SECRET) -> Any:
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=FAKE_KEY_ID,
        aws_secret_access_key=secret,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


@pytest.fixture
def moto_bucket(moto_endpoint: str) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    _raw_client(moto_endpoint).create_bucket(Bucket=name)
    return name


def test_s3_round_trip(moto_endpoint: str, moto_bucket: str) -> None:
    storage = S3Storage(moto_bucket, endpoint_url=moto_endpoint)
    assert isinstance(storage, Storage)
    key = "avatars/a1/model.glb"
    assert not storage.exists(key)
    storage.put(key, GLB, "model/gltf-binary")
    assert storage.exists(key) and storage.get(key) == GLB
    storage.delete(key)
    storage.delete(key)  # idempotent
    assert not storage.exists(key)
    with pytest.raises(NotFound):
        storage.get(key)
    with pytest.raises(ValueError, match="segment"):
        storage.put("avatars/../x", b"", "text/plain")


def test_s3_presigned_url_downloads_with_the_content_type(moto_endpoint: str, moto_bucket: str) -> None:
    storage = S3Storage(moto_bucket, endpoint_url=moto_endpoint)
    key = "avatars/mon avatar/modèle.glb"
    storage.put(key, GLB, "model/gltf-binary")
    url = storage.signed_url(key, 3600)
    parts = urlsplit(url)
    assert parts.netloc == urlsplit(moto_endpoint).netloc and parts.path.startswith(f"/{moto_bucket}/")  # path style
    assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "X-Amz-Expires=3600" in url  # SigV4, even in us-east-1
    response = httpx.get(url)
    assert response.status_code == 200
    assert response.content == GLB
    assert response.headers["content-type"] == "model/gltf-binary"
    with pytest.raises(ValueError, match="expires_in"):
        storage.signed_url(key, 604_801)


def test_s3_delete_prefix_pages_and_batches(moto_endpoint: str, moto_bucket: str) -> None:
    storage = S3Storage(moto_bucket, endpoint_url=moto_endpoint)
    storage.list_page_size = 2
    storage.delete_batch_size = 2
    doomed = [f"avatars/a1/{i}.glb" for i in range(5)]
    kept = ["avatars/a10/model.glb", "selfies/j1/selfie.jpg"]
    for key in doomed + kept:
        storage.put(key, b"x", "model/gltf-binary")
    assert storage.delete_prefix("avatars/a1") == 5
    assert not any(storage.exists(k) for k in doomed)
    assert all(storage.exists(k) for k in kept)
    assert storage.delete_prefix("avatars/a1/") == 0
    with pytest.raises(ValueError, match="key"):
        storage.delete_prefix("/")


def test_s3_prefix_from_settings_and_endpoint_from_env(
    moto_endpoint: str, moto_bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)  # botocore's own variable; we must not override it
    settings = Settings(data_dir=tmp_path, database_url="sqlite://", signing_secret=SECRET,
                        storage_bucket=f"s3://{moto_bucket}/some/prefix")
    storage = storage_from_settings(settings)
    assert isinstance(storage, S3Storage) and storage.prefix == "some/prefix"
    raw = _raw_client(moto_endpoint)
    raw.put_object(Bucket=moto_bucket, Key="avatars/a1/model.glb", Body=b"outside the prefix")
    storage.put("avatars/a1/model.glb", GLB, "model/gltf-binary")
    listed = raw.list_objects_v2(Bucket=moto_bucket)["Contents"]
    assert sorted(item["Key"] for item in listed) == ["avatars/a1/model.glb", "some/prefix/avatars/a1/model.glb"]
    url = storage.signed_url("avatars/a1/model.glb", 60)
    assert f"/{moto_bucket}/some/prefix/avatars/a1/model.glb?" in url
    assert httpx.get(url).content == GLB
    assert storage.delete_prefix("avatars/a1") == 1
    assert raw.get_object(Bucket=moto_bucket, Key="avatars/a1/model.glb")["Body"].read() == b"outside the prefix"


def test_s3_errors_are_clear_and_carry_no_credentials(moto_endpoint: str) -> None:
    missing = S3Storage("no-such-bucket-here", endpoint_url=moto_endpoint)
    with pytest.raises(StorageError, match="does not exist") as caught:
        missing.put("avatars/a1/model.glb", b"x", "model/gltf-binary")
    assert FAKE_SECRET not in str(caught.value)
    with pytest.raises(StorageError, match="does not exist"):
        missing.get("avatars/a1/model.glb")

    dead = S3Storage("bucket", client=_raw_client(f"http://127.0.0.1:{_free_port()}"))
    with pytest.raises(StorageError, match="cannot reach the S3 endpoint") as caught:
        dead.get("avatars/a1/model.glb")
    assert FAKE_SECRET not in str(caught.value) and FAKE_SECRET not in repr(dead)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


# ---------------------------------------------------------------------------------------------------
# S3 refusal tests, on nanio (checks SigV4 signatures and expiry)
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def nanio_endpoint(aws_env: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = Path(sys.executable).with_name("nanio")
    if not exe.exists():
        pytest.fail(f"nanio not found next to {sys.executable}: install the test extras (nanio==0.1.7)")
    root = tmp_path_factory.mktemp("nanio")
    port = _free_port()
    env = {**os.environ, "NANIO_ACCESS_KEY": FAKE_KEY_ID, "NANIO_SECRET_KEY": FAKE_SECRET}
    log_path = root / "nanio.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [str(exe), "serve", "--data-dir", str(root / "data"), "--host", "127.0.0.1", "--port", str(port),
             "--log-level", "warning", "--no-access-log"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                pytest.fail(f"nanio exited with {proc.returncode}: {log_path.read_text(errors='replace')}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"nanio did not listen on 127.0.0.1:{port}: {log_path.read_text(errors='replace')}")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def nanio_storage(nanio_endpoint: str) -> S3Storage:
    storage = S3Storage("avatars-test", endpoint_url=nanio_endpoint)
    storage.client.create_bucket(Bucket="avatars-test")
    storage.put("avatars/a1/model.glb", GLB, "model/gltf-binary")
    return storage


def test_nanio_valid_presigned_url_downloads(nanio_storage: S3Storage) -> None:
    response = httpx.get(nanio_storage.signed_url("avatars/a1/model.glb", 3600))
    assert response.status_code == 200 and response.content == GLB


def test_nanio_refuses_a_changed_signature_digit(nanio_storage: S3Storage) -> None:
    url = nanio_storage.signed_url("avatars/a1/model.glb", 3600)
    head, digits = url.split("X-Amz-Signature=")
    changed = ("1" if digits[0] != "1" else "2") + digits[1:]
    assert httpx.get(f"{head}X-Amz-Signature={changed}").status_code == 403


def test_nanio_refuses_a_url_signed_with_the_wrong_secret(nanio_storage: S3Storage, nanio_endpoint: str) -> None:
    wrong_secret = "not-the-server-secret-either"
    impostor = S3Storage("avatars-test", client=_raw_client(nanio_endpoint, secret=wrong_secret))
    assert httpx.get(impostor.signed_url("avatars/a1/model.glb", 3600)).status_code == 403
    with pytest.raises(StorageError, match="denied") as caught:
        impostor.put("avatars/a1/model.glb", b"overwrite", "model/gltf-binary")
    assert wrong_secret not in str(caught.value) and FAKE_SECRET not in str(caught.value)
    assert nanio_storage.get("avatars/a1/model.glb") == GLB


def test_nanio_refuses_an_expired_url(nanio_storage: S3Storage) -> None:
    url = nanio_storage.signed_url("avatars/a1/model.glb", 1)
    time.sleep(2.5)
    assert httpx.get(url).status_code == 403
