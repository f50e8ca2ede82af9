"""The ``Avatar`` model every other layer speaks: world-space primitives and one named morph set.

Why one named morph set across all primitives: providers split a face into head, teeth, eyelashes
and so on, each with its own copy of ``jawOpen``. The app (sliders, lip-sync) must drive them with
one weight, so the loader maps every primitive's targets onto ``Avatar.morph_names`` through
``Primitive.morph_slots``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Texture:
    """An encoded image (PNG/JPEG bytes as stored in the file); decoded only when someone needs pixels."""

    data: bytes
    mime_type: str
    name: str = ""

    def to_rgba(self) -> np.ndarray:
        """Decode to an (H, W, 4) uint8 array."""
        from PIL import Image

        with Image.open(io.BytesIO(self.data)) as img:
            return np.asarray(img.convert("RGBA"))


@dataclass
class Primitive:
    """One drawable triangle set in world space (node transform, and skin at rest, applied).

    ``morph_positions[k]`` / ``morph_normals[k]`` are world-space deltas of this primitive's k-th
    target, which drives ``Avatar.morph_names[morph_slots[k]]``.
    """

    name: str
    mesh_index: int
    node_index: int
    positions: np.ndarray  # (N, 3) float32
    normals: np.ndarray  # (N, 3) float32, unit length
    triangles: np.ndarray  # (M, 3) uint32
    uvs: np.ndarray | None = None  # (N, 2) float32, glTF convention (v down)
    texture: Texture | None = None
    base_color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    double_sided: bool = False  # glTF material.doubleSided; False means back faces MUST be culled (§3.9.4)
    morph_slots: np.ndarray = field(default_factory=lambda: np.zeros(0, np.intp))  # (T,)
    morph_positions: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 3), np.float32))
    morph_normals: np.ndarray | None = None  # (T, N, 3) float32 or None when no target has NORMAL

    @property
    def vertex_count(self) -> int:
        return int(self.positions.shape[0])

    @property
    def triangle_count(self) -> int:
        return int(self.triangles.shape[0])


@dataclass
class Avatar:
    """A loaded avatar: what the preview draws, the evaluator deforms and ``inspect`` reports."""

    primitives: list[Primitive]
    morph_names: list[str]  # canonical where known, else the raw name; unique
    raw_names: dict[str, list[str]]  # morph name → the names the file used for it (one per mesh spelling)
    default_weights: dict[str, float]  # from mesh.weights; only names with a non-zero default
    extensions_used: list[str] = field(default_factory=list)
    extensions_required: list[str] = field(default_factory=list)
    textures: list[Texture] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # problems the user should see; loading went on
    source: str = ""

    @property
    def vertex_count(self) -> int:
        return sum(p.vertex_count for p in self.primitives)

    @property
    def triangle_count(self) -> int:
        return sum(p.triangle_count for p in self.primitives)

    def morph_index(self, name: str) -> int:
        """Index of a morph by its canonical name, the file's raw name, or any spelling that
        normalises to a canonical name (``eyeBlink_L``); ``KeyError`` naming it if absent."""
        from avatar_studio.avatar.blendshapes import canonical_name

        if name in self.morph_names:
            return self.morph_names.index(name)
        for i, canonical in enumerate(self.morph_names):
            if name in self.raw_names.get(canonical, ()):
                return i
        normalised = canonical_name(name)
        if normalised is not None and normalised in self.morph_names:
            return self.morph_names.index(normalised)
        raise KeyError(f"this avatar has no morph target named {name!r}")

    def weight_vector(self, weights: dict[str, float] | None = None) -> np.ndarray:
        """Default weights overlaid with ``weights`` (by name) as one float32 vector over morph_names."""
        vec = np.zeros(len(self.morph_names), np.float32)
        for name, value in self.default_weights.items():
            vec[self.morph_names.index(name)] = value
        for name, value in (weights or {}).items():
            vec[self.morph_index(name)] = value
        return vec

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned (min, max) of the rest pose over all primitives."""
        if not self.primitives or self.vertex_count == 0:
            return np.zeros(3, np.float32), np.zeros(3, np.float32)
        lo = np.min([p.positions.min(axis=0) for p in self.primitives if p.vertex_count], axis=0)
        hi = np.max([p.positions.max(axis=0) for p in self.primitives if p.vertex_count], axis=0)
        return lo, hi
