"""Per-epoch evidence features: band powers, spindles, K-complexes, slow waves, eye
movements, chin EMG level and artefact flags, computed for a whole batch of epochs at once.

Which channel answers which question follows AASM practice: spindles and band powers on
a central derivation, slow waves and K-complexes on a frontal one, alpha on an occipital
one (each falls back to the central, then to the first EEG channel).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np
from numba import njit
from scipy import signal

from ..errors import FeatureError
from .detectors import (
    _eye_rows,
    _kcomplex_rows,
    _slow_wave_rows,
    _spindle_rows,
    bandpass,
)

__all__ = [
    "BANDS",
    "EMG_BAND",
    "Feature",
    "FEATURES",
    "EMGReference",
    "EpochFeatures",
    "emg_rms",
    "epoch_features",
    "recording_features",
    "describe",
]

#: EEG bands (Hz) whose share of 0.5-30 Hz power is reported.
BANDS: dict[str, tuple[float, float]] = {
    "delta_rel": (0.5, 4.0),
    "slow_delta_rel": (0.5, 2.0),
    "theta_rel": (4.0, 8.0),
    "alpha_rel": (8.0, 12.0),
    "sigma_rel": (11.0, 16.0),
    "beta_rel": (16.0, 30.0),
}
_TOTAL_BAND = (0.5, 30.0)
#: Chin EMG band whose RMS measures muscle tone (Hz; upper edge capped below Nyquist).
EMG_BAND: tuple[float, float] = (10.0, 100.0)
_EMG_LEVELS = ((25.0, "low"), (75.0, "medium"), (math.inf, "high"))
_FLAT_STD_UV = 0.1
_FLAT_RUN_S = 2.0
_CLIP_MIN_FRACTION = 0.005
_HIGH_AMPLITUDE_UV = 500.0
_LINE_FREQUENCIES = (50.0, 60.0)
_LINE_NOISE_RATIO = 0.3

_CENTRAL = ("C4", "C3", "CZ", "C2", "C1", "C6", "C5")
_FRONTAL = ("F4", "F3", "FZ", "FPZ", "FP2", "FP1", "F2", "F1", "AF4", "AF3")
_OCCIPITAL = ("O2", "O1", "OZ", "PZ", "POZ", "P4", "P3")


class Feature(NamedTuple):
    """Unit and plain-language template of one feature.

    ``{value}`` takes the formatted value; ``{channel}`` the channel it was measured on;
    ``(s)``/``(es)`` become plural endings unless the value is one.
    """

    unit: str
    template: str


#: Every feature of :class:`EpochFeatures` that evidence sentences may cite.
FEATURES: dict[str, Feature] = {
    "delta_rel": Feature("%", "delta (0.5-4 Hz) is {value}% of EEG power on {channel}"),
    "slow_delta_rel": Feature("%", "delta (0.5-2 Hz) is {value}% of EEG power on {channel}"),
    "theta_rel": Feature("%", "theta (4-8 Hz) is {value}% of EEG power on {channel}"),
    "alpha_rel": Feature("%", "alpha (8-12 Hz) is {value}% of EEG power on {channel}"),
    "occipital_alpha_rel": Feature("%", "alpha (8-12 Hz) is {value}% of EEG power on {channel}"),
    "sigma_rel": Feature("%", "sigma (11-16 Hz) is {value}% of EEG power on {channel}"),
    "beta_rel": Feature("%", "beta (16-30 Hz) is {value}% of EEG power on {channel}"),
    "spindle_count": Feature("count", "{value} sleep spindle(s) on {channel}"),
    "spindle_freqs": Feature("Hz", "spindle frequency {value} Hz"),
    "spindle_durations": Feature("s", "spindle duration {value} s"),
    "kcomplex_count": Feature("count", "{value} K-complex(es) on {channel}"),
    "slow_wave_fraction": Feature("%", "slow waves fill {value}% of the epoch on {channel}"),
    "slow_wave_count": Feature("count", "{value} slow wave(s) on {channel}"),
    "slow_wave_max_ptp": Feature("uV", "largest slow wave {value} uV peak to peak"),
    "rem_count": Feature("count", "{value} rapid eye movement(s)"),
    "sem_count": Feature("count", "{value} slow eye movement(s)"),
    "emg_rms": Feature("uV", "chin EMG RMS {value} uV"),
    "emg_percentile": Feature("percentile", "chin EMG at the {value} percentile of the night"),
    "emg_level": Feature("level", "chin EMG {value}"),
    "artefacts": Feature("flags", "artefacts: {value}"),
}

_NUMBER_WORDS = ("no", "one")


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _short_channel(label: str | None) -> str:
    """``"EEG C4-M1"`` -> ``"C4-M1"``."""
    if label is None:
        return "?"
    return re.sub(r"^(EEG|EOG|EMG|ECG)\s+", "", label.strip(), flags=re.IGNORECASE)


def describe(name: str, value: object, channel: str | None = None) -> str:
    """Plain-language phrase for one feature value, from :data:`FEATURES`.

    Parameters
    ----------
    name : str
        Feature name (a key of :data:`FEATURES`).
    value : object
        Measured value in the feature's stored unit (fractions 0-1 for ``%``).
    channel : str, optional
        Channel label it was measured on.

    Returns
    -------
    str

    Examples
    --------
    >>> describe("spindle_count", 1, "EEG C4-M1")
    'one sleep spindle on C4-M1'
    >>> describe("slow_wave_fraction", 0.064, "EEG F4-M1")
    'slow waves fill 6% of the epoch on F4-M1'
    """
    if name not in FEATURES:
        raise FeatureError(f"unknown feature {name!r}; known: {', '.join(FEATURES)}")
    unit, template = FEATURES[name]
    one = False
    if unit == "%":
        text = str(round(100 * float(value)))
    elif unit == "count":
        count = int(value)
        one = count == 1
        text = _NUMBER_WORDS[count] if count < len(_NUMBER_WORDS) else str(count)
    elif unit == "percentile":
        text = _ordinal(round(float(value)))
    elif unit in ("uV", "Hz", "s"):
        text = f"{float(value):.1f}"
    elif unit == "flags":
        text = "; ".join(f"{_short_channel(k)} {', '.join(v)}" for k, v in dict(value).items())
    else:
        text = str(value)
    phrase = template.replace("(s)", "" if one else "s").replace("(es)", "" if one else "es")
    return phrase.format(value=text, channel=_short_channel(channel))


@dataclass(frozen=True)
class EMGReference:
    """A night's distribution of per-epoch chin EMG RMS, to place one epoch within it.

    Attributes
    ----------
    quantiles : tuple of float
        RMS in µV at percentiles 0, 1, ..., 100.
    n_epochs : int
        Number of epochs the distribution was built from.
    """

    quantiles: tuple[float, ...]
    n_epochs: int

    @classmethod
    def from_rms(cls, rms: np.ndarray) -> EMGReference:
        """Build from per-epoch RMS values (µV); non-finite values are ignored."""
        values = np.asarray(rms, dtype=float).ravel()
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise FeatureError("EMG reference needs at least one finite epoch RMS")
        quantiles = np.percentile(values, np.arange(101))
        return cls(tuple(float(q) for q in quantiles), int(values.size))

    @classmethod
    def from_epochs(cls, emg: np.ndarray, fs: float) -> EMGReference:
        """Build from chin EMG epochs, shape ``(n_epochs, n_samples)`` in µV."""
        return cls.from_rms(emg_rms(emg, fs))

    @classmethod
    def from_dict(cls, data: dict) -> EMGReference:
        """Inverse of :meth:`to_dict`."""
        quantiles = tuple(float(q) for q in data["quantiles"])
        if len(quantiles) != 101 or any(b < a for a, b in zip(quantiles, quantiles[1:])):
            raise FeatureError("EMG reference needs 101 non-decreasing quantiles")
        return cls(quantiles, int(data["n_epochs"]))

    def to_dict(self) -> dict:
        """JSON-serialisable form."""
        return {"quantiles": list(self.quantiles), "n_epochs": self.n_epochs}

    def percentile(self, rms: float | np.ndarray) -> np.ndarray | float:
        """Percentile (0-100) of ``rms`` within the night's distribution."""
        # tied quantiles (e.g. a quiet night) map to the middle of their percentile span
        values, inverse = np.unique(np.asarray(self.quantiles), return_inverse=True)
        position = np.bincount(inverse, weights=np.arange(101.0)) / np.bincount(inverse)
        result = (
            np.interp(rms, values, position)
            if values.size > 1
            else np.full_like(np.asarray(rms, dtype=float), 50.0)
        )
        return float(result) if np.ndim(result) == 0 else result


