"""Line-raster kernels: one source, compiled for the CPU (``numba.njit``) and for CUDA.

The drawing is assembled from small plain-Python functions, as in datashader's line
glyphs; :func:`build_pieces` compiles the same source once per target (``numba.njit`` for
the CPU, ``numba.cuda.jit(device=True)`` for CUDA, which under numba's CUDA simulator
runs the Python source itself):

* ``sample_y`` maps one µV sample to a fixed-point row position (1/256 px);
* ``crossing_y`` (and ``edge_y``, which reads its two samples) finds where the segment
  between the two samples either side of a pixel column's edge crosses that edge (so a
  one-sample spike is drawn and consecutive columns connect); NaN samples break the line;
* ``column_range`` finds the highest and lowest sample of a pixel column, compared as
  float32 values (the µV → row map is monotonic, so only these two are mapped), and
  ``column_extent`` joins their rows to the column's two edge crossings: the vertical
  extent of a channel's polyline inside the column;
* ``span_bounds`` widens that extent by half the line width and clips it to the strip;
  ``span_rows`` gives the first and last row it touches, ``row_level`` a row's coverage
  quantised to the spec's ink levels (anti-aliased or aliased, picked when the kernels
  are built), and ``ink_shade`` the pixel value of a level of a channel's ink; pixels
  combine with the page by ``min`` (darken), which does not depend on drawing order;
  ``draw_span`` inks one column's span with them;
* :func:`build_render_kernels` closes over these and returns two drivers that differ only
  in their loops: a CPU kernel (``prange`` over epochs, or a plain loop for a process
  that draws on one thread, then channel by channel in
  branch-free passes over arrays that LLVM vectorises: a sparse table of running
  highs/lows answers every column's range with two lookups, then all edge crossings,
  all spans' bounds, their end rows' levels and inks, and last a row-major sweep of the
  channel's band of rows that inks every pixel from its column's span, 32 uint8 lanes at a
  time) and a CUDA kernel (one thread per epoch × pixel column, owning that column, so no
  two threads write one pixel; it scans its column's samples with ``column_range``, finds
  both of its edge crossings and draws its spans with ``draw_span``).

Only one floating-point operation is done per mapped value (``value * gain``, then
clamping and truncation to an integer), plus ``ink_shade``'s division, whose result is
exact; the rest is comparisons and integer arithmetic with precomputed column tables
(:func:`column_tables`), so the CPU and CUDA builds (and the CUDA simulator) give
identical bytes whatever the compiler's FMA-contraction rules.
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
    "column_tables",
    "ColumnTables",
    "Pieces",
    "build_pieces",
    "build_render_kernels",
    "Y_LIMIT_FX",
    "FRAC_ONE",
]

#: numba.njit for kernel pieces: no GIL, no fastmath, cached on disk.
ngjit = numba.njit(nogil=True, cache=True)
#: The same, inlined into its callers by numba (LLVM leaves larger pieces as calls).
_inline_ngjit = numba.njit(nogil=True, cache=True, inline="always")

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


class ColumnTables(NamedTuple):
    """Where each pixel column finds its samples, for the CPU and CUDA kernels.

    Attributes
    ----------
    first, frac : int64 (width + 1,)
        From :func:`column_edges`.
    before, after : int64 (width + 1,)
        Samples either side of each column edge (``first - 1`` and ``first``), clamped
        into the signal so they can always be read; ``frac < 0`` marks the edges no
        segment crosses.
    query_a, query_b : int64 (width,)
        Column ``j``'s highest sample is ``max(table[query_a[j]], table[query_b[j]])`` in
        the sparse table of running maxima (level ``k`` holds the maximum of ``2 ** k``
        samples, at ``k * n_samples``), and likewise for the lowest; an empty column
        points both at the sentinel ``n_levels * n_samples``.
    n_levels : int
        Levels of the sparse table (1 + floor(log2(most samples in a column))).
    first_level : int
        The lowest level any column reads, at most 2: the CPU kernel builds it straight
        from the samples (windows of 1, 2 or 4) and the levels above by doubling; the
        levels below it are never read, so never built.
    """

    first: np.ndarray
    frac: np.ndarray
    before: np.ndarray
    after: np.ndarray
    query_a: np.ndarray
    query_b: np.ndarray
    n_levels: int
    first_level: int


@functools.lru_cache(maxsize=64)
def column_tables(n_samples: int, width: int) -> ColumnTables:
    """The :class:`ColumnTables` of ``n_samples`` samples drawn across ``width`` columns."""
    first, frac = column_edges(n_samples, width)
    before = np.clip(first - 1, 0, n_samples - 1)
    after = np.clip(first, 0, n_samples - 1)
    start, stop = first[:-1], first[1:]
    lengths = stop - start
    level = np.zeros(width, np.int64)
    filled = lengths > 0
    level[filled] = np.floor(np.log2(lengths[filled])).astype(np.int64)
    level[filled & (np.left_shift(1, level + 1) <= lengths)] += 1  # guard log2 rounding
    n_levels = int(level.max()) + 1
    sentinel = n_levels * n_samples
    query_a = np.where(filled, level * n_samples + start, sentinel)
    query_b = np.where(filled, level * n_samples + stop - np.left_shift(1, level), sentinel)
    first_level = min(int(level[filled].min()), 2)
    tables = ColumnTables(first, frac, before, after, query_a, query_b, n_levels, first_level)
    for array in tables[:-2]:
        array.setflags(write=False)
    return tables


class Pieces(NamedTuple):
    """The drawing functions compiled for one target."""

    sample_y: object
    crossing_y: object
    edge_y: object
    column_range: object
    column_extent: object
    span_bounds: object
    span_rows: object
    row_level: object
    ink_shade: object
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
        dispatcher = _inline_ngjit(function)
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
        ``crossing_y(before, after, frac, gain, mid_fx)``: fixed-point row where the
        segment between samples ``before`` and ``after`` crosses a column edge at
        ``frac`` (``_EMPTY`` when it does not); ``edge_y(row, before, after, frac, edge,
        gain, mid_fx)`` reads the samples of edge ``edge`` (:class:`ColumnTables`);
        ``column_range(row, start, stop, gain) -> (high, low)``: highest and lowest
        value of the samples ``start:stop`` of a column, ``(-inf, inf)`` when none counts;
        ``column_extent(high, low, left, right, gain, mid_fx) -> (top, bottom)``: their
        rows joined to the column's edge crossings ``left`` and ``right``;
        ``span_bounds(top, bottom, half_width, first_row, last_row) -> (upper, lower)``:
        the fixed-point rows the column's ink covers, clipped to a strip (``(0, 0)`` when
        none); ``span_rows(upper, lower) -> (first, last)``: the rows they touch;
        ``row_level(row, upper, lower, levels)``: a row's ink level (0 = none);
        ``ink_shade(level, ink, levels)``: the pixel value of ``level`` of an ink value;
        ``draw_span(page, width, column, upper, lower, levels, ink)`` inks a span.
    """
    tag = f"{'aa' if antialias else 'aliased'}-{'rgb' if color else 'grey'}"
    jit = _cpu_piece(tag) if target == "cpu" else _cuda_device

    @jit
    def sample_y(value, gain, mid_fx):
        # Larger values go up. NaN -> _EMPTY (a gap); infinities clamp far off the image.
        # Branch-free (selects), so that loops over it vectorise; truncation of the clamped
        # value is the same on every target.
        scaled = value * gain
        clamped = min(max(scaled, -Y_LIMIT_FX), Y_LIMIT_FX) if scaled == scaled else 0.0
        row = mid_fx - np.int64(np.int32(clamped))
        return row if scaled == scaled else _EMPTY

    @jit
    def crossing_y(before, after, edge_frac, gain, mid_fx):
        # y where the segment from sample value `before` to `after` crosses the edge.
        ya = sample_y(before, gain, mid_fx)
        yb = sample_y(after, gain, mid_fx)
        y = ya + (((yb - ya) * edge_frac) >> _FRAC_SHIFT)
        return y if edge_frac >= 0 and ya != _EMPTY and yb != _EMPTY else _EMPTY

    @jit
    def edge_y(row, before, after, frac, edge, gain, mid_fx):
        return crossing_y(row[before[edge]], row[after[edge]], frac[edge], gain, mid_fx)

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
        # right; top > bottom when empty. Selects only, so the CPU loop over it vectorises.
        filled = high >= low
        top = sample_y(high, gain, mid_fx) if filled else _EMPTY
        bottom = sample_y(low, gain, mid_fx) if filled else -_EMPTY
        top = min(top, left) if left != _EMPTY else top
        bottom = max(bottom, left) if left != _EMPTY else bottom
        top = min(top, right) if right != _EMPTY else top
        bottom = max(bottom, right) if right != _EMPTY else bottom
        return top, bottom

    if antialias:

        @jit
        def row_level(row, upper, lower, levels):
            # covered is 0-256 on a row the span touches (the only rows asked), levels at
            # most 255: as int32 factors the product is one vector multiply, not three.
            covered = min(lower, (row + 1) << _FX_SHIFT) - max(upper, row << _FX_SHIFT)
            product = np.int64(np.int32(covered)) * np.int64(np.int32(levels))
            return (product + _FX_HALF) >> _FX_SHIFT

        min_extent = 0
    else:

        @jit
        def row_level(row, upper, lower, levels):
            centre = (row << _FX_SHIFT) + _FX_HALF
            return levels if upper <= centre < lower else 0

        min_extent = _FX_ONE

    planes = 3 if color else 1

    @jit
    def ink_shade(level, ink, levels):
        # 255 - floor(level * (255 - ink) / levels): a pixel inked to `level` of `levels`.
        # Exact in float32 (the product is below 2**16 and the quotient below 256, so its
        # rounding error is far below the 1 / levels between a fraction and an integer),
        # which lets the CPU passes vectorise it where an integer division would not. The
        # factors are converted before multiplying: an int64 product has no vector
        # conversion to float32 on x86, so that pass would run one element at a time.
        return 255 - np.int32(np.float32(level) * np.float32(255 - ink) / np.float32(levels))

    @jit
    def ink_pixel(page, index, ink, level, levels):
        # Darken: an unconditional store of the min (a branch here mispredicts).
        for p in range(planes):
            value = ink_shade(level, np.int32(ink[p]), levels)
            old = page[index + p]
            page[index + p] = value if value < old else old

    @jit
    def span_bounds(top, bottom, half_width, first_row, last_row):
        # The column's ink, [top - hw, bottom + hw) (at least min_extent tall), clipped to
        # rows first_row..last_row; (0, 0) when nothing is drawn. Selects only.
        filled = top <= bottom
        upper = top - half_width
        lower = bottom + half_width
        shortfall = max(min_extent - (lower - upper), 0)
        upper -= shortfall >> 1
        lower += shortfall - (shortfall >> 1)
        upper = max(upper, first_row << _FX_SHIFT)
        lower = min(lower, (last_row + 1) << _FX_SHIFT)
        return (upper, lower) if filled and upper < lower else (0, 0)

    @jit
    def span_rows(upper, lower):
        # First and last row a span [upper, lower) touches (row 0 twice when empty).
        row_start = upper >> _FX_SHIFT
        return row_start, max((lower - 1) >> _FX_SHIFT, row_start)

    @jit
    def draw_span(page, width, column, upper, lower, levels, ink):
        # Ink the rows of the column that [upper, lower) covers (upper < lower).
        row_start, row_stop = span_rows(upper, lower)
        stride = width * planes
        # End rows may be partly covered; the rows between them are fully covered. A
        # one-row span inks its row twice at the same level, so the ends need no branches.
        index = (row_start * width + column) * planes
        ink_pixel(page, index, ink, row_level(row_start, upper, lower, levels), levels)
        for _ in range(row_start + 1, row_stop):
            index += stride
            ink_pixel(page, index, ink, levels, levels)
        index = (row_stop * width + column) * planes
        ink_pixel(page, index, ink, row_level(row_stop, upper, lower, levels), levels)

    return Pieces(
        sample_y, crossing_y, edge_y, column_range, column_extent, span_bounds, span_rows,
        row_level, ink_shade, draw_span,
    )  # fmt: skip


