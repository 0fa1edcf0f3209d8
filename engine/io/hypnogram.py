"""Hypnograms from every supported format, as one model.

:func:`read_hypnogram` detects the format and returns a :class:`Hypnogram`: scored
intervals with onsets and durations in seconds from the recording start, stage ids and
the raw labels. Intervals are never placed at ``index x 30 s``: onsets and durations
come from the file (MASS scoring starts seconds into the recording and uses 20-s epochs
in some subsets). :meth:`Hypnogram.to_epochs` splits long intervals (Sleep-EDF merges
equal consecutive epochs into one annotation) into scorer epochs.

Formats (``fmt``):

``sleep-edf`` / ``mass`` / ``edf+``
    EDF+ annotations (``Sleep stage W/1/2/3/4/R/?``, ``Movement time``); every
    annotation with a positive duration is a stage. Read by
    :meth:`engine.io.edf.Recording.annotations`, so onsets count from the file's first
    sample (an EDF+ sub-second start is subtracted) and BDF+ files work the same.
``nsrr-xml``
    NSRR ``ScoredEvent`` with ``EventType`` ``Stages|Stages``, ``EventConcept``
    (``Wake|0`` ... ``REM sleep|5``), ``Start``, ``Duration``.
``profusion-xml``
    Compumedics ``CMPStudyConfig`` with ``EpochLength`` and ``SleepStages/SleepStage``.
``isruc``
    One code per line (0 W, 1 N1, 2 N2, 3 N3, 5 R); ``N_1.txt`` / ``N_2.txt`` are
    scorers 1 and 2 (a directory or an ISRUC recording path picks by ``scorer``).
``dcsm``
    ``.ids`` lines ``start,duration,stage``.
``dreams``
    A ``[Hypnogram]`` line, then one R&K code per 5 s; 20-s epochs
    (:mod:`engine.io.dreams`).
``csv``
    A header ``onset,duration,stage`` then one interval per row.
"""

from __future__ import annotations

import csv
import glob
import logging
import os
import re
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np

from ..errors import EDFError, HypnogramError, UnknownStageError
from ..stages import STAGE_NAMES, Stage, stage_name, to_stage
from .edf import signal_file_family

__all__ = [
    "FORMATS",
    "Hypnogram",
    "read_hypnogram",
    "detect_format",
    "find_hypnogram",
    "write_annotations_edf",
]

logger = logging.getLogger(__name__)

#: Format names accepted by ``read_hypnogram(fmt=...)``.
FORMATS: tuple[str, ...] = (
    "sleep-edf",
    "mass",
    "edf+",
    "nsrr-xml",
    "profusion-xml",
    "isruc",
    "dcsm",
    "dreams",
    "csv",
)

_TOLERANCE_S = 1e-3  # onsets/durations closer than this are equal
_EPOCH_CANDIDATES = (30.0, 20.0)


