"""Per-role filtering and resampling.

Each channel is resampled to a common rate with ``resample_poly`` (polyphase, with its own
anti-aliasing filter) and band-pass filtered for its role (zero-phase Butterworth sections
through ``sosfiltfilt``), optionally notch filtered: scipy.signal's filters and results,
computed by :mod:`engine.dsp` without importing scipy (:func:`preprocess_reference` is the
scipy version they are tested against). Filters run at the lower of the input
and output rates: a 256 Hz channel going to 100 Hz is resampled first, so the filters see
2.5x fewer samples. Bands that do not fit below that rate's Nyquist frequency are clamped
to 0.45 x rate and the change is recorded in the channel's :class:`FilterPlan` (SHHS EOG at
50 Hz, EMG at 100 Hz...).

A channel *too slow for its role* (its rate cannot carry even the lower edge of the role's
band, e.g. Sleep-EDF's 1-Hz chin-EMG envelope against the 10-100 Hz EMG band) is not
filtered: it is drawn as a night-normalised envelope instead (centred on its median and
scaled so that its 1st-99th percentile range spans :data:`ENVELOPE_HALF_RANGE_UV`), and its
plan says so (:attr:`FilterPlan.too_slow`, :attr:`FilterPlan.warning`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from fractions import Fraction

import numpy as np

from . import dsp

__all__ = [
    "DEFAULT_BANDS",
    "ENVELOPE_HALF_RANGE_UV",
    "Preprocessing",
    "FilterPlan",
    "plan_filters",
    "preprocess",
    "preprocess_reference",
    "preprocess_device",
]

logger = logging.getLogger(__name__)

#: Default pass bands (Hz) per role. The EMG upper edge is further limited to 0.45 x fs.
DEFAULT_BANDS: dict[str, tuple[float, float]] = {
    "eeg": (0.3, 35.0),
    "eog": (0.3, 10.0),
    "emg": (10.0, 100.0),
    "ecg": (0.5, 40.0),
    # The EEG's fast band (a derived row, engine.montage.DERIVED_ROLES): alpha's upper
    # half, spindles, beta and the muscle that wakefulness adds to a scalp lead.
    "fast": (10.0, 45.0),
    # The EEG's slow band (a derived row): AASM's slow-wave band, the waves that make N3.
    "slow": (0.5, 2.0),
}

#: Half-range (µV) that a too-slow channel's 1st-99th percentile spread is scaled to: 0.8 x
#: the role's strip half-range (``engine.raster.layout.ROLE_SCALES``), so it fills its strip.
ENVELOPE_HALF_RANGE_UV: dict[str, float] = {
    "eeg": 60.0,
    "eog": 120.0,
    "emg": 40.0,
    "ecg": 800.0,
    "fast": 40.0,
    "slow": 60.0,
}

_NYQUIST_FRACTION = 0.45
_MAX_DENOMINATOR = 1000


@dataclass
class Preprocessing:
    """How channels are filtered and resampled before epoching.

    Attributes
    ----------
    target_fs : float
        Common output rate in Hz.
    bands : dict
        Role -> (low, high) pass band in Hz; ``None`` for a role disables its filter.
    notch : float or None
        Mains frequency to notch out (50 or 60 Hz), or ``None``.
    filter : bool
        Apply the band-pass (and notch) filters.
    resample : bool
        Resample to ``target_fs``; when False channels keep their rate (an epoch source
        then needs them all at one rate).
    order : int
        Butterworth order of each band edge (doubled by the zero-phase pass).
    normalise : dict or None
        Role -> median 30-s-window rms (µV) that each channel of that role is scaled to,
        one factor per recording (:mod:`engine.normalise`); ``None``: drawn as recorded.
    normalise_bands : dict or None
        Role -> (low, high) Hz: that role's window rms is measured in this band only
        (``--normalise eeg=9@0.5-2``); ``None``: over the drawn signal.
    """

    target_fs: float = 100.0
    bands: dict[str, tuple[float, float] | None] = field(
        default_factory=lambda: dict(DEFAULT_BANDS)
    )
    notch: float | None = None
    filter: bool = True
    resample: bool = True
    order: int = 4
    normalise: dict[str, float] | None = None
    normalise_bands: dict[str, tuple[float, float]] | None = None

    def __post_init__(self) -> None:
        if not np.isfinite(self.target_fs) or self.target_fs <= 0:
            raise ValueError(f"target_fs must be a positive number, got {self.target_fs}")
        if self.notch is not None and self.notch <= 0:
            raise ValueError(f"notch must be a positive frequency or None, got {self.notch}")
        if self.order < 1:
            raise ValueError(f"order must be at least 1, got {self.order}")
        for role, band in self.bands.items():
            if band is not None and not (0 <= band[0] < band[1]):
                raise ValueError(f"band for {role!r} must be (low, high) with 0 <= low < high")
        for role, target in (self.normalise or {}).items():
            if not (isinstance(target, (int, float)) and np.isfinite(target) and target > 0):
                raise ValueError(f"normalise target for {role!r} must be a positive µV rms, "
                                 f"got {target!r}")  # fmt: skip
        if self.normalise_bands is not None:  # JSON gives lists
            self.normalise_bands = {role: (float(band[0]), float(band[1]))
                                    for role, band in self.normalise_bands.items()}  # fmt: skip
            for role, (low, high) in self.normalise_bands.items():
                if role not in (self.normalise or {}) or not 0 < low < high:
                    raise ValueError(f"normalise band for {role!r} must be (low, high) with "
                                     "0 < low < high, for a role with a normalise target")  # fmt: skip

    def to_dict(self) -> dict:
        """Plain-JSON description, for metadata."""
        out = asdict(self)
        out["bands"] = {role: list(band) if band else None for role, band in self.bands.items()}
        if self.normalise is None:
            del out["normalise"]  # drawn as recorded: metadata as before the option existed
        if self.normalise_bands is None:
            del out["normalise_bands"]
        else:
            out["normalise_bands"] = {role: list(band)
                                      for role, band in self.normalise_bands.items()}  # fmt: skip
        return out


@dataclass(frozen=True)
class FilterPlan:
    """What is applied to one channel: effective band, notch, resampling ratio, notes.

    ``too_slow`` is True when the channel's rate cannot carry the lower edge of its
    role's band: it is then not filtered but drawn as a night-normalised envelope, and
    :attr:`warning` says so in one line.
    """

    role: str
    fs: float
    target_fs: float
    band: tuple[float | None, float | None] | None
    notch: float | None
    up: int
    down: int
    notes: tuple[str, ...] = ()
    too_slow: bool = False
    requested_band: tuple[float, float] | None = None

    @property
    def warning(self) -> str | None:
        """One line for a too-slow channel (None otherwise)."""
        if not self.too_slow or self.requested_band is None:
            return None
        low, high = self.requested_band
        return (
            f"{self.role} channel sampled at {self.fs:g} Hz is too slow for the "
            f"{low:g}-{high:g} Hz {self.role.upper()} band (an envelope?): drawn as its "
            "night-normalised envelope (centred on its median, 1st-99th percentile range "
            "scaled to the strip), not as a raw signal"
        )

    @property
    def filter_fs(self) -> float:
        """Rate at which the filters run: the lower of input and output rates."""
        return min(self.fs, self.output_fs)

    @property
    def output_fs(self) -> float:
        """Exact rate after resampling (``fs * up / down``)."""
        return self.fs * self.up / self.down

    def to_dict(self) -> dict:
        """Plain-JSON description, for metadata."""
        return asdict(self) | {"band": list(self.band) if self.band else None}


def plan_filters(role: str, fs: float, params: Preprocessing | None = None) -> FilterPlan:
    """Decide band, notch and resampling for a channel of ``role`` sampled at ``fs``.

    Parameters
    ----------
    role : str
        ``eeg``, ``eog``, ``emg`` or ``ecg`` (any role without a band is not filtered).
    fs : float
        Channel rate in Hz.
    params : Preprocessing, optional

    Returns
    -------
    FilterPlan
    """
    params = params or Preprocessing()
    if not np.isfinite(fs) or fs <= 0:
        raise ValueError(f"sampling rate must be positive, got {fs}")
    notes: list[str] = []
    up = down = 1
    if params.resample:
        ratio = Fraction(params.target_fs / fs).limit_denominator(_MAX_DENOMINATOR)
        up, down = ratio.numerator, ratio.denominator
        achieved = fs * up / down
        if abs(achieved - params.target_fs) > 1e-9 * params.target_fs:
            notes.append(
                f"{fs:g} Hz -> {params.target_fs:g} Hz approximated as x{up}/{down} "
                f"= {achieved:.6f} Hz"
            )
    # Filters run at the lower of the input and output rates (see preprocess).
    filter_fs = min(fs, fs * up / down)
    ceiling = _NYQUIST_FRACTION * filter_fs
    band: tuple[float | None, float | None] | None = None
    requested = params.bands.get(role) if params.filter else None
    too_slow = requested is not None and float(requested[0]) > 0 and requested[0] >= ceiling
    if requested is not None:
        low, high = float(requested[0]), float(requested[1])
        if high > ceiling:
            notes.append(
                f"{role} upper band edge {high:g} Hz clamped to {ceiling:g} Hz (fs {filter_fs:g})"
            )
            high = ceiling
        low_edge: float | None = low if low > 0 else None
        high_edge: float | None = high
        if low_edge is not None and low_edge >= high:
            notes.append(
                f"{role} band {requested[0]:g}-{requested[1]:g} Hz does not fit below "
                f"{ceiling:g} Hz; low-pass skipped"
            )
            high_edge = None
            if low_edge >= ceiling:
                notes.append(f"{role} high-pass {low_edge:g} Hz skipped too")
                low_edge = None
        if low_edge is not None or high_edge is not None:
            band = (low_edge, high_edge)
    notch = None
    if params.filter and params.notch is not None:
        if params.notch < ceiling:
            notch = float(params.notch)
        else:
            notes.append(
                f"notch {params.notch:g} Hz above {ceiling:g} Hz skipped (fs {filter_fs:g})"
            )
    return FilterPlan(
        role,
        float(fs),
        float(params.target_fs),
        band,
        notch,
        up,
        down,
        tuple(notes),
        too_slow=bool(too_slow),
        requested_band=(float(requested[0]), float(requested[1])) if requested else None,
    )


def _sos(plan: FilterPlan, order: int) -> list[np.ndarray]:
    """The filters of a plan, in the order they run: band-pass (or one edge), then notch."""
    sections = []
    if plan.band is not None:
        low, high = plan.band
        if low is not None and high is not None:
            sections.append(dsp.butter_sos(order, (low, high), "bandpass", plan.filter_fs))
        elif low is not None:
            sections.append(dsp.butter_sos(order, low, "highpass", plan.filter_fs))
        elif high is not None:
            sections.append(dsp.butter_sos(order, high, "lowpass", plan.filter_fs))
    if plan.notch is not None:
        sections.append(dsp.notch_sos(plan.notch, 30.0, plan.filter_fs))
    return sections


def _filter_stages(plan: FilterPlan, order: int, n: int) -> list[dsp.FilterStage]:
    """:class:`engine.dsp.FilterStage` of each filter, for a signal of ``n`` samples."""
    if n < 2:
        return []
    return [dsp.filter_stage(sos, min(3 * (2 * len(sos) + 1), n - 1)) for sos in _sos(plan, order)]


def preprocess(
    signal: np.ndarray,
    fs: float,
    role: str,
    target_fs: float | None = None,
    params: Preprocessing | None = None,
    dtype: type = np.float64,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Filter one channel for its role and resample it.

    The same computation as :func:`preprocess_reference` (scipy's ``resample_poly`` and
    ``sosfiltfilt``) done by :mod:`engine.dsp`: outputs agree to ~1e-6 of the signal's
    range (the resampler runs in float32), see ``tests/test_dsp.py``.

    Parameters
    ----------
    signal : numpy.ndarray
        1-D samples (µV). NaN samples are bridged with zeros for filtering and are NaN
        again in the output.
    fs : float
        Rate of ``signal`` in Hz.
    role : str
        ``eeg``, ``eog``, ``emg`` or ``ecg``.
    target_fs : float, optional
        Output rate; overrides ``params.target_fs``.
    params : Preprocessing, optional
    dtype : numpy dtype
        float64 (default) or float32 output.
    out : numpy.ndarray, optional
        Array of ``dtype`` and the output's length to write into (returned).

    Returns
    -------
    numpy.ndarray
        Samples at the planned output rate (see :func:`plan_filters`). A channel too slow
        for its role comes back as its night-normalised envelope (see the module
        docstring), no longer in µV.
    """
    params, plan, values, missing = _prepare(signal, fs, role, target_fs, params)
    downsample = plan.up < plan.down
    resampled = (plan.up, plan.down) != (1, 1)
    if downsample and values.size:
        values = dsp.resample_poly(values, plan.up, plan.down)
    stages = _filter_stages(plan, params.order, values.size)
    if stages:
        last = not resampled or downsample
        if last and out is not None and missing is None and not plan.too_slow:
            target = out  # the last filter writes the result in place
        else:
            target = np.empty(values.size, dtype if last else np.float64)
        values = dsp.filter_chain(values, stages, out=target)
    if not downsample and resampled and values.size:
        values = dsp.resample_poly(values, plan.up, plan.down)
    values = _finish(np.asarray(values, dtype=dtype), plan, role, missing)
    if out is None or values is out:
        return values
    out[:] = values
    return out


