"""glTF 2.0 (``.glb``/``.gltf``) → :class:`Avatar`: world space, one named morph set, loud refusals.

Why a reader of our own on top of pygltflib's constants rather than trimesh or VTK: they drop the
morph deltas or their names, ignore sparse accessors and zero-fill Draco data they cannot decode
(toolchain.md §5, tests/data/gltf/README.md). For a tool whose job is checking a provider's
blendshapes, silently wrong geometry is the worst possible failure, so every extension the file
*requires* is either decoded or refused with :class:`UnsupportedAsset` naming it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from avatar_studio.avatar.accessors import MAX_MAGNITUDE, read_accessor, require_finite
from avatar_studio.avatar.blendshapes import BlendshapeMapError, name_collisions, resolve_names
from avatar_studio.avatar.errors import AvatarError, BrokenAsset, UnsupportedAsset
from avatar_studio.avatar.geometry import transform_geometry, vertex_normals
from avatar_studio.avatar.gltf_document import GltfDocument, open_document
from avatar_studio.avatar.model import Avatar, Primitive, Texture
from avatar_studio.avatar.transforms import all_node_matrices, vertex_skin_matrices, world_matrices

log = logging.getLogger(__name__)

DRACO = "KHR_draco_mesh_compression"
# Extensions we decode (and so accept in ``extensionsRequired``), with what they are for.
SUPPORTED_EXTENSIONS = {
    "KHR_mesh_quantization": "integer positions, normals and UVs",
    DRACO: "Draco-compressed geometry (via DracoPy)",
}
# Extensions whose absence changes only looks we do not render anyway; noted, never fatal.
_LOOKS = "it only changes material looks the preview does not render"
IGNORED_EXTENSIONS = {
    **{
        ext: _LOOKS
        for ext in (
            "KHR_materials_emissive_strength", "KHR_materials_specular", "KHR_materials_ior",
            "KHR_materials_sheen", "KHR_materials_clearcoat", "KHR_materials_transmission",
            "KHR_materials_volume", "KHR_materials_unlit", "KHR_materials_variants",
            "KHR_materials_iridescence", "KHR_materials_anisotropy", "KHR_materials_dispersion",
            "KHR_materials_pbrSpecularGlossiness",
        )
    },
    "KHR_lights_punctual": "the preview uses its own lights",
    "KHR_texture_transform": "textures may look shifted or scaled",
    "KHR_animation_pointer": "animations are not played",
    "KHR_xmp_json_ld": "it only carries metadata",
    "EXT_mesh_gpu_instancing": "each mesh is shown once, at its node, without the extra instances",
}
TRIANGLE_MODES = {4: "triangles", 5: "triangle strip", 6: "triangle fan"}
SKIPPED_MODES = {0: "points", 1: "lines", 2: "line loop", 3: "line strip"}
IMAGE_MAGIC = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg"}


def load_avatar(
    source: str | os.PathLike[str] | bytes, *, blendshape_map: Mapping[str, str] | None = None
) -> Avatar:
    """Load a glTF 2.0 file (path) or GLB/glTF bytes as an :class:`Avatar`.

    ``blendshape_map`` is the asset's provider-name → canonical-name map (the ``blendshape_map``
    column of the data model); names it does not cover are normalised by
    :func:`avatar_studio.avatar.blendshapes.canonical_name`.

    Raises :class:`BrokenAsset` or :class:`UnsupportedAsset` with a message for the user.
    """
    try:
        return _Reader(open_document(source), blendshape_map).read()
    except AvatarError:
        raise
    except BlendshapeMapError as exc:
        raise BrokenAsset(f"the asset's blendshape map is invalid: {exc}") from None
    except MemoryError:
        raise BrokenAsset("the file declares more data than fits in memory") from None
    except (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError) as exc:
        # The last line of defence for a malformed value the explicit checks did not foresee:
        # the user still gets one readable line, and the log keeps the traceback for us.
        log.debug("unexpected error while reading %s", source, exc_info=True)
        raise BrokenAsset(f"the file is malformed ({type(exc).__name__}: {exc})") from None


@dataclass
class _MorphNames:
    """Accumulates the avatar-wide morph set while meshes are read."""

    names: list[str] = field(default_factory=list)
    raw: dict[str, list[str]] = field(default_factory=dict)
    defaults: dict[str, float] = field(default_factory=dict)

    def slot(self, name: str, raw: str) -> int:
        if name not in self.raw:
            self.names.append(name)
            self.raw[name] = []
        if raw not in self.raw[name]:
            self.raw[name].append(raw)
        return self.names.index(name)


class _Reader:
    def __init__(self, doc: GltfDocument, blendshape_map: Mapping[str, str] | None) -> None:
        self.doc = doc
        self.blendshape_map = blendshape_map
        self.warnings: list[str] = []
        self.morphs = _MorphNames()
        self.textures: dict[int, Texture | None] = {}
        self.mesh_slots: dict[int, list[int]] = {}

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            log.info("%s: %s", self.doc.source, message)

    # -- top level -----------------------------------------------------------------------------
    def read(self) -> Avatar:
        used = self.doc.string_list("extensionsUsed")
        required = self.doc.string_list("extensionsRequired")
        self._check_extensions(used, required)
        world, order = world_matrices(self.doc)
        primitives: list[Primitive] = []
        all_mats: dict[int, np.ndarray] | None = None
        for node_index in order:
            node = self.doc.get("nodes", node_index)
            if "mesh" not in node:
                continue
            matrices = world
            if "skin" in node:
                all_mats = all_mats or all_node_matrices(self.doc, world)
                matrices = all_mats
            primitives.extend(self._mesh_instance(node_index, node, world[node_index], matrices))
        if not primitives:
            self.warn("the file contains no triangle meshes to show")
        return Avatar(
            primitives=primitives,
            morph_names=self.morphs.names,
            raw_names=self.morphs.raw,
            default_weights=self.morphs.defaults,
            extensions_used=used,
            extensions_required=required,
            textures=[t for t in self.textures.values() if t is not None],
            warnings=self.warnings,
            source=self.doc.source,
        )

    def _check_extensions(self, used: list[str], required: list[str]) -> None:
        for ext in required:
            if ext not in SUPPORTED_EXTENSIONS:
                raise UnsupportedAsset(
                    f"this file requires the glTF extension {ext}, which Avatar Studio cannot decode; "
                    "re-export it without that extension",
                    ext,
                )
            if ext == DRACO:
                _draco_module(ext)
        for ext in used:
            if ext not in SUPPORTED_EXTENSIONS and ext not in required:
                why = IGNORED_EXTENSIONS.get(ext, "it is unknown to Avatar Studio")
                self.warn(f"extension {ext} ignored: {why}")

    # -- meshes --------------------------------------------------------------------------------
    def _mesh_instance(
        self, node_index: int, node: dict[str, Any], world: np.ndarray, matrices: dict[int, np.ndarray]
    ) -> list[Primitive]:
        mesh_index = node["mesh"]
        mesh = self.doc.get("meshes", mesh_index, f"nodes[{node_index}]")
        prims = mesh.get("primitives")
        if not isinstance(prims, list) or not prims:
            raise BrokenAsset(f"meshes[{mesh_index}] has no 'primitives'")
        target_count = self._target_count(mesh_index, prims)
        slots = self._mesh_slots(mesh_index, mesh, prims, target_count)
        self._default_weights(node_index, node, mesh_index, mesh, slots)
        skin_mats = self._skin_matrices(node_index, node, matrices)
        out: list[Primitive] = []
        for p_index, prim in enumerate(prims):
            where = f"meshes[{mesh_index}].primitives[{p_index}]"
            if not isinstance(prim, dict):
                raise BrokenAsset(f"{where} must be a JSON object")
            mode = prim.get("mode", 4)
            if not isinstance(mode, int) or isinstance(mode, bool):
                raise BrokenAsset(f"{where} has an unknown primitive mode {mode!r}")
            if mode in SKIPPED_MODES:
                self.warn(f"{where} draws {SKIPPED_MODES[mode]}, which the preview skips (only triangles are shown)")
                continue
            if mode not in TRIANGLE_MODES:
                raise BrokenAsset(f"{where} has an unknown primitive mode {mode!r}")
            label = mesh.get("name") if isinstance(mesh.get("name"), str) else f"mesh{mesh_index}"
            name = f"{label}[{p_index}]" if len(prims) > 1 else label
            out.append(self._primitive(prim, where, name, mesh_index, node_index, world, skin_mats, slots))
        return out

    @staticmethod
    def _target_count(mesh_index: int, prims: list[Any]) -> int:
        counts: set[int] = set()
        for p_index, prim in enumerate(prims):
            targets = prim.get("targets", []) if isinstance(prim, dict) else []
            if not isinstance(targets, list):
                raise BrokenAsset(f"meshes[{mesh_index}].primitives[{p_index}].targets must be an array")
            counts.add(len(targets))
        if len(counts) > 1:
            raise BrokenAsset(
                f"meshes[{mesh_index}]: its primitives have different numbers of morph targets {sorted(counts)}"
            )
        return counts.pop() if counts else 0

    def _mesh_slots(self, mesh_index: int, mesh: dict[str, Any], prims: list[Any], count: int) -> list[int]:
        """Map this mesh's targets onto the avatar-wide morph names (once per mesh, not per instance)."""
        if mesh_index in self.mesh_slots:
            return self.mesh_slots[mesh_index]
        raw = self._target_names(mesh_index, mesh, prims, count)
        resolved = resolve_names(raw, self.blendshape_map)
        for canonical, (winner, *others) in name_collisions(raw, self.blendshape_map).items():
            listed = ", ".join(repr(o) for o in others)
            self.warn(
                f"meshes[{mesh_index}]: {listed} also look like {canonical!r}, which {winner!r} drives; "
                "kept under their own names"
            )
        slots = [self.morphs.slot(resolved[name], name) for name in raw]
        self.mesh_slots[mesh_index] = slots
        return slots

    def _target_names(self, mesh_index: int, mesh: dict[str, Any], prims: list[Any], count: int) -> list[str]:
        names: Any = None
        for holder in (mesh, prims[0] if isinstance(prims[0], dict) else {}):
            extras = holder.get("extras")
            if isinstance(extras, dict) and "targetNames" in extras:
                names = extras["targetNames"]
                break
        fallback = [f"target_{k}" for k in range(count)]
        if names is None:
            return fallback
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(names) != count:
            self.warn(f"meshes[{mesh_index}].extras.targetNames does not match its {count} targets; using target_N")
            return fallback
        if len(set(names)) != len(names):
            self.warn(f"meshes[{mesh_index}] repeats target names; using target_N")
            return fallback
        return list(names)

    def _default_weights(
        self, node_index: int, node: dict[str, Any], mesh_index: int, mesh: dict[str, Any], slots: list[int]
    ) -> None:
        source = node.get("weights", mesh.get("weights"))
        if source is None or not slots:
            return
        if not isinstance(source, list) or len(source) != len(slots) or not all(
            isinstance(w, int | float) and not isinstance(w, bool) for w in source
        ):
            self.warn(f"meshes[{mesh_index}].weights does not match its {len(slots)} targets; defaults ignored")
            return
        for slot, weight in zip(slots, source, strict=True):
            name = self.morphs.names[slot]
            value = float(np.clip(weight, 0.0, 1.0)) if np.isfinite(weight) else 0.0
            previous = self.morphs.defaults.get(name)
            if previous is not None and previous != value:
                self.warn(f"default weight of {name!r} differs between meshes; using {value:g} (nodes[{node_index}])")
            if value or previous is not None:
                self.morphs.defaults[name] = value

    def _skin_matrices(
        self, node_index: int, node: dict[str, Any], matrices: dict[int, np.ndarray]
    ) -> np.ndarray | None:
        """Joint matrices (J, 4, 4) at the file's rest pose, or None for a rigid mesh."""
        if "skin" not in node:
            return None
        skin = self.doc.get("skins", node["skin"], f"nodes[{node_index}]")
        joints = skin.get("joints")
        if not isinstance(joints, list) or not joints:
            raise BrokenAsset(f"skins[{node['skin']}] has no joints")
        mats = np.empty((len(joints), 4, 4))
        for j, joint in enumerate(joints):
            self.doc.get("nodes", joint, f"skins[{node['skin']}].joints")
            mats[j] = matrices[joint]
        if "inverseBindMatrices" in skin:
            ibm = read_accessor(self.doc, skin["inverseBindMatrices"], f"skins[{node['skin']}]")
            if ibm.shape != (len(joints), 16):
                raise BrokenAsset(f"skins[{node['skin']}].inverseBindMatrices must hold one MAT4 per joint")
            mats = mats @ ibm.astype(np.float64).reshape(-1, 4, 4).transpose(0, 2, 1)
        return mats

    # -- one primitive -------------------------------------------------------------------------
    def _primitive(
        self,
        prim: dict[str, Any],
        where: str,
        name: str,
        mesh_index: int,
        node_index: int,
        world: np.ndarray,
        skin_mats: np.ndarray | None,
        slots: list[int],
    ) -> Primitive:
        attrs = prim.get("attributes")
        if not isinstance(attrs, dict) or "POSITION" not in attrs:
            raise BrokenAsset(f"{where} has no POSITION attribute")
        draco = (prim.get("extensions") or {}).get(DRACO) if isinstance(prim.get("extensions"), dict) else None
        decoded, draco_indices = self._draco(draco, where) if draco is not None else ({}, None)

        def attribute(key: str, width: int) -> np.ndarray | None:
            if key not in attrs:
                return None
            values = decoded[key] if key in decoded else read_accessor(self.doc, attrs[key], f"{where}.{key}")
            if values.ndim != 2 or values.shape[1] < width:
                raise BrokenAsset(f"{where}.{key} must have at least {width} components")
            return np.ascontiguousarray(values[:, :width], np.float32)

        positions = attribute("POSITION", 3)
        assert positions is not None
        n = len(positions)
        normals = attribute("NORMAL", 3)
        material, tex_coord = self._material(prim, where)
        uvs = attribute(f"TEXCOORD_{tex_coord}", 2)
        for key, arr in (("NORMAL", normals), (f"TEXCOORD_{tex_coord}", uvs)):
            if arr is not None and len(arr) != n:
                raise BrokenAsset(f"{where}.{key} has {len(arr)} elements but POSITION has {n}")

        triangles = self._triangles(prim, where, n, draco_indices)
        d_pos, d_nrm = self._targets(prim, where, n, len(slots))

        skin = None
        if skin_mats is not None:
            skin = self._vertex_skin(attrs, where, n, skin_mats)
        local_deltas = d_pos
        with np.errstate(over="ignore", invalid="ignore"):
            positions, normals, d_pos, d_nrm, flip = transform_geometry(positions, normals, d_pos, d_nrm, world, skin)
        # Deltas read from the file were checked already; only a real transform can overflow them.
        if not _within_bounds(positions) or (d_pos is not local_deltas and not _within_bounds(d_pos)):
            raise BrokenAsset(f"{where}: its node or skin transform puts vertices far beyond any avatar's size")
        if normals is not None and not np.isfinite(normals).all():
            normals = None  # unusable; recomputed from the geometry below
        if flip:
            triangles = triangles[:, ::-1].copy()
        if normals is None:
            normals = vertex_normals(positions, triangles)
        texture, base_color, double_sided = material
        return Primitive(
            name=name,
            mesh_index=mesh_index,
            node_index=node_index,
            positions=positions,
            normals=normals,
            triangles=triangles,
            uvs=uvs,
            texture=texture,
            base_color=base_color,
            double_sided=double_sided,
            morph_slots=np.asarray(slots, np.intp),
            morph_positions=d_pos,
            morph_normals=d_nrm,
        )

    def _triangles(self, prim: dict[str, Any], where: str, n: int, draco_indices: np.ndarray | None) -> np.ndarray:
        mode = prim.get("mode", 4)
        if draco_indices is not None:
            return draco_indices
        if "indices" in prim:
            idx = read_accessor(self.doc, prim["indices"], f"{where}.indices", as_float=False)
            if idx.ndim != 2 or idx.shape[1] != 1 or idx.dtype.kind != "u":
                raise BrokenAsset(f"{where}.indices must be unsigned integer scalars")
            idx = idx[:, 0].astype(np.uint32)
            if idx.size and int(idx.max()) >= n:
                raise BrokenAsset(f"{where}.indices refers to vertex {int(idx.max())}, but there are only {n}")
        else:
            idx = np.arange(n, dtype=np.uint32)
        if mode == 4:
            usable = len(idx) - len(idx) % 3
            if usable != len(idx):
                self.warn(f"{where}: {len(idx)} indices is not a multiple of 3; the last {len(idx) - usable} ignored")
            return np.ascontiguousarray(idx[:usable].reshape(-1, 3))
        if len(idx) < 3:
            return np.zeros((0, 3), np.uint32)
        i = np.arange(len(idx) - 2)
        if mode == 5:  # strip: keep winding by swapping every other triangle (glTF 2.0 §3.7.2.1)
            odd = i % 2
            tri = np.stack([idx[i], idx[i + 1 + odd], idx[i + 2 - odd]], axis=1)
        else:  # fan
            tri = np.stack([idx[i + 1], idx[i + 2], np.full_like(i, idx[0], dtype=np.uint32)], axis=1)
        return np.ascontiguousarray(tri.astype(np.uint32))

    def _targets(self, prim: dict[str, Any], where: str, n: int, count: int) -> tuple[np.ndarray, np.ndarray | None]:
        targets = prim.get("targets", []) or []
        if not isinstance(targets, list):
            raise BrokenAsset(f"{where}.targets must be an array")
        d_pos = np.zeros((count, n, 3), np.float32)
        d_nrm: np.ndarray | None = None
        for k, target in enumerate(targets):
            if not isinstance(target, dict):
                raise BrokenAsset(f"{where}.targets[{k}] must be a JSON object")
            for key in ("POSITION", "NORMAL"):
                if key not in target:
                    continue
                if key == "NORMAL" and d_nrm is None:
                    d_nrm = np.zeros((count, n, 3), np.float32)
                out = d_pos[k] if key == "POSITION" else d_nrm[k]  # type: ignore[index]
                read_accessor(self.doc, target[key], f"{where}.targets[{k}].{key}", out=out)
        return d_pos, d_nrm

    def _vertex_skin(self, attrs: dict[str, Any], where: str, n: int, skin_mats: np.ndarray) -> np.ndarray | None:
        total: np.ndarray | None = None
        weight_sum = np.zeros(n)
        for s in range(4):
            jk, wk = f"JOINTS_{s}", f"WEIGHTS_{s}"
            if jk not in attrs or wk not in attrs:
                break
            joints = read_accessor(self.doc, attrs[jk], f"{where}.{jk}", as_float=False)
            weights = read_accessor(self.doc, attrs[wk], f"{where}.{wk}")
            if joints.shape != (n, 4) or weights.shape != (n, 4):
                raise BrokenAsset(f"{where}.{jk}/{wk} must hold {n} VEC4 values")
            part = vertex_skin_matrices(joints, weights, skin_mats, f"{where}.{jk}")
            total = part if total is None else total + part
            weight_sum += weights.sum(axis=1)
        if total is None:
            self.warn(f"{where}: node has a skin but the primitive has no JOINTS_0/WEIGHTS_0; drawn unskinned")
            return None
        unweighted = weight_sum <= 1e-8
        if np.any(unweighted):
            total[unweighted] = np.eye(4)
        return total

    # -- materials and textures ----------------------------------------------------------------
    def _material(
        self, prim: dict[str, Any], where: str
    ) -> tuple[tuple[Texture | None, tuple[float, float, float, float], bool], int]:
        """(texture, base colour, double-sided) and the texture's TEXCOORD set."""
        if "material" not in prim:
            return (None, (1.0, 1.0, 1.0, 1.0), False), 0
        mat = self.doc.get("materials", prim["material"], where)
        double_sided = mat.get("doubleSided") is True
        pbr = mat.get("pbrMetallicRoughness") or {}
        factor = pbr.get("baseColorFactor", [1, 1, 1, 1]) if isinstance(pbr, dict) else [1, 1, 1, 1]
        color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
        if isinstance(factor, list) and len(factor) == 4 and all(isinstance(c, int | float) for c in factor):
            color = tuple(float(np.clip(c, 0, 1)) for c in factor)  # type: ignore[assignment]
        info = pbr.get("baseColorTexture") if isinstance(pbr, dict) else None
        if not isinstance(info, dict) or "index" not in info:
            return (None, color, double_sided), 0
        tex_coord = info.get("texCoord", 0)
        if not isinstance(tex_coord, int) or tex_coord < 0:
            tex_coord = 0
        return (self._texture(info["index"], f"materials[{prim['material']}]"), color, double_sided), tex_coord

    def _texture(self, index: Any, referrer: str) -> Texture | None:
        tex = self.doc.get("textures", index, referrer)
        source = tex.get("source")
        if source is None:
            self.warn(f"textures[{index}] uses an image format only an extension provides; shown untextured")
            return None
        image = self.doc.get("images", source, f"textures[{index}]")  # validates before the cache lookup
        if source in self.textures:
            return self.textures[source]
        where = f"images[{source}]"
        try:
            if "bufferView" in image:
                data = self.doc.view_bytes(image["bufferView"], where)
            elif "uri" in image:
                data = self.doc.uri_bytes(image["uri"], where)
            else:
                raise BrokenAsset(f"{where} has neither a bufferView nor a uri")
        except BrokenAsset as exc:
            self.warn(f"{exc}; the mesh is shown untextured")
            self.textures[source] = None
            return None
        mime = next((m for magic, m in IMAGE_MAGIC.items() if data.startswith(magic)), None)
        texture = None
        if mime is None:
            self.warn(f"{where} is not a PNG or JPEG image; the mesh is shown untextured")
        else:
            label = image.get("name") if isinstance(image.get("name"), str) else where
            texture = Texture(data=data, mime_type=mime, name=label)
        self.textures[source] = texture
        return texture

    # -- Draco -----------------------------------------------------------------------------------
    def _draco(self, ext: Any, where: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        draco = _draco_module(DRACO)
        if not isinstance(ext, dict) or not isinstance(ext.get("attributes"), dict):
            raise BrokenAsset(f"{where}.extensions.{DRACO} needs 'bufferView' and 'attributes'")
        payload = self.doc.view_bytes(ext.get("bufferView"), f"{where}.extensions.{DRACO}")
        try:
            mesh = draco.decode(payload)
            faces = np.asarray(mesh.faces, np.uint32).reshape(-1, 3)
            decoded: dict[str, np.ndarray] = {}
            for key, uid in ext["attributes"].items():
                attr = mesh.get_attribute_by_unique_id(uid)
                if attr is None:
                    raise BrokenAsset(f"{where}: the Draco data has no attribute {uid} for {key}")
                decoded[key] = np.asarray(attr["data"], np.float32).reshape(len(attr["data"]), -1)
                require_finite(decoded[key], f"{where} (Draco {key})")
        except AvatarError:
            raise
        except Exception as exc:  # DracoPy raises its own and C++-level errors; all mean "bad data"
            raise BrokenAsset(f"{where}: the Draco-compressed geometry cannot be decoded ({exc})") from None
        n = len(decoded.get("POSITION", ()))
        if faces.size and int(faces.max()) >= n:
            raise BrokenAsset(f"{where}: the Draco faces refer to vertices that do not exist")
        return decoded, faces


def _within_bounds(values: np.ndarray) -> bool:
    """Finite and inside ±MAX_MAGNITUDE (NaN fails the comparisons)."""
    return not values.size or bool(values.min() >= -MAX_MAGNITUDE and values.max() <= MAX_MAGNITUDE)


def _draco_module(ext: str) -> Any:
    try:
        import DracoPy
    except ImportError:
        raise UnsupportedAsset(
            f"this file is compressed with {ext}, and the Draco decoder (DracoPy) is not installed", ext
        ) from None
    return DracoPy
