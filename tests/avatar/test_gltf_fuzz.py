"""Property: any mutation of a real file either loads or raises our AvatarError; nothing else.

Two mutators over the third-party corpus: byte-level (flip, overwrite, truncate, splice; hits the
GLB container and binary data) and structure-aware (replace one JSON value anywhere with hostile
JSON; hits every index and type check). A loaded result must also survive morph evaluation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from avatar_studio.avatar.errors import AvatarError
from avatar_studio.avatar.gltf_reader import load_avatar
from avatar_studio.avatar.morph import MorphEvaluator

CORPUS = Path(__file__).parents[1] / "data" / "gltf"
GLBS = [
    CORPUS / "Box/glTF-Binary/Box.glb",
    CORPUS / "AnimatedMorphCube/glTF-Binary/AnimatedMorphCube.glb",
    CORPUS / "MorphPrimitivesTest/glTF-Binary/MorphPrimitivesTest.glb",
    CORPUS / "RiggedSimple/glTF-Binary/RiggedSimple.glb",
    CORPUS / "BoxInterleaved/glTF-Binary/BoxInterleaved.glb",
]
EMBEDDED = [
    CORPUS / "SimpleMorph/glTF-Embedded/SimpleMorph.gltf",
    CORPUS / "SimpleSparseAccessor/glTF-Embedded/SimpleSparseAccessor.gltf",
    CORPUS / "MeshPrimitiveModes/glTF-Embedded/MeshPrimitiveModes.gltf",
    CORPUS / "Box/glTF-Embedded/Box.gltf",
    CORPUS / "TriangleWithoutIndices/glTF-Embedded/TriangleWithoutIndices.gltf",
]
FUZZ = settings(max_examples=1000, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def _survives(data: bytes) -> None:
    try:
        avatar = load_avatar(data)
    except AvatarError as exc:
        error = exc
    else:
        weights = np.full(len(avatar.morph_names), 0.5, np.float32)
        for positions, normals in MorphEvaluator(avatar).apply(weights):
            assert np.isfinite(positions).all() and np.isfinite(normals).all()
        return
    assert str(error).strip(), "an error must carry a message for the user"


@st.composite
def mutated_glb(draw: st.DrawFn) -> bytes:
    data = bytearray(GLBS[draw(st.integers(0, len(GLBS) - 1))].read_bytes())
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "overwrite", "truncate", "splice", "header"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=8))
            data[at : at + len(chunk)] = chunk
        elif kind == "truncate":
            del data[at:]
        elif kind == "splice":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif data:  # the 28 bytes of GLB header + chunk headers are where lengths live
            data[draw(st.integers(0, 27)) % len(data)] = draw(st.integers(0, 255))
    return bytes(data)


@FUZZ
@given(mutated_glb())
def test_mutated_glb_loads_or_fails_clearly(data: bytes) -> None:
    _survives(data)


HOSTILE = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63), st.floats(allow_nan=True), st.text(max_size=12),
    st.lists(st.integers(-5, 5), max_size=5), st.dictionaries(st.text(max_size=5), st.integers(-3, 3), max_size=3),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            if key != "uri":  # keep the embedded data itself intact
                out.extend(_paths(value, (*prefix, key)))
    elif isinstance(node, list) and len(node) < 64:
        for i, value in enumerate(node):
            out.extend(_paths(value, (*prefix, i)))
    return out


@st.composite
def mutated_gltf(draw: st.DrawFn) -> bytes:
    doc = json.loads(EMBEDDED[draw(st.integers(0, len(EMBEDDED) - 1))].read_text())
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(_paths(doc)))
        parent = doc
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(HOSTILE)
    return json.dumps(doc).encode()


@FUZZ
@given(mutated_gltf())
def test_mutated_gltf_json_loads_or_fails_clearly(data: bytes) -> None:
    _survives(data)
