"""Small geometry kernels shared by the reader and the morph evaluator."""

from __future__ import annotations

import numpy as np


def normalize_rows(vectors: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Unit-length rows; zero rows stay zero instead of turning into NaN."""
    lengths = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
    lengths[lengths == 0] = 1.0
    return np.divide(vectors, lengths[:, None], out=out if out is not None else None)


def vertex_normals(positions: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals, for files that ship none (glTF says: compute flat or smooth)."""
    n = len(positions)
    if n == 0 or len(triangles) == 0:
        return np.zeros((n, 3), np.float32)
    p = positions.astype(np.float64)
    tri = triangles.astype(np.intp)
    face = np.cross(p[tri[:, 1]] - p[tri[:, 0]], p[tri[:, 2]] - p[tri[:, 0]])
    acc = np.zeros((n, 3))
    for corner in range(3):
        for axis in range(3):
            acc[:, axis] += np.bincount(tri[:, corner], weights=face[:, axis], minlength=n)
    return normalize_rows(acc).astype(np.float32)


def transform_geometry(
    positions: np.ndarray,
    normals: np.ndarray | None,
    d_pos: np.ndarray,
    d_nrm: np.ndarray | None,
    world: np.ndarray,
    skin: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None, bool]:
    """Move a primitive and its morph deltas into world space.

    Deltas take the linear part only (they are directions, not points); normals take the inverse
    transpose so non-uniform scale keeps them perpendicular. ``skin`` (N, 4, 4) replaces the node
    matrix per vertex, as glTF requires for skinned meshes. Returns whether the winding flips
    (negative determinant), so the caller can keep faces pointing outwards.
    """
    if skin is None:
        if np.allclose(world, np.eye(4)):
            return positions, _unit(normals), d_pos, d_nrm, False
        lin = world[:3, :3]
        if np.array_equal(lin, np.eye(3)):  # translation only, the usual avatar root: deltas unchanged
            pos = (positions + world[:3, 3].astype(np.float32)).astype(np.float32)
            return pos, _unit(normals), d_pos, d_nrm, False
        normal_mat = _normal_matrix(lin)
        pos = (positions.astype(np.float64) @ lin.T + world[:3, 3]).astype(np.float32)
        nrm = None if normals is None else _unit((normals @ normal_mat.T).astype(np.float32))
        dp = (d_pos @ lin.T.astype(np.float32)).astype(np.float32)
        dn = None if d_nrm is None else (d_nrm @ normal_mat.T.astype(np.float32)).astype(np.float32)
        return pos, nrm, dp, dn, bool(np.linalg.det(lin) < 0)
    lin_v = skin[:, :3, :3]
    pos = (np.einsum("nij,nj->ni", lin_v, positions.astype(np.float64)) + skin[:, :3, 3]).astype(np.float32)
    # Rest-pose skins are rigid (rotation + uniform scale), so the linear part serves for normals.
    nrm = None if normals is None else _unit(np.einsum("nij,nj->ni", lin_v, normals).astype(np.float32))
    lin32 = lin_v.astype(np.float32)
    dp = np.einsum("nij,tnj->tni", lin32, d_pos).astype(np.float32)
    dn = None if d_nrm is None else np.einsum("nij,tnj->tni", lin32, d_nrm).astype(np.float32)
    flip = bool(np.mean(np.linalg.det(lin_v)) < 0) if len(lin_v) else False
    return pos, nrm, dp, dn, flip


def _normal_matrix(lin: np.ndarray) -> np.ndarray:
    if abs(np.linalg.det(lin)) < 1e-30:
        return lin  # degenerate (zero scale): nothing sensible to preserve
    return np.linalg.inv(lin).T


def _unit(normals: np.ndarray | None) -> np.ndarray | None:
    return None if normals is None else normalize_rows(normals.astype(np.float32, copy=False)).astype(np.float32)
