"""Per-frame morph cost: ``MorphEvaluator.apply`` against the textbook dense ``base + w @ D``.

Why: the preview and the lip-sync tester call ``apply`` once per display frame, so it has to stay
well under a millisecond at 30k vertices on one core (budget: 0.5 ms) and must not allocate (GC
pauses show up as stutter). Two weight patterns: all 52 non-zero (worst case, a slider sweep) and
12 of 52 (a typical speech frame: jaw and mouth shapes only).

The baseline does the same job the textbook way, in the same process: for each primitive a freshly
allocated ``base + w @ D`` for positions and for normals, then normals renormalised. The
positions-only matmul (the figure in the design notes) is printed too, for reference.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from avatar_studio.avatar.geometry import vertex_normals
from avatar_studio.avatar.gltf_reader import load_avatar
from avatar_studio.avatar.model import Avatar
from avatar_studio.avatar.morph import MorphEvaluator
from avatar_studio.avatar.synthetic import make_arkit_head_glb
from benchmarks.common import measure, ms, peak_allocated, print_table, ratio

BUDGET_S = 0.5e-3  # at 30k vertices, one core
SPEECH_12 = (
    "jawOpen",
    "mouthClose",
    "mouthFunnel",
    "mouthPucker",
    "mouthSmileLeft",
    "mouthSmileRight",
    "mouthStretchLeft",
    "mouthStretchRight",
    "mouthLowerDownLeft",
    "mouthLowerDownRight",
    "mouthUpperUpLeft",
    "mouthUpperUpRight",
)


def _naive(avatar: Avatar, with_normals: bool) -> Callable[[np.ndarray], object]:
    """The textbook evaluation: dense (T, 3N) delta matrices, a new result array every call."""
    plans = []
    for prim in avatar.primitives:
        t = len(prim.morph_slots)
        d_pos = np.ascontiguousarray(prim.morph_positions.reshape(t, -1), np.float32)
        d_nrm = None if prim.morph_normals is None else np.ascontiguousarray(prim.morph_normals.reshape(t, -1))
        plans.append((prim.morph_slots, prim.positions.reshape(-1), prim.normals.reshape(-1), d_pos, d_nrm))

    triangles = [prim.triangles for prim in avatar.primitives]

    def evaluate(weights: np.ndarray) -> object:
        out = []
        for (slots, base, base_n, d_pos, d_nrm), tri in zip(plans, triangles, strict=True):
            w = weights[slots]
            positions = base + w @ d_pos
            if with_normals and d_nrm is not None:
                normals = (base_n + w @ d_nrm).reshape(-1, 3)
                normals /= np.linalg.norm(normals, axis=1, keepdims=True)
                out.append((positions, normals))
            elif with_normals:  # no NORMAL deltas in the file: recompute every normal from the mesh
                out.append((positions, vertex_normals(positions.reshape(-1, 3), tri)))
            else:
                out.append((positions, None))
        return out

    return evaluate


def _weight_sets(avatar: Avatar) -> dict[str, list[np.ndarray]]:
    """Two vectors per pattern, alternated, so a result cache (if one is ever added) cannot flatter apply."""
    rng = np.random.default_rng(0)
    n = len(avatar.morph_names)
    sets: dict[str, list[np.ndarray]] = {"52/52": [], "12/52": []}
    speech = [avatar.morph_index(name) for name in SPEECH_12]
    for _ in range(2):
        sets["52/52"].append(rng.uniform(0.05, 1.0, n).astype(np.float32))
        vec = np.zeros(n, np.float32)
        vec[speech] = rng.uniform(0.05, 1.0, len(speech))
        sets["12/52"].append(vec)
    return sets


def run(quick: bool = False) -> None:
    calls = 200 if quick else 3000
    rows = []
    for vertices, normal_deltas in ((11_000, True), (30_000, True), (30_000, False)):
        avatar = load_avatar(make_arkit_head_glb(vertices, normals=normal_deltas))
        evaluator = MorphEvaluator(avatar)
        naive, naive_pos = _naive(avatar, with_normals=True), _naive(avatar, with_normals=False)
        for pattern, vectors in _weight_sets(avatar).items():
            cycle = itertools.cycle(vectors)
            ours = measure(lambda c=cycle, f=evaluator.apply: f(next(c)), calls, warmup=20)
            base = measure(lambda c=cycle, f=naive: f(next(c)), calls, warmup=20)
            base_pos = measure(lambda c=cycle, f=naive_pos: f(next(c)), calls, warmup=20)
            peak_ours = peak_allocated(lambda c=cycle, f=evaluator.apply: f(next(c)))
            peak_base = peak_allocated(lambda c=cycle, f=naive: f(next(c)))
            verdict = "ok" if ours.median <= BUDGET_S else "OVER"
            rows.append(
                [
                    f"{avatar.vertex_count} v",
                    "deltas" if normal_deltas else "recomputed",
                    pattern,
                    ms(ours.median),
                    ms(ours.p95),
                    ms(base.median),
                    ms(base.p95),
                    ratio(ours.median, base.median),
                    ms(base_pos.median),
                    f"{peak_ours:,}",
                    f"{peak_base:,}",
                    verdict if vertices == 30_000 else "",
                ]
            )
    print_table(
        "morph: MorphEvaluator.apply vs naive base + w @ D",
        [
            "head",
            "normals",
            "active",
            "ours med ms",
            "ours p95",
            "naive med",
            "naive p95",
            "ratio",
            "naive pos-only",
            "ours peak B",
            "naive peak B",
            "≤0.5ms",
        ],
        rows,
        [
            f"{calls} timed calls each after 20 warm-up calls; weights passed as a float32 vector",
            "naive = fresh base + w @ D for positions and normals, normals renormalised (same output as apply)",
            "peak B = tracemalloc peak bytes allocated over 100 calls (numpy buffers are traced)",
            "synthetic sparse heads (avatar_studio.avatar.synthetic), 1 primitive each; normals 'deltas': the file",
            "has NORMAL targets; 'recomputed': it has none (common from providers), naive = full vertex_normals",
        ],
    )
