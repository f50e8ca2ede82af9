"""Didimo adapter: selfie → didimo (joint-rigged glTF ZIP) → one GLB whose ARKit poses are morph targets.

Why this adapter does more than the others: Didimo delivers no GLB and no morph targets
(``design/providers.md`` §0, §3.5, §3.6). Its facial expressions are *joint poses* stored as frame
ranges of the glTF animation, listed in ``avatar_info.json``. The rest of Avatar Studio (sliders,
lip-sync, ``inspect``) speaks morph targets only, so :meth:`DidimoProvider.result` repacks the
``.gltf`` + ``.bin`` + textures into one GLB and *bakes* every pose of the chosen pack into a
morph target: linear-blend skinning at the pose frame minus skinning at the neutral frame.

Flow and sources (claims marked [D] documented / [I] inferred, as in providers.md):

* auth: static key in the ``DIDIMO-API-KEY`` header, base ``https://api.didimo.co``, ``/v3`` [D] §3.2;
* create: ``POST /v3/didimos`` multipart ``photo``, ``input_type=photo``, ``transfer_formats=gltf``,
  pose-pack flags ``arkit`` / ``oculus_lipsync`` = ``true`` → ``{key}`` [D] §3.3;
* poll: ``GET /v3/didimos/{key}`` → ``status`` (pending/processing/done/error), ``percent`` 0–100;
  a non-empty ``status_message`` means failure even when ``status`` says otherwise [D] §3.4;
* result: ``transfer_formats[].__links.self`` (``…/results/gltf``) redirects to storage; the key
  must not follow the redirect [D] §3.5, so :meth:`ProviderHttp.download` follows it by hand;
* the ZIP holds ``avatar.gltf``, ``*.bin``, textures and ``avatar_info.json`` [D] §3.5, whose
  ``animationFrames`` groups (``ARKit``: 51 poses without ``tongueOut``; ``oculus``: 15 visemes with
  ``I/O/U``) map pose names to ``[start, end]`` frames [D] §3.6. Which frame is neutral is not
  documented: see :func:`pose_frame_pair`.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import logging
import mimetypes
import os
import posixpath
import struct
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import quote, unquote

import httpx
import numpy as np

from avatar_studio.avatar.accessors import read_accessor
from avatar_studio.avatar.blendshapes import canonical_name
from avatar_studio.avatar.errors import AvatarError
from avatar_studio.avatar.gltf_document import GltfDocument
from avatar_studio.avatar.transforms import all_node_matrices, vertex_skin_matrices, world_matrices
from avatar_studio.providers.base import JobOptions, ProviderError, ProviderResult, ProviderStatus, Selfie
from avatar_studio.providers.http import MAX_RESULT_BYTES, ProviderHttp

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.didimo.co"  # [D] §3.2 (didimoinc/cli default host)
API_KEY_HEADER = "DIDIMO-API-KEY"  # [D] §3.2
ACCEPTED_PHOTO_TYPES = {"image/jpeg": "selfie.jpg", "image/png": "selfie.png"}  # jpg or png [D] §3.3
DEFAULT_GLTF_NAME = "avatar.gltf"  # [D] §3.5 (sample didimos; the Unity SDK's default file name)
AVATAR_INFO_NAME = "avatar_info.json"  # [D] §3.6

_GLB_MAGIC = 0x46546C67
_CHUNK_JSON = 0x4E4F534A
_CHUNK_BIN = 0x004E4942
_FLOAT = 5126
_DRACO = "KHR_draco_mesh_compression"


@dataclass(frozen=True)
class PosePack:
    """A Didimo pose pack: the create flag that orders it and its group in ``animationFrames``."""

    label: str  # for messages
    create_flag: str  # multipart field set to "true" [D] §3.3 (CLI feature flags)
    group: str  # key in avatar_info.json → animationFrames [D] §3.6


# ``blendshapes="arkit"`` wants the 51 ARKit poses; ``"basic"`` (visemes for lip-sync) the 15 Oculus ones.
POSE_PACKS: dict[str, PosePack] = {
    "arkit": PosePack("ARKit", "arkit", "ARKit"),
    "basic": PosePack("Oculus lipsync", "oculus_lipsync", "oculus"),
}


class DidimoProvider:
    """The ``didimo`` provider: create from one photo, poll ``percent``, download and bake the ZIP."""

    name: ClassVar[str] = "didimo"
    needs_selfie: ClassVar[bool] = True

    def __init__(
        self,
        api_key: str | None,
        *,
        base_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._api_key = api_key or None
        root = (base_url or os.environ.get("DIDIMO_URL") or DEFAULT_BASE_URL).rstrip("/")
        headers = {API_KEY_HEADER: self._api_key} if self._api_key else {}
        # ProviderHttp strips every header passed here (not only Authorization) on cross-host redirects.
        self._http = ProviderHttp(self.name, root, headers=headers, transport=transport, sleep=sleep)

    def __repr__(self) -> str:  # never show the key, even in a debugger or a log of the worker's state
        return f"DidimoProvider(base_url={str(self._http.client.base_url)!r})"

    def close(self) -> None:
        self._http.close()

    # -- Provider protocol -----------------------------------------------------------------------
    def check(self, selfie: Selfie | None, options: JobOptions) -> None:
        """Refuse early what Didimo cannot do: no key, no photo, a photo type it does not take."""
        if not self._api_key:
            raise ProviderError("didimo needs an API key (from the Didimo Customer Portal); set it in Settings")
        if selfie is None:
            raise ProviderError("didimo builds the avatar from a photo; upload a selfie")
        if selfie.mime_type not in ACCEPTED_PHOTO_TYPES:
            raise ProviderError(f"didimo accepts JPEG or PNG photos, not {selfie.mime_type}")
        if options.output != "glb":
            raise ProviderError(f"didimo results can only be delivered as GLB here, not {options.output!r}")
        if options.blendshapes not in POSE_PACKS:
            raise ProviderError(f"didimo has no pose pack for blendshapes={options.blendshapes!r}")

    def start(self, selfie: Selfie | None, options: JobOptions) -> str:
        """``POST /v3/didimos`` with the photo and the pose pack's flag [D] §3.3.

        Returns ``<blendshapes>/<didimo key>``: the pose pack to bake must survive until
        :meth:`result`, which any worker may call with nothing but this id.
        """
        self.check(selfie, options)
        assert selfie is not None  # check() refused None
        pack = POSE_PACKS[options.blendshapes]
        fields = {"input_type": "photo", "transfer_formats": "gltf", pack.create_flag: "true"}
        photo = (ACCEPTED_PHOTO_TYPES[selfie.mime_type], selfie.data, selfie.mime_type)
        body = self._http.json("POST", "/v3/didimos", data=fields, files={"photo": photo})
        key = body.get("key") if isinstance(body, dict) else None
        if not isinstance(key, str) or not key:
            raise ProviderError("didimo accepted the photo but its answer has no didimo key", transient=True)
        log.info("didimo: created didimo %s (%s pose pack)", key, pack.label)
        return f"{options.blendshapes}/{key}"

    def poll(self, provider_job_id: str) -> ProviderStatus:
        """Map ``status``/``percent`` [D] §3.4 onto progress in [0, 1]."""
        details = self._details(_split_job_id(provider_job_id)[1])
        if _is_done(details):
            return ProviderStatus(progress=1.0, done=True)
        # Not done: never report 100 % (the CLI's "missing means 100" only makes sense once done) [I].
        return ProviderStatus(progress=min(0.99, _percent(details)))

    def result(self, provider_job_id: str) -> ProviderResult:
        """Download the glTF ZIP [D] §3.5 and bake the job's pose pack into a GLB with morph targets."""
        pack, key = _split_job_id(provider_job_id)
        details = self._details(key)
        if not _is_done(details):
            raise ProviderError("didimo has not finished this avatar yet; the job will be retried", transient=True)
        data = self._http.download(_result_link(details, key))
        baked = bake_didimo_zip(data, pack)
        log.info("didimo %s: baked %d %s poses into morph targets%s", key, len(baked.baked), pack.label,
                 f"; moved nothing: {', '.join(baked.unmoved)}" if baked.unmoved else "")
        return ProviderResult(glb=baked.glb, blendshape_map=baked.blendshape_map)

    # -- HTTP helpers ------------------------------------------------------------------------------
    def _details(self, key: str) -> dict[str, Any]:
        """``GET /v3/didimos/{key}``, raising the job's failure (non-transient) when Didimo reports one."""
        if not self._api_key:
            raise ProviderError("didimo needs an API key (from the Didimo Customer Portal); set it in Settings")
        body = self._http.json("GET", f"/v3/didimos/{quote(key, safe='')}")
        if not isinstance(body, dict):
            raise ProviderError("didimo sent a status that is not a JSON object", transient=True)
        status = str(body.get("status") or "").lower()
        message = body.get("status_message")
        # A non-empty status_message is a failure even when status is not "error" [D] §3.4 (CLI).
        if status == "error" or (isinstance(message, str) and message.strip()):
            reason = message.strip() if isinstance(message, str) and message.strip() else "no reason given"
            code = body.get("error_code")
            suffix = f" (error {code})" if isinstance(code, str | int) and not isinstance(code, bool) and code else ""
            raise ProviderError(f"didimo could not build the avatar: {reason}{suffix}")
        return body


