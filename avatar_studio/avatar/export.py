"""Bake a posed avatar (morphs applied) to a standalone mesh file: ``.glb``, ``.ply`` or ``.obj``.

Why baking rather than re-exporting the morph targets: the export is what a reviewer hands to a
tool that knows nothing about blendshapes (a slicer, a DCC package, a bug report), so it must show
exactly the pose on screen. Vertex order of every primitive is kept so a diff against the evaluator's
buffers (or against a previous export) is a plain array comparison.

Format notes:

* ``.glb`` — written with pygltflib: one mesh/node per primitive, identity transforms (the avatar
  is already in world space), the original encoded texture bytes (no re-encode, so a JPEG stays a
  JPEG), ``baseColorFactor`` kept. :class:`GlbBuilder` is also what the synthetic test heads use.
* ``.obj`` — written with trimesh: one ``o`` object per primitive in order, an ``.mtl`` and one
  PNG per textured material next to the ``.obj``. UVs are flipped to OBJ's v-up convention.
* ``.ply`` — written with trimesh (binary): all primitives concatenated in order into one vertex
  list; primitive ``i`` starts at ``sum(vertex_count of primitives < i)`` (see :func:`ply_offsets`).
  PLY has no standard way to reference a texture, so only UVs (``s``/``t``, v-up) travel with it.

Every file is written to a temporary name in the destination folder and moved into place with
``os.replace``, so a failed export never leaves a half-written file where the user expects one.
"""

from __future__ import annotations

import io
import json
import os
import struct
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pygltflib

from avatar_studio.avatar.model import Avatar, Primitive, Texture

SUPPORTED_SUFFIXES = (".glb", ".ply", ".obj")

_GLB_MAGIC = 0x46546C67  # "glTF"
_CHUNK_JSON = 0x4E4F534A
_CHUNK_BIN = 0x004E4942
_COMPONENT = {
    np.dtype(np.float32): pygltflib.FLOAT,
    np.dtype(np.uint32): pygltflib.UNSIGNED_INT,
    np.dtype(np.uint16): pygltflib.UNSIGNED_SHORT,
    np.dtype(np.uint8): pygltflib.UNSIGNED_BYTE,
}
_TYPE = {1: pygltflib.SCALAR, 2: pygltflib.VEC2, 3: pygltflib.VEC3, 4: pygltflib.VEC4}


