"""Morph evaluation, ``base + Σ wᵢ·δᵢ``, fast enough for every frame and allocation-free.

Why this shape: the preview and the lip-sync tester call :meth:`MorphEvaluator.apply` once per
display frame for every primitive, so it must cost well under a millisecond at 30k vertices and
must not churn the allocator (GC pauses show up as stutter). Each primitive keeps only the
columns its targets actually move (real blendshapes move a face, not a whole body), evaluates
them with one BLAS ``dot`` into buffers allocated once, and scatters them into output arrays the
view can hand straight to VTK. Normals follow the file's NORMAL deltas when it has them, otherwise
they are recomputed only around the vertices the targets can move.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from avatar_studio.avatar.model import Avatar, Primitive

# Above this share of moved columns a dense evaluation beats gather/scatter.
_DENSE_SHARE = 0.6


class _Columns:
    """``out = base + w @ D`` restricted to the columns ``D`` can change, with preallocated buffers."""

    def __init__(self, deltas: np.ndarray, base_flat: np.ndarray) -> None:
        moved = np.flatnonzero(np.any(deltas != 0, axis=0))
        self.dense = len(moved) > _DENSE_SHARE * deltas.shape[1]
        self.cols = None if self.dense else moved
        self.matrix = np.ascontiguousarray(deltas if self.dense else deltas[:, moved], np.float32)
        self.base = base_flat if self.dense else np.ascontiguousarray(base_flat[moved])
        self.buffer = np.empty(self.matrix.shape[1], np.float32)

    def evaluate(self, weights: np.ndarray) -> np.ndarray:
        np.dot(weights, self.matrix, out=self.buffer)
        np.add(self.buffer, self.base, out=self.buffer)
        return self.buffer

    def scatter(self, values: np.ndarray, out_flat: np.ndarray) -> None:
        if self.cols is None:
            out_flat[:] = values
        else:
            np.put(out_flat, self.cols, values)


def _vertex_columns(cols: np.ndarray) -> np.ndarray:
    """Expand flat columns to whole (x, y, z) triplets of the vertices they touch."""
    verts = np.unique(cols // 3)
    return (verts[:, None] * 3 + np.arange(3)).ravel()


def _normalize_in_place(vectors: np.ndarray, lengths: np.ndarray, squares: np.ndarray) -> None:
    np.multiply(vectors, vectors, out=squares)
    np.sum(squares, axis=1, out=lengths)
    np.sqrt(lengths, out=lengths)
    np.maximum(lengths, 1e-20, out=lengths)
    for k in range(3):  # column by column: a broadcast divide would buffer its operand every frame
        np.divide(vectors[:, k], lengths, out=vectors[:, k])


class _NormalDeltas:
    """Blend the file's NORMAL target deltas and renormalise the vertices they touch."""

    def __init__(self, deltas: np.ndarray, base_flat: np.ndarray) -> None:
        moved = np.flatnonzero(np.any(deltas != 0, axis=0))
        self.cols = _vertex_columns(moved)
        self.matrix = np.ascontiguousarray(deltas[:, self.cols], np.float32)
        self.base = np.ascontiguousarray(base_flat[self.cols])
        self.buffer = np.empty(len(self.cols), np.float32)
        self.vectors = self.buffer.reshape(-1, 3)
        self.lengths = np.empty(len(self.vectors), np.float32)
        self.squares = np.empty_like(self.vectors)

    def apply(self, weights: np.ndarray, positions: np.ndarray, out_flat: np.ndarray) -> None:
        np.dot(weights, self.matrix, out=self.buffer)
        np.add(self.buffer, self.base, out=self.buffer)
        _normalize_in_place(self.vectors, self.lengths, self.squares)
        np.put(out_flat, self.cols, self.buffer)


class _RecomputedNormals:
    """Area-weighted normals recomputed around the movable vertices, for files with no NORMAL deltas."""

    def __init__(self, triangles: np.ndarray, movable_cols: np.ndarray, n_vertices: int) -> None:
        tri = triangles.astype(np.intp)
        movable = np.zeros(n_vertices, bool)
        movable[movable_cols // 3] = True
        touched_faces = movable[tri].any(axis=1)
        region = np.zeros(n_vertices, bool)
        region[tri[touched_faces].ravel()] = True  # vertices whose normal can change
        faces = np.flatnonzero(region[tri].any(axis=1))  # every face feeding those normals
        face_tri = tri[faces]
        self.corners = [np.ascontiguousarray(face_tri[:, k]) for k in range(3)]
        corner_vertex = face_tri.ravel()
        corner_face = np.repeat(np.arange(len(faces)), 3)
        keep = region[corner_vertex]
        order = np.argsort(corner_vertex[keep], kind="stable")
        sorted_vertices = corner_vertex[keep][order]
        self.corner_faces = corner_face[keep][order]
        if len(sorted_vertices):
            self.starts = np.flatnonzero(np.r_[True, sorted_vertices[1:] != sorted_vertices[:-1]])
        else:  # the targets only move vertices no triangle uses: no normal can change
            self.starts = np.zeros(0, np.intp)
        self.vertices = sorted_vertices[self.starts]
        self.cols = (self.vertices[:, None] * 3 + np.arange(3)).ravel()
        f = len(faces)
        self.a, self.b, self.c = (np.empty((f, 3), np.float32) for _ in range(3))
        self.face_normals = np.empty((f, 3), np.float32)
        self.tmp = np.empty(f, np.float32)
        self.gathered = np.empty((len(self.corner_faces), 3), np.float32)
        self.acc = np.empty((len(self.vertices), 3), np.float32)
        self.lengths = np.empty(len(self.vertices), np.float32)
        self.squares = np.empty_like(self.acc)

    def apply(self, weights: np.ndarray, positions: np.ndarray, out_flat: np.ndarray) -> None:
        if not len(self.vertices):
            return
        np.take(positions, self.corners[0], axis=0, out=self.a, mode="clip")
        np.take(positions, self.corners[1], axis=0, out=self.b, mode="clip")
        np.take(positions, self.corners[2], axis=0, out=self.c, mode="clip")
        np.subtract(self.b, self.a, out=self.b)  # edge 1
        np.subtract(self.c, self.a, out=self.c)  # edge 2
        e1, e2, fn, t = self.b, self.c, self.face_normals, self.tmp
        for i, j, k in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):  # fn = e1 × e2, component by component
            np.multiply(e1[:, j], e2[:, k], out=fn[:, i])
            np.multiply(e1[:, k], e2[:, j], out=t)
            np.subtract(fn[:, i], t, out=fn[:, i])
        np.take(fn, self.corner_faces, axis=0, out=self.gathered, mode="clip")
        np.add.reduceat(self.gathered, self.starts, axis=0, out=self.acc)
        _normalize_in_place(self.acc, self.lengths, self.squares)
        np.put(out_flat, self.cols, self.acc)


