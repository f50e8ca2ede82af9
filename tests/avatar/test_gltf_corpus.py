"""The third-party Khronos corpus: counts, names, defaults and morphed positions.

Expected values come from the corpus README (read with pygltflib by its authors) and, for
morphed positions, from an independent decode with pygltflib + ``numpy.frombuffer`` here.
"""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path

import numpy as np
import pygltflib
import pytest

from avatar_studio.avatar.errors import UnsupportedAsset
from avatar_studio.avatar.gltf_reader import load_avatar
from avatar_studio.avatar.morph import MorphEvaluator

CORPUS = Path(__file__).parents[1] / "data" / "gltf"

# file → [(vertices, index count, targets) per primitive], mesh.weights (by target), target names
EXPECTED = {
    "AnimatedMorphCube/glTF-Binary/AnimatedMorphCube.glb": ([(24, 36, 2)], {}, ["target_0", "target_1"]),
    "AnimatedMorphCube/glTF-Quantized/AnimatedMorphCube.gltf": ([(24, 36, 2)], {}, ["target_0", "target_1"]),
    "AnimatedMorphSphere/glTF-Binary/AnimatedMorphSphere.glb": ([(1876, 2880, 2)], {}, ["target_0", "target_1"]),
    "MorphPrimitivesTest/glTF-Binary/MorphPrimitivesTest.glb": ([(21, 72, 1), (9, 24, 1)], {"target_0": 0.5},
                                                                ["target_0"]),
    "MorphPrimitivesTest/glTF-Draco/MorphPrimitivesTest.gltf": ([(21, 72, 1), (9, 24, 1)], {"target_0": 0.5},
                                                                ["target_0"]),
    "MorphStressTest/glTF-Binary/MorphStressTest.glb": ([(24, 36, 8), (1504, 7200, 8)], {},
                                                        [f"Key {i}" for i in range(1, 9)]),
    "SimpleMorph/glTF-Embedded/SimpleMorph.gltf": ([(3, 3, 2)], {"target_0": 0.5, "target_1": 0.5},
                                                   ["target_0", "target_1"]),
    "RiggedSimple/glTF-Binary/RiggedSimple.glb": ([(160, 564, 0)], {}, []),
    "Fox/glTF-Binary/Fox.glb": ([(1728, 1728, 0)], {}, []),
    "Box/glTF-Binary/Box.glb": ([(24, 36, 0)], {}, []),
    "Box/glTF-Embedded/Box.gltf": ([(24, 36, 0)], {}, []),
    "Box/glTF-Draco/Box.gltf": ([(24, 36, 0)], {}, []),
    "BoxInterleaved/glTF-Binary/BoxInterleaved.glb": ([(24, 36, 0)], {}, []),
    "BoxWithSpaces/glTF/Box With Spaces.gltf": ([(24, 36, 0)], {}, []),
    "MultiUVTest/glTF-Binary/MultiUVTest.glb": ([(24, 36, 0)], {}, []),
    "SimpleInstancing/glTF-Binary/SimpleInstancing.glb": ([(24, 36, 0)], {}, []),
    "SimpleSparseAccessor/glTF-Embedded/SimpleSparseAccessor.gltf": ([(14, 36, 0)], {}, []),
    "SimpleSparseAccessor/glTF/SimpleSparseAccessor.gltf": ([(14, 36, 0)], {}, []),
    "TriangleWithoutIndices/glTF-Embedded/TriangleWithoutIndices.gltf": ([(3, 3, 0)], {}, []),
}


@pytest.mark.parametrize("rel", sorted(EXPECTED))
def test_corpus_counts_names_and_defaults(rel: str) -> None:
    prims, defaults, names = EXPECTED[rel]
    avatar = load_avatar(CORPUS / rel)
    assert [(p.vertex_count, p.triangle_count * 3, len(p.morph_slots)) for p in avatar.primitives] == prims
    assert avatar.default_weights == pytest.approx(defaults)
    assert avatar.morph_names == names
    for prim in avatar.primitives:
        assert prim.positions.dtype == np.float32 and np.isfinite(prim.positions).all()
        lengths = np.linalg.norm(prim.normals, axis=1)
        assert np.allclose(lengths, 1.0, atol=1e-4), "normals are unit length (computed when absent)"
        assert prim.triangles.max() < prim.vertex_count


def _gltf_float_accessor(gltf: pygltflib.GLTF2, blob: bytes, index: int) -> np.ndarray:
    """Independent decode of a tightly packed float VEC3 accessor (the simple case only)."""
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    assert acc.componentType == pygltflib.FLOAT and view.byteStride in (None, 12)
    offset = (view.byteOffset or 0) + (acc.byteOffset or 0)
    return np.frombuffer(blob, np.float32, acc.count * 3, offset).reshape(-1, 3)


