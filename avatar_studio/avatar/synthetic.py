"""Deterministic synthetic ARKit heads as GLB bytes, for tests and benchmarks.

Why synthetic: provider avatars are licensed and too few to cover the axes that matter for the
loader and the morph evaluator (vertex count, sparse vs dense targets, raw vs canonical ARKit names,
one morph name shared by two meshes). A generated head covers them all, byte-identical on every run
for a given set of arguments, and in well under a second at 30k vertices.

The head is an ellipsoid UV sphere in glTF's frame (+Y up, face towards +Z, the character's left on
+X), placed at eye height by its node translation so loaders must apply node transforms. Each of the
52 ARKit targets is one or two smooth bumps (``(1 - (d/r)²)²`` falloff) around the feature it names:
``jawOpen`` drops the chin, ``eyeBlinkLeft`` closes the lid over the +X eye, and so on. Because the
bumps have compact support, each target moves only a small fraction of the vertices, which is what
makes sparse accessors worthwhile, as with real Blender/ARKit exports.
"""

from __future__ import annotations

import io
import math

import numpy as np
import pygltflib

from avatar_studio.avatar.blendshapes import ARKIT_52
from avatar_studio.avatar.export import GlbBuilder
from avatar_studio.avatar.model import Texture

HEAD_RADII = (0.075, 0.105, 0.09)  # metres: half width (x), half height (y), half depth (z)
HEAD_TRANSLATION = (0.0, 1.55, 0.0)  # node translation: where a standing adult's head sits
_MORPH_NAME_STYLES = ("arkit", "arkit_raw")
_RAW_KEEPS_SIDE_WORD = ("jaw", "mouth")  # ARKit raw: jawLeft/mouthLeft keep the word, the rest use _L/_R

# Bumps for the side-independent targets and for the *Left* member of each Left/Right pair; Right is
# the mirror image (azimuth and x displacement negated). Each bump: (elevation°, azimuth° towards +X,
# radius m, displacement m).
_Bump = tuple[float, float, float, tuple[float, float, float]]
_LEFT_BUMPS: dict[str, list[_Bump]] = {
    "eyeBlink": [(15, 30, 0.020, (0.0, -0.008, 0.001))],
    "eyeLookDown": [(12, 30, 0.015, (0.0, -0.003, 0.0))],
    "eyeLookIn": [(12, 30, 0.015, (-0.003, 0.0, 0.0))],
    "eyeLookOut": [(12, 30, 0.015, (0.003, 0.0, 0.0))],
    "eyeLookUp": [(12, 30, 0.015, (0.0, 0.003, 0.0))],
    "eyeSquint": [(8, 30, 0.020, (0.0, 0.003, 0.001))],
    "eyeWide": [(16, 30, 0.020, (0.0, 0.004, 0.001))],
    "mouthSmile": [(-28, 20, 0.025, (0.004, 0.006, -0.002))],
    "mouthFrown": [(-30, 20, 0.025, (0.001, -0.005, 0.0))],
    "mouthDimple": [(-28, 24, 0.020, (0.002, 0.0, -0.003))],
    "mouthStretch": [(-30, 22, 0.025, (0.006, -0.002, -0.001))],
    "mouthPress": [(-30, 8, 0.018, (0.0, 0.001, -0.002))],
    "mouthLowerDown": [(-34, 8, 0.018, (0.0, -0.005, 0.0))],
    "mouthUpperUp": [(-26, 8, 0.018, (0.0, 0.005, 0.0))],
    "browDown": [(25, 28, 0.030, (0.0, -0.005, 0.001))],
    "browOuterUp": [(26, 42, 0.025, (0.0, 0.006, 0.0))],
    "cheekSquint": [(0, 40, 0.025, (0.0, 0.004, 0.002))],
    "noseSneer": [(6, 10, 0.015, (0.0, 0.004, 0.002))],
}
_CENTRE_BUMPS: dict[str, list[_Bump]] = {
    "jawForward": [(-50, 0, 0.055, (0.0, 0.0, 0.008))],
    "jawLeft": [(-50, 0, 0.055, (0.008, 0.0, 0.0))],
    "jawRight": [(-50, 0, 0.055, (-0.008, 0.0, 0.0))],
    "jawOpen": [(-48, 0, 0.055, (0.0, -0.020, -0.004))],
    "mouthClose": [(-32, 0, 0.025, (0.0, 0.004, 0.0))],
    "mouthFunnel": [(-30, 0, 0.025, (0.0, 0.0, 0.008))],
    "mouthPucker": [(-30, 0, 0.020, (0.0, 0.0, 0.010))],
    "mouthLeft": [(-30, 0, 0.030, (0.006, 0.0, 0.0))],
    "mouthRight": [(-30, 0, 0.030, (-0.006, 0.0, 0.0))],
    "mouthRollLower": [(-34, 0, 0.020, (0.0, 0.002, -0.004))],
    "mouthRollUpper": [(-26, 0, 0.020, (0.0, -0.002, -0.004))],
    "mouthShrugLower": [(-36, 0, 0.025, (0.0, 0.004, 0.002))],
    "mouthShrugUpper": [(-25, 0, 0.020, (0.0, 0.003, 0.001))],
    "browInnerUp": [(26, 0, 0.030, (0.0, 0.006, 0.0))],
    "cheekPuff": [(-15, 45, 0.035, (0.008, 0.0, 0.004)), (-15, -45, 0.035, (-0.008, 0.0, 0.004))],
    "tongueOut": [(-31, 0, 0.020, (0.0, -0.002, 0.015))],
}
_TEETH_JAW_OPEN = (0.0, -0.015, -0.003)  # rigid drop of the lower-teeth box with jawOpen


