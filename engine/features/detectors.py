"""Event detectors an AASM scorer relies on: sleep spindles, slow waves, K-complexes and
eye movements.

Every detector works on a batch of rows (epochs) at once and has a public wrapper for one
raw 1-D array. Times are seconds from the start of the array. Filters are zero-phase
Butterworth (``scipy.signal.sosfiltfilt``); the eye-movement turning points come from a
small Numba kernel.

Examples
--------
>>> import numpy as np
>>> fs = 100.0
>>> t = np.arange(0, 10, 1 / fs)
>>> x = np.where((t > 4) & (t < 5), 30 * np.sin(2 * np.pi * 13 * t), 0.0)
>>> x = x + np.random.default_rng(0).normal(0, 5, t.size)
>>> [round(e.peak_freq) for e in detect_spindles(x, fs)]
[13]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache

import numpy as np
from numba import njit
from scipy import signal

from ..errors import FeatureError

__all__ = [
    "Event",
    "SPINDLE_BAND",
    "SLOW_WAVE_BAND",
    "KCOMPLEX_BAND",
    "SLOW_WAVE_MIN_PTP",
    "bandpass",
    "detect_spindles",
    "detect_slow_waves",
    "detect_kcomplexes",
    "detect_eye_movements",
    "slow_wave_fraction",
]

#: Sigma band used to find sleep spindles (Hz).
SPINDLE_BAND: tuple[float, float] = (11.0, 16.0)
#: Band of the AASM slow-wave (N3) criterion (Hz).
SLOW_WAVE_BAND: tuple[float, float] = (0.5, 2.0)
#: Band in which K-complexes and slow-wave amplitudes are measured (Hz).
KCOMPLEX_BAND: tuple[float, float] = (0.5, 4.0)
#: AASM minimum peak-to-peak amplitude of a slow wave or K-complex (µV).
SLOW_WAVE_MIN_PTP: float = 75.0

_BROADBAND = (1.0, 30.0)
_SPINDLE_DURATION = (0.5, 2.0)
_SPINDLE_MERGE_GAP_S = 0.3
_SPINDLE_MIN_REL_POWER = 0.1
_KCOMPLEX_DURATION = (0.5, 2.5)
_KCOMPLEX_NEIGHBOUR_RATIO = 0.6
_KCOMPLEX_BACKGROUND_RATIO = 6.0
_RAPID_BAND = (0.3, 5.0)
_SLOW_EYE_BAND = (0.15, 1.0)
_RAPID_MAX_RISE_S = 0.5
_RAPID_MIN_VELOCITY = 300.0  # µV/s on the 0.3-5 Hz trace
_SLOW_MIN_RISE_S = 0.5
_SLOW_MAX_SEGMENT_S = 6.0
_EYE_MAX_CORRELATION = -0.3


@dataclass(frozen=True)
class Event:
    """One detected event.

    Attributes
    ----------
    start, end : float
        Onset and offset in seconds from the start of the analysed array.
    peak_freq : float or None
        Dominant frequency in Hz (spindle oscillation; 1 / period for slow waves and
        K-complexes); ``None`` for eye movements.
    amplitude : float
        Peak-to-peak amplitude in µV (spindles: of the sigma-band signal; slow waves and
        K-complexes: in the 0.5-4 Hz band; eye movements: size of the deflection).
    kind : str
        ``"spindle"``, ``"slow_wave"``, ``"kcomplex"``, ``"rapid_eye_movement"`` or
        ``"slow_eye_movement"``.
    """

    start: float
    end: float
    peak_freq: float | None
    amplitude: float
    kind: str

    @property
    def duration(self) -> float:
        """Duration in seconds."""
        return self.end - self.start

    def to_dict(self) -> dict:
        """JSON-serialisable dictionary with plain floats."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


# --------------------------------------------------------------------------- filters


