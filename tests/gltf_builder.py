"""A tiny, independent GLB writer for tests (``struct`` + ``json`` only, none of our own code).

A module of its own rather than part of ``conftest.py``: several test folders have a conftest, so
``from conftest import …`` would depend on the order pytest loaded them.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np


def build_glb(
    meshes: list[dict[str, Any]],
    nodes: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
) -> bytes:
    """A GLB from plain arrays.

    Each mesh: ``positions`` (N,3), optional ``indices`` (M,), ``targets`` (list of (N,3) deltas),
    ``names`` (target names), ``weights``. Nodes default to one per mesh at the origin.
    """
    blob = bytearray()
    views: list[dict[str, Any]] = []
    accessors: list[dict[str, Any]] = []

    def add(array: np.ndarray, ctype: int, kind: str, target: int | None = None) -> int:
        data = np.ascontiguousarray(array).tobytes()
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(data)}
                     | ({"target": target} if target else {}))
        blob.extend(data + b"\x00" * (-len(data) % 4))
        acc: dict[str, Any] = {"bufferView": len(views) - 1, "componentType": ctype,
                               "count": len(array), "type": kind}
        if kind == "VEC3" and ctype == 5126:
            acc["min"] = np.asarray(array).min(axis=0).tolist()
            acc["max"] = np.asarray(array).max(axis=0).tolist()
        accessors.append(acc)
        return len(accessors) - 1

    gl_meshes = []
    for mesh in meshes:
        pos = np.asarray(mesh["positions"], np.float32)
        prim: dict[str, Any] = {"attributes": {"POSITION": add(pos, 5126, "VEC3", 34962)}}
        if "indices" in mesh:
            prim["indices"] = add(np.asarray(mesh["indices"], np.uint32), 5125, "SCALAR", 34963)
        if mesh.get("targets"):
            prim["targets"] = [{"POSITION": add(np.asarray(t, np.float32), 5126, "VEC3")} for t in mesh["targets"]]
        gl_mesh: dict[str, Any] = {"primitives": [prim]}
        if "names" in mesh:
            gl_mesh["extras"] = {"targetNames": mesh["names"]}
        if "weights" in mesh:
            gl_mesh["weights"] = mesh["weights"]
        gl_meshes.append(gl_mesh)
    nodes = nodes if nodes is not None else [{"mesh": i} for i in range(len(meshes))]
    doc: dict[str, Any] = {
        "asset": {"version": "2.0"},
        "scene": 0,
        "scenes": [{"nodes": [i for i, n in enumerate(nodes) if not n.get("_child")]}],
        "nodes": [{k: v for k, v in n.items() if k != "_child"} for n in nodes],
        "meshes": gl_meshes,
        "accessors": accessors,
        "bufferViews": views,
        "buffers": [{"byteLength": len(blob)}],
    }
    doc.update(extra or {})
    return pack_glb(doc, bytes(blob))


def pack_glb(doc: dict[str, Any], blob: bytes) -> bytes:
    js = json.dumps(doc).encode()
    js += b" " * (-len(js) % 4)
    blob += b"\x00" * (-len(blob) % 4)
    chunks = struct.pack("<II", len(js), 0x4E4F534A) + js + struct.pack("<II", len(blob), 0x004E4942) + blob
    return struct.pack("<III", 0x46546C67, 2, 12 + len(chunks)) + chunks