def arkit_raw_name(name: str) -> str:
    """ARKit's raw spelling (``eyeBlink_L``) of a canonical name (``eyeBlinkLeft``)."""
    for side, tag in (("Left", "_L"), ("Right", "_R")):
        stem = name.removesuffix(side)
        if stem != name and stem not in _RAW_KEEPS_SIDE_WORD:
            return stem + tag
    return name


def _bumps_for(name: str) -> list[_Bump]:
    if name in _CENTRE_BUMPS:
        return _CENTRE_BUMPS[name]
    if name.endswith("Left"):
        return _LEFT_BUMPS[name.removesuffix("Left")]
    if name.endswith("Right"):
        return [(el, -az, r, (-d[0], d[1], d[2])) for el, az, r, d in _LEFT_BUMPS[name.removesuffix("Right")]]
    raise KeyError(f"no synthetic region for ARKit target {name!r}")


def _grid_size(vertex_target: int) -> int:
    """Rows R of a (R+1) x (2R+1) latitude/longitude grid whose vertex count is closest to the target."""
    r = (-3 + math.sqrt(max(9 - 8 * (1 - vertex_target), 0))) / 4
    candidates = [max(2, math.floor(r)), max(2, math.ceil(r))]
    return min(candidates, key=lambda k: abs((k + 1) * (2 * k + 1) - vertex_target))


def _surface(theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    a, b, c = HEAD_RADII
    s = np.sin(theta)
    return np.stack([a * s * np.sin(phi), b * np.cos(theta), c * s * np.cos(phi)], axis=-1)


def _grid_normals(grid: np.ndarray) -> np.ndarray:
    """Unit normals of an (R+1, C+1, 3) lat/long grid from central differences.

    Why finite differences instead of the analytic ellipsoid normal: target normal deltas are
    "normals of the bumped surface minus normals of the rest surface"; computing both the same way
    makes the delta exactly zero wherever the bump did not reach, so sparse NORMAL targets stay sparse.
    Column C duplicates column 0 (texture seam) and wraps around; the pole rows get the pole normal.
    """
    ring = grid[:, :-1]
    d_phi = np.roll(ring, -1, axis=1) - np.roll(ring, 1, axis=1)
    d_theta = np.empty_like(ring)
    d_theta[1:-1] = ring[2:] - ring[:-2]
    d_theta[0] = ring[1] - ring[0]
    d_theta[-1] = ring[-1] - ring[-2]
    n = np.cross(d_theta, d_phi)
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-20)
    n[0] = (0.0, 1.0, 0.0)
    n[-1] = (0.0, -1.0, 0.0)
    return np.concatenate([n, n[:, :1]], axis=1)