class GlbBuilder:
    """Accumulates one binary buffer plus the glTF JSON objects that point into it.

    Why not ``GLTF2.save_to_bytes``: it re-packs every bufferView into a fresh copy of the blob,
    which doubles memory and time for the 20-40 MB dense benchmark heads. Here each array is appended
    once, 4-byte aligned (so every accessor offset is a multiple of its component size), and the GLB
    container is assembled in a single join.
    """

    def __init__(self) -> None:
        self.gltf = pygltflib.GLTF2(asset=pygltflib.Asset(version="2.0", generator="avatar_studio"))
        self._chunks: list[bytes] = []
        self._length = 0

    def add_view(self, data: bytes | np.ndarray, target: int | None = None) -> int:
        """Append raw bytes as a new bufferView; returns its index."""
        raw = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
        view = pygltflib.BufferView(buffer=0, byteOffset=self._length, byteLength=len(raw), target=target)
        self._chunks.append(raw)
        pad = -len(raw) % 4
        if pad:
            self._chunks.append(b"\0" * pad)
        self._length += len(raw) + pad
        self.gltf.bufferViews.append(view)
        return len(self.gltf.bufferViews) - 1

    def add_accessor(self, array: np.ndarray, *, target: int | None = None, with_bounds: bool = False) -> int:
        """Append a dense accessor for ``array`` ((count,) or (count, k)); returns its index."""
        array = np.ascontiguousarray(array)
        count = array.shape[0]
        width = 1 if array.ndim == 1 else array.shape[1]
        view = self.add_view(array, target)
        accessor = pygltflib.Accessor(
            bufferView=view,
            byteOffset=0,
            componentType=_COMPONENT[array.dtype],
            count=count,
            type=_TYPE[width],
        )
        if with_bounds:
            accessor.min, accessor.max = _bounds(array.reshape(count, width))
        self.gltf.accessors.append(accessor)
        return len(self.gltf.accessors) - 1

    def add_sparse_accessor(
        self, count: int, indices: np.ndarray, values: np.ndarray, *, with_bounds: bool = False
    ) -> int:
        """Append a VEC3 float accessor of ``count`` zeros overridden at ``indices`` by ``values``.

        The accessor has no bufferView and ``byteOffset=None``: pygltflib's default ``byteOffset=0``
        would be written out, and the glTF validator rejects a byteOffset without a bufferView.
        ``indices`` must be strictly increasing (spec); uint16 is used when it can hold every index.
        """
        if len(indices) == 0:
            raise ValueError("a sparse accessor needs at least one index (glTF: sparse.count >= 1)")
        index_dtype = np.uint16 if count <= 0xFFFF else np.uint32
        idx_view = self.add_view(np.ascontiguousarray(indices, dtype=index_dtype))
        val_view = self.add_view(np.ascontiguousarray(values, dtype=np.float32))
        accessor = pygltflib.Accessor(
            bufferView=None,
            byteOffset=None,
            componentType=pygltflib.FLOAT,
            count=count,
            type=pygltflib.VEC3,
            sparse=pygltflib.Sparse(
                count=len(indices),
                indices=pygltflib.AccessorSparseIndices(
                    bufferView=idx_view, byteOffset=0, componentType=_COMPONENT[np.dtype(index_dtype)]
                ),
                values=pygltflib.AccessorSparseValues(bufferView=val_view, byteOffset=0),
            ),
        )
        if with_bounds:
            lo, hi = _bounds(values.reshape(-1, 3))
            if len(indices) < count:  # the untouched elements are zeros and count towards min/max
                lo = [min(v, 0.0) for v in lo]
                hi = [max(v, 0.0) for v in hi]
            accessor.min, accessor.max = lo, hi
        self.gltf.accessors.append(accessor)
        return len(self.gltf.accessors) - 1

    def add_texture(self, texture: Texture) -> int:
        """Embed an encoded image as-is and return the index of a texture sampling it."""
        view = self.add_view(texture.data)
        self.gltf.images.append(pygltflib.Image(bufferView=view, mimeType=texture.mime_type, name=texture.name or None))
        if not self.gltf.samplers:
            self.gltf.samplers.append(
                pygltflib.Sampler(
                    magFilter=pygltflib.LINEAR,
                    minFilter=pygltflib.LINEAR_MIPMAP_LINEAR,
                    wrapS=pygltflib.REPEAT,
                    wrapT=pygltflib.REPEAT,
                )
            )
        self.gltf.textures.append(pygltflib.Texture(sampler=0, source=len(self.gltf.images) - 1))
        return len(self.gltf.textures) - 1

    def to_glb(self) -> bytes:
        """The finished GLB: 12-byte header, space-padded JSON chunk, zero-padded BIN chunk."""
        self.gltf.buffers = [pygltflib.Buffer(byteLength=self._length)] if self._length else []
        if not self._length:
            self.gltf.bufferViews = []
        text = self.gltf.gltf_to_json(separators=(",", ":"), indent=None)
        # Re-dump through json to fail loudly (not write an invalid file) on NaN/inf bounds.
        json_bytes = json.dumps(json.loads(text), separators=(",", ":"), allow_nan=False).encode()
        json_bytes += b" " * (-len(json_bytes) % 4)
        parts = [
            b"",  # header, filled below
            struct.pack("<II", len(json_bytes), _CHUNK_JSON),
            json_bytes,
        ]
        if self._length:
            parts.append(struct.pack("<II", self._length, _CHUNK_BIN))
            parts.extend(self._chunks)
        total = 12 + sum(len(p) for p in parts)
        parts[0] = struct.pack("<III", _GLB_MAGIC, 2, total)
        return b"".join(parts)


def _bounds(array: np.ndarray) -> tuple[list[float], list[float]]:
    if array.shape[0] == 0:
        return [0.0] * array.shape[1], [0.0] * array.shape[1]
    return [float(v) for v in array.min(axis=0)], [float(v) for v in array.max(axis=0)]