def _split_job_id(provider_job_id: str) -> tuple[PosePack, str]:
    """``<blendshapes>/<key>`` → (pose pack, didimo key); a bare key means the ARKit pack."""
    prefix, sep, key = provider_job_id.partition("/")
    if sep and prefix in POSE_PACKS and key:
        return POSE_PACKS[prefix], key
    return POSE_PACKS["arkit"], provider_job_id


def _is_done(details: Mapping[str, Any]) -> bool:
    return str(details.get("status") or "").lower() == "done"  # [D] §3.4


def _percent(details: Mapping[str, Any]) -> float:
    """``percent`` (0–100 [D] §3.4, a float in the Unity SDK) as a fraction; absent or bad → 0 [I]."""
    value = details.get("percent")
    try:
        number = float(value) if value is not None and not isinstance(value, bool) else 0.0
    except (TypeError, ValueError):
        return 0.0
    return float(np.clip(number / 100.0, 0.0, 1.0)) if np.isfinite(number) else 0.0


def _result_link(details: Mapping[str, Any], key: str) -> str:
    """The glTF result link from ``transfer_formats[].__links.self`` [D] §3.5, else the documented path."""
    formats = details.get("transfer_formats")
    for entry in formats if isinstance(formats, list) else []:
        if isinstance(entry, dict) and str(entry.get("name", "")).lower() == "gltf":
            links = entry.get("__links")
            link = links.get("self") if isinstance(links, dict) else None
            if isinstance(link, str) and link.startswith(("http://", "https://", "/")):
                return link
    return f"/v3/didimos/{quote(key, safe='')}/results/gltf"


