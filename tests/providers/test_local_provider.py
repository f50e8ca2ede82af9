"""``LocalProvider`` through the provider protocol, and the whole service flow with ``PROVIDER=local``."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avatar_studio.avatar.blendshapes import ARKIT_52
from avatar_studio.avatar.gltf_reader import load_avatar
from avatar_studio.client import ServiceClient
from avatar_studio.config import Settings
from avatar_studio.providers.base import JobOptions, ProviderError, Selfie, create_provider
from avatar_studio.providers.local import LocalProvider
from avatar_studio.service.runner import EmbeddedService

skimage_data = pytest.importorskip("skimage.data")


def jpeg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).convert("RGB").save(buf, format="JPEG", quality=92)
    return buf.getvalue()


@pytest.fixture(scope="module")
def astronaut() -> bytes:
    return jpeg(skimage_data.astronaut())


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "local-cache"
    monkeypatch.setenv("AVATAR_STUDIO_LOCAL_PROVIDER_DIR", str(folder))
    return folder


def selfie(data: bytes) -> Selfie:
    with Image.open(io.BytesIO(data)) as img:
        return Selfie(data=data, mime_type="image/jpeg", width=img.width, height=img.height)


def test_registered_as_local_and_needs_no_key() -> None:
    provider = create_provider("local", None)
    assert isinstance(provider, LocalProvider)
    assert provider.name == "local" and provider.needs_selfie is True


def test_start_poll_result_and_result_in_a_fresh_instance(astronaut: bytes, cache: Path) -> None:
    job_id = LocalProvider(None).start(selfie(astronaut), JobOptions())
    assert list(cache.glob("*.glb")) == [cache / f"{job_id}.glb"]
    other = LocalProvider("ignored-key")  # as a restarted worker would: only the id survives
    status = other.poll(job_id)
    assert status.done and status.progress == 1.0
    result = other.result(job_id)
    avatar = load_avatar(result.glb, blendshape_map=result.blendshape_map)
    assert avatar.morph_names == list(ARKIT_52)
    assert list(cache.glob("*")) == []  # collected: nothing left behind
    with pytest.raises(ProviderError, match="no longer available") as info:
        other.poll(job_id)
    assert not info.value.transient


def test_basic_option_gives_visemes(astronaut: bytes) -> None:
    provider = LocalProvider(None)
    job_id = provider.start(selfie(astronaut), JobOptions(blendshapes="basic"))
    names = load_avatar(provider.result(job_id).glb).morph_names
    assert "viseme_aa" in names and "eyeBlinkLeft" in names and "jawOpen" not in names


def test_check_refuses_a_missing_selfie_and_start_reports_photo_problems() -> None:
    provider = LocalProvider(None)
    with pytest.raises(ProviderError, match="needs a selfie"):
        provider.check(None, JobOptions())
    with pytest.raises(ProviderError, match="no face was found") as info:
        provider.start(selfie(jpeg(skimage_data.coffee())), JobOptions())
    assert not info.value.transient


def test_a_malformed_id_is_refused_without_touching_the_disk() -> None:
    with pytest.raises(ProviderError, match="not a local provider job id"):
        LocalProvider(None).poll("../../etc/passwd")


def test_the_service_makes_an_avatar_with_provider_local(astronaut: bytes, tmp_path: Path) -> None:
    settings = Settings.from_env(env={}, data_dir=tmp_path / "data").with_(provider="local", poll_interval_s=0.02)
    with EmbeddedService(settings, workers=1) as service, ServiceClient(service.base_url, backoff=0.01) as client:
        client.create_user(age_confirmed=True, consent_selfie=True)
        status = client.wait_for_job(client.create_job(astronaut, filename="selfie.jpg"), timeout=60, interval=0.1)
        assert status.status == "done", status
        assert status.asset_id is not None
        target = client.download(client.asset_url(status.asset_id).url, tmp_path / "avatar.glb")
        avatar = load_avatar(target)
        assert avatar.morph_names == list(ARKIT_52)
        assert avatar.textures and avatar.textures[0].mime_type == "image/jpeg"

        failed = client.wait_for_job(
            client.create_job(jpeg(skimage_data.coffee()), filename="coffee.jpg"), timeout=60, interval=0.1
        )
        assert failed.status == "error"
        assert failed.error is not None and "no face was found" in failed.error