def emg_rms(emg: np.ndarray, fs: float) -> np.ndarray:
    """RMS (µV) of chin EMG in the 10-100 Hz band (capped below Nyquist), per row."""
    fs = float(fs)
    if fs < 25.0:
        raise FeatureError(f"chin EMG needs a sampling rate of at least 25 Hz, got {fs:g} Hz")
    rows = np.atleast_2d(np.asarray(emg, dtype=float))
    rows = rows if np.isfinite(rows).all() else np.nan_to_num(rows)
    filtered = bandpass(rows, fs, EMG_BAND[0], min(EMG_BAND[1], 0.45 * fs), order=4)
    return np.sqrt(np.mean(filtered**2, axis=-1))


def _emg_level(percentile: float | None) -> str | None:
    if percentile is None:
        return None
    return next(name for limit, name in _EMG_LEVELS if percentile < limit)


@dataclass
class EpochFeatures:
    """Evidence features of one epoch (units in :data:`FEATURES`; fractions are 0-1).

    Counts are ``None`` when the channel they need is absent. ``events`` lists every
    detected event (times in seconds from the epoch start, with its channel).
    """

    duration_s: float
    eeg_channel: str | None = None
    frontal_channel: str | None = None
    occipital_channel: str | None = None
    eog_channels: list[str] = field(default_factory=list)
    emg_channel: str | None = None
    delta_rel: float | None = None
    slow_delta_rel: float | None = None
    theta_rel: float | None = None
    alpha_rel: float | None = None
    sigma_rel: float | None = None
    beta_rel: float | None = None
    occipital_alpha_rel: float | None = None
    spindle_count: int | None = None
    spindle_freqs: list[float] = field(default_factory=list)
    spindle_durations: list[float] = field(default_factory=list)
    spindle_amplitudes: list[float] = field(default_factory=list)
    kcomplex_count: int | None = None
    kcomplex_amplitudes: list[float] = field(default_factory=list)
    slow_wave_fraction: float | None = None
    slow_wave_count: int | None = None
    slow_wave_max_ptp: float | None = None
    rem_count: int | None = None
    sem_count: int | None = None
    emg_rms: float | None = None
    emg_percentile: float | None = None
    emg_level: str | None = None
    artefacts: dict[str, list[str]] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-serialisable dictionary (plain floats, ints, strings, lists)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> EpochFeatures:
        """Inverse of :meth:`to_dict` (unknown keys are refused)."""
        names = set(cls.__dataclass_fields__)
        unknown = set(data) - names
        if unknown:
            raise FeatureError(f"unknown feature keys: {', '.join(sorted(unknown))}")
        return cls(**data)