class _PrimitivePlan:
    def __init__(self, prim: Primitive, recompute_normals: bool) -> None:
        self.slots = prim.morph_slots.astype(np.intp)
        self.positions = prim.positions.astype(np.float32, copy=True)
        self.normals = prim.normals.astype(np.float32, copy=True)
        self.weights = np.zeros(len(self.slots), np.float32)
        self.was_neutral = True
        self.pos_flat = self.positions.reshape(-1)
        self.nrm_flat = self.normals.reshape(-1)
        self.base_normals = prim.normals.astype(np.float32, copy=True).reshape(-1)
        self.columns: _Columns | None = None
        self.normal_path: _NormalDeltas | _RecomputedNormals | None = None
        if not len(self.slots) or not prim.vertex_count:
            return
        deltas = prim.morph_positions.reshape(len(self.slots), -1)
        self.columns = _Columns(deltas, prim.positions.astype(np.float32).reshape(-1))
        moved = np.flatnonzero(np.any(deltas != 0, axis=0))
        if prim.morph_normals is not None and np.any(prim.morph_normals):
            self.normal_path = _NormalDeltas(prim.morph_normals.reshape(len(self.slots), -1), self.base_normals)
        elif recompute_normals and len(moved):
            self.normal_path = _RecomputedNormals(prim.triangles, moved, prim.vertex_count)

    def apply(self, weights: np.ndarray) -> None:
        if self.columns is None:
            return
        np.take(weights, self.slots, out=self.weights, mode="clip")
        neutral = not self.weights.any()
        if neutral and self.was_neutral:
            return  # nothing moved since the last neutral frame: the buffers already hold the rest pose
        self.columns.scatter(self.columns.evaluate(self.weights), self.pos_flat)
        if neutral:
            self.nrm_flat[:] = self.base_normals
        elif self.normal_path is not None:
            self.normal_path.apply(self.weights, self.positions, self.nrm_flat)
        self.was_neutral = neutral


class MorphEvaluator:
    """Deforms every primitive of an :class:`Avatar` for a set of morph weights.

    The arrays returned by :meth:`apply` belong to the evaluator and are overwritten by the next
    call; copy them if you keep them. Weights are given by morph name (canonical or the file's raw
    name, overlaid on the avatar's default weights) or as a float32 vector over
    ``avatar.morph_names``.
    """

    def __init__(self, avatar: Avatar, *, recompute_normals: bool = True) -> None:
        self.avatar = avatar
        self._plans = [_PrimitivePlan(p, recompute_normals) for p in avatar.primitives]
        self._defaults = avatar.weight_vector()
        self._vector = self._defaults.copy()
        self._index = {name: i for i, name in enumerate(avatar.morph_names)}
        for name, raws in avatar.raw_names.items():
            for raw in raws:
                self._index.setdefault(raw, self._index[name])
        self._outputs = [(plan.positions, plan.normals) for plan in self._plans]
        self.apply(None)

    @property
    def outputs(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """The latest (positions, normals) of each primitive, without recomputing."""
        return self._outputs

    def weights_for(self, weights: Mapping[str, float] | np.ndarray | None) -> np.ndarray:
        """The weight vector ``apply`` would use (defaults overlaid with a mapping)."""
        if weights is None:
            self._vector[:] = self._defaults
        elif isinstance(weights, np.ndarray):
            if weights.shape != self._vector.shape:
                raise ValueError(f"expected {len(self._vector)} weights (one per morph name), got {weights.shape}")
            self._vector[:] = weights
        else:
            self._vector[:] = self._defaults
            for name, value in weights.items():
                index = self._index.get(name)
                if index is None:
                    index = self._index[name] = self.avatar.morph_index(name)  # other spellings; raises KeyError
                self._vector[index] = value
        return self._vector

    def apply(self, weights: Mapping[str, float] | np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Deform all primitives; returns each primitive's (positions, normals) buffers."""
        vector = self.weights_for(weights)
        for plan in self._plans:
            plan.apply(vector)
        return self._outputs
