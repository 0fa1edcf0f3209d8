"""Recordings opened for a model: their epochs drawn as the model's training images were.

One place turns what a user names (an EDF/BDF file, ``prerau:DIR``, ``yasa:DIR``, a dataset
folder or spec such as ``sleep-edf:DIR``) into :class:`Recording` objects, and a recording
plus a :class:`~vlm.render_setup.RenderConfig` into an :class:`engine.epochs.EpochSource`
with the setup's montage and preprocessing. Channels are resolved by the one montage rule
of :func:`engine.montage.resolve_montage` (aliases, then fallbacks), so a recording that
``psgvlm render`` can draw is one that ``stage``, ``eval``, ``ask``, ``chat`` and
``explain`` can read too.

The model always sees the window it was trained on (``(2 k + 1) x 30 s`` with context
``k``) centred on the scored epoch (:func:`model_windows`): on a 30-s grid that is the
epoch itself (plus its neighbours); on a 20-s grid (DREAMS, some MASS subsets) it is the
20-s epoch at the same seconds per pixel with 5 s of signal on each side, and the
prediction is the 20-s epoch's. A model trained with ``psgvlm render --short-epochs``
(:attr:`~vlm.render_setup.RenderConfig.short_epochs_blank`) sees those 5-s flanks blank
instead, as it was trained: they belong to the neighbouring scored epochs, which the
context epochs show.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import DatasetError, EDFError, HypnogramError, ModelError, MontageError
from engine.io.hypnogram import Hypnogram
from engine.io.prerau import ArrayRecording
from engine.montage import DERIVED_ROLES, Montage, source_role, with_derived_rows
from engine.stages import Stage

from .render_setup import RenderConfig

__all__ = [
    "Recording",
    "open_recording",
    "find_recordings",
    "training_montage",
    "model_windows",
    "select_epochs",
    "partial_source",
    "open_source",
]

logger = logging.getLogger(__name__)

PRERAU_PREFIX = "prerau:"
DREAMS_PREFIX = "dreams:"
YASA_PREFIX = "yasa:"


def training_montage(setup: RenderConfig, montage: str | None = None) -> Montage:
    """The montage to draw a setup's rows with: its own, or ``montage`` with the same roles.

    Raises
    ------
    MontageError
        When ``montage`` cannot be parsed or its roles differ from the training images' rows.

    Examples
    --------
    >>> setup = RenderConfig(channels=[{"role": "eeg", "name": "C4-M1"}],
    ...                      render={"scales_uv": [75.0]})
    >>> str(training_montage(setup, "eeg=Cz-A1"))
    'eeg=Cz-A1'
    """
    parsed = with_derived_rows(Montage.parse(montage or setup.montage), setup.roles)
    roles = [role.lower() for role in parsed.roles]
    if roles != setup.roles:
        raise MontageError(
            f"--montage {str(parsed)!r} gives rows {roles}, but the model was trained on "
            f"images with rows {setup.roles} ({setup.montage})"
        )
    return parsed


@dataclass
class Recording:
    """One recording to stage: where its signals are and its scorer's epochs, if any.

    Attributes
    ----------
    dataset, name : str
        Names for reports (``sleep-edf``, ``SC4001E0``...).
    labels : list of str
        Channel labels.
    hypnogram : Hypnogram or None
        Scorer epochs, onsets from the first sample (None: unscored).
    path : Path or None
        The EDF/BDF file (None for in-memory recordings).
    arrays : ArrayRecording or None
        In-memory signals (``prerau:DIR``).
    rates : dict
        Label -> sampling rate (Hz), from the header (empty where unknown).
    """

    dataset: str
    name: str
    labels: list[str]
    hypnogram: Hypnogram | None
    path: Path | None = None
    arrays: ArrayRecording | None = None
    rates: dict[str, float] = field(default_factory=dict)

    def __str__(self) -> str:
        return str(self.path) if self.path is not None else f"{self.dataset}:{self.name}"

    def duration(self) -> float:
        """Seconds of signal (longest channel)."""
        if self.arrays is not None:
            return max(self.arrays.duration(label) for label in self.arrays.labels)
        from engine.io.edf import open_recording as open_edf

        with open_edf(self.path) as edf:
            return float(edf.duration)

    def raw(self, label: str) -> tuple[np.ndarray, float]:
        """One channel's samples (µV) at its own rate, unfiltered (for peers like YASA)."""
        if self.arrays is not None:
            return np.asarray(self.arrays.signals[label]), float(self.arrays.fs[label])
        from engine.io.edf import open_recording as open_edf

        with open_edf(self.path) as edf:
            return edf.read(label), float(edf.channel(label).fs)

    def in_memory(self, labels: Sequence[str] | None = None) -> Recording:
        """This recording with its channels (or only ``labels``) read into memory, e.g. to
        perturb them."""
        if self.arrays is not None:
            return self
        from engine.io.edf import open_recording as open_edf

        with open_edf(self.path) as edf:
            wanted = list(labels) if labels is not None else list(edf.labels)
            signals = {label: edf.read(label) for label in wanted}
            rates = {label: float(edf.channel(label).fs) for label in wanted}
        grid = self.hypnogram if self.hypnogram is not None else Hypnogram.from_stages([], 30.0)
        arrays = ArrayRecording(self.dataset, self.name, signals, rates, grid, self.path)
        return dataclasses.replace(self, labels=wanted, arrays=arrays)

    def with_signals(self, signals: Mapping[str, np.ndarray]) -> Recording:
        """An in-memory copy with some channels replaced (perturbed)."""
        rec = self.in_memory().arrays
        arrays = dataclasses.replace(rec, signals={**rec.signals, **signals})
        return dataclasses.replace(self, arrays=arrays)

    def grid(self, epoch_length: float) -> Hypnogram:
        """The scorer's epochs, or consecutive unscored epochs from the start."""
        if self.hypnogram is not None:
            return self.hypnogram
        duration = self.duration()
        count = int(math.floor(duration / epoch_length + 1e-9))
        if count < 1:
            raise HypnogramError(
                f"{self}: {duration:g} s of signal is shorter than one {epoch_length:g}-s epoch"
            )
        return Hypnogram.from_stages([int(Stage.UNK)] * count, epoch_length)

    def epochs(self, setup: RenderConfig, montage: str | None = None):
        """An :class:`engine.epochs.EpochSource` of the grid, with the setup's montage and
        preprocessing (``montage`` overrides the derivations, not the rows).

        Raises
        ------
        MontageError, ChannelNotFoundError
            When the montage's roles differ from the setup's, or a channel is missing.
        """
        from engine.epochs import EpochSource, open_epochs

        parsed = training_montage(setup, montage)
        epoch_length = setup.spec().epoch_seconds
        grid = self.grid(epoch_length)
        if abs(grid.epoch_length - epoch_length) > 1e-6:
            logger.info(
                "%s: %g-s epochs; each is shown centred in the model's %g-s window%s",
                self, grid.epoch_length, setup.window_seconds,
                f" (the rest of its {epoch_length:g}-s epoch blank)"
                if setup.short_epochs_blank and grid.epoch_length < epoch_length else "",
            )  # fmt: skip
        params = setup.preprocessing_params()
        if self.arrays is not None:
            rec = self.arrays
            return EpochSource.from_arrays(
                rec.signals, rec.fs, grid, parsed, params, source=rec.source
            )
        return open_epochs(self.path, grid, parsed, params)