# ==================================================================================================
# ZIP → GLB with baked poses
# ==================================================================================================


@dataclass
class BakedDidimo:
    """The repacked GLB and what the bake did (``unmoved``: poses that moved no vertex, so were skipped)."""

    glb: bytes
    pack: PosePack
    baked: list[str]  # target names, e.g. "ARKit_jawOpen"
    unmoved: list[str]  # pose names of the pack that moved nothing (e.g. a pose the rig leaves flat)
    blendshape_map: dict[str, str] = field(default_factory=dict)


def pose_frame_pair(ranges: Mapping[str, Sequence[float]], pose: str) -> tuple[float, float]:
    """(neutral frame, full-pose frame) for ``pose`` of one ``animationFrames`` group.  [I]

    Undocumented (providers.md §3.6, §7). Assumed here: the pose is fully on at the range's **end**,
    and the neutral face is the group's own neutral — its ``Neutral`` entry's start when it has one,
    else the group's **first** frame (the smallest start), so every target of a pack is measured
    from the same face. Evidence: the Unity SDK cuts each range into a clip and plays it additively
    with the pose weight as normalised time, i.e. weight 0 = the start frame, weight 1 = the end
    frame (``FBXDidimoImporter.cs``, ``LegacyAnimationPoseController.cs``). That reads each range's
    own start as neutral; the two readings agree when the start frames are neutral, which the
    sample ranges (``[16, 17]``, ``[48, 50]``…) suggest. If real files disagree, return
    ``(start, end)`` of ``ranges[pose]`` here; nothing else needs to change.
    """
    neutral_entry = next((v for k, v in ranges.items() if k.lower() == "neutral"), None)
    neutral = float(neutral_entry[0]) if neutral_entry is not None else min(float(v[0]) for v in ranges.values())
    return neutral, float(ranges[pose][1])


def bake_didimo_zip(data: bytes, pack: PosePack, *, provider: str = "didimo") -> BakedDidimo:
    """Unpack a Didimo glTF ZIP, embed buffers and images, bake ``pack``'s poses; return a GLB.

    Raises :class:`ProviderError` (non-transient unless the ZIP itself is unreadable) with a message
    for the user.
    """
    files = _read_zip(data, provider)
    gltf_name = _find_gltf(files, provider)
    base_dir = posixpath.dirname(gltf_name)
    try:
        doc_json = json.loads(files[gltf_name])
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProviderError(f"{provider}'s {gltf_name} is not valid glTF JSON") from None
    if not isinstance(doc_json, dict):
        raise ProviderError(f"{provider}'s {gltf_name} is not valid glTF JSON")
    if _DRACO in (doc_json.get("extensionsUsed") or []):
        raise ProviderError(f"{provider}'s model is Draco-compressed; its poses cannot be baked into morph targets")
    ranges = _pose_ranges(files, base_dir, pack, provider)
    blob = _Blob()
    try:
        _embed_buffers(doc_json, files, base_dir, blob, gltf_name, provider)
        _embed_images(doc_json, files, base_dir, blob, gltf_name, provider)
        baker = _PoseBaker(GltfDocument(doc_json, memoryview(bytes(blob.data)), None, gltf_name), blob, provider)
        baked, unmoved = baker.bake(pack, ranges)
        if not baked:
            raise ProviderError(f"none of the didimo's {len(ranges)} {pack.label} poses moves any vertex; "
                                "its pose pack is unusable")
        asset = doc_json["asset"]
        extras = asset.get("extras") if isinstance(asset.get("extras"), dict) else {}
        extras["avatar_studio"] = {"didimo_bake": {"pose_group": pack.group, "baked": baked, "unmoved": unmoved,
                                                  "frames": "neutral = group's first frame, pose = range end [I]"}}
        asset["extras"] = extras
        glb = _glb_bytes(doc_json, blob)
    except AvatarError as exc:
        raise ProviderError(f"{provider}'s model is malformed: {exc}") from None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        # A malformed value the explicit checks did not foresee: one readable line, traceback in the log.
        log.debug("baking the didimo failed", exc_info=True)
        raise ProviderError(f"{provider}'s model is malformed ({type(exc).__name__}: {exc})") from None
    mapping = {name: canonical for name in baked if (canonical := canonical_name(name)) is not None}
    return BakedDidimo(glb, pack, baked, unmoved, mapping)


# -- unpacking -------------------------------------------------------------------------------------
def _read_zip(data: bytes, provider: str) -> dict[str, bytes]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ProviderError(f"{provider} sent a result that is not a valid ZIP file", transient=True) from None
    with archive:
        infos = [i for i in archive.infolist() if not i.is_dir() and not i.filename.startswith("__MACOSX")]
        if sum(i.file_size for i in infos) > MAX_RESULT_BYTES:
            raise ProviderError(f"{provider}'s result unpacks to more than {MAX_RESULT_BYTES // (1024 * 1024)} MB")
        try:
            return {posixpath.normpath(i.filename.replace("\\", "/")): archive.read(i) for i in infos}
        except (zipfile.BadZipFile, OSError, EOFError):
            raise ProviderError(f"{provider}'s result ZIP is damaged", transient=True) from None


