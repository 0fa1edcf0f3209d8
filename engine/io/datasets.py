"""Resolve render inputs into (signal file, hypnogram file) pairs, per dataset.

Inputs are EDF files, folders, glob patterns or dataset specs ``NAME:DIR``:

=============  ==============================================================  ===========
spec           layout under DIR (searched recursively)                         subject
=============  ==============================================================  ===========
``sleep-edf``  ``SC4ssNE0-PSG.edf`` + ``SC4ssN??-Hypnogram.edf`` (paired by      ``ss``
               the first 6 characters, 7 when ambiguous); telemetry            (``STss``)
               ``ST7ssN..``
``shhs``       NSRR layout: ``polysomnography/edfs/shhs1/shhs1-200001.edf`` +  ``200001``
               ``polysomnography/annotations-events-nsrr/shhs1/
               shhs1-200001-nsrr.xml`` (or ``annotations-events-profusion/
               .../shhs1-200001-profusion.xml``)
``mass``       ``01-02-0001 PSG.edf`` + ``01-02-0001 Base.edf``                ``01-02-0001``
``isruc``      subject folders ``N/N.rec`` (or ``N.edf``) + ``N/N_1.txt``,     folder path
               ``N/N_2.txt`` (one per scorer)
``dcsm``       ``tp*/psg.edf`` + ``tp*/hypnogram.ids``                        folder name
``synthetic``  ``NAME-PSG.edf`` + ``NAME-Hypnogram.edf`` (``psgvlm synth``)    ``NAME``
=============  ==============================================================  ===========

A plain file, folder or glob is matched against the same patterns file by file; an
EDF that fits none is paired with the hypnogram next to it that shares its name
(``X.edf`` or ``X-PSG.edf`` with ``X-Hypnogram.edf``, ``X.xml``, ``X.csv``, ``X.txt``...)
and is its own subject (dataset ``edf``). Subjects decide splits: all nights of one
subject (e.g. Sleep-EDF's two nights ``SC4001E0``/``SC4002E0`` of subject ``00``, or
SHHS visits 1 and 2) carry the same subject id.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import DatasetError

__all__ = ["DATASETS", "RecordingPair", "find_pairs", "resolve_inputs", "is_dataset_spec"]

logger = logging.getLogger(__name__)

_SIGNAL_SUFFIXES = (".edf", ".rec")
_HYPNOGRAM_WORDS = re.compile(r"(hypnogram|\bbase\b|annotation|scoring)", re.IGNORECASE)
_PSG_SUFFIX = re.compile(r"[-_ ]?psg$", re.IGNORECASE)
#: Hypnogram file names tried next to a generic ``X.edf`` / ``X-PSG.edf``, in order.
_GENERIC_HYPNOGRAMS = (
    "{base}-Hypnogram.edf",
    "{base}_Hypnogram.edf",
    "{base} Hypnogram.edf",
    "{base} Base.edf",
    "{base}-nsrr.xml",
    "{base}-profusion.xml",
    "{base}.xml",
    "{base}-hypnogram.csv",
    "{base}_hypnogram.csv",
    "{base}-hypnogram.txt",
    "{base}_hypnogram.txt",
    "{base}_{scorer}.txt",
    "{base}.csv",
    "{base}.tsv",
    "{base}.txt",
    "{base}.ids",
    "{base}.hyp",
)


@dataclass(frozen=True)
class RecordingPair:
    """One recording to render: its signal file, its hypnogram and who it belongs to.

    Attributes
    ----------
    dataset : str
        Dataset name (``sleep-edf``, ``shhs``, ``mass``, ``isruc``, ``dcsm``,
        ``synthetic`` or ``edf``), the first part of every sample key.
    subject : str
        Subject id within the dataset; all recordings of a subject share a split.
    recording : str
        Recording id within the dataset (unique), the second part of sample keys.
    psg_path, hypnogram_path : Path
        Signal file and hypnogram file.
    scorer : int
        Which scorer's hypnogram (ISRUC has two); 1 elsewhere.
    """

    dataset: str
    subject: str
    recording: str
    psg_path: Path
    hypnogram_path: Path
    scorer: int = 1

    @property
    def subject_id(self) -> str:
        """Subject id unique across datasets: ``dataset:subject``."""
        return f"{self.dataset}:{self.subject}"

    def to_dict(self) -> dict[str, str | int]:
        """JSON-ready form."""
        return {
            "dataset": self.dataset,
            "subject": self.subject,
            "recording": self.recording,
            "psg_path": str(self.psg_path),
            "hypnogram_path": str(self.hypnogram_path),
            "scorer": self.scorer,
        }


@dataclass(frozen=True)
class _Rule:
    """How one dataset names its files."""

    name: str
    #: Does this file name (or path) look like one of the dataset's signal files?
    matches: Callable[[Path], bool]
    #: Candidate hypnogram paths for a signal file, best first.
    hypnograms: Callable[[Path, int], list[Path]]
    subject: Callable[[Path], str]
    recording: Callable[[Path], str]


def _siblings(path: Path) -> dict[str, Path]:
    """Files in ``path``'s folder by lower-cased name."""
    try:
        return {p.name.lower(): p for p in path.parent.iterdir() if p.is_file()}
    except OSError:
        return {}


