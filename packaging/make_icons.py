"""Draw the app icon: ``resources/icons/avatar-studio.svg`` and PNGs at 256, 128, 64 and 48 px.

Why generated: the SVG and the PNGs (for desktops and Qt styles without an SVG loader) come from one
set of shapes, so they cannot drift apart. Pillow draws the PNGs 4× oversized and scales them down,
which anti-aliases the edges without needing an SVG renderer. Run after changing the design:

    .venv/bin/python packaging/make_icons.py
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parents[1] / "resources" / "icons"
SIZES = (256, 128, 64, 48)
VIEW = 256  # the design's coordinate system
TOP, BOTTOM = (38, 166, 154), (63, 81, 181)  # teal → indigo
HEAD = (128, 104, 52)  # centre x, centre y, radius
SHOULDERS = (52, 176, 204, 300)  # ellipse box, clipped by the tile
MOUTH = (108, 118, 148, 136)  # the open mouth: lip sync is what the app is about
CORNER = 44


def svg() -> str:
    cx, cy, r = HEAD
    x0, y0, x1, y1 = SHOULDERS
    mx0, my0, mx1, my1 = MOUTH
    return f"""<svg xmlns="http://www.w3.org/2000/svg" width="{VIEW}" height="{VIEW}" viewBox="0 0 {VIEW} {VIEW}">
  <title>Avatar Studio</title>
  <defs>
    <linearGradient id="bg" x1="0" y1="0" x2="0" y2="1">
      <stop offset="0" stop-color="rgb{TOP}"/>
      <stop offset="1" stop-color="rgb{BOTTOM}"/>
    </linearGradient>
    <clipPath id="tile"><rect width="{VIEW}" height="{VIEW}" rx="{CORNER}"/></clipPath>
  </defs>
  <g clip-path="url(#tile)">
    <rect width="{VIEW}" height="{VIEW}" fill="url(#bg)"/>
    <ellipse cx="{(x0 + x1) / 2}" cy="{(y0 + y1) / 2}" rx="{(x1 - x0) / 2}" ry="{(y1 - y0) / 2}" fill="#ffffff"/>
    <circle cx="{cx}" cy="{cy}" r="{r}" fill="#ffffff"/>
    <ellipse cx="{(mx0 + mx1) / 2}" cy="{(my0 + my1) / 2}" rx="{(mx1 - mx0) / 2}" ry="{(my1 - my0) / 2}"
      fill="rgb{BOTTOM}"/>
  </g>
</svg>
"""


def png(size: int) -> Image.Image:
    scale = size * 4 / VIEW
    big = size * 4

    def box(b: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        return (b[0] * scale, b[1] * scale, b[2] * scale, b[3] * scale)

    gradient = Image.new("RGB", (1, big))
    for y in range(big):
        t = y / (big - 1)
        gradient.putpixel((0, y), tuple(round(a + (b - a) * t) for a, b in zip(TOP, BOTTOM, strict=True)))
    tile = gradient.resize((big, big)).convert("RGBA")
    draw = ImageDraw.Draw(tile)
    draw.ellipse(box(SHOULDERS), fill="white")
    cx, cy, r = HEAD
    draw.ellipse(box((cx - r, cy - r, cx + r, cy + r)), fill="white")
    draw.ellipse(box(MOUTH), fill=BOTTOM)
    mask = Image.new("L", (big, big), 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, big - 1, big - 1), radius=CORNER * scale, fill=255)
    tile.putalpha(mask)
    return tile.resize((size, size), Image.Resampling.LANCZOS)


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "avatar-studio.svg").write_text(svg(), encoding="utf-8")
    for size in SIZES:
        png(size).save(OUT / f"avatar-studio-{size}.png", optimize=True)
    print(f"wrote {OUT}/avatar-studio.svg and {len(SIZES)} PNGs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
