"""The service on S3-compatible storage (moto's server on loopback): selfies and GLBs land in the
bucket, asset URLs are S3 presigned URLs that download, and deleting the user empties the bucket.

moto does not check presigned signatures or expiry; ``test_storage.py`` proves refusal against nanio.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import boto3
import httpx
import pytest
from test_api import add_asset, new_user, post_job

from avatar_studio.config import Settings
from avatar_studio.service.runner import EmbeddedService
from avatar_studio.service.storage import S3Storage


@pytest.fixture
def s3_endpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing-key-id")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    try:
        yield endpoint
    finally:
        server.stop()


def test_service_on_s3_storage(db_url: str, tmp_path: Path, s3_endpoint: str) -> None:
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket="avatars-test")
    settings = Settings.from_env(env={"STORAGE_BUCKET": "s3://avatars-test/studio"}, data_dir=tmp_path).with_(
        database_url=db_url, provider="api-test")
    with EmbeddedService(settings, workers=0) as service, httpx.Client(base_url=service.base_url) as http:
        assert isinstance(service.storage, S3Storage)
        auth = new_user(http)
        job_id = post_job(http, auth).json()["jobId"]
        asset_id = add_asset(service, http, auth)
        listed = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket="avatars-test")
        keys = sorted(obj["Key"] for obj in listed["Contents"])
        assert f"studio/selfies/{job_id}/selfie.jpg" in keys
        assert f"studio/avatars/{asset_id}/model.glb" in keys
        body = http.get(f"/avatar/assets/{asset_id}", headers=auth).json()
        assert body["url"].startswith(f"{s3_endpoint}/avatars-test/studio/avatars/{asset_id}/model.glb?")
        assert "X-Amz-Signature=" in body["url"] and "X-Amz-Expires=3600" in body["url"]
        download = httpx.get(body["url"])
        assert download.status_code == 200 and download.content[:4] == b"glTF"
        assert http.delete("/users/me", headers=auth).status_code == 204
        after = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket="avatars-test")
        assert after.get("KeyCount", 0) == 0