def _head_mesh(rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Grid positions (R+1, C+1, 3), UVs and CCW-outward triangles of the kept vertices, the keep mask.

    Per-vertex quantities are computed on the full grid (neighbours are grid neighbours) and then
    flattened and filtered with the mask.
    """
    cols = 2 * rows
    theta = np.linspace(0.0, math.pi, rows + 1)
    phi = np.linspace(-math.pi, math.pi, cols + 1)  # seam at the back of the head, face at u = 0.5
    tt, pp = np.meshgrid(theta, phi, indexing="ij")
    grid = _surface(tt, pp)
    uv = np.stack(np.meshgrid(np.arange(cols + 1) / cols, np.arange(rows + 1) / rows, indexing="xy"), -1)
    i, j = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    v0 = i * (cols + 1) + j
    v1, v2 = v0 + 1, v0 + cols + 1
    v3 = v2 + 1
    upper = np.stack([v0, v2, v1], -1)  # degenerate in the top row: v0 and v1 are both the pole
    lower = np.stack([v1, v2, v3], -1)  # degenerate in the bottom row: v2 and v3 are both the pole
    tris = np.concatenate([upper[1:].reshape(-1, 3), lower[:-1].reshape(-1, 3)])
    # One copy of each pole is left unreferenced by the pole fans; drop it, as an exporter would.
    used = np.zeros(grid.shape[0] * grid.shape[1], bool)
    used[tris] = True
    remap = np.cumsum(used) - 1
    return grid, uv.reshape(-1, 2)[used].astype(np.float32), remap[tris].astype(np.uint32), used


def _target_field(grid: np.ndarray, name: str, rng: np.random.Generator) -> np.ndarray:
    """Displacement (R+1, C+1, 3) of one target: its bumps summed, jittered per seed."""
    field = np.zeros_like(grid)
    for el, az, radius, disp in _bumps_for(name):
        el_j = el + rng.uniform(-1.5, 1.5)
        az_j = az + rng.uniform(-1.5, 1.5)
        scale = 1.0 + rng.uniform(-0.1, 0.1)
        centre = _surface(np.radians(90.0 - el_j), np.radians(az_j))
        s2 = np.sum((grid - centre) ** 2, axis=-1) / (radius * radius)
        falloff = np.where(s2 < 1.0, (1.0 - s2) ** 2, 0.0)
        field += falloff[..., None] * (np.asarray(disp) * scale)
    return field


def _texture_png(size: int = 256) -> bytes:
    """A gradient + checker PNG with marks where the eyes and mouth are, so a flipped U or V shows."""
    from PIL import Image, ImageDraw

    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    checker = ((np.floor(x * 16) + np.floor(y * 16)) % 2) * 0.12
    rgb = np.stack([0.75 + 0.2 * x - checker, 0.55 + 0.15 * (1 - y) - checker, 0.45 + 0.1 * y - checker], -1)
    img = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)

    def mark(el: float, az: float, rx: float, ry: float, colour: tuple[int, int, int]) -> None:
        u, v = (0.5 + az / 360.0) * size, (90.0 - el) / 180.0 * size
        draw.ellipse([u - rx, v - ry, u + rx, v + ry], fill=colour)

    mark(12, 30, 7, 4, (30, 90, 200))  # left eye (+X): blue
    mark(12, -30, 7, 4, (40, 160, 60))  # right eye (-X): green, so a mirrored U is visible
    mark(-30, 0, 12, 3, (170, 30, 40))  # mouth
    draw.rectangle([0, 0, size - 1, 3], fill=(250, 250, 250))  # top of the head (v = 0)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _teeth_box() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """24-vertex box (flat-shaded faces) behind the lower lip, in the head node's frame."""
    centre = _surface(np.radians(90.0 + 34.0), 0.0) + np.array([0.0, 0.0, -0.015])
    half = np.array([0.02, 0.006, 0.008])
    positions, normals, tris = [], [], []
    for axis in range(3):
        for sign in (1.0, -1.0):
            n = np.zeros(3)
            n[axis] = sign
            u_ax, v_ax = [a for a in range(3) if a != axis]
            corners = []
            for cu, cv in ((-1, -1), (1, -1), (1, 1), (-1, 1)):
                p = np.zeros(3)
                p[axis], p[u_ax], p[v_ax] = sign, cu, cv
                corners.append(centre + p * half)
            base = len(positions)
            face = [base, base + 1, base + 2, base + 3]
            # keep CCW seen from outside: flip when (u x v) points against the outward normal
            e_u, e_v = np.eye(3)[u_ax], np.eye(3)[v_ax]
            if np.dot(np.cross(e_u, e_v), n) < 0:
                face = face[::-1]
            positions.extend(corners)
            normals.extend([n] * 4)
            tris.extend([(face[0], face[1], face[2]), (face[0], face[2], face[3])])
    return (
        np.asarray(positions, np.float32),
        np.asarray(normals, np.float32),
        np.asarray(tris, np.uint32),
    )


def make_arkit_head_glb(
    vertex_target: int = 30_000,
    *,
    sparse: bool = True,
    normals: bool = True,
    texture: bool = True,
    name_style: str = "arkit",
    seed: int = 0,
    split_teeth: bool = False,
) -> bytes:
    """A synthetic head GLB with the 52 ARKit morph targets.

    ``vertex_target`` is met within a few percent (the lat/long grid is quantised). ``sparse`` stores
    target deltas as glTF sparse accessors (only the moved vertices) instead of dense arrays;
    ``normals`` adds NORMAL deltas to every head target (the base NORMAL attribute is always there);
    ``name_style`` ``"arkit"`` writes canonical names (``eyeBlinkLeft``), ``"arkit_raw"`` ARKit's raw
    ones (``eyeBlink_L``); ``seed`` jitters each bump's centre and strength deterministically;
    ``split_teeth`` adds a second mesh (lower teeth) with a single ``jawOpen`` target, so one weight
    must drive two meshes.
    """
    if name_style not in _MORPH_NAME_STYLES:
        raise ValueError(f"name_style must be one of {_MORPH_NAME_STYLES}, not {name_style!r}")
    if vertex_target < 15:
        raise ValueError(f"vertex_target must be at least 15, not {vertex_target}")
    rows = _grid_size(vertex_target)
    grid, uvs, tris, used = _head_mesh(rows)
    rest_normals = _grid_normals(grid)
    rng = np.random.default_rng(seed)
    spell = arkit_raw_name if name_style == "arkit_raw" else (lambda n: n)

    builder = GlbBuilder()
    gltf = builder.gltf
    positions = grid.reshape(-1, 3)[used].astype(np.float32)
    attributes = pygltflib.Attributes(
        POSITION=builder.add_accessor(positions, target=pygltflib.ARRAY_BUFFER, with_bounds=True),
        NORMAL=builder.add_accessor(
            rest_normals.reshape(-1, 3)[used].astype(np.float32), target=pygltflib.ARRAY_BUFFER
        ),
        TEXCOORD_0=builder.add_accessor(uvs, target=pygltflib.ARRAY_BUFFER),
    )
    indices = builder.add_accessor(tris.reshape(-1), target=pygltflib.ELEMENT_ARRAY_BUFFER)

    targets = []
    for name in ARKIT_52:
        field = _target_field(grid, name, rng)
        d_pos = field.reshape(-1, 3)[used].astype(np.float32)
        target = {"POSITION": _delta_accessor(builder, d_pos, sparse, with_bounds=True)}
        if normals:
            d_nrm = (_grid_normals(grid + field) - rest_normals).reshape(-1, 3)[used].astype(np.float32)
            target["NORMAL"] = _delta_accessor(builder, d_nrm, sparse, with_bounds=False)
        targets.append(target)

    pbr = pygltflib.PbrMetallicRoughness(baseColorFactor=[1.0, 1.0, 1.0, 1.0], metallicFactor=0.0, roughnessFactor=0.8)
    if texture:
        tex = builder.add_texture(Texture(_texture_png(), "image/png", "head_basecolor"))
        pbr.baseColorTexture = pygltflib.TextureInfo(index=tex)
    gltf.materials.append(pygltflib.Material(name="skin", pbrMetallicRoughness=pbr))
    gltf.meshes.append(
        pygltflib.Mesh(
            name="head",
            primitives=[
                pygltflib.Primitive(
                    attributes=attributes, indices=indices, material=0, mode=pygltflib.TRIANGLES, targets=targets
                )
            ],
            weights=[0.0] * len(ARKIT_52),
            extras={"targetNames": [spell(n) for n in ARKIT_52]},
        )
    )
    gltf.nodes.append(pygltflib.Node(name="head", mesh=0, translation=list(HEAD_TRANSLATION)))
    if split_teeth:
        _add_teeth(builder, sparse, spell("jawOpen"))
    gltf.scenes = [pygltflib.Scene(nodes=list(range(len(gltf.nodes))))]
    gltf.scene = 0
    return builder.to_glb()


def _delta_accessor(builder: GlbBuilder, delta: np.ndarray, sparse: bool, *, with_bounds: bool) -> int:
    if not sparse:
        return builder.add_accessor(delta, target=pygltflib.ARRAY_BUFFER, with_bounds=with_bounds)
    moved = np.flatnonzero(np.any(delta != 0.0, axis=1))
    if moved.size == 0:  # sparse.count must be >= 1: store one explicit zero
        moved = np.zeros(1, np.intp)
    return builder.add_sparse_accessor(len(delta), moved, delta[moved], with_bounds=with_bounds)


def _add_teeth(builder: GlbBuilder, sparse: bool, jaw_open_name: str) -> None:
    gltf = builder.gltf
    positions, normals, tris = _teeth_box()
    delta = np.broadcast_to(np.asarray(_TEETH_JAW_OPEN, np.float32), positions.shape).copy()
    attributes = pygltflib.Attributes(
        POSITION=builder.add_accessor(positions, target=pygltflib.ARRAY_BUFFER, with_bounds=True),
        NORMAL=builder.add_accessor(normals, target=pygltflib.ARRAY_BUFFER),
    )
    indices = builder.add_accessor(tris.reshape(-1), target=pygltflib.ELEMENT_ARRAY_BUFFER)
    gltf.materials.append(
        pygltflib.Material(
            name="teeth",
            pbrMetallicRoughness=pygltflib.PbrMetallicRoughness(
                baseColorFactor=[0.95, 0.93, 0.88, 1.0], metallicFactor=0.0, roughnessFactor=0.4
            ),
        )
    )
    gltf.meshes.append(
        pygltflib.Mesh(
            name="teeth",
            primitives=[
                pygltflib.Primitive(
                    attributes=attributes,
                    indices=indices,
                    material=len(gltf.materials) - 1,
                    mode=pygltflib.TRIANGLES,
                    targets=[{"POSITION": _delta_accessor(builder, delta, sparse, with_bounds=True)}],
                )
            ],
            weights=[0.0],
            extras={"targetNames": [jaw_open_name]},
        )
    )
    gltf.nodes.append(pygltflib.Node(name="teeth", mesh=len(gltf.meshes) - 1, translation=list(HEAD_TRANSLATION)))


def make_sized_avatar_glb(target_bytes: int, *, seed: int = 0) -> bytes:
    """A synthetic head GLB whose size is close to ``target_bytes`` (within ~5% above ~1 MB).

    Why the dense/sparse switch: real avatars this size come two ways, a modest mesh with dense
    targets (typical of web avatar services) or a big mesh with sparse targets (typical of Blender).
    Dense is chosen when it still gives a head of at least 10k vertices, so a ~20 MB file is a dense
    ~15k head and a ~4 MB file a sparse ~47k head, and the load benchmark exercises both decoders.
    """
    if target_bytes <= 0:
        raise ValueError(f"target_bytes must be positive, not {target_bytes}")

    def size(n: int, sparse: bool) -> int:
        return len(make_arkit_head_glb(n, sparse=sparse, seed=seed))

    def fit(sparse: bool) -> int:
        small, large = 2_000, 6_000
        s_small, s_large = size(small, sparse), size(large, sparse)
        per_vertex = (s_large - s_small) / (large - small)
        return max(15, round(small + (target_bytes - s_small) / per_vertex))

    sparse = fit(sparse=False) < 10_000
    n = fit(sparse)
    data = make_arkit_head_glb(n, sparse=sparse, seed=seed)
    for _ in range(3):  # the fit is linear; the grid and sparse counts are not quite
        error = target_bytes / len(data)
        if abs(error - 1.0) < 0.02:
            break
        n = max(15, round(n * error))
        data = make_arkit_head_glb(n, sparse=sparse, seed=seed)
    return data
