"""Peers run beside the model on the same epochs: YASA's ``SleepStaging`` (EEG only).

Its limits, which this module does not hide:

- it needs a sampling rate above 80 Hz (it refuses lower rates; the report says so);
- it scores consecutive 30-s epochs from the first sample only: the signal is therefore
  cropped to start at the first scored epoch's onset, so that YASA's epochs coincide with
  a 30-s scorer grid; on another grid each scorer epoch takes the YASA epoch holding its
  midpoint;
- its features are smoothed over 7.5 min and normalised over the whole recording, so it is
  meant for full nights: it is always given the whole recording, even when only some
  epochs are compared;
- it uses one EEG channel here (the model's first EEG channel, unfiltered), not EOG/EMG.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np

from engine.io.hypnogram import Hypnogram
from engine.stages import Stage, to_stage

__all__ = ["PEERS", "PeerResult", "yasa_stage", "peer_available"]


#: Peers that ``--peers`` accepts.
PEERS: tuple[str, ...] = ("yasa",)


_YASA_MIN_FS = 80.0


_YASA_EPOCH = 30.0


@dataclass
class PeerResult:
    """A peer's stages on the scorer epochs, or why it could not run.

    Attributes
    ----------
    stages : numpy.ndarray or None
        Stage id per requested epoch (-1 where the peer has no epoch covering it).
    refused : str or None
        Reason the peer did not run (rate too low, not installed...).
    """

    stages: np.ndarray | None = None
    refused: str | None = None


def yasa_stage(
    signal: np.ndarray, fs: float, hypnogram: Hypnogram, positions: np.ndarray, channel: str = "EEG"
) -> PeerResult:
    """Run ``yasa.SleepStaging`` (EEG only) and read its stages on given scorer epochs.

    Parameters
    ----------
    signal : numpy.ndarray
        The whole EEG channel in µV at its native rate (YASA filters it itself).
    fs : float
        Its sampling rate (YASA refuses 80 Hz and below).
    hypnogram : Hypnogram
        The scorer's epochs; the signal is cropped to start at its first onset.
    positions : numpy.ndarray
        Epochs to report.
    channel : str
        Channel name given to MNE/YASA.

    Returns
    -------
    PeerResult
    """
    try:
        import mne
        import yasa
    except ImportError as err:
        return PeerResult(refused=f"yasa is not installed ({err}); pip install 'psgvlm[peers]'")
    if fs <= _YASA_MIN_FS:
        return PeerResult(
            refused=f"YASA needs a sampling rate above {_YASA_MIN_FS:g} Hz, the EEG is at {fs:g} Hz"
        )
    if len(hypnogram) == 0:
        return PeerResult(refused="no scored epochs")
    start = float(hypnogram.onsets[0])
    stop = min(signal.size / fs, float(hypnogram.end))
    first, last = int(round(start * fs)), int(round(stop * fs))
    if (last - first) < _YASA_EPOCH * fs:
        return PeerResult(refused="YASA needs at least one 30-s epoch of signal")
    info = mne.create_info([channel], fs, ch_types=["eeg"], verbose=False)
    raw = mne.io.RawArray(signal[np.newaxis, first:last] * 1e-6, info, verbose=False)
    previous = mne.set_log_level("ERROR", return_old_level=True)
    try:
        predicted = yasa.SleepStaging(raw, eeg_name=channel).predict()
    finally:
        mne.set_log_level(previous)
    values = np.array([int(to_stage(str(v))) for v in np.asarray(predicted.hypno)])
    mids = hypnogram.onsets[positions] + hypnogram.durations[positions] / 2
    index = np.floor((mids - start) / _YASA_EPOCH).astype(np.int64)
    covered = (index >= 0) & (index < values.size)
    stages = np.full(positions.size, int(Stage.UNK), dtype=np.int64)
    stages[covered] = values[index[covered]]
    return PeerResult(stages=stages)


def peer_available(peer: str) -> bool:
    """Whether a peer's package is installed (``pip install 'psgvlm[peers]'``)."""
    return importlib.util.find_spec(peer) is not None
