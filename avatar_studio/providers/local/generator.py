"""One selfie → one GLB head with morph targets, entirely offline (the ``local`` provider's engine).

Pipeline (``design/local-provider.md`` §4.1): landmarks (:mod:`landmarks`) → head mesh with the photo
as texture (:mod:`mesh`) → procedural targets on the landmark vertices (:mod:`targets`), carried to
the extra parts → Loop subdivision applied to positions, UVs and every target with one sparse
operator → GLB via the project's :class:`~avatar_studio.avatar.export.GlbBuilder`, targets as
sparse accessors (only moved vertices are stored, about half the size of dense targets).

Blendshape sets: ``"arkit"`` gives the 52 ARKit names; ``"basic"`` gives the 15 OVR visemes
(``viseme_sil`` … ``viseme_ou``) plus the two blinks, each viseme baked from the ARKit targets with
the app's default viseme table, so lip-sync drives it the way it drives the ARKit heads. This mirrors
what the cloud providers' "basic" sets are (visemes), see ``avatar_sdk.py``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import pygltflib

from avatar_studio.avatar.blendshapes import ARKIT_52, OVR_VISEMES, VISEME_PREFIX
from avatar_studio.avatar.export import GlbBuilder
from avatar_studio.avatar.model import Texture
from avatar_studio.providers.local import mesh as head_mesh
from avatar_studio.providers.local import targets as rig_targets
from avatar_studio.providers.local.landmarks import _open_rgb, detect_face

MAX_SUBDIVISIONS = 2
SPARSE_EPS = 1e-7  # metres; smaller deltas are float noise from the subdivision products
BASIC_EXTRAS = ("eyeBlinkLeft", "eyeBlinkRight")


def _basic_targets(arkit: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    from avatar_studio.lipsync.viseme_table import VisemeTable

    table = VisemeTable.default()
    out: dict[str, np.ndarray] = {}
    for viseme in OVR_VISEMES:
        delta = np.zeros_like(arkit["jawOpen"])
        for name, weight in table.blendshapes({viseme: 1.0}).items():
            if name in arkit:
                delta = delta + weight * arkit[name]
        out[VISEME_PREFIX + viseme] = delta
    for name in BASIC_EXTRAS:
        out[name] = arkit[name]
    return out


def generate_avatar(photo: bytes, *, blendshapes: Literal["arkit", "basic"] = "arkit", subdivisions: int = 1) -> bytes:
    """GLB bytes of a textured head for the one face in ``photo`` (JPEG/PNG bytes; EXIF orientation applied).

    ``subdivisions`` is the number of Loop steps (0: ~770 vertices, 1: ~2,900, 2: ~11,300). Raises
    :class:`~avatar_studio.providers.base.ProviderError` for a photo without exactly one usable face
    (the message says why), ``ValueError`` for bad arguments.
    """
    if blendshapes not in ("arkit", "basic"):
        raise ValueError(f"blendshapes must be 'arkit' or 'basic', not {blendshapes!r}")
    if not 0 <= subdivisions <= MAX_SUBDIVISIONS:
        raise ValueError(f"subdivisions must be between 0 and {MAX_SUBDIVISIONS}, not {subdivisions}")
    image = _open_rgb(photo)
    face = detect_face(image)
    head = head_mesh.build_head(face, image)
    rig = rig_targets.build_rig(head)
    core = rig_targets.core_targets(rig)

    rigid = head.jaw_rigid
    full: dict[str, np.ndarray] = {}
    for name, delta in core.items():
        d = head.core_map @ delta
        jaw = rig_targets.jaw_target(rig, name, head.positions[rigid], 1.0)
        d[rigid] = 0.0 if jaw is None else jaw
        full[name] = d
    named = full if blendshapes == "arkit" else _basic_targets(full)

    s, triangles = head_mesh.subdivision(head.triangles, len(head.positions), subdivisions)
    positions = (s @ head.positions).astype(np.float32)
    uvs = (s @ head.uvs).astype(np.float32)
    names = list(named)
    stacked = np.concatenate([named[n] for n in names], axis=1)  # (N, 3T): one product for all targets
    deltas = (s @ stacked).astype(np.float32).reshape(len(positions), len(names), 3)
    return _glb(positions, uvs, triangles, names, deltas, head.texture_jpeg)


def _glb(
    positions: np.ndarray,
    uvs: np.ndarray,
    triangles: np.ndarray,
    names: list[str],
    deltas: np.ndarray,
    texture_jpeg: bytes,
) -> bytes:
    builder = GlbBuilder()
    gltf = builder.gltf
    attributes = pygltflib.Attributes(
        POSITION=builder.add_accessor(positions, target=pygltflib.ARRAY_BUFFER, with_bounds=True),
        NORMAL=builder.add_accessor(head_mesh.smooth_normals(positions, triangles), target=pygltflib.ARRAY_BUFFER),
        TEXCOORD_0=builder.add_accessor(uvs, target=pygltflib.ARRAY_BUFFER),
    )
    indices = builder.add_accessor(
        np.ascontiguousarray(triangles, np.uint32).reshape(-1), target=pygltflib.ELEMENT_ARRAY_BUFFER
    )
    count = len(positions)
    targets = []
    for k in range(len(names)):
        d = np.ascontiguousarray(deltas[:, k])
        moved = np.flatnonzero(np.abs(d).max(axis=1) > SPARSE_EPS)
        if moved.size == 0:  # sparse.count must be >= 1: store one explicit zero
            moved = np.zeros(1, np.intp)
            d = np.zeros_like(d)
        targets.append({"POSITION": builder.add_sparse_accessor(count, moved, d[moved], with_bounds=True)})
    texture = builder.add_texture(Texture(texture_jpeg, "image/jpeg", "face_photo"))
    gltf.materials.append(
        pygltflib.Material(
            name="skin",
            pbrMetallicRoughness=pygltflib.PbrMetallicRoughness(
                baseColorFactor=[1.0, 1.0, 1.0, 1.0],
                baseColorTexture=pygltflib.TextureInfo(index=texture),
                metallicFactor=0.0,
                roughnessFactor=0.8,
            ),
        )
    )
    gltf.meshes.append(
        pygltflib.Mesh(
            name="Head",
            primitives=[
                pygltflib.Primitive(
                    attributes=attributes, indices=indices, material=0, mode=pygltflib.TRIANGLES, targets=targets
                )
            ],
            weights=[0.0] * len(names),
            extras={"targetNames": names},
        )
    )
    gltf.nodes.append(pygltflib.Node(name="Head", mesh=0))
    gltf.scenes = [pygltflib.Scene(nodes=[0])]
    gltf.scene = 0
    return builder.to_glb()


def generate_to_file(
    selfie: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    blendshapes: Literal["arkit", "basic"] = "arkit",
    subdivisions: int = 1,
) -> int:
    """``avatar-studio generate SELFIE -o OUT.glb``: read, generate, write atomically; returns the size.

    The GLB is written to a temporary file in the destination folder and moved into place, so a
    failure never leaves a half-written file where the user expects the avatar.
    """
    data = Path(selfie).read_bytes()
    glb = generate_avatar(data, blendshapes=blendshapes, subdivisions=subdivisions)
    target = Path(out)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(glb)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return len(glb)


__all__ = ["ARKIT_52", "generate_avatar", "generate_to_file"]