def _electrode(label: str) -> str:
    """Active electrode of a derivation label: ``"EEG Fpz-Cz"`` -> ``"FPZ"``."""
    name = re.sub(r"^(EEG|EOG|EMG|ECG)\s*", "", label.strip(), flags=re.IGNORECASE)
    return re.split(r"[-\s:/]", name, maxsplit=1)[0].upper()


def _pick(indices: list[int], labels: Sequence[str], preferred: tuple[str, ...]) -> int | None:
    for name in preferred:
        for i in indices:
            if _electrode(labels[i]) == name:
                return i
    return None


def _eog_sides(indices: list[int], labels: Sequence[str]) -> tuple[int | None, int | None]:
    left = right = None
    for i in indices:
        label = labels[i].upper()
        if re.search(r"\b(E1|LOC|EOGL|LEFT|EOG1)\b|[-\s]L\b", label) and left is None:
            left = i
        elif re.search(r"\b(E2|ROC|EOGR|RIGHT|EOG2)\b|[-\s]R\b", label) and right is None:
            right = i
    rest = [i for i in indices if i not in (left, right)]
    if left is None and rest:
        left = rest.pop(0)
    if right is None and rest:
        right = rest.pop(0)
    return left, right


def _band_powers(rows: np.ndarray, fs: float) -> dict[str, np.ndarray]:
    nperseg = min(rows.shape[1], int(round(4 * fs)))
    freqs, psd = signal.welch(rows, fs=fs, nperseg=nperseg, axis=-1)
    df = freqs[1] - freqs[0]
    top = min(_TOTAL_BAND[1], fs / 2)

    def power(low: float, high: float) -> np.ndarray:
        sel = (freqs >= low) & (freqs < min(high, top))
        return psd[:, sel].sum(axis=1) * df

    total = np.maximum(power(*_TOTAL_BAND), 1e-12)
    return {name: power(*band) / total for name, band in BANDS.items()}


