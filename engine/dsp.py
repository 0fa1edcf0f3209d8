"""Fast resampling and zero-phase filtering: scipy.signal's results, without scipy.

:mod:`engine.preprocess` used to call ``scipy.signal.resample_poly`` and
``scipy.signal.sosfiltfilt`` on each channel; on a 256-Hz night they cost ten times the
drawing, and importing ``scipy.signal`` alone took over a second in every render worker.
This module computes the same two things with NumPy-only filter designs and numba kernels:

``resample_poly(x, up, down)``
    The same polyphase filter as scipy's (a Kaiser-windowed sinc of ``20 * max(up, down)
    + 1`` taps at the up-sampled rate, ``beta = 5``, zero padding at both ends), the same
    output length and alignment. Each output sample is one dot product of the phase's taps
    (reversed, padded to a multiple of 8) with a contiguous slice of the input, in float32:
    outputs equal scipy's float64 ones to ~1e-6 of the signal's range.

``sosfiltfilt(sos, x, padlen)``
    scipy's forward-backward filter (odd extension of ``padlen`` samples at each end,
    initial states ``sosfilt_zi(sos) * first sample``), in float64. The signal is cut into
    8 chunks filtered side by side in the 8 lanes of one vector register: each chunk
    starts ``warmup`` samples early from a zero state (and runs ``warmup`` samples past
    its end for the backward pass), which is long enough for the filter's slowest pole to
    forget the difference (``|pole| ** warmup < 1e-13``); the first chunk starts from
    scipy's initial state. Band-pass cascades (numerators ``g * (1, 0, -1)``) run without
    their gains, three operations a section instead of five, four sections to a pass over
    the lanes each way, and are scaled once at the end. Outputs equal scipy's to ~1e-12
    of the signal's range.

Filter designs (:func:`butter_sos`, :func:`notch_sos`, :func:`resample_taps`,
:func:`sosfilt_zi`) follow scipy's formulas (bilinear transform of the analog Butterworth
prototype with pre-warped edges; ``iirnotch``; ``firwin``) and are cached per (band,
rate); their responses are tested against scipy's in ``tests/test_dsp.py``.

The per-sample arithmetic (:func:`biquad_step`, :func:`fir_dot`, :func:`ext_value`) is
plain Python compiled by numba for the CPU here and for CUDA in :mod:`engine.dsp_cuda`
(:func:`bandpass_step`, the gain-free band-pass section, only on the CPU),
which runs the same two algorithms on the device (one thread per output sample for the
resampler, one thread per chunk for the filters).
"""

from __future__ import annotations

import contextlib
import functools
import math
import threading
from collections.abc import Iterator, Sequence

import numba
import numpy as np

__all__ = [
    "LANES",
    "butter_sos",
    "notch_sos",
    "sosfilt_zi",
    "resample_taps",
    "PolyphasePlan",
    "polyphase_plan",
    "FilterStage",
    "filter_stage",
    "resample_poly",
    "sosfiltfilt",
    "warmup_length",
    "biquad_step",
    "bandpass_step",
    "fir_dot",
    "ext_value",
    "all_finite",
]

#: Chunks filtered side by side by the CPU kernel (8 float64 = one 512-bit register).
LANES = 8
#: Sections per pass of the CPU filter kernel (short cascades are padded with y = x).
_GROUP = 2
#: Sections per pass of the gain-free band-pass kernel, when the cascade divides into
#: them (pairs otherwise): four sections' states fill 8 of the 32 vector registers, and
#: each pass over the lanes costs a read and a write of the whole signal.
_BANDPASS_GROUP = 4
#: Rows moved per step by the pack and unpack kernels: a block of rows x lanes is read
#: (or written) as one contiguous run per lane, ~1.5x faster than a row at a time.
_BLOCK_ROWS = 8
#: Taps of each phase of the resampler are padded to a multiple of this (vector width).
_TAP_MULTIPLE = 8
#: A chunk's warm-up lets the slowest pole decay below this (relative to the state).
_WARMUP_EPS = 1e-13
_MIN_WARMUP, _MAX_WARMUP = 64, 1 << 22
#: Largest up-sampling factor the polyphase kernel takes (scipy beyond it).
MAX_UP = 512

_FASTMATH = {"contract", "reassoc"}


# ----------------------------------------------------------------------------------------
# Filter design (NumPy only; scipy.signal's formulas)
# ----------------------------------------------------------------------------------------
def _bilinear_sections(zeros: np.ndarray, poles: np.ndarray, gain: float, fs: float) -> np.ndarray:
    """Second-order sections of an analog (zeros, poles, gain) design (fs = 2 normalised).

    scipy's ``bilinear_zpk`` with ``fs=2`` maps the s-plane to the z-plane; sections pair
    each complex pole with its conjugate (real poles two by two) and take the zeros in the
    order given. The gain goes to the first section.
    """
    del fs
    fs2 = 4.0
    degree = poles.size - zeros.size
    z = (fs2 + zeros) / (fs2 - zeros)
    p = (fs2 + poles) / (fs2 - poles)
    z = np.concatenate([z, -np.ones(degree)])
    k = gain * np.real(np.prod(fs2 - zeros) / np.prod(fs2 - poles))
    upper = p[np.imag(p) > 1e-12 * np.abs(p).max()]
    real = np.sort(np.real(p[np.abs(np.imag(p)) <= 1e-12 * np.abs(p).max()]))
    pairs: list[tuple[complex, complex]] = [(q, np.conj(q)) for q in upper]
    for i in range(0, real.size - 1, 2):
        pairs.append((real[i], real[i + 1]))
    if real.size % 2:
        pairs.append((real[-1], 0.0))
    zeros_left = list(np.real(z))
    sections = np.zeros((len(pairs), 6))
    for i, (a, b) in enumerate(pairs):
        # Every zero of a Butterworth design is real (+1 or -1): two per section, and a
        # section with a single real pole gets a single zero.
        count = 1 if b == 0.0 and np.imag(a) == 0 else 2
        chosen = [zeros_left.pop(0) for _ in range(min(count, len(zeros_left)))]
        num = np.real(np.poly(chosen)) if chosen else np.array([1.0])
        den = np.real(np.poly([a, b] if count == 2 else [a]))
        sections[i, : num.size] = num
        sections[i, 3 : 3 + den.size] = den
    sections[0, :3] *= k
    return sections


