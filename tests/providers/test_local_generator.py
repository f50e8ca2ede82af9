"""The offline generator: real photos → GLB heads whose morph targets move the right landmarks.

Photos come from packages with a stated licence, used at test time (nothing copied into the repo):
``skimage.data.astronaut()`` (NASA, public domain) and ``skimage.data.camera()`` (CC0, Lav
Varshney), per ``design/local-provider.md`` §3. Vertex checks rely on the generator's contract that
the first 468 vertices of the mesh are MediaPipe's landmarks in order (Loop subdivision keeps old
vertices first), in the frame +x = the subject's left, +y up, +z towards the viewer.

The renders run in a subprocess on VTK's EGL window (no X, ``toolchain.md`` §4), so this test file
neither needs nor disturbs the Qt/Xvfb set-up of the GUI tests. The PNGs are kept under the pytest
tmp dir and copied to ``tests/artifacts/`` for a human look.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from avatar_studio.avatar.blendshapes import ARKIT_52, OVR_VISEMES
from avatar_studio.avatar.gltf_reader import load_avatar
from avatar_studio.avatar.model import Avatar
from avatar_studio.avatar.morph import MorphEvaluator
from avatar_studio.providers.base import ProviderError
from avatar_studio.providers.local import generate_avatar, generate_to_file
from avatar_studio.providers.local.landmarks import MIN_FACE_PX
from avatar_studio.providers.local.mesh import loop_operator, topology

skimage_data = pytest.importorskip("skimage.data")

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

# MediaPipe face-mesh landmarks used below.
CHIN, LOWER_LIP_OUTER, LOWER_LIP_INNER, UPPER_LIP_INNER, FOREHEAD, NOSE_TIP = 152, 17, 14, 13, 10, 1
MOUTH_LEFT, MOUTH_RIGHT = 291, 61
UPPER_LID_LEFT, UPPER_LID_RIGHT = 386, 159
RIGHT_EYE = (33, 133, 159, 145, 160, 144)
LEFT_EYE = (263, 362, 386, 374, 387, 373)
BROW_INNER = (55, 285)


def encode(array: np.ndarray, fmt: str = "JPEG", **params: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).convert("RGB").save(buf, format=fmt, **params)
    return buf.getvalue()


@pytest.fixture(scope="module")
def astronaut_jpeg() -> bytes:
    return encode(skimage_data.astronaut(), quality=92)


@pytest.fixture(scope="module")
def glb(astronaut_jpeg: bytes) -> bytes:
    return generate_avatar(astronaut_jpeg)


@pytest.fixture(scope="module")
def avatar(glb: bytes) -> Avatar:
    return load_avatar(glb)


def delta(avatar: Avatar, name: str) -> np.ndarray:
    prim = avatar.primitives[0]
    slot = list(prim.morph_slots).index(avatar.morph_index(name))
    return prim.morph_positions[slot]


# -- the file ------------------------------------------------------------------------------------


def test_glb_loads_with_the_52_arkit_targets_and_the_photo_texture(glb: bytes, avatar: Avatar) -> None:
    assert avatar.warnings == []
    assert avatar.morph_names == list(ARKIT_52)
    assert len(avatar.primitives) == 1
    prim = avatar.primitives[0]
    assert prim.texture is not None and prim.texture.mime_type == "image/jpeg"
    rgba = prim.texture.to_rgba()
    assert rgba.shape[0] == rgba.shape[1] and rgba.shape[0] & (rgba.shape[0] - 1) == 0  # power of two
    assert prim.uvs is not None and prim.uvs.min() >= 0.0 and prim.uvs.max() <= 1.0
    assert 2_500 < prim.vertex_count < 3_500
    assert np.allclose(np.linalg.norm(prim.normals, axis=1), 1.0, atol=1e-3)
    lo, hi = avatar.bounds()
    assert 0.12 < hi[0] - lo[0] < 0.2 and 0.17 < hi[1] - lo[1] < 0.3  # a head-sized head, in metres
    assert len(glb) < 1_500_000


def test_targets_are_sparse_accessors_and_names_sit_in_mesh_extras(glb: bytes) -> None:
    length = int.from_bytes(glb[12:16], "little")
    doc = json.loads(glb[20 : 20 + length])
    mesh = doc["meshes"][0]
    assert mesh["extras"]["targetNames"] == list(ARKIT_52)
    assert mesh["weights"] == [0.0] * 52
    for target in mesh["primitives"][0]["targets"]:
        accessor = doc["accessors"][target["POSITION"]]
        assert "sparse" in accessor and "bufferView" not in accessor and "byteOffset" not in accessor
        assert "min" in accessor and "max" in accessor


def test_every_target_but_tongue_out_moves_the_face(avatar: Avatar) -> None:
    for name in ARKIT_52:
        moved = np.abs(delta(avatar, name)).max()
        if name == "tongueOut":
            assert moved == 0.0
        else:
            assert moved > 5e-4, name  # at least half a millimetre somewhere


def test_subdivision_levels_and_the_basic_set(astronaut_jpeg: bytes) -> None:
    coarse = load_avatar(generate_avatar(astronaut_jpeg, subdivisions=0))
    assert 700 < coarse.vertex_count < 900
    basic = load_avatar(generate_avatar(astronaut_jpeg, blendshapes="basic", subdivisions=0))
    assert basic.morph_names == [f"viseme_{v}" for v in OVR_VISEMES] + ["eyeBlinkLeft", "eyeBlinkRight"]
    aa = basic.primitives[0].morph_positions[basic.morph_index("viseme_aa")]
    assert aa[CHIN, 1] < -0.005  # "aa" opens the jaw
    with pytest.raises(ValueError, match="subdivisions"):
        generate_avatar(astronaut_jpeg, subdivisions=3)
    with pytest.raises(ValueError, match="blendshapes"):
        generate_avatar(astronaut_jpeg, blendshapes="visemes")  # type: ignore[arg-type]


# -- what each target does -------------------------------------------------------------------------


def test_jaw_open_drops_chin_and_lower_lip_and_leaves_the_upper_face(avatar: Avatar) -> None:
    d = delta(avatar, "jawOpen")
    assert d[CHIN, 1] < -0.015 and d[CHIN, 2] < 0  # down and back, about 2 cm
    assert d[LOWER_LIP_OUTER, 1] < -0.01 and d[LOWER_LIP_INNER, 1] < -0.01
    assert np.abs(d[UPPER_LIP_INNER]).max() < 1e-4
    pos = avatar.primitives[0].positions
    above_nose = pos[:, 1] > pos[NOSE_TIP, 1] + 0.005
    assert np.abs(d[above_nose]).max() == 0.0


def test_mouth_close_with_jaw_open_brings_the_lips_together(avatar: Avatar) -> None:
    pos = avatar.primitives[0].positions
    gap_rest = pos[UPPER_LIP_INNER, 1] - pos[LOWER_LIP_INNER, 1]
    both = pos + delta(avatar, "jawOpen") + delta(avatar, "mouthClose")
    opened = pos + delta(avatar, "jawOpen")
    assert opened[UPPER_LIP_INNER, 1] - opened[LOWER_LIP_INNER, 1] > gap_rest + 0.01
    assert abs(both[UPPER_LIP_INNER, 1] - both[LOWER_LIP_INNER, 1]) < 0.002


def test_eye_blink_left_closes_only_the_left_eye(avatar: Avatar) -> None:
    d = delta(avatar, "eyeBlinkLeft")
    pos = avatar.primitives[0].positions
    assert pos[UPPER_LID_LEFT, 0] > 0  # the subject's left is +x
    assert d[UPPER_LID_LEFT, 1] < -0.004  # the upper lid comes down
    assert d[374, 1] >= 0  # the lower lid does not
    assert np.abs(d[list(RIGHT_EYE)]).max() == 0.0
    assert np.abs(d[pos[:, 0] < -0.005]).max() == 0.0  # nothing on the right half of the face
    right = delta(avatar, "eyeBlinkRight")
    assert right[UPPER_LID_RIGHT, 1] < -0.004 and np.abs(right[list(LEFT_EYE)]).max() == 0.0


def test_smiles_frowns_and_pucker_move_the_corners_the_right_way(avatar: Avatar) -> None:
    smile_l, smile_r = delta(avatar, "mouthSmileLeft"), delta(avatar, "mouthSmileRight")
    assert smile_l[MOUTH_LEFT, 0] > 0.003 and smile_l[MOUTH_LEFT, 1] > 0.003  # out (+x) and up
    assert np.abs(smile_l[MOUTH_RIGHT]).max() == 0.0
    assert smile_r[MOUTH_RIGHT, 0] < -0.003 and smile_r[MOUTH_RIGHT, 1] > 0.003
    frown = delta(avatar, "mouthFrownLeft")
    assert frown[MOUTH_LEFT, 1] < -0.003
    pucker, funnel = delta(avatar, "mouthPucker"), delta(avatar, "mouthFunnel")
    assert pucker[MOUTH_LEFT, 0] < 0 < pucker[MOUTH_RIGHT, 0]  # corners come together
    assert pucker[LOWER_LIP_OUTER, 2] > 0.004 and funnel[LOWER_LIP_OUTER, 2] > 0.003  # lips forward
    assert delta(avatar, "mouthRollLower")[LOWER_LIP_OUTER, 2] < -0.002
    assert delta(avatar, "mouthRollUpper")[0, 2] < -0.002  # landmark 0: upper lip, outer midpoint
    assert delta(avatar, "mouthLeft")[UPPER_LIP_INNER, 0] > 0.003


def test_brows_and_gaze(avatar: Avatar) -> None:
    inner = delta(avatar, "browInnerUp")
    assert all(inner[i, 1] > 0.001 for i in BROW_INNER)
    assert delta(avatar, "browDownLeft")[285, 1] < -0.001
    assert np.abs(delta(avatar, "browDownLeft")[55]).max() == 0.0
    look = delta(avatar, "eyeLookOutLeft")
    assert np.count_nonzero(np.abs(look).max(axis=1)) >= 1
    assert look[:, 0].max() > 0.001  # the left iris slides out, towards +x


# -- photos ----------------------------------------------------------------------------------------


def test_exif_orientation_is_applied(astronaut_jpeg: bytes, avatar: Avatar) -> None:
    """A photo stored sideways with EXIF orientation 6 gives the same texture as the upright one."""
    upright = Image.open(io.BytesIO(astronaut_jpeg))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    buf = io.BytesIO()
    upright.rotate(90, expand=True).save(buf, format="JPEG", quality=92, exif=exif.tobytes())
    sideways = load_avatar(generate_avatar(buf.getvalue()))
    a = avatar.primitives[0].texture.to_rgba().astype(np.float32)  # type: ignore[union-attr]
    b = sideways.primitives[0].texture.to_rgba().astype(np.float32)  # type: ignore[union-attr]
    assert a.shape == b.shape
    assert np.abs(a - b).mean() < 8.0  # re-encoding noise only; a sideways texture differs by ~50


def test_a_second_real_photo_works() -> None:
    """skimage's camera(): grey, three-quarter view, a face of about 88 px: near the limits."""
    avatar = load_avatar(generate_avatar(encode(skimage_data.camera())))
    assert avatar.morph_names == list(ARKIT_52)
    assert delta(avatar, "jawOpen")[CHIN, 1] < -0.01


