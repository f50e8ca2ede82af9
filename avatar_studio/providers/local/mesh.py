"""The textured head mesh built around the 468 landmarks, and Loop subdivision as a sparse operator.

Why this construction (``design/local-provider.md`` §4.1): MediaPipe's face-mesh triangulation is a
relief mask with four holes (face oval, mouth, two eyes). To become an animatable head it needs:

* **eye fills**: a fan around each iris centre, so the iris keeps its photo pixels and the fan
  centre can be moved for gaze and squashed under a blinking lid;
* a **mouth tube**: dark walls running back from the inner-lip loop, so an open jaw shows a cavity,
  not a hole through the head;
* **teeth cards**: two photo-textured strips just behind the lips that show the photo's own mouth
  interior at rest (the upper one fixed, the lower one carried by the jaw), so a smiling selfie keeps
  its teeth and an opening jaw parts them;
* a **back-of-head shell** swept from the face oval onto an ellipsoid, hair-coloured above ear level
  and skin-coloured below.

Every vertex that samples the photo has as UV the photo projection of its position, and the solid
parts (tube, shell) are separate vertex copies with UVs on solid swatches (a UV seam), so Loop
subdivision, an affine rule, keeps the photo registered (§4.6 pitfall 6).

Frame (glTF): metres, +y up, +z towards the viewer, +x towards the subject's left; origin between
the cheeks (landmarks 234/454), so the face sits in front of the origin like a real head.
"""

from __future__ import annotations

import io
import itertools
import json
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import scipy.sparse as sp
from PIL import Image

from avatar_studio.avatar.geometry import vertex_normals
from avatar_studio.providers.local.landmarks import FaceLandmarks
from avatar_studio.resources import resource_path

N_LANDMARKS = 468
IRIS_RIGHT = 468  # core vertex index of the subject's right iris centre (fan centre)
IRIS_LEFT = 469
N_CORE = 470
CHEEK_WIDTH_M = 0.14  # |P454 − P234| is scaled to this: an adult face, so sizes are in metres

# Landmarks the construction relies on (MediaPipe face-mesh numbering).
CHEEK_RIGHT, CHEEK_LEFT = 234, 454
FOREHEAD, CHIN, NOSE_TIP = 10, 152, 1
EYE_OUTER_RIGHT, EYE_INNER_RIGHT, EYE_UPPER_RIGHT, EYE_LOWER_RIGHT = 33, 133, 159, 145
EYE_OUTER_LEFT, EYE_INNER_LEFT, EYE_UPPER_LEFT, EYE_LOWER_LEFT = 263, 362, 386, 374
LIP_UPPER_INNER, LIP_LOWER_INNER = 13, 14
LIP_CORNER_INNER_RIGHT, LIP_CORNER_INNER_LEFT = 78, 308
MOUTH_CORNER_RIGHT, MOUTH_CORNER_LEFT = 61, 291

TEXTURE_SIZE = 512
TEXTURE_SIZE_LARGE = 1024  # when the face crop exceeds LARGE_CROP_PX, keep the detail
LARGE_CROP_PX = 640
SWATCH_ROWS = 32  # bottom strip of the atlas: mouth interior, hair, skin
CROP_MARGIN = 0.08
MOUTH_INTERIOR_RGB = (38, 16, 18)
SHELL_RINGS = 5
TUBE_DEPTH = 0.5  # × mouth width
CARD_DEPTH = 0.12  # × mouth width behind the lips
JPEG_QUALITY = 90


@dataclass(frozen=True)
class Topology:
    """The face-mesh triangles and the four boundary loops, each split where the rig needs it."""

    triangles: np.ndarray  # (852, 3) int, CCW seen from +z in the glTF frame
    oval: np.ndarray  # face-oval loop (boundary order)
    mouth: np.ndarray  # inner-lip loop
    upper_inner_lip: np.ndarray  # chain corner 78 → corner 308 through 13
    lower_inner_lip: np.ndarray  # chain corner 78 → corner 308 through 14
    outer_lip_upper: np.ndarray  # 61 … 291 through 0
    outer_lip_lower: np.ndarray  # 61 … 291 through 17
    eye_loops: dict[str, np.ndarray]  # "right"/"left" → boundary loop
    upper_lids: dict[str, np.ndarray]  # outer corner → inner corner (right) / inner → outer (left), via 159/386
    lower_lids: dict[str, np.ndarray]
    brows: dict[str, np.ndarray]