def butter_sos(order: int, edges: tuple[float, ...] | float, btype: str, fs: float) -> np.ndarray:
    """``scipy.signal.butter(order, edges, btype, fs=fs, output="sos")``, in NumPy.

    Parameters
    ----------
    order : int
        Order of each band edge.
    edges : float or (low, high)
        Edge frequencies in Hz.
    btype : {"lowpass", "highpass", "bandpass"}
    fs : float
        Sampling rate in Hz.

    Returns
    -------
    numpy.ndarray
        ``(n_sections, 6)`` float64: the same transfer function as scipy's (sections may
        be paired and ordered differently).
    """
    edges = tuple(np.atleast_1d(edges).astype(float).tolist())
    return _butter_sos(int(order), edges, btype, float(fs)).copy()


@functools.lru_cache(maxsize=256)
def _butter_sos(order: int, edges: tuple[float, ...], btype: str, fs: float) -> np.ndarray:
    if order < 1:
        raise ValueError(f"order must be at least 1, got {order}")
    wn = 2.0 * np.atleast_1d(np.asarray(edges, dtype=np.float64)) / fs
    if np.any(wn <= 0) or np.any(wn >= 1):
        raise ValueError(f"band edges must lie between 0 and fs/2 ({fs / 2:g} Hz), got {edges}")
    warped = 4.0 * np.tan(np.pi * wn / 2.0)
    m = np.arange(-order + 1, order, 2)
    proto = -np.exp(1j * np.pi * m / (2 * order))
    if btype == "lowpass":
        zeros, poles, gain = np.zeros(0), proto * warped[0], float(warped[0] ** order)
    elif btype == "highpass":
        zeros = np.zeros(order)
        poles = warped[0] / proto
        gain = float(np.real(1.0 / np.prod(-proto)))
    elif btype == "bandpass":
        if wn.size != 2 or not wn[0] < wn[1]:
            raise ValueError(f"a band-pass needs two increasing edges, got {edges}")
        bw = warped[1] - warped[0]
        wo = math.sqrt(warped[0] * warped[1])
        lp = proto * bw / 2.0
        root = np.sqrt(lp**2 - wo**2)
        poles = np.concatenate([lp + root, lp - root])
        zeros = np.zeros(order)
        gain = float(bw**order)
    else:
        raise ValueError(f"btype must be lowpass, highpass or bandpass, got {btype!r}")
    # Zeros after the transform: +1 for each analog zero at s = 0, -1 for the rest; a
    # band-pass section gets one of each.
    sections = _bilinear_sections(zeros, poles, gain, fs)
    if btype == "bandpass":
        for section in sections:
            scale = section[0]
            section[:3] = scale * np.array([1.0, 0.0, -1.0])
    sections.setflags(write=False)
    return sections


def notch_sos(frequency: float, q: float, fs: float) -> np.ndarray:
    """``tf2sos(*scipy.signal.iirnotch(frequency, q, fs=fs))``: one section."""
    w0 = 2.0 * frequency / fs
    if not 0 < w0 < 1:
        raise ValueError(f"notch frequency must lie between 0 and fs/2, got {frequency}")
    bw = w0 / q * np.pi
    w0 *= np.pi
    beta = math.tan(bw / 2.0)  # gb = 1/sqrt(2): sqrt(1 - gb**2) / gb = 1
    gain = 1.0 / (1.0 + beta)
    section = np.array(
        [[gain, -2.0 * gain * math.cos(w0), gain, 1.0, -2.0 * gain * math.cos(w0), 2 * gain - 1]]
    )
    return section


def sosfilt_zi(sos: np.ndarray) -> np.ndarray:
    """``scipy.signal.sosfilt_zi``: steady-state section states for a unit step input."""
    sos = np.asarray(sos, dtype=np.float64)
    zi = np.empty((sos.shape[0], 2))
    scale = 1.0
    for i, (b0, b1, b2, a0, a1, a2) in enumerate(sos):
        b0, b1, b2, a1, a2 = b0 / a0, b1 / a0, b2 / a0, a1 / a0, a2 / a0
        first, second = b1 - a1 * b0, b2 - a2 * b0
        z0 = (first + second) / (1.0 + a1 + a2)
        zi[i] = scale * np.array([z0, second - a2 * z0])
        scale *= (b0 + b1 + b2) / (1.0 + a1 + a2)
    return zi


