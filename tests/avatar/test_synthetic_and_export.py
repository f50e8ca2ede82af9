"""The synthetic ARKit head is valid, sparse where it says so, and posed exports round-trip in order."""

from __future__ import annotations

import io
import json
import os
import struct
from pathlib import Path

import numpy as np
import pygltflib
import pytest
import trimesh
from PIL import Image

from avatar_studio.avatar.blendshapes import ARKIT_52
from avatar_studio.avatar.export import SUPPORTED_SUFFIXES, export_posed, ply_offsets
from avatar_studio.avatar.gltf_reader import load_avatar
from avatar_studio.avatar.model import Avatar, Primitive, Texture
from avatar_studio.avatar.synthetic import (
    HEAD_TRANSLATION,
    arkit_raw_name,
    make_arkit_head_glb,
    make_sized_avatar_glb,
)

_DTYPES = {5126: np.float32, 5125: np.uint32, 5123: np.uint16, 5121: np.uint8}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}


def _chunks(glb: bytes) -> tuple[dict, bytes]:
    """Split a GLB by hand, asserting the container layout the spec requires."""
    magic, version, total = struct.unpack_from("<III", glb, 0)
    assert magic == 0x46546C67
    assert version == 2
    assert total == len(glb)
    json_len, json_type = struct.unpack_from("<II", glb, 12)
    assert json_type == 0x4E4F534A
    assert json_len % 4 == 0
    doc = json.loads(glb[20 : 20 + json_len])
    offset = 20 + json_len
    if offset == len(glb):
        return doc, b""
    bin_len, bin_type = struct.unpack_from("<II", glb, offset)
    assert bin_type == 0x004E4942
    assert bin_len % 4 == 0
    assert offset + 8 + bin_len == len(glb)
    return doc, glb[offset + 8 :]


def _read_accessor(doc: dict, blob: bytes, index: int) -> np.ndarray:
    acc = doc["accessors"][index]
    dtype, width = _DTYPES[acc["componentType"]], _WIDTH[acc["type"]]
    if "bufferView" in acc:
        view = doc["bufferViews"][acc["bufferView"]]
        start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
        out = np.frombuffer(blob, dtype, acc["count"] * width, start).reshape(acc["count"], width).copy()
    else:
        out = np.zeros((acc["count"], width), dtype)
    if "sparse" in acc:
        sp = acc["sparse"]
        iv, vv = doc["bufferViews"][sp["indices"]["bufferView"]], doc["bufferViews"][sp["values"]["bufferView"]]
        idx = np.frombuffer(
            blob,
            _DTYPES[sp["indices"]["componentType"]],
            sp["count"],
            iv.get("byteOffset", 0) + sp["indices"].get("byteOffset", 0),
        )
        assert np.all(np.diff(idx.astype(np.int64)) > 0), "sparse indices must be strictly increasing"
        out[idx] = np.frombuffer(
            blob, dtype, sp["count"] * width, vv.get("byteOffset", 0) + sp["values"].get("byteOffset", 0)
        ).reshape(-1, width)
    return out


@pytest.fixture(scope="module")
def head_sparse() -> bytes:
    return make_arkit_head_glb(30_000)


@pytest.fixture(scope="module")
def head_dense() -> bytes:
    return make_arkit_head_glb(30_000, sparse=False)


# ---------------------------------------------------------------- synthetic head


def test_head_has_the_52_arkit_targets(head_sparse: bytes) -> None:
    doc, _ = _chunks(head_sparse)
    mesh = doc["meshes"][0]
    assert mesh["extras"]["targetNames"] == list(ARKIT_52)
    assert len(mesh["primitives"][0]["targets"]) == 52
    assert mesh["weights"] == [0.0] * 52
    assert doc["nodes"][0]["translation"] == list(HEAD_TRANSLATION)


