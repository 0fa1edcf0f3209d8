"""AASM sleep stages and the one table that maps dataset labels onto them.

Every reader maps raw labels through :func:`to_stage`. R&K stages 3 and 4 become N3;
"?", movement and unscored epochs become ``UNK`` (kept in outputs, never a training
target).
"""

from __future__ import annotations

from enum import IntEnum

from .errors import UnknownStageError

__all__ = ["Stage", "STAGE_NAMES", "to_stage", "stage_name"]


class Stage(IntEnum):
    """AASM stage; the integer is the ``cls`` training target (UNK = -1)."""

    UNK = -1
    W = 0
    N1 = 1
    N2 = 2
    N3 = 3
    R = 4


#: Names of the five scored stages, indexed by their class id.
STAGE_NAMES: tuple[str, ...] = ("W", "N1", "N2", "N3", "R")

_TABLE: dict[str, Stage] = {}


def _add(stage: Stage, *labels: str) -> None:
    for label in labels:
        _TABLE[label.strip().lower()] = stage


# Generic AASM / R&K names.
_add(Stage.W, "W", "Wake", "Wakefulness", "0", "Stage W", "Sleep stage W", "Sleep stage 0")
_add(Stage.N1, "N1", "S1", "1", "Stage 1", "Stage N1", "NREM1", "Sleep stage 1", "Sleep stage N1")
_add(Stage.N2, "N2", "S2", "2", "Stage 2", "Stage N2", "NREM2", "Sleep stage 2", "Sleep stage N2")
_add(
    Stage.N3,
    "N3",
    "S3",
    "S4",
    "3",
    "4",
    "Stage 3",
    "Stage 4",
    "Stage N3",
    "NREM3",
    "NREM4",
    "Sleep stage 3",
    "Sleep stage 4",
    "Sleep stage N3",
    "Sleep stage N4",
)
_add(Stage.R, "R", "REM", "5", "Stage R", "Stage REM", "Sleep stage R", "Sleep stage REM")
_add(
    Stage.UNK,
    "?",
    "UNK",
    "Unknown",
    "Sleep stage ?",
    "Movement time",
    "Movement",
    "MT",
    "M",
    "6",
    "9",
    "Unscored",
    "Artefact",
    "Artifact",
    "-1",
    "L",
    "Lights on",
)
# NSRR EventConcept strings ("Wake|0", "Stage 1 sleep|1", ..., "REM sleep|5").
_add(Stage.W, "Wake|0")
_add(Stage.N1, "Stage 1 sleep|1")
_add(Stage.N2, "Stage 2 sleep|2")
_add(Stage.N3, "Stage 3 sleep|3", "Stage 4 sleep|4")
_add(Stage.R, "REM sleep|5")
_add(Stage.UNK, "Movement|6", "Unscored|9")


def to_stage(label: str | int) -> Stage:
    """Map a raw hypnogram label to a :class:`Stage`.

    Parameters
    ----------
    label : str or int
        A label as found in a hypnogram file (``"Sleep stage 2"``, ``"REM sleep|5"``,
        ``"N3"``, ``4``...). Matching ignores case and surrounding white space. Integer
        codes follow R&K / Sleep-EDF numbering (0 W, 1-4, 5 REM); dataset readers whose
        codes differ (ISRUC, Prerau) translate before calling this.

    Returns
    -------
    Stage

    Raises
    ------
    UnknownStageError
        When the label is not in the table.

    Examples
    --------
    >>> to_stage("Sleep stage 4")
    <Stage.N3: 3>
    """
    key = str(label).strip().lower()
    try:
        return _TABLE[key]
    except KeyError:
        raise UnknownStageError(f"unknown stage label {label!r}") from None


def stage_name(stage: int) -> str:
    """Short name of a stage id: ``"W"``, ``"N1"`` ... ``"R"``, or ``"UNK"``."""
    return STAGE_NAMES[stage] if 0 <= stage < len(STAGE_NAMES) else "UNK"