@_inline_ngjit
def _raise(high, value):
    # The larger of a running high and a value; a NaN value leaves the high (one vmaxps).
    return value if value > high else high


@_inline_ngjit
def _lower(low, value):
    # The smaller of a running low and a value; a NaN value leaves the low (one vminps).
    return value if value < low else low


_raise._set_uuid("psgvlm.raster.raise")
_lower._set_uuid("psgvlm.raster.lower")


@ngjit
def _fill_tables(row, unit, highs, lows, first_level, n_levels):
    """Sparse tables of running maxima / minima of ``row * unit`` (NaN dropped).

    Level ``k`` (at ``k * len(row)``) holds the max/min of samples ``i .. i + 2**k - 1``;
    the sentinel after the last level is -inf / +inf (an empty column). Samples that
    ``sample_y`` drops (NaN, and infinities when ``unit`` is 0) count as -inf / +inf.
    Level ``first_level`` (0, 1 or 2) is built straight from the samples, the levels
    above it by doubling; the levels below it are left unwritten.
    """
    n_samples = row.shape[0]
    span = 1 << first_level
    count = n_samples - span + 1
    start = first_level * n_samples
    high_out, low_out = highs[start : start + count], lows[start : start + count]
    empty_high, empty_low = np.float32(-_INF), np.float32(_INF)
    if first_level == 0:
        for i in range(count):
            value = row[i] * unit
            high_out[i] = _raise(empty_high, value)
            low_out[i] = _lower(empty_low, value)
    elif first_level == 1:
        for i in range(count):
            a, b = row[i] * unit, row[i + 1] * unit
            high_out[i] = _raise(_raise(empty_high, a), b)
            low_out[i] = _lower(_lower(empty_low, a), b)
    else:
        for i in range(count):
            a, b = row[i] * unit, row[i + 1] * unit
            c, d = row[i + 2] * unit, row[i + 3] * unit
            high_out[i] = _raise(_raise(_raise(_raise(empty_high, a), b), c), d)
            low_out[i] = _lower(_lower(_lower(_lower(empty_low, a), b), c), d)
    for level in range(first_level + 1, n_levels):
        half = 1 << (level - 1)
        count = n_samples - (1 << level) + 1
        source = (level - 1) * n_samples
        target = level * n_samples
        high_a, high_b = (
            highs[source : source + count],
            highs[source + half : source + half + count],
        )
        low_a, low_b = lows[source : source + count], lows[source + half : source + half + count]
        high_out, low_out = highs[target : target + count], lows[target : target + count]
        for i in range(count):
            high_out[i] = max(high_a[i], high_b[i])
            low_out[i] = min(low_a[i], low_b[i])
    highs[n_levels * n_samples] = np.float32(-_INF)
    lows[n_levels * n_samples] = np.float32(_INF)


