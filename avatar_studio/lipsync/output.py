"""The ``lipsync analyze`` output formats: one JSON document or a CSV table, one row per 10 ms frame.

Why both carry the same columns: a spreadsheet user and a game-engine importer must see the same
numbers. Weights are rounded to 4 decimals (0.01 % of a blendshape is invisible) to keep a minute of
audio at a few MB of JSON.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

from avatar_studio.avatar.blendshapes import OVR_VISEMES
from avatar_studio.lipsync.engine import FRAME_RATE, Frame

DECIMALS = 4


def frames_to_json(frames: Sequence[Frame], mode: str, blendshape_names: Sequence[str]) -> dict[str, object]:
    return {
        "frameRate": FRAME_RATE,
        "mode": mode,
        "visemes": list(OVR_VISEMES),
        "blendshapes": list(blendshape_names),
        "frames": [
            {
                "t": f.t,
                "visemes": {k: round(v, DECIMALS) for k, v in f.visemes.items()},
                "blendshapes": {k: round(v, DECIMALS) for k, v in f.blendshapes.items()},
            }
            for f in frames
        ],
    }


def frames_to_csv(frames: Sequence[Frame], blendshape_names: Sequence[str]) -> str:
    """Header ``t, <15 visemes>, <blendshapes>``; viseme and blendshape names never collide."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["t", *OVR_VISEMES, *blendshape_names])
    for f in frames:
        writer.writerow(
            [f"{f.t:.2f}"]
            + [f"{f.visemes[v]:.{DECIMALS}f}" for v in OVR_VISEMES]
            + [f"{f.blendshapes[b]:.{DECIMALS}f}" for b in blendshape_names]
        )
    return out.getvalue()


def dumps_json(document: dict[str, object]) -> str:
    return json.dumps(document, separators=(",", ":")) + "\n"