def _find_gltf(files: Mapping[str, bytes], provider: str) -> str:
    names = sorted(n for n in files if n.lower().endswith(".gltf"))
    if not names:
        listed = ", ".join(sorted(files)[:8]) or "nothing"
        raise ProviderError(f"{provider}'s result ZIP contains no glTF model (it holds: {listed})")
    return next((n for n in names if posixpath.basename(n).lower() == DEFAULT_GLTF_NAME), names[0])


def _resolve(files: Mapping[str, bytes], base_dir: str, uri: Any, what: str, gltf_name: str, provider: str) -> bytes:
    """Bytes of a ``uri`` of the glTF: a base64 ``data:`` URI or a file next to the .gltf in the ZIP."""
    if not isinstance(uri, str) or not uri:
        raise ProviderError(f"{provider}'s {gltf_name} has a {what} without a usable uri")
    if uri.startswith("data:"):
        header, _, payload = uri.partition(",")
        if not header.endswith(";base64"):
            raise ProviderError(f"{provider}'s {gltf_name} has a {what} with a data: URI that is not base64")
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ProviderError(f"{provider}'s {gltf_name} has a {what} with a broken data: URI") from None
    name = unquote(uri)
    if ":" in name.split("/")[0] or name.startswith(("/", "\\")):
        raise ProviderError(f"{provider}'s {gltf_name} refers to {name!r}, outside its result ZIP")
    path = posixpath.normpath(posixpath.join(base_dir, name))
    if path not in files:
        raise ProviderError(f"{provider}'s result is incomplete: {gltf_name} refers to the {what} {name!r}, "
                            "which is not in the ZIP")
    return files[path]


def _pose_ranges(
    files: Mapping[str, bytes], base_dir: str, pack: PosePack, provider: str
) -> dict[str, tuple[float, float]]:
    """The pack's pose → (start, end) frames from ``avatar_info.json → animationFrames`` [D] §3.6."""
    wanted = pack.label
    info_path = posixpath.normpath(posixpath.join(base_dir, AVATAR_INFO_NAME))
    raw = files.get(info_path)
    if raw is None:
        raw = next((v for k, v in sorted(files.items()) if posixpath.basename(k) == AVATAR_INFO_NAME), None)
    if raw is None:
        raise ProviderError(f"this didimo has no {wanted} pose pack: its result has no {AVATAR_INFO_NAME} "
                            "listing the poses")
    try:
        info = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProviderError(f"this didimo has no usable {wanted} pose pack: {AVATAR_INFO_NAME} is not JSON") from None
    groups = info.get("animationFrames") if isinstance(info, dict) else None
    groups = groups if isinstance(groups, dict) else {}
    group = next((g for k, g in groups.items() if k.lower() == pack.group.lower()), None)
    if not isinstance(group, dict) or not group:
        raise ProviderError(f"this didimo has no {wanted} pose pack ({AVATAR_INFO_NAME} lists no {pack.group!r} "
                            "animation frames); create it with that option")
    ranges: dict[str, tuple[float, float]] = {}
    for pose, frames in group.items():
        if (not isinstance(frames, list) or len(frames) != 2
                or not all(isinstance(f, int | float) and not isinstance(f, bool) for f in frames)):
            raise ProviderError(f"{provider}'s {AVATAR_INFO_NAME} gives pose {pose!r} no [start, end] frames")
        ranges[str(pose)] = (float(frames[0]), float(frames[1]))
    return ranges