@njit(cache=True, nogil=True)
def _row_stats(rows: np.ndarray) -> tuple:  # pragma: no cover - numba
    """Per row, one pass: non-finite count, longest run of repeats (samples), std,
    samples at the row's max and min, largest absolute deviation from the mean."""
    n, width = rows.shape
    bad = np.zeros(n, dtype=np.int64)
    longest = np.zeros(n, dtype=np.int64)
    std = np.zeros(n)
    at_top = np.zeros(n, dtype=np.int64)
    at_bottom = np.zeros(n, dtype=np.int64)
    excursion = np.zeros(n)
    for r in range(n):
        total = 0.0
        count = 0
        top = -np.inf
        bottom = np.inf
        run = 1
        for i in range(width):
            v = rows[r, i]
            if not np.isfinite(v):
                bad[r] += 1
                run = 1
                continue
            total += v
            count += 1
            top = max(top, v)
            bottom = min(bottom, v)
            if i > 0 and v == rows[r, i - 1]:
                run += 1
                longest[r] = max(longest[r], run)
            else:
                run = 1
        if count == 0:
            continue
        mean = total / count
        square = 0.0
        for i in range(width):
            v = rows[r, i]
            if np.isfinite(v):
                square += (v - mean) ** 2
                excursion[r] = max(excursion[r], abs(v - mean))
                at_top[r] += v == top
                at_bottom[r] += v == bottom
        std[r] = np.sqrt(square / count)
    return bad, longest, std, at_top, at_bottom, excursion


def _artefact_flags(rows: np.ndarray, fs: float, role: str) -> list[list[str]]:
    """Flags per row: nan, flat, clipping, high_amplitude, line_noise."""
    n, width = rows.shape
    bad, longest, std, at_top, at_bottom, excursion = _row_stats(np.ascontiguousarray(rows))
    flat = (std < _FLAT_STD_UV) | (longest >= _FLAT_RUN_S * fs)
    clipping = ~flat & (np.maximum(at_top, at_bottom) >= max(3, _CLIP_MIN_FRACTION * width))
    high = np.zeros(n, dtype=bool)
    if role in ("eeg", "eog"):
        high = excursion > _HIGH_AMPLITUDE_UV
    line = np.zeros(n, dtype=bool)
    usable = [f for f in _LINE_FREQUENCIES if f + 2 < fs / 2]
    if usable:
        values = np.where(np.isfinite(rows), rows, 0.0) if bad.any() else rows
        freqs, psd = signal.welch(values, fs=fs, nperseg=min(width, int(2 * fs)), axis=-1)
        total = np.maximum(psd[:, freqs >= 0.5].sum(axis=1), 1e-12)
        for f0 in usable:
            line |= psd[:, np.abs(freqs - f0) <= 1.0].sum(axis=1) / total > _LINE_NOISE_RATIO
    flags: list[list[str]] = [[] for _ in range(n)]
    for name, mask in (
        ("nan", bad > 0),
        ("flat", flat),
        ("clipping", clipping),
        ("high_amplitude", high),
        ("line_noise", line),
    ):
        for i in np.flatnonzero(mask):
            flags[i].append(name)
    return flags