_fill_tables._set_uuid("psgvlm.raster.fill_tables")


@functools.cache
def build_render_kernels(antialias: bool, color: bool, parallel: bool = True):
    """Build the CPU and the CUDA render kernel from the same drawing functions.

    ``parallel=False`` builds the CPU kernel with a plain loop over epochs instead of
    ``prange``, for a process that draws on one thread (a ``--workers N`` worker on its
    core): it makes the same pixels without the threading layer's dispatch, which under
    numba's ``workqueue`` layer (the fork-safe one the workers use) made the render path
    about 5 % slower at one thread (``scripts/threading_layer_check.py``; bench/RESULTS.md).

    Both start ``(signals, blank, pages, width, ...)``: ``signals`` float32 ``(N, C, S)``,
    ``blank`` the background flattened to uint8 ``(H * W * P,)``, ``pages`` the output as
    uint8 ``(N, H * W * P)``, and end ``(gain, mid_fx, first_row, last_row, ink,
    half_width, levels)`` from :class:`~engine.raster.layout.Layout`. Between them come
    the :class:`ColumnTables` fields each one reads: ``frac, before, after, query_a,
    query_b, n_levels, first_level`` for the CPU, ``first, frac, before, after`` for CUDA. Pixels
    combine by ``min``, so the two loop orders give the same bytes.

    Returns
    -------
    render_cpu : numba dispatcher
        Parallel (``prange``) over epochs unless ``parallel`` is False; per channel,
        vectorisable passes compute every column's span (sparse-table range lookups, edge
        crossings, extents, bounds, end rows and their inks), then a row-major sweep of
        the channel's rows draws them.
    render_cuda : numba CUDA kernel
        Launched on a 2-D grid of (epoch, column) threads; each thread owns one pixel
        column of one image, so no two threads write the same pixel.
    """
    cpu = build_pieces("cpu", antialias, color)
    gpu = build_pieces("cuda", antialias, color)
    cpu_crossing, cpu_extent, cpu_bounds, cpu_rows, cpu_level, cpu_shade = (
        cpu.crossing_y, cpu.column_extent, cpu.span_bounds, cpu.span_rows, cpu.row_level,
        cpu.ink_shade,
    )  # fmt: skip
    gpu_edge, gpu_range, gpu_extent, gpu_bounds, gpu_draw = (
        gpu.edge_y, gpu.column_range, gpu.column_extent, gpu.span_bounds, gpu.draw_span
    )  # fmt: skip
    planes = 3 if color else 1
    white = np.uint8(255)
    # a closure variable: it is part of the cache key, so the two builds never share an entry
    epochs = numba.prange if parallel else range

    @numba.njit(parallel=parallel, nogil=True, cache=True)
    def render_cpu(
        signals, blank, pages, width, frac, before, after, query_a, query_b, n_levels,
        first_level, gain, mid_fx, first_row, last_row, ink, half_width, levels,
    ):  # fmt: skip
        n_samples = signals.shape[2]
        line = width * planes
        levels32 = np.int32(levels)
        for n in epochs(signals.shape[0]):
            page = pages[n]
            for index in range(blank.shape[0]):  # compiles to memcpy (page[:] = blank: no)
                page[index] = blank[index]
            highs = np.empty(n_levels * n_samples + 1, np.float32)
            lows = np.empty(n_levels * n_samples + 1, np.float32)
            column_high = np.empty(width, np.float32)
            column_low = np.empty(width, np.float32)
            value_before = np.empty(width + 1, np.float32)
            value_after = np.empty(width + 1, np.float32)
            crossing = np.empty(width + 1, np.int64)
            lefts, rights = crossing[:width], crossing[1:]
            uppers = np.empty(width, np.int64)
            lowers = np.empty(width, np.int64)
            start_rows = np.empty(width, np.int64)
            stop_rows = np.empty(width, np.int64)
            start_levels = np.empty(width, np.int32)
            stop_levels = np.empty(width, np.int32)
            # Per sub-pixel of a page line: the ink of the span's first and last row and of
            # the rows between, and the span's first and last row as marks (below).
            start_inks = np.empty(line, np.uint8)
            stop_inks = np.empty(line, np.uint8)
            full_inks = np.empty(line, np.uint8)
            start_marks = np.empty(line, np.uint8)
            stop_marks = np.empty(line, np.uint8)
            for c in range(signals.shape[1]):
                row = signals[n, c]
                channel_gain = gain[c]
                channel_mid = mid_fx[c]
                _fill_tables(row, np.float32(1.0 if channel_gain > 0 else 0.0), highs, lows,
                             first_level, n_levels)  # fmt: skip
                # Gathered indices as unsigned: numba then skips the negative-index
                # wrap-around arithmetic on every load.
                for column in range(width):
                    a, b = np.uint64(query_a[column]), np.uint64(query_b[column])
                    column_high[column] = max(highs[a], highs[b])
                    column_low[column] = min(lows[a], lows[b])
                for edge in range(width + 1):
                    value_before[edge] = row[np.uint64(before[edge])]
                    value_after[edge] = row[np.uint64(after[edge])]
                for edge in range(width + 1):
                    crossing[edge] = cpu_crossing(
                        value_before[edge], value_after[edge], frac[edge], channel_gain,
                        channel_mid,
                    )  # fmt: skip
                channel_first = first_row[c]
                channel_last = last_row[c]
                for column in range(width):
                    top, bottom = cpu_extent(
                        column_high[column], column_low[column], lefts[column], rights[column],
                        channel_gain, channel_mid,
                    )  # fmt: skip
                    uppers[column], lowers[column] = cpu_bounds(
                        top, bottom, half_width, channel_first, channel_last
                    )
                # Rows and coverage levels of each span's ends; the band of rows inked.
                band_top = channel_last + 1
                band_bottom = channel_first - 1
                for column in range(width):
                    upper, lower = uppers[column], lowers[column]
                    filled = upper < lower
                    row_start, row_stop = cpu_rows(upper, lower)
                    start_rows[column] = row_start
                    stop_rows[column] = row_stop
                    start_levels[column] = (
                        cpu_level(row_start, upper, lower, levels) if filled else 0
                    )
                    stop_levels[column] = cpu_level(row_stop, upper, lower, levels) if filled else 0
                    band_top = min(band_top, row_start) if filled else band_top
                    band_bottom = max(band_bottom, row_stop) if filled else band_bottom
                for p in range(planes):
                    channel_ink = np.int32(ink[c, p])
                    full = np.uint8(cpu_shade(levels32, channel_ink, levels32))
                    for column in range(width):
                        k = column * planes + p
                        start_inks[k] = np.uint8(
                            cpu_shade(start_levels[column], channel_ink, levels32)
                        )
                        stop_inks[k] = np.uint8(
                            cpu_shade(stop_levels[column], channel_ink, levels32)
                        )
                        full_inks[k] = full
                # Row-major sweep over the band, in chunks of 254 rows: a span's first and
                # last row become marks row - base + 1 clamped to 0..255, so the chunk's rows
                # (marks 1..254) compare as uint8 lanes.
                for base in range(band_top, band_bottom + 1, 254):
                    for column in range(width):
                        start_mark = np.uint8(min(max(start_rows[column] - base + 1, 0), 255))
                        stop_mark = np.uint8(min(max(stop_rows[column] - base + 1, 0), 255))
                        for p in range(planes):
                            start_marks[column * planes + p] = start_mark
                            stop_marks[column * planes + p] = stop_mark
                    for page_row in range(base, min(base + 254, band_bottom + 1)):
                        pixels = page[page_row * line : (page_row + 1) * line]
                        mark = np.uint8(page_row - base + 1)
                        for k in range(line):
                            # Every load unconditional: a load under a select does not vectorise.
                            first, last = start_marks[k], stop_marks[k]
                            first_ink, last_ink, full = start_inks[k], stop_inks[k], full_inks[k]
                            value = full if (first < mark) & (mark < last) else white
                            value = first_ink if mark == first else value
                            value = last_ink if mark == last else value
                            old = pixels[k]
                            pixels[k] = value if value < old else old

    @cuda.jit
    def render_cuda(
        signals, blank, pages, width, first, frac, before, after, gain, mid_fx, first_row,
        last_row, ink, half_width, levels,
    ):  # fmt: skip
        n, column = cuda.grid(2)
        if n < pages.shape[0] and column < width:
            page = pages[n]
            for index in range(column * planes, blank.shape[0], width * planes):
                for p in range(planes):
                    page[index + p] = blank[index + p]
            for c in range(signals.shape[1]):
                row = signals[n, c]
                left = gpu_edge(row, before, after, frac, column, gain[c], mid_fx[c])
                right = gpu_edge(row, before, after, frac, column + 1, gain[c], mid_fx[c])
                high, low = gpu_range(row, first[column], first[column + 1], gain[c])
                top, bottom = gpu_extent(high, low, left, right, gain[c], mid_fx[c])
                upper, lower = gpu_bounds(top, bottom, half_width, first_row[c], last_row[c])
                if upper < lower:
                    gpu_draw(page, width, column, upper, lower, levels, ink[c])

    return render_cpu, render_cuda
