"""Load time: ``load_avatar(path)`` against ``trimesh.load(path)`` on the corpus and on big synthetic heads.

Why trimesh is the baseline: it is the loader a Python developer would reach for first, so "at
least as fast as trimesh" means our extra work (decoding every morph target, sparse accessors, name
normalisation, world-space baking) costs the user nothing noticeable on open. trimesh does less: it
drops the morph deltas entirely. The ~4 MB (sparse targets, ~47k vertices) and ~20 MB (dense
targets, ~15k vertices) synthetic heads stand in for the provider avatars this app opens; the Khronos corpus
covers the odd layouts (interleaved, embedded, Draco, instancing).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import trimesh

from avatar_studio.avatar.errors import AvatarError
from avatar_studio.avatar.gltf_reader import load_avatar
from avatar_studio.avatar.synthetic import make_sized_avatar_glb
from benchmarks.common import measure, ms, print_table, ratio

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "data" / "gltf"
FALLBACK_CORPUS = Path("/work/shared/corpus/gltf")
SYNTHETIC_SIZES = {"synthetic ~4 MB": 4_000_000, "synthetic ~20 MB": 20_000_000}


def _corpus_files() -> tuple[list[Path], list[str]]:
    notes = []
    root = CORPUS
    if not any(CORPUS.rglob("*.gl[tb]*")):
        root = FALLBACK_CORPUS
        notes.append(f"note: {CORPUS.relative_to(REPO)} has no models; using the fallback corpus {root}")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in (".glb", ".gltf"))
    return files, notes


def _try(fn: Callable[[Path], object], path: Path) -> str | None:
    """None if ``fn(path)`` works, else a short reason (a corpus file may be unsupported by one side)."""
    try:
        fn(path)
    except AvatarError as exc:
        return f"{type(exc).__name__}: {str(exc)[:60]}"
    except Exception as exc:  # the baseline is a third-party loader: any failure is just reported
        return f"{type(exc).__name__}: {str(exc)[:60]}"
    return None


def run(quick: bool = False) -> None:
    files, notes = _corpus_files()
    runs_small, runs_big = (3, 3) if quick else (15, 7)
    rows = []
    total_ours = total_base = 0.0
    with tempfile.TemporaryDirectory(prefix="avatar-bench-") as tmp:
        labelled = [(str(p.relative_to(p.parents[2])), p) for p in files]
        for label, size in SYNTHETIC_SIZES.items():
            path = Path(tmp) / f"{label.split()[-2].replace('~', '')}MB.glb"
            path.write_bytes(make_sized_avatar_glb(size))
            labelled.append((label, path))
        for label, path in labelled:
            size_mb = f"{path.stat().st_size / 1e6:.2f}"
            failure_ours = _try(load_avatar, path)
            failure_base = _try(trimesh.load, path)
            if failure_ours or failure_base:
                rows.append(
                    [label, size_mb, "-", "-", "-", f"ours: {failure_ours or 'ok'}; trimesh: {failure_base or 'ok'}"]
                )
                continue
            runs = runs_big if path.stat().st_size > 1_000_000 else runs_small
            ours = measure(lambda p=path: load_avatar(p), runs).median
            base = measure(lambda p=path: trimesh.load(p), runs).median
            total_ours += ours
            total_base += base
            avatar = load_avatar(path)
            detail = f"{avatar.vertex_count} v, {len(avatar.morph_names)} morphs"
            rows.append([label, size_mb, ms(ours), ms(base), ratio(ours, base), detail])
    rows.append(["all files (sum of medians)", "", ms(total_ours), ms(total_base), ratio(total_ours, total_base), ""])
    notes = [
        *notes,
        f"median of {runs_small} runs (files > 1 MB: {runs_big}); warm page cache; goal: ratio <= 1.00x",
        "baseline trimesh.load(path) with its defaults; it drops the morph deltas that load_avatar decodes",
    ]
    print_table(
        "load: load_avatar vs trimesh.load",
        ["file", "MB", "ours ms", "trimesh ms", "ratio", "loaded"],
        rows,
        notes,
    )
