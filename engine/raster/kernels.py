"""Line-raster kernels: one source, compiled for the CPU (``numba.njit``) and for CUDA.

The drawing is assembled from small functions, as in datashader's line glyphs:

* :func:`sample_y` maps one µV sample to a fixed-point row position (1/256 px);
* :func:`column_extent` finds the vertical extent of a channel's polyline inside one pixel
  column: the min/max of the samples that fall in the column, joined to the neighbouring
  columns through the segments that cross the column's edges (so a one-sample spike is
  drawn and consecutive columns connect); NaN/inf samples break the line;
* ``draw_span`` (anti-aliased or aliased, picked when the kernels are built) inks the
  rows of that extent, widened by half the line width: integer coverage quantised to the
  spec's ink levels, looked up in a per-channel shade table and combined with the page by
  ``min`` (darken), which does not depend on drawing order;
* :func:`build_render_kernels` closes over these and returns a CPU kernel (``prange``
  over epochs, channel by channel so a strip stays in cache) and a CUDA kernel (one thread
  per epoch × pixel column, owning that column, so no two threads write one pixel).

Only one floating-point operation is done per sample (``value * gain``, then ``floor``);
the rest is integer arithmetic with precomputed column tables (:func:`column_edges`), so
the CPU and CUDA builds (and the CUDA simulator) give identical bytes whatever the
compiler's FMA-contraction rules.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import cuda

__all__ = [
    "ngjit",
    "sample_y",
    "column_edges",
    "column_extent",
    "build_draw_span",
    "build_render_kernels",
    "Y_LIMIT_FX",
    "FRAC_ONE",
]

#: numba.njit for kernel pieces: no GIL, no fastmath, cached on disk.
ngjit = numba.njit(nogil=True, cache=True)

#: Fixed-point positions are clamped to ± this (about ±4 million pixels).
Y_LIMIT_FX = 1 << 30
#: Fixed-point unit of the interpolation fractions in :func:`column_edges`.
FRAC_ONE = 1 << 16
_FRAC_SHIFT = 16
_FX_SHIFT = 8
_FX_ONE = 1 << _FX_SHIFT
_FX_HALF = _FX_ONE >> 1
_EMPTY = 1 << 40


@functools.lru_cache(maxsize=64)
def column_edges(n_samples: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Where pixel-column edges fall among the samples.

    Sample ``i`` sits at ``x = (i + 0.5) * width / n_samples``; column ``j`` covers
    ``[j, j + 1)``.

    Returns
    -------
    first : int64 (width + 1,)
        ``first[j]``: index of the first sample at or right of edge ``x = j`` (so column
        ``j`` holds samples ``first[j]:first[j + 1]``).
    frac : int64 (width + 1,)
        Where edge ``j`` lies on the segment from sample ``first[j] - 1`` to ``first[j]``,
        in units of ``1 / FRAC_ONE`` (floored); -1 when no segment crosses the edge.
    """
    edges = np.arange(width + 1, dtype=np.int64)
    numerator = 2 * edges * n_samples - width  # x >= j  <=>  2 i W >= numerator
    first = np.clip(-(-numerator // (2 * width)), 0, n_samples)
    before = first - 1
    crossing = 2 * edges * n_samples - (2 * before + 1) * width  # (j - x_before) * 2S
    frac = (crossing << _FRAC_SHIFT) // (2 * width)
    frac[(first < 1) | (first >= n_samples)] = -1
    for array in (first, frac):
        array.setflags(write=False)
    return first, frac


@ngjit
def sample_y(value, gain, mid_fx):
    """Fixed-point row position (1/256 px) of a finite sample; larger values go up."""
    scaled = value * gain
    if scaled > Y_LIMIT_FX:
        scaled = Y_LIMIT_FX
    elif scaled < -Y_LIMIT_FX:
        scaled = -Y_LIMIT_FX
    return mid_fx - np.int64(math.floor(scaled))


@ngjit
def _finite(value):
    return not (math.isnan(value) or math.isinf(value))


@ngjit
def _edge_crossing(row, after, frac, gain, mid_fx):
    """y where the segment from sample ``after - 1`` to ``after`` crosses a column edge.

    Returns ``_EMPTY`` when no segment crosses it or an end is not finite.
    """
    if frac < 0:
        return _EMPTY
    a = row[after - 1]
    b = row[after]
    if not (_finite(a) and _finite(b)):
        return _EMPTY
    ya = sample_y(a, gain, mid_fx)
    yb = sample_y(b, gain, mid_fx)
    return ya + (((yb - ya) * frac) >> _FRAC_SHIFT)


@ngjit
def column_extent(row, column, first, frac, gain, mid_fx):
    """Vertical extent ``(top, bottom)`` in fixed point of one channel inside one column.

    ``top > bottom`` when the polyline does not pass through the column.
    """
    top = _EMPTY
    bottom = -_EMPTY
    for i in range(first[column], first[column + 1]):
        value = row[i]
        if _finite(value):
            y = sample_y(value, gain, mid_fx)
            top = min(top, y)
            bottom = max(bottom, y)
    for edge in range(column, column + 2):
        y = _edge_crossing(row, first[edge], frac[edge], gain, mid_fx)
        if y != _EMPTY:
            top = min(top, y)
            bottom = max(bottom, y)
    return top, bottom


@functools.lru_cache(maxsize=None)
def build_draw_span(antialias: bool, color: bool):
    """Return ``draw_span(page, width, column, top, bottom, first_row, last_row,
    half_width, levels, shades)``.

    ``page`` is one image flattened to ``H * W * P`` values (``P`` = 3 with ``color``,
    else 1). The function inks rows ``first_row..last_row`` of ``column`` where the extent
    ``[top - half_width, bottom + half_width)`` covers them: with ``antialias`` by the
    covered fraction of each row quantised to ``levels`` steps, else (``levels`` = 1) the
    rows whose centre lies inside, at least one. ``shades[level, plane]`` is the ink
    value of each level; pixels only get darker (``min``).
    """
    if antialias:

        @ngjit
        def row_level(row, upper, lower, levels):
            covered = min(lower, (row + 1) << _FX_SHIFT) - max(upper, row << _FX_SHIFT)
            return (covered * levels + _FX_HALF) >> _FX_SHIFT

        min_extent = 0
    else:

        @ngjit
        def row_level(row, upper, lower, levels):
            centre = (row << _FX_SHIFT) + _FX_HALF
            return levels if upper <= centre < lower else 0

        min_extent = _FX_ONE

    if color:

        @ngjit
        def ink_pixel(page, index, shades, level):
            for p in range(3):
                value = shades[level, p]
                if value < page[index + p]:
                    page[index + p] = value

    else:

        @ngjit
        def ink_pixel(page, index, shades, level):
            value = shades[level, 0]
            if value < page[index]:
                page[index] = value

    @ngjit
    def draw_span(page, width, column, top, bottom, first_row, last_row, half_width, levels,
                  shades):  # fmt: skip
        upper = top - half_width
        lower = bottom + half_width
        shortfall = min_extent - (lower - upper)
        if shortfall > 0:
            upper -= shortfall >> 1
            lower += shortfall - (shortfall >> 1)
        row_start = max(first_row, upper >> _FX_SHIFT)
        row_stop = min(last_row, (lower - 1) >> _FX_SHIFT)
        if row_start > row_stop:
            return
        planes = shades.shape[1]
        stride = width * planes
        # End rows may be partly covered; rows between them are fully covered.
        index = (row_start * width + column) * planes
        level = row_level(row_start, upper, lower, levels)
        if level > 0:
            ink_pixel(page, index, shades, level)
        for _ in range(row_start + 1, row_stop):
            index += stride
            ink_pixel(page, index, shades, levels)
        if row_stop > row_start:
            level = row_level(row_stop, upper, lower, levels)
            if level > 0:
                ink_pixel(page, index + stride, shades, level)

    return draw_span


@functools.lru_cache(maxsize=None)
def build_render_kernels(antialias: bool, color: bool):
    """Build the CPU and the CUDA render kernel from the same drawing functions.

    Both take ``(signals, blank, pages, width, first, frac, gain, mid_fx, first_row,
    last_row, shades, half_width, levels)``: ``signals`` float32 ``(N, C, S)``, ``blank``
    the background flattened to uint8 ``(H * W * P,)``, ``pages`` the output as uint8
    ``(N, H * W * P)``, ``first``/``frac`` from :func:`column_edges`, the rest from
    :class:`~engine.raster.layout.Layout`.

    Returns
    -------
    render_cpu : numba dispatcher
        Parallel (``prange``) over epochs; draws channel by channel.
    render_cuda : numba CUDA kernel
        Launched on a 2-D grid of (epoch, column) threads.
    """
    draw_span = build_draw_span(antialias, color)

    @ngjit
    def draw_channel_column(
        signals, n, c, page, width, column, first, frac, gain, mid_fx, first_row, last_row,
        shades, half_width, levels,
    ):  # fmt: skip
        top, bottom = column_extent(signals[n, c], column, first, frac, gain[c], mid_fx[c])
        if top <= bottom:
            draw_span(
                page, width, column, top, bottom, first_row[c], last_row[c], half_width,
                levels, shades[c],
            )  # fmt: skip

    @numba.njit(parallel=True, nogil=True, cache=True)
    def render_cpu(
        signals, blank, pages, width, first, frac, gain, mid_fx, first_row, last_row, shades,
        half_width, levels,
    ):  # fmt: skip
        for n in numba.prange(signals.shape[0]):
            page = pages[n]
            page[:] = blank
            for c in range(signals.shape[1]):
                for column in range(width):
                    draw_channel_column(
                        signals, n, c, page, width, column, first, frac, gain, mid_fx,
                        first_row, last_row, shades, half_width, levels,
                    )  # fmt: skip

    @cuda.jit
    def render_cuda(
        signals, blank, pages, width, first, frac, gain, mid_fx, first_row, last_row, shades,
        half_width, levels,
    ):  # fmt: skip
        n, column = cuda.grid(2)
        if n < pages.shape[0] and column < width:
            page = pages[n]
            planes = shades.shape[2]
            for index in range(column * planes, blank.shape[0], width * planes):
                for p in range(planes):
                    page[index + p] = blank[index + p]
            for c in range(signals.shape[1]):
                draw_channel_column(
                    signals, n, c, page, width, column, first, frac, gain, mid_fx,
                    first_row, last_row, shades, half_width, levels,
                )  # fmt: skip

    return render_cpu, render_cuda