def preprocess_device(
    signal: object,
    fs: float,
    role: str,
    params: Preprocessing | None = None,
) -> object:
    """:func:`preprocess` of a float32 signal that lives on a CUDA device.

    The same computation by :mod:`engine.dsp_cuda` (one source with the CPU kernels);
    float32 out, on the device. Signals with non-finite samples, and channels too slow
    for their role, are preprocessed on the host and copied back up.
    """
    from . import dsp_cuda

    params = params or Preprocessing()
    plan = plan_filters(role, fs, params)
    xp = dsp_cuda.array_module()
    finite = xp is not None and bool(xp.isfinite(signal.sum(dtype=np.float64)))
    if plan.too_slow or not finite:
        host = preprocess(dsp_cuda.to_host(signal), fs, role, params=params, dtype=np.float32)
        return dsp_cuda.to_device(host)
    values = signal
    downsample = plan.up < plan.down
    resampled = (plan.up, plan.down) != (1, 1)
    if downsample and values.shape[0]:
        values = dsp_cuda.resample_poly(values, plan.up, plan.down)
    stages = _filter_stages(plan, params.order, int(values.shape[0]))
    last_is_filter = not resampled or downsample
    values = dsp_cuda.filter_chain(values, stages, np.float32 if last_is_filter else np.float64)
    if not downsample and resampled and values.shape[0]:
        values = dsp_cuda.resample_poly(values, plan.up, plan.down)
    return values