# --- Sleep-EDF Expanded: SC4ssNE0-PSG.edf + SC4ssN?C-Hypnogram.edf -----------------
_SLEEP_EDF = re.compile(r"^(?P<cohort>S[CT])(?P<study>\d)(?P<ss>\d\d)(?P<night>\d)\w\w-PSG\.edf$")


def _sleep_edf_hypnograms(psg: Path, scorer: int) -> list[Path]:
    prefix6, prefix7 = psg.name[:6], psg.name[:7]
    found = sorted(
        p
        for p in psg.parent.glob(f"{glob.escape(prefix6)}*-Hypnogram.edf")
        if p.name[:6] == prefix6
    )
    if len(found) > 1:
        found = [p for p in found if p.name[:7] == prefix7] or found
    if len(found) > 1:
        raise DatasetError(
            f"{psg}: several hypnograms match ({', '.join(p.name for p in found)}); "
            "pass the pair explicitly"
        )
    return found


def _sleep_edf_subject(psg: Path) -> str:
    match = _SLEEP_EDF.match(psg.name)
    assert match is not None
    return match["ss"] if match["cohort"] == "SC" else f"ST{match['ss']}"


# --- SHHS (NSRR layout) ---------------------------------------------------------------
_SHHS = re.compile(r"^shhs(?P<visit>\d)-(?P<nsrrid>\d+)\.edf$", re.IGNORECASE)


def _shhs_hypnograms(psg: Path, scorer: int) -> list[Path]:
    stem = psg.stem
    candidates = []
    parts = psg.parts
    if "edfs" in parts:
        at = len(parts) - 1 - parts[::-1].index("edfs")
        root, below = Path(*parts[:at]), Path(*parts[at + 1 : -1])
        candidates += [
            root / "annotations-events-nsrr" / below / f"{stem}-nsrr.xml",
            root / "annotations-events-profusion" / below / f"{stem}-profusion.xml",
        ]
    candidates += [psg.with_name(f"{stem}-nsrr.xml"), psg.with_name(f"{stem}-profusion.xml")]
    return [p for p in candidates if p.is_file()]


# --- MASS: "01-02-0001 PSG.edf" + "01-02-0001 Base.edf" -------------------------------
_MASS = re.compile(r"^(?P<id>\d\d-\d\d-\d{4}) PSG\.edf$")


def _mass_hypnograms(psg: Path, scorer: int) -> list[Path]:
    base = psg.with_name(psg.name.replace(" PSG.edf", " Base.edf"))
    return [base] if base.is_file() else []


# --- ISRUC: N/N.rec + N/N_1.txt, N/N_2.txt ---------------------------------------------
def _isruc_matches(path: Path) -> bool:
    return path.suffix.lower() in _SIGNAL_SUFFIXES and path.stem == path.parent.name


def _isruc_hypnograms(psg: Path, scorer: int) -> list[Path]:
    found = psg.with_name(f"{psg.stem}_{scorer}.txt")
    return [found] if found.is_file() else []


# --- DCSM: tp*/psg.edf + tp*/hypnogram.ids ---------------------------------------------
def _dcsm_hypnograms(psg: Path, scorer: int) -> list[Path]:
    found = psg.with_name("hypnogram.ids")
    return [found] if found.is_file() else []


# --- synthetic nights (engine.synth.write_night) ---------------------------------------
_SYNTHETIC = re.compile(r"^(?P<name>.+)-PSG\.edf$")