@dataclass
class Hypnogram:
    """Scored intervals of one night.

    Attributes
    ----------
    onsets, durations : numpy.ndarray
        float64 seconds from the recording start; sorted, non-overlapping.
    stages : numpy.ndarray
        int8 :class:`~engine.stages.Stage` ids (UNK = -1).
    labels : list of str
        The raw labels, as written in the file.
    source : Path or None
        File it was read from.
    format : str
        One of :data:`FORMATS`, or ``"memory"``.
    scorer : int or None
        Scorer number where the dataset has several.
    epoch_length : float
        Scoring epoch in seconds (from the file, or inferred from the durations).
    start_time : datetime or None
        Clock time of onset 0 where the file says it (EDF+).
    """

    onsets: np.ndarray
    durations: np.ndarray
    stages: np.ndarray
    labels: list[str]
    source: Path | None = None
    format: str = "memory"
    scorer: int | None = None
    epoch_length: float = 30.0
    start_time: datetime | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.onsets = np.asarray(self.onsets, dtype=np.float64).reshape(-1)
        self.durations = np.asarray(self.durations, dtype=np.float64).reshape(-1)
        self.stages = np.asarray(self.stages, dtype=np.int8).reshape(-1)
        self.labels = [str(label) for label in self.labels]
        n = self.onsets.size
        if not (self.durations.size == self.stages.size == len(self.labels) == n):
            raise HypnogramError(
                f"{self._where}onsets, durations, stages and labels differ in length "
                f"({n}, {self.durations.size}, {self.stages.size}, {len(self.labels)})"
            )
        if not np.isfinite(self.epoch_length) or self.epoch_length <= 0:
            raise HypnogramError(f"{self._where}epoch length must be positive: {self.epoch_length}")
        if not (np.all(np.isfinite(self.onsets)) and np.all(np.isfinite(self.durations))):
            raise HypnogramError(f"{self._where}onsets and durations must be finite")
        if np.any(self.durations <= 0):
            bad = int(np.flatnonzero(self.durations <= 0)[0])
            raise HypnogramError(
                f"{self._where}interval at {self.onsets[bad]:g} s has duration "
                f"{self.durations[bad]:g} s"
            )
        valid = {int(stage) for stage in Stage}
        if not set(np.unique(self.stages).tolist()) <= valid:
            raise HypnogramError(f"{self._where}stage ids must be in {sorted(valid)}")
        if n > 1:
            if np.any(np.diff(self.onsets) < 0):
                raise HypnogramError(f"{self._where}onsets are not sorted")
            ends = self.onsets[:-1] + self.durations[:-1]
            overlap = np.flatnonzero(self.onsets[1:] < ends - _TOLERANCE_S)
            if overlap.size:
                i = int(overlap[0])
                raise HypnogramError(
                    f"{self._where}interval {self.labels[i]!r} at {self.onsets[i]:g} s "
                    f"({self.durations[i]:g} s) overlaps {self.labels[i + 1]!r} at "
                    f"{self.onsets[i + 1]:g} s"
                )

    @property
    def _where(self) -> str:
        return f"{self.source}: " if self.source else ""

    # -- construction ----------------------------------------------------------------
    @classmethod
    def from_stages(
        cls,
        stages: Sequence[int | str],
        epoch_length: float = 30.0,
        start: float = 0.0,
        labels: Sequence[str] | None = None,
    ) -> Hypnogram:
        """Hypnogram of consecutive epochs from stage ids or labels.

        Examples
        --------
        >>> len(Hypnogram.from_stages(["W", "N1", "N2"]))
        3
        """
        ids = [
            int(stage) if isinstance(stage, (int, np.integer)) else int(to_stage(stage))
            for stage in stages
        ]
        raw = list(labels) if labels is not None else [stage_name(i) for i in ids]
        onsets = start + epoch_length * np.arange(len(ids), dtype=np.float64)
        return cls(
            onsets,
            np.full(len(ids), float(epoch_length)),
            ids,
            raw,
            epoch_length=float(epoch_length),
        )

    # -- views -----------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.onsets.size)

    @property
    def end(self) -> float:
        """End of the last interval (s), 0 for an empty hypnogram."""
        return float(self.onsets[-1] + self.durations[-1]) if len(self) else 0.0

    @property
    def is_epoched(self) -> bool:
        """Whether every interval is exactly one epoch long."""
        return bool(np.all(np.abs(self.durations - self.epoch_length) <= _TOLERANCE_S))

    def stage_seconds(self) -> dict[str, float]:
        """Seconds scored per stage name (``W`` ... ``R``, ``UNK``)."""
        out = {}
        for name, stage in [(n, i) for i, n in enumerate(STAGE_NAMES)] + [("UNK", -1)]:
            out[name] = float(self.durations[self.stages == stage].sum())
        return out

    def stage_counts(self) -> dict[str, int]:
        """Number of scorer epochs per stage name (``W`` ... ``R``, ``UNK``)."""
        return {
            name: int(np.floor(seconds / self.epoch_length + 1e-6))
            for name, seconds in self.stage_seconds().items()
        }

    def shifted(self, seconds: float) -> Hypnogram:
        """The same intervals with onsets counted from ``seconds`` earlier.

        Used to express onsets from a recording start that precedes the hypnogram's own
        by ``seconds``; :attr:`start_time` moves back accordingly.
        """
        start = None if self.start_time is None else self.start_time - timedelta(seconds=seconds)
        return Hypnogram(
            self.onsets + seconds,
            self.durations.copy(),
            self.stages.copy(),
            list(self.labels),
            self.source,
            self.format,
            self.scorer,
            self.epoch_length,
            start,
        )

    def to_epochs(self, epoch_length: float | None = None) -> Hypnogram:
        """Split intervals into consecutive epochs of ``epoch_length`` seconds.

        Parameters
        ----------
        epoch_length : float, optional
            Defaults to :attr:`epoch_length`.

        Returns
        -------
        Hypnogram
            One row per epoch; an interval's tail shorter than an epoch is dropped with a
            warning.
        """
        length = float(epoch_length or self.epoch_length)
        if length <= 0:
            raise ValueError(f"epoch_length must be positive, got {length}")
        counts = np.floor(self.durations / length + 1e-6).astype(np.int64)
        tails = self.durations - counts * length
        partial = tails > _TOLERANCE_S
        if partial.any():
            warnings.warn(
                f"{self._where}{int(partial.sum())} interval(s) are not a whole number of "
                f"{length:g}-s epochs; {tails[partial].sum():g} s of partial epochs dropped",
                stacklevel=2,
            )
        total = int(counts.sum())
        starts = np.repeat(self.onsets, counts)
        first = np.repeat(np.cumsum(counts) - counts, counts)
        onsets = starts + (np.arange(total) - first) * length
        return Hypnogram(
            onsets,
            np.full(total, length),
            np.repeat(self.stages, counts),
            [label for label, count in zip(self.labels, counts.tolist()) for _ in range(count)],
            self.source,
            self.format,
            self.scorer,
            length,
            self.start_time,
        )

    def __repr__(self) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.stage_counts().items() if v)
        return (
            f"Hypnogram({self.format}, {len(self)} intervals, epoch {self.epoch_length:g} s, "
            f"{self.end:g} s; {counts})"
        )


