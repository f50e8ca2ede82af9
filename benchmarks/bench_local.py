"""The offline ``local`` provider: selfie → GLB time (warm and cold), memory, and what each stage costs.

Why these figures: the embedded service runs the generator inside the desktop app's process, so a
warm generation must stay well under a second (goal ≤ 0.5 s on one core) and must not balloon the
app's memory (goal: peak RSS of a whole generation process ≤ 300 MB). ``avatar-studio generate`` is a
cold process, so its wall time (interpreter start, imports, model load, one generation, write) is
shown too.

Baselines, measured in the same run: the landmark step alone (two TFLite models plus the iris model:
the floor any photo-to-head pipeline pays) and the whole pipeline at ``subdivisions=0``; the ratio of
the default (``subdivisions=1``) to them says what the mesh, targets, subdivision and GLB writing add.
The photo is ``skimage.data.astronaut()`` (512², face ≈ 95 px) re-encoded as JPEG, as in the tests.
"""

from __future__ import annotations

import io
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import measure, ms, peak_allocated, print_table, ratio

WARM_GOAL_S = 0.5
RSS_GOAL_MB = 300.0

COLD = """
import resource, sys, time
t0 = time.perf_counter()
from avatar_studio.providers.local import generate_to_file
size = generate_to_file(sys.argv[1], sys.argv[2])
elapsed = time.perf_counter() - t0
print(size, elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _astronaut_jpeg() -> bytes:
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def _cold_runs(photo: Path, runs: int) -> list[tuple[float, float, float, int]]:
    """(process wall s, in-process s from first import, peak RSS MB, GLB bytes) of fresh interpreters."""
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "head.glb"
        for _ in range(runs):
            start = time.perf_counter()
            result = subprocess.run(
                [sys.executable, "-c", COLD, str(photo), str(target)],
                capture_output=True, text=True, timeout=120, check=True,
            )  # fmt: skip
            wall = time.perf_counter() - start
            size, inner, rss_kb = result.stdout.split()
            out.append((wall, float(inner), int(rss_kb) / 1024, int(size)))
    return out


def run(quick: bool) -> None:
    from PIL import Image

    from avatar_studio.avatar.gltf_reader import load_avatar
    from avatar_studio.providers.local import generator
    from avatar_studio.providers.local import mesh as head_mesh
    from avatar_studio.providers.local import targets as rig_targets
    from avatar_studio.providers.local.landmarks import _open_rgb, detect_face

    runs = 3 if quick else 15
    photo = _astronaut_jpeg()
    image = Image.open(io.BytesIO(photo)).convert("RGB")

    landmarks_t = measure(lambda: detect_face(image), runs)
    level0 = measure(lambda: generator.generate_avatar(photo, subdivisions=0), runs)
    levels = {}
    sizes = {}
    for level in (1, 2):
        levels[level] = measure(lambda lv=level: generator.generate_avatar(photo, subdivisions=lv), runs)
    for level in (0, 1, 2):
        glb = generator.generate_avatar(photo, subdivisions=level)
        avatar = load_avatar(glb)
        sizes[level] = (len(glb), avatar.vertex_count, avatar.triangle_count)
    default = levels[1]

    rows = [
        ["landmarks only (baseline)", ms(landmarks_t.median), ms(landmarks_t.p95), "1.00x", "", "", ""],
    ]
    for level, timing in ((0, level0), (1, levels[1]), (2, levels[2])):
        size, verts, tris = sizes[level]
        rows.append([
            f"selfie → GLB, subdivisions={level}", ms(timing.median), ms(timing.p95),
            ratio(timing.median, landmarks_t.median), f"{size / 1e6:.2f}", f"{verts:,}", f"{tris:,}",
        ])  # fmt: skip
    print_table(
        f"local provider, warm, in-process (median of {runs})",
        ["step", "median ms", "p95 ms", "vs landmarks", "GLB MB", "verts", "tris"],
        rows,
        [
            f"goal: subdivisions=1 ≤ {WARM_GOAL_S * 1e3:.0f} ms → "
            f"{'met' if default.median <= WARM_GOAL_S else 'MISSED'} ({ms(default.median)} ms); "
            f"subdivisions=1 vs subdivisions=0: {ratio(default.median, level0.median)}",
        ],
    )

    # Stage breakdown of one warm default generation.
    decoded = _open_rgb(photo)
    stages: dict[str, float] = {}
    t = time.perf_counter()
    face = detect_face(decoded)
    stages["landmarks (detect + 2× mesh + 2× iris)"] = time.perf_counter() - t
    t = time.perf_counter()
    head = head_mesh.build_head(face, decoded)
    stages["head mesh + texture atlas (JPEG)"] = time.perf_counter() - t
    t = time.perf_counter()
    core = rig_targets.core_targets(rig_targets.build_rig(head))
    stages["52 targets on the core vertices"] = time.perf_counter() - t
    t = time.perf_counter()
    s, tris = head_mesh.subdivision(head.triangles, len(head.positions), 1)
    for delta in core.values():
        s @ (head.core_map @ delta)
    stages["Loop operator + 52 target products"] = time.perf_counter() - t
    t = time.perf_counter()
    generator.generate_avatar(photo)
    total = time.perf_counter() - t
    rows = [[name, ms(sec), f"{sec / total:.0%}"] for name, sec in stages.items()]
    rows.append(["whole generate_avatar (incl. decode, normals, GLB)", ms(total), "100%"])
    print_table("local provider, stages of one warm run", ["stage", "ms", "share"], rows)

    # Memory: Python-level peak of a warm generation, and whole-process peak RSS of cold runs.
    traced = peak_allocated(lambda: generator.generate_avatar(photo), calls=1 if quick else 3)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "astronaut.jpg"
        src.write_bytes(photo)
        cold = _cold_runs(src, 1 if quick else 3)
    wall = statistics.median(c[0] for c in cold)
    inner = statistics.median(c[1] for c in cold)
    rss = max(c[2] for c in cold)
    print_table(
        f"local provider, cold process (`python -c` generate_to_file, {len(cold)} run(s))",
        ["figure", "value", "vs warm generation"],
        [
            ["process wall time, s", f"{wall:.2f}", ratio(wall, default.median)],
            ["from first import to GLB written, s", f"{inner:.2f}", ratio(inner, default.median)],
            ["peak RSS of the process, MB", f"{rss:.0f}", ""],
            ["tracemalloc peak of a warm generation, MB", f"{traced / 1e6:.1f}", ""],
        ],
        [f"goal: peak RSS ≤ {RSS_GOAL_MB:.0f} MB → {'met' if rss <= RSS_GOAL_MB else 'MISSED'}"],
    )


if __name__ == "__main__":
    run(quick="--quick" in sys.argv)
