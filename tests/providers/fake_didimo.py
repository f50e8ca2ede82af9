"""A fake Didimo v3 API and its storage host, following ``design/providers.md`` §3 — plus the didimo ZIP it serves.

Two servers, two origins (``serve_asgi`` on two ports), because the behaviour under test is the
one between them: ``GET …/results/gltf`` on the API redirects to pre-signed storage, and the API
key must not follow (§3.5). The storage app records every header it receives so a test can prove
that. Switches on :class:`DidimoFake` inject the failures a real service has: 429 with
``Retry-After``, 5xx bursts, a refused key, malformed JSON, a job that fails or never finishes,
an expired download link.

:func:`build_didimo_zip` writes a tiny but complete didimo with numpy + json only (none of the
code under test): a skinned grid "head" with three joints (head, jaw, left eyelid), a rigid-looking
"hair" mesh no pose moves, a PNG texture, three ``.bin`` buffers, and ONE animation whose frames
realise the poses listed in ``avatar_info.json → animationFrames``. The rest pose (node TRS) is
deliberately not the bind pose (the head is yawed), so the adapter must undo the rest skin when it
turns world-space pose offsets into mesh-space morph deltas. The constants below let a test
compute the expected deltas on its own.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from loopback import serve_asgi
from PIL import Image

API_KEY = "ddmo-test-key-5f1c2a"
FPS = 30.0  # keyframes one frame apart; the adapter must not assume this rate

HEAD_YAW = math.radians(10.0)  # the head joint's rest rotation about +Y (the bind pose has none)
JAW_PIVOT = np.array([0.0, -0.02, 0.03])  # jaw joint, relative to the head joint
EYELID_POS = np.array([0.03, 0.05, 0.06])  # left upper eyelid joint, relative to the head joint
EYELID_DROP = np.array([0.0, -0.008, 0.0])  # its translation offset at eyeBlinkLeft (head space)
JAW_OPEN = math.radians(20.0)  # jaw rotation about +X at jawOpen's end frame
JAW_AA = math.radians(15.0)  # … at the Oculus "aa" end frame
JAW_I = math.radians(5.0)  # … at the Oculus "I" end frame

GRID_X = np.linspace(-0.05, 0.05, 5)
GRID_Y = np.array([-0.06, -0.03, 0.0, 0.03, 0.06])
GRID_Z = 0.08

ANIMATION_FRAMES: dict[str, dict[str, list[int]]] = {
    "ARKit": {"eyeBlinkLeft": [0, 1], "jawOpen": [2, 4], "cheekPuff": [5, 6]},  # cheekPuff: rig moves nothing
    "oculus": {"sil": [6, 7], "aa": [7, 8], "I": [9, 10]},
}
FRAME_COUNT = 11


def quat_x(angle: float) -> list[float]:
    return [math.sin(angle / 2), 0.0, 0.0, math.cos(angle / 2)]


def quat_y(angle: float) -> list[float]:
    return [0.0, math.sin(angle / 2), 0.0, math.cos(angle / 2)]


def head_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions (25, 3) in mesh space (= bind-pose world), JOINTS_0 and WEIGHTS_0 (skin joints head/jaw/eyelid).

    Rows from the bottom: two rows on the jaw, one half jaw / half head, one on the head, and the top
    row on the head except its x > 0 half, which rides the left eyelid.
    """
    positions, joints, weights = [], [], []
    for row, y in enumerate(GRID_Y):
        for x in GRID_X:
            positions.append([x, y, GRID_Z])
            if row < 2:
                joints.append([1, 0, 0, 0])
                weights.append([1.0, 0, 0, 0])
            elif row == 2:
                joints.append([1, 0, 0, 0])
                weights.append([0.5, 0.5, 0, 0])
            elif row == 4 and x > 0:
                joints.append([2, 0, 0, 0])
                weights.append([1.0, 0, 0, 0])
            else:
                joints.append([0, 0, 0, 0])
                weights.append([1.0, 0, 0, 0])
    return np.array(positions, np.float32), np.array(joints, np.uint8), np.array(weights, np.float32)