@pytest.mark.parametrize("target", [500, 11_000, 30_000])
def test_vertex_count_is_near_the_target(target: int) -> None:
    doc, _ = _chunks(make_arkit_head_glb(target, normals=False, texture=False))
    count = doc["accessors"][doc["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]["count"]
    assert abs(count - target) <= 0.05 * target


def test_glb_layout_is_valid(head_sparse: bytes) -> None:
    doc, blob = _chunks(head_sparse)
    assert doc["asset"]["version"] == "2.0"
    assert doc["buffers"] == [{"byteLength": len(blob)}]
    for view in doc["bufferViews"]:
        assert view["byteOffset"] % 4 == 0
        assert view["byteOffset"] + view["byteLength"] <= len(blob)
    prim = doc["meshes"][0]["primitives"][0]
    positions = _read_accessor(doc, blob, prim["attributes"]["POSITION"])
    acc = doc["accessors"][prim["attributes"]["POSITION"]]
    np.testing.assert_array_equal(acc["min"], positions.min(axis=0))
    np.testing.assert_array_equal(acc["max"], positions.max(axis=0))
    triangles = _read_accessor(doc, blob, prim["indices"])
    assert triangles.max() == len(positions) - 1
    assert np.unique(triangles).size == len(positions), "every vertex is referenced"
    image = doc["images"][0]
    assert image["mimeType"] == "image/png"
    view = doc["bufferViews"][image["bufferView"]]
    with Image.open(io.BytesIO(blob[view["byteOffset"] : view["byteOffset"] + view["byteLength"]])) as img:
        assert img.size == (256, 256)


def test_sparse_targets_are_really_sparse(head_sparse: bytes, head_dense: bytes) -> None:
    doc, blob = _chunks(head_sparse)
    dense_doc, dense_blob = _chunks(head_dense)
    n = doc["accessors"][doc["meshes"][0]["primitives"][0]["attributes"]["POSITION"]]["count"]
    targets = doc["meshes"][0]["primitives"][0]["targets"]
    dense_targets = dense_doc["meshes"][0]["primitives"][0]["targets"]
    for target, dense_target in zip(targets, dense_targets, strict=True):
        assert set(target) == {"POSITION", "NORMAL"}
        for attr, index in target.items():
            acc = doc["accessors"][index]
            assert "bufferView" not in acc
            assert "byteOffset" not in acc, "byteOffset without bufferView is invalid glTF"
            assert acc["sparse"]["indices"]["componentType"] == 5123  # uint16 suffices below 65536
            assert 0 < acc["sparse"]["count"] < 0.2 * n
            dense_acc = dense_doc["accessors"][dense_target[attr]]
            assert "sparse" not in dense_acc
            assert "bufferView" in dense_acc
            np.testing.assert_array_equal(
                _read_accessor(doc, blob, index), _read_accessor(dense_doc, dense_blob, dense_target[attr])
            )
        pos = doc["accessors"][target["POSITION"]]
        values = _read_accessor(doc, blob, target["POSITION"])
        np.testing.assert_array_equal(pos["min"], np.minimum(values.min(axis=0), 0))
        np.testing.assert_array_equal(pos["max"], np.maximum(values.max(axis=0), 0))
    assert len(head_sparse) < len(head_dense) / 5


def test_sparse_indices_switch_to_uint32_above_65535_vertices() -> None:
    doc, _ = _chunks(make_arkit_head_glb(70_000, normals=False, texture=False))
    target = doc["meshes"][0]["primitives"][0]["targets"][0]
    assert doc["accessors"][target["POSITION"]]["sparse"]["indices"]["componentType"] == 5125


def _target_deltas(glb: bytes, name: str) -> tuple[np.ndarray, np.ndarray]:
    doc, blob = _chunks(glb)
    prim = doc["meshes"][0]["primitives"][0]
    k = doc["meshes"][0]["extras"]["targetNames"].index(name)
    return _read_accessor(doc, blob, prim["attributes"]["POSITION"]), _read_accessor(
        doc, blob, prim["targets"][k]["POSITION"]
    )


def test_targets_move_the_region_they_name(head_sparse: bytes) -> None:
    rest, jaw = _target_deltas(head_sparse, "jawOpen")
    moved = np.any(jaw != 0, axis=1)
    assert rest[moved, 1].max() < 0, "jawOpen moves only the lower face"
    assert rest[moved, 2].min() > 0, "…on the front"
    assert jaw[moved, 1].mean() < 0, "…downwards"
    _, blink = _target_deltas(head_sparse, "eyeBlinkLeft")
    moved = np.any(blink != 0, axis=1)
    assert rest[moved, 0].min() > 0, "the character's left is +X"
    assert rest[moved, 1].min() > 0
    assert blink[moved, 1].mean() < 0
    _, blink_right = _target_deltas(head_sparse, "eyeBlinkRight")
    assert rest[np.any(blink_right != 0, axis=1), 0].max() < 0


def test_generation_is_deterministic_and_seeded() -> None:
    assert make_arkit_head_glb(2_000) == make_arkit_head_glb(2_000)
    assert make_arkit_head_glb(2_000, seed=1) != make_arkit_head_glb(2_000)


def test_raw_names_and_split_teeth() -> None:
    doc, _ = _chunks(make_arkit_head_glb(2_000, name_style="arkit_raw", split_teeth=True))
    names = doc["meshes"][0]["extras"]["targetNames"]
    assert names == [arkit_raw_name(n) for n in ARKIT_52]
    assert {"eyeBlink_L", "mouthSmile_R", "jawLeft", "mouthRight", "jawOpen"} <= set(names)
    teeth = doc["meshes"][1]
    assert teeth["extras"]["targetNames"] == ["jawOpen"]
    assert len(teeth["primitives"][0]["targets"]) == 1
    assert len(doc["scenes"][0]["nodes"]) == 2


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="name_style"):
        make_arkit_head_glb(1_000, name_style="vrm")
    with pytest.raises(ValueError, match="vertex_target"):
        make_arkit_head_glb(3)


def test_pygltflib_reads_the_head() -> None:
    gltf = pygltflib.GLTF2.load_from_bytes(make_arkit_head_glb(2_000, split_teeth=True))
    assert len(gltf.meshes) == 2
    assert gltf.meshes[0].extras["targetNames"][17] == "jawOpen"


@pytest.mark.slow
def test_sized_avatar_lands_near_the_requested_size() -> None:
    for target in (4_000_000, 20_000_000):
        size = len(make_sized_avatar_glb(target))
        assert abs(size - target) < 0.05 * target, (target, size)


# ---------------------------------------------------------------- export


def _grid_primitive(name: str, n: int, offset: float, texture: Texture | None) -> Primitive:
    """A small open grid with a deliberately non-spatial vertex order (so a reorder would show)."""
    u, v = np.meshgrid(np.linspace(0, 1, n), np.linspace(0, 1, n), indexing="xy")
    order = np.random.default_rng(n).permutation(n * n)
    positions = np.stack([u.ravel(), v.ravel(), 0.1 * np.sin(3 * u.ravel())], 1)[order].astype(np.float32)
    positions[:, 0] += offset
    inverse = np.argsort(order)
    quads = np.arange(n * n).reshape(n, n)[:-1, :-1].ravel()
    grid_tris = np.concatenate(
        [np.stack([quads, quads + 1, quads + n], 1), np.stack([quads + 1, quads + n + 1, quads + n], 1)]
    )
    normals = np.tile(np.array([0, 0, 1], np.float32), (n * n, 1))
    return Primitive(
        name=name,
        mesh_index=0,
        node_index=0,
        positions=positions,
        normals=normals,
        triangles=inverse[grid_tris].astype(np.uint32),
        uvs=np.stack([u.ravel(), v.ravel()], 1)[order].astype(np.float32) if texture is not None else None,
        texture=texture,
        base_color=(1.0, 1.0, 1.0, 1.0) if texture is not None else (0.9, 0.2, 0.1, 1.0),
    )


@pytest.fixture
def avatar_and_pose() -> tuple[Avatar, list[tuple[np.ndarray, np.ndarray]]]:
    buf = io.BytesIO()
    Image.new("RGB", (8, 4), (200, 30, 30)).save(buf, format="PNG")
    texture = Texture(buf.getvalue(), "image/png", "skin")
    prims = [_grid_primitive("face", 9, 0.0, texture), _grid_primitive("teeth", 4, 2.0, None)]
    avatar = Avatar(primitives=prims, morph_names=[], raw_names={}, default_weights={}, textures=[texture])
    rng = np.random.default_rng(7)
    posed = []
    for prim in prims:
        normals = prim.normals + rng.normal(0, 0.1, prim.normals.shape).astype(np.float32)
        posed.append((prim.positions + rng.normal(0, 0.01, prim.positions.shape).astype(np.float32), normals))
    return avatar, posed


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("suffix", [".glb", ".GLB"])
def test_glb_export_round_trips(tmp_path: Path, avatar_and_pose, suffix: str) -> None:
    avatar, posed = avatar_and_pose
    path = tmp_path / f"posed{suffix}"
    export_posed(avatar, posed, path)
    scene = trimesh.load(path, process=False)
    for prim, (positions, normals) in zip(avatar.primitives, posed, strict=True):
        mesh = scene.geometry[prim.name]
        np.testing.assert_array_equal(mesh.vertices, positions)
        np.testing.assert_array_equal(mesh.faces, prim.triangles)
        np.testing.assert_allclose(mesh.vertex_normals, _unit(normals), atol=1e-6)
    doc, blob = _chunks(path.read_bytes())
    # the encoded texture travels unchanged, and UVs keep the glTF convention
    view = doc["bufferViews"][doc["images"][0]["bufferView"]]
    assert blob[view["byteOffset"] : view["byteOffset"] + view["byteLength"]] == avatar.primitives[0].texture.data
    uv = _read_accessor(doc, blob, doc["meshes"][0]["primitives"][0]["attributes"]["TEXCOORD_0"])
    np.testing.assert_array_equal(uv, avatar.primitives[0].uvs)
    assert doc["materials"][1]["pbrMetallicRoughness"]["baseColorFactor"] == pytest.approx([0.9, 0.2, 0.1, 1.0])


def test_ply_export_concatenates_primitives_in_order(tmp_path: Path, avatar_and_pose) -> None:
    avatar, posed = avatar_and_pose
    path = tmp_path / "posed.ply"
    export_posed(avatar, posed, path)
    mesh = trimesh.load(path, process=False)
    offsets = ply_offsets(avatar)
    assert offsets == [0, avatar.primitives[0].vertex_count]
    np.testing.assert_array_equal(mesh.vertices, np.concatenate([p for p, _ in posed]))
    expected_faces = np.concatenate(
        [p.triangles.astype(np.int64) + o for p, o in zip(avatar.primitives, offsets, strict=True)]
    )
    np.testing.assert_array_equal(mesh.faces, expected_faces)
    np.testing.assert_allclose(mesh.vertex_normals, _unit(np.concatenate([n for _, n in posed])), atol=1e-6)


def test_obj_export_keeps_order_uvs_and_texture(tmp_path: Path, avatar_and_pose) -> None:
    avatar, posed = avatar_and_pose
    path = tmp_path / "posed.obj"
    export_posed(avatar, posed, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["posed.mtl", "posed.obj", "posed_0.png"]
    scene = trimesh.load(path, process=False, force="scene")
    for i, (prim, (positions, _)) in enumerate(zip(avatar.primitives, posed, strict=True)):
        mesh = scene.geometry[f"posed_{i}"]  # trimesh names OBJ parts by material
        np.testing.assert_allclose(mesh.vertices, positions, atol=1e-7)
        np.testing.assert_array_equal(mesh.faces, prim.triangles)
        if prim.uvs is not None:
            np.testing.assert_allclose(mesh.visual.uv[:, 1], 1.0 - prim.uvs[:, 1], atol=1e-7)  # OBJ is v-up
    with Image.open(tmp_path / "posed_0.png") as img:
        assert img.getpixel((0, 0))[:3] == (200, 30, 30)


def test_unknown_suffix_is_refused_without_writing(tmp_path: Path, avatar_and_pose) -> None:
    avatar, posed = avatar_and_pose
    with pytest.raises(ValueError, match=r"\.glb, \.ply, \.obj") as info:
        export_posed(avatar, posed, tmp_path / "posed.fbx")
    assert "'.fbx'" in str(info.value)
    assert SUPPORTED_SUFFIXES == (".glb", ".ply", ".obj")
    with pytest.raises(ValueError, match="unsupported"):
        export_posed(avatar, posed, tmp_path / "posed")
    assert list(tmp_path.iterdir()) == []


def test_mismatched_pose_is_refused(tmp_path: Path, avatar_and_pose) -> None:
    avatar, posed = avatar_and_pose
    with pytest.raises(ValueError, match="2 primitives"):
        export_posed(avatar, posed[:1], tmp_path / "posed.glb")
    with pytest.raises(ValueError, match="teeth"):
        export_posed(avatar, [posed[0], (posed[1][0][:-1], posed[1][1])], tmp_path / "posed.glb")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("suffix", SUPPORTED_SUFFIXES)
def test_failed_export_leaves_the_previous_file(tmp_path: Path, avatar_and_pose, monkeypatch, suffix: str) -> None:
    avatar, posed = avatar_and_pose
    path = tmp_path / f"posed{suffix}"
    path.write_bytes(b"previous export")

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        export_posed(avatar, posed, path)
    assert path.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name], "no temporary file is left behind"


def test_zero_normals_fall_back_to_rest(tmp_path: Path, avatar_and_pose) -> None:
    avatar, posed = avatar_and_pose
    zero = [(p, np.zeros_like(n)) for p, n in posed]
    path = tmp_path / "posed.glb"
    export_posed(avatar, zero, path)
    mesh = trimesh.load(path, process=False).geometry["face"]
    np.testing.assert_array_equal(mesh.vertex_normals, avatar.primitives[0].normals)


# ---------------------------------------------------------------- synthetic → loader → evaluator → export


@pytest.mark.parametrize("name_style", ["arkit", "arkit_raw"])
def test_posed_synthetic_head_round_trips(tmp_path: Path, name_style: str) -> None:
    from avatar_studio.avatar.morph import MorphEvaluator

    avatar = load_avatar(make_arkit_head_glb(11_000, name_style=name_style, split_teeth=True))
    assert len(avatar.morph_names) == 52
    assert set(avatar.morph_names) == set(ARKIT_52)
    evaluator = MorphEvaluator(avatar)
    posed = [(p.copy(), n.copy()) for p, n in evaluator.apply({"jawOpen": 1.0})]
    for suffix in (".glb", ".ply"):
        path = tmp_path / f"jaw{suffix}"
        export_posed(avatar, posed, path)
        loaded = trimesh.load(path, process=False)
        if suffix == ".glb":
            exported = [loaded.geometry[p.name].vertices for p in avatar.primitives]
        else:
            exported = np.split(loaded.vertices, ply_offsets(avatar)[1:])
        for prim, (positions, _), got in zip(avatar.primitives, posed, exported, strict=True):
            np.testing.assert_array_equal(got, positions)
            assert np.abs(got - prim.positions).max() > 1e-3, f"{prim.name} moved with jawOpen"


def test_glb_export_keeps_which_materials_are_double_sided(tmp_path: Path, avatar_and_pose) -> None:
    """The viewer culls back faces of single-sided materials, so a baked pose must keep the flag."""
    avatar, posed = avatar_and_pose
    avatar.primitives[1].double_sided = True
    path = tmp_path / "posed.glb"
    export_posed(avatar, posed, path)
    assert [prim.double_sided for prim in load_avatar(str(path)).primitives] == [False, True]


def test_reader_takes_double_sided_from_the_material() -> None:
    corpus = Path(__file__).parents[1] / "data" / "gltf"
    stress = load_avatar(str(corpus / "MorphStressTest" / "glTF-Binary" / "MorphStressTest.glb"))
    box = load_avatar(str(corpus / "Box" / "glTF-Binary" / "Box.glb"))
    assert stress.primitives and all(prim.double_sided for prim in stress.primitives)
    assert not any(prim.double_sided for prim in box.primitives)
