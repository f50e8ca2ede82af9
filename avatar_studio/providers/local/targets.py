"""The 52 ARKit morph targets, made procedurally on the 470 core vertices (landmarks + iris centres).

Why procedural: no offline package ships a blendshape model (``design/local-provider.md`` §1.2), but
the landmarks say where every feature is, so each target can be a small, smooth, feature-anchored
deformation (§4.2): the jaw rotates about a hinge behind the face at ear level, lids slide onto a
closing line between the lid chains, mouth shapes are compact bumps around the corners or the lip
masks. Sizes scale with the face (mouth width ``mw``, eye width ``ew``), so a small and a large face
animate alike. Compact falloffs keep each target's support small, which is what makes the sparse
accessors of the GLB pay off.

All deltas are in the mesh frame of :mod:`mesh` (metres, +x = the subject's left = ARKit "Left").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avatar_studio.avatar.blendshapes import ARKIT_52
from avatar_studio.providers.local import mesh as hm

JAW_OPEN_RAD = 0.33
EYE_CLOSE_FRACTION = 0.2  # the closing line: lower lid + 20 % of the lid gap


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _bump(points: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """``(1 − (d/r)²)²`` inside the radius, exactly 0 outside (compact, so sparse targets stay sparse)."""
    s2 = np.sum((points - centre) ** 2, axis=1) / (radius * radius)
    return np.where(s2 < 1.0, (1.0 - s2) ** 2, 0.0)


def _inside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon test in the xy plane."""
    x, y = points[:, 0][:, None], points[:, 1][:, None]
    x0, y0 = polygon[:, 0][None], polygon[:, 1][None]
    x1, y1 = np.roll(polygon[:, 0], -1)[None], np.roll(polygon[:, 1], -1)[None]
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return (np.sum(crosses & (x < x_at), axis=1) % 2) == 1