def _synthetic_hypnograms(psg: Path, scorer: int) -> list[Path]:
    found = psg.with_name(psg.name[: -len("-PSG.edf")] + "-Hypnogram.edf")
    return [found] if found.is_file() else []


# --- anything else: the hypnogram next to it with the same name -----------------------
def _generic_base(psg: Path) -> str:
    return _PSG_SUFFIX.sub("", psg.stem) or psg.stem


def _generic_hypnograms(psg: Path, scorer: int) -> list[Path]:
    siblings = _siblings(psg)
    base = _generic_base(psg)
    names = [pattern.format(base=base, scorer=scorer) for pattern in _GENERIC_HYPNOGRAMS]
    if psg.stem.lower() == "psg":
        names.append("hypnogram.ids")
    found = [siblings[n.lower()] for n in names if n.lower() in siblings]
    return [p for p in found if p.resolve() != psg.resolve()]


def _is_signal_file(path: Path) -> bool:
    return path.suffix.lower() in _SIGNAL_SUFFIXES and not _HYPNOGRAM_WORDS.search(path.stem)


#: Dataset rules by spec name, in the order plain files are matched against them.
DATASETS: dict[str, _Rule] = {
    "sleep-edf": _Rule(
        "sleep-edf",
        lambda p: bool(_SLEEP_EDF.match(p.name)),
        _sleep_edf_hypnograms,
        _sleep_edf_subject,
        lambda p: p.name[: -len("-PSG.edf")],
    ),
    "shhs": _Rule(
        "shhs",
        lambda p: bool(_SHHS.match(p.name)),
        _shhs_hypnograms,
        lambda p: _SHHS.match(p.name)["nsrrid"],
        lambda p: p.stem,
    ),
    "mass": _Rule(
        "mass",
        lambda p: bool(_MASS.match(p.name)),
        _mass_hypnograms,
        lambda p: _MASS.match(p.name)["id"],
        lambda p: _MASS.match(p.name)["id"],
    ),
    "isruc": _Rule(
        "isruc",
        _isruc_matches,
        _isruc_hypnograms,
        lambda p: p.parent.name,
        lambda p: p.parent.name,
    ),
    "dcsm": _Rule(
        "dcsm",
        lambda p: p.name.lower() == "psg.edf" and (p.parent / "hypnogram.ids").is_file(),
        _dcsm_hypnograms,
        lambda p: p.parent.name,
        lambda p: p.parent.name,
    ),
    "synthetic": _Rule(
        "synthetic",
        lambda p: bool(_SYNTHETIC.match(p.name)),
        _synthetic_hypnograms,
        lambda p: _SYNTHETIC.match(p.name)["name"],
        lambda p: _SYNTHETIC.match(p.name)["name"],
    ),
    "edf": _Rule(
        "edf",
        _is_signal_file,
        _generic_hypnograms,
        _generic_base,
        _generic_base,
    ),
}
# Rules that plain (non-spec) inputs are tried against; "synthetic" is only chosen by
# spec, since its file names are the generic "X-PSG.edf".
_AUTO_RULES = ("sleep-edf", "shhs", "mass", "dcsm", "isruc", "edf")


def is_dataset_spec(text: str) -> bool:
    """Whether ``text`` is a ``NAME:DIR`` spec (and not an existing path)."""
    name, sep, _ = text.partition(":")
    return bool(sep) and name in DATASETS and not os.path.exists(text)


def _pair(
    rule: _Rule, psg: Path, scorer: int, unpaired: list[dict[str, str]] | None
) -> RecordingPair | None:
    hypnograms = rule.hypnograms(psg, scorer)
    if not hypnograms:
        reason = f"no {rule.name} hypnogram found for this recording"
        if unpaired is None:
            raise DatasetError(f"{psg}: {reason}")
        logger.warning("%s: %s; skipped", psg, reason)
        unpaired.append({"file": str(psg), "reason": reason})
        return None
    return RecordingPair(
        dataset=rule.name,
        subject=rule.subject(psg),
        recording=rule.recording(psg),
        psg_path=psg,
        hypnogram_path=hypnograms[0],
        scorer=scorer,
    )


def _signal_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.suffix.lower() in _SIGNAL_SUFFIXES)