def _validate(
    epochs: np.ndarray, fs: float, roles: Sequence[str], labels: Sequence[str]
) -> tuple[np.ndarray, float, list[str]]:
    arr = np.asarray(epochs, dtype=np.float64)
    if arr.ndim != 3:
        raise FeatureError(
            f"epochs must have shape (n_epochs, n_channels, n_samples), got {arr.shape}"
        )
    fs = float(fs)
    if not np.isfinite(fs) or fs < 36.0:
        raise FeatureError(f"features need a sampling rate of at least 36 Hz, got {fs:g} Hz")
    if len(roles) != arr.shape[1] or len(labels) != arr.shape[1]:
        raise FeatureError(
            f"{arr.shape[1]} channels but {len(roles)} roles and {len(labels)} labels"
        )
    if arr.shape[2] < 4 * fs:
        raise FeatureError(f"epochs of {arr.shape[2] / fs:g} s are too short (need >= 4 s)")
    return arr, fs, [str(r).strip().lower() for r in roles]


def _features_batch(
    epochs: np.ndarray,
    fs: float,
    roles: Sequence[str],
    labels: Sequence[str],
    emg_reference: EMGReference | None,
    build_reference: bool,
) -> list[EpochFeatures]:
    arr, fs, roles = _validate(epochs, fs, roles, labels)
    n, _, width = arr.shape
    labels = [str(label) for label in labels]
    out = [EpochFeatures(duration_s=width / fs) for _ in range(n)]

    for c, label in enumerate(labels):
        for i, flags in enumerate(_artefact_flags(arr[:, c], fs, roles[c])):
            if flags:
                out[i].artefacts[label] = flags
    finite = np.isfinite(arr).all()
    clean = arr if finite else np.nan_to_num(arr, nan=0.0, posinf=0.0, neginf=0.0)

    eeg = [c for c, role in enumerate(roles) if role == "eeg"]
    eog = [c for c, role in enumerate(roles) if role == "eog"]
    emg = [c for c, role in enumerate(roles) if role == "emg"]
    if eeg:
        _eeg_features(out, clean, fs, eeg, labels)
    if eog:
        _eog_features(out, clean, fs, eog, labels)
    if emg:
        rms = emg_rms(clean[:, emg[0]], fs)
        if emg_reference is None and build_reference:
            emg_reference = EMGReference.from_rms(rms)
        pct = None if emg_reference is None else emg_reference.percentile(rms)
        for i, f in enumerate(out):
            f.emg_channel = labels[emg[0]]
            f.emg_rms = round(float(rms[i]), 3)
            if pct is not None:
                f.emg_percentile = round(float(pct[i]), 1)
                f.emg_level = _emg_level(f.emg_percentile)
    for f in out:
        f.events.sort(key=lambda e: (e["start"], e["kind"]))
    return out


def _add_events(out, rows, starts, ends, freqs, amps, kind, channel) -> None:
    for r, a, b, fq, p in zip(rows, starts, ends, freqs, amps):
        out[r].events.append(
            {
                "kind": kind,
                "channel": channel,
                "start": round(float(a), 3),
                "end": round(float(b), 3),
                "peak_freq": round(float(fq), 3),
                "amplitude": round(float(p), 2),
            }
        )


def _eeg_features(out, clean, fs, eeg, labels) -> None:
    central = _pick(eeg, labels, _CENTRAL)
    central = eeg[0] if central is None else central
    frontal = _pick(eeg, labels, _FRONTAL)
    frontal = central if frontal is None else frontal
    occipital = _pick(eeg, labels, _OCCIPITAL)
    n = len(out)

    powers = _band_powers(clean[:, central], fs)
    occ_alpha = None
    if occipital is not None:
        occ_alpha = _band_powers(clean[:, occipital], fs)["alpha_rel"]
    r, s, e, fq, amp = _spindle_rows(clean[:, central], fs)
    counts = np.bincount(r, minlength=n)
    _add_events(out, r, s, e, fq, amp, "spindle", labels[central])
    kr, ks, ke, kf, ka = _kcomplex_rows(clean[:, frontal], fs)
    kcounts = np.bincount(kr, minlength=n)
    _add_events(out, kr, ks, ke, kf, ka, "kcomplex", labels[frontal])
    wr, ws, we, wf, wa = _slow_wave_rows(clean[:, frontal], fs)
    wcounts = np.bincount(wr, minlength=n)
    wtime = np.bincount(wr, weights=we - ws, minlength=n)
    wmax = np.zeros(n)
    np.maximum.at(wmax, wr, wa)
    _add_events(out, wr, ws, we, wf, wa, "slow_wave", labels[frontal])

    for i, f in enumerate(out):
        f.eeg_channel = labels[central]
        f.frontal_channel = labels[frontal]
        for name in BANDS:
            setattr(f, name, round(float(powers[name][i]), 4))
        if occ_alpha is not None:
            f.occipital_channel = labels[occipital]
            f.occipital_alpha_rel = round(float(occ_alpha[i]), 4)
        f.spindle_count = int(counts[i])
        f.kcomplex_count = int(kcounts[i])
        f.slow_wave_count = int(wcounts[i])
        f.slow_wave_fraction = round(float(wtime[i] / f.duration_s), 4)
        f.slow_wave_max_ptp = round(float(wmax[i]), 1) if wcounts[i] else None
    for f in out:
        spindles = [ev for ev in f.events if ev["kind"] == "spindle"]
        f.spindle_freqs = [round(ev["peak_freq"], 2) for ev in spindles]
        f.spindle_durations = [round(ev["end"] - ev["start"], 2) for ev in spindles]
        f.spindle_amplitudes = [round(ev["amplitude"], 1) for ev in spindles]
        f.kcomplex_amplitudes = [
            round(ev["amplitude"], 1) for ev in f.events if ev["kind"] == "kcomplex"
        ]