def test_grace_hopper_from_matplotlib_works() -> None:
    cbook = pytest.importorskip("matplotlib.cbook")
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    avatar = load_avatar(generate_avatar(Path(path).read_bytes()))
    assert avatar.morph_names == list(ARKIT_52)
    assert delta(avatar, "eyeBlinkRight")[UPPER_LID_RIGHT, 1] < -0.002


def test_png_input_and_generate_to_file(tmp_path: Path) -> None:
    photo = tmp_path / "selfie.png"
    photo.write_bytes(encode(skimage_data.astronaut(), "PNG"))
    out = tmp_path / "head.glb"
    size = generate_to_file(photo, out, subdivisions=0)
    assert out.stat().st_size == size
    assert load_avatar(out).morph_names == list(ARKIT_52)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_no_face_is_refused_clearly() -> None:
    with pytest.raises(ProviderError, match="no face was found") as info:
        generate_avatar(encode(skimage_data.coffee()))
    assert not info.value.transient
    gradient = np.tile(np.linspace(0, 255, 400, dtype=np.uint8), (300, 1))
    with pytest.raises(ProviderError, match="no face was found"):
        generate_avatar(encode(np.stack([gradient] * 3, axis=-1), "PNG"))


def test_two_faces_are_refused_with_the_count() -> None:
    head = skimage_data.astronaut()[30:290, 110:340]  # the astronaut's head and shoulders
    pair = np.concatenate([head, head], axis=1)
    with pytest.raises(ProviderError, match="shows 2 faces") as info:
        generate_avatar(encode(pair))
    assert not info.value.transient


