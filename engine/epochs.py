"""A recording and its hypnogram as scored epochs, ready to draw.

:func:`open_epochs` reads each montage channel once (one recording in memory at a time),
filters and resamples it for its role (:mod:`engine.preprocess`), and keeps the result
as float32. :meth:`EpochSource.iter_batches` then cuts epochs out of it: each epoch
starts at its hypnogram onset (rounded to the nearest sample), never at
``index x epoch length``. With ``context=k`` every row also holds the ``k`` epochs
before and after; samples beyond the recording are NaN so drawn lines break there.

Images label each strip with :func:`drawn_label` of the recording's channel (the
derivation actually drawn, e.g. ``Fpz-Cz`` for a ``C4-M1`` slot filled by a fallback),
never with the montage slot. A channel too slow for its role (see
:mod:`engine.preprocess`) is logged as a WARNING when the recording is opened.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import dsp
from .errors import HypnogramError
from .io.hypnogram import Hypnogram, read_hypnogram
from .montage import DEFAULT_MONTAGE, Montage, ResolvedChannel, resolve_montage, row_name
from .normalise import normalise_rows, normalises
from .preprocess import FilterPlan, Preprocessing, plan_filters, preprocess
from .stages import Stage

if TYPE_CHECKING:
    from .io.edf import Recording

__all__ = [
    "EpochBatch",
    "EpochSource",
    "DeviceEpochSource",
    "open_epochs",
    "iter_epochs",
    "drawn_label",
    "blank_outside",
]

logger = logging.getLogger(__name__)

_TYPE_PREFIX = re.compile(r"^(?:eeg|eog|emg|ecg|ekg)[\s:_]+(?P<rest>\S+-\S+)$", re.IGNORECASE)


def drawn_label(label: str) -> str:
    """Caption of a strip: the recording's channel label, as drawn on images.

    Runs of white space become one space, and a leading type word in front of a full
    derivation is dropped (``"EEG Fpz-Cz"`` -> ``"Fpz-Cz"``); other labels are kept as
    they are (``"CZ-A1"``, ``"EEG C4"``, ``"EMG submental"``).

    Examples
    --------
    >>> [drawn_label(x) for x in ("EEG Fpz-Cz", "CZ-A1", "EEG  C4", "EMG submental")]
    ['Fpz-Cz', 'CZ-A1', 'EEG C4', 'EMG submental']
    """
    text = " ".join(str(label).split())
    match = _TYPE_PREFIX.match(text)
    return match["rest"] if match else text


def blank_outside(signals: np.ndarray, span: tuple[int, int], kept: tuple[int, int]) -> None:
    """Blank (NaN, not drawn) the samples of ``span`` outside ``kept`` on the last axis, in
    place: how a scorer epoch shorter than the model's is shown in the model's epoch
    (``psgvlm render --short-epochs``, :func:`vlm.sources.model_windows`). Works on a
    device array too.

    Examples
    --------
    >>> x = np.zeros((1, 10), np.float32)
    >>> blank_outside(x, (2, 8), (4, 6))
    >>> np.isnan(x[0]).nonzero()[0].tolist()
    [2, 3, 6, 7]
    """
    signals[..., max(span[0], 0) : kept[0]] = np.nan
    signals[..., kept[1] : span[1]] = np.nan


@dataclass
class EpochBatch:
    """Epochs cut from one recording.

    Attributes
    ----------
    signals : numpy.ndarray
        float32, ``(n, n_channels, (2 * context + 1) * epoch_samples)``, µV after
        preprocessing; NaN outside the recording.
    index : numpy.ndarray
        int64 epoch numbers (positions in :attr:`EpochSource.hypnogram`).
    onset : numpy.ndarray
        float64 seconds from the recording start.
    duration : numpy.ndarray
        float64 epoch lengths in seconds.
    stage : numpy.ndarray
        int8 stage ids (UNK = -1).
    label : list of str
        Raw hypnogram labels.
    """

    signals: np.ndarray
    index: np.ndarray
    onset: np.ndarray
    duration: np.ndarray
    stage: np.ndarray
    label: list[str]

    def __len__(self) -> int:
        return int(self.index.size)


class EpochSource:
    """Preprocessed channels of one recording cut into the hypnogram's epochs.

    Build it with :func:`open_epochs` (EDF) or :meth:`from_arrays` (signals in memory).

    Attributes
    ----------
    channels : list of ResolvedChannel
        Montage entries in row order.
    fs : float
        Sampling rate of the kept signals (Hz).
    epoch_length : float
        Seconds per epoch.
    epoch_samples : int
        Samples per epoch.
    hypnogram : Hypnogram
        Epoch-level hypnogram, trimmed to the signal.
    plans : list of FilterPlan
        What preprocessing did to each channel.
    source : Path or None
        Recording file.
    start_time : datetime or None
        Clock time of the recording start.
    gains : list of float
        Factor each row was scaled by (:mod:`engine.normalise`; 1.0 when not normalised).
    """

    def __init__(
        self,
        signals: np.ndarray,
        fs: float,
        channels: list[ResolvedChannel],
        hypnogram: Hypnogram,
        plans: list[FilterPlan] | None = None,
        source: Path | None = None,
        start_time: datetime | None = None,
        normalise: Mapping[str, float] | None = None,
        normalise_bands: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self.gains = [1.0] * len(channels)
        roles = [c.role for c in channels]
        if normalises(roles, normalise):  # signals: the freshly stacked rows, scaled in place
            self.gains = normalise_rows(signals, roles, fs, normalise, normalise_bands)
        signals = self._store(signals)
        if signals.ndim != 2 or signals.shape[0] != len(channels):
            raise ValueError(
                f"signals must be (n_channels={len(channels)}, n_samples), got {signals.shape}"
            )
        if not np.isfinite(fs) or fs <= 0:
            raise ValueError(f"fs must be positive, got {fs}")
        self._signals = signals
        self.fs = float(fs)
        self.channels = list(channels)
        self.plans = list(plans or [])
        self.source = source
        self.start_time = start_time
        epoched = hypnogram if hypnogram.is_epoched else hypnogram.to_epochs()
        self.epoch_length = float(epoched.epoch_length)
        exact = self.epoch_length * self.fs
        self.epoch_samples = int(round(exact))
        if self.epoch_samples < 1:
            raise HypnogramError(
                f"epoch of {self.epoch_length:g} s is under one sample at {fs:g} Hz"
            )
        if abs(exact - self.epoch_samples) > 1e-6:
            warnings.warn(
                f"{self._name}: {self.epoch_length:g}-s epochs at {self.fs:g} Hz are "
                f"{exact:g} samples; rounded to {self.epoch_samples}",
                stacklevel=3,
            )
        self.hypnogram, self._starts = self._trim(epoched)

    @staticmethod
    def _store(signals: np.ndarray) -> np.ndarray:
        """The signals as kept: a read-only float32 NumPy array."""
        signals = np.asarray(signals, dtype=np.float32)
        signals.flags.writeable = False
        return signals

    @property
    def _name(self) -> str:
        return str(self.source) if self.source else "in-memory signals"

    def _trim(self, epoched: Hypnogram) -> tuple[Hypnogram, np.ndarray]:
        """Keep the epochs that lie inside the signal; warn with the counts dropped."""
        n_samples = self._signals.shape[1]
        starts = np.round(epoched.onsets * self.fs).astype(np.int64)
        inside = (starts >= 0) & (starts + self.epoch_samples <= n_samples)
        scored = epoched.stages != int(Stage.UNK)
        before = int(np.sum(starts < 0))
        after = int(np.sum(~inside)) - before
        if before or after:
            message = (
                f"{self._name}: hypnogram has {len(epoched)} epochs, {int(inside.sum())} lie "
                f"inside the {n_samples / self.fs:g}-s signal; dropped {before} before its "
                f"start and {after} after its end ({int(np.sum(~inside & scored))} scored)"
            )
            if np.any(~inside & scored):
                warnings.warn(message, stacklevel=3)
            else:  # e.g. Sleep-EDF's trailing 'Sleep stage ?' past the end of the signal
                logger.info("%s", message)
        kept = np.flatnonzero(inside)
        trimmed = Hypnogram(
            epoched.onsets[kept],
            epoched.durations[kept],
            epoched.stages[kept],
            [epoched.labels[i] for i in kept],
            epoched.source,
            epoched.format,
            epoched.scorer,
            epoched.epoch_length,
            epoched.start_time,
        )
        if kept.size:
            unscored = n_samples / self.fs - kept.size * self.epoch_length
            if unscored >= self.epoch_length:
                logger.info("%s: %.0f s of signal lie outside scored epochs", self._name, unscored)
        return trimmed, starts[kept]

    # -- construction from memory -------------------------------------------------------
    @classmethod
    def from_arrays(
        cls,
        signals: Mapping[str, np.ndarray],
        fs: float | Mapping[str, float],
        hypnogram: Hypnogram,
        montage: Montage | str = DEFAULT_MONTAGE,
        preprocessing: Preprocessing | None = None,
        source: str | os.PathLike[str] | None = None,
        start_time: datetime | None = None,
    ) -> EpochSource:
        """Epoch signals held in memory (tests, CSV data such as the Prerau segment).

        Parameters
        ----------
        signals : mapping
            Channel label -> 1-D samples in µV.
        fs : float or mapping
            One rate for all channels, or label -> rate.
        hypnogram : Hypnogram
            Onsets in seconds from the first sample.
        montage : Montage or str
            Resolved against the labels of ``signals``.
        preprocessing : Preprocessing, optional
        source, start_time : optional
            Where the signals came from, for messages and metadata.
        """
        if not signals:
            raise ValueError("signals is empty")
        labels = list(signals)
        rates = {label: float(fs[label] if isinstance(fs, Mapping) else fs) for label in labels}
        channels = resolve_montage(montage, labels, source=str(source) if source else None)
        return cls._assemble(
            channels,
            lambda channel: np.asarray(signals[channel.label], dtype=np.float64),
            rates,
            hypnogram,
            preprocessing or Preprocessing(),
            Path(source) if source else None,
            start_time,
        )

    @classmethod
    def _assemble(
        cls,
        channels: list[ResolvedChannel],
        read: Callable[[ResolvedChannel], np.ndarray],
        rates: Mapping[str, float],
        hypnogram: Hypnogram,
        preprocessing: Preprocessing,
        source: Path | None,
        start_time: datetime | None,
    ) -> EpochSource:
        """Read each channel once, preprocess it, stack the rows (shortest length wins)."""
        processed: dict[str, tuple[np.ndarray, FilterPlan]] = {}
        rows, plans = [], []
        raws: dict[str, tuple[np.ndarray, FilterPlan]] = {}
        for channel in channels:
            key = f"{channel.role}:{channel.label}"
            if key not in raws:
                raw = read(channel)
                if raw.ndim != 1:
                    raise ValueError(f"channel {channel.label!r} must be 1-D, got {raw.shape}")
                plan = plan_filters(channel.role, rates[channel.label], preprocessing)
                for note in plan.notes:
                    logger.debug("%s: %s: %s", source or "signals", channel.label, note)
                if plan.warning:
                    logger.warning("%s: %r: %s", source or "signals", channel.label, plan.warning)
                raws[key] = (raw, plan)
        # Channels that come out the same length are filtered straight into their row.
        lengths = {-(-raw.size * plan.up // plan.down) for raw, plan in raws.values()}
        stacked = None
        if len(lengths) == 1:
            stacked = np.empty((len(channels), lengths.pop()), np.float32)
        for row_index, channel in enumerate(channels):
            key = f"{channel.role}:{channel.label}"
            if key not in processed:
                raw, plan = raws[key]
                out = None if stacked is None else stacked[row_index]
                values = preprocess(
                    raw, plan.fs, channel.role, params=preprocessing, dtype=np.float32, out=out
                )
                if out is not None and values is not out:
                    out[:] = values
                processed[key] = (values, plan)
            elif stacked is not None:
                stacked[row_index] = processed[key][0]
            rows.append(processed[key][0])
            plans.append(processed[key][1])
        if stacked is not None and all(row.size == stacked.shape[1] for row in rows):
            return cls(stacked, cls._rate(plans, preprocessing, source), channels, hypnogram,
                       plans, source, start_time, preprocessing.normalise,
                       preprocessing.normalise_bands)  # fmt: skip
        n_samples = min(row.size for row in rows)
        longest = max(row.size for row in rows)
        if longest - n_samples > 1:
            logger.info(
                "%s: channels differ by %d samples; cut to %d",
                source,
                longest - n_samples,
                n_samples,
            )
        fs = cls._rate(plans, preprocessing, source)
        stacked = np.empty((len(rows), n_samples), np.float32)
        for target, row in zip(stacked, rows):
            target[:] = row[:n_samples]
        return cls(stacked, fs, channels, hypnogram, plans, source, start_time,
                   preprocessing.normalise, preprocessing.normalise_bands)  # fmt: skip

    @staticmethod
    def _rate(plans: list[FilterPlan], preprocessing: Preprocessing, source: Path | None) -> float:
        """The common rate of the preprocessed channels."""
        rates = {plan.output_fs for plan in plans}
        if preprocessing.resample:
            return preprocessing.target_fs
        if len(rates) == 1:
            return rates.pop()
        raise ValueError(
            f"{source or 'signals'}: resampling is disabled but the channels have different "
            f"rates ({', '.join(f'{r:g}' for r in sorted(rates))} Hz)"
        )

    # -- access ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.hypnogram)

    @property
    def drawn_labels(self) -> list[str]:
        """Strip captions: :func:`drawn_label` of each channel's recording label (a
        derived row's, :data:`engine.montage.DERIVED_ROLES`, says which view it is)."""
        return [row_name(c.role, drawn_label(c.label)) for c in self.channels]

    @property
    def signals(self) -> np.ndarray:
        """Read-only ``(n_channels, n_samples)`` float32 preprocessed signals."""
        return self._signals

    @property
    def duration(self) -> float:
        """Seconds of preprocessed signal."""
        return self._signals.shape[1] / self.fs

    def _batch(self, positions: np.ndarray, context: int) -> EpochBatch:
        width = (2 * context + 1) * self.epoch_samples
        n_samples = self._signals.shape[1]
        out = np.empty((positions.size, len(self.channels), width), dtype=np.float32)
        for row, position in enumerate(positions.tolist()):
            first = int(self._starts[position]) - context * self.epoch_samples
            lo, hi = max(first, 0), min(first + width, n_samples)
            start, stop = lo - first, max(hi - first, lo - first)
            out[row, :, :start] = np.nan  # beyond the recording (only with context)
            out[row, :, start:stop] = self._signals[:, lo : max(hi, lo)]
            out[row, :, stop:] = np.nan
        return EpochBatch(
            signals=out,
            index=positions.astype(np.int64),
            onset=self.hypnogram.onsets[positions],
            duration=self.hypnogram.durations[positions],
            stage=self.hypnogram.stages[positions],
            label=[self.hypnogram.labels[i] for i in positions.tolist()],
        )

    def iter_batches(
        self, batch_size: int = 256, context: int = 0, keep_unknown: bool = False
    ) -> Iterator[EpochBatch]:
        """Yield the epochs in order, ``batch_size`` at a time.

        Parameters
        ----------
        batch_size : int
            Epochs per batch (the last one may be shorter).
        context : int
            Neighbouring epochs on each side included in every row.
        keep_unknown : bool
            Include UNK epochs (unscored, movement, ``?``).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if context < 0:
            raise ValueError(f"context must be 0 or more, got {context}")
        positions = np.arange(len(self), dtype=np.int64)
        if not keep_unknown:
            positions = positions[self.hypnogram.stages != int(Stage.UNK)]
        for start in range(0, positions.size, batch_size):
            yield self._batch(positions[start : start + batch_size], context)

    def epoch(self, index: int, context: int = 0) -> EpochBatch:
        """One epoch (whatever its stage) as a batch of one."""
        if not 0 <= index < len(self):
            raise IndexError(f"epoch {index} out of range (0..{len(self) - 1})")
        if context < 0:
            raise ValueError(f"context must be 0 or more, got {context}")
        return self._batch(np.array([index], dtype=np.int64), context)

    def __repr__(self) -> str:
        names = ", ".join(f"{c.role}={c.label}" for c in self.channels)
        return (
            f"EpochSource({self._name}, {len(self)} epochs of {self.epoch_length:g} s, "
            f"{self.fs:g} Hz, {names})"
        )


class DeviceEpochSource(EpochSource):
    """An :class:`EpochSource` whose preprocessed signals live on a CUDA device.

    Built by :func:`open_epochs` with ``device="cuda"``: the recording's channels are
    decoded, resampled and filtered on the device (:mod:`engine.dsp_cuda`), and
    :meth:`iter_batches` cuts epochs there, so its batches' ``signals`` are device arrays
    (CuPy; NumPy under numba's CUDA simulator) ready for
    :func:`engine.raster.render_cuda`. The other fields of a batch are on the host.
    """

    @staticmethod
    def _store(signals: object) -> object:
        if signals.dtype != np.float32:
            raise ValueError(f"device signals must be float32, got {signals.dtype}")
        return signals

    def _batch(self, positions: np.ndarray, context: int) -> EpochBatch:
        from . import dsp_cuda

        xp = dsp_cuda.array_module()
        width = (2 * context + 1) * self.epoch_samples
        n_samples = int(self._signals.shape[1])
        first = self._starts[positions] - context * self.epoch_samples
        index = first[:, None] + np.arange(width)[None, :]
        inside = (index >= 0) & (index < n_samples)
        gather = xp.asarray(np.clip(index, 0, max(n_samples - 1, 0)))
        rows = self._signals[:, gather]  # (channels, epochs, width)
        out = xp.where(xp.asarray(inside)[None], rows, xp.float32(np.nan))
        return EpochBatch(
            signals=xp.ascontiguousarray(out.transpose(1, 0, 2)).astype(xp.float32),
            index=positions.astype(np.int64),
            onset=self.hypnogram.onsets[positions],
            duration=self.hypnogram.durations[positions],
            stage=self.hypnogram.stages[positions],
            label=[self.hypnogram.labels[i] for i in positions.tolist()],
        )


def open_epochs(
    psg_path: str | os.PathLike[str] | Recording,
    hypnogram: Hypnogram | str | os.PathLike[str],
    montage: Montage | str = DEFAULT_MONTAGE,
    preprocessing: Preprocessing | None = None,
    device: str = "cpu",
) -> EpochSource:
    """Open a recording with its hypnogram as an :class:`EpochSource`.

    Parameters
    ----------
    psg_path : str, path-like or Recording
        EDF/EDF+/BDF recording, or one already open (:func:`engine.io.edf.open_recording`;
        it is left open).
    hypnogram : Hypnogram or path
        Intervals or epochs; a path is read with :func:`read_hypnogram`. When it
        carries its own start time (EDF+), onsets are moved to count from the
        recording's start.
    montage : Montage or str
    preprocessing : Preprocessing, optional
    device : {"cpu", "cuda"}
        ``"cuda"``: decode, filter and cut epochs on the CUDA device (a
        :class:`DeviceEpochSource`; needs CuPy, or numba's CUDA simulator).

    Returns
    -------
    EpochSource

    Raises
    ------
    EDFError, ChannelNotFoundError, HypnogramError
    """
    from .io.edf import Recording, open_recording

    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    if isinstance(psg_path, Recording):
        return _epochs_of(psg_path, hypnogram, montage, preprocessing, device)
    with open_recording(psg_path) as recording:
        return _epochs_of(recording, hypnogram, montage, preprocessing, device)


def _epochs_of(
    recording: Recording,
    hypnogram: Hypnogram | str | os.PathLike[str],
    montage: Montage | str,
    preprocessing: Preprocessing | None,
    device: str = "cpu",
) -> EpochSource:
    """:func:`open_epochs` on an open recording."""
    psg_path = recording.path
    if not isinstance(hypnogram, Hypnogram):
        # No signal_path: the start times are aligned below, against the open recording
        # (pyedflib refuses to open a file a second time while it is open).
        hypnogram = read_hypnogram(hypnogram)
    preprocessing = preprocessing or Preprocessing()
    channels = resolve_montage(montage, recording.labels, source=str(recording.path))
    if hypnogram.start_time is not None:
        offset = (hypnogram.start_time - recording.start_time).total_seconds()
        if offset:
            logger.info("%s: hypnogram starts %+g s from the recording", psg_path, offset)
            hypnogram = hypnogram.shifted(offset)
    rates = {c.label: recording.channels[c.index].fs for c in channels}
    if device == "cuda":
        return _device_epochs_of(recording, channels, rates, hypnogram, preprocessing)
    indices = sorted({c.index for c in channels})
    # Every montage channel in one pass over the data records, as float32 µV, into a
    # buffer reused from recording to recording (they are filtered into new arrays).
    total = sum(recording.channels[i].n_samples for i in indices)
    scratch = dsp._scratch("edf-read", total, np.float32)
    samples = dict(zip(indices, recording.read_channels(indices, out=scratch)))
    return EpochSource._assemble(
        channels,
        lambda channel: samples[channel.index],
        rates,
        hypnogram,
        preprocessing,
        recording.path,
        recording.start_time,
    )


def _device_epochs_of(
    recording: Recording,
    channels: list[ResolvedChannel],
    rates: Mapping[str, float],
    hypnogram: Hypnogram,
    preprocessing: Preprocessing,
) -> DeviceEpochSource:
    """:func:`_epochs_of` on the device: decode, filter, stack (shortest length wins)."""
    from . import dsp_cuda
    from .preprocess import preprocess_device

    indices = sorted({c.index for c in channels})
    decoded = dict(zip(indices, dsp_cuda.decode_channels(recording, indices)))
    processed: dict[str, tuple[object, FilterPlan]] = {}
    rows, plans = [], []
    for channel in channels:
        key = f"{channel.role}:{channel.label}"
        if key not in processed:
            fs = rates[channel.label]
            plan = plan_filters(channel.role, fs, preprocessing)
            if plan.warning:
                logger.warning("%s: %r: %s", recording.path, channel.label, plan.warning)
            values = preprocess_device(decoded[channel.index], fs, channel.role, preprocessing)
            processed[key] = (values, plan)
        rows.append(processed[key][0])
        plans.append(processed[key][1])
    if not preprocessing.resample and len({plan.output_fs for plan in plans}) > 1:
        raise ValueError(
            f"{recording.path}: resampling is disabled but the channels have different rates"
        )
    fs = preprocessing.target_fs if preprocessing.resample else plans[0].output_fs
    n_samples = min(int(row.shape[0]) for row in rows)
    xp = dsp_cuda.array_module()
    stacked = xp.stack([row[:n_samples] for row in rows]).astype(xp.float32)
    return DeviceEpochSource(
        stacked, fs, channels, hypnogram, plans, recording.path, recording.start_time,
        preprocessing.normalise, preprocessing.normalise_bands,
    )  # fmt: skip


def iter_epochs(
    psg_path: str | os.PathLike[str],
    hypnogram: Hypnogram | str | os.PathLike[str],
    montage: Montage | str = DEFAULT_MONTAGE,
    preprocessing: Preprocessing | None = None,
    batch_size: int = 256,
    context: int = 0,
    keep_unknown: bool = False,
) -> Iterator[EpochBatch]:
    """Shortcut: ``open_epochs(...).iter_batches(...)``."""
    yield from open_epochs(psg_path, hypnogram, montage, preprocessing).iter_batches(
        batch_size, context, keep_unknown
    )