def _eog_features(out, clean, fs, eog, labels) -> None:
    left, right = _eog_sides(eog, labels)
    loc = None if left is None else clean[:, left]
    roc = None if right is None else clean[:, right]
    per_row = _eye_rows(loc, roc, fs)
    channels = [labels[c] for c in (left, right) if c is not None]
    channel = "/".join(channels)
    for f, events in zip(out, per_row):
        f.eog_channels = list(channels)
        f.rem_count = sum(ev.kind == "rapid_eye_movement" for ev in events)
        f.sem_count = sum(ev.kind == "slow_eye_movement" for ev in events)
        for ev in events:
            f.events.append(
                {
                    "kind": ev.kind,
                    "channel": channel,
                    "start": round(ev.start, 3),
                    "end": round(ev.end, 3),
                    "peak_freq": None,
                    "amplitude": round(ev.amplitude, 2),
                }
            )


def epoch_features(
    signals: np.ndarray,
    fs: float,
    roles: Sequence[str],
    labels: Sequence[str],
    emg_reference: EMGReference | None = None,
) -> EpochFeatures:
    """Evidence features of one epoch.

    Parameters
    ----------
    signals : ndarray, shape (n_channels, n_samples)
        The epoch in µV, all channels at one sampling rate.
    fs : float
        Sampling rate in Hz (at least 36 Hz).
    roles : list of str
        Role of each channel: ``"eeg"``, ``"eog"``, ``"emg"``; others (``"ecg"``...) only
        get artefact flags.
    labels : list of str
        Channel labels, e.g. ``"EEG C4-M1"``; the active electrode picks the central,
        frontal and occipital derivations, ``E1``/``LOC`` and ``E2``/``ROC`` the EOG sides.
    emg_reference : EMGReference, optional
        The night's chin EMG distribution; without it ``emg_percentile`` is ``None``.

    Returns
    -------
    EpochFeatures
    """
    arr = np.asarray(signals, dtype=np.float64)
    if arr.ndim != 2:
        raise FeatureError(f"signals must have shape (n_channels, n_samples), got {arr.shape}")
    return _features_batch(arr[None], fs, roles, labels, emg_reference, build_reference=False)[0]


def recording_features(
    epochs: np.ndarray,
    fs: float,
    roles: Sequence[str],
    labels: Sequence[str],
    emg_reference: EMGReference | None = None,
) -> list[EpochFeatures]:
    """Evidence features of every epoch of a recording.

    The chin EMG reference is built from these epochs first (unless one is given), so
    each epoch's EMG level is a percentile within its own night.

    Parameters
    ----------
    epochs : ndarray, shape (n_epochs, n_channels, n_samples)
        Epochs in µV.
    fs, roles, labels
        As in :func:`epoch_features`.
    emg_reference : EMGReference, optional
        Use this distribution instead of the recording's own.

    Returns
    -------
    list of EpochFeatures
    """
    return _features_batch(epochs, fs, roles, labels, emg_reference, build_reference=True)