def open_recording(
    recording: str | os.PathLike, hypnogram: str | os.PathLike | Hypnogram | None = None
) -> Recording:
    """One recording: an EDF/BDF file (with ``hypnogram`` as its scorer, if given),
    ``prerau:DIR`` or ``dreams:DIR/excerptN.txt`` (:mod:`engine.io.dreams`).

    Raises
    ------
    EDFError, DatasetError, HypnogramError
        When the file cannot be read, or the hypnogram does not fit it.
    """
    text = str(recording)
    if text.startswith(PRERAU_PREFIX) and not os.path.exists(text):
        from engine.io.prerau import load_prerau

        rec = load_prerau(text[len(PRERAU_PREFIX) :])
        return Recording("prerau", rec.recording, rec.labels, rec.hypnogram, arrays=rec,
                         rates=dict(rec.fs))  # fmt: skip
    if text.startswith(DREAMS_PREFIX) and not os.path.exists(text):
        from engine.io.dreams import load_dreams_excerpt

        rec = load_dreams_excerpt(text[len(DREAMS_PREFIX) :])
        return Recording("dreams", rec.recording, rec.labels, rec.hypnogram, arrays=rec,
                         rates=dict(rec.fs))  # fmt: skip
    from engine.io.edf import open_recording as open_edf
    from engine.io.hypnogram import read_hypnogram

    path = Path(text)
    try:
        with open_edf(path) as edf:
            labels, start = list(edf.labels), edf.start_time
            rates = {label: float(edf.channel(label).fs) for label in labels}
    except EDFError as err:
        hint = _text_recording_hint(path)
        if hint is None:
            raise
        raise EDFError(f"{err}; {hint}") from err
    if hypnogram is not None and not isinstance(hypnogram, Hypnogram):
        hypnogram = read_hypnogram(hypnogram, signal_path=path)
    if hypnogram is not None:
        if hypnogram.start_time is not None and start is not None:
            offset = (hypnogram.start_time - start).total_seconds()
            if offset:
                hypnogram = hypnogram.shifted(offset)
        if not hypnogram.is_epoched:
            hypnogram = hypnogram.to_epochs()
    return Recording("edf", path.stem, labels, hypnogram, path=path, rates=rates)