class _Buffer:
    """One ``.bin`` file under construction, with the views and accessors pointing into it."""

    def __init__(self, doc: dict[str, Any], uri: str) -> None:
        self.doc = doc
        self.index = len(doc["buffers"])
        self.data = bytearray()
        doc["buffers"].append({"uri": uri, "byteLength": 0})

    def accessor(self, array: np.ndarray, kind: str, ctype: int, *, bounds: bool = False) -> int:
        raw = np.ascontiguousarray(array).tobytes()
        self.data.extend(b"\0" * (-len(self.data) % 4))
        self.doc["bufferViews"].append({"buffer": self.index, "byteOffset": len(self.data), "byteLength": len(raw)})
        self.data.extend(raw)
        self.doc["buffers"][self.index]["byteLength"] = len(self.data)
        acc: dict[str, Any] = {"bufferView": len(self.doc["bufferViews"]) - 1, "componentType": ctype,
                               "count": len(array), "type": kind}
        if bounds:
            acc["min"] = np.asarray(array).min(axis=0).tolist()
            acc["max"] = np.asarray(array).max(axis=0).tolist()
        self.doc["accessors"].append(acc)
        return len(self.doc["accessors"]) - 1


def _grid_triangles(nx: int, ny: int) -> np.ndarray:
    tris = []
    for j in range(ny - 1):
        for i in range(nx - 1):
            a, b, c, d = j * nx + i, j * nx + i + 1, (j + 1) * nx + i, (j + 1) * nx + i + 1
            tris += [a, b, d, a, d, c]
    return np.array(tris, np.uint16)


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 150, 120)).save(out, "PNG")
    return out.getvalue()


