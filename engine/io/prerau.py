"""The Prerau Lab example segment: one real EEG channel and its AASM scoring, as CSV.

Layout of the folder (from the public repository preraulab/pyDYNAM-O,
``examples/_example_data/``)::

    segment_data.csv     one sample per line, µV, 100 Hz (no header)
    segment_stages.csv   header ``Time,Stage``, then one row per stage change:
                         seconds from the first sample and a code
                         (5 W, 4 REM, 3 N1, 2 N2, 1 N3); the last row marks the end

The scoring grid of 30-s epochs starts at 10.01 s (every change falls on
``10.01 + 30 k``); each epoch takes the stage in force at its midpoint. The channel's
derivation is not documented: it is labelled ``EEG`` (a central EEG in the montage alias
table, so ``eeg=C4-M1`` resolves to it).
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DatasetError, HypnogramError, UnknownStageError
from ..stages import Stage
from .hypnogram import Hypnogram

__all__ = [
    "PRERAU_FS",
    "PRERAU_GRID_START",
    "PRERAU_LABEL",
    "PRERAU_CODES",
    "ArrayRecording",
    "load_prerau",
]

#: Sampling rate of ``segment_data.csv`` (Hz).
PRERAU_FS = 100.0
#: Onset of the first scored 30-s epoch (s from the first sample).
PRERAU_GRID_START = 10.01
#: Label given to the segment's one EEG channel.
PRERAU_LABEL = "EEG"
#: Prerau stage codes -> AASM stages.
PRERAU_CODES: dict[int, Stage] = {5: Stage.W, 4: Stage.R, 3: Stage.N1, 2: Stage.N2, 1: Stage.N3}

_DATA_FILE = "segment_data.csv"
_STAGES_FILE = "segment_stages.csv"


@dataclass
class ArrayRecording:
    """A recording held in memory: channels in µV, their rates and an epoch hypnogram.

    Attributes
    ----------
    dataset, recording : str
        Names used in reports and sample keys.
    signals : dict
        Channel label -> float64 samples (µV).
    fs : dict
        Channel label -> sampling rate (Hz).
    hypnogram : Hypnogram
        Scorer epochs, onsets in seconds from the first sample.
    source : Path or None
        Where the signals were read from.
    """

    dataset: str
    recording: str
    signals: dict[str, np.ndarray]
    fs: dict[str, float]
    hypnogram: Hypnogram
    source: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not self.signals:
            raise DatasetError(f"{self.recording}: no channels")
        missing = [label for label in self.signals if label not in self.fs]
        if missing:
            raise DatasetError(f"{self.recording}: no sampling rate for {missing}")

    @property
    def labels(self) -> list[str]:
        """Channel labels, in order."""
        return list(self.signals)

    def duration(self, label: str) -> float:
        """Seconds of signal in channel ``label``."""
        return self.signals[label].size / self.fs[label]


def _read_samples(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(f"{path}: no such file (expected one µV sample per line)")
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=1)
    except ValueError as err:
        raise DatasetError(f"{path}: expected one number (µV) per line: {err}") from None
    if values.ndim != 1 or values.size == 0:
        raise DatasetError(f"{path}: expected one number (µV) per line, got shape {values.shape}")
    if not np.all(np.isfinite(values)):
        raise DatasetError(f"{path}: {int(np.sum(~np.isfinite(values)))} samples are not finite")
    return values


def _read_changes(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if not path.is_file():
        raise HypnogramError(f"{path}: no such file (expected 'Time,Stage' rows)")
    times, codes = [], []
    with open(path, newline="") as handle:
        rows = csv.reader(handle)
        header = [cell.strip().lower() for cell in next(rows, [])]
        if header[:2] != ["time", "stage"]:
            raise HypnogramError(f"{path}: expected the header 'Time,Stage', got {header}")
        for line, row in enumerate(rows, start=2):
            if not row or not "".join(row).strip():
                continue
            try:
                times.append(float(row[0]))
                codes.append(int(float(row[1])))
            except (ValueError, IndexError):
                raise HypnogramError(
                    f"{path}, line {line}: expected 'seconds,code', got {','.join(row)!r}"
                ) from None
    if len(times) < 2:
        raise HypnogramError(f"{path}: needs at least one stage change and the end row")
    unknown = sorted({c for c in codes if c not in PRERAU_CODES})
    if unknown:
        raise UnknownStageError(
            f"{path}: unknown stage codes {unknown}; expected {sorted(PRERAU_CODES)} "
            "(5 W, 4 REM, 3 N1, 2 N2, 1 N3)"
        )
    times_arr = np.asarray(times)
    if np.any(np.diff(times_arr) < 0):
        raise HypnogramError(f"{path}: change times are not sorted")
    return times_arr, np.asarray(codes)


def load_prerau(
    folder: str | os.PathLike[str],
    *,
    fs: float = PRERAU_FS,
    grid_start: float = PRERAU_GRID_START,
    epoch_length: float = 30.0,
) -> ArrayRecording:
    """Read the Prerau segment into memory with its epoch hypnogram.

    Parameters
    ----------
    folder : str or path-like
        Folder holding ``segment_data.csv`` and ``segment_stages.csv``.
    fs : float
        Sampling rate of the data file.
    grid_start, epoch_length : float
        Onset of the first scored epoch and the epoch length (s).

    Returns
    -------
    ArrayRecording
        Dataset ``prerau``, one channel :data:`PRERAU_LABEL`; epochs from ``grid_start``
        while they end inside both the signal and the last stage row.

    Raises
    ------
    DatasetError
        When the data file is missing or not numeric.
    HypnogramError, UnknownStageError
        When the stage file is missing, malformed, or holds unknown codes.

    Examples
    --------
    >>> rec = load_prerau("shared/data/prerau")  # doctest: +SKIP
    >>> len(rec.hypnogram), rec.hypnogram.stage_counts()["N2"]  # doctest: +SKIP
    (167, 95)
    """
    if not (np.isfinite(fs) and fs > 0 and np.isfinite(epoch_length) and epoch_length > 0):
        raise DatasetError(f"fs and epoch_length must be positive, got {fs}, {epoch_length}")
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder (expected {_DATA_FILE}, {_STAGES_FILE})")
    samples = _read_samples(folder / _DATA_FILE)
    times, codes = _read_changes(folder / _STAGES_FILE)
    end = min(samples.size / fs, float(times[-1]))
    n_epochs = int(np.floor((end - grid_start) / epoch_length + 1e-6))
    if n_epochs < 1:
        raise HypnogramError(
            f"{folder / _STAGES_FILE}: no whole {epoch_length:g}-s epoch between {grid_start:g} s "
            f"and the end at {end:g} s"
        )
    onsets = grid_start + epoch_length * np.arange(n_epochs)
    # The stage in force at each epoch's midpoint: the last change at or before it.
    change = np.searchsorted(times, onsets + epoch_length / 2, side="right") - 1
    if np.any(change < 0):
        raise HypnogramError(
            f"{folder / _STAGES_FILE}: the first change ({times[0]:g} s) is after the first "
            f"epoch's midpoint ({onsets[0] + epoch_length / 2:g} s)"
        )
    epoch_codes = codes[change]
    hypnogram = Hypnogram(
        onsets,
        np.full(n_epochs, float(epoch_length)),
        [int(PRERAU_CODES[int(c)]) for c in epoch_codes],
        [str(int(c)) for c in epoch_codes],
        source=folder / _STAGES_FILE,
        format="prerau",
        epoch_length=float(epoch_length),
    )
    return ArrayRecording(
        dataset="prerau",
        recording="segment",
        signals={PRERAU_LABEL: samples},
        fs={PRERAU_LABEL: float(fs)},
        hypnogram=hypnogram,
        source=folder,
    )
