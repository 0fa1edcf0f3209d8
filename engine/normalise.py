"""Recording-level amplitude normalisation of preprocessed channels.

The same sleep stage reaches a central derivation at very different amplitudes from one
recording to the next: the amplifier and electrode impedances, the derivation (an
ipsilateral ear reference gives smaller potentials than a contralateral mastoid, the
vertex larger ones) and the sleeper's age all scale it. Scorers adjust to the patient
as they page through a night; a feature-based stager such as YASA z-scores its features
within each night (Vallat & Walker 2021, *eLife* 10:e70092). This module gives images the
same footing: each channel of a role named in :attr:`engine.preprocess.Preprocessing.normalise`
is multiplied by one factor for the whole recording, chosen so that the median of its
30-s windows' rms equals the role's target (µV). The strips are then drawn at the usual
fixed µV scale, so shapes and relative amplitudes within the recording are untouched.

A derived row of the EEG's fast or slow band (``fast``, ``slow``,
:data:`engine.montage.DERIVED_ROLES`) is always scaled this way, to :data:`ROLE_TARGETS_UV`
unless ``--normalise fast=UV`` says otherwise: the amount of fast activity relative to the
rest of the night, not its µV, is what tells wakefulness from sleep across amplifiers and
derivations, and the slow waves relative to the night's own N2 are what a scorer who
adjusts to the patient reads as N3.

The median over windows is robust to artefacts and to the minority stages; it follows
the recording's most common stage (N2 in most nights), so a recording made mostly of one
stage is scaled differently from a whole night.

``ROLE=UV@LOW-HIGH`` (e.g. ``eeg=9@0.5-2``) measures the windows' rms in that band only
(a zero-phase 4th-order Butterworth band-pass of the row, :mod:`engine.dsp`) and scales
the whole row by the factor that brings its median there to ``UV``: the slow waves that
tell N3 from N2 reach a vertex derivation larger than a mastoid-referenced central one
while the rest of the spectrum does not, so a broadband anchor cannot line them up. (On
the development recordings of issue 19 it lost N3, whose contrast to N2 is smaller in
them than in the synthetic nights: ``bench/RESULTS.md``, session 9, run ``dnorm``.)

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> rows = rng.normal(0.0, 40.0, (2, 6000)).astype(np.float32)
>>> gains = normalise_rows(rows, ["eeg", "emg"], 100.0, {"eeg": 20.0})
>>> round(float(np.sqrt(np.mean(rows[0] ** 2))), 1), gains[1]
(20.0, 1.0)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from .errors import PSGError
from .montage import ROLES

__all__ = [
    "WINDOW_SECONDS",
    "ROLE_TARGETS_UV",
    "parse_normalise",
    "normalise_options",
    "recording_gain",
    "normalise_rows",
    "normalises",
]

#: Length of the windows whose rms is taken (s).
WINDOW_SECONDS = 30.0
#: Roles scaled per recording even without ``--normalise``: role -> median window rms (µV).
#: ``slow``'s 10 µV is about the median 0.5-2 Hz rms of a night's N2 (its commonest stage)
#: in the synthetic nights and in the development recordings of issue 19 (9.7-18.4 µV).
ROLE_TARGETS_UV: dict[str, float] = {"fast": 8.0, "slow": 10.0}


def _parse(text: str) -> dict[str, tuple[float, tuple[float, float] | None]]:
    """``ROLE=UV[@LOW-HIGH],...`` as role -> (target, band or None)."""
    parsed: dict[str, tuple[float, tuple[float, float] | None]] = {}
    for item in text.split(","):
        role, sep, value = item.strip().partition("=")
        role = role.strip().lower()
        value, at, band_text = value.partition("@")
        band: tuple[float, float] | None = None
        try:
            target = float(value) if sep else float("nan")
            if at:
                low, dash, high = band_text.strip().partition("-")
                band = (float(low), float(high)) if dash else None
                if band is None or not 0 < band[0] < band[1]:
                    target = float("nan")
        except ValueError:
            target = float("nan")
        if role not in ROLES or not np.isfinite(target) or target <= 0:
            raise PSGError(
                f"--normalise: expected ROLE=UV or ROLE=UV@LOW-HIGH with ROLE one of "
                f"{', '.join(ROLES)}, UV a positive median 30-s rms in µV and LOW-HIGH the band "
                f"it is measured in, in Hz (e.g. eeg=15 or eeg=9@0.5-2), got {item.strip()!r}"
            )
        parsed[role] = (target, band)
    return parsed


def parse_normalise(text: str) -> dict[str, float]:
    """The targets of ``ROLE=UV[@LOW-HIGH],...`` (``psgvlm render --normalise eeg=15``).

    Raises
    ------
    PSGError
        On an unknown role, a target that is not a positive number or a malformed band.

    Examples
    --------
    >>> parse_normalise("eeg=15, emg=5")
    {'eeg': 15.0, 'emg': 5.0}
    >>> parse_normalise("eeg=9@0.5-2")
    {'eeg': 9.0}
    """
    return {role: target for role, (target, _) in _parse(text).items()}


def normalise_options(
    text: str | None,
) -> dict[str, dict[str, float] | dict[str, tuple[float, float]] | None]:
    """:class:`engine.preprocess.Preprocessing`'s ``normalise`` and ``normalise_bands`` from
    ``--normalise`` text (parsed once; ``None`` or empty: drawn as recorded).

    Examples
    --------
    >>> normalise_options("eeg=9@0.5-2,emg=5")
    {'normalise': {'eeg': 9.0, 'emg': 5.0}, 'normalise_bands': {'eeg': (0.5, 2.0)}}
    >>> normalise_options(None)
    {'normalise': None, 'normalise_bands': None}
    """
    parsed = _parse(text) if text else {}
    bands = {role: band for role, (_, band) in parsed.items() if band is not None}
    return {
        "normalise": {role: target for role, (target, _) in parsed.items()} or None,
        "normalise_bands": bands or None,
    }


def recording_gain(
    values: object, fs: float, target_uv: float, band: tuple[float, float] | None = None
) -> float:
    """The factor that brings the median 30-s-window rms of ``values`` to ``target_uv``.

    Parameters
    ----------
    values : array
        One preprocessed channel (NumPy, or a device array with ``.get()``); NaN samples
        (gaps, absent stretches) are left out of the windows they fall in.
    fs : float
        Its rate (Hz).
    target_uv : float
        The median window rms wanted (µV).
    band : (low, high), optional
        Measure the windows' rms in this band (Hz) rather than over the whole signal.

    Returns
    -------
    float
        1.0 when the channel has no full window with signal (too short, flat or absent):
        nothing to normalise by.
    """
    window = int(round(WINDOW_SECONDS * fs))
    count = int(values.shape[0]) // window if window > 0 else 0
    if count < 1:
        return 1.0
    windows = values[: count * window].reshape(count, window)
    if band is not None:
        windows = _band_windows(windows, fs, band)
    rms = (windows * windows).mean(axis=1) ** 0.5
    rms = np.asarray(rms.get() if hasattr(rms, "get") else rms, dtype=np.float64)
    rms = rms[np.isfinite(rms) & (rms > 1e-6)]
    if rms.size == 0:
        return 1.0
    return float(target_uv / np.median(rms))


def _band_windows(windows: object, fs: float, band: tuple[float, float]) -> np.ndarray:
    """The windows' signal in ``band`` (zero-phase Butterworth of the whole run of them);
    windows holding a NaN stay NaN, the gaps counting as zeros for their neighbours."""
    from . import dsp

    host = np.asarray(windows.get() if hasattr(windows, "get") else windows, np.float64)
    low, high = band
    high = min(high, 0.45 * fs)
    if not low < high:
        raise PSGError(f"--normalise band {band[0]:g}-{band[1]:g} Hz: nothing of it below "
                       f"0.45 x the {fs:g}-Hz rate")  # fmt: skip
    finite = np.isfinite(host).all(axis=1)
    signal = np.where(np.isfinite(host), host, 0.0).reshape(-1)
    sos = dsp.butter_sos(4, (low, high), "bandpass", fs)
    filtered = dsp.sosfiltfilt(sos, signal).reshape(host.shape)
    filtered[~finite] = np.nan
    return filtered


def normalises(roles: Sequence[str], targets: Mapping[str, float] | None) -> bool:
    """Whether :func:`normalise_rows` would scale any of these rows.

    Examples
    --------
    >>> normalises(["eeg"], None), normalises(["eeg", "fast"], None)
    (False, True)
    """
    return bool(targets) or any(role in ROLE_TARGETS_UV for role in roles)


def normalise_rows(
    signals: object,
    roles: Sequence[str],
    fs: float,
    targets: Mapping[str, float] | None,
    bands: Mapping[str, tuple[float, float]] | None = None,
) -> list[float]:
    """Scale, in place, each row of ``signals`` whose role has a target; return the gains.

    Parameters
    ----------
    signals : array, shape (n_rows, n_samples)
        Preprocessed channels (µV), float, writable (NumPy or a device array).
    roles : sequence of str
        Role of each row.
    fs : float
        Their common rate (Hz).
    targets : mapping or None
        Role -> median 30-s-window rms (µV) after scaling; the roles of
        :data:`ROLE_TARGETS_UV` are scaled to theirs unless named here.
    bands : mapping, optional
        Role -> (low, high) Hz: measure that role's window rms in the band only.

    Returns
    -------
    list of float
        The factor applied to each row (1.0 where none).
    """
    targets = ROLE_TARGETS_UV | dict(targets or {})
    gains = []
    for row, role in enumerate(roles):
        target = targets.get(role)
        band = (bands or {}).get(role)
        gain = recording_gain(signals[row], fs, float(target), band) if target else 1.0
        if gain != 1.0:
            signals[row] *= np.float32(gain)
        gains.append(gain)
    return gains