def build_didimo_files(animation_frames: dict[str, Any] | None = None) -> dict[str, bytes]:
    """The files of a didimo glTF package (§3.5): ``avatar.gltf``, three ``.bin``, a PNG, ``avatar_info.json``."""
    doc: dict[str, Any] = {"asset": {"version": "2.0", "generator": "fake didimo"}, "buffers": [],
                           "bufferViews": [], "accessors": []}
    head_bin, hair_bin, anim_bin = (_Buffer(doc, "ddmo_head.bin"), _Buffer(doc, "ddmo_hair.bin"),
                                    _Buffer(doc, "animations.bin"))
    positions, joints, weights = head_grid()
    uv = np.c_[(positions[:, 0] + 0.05) * 10, (positions[:, 1] + 0.06) * 8].astype(np.float32)
    head_prim = {
        "attributes": {
            "POSITION": head_bin.accessor(positions, "VEC3", 5126, bounds=True),
            "TEXCOORD_0": head_bin.accessor(uv, "VEC2", 5126),
            "JOINTS_0": head_bin.accessor(joints, "VEC4", 5121),
            "WEIGHTS_0": head_bin.accessor(weights, "VEC4", 5126),
        },
        "indices": head_bin.accessor(_grid_triangles(5, 5), "SCALAR", 5123),
        "material": 0,
    }
    # Inverse bind matrices for the BIND pose: head unrotated at the origin, jaw and eyelid at their offsets.
    ibms = []
    for offset in (np.zeros(3), JAW_PIVOT, EYELID_POS):
        m = np.eye(4)
        m[:3, 3] = -offset
        ibms.append(m.T.ravel())  # column-major
    ibm_accessor = head_bin.accessor(np.array(ibms, np.float32), "MAT4", 5126)

    hair = np.array([[-0.05, 0.1, 0.0], [0.05, 0.1, 0.0], [0.05, 0.1, 0.08], [-0.05, 0.1, 0.08]], np.float32)
    hair_prim = {
        "attributes": {
            "POSITION": hair_bin.accessor(hair, "VEC3", 5126, bounds=True),
            "JOINTS_0": hair_bin.accessor(np.zeros((4, 4), np.uint8), "VEC4", 5121),
            "WEIGHTS_0": hair_bin.accessor(np.tile(np.float32([1, 0, 0, 0]), (4, 1)), "VEC4", 5126),
        },
        "indices": hair_bin.accessor(np.array([0, 1, 2, 0, 2, 3], np.uint16), "SCALAR", 5123),
    }

    frames = np.arange(FRAME_COUNT)
    times = anim_bin.accessor((frames / FPS).astype(np.float32), "SCALAR", 5126, bounds=True)
    jaw_angle = {3: JAW_OPEN / 2, 4: JAW_OPEN, 8: JAW_AA, 10: JAW_I}
    jaw_rot = np.array([quat_x(jaw_angle.get(int(f), 0.0)) for f in frames], np.float32)
    head_rot = np.array([quat_y(HEAD_YAW)] * FRAME_COUNT, np.float32)
    eyelid = np.array([EYELID_POS + (EYELID_DROP if f == 1 else 0) for f in frames], np.float32)
    doc["animations"] = [{
        "name": "didimo_poses",
        "samplers": [
            {"input": times, "output": anim_bin.accessor(head_rot, "VEC4", 5126), "interpolation": "LINEAR"},
            {"input": times, "output": anim_bin.accessor(jaw_rot, "VEC4", 5126), "interpolation": "LINEAR"},
            {"input": times, "output": anim_bin.accessor(eyelid, "VEC3", 5126), "interpolation": "STEP"},
        ],
        "channels": [
            {"sampler": 0, "target": {"node": 1, "path": "rotation"}},
            {"sampler": 1, "target": {"node": 2, "path": "rotation"}},
            {"sampler": 2, "target": {"node": 3, "path": "translation"}},
        ],
    }]
    doc["nodes"] = [
        {"name": "Armature", "children": [1]},
        {"name": "Head", "rotation": quat_y(HEAD_YAW), "children": [2, 3]},
        {"name": "Jaw", "translation": JAW_PIVOT.tolist()},
        {"name": "EyelidUpper_L", "translation": EYELID_POS.tolist()},
        {"name": "ddmo_head", "mesh": 0, "skin": 0},
        {"name": "ddmo_hair", "mesh": 1, "skin": 0},
    ]
    doc["skins"] = [{"joints": [1, 2, 3], "inverseBindMatrices": ibm_accessor, "skeleton": 0}]
    doc["meshes"] = [{"name": "ddmo_head", "primitives": [head_prim]}, {"name": "ddmo_hair", "primitives": [hair_prim]}]
    doc["materials"] = [{"name": "head", "pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}]
    doc["textures"] = [{"source": 0}]
    doc["images"] = [{"uri": "ddmo_head_albedo.png"}]
    doc["scenes"] = [{"nodes": [0, 4, 5]}]
    doc["scene"] = 0
    info = {"meshList": [{"meshName": "ddmo_head", "bodyPart": "head"}],
            "animationFrames": ANIMATION_FRAMES if animation_frames is None else animation_frames}
    return {
        "avatar.gltf": json.dumps(doc, indent=1).encode(),
        "ddmo_head.bin": bytes(head_bin.data),
        "ddmo_hair.bin": bytes(hair_bin.data),
        "animations.bin": bytes(anim_bin.data),
        "ddmo_head_albedo.png": _png(),
        "avatar_info.json": json.dumps(info).encode(),
        "metadata.json": b"{}",
    }


def build_didimo_zip(*, without: tuple[str, ...] = (), animation_frames: dict[str, Any] | None = None) -> bytes:
    """The didimo as the ZIP Didimo serves (§3.5), minus the files named in ``without``."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in build_didimo_files(animation_frames).items():
            if name not in without:
                archive.writestr(name, data)
    return out.getvalue()


@dataclass
class DidimoFake:
    """State and switches of one fake Didimo; tests flip fields, the servers read them on each request."""

    zip_bytes: bytes = b""
    api_key: str = API_KEY
    polls_to_finish: int = 3  # the n-th status request reports done
    inject: list[int] = field(default_factory=list)  # statuses the next API requests get instead (429, 5xx)
    retry_after: str = "0"  # sent with injected 429s
    malformed_json: bool = False  # the status endpoint answers with broken JSON
    never_finish: bool = False  # processing at 42 % forever
    fail_with: str | None = None  # the job fails with this status_message
    expired_download: bool = False  # storage answers 403, like an expired pre-signed URL
    # what happened
    created: list[dict[str, Any]] = field(default_factory=list)
    api_calls: list[tuple[str, str]] = field(default_factory=list)
    api_keys_seen: list[str | None] = field(default_factory=list)
    storage_headers: list[dict[str, str]] = field(default_factory=list)
    polls: dict[str, int] = field(default_factory=dict)
    storage_url: str = ""


def _gate(fake: DidimoFake, request: Request) -> Response | None:
    """Record the call; answer an injected failure or a refused key instead of the real handler."""
    fake.api_calls.append((request.method, request.url.path))
    fake.api_keys_seen.append(request.headers.get("didimo-api-key"))
    if fake.inject:
        status = fake.inject.pop(0)
        headers = {"Retry-After": fake.retry_after} if status == 429 else {}
        return JSONResponse({"description": "slow down" if status == 429 else "internal error"}, status, headers)
    if request.headers.get("didimo-api-key") != fake.api_key:
        return JSONResponse({"description": "Invalid API key", "is_error": True}, 401)
    return None


def api_app(fake: DidimoFake) -> FastAPI:
    app = FastAPI()

    @app.post("/v3/didimos")
    async def create(request: Request) -> Response:
        if (refusal := _gate(fake, request)) is not None:
            return refusal
        form = await request.form()
        photo = form.get("photo")
        if photo is None or isinstance(photo, str):
            return JSONResponse({"description": "photo is required", "is_error": True}, 400)
        if form.get("input_type") != "photo" or "gltf" not in form.getlist("transfer_formats"):
            return JSONResponse({"description": "unsupported input_type or transfer_formats"}, 400)
        key = f"dd{len(fake.created) + 1:04d}"
        fake.created.append({
            "key": key,
            "fields": {k: v for k, v in form.multi_items() if isinstance(v, str)},
            "photo": await photo.read(),
            "photo_type": photo.content_type,
            "photo_name": photo.filename,
        })
        fake.polls[key] = 0
        return JSONResponse({"key": key, "status": "pending"}, 201)

    @app.get("/v3/didimos/{key}")
    async def status(key: str, request: Request) -> Response:
        if (refusal := _gate(fake, request)) is not None:
            return refusal
        if key not in fake.polls:
            return JSONResponse({"description": "Not found", "is_error": True}, 404)
        if fake.malformed_json:
            return Response('{"status": "done", "percent": ', media_type="application/json")
        fake.polls[key] += 1
        body: dict[str, Any] = {"key": key, "status_message": "", "error_code": None, "artifacts": []}
        if fake.fail_with is not None:
            return JSONResponse(body | {"status": "error", "percent": 30, "status_message": fake.fail_with,
                                        "error_code": "10042"})
        n = fake.polls[key]
        if fake.never_finish or n < fake.polls_to_finish:
            percent = 42 if fake.never_finish else round(100 * (n - 1) / fake.polls_to_finish)
            return JSONResponse(body | {"status": "pending" if n == 1 else "processing", "percent": percent})
        link = str(request.base_url).rstrip("/") + f"/v3/didimos/{key}/results/gltf"
        return JSONResponse(body | {"status": "done", "percent": 100,
                                    "transfer_formats": [{"name": "gltf", "__links": {"self": link}}]})

    @app.get("/v3/didimos/{key}/results/{fmt}")
    async def download(key: str, fmt: str, request: Request) -> Response:
        if (refusal := _gate(fake, request)) is not None:
            return refusal
        if key not in fake.polls or fmt != "gltf":
            return JSONResponse({"description": "Not found"}, 404)
        return RedirectResponse(f"{fake.storage_url}/didimo-results/{key}_{fmt}.zip?X-Amz-Signature=f00d", 302)

    return app


def storage_app(fake: DidimoFake) -> FastAPI:
    app = FastAPI()

    @app.get("/didimo-results/{name}")
    async def fetch(name: str, request: Request) -> Response:
        fake.storage_headers.append({k.lower(): v for k, v in request.headers.items()})
        if fake.expired_download:
            return Response("<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>", 403,
                            media_type="application/xml")
        return Response(fake.zip_bytes, media_type="application/zip")

    return app


@contextmanager
def run_fake_didimo(fake: DidimoFake) -> Iterator[str]:
    """Start storage and API on two loopback ports; yields the API's base URL."""
    with serve_asgi(storage_app(fake)) as storage, serve_asgi(api_app(fake)) as api:
        fake.storage_url = storage
        yield api