def test_a_tiny_face_is_refused_with_the_minimum() -> None:
    small = np.asarray(Image.fromarray(skimage_data.astronaut()).resize((200, 200), Image.Resampling.LANCZOS))
    with pytest.raises(ProviderError, match=rf"too small \(\d+ pixels wide\).*at least {MIN_FACE_PX} pixels"):
        generate_avatar(encode(small))


def test_not_an_image_is_refused() -> None:
    with pytest.raises(ProviderError, match="not a JPEG or PNG image"):
        generate_avatar(b"definitely not a photo")
    with pytest.raises(ProviderError, match="truncated or corrupt"):
        generate_avatar(encode(skimage_data.astronaut())[:2000])


# -- the subdivision operator ---------------------------------------------------------------------


def test_loop_operator_keeps_open_rims_in_place_and_rows_sum_to_one() -> None:
    """An open tube (two rims, the mouth-tube situation of §4.6 pitfall 1) keeps each rim in its plane.

    trimesh's rule pulls a rim vertex towards the *other* rim's vertices when they are neighbours;
    the operator must average only along boundary edges, so the rims stay at z = 0 and z = -0.02.
    """
    k = 8
    angle = np.linspace(0.0, 2 * np.pi, k, endpoint=False)
    ring = np.c_[np.cos(angle), np.sin(angle)] * 0.02
    verts = np.concatenate([np.c_[ring, np.zeros(k)], np.c_[ring, np.full(k, -0.02)]])
    a, b = np.arange(k), np.roll(np.arange(k), -1)
    tris = np.concatenate([np.c_[a, k + a, b], np.c_[b, k + a, k + b]])
    s, new = loop_operator(tris, len(verts))
    assert np.allclose(np.asarray(s.sum(axis=1)).ravel(), 1.0)
    out = s @ verts
    rim = np.isclose(out[:, 2], 0.0) | np.isclose(out[:, 2], -0.02)
    assert rim[: 2 * k].all()  # old rim vertices stay on their rim
    assert np.isclose(out[:, 2], -0.01).sum() == 2 * k  # rungs and diagonals: midway
    assert len(new) == 4 * len(tris)
    s_face, _ = loop_operator(topology().triangles, 468)
    assert np.allclose(np.asarray(s_face.sum(axis=1)).ravel(), 1.0)