def _text_recording_hint(path: Path) -> str | None:
    """What to type instead, when a file that is not EDF is one of the text recordings
    read through a prefix: a DREAMS excerpt (first line ``[C3-A1]``) or the Prerau
    segment's CSV.

    Examples
    --------
    >>> _text_recording_hint(Path("nowhere.edf")) is None
    True
    """
    if path.name in ("segment_data.csv", "segment_stages.csv"):
        return f"the Prerau segment is read as {PRERAU_PREFIX}{path.parent}"
    try:
        with open(path, "rb") as file:
            first = file.readline(64).strip()
    except OSError:
        return None
    if first.startswith(b"[") and first.endswith(b"]") and len(first) > 2:
        return f"a DREAMS text excerpt ({first.decode(errors='replace')}) is read as {DREAMS_PREFIX}{path}"
    return None


def find_recordings(
    inputs: Sequence[str], hypnogram: str | os.PathLike | None = None, scorer: int = 1
) -> list[Recording]:
    """Scored recordings named by ``psgvlm eval`` inputs.

    Parameters
    ----------
    inputs : sequence of str
        ``prerau:DIR``, ``dreams:DIR`` (every excerpt) or ``dreams:DIR/excerptN.txt``, EDF
        files, folders, globs or dataset specs (:func:`engine.io.datasets.find_pairs`).
    hypnogram : path, optional
        Hypnogram file of a single EDF input (otherwise paired by dataset rules).
    scorer : int
        Scorer where a dataset has several.

    Raises
    ------
    DatasetError
        When an input names nothing, or ``hypnogram`` is given with several recordings.
    """
    from engine.io.datasets import find_pairs
    from engine.io.hypnogram import read_hypnogram

    if not inputs:
        raise DatasetError("no recordings given")
    if hypnogram is not None and len(inputs) != 1:
        raise DatasetError("--hypnogram pairs with exactly one EDF file input")
    out: list[Recording] = []
    for spec in inputs:
        if spec.startswith(PRERAU_PREFIX) and not os.path.exists(spec):
            out.append(open_recording(spec))
        elif spec.startswith(DREAMS_PREFIX) and not os.path.exists(spec):
            from engine.io.dreams import find_dreams_excerpts

            path = Path(spec[len(DREAMS_PREFIX) :])
            excerpts = find_dreams_excerpts(path) if path.is_dir() else [path]
            out.extend(open_recording(f"{DREAMS_PREFIX}{p}") for p in excerpts)
        elif hypnogram is not None:
            out.append(open_recording(spec, hypnogram))
        else:
            for pair in find_pairs(spec, scorer=scorer):
                scored = read_hypnogram(
                    pair.hypnogram_path, scorer=pair.scorer, signal_path=pair.psg_path
                )
                found = open_recording(pair.psg_path, scored)
                found.dataset, found.name = pair.dataset, pair.recording
                out.append(found)
    return out