def find_pairs(
    spec: str, scorer: int = 1, unpaired: list[dict[str, str]] | None = None
) -> list[RecordingPair]:
    """Find every recording pair a spec names.

    Parameters
    ----------
    spec : str
        ``NAME:DIR`` (see the module docstring), an EDF file, a folder or a glob pattern.
    scorer : int
        Scorer whose hypnogram to use where a dataset has several (ISRUC: 1 or 2).
    unpaired : list, optional
        When given, signal files without a hypnogram are appended to it as
        ``{"file", "reason"}`` and skipped; otherwise they raise.

    Returns
    -------
    list of RecordingPair
        Sorted by dataset and recording.

    Raises
    ------
    DatasetError
        When the spec names nothing that exists, no recording is found, a recording has
        no hypnogram (and ``unpaired`` is None) or two files claim the same recording id.

    Examples
    --------
    >>> find_pairs("sleep-edf:~/data/sleep-cassette")  # doctest: +SKIP
    [RecordingPair(dataset='sleep-edf', subject='00', recording='SC4001E0', ...), ...]
    """
    if isinstance(scorer, bool) or not isinstance(scorer, int) or scorer < 1:
        raise DatasetError(f"scorer must be a positive integer, got {scorer!r}")
    pairs: list[RecordingPair] = []
    if is_dataset_spec(spec):
        name, _, where = spec.partition(":")
        directory = Path(where).expanduser()
        if not directory.is_dir():
            raise DatasetError(f"{spec}: {directory} is not a directory")
        rule = DATASETS[name]
        for psg in _signal_files(directory):
            if rule.matches(psg):
                pair = _pair(rule, psg, scorer, unpaired)
                if pair is not None:
                    pairs.append(pair)
        if not pairs and not unpaired:
            raise DatasetError(f"{spec}: no {name} recordings found under {directory}")
    else:
        for psg in _expand_plain(spec):
            rule = next(DATASETS[n] for n in _AUTO_RULES if DATASETS[n].matches(psg))
            pair = _pair(rule, psg, scorer, unpaired)
            if pair is not None:
                pairs.append(pair)
    return _check_unique(pairs)


def _expand_plain(spec: str) -> list[Path]:
    """Signal files named by a file, folder or glob pattern."""
    if any(char in spec for char in "*?["):
        matches = [Path(p) for p in sorted(glob.glob(os.path.expanduser(spec), recursive=True))]
        if not matches:
            raise DatasetError(f"{spec}: the pattern matches no file")
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            name = spec.partition(":")[0]
            hint = f" (known datasets: {', '.join(DATASETS)})" if ":" in spec else ""
            what = f"unknown dataset {name!r}" if ":" in spec else "no such file or folder"
            raise DatasetError(f"{spec}: {what}{hint}")
        matches = [path]
    found: list[Path] = []
    for path in matches:
        if path.is_dir():
            found += [p for p in _signal_files(path) if _is_signal_file(p)]
        elif path.suffix.lower() in _SIGNAL_SUFFIXES:
            found.append(path)
        else:
            raise DatasetError(f"{path}: not an EDF signal file (expected .edf or .rec)")
    found = [p for p in found if _is_signal_file(p)]
    if not found:
        raise DatasetError(f"{spec}: no EDF signal files found")
    return found


def _check_unique(pairs: Iterable[RecordingPair]) -> list[RecordingPair]:
    """Sort, drop repeats of the same file, refuse two files with one recording id."""
    by_id: dict[tuple[str, str], RecordingPair] = {}
    for pair in pairs:
        key = (pair.dataset, pair.recording)
        known = by_id.get(key)
        if known is None:
            by_id[key] = pair
        elif known.psg_path.resolve() != pair.psg_path.resolve():
            raise DatasetError(
                f"two recordings share the id {pair.dataset}/{pair.recording}: "
                f"{known.psg_path} and {pair.psg_path}; render them separately or rename one"
            )
    return [by_id[key] for key in sorted(by_id)]


def resolve_inputs(
    inputs: Sequence[str], scorer: int = 1, unpaired: list[dict[str, str]] | None = None
) -> list[RecordingPair]:
    """Resolve several inputs (files, folders, globs, specs) into unique pairs.

    See :func:`find_pairs`; the same file named twice is rendered once.
    """
    if not inputs:
        raise DatasetError("no inputs given")
    pairs: list[RecordingPair] = []
    for spec in inputs:
        pairs += find_pairs(spec, scorer=scorer, unpaired=unpaired)
    pairs = _check_unique(pairs)
    if not pairs:
        raise DatasetError(f"no recording with a hypnogram found in {', '.join(inputs)}")
    return pairs