# -- renders ----------------------------------------------------------------------------------------

RENDER = textwrap.dedent(
    """
    import json, os, sys
    os.environ["VTK_DEFAULT_OPENGL_WINDOW"] = "vtkEGLRenderWindow"
    import numpy as np
    import pyvista as pv
    from avatar_studio.avatar.gltf_reader import load_avatar
    from avatar_studio.avatar.morph import MorphEvaluator

    glb, out_dir, poses = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    avatar = load_avatar(glb)
    evaluator = MorphEvaluator(avatar)
    prim = avatar.primitives[0]
    texture = pv.Texture(np.ascontiguousarray(prim.texture.to_rgba()[:, :, :3]))
    faces = np.hstack([np.full((prim.triangle_count, 1), 3), prim.triangles]).ravel()
    for name, weights in poses.items():
        positions, normals = evaluator.apply(weights)[0]
        mesh = pv.PolyData(positions.copy(), faces)
        mesh.active_texture_coordinates = np.c_[prim.uvs[:, 0], 1.0 - prim.uvs[:, 1]]
        mesh.point_data["Normals"] = normals.copy()
        plotter = pv.Plotter(off_screen=True, window_size=(%(size)d, %(size)d))
        plotter.add_mesh(mesh, texture=texture, smooth_shading=True)
        plotter.camera_position = [(0.0, 0.0, %(distance)r), (0.0, 0.0, 0.0), (0.0, 1.0, 0.0)]
        plotter.camera.view_angle = %(view_angle)r
        plotter.screenshot(os.path.join(out_dir, name + ".png"))
        plotter.close()
    """
)
SIZE, DISTANCE, VIEW_ANGLE = 420, 0.55, 30.0