# -- helpers ---------------------------------------------------------------------------
def _infer_epoch_length(durations: np.ndarray, stages: np.ndarray) -> float:
    """30 s unless the durations say otherwise (20-s MASS subsets, other grids)."""
    scored = durations[stages >= 0]
    values = scored if scored.size else durations
    if values.size == 0:
        return 30.0
    for candidate in (*_EPOCH_CANDIDATES, float(values.min())):
        multiples = values / candidate
        if np.all(np.abs(multiples - np.round(multiples)) * candidate <= _TOLERANCE_S):
            return float(candidate)
    return float(values.min())


def _build(
    path: Path,
    fmt: str,
    onsets: Sequence[float],
    durations: Sequence[float],
    labels: Sequence[str],
    *,
    epoch_length: float | None = None,
    scorer: int | None = None,
    start_time: datetime | None = None,
    code_labels: dict[str, str] | None = None,
) -> Hypnogram:
    """Map labels (all unknown ones reported together), sort, and build the model."""
    stages = []
    unknown: dict[str, int] = {}
    for label in labels:
        key = code_labels.get(label.strip(), label) if code_labels else label
        try:
            stages.append(int(to_stage(key)))
        except UnknownStageError:
            unknown[label] = unknown.get(label, 0) + 1
            stages.append(int(Stage.UNK))
    if unknown:
        listed = ", ".join(f"{label!r} (x{count})" for label, count in unknown.items())
        raise UnknownStageError(f"{path}: unknown stage label(s): {listed}")
    onsets_arr = np.asarray(onsets, dtype=np.float64)
    durations_arr = np.asarray(durations, dtype=np.float64)
    order = np.argsort(onsets_arr, kind="stable")
    stages_arr = np.asarray(stages, dtype=np.int8)[order]
    if epoch_length is None:
        epoch_length = _infer_epoch_length(durations_arr[order], stages_arr)
    return Hypnogram(
        onsets_arr[order],
        durations_arr[order],
        stages_arr,
        [labels[i] for i in order],
        source=path,
        format=fmt,
        scorer=scorer,
        epoch_length=float(epoch_length),
        start_time=start_time,
    )


def _float(path: Path, text: str | None, what: str) -> float:
    try:
        value = float(str(text).strip())
    except (TypeError, ValueError):
        raise HypnogramError(f"{path}: {what} is {text!r}, not a number") from None
    if not np.isfinite(value):
        raise HypnogramError(f"{path}: {what} is {text!r}, not a finite number")
    return value


