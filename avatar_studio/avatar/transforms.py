"""Node transforms and rest-pose skinning: how glTF puts each primitive into world space."""

from __future__ import annotations

import numpy as np

from avatar_studio.avatar.errors import BrokenAsset
from avatar_studio.avatar.gltf_document import GltfDocument


def _numbers(value: object, n: int, where: str, default: list[float]) -> np.ndarray:
    if value is None:
        return np.asarray(default, np.float64)
    arr = np.asarray(value, dtype=object)
    if arr.shape != (n,) or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in arr):
        raise BrokenAsset(f"{where} must be an array of {n} numbers")
    out = arr.astype(np.float64)
    if not np.all(np.isfinite(out)):
        raise BrokenAsset(f"{where} contains a non-finite number")
    return out


def local_matrix(node: dict, where: str) -> np.ndarray:
    """A node's local 4×4 matrix from ``matrix`` (column-major) or translation/rotation/scale."""
    if "matrix" in node:
        return _numbers(node["matrix"], 16, f"{where}.matrix", np.eye(4).ravel().tolist()).reshape(4, 4).T
    t = _numbers(node.get("translation"), 3, f"{where}.translation", [0, 0, 0])
    x, y, z, w = _numbers(node.get("rotation"), 4, f"{where}.rotation", [0, 0, 0, 1])
    s = _numbers(node.get("scale"), 3, f"{where}.scale", [1, 1, 1])
    norm = np.sqrt(x * x + y * y + z * z + w * w) or 1.0
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    rot = np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )
    m = np.eye(4)
    m[:3, :3] = rot * s[None, :]
    m[:3, 3] = t
    return m


def world_matrices(doc: GltfDocument) -> tuple[dict[int, np.ndarray], list[int]]:
    """World matrix of every node reachable from the displayed scene, and those nodes in order.

    The displayed scene is ``scene``, else the first scene, else every root node (a file with
    meshes but no scenes is still worth reviewing). Cycles are refused: they would hang a naive walk.
    """
    nodes = doc.items("nodes")
    scenes = doc.items("scenes")
    if scenes:
        scene = doc.get("scenes", doc.json.get("scene", 0), "'scene'")
        roots = scene.get("nodes", [])
    else:
        children: set[int] = set()
        for i in range(len(nodes)):
            kids = doc.get("nodes", i).get("children", [])
            children.update(k for k in (kids if isinstance(kids, list) else []) if isinstance(k, int))
        roots = [i for i in range(len(nodes)) if i not in children]
    if not isinstance(roots, list):
        raise BrokenAsset("scene.nodes must be an array")
    world: dict[int, np.ndarray] = {}
    order: list[int] = []
    stack: list[tuple[int, np.ndarray, str]] = [(r, np.eye(4), "scene") for r in reversed(roots)]
    while stack:
        index, parent, referrer = stack.pop()
        node = doc.get("nodes", index, referrer)
        if index in world:
            raise BrokenAsset(f"nodes[{index}] appears twice in the scene graph (a cycle or a shared child)")
        world[index] = parent @ local_matrix(node, f"nodes[{index}]")
        order.append(index)
        kids = node.get("children", [])
        if not isinstance(kids, list):
            raise BrokenAsset(f"nodes[{index}].children must be an array")
        stack.extend((k, world[index], f"nodes[{index}].children") for k in reversed(kids))
    return world, order


def all_node_matrices(doc: GltfDocument, world: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    """World matrices for joints outside the displayed scene too (skins may reference them)."""
    missing = [i for i in range(len(doc.items("nodes"))) if i not in world]
    if not missing:
        return world
    full = dict(world)
    parents: dict[int, int] = {}
    for i in range(len(doc.items("nodes"))):
        kids = doc.get("nodes", i).get("children", [])
        for k in kids if isinstance(kids, list) else []:
            if isinstance(k, int):
                parents[k] = i

    def resolve(i: int, depth: int = 0) -> np.ndarray:
        if i in full:
            return full[i]
        if depth > len(parents) + 1:
            raise BrokenAsset("the node hierarchy contains a cycle")
        local = local_matrix(doc.get("nodes", i), f"nodes[{i}]")
        full[i] = (resolve(parents[i], depth + 1) if i in parents else np.eye(4)) @ local
        return full[i]

    for i in missing:
        resolve(i)
    return full


def vertex_skin_matrices(
    joints: np.ndarray, weights: np.ndarray, joint_mats: np.ndarray, where: str
) -> np.ndarray:
    """Per-vertex blended (N, 4, 4) skin matrices for one JOINTS_n/WEIGHTS_n set (or the sum of sets)."""
    if joints.size and int(joints.max()) >= len(joint_mats):
        raise BrokenAsset(f"{where}: JOINTS refer to joint {int(joints.max())}, but the skin has {len(joint_mats)}")
    return np.einsum("nk,nkij->nij", weights.astype(np.float64), joint_mats[joints.astype(np.intp)])