@lru_cache(maxsize=64)
def _sos(low: float | None, high: float | None, fs: float, order: int) -> np.ndarray:
    nyquist = fs / 2.0
    if high is not None and high >= 0.95 * nyquist:
        high = None
    if low is None and high is None:
        raise FeatureError(f"no filter band left at fs={fs} Hz")
    if low is None:
        return signal.butter(order, high, btype="lowpass", fs=fs, output="sos")
    if high is None:
        return signal.butter(order, low, btype="highpass", fs=fs, output="sos")
    return signal.butter(order, (low, high), btype="bandpass", fs=fs, output="sos")


def bandpass(
    x: np.ndarray, fs: float, low: float | None, high: float | None, order: int = 2
) -> np.ndarray:
    """Zero-phase Butterworth band-pass along the last axis.

    Parameters
    ----------
    x : ndarray
        Signal(s), time on the last axis.
    fs : float
        Sampling rate in Hz.
    low, high : float or None
        Pass band edges in Hz; ``None`` (or ``high`` near Nyquist) drops that edge.
    order : int
        Butterworth order (applied twice, forward and backward).

    Returns
    -------
    ndarray
        Filtered signal(s), same shape as ``x``.
    """
    return signal.sosfiltfilt(_sos(low, high, float(fs), order), x, axis=-1)


def _require_fs(fs: float, highest: float, what: str) -> float:
    fs = float(fs)
    if not np.isfinite(fs) or fs <= 0:
        raise FeatureError(f"{what}: sampling rate must be a positive number, got {fs}")
    if fs < 2.2 * highest:
        raise FeatureError(
            f"{what}: needs a sampling rate above {2.2 * highest:g} Hz, got {fs:g} Hz"
        )
    return fs