# -- readers ---------------------------------------------------------------------------
def _read_edf(path: Path, fmt: str, scorer: int | None) -> Hypnogram:
    from .edf import open_recording

    with open_recording(path) as recording:
        annotations = recording.annotations()
        start_time = recording.start_time
    stage_annotations = [a for a in annotations if a.duration is not None and a.duration > 0]
    if not stage_annotations:
        raise HypnogramError(f"{path}: no annotation with a duration (not a hypnogram?)")
    return _build(
        path,
        fmt,
        [a.onset for a in stage_annotations],
        [a.duration for a in stage_annotations],
        [a.text for a in stage_annotations],
        scorer=scorer,
        start_time=start_time,
    )


def _xml_root(path: Path) -> ET.Element:
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as err:
        raise HypnogramError(f"{path}: not well-formed XML ({err})") from None


def _read_nsrr_xml(path: Path, scorer: int | None) -> Hypnogram:
    root = _xml_root(path)
    onsets, durations, labels = [], [], []
    for number, event in enumerate(root.iter("ScoredEvent")):
        event_type = (event.findtext("EventType") or "").strip()
        if not event_type.lower().startswith("stages"):
            continue
        concept = (event.findtext("EventConcept") or "").strip()
        onsets.append(_float(path, event.findtext("Start"), f"Start of stage event {number}"))
        durations.append(
            _float(path, event.findtext("Duration"), f"Duration of stage event {number}")
        )
        labels.append(concept)
    if not labels:
        raise HypnogramError(f"{path}: no ScoredEvent with EventType 'Stages|Stages'")
    epoch_text = root.findtext("EpochLength")
    epoch_length = _float(path, epoch_text, "EpochLength") if epoch_text else None
    keep = [i for i, d in enumerate(durations) if d > 0]
    return _build(
        path,
        "nsrr-xml",
        [onsets[i] for i in keep],
        [durations[i] for i in keep],
        [labels[i] for i in keep],
        epoch_length=epoch_length,
        scorer=scorer,
    )


def _read_profusion_xml(path: Path, scorer: int | None) -> Hypnogram:
    root = _xml_root(path)
    epoch_length = _float(path, root.findtext("EpochLength") or "30", "EpochLength")
    if epoch_length <= 0:
        raise HypnogramError(f"{path}: EpochLength is {epoch_length}")
    codes = [(node.text or "").strip() for node in root.iter("SleepStage")]
    if not codes:
        raise HypnogramError(f"{path}: no SleepStages/SleepStage elements")
    return _build(
        path,
        "profusion-xml",
        [i * epoch_length for i in range(len(codes))],
        [epoch_length] * len(codes),
        codes,
        epoch_length=epoch_length,
        scorer=scorer,
    )


_ISRUC_CODES = {"0": "W", "1": "N1", "2": "N2", "3": "N3", "5": "R"}


def _isruc_file(path: Path, scorer: int) -> Path:
    """The scorer's ``N_k.txt`` for an ISRUC directory or recording path."""
    if path.is_dir():
        matches = sorted(path.glob(f"*_{scorer}.txt"))
        if not matches:
            raise HypnogramError(f"{path}: no ISRUC scorer file *_{scorer}.txt in this directory")
        return matches[0]
    candidate = path.with_name(f"{path.stem}_{scorer}.txt")
    if not candidate.is_file():
        raise HypnogramError(f"{path}: no ISRUC scorer file {candidate.name} next to it")
    return candidate


def _read_isruc(path: Path, scorer: int) -> Hypnogram:
    match = re.search(r"_(\d+)$", path.stem)
    file_scorer = int(match.group(1)) if match else scorer
    codes = [line.strip() for line in _read_text(path).splitlines() if line.strip()]
    if not codes:
        raise HypnogramError(f"{path}: empty ISRUC hypnogram")
    return _build(
        path,
        "isruc",
        [30.0 * i for i in range(len(codes))],
        [30.0] * len(codes),
        codes,
        epoch_length=30.0,
        scorer=file_scorer,
        code_labels=_ISRUC_CODES
        | {code: f"code {code}" for code in set(codes) - set(_ISRUC_CODES)},
    )


