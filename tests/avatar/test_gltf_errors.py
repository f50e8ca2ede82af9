"""Broken and unsupported files: a clear error naming what is wrong, never a crash or zero-fill."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gltf_builder import build_glb, pack_glb

from avatar_studio.avatar.errors import BrokenAsset, UnsupportedAsset
from avatar_studio.avatar.gltf_reader import load_avatar
from avatar_studio.avatar.morph import MorphEvaluator

CORPUS = Path(__file__).parents[1] / "data" / "gltf"
BOX = CORPUS / "Box/glTF-Binary/Box.glb"
TRI = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0]], np.float32)


def _split(glb: bytes) -> tuple[dict[str, Any], bytes]:
    (json_len,) = struct.unpack_from("<I", glb, 12)
    doc = json.loads(glb[20 : 20 + json_len])
    bin_start = 20 + json_len
    (bin_len,) = struct.unpack_from("<I", glb, bin_start)
    return doc, glb[bin_start + 8 : bin_start + 8 + bin_len]


def _edit(glb: bytes, change: Any) -> bytes:
    doc, blob = _split(glb)
    change(doc)
    return pack_glb(doc, blob)


def test_truncated_glb_says_truncated() -> None:
    data = BOX.read_bytes()
    with pytest.raises(BrokenAsset, match="truncated"):
        load_avatar(data[: len(data) // 2])


def test_wrong_chunk_length_names_the_chunk() -> None:
    data = bytearray(BOX.read_bytes())
    (json_len,) = struct.unpack_from("<I", data, 12)
    struct.pack_into("<I", data, 20 + json_len, 10**6)  # BIN chunk claims 1 MB
    with pytest.raises(BrokenAsset, match=r"chunk 1 claims 1000000 bytes"):
        load_avatar(bytes(data))


def test_bad_json_reports_line_and_column() -> None:
    data = bytearray(BOX.read_bytes())
    data[20] = ord("[")  # the JSON chunk no longer parses as an object
    data[21] = ord("}")
    with pytest.raises(BrokenAsset, match=r"not valid JSON.*line 1, column"):
        load_avatar(bytes(data))


def test_not_gltf_empty_missing_and_folder(tmp_path: Path) -> None:
    png = tmp_path / "selfie.glb"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    with pytest.raises(BrokenAsset, match="not a glTF file"):
        load_avatar(png)
    empty = tmp_path / "empty.glb"
    empty.write_bytes(b"")
    with pytest.raises(BrokenAsset, match="empty"):
        load_avatar(empty)
    with pytest.raises(BrokenAsset, match="cannot read"):
        load_avatar(tmp_path / "absent.glb")
    with pytest.raises(BrokenAsset, match="is a folder"):
        load_avatar(tmp_path)


def test_accessor_index_out_of_range_is_named() -> None:
    glb = _edit(build_glb([{"positions": TRI}]), lambda d: d["meshes"][0]["primitives"][0]["attributes"].update(
        POSITION=99))
    with pytest.raises(BrokenAsset, match=r"accessors\[99\] does not exist"):
        load_avatar(glb)


def test_buffer_view_past_the_buffer_is_named() -> None:
    glb = _edit(build_glb([{"positions": TRI}]), lambda d: d["bufferViews"][0].update(byteLength=4096))
    with pytest.raises(BrokenAsset, match=r"bufferViews\[0\].*runs past the end"):
        load_avatar(glb)


def test_accessor_reading_past_its_view_is_named() -> None:
    glb = _edit(build_glb([{"positions": TRI}]), lambda d: d["accessors"][0].update(count=30))
    with pytest.raises(BrokenAsset, match=r"accessors\[0\] reads bytes"):
        load_avatar(glb)


def test_index_beyond_the_vertices_is_named() -> None:
    with pytest.raises(BrokenAsset, match="refers to vertex 7, but there are only 3"):
        load_avatar(build_glb([{"positions": TRI, "indices": [0, 1, 7]}]))


def test_node_cycle_is_refused_not_followed_forever() -> None:
    nodes = [{"mesh": 0, "children": [1]}, {"children": [0], "_child": True}]
    with pytest.raises(BrokenAsset, match="appears twice"):
        load_avatar(build_glb([{"positions": TRI}], nodes=nodes))


def test_unknown_required_extension_is_refused_by_name() -> None:
    glb = build_glb([{"positions": TRI}], extra={"extensionsUsed": ["KHR_texture_basisu"],
                                                 "extensionsRequired": ["KHR_texture_basisu"]})
    with pytest.raises(UnsupportedAsset, match="KHR_texture_basisu") as info:
        load_avatar(glb)
    assert info.value.extension == "KHR_texture_basisu"


def test_non_finite_positions_are_refused() -> None:
    bad = TRI.copy()
    bad[1, 0] = np.nan
    with pytest.raises(BrokenAsset, match="NaN or infinite"):
        load_avatar(build_glb([{"positions": bad}]))


def test_giant_declared_count_is_refused_without_allocating() -> None:
    glb = build_glb([{"positions": TRI}])

    def giant(doc: dict[str, Any]) -> None:
        acc = doc["accessors"][0]
        del acc["bufferView"]
        acc["count"] = 2**40

    with pytest.raises(BrokenAsset, match="far more"):
        load_avatar(_edit(glb, giant))


def test_external_buffer_missing_or_unreachable(tmp_path: Path) -> None:
    src = json.loads((CORPUS / "SimpleSparseAccessor/glTF/SimpleSparseAccessor.gltf").read_text())
    gltf = tmp_path / "model.gltf"
    gltf.write_text(json.dumps(src))
    with pytest.raises(BrokenAsset, match=r"cannot read 'SimpleSparseAccessor.bin'"):
        load_avatar(gltf)
    with pytest.raises(BrokenAsset, match=r"open the \.gltf from its folder"):
        load_avatar(json.dumps(src).encode())
    src["buffers"][0]["uri"] = "/etc/passwd"
    gltf.write_text(json.dumps(src))
    with pytest.raises(BrokenAsset, match=r"only files next to the \.gltf"):
        load_avatar(gltf)


def test_sparse_index_out_of_range_is_named() -> None:
    path = CORPUS / "SimpleSparseAccessor/glTF-Embedded/SimpleSparseAccessor.gltf"
    doc = json.loads(path.read_text())
    sparse_acc = next(a for a in doc["accessors"] if "sparse" in a)
    indices = sparse_acc["sparse"]["indices"]
    view = doc["bufferViews"][indices["bufferView"]]
    buffer = bytearray(base64.b64decode(doc["buffers"][view["buffer"]]["uri"].split(",", 1)[1]))
    struct.pack_into("<H", buffer, view.get("byteOffset", 0) + indices.get("byteOffset", 0), 999)
    doc["buffers"][view["buffer"]]["uri"] = "data:application/octet-stream;base64," + base64.b64encode(
        buffer).decode()
    with pytest.raises(BrokenAsset, match=r"sparse\.indices refers to element 999"):
        load_avatar(json.dumps(doc).encode())


def test_unknown_chunks_after_bin_are_ignored() -> None:
    glb = bytearray(build_glb([{"positions": TRI}]))
    extra = struct.pack("<II", 4, 0x12345678) + b"junk"
    glb += extra
    struct.pack_into("<I", glb, 8, len(glb))
    assert load_avatar(bytes(glb)).vertex_count == 3


def test_one_name_drives_every_mesh_that_has_it() -> None:
    head = {"positions": TRI, "targets": [TRI * 0 + [0, -1, 0], TRI * 0 + [1, 0, 0]],
            "names": ["jawOpen", "eyeBlink_L"]}
    teeth = {"positions": TRI + 5, "targets": [TRI * 0 + [0, -0.5, 0]], "names": ["jawOpen"]}
    avatar = load_avatar(build_glb([head, teeth]))
    assert avatar.morph_names == ["jawOpen", "eyeBlinkLeft"]
    assert avatar.raw_names["eyeBlinkLeft"] == ["eyeBlink_L"]
    head_pos, teeth_pos = (p.copy() for p, _ in MorphEvaluator(avatar).apply({"jawOpen": 1.0}))
    assert np.allclose(head_pos, TRI + np.array([0, -1, 0]))
    assert np.allclose(teeth_pos, TRI + 5 + [0, -0.5, 0])


def test_names_fall_back_to_index_and_bad_names_are_reported() -> None:
    mesh = {"positions": TRI, "targets": [TRI * 0 + 1, TRI * 0 + 2], "names": ["only one"]}
    avatar = load_avatar(build_glb([mesh]))
    assert avatar.morph_names == ["target_0", "target_1"]
    assert any("targetNames does not match" in w for w in avatar.warnings)


def test_node_weights_override_mesh_weights() -> None:
    mesh = {"positions": TRI, "targets": [TRI * 0 + 1], "names": ["jawOpen"], "weights": [0.2]}
    avatar = load_avatar(build_glb([mesh], nodes=[{"mesh": 0, "weights": [0.7]}]))
    assert avatar.default_weights == pytest.approx({"jawOpen": 0.7})
    assert np.allclose(MorphEvaluator(avatar).apply()[0][0], TRI + 0.7)


def test_translated_node_moves_positions_but_not_deltas() -> None:
    mesh = {"positions": TRI, "targets": [TRI * 0 + [0, 1, 0]], "names": ["jawOpen"]}
    node = {"mesh": 0, "translation": [10, 0, 0], "scale": [2, 2, 2]}
    avatar = load_avatar(build_glb([mesh], nodes=[node]))
    assert np.allclose(avatar.primitives[0].positions, TRI * 2 + [10, 0, 0])
    assert np.allclose(MorphEvaluator(avatar).apply({"jawOpen": 1.0})[0][0], TRI * 2 + [10, 2, 0])


def test_two_spellings_of_one_shape_in_one_mesh_stay_separate_and_are_reported() -> None:
    mesh = {"positions": TRI, "targets": [TRI * 0 + 1, TRI * 0 + 2], "names": ["eyeBlinkLeft", "eyeBlink_L"]}
    avatar = load_avatar(build_glb([mesh]))
    assert avatar.morph_names == ["eyeBlinkLeft", "eyeBlink_L"]
    assert any("'eyeBlink_L' also look like 'eyeBlinkLeft'" in w for w in avatar.warnings)


def test_targets_moving_only_unused_vertices_evaluate() -> None:
    mesh = {"positions": np.vstack([TRI, [[5, 5, 5]]]), "indices": [0, 1, 2],
            "targets": [np.array([[0, 0, 0]] * 3 + [[1, 0, 0]], np.float32)], "names": ["jawOpen"]}
    positions, normals = MorphEvaluator(load_avatar(build_glb([mesh]))).apply({"jawOpen": 1.0})[0]
    assert positions[3].tolist() == [6, 5, 5]
    assert np.isfinite(normals).all()
