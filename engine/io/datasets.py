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
EDF/BDF that fits none is paired with the hypnogram next to it that shares its name
(``X.edf`` or ``X-PSG.edf`` with ``X-Hypnogram.edf``, ``X.xml``, ``X.csv``, ``X.txt``...)
and is its own subject (dataset ``edf``). Subjects decide splits: all nights of one
subject (e.g. Sleep-EDF's two nights ``SC4001E0``/``SC4002E0`` of subject ``00``, or
SHHS visits 1 and 2) carry the same subject id.

Folder scans and globs take files ending in ``.edf``, ``.bdf`` or ``.rec`` and skip names
that look like hypnograms (``hypnogram``, ``annotation``, ``base``, ``scoring``). A file
named explicitly is always taken as a recording, whatever its name; whether it is an
EDF/BDF is decided by its header, and when it cannot be read the reader's error is the
reason given. ``hypnogram=`` pairs one named recording with a given hypnogram file, and
``unscored=True`` takes every recording without looking for one.

Two different files that would get the same recording id (``synth-0000`` written by two
``psgvlm synth`` runs into different folders, ISRUC subgroups that all start at ``1``...)
are named by the folders that tell them apart: ``run1/synth-0000`` and ``run2/synth-0000``
(the subject too, where it is the recording's own name).
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

__all__ = [
    "DATASETS",
    "RecordingPair",
    "find_pairs",
    "resolve_inputs",
    "is_dataset_spec",
    "reader_error",
]

logger = logging.getLogger(__name__)

_SIGNAL_SUFFIXES = (".edf", ".bdf", ".rec")
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
    psg_path : Path
        Signal file.
    hypnogram_path : Path or None
        Hypnogram file; None for a recording rendered unscored.
    scorer : int
        Which scorer's hypnogram (ISRUC has two); 1 elsewhere.
    """

    dataset: str
    subject: str
    recording: str
    psg_path: Path
    hypnogram_path: Path | None
    scorer: int = 1

    @property
    def subject_id(self) -> str:
        """Subject id unique across datasets: ``dataset:subject``."""
        return f"{self.dataset}:{self.subject}"

    @property
    def scored(self) -> bool:
        """Whether the recording has a hypnogram."""
        return self.hypnogram_path is not None

    def to_dict(self) -> dict[str, str | int | None]:
        """JSON-ready form."""
        return {
            "dataset": self.dataset,
            "subject": self.subject,
            "recording": self.recording,
            "psg_path": str(self.psg_path),
            "hypnogram_path": None if self.hypnogram_path is None else str(self.hypnogram_path),
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


def reader_error(path: Path) -> str | None:
    """Why ``path`` cannot be read as an EDF/BDF recording, or None when it can.

    Decided by the file's header (:func:`engine.io.edf.open_recording`), never by its
    name; a file whose only signal is an annotation signal is refused too (it is a
    hypnogram or an event file, not a recording).
    """
    from ..errors import EDFError
    from .edf import open_recording

    quiet = logging.getLogger("engine.io.edf")
    was_disabled, quiet.disabled = quiet.disabled, True  # its warnings come at render time
    try:
        with open_recording(path) as recording:
            if not recording.channels:
                return (
                    "holds no signal channels, only annotations (a hypnogram or event "
                    "file, not a recording)"
                )
    except EDFError as err:
        return _without_path(str(err), path)
    except OSError as err:
        return f"cannot read the file: {err.strerror or err}"
    finally:
        quiet.disabled = was_disabled
    return None


def _without_path(message: str, path: Path) -> str:
    """The reader's message without the leading ``PATH: `` it starts with."""
    for prefix in (f"{path}: ", f"{path.name}: "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _fail(psg: Path, reason: str, unpaired: list[dict[str, str]] | None) -> None:
    """Record (or raise) a recording that cannot be rendered."""
    if unpaired is None:
        raise DatasetError(f"{psg}: {reason}")
    logger.debug("%s: %s", psg, reason)
    unpaired.append({"file": str(psg), "reason": reason})


def _pair(
    rule: _Rule,
    psg: Path,
    scorer: int,
    unpaired: list[dict[str, str]] | None,
    *,
    check_header: bool = False,
    hypnogram: Path | None = None,
    unscored: bool = False,
) -> RecordingPair | None:
    if check_header and (problem := reader_error(psg)) is not None:
        _fail(psg, problem, unpaired)
        return None
    if unscored:
        found: Path | None = None
    elif hypnogram is not None:
        found = hypnogram
    else:
        hypnograms = rule.hypnograms(psg, scorer)
        if not hypnograms:
            # The reader's complaint comes first: a text file named .edf is not a
            # recording without a hypnogram, it is not a recording at all.
            problem = None if check_header else reader_error(psg)
            _fail(
                psg,
                problem
                or f"no {rule.name} hypnogram found for this recording (pass --hypnogram "
                "FILE, or --unscored to render every epoch without a stage)",
                unpaired,
            )
            return None
        found = hypnograms[0]
    return RecordingPair(
        dataset=rule.name,
        subject=rule.subject(psg),
        recording=rule.recording(psg),
        psg_path=psg,
        hypnogram_path=found,
        scorer=scorer,
    )


def _signal_files(directory: Path) -> list[Path]:
    return sorted(
        p for p in directory.rglob("*") if p.suffix.lower() in _SIGNAL_SUFFIXES and p.is_file()
    )


def _rule_for(psg: Path, explicit: bool) -> _Rule:
    """The first auto rule whose naming fits; an explicitly named file falls back to edf."""
    for name in _AUTO_RULES:
        if DATASETS[name].matches(psg):
            return DATASETS[name]
    if explicit:
        return DATASETS["edf"]
    raise DatasetError(f"{psg}: not a signal file")  # filtered out before; never reached


def find_pairs(
    spec: str,
    scorer: int = 1,
    unpaired: list[dict[str, str]] | None = None,
    *,
    hypnogram: str | os.PathLike | None = None,
    unscored: bool = False,
) -> list[RecordingPair]:
    """Find every recording pair a spec names.

    Parameters
    ----------
    spec : str
        ``NAME:DIR`` (see the module docstring), an EDF/BDF file, a folder or a glob.
    scorer : int
        Scorer whose hypnogram to use where a dataset has several (ISRUC: 1 or 2).
    unpaired : list, optional
        When given, recordings that cannot be rendered (no hypnogram, or a named file
        the EDF reader refuses) are appended to it as ``{"file", "reason"}`` and
        skipped; otherwise they raise.
    hypnogram : path, optional
        The hypnogram of the one recording ``spec`` names (a single file).
    unscored : bool
        Take every recording without a hypnogram (``hypnogram_path`` None).

    Returns
    -------
    list of RecordingPair
        Sorted by dataset and recording.

    Raises
    ------
    DatasetError
        When the spec names nothing that exists, no recording is found, a recording has
        no hypnogram (and ``unpaired`` is None), ``hypnogram`` is given for other than
        one file, or two files claim the same recording id in one dataset folder.

    Examples
    --------
    >>> find_pairs("sleep-edf:~/data/sleep-cassette")  # doctest: +SKIP
    [RecordingPair(dataset='sleep-edf', subject='00', recording='SC4001E0', ...), ...]
    """
    if isinstance(scorer, bool) or not isinstance(scorer, int) or scorer < 1:
        raise DatasetError(f"scorer must be a positive integer, got {scorer!r}")
    if hypnogram is not None and unscored:
        raise DatasetError("--hypnogram and --unscored exclude each other")
    hypnogram_path = _hypnogram_file(hypnogram) if hypnogram is not None else None
    pairs: list[RecordingPair] = []
    if is_dataset_spec(spec):
        if hypnogram_path is not None:
            raise DatasetError(
                f"--hypnogram pairs one named recording file, not the dataset spec {spec}"
            )
        name, _, where = spec.partition(":")
        directory = Path(where).expanduser()
        if not directory.is_dir():
            raise DatasetError(f"{spec}: {directory} is not a directory")
        rule = DATASETS[name]
        for psg in _signal_files(directory):
            if rule.matches(psg):
                pair = _pair(rule, psg, scorer, unpaired, unscored=unscored)
                if pair is not None:
                    pairs.append(pair)
        if not pairs and not unpaired:
            raise DatasetError(f"{spec}: no {name} recordings found under {directory}")
    else:
        found = _expand_plain(spec)
        if hypnogram_path is not None and (len(found) != 1 or not found[0][1]):
            raise DatasetError(
                f"--hypnogram pairs one recording: {spec} names {len(found)} signal files; "
                "name the one recording file"
            )
        for psg, explicit in found:
            pair = _pair(
                _rule_for(psg, explicit),
                psg,
                scorer,
                unpaired,
                check_header=explicit and psg.suffix.lower() not in _SIGNAL_SUFFIXES,
                hypnogram=hypnogram_path,
                unscored=unscored,
            )
            if pair is not None:
                pairs.append(pair)
    return _check_unique(pairs)


def _hypnogram_file(hypnogram: str | os.PathLike) -> Path:
    path = Path(hypnogram).expanduser()
    if not path.exists():
        raise DatasetError(f"--hypnogram {path}: no such file")
    return path


def _expand_plain(spec: str) -> list[tuple[Path, bool]]:
    """Signal files named by a file, folder or glob, each with: was it named explicitly?

    Folder scans and glob matches keep files with a signal suffix whose names do not
    look like hypnograms; an explicitly named file is kept whatever its name.
    """
    if any(char in spec for char in "*?["):
        matches = [Path(p) for p in sorted(glob.glob(os.path.expanduser(spec), recursive=True))]
        if not matches:
            raise DatasetError(f"{spec}: the pattern matches no file")
        explicit = False
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            name = spec.partition(":")[0]
            hint = f" (known datasets: {', '.join(DATASETS)})" if ":" in spec else ""
            what = f"unknown dataset {name!r}" if ":" in spec else "no such file or folder"
            raise DatasetError(f"{spec}: {what}{hint}")
        matches = [path]
        explicit = True
    found: list[tuple[Path, bool]] = []
    for path in matches:
        if path.is_dir():
            found += [(p, False) for p in _signal_files(path) if _is_signal_file(p)]
        elif explicit:
            found.append((path, True))
        elif _is_signal_file(path):
            found.append((path, False))
    if not found:
        raise DatasetError(
            f"{spec}: no EDF/BDF signal files found (folders and globs take *.edf, *.bdf and "
            "*.rec files whose names do not look like hypnograms; name a file to take it "
            "as it is)"
        )
    return found


def _check_unique(pairs: Iterable[RecordingPair]) -> list[RecordingPair]:
    """Sort, drop repeats of the same file, name apart different files with one id."""
    groups: dict[tuple[str, str], list[RecordingPair]] = {}
    for pair in pairs:
        group = groups.setdefault((pair.dataset, pair.recording), [])
        if not any(_same_file(known.psg_path, pair.psg_path) for known in group):
            group.append(pair)
    unique: dict[tuple[str, str], RecordingPair] = {}
    for group in groups.values():
        for pair in group if len(group) == 1 else _named_by_folder(group):
            other = unique.get((pair.dataset, pair.recording))
            if other is not None:
                raise DatasetError(
                    f"two recordings share the id {pair.dataset}/{pair.recording}: "
                    f"{other.psg_path} and {pair.psg_path}; render them separately or "
                    "rename one"
                )
            unique[(pair.dataset, pair.recording)] = pair
    return [unique[key] for key in sorted(unique)]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a == b


def _named_by_folder(group: list[RecordingPair]) -> list[RecordingPair]:
    """Prefix each pair's ids with the fewest parent folders that tell them apart."""
    parents = [pair.psg_path.resolve().parent.parts for pair in group]
    depth = max(len(p) for p in parents)
    for k in range(1, depth + 1):
        prefixes = ["/".join(p[-k:]) if len(p) > 1 else "root" for p in parents]
        if len(set(prefixes)) == len(prefixes):
            break
    else:  # the same folder: only the file names differ (e.g. X.edf and X.bdf)
        prefixes = [pair.psg_path.suffix.lstrip(".").lower() or "file" for pair in group]
    renamed = []
    for pair, prefix in zip(group, prefixes):
        subject = pair.subject
        if subject == pair.recording:  # the subject is the file's own name
            subject = f"{prefix}/{subject}"
        renamed.append(
            RecordingPair(
                pair.dataset,
                subject,
                f"{prefix}/{pair.recording}",
                pair.psg_path,
                pair.hypnogram_path,
                pair.scorer,
            )
        )
    logger.info(
        "%d files share the recording id %s/%s; named by folder: %s",
        len(group),
        group[0].dataset,
        group[0].recording,
        ", ".join(p.recording for p in renamed),
    )
    return renamed


def resolve_inputs(
    inputs: Sequence[str],
    scorer: int = 1,
    unpaired: list[dict[str, str]] | None = None,
    *,
    hypnogram: str | os.PathLike | None = None,
    unscored: bool = False,
) -> list[RecordingPair]:
    """Resolve several inputs (files, folders, globs, specs) into unique pairs.

    See :func:`find_pairs`; the same file named twice is rendered once. With
    ``hypnogram``, ``inputs`` must name exactly one recording file. When ``unpaired`` is
    given and every recording failed, the empty list is returned (the failures are in
    ``unpaired``).
    """
    if not inputs:
        raise DatasetError("no inputs given")
    if hypnogram is not None and len(inputs) != 1:
        raise DatasetError(
            f"--hypnogram pairs one recording: give exactly one INPUT file, got {len(inputs)}"
        )
    pairs: list[RecordingPair] = []
    for spec in inputs:
        pairs += find_pairs(
            spec, scorer=scorer, unpaired=unpaired, hypnogram=hypnogram, unscored=unscored
        )
    pairs = _check_unique(pairs)
    if not pairs and not unpaired:
        raise DatasetError(f"no recording with a hypnogram found in {', '.join(inputs)}")
    return pairs