def _read_rows(
    path: Path, fmt: str, rows: list[tuple[int, list[str]]], scorer: int | None
) -> Hypnogram:
    onsets, durations, labels = [], [], []
    for line, row in rows:
        if len(row) < 3:
            raise HypnogramError(f"{path}: line {line} has {len(row)} field(s), expected 3")
        onsets.append(_float(path, row[0], f"onset on line {line}"))
        durations.append(_float(path, row[1], f"duration on line {line}"))
        labels.append(row[2].strip())
    if not labels:
        raise HypnogramError(f"{path}: no stage rows")
    return _build(path, fmt, onsets, durations, labels, scorer=scorer)


def _read_dcsm(path: Path, scorer: int | None) -> Hypnogram:
    rows = [
        (number, [field.strip() for field in line.split(",")])
        for number, line in enumerate(_read_text(path).splitlines(), start=1)
        if line.strip()
    ]
    return _read_rows(path, "dcsm", rows, scorer)


def _read_csv(path: Path, scorer: int | None) -> Hypnogram:
    lines = _read_text(path).splitlines()
    reader = csv.reader(lines)
    header = [cell.strip().lower() for cell in next(reader, [])]
    try:
        columns = [header.index(name) for name in ("onset", "duration", "stage")]
    except ValueError:
        raise HypnogramError(
            f"{path}: CSV header is {header}, expected the columns onset, duration, stage"
        ) from None
    rows = []
    for number, row in enumerate(reader, start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) <= max(columns):
            raise HypnogramError(f"{path}: line {number} has {len(row)} field(s), expected 3")
        rows.append((number, [row[i] for i in columns]))
    return _read_rows(path, "csv", rows, scorer)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise HypnogramError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


# -- detection and entry point -----------------------------------------------------------
#: R&K codes of the DREAMS hypnograms -> AASM stages (S3 and S4 are N3).
_DREAMS_CODES: dict[int, Stage] = {
    5: Stage.W, 4: Stage.R, 3: Stage.N1, 2: Stage.N2, 1: Stage.N3, 0: Stage.N3,
}  # fmt: skip
_DREAMS_LABEL_SECONDS = 5.0  # seconds per hypnogram line
_DREAMS_EPOCH = 20.0  # the expert's epoch length


def _read_dreams(path: Path) -> Hypnogram:
    """One 20-s epoch per four 5-s R&K codes of a DREAMS ``Hypnogram_excerptN.txt``.

    The expert scored 20-s epochs from 0 s, written as four equal 5-s codes each; S3 and
    S4 are N3; a 20-s epoch whose codes differ, or are not a stage, is UNK.

    Raises
    ------
    HypnogramError
        When the file is not a DREAMS hypnogram or holds non-integer codes.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "Hypnogram_excerpt9.txt"
    >>> codes = [5, 5, 5, 5, 2, 2, 2, 2, 0, 0, 0, 0, 1, 1, 2, 2]  # the last epoch disagrees
    >>> _ = path.write_text("[Hypnogram]\\n" + "".join(f"{c}\\n" for c in codes))
    >>> hyp = read_hypnogram(path)
    >>> hyp.onsets.tolist(), [int(s) for s in hyp.stages]
    ([0.0, 20.0, 40.0, 60.0], [0, 2, 3, -1])
    """
    lines = [line for line in _read_text(path).splitlines() if line.strip()]
    if not lines or lines[0].strip().lower().replace(" ", "") != "[hypnogram]":
        raise HypnogramError(f"{path}: expected a first line [Hypnogram] (DREAMS)")
    rows = lines[1:]
    try:
        codes = np.array([int(float(row)) for row in rows], dtype=np.int64)
    except ValueError:
        raise HypnogramError(f"{path}: expected one integer R&K code per line") from None
    per_epoch = int(round(_DREAMS_EPOCH / _DREAMS_LABEL_SECONDS))
    n_epochs = codes.size // per_epoch
    if n_epochs < 1:
        raise HypnogramError(f"{path}: fewer than {per_epoch} codes (one 20-s epoch)")
    blocks = codes[: n_epochs * per_epoch].reshape(n_epochs, per_epoch)
    stages, labels = [], []
    for block in blocks:
        same = bool(np.all(block == block[0]))
        code = int(block[0])
        stages.append(
            int(_DREAMS_CODES[code]) if same and code in _DREAMS_CODES else int(Stage.UNK)
        )
        labels.append(str(code) if same else "/".join(map(str, block)))
    return Hypnogram(
        _DREAMS_EPOCH * np.arange(n_epochs, dtype=float),
        np.full(n_epochs, _DREAMS_EPOCH),
        stages,
        labels,
        source=path,
        format="dreams",
        epoch_length=_DREAMS_EPOCH,
    )