def model_windows(
    source, positions: np.ndarray, window_s: float, epoch_s: float | None = None
) -> np.ndarray:
    """Signals of the ``window_s``-second windows centred on the given scorer epochs.

    Parameters
    ----------
    source : engine.epochs.EpochSource
    positions : numpy.ndarray
        Epoch positions in ``source.hypnogram``.
    window_s : float
        Seconds the model's images show (30 s x (2 context + 1)).
    epoch_s : float, optional
        Seconds of the model's own epoch, the middle of its window. When the scorer's
        epochs are shorter (20-s grids), the rest of that middle epoch is left blank (NaN):
        the scored epoch is shown alone where the model reads its target, its neighbours
        only as context. By default the window is filled with signal.

    Returns
    -------
    numpy.ndarray
        float32 ``(n, channels, round(window_s * fs))``; NaN outside the recording.

    Examples
    --------
    A 20-s epoch in a 30-s model window, 5 s left blank on each side:

    >>> from engine.epochs import EpochSource
    >>> from engine.io.hypnogram import Hypnogram
    >>> from engine.preprocess import Preprocessing
    >>> hyp = Hypnogram.from_stages(["N2", "N1", "N2"], epoch_length=20.0)
    >>> source = EpochSource.from_arrays({"EEG": np.zeros(6000)}, 100.0, hyp, "eeg=C4-M1",
    ...                                  Preprocessing(filter=False))
    >>> window = model_windows(source, np.array([1]), 30.0, epoch_s=30.0)[0, 0]
    >>> int(np.isnan(window[:500]).sum()), int(np.isnan(window[500:2500]).sum())
    (500, 0)
    """
    length = source.epoch_length
    context = max(0, math.ceil((window_s - length) / 2 / length - 1e-9))
    width = int(round(window_s * source.fs))
    per_epoch = source.epoch_samples
    first = int(round(context * per_epoch + per_epoch / 2 - width / 2))
    out = np.empty((positions.size, len(source.channels), width), dtype=np.float32)
    for row, position in enumerate(positions.tolist()):
        batch = source.epoch(int(position), context=context)
        out[row] = batch.signals[0, :, first : first + width]
    if epoch_s is not None and length < epoch_s - 1e-9:
        scored = context * per_epoch - first  # the scored epoch's first sample in the window
        from engine.epochs import blank_outside

        middle = int(round(width / 2 - epoch_s * source.fs / 2))  # the model's epoch
        model_epoch = (middle, middle + int(round(epoch_s * source.fs)))
        blank_outside(out, model_epoch, (scored, scored + per_epoch))
    return out


def partial_source(
    signals: Mapping[str, np.ndarray],
    fs: Mapping[str, float],
    roles: Mapping[str, str],
    hypnogram,
    config,
    source: str = "",
    preprocessed: bool = False,
):
    """An :class:`engine.epochs.EpochSource` with the model's rows, filled with what exists.

    Each of the configuration's channels takes the first unused recording channel of its
    role, preprocessed as in training; rows without one are NaN (empty strips). Channels
    end with NaN where they are shorter than the longest.

    Parameters
    ----------
    signals, fs, roles : mapping
        Label -> samples (µV), rate (Hz) and role.
    hypnogram : engine.io.hypnogram.Hypnogram
    config : vlm.render_setup.RenderConfig
    source : str
        Name for messages.
    preprocessed : bool
        The signals are already filtered and at the configuration's target rate.
    """
    from engine.epochs import EpochSource
    from engine.montage import ResolvedChannel
    from engine.preprocess import preprocess

    params = config.preprocessing_params()
    if not params.resample:
        raise ModelError("partial montages need resampling to one rate (preprocessing.resample)")
    used: set[str] = set()
    rows: list[np.ndarray | None] = []
    channels = []
    for position, wanted in enumerate(config.channels):
        role = str(wanted["role"]).lower()
        if role in DERIVED_ROLES:  # drawn from the row of its source role already taken
            label = next((c.label for c in channels if c.role == source_role(role)
                          and c.index >= 0), None)  # fmt: skip
        else:
            label = next((k for k in signals if roles.get(k) == role and k not in used), None)
        if label is None:
            rows.append(None)
            channels.append(ResolvedChannel(role, str(wanted["name"]),
                                            f"{role.upper()} {wanted['name']} (absent)", -1,
                                            "absent"))  # fmt: skip
            continue
        used.add(label)
        values = np.asarray(signals[label], dtype=np.float64)
        if preprocessed and float(fs[label]) != params.target_fs:
            raise ModelError(f"{label}: preprocessed at {fs[label]} Hz, not the model's "
                             f"{params.target_fs:g} Hz")  # fmt: skip
        rows.append(values if preprocessed else preprocess(values, float(fs[label]), role,
                                                           params=params))  # fmt: skip
        channels.append(ResolvedChannel(role, str(wanted["name"]), label, position, "exact"))
    if all(r is None for r in rows):
        raise DatasetError(f"{source or 'recording'}: none of its channels has a role the model "
                           f"reads ({', '.join(config.roles)})")  # fmt: skip
    length = max(r.size for r in rows if r is not None)
    stacked = np.full((len(rows), length), np.nan, dtype=np.float32)
    for i, row in enumerate(rows):
        if row is not None:
            stacked[i, : row.size] = row
    return EpochSource(stacked, params.target_fs, channels, hypnogram,
                       source=Path(source) if source else None,
                       normalise=params.normalise,
                       normalise_bands=params.normalise_bands)  # fmt: skip