def _loops(triangles: np.ndarray) -> list[np.ndarray]:
    """Boundary loops in half-edge order (a→b for each boundary half-edge a→b of a triangle)."""
    half = np.concatenate([triangles[:, [0, 1]], triangles[:, [1, 2]], triangles[:, [2, 0]]])
    present = {(int(a), int(b)) for a, b in half}
    nxt = {int(a): int(b) for a, b in half if (int(b), int(a)) not in present}
    loops, seen = [], set()
    for start in nxt:
        if start in seen:
            continue
        loop = [start]
        seen.add(start)
        v = nxt[start]
        while v != start:
            loop.append(v)
            seen.add(v)
            v = nxt[v]
        loops.append(np.array(loop))
    return loops


def _chain(loop: np.ndarray, start: int, end: int, through: int) -> np.ndarray:
    """The part of a closed loop from ``start`` to ``end`` (inclusive) that contains ``through``.

    Why by membership and not by height: with closed lips MediaPipe's upper-inner point 13 can lie
    below the lower-inner point 14 (§4.6 pitfall 2), so "above the midline" misclassifies lip points.
    """
    seq = list(loop)
    i, j = seq.index(start), seq.index(end)
    forward = [seq[(i + k) % len(seq)] for k in range((j - i) % len(seq) + 1)]
    backward = [seq[(i - k) % len(seq)] for k in range((i - j) % len(seq) + 1)]
    return np.array(forward if through in forward else backward)


def _path(edges: list[list[int]]) -> np.ndarray:
    """Vertices of a connection list that forms one open or closed path, in order."""
    order = [edges[0][0]]
    for a, b in edges:
        if a == order[-1]:
            order.append(b)
    return np.array(list(dict.fromkeys(order)))


@cache
def topology() -> Topology:
    with resource_path("face_models/face_mesh_topology.json").open(encoding="utf-8") as fh:
        data = json.load(fh)
    triangles = np.asarray(data["triangles"], np.int64)
    loops = {frozenset(loop.tolist()): loop for loop in _loops(triangles)}

    def loop_with(v: int) -> np.ndarray:
        return next(loop for key, loop in loops.items() if v in key)

    lips = data["lips"]
    mouth = loop_with(LIP_UPPER_INNER)
    right_eye, left_eye = loop_with(EYE_OUTER_RIGHT), loop_with(EYE_OUTER_LEFT)
    return Topology(
        triangles=triangles,
        oval=loop_with(FOREHEAD),
        mouth=mouth,
        upper_inner_lip=_chain(mouth, LIP_CORNER_INNER_RIGHT, LIP_CORNER_INNER_LEFT, LIP_UPPER_INNER),
        lower_inner_lip=_chain(mouth, LIP_CORNER_INNER_RIGHT, LIP_CORNER_INNER_LEFT, LIP_LOWER_INNER),
        outer_lip_upper=_path(lips[10:20]),
        outer_lip_lower=_path(lips[0:10]),
        eye_loops={"right": right_eye, "left": left_eye},
        upper_lids={
            "right": _chain(right_eye, EYE_OUTER_RIGHT, EYE_INNER_RIGHT, EYE_UPPER_RIGHT),
            "left": _chain(left_eye, EYE_INNER_LEFT, EYE_OUTER_LEFT, EYE_UPPER_LEFT),
        },
        lower_lids={
            "right": _chain(right_eye, EYE_OUTER_RIGHT, EYE_INNER_RIGHT, EYE_LOWER_RIGHT),
            "left": _chain(left_eye, EYE_INNER_LEFT, EYE_OUTER_LEFT, EYE_LOWER_LEFT),
        },
        brows={
            "right": np.unique(np.asarray(data["right_eyebrow"]).ravel()),
            "left": np.unique(np.asarray(data["left_eyebrow"]).ravel()),
        },
    )


