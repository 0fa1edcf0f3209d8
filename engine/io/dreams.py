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
:func:`engine.io.hypnogram.read_hypnogram` (format ``dreams``) gives one epoch per 20 s
(S3 and S4 → N3; a 20-s epoch whose four codes differ, or hold a non-stage code, is UNK). The licence (CC BY-NC-ND) allows
verbatim copies only: read the files where they are, never store converted copies.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from .hypnogram import read_hypnogram
from .prerau import ArrayRecording

__all__ = [
    "load_dreams_excerpt",
    "find_dreams_excerpts",
]

#: Length of every DREAMS excerpt (s): the sampling rate follows from the sample count.
_EXCERPT_SECONDS = 1800.0
_HEADER = re.compile(r"^\s*\[(?P<name>[^\]]+)\]\s*$")


def _lines(path: Path, what: str) -> tuple[str, list[str]]:
    if not path.is_file():
        raise DatasetError(f"{path}: no such file ({what})")
    text = path.read_text(encoding="latin-1").splitlines()
    match = _HEADER.match(text[0]) if text else None
    if match is None:
        raise DatasetError(f"{path}: expected a first line such as [C3-A1]")
    return match["name"].strip(), [line for line in text[1:] if line.strip()]


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
    hypnogram = read_hypnogram(path.with_name(f"Hypnogram_{path.stem}.txt"), fmt="dreams")
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
