"""The ``inspect`` report: what a reviewer needs to know about an avatar file before opening it.

One function builds a plain dict (the ``--json`` output, stable keys) and one renders it as text,
so the CLI, the GUI and tests all read the same facts.
"""

from __future__ import annotations

import io
import os
from typing import Any

from avatar_studio.avatar.blendshapes import coverage
from avatar_studio.avatar.model import Avatar
from avatar_studio.lipsync.viseme_table import VisemeTable


def _image_size(data: bytes) -> tuple[int, int] | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:  # reads the header only
            return img.size
    except (UnidentifiedImageError, OSError):
        return None


def build_report(avatar: Avatar, table: VisemeTable | None = None) -> dict[str, Any]:
    """Facts about ``avatar`` (and, with a viseme table, what it cannot say) as JSON-ready data."""
    cov = coverage(avatar.morph_names)
    report: dict[str, Any] = {
        "file": avatar.source,
        "bytes": os.path.getsize(avatar.source) if os.path.isfile(avatar.source) else None,
        "primitives": [
            {
                "name": p.name,
                "mesh": p.mesh_index,
                "node": p.node_index,
                "vertices": p.vertex_count,
                "triangles": p.triangle_count,
                "morphTargets": len(p.morph_slots),
                "textured": p.texture is not None and p.uvs is not None,
            }
            for p in avatar.primitives
        ],
        "vertices": avatar.vertex_count,
        "triangles": avatar.triangle_count,
        "textures": [
            {"name": t.name, "mimeType": t.mime_type, "bytes": len(t.data), "size": _image_size(t.data)}
            for t in avatar.textures
        ],
        "extensionsUsed": avatar.extensions_used,
        "extensionsRequired": avatar.extensions_required,
        "morphTargets": [
            {"name": name, "rawNames": avatar.raw_names.get(name, []), "default": avatar.default_weights.get(name, 0.0)}
            for name in avatar.morph_names
        ],
        "arkit": {
            "present": len(cov.present),
            "of": len(cov.present) + len(cov.missing),
            "missing": list(cov.missing),
            "visemes": list(cov.visemes),
            "unmapped": list(cov.unmapped),
        },
        "warnings": avatar.warnings,
    }
    if table is not None:
        missing = table.unexpressible(avatar.morph_names)
        report["mapping"] = {
            "visemes": len(table),
            "expressible": list(table.expressible(avatar.morph_names)),
            "unexpressible": missing,
        }
    return report


def render_text(report: dict[str, Any]) -> str:
    """The report as aligned, human-readable lines."""
    lines = [f"File        {report['file']}" + (f"  ({report['bytes']:,} bytes)" if report["bytes"] else "")]
    lines.append(
        f"Geometry    {len(report['primitives'])} primitive(s), {report['vertices']:,} vertices, "
        f"{report['triangles']:,} triangles"
    )
    for p in report["primitives"]:
        tex = ", textured" if p["textured"] else ""
        lines.append(
            f"  - {p['name']}: {p['vertices']:,} vertices, {p['triangles']:,} triangles, "
            f"{p['morphTargets']} morph targets{tex}"
        )
    for t in report["textures"]:
        size = f"{t['size'][0]}×{t['size'][1]}" if t["size"] else "unreadable"
        lines.append(f"Texture     {t['name']}: {t['mimeType']}, {size}, {t['bytes']:,} bytes")
    lines.append(f"Extensions  used: {', '.join(report['extensionsUsed']) or 'none'}; "
                 f"required: {', '.join(report['extensionsRequired']) or 'none'}")
    targets = report["morphTargets"]
    lines.append(f"Morph targets ({len(targets)})")
    for t in targets:
        raw = [r for r in t["rawNames"] if r != t["name"]]
        shown = f"  - {t['name']}" + (f"  (file: {', '.join(raw)})" if raw else "")
        lines.append(shown + (f"  default {t['default']:g}" if t["default"] else ""))
    ark = report["arkit"]
    lines.append(f"ARKit       {ark['present']}/{ark['of']} blendshapes present")
    if ark["missing"]:
        lines.append(f"  missing:   {', '.join(ark['missing'])}")
    if ark["visemes"]:
        lines.append(f"  visemes:   {', '.join(ark['visemes'])}")
    if ark["unmapped"]:
        lines.append(f"  unmapped:  {', '.join(ark['unmapped'])}")
    if "mapping" in report:
        m = report["mapping"]
        lines.append(f"Mapping     {len(m['expressible'])}/{m['visemes']} visemes expressible")
        for viseme, names in m["unexpressible"].items():
            lines.append(f"  - {viseme}: lacks {', '.join(names)}")
    for w in report["warnings"]:
        lines.append(f"Warning     {w}")
    return "\n".join(lines)