def project(points: np.ndarray) -> np.ndarray:
    """Pixel (column, row) of world points in the renders' pinhole camera (on +z, looking at the origin)."""
    focal = SIZE / 2 / np.tan(np.radians(VIEW_ANGLE / 2))
    depth = DISTANCE - points[:, 2]
    return np.c_[SIZE / 2 + focal * points[:, 0] / depth, SIZE / 2 - focal * points[:, 1] / depth]


def region_change(a: np.ndarray, b: np.ndarray, pixels: np.ndarray, pad: int = 6) -> float:
    """Mean absolute RGB difference inside the padded box around ``pixels``."""
    (c0, r0), (c1, r1) = pixels.min(0).astype(int) - pad, pixels.max(0).astype(int) + pad
    return float(np.abs(a[r0:r1, c0:c1].astype(np.float32) - b[r0:r1, c0:c1].astype(np.float32)).mean())


def test_offscreen_renders_differ_where_the_targets_act(glb: bytes, avatar: Avatar, tmp_path: Path) -> None:
    path = tmp_path / "astronaut.glb"
    path.write_bytes(glb)
    poses = {"neutral": {}, "jawOpen": {"jawOpen": 1.0}, "eyeBlinkLeft": {"eyeBlinkLeft": 1.0}}
    script = RENDER % {"size": SIZE, "distance": DISTANCE, "view_angle": VIEW_ANGLE}
    env = {k: v for k, v in os.environ.items() if k != "DISPLAY"}
    result = subprocess.run(
        [sys.executable, "-c", script, str(path), str(tmp_path), json.dumps(poses)],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    ARTIFACTS.mkdir(exist_ok=True)
    images = {}
    for name in poses:
        png = tmp_path / f"{name}.png"
        shutil.copy(png, ARTIFACTS / f"local_astronaut_{name}.png")
        images[name] = np.asarray(Image.open(png).convert("RGB"))
    neutral = images["neutral"]
    assert (neutral.sum(axis=2) < 760).mean() > 0.15  # the head fills a good part of the frame

    pos = MorphEvaluator(avatar).apply(None)[0][0]
    mouth = project(pos[[61, 291, 0, 17, 14, 13]])
    left_eye, right_eye = project(pos[list(LEFT_EYE)]), project(pos[list(RIGHT_EYE)])
    assert left_eye[:, 0].mean() > SIZE / 2 > right_eye[:, 0].mean()  # the subject's left is on screen right

    jaw, blink = images["jawOpen"], images["eyeBlinkLeft"]
    assert region_change(neutral, jaw, mouth) > 15.0
    assert region_change(neutral, jaw, left_eye) < 1.0 and region_change(neutral, jaw, right_eye) < 1.0
    assert region_change(neutral, blink, left_eye) > 8.0
    assert region_change(neutral, blink, right_eye) < 1.0
    assert region_change(neutral, blink, mouth) < 1.0