def test_morph_primitives_default_weight_half_raises_the_centre() -> None:
    path = CORPUS / "MorphPrimitivesTest/glTF-Binary/MorphPrimitivesTest.glb"
    gltf = pygltflib.GLTF2().load_binary(str(path))
    blob = gltf.binary_blob()
    avatar = load_avatar(path)
    posed = MorphEvaluator(avatar).apply()  # default weights: [0.5]
    for prim, (positions, _) in zip(gltf.meshes[0].primitives, posed, strict=True):
        base = _gltf_float_accessor(gltf, blob, prim.attributes.POSITION)
        delta = _gltf_float_accessor(gltf, blob, prim.targets[0]["POSITION"])
        node_scale = 1.0
        for node in gltf.nodes:
            if node.mesh == 0 and node.scale:
                node_scale = node.scale[0]
        assert node_scale == 1.0 or not gltf.nodes[0].matrix
        expected = base + 0.5 * delta
        assert np.allclose(positions, expected, atol=1e-5)
    assert not np.allclose(posed[0][0], avatar.primitives[0].positions), "the centre is raised"


def test_simple_morph_positions_from_the_data_uri() -> None:
    path = CORPUS / "SimpleMorph/glTF-Embedded/SimpleMorph.gltf"
    doc = json.loads(path.read_text())
    blob = base64.b64decode(doc["buffers"][0]["uri"].split(",", 1)[1])

    def vec3(index: int) -> np.ndarray:
        acc = doc["accessors"][index]
        view = doc["bufferViews"][acc["bufferView"]]
        start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        return np.array(struct.unpack_from(f"<{acc['count'] * 3}f", blob, start)).reshape(-1, 3)

    prim = doc["meshes"][0]["primitives"][0]
    base = vec3(prim["attributes"]["POSITION"])
    t0, t1 = (vec3(t["POSITION"]) for t in prim["targets"])
    evaluator = MorphEvaluator(load_avatar(path))
    assert np.allclose(evaluator.apply()[0][0], base + 0.5 * t0 + 0.5 * t1)
    assert np.allclose(evaluator.apply({"target_0": 1.0, "target_1": 0.0})[0][0], base + t0)
    assert np.allclose(evaluator.apply(np.array([0.0, 1.0], np.float32))[0][0], base + t1)


@pytest.mark.parametrize("variant", ["glTF-Embedded/SimpleSparseAccessor.gltf", "glTF/SimpleSparseAccessor.gltf"])
def test_sparse_accessor_substitutes_vertices(variant: str) -> None:
    positions = load_avatar(CORPUS / "SimpleSparseAccessor" / variant).primitives[0].positions
    assert positions[8].tolist() == [1, 2, 0]
    assert positions[10].tolist() == [3, 3, 0]
    assert positions[12].tolist() == [5, 4, 0]
    assert positions[:, 1].max() == 4.0, "ignoring `sparse` would leave max y at 1"


def _sorted_rows(a: np.ndarray, decimals: int = 3) -> np.ndarray:
    rounded = np.round(a, decimals)
    return rounded[np.lexsort(rounded.T[::-1])]


def test_draco_box_decodes_to_the_same_geometry_as_the_plain_box() -> None:
    plain = load_avatar(CORPUS / "Box/glTF-Binary/Box.glb").primitives[0]
    draco = load_avatar(CORPUS / "Box/glTF-Draco/Box.gltf").primitives[0]
    assert np.abs(draco.positions).max() > 0.4, "not zero-filled"
    assert np.allclose(_sorted_rows(plain.positions, 2), _sorted_rows(draco.positions, 2), atol=0.02)


def test_draco_without_decoder_is_refused_with_the_extension_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "DracoPy", None)  # what a machine without the wheel looks like
    with pytest.raises(UnsupportedAsset, match="KHR_draco_mesh_compression") as info:
        load_avatar(CORPUS / "Box/glTF-Draco/Box.gltf")
    assert info.value.extension == "KHR_draco_mesh_compression"


def test_quantized_cube_matches_the_float_cube_in_world_space() -> None:
    plain = load_avatar(CORPUS / "AnimatedMorphCube/glTF-Binary/AnimatedMorphCube.glb")
    quant = load_avatar(CORPUS / "AnimatedMorphCube/glTF-Quantized/AnimatedMorphCube.gltf")
    size = np.ptp(plain.primitives[0].positions, axis=0).max()
    assert np.allclose(_sorted_rows(plain.primitives[0].positions / size, 2),
                       _sorted_rows(quant.primitives[0].positions / size, 2), atol=0.02)
    for w in ([1.0, 0.0], [0.0, 1.0]):
        p = MorphEvaluator(plain).apply(np.array(w, np.float32))[0][0]
        q = MorphEvaluator(quant).apply(np.array(w, np.float32))[0][0]
        assert np.allclose(_sorted_rows(p / size, 2), _sorted_rows(q / size, 2), atol=0.02)