def _as_rows(x: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise FeatureError(f"{what}: expected a 1-D signal, got shape {np.shape(x)}")
    if arr.shape[1] < 8:
        raise FeatureError(f"{what}: signal too short ({arr.shape[1]} samples)")
    if not np.all(np.isfinite(arr)):
        raise FeatureError(f"{what}: signal contains NaN or infinite samples")
    return arr


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row, start and (exclusive) end of every run of True in a 2-D mask."""
    n, width = mask.shape
    padded = np.zeros((n, width + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    step = np.diff(padded, axis=1)
    rows, starts = np.nonzero(step == 1)
    _, ends = np.nonzero(step == -1)
    return rows, starts, ends


def _moving_mean(x: np.ndarray, size: int) -> np.ndarray:
    from scipy.ndimage import uniform_filter1d

    return uniform_filter1d(x, size=max(1, int(size)), axis=-1, mode="nearest")


# --------------------------------------------------------------------------- spindles


def _spindle_rows(
    rows: np.ndarray,
    fs: float,
    *,
    threshold: float = 4.0,
    envelope_reference: float | np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Spindles in every row: (row, start_s, end_s, peak_freq, amplitude) arrays."""
    n, width = rows.shape
    sigma = bandpass(rows, fs, *SPINDLE_BAND, order=4)
    broad = bandpass(rows, fs, *_BROADBAND, order=2)
    envelope = _moving_mean(np.abs(signal.hilbert(sigma, axis=-1)), 0.1 * fs)
    if envelope_reference is None:
        reference = np.median(envelope, axis=1)
    else:
        reference = np.broadcast_to(np.asarray(envelope_reference, dtype=float), (n,))
    reference = np.maximum(reference, 1e-6)[:, None]
    window = int(fs)
    rel_power = _moving_mean(sigma**2, window) / np.maximum(_moving_mean(broad**2, window), 1e-12)

    # dual threshold: a core above `threshold` x the reference, bounded by half of it
    r, s, e = _runs(envelope > 0.5 * threshold * reference)
    peak = _segment_reduce(np.maximum, envelope, r, s, e)
    keep = peak > threshold * reference[r, 0]
    r, s, e = _merge_runs(r[keep], s[keep], e[keep], int(_SPINDLE_MERGE_GAP_S * fs))
    duration = (e - s) / fs
    keep = (duration >= _SPINDLE_DURATION[0]) & (duration <= _SPINDLE_DURATION[1])
    r, s, e = r[keep], s[keep], e[keep]
    mean_rel = _segment_reduce(np.add, rel_power, r, s, e) / np.maximum(e - s, 1)
    amplitude = _segment_reduce(np.maximum, sigma, r, s, e) - _segment_reduce(
        np.minimum, sigma, r, s, e
    )
    freq = _oscillation_frequency(sigma, fs, r, s, e)
    keep = (
        (mean_rel >= _SPINDLE_MIN_REL_POWER) & (freq >= SPINDLE_BAND[0]) & (freq <= SPINDLE_BAND[1])
    )
    return r[keep], s[keep] / fs, e[keep] / fs, freq[keep], amplitude[keep]


def _flat(rows: np.ndarray, cols: np.ndarray, width: int) -> np.ndarray:
    return rows.astype(np.int64) * width + cols.astype(np.int64)


def _segment_reduce(
    ufunc: np.ufunc, x: np.ndarray, r: np.ndarray, s: np.ndarray, e: np.ndarray
) -> np.ndarray:
    """``ufunc`` reduced over each segment ``x[r, s:e]`` (segments disjoint, in order)."""
    if r.size == 0:
        return np.zeros(0)
    width = x.shape[1]
    bounds = np.empty(2 * r.size, dtype=np.int64)
    bounds[0::2] = _flat(r, s, width)
    bounds[1::2] = _flat(r, e, width)
    flat = x.ravel()
    if bounds[-1] >= flat.size:
        return ufunc.reduceat(flat, bounds[:-1])[0::2]
    return ufunc.reduceat(flat, bounds)[0::2]


def _merge_runs(
    r: np.ndarray, s: np.ndarray, e: np.ndarray, gap: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Join runs of one row separated by fewer than ``gap`` samples."""
    if r.size < 2:
        return r, s, e
    joins = (r[1:] == r[:-1]) & (s[1:] - e[:-1] < gap)
    first = np.concatenate(([True], ~joins))
    last = np.concatenate((~joins, [True]))
    return r[first], s[first], e[last]


def _oscillation_frequency(
    x: np.ndarray, fs: float, r: np.ndarray, s: np.ndarray, e: np.ndarray
) -> np.ndarray:
    """Frequency from interpolated upward zero crossings inside each (row, start, end)."""
    width = x.shape[1]
    below = x[:, :-1] < 0
    above = x[:, 1:] >= 0
    cr, cc = np.nonzero(below & above)
    a, b = x[cr, cc], x[cr, cc + 1]
    crossing = _flat(cr, cc, width) + (-a / (b - a))
    lo = np.searchsorted(crossing, _flat(r, s, width))
    hi = np.searchsorted(crossing, _flat(r, e, width))
    count = hi - lo
    freq = np.full(r.size, np.nan)
    ok = count >= 3
    span = crossing[np.minimum(hi - 1, crossing.size - 1)[ok]] - crossing[lo[ok]]
    freq[ok] = (count[ok] - 1) / (span / fs)
    return freq


def detect_spindles(
    x: np.ndarray,
    fs: float,
    *,
    threshold: float = 4.0,
    envelope_reference: float | None = None,
) -> list[Event]:
    """Find sleep spindles in one EEG signal.

    A spindle is a run of the 11-16 Hz band-passed signal whose Hilbert envelope rises
    above ``threshold`` x the reference envelope (bounded where it falls below half of
    that), lasting 0.5-2 s, in which sigma carries at least 10% of the 1-30 Hz power and
    whose oscillation frequency lies in 11-16 Hz.

    Parameters
    ----------
    x : ndarray, shape (n_samples,)
        EEG in µV.
    fs : float
        Sampling rate in Hz (at least 36 Hz).
    threshold : float
        Multiple of the reference envelope a spindle's peak must exceed.
    envelope_reference : float, optional
        Reference sigma envelope in µV (e.g. a recording's median); defaults to the
        median envelope of ``x`` itself.

    Returns
    -------
    list of Event
        ``kind="spindle"``, with the oscillation frequency and sigma-band peak-to-peak
        amplitude.
    """
    fs = _require_fs(fs, SPINDLE_BAND[1], "detect_spindles")
    rows = _as_rows(x, "detect_spindles")
    if threshold <= 1:
        raise FeatureError(f"detect_spindles: threshold must be > 1, got {threshold}")
    _, start, end, freq, amp = _spindle_rows(
        rows, fs, threshold=threshold, envelope_reference=envelope_reference
    )
    return [
        Event(float(a), float(b), float(f), float(p), "spindle")
        for a, b, f, p in zip(start, end, freq, amp)
    ]


# --------------------------------------------------------------------------- slow waves


def _waves(
    timing: np.ndarray, amplitude: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Negative-then-positive full waves between zero crossings of ``timing``.

    Returns row, down-crossing, up-crossing and next down-crossing sample indices, and
    the minimum of ``amplitude`` over the negative half-wave and its maximum over the
    positive half-wave.
    """
    n, width = timing.shape
    step = np.diff((timing < 0).astype(np.int8), axis=1)
    rows, idx = np.nonzero(step)
    kind = step[rows, idx]
    pos = idx + 1
    if pos.size < 3:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty, empty, np.zeros(0), np.zeros(0)
    flat = _flat(rows, pos, width)
    mins = np.minimum.reduceat(amplitude.ravel(), flat)
    maxs = np.maximum.reduceat(amplitude.ravel(), flat)
    i = np.arange(pos.size - 2)
    ok = (kind[i] == 1) & (rows[i + 2] == rows[i])
    i = i[ok]
    return rows[i], pos[i], pos[i + 1], pos[i + 2], mins[i], maxs[i + 1]


def _slow_wave_rows(
    rows: np.ndarray, fs: float, min_ptp: float = SLOW_WAVE_MIN_PTP
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Slow waves in every row: (row, start_s, end_s, freq, ptp)."""
    timing = bandpass(rows, fs, *SLOW_WAVE_BAND, order=2)
    amplitude = bandpass(rows, fs, *KCOMPLEX_BAND, order=2)
    r, s, _, e, neg, pos = _waves(timing, amplitude)
    period = (e - s) / fs
    ptp = pos - neg
    keep = (period >= 1 / SLOW_WAVE_BAND[1]) & (period <= 1 / SLOW_WAVE_BAND[0]) & (ptp >= min_ptp)
    r, s, e, period, ptp = r[keep], s[keep], e[keep], period[keep], ptp[keep]
    return r, s / fs, e / fs, 1.0 / period, ptp


def detect_slow_waves(
    x: np.ndarray, fs: float, *, min_ptp: float = SLOW_WAVE_MIN_PTP
) -> list[Event]:
    """Find slow waves (AASM N3 criterion) in one EEG signal.

    Zero crossings of the 0.5-2 Hz band-passed signal delimit negative-then-positive
    waves; a wave counts when its period is 0.5-2 s and its negative-to-positive
    peak-to-peak amplitude in the 0.5-4 Hz band is at least ``min_ptp`` µV.

    Parameters
    ----------
    x : ndarray, shape (n_samples,)
        EEG in µV (frontal derivation preferred).
    fs : float
        Sampling rate in Hz.
    min_ptp : float
        Minimum peak-to-peak amplitude in µV (AASM: 75).

    Returns
    -------
    list of Event
        ``kind="slow_wave"``, ``peak_freq`` = 1 / period.
    """
    fs = _require_fs(fs, KCOMPLEX_BAND[1], "detect_slow_waves")
    rows = _as_rows(x, "detect_slow_waves")
    _, start, end, freq, ptp = _slow_wave_rows(rows, fs, min_ptp)
    return [
        Event(float(a), float(b), float(f), float(p), "slow_wave")
        for a, b, f, p in zip(start, end, freq, ptp)
    ]


def slow_wave_fraction(x: np.ndarray, fs: float, *, min_ptp: float = SLOW_WAVE_MIN_PTP) -> float:
    """Fraction (0-1) of ``x`` occupied by slow waves (see :func:`detect_slow_waves`)."""
    events = detect_slow_waves(x, fs, min_ptp=min_ptp)
    return float(sum(e.duration for e in events) * fs / np.asarray(x).shape[-1])


# --------------------------------------------------------------------------- K-complexes


def _kcomplex_rows(
    rows: np.ndarray, fs: float, min_ptp: float = SLOW_WAVE_MIN_PTP
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """K-complexes in every row: (row, start_s, end_s, freq, ptp)."""
    delta = bandpass(rows, fs, *KCOMPLEX_BAND, order=2)
    r, s, _, e, neg, pos = _waves(delta, delta)
    if r.size == 0:
        return r, np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0)
    ptp = pos - neg
    duration = (e - s) / fs
    median = np.median(delta, axis=1, keepdims=True)
    background = 1.4826 * np.median(np.abs(delta - median), axis=1)
    # neighbours: the waves just before and after in the same row
    same_prev = np.concatenate(([False], r[1:] == r[:-1]))
    same_next = np.concatenate((r[:-1] == r[1:], [False]))
    prev_ptp = np.where(same_prev, np.roll(ptp, 1), 0.0)
    next_ptp = np.where(same_next, np.roll(ptp, -1), 0.0)
    keep = (
        (duration >= _KCOMPLEX_DURATION[0])
        & (duration <= _KCOMPLEX_DURATION[1])
        & (ptp >= min_ptp)
        & (ptp >= _KCOMPLEX_BACKGROUND_RATIO * background[r])
        & (np.maximum(prev_ptp, next_ptp) < _KCOMPLEX_NEIGHBOUR_RATIO * ptp)
    )
    r, s, e, duration, ptp = r[keep], s[keep], e[keep], duration[keep], ptp[keep]
    return r, s / fs, e / fs, 1.0 / duration, ptp


def detect_kcomplexes(
    x: np.ndarray, fs: float, *, min_ptp: float = SLOW_WAVE_MIN_PTP
) -> list[Event]:
    """Find K-complex candidates in one EEG signal.

    A candidate is a negative-then-positive wave of the 0.5-4 Hz band-passed signal
    lasting 0.5-2.5 s, at least ``min_ptp`` µV peak to peak, at least six robust
    standard deviations of the band's background, and isolated: both neighbouring
    waves are less than 0.6 of its size (trains of slow waves are not K-complexes).

    Parameters
    ----------
    x : ndarray, shape (n_samples,)
        EEG in µV (frontal or central).
    fs : float
        Sampling rate in Hz.
    min_ptp : float
        Minimum peak-to-peak amplitude in µV.

    Returns
    -------
    list of Event
        ``kind="kcomplex"``, ``peak_freq`` = 1 / duration.
    """
    fs = _require_fs(fs, KCOMPLEX_BAND[1], "detect_kcomplexes")
    rows = _as_rows(x, "detect_kcomplexes")
    _, start, end, freq, ptp = _kcomplex_rows(rows, fs, min_ptp)
    return [
        Event(float(a), float(b), float(f), float(p), "kcomplex")
        for a, b, f, p in zip(start, end, freq, ptp)
    ]


# --------------------------------------------------------------------------- eye movements


@njit(cache=True, nogil=True)
def _turning_points(x: np.ndarray, h: float) -> np.ndarray:  # pragma: no cover - numba
    """Indices of the alternating extrema of ``x`` that reverse by at least ``h``."""
    n = x.size
    out = np.empty(n, dtype=np.int64)
    k = 0
    lo = hi = x[0]
    lo_i = hi_i = 0
    direction = 0
    ext = x[0]
    ext_i = 0
    for i in range(1, n):
        v = x[i]
        if direction == 0:
            if v > hi:
                hi = v
                hi_i = i
            if v < lo:
                lo = v
                lo_i = i
            if hi - lo >= h:
                if hi_i > lo_i:
                    out[k] = lo_i
                    direction = 1
                    ext, ext_i = hi, hi_i
                else:
                    out[k] = hi_i
                    direction = -1
                    ext, ext_i = lo, lo_i
                k += 1
        elif direction == 1:
            if v > ext:
                ext, ext_i = v, i
            elif ext - v >= h:
                out[k] = ext_i
                k += 1
                direction = -1
                ext, ext_i = v, i
        else:
            if v < ext:
                ext, ext_i = v, i
            elif v - ext >= h:
                out[k] = ext_i
                k += 1
                direction = 1
                ext, ext_i = v, i
    if direction != 0:
        out[k] = ext_i
        k += 1
    return out[:k]


@njit(cache=True, nogil=True)
def _segments(x, a, b, use_pair, turns):  # pragma: no cover - numba
    """Per monotone segment: 10% index, 90% index, end, amplitude, a/b correlation."""
    m = max(turns.size - 1, 0)
    i10 = np.empty(m, dtype=np.int64)
    i90 = np.empty(m, dtype=np.int64)
    end = np.empty(m, dtype=np.int64)
    amp = np.empty(m)
    corr = np.empty(m)
    for j in range(m):
        s, e = turns[j], turns[j + 1]
        x0 = x[s]
        d = x[e] - x0
        amp[j] = abs(d)
        end[j] = e
        i10[j] = e
        i90[j] = e
        found10 = False
        for i in range(s, e + 1):
            p = (x[i] - x0) / d
            if not found10 and p >= 0.1:
                i10[j] = i
                found10 = True
            if p >= 0.9:
                i90[j] = i
                break
        corr[j] = -1.0
        if use_pair:
            ma = 0.0
            mb = 0.0
            for i in range(s, e + 1):
                ma += a[i]
                mb += b[i]
            cnt = e - s + 1
            ma /= cnt
            mb /= cnt
            sab = 0.0
            saa = 0.0
            sbb = 0.0
            for i in range(s, e + 1):
                sab += (a[i] - ma) * (b[i] - mb)
                saa += (a[i] - ma) ** 2
                sbb += (b[i] - mb) ** 2
            corr[j] = sab / np.sqrt(saa * sbb) if saa > 0 and sbb > 0 else 0.0
    return i10, i90, end, amp, corr


def _rapid_rows(
    source: np.ndarray, fs: float, pair: bool, min_amplitude: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rapid eye movements as (row, start, end, amplitude): runs of steep slope.

    A run is where the 0.3-5 Hz trace moves one way at least a quarter of the velocity
    threshold, holding a peak above it; its deflection must move away from the baseline,
    reach ``min_amplitude`` within 0.5 s, with LOC and ROC anti-correlated over it.
    """
    filtered = bandpass(source, fs, *_RAPID_BAND, order=2)
    trace = 0.5 * (filtered[0] - filtered[1]) if pair else filtered[0]
    velocity = np.gradient(trace, 1.0 / fs, axis=-1)
    found = []
    for sign in (1.0, -1.0):
        v = sign * velocity
        r, st, en = _runs(v >= 0.25 * _RAPID_MIN_VELOCITY)
        peak = _segment_reduce(np.maximum, v, r, st, en)
        keep = (peak >= _RAPID_MIN_VELOCITY) & ((en - st) / fs <= _RAPID_MAX_RISE_S)
        r, st, en = r[keep], st[keep], en[keep]
        last = np.maximum(en - 1, st)
        amplitude = np.abs(trace[r, last] - trace[r, st])
        corr = np.full(r.size, -1.0)
        if pair and r.size:
            a, b = filtered[0], filtered[1]
            count = np.maximum(en - st, 1)
            sums = [_segment_reduce(np.add, x, r, st, en) for x in (a, b, a * a, b * b, a * b)]
            sa, sb, saa, sbb, sab = sums
            cov = sab - sa * sb / count
            var = (saa - sa**2 / count) * (sbb - sb**2 / count)
            corr = np.where(var > 0, cov / np.sqrt(np.maximum(var, 1e-300)), 0.0)
        # a movement leaves the baseline; the return towards it is not a new movement
        away = np.abs(trace[r, last]) > np.abs(trace[r, st])
        keep = away & (amplitude >= min_amplitude) & (corr <= _EYE_MAX_CORRELATION)
        found.append((r[keep], st[keep], last[keep], amplitude[keep]))
    r, st, en, amp = (np.concatenate(parts) for parts in zip(*found))
    order = np.lexsort((st, r))
    return r[order], st[order] / fs, en[order] / fs, amp[order]


def _eye_rows(
    loc: np.ndarray | None,
    roc: np.ndarray | None,
    fs: float,
    *,
    min_amplitude: float = 30.0,
) -> list[list[Event]]:
    """Rapid and slow eye movements in every row of LOC/ROC (either may be ``None``)."""
    pair = loc is not None and roc is not None
    source = np.stack([loc, roc]) if pair else (loc if loc is not None else roc)[None]
    results: list[list[Event]] = [[] for _ in range(source.shape[1])]
    rows, starts, ends, amps = _rapid_rows(source, fs, pair, min_amplitude)
    for r, a, b, p in zip(rows, starts, ends, amps):
        results[r].append(Event(float(a), float(b), None, float(p), "rapid_eye_movement"))

    filtered = bandpass(source, fs, *_SLOW_EYE_BAND, order=2)
    trace = 0.5 * (filtered[0] - filtered[1]) if pair else filtered[0]
    for row in range(trace.shape[0]):
        a = filtered[0, row]
        b = filtered[1, row] if pair else a
        turns = _turning_points(trace[row], min_amplitude)
        i10, i90, end, amp, corr = _segments(trace[row], a, b, pair, turns)
        rise = (i90 - i10) / fs
        segment = (end - turns[:-1]) / fs if turns.size > 1 else rise
        keep = (
            (rise >= _SLOW_MIN_RISE_S)
            & (segment <= _SLOW_MAX_SEGMENT_S)
            & (amp >= min_amplitude)
            & (corr <= _EYE_MAX_CORRELATION)
        )
        rapid = [(e.start, e.end) for e in results[row]]
        for j in np.flatnonzero(keep):
            start, stop = i10[j] / fs, end[j] / fs
            if not any(s < stop and start < t for s, t in rapid):
                results[row].append(
                    Event(float(start), float(stop), None, float(amp[j]), "slow_eye_movement")
                )
        results[row].sort(key=lambda e: e.start)
    return results


def detect_eye_movements(
    loc: np.ndarray | None,
    roc: np.ndarray | None,
    fs: float,
    *,
    min_amplitude: float = 30.0,
) -> list[Event]:
    """Find rapid (REM) and slow rolling (SEM) eye movements.

    With both EOG channels the opposite-phase component ``(LOC - ROC) / 2`` is analysed
    and a movement must show negative LOC/ROC correlation (eyes move the two electrodes'
    potentials in opposite directions; EEG leaking into both cancels). The trace is cut
    Rapid: on the 0.3-5 Hz trace, a run of steep slope (peak above 300 µV/s) moving away
    from the baseline by at least ``min_amplitude`` µV within 0.5 s. Slow: on the
    0.15-1 Hz trace, a monotone deflection of at least ``min_amplitude`` µV between
    turning points whose 10-90% rise takes at least 0.5 s (and the whole deflection at
    most 6 s), not overlapping a rapid one.

    Parameters
    ----------
    loc, roc : ndarray or None
        Left / right EOG in µV (same length); one may be ``None``.
    fs : float
        Sampling rate in Hz.
    min_amplitude : float
        Minimum deflection in µV.

    Returns
    -------
    list of Event
        ``kind`` ``"rapid_eye_movement"`` or ``"slow_eye_movement"``, sorted by onset;
        ``start`` is the 10% point of the deflection, ``end`` its peak.
    """
    fs = _require_fs(fs, _RAPID_BAND[1], "detect_eye_movements")
    if loc is None and roc is None:
        raise FeatureError("detect_eye_movements: needs at least one EOG channel")
    loc_rows = None if loc is None else _as_rows(loc, "detect_eye_movements (LOC)")
    roc_rows = None if roc is None else _as_rows(roc, "detect_eye_movements (ROC)")
    if loc_rows is not None and roc_rows is not None and loc_rows.shape != roc_rows.shape:
        raise FeatureError(
            f"detect_eye_movements: LOC and ROC lengths differ "
            f"({loc_rows.shape[1]} vs {roc_rows.shape[1]} samples)"
        )
    if min_amplitude <= 0:
        raise FeatureError(f"detect_eye_movements: min_amplitude must be > 0, got {min_amplitude}")
    return _eye_rows(loc_rows, roc_rows, fs, min_amplitude=min_amplitude)[0]