class _Blob:
    """The single GLB binary chunk, grown 4-byte aligned (every accessor's component size divides 4)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def append(self, raw: bytes) -> int:
        self.data.extend(b"\0" * (-len(self.data) % 4))
        offset = len(self.data)
        self.data.extend(raw)
        return offset


def _embed_buffers(doc: dict[str, Any], files: Mapping[str, bytes], base_dir: str, blob: _Blob,
                   gltf_name: str, provider: str) -> None:
    """Concatenate every buffer into the blob and repoint the buffer views at buffer 0."""
    buffers = doc.get("buffers") or []
    if not isinstance(buffers, list):
        raise ProviderError(f"{provider}'s {gltf_name} is malformed: 'buffers' is not an array")
    starts: list[int] = []
    for spec in buffers:
        spec = spec if isinstance(spec, dict) else {}
        data = _resolve(files, base_dir, spec.get("uri"), "buffer", gltf_name, provider)
        declared = spec.get("byteLength")
        if not isinstance(declared, int) or declared < 0 or len(data) < declared:
            raise ProviderError(f"{provider}'s result is incomplete: buffer {spec.get('uri')!r} is shorter than "
                                f"{gltf_name} says")
        starts.append(blob.append(data[:declared]))
    for index, view in enumerate(doc.get("bufferViews") or []):
        source = view.get("buffer") if isinstance(view, dict) else None
        if not isinstance(source, int) or isinstance(source, bool) or not 0 <= source < len(starts):
            raise ProviderError(f"{provider}'s {gltf_name} is malformed: bufferViews[{index}] names no buffer")
        view["buffer"] = 0
        view["byteOffset"] = starts[source] + int(view.get("byteOffset", 0) or 0)
    doc["buffers"] = [{"byteLength": 0}]  # set to the final length when the GLB is written


def _embed_images(doc: dict[str, Any], files: Mapping[str, bytes], base_dir: str, blob: _Blob,
                  gltf_name: str, provider: str) -> None:
    """Move every ``uri`` image into a buffer view (a GLB must be self-contained)."""
    for index, image in enumerate(doc.get("images") or []):
        if not isinstance(image, dict) or "uri" not in image:
            continue
        data = _resolve(files, base_dir, image["uri"], "texture", gltf_name, provider)
        if data.startswith(b"\x89PNG"):
            mime = "image/png"
        elif data.startswith(b"\xff\xd8\xff"):
            mime = "image/jpeg"
        else:
            mime = image.get("mimeType") or mimetypes.guess_type(unquote(image["uri"]))[0] or "application/octet-stream"
        image["bufferView"] = _add_view(doc, blob, data)
        image["mimeType"] = mime
        image.setdefault("name", posixpath.basename(unquote(image["uri"])) if not image["uri"].startswith("data:")
                         else f"image{index}")
        del image["uri"]


def _add_view(doc: dict[str, Any], blob: _Blob, raw: bytes) -> int:
    views = doc.setdefault("bufferViews", [])
    views.append({"buffer": 0, "byteOffset": blob.append(raw), "byteLength": len(raw)})
    return len(views) - 1


def _add_accessor(doc: dict[str, Any], accessor: dict[str, Any]) -> int:
    accessors = doc.setdefault("accessors", [])
    accessors.append(accessor)
    return len(accessors) - 1


def _glb_bytes(doc: dict[str, Any], blob: _Blob) -> bytes:
    """The GLB container around ``doc`` and ``blob`` (glTF 2.0 §4.4: 4-byte aligned, padded chunks).

    Why not :class:`avatar_studio.avatar.export.GlbBuilder`: it builds a fresh pygltflib document,
    while this GLB must keep Didimo's own JSON verbatim (skins, animations, extras, extensions).
    """
    data = bytes(blob.data) + b"\0" * (-len(blob.data) % 4)
    doc["buffers"] = [{"byteLength": len(blob.data)}]
    text = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
    text += b" " * (-len(text) % 4)
    total = 12 + 8 + len(text) + 8 + len(data)
    return b"".join([struct.pack("<III", _GLB_MAGIC, 2, total), struct.pack("<II", len(text), _CHUNK_JSON), text,
                     struct.pack("<II", len(data), _CHUNK_BIN), data])


# -- pose evaluation -------------------------------------------------------------------------------
@dataclass
class _Channel:
    node: int
    path: str  # translation | rotation | scale
    times: np.ndarray  # (K,)
    values: np.ndarray  # (K, C), or (3K, C) for CUBICSPLINE
    interpolation: str


@dataclass
class _SkinnedPrimitive:
    """One primitive's skinning inputs, read once and reused for every pose."""

    mesh: int
    prim: int
    positions: np.ndarray  # (N, 4) homogeneous, mesh space
    joint_sets: list[tuple[np.ndarray, np.ndarray]]  # [(JOINTS_n, WEIGHTS_n)]
    unweighted: np.ndarray  # (N,) bool: vertices no joint moves (drawn at the node, as the reader does)
    joints: list[int]  # node index per skin joint
    inverse_bind: np.ndarray  # (J, 4, 4)
    inverse_rest: np.ndarray  # (N, 3, 3): undoes the rest-pose skin's linear part (deltas live in mesh space)