def test_primitive_modes_convert_strips_and_fans_and_skip_points_and_lines() -> None:
    path = CORPUS / "MeshPrimitiveModes/glTF-Embedded/MeshPrimitiveModes.gltf"
    doc = json.loads(path.read_text())
    avatar = load_avatar(path)
    modes = [m["primitives"][0].get("mode", 4) for m in doc["meshes"]]
    counts = [doc["accessors"][m["primitives"][0]["indices"]]["count"] for m in doc["meshes"]]
    expected = [c // 3 if mode == 4 else c - 2 for mode, c in zip(modes, counts, strict=True) if mode >= 4]
    assert [p.triangle_count for p in avatar.primitives] == expected
    skipped = [w for w in avatar.warnings if "skips" in w]
    assert len(skipped) == sum(1 for m in modes if m < 4)
    assert any("points" in w for w in skipped) and any("line strip" in w for w in skipped)


def test_box_with_spaces_reads_uri_encoded_files_and_its_texture() -> None:
    avatar = load_avatar(CORPUS / "BoxWithSpaces/glTF/Box With Spaces.gltf")
    texture = avatar.primitives[0].texture
    assert texture is not None and texture.mime_type == "image/png"
    rgba = texture.to_rgba()
    assert rgba.ndim == 3 and rgba.shape[2] == 4 and rgba.shape[0] > 8


def test_interleaved_box_matches_plain_box() -> None:
    a = load_avatar(CORPUS / "BoxInterleaved/glTF-Binary/BoxInterleaved.glb").primitives[0]
    b = load_avatar(CORPUS / "Box/glTF-Binary/Box.glb").primitives[0]
    assert np.allclose(_sorted_rows(a.positions), _sorted_rows(b.positions))
    assert np.allclose(_sorted_rows(a.normals), _sorted_rows(b.normals))


def test_node_transform_is_applied() -> None:
    gltf = pygltflib.GLTF2().load_binary(str(CORPUS / "Box/glTF-Binary/Box.glb"))
    matrix = np.array(gltf.nodes[0].matrix).reshape(4, 4).T  # Box's root node rotates Y-up → Z-up
    blob = gltf.binary_blob()
    prim = gltf.meshes[0].primitives[0]
    acc = gltf.accessors[prim.attributes.POSITION]
    view = gltf.bufferViews[acc.bufferView]
    stride = view.byteStride or 12
    raw = np.frombuffer(blob, np.uint8, count=(acc.count - 1) * stride + 12,
                        offset=(view.byteOffset or 0) + (acc.byteOffset or 0))
    local = np.lib.stride_tricks.as_strided(raw, (acc.count, 12), (stride, 1)).copy().view(np.float32)
    expected = local @ matrix[:3, :3].T + matrix[:3, 3]
    assert np.allclose(load_avatar(CORPUS / "Box/glTF-Binary/Box.glb").primitives[0].positions, expected, atol=1e-6)


def test_skinned_fox_is_posed_at_rest_and_textured() -> None:
    avatar = load_avatar(CORPUS / "Fox/glTF-Binary/Fox.glb")
    prim = avatar.primitives[0]
    assert prim.texture is not None and prim.uvs is not None and prim.uvs.shape == (1728, 2)
    lo, hi = avatar.bounds()
    assert np.all(hi - lo > 10), "the fox is a ~100-unit model; a collapsed skin would shrink it"


def test_instancing_extension_is_reported_not_fatal() -> None:
    avatar = load_avatar(CORPUS / "SimpleInstancing/glTF-Binary/SimpleInstancing.glb")
    assert any("EXT_mesh_gpu_instancing" in w for w in avatar.warnings)


def test_morph_stress_names_unify_across_primitives_and_map_by_blendshape_map() -> None:
    path = CORPUS / "MorphStressTest/glTF-Binary/MorphStressTest.glb"
    avatar = load_avatar(path, blendshape_map={"Key 1": "jawOpen", "Key 2": "eyeBlinkLeft"})
    assert avatar.morph_names[:2] == ["jawOpen", "eyeBlinkLeft"]
    assert avatar.raw_names["jawOpen"] == ["Key 1"]
    assert [p.morph_slots.tolist() for p in avatar.primitives] == [list(range(8))] * 2
    evaluator = MorphEvaluator(avatar)
    by_canonical = [p.copy() for p, _ in evaluator.apply({"jawOpen": 1.0})]
    by_raw = [p.copy() for p, _ in evaluator.apply({"Key 1": 1.0})]
    for a, b in zip(by_canonical, by_raw, strict=True):
        assert np.array_equal(a, b)