def preprocess_reference(
    signal: np.ndarray,
    fs: float,
    role: str,
    target_fs: float | None = None,
    params: Preprocessing | None = None,
) -> np.ndarray:
    """:func:`preprocess` as scipy.signal computes it (float64): the reference it is
    tested against. Imports scipy.signal (over a second), so the render path never
    calls it."""
    from scipy import signal as sps

    params, plan, values, missing = _prepare(signal, fs, role, target_fs, params)
    downsample = plan.up < plan.down
    if downsample and values.size:
        values = sps.resample_poly(values, plan.up, plan.down)
    for sos in _sos(plan, params.order):
        if values.size < 2:
            break
        padlen = min(3 * (2 * len(sos) + 1), values.size - 1)
        values = sps.sosfiltfilt(sos, values, padlen=padlen)
    if not downsample and (plan.up, plan.down) != (1, 1) and values.size:
        values = sps.resample_poly(values, plan.up, plan.down)
    return _finish(np.asarray(values, dtype=np.float64), plan, role, missing)


def _prepare(
    signal: np.ndarray,
    fs: float,
    role: str,
    target_fs: float | None,
    params: Preprocessing | None,
) -> tuple[Preprocessing, FilterPlan, np.ndarray, np.ndarray | None]:
    """Parameters, plan, the samples with non-finite ones bridged by 0, and where they were."""
    params = params or Preprocessing()
    if target_fs is not None and target_fs != params.target_fs:
        params = Preprocessing(**(asdict(params) | {"target_fs": float(target_fs)}))
    values = np.asarray(signal)
    if values.dtype not in (np.float32, np.float64):
        values = values.astype(np.float64)
    if values.ndim != 1:
        raise ValueError(f"signal must be 1-D, got shape {values.shape}")
    plan = plan_filters(role, fs, params)
    for note in plan.notes:
        logger.debug("%s", note)
    if dsp.all_finite(values):
        return params, plan, values, None
    missing = ~np.isfinite(values)
    values = np.where(missing, 0.0, values).astype(values.dtype)
    return params, plan, values, missing


def _finish(
    values: np.ndarray, plan: FilterPlan, role: str, missing: np.ndarray | None
) -> np.ndarray:
    """Non-finite input samples back as NaN at their output positions; envelopes."""
    if missing is not None:
        values = np.array(values, copy=True)
        positions = np.arange(values.size) * (plan.down / plan.up)
        source = np.minimum(np.round(positions).astype(np.int64), missing.size - 1)
        values[missing[source]] = np.nan
    if plan.too_slow:
        values = _normalised_envelope(values, role)
    return values


def _normalised_envelope(values: np.ndarray, role: str) -> np.ndarray:
    """Centre on the median; scale the 1st-99th percentile spread to the role's strip."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return values
    median = float(np.median(finite))
    low, high = np.percentile(finite, [1.0, 99.0])
    spread = max(float(high) - median, median - float(low))
    centred = values - median
    if not np.isfinite(spread) or spread <= 0:
        return centred
    return centred * (ENVELOPE_HALF_RANGE_UV.get(role, 50.0) / spread)