def _curve(chain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A polyline as (x ascending, points) for interpolation by x."""
    order = np.argsort(chain[:, 0])
    return chain[order, 0], chain[order]


def _at_x(curve: tuple[np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    """Points of the curve at each x (clamped at its ends: the line extends sideways)."""
    xs, pts = curve
    return np.stack([np.interp(x, xs, pts[:, k]) for k in range(3)], axis=1)


@dataclass
class Rig:
    """Per-face quantities every target uses."""

    p: np.ndarray  # (470, 3)
    mw: float
    mouth_centre: np.ndarray
    wj: np.ndarray  # jaw weight in [0, 1]
    hinge: np.ndarray  # (y, z) of the jaw's x-axis hinge
    upper_lip: np.ndarray  # 1 on the upper lip (inside the outer lip ring, above the mouth line)
    lower_lip: np.ndarray
    upper_region: np.ndarray  # upper lip fading into the skin above it
    lower_region: np.ndarray
    left: np.ndarray  # 1 on the subject's left of the mouth centre, 0 on the right, smooth between
    normals: np.ndarray


def build_rig(head: hm.HeadMesh) -> Rig:
    topo = hm.topology()
    p = head.core
    mw = float(np.linalg.norm(p[hm.MOUTH_CORNER_LEFT] - p[hm.MOUTH_CORNER_RIGHT]))
    upper_in, lower_in = p[topo.upper_inner_lip], p[topo.lower_inner_lip]
    count = max(len(upper_in), len(lower_in))
    mid = (hm._resample(upper_in, count) + hm._resample(lower_in, count)) / 2
    mouth_line = _curve(mid)
    mouth_centre = p[topo.mouth].mean(0)
    y_mid = _at_x(mouth_line, p[:, 0])[:, 1]

    outer = np.concatenate([p[topo.outer_lip_upper], p[topo.outer_lip_lower][::-1]])
    lip = _inside(p, outer)
    lip[topo.outer_lip_upper] = lip[topo.outer_lip_lower] = True
    below = p[:, 1] < y_mid
    band = _smoothstep((y_mid + 0.15 * mw - p[:, 1]) / (0.3 * mw))
    wj = np.where(lip, below.astype(np.float64), band)
    wj[topo.upper_inner_lip] = 0.0  # membership, not height (§4.6 pitfall 2)
    wj[topo.lower_inner_lip] = 1.0
    wj[topo.outer_lip_upper] = 0.0
    wj[topo.outer_lip_lower] = 1.0
    corners = [hm.LIP_CORNER_INNER_LEFT, hm.LIP_CORNER_INNER_RIGHT, hm.MOUTH_CORNER_LEFT, hm.MOUTH_CORNER_RIGHT]
    wj[corners] = 0.5
    wj[p[:, 1] > p[hm.NOSE_TIP, 1]] = 0.0
    wj[[hm.IRIS_LEFT, hm.IRIS_RIGHT]] = 0.0

    lower_lip = np.where(lip & (wj >= 0.99), 1.0, 0.0)
    upper_lip = np.where(lip & (wj <= 0.01), 1.0, 0.0)
    lower_c = p[lower_lip > 0].mean(0)
    upper_c = p[upper_lip > 0].mean(0)
    lower_region = np.maximum(lower_lip, _bump(p, lower_c, 0.6 * mw) * (p[:, 1] < y_mid))
    upper_region = np.maximum(upper_lip, _bump(p, upper_c, 0.6 * mw) * (p[:, 1] > y_mid))
    lower_region[corners] = upper_region[corners] = 0.5
    cheeks = p[[hm.CHEEK_LEFT, hm.CHEEK_RIGHT]]
    hinge = np.array([cheeks[:, 1].mean() - 0.1 * mw, cheeks[:, 2].mean() - 0.2 * mw])
    normals = hm.vertex_normals(p.astype(np.float32), hm.topology().triangles.astype(np.uint32)).astype(np.float64)
    return Rig(
        p=p,
        mw=mw,
        mouth_centre=mouth_centre,
        wj=wj,
        hinge=hinge,
        upper_lip=upper_lip,
        lower_lip=lower_lip,
        upper_region=upper_region,
        lower_region=lower_region,
        left=_smoothstep((p[:, 0] - mouth_centre[0]) / (0.5 * mw) + 0.5),
        normals=normals,
    )


def jaw_rotation(rig: Rig, points: np.ndarray, weights: np.ndarray | float) -> np.ndarray:
    """Delta of ``points`` rotated by ``JAW_OPEN_RAD × weights`` about the hinge (chin down and back)."""
    angle = JAW_OPEN_RAD * np.broadcast_to(weights, (len(points),))
    y, z = points[:, 1] - rig.hinge[0], points[:, 2] - rig.hinge[1]
    c, s = np.cos(angle), np.sin(angle)
    out = np.zeros_like(points)
    out[:, 1] = y * c - z * s - y
    out[:, 2] = y * s + z * c - z
    return out


def jaw_target(rig: Rig, name: str, points: np.ndarray, weights: np.ndarray | float) -> np.ndarray | None:
    """The jaw part of a target at arbitrary points (used for the lower teeth card); None if not a jaw target."""
    w = np.broadcast_to(np.asarray(weights, np.float64), (len(points),))[:, None]
    shift = 0.12 * rig.mw
    if name == "jawOpen":
        return jaw_rotation(rig, points, w[:, 0])
    if name == "jawLeft":
        return w * np.array([shift, 0.0, 0.0])
    if name == "jawRight":
        return w * np.array([-shift, 0.0, 0.0])
    if name == "jawForward":
        return w * np.array([0.0, 0.0, shift])
    return None


def _eye_targets(rig: Rig, side: str) -> dict[str, np.ndarray]:
    """Blink, wide, squint and the four gaze targets of one eye (``side`` "left" or "right")."""
    topo = hm.topology()
    p = rig.p
    n = len(p)
    upper_idx, lower_idx = topo.upper_lids[side], topo.lower_lids[side]
    upper, lower = p[upper_idx], p[lower_idx]
    lower_curve, upper_curve = _curve(lower), _curve(upper)
    ew = float(np.ptp(p[topo.eye_loops[side], 0]))
    x_lo, x_hi = p[topo.eye_loops[side], 0].min(), p[topo.eye_loops[side], 0].max()

    close_at_upper = _at_x(lower_curve, upper[:, 0])
    closing_upper = close_at_upper + EYE_CLOSE_FRACTION * (upper - close_at_upper)
    upper_delta = closing_upper - upper
    upper_delta[:, 2] = np.maximum(upper_delta[:, 2], 0.0)  # never sink the lid into the eyeball
    lower_delta = EYE_CLOSE_FRACTION * (_at_x(upper_curve, lower[:, 0]) - lower)
    lower_delta[:, [0, 2]] = 0.0

    # Skin above the upper lid follows it, fading over 0.45 eye widths; the lower lid's skin a little.
    in_x = _smoothstep((p[:, 0] - (x_lo - 0.15 * ew)) / (0.15 * ew)) * _smoothstep(
        ((x_hi + 0.15 * ew) - p[:, 0]) / (0.15 * ew)
    )
    lid_y = _at_x(upper_curve, p[:, 0])[:, 1]
    above = p[:, 1] - lid_y
    skin_up = np.where(above > 0, np.clip(1.0 - above / (0.45 * ew), 0.0, 1.0) ** 2, 0.0) * in_x
    low_y = _at_x(lower_curve, p[:, 0])[:, 1]
    beneath = low_y - p[:, 1]
    skin_low = np.where(beneath > 0, np.clip(1.0 - beneath / (0.25 * ew), 0.0, 1.0) ** 2, 0.0) * in_x
    # The lid deltas interpolated along x, for the skin that follows them.
    xs = np.sort(upper[:, 0])
    order = np.argsort(upper[:, 0])
    skin_delta = np.stack([np.interp(p[:, 0], xs, upper_delta[order, k]) for k in range(3)], axis=1)
    low_order = np.argsort(lower[:, 0])
    low_skin_delta = np.stack(
        [np.interp(p[:, 0], lower[low_order, 0], lower_delta[low_order, k]) for k in range(3)], axis=1
    )

    iris = hm.IRIS_LEFT if side == "left" else hm.IRIS_RIGHT
    close_iris = _at_x(lower_curve, p[iris : iris + 1, 0])[0]
    close_iris = close_iris + EYE_CLOSE_FRACTION * (_at_x(upper_curve, p[iris : iris + 1, 0])[0] - close_iris)

    def lids(upper_k: float, lower_k: float, iris_k: float) -> np.ndarray:
        d = np.zeros((n, 3))
        d += upper_k * skin_up[:, None] * skin_delta
        d += lower_k * skin_low[:, None] * low_skin_delta
        d[upper_idx] = upper_k * upper_delta
        d[lower_idx] = lower_k * lower_delta
        d[upper_idx[[0, -1]]] = 0.0  # corners stay
        d[iris] = 0.0
        d[iris, 1] = iris_k * (close_iris[1] - p[iris, 1])
        return d

    suffix = "Left" if side == "left" else "Right"
    eh = max(float(np.max(upper[:, 1]) - np.min(lower[:, 1])), 0.25 * ew)
    inward = -1.0 if side == "left" else 1.0  # towards the nose
    out = {
        f"eyeBlink{suffix}": lids(1.0, 1.0, 1.0),
        f"eyeWide{suffix}": lids(-0.35, -0.1, 0.0),
        f"eyeSquint{suffix}": lids(0.15, 1.5, 0.0),
    }
    cheek_c = p[lower_idx].mean(0) - np.array([0.0, 0.5 * ew, 0.0])
    out[f"eyeSquint{suffix}"] += _bump(p, cheek_c, 0.6 * ew)[:, None] * np.array([0.0, 0.08 * eh, 0.0])
    out[f"eyeSquint{suffix}"][upper_idx[[0, -1]]] = 0.0
    for name, vec in (
        ("In", (inward * 0.22 * ew, 0.0)), ("Out", (-inward * 0.22 * ew, 0.0)),
        ("Up", (0.0, 0.18 * eh)), ("Down", (0.0, -0.18 * eh)),
    ):  # fmt: skip
        d = np.zeros((n, 3))
        d[iris, :2] = vec
        out[f"eyeLook{name}{suffix}"] = d
    return out


def core_targets(rig: Rig) -> dict[str, np.ndarray]:
    """All 52 ARKit targets as (470, 3) deltas on the core vertices."""
    topo = hm.topology()
    p, mw = rig.p, rig.mw
    n = len(p)
    zero = np.zeros((n, 3))
    t: dict[str, np.ndarray] = {}

    jaw = jaw_rotation(rig, p, rig.wj)
    t["jawOpen"] = jaw
    for name in ("jawLeft", "jawRight", "jawForward"):
        t[name] = jaw_target(rig, name, p, rig.wj)  # type: ignore[assignment]

    gap = p[hm.LIP_UPPER_INNER] - p[hm.LIP_LOWER_INNER]
    gap = gap if gap[1] > 0 else np.zeros(3)
    chin_fade = rig.lower_region * np.clip(rig.wj, 0, 1)
    t["mouthClose"] = -jaw * chin_fade[:, None] - rig.upper_lip[:, None] * gap / 2 + rig.lower_lip[:, None] * gap / 2

    mc = rig.mouth_centre
    around = np.exp(-np.sum((p - mc) ** 2, axis=1) / (2 * (0.55 * mw) ** 2))
    around[around < 0.02] = 0.0
    around[p[:, 1] > p[hm.NOSE_TIP, 1]] = 0.0
    rel = p - mc
    for name, kx, ky, push in (("mouthPucker", 0.4, 0.25, 0.18), ("mouthFunnel", 0.25, 0.1, 0.14)):
        d = np.stack([-kx * rel[:, 0], -ky * rel[:, 1], np.full(n, push * mw)], axis=1) * around[:, None]
        t[name] = d
    t["mouthFunnel"] += (rig.upper_lip - rig.lower_lip)[:, None] * np.array([0.0, 0.03 * mw, 0.0])

    lips_region = np.maximum(rig.upper_region, rig.lower_region)
    t["mouthLeft"] = lips_region[:, None] * np.array([0.15 * mw, 0.0, 0.0])
    t["mouthRight"] = lips_region[:, None] * np.array([-0.15 * mw, 0.0, 0.0])

    corner_moves = {  # (out, up, forward) × mw at the Left corner; Right mirrors x
        "mouthSmile": (0.18, 0.16, -0.06),
        "mouthFrown": (0.04, -0.2, 0.0),
        "mouthDimple": (0.1, 0.0, -0.12),
        "mouthStretch": (0.22, -0.08, -0.04),
    }
    for side, corner, sign, side_w in (
        ("Left", hm.MOUTH_CORNER_LEFT, 1.0, rig.left), ("Right", hm.MOUTH_CORNER_RIGHT, -1.0, 1.0 - rig.left)
    ):  # fmt: skip
        g = _bump(p, p[corner], 0.65 * mw)
        g[p[:, 1] > p[hm.NOSE_TIP, 1]] = 0.0
        for stem, (dx, dy, dz) in corner_moves.items():
            t[stem + side] = g[:, None] * np.array([sign * dx * mw, dy * mw, dz * mw])
        t[f"mouthUpperUp{side}"] = (rig.upper_region * side_w)[:, None] * np.array([0.0, 0.12 * mw, 0.02 * mw])
        t[f"mouthLowerDown{side}"] = (rig.lower_region * side_w)[:, None] * np.array([0.0, -0.12 * mw, 0.02 * mw])
        press = (rig.upper_lip * side_w)[:, None] * np.array([0.0, -0.03 * mw, -0.03 * mw]) + (rig.lower_lip * side_w)[
            :, None
        ] * np.array([0.0, 0.03 * mw, -0.03 * mw])
        t[f"mouthPress{side}"] = press

    t["mouthRollLower"] = rig.lower_lip[:, None] * np.array([0.0, 0.06 * mw, -0.12 * mw])
    t["mouthRollUpper"] = rig.upper_lip[:, None] * np.array([0.0, -0.06 * mw, -0.12 * mw])
    t["mouthShrugLower"] = rig.lower_region[:, None] * np.array([0.0, 0.08 * mw, 0.05 * mw])
    t["mouthShrugUpper"] = rig.upper_region[:, None] * np.array([0.0, 0.06 * mw, 0.03 * mw])

    # Brows, cheeks, nose: bumps sized by the eye width.
    ew = float(np.linalg.norm(p[hm.EYE_OUTER_LEFT] - p[hm.EYE_INNER_LEFT]))
    brow_l, brow_r = p[topo.brows["left"]], p[topo.brows["right"]]
    inner_l = brow_l[np.argsort(brow_l[:, 0])[:3]].mean(0)  # the three brow points nearest the nose
    inner_r = brow_r[np.argsort(-brow_r[:, 0])[:3]].mean(0)
    outer_l = brow_l[np.argsort(-brow_l[:, 0])[:3]].mean(0)
    outer_r = brow_r[np.argsort(brow_r[:, 0])[:3]].mean(0)
    eye_guard = np.ones(n)
    for side in ("left", "right"):
        eye_guard[topo.eye_loops[side]] = 0.0
    eye_guard[[hm.IRIS_LEFT, hm.IRIS_RIGHT]] = 0.0
    up = np.array([0.0, 1.0, 0.0])
    t["browInnerUp"] = ((_bump(p, inner_l, 0.9 * ew) + _bump(p, inner_r, 0.9 * ew)) * eye_guard)[:, None] * (
        0.2 * ew * up
    )
    for suffix, centre, outer_c, sign in (
        ("Left", (brow_l.mean(0) + inner_l) / 2, outer_l, 1.0),
        ("Right", (brow_r.mean(0) + inner_r) / 2, outer_r, -1.0),
    ):  # fmt: skip
        # Centred between the brow's middle and its inner end: the corrugator pulls the inner brow most.
        own_side = _smoothstep(sign * p[:, 0] / (0.25 * ew))  # the other brow stays, however close
        t[f"browDown{suffix}"] = (_bump(p, centre, 1.1 * ew) * eye_guard * own_side)[:, None] * np.array(
            [-sign * 0.04 * ew, -0.16 * ew, 0.02 * ew]
        )
        t[f"browOuterUp{suffix}"] = (_bump(p, outer_c, 0.85 * ew) * eye_guard)[:, None] * (0.18 * ew * up)

    cheek_l = (p[hm.MOUTH_CORNER_LEFT] + p[hm.CHEEK_LEFT]) / 2
    cheek_r = (p[hm.MOUTH_CORNER_RIGHT] + p[hm.CHEEK_RIGHT]) / 2
    puff = _bump(p, cheek_l, 0.9 * mw) + _bump(p, cheek_r, 0.9 * mw)
    puff *= 1.0 - np.maximum(rig.upper_lip, rig.lower_lip)
    t["cheekPuff"] = puff[:, None] * rig.normals * (0.12 * mw)
    for suffix, eye in (("Left", "left"), ("Right", "right")):
        under_eye = p[topo.lower_lids[eye]].mean(0) - np.array([0.0, 0.9 * ew, 0.0])
        t[f"cheekSquint{suffix}"] = (_bump(p, under_eye, 0.8 * ew) * eye_guard)[:, None] * np.array(
            [0.0, 0.1 * ew, 0.03 * ew]
        )
    for suffix, wing, sign in (("Left", 358, 1.0), ("Right", 129, -1.0)):
        g = _bump(p, p[wing], 0.5 * ew) * eye_guard
        t[f"noseSneer{suffix}"] = g[:, None] * np.array([sign * 0.03 * ew, 0.1 * ew, 0.02 * ew])

    t.update(_eye_targets(rig, "left"))
    t.update(_eye_targets(rig, "right"))
    t["tongueOut"] = zero  # no tongue geometry; the name is kept so the set is complete
    missing = set(ARKIT_52) - set(t)
    if missing:  # a programming error, caught by the tests rather than shipped as a shorter set
        raise RuntimeError(f"ARKit targets not built: {sorted(missing)}")
    return {name: t[name] for name in ARKIT_52}
