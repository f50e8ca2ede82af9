"""The REST API over real HTTP on loopback, on SQLite and PostgreSQL: every route, status and bad input."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from PIL import Image

from avatar_studio.avatar.synthetic import make_arkit_head_glb
from avatar_studio.config import Settings
from avatar_studio.service.models import AvatarAsset, AvatarJob
from avatar_studio.service.runner import EmbeddedService

SEED_PREFERENCES = {
    "appearance": {"bindi": True, "earrings": "jhumka"},
    "voice": {"language": "hinglish", "pitch": 0.1, "speed": -0.05},
    "persona": {"warmth": 0.8, "humor": 0.4, "formality": 0.3},
}


def jpeg(width: int = 320, height: int = 240, *, exif: bytes | None = None) -> bytes:
    img = Image.new("RGB", (width, height), (200, 150, 120))
    for x in range(width // 2):  # a marker in the left half, to check orientation
        img.putpixel((x, 5), (255, 0, 0))
    out = io.BytesIO()
    img.save(out, "JPEG", exif=exif) if exif else img.save(out, "JPEG")
    return out.getvalue()


def new_user(http: httpx.Client, *, consent: bool = True) -> dict[str, str]:
    r = http.post("/users", json={"ageConfirmed": consent, "consentSelfie": consent})
    assert r.status_code == 201
    return {"Authorization": f"Bearer {r.json()['token']}"}


def post_job(http: httpx.Client, auth: dict[str, str], data: bytes | None = None, **fields: Any) -> httpx.Response:
    files = {"file": ("selfie.jpg", data if data is not None else jpeg(), "image/jpeg")} if data is not False else None
    return http.post("/avatar/jobs", headers=auth, files=files, data={k: v for k, v in fields.items()})


def error_of(r: httpx.Response) -> dict[str, str]:
    body = r.json()
    assert set(body) == {"error"} and {"code", "message"} <= set(body["error"]), body
    return body["error"]


def stored_files(service: EmbeddedService) -> list[Path]:
    root = service.settings.storage_dir
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def add_asset(service: EmbeddedService, http: httpx.Client, auth: dict[str, str]) -> str:
    """A finished job with its asset, as the worker would leave it (the worker has its own tests)."""
    job_id = post_job(http, auth).json()["jobId"]
    asset_id = uuid.uuid4()
    key = f"avatars/{asset_id}/model.glb"
    service.storage.put(key, make_arkit_head_glb(1500), "model/gltf-binary")
    with service.engine.begin() as conn:
        job = conn.execute(sa.select(AvatarJob.user_id).where(AvatarJob.id == uuid.UUID(job_id))).one()
        conn.execute(sa.update(AvatarJob).where(AvatarJob.id == uuid.UUID(job_id)).values(status="done", progress=1.0))
        conn.execute(sa.insert(AvatarAsset).values(id=asset_id, user_id=job.user_id, job_id=uuid.UUID(job_id),
                                                   storage_key=key, blendshape_map={"Key 1": "jawOpen"}))
    return str(asset_id)


# -- users and auth ---------------------------------------------------------------------------------

def test_user_lifecycle(http: httpx.Client) -> None:
    r = http.post("/users", json={"ageConfirmed": False, "consentSelfie": False})
    assert r.status_code == 201 and set(r.json()) == {"userId", "token"}
    auth = {"Authorization": f"Bearer {r.json()['token']}"}
    me = http.get("/users/me", headers=auth).json()
    assert me["userId"] == r.json()["userId"] and me["ageConfirmed"] is False
    me = http.patch("/users/me", headers=auth, json={"ageConfirmed": True, "consentSelfie": True}).json()
    assert me["ageConfirmed"] is True and me["consentSelfie"] is True
    assert http.delete("/users/me", headers=auth).status_code == 204
    assert http.get("/users/me", headers=auth).status_code == 401


def test_unknown_user_fields_are_refused(http: httpx.Client) -> None:
    r = http.post("/users", json={"ageConfirmed": True, "isAdmin": True})
    assert r.status_code == 422 and "isAdmin" in error_of(r)["message"]


@pytest.mark.parametrize("header", [None, "Bearer", "Basic abc", "Bearer not-a-real-token"])
def test_auth_is_required(http: httpx.Client, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for method, path in (("GET", "/avatar/jobs"), ("GET", f"/avatar/jobs/{uuid.uuid4()}"), ("GET", "/users/me"),
                         ("GET", f"/avatar/assets/{uuid.uuid4()}"), ("POST", "/avatar/preferences")):
        r = http.request(method, path, headers=headers, json={} if method == "POST" else None)
        assert r.status_code == 401, (method, path)
        assert error_of(r)["code"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"


def test_token_is_stored_only_as_a_hash(http: httpx.Client, service: EmbeddedService) -> None:
    token = http.post("/users", json={}).json()["token"]
    with service.engine.connect() as conn:
        hashes = conn.execute(sa.text("SELECT token_hash FROM users")).scalars().all()
    assert token not in hashes and all(len(h) == 64 for h in hashes)


# -- jobs ---------------------------------------------------------------------------------------

def test_consent_is_required_and_nothing_is_stored(http: httpx.Client, service: EmbeddedService) -> None:
    auth = new_user(http, consent=False)
    r = post_job(http, auth)
    assert r.status_code == 403
    err = error_of(r)
    assert err["code"] == "consent_required" and "confirm your age" in err["message"]
    http.patch("/users/me", headers=auth, json={"ageConfirmed": True})
    r = post_job(http, auth)
    assert r.status_code == 403 and "consent to selfie processing" in error_of(r)["message"]
    assert stored_files(service) == []


def test_job_is_created_and_polled(http: httpx.Client) -> None:
    auth = new_user(http)
    r = post_job(http, auth, options=json.dumps({"output": "glb", "blendshapes": "arkit", "realism": "high"}))
    assert r.status_code == 202 and set(r.json()) == {"jobId"}
    status = http.get(f"/avatar/jobs/{r.json()['jobId']}", headers=auth).json()
    assert status == {"status": "queued", "progress": 0.0}


@pytest.mark.parametrize(("options", "field"), [
    ('{"blendshapes": "xyz"}', "options.blendshapes"),
    ('{"output": "fbx"}', "options.output"),
    ('{"realism": "low"}', "options.realism"),
    ('{"colour": "red"}', "options.colour"),
    ("not json", "options"),
    ("[1, 2]", "options"),
])
def test_bad_options_name_the_field(http: httpx.Client, service: EmbeddedService, options: str, field: str) -> None:
    r = post_job(http, new_user(http), options=options)
    assert r.status_code == 422
    err = error_of(r)
    assert err["field"] == field and err["message"].startswith(field)
    assert stored_files(service) == []


def test_provider_field_and_provider_refusal(http: httpx.Client) -> None:
    auth = new_user(http)
    r = post_job(http, auth, provider="no-such-provider")
    assert r.status_code == 422 and error_of(r)["field"] == "provider" and "api-test" in error_of(r)["message"]
    r = post_job(http, auth, options='{"blendshapes": "basic"}')
    assert r.status_code == 422 and "only produces ARKit" in error_of(r)["message"]


def test_upload_checks(http: httpx.Client, service: EmbeddedService) -> None:
    auth = new_user(http)
    r = post_job(http, auth, b"GIF89a" + b"\x00" * 100)
    assert r.status_code == 415 and error_of(r)["field"] == "file"
    r = post_job(http, auth, jpeg()[:300])
    assert r.status_code == 422 and "truncated or corrupt" in error_of(r)["message"]
    r = post_job(http, auth, jpeg(20, 20))
    assert r.status_code == 422 and "at least" in error_of(r)["message"]
    r = http.post("/avatar/jobs", headers=auth)
    assert r.status_code == 422 and error_of(r)["field"] == "file"
    bomb = io.BytesIO()
    Image.new("1", (9000, 9000)).save(bomb, "PNG")  # 81 MP in a few kB
    r = post_job(http, auth, bomb.getvalue())
    assert r.status_code == 413 and "megapixels" in error_of(r)["message"]
    assert stored_files(service) == []


def test_upload_byte_limit(db_url: str, tmp_path: Path) -> None:
    settings = Settings.from_env(env={}, data_dir=tmp_path).with_(database_url=db_url, provider="api-test",
                                                                   max_upload_bytes=50_000)
    with EmbeddedService(settings, workers=0) as svc, httpx.Client(base_url=svc.base_url) as http:
        r = post_job(http, new_user(http), jpeg(2000, 2000) + b"\x00" * 60_000)
        assert r.status_code == 413 and "limit is" in error_of(r)["message"]
        assert stored_files(svc) == []


def test_stored_selfie_has_no_exif_and_is_upright(http: httpx.Client, service: EmbeddedService) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    exif[0x010F] = "PhoneMaker"
    gps = exif.get_ifd(0x8825)
    gps[2] = (48.0, 51.0, 30.0)  # GPSLatitude
    post_job(http, new_user(http), jpeg(320, 240, exif=exif.tobytes()))
    (selfie,) = stored_files(service)
    assert selfie.parts[-3] == "selfies" and selfie.suffix == ".jpg"
    with Image.open(selfie) as img:
        assert img.size == (240, 320), "EXIF orientation applied"
        assert not img.getexif(), "no EXIF (orientation, maker, GPS) kept"
        assert "exif" not in img.info and "icc_profile" not in img.info
    raw = selfie.read_bytes()
    assert b"PhoneMaker" not in raw and b"Exif" not in raw


def test_jobs_are_private_and_ids_are_not_probeable(http: httpx.Client) -> None:
    alice, bob = new_user(http), new_user(http)
    job_id = post_job(http, alice).json()["jobId"]
    for path in (f"/avatar/jobs/{job_id}", f"/avatar/jobs/{uuid.uuid4()}", "/avatar/jobs/not-a-uuid"):
        r = http.get(path, headers=bob)
        assert r.status_code == 404 and error_of(r) == {"code": "not_found", "message": "no such job"}
    assert http.get("/avatar/jobs", headers=bob).json()["total"] == 0


def test_job_list_is_newest_first_and_paginated(http: httpx.Client) -> None:
    auth = new_user(http)
    ids = [post_job(http, auth).json()["jobId"] for _ in range(5)]
    page = http.get("/avatar/jobs", headers=auth, params={"limit": 2}).json()
    assert page["total"] == 5 and [j["jobId"] for j in page["jobs"]] == ids[::-1][:2]
    rest = http.get("/avatar/jobs", headers=auth, params={"limit": 10, "offset": 2}).json()
    assert [j["jobId"] for j in rest["jobs"]] == ids[::-1][2:]
    assert rest["jobs"][0]["status"] == "queued" and rest["jobs"][0]["provider"] == "api-test"
    assert http.get("/avatar/jobs", headers=auth, params={"limit": 0}).status_code == 422


def test_failed_job_reports_its_error(http: httpx.Client, service: EmbeddedService) -> None:
    auth = new_user(http)
    job_id = post_job(http, auth).json()["jobId"]
    with service.engine.begin() as conn:
        conn.execute(sa.update(AvatarJob).where(AvatarJob.id == uuid.UUID(job_id))
                     .values(status="error", error="the API key was refused", action_url="https://x.test/scan"))
    assert http.get(f"/avatar/jobs/{job_id}", headers=auth).json() == {
        "status": "error", "progress": 0.0, "error": "the API key was refused"}


# -- assets -------------------------------------------------------------------------------------

def test_asset_url_downloads_the_glb_and_signatures_are_checked(http: httpx.Client, service: EmbeddedService) -> None:
    auth = new_user(http)
    asset_id = add_asset(service, http, auth)
    body = http.get(f"/avatar/assets/{asset_id}", headers=auth).json()
    assert body["expiresIn"] == 3600 and body["url"].startswith(service.base_url + "/files/avatars/")
    ok = httpx.get(body["url"])
    assert ok.status_code == 200 and ok.content[:4] == b"glTF"
    assert ok.headers["content-type"] == "model/gltf-binary"
    url = httpx.URL(body["url"])
    sig = url.params["sig"]
    forged = url.copy_set_param("sig", sig[:-1] + ("A" if sig[-1] != "A" else "B"))
    assert httpx.get(forged).status_code == 403
    extended = url.copy_set_param("exp", str(int(url.params["exp"]) + 10))
    assert httpx.get(extended).status_code == 403
    other_key = str(url).replace("model.glb", "other.glb")
    assert httpx.get(other_key).status_code == 403
    assert httpx.get(str(url.copy_remove_param("sig"))).status_code == 403
    assert error_of(httpx.get(forged))["message"] == "the download link is not valid"


def test_expired_url_is_refused(http: httpx.Client, service: EmbeddedService) -> None:
    auth = new_user(http)
    asset_id = add_asset(service, http, auth)
    with service.engine.connect() as conn:
        key = conn.execute(sa.select(AvatarAsset.storage_key)).scalar_one()
    expired = service.storage.signed_url(key, 60, now=0.0)  # signed in 1970: long expired
    r = httpx.get(expired)
    assert r.status_code == 403 and "expired" in error_of(r)["message"]
    assert http.get(f"/avatar/assets/{asset_id}", headers=new_user(http)).status_code == 404


# -- preferences --------------------------------------------------------------------------------

def test_preferences_round_trip_and_upsert(http: httpx.Client, service: EmbeddedService) -> None:
    auth = new_user(http)
    asset_id = add_asset(service, http, auth)
    empty = http.get(f"/avatar/preferences/{asset_id}", headers=auth).json()
    assert empty == {"assetId": asset_id, "appearance": {}, "voice": {}, "persona": {}, "updatedAt": None}
    r = http.post("/avatar/preferences", headers=auth, json={"assetId": asset_id, **SEED_PREFERENCES})
    assert r.status_code == 200 and r.json() == {"ok": True}
    saved = http.get(f"/avatar/preferences/{asset_id}", headers=auth).json()
    assert {k: saved[k] for k in SEED_PREFERENCES} == SEED_PREFERENCES
    changed = {**SEED_PREFERENCES, "appearance": {"bindi": False, "tattoo": "none"}}
    http.post("/avatar/preferences", headers=auth, json={"assetId": asset_id, **changed})
    saved = http.get(f"/avatar/preferences/{asset_id}", headers=auth).json()
    assert saved["appearance"] == {"bindi": False, "tattoo": "none"}, "unknown appearance keys are kept"
    with service.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM preferences")).scalar_one() == 1


@pytest.mark.parametrize(("patch", "field"), [
    ({"voice": {"pitch": 1.5}}, "voice.pitch"),
    ({"voice": {"speed": -1.01}}, "voice.speed"),
    ({"voice": {"language": "klingon"}}, "voice.language"),
    ({"voice": {"volume": 0.5}}, "voice.volume"),
    ({"persona": {"warmth": -0.1}}, "persona.warmth"),
    ({"persona": {"zest": 3}}, "persona"),
    ({"appearance": {"earrings": "lasers"}}, "appearance.earrings"),
    ({"appearance": {"bindi": "yes please"}}, "appearance.bindi"),
    ({"appearance": {"notes": "x" * 129}}, "appearance"),
    ({"appearance": {"nested": {"a": 1}}}, "appearance"),
    ({"appearance": {"p\u0000w": True}}, "appearance"),
    ({"appearance": {"note": "nul\u0000inside"}}, "appearance"),
    ({"mood": "sunny"}, "mood"),
])
def test_preferences_validation_names_the_field(http: httpx.Client, service: EmbeddedService,
                                                patch: dict[str, Any], field: str) -> None:
    auth = new_user(http)
    asset_id = add_asset(service, http, auth)
    r = http.post("/avatar/preferences", headers=auth, json={"assetId": asset_id, **SEED_PREFERENCES, **patch})
    assert r.status_code == 422
    assert error_of(r)["field"] == field, error_of(r)


def test_preferences_of_another_users_asset_are_404(http: httpx.Client, service: EmbeddedService) -> None:
    asset_id = add_asset(service, http, new_user(http))
    bob = new_user(http)
    r = http.post("/avatar/preferences", headers=bob, json={"assetId": asset_id, **SEED_PREFERENCES})
    assert r.status_code == 404
    assert http.get(f"/avatar/preferences/{asset_id}", headers=bob).status_code == 404


# -- deletion and health ------------------------------------------------------------------------

def test_deleting_a_user_removes_rows_and_files(http: httpx.Client, service: EmbeddedService) -> None:
    auth = new_user(http)
    asset_id = add_asset(service, http, auth)
    post_job(http, auth)
    http.post("/avatar/preferences", headers=auth, json={"assetId": asset_id, **SEED_PREFERENCES})
    other = new_user(http)
    post_job(http, other)
    assert len(stored_files(service)) == 4  # 2 selfies of the user, 1 GLB, 1 selfie of the other user
    assert http.delete("/users/me", headers=auth).status_code == 204
    (left,) = stored_files(service)
    assert left.parts[-3] == "selfies"
    with service.engine.connect() as conn:
        counts = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one()
                  for t in ("users", "avatar_jobs", "avatar_assets", "preferences")}
    assert counts == {"users": 1, "avatar_jobs": 1, "avatar_assets": 0, "preferences": 0}


def test_health_and_error_shape_for_unknown_routes(http: httpx.Client) -> None:
    health = http.get("/health").json()
    assert health["status"] == "ok" and health["database"] == "ok" and "api-test" in health["providers"]
    r = http.get("/nowhere")
    assert r.status_code == 404 and error_of(r)["code"] == "not_found"
    r = http.post("/users", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and error_of(r)["code"] == "invalid_json"


def test_openapi_declares_every_error_status(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    routes = {(m.upper(), p): op for p, item in spec["paths"].items() for m, op in item.items()}
    assert "/files/{key}" not in spec["paths"]
    expected = {
        ("POST", "/avatar/jobs"): {"202", "401", "403", "413", "415", "422", "503"},
        ("GET", "/avatar/jobs/{job_id}"): {"200", "401", "404"},
        ("GET", "/avatar/assets/{asset_id}"): {"200", "401", "404", "503"},
        ("POST", "/avatar/preferences"): {"200", "401", "404", "422"},
        ("DELETE", "/users/me"): {"204", "401", "503"},
    }
    for route, statuses in expected.items():
        assert statuses <= set(routes[route]["responses"]), route
