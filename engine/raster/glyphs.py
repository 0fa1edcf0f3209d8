"""A tiny bitmap font for channel labels, rasterised once from PIL's default font.

The atlas is built on first use (one PIL call per printable ASCII character) and kept as
NumPy arrays; labels are then assembled from it without any per-image text rendering.
Coverage is quantised to multiples of 17 so that grey images keep 16 grey levels.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

__all__ = ["GlyphAtlas", "glyph_atlas", "label_bitmap", "FONT_SIZE"]

#: Pixel size of the label font.
FONT_SIZE = 10
_FIRST, _LAST = 32, 126  # printable ASCII
_SPACING = 1


@dataclass(frozen=True)
class GlyphAtlas:
    """Coverage bitmaps (0 = paper, 255 = full ink) of printable ASCII characters.

    Attributes
    ----------
    coverage : uint8 (95, height, max_width)
        One bitmap per character from ``" "`` to ``"~"``, left aligned.
    widths : int64 (95,)
        Advance width of each character in pixels.
    """

    coverage: np.ndarray
    widths: np.ndarray

    @property
    def height(self) -> int:
        """Row count of every glyph."""
        return int(self.coverage.shape[1])

    def index(self, char: str) -> int:
        """Atlas index of a character; characters outside printable ASCII become ``?``."""
        code = ord(char)
        return (code if _FIRST <= code <= _LAST else ord("?")) - _FIRST


@functools.lru_cache(maxsize=1)
def glyph_atlas() -> GlyphAtlas:
    """Rasterise printable ASCII once with PIL's default font (memoised)."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=FONT_SIZE)
    chars = [chr(c) for c in range(_FIRST, _LAST + 1)]
    ascent, descent = font.getmetrics()
    height = ascent + descent
    widths = np.array([int(np.ceil(font.getlength(ch))) for ch in chars], np.int64)
    max_width = int(widths.max()) + 2
    coverage = np.zeros((len(chars), height, max_width), np.uint8)
    for i, ch in enumerate(chars):
        canvas = Image.new("L", (max_width, height), 0)
        ImageDraw.Draw(canvas).text((0, 0), ch, fill=255, font=font)
        coverage[i] = np.asarray(canvas)
    # Quantise to multiples of 17 (16 levels), like the rest of a grey image.
    coverage = ((coverage.astype(np.uint16) + 8) // 17 * 17).astype(np.uint8)
    # Trim rows that no glyph uses, top and bottom.
    used = np.flatnonzero(coverage.any(axis=(0, 2)))
    coverage = coverage[:, used[0] : used[-1] + 1] if used.size else coverage
    coverage.setflags(write=False)
    widths.setflags(write=False)
    return GlyphAtlas(coverage=coverage, widths=widths)


@functools.lru_cache(maxsize=256)
def label_bitmap(text: str) -> np.ndarray:
    """Coverage bitmap of a label, assembled from the atlas (memoised).

    Parameters
    ----------
    text : str
        The label; characters outside printable ASCII are drawn as ``?``.

    Returns
    -------
    numpy.ndarray
        uint8 array ``(atlas.height, width)``, 0 = paper, 255 = full ink.
    """
    atlas = glyph_atlas()
    indices = [atlas.index(ch) for ch in text]
    width = sum(int(atlas.widths[i]) + _SPACING for i in indices)
    out = np.zeros((atlas.height, max(width, 1)), np.uint8)
    x = 0
    for i in indices:
        glyph = atlas.coverage[i]
        span = min(glyph.shape[1], out.shape[1] - x)
        np.maximum(out[:, x : x + span], glyph[:, :span], out=out[:, x : x + span])
        x += int(atlas.widths[i]) + _SPACING
    out.setflags(write=False)
    return out
