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

A derived row of the EEG's fast band (``fast``, :data:`engine.montage.DERIVED_ROLES`) is
always scaled this way, to :data:`ROLE_TARGETS_UV` unless ``--normalise fast=UV`` says
otherwise: the amount of fast activity relative to the rest of the night, not its µV,
is what tells wakefulness from sleep across amplifiers and derivations.

The median over windows is robust to artefacts and to the minority stages; it follows
the recording's most common stage (N2 in most nights), so a recording made mostly of one
stage is scaled differently from a whole night.

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
    "recording_gain",
    "normalise_rows",
    "normalises",
]

#: Length of the windows whose rms is taken (s).
WINDOW_SECONDS = 30.0
#: Roles scaled per recording even without ``--normalise``: role -> median window rms (µV).
ROLE_TARGETS_UV: dict[str, float] = {"fast": 8.0}


def parse_normalise(text: str) -> dict[str, float]:
    """``ROLE=UV[,ROLE=UV...]`` (``psgvlm render --normalise eeg=15``) as a dict.

    Raises
    ------
    PSGError
        On an unknown role or a target that is not a positive number.

    Examples
    --------
    >>> parse_normalise("eeg=15, emg=5")
    {'eeg': 15.0, 'emg': 5.0}
    """
    targets: dict[str, float] = {}
    for item in text.split(","):
        role, sep, value = item.strip().partition("=")
        role = role.strip().lower()
        try:
            target = float(value) if sep else float("nan")
        except ValueError:
            target = float("nan")
        if role not in ROLES or not np.isfinite(target) or target <= 0:
            raise PSGError(
                f"--normalise: expected ROLE=UV with ROLE one of {', '.join(ROLES)} and UV a "
                f"positive median 30-s rms in µV (e.g. eeg=15), got {item.strip()!r}"
            )
        targets[role] = target
    return targets


def recording_gain(values: object, fs: float, target_uv: float) -> float:
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
    rms = (windows * windows).mean(axis=1) ** 0.5
    rms = np.asarray(rms.get() if hasattr(rms, "get") else rms, dtype=np.float64)
    rms = rms[np.isfinite(rms) & (rms > 1e-6)]
    if rms.size == 0:
        return 1.0
    return float(target_uv / np.median(rms))


def normalises(roles: Sequence[str], targets: Mapping[str, float] | None) -> bool:
    """Whether :func:`normalise_rows` would scale any of these rows.

    Examples
    --------
    >>> normalises(["eeg"], None), normalises(["eeg", "fast"], None)
    (False, True)
    """
    return bool(targets) or any(role in ROLE_TARGETS_UV for role in roles)


def normalise_rows(
    signals: object, roles: Sequence[str], fs: float, targets: Mapping[str, float] | None
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

    Returns
    -------
    list of float
        The factor applied to each row (1.0 where none).
    """
    targets = ROLE_TARGETS_UV | dict(targets or {})
    gains = []
    for row, role in enumerate(roles):
        target = targets.get(role)
        gain = recording_gain(signals[row], fs, float(target)) if target else 1.0
        if gain != 1.0:
            signals[row] *= np.float32(gain)
        gains.append(gain)
    return gains