def _section_coefficients(sos: np.ndarray) -> np.ndarray:
    """``(n_groups, 4, 5)`` float64: (b0, b1, b2, a1, a2) normalised by a0, in fours.

    The last group is completed with pass-through sections (y = x).
    """
    sos = np.asarray(sos, dtype=np.float64)
    groups = -(-sos.shape[0] // _GROUP)
    coefficients = np.zeros((groups * _GROUP, 5))
    coefficients[:, 0] = 1.0
    coefficients[: sos.shape[0]] = sos[:, [0, 1, 2, 4, 5]] / sos[:, 3:4]
    return coefficients.reshape(groups, _GROUP, 5)


def warmup_length(sos: np.ndarray) -> int:
    """Samples after which the slowest pole of ``sos`` has decayed below 1e-13."""
    radius = 0.0
    for section in np.asarray(sos, dtype=np.float64):
        roots = np.roots(section[3:] / section[3])
        if roots.size:
            radius = max(radius, float(np.abs(roots).max()))
    if radius <= 0.0:
        return _MIN_WARMUP
    if radius >= 1.0:
        return _MAX_WARMUP
    return int(min(max(math.ceil(math.log(_WARMUP_EPS) / math.log(radius)), _MIN_WARMUP),
                   _MAX_WARMUP))  # fmt: skip


def resample_taps(up: int, down: int) -> np.ndarray:
    """The FIR filter ``scipy.signal.resample_poly(x, up, down)`` designs, times ``up``.

    ``firwin(20 * max(up, down) + 1, 1 / max(up, down), window=("kaiser", 5.0)) * up``,
    float64.
    """
    max_rate = max(up, down)
    half = 10 * max_rate
    m = np.arange(2 * half + 1) - half
    cutoff = 1.0 / max_rate
    taps = cutoff * np.sinc(cutoff * m) * np.kaiser(2 * half + 1, 5.0)
    return taps / taps.sum() * up


class PolyphasePlan:
    """The resampler of one (up, down) ratio, arranged for :func:`fir_dot`.

    Output ``t`` of block ``b = t // up`` (phase ``s = t % up``) is the dot product of
    ``taps[s]`` with ``x[b * down + starts[s] : ... + width]``, where ``x`` is the input
    with ``pad`` zeros in front (and enough behind).
    """

    def __init__(self, up: int, down: int) -> None:
        g = math.gcd(up, down)
        up, down = up // g, down // g
        self.up, self.down = up, down
        h = resample_taps(up, down)
        half = (h.size - 1) // 2
        pre_pad = down - half % down
        pre_remove = (half + pre_pad) // down
        padded = np.concatenate([np.zeros(pre_pad), h])
        per_phase = -(-padded.size // up)
        width = -(-per_phase // _TAP_MULTIPLE) * _TAP_MULTIPLE
        taps = np.zeros((up, width))
        last = np.empty(up, np.int64)
        for s in range(up):
            q = (s + pre_remove) * down
            last[s] = q // up  # input index multiplied by the phase's first tap
            phase = padded[q % up :: up]
            taps[s, width - phase.size :] = phase[::-1]
        self.width = width
        self.pad = width
        self.taps = np.ascontiguousarray(taps, dtype=np.float32)
        self.starts = (last - width + 1 + self.pad).astype(np.int64)

    def output_length(self, n_in: int) -> int:
        """``ceil(n_in * up / down)``, scipy's output length."""
        return -(-n_in * self.up // self.down)

    def padded_input(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``x`` as float32 with ``pad`` zeros before it and enough after it."""
        n_out = self.output_length(x.size)
        blocks = -(-n_out // self.up)
        size = max(blocks * self.down + int(self.starts.max()) + self.width, self.pad + x.size)
        padded = np.empty(size, np.float32) if out is None else out[:size]
        padded[: self.pad] = 0.0
        padded[self.pad : self.pad + x.size] = x
        padded[self.pad + x.size :] = 0.0
        return padded

    def padded_size(self, n_in: int) -> int:
        """Length of :meth:`padded_input` for ``n_in`` samples."""
        blocks = -(-self.output_length(n_in) // self.up)
        return max(blocks * self.down + int(self.starts.max()) + self.width, self.pad + n_in)


@functools.lru_cache(maxsize=64)
def polyphase_plan(up: int, down: int) -> PolyphasePlan:
    """The cached :class:`PolyphasePlan` of a ratio."""
    return PolyphasePlan(up, down)


class FilterStage:
    """One ``sosfiltfilt`` call: coefficients in pairs, initial states, warm-up, padding.

    A band-pass cascade (every numerator ``g * (1, 0, -1)``, an even number of sections:
    :func:`butter_sos`'s band-passes) also gets a gain-free form for the CPU kernel:
    each section without its gain ``g`` (:func:`bandpass_step`, three operations instead
    of :func:`biquad_step`'s five), states scaled to match (``zi`` over the product of the
    gains up to the section), and the product of all gains, applied once at the end.

    Attributes
    ----------
    sos : numpy.ndarray
        ``(n_sections, 6)`` float64.
    groups, zi : numpy.ndarray
        ``(n_groups, 2, 5)`` coefficients (b0, b1, b2, a1, a2) normalised by a0, and
        ``(n_groups, 2, 2)`` :func:`sosfilt_zi` states, in pairs of sections.
    bandpass, bandpass_zi : numpy.ndarray or None
        ``(n_passes, m, 2)`` (a1, a2) and states of the gain-free form, in fours
        (``m = 4``) when the sections divide into them, else in pairs (None when the
        cascade is not a band-pass).
    bandpass_gain : float
        Product of the sections' gains (1 without the gain-free form).
    warmup, padlen : int
    """

    def __init__(self, sos: np.ndarray, padlen: int | None = None) -> None:
        sos = np.asarray(sos, dtype=np.float64)
        self.sos = sos
        self.groups = np.ascontiguousarray(_section_coefficients(sos))
        zi = np.zeros((self.groups.shape[0] * _GROUP, 2))
        zi[: sos.shape[0]] = sosfilt_zi(sos)
        self.zi = zi.reshape(-1, _GROUP, 2)  # (group, section in group, state)
        self.bandpass: np.ndarray | None = None
        self.bandpass_zi: np.ndarray | None = None
        self.bandpass_gain = 1.0
        b = sos[:, :3] / sos[:, 3:4]
        if (
            sos.shape[0] % _GROUP == 0
            and np.all(b[:, 0] != 0)
            and np.all(b[:, 1] == 0)
            and np.all(b[:, 2] == -b[:, 0])
        ):
            gains = np.cumprod(b[:, 0])
            per_pass = _BANDPASS_GROUP if sos.shape[0] % _BANDPASS_GROUP == 0 else _GROUP
            self.bandpass = np.ascontiguousarray(
                (sos[:, 4:] / sos[:, 3:4]).reshape(-1, per_pass, 2)
            )
            self.bandpass_zi = (zi / gains[:, None]).reshape(-1, per_pass, 2)
            self.bandpass_gain = float(gains[-1])
        self.warmup = warmup_length(sos)
        self.padlen = 3 * (2 * sos.shape[0] + 1) if padlen is None else int(padlen)


@functools.lru_cache(maxsize=256)
def _cached_stage(key: bytes, sections: int, padlen: int | None) -> FilterStage:
    return FilterStage(np.frombuffer(key).reshape(sections, 6), padlen)


def filter_stage(sos: np.ndarray, padlen: int | None = None) -> FilterStage:
    """The cached :class:`FilterStage` of ``sos`` (keyed by its coefficients)."""
    sos = np.ascontiguousarray(sos, dtype=np.float64)
    return _cached_stage(sos.tobytes(), sos.shape[0], padlen)


# ----------------------------------------------------------------------------------------
# Per-sample pieces: one source for the CPU (here) and CUDA (engine.dsp_cuda)
# ----------------------------------------------------------------------------------------
def biquad_step(x, b0, b1, b2, a1, a2, z1, z2):
    """One sample through one section (transposed direct form II, as scipy's sosfilt).

    Returns ``(y, z1, z2)``: the output and the section's next state.
    """
    y = b0 * x + z1
    return y, b1 * x - a1 * y + z2, b2 * x - a2 * y


def bandpass_step(x, a1, a2, z1, z2):
    """:func:`biquad_step` of a band-pass section without its gain: numerator
    ``(1, 0, -1)``, denominator ``(1, a1, a2)``.

    Returns ``(y, z1, z2)``.
    """
    y = x + z1
    return y, z2 - a1 * y, -x - a2 * y


def fir_dot(x, start, taps, phase, width):
    """One resampled sample: ``taps[phase]`` dotted with ``x[start : start + width]``."""
    acc = np.float32(0.0)
    for k in range(width):
        acc += taps[phase, k] * x[start + k]
    return acc


def ext_value(x, n, padlen, position):
    """Sample ``position`` of ``x`` (``n`` samples) oddly extended by ``padlen`` at each end.

    Positions count from the start of the extension (scipy's ``odd_ext``); positions
    beyond the extension are clamped to its first or last sample.
    """
    q = position - padlen
    q = max(q, -padlen)
    q = min(q, n - 1 + padlen)
    if q < 0:
        return 2.0 * x[0] - x[-q]
    if q >= n:
        return 2.0 * x[n - 1] - x[2 * (n - 1) - q]
    return 1.0 * x[q]


_inline = numba.njit(nogil=True, cache=True, inline="always", fastmath=_FASTMATH)
_biquad_step = _inline(biquad_step)
_bandpass_step = _inline(bandpass_step)
_ext_value = _inline(ext_value)


@contextlib.contextmanager
def _slp_vectorize() -> Iterator[None]:
    """Compile with LLVM's SLP vectorizer on (numba leaves it off by default).

    The filter kernel runs 8 chunks as 8 scalar chains; the SLP vectorizer packs them into
    one vector register. It only changes how the code is vectorised, never the result.
    """
    was = numba.config.SLP_VECTORIZE
    numba.config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        numba.config.SLP_VECTORIZE = was


# ----------------------------------------------------------------------------------------
# CPU kernels
# ----------------------------------------------------------------------------------------
def _fir_kernel(x, taps, starts, down, out, first_block, last_block, shift):
    """Outputs of blocks ``first_block:last_block`` of the resampler (no division in the
    loop); block ``b``'s phase ``s`` reads ``x[b * down + starts[s] - shift :][:width]``.

    Four blocks at a time: each phase's taps are loaded once for four dot products (four
    independent reductions). The blocks left over, and a last block cut short by the
    output's end, go one output at a time.
    """
    up, width = taps.shape
    n_out = out.shape[0]
    b = first_block
    while b + 4 <= last_block and (b + 4) * up <= n_out:
        for s in range(up):
            origin = b * down - shift + starts[s]
            seg0 = x[origin : origin + width]
            seg1 = x[origin + down : origin + down + width]
            seg2 = x[origin + 2 * down : origin + 2 * down + width]
            seg3 = x[origin + 3 * down : origin + 3 * down + width]
            tp = taps[s]
            acc0 = np.float32(0.0)
            acc1 = np.float32(0.0)
            acc2 = np.float32(0.0)
            acc3 = np.float32(0.0)
            for k in range(width):
                tap = tp[k]
                acc0 += tap * seg0[k]
                acc1 += tap * seg1[k]
                acc2 += tap * seg2[k]
                acc3 += tap * seg3[k]
            t = b * up + s
            out[t] = acc0
            out[t + up] = acc1
            out[t + 2 * up] = acc2
            out[t + 3 * up] = acc3
        b += 4
    for block in range(b, last_block):
        first = block * up
        base = block * down - shift
        for s in range(min(up, n_out - first)):
            seg = x[base + starts[s] : base + starts[s] + width]
            tp = taps[s]
            acc = np.float32(0.0)
            for k in range(width):
                acc += tp[k] * seg[k]
            out[first + s] = acc


def _pack_kernel(x, n, padlen, chunk, warmup, used, lanes):
    """Chunks of the oddly extended ``x`` side by side: lane ``k`` row ``r`` holds position
    ``k * chunk - warmup + r``; before the start, the first extended sample; after the
    end, the last one; unused lanes hold zeros.

    Rows whose lanes all read inside ``x`` (all but the first ``warmup + padlen`` and the
    last lane's tail) are a plain strided gather, ``_BLOCK_ROWS`` rows at a time; in the
    others, lanes that read inside ``x`` are copied and the rest go through
    :func:`ext_value`.
    """
    rows, width = lanes.shape
    last = n + 2 * padlen - 1
    inner_start = min(warmup + padlen, rows)
    inner_stop = inner_start
    if used == width:
        inner_stop = max(inner_start, min(rows, n + padlen + warmup - (width - 1) * chunk))
    step = numba.uint64(chunk)  # unsigned indices: no negative-index wrap-around checks
    block = inner_start
    while block + _BLOCK_ROWS <= inner_stop:
        rows_in = lanes[block : block + _BLOCK_ROWS]
        base = numba.uint64(block - warmup - padlen)
        for k in range(width):
            origin = base + numba.uint64(k) * step
            segment = x[origin : origin + _BLOCK_ROWS]
            for j in range(_BLOCK_ROWS):
                rows_in[j, k] = segment[j]
        block += _BLOCK_ROWS
    for r in range(block, inner_stop):
        row = lanes[r]
        base = numba.uint64(r - warmup - padlen)
        for k in range(width):
            row[k] = x[base + numba.uint64(k) * step]
    for start, stop in ((0, inner_start), (inner_stop, rows)):
        for k in range(width):  # lane by lane: most lanes of these rows read inside x
            origin = k * chunk - warmup - padlen
            if k < used and 0 <= origin + start and origin + stop <= n:
                for r in range(start, stop):
                    lanes[r, k] = x[origin + r]
                continue
            for r in range(start, stop):
                position = min(max(k * chunk - warmup + r, 0), last)
                lanes[r, k] = _ext_value(x, n, padlen, position) if k < used else 0.0


def _biquad2_kernel(lanes, sections, state, reverse):
    """Two sections over every row of 8 lanes (forward, or backward from the last row).

    ``sections``: (2, 5) coefficients (b0, b1, b2, a1, a2); ``state``: (2, 2, 8) section
    states in and out. Written out as 8 scalar chains so that the states stay in
    registers; the SLP vectorizer packs each group of 8 lines into one vector instruction.
    """
    rows = lanes.shape[0]
    p0, p1, p2, q1, q2 = (
        sections[0, 0],
        sections[0, 1],
        sections[0, 2],
        sections[0, 3],
        sections[0, 4],
    )
    r0, r1, r2, s1, s2 = (
        sections[1, 0],
        sections[1, 1],
        sections[1, 2],
        sections[1, 3],
        sections[1, 4],
    )
    u0, u1, u2, u3 = state[0, 0, 0], state[0, 0, 1], state[0, 0, 2], state[0, 0, 3]
    u4, u5, u6, u7 = state[0, 0, 4], state[0, 0, 5], state[0, 0, 6], state[0, 0, 7]
    v0, v1, v2, v3 = state[0, 1, 0], state[0, 1, 1], state[0, 1, 2], state[0, 1, 3]
    v4, v5, v6, v7 = state[0, 1, 4], state[0, 1, 5], state[0, 1, 6], state[0, 1, 7]
    w0, w1, w2, w3 = state[1, 0, 0], state[1, 0, 1], state[1, 0, 2], state[1, 0, 3]
    w4, w5, w6, w7 = state[1, 0, 4], state[1, 0, 5], state[1, 0, 6], state[1, 0, 7]
    z0, z1, z2, z3 = state[1, 1, 0], state[1, 1, 1], state[1, 1, 2], state[1, 1, 3]
    z4, z5, z6, z7 = state[1, 1, 4], state[1, 1, 5], state[1, 1, 6], state[1, 1, 7]
    for i in range(rows):
        row = lanes[rows - 1 - i] if reverse else lanes[i]
        a0, u0, v0 = _biquad_step(row[0], p0, p1, p2, q1, q2, u0, v0)
        a1, u1, v1 = _biquad_step(row[1], p0, p1, p2, q1, q2, u1, v1)
        a2, u2, v2 = _biquad_step(row[2], p0, p1, p2, q1, q2, u2, v2)
        a3, u3, v3 = _biquad_step(row[3], p0, p1, p2, q1, q2, u3, v3)
        a4, u4, v4 = _biquad_step(row[4], p0, p1, p2, q1, q2, u4, v4)
        a5, u5, v5 = _biquad_step(row[5], p0, p1, p2, q1, q2, u5, v5)
        a6, u6, v6 = _biquad_step(row[6], p0, p1, p2, q1, q2, u6, v6)
        a7, u7, v7 = _biquad_step(row[7], p0, p1, p2, q1, q2, u7, v7)
        row[0], w0, z0 = _biquad_step(a0, r0, r1, r2, s1, s2, w0, z0)
        row[1], w1, z1 = _biquad_step(a1, r0, r1, r2, s1, s2, w1, z1)
        row[2], w2, z2 = _biquad_step(a2, r0, r1, r2, s1, s2, w2, z2)
        row[3], w3, z3 = _biquad_step(a3, r0, r1, r2, s1, s2, w3, z3)
        row[4], w4, z4 = _biquad_step(a4, r0, r1, r2, s1, s2, w4, z4)
        row[5], w5, z5 = _biquad_step(a5, r0, r1, r2, s1, s2, w5, z5)
        row[6], w6, z6 = _biquad_step(a6, r0, r1, r2, s1, s2, w6, z6)
        row[7], w7, z7 = _biquad_step(a7, r0, r1, r2, s1, s2, w7, z7)
    state[0, 0, 0], state[0, 0, 1], state[0, 0, 2], state[0, 0, 3] = u0, u1, u2, u3
    state[0, 0, 4], state[0, 0, 5], state[0, 0, 6], state[0, 0, 7] = u4, u5, u6, u7
    state[0, 1, 0], state[0, 1, 1], state[0, 1, 2], state[0, 1, 3] = v0, v1, v2, v3
    state[0, 1, 4], state[0, 1, 5], state[0, 1, 6], state[0, 1, 7] = v4, v5, v6, v7
    state[1, 0, 0], state[1, 0, 1], state[1, 0, 2], state[1, 0, 3] = w0, w1, w2, w3
    state[1, 0, 4], state[1, 0, 5], state[1, 0, 6], state[1, 0, 7] = w4, w5, w6, w7
    state[1, 1, 0], state[1, 1, 1], state[1, 1, 2], state[1, 1, 3] = z0, z1, z2, z3
    state[1, 1, 4], state[1, 1, 5], state[1, 1, 6], state[1, 1, 7] = z4, z5, z6, z7


def _bandpass2_kernel(lanes, sections, state, reverse):
    """:func:`_biquad2_kernel` for two gain-free band-pass sections (:func:`bandpass_step`).

    ``sections``: (2, 2) coefficients (a1, a2); ``state``: (2, 2, 8) as there.
    """
    rows = lanes.shape[0]
    q1, q2, s1, s2 = sections[0, 0], sections[0, 1], sections[1, 0], sections[1, 1]
    u0, u1, u2, u3 = state[0, 0, 0], state[0, 0, 1], state[0, 0, 2], state[0, 0, 3]
    u4, u5, u6, u7 = state[0, 0, 4], state[0, 0, 5], state[0, 0, 6], state[0, 0, 7]
    v0, v1, v2, v3 = state[0, 1, 0], state[0, 1, 1], state[0, 1, 2], state[0, 1, 3]
    v4, v5, v6, v7 = state[0, 1, 4], state[0, 1, 5], state[0, 1, 6], state[0, 1, 7]
    w0, w1, w2, w3 = state[1, 0, 0], state[1, 0, 1], state[1, 0, 2], state[1, 0, 3]
    w4, w5, w6, w7 = state[1, 0, 4], state[1, 0, 5], state[1, 0, 6], state[1, 0, 7]
    z0, z1, z2, z3 = state[1, 1, 0], state[1, 1, 1], state[1, 1, 2], state[1, 1, 3]
    z4, z5, z6, z7 = state[1, 1, 4], state[1, 1, 5], state[1, 1, 6], state[1, 1, 7]
    for i in range(rows):
        row = lanes[rows - 1 - i] if reverse else lanes[i]
        a0, u0, v0 = _bandpass_step(row[0], q1, q2, u0, v0)
        a1, u1, v1 = _bandpass_step(row[1], q1, q2, u1, v1)
        a2, u2, v2 = _bandpass_step(row[2], q1, q2, u2, v2)
        a3, u3, v3 = _bandpass_step(row[3], q1, q2, u3, v3)
        a4, u4, v4 = _bandpass_step(row[4], q1, q2, u4, v4)
        a5, u5, v5 = _bandpass_step(row[5], q1, q2, u5, v5)
        a6, u6, v6 = _bandpass_step(row[6], q1, q2, u6, v6)
        a7, u7, v7 = _bandpass_step(row[7], q1, q2, u7, v7)
        row[0], w0, z0 = _bandpass_step(a0, s1, s2, w0, z0)
        row[1], w1, z1 = _bandpass_step(a1, s1, s2, w1, z1)
        row[2], w2, z2 = _bandpass_step(a2, s1, s2, w2, z2)
        row[3], w3, z3 = _bandpass_step(a3, s1, s2, w3, z3)
        row[4], w4, z4 = _bandpass_step(a4, s1, s2, w4, z4)
        row[5], w5, z5 = _bandpass_step(a5, s1, s2, w5, z5)
        row[6], w6, z6 = _bandpass_step(a6, s1, s2, w6, z6)
        row[7], w7, z7 = _bandpass_step(a7, s1, s2, w7, z7)
    state[0, 0, 0], state[0, 0, 1], state[0, 0, 2], state[0, 0, 3] = u0, u1, u2, u3
    state[0, 0, 4], state[0, 0, 5], state[0, 0, 6], state[0, 0, 7] = u4, u5, u6, u7
    state[0, 1, 0], state[0, 1, 1], state[0, 1, 2], state[0, 1, 3] = v0, v1, v2, v3
    state[0, 1, 4], state[0, 1, 5], state[0, 1, 6], state[0, 1, 7] = v4, v5, v6, v7
    state[1, 0, 0], state[1, 0, 1], state[1, 0, 2], state[1, 0, 3] = w0, w1, w2, w3
    state[1, 0, 4], state[1, 0, 5], state[1, 0, 6], state[1, 0, 7] = w4, w5, w6, w7
    state[1, 1, 0], state[1, 1, 1], state[1, 1, 2], state[1, 1, 3] = z0, z1, z2, z3
    state[1, 1, 4], state[1, 1, 5], state[1, 1, 6], state[1, 1, 7] = z4, z5, z6, z7


def _bandpass4_kernel(lanes, sections, state, reverse):
    """:func:`_bandpass2_kernel` for four sections: one pass over the lanes instead of two.

    ``sections``: (4, 2) coefficients (a1, a2); ``state``: (4, 2, 8) section states.
    """
    rows = lanes.shape[0]
    q1, q2, r1, r2 = sections[0, 0], sections[0, 1], sections[1, 0], sections[1, 1]
    s1, s2, t1, t2 = sections[2, 0], sections[2, 1], sections[3, 0], sections[3, 1]
    u0, u1, u2, u3 = state[0, 0, 0], state[0, 0, 1], state[0, 0, 2], state[0, 0, 3]
    u4, u5, u6, u7 = state[0, 0, 4], state[0, 0, 5], state[0, 0, 6], state[0, 0, 7]
    v0, v1, v2, v3 = state[0, 1, 0], state[0, 1, 1], state[0, 1, 2], state[0, 1, 3]
    v4, v5, v6, v7 = state[0, 1, 4], state[0, 1, 5], state[0, 1, 6], state[0, 1, 7]
    w0, w1, w2, w3 = state[1, 0, 0], state[1, 0, 1], state[1, 0, 2], state[1, 0, 3]
    w4, w5, w6, w7 = state[1, 0, 4], state[1, 0, 5], state[1, 0, 6], state[1, 0, 7]
    z0, z1, z2, z3 = state[1, 1, 0], state[1, 1, 1], state[1, 1, 2], state[1, 1, 3]
    z4, z5, z6, z7 = state[1, 1, 4], state[1, 1, 5], state[1, 1, 6], state[1, 1, 7]
    e0, e1, e2, e3 = state[2, 0, 0], state[2, 0, 1], state[2, 0, 2], state[2, 0, 3]
    e4, e5, e6, e7 = state[2, 0, 4], state[2, 0, 5], state[2, 0, 6], state[2, 0, 7]
    f0, f1, f2, f3 = state[2, 1, 0], state[2, 1, 1], state[2, 1, 2], state[2, 1, 3]
    f4, f5, f6, f7 = state[2, 1, 4], state[2, 1, 5], state[2, 1, 6], state[2, 1, 7]
    g0, g1, g2, g3 = state[3, 0, 0], state[3, 0, 1], state[3, 0, 2], state[3, 0, 3]
    g4, g5, g6, g7 = state[3, 0, 4], state[3, 0, 5], state[3, 0, 6], state[3, 0, 7]
    h0, h1, h2, h3 = state[3, 1, 0], state[3, 1, 1], state[3, 1, 2], state[3, 1, 3]
    h4, h5, h6, h7 = state[3, 1, 4], state[3, 1, 5], state[3, 1, 6], state[3, 1, 7]
    for i in range(rows):
        row = lanes[rows - 1 - i] if reverse else lanes[i]
        a0, u0, v0 = _bandpass_step(row[0], q1, q2, u0, v0)
        a1, u1, v1 = _bandpass_step(row[1], q1, q2, u1, v1)
        a2, u2, v2 = _bandpass_step(row[2], q1, q2, u2, v2)
        a3, u3, v3 = _bandpass_step(row[3], q1, q2, u3, v3)
        a4, u4, v4 = _bandpass_step(row[4], q1, q2, u4, v4)
        a5, u5, v5 = _bandpass_step(row[5], q1, q2, u5, v5)
        a6, u6, v6 = _bandpass_step(row[6], q1, q2, u6, v6)
        a7, u7, v7 = _bandpass_step(row[7], q1, q2, u7, v7)
        a0, w0, z0 = _bandpass_step(a0, r1, r2, w0, z0)
        a1, w1, z1 = _bandpass_step(a1, r1, r2, w1, z1)
        a2, w2, z2 = _bandpass_step(a2, r1, r2, w2, z2)
        a3, w3, z3 = _bandpass_step(a3, r1, r2, w3, z3)
        a4, w4, z4 = _bandpass_step(a4, r1, r2, w4, z4)
        a5, w5, z5 = _bandpass_step(a5, r1, r2, w5, z5)
        a6, w6, z6 = _bandpass_step(a6, r1, r2, w6, z6)
        a7, w7, z7 = _bandpass_step(a7, r1, r2, w7, z7)
        a0, e0, f0 = _bandpass_step(a0, s1, s2, e0, f0)
        a1, e1, f1 = _bandpass_step(a1, s1, s2, e1, f1)
        a2, e2, f2 = _bandpass_step(a2, s1, s2, e2, f2)
        a3, e3, f3 = _bandpass_step(a3, s1, s2, e3, f3)
        a4, e4, f4 = _bandpass_step(a4, s1, s2, e4, f4)
        a5, e5, f5 = _bandpass_step(a5, s1, s2, e5, f5)
        a6, e6, f6 = _bandpass_step(a6, s1, s2, e6, f6)
        a7, e7, f7 = _bandpass_step(a7, s1, s2, e7, f7)
        row[0], g0, h0 = _bandpass_step(a0, t1, t2, g0, h0)
        row[1], g1, h1 = _bandpass_step(a1, t1, t2, g1, h1)
        row[2], g2, h2 = _bandpass_step(a2, t1, t2, g2, h2)
        row[3], g3, h3 = _bandpass_step(a3, t1, t2, g3, h3)
        row[4], g4, h4 = _bandpass_step(a4, t1, t2, g4, h4)
        row[5], g5, h5 = _bandpass_step(a5, t1, t2, g5, h5)
        row[6], g6, h6 = _bandpass_step(a6, t1, t2, g6, h6)
        row[7], g7, h7 = _bandpass_step(a7, t1, t2, g7, h7)
    state[0, 0, 0], state[0, 0, 1], state[0, 0, 2], state[0, 0, 3] = u0, u1, u2, u3
    state[0, 0, 4], state[0, 0, 5], state[0, 0, 6], state[0, 0, 7] = u4, u5, u6, u7
    state[0, 1, 0], state[0, 1, 1], state[0, 1, 2], state[0, 1, 3] = v0, v1, v2, v3
    state[0, 1, 4], state[0, 1, 5], state[0, 1, 6], state[0, 1, 7] = v4, v5, v6, v7
    state[1, 0, 0], state[1, 0, 1], state[1, 0, 2], state[1, 0, 3] = w0, w1, w2, w3
    state[1, 0, 4], state[1, 0, 5], state[1, 0, 6], state[1, 0, 7] = w4, w5, w6, w7
    state[1, 1, 0], state[1, 1, 1], state[1, 1, 2], state[1, 1, 3] = z0, z1, z2, z3
    state[1, 1, 4], state[1, 1, 5], state[1, 1, 6], state[1, 1, 7] = z4, z5, z6, z7
    state[2, 0, 0], state[2, 0, 1], state[2, 0, 2], state[2, 0, 3] = e0, e1, e2, e3
    state[2, 0, 4], state[2, 0, 5], state[2, 0, 6], state[2, 0, 7] = e4, e5, e6, e7
    state[2, 1, 0], state[2, 1, 1], state[2, 1, 2], state[2, 1, 3] = f0, f1, f2, f3
    state[2, 1, 4], state[2, 1, 5], state[2, 1, 6], state[2, 1, 7] = f4, f5, f6, f7
    state[3, 0, 0], state[3, 0, 1], state[3, 0, 2], state[3, 0, 3] = g0, g1, g2, g3
    state[3, 0, 4], state[3, 0, 5], state[3, 0, 6], state[3, 0, 7] = g4, g5, g6, g7
    state[3, 1, 0], state[3, 1, 1], state[3, 1, 2], state[3, 1, 3] = h0, h1, h2, h3
    state[3, 1, 4], state[3, 1, 5], state[3, 1, 6], state[3, 1, 7] = h4, h5, h6, h7


def _unpack_kernel(lanes, chunk, warmup, padlen, scale, out):
    """``out[i]`` = ``scale`` x extended position ``padlen + i``, from the lane whose core
    holds it.

    Rows whose lanes all land inside ``out`` are a plain strided scatter, ``_BLOCK_ROWS``
    rows at a time; the first ``padlen`` core rows and the last lane's tail are checked
    one by one.
    """
    n = out.shape[0]
    rows, width = lanes.shape
    stop = min(warmup + chunk, rows)
    inner_start = min(warmup + padlen, stop)
    inner_stop = max(inner_start, min(stop, n + warmup + padlen - (width - 1) * chunk))
    step = numba.uint64(chunk)  # unsigned indices: no negative-index wrap-around checks
    block = inner_start
    while block + _BLOCK_ROWS <= inner_stop:
        rows_out = lanes[block : block + _BLOCK_ROWS]
        base = numba.uint64(block - warmup - padlen)
        for k in range(width):
            origin = base + numba.uint64(k) * step
            segment = out[origin : origin + _BLOCK_ROWS]
            for j in range(_BLOCK_ROWS):
                segment[j] = scale * rows_out[j, k]
        block += _BLOCK_ROWS
    for r in range(block, inner_stop):
        row = lanes[r]
        base = numba.uint64(r - warmup - padlen)
        for k in range(width):
            out[base + numba.uint64(k) * step] = scale * row[k]
    for first, last in ((warmup, inner_start), (inner_stop, stop)):
        for r in range(first, last):
            row = lanes[r]
            for k in range(width):
                i = k * chunk + r - warmup - padlen
                if 0 <= i < n:
                    out[i] = scale * row[k]


def _all_finite_kernel(bits, exponent):
    """True when no element of ``bits`` (floats viewed as unsigned integers) has every
    exponent bit set (an infinity or a NaN). An integer max, so it vectorises."""
    highest = exponent ^ exponent
    for i in range(bits.shape[0]):
        value = bits[i] & exponent
        highest = value if value > highest else highest
    return highest != exponent


_f32 = numba.float32
_f64 = numba.float64
_i64 = numba.int64
_SIGNATURES = {
    "finite": (
        _all_finite_kernel,
        [(numba.uint32[::1], numba.uint32), (numba.uint64[::1], numba.uint64)],
    ),
    "fir": (
        _fir_kernel,
        [(_f32[::1], _f32[:, ::1], _i64[::1], _i64, _f32[::1], _i64, _i64, _i64)],
    ),
    "pack": (
        _pack_kernel,
        [(x, _i64, _i64, _i64, _i64, _i64, _f64[:, ::1]) for x in (_f32[::1], _f64[::1])],
    ),
    "biquads": (_biquad2_kernel, [(_f64[:, ::1], _f64[:, ::1], _f64[:, :, ::1], numba.boolean)]),
    "bandpass": (_bandpass2_kernel, [(_f64[:, ::1], _f64[:, ::1], _f64[:, :, ::1], numba.boolean)]),
    "bandpass4": (
        _bandpass4_kernel,
        [(_f64[:, ::1], _f64[:, ::1], _f64[:, :, ::1], numba.boolean)],
    ),
    "unpack": (
        _unpack_kernel,
        [(_f64[:, ::1], _i64, _i64, _i64, _f64, out) for out in (_f32[::1], _f64[::1])],
    ),
}


@functools.cache
def _kernels() -> dict[str, numba.core.registry.CPUDispatcher]:
    """The CPU kernels, compiled (or loaded from numba's disk cache) on first use."""
    compiled = {}
    with _slp_vectorize():
        for name, (function, signatures) in _SIGNATURES.items():
            dispatcher = numba.njit(nogil=True, cache=True, fastmath=_FASTMATH)(function)
            for signature in signatures:
                dispatcher.compile(signature)
            dispatcher.disable_compile()
            compiled[name] = dispatcher
    return compiled


# ----------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------
def resample_poly(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """``scipy.signal.resample_poly(x, up, down)`` for a 1-D signal, float32 out.

    Ratios with ``up > MAX_UP`` (after reduction) are handed to scipy.
    """
    x = np.asarray(x)
    if x.ndim != 1:
        raise ValueError(f"x must be 1-D, got shape {x.shape}")
    g = math.gcd(int(up), int(down))
    up, down = int(up) // g, int(down) // g
    if up == down == 1:
        return x.astype(np.float32)
    if up > MAX_UP:
        from scipy import signal as sps

        return sps.resample_poly(x.astype(np.float64), up, down).astype(np.float32)
    plan = polyphase_plan(up, down)
    out = np.empty(plan.output_length(x.size), np.float32)
    if x.size:
        _resample_into(plan, np.ascontiguousarray(x, dtype=np.float32), out)
    return out


def all_finite(x: np.ndarray) -> bool:
    """``bool(np.isfinite(x).all())`` for a 1-D float32 or float64 array, in one pass.

    Parameters
    ----------
    x : numpy.ndarray
        1-D float32 or float64 samples.

    Returns
    -------
    bool
        False when ``x`` holds a NaN or an infinity.
    """
    x = np.ascontiguousarray(x)
    if x.dtype == np.float32:
        return bool(_kernels()["finite"](x.view(np.uint32), np.uint32(0x7F800000)))
    if x.dtype == np.float64:
        return bool(_kernels()["finite"](x.view(np.uint64), np.uint64(0x7FF0000000000000)))
    raise TypeError(f"x must be float32 or float64, got {x.dtype}")


def _resample_into(plan: PolyphasePlan, x: np.ndarray, out: np.ndarray) -> None:
    """Run the resampler: the blocks whose taps lie inside ``x`` read it in place, the
    first and last few read short zero-padded copies of its ends."""
    fir = _kernels()["fir"]
    n, pad, width, down = x.size, plan.pad, plan.width, plan.down
    blocks = -(-out.size // plan.up)
    low, high = int(plan.starts.min()), int(plan.starts.max())
    first = max(0, -(-(pad - low) // down))  # first block reading no padding before x
    last = min(blocks, (n + pad - width - high) // down + 1)  # blocks before it: none after
    if first >= last:  # a short signal: all of it padded
        padded = plan.padded_input(x, _scratch("fir-input", plan.padded_size(n), np.float32))
        fir(padded, plan.taps, plan.starts, down, out, 0, blocks, 0)
        return
    # Head: padded positions 0 .. (first - 1) * down + high + width.
    head_size = (first - 1) * down + high + width if first else 0
    if first:
        head = np.zeros(head_size, np.float32)
        taken = min(n, head_size - pad)
        head[pad : pad + taken] = x[:taken]
        fir(head, plan.taps, plan.starts, down, out, 0, first, 0)
    fir(x, plan.taps, plan.starts, down, out, first, last, pad)
    if last < blocks:
        start = last * down + low  # padded position of the tail's first sample read
        tail = np.zeros((blocks - 1) * down + high + width - start, np.float32)
        taken = max(0, min(n, start + tail.size - pad) - (start - pad))
        tail[:taken] = x[start - pad : start - pad + taken]
        fir(tail, plan.taps, plan.starts, down, out, last, blocks, start)


_WORKSPACE = threading.local()


def _scratch(name: str, size: int, dtype: type) -> np.ndarray:
    """A reusable scratch array of at least ``size`` elements (one per thread and name).

    Large fresh arrays cost page faults on every call (a channel of a night is tens of
    MB); the filters reuse their buffers instead.
    """
    buffers = getattr(_WORKSPACE, "buffers", None)
    if buffers is None:
        buffers = _WORKSPACE.buffers = {}
    buffer = buffers.get(name)
    if buffer is None or buffer.size < size or buffer.dtype != dtype:
        buffer = buffers[name] = np.empty(max(size, 1), dtype)
    return buffer[:size]


def _layout(total: int, warmup: int) -> tuple[int, int]:
    """(chunk, lanes used) for a signal of ``total`` extended samples."""
    used = int(max(1, min(LANES, total // max(4 * warmup, 1))))
    return -(-total // used), used


def sosfiltfilt(
    stage: FilterStage | np.ndarray,
    x: np.ndarray,
    padlen: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """``scipy.signal.sosfiltfilt(sos, x, padlen=padlen)`` for a 1-D signal.

    Parameters
    ----------
    stage : FilterStage or array
        A stage from :func:`filter_stage`, or ``sos`` itself.
    x : numpy.ndarray
        float32 or float64, 1-D, longer than ``padlen``.
    padlen : int, optional
        Only with ``sos`` (default ``3 * (2 * n_sections + 1)``, scipy's).
    out : numpy.ndarray, optional
        float32 or float64 array of ``x``'s length to write into (default: a new float64
        array).
    """
    if not isinstance(stage, FilterStage):
        stage = filter_stage(stage, padlen)
    x = np.ascontiguousarray(x)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    n = x.size
    if out is None:
        out = np.empty(n, np.float64)
    pad = stage.padlen
    if n <= pad:
        raise ValueError(f"the signal ({n} samples) must be longer than padlen ({pad})")
    kernels = _kernels()
    total = n + 2 * pad
    warmup = stage.warmup
    chunk, used = _layout(total, warmup)
    rows = chunk + 2 * warmup
    lanes = _scratch("lanes", rows * LANES, np.float64).reshape(rows, LANES)
    kernels["pack"](x, n, pad, chunk, warmup, used, lanes)
    first = lanes[0, 0]
    if stage.bandpass is None:
        cascade, groups, states = kernels["biquads"], stage.groups, stage.zi
    else:
        groups, states = stage.bandpass, stage.bandpass_zi
        cascade = kernels["bandpass4" if groups.shape[1] == _BANDPASS_GROUP else "bandpass"]
    state = np.zeros((groups.shape[1], 2, LANES))
    for group, zi in zip(groups, states):
        state[:] = 0.0
        state[:, :, 0] = zi * first  # lane 0 starts before position 0 at the steady state
        cascade(lanes, group, state, False)
    # Backward: positions past the end hold the last forward output; lanes that start
    # there start from its steady state, the others warm up from zero.
    last_lane = (total - 1) // chunk
    last_row = total - 1 - last_lane * chunk + warmup
    last = lanes[last_row, last_lane]
    for k in range(used):
        start = k * chunk - warmup + rows - 1
        if start >= total - 1:
            row = total - 1 - (k * chunk - warmup)
            lanes[row + 1 :, k] = last
    for group, zi in zip(groups, states):
        state[:] = 0.0
        for k in range(used):
            if k * chunk - warmup + rows - 1 >= total - 1:
                state[:, :, k] = zi * last
        cascade(lanes, group, state, True)
    kernels["unpack"](lanes, chunk, warmup, pad, stage.bandpass_gain**2, out)
    return out


def filter_chain(
    x: np.ndarray, stages: Sequence[FilterStage], out: np.ndarray | None = None
) -> np.ndarray:
    """Apply :func:`sosfiltfilt` for each stage in turn (float64 between stages)."""
    if not stages:
        result = np.asarray(x, dtype=np.float64)
        if out is not None:
            out[:] = result
            return out
        return result.copy()
    current = x
    for i, stage in enumerate(stages):
        last = i == len(stages) - 1
        current = sosfiltfilt(stage, current, out=out if last else None)
    return current