def detect_format(path: str | os.PathLike[str]) -> str:
    """Guess the hypnogram format of ``path`` from its name and first bytes.

    A file that starts like an EDF or BDF header is read as EDF+ annotations whatever
    its suffix (``base`` / ``hypnogram`` in the name pick the MASS / Sleep-EDF flavour).

    Raises
    ------
    HypnogramError
        When the format cannot be told.
    """
    path = Path(path)
    if path.is_dir():
        return "isruc"
    suffix = path.suffix.lower()
    name = path.name.lower()
    if suffix in (".edf", ".bdf", ".rec") or signal_file_family(path) is not None:
        if "base" in name:
            return "mass"
        if "hypnogram" in name:
            return "sleep-edf"
        return "edf+"
    if suffix == ".xml":
        with open(path, "rb") as handle:
            head = handle.read(4096)
        if b"CMPStudyConfig" in head or b"SleepStages" in head:
            return "profusion-xml"
        return "nsrr-xml"
    if suffix == ".ids":
        return "dcsm"
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix == ".txt":
        first = next((line.strip() for line in _read_text(path).splitlines() if line.strip()), "")
        if first.lower().replace(" ", "") == "[hypnogram]":
            return "dreams"
        if re.fullmatch(r"-?\d+", first):
            return "isruc"
        if first.lower().replace(" ", "").startswith("onset,duration,stage"):
            return "csv"
        if first.count(",") == 2:
            return "dcsm"
    raise HypnogramError(f"{path}: cannot tell the hypnogram format; pass fmt= one of {FORMATS}")


def read_hypnogram(
    path: str | os.PathLike[str],
    fmt: str | None = None,
    scorer: int = 1,
    signal_path: str | os.PathLike[str] | None = None,
) -> Hypnogram:
    """Read a hypnogram in any supported format.

    Parameters
    ----------
    path : str or path-like
        The hypnogram file (an ISRUC directory or recording path selects ``N_{scorer}.txt``).
    fmt : str, optional
        One of :data:`FORMATS`; detected when omitted.
    scorer : int
        Which scorer to read where a dataset has several (ISRUC).
    signal_path : str or path-like, optional
        The recording the hypnogram belongs to. When both files carry a start time
        (EDF+), onsets are moved to count from the recording's start.

    Returns
    -------
    Hypnogram
        Intervals as written in the file; call :meth:`Hypnogram.to_epochs` for epochs.

    Raises
    ------
    HypnogramError
        Missing or malformed file, unknown format.
    UnknownStageError
        Labels the stage table does not know (all of them listed).
    """
    path = Path(path)
    if not path.exists():
        raise HypnogramError(f"{path}: no such file")
    if scorer < 1:
        raise ValueError(f"scorer must be 1 or more, got {scorer}")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise HypnogramError(f"unknown hypnogram format {fmt!r}; formats are {FORMATS}")
    if fmt == "isruc" and not path.suffix.lower() == ".txt":
        path = _isruc_file(path, scorer)
    if path.is_file() and path.stat().st_size == 0:
        raise HypnogramError(f"{path}: empty file")
    try:
        if fmt in ("sleep-edf", "mass", "edf+"):
            hypnogram = _read_edf(path, fmt, None)
        elif fmt == "nsrr-xml":
            hypnogram = _read_nsrr_xml(path, None)
        elif fmt == "profusion-xml":
            hypnogram = _read_profusion_xml(path, None)
        elif fmt == "isruc":
            hypnogram = _read_isruc(path, scorer)
        elif fmt == "dcsm":
            hypnogram = _read_dcsm(path, None)
        elif fmt == "dreams":
            hypnogram = _read_dreams(path)
        else:
            hypnogram = _read_csv(path, None)
    except EDFError as err:
        raise HypnogramError(f"cannot read hypnogram: {err}") from None
    if signal_path is not None and hypnogram.start_time is not None:
        from .edf import open_recording

        with open_recording(signal_path) as recording:
            offset = (hypnogram.start_time - recording.start_time).total_seconds()
        if offset:
            logger.info("%s starts %+g s from %s; onsets moved", path.name, offset, signal_path)
            hypnogram = hypnogram.shifted(offset)
    logger.debug("read %r from %s", hypnogram, path)
    return hypnogram