class _PoseBaker:
    """Samples the pose animation, skins every mesh at each pose and writes the deltas as morph targets."""

    def __init__(self, doc: GltfDocument, blob: _Blob, provider: str) -> None:
        self.doc = doc
        self.json = doc.json
        self.blob = blob
        self.provider = provider
        rest_world, _ = world_matrices(doc)
        self.rest = all_node_matrices(doc, rest_world)
        self.prims = list(self._primitives())
        extent = np.concatenate([p.positions[:, :3] for p in self.prims]) if self.prims else np.zeros((1, 3))
        size = float(np.linalg.norm(extent.max(axis=0) - extent.min(axis=0))) if len(extent) else 0.0
        # What "moves" means: a millionth of the model's size (Didimo may work in m or cm) [I].
        self.epsilon = max(size, 1e-9) * 1e-6
        self._world_cache: dict[tuple[int, float], dict[int, np.ndarray]] = {}

    # -- inputs --------------------------------------------------------------------------------------
    def _primitives(self) -> Iterator[_SkinnedPrimitive]:
        """Every triangle primitive of every mesh node; rigid meshes count as skinned to their own node."""
        seen: set[int] = set()
        for node_index, node in enumerate(self.doc.items("nodes")):
            if not isinstance(node, dict) or "mesh" not in node or node["mesh"] in seen:
                continue  # a mesh shared by nodes gets its targets from the first one [I]
            mesh_index = node["mesh"]
            seen.add(mesh_index)
            mesh = self.doc.get("meshes", mesh_index, f"nodes[{node_index}]")
            if "skin" in node:
                skin = self.doc.get("skins", node["skin"], f"nodes[{node_index}]")
                joints = [int(j) for j in skin.get("joints", [])]
                if "inverseBindMatrices" in skin:
                    ibm = read_accessor(self.doc, skin["inverseBindMatrices"], f"skins[{node['skin']}]")
                    inverse_bind = ibm.astype(np.float64).reshape(-1, 4, 4).transpose(0, 2, 1)
                else:
                    inverse_bind = np.tile(np.eye(4), (len(joints), 1, 1))
            else:
                joints, inverse_bind = [node_index], np.eye(4)[None]
            for p_index, prim in enumerate(mesh.get("primitives") or []):
                if not isinstance(prim, dict) or prim.get("mode", 4) not in (4, 5, 6):
                    continue
                attrs = prim.get("attributes") or {}
                where = f"meshes[{mesh_index}].primitives[{p_index}]"
                positions = read_accessor(self.doc, attrs.get("POSITION"), where).astype(np.float64)
                n = len(positions)
                sets: list[tuple[np.ndarray, np.ndarray]] = []
                if "skin" in node:
                    for s in range(8):
                        if f"JOINTS_{s}" not in attrs or f"WEIGHTS_{s}" not in attrs:
                            break
                        sets.append((read_accessor(self.doc, attrs[f"JOINTS_{s}"], where, as_float=False),
                                     read_accessor(self.doc, attrs[f"WEIGHTS_{s}"], where)))
                if not sets:  # rigid: every vertex follows the node itself
                    sets = [(np.zeros((n, 4), np.uint32), np.tile([1.0, 0, 0, 0], (n, 1)).astype(np.float32))]
                    joints_used, ibm_used = [node_index], np.eye(4)[None]
                else:
                    joints_used, ibm_used = joints, inverse_bind
                unweighted = sum(w.sum(axis=1) for _, w in sets) <= 1e-8
                prim_data = _SkinnedPrimitive(mesh_index, p_index, np.c_[positions, np.ones(n)], sets, unweighted,
                                              joints_used, ibm_used, np.zeros((n, 3, 3)))
                rest_lin = self._skin(prim_data, self.rest)[:, :3, :3]
                prim_data.inverse_rest = _batched_inverse(rest_lin)
                yield prim_data

    def _skin(self, prim: _SkinnedPrimitive, world: Mapping[int, np.ndarray]) -> np.ndarray:
        """Per-vertex (N, 4, 4) linear-blend skin matrices for the joint world matrices ``world``."""
        joint_mats = np.stack([world[j] for j in prim.joints]) @ prim.inverse_bind
        total = sum(vertex_skin_matrices(j, w, joint_mats, f"meshes[{prim.mesh}]") for j, w in prim.joint_sets)
        total = np.asarray(total)
        if prim.unweighted.any():
            total[prim.unweighted] = np.eye(4)
        return total

    def _animation_channels(self, animation: dict[str, Any], where: str) -> list[_Channel]:
        channels: list[_Channel] = []
        samplers = animation.get("samplers") or []
        for c_index, channel in enumerate(animation.get("channels") or []):
            target = channel.get("target") if isinstance(channel, dict) else None
            if not isinstance(target, dict) or target.get("path") not in ("translation", "rotation", "scale"):
                continue  # morph-weight channels do not move joints
            node = target.get("node")
            if not isinstance(node, int) or "matrix" in self.doc.get("nodes", node, f"{where}.channels[{c_index}]"):
                continue  # glTF forbids animating a node that has a matrix
            sampler_index = channel.get("sampler")
            if not isinstance(sampler_index, int) or not 0 <= sampler_index < len(samplers):
                raise ProviderError(f"{self.provider}'s animation is malformed: {where}.channels[{c_index}] "
                                    "names no sampler")
            sampler = samplers[sampler_index]
            times = read_accessor(self.doc, sampler.get("input"), f"{where}.samplers[{sampler_index}]")[:, 0]
            values = read_accessor(self.doc, sampler.get("output"), f"{where}.samplers[{sampler_index}]")
            interpolation = sampler.get("interpolation", "LINEAR")
            per_key = 3 if interpolation == "CUBICSPLINE" else 1
            if len(times) == 0 or len(values) != per_key * len(times):
                raise ProviderError(f"{self.provider}'s animation is malformed: {where}.samplers[{sampler_index}] "
                                    "has mismatched keyframes")
            channels.append(_Channel(node, target["path"], times.astype(np.float64), values.astype(np.float64),
                                     interpolation))
        return channels

    # -- frames → joint poses ----------------------------------------------------------------------
    def _pose_times(
        self, pack: PosePack, ranges: Mapping[str, tuple[float, float]]
    ) -> dict[str, tuple[list[_Channel], float, float]]:
        """For each pose: the channels to sample and the (neutral, pose) times.

        Two layouts are accepted [I]: one animation holding every pose as frame ranges (§3.6), or one
        glTF animation per pose named ``<group>_<pose>`` (how the Unity SDK names its clips); the latter
        is sampled at its first and last key.
        """
        animations = [a for a in self.doc.items("animations") if isinstance(a, dict)]
        if not animations:
            raise ProviderError(f"this didimo has no {pack.label} pose pack: its model has no animation "
                                "to take the poses from")
        by_name = {str(a.get("name")): i for i, a in enumerate(animations) if a.get("name")}
        cache: dict[int, list[_Channel]] = {}

        def channels_of(index: int) -> list[_Channel]:
            if index not in cache:
                cache[index] = self._animation_channels(animations[index], f"animations[{index}]")
            return cache[index]

        # The frame-range animation: the one that runs longest (it holds every pack) [I].
        main = max(range(len(animations)), key=lambda i: max((c.times[-1] for c in channels_of(i)), default=0.0))
        period = _frame_period(channels_of(main))
        out: dict[str, tuple[list[_Channel], float, float]] = {}
        for pose in ranges:
            clip = by_name.get(f"{pack.group}_{pose}")
            if clip is not None and channels_of(clip):
                chans = channels_of(clip)
                out[pose] = (chans, min(c.times[0] for c in chans), max(c.times[-1] for c in chans))
                continue
            neutral, full = pose_frame_pair(ranges, pose)
            if period is None:
                raise ProviderError(f"{self.provider}'s animation has no keyframes to take the {pack.label} "
                                    "poses from")
            end = max(c.times[-1] for c in channels_of(main))
            if full * period > end + period * 0.5:
                raise ProviderError(f"{self.provider}'s {AVATAR_INFO_NAME} puts pose {pose!r} at frame {full:g}, "
                                    "beyond the end of the model's animation")
            out[pose] = (channels_of(main), neutral * period, full * period)
        return out

    def _world_at(self, channels: list[_Channel], t: float) -> dict[int, np.ndarray]:
        """World matrices of every node with the animation sampled at time ``t``."""
        key = (id(channels), round(t, 9))
        if key in self._world_cache:
            return self._world_cache[key]
        nodes = [dict(n) if isinstance(n, dict) else n for n in self.doc.items("nodes")]
        for channel in channels:
            nodes[channel.node][channel.path] = _sample(channel, t).tolist()
        posed = GltfDocument({**self.json, "nodes": nodes}, None, None, self.doc.source)
        world, _ = world_matrices(posed)
        result = all_node_matrices(posed, world)
        self._world_cache[key] = result
        return result

    # -- the bake ------------------------------------------------------------------------------------
    def bake(self, pack: PosePack, ranges: Mapping[str, tuple[float, float]]) -> tuple[list[str], list[str]]:
        """Add one morph target per pose that moves something; return (baked target names, unmoved poses)."""
        timing = self._pose_times(pack, ranges)
        # deltas[(mesh, prim)][pose] = (N, 3) mesh-space deltas, only for poses that move that primitive
        deltas: dict[tuple[int, int], dict[str, np.ndarray]] = {}
        moved: set[str] = set()
        neutrals: dict[tuple[int, int, float], np.ndarray] = {}  # most poses share one neutral frame
        for pose, (channels, t_neutral, t_pose) in timing.items():
            neutral_world = self._world_at(channels, t_neutral)
            pose_world = self._world_at(channels, t_pose)
            for index, prim in enumerate(self.prims):
                neutral_key = (id(channels), index, round(t_neutral, 9))
                if neutral_key not in neutrals:
                    skin = self._skin(prim, neutral_world)
                    neutrals[neutral_key] = np.einsum("nij,nj->ni", skin, prim.positions)[:, :3]
                p_neutral = neutrals[neutral_key]
                p_pose = np.einsum("nij,nj->ni", self._skin(prim, pose_world), prim.positions)[:, :3]
                delta = np.einsum("nij,nj->ni", prim.inverse_rest, p_pose - p_neutral)
                if np.abs(delta).max(initial=0.0) > self.epsilon:
                    deltas.setdefault((prim.mesh, prim.prim), {})[pose] = delta.astype(np.float32)
                    moved.add(pose)
        order = [pose for pose in ranges if pose in moved]
        names = {pose: f"{pack.group}_{pose}" for pose in order}
        for mesh_index in sorted({p.mesh for p in self.prims}):
            mesh_poses = [pose for pose in order if any(pose in d for (m, _), d in deltas.items() if m == mesh_index)]
            if mesh_poses:
                self._write_targets(mesh_index, mesh_poses, [names[p] for p in mesh_poses], deltas)
        return [names[p] for p in order], [pose for pose in ranges if pose not in moved]

    def _write_targets(self, mesh_index: int, poses: list[str], names: list[str],
                       deltas: Mapping[tuple[int, int], Mapping[str, np.ndarray]]) -> None:
        """Append POSITION targets (sparse when few vertices move) and their names to one mesh."""
        mesh = self.json["meshes"][mesh_index]
        prims = mesh.get("primitives") or []
        existing = max((len(p.get("targets") or []) for p in prims if isinstance(p, dict)), default=0)
        for p_index, prim in enumerate(prims):
            if not isinstance(prim, dict):
                continue
            n = self.doc.get("accessors", (prim.get("attributes") or {}).get("POSITION"), "POSITION").get("count", 0)
            targets = prim.setdefault("targets", [])
            for pose in poses:
                delta = deltas.get((mesh_index, p_index), {}).get(pose)
                targets.append({"POSITION": self._delta_accessor(int(n), delta)})
        extras = mesh.get("extras") if isinstance(mesh.get("extras"), dict) else {}
        old = extras.get("targetNames")
        if not (isinstance(old, list) and len(old) == existing and all(isinstance(x, str) for x in old)):
            old = [f"target_{k}" for k in range(existing)]
        extras["targetNames"] = [*old, *names]
        mesh["extras"] = extras
        if isinstance(mesh.get("weights"), list):
            mesh["weights"] = [*mesh["weights"], *([0.0] * len(names))]
        for node in self.doc.items("nodes"):
            if isinstance(node, dict) and node.get("mesh") == mesh_index and isinstance(node.get("weights"), list):
                node["weights"] = [*node["weights"], *([0.0] * len(names))]

    def _delta_accessor(self, count: int, delta: np.ndarray | None) -> int:
        """A VEC3 float accessor for one target: zeros, sparse, or dense (glTF 2.0 §3.6.2.3)."""
        accessor: dict[str, Any] = {"componentType": _FLOAT, "count": count, "type": "VEC3"}
        if delta is None:  # this primitive does not move: zeros without any data (valid glTF)
            return _add_accessor(self.json, accessor | {"min": [0.0] * 3, "max": [0.0] * 3})
        moving = np.flatnonzero(np.abs(delta).max(axis=1) > self.epsilon)
        lo = np.minimum(delta[moving].min(axis=0), 0.0) if len(moving) < count else delta.min(axis=0)
        hi = np.maximum(delta[moving].max(axis=0), 0.0) if len(moving) < count else delta.max(axis=0)
        accessor |= {"min": [float(v) for v in lo], "max": [float(v) for v in hi]}
        if len(moving) * 2 <= count:  # sparse pays when at most half the vertices move
            index_type, dtype = (5123, np.uint16) if count <= 0xFFFF else (5125, np.uint32)
            accessor["sparse"] = {
                "count": len(moving),
                "indices": {"bufferView": _add_view(self.json, self.blob, moving.astype(dtype).tobytes()),
                            "componentType": index_type},
                "values": {"bufferView": _add_view(self.json, self.blob,
                                                   np.ascontiguousarray(delta[moving], np.float32).tobytes())},
            }
        else:
            dense = np.where((np.abs(delta).max(axis=1) > self.epsilon)[:, None], delta, 0.0)
            accessor["bufferView"] = _add_view(self.json, self.blob, np.ascontiguousarray(dense, np.float32).tobytes())
        return _add_accessor(self.json, accessor)