def ply_offsets(avatar: Avatar) -> list[int]:
    """First vertex index of each primitive in an exported PLY (primitives are concatenated in order)."""
    counts = [p.vertex_count for p in avatar.primitives]
    return [int(v) for v in np.concatenate([[0], np.cumsum(counts)[:-1]])] if counts else []


def export_posed(avatar: Avatar, posed: Sequence[tuple[np.ndarray, np.ndarray]], path: str | os.PathLike) -> None:
    """Write ``avatar`` with per-primitive ``posed`` (positions, normals) to ``path``; format by suffix.

    ``posed`` is what ``MorphEvaluator.apply`` returns (world space, aligned with
    ``avatar.primitives``). The arrays are copied, so the evaluator may overwrite them afterwards.
    Raises ``ValueError`` for an unknown suffix or buffers that do not match the avatar.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"cannot export to {target.name!r}: unsupported file type {target.suffix or '(none)'!r}; "
            f"use one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    prepared = _prepare(avatar, posed)
    if suffix == ".glb":
        _write_atomic(target, _glb_bytes(avatar, prepared))
    elif suffix == ".ply":
        _write_atomic(target, _ply_bytes(avatar, prepared))
    else:
        _write_obj(target, avatar, prepared)


def _prepare(avatar: Avatar, posed: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Validate shapes, copy to float32 and re-normalise normals (glTF requires unit NORMALs).

    Blending normal deltas linearly shortens them; a zero-length result (degenerate blend) falls
    back to the rest normal rather than writing NaN.
    """
    if len(posed) != len(avatar.primitives):
        raise ValueError(
            f"posed buffers do not match the avatar: {len(posed)} given for {len(avatar.primitives)} primitives"
        )
    out = []
    for prim, (positions, normals) in zip(avatar.primitives, posed, strict=True):
        shape = (prim.vertex_count, 3)
        if np.shape(positions) != shape or np.shape(normals) != shape:
            raise ValueError(
                f"posed buffers of primitive {prim.name!r} have shapes {np.shape(positions)} / "
                f"{np.shape(normals)}, expected {shape}"
            )
        pos = np.array(positions, dtype=np.float32, copy=True)
        nrm = np.array(normals, dtype=np.float32, copy=True)
        length = np.linalg.norm(nrm, axis=1)
        bad = ~(length > 1e-12)
        length[bad] = 1.0
        nrm /= length[:, None]
        if bad.any():
            nrm[bad] = prim.normals[bad]
        out.append((pos, nrm))
    return out


