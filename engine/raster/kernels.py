"""Line-raster kernels: one source, compiled for the CPU (``numba.njit``) and for CUDA.

The drawing is assembled from small plain-Python functions, as in datashader's line
glyphs; :func:`build_pieces` compiles the same source once per target (``numba.njit`` for
the CPU, ``numba.cuda.jit(device=True)`` for CUDA, which under numba's CUDA simulator
runs the Python source itself):

* ``sample_y`` maps one µV sample to a fixed-point row position (1/256 px);
* ``edge_y`` finds where the segment between the two samples either side of a pixel
  column's edge crosses that edge (so a one-sample spike is drawn and consecutive columns
  connect); NaN/inf samples break the line;
* ``column_range`` finds the highest and lowest sample of a pixel column, compared as
  float32 values (the µV → row map is monotonic, so only these two are mapped), and
  ``column_extent`` joins their rows to the column's two edge crossings: the vertical
  extent of a channel's polyline inside the column;
* ``draw_span`` (anti-aliased or aliased, picked when the kernels are built) inks the
  rows of that extent, widened by half the line width: integer coverage quantised to the
  spec's ink levels, looked up in a per-channel shade table and combined with the page by
  ``min`` (darken), which does not depend on drawing order;
* :func:`build_render_kernels` closes over these and returns two drivers that differ only
  in their loops: a CPU kernel (``prange`` over epochs, then channel by channel, sweeping
  the columns and handing each column's right edge crossing on as the next one's left)
  and a CUDA kernel (one thread per epoch × pixel column, owning that column, so no two
  threads write one pixel; it finds both of its column's edge crossings).

Only one floating-point operation is done per mapped value (``value * gain``, then
truncation to an integer); the rest is comparisons and integer arithmetic with
precomputed column tables (:func:`column_edges`), so the CPU and CUDA builds (and the
CUDA simulator) give identical bytes whatever the compiler's FMA-contraction rules.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numba
import numpy as np
from numba import cuda

__all__ = [
    "ngjit",
    "column_edges",
    "Pieces",
    "build_pieces",
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
_INF = float("inf")


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


class Pieces(NamedTuple):
    """The drawing functions compiled for one target."""

    sample_y: object
    edge_y: object
    column_range: object
    column_extent: object
    draw_span: object


def _cuda_device(function):
    return cuda.jit(device=True)(function)


def _cpu_piece(tag: str):
    """``ngjit`` giving each piece a stable id, so kernels built on it hit numba's disk cache.

    numba keys the cache of a closure by a pickle of its cells, and a jitted function
    pickles with a random per-process id: without a stable one, every new process (pool
    worker, test subprocess) would compile the render kernels again (~6 s).
    """

    def jit(function):
        dispatcher = ngjit(function)
        dispatcher._set_uuid(f"psgvlm.raster.{tag}.{function.__name__}")
        return dispatcher

    return jit


@functools.cache
def build_pieces(target: str, antialias: bool, color: bool) -> Pieces:
    """Compile the drawing functions for ``target`` (``"cpu"`` or ``"cuda"``).

    Parameters
    ----------
    target : {"cpu", "cuda"}
        ``numba.njit`` or ``numba.cuda.jit(device=True)``.
    antialias : bool
        Coverage-quantised rows, or rows whose centre lies in the line (at least one).
    color : bool
        Pages with 3 planes (RGB) instead of 1 (grey).

    Returns
    -------
    Pieces
        ``sample_y(value, gain, mid_fx)``: fixed-point row (1/256 px) of a sample;
        ``edge_y(row, first, frac, edge, gain, mid_fx)``: fixed-point row where the line
        crosses column edge ``edge`` (``_EMPTY`` when it does not);
        ``column_range(row, start, stop, gain) -> (high, low)``: highest and lowest
        value of the samples ``start:stop`` of a column, ``(-inf, inf)`` when none counts;
        ``column_extent(high, low, left, right, gain, mid_fx) -> (top, bottom)``: their
        rows joined to the column's edge crossings ``left`` and ``right``;
        ``draw_span(page, width, column, top, bottom, first_row, last_row, half_width,
        levels, shades)``.
    """
    tag = f"{'aa' if antialias else 'aliased'}-{'rgb' if color else 'grey'}"
    jit = _cpu_piece(tag) if target == "cpu" else _cuda_device

    @jit
    def sample_y(value, gain, mid_fx):
        # Larger values go up. NaN -> _EMPTY (a gap); infinities clamp far off the image.
        scaled = value * gain
        if scaled >= Y_LIMIT_FX:
            return mid_fx - Y_LIMIT_FX
        if scaled <= -Y_LIMIT_FX:
            return mid_fx + Y_LIMIT_FX
        if scaled == scaled:
            return mid_fx - np.int64(scaled)  # truncation: the same on every target
        return _EMPTY

    @jit
    def edge_y(row, first, frac, edge, gain, mid_fx):
        # y where the segment (first[edge] - 1, first[edge]) crosses edge x = edge.
        edge_frac = frac[edge]
        if edge_frac < 0:
            return _EMPTY
        ya = sample_y(row[first[edge] - 1], gain, mid_fx)
        yb = sample_y(row[first[edge]], gain, mid_fx)
        if ya == _EMPTY or yb == _EMPTY:
            return _EMPTY
        return ya + (((yb - ya) * edge_frac) >> _FRAC_SHIFT)

    @jit
    def column_range(row, start, stop, gain):
        # Highest and lowest value of row[start:stop], as (-inf, inf) when there is none.
        # sample_y is monotonic (decreasing) in the value, so the column's extremes are
        # found first and mapped once each. Multiplying by `unit` turns the samples that
        # sample_y drops (NaN, and infinities when gain == 0) into NaN, which no
        # comparison picks.
        unit = np.float32(1.0 if gain > 0 else 0.0)
        high = np.float32(-_INF)
        low = np.float32(_INF)
        for i in range(start, stop):
            value = row[i] * unit
            high = value if value > high else high
            low = value if value < low else low
        return high, low

    @jit
    def column_extent(high, low, left, right, gain, mid_fx):
        # Rows of a column's highest and lowest value joined to its edge crossings left and
        # right; top > bottom when empty.
        top = _EMPTY
        bottom = -_EMPTY
        if high >= low:
            top = sample_y(high, gain, mid_fx)
            bottom = sample_y(low, gain, mid_fx)
        if left != _EMPTY:
            top = min(top, left)
            bottom = max(bottom, left)
        if right != _EMPTY:
            top = min(top, right)
            bottom = max(bottom, right)
        return top, bottom

    if antialias:

        @jit
        def row_level(row, upper, lower, levels):
            covered = min(lower, (row + 1) << _FX_SHIFT) - max(upper, row << _FX_SHIFT)
            return (covered * levels + _FX_HALF) >> _FX_SHIFT

        min_extent = 0
    else:

        @jit
        def row_level(row, upper, lower, levels):
            centre = (row << _FX_SHIFT) + _FX_HALF
            return levels if upper <= centre < lower else 0

        min_extent = _FX_ONE

    if color:

        @jit
        def ink_pixel(page, index, shades, level):
            for p in range(3):
                value = shades[level, p]
                if value < page[index + p]:
                    page[index + p] = value

    else:

        @jit
        def ink_pixel(page, index, shades, level):
            value = shades[level, 0]
            if value < page[index]:
                page[index] = value

    planes = 3 if color else 1

    @jit
    def draw_span(page, width, column, top, bottom, first_row, last_row, half_width, levels,
                  shades):  # fmt: skip
        # Ink rows first_row..last_row of the column over [top - hw, bottom + hw).
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
        stride = width * planes
        # End rows may be partly covered; the rows between them are fully covered.
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

    return Pieces(sample_y, edge_y, column_range, column_extent, draw_span)


@functools.cache
def build_render_kernels(antialias: bool, color: bool):
    """Build the CPU and the CUDA render kernel from the same drawing functions.

    Both take ``(signals, blank, pages, width, first, frac, gain, mid_fx, first_row,
    last_row, shades, half_width, levels)``: ``signals`` float32 ``(N, C, S)``, ``blank``
    the background flattened to uint8 ``(H * W * P,)``, ``pages`` the output as uint8
    ``(N, H * W * P)``, ``first``/``frac`` from :func:`column_edges`, the rest from
    :class:`~engine.raster.layout.Layout`. Pixels combine by ``min``, so the two loop
    orders give the same bytes.

    Returns
    -------
    render_cpu : numba dispatcher
        Parallel (``prange``) over epochs; draws channel by channel so a strip stays in
        cache, and hands each column's right edge crossing on as the next one's left.
    render_cuda : numba CUDA kernel
        Launched on a 2-D grid of (epoch, column) threads; each thread owns one pixel
        column of one image, so no two threads write the same pixel.
    """
    cpu = build_pieces("cpu", antialias, color)
    gpu = build_pieces("cuda", antialias, color)
    cpu_edge, cpu_range, cpu_extent, cpu_draw = (
        cpu.edge_y, cpu.column_range, cpu.column_extent, cpu.draw_span
    )  # fmt: skip
    gpu_edge, gpu_range, gpu_extent, gpu_draw = (
        gpu.edge_y, gpu.column_range, gpu.column_extent, gpu.draw_span
    )  # fmt: skip
    planes = 3 if color else 1

    @numba.njit(parallel=True, nogil=True, cache=True)
    def render_cpu(
        signals, blank, pages, width, first, frac, gain, mid_fx, first_row, last_row, shades,
        half_width, levels,
    ):  # fmt: skip
        for n in numba.prange(signals.shape[0]):
            page = pages[n]
            for index in range(blank.shape[0]):  # compiles to memcpy (page[:] = blank: no)
                page[index] = blank[index]
            for c in range(signals.shape[1]):
                row = signals[n, c]
                channel_gain = gain[c]
                channel_mid = mid_fx[c]
                channel_first = first_row[c]
                channel_last = last_row[c]
                channel_shades = shades[c]
                left = cpu_edge(row, first, frac, 0, channel_gain, channel_mid)
                for column in range(width):
                    right = cpu_edge(row, first, frac, column + 1, channel_gain, channel_mid)
                    high, low = cpu_range(row, first[column], first[column + 1], channel_gain)
                    top, bottom = cpu_extent(high, low, left, right, channel_gain, channel_mid)
                    if top <= bottom:
                        cpu_draw(
                            page, width, column, top, bottom, channel_first, channel_last,
                            half_width, levels, channel_shades,
                        )  # fmt: skip
                    left = right

    @cuda.jit
    def render_cuda(
        signals, blank, pages, width, first, frac, gain, mid_fx, first_row, last_row, shades,
        half_width, levels,
    ):  # fmt: skip
        n, column = cuda.grid(2)
        if n < pages.shape[0] and column < width:
            page = pages[n]
            for index in range(column * planes, blank.shape[0], width * planes):
                for p in range(planes):
                    page[index + p] = blank[index + p]
            for c in range(signals.shape[1]):
                row = signals[n, c]
                left = gpu_edge(row, first, frac, column, gain[c], mid_fx[c])
                right = gpu_edge(row, first, frac, column + 1, gain[c], mid_fx[c])
                high, low = gpu_range(row, first[column], first[column + 1], gain[c])
                top, bottom = gpu_extent(high, low, left, right, gain[c], mid_fx[c])
                if top <= bottom:
                    gpu_draw(
                        page, width, column, top, bottom, first_row[c], last_row[c], half_width,
                        levels, shades[c],
                    )  # fmt: skip

    return render_cpu, render_cuda