def _frame_period(channels: Sequence[_Channel]) -> float | None:
    """Seconds per frame: the smallest gap between keyframes, frame 0 at time 0.  [I]

    Frames are not documented in seconds; a pose animation sampled on every frame (as DCC exports
    write it) has its keys exactly one frame apart, whatever the frame rate.
    """
    times = np.unique(np.concatenate([c.times for c in channels])) if channels else np.zeros(0)
    gaps = np.diff(times)
    gaps = gaps[gaps > 1e-6]
    if gaps.size:
        return float(gaps.min())
    return 1.0 if times.size else None  # a single key: every frame samples the same value anyway


def _sample(channel: _Channel, t: float) -> np.ndarray:
    """A channel's value at ``t`` (glTF 2.0 §3.11: STEP, LINEAR with slerp for rotations, CUBICSPLINE)."""
    times, values = channel.times, channel.values
    cubic = channel.interpolation == "CUBICSPLINE"
    value_at = (lambda k: values[3 * k + 1]) if cubic else (lambda k: values[k])
    tolerance = 1e-4 * (float(np.diff(times).min()) if len(times) > 1 else 1.0)
    nearest = int(np.argmin(np.abs(times - t)))
    if abs(times[nearest] - t) <= tolerance or t <= times[0] or t >= times[-1]:
        k = nearest if abs(times[nearest] - t) <= tolerance else (0 if t <= times[0] else len(times) - 1)
        out = value_at(k)
    else:
        k = int(np.searchsorted(times, t, side="right")) - 1
        dt = times[k + 1] - times[k]
        u = (t - times[k]) / dt
        if channel.interpolation == "STEP":
            out = value_at(k)
        elif cubic:
            p0, m0 = values[3 * k + 1], values[3 * k + 2] * dt
            p1, m1 = values[3 * (k + 1) + 1], values[3 * (k + 1)] * dt
            u2, u3 = u * u, u * u * u
            out = (2 * u3 - 3 * u2 + 1) * p0 + (u3 - 2 * u2 + u) * m0 + (-2 * u3 + 3 * u2) * p1 + (u3 - u2) * m1
        elif channel.path == "rotation":
            out = _slerp(values[k], values[k + 1], u)
        else:
            out = values[k] + (values[k + 1] - values[k]) * u
    if channel.path == "rotation":
        norm = float(np.linalg.norm(out))
        out = out / norm if norm > 0 else np.array([0.0, 0.0, 0.0, 1.0])
    return np.asarray(out, np.float64)


def _slerp(a: np.ndarray, b: np.ndarray, u: float) -> np.ndarray:
    dot = float(np.dot(a, b))
    if dot < 0:
        b, dot = -b, -dot
    if dot > 0.9995:
        out = a + (b - a) * u
        return out / np.linalg.norm(out)
    theta = np.arccos(dot)
    return (np.sin((1 - u) * theta) * a + np.sin(u * theta) * b) / np.sin(theta)


def _batched_inverse(lin: np.ndarray) -> np.ndarray:
    """Inverse of each 3×3; a singular one (zero-scaled joint) gets the pseudo-inverse."""
    try:
        return np.linalg.inv(lin)
    except np.linalg.LinAlgError:
        return np.linalg.pinv(lin)