def _glb_bytes(avatar: Avatar, posed: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    builder = GlbBuilder()
    gltf = builder.gltf
    texture_index: dict[int, int] = {}
    scene_nodes = []
    for i, (prim, (positions, normals)) in enumerate(zip(avatar.primitives, posed, strict=True)):
        attributes = pygltflib.Attributes(
            POSITION=builder.add_accessor(positions, target=pygltflib.ARRAY_BUFFER, with_bounds=True),
            NORMAL=builder.add_accessor(normals, target=pygltflib.ARRAY_BUFFER),
        )
        if prim.uvs is not None:
            attributes.TEXCOORD_0 = builder.add_accessor(
                np.asarray(prim.uvs, np.float32), target=pygltflib.ARRAY_BUFFER
            )
        indices = builder.add_accessor(
            np.asarray(prim.triangles, np.uint32).reshape(-1), target=pygltflib.ELEMENT_ARRAY_BUFFER
        )
        pbr = pygltflib.PbrMetallicRoughness(
            baseColorFactor=[float(c) for c in prim.base_color], metallicFactor=0.0, roughnessFactor=1.0
        )
        if prim.texture is not None and prim.uvs is not None:
            key = id(prim.texture)
            if key not in texture_index:
                texture_index[key] = builder.add_texture(prim.texture)
            pbr.baseColorTexture = pygltflib.TextureInfo(index=texture_index[key])
        gltf.materials.append(
            pygltflib.Material(name=prim.name or None, pbrMetallicRoughness=pbr, doubleSided=prim.double_sided)
        )
        gltf.meshes.append(
            pygltflib.Mesh(
                name=prim.name or None,
                primitives=[
                    pygltflib.Primitive(attributes=attributes, indices=indices, material=i, mode=pygltflib.TRIANGLES)
                ],
            )
        )
        gltf.nodes.append(pygltflib.Node(name=prim.name or None, mesh=i))
        scene_nodes.append(i)
    gltf.scenes = [pygltflib.Scene(nodes=scene_nodes)]
    gltf.scene = 0
    return builder.to_glb()


def _trimesh_uv(prim: Primitive) -> np.ndarray | None:
    """glTF UVs are v-down; OBJ/PLY (and trimesh) are v-up."""
    if prim.uvs is None:
        return None
    uv = np.array(prim.uvs, dtype=np.float64, copy=True)
    uv[:, 1] = 1.0 - uv[:, 1]
    return uv


def _ply_bytes(avatar: Avatar, posed: list[tuple[np.ndarray, np.ndarray]]) -> bytes:
    import trimesh
    from trimesh.exchange.ply import export_ply

    offsets = ply_offsets(avatar)
    vertices = np.concatenate([p for p, _ in posed]) if posed else np.zeros((0, 3), np.float32)
    normals = np.concatenate([n for _, n in posed]) if posed else np.zeros((0, 3), np.float32)
    faces = (
        np.concatenate(
            [np.asarray(prim.triangles, np.int64) + off for prim, off in zip(avatar.primitives, offsets, strict=True)]
        )
        if posed
        else np.zeros((0, 3), np.int64)
    )
    visual = None
    uvs = [_trimesh_uv(prim) for prim in avatar.primitives]
    if uvs and all(uv is not None for uv in uvs):
        visual = trimesh.visual.TextureVisuals(uv=np.concatenate(uvs))
    mesh = trimesh.Trimesh(
        vertices=vertices, faces=faces, vertex_normals=normals, visual=visual, process=False, validate=False
    )
    return export_ply(mesh, encoding="binary", vertex_normal=True, include_attributes=True)


def _write_obj(target: Path, avatar: Avatar, posed: list[tuple[np.ndarray, np.ndarray]]) -> None:
    import trimesh
    from PIL import Image
    from trimesh.exchange.obj import export_obj

    stem = target.stem
    any_uv = any(p.uvs is not None for p in avatar.primitives)
    # Scene.dump (used by export_obj) yields geometry in insertion order and names each ``o`` line
    # after the geometry, so primitive names are made unique rather than prefixed.
    names: list[str] = []
    for i, prim in enumerate(avatar.primitives):
        name = prim.name or f"primitive_{i}"
        names.append(name if name not in names else f"{name}_{i}")
    scene = trimesh.Scene()
    for i, (prim, (positions, normals)) in enumerate(zip(avatar.primitives, posed, strict=True)):
        visual = None
        if any_uv:
            # trimesh numbers vt like v, so every object needs UVs once one has them.
            uv = _trimesh_uv(prim)
            uv = np.zeros((prim.vertex_count, 2)) if uv is None else uv
            image = None
            if prim.texture is not None and prim.uvs is not None:
                with Image.open(io.BytesIO(prim.texture.data)) as img:
                    image = img.convert("RGBA")
            material = trimesh.visual.material.PBRMaterial(
                name=f"{stem}_{i}", baseColorFactor=[float(c) for c in prim.base_color], baseColorTexture=image
            )
            visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
        mesh = trimesh.Trimesh(
            vertices=positions,
            faces=np.asarray(prim.triangles, np.int64),
            vertex_normals=normals,
            visual=visual,
            process=False,
            validate=False,
        )
        scene.add_geometry(mesh, geom_name=names[i], node_name=names[i])
    if not avatar.primitives:
        _write_atomic(target, b"")
        return
    text, files = export_obj(
        scene, include_normals=True, include_texture=any_uv, return_texture=True, mtl_name=f"{stem}.mtl"
    )
    for name, data in files.items():
        _write_atomic(target.with_name(name), data)
    _write_atomic(target, text.encode())


def _write_atomic(target: Path, data: bytes) -> None:
    """Write next to ``target`` then ``os.replace``: readers see the old file or the new one, never half."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
