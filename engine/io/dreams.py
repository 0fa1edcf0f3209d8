"""DREAMS excerpts (Université de Mons): one EEG channel as text, R&K scoring per 5 s.

Layout of a folder such as ``dreams-dev/`` (the DREAMS Sleep Spindles database)::

    excerptN.txt            first line the derivation ("[C3-A1]"), then one µV sample per
                            line; the rate is not written in the file (DREAMS: 100, 200
                            or 50 Hz; it follows from the length: 30 min per excerpt)
    Hypnogram_excerptN.txt  a "[Hypnogram]" line, then one Rechtschaffen & Kales code per
                            5 s: 5 W, 4 REM, 3 S1, 2 S2, 1 S3, 0 S4; other values are
                            movement or unscored
    excerptN.edf            (some) the whole PSG of the excerpt

The expert scored **20-s epochs** from 0 s, written as four equal 5-s codes each:
:func:`read_dreams_hypnogram` gives one epoch per 20 s (S3 and S4 → N3; a 20-s epoch whose
four codes differ, or hold a non-stage code, is UNK). The licence (CC BY-NC-ND) allows
verbatim copies only: read the files where they are, never store converted copies.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..errors import DatasetError, HypnogramError
from ..stages import Stage
from .hypnogram import Hypnogram
from .prerau import ArrayRecording

__all__ = [
    "DREAMS_CODES",
    "DREAMS_LABEL_SECONDS",
    "DREAMS_EPOCH",
    "read_dreams_hypnogram",
    "load_dreams_excerpt",
    "find_dreams_excerpts",
]

#: R&K codes of the DREAMS hypnograms -> AASM stages (S3 and S4 are N3).
DREAMS_CODES: dict[int, Stage] = {
    5: Stage.W, 4: Stage.R, 3: Stage.N1, 2: Stage.N2, 1: Stage.N3, 0: Stage.N3,
}  # fmt: skip
#: Seconds per hypnogram line.
DREAMS_LABEL_SECONDS = 5.0
#: The expert's epoch length (s).
DREAMS_EPOCH = 20.0
#: Length of every DREAMS excerpt (s): the sampling rate follows from the sample count.
_EXCERPT_SECONDS = 1800.0
_HEADER = re.compile(r"^\s*\[(?P<name>[^\]]+)\]\s*$")


def _lines(path: Path, what: str) -> tuple[str, list[str]]:
    if not path.is_file():
        raise DatasetError(f"{path}: no such file ({what})")
    text = path.read_text(encoding="latin-1").splitlines()
    match = _HEADER.match(text[0]) if text else None
    if match is None:
        raise DatasetError(f"{path}: expected a first line such as [C3-A1] or [Hypnogram]")
    return match["name"].strip(), [line for line in text[1:] if line.strip()]


def read_dreams_hypnogram(path: str | os.PathLike[str]) -> Hypnogram:
    """One 20-s epoch per four 5-s codes of a DREAMS ``Hypnogram_excerptN.txt``.

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
    >>> hyp = read_dreams_hypnogram(path)
    >>> hyp.onsets.tolist(), [int(s) for s in hyp.stages]
    ([0.0, 20.0, 40.0, 60.0], [0, 2, 3, -1])
    """
    path = Path(path)
    name, rows = _lines(path, "DREAMS hypnogram")
    if name.lower() != "hypnogram":
        raise HypnogramError(f"{path}: first line [{name}], expected [Hypnogram]")
    try:
        codes = np.array([int(float(row)) for row in rows], dtype=np.int64)
    except ValueError:
        raise HypnogramError(f"{path}: expected one integer R&K code per line") from None
    per_epoch = int(round(DREAMS_EPOCH / DREAMS_LABEL_SECONDS))
    n_epochs = codes.size // per_epoch
    if n_epochs < 1:
        raise HypnogramError(f"{path}: fewer than {per_epoch} codes (one 20-s epoch)")
    blocks = codes[: n_epochs * per_epoch].reshape(n_epochs, per_epoch)
    stages, labels = [], []
    for block in blocks:
        same = bool(np.all(block == block[0]))
        code = int(block[0])
        stages.append(int(DREAMS_CODES[code]) if same and code in DREAMS_CODES else int(Stage.UNK))
        labels.append(str(code) if same else "/".join(map(str, block)))
    return Hypnogram(
        DREAMS_EPOCH * np.arange(n_epochs, dtype=float),
        np.full(n_epochs, DREAMS_EPOCH),
        stages,
        labels,
        source=path,
        format="dreams",
        epoch_length=DREAMS_EPOCH,
    )


def load_dreams_excerpt(path: str | os.PathLike[str]) -> ArrayRecording:
    """A DREAMS ``excerptN.txt`` with its ``Hypnogram_excerptN.txt`` from the same folder.

    The channel is labelled with the file's derivation (``C3-A1``, ``CZ-A1``); the rate is
    the sample count over the excerpts' 30 minutes.

    Raises
    ------
    DatasetError, HypnogramError
        When a file is missing or malformed.
    """
    path = Path(path).expanduser()
    label, rows = _lines(path, "DREAMS excerpt")
    try:
        samples = np.array([float(row) for row in rows])
    except ValueError:
        raise DatasetError(f"{path}: expected one number (µV) per line after [{label}]") from None
    fs = samples.size / _EXCERPT_SECONDS
    if fs <= 0 or abs(fs - round(fs)) > 1e-6:
        raise DatasetError(
            f"{path}: {samples.size} samples are not a whole rate over {_EXCERPT_SECONDS:g} s"
        )
    hypnogram = read_dreams_hypnogram(path.with_name(f"Hypnogram_{path.stem}.txt"))
    return ArrayRecording("dreams", path.stem, {label: samples}, {label: float(round(fs))},
                          hypnogram, source=path)  # fmt: skip


def find_dreams_excerpts(folder: str | os.PathLike[str]) -> list[Path]:
    """The ``excerptN.txt`` files of a folder that have a ``Hypnogram_excerptN.txt``.

    Raises
    ------
    DatasetError
        When there is none.
    """
    folder = Path(folder).expanduser()
    found = sorted(
        (
            p
            for p in folder.glob("excerpt*.txt")
            if p.with_name(f"Hypnogram_{p.stem}.txt").is_file()
        ),
        key=lambda p: (len(p.stem), p.stem),
    )
    if not found:
        raise DatasetError(f"{folder}: no excerptN.txt with a Hypnogram_excerptN.txt beside it")
    return found