def _yasa_snippets(folder: Path, config):
    """YASA's example snippets joined: N2 (15 s + 15 s empty), N3 (30 s), REM EOG epochs."""
    from engine.io.hypnogram import Hypnogram
    from engine.preprocess import preprocess

    files = {"n2": folder / "data_N2_spindles_15sec_200Hz.txt",
             "n3": folder / "data_N3_no-spindles_30sec_100Hz.txt",
             "rem": folder / "data_EOGs_REM_256Hz.npz"}  # fmt: skip
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DatasetError(f"yasa:{folder}: missing {missing}")
    params = config.preprocessing_params()
    fs = params.target_fs
    epoch = int(round(30.0 * fs))
    n2 = preprocess(np.loadtxt(files["n2"]), 200.0, "eeg", params=params)
    n3 = preprocess(np.loadtxt(files["n3"]), 100.0, "eeg", params=params)
    with np.load(files["rem"]) as npz:
        eog, eog_fs = np.asarray(npz["data"], dtype=np.float64), float(npz["sf"])
    loc, roc = (preprocess(row, eog_fs, "eog", params=params) for row in eog[:2])
    n_rem = loc.size // epoch
    eeg = np.full((2 + n_rem) * epoch, np.nan)
    eeg[: min(n2.size, epoch)] = n2[:epoch]
    eeg[epoch : epoch + min(n3.size, epoch)] = n3[:epoch]
    eog_rows = [np.full_like(eeg, np.nan) for _ in range(2)]
    for row, values in zip(eog_rows, (loc, roc)):
        row[2 * epoch :] = values[: n_rem * epoch]
    hypnogram = Hypnogram.from_stages(["N2", "N3"] + ["R"] * n_rem, 30.0)
    signals = {"EEG": eeg, "EOG LOC": eog_rows[0], "EOG ROC": eog_rows[1]}
    roles = {"EEG": "eeg", "EOG LOC": "eog", "EOG ROC": "eog"}
    source = partial_source(signals, dict.fromkeys(signals, fs), roles, hypnogram, config,
                            f"yasa:{folder}", preprocessed=True)  # fmt: skip
    return source, {"EOG LOC": eog_rows[0], "EOG ROC": eog_rows[1]}


def open_source(
    recording: str | os.PathLike,
    setup: RenderConfig,
    hypnogram: str | os.PathLike | Hypnogram | None = None,
    montage: str | None = None,
    partial: bool = False,
) -> tuple:
    """Open what a user names as epochs drawn for ``setup``.

    Parameters
    ----------
    recording : str or path
        EDF/BDF file, ``prerau:DIR`` or ``yasa:DIR`` (YASA's example snippets, with
        ``partial``).
    setup : RenderConfig
    hypnogram : path or Hypnogram, optional
        Epoch grid (scored or not); default: consecutive 30-s epochs from the start (the
        Prerau segment's own scoring for ``prerau:DIR``).
    montage : str, optional
        Other derivations for the setup's rows.
    partial : bool
        For in-memory recordings, fill rows without a channel of their role with NaN
        (empty strips) instead of refusing the recording.

    Returns
    -------
    (EpochSource, dict)
        The epochs, and extra preprocessed signals that are not strips but help detection
        (the second EOG of the YASA snippets).
    """
    text = str(recording)
    if text.startswith(YASA_PREFIX) and not os.path.exists(text):
        if not partial:
            raise DatasetError(f"{text}: YASA's snippets are for psgvlm explain only")
        return _yasa_snippets(Path(text[len(YASA_PREFIX) :]), setup)
    found = open_recording(text, hypnogram)
    if partial and found.arrays is not None:
        rec = found.arrays
        roles = dict.fromkeys(rec.signals, "eeg")
        return partial_source(rec.signals, rec.fs, roles, rec.hypnogram, setup, text), {}
    return found.epochs(setup, montage), {}


def select_epochs(text: str | None, n: int) -> np.ndarray:
    """Positions among the scored epochs selected by ``START:STOP`` (Python slice)."""
    if text is None:
        return np.arange(n)
    try:
        parts = [int(p) if p.strip() else None for p in text.split(":")]
    except ValueError:
        raise DatasetError(f"--epochs {text!r}: expected START:STOP (e.g. 0:20)") from None
    if len(parts) != 2:
        raise DatasetError(f"--epochs {text!r}: expected START:STOP (e.g. 0:20)")
    selected = np.arange(n)[slice(*parts)]
    if selected.size == 0:
        raise DatasetError(f"--epochs {text!r} selects none of the {n} scored epochs")
    return selected