_COMPANIONS = (  # (regex on the recording name, hypnogram glob built from its groups)
    (r"^(.{6}).*-PSG\.edf$", "{0}*-Hypnogram.edf"),  # Sleep-EDF: SC4001E0-PSG, SC4001EC-Hyp...
    (r"^(.*)-PSG\.edf$", "{0}-Hypnogram.edf"),
    (r"^(.*) PSG\.edf$", "{0} Base.edf"),  # MASS
    (r"^(.*)\.(?:edf|bdf|rec)$", "{0}-nsrr.xml"),  # NSRR (SHHS, MESA...)
    (r"^(.*)\.(?:edf|bdf|rec)$", "{0}-profusion.xml"),
    (r"^(.*)\.(?:edf|bdf|rec)$", "{0}_1.txt"),  # ISRUC, scorer 1
    (r"^(.*)\.(?:edf|bdf|rec)$", "{0}-hypnogram.csv"),
    (r"^.*\.(?:edf|bdf|rec|h5)$", "hypnogram.ids"),  # DCSM
)


def find_hypnogram(psg_path: str | os.PathLike[str]) -> Path | None:
    """The hypnogram file that sits next to a recording, by dataset naming, or None."""
    psg_path = Path(psg_path)
    for pattern, template in _COMPANIONS:
        match = re.match(pattern, psg_path.name, flags=re.IGNORECASE)
        if match is None:
            continue
        wanted = template.format(*(glob.escape(group) for group in match.groups()))
        for candidate in sorted(psg_path.parent.glob(wanted)):
            if candidate != psg_path and candidate.is_file():
                return candidate
    return None


def write_annotations_edf(
    path: str | os.PathLike[str],
    annotations: Sequence[tuple[float, float, str]],
    start_time: datetime | None = None,
    patient: str = "",
    equipment: str = "psgvlm",
) -> Path:
    """Write an annotations-only EDF+ file (a Sleep-EDF style hypnogram) with pyedflib.

    Parameters
    ----------
    path : path
        Output ``.edf`` file.
    annotations : sequence of (onset, duration, text)
        Seconds from the recording start (EDF+ keeps 0.1 ms) and the annotation text,
        e.g. ``"Sleep stage N2"``.
    start_time : datetime, optional
        The recording's start, so that readers line the annotations up with it.
    patient, equipment : str
        Header fields.

    Raises
    ------
    HypnogramError
        For a negative onset or a non-positive duration.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "hypnogram.edf"
    >>> _ = write_annotations_edf(path, [(0.0, 30.0, "Sleep stage W"), (30.0, 60.0, "Sleep stage N2")])
    >>> read_hypnogram(path).stages.tolist()
    [0, 2]
    """
    import pyedflib

    rows = [(float(onset), float(duration), str(text)) for onset, duration, text in annotations]
    if any(onset < 0 or duration <= 0 for onset, duration, _ in rows):
        raise HypnogramError(f"{path}: EDF+ annotations need onsets >= 0 and positive durations")
    path = Path(path)
    writer = pyedflib.EdfWriter(str(path), 0, pyedflib.FILETYPE_EDFPLUS)
    try:
        if start_time is not None:
            writer.setStartdatetime(start_time)
        if patient:
            writer.setPatientCode(patient)
        writer.setEquipment(equipment)
        for onset, duration, text in rows:
            writer.writeAnnotation(onset, duration, text)
    finally:
        writer.close()
    return path