@dataclass(frozen=True)
class FaceFrame:
    """Affine map image pixels (x, y, z) → metric glTF frame: ``m = A @ p + t``."""

    matrix: np.ndarray  # (3, 3)
    offset: np.ndarray  # (3,)

    @classmethod
    def from_landmarks(cls, points: np.ndarray) -> FaceFrame:
        """Scale cheek-to-cheek to 0.14 m, flip to y up / z towards the viewer, level the eyes, upright."""
        flip = np.diag([1.0, -1.0, -1.0])
        p = points @ flip.T
        scale = CHEEK_WIDTH_M / float(np.linalg.norm(points[CHEEK_LEFT] - points[CHEEK_RIGHT]))
        x_axis = p[EYE_OUTER_LEFT] - p[EYE_OUTER_RIGHT]
        x_axis /= np.linalg.norm(x_axis)
        up = p[FOREHEAD] - p[CHIN]
        y_axis = up - (up @ x_axis) * x_axis
        y_axis /= np.linalg.norm(y_axis)
        z_axis = np.cross(x_axis, y_axis)
        rot = np.stack([x_axis, y_axis, z_axis])  # rows: new axes in the flipped image frame
        matrix = scale * rot @ flip
        origin = (points[CHEEK_LEFT] + points[CHEEK_RIGHT]) / 2
        return cls(matrix, -matrix @ origin)

    def to_metric(self, points: np.ndarray) -> np.ndarray:
        return points @ self.matrix.T + self.offset

    def to_image(self, metric: np.ndarray) -> np.ndarray:
        return (metric - self.offset) @ np.linalg.inv(self.matrix).T


@dataclass
class HeadMesh:
    """The unsubdivided head; ``core_map`` carries landmark-vertex deltas to every vertex.

    A morph delta of the whole mesh is ``core_map @ core_delta`` (core = 468 landmarks + 2 iris
    centres), except for ``jaw_rigid`` vertices (the lower teeth card), which move rigidly with the
    jaw targets and ignore the rest.
    """

    positions: np.ndarray  # (N, 3) float64, metres
    uvs: np.ndarray  # (N, 2) float64, glTF convention (v down) into ``texture``
    triangles: np.ndarray  # (M, 3) int64
    core: np.ndarray  # (470, 3) metric landmark positions + iris centres
    core_map: sp.csr_matrix  # (N, 470)
    jaw_rigid: np.ndarray  # indices of vertices that move rigidly with the jaw
    texture_jpeg: bytes = field(repr=False)
    texture_size: tuple[int, int] = (TEXTURE_SIZE, TEXTURE_SIZE)
    frame: FaceFrame | None = None


class _Builder:
    """Accumulates vertices (with UV and their core-delta stencil) and triangles."""

    def __init__(self) -> None:
        self.positions: list[np.ndarray] = []
        self.uvs: list[np.ndarray] = []
        self.triangles: list[np.ndarray] = []
        self.map_rows: list[np.ndarray] = []
        self.map_cols: list[np.ndarray] = []
        self.map_vals: list[np.ndarray] = []
        self.count = 0

    def add(
        self,
        positions: np.ndarray,
        uvs: np.ndarray,
        sources: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ) -> np.ndarray:
        """Append vertices; vertex i copies ``weights[i]`` × the delta of core vertex ``sources[i]``."""
        n = len(positions)
        idx = np.arange(self.count, self.count + n)
        self.positions.append(np.asarray(positions, np.float64).reshape(n, 3))
        self.uvs.append(np.broadcast_to(np.asarray(uvs, np.float64), (n, 2)))
        if sources is not None:
            src = np.broadcast_to(np.asarray(sources), (n, *np.shape(sources)[1:])).reshape(n, -1)
            w = (np.ones(src.shape) if weights is None else np.broadcast_to(weights, src.shape)) / src.shape[1]
            self.map_rows.append(np.repeat(idx, src.shape[1]))
            self.map_cols.append(src.ravel())
            self.map_vals.append(np.asarray(w, np.float64).ravel())
        self.count += n
        return idx

    def faces(self, tris: np.ndarray) -> None:
        self.triangles.append(np.asarray(tris, np.int64).reshape(-1, 3))


def _swatch_uv(index: int, atlas_h: int) -> np.ndarray:
    """Centre of solid swatch ``index`` (0 mouth, 1 hair, 2 skin) in the atlas's bottom strip."""
    return np.array([(index + 0.5) / 3, 1.0 - SWATCH_ROWS / 2 / atlas_h])


def _median_colour(photo: np.ndarray, points: np.ndarray, radius: float) -> np.ndarray:
    h, w = photo.shape[:2]
    samples = []
    for x, y in points:
        x0, x1 = int(max(0, x - radius)), int(min(w, x + radius + 1))
        y0, y1 = int(max(0, y - radius)), int(min(h, y + radius + 1))
        if x1 > x0 and y1 > y0:
            samples.append(photo[y0:y1, x0:x1].reshape(-1, 3))
    if not samples:
        return np.array([128, 128, 128], np.uint8)
    return np.median(np.concatenate(samples), axis=0).astype(np.uint8)


def _atlas(image: Image.Image, points: np.ndarray) -> tuple[bytes, tuple[int, int], np.ndarray, np.ndarray]:
    """The texture: the face crop (square, landmark box + 8 %) over a strip of three solid swatches.

    Returns JPEG bytes, the atlas size, and the affine map image px → atlas UV as (scale, offset)
    with ``uv = xy * scale + offset``. The crop may extend past the photo (filled with edge colour):
    a face at the photo's border still gets a square texture.
    """
    lo, hi = points[:, :2].min(0), points[:, :2].max(0)
    side = float(np.max(hi - lo)) * (1 + 2 * CROP_MARGIN)
    centre = (lo + hi) / 2
    x0, y0 = centre - side / 2
    size = TEXTURE_SIZE_LARGE if side > LARGE_CROP_PX else TEXTURE_SIZE
    photo_rows = size - SWATCH_ROWS
    crop = image.transform(
        (size, photo_rows),
        Image.Transform.EXTENT,
        (x0, y0, x0 + side, y0 + side),
        Image.Resampling.BICUBIC,
        fillcolor=tuple(int(c) for c in _median_colour(np.asarray(image), points[[CHEEK_LEFT, CHEEK_RIGHT], :2], 3)),
    )
    photo = np.asarray(image)
    diag = float(np.linalg.norm(hi - lo))
    forehead_dir = points[FOREHEAD, :2] - points[CHIN, :2]
    above = points[[FOREHEAD, 109, 338], :2] + 0.12 * forehead_dir
    hair = _median_colour(photo, above, max(2.0, 0.02 * diag))
    skin = _median_colour(photo, points[[50, 280, 9], :2], max(2.0, 0.015 * diag))
    atlas = Image.new("RGB", (size, size))
    atlas.paste(crop, (0, 0))
    strip = np.zeros((SWATCH_ROWS, size, 3), np.uint8)
    for i, colour in enumerate((np.array(MOUTH_INTERIOR_RGB, np.uint8), hair, skin)):
        strip[:, i * size // 3 : (i + 1) * size // 3] = colour
    atlas.paste(Image.fromarray(strip), (0, photo_rows))
    buf = io.BytesIO()
    atlas.save(buf, format="JPEG", quality=JPEG_QUALITY)
    scale = np.array([1.0 / side, photo_rows / size / side])
    offset = -np.array([x0, y0]) * scale
    return buf.getvalue(), (size, size), scale, offset


def _resample(chain: np.ndarray, count: int) -> np.ndarray:
    """``count`` points along a polyline (k, d), evenly spaced by arc length."""
    seg = np.linalg.norm(np.diff(chain, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    if s[-1] <= 0:
        return np.repeat(chain[:1], count, axis=0)
    t = np.linspace(0.0, s[-1], count)
    return np.stack([np.interp(t, s, chain[:, k]) for k in range(chain.shape[1])], axis=1)


def _strip(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    """Triangles of a quad strip between two index rows of equal length (top row above)."""
    a, b = top[:-1], top[1:]
    c, d = bottom[:-1], bottom[1:]
    return np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])


def _facing_viewer(tris: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """Flip a flat patch's triangles so its summed normal points to +z."""
    p = positions
    n = np.cross(p[tris[:, 1]] - p[tris[:, 0]], p[tris[:, 2]] - p[tris[:, 0]]).sum(0)
    return tris if n[2] >= 0 else tris[:, ::-1]


def build_head(landmarks: FaceLandmarks, image: Image.Image, *, with_shell: bool = True) -> HeadMesh:
    """The unsubdivided head for one face (about 770 vertices)."""
    topo = topology()
    img_pts = np.concatenate([landmarks.points, landmarks.iris_right[None], landmarks.iris_left[None]])
    # The iris centre sits on the eyeball, a little behind the lids: take the eye loop's mean depth.
    for idx, side in ((IRIS_RIGHT, "right"), (IRIS_LEFT, "left")):
        img_pts[idx, 2] = landmarks.points[topo.eye_loops[side], 2].mean()
    frame = FaceFrame.from_landmarks(landmarks.points)
    core = frame.to_metric(img_pts)
    texture, tex_size, uv_scale, uv_offset = _atlas(image, img_pts)

    def photo_uv(metric: np.ndarray) -> np.ndarray:
        return frame.to_image(metric)[:, :2] * uv_scale + uv_offset

    b = _Builder()
    b.add(core, photo_uv(core), np.arange(N_CORE))
    b.faces(topo.triangles)
    for side, centre in (("right", IRIS_RIGHT), ("left", IRIS_LEFT)):
        loop = topo.eye_loops[side]
        b.faces(np.stack([np.roll(loop, -1), loop, np.full_like(loop, centre)], 1))  # (b, a, c), §4.6 pitfall 3

    # Mouth tube: copies of the inner-lip loop, walls running back to a cap; dark swatch.
    mw = float(np.linalg.norm(core[MOUTH_CORNER_LEFT] - core[MOUTH_CORNER_RIGHT]))
    atlas_h = tex_size[1]
    dark = _swatch_uv(0, atlas_h)
    loop = topo.mouth
    lip = core[loop]
    centre = lip.mean(0)
    rings = [b.add(lip, dark, loop)]
    for depth, shrink in ((0.45, 0.9), (1.0, 0.55)):
        ring = centre + (lip - centre) * shrink - np.array([0.0, 0.0, depth * TUBE_DEPTH * mw])
        rings.append(b.add(ring, dark, loop))
    cap = b.add((centre - np.array([0.0, 0.0, TUBE_DEPTH * mw]))[None], dark, loop[None, :])
    for outer, inner in itertools.pairwise(rings):
        # Boundary half-edge a→b of the face is b→a on the tube's rim, so (a, b) order is reversed here.
        a, bb = outer, np.roll(outer, -1)
        c, d = inner, np.roll(inner, -1)
        b.faces(np.concatenate([np.stack([a, c, bb], 1), np.stack([bb, c, d], 1)]))
    last = rings[-1]
    b.faces(np.stack([last, np.full_like(last, cap[0]), np.roll(last, -1)], 1))

    # Teeth cards behind the lips, textured with the photo's mouth interior.
    upper, lower = core[topo.upper_inner_lip], core[topo.lower_inner_lip]
    count = max(len(upper), len(lower))
    upper_r, lower_r = _resample(upper, count), _resample(lower, count)
    mid = (upper_r + lower_r) / 2
    push = np.array([0.0, 0.0, -CARD_DEPTH * mw])
    lower_card = np.zeros(0, np.int64)
    local = np.arange(2 * count)
    for top_row, bottom_row, rigid in ((upper_r, mid, False), (mid, lower_r, True)):
        rest = np.concatenate([top_row, bottom_row])
        # Pushed back, but sampling the photo where the un-pushed point projects (an affine UV on the card).
        card = b.add(rest + push, photo_uv(rest))
        tris = _facing_viewer(_strip(local[:count], local[count:]), rest)
        b.faces(card[0] + tris)
        if rigid:
            lower_card = card

    if with_shell:
        _add_shell(b, core, topo, atlas_h)

    core_map = sp.csr_matrix(
        (np.concatenate(b.map_vals), (np.concatenate(b.map_rows), np.concatenate(b.map_cols))),
        shape=(b.count, N_CORE),
    )
    return HeadMesh(
        positions=np.concatenate(b.positions),
        uvs=np.concatenate(b.uvs),
        triangles=np.concatenate(b.triangles),
        core=core,
        core_map=core_map,
        jaw_rigid=lower_card,
        texture_jpeg=texture,
        texture_size=tex_size,
        frame=frame,
    )


def _add_shell(b: _Builder, core: np.ndarray, topo: Topology, atlas_h: int) -> None:
    """Back of the head: rings swept from the face oval to a pole behind, on an ellipsoid.

    Ring 0 copies the oval (same positions, solid UVs: the seam); deeper rings follow slerped
    directions from each oval point towards −z and sit on the ellipsoid. Ring 0 copies its oval
    vertex's deltas, ring 1 half of them, the rest stay still (a chin that drops drags the neck edge).
    """
    oval = topo.oval
    ring0 = core[oval]
    half_w = float(np.abs(core[[CHEEK_LEFT, CHEEK_RIGHT], 0]).max()) * 1.06
    radii = np.array([half_w, 0.105 / 0.07 * half_w, 0.095 / 0.07 * half_w])
    hair_uv, skin_uv = _swatch_uv(1, atlas_h), _swatch_uv(2, atlas_h)
    ear_y = float(core[[CHEEK_LEFT, CHEEK_RIGHT], 1].mean()) - 0.01

    def uv_for(points: np.ndarray) -> np.ndarray:
        t = np.clip((points[:, 1] - ear_y) / 0.02 + 0.5, 0.0, 1.0)[:, None]
        return skin_uv * (1 - t) + hair_uv * t

    start = ring0 / np.linalg.norm(ring0, axis=1, keepdims=True)
    pole = np.array([0.0, 0.0, -1.0])
    omega = np.arccos(np.clip(start @ pole, -1.0, 1.0))[:, None]
    rings = [b.add(ring0, uv_for(ring0), oval)]
    for k in range(1, SHELL_RINGS + 1):
        t = k / (SHELL_RINGS + 1)
        d = (np.sin((1 - t) * omega) * start + np.sin(t * omega) * pole) / np.maximum(np.sin(omega), 1e-9)
        d /= np.linalg.norm(d, axis=1, keepdims=True)
        on_ellipsoid = d / np.sqrt(((d / radii) ** 2).sum(1, keepdims=True))
        blend = min(1.0, 1.5 * t)
        r0 = np.linalg.norm(ring0, axis=1, keepdims=True)
        pts = d * (r0 * (1 - blend) + np.linalg.norm(on_ellipsoid, axis=1, keepdims=True) * blend)
        weight = 0.5 if k == 1 else 0.0
        rings.append(b.add(pts, uv_for(pts), oval if weight else None, weight if weight else None))
    pole_pt = pole * radii[2]
    cap = b.add(pole_pt[None], uv_for(pole_pt[None]))
    for outer, inner in itertools.pairwise(rings):
        a, bb = outer, np.roll(outer, -1)
        c, d = inner, np.roll(inner, -1)
        b.faces(np.concatenate([np.stack([a, c, bb], 1), np.stack([bb, c, d], 1)]))
    last = rings[-1]
    b.faces(np.stack([last, np.full_like(last, cap[0]), np.roll(last, -1)], 1))


def loop_operator(triangles: np.ndarray, n_vertices: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """One Loop subdivision step as a sparse matrix ``S`` ((n + edges) × n) and the new triangles.

    Why our own operator (§4.6 pitfall 1): trimesh's ``subdivide_loop`` treats every neighbour that
    lies on *some* boundary as a boundary neighbour, which drags the vertices of thin open strips
    (the mouth tube's rim, the teeth cards) by millimetres. Here a boundary vertex averages only its
    two neighbours along boundary edges, so coincident rims (face/tube, face/shell) stay coincident.
    Being one linear map, it subdivides positions, UVs and all morph deltas with one product each.
    """
    f = np.asarray(triangles, np.int64)
    m = len(f)
    half = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    opposite = np.concatenate([f[:, 2], f[:, 0], f[:, 1]])
    edges, inverse, counts = np.unique(np.sort(half, axis=1), axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    n_edges = len(edges)
    boundary = counts == 1
    rows, cols, vals = [], [], []

    # Odd (edge) vertices: 1/2, 1/2 on boundary edges; 3/8, 3/8 plus 1/8 per opposite vertex inside.
    end_w = np.where(boundary, 0.5, 0.375)
    odd = n_vertices + np.arange(n_edges)
    rows += [odd, odd]
    cols += [edges[:, 0], edges[:, 1]]
    vals += [end_w, end_w]
    interior_half = ~boundary[inverse]
    rows.append(n_vertices + inverse[interior_half])
    cols.append(opposite[interior_half])
    vals.append(np.full(int(interior_half.sum()), 0.125))

    # Even (old) vertices.
    valence = np.bincount(edges.ravel(), minlength=n_vertices)
    b_edges = edges[boundary]
    b_count = np.bincount(b_edges.ravel(), minlength=n_vertices)
    k = np.maximum(valence, 1).astype(np.float64)
    beta = (40.0 - (2.0 * np.cos(2.0 * np.pi / k) + 3.0) ** 2) / (64.0 * k)
    interior_v = (b_count == 0) & (valence > 0)
    crease_v = b_count == 2
    diag = np.ones(n_vertices)
    diag[interior_v] = 1.0 - valence[interior_v] * beta[interior_v]
    diag[crease_v] = 0.75
    rows.append(np.arange(n_vertices))
    cols.append(np.arange(n_vertices))
    vals.append(diag)
    for p, q in ((edges[:, 0], edges[:, 1]), (edges[:, 1], edges[:, 0])):
        sel = interior_v[p]
        rows.append(p[sel])
        cols.append(q[sel])
        vals.append(beta[p[sel]])
    for p, q in ((b_edges[:, 0], b_edges[:, 1]), (b_edges[:, 1], b_edges[:, 0])):
        sel = crease_v[p]
        rows.append(p[sel])
        cols.append(q[sel])
        vals.append(np.full(int(sel.sum()), 0.125))

    s = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n_vertices + n_edges, n_vertices)
    )
    e_ab, e_bc, e_ca = (n_vertices + inverse[i * m : (i + 1) * m] for i in range(3))
    a, b, c = f.T
    new = np.concatenate([
        np.stack([a, e_ab, e_ca], 1), np.stack([e_ab, b, e_bc], 1),
        np.stack([e_ca, e_bc, c], 1), np.stack([e_ab, e_bc, e_ca], 1),
    ])  # fmt: skip
    return s, new


def subdivision(triangles: np.ndarray, n_vertices: int, levels: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """``levels`` Loop steps composed into one operator (identity for 0)."""
    s = sp.identity(n_vertices, format="csr")
    tris = np.asarray(triangles, np.int64)
    n = n_vertices
    for _ in range(levels):
        step, tris = loop_operator(tris, n)
        s = (step @ s).tocsr()
        n = step.shape[0]
    return s, tris


def smooth_normals(positions: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Unit vertex normals; a vertex with no area around it (a closed-mouth card sliver) gets +z.

    Why +z: a zero normal is invalid glTF (the validator flags it, §4.6 pitfall 4) and such slivers
    face the viewer anyway.
    """
    normals = vertex_normals(positions.astype(np.float32), triangles.astype(np.uint32)).astype(np.float32)
    bad = np.linalg.norm(normals, axis=1) < 0.5
    normals[bad] = (0.0, 0.0, 1.0)
    return normals
