"""Read evidence-style statements back out of an answer and check them against the signal.

:func:`check_claims` finds the claims an explanation makes about spindles, K-complexes,
slow waves and the 20% N3 threshold, eye movements, chin EMG and band powers, compares
each with the measured :class:`~engine.features.epoch.EpochFeatures`, and reports which
the features contradict (or cannot support because the channel was not measured).

Examples
--------
>>> from engine.features.epoch import EpochFeatures
>>> f = EpochFeatures(duration_s=30.0, eeg_channel="EEG C4-M1", spindle_count=3)
>>> report = check_claims("N2: no spindles.", f)
>>> report.checked, len(report.flagged)
(1, 1)
>>> report.annotate("N2: no spindles.")
'N2: no spindles [not supported by the signal: measured 3 sleep spindles on C4-M1].'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from .epoch import EpochFeatures, _short_channel, describe
from .evidence import N3_THRESHOLD, as_features

__all__ = ["Claim", "ClaimReport", "check_claims"]

_WORDS = {
    "no": 0, "zero": 0, "none": 0, "a": 1, "an": 1, "one": 1, "single": 1, "two": 2,
    "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
}  # fmt: skip
_SEVERAL = ("several", "many", "multiple", "frequent", "numerous")
_NUM = r"(?P<n>\d+|" + "|".join(list(_WORDS) + list(_SEVERAL)) + r")"


# up to `n` characters inside one sentence (a period counts only inside a number)
def _gap(n: int) -> str:
    return r"(?:[^;%.]|\.(?=\d)){0," + str(n) + "}?"


_PERCENT_TOLERANCE = 1.0
_RANGE_TOLERANCE = 0.15
_LEVELS = {
    "low": "low", "lower": "low", "lowest": "low", "reduced": "low", "minimal": "low",
    "absent": "low", "atonia": "low", "atonic": "low", "high": "high", "higher": "high",
    "elevated": "high", "increased": "high", "raised": "high", "medium": "medium",
    "moderate": "medium", "intermediate": "medium",
}  # fmt: skip
_BAND_WORDS = {
    "delta": "delta_rel", "theta": "theta_rel", "alpha": "alpha_rel", "sigma": "sigma_rel",
    "beta": "beta_rel",
}  # fmt: skip


@dataclass(frozen=True)
class Claim:
    """One statement found in a text and its verdict.

    Attributes
    ----------
    text : str
        The words of the claim as written.
    feature : str
        The feature it is about (a key of :data:`~engine.features.epoch.FEATURES`).
    stated : str
        What the text says, e.g. ``"0"``, ``">= 2"``, ``"> 20%"``, ``"45%"``, ``"low"``.
    measured : float, int, str or None
        The measured value in the same unit (percent for fractions); ``None`` when the
        feature was not measured.
    ok : bool
        Whether the measured features support the claim.
    start, end : int
        Character span of the claim in the text.
    note : str
        What was measured, in the features' own words (used by :meth:`ClaimReport.annotate`).
    """

    text: str
    feature: str
    stated: str
    measured: float | int | str | None
    ok: bool
    start: int
    end: int
    note: str = ""


@dataclass
class ClaimReport:
    """All claims found in one text."""

    claims: list[Claim] = field(default_factory=list)

    @property
    def checked(self) -> int:
        """Number of claims checked."""
        return len(self.claims)

    @property
    def flagged(self) -> list[Claim]:
        """Claims the measured features do not support."""
        return [c for c in self.claims if not c.ok]

    @property
    def ok(self) -> bool:
        """True when no claim is flagged."""
        return not self.flagged

    def annotate(self, text: str) -> str:
        """``text`` with ``[not supported by the signal: ...]`` after each flagged claim."""
        out = text
        for claim in sorted(self.flagged, key=lambda c: c.end, reverse=True):
            out = (
                f"{out[: claim.end]} [not supported by the signal: {claim.note}]{out[claim.end :]}"
            )
        return out

    def to_dict(self) -> dict:
        """JSON-serialisable summary."""
        return {
            "checked": self.checked,
            "flagged": len(self.flagged),
            "claims": [c.__dict__ for c in self.claims],
        }


def _number(word: str) -> int | None:
    """Count a number word stands for; ``None`` for "several"-like words (at least 2)."""
    word = word.lower()
    if word.isdigit():
        return int(word)
    return _WORDS.get(word)


def _measured_note(name: str, value: object, channel: str | None) -> str:
    if value is None:
        return f"{name.replace('_', ' ')} not measured"
    return "measured " + describe(name, value, channel)


class _Finder:
    """Collects claims, skipping any that overlaps an earlier one about the same feature."""

    def __init__(self, text: str, f: EpochFeatures) -> None:
        self.text = text
        self.f = f
        self.claims: list[Claim] = []

    def add(
        self,
        match: re.Match,
        feature: str,
        stated: str,
        measured: float | int | str | None,
        ok: bool,
        note: str,
    ) -> None:
        start, end = match.span()
        for c in self.claims:
            if c.feature == feature and c.start < end and start < c.end:
                return
        self.claims.append(
            Claim(self.text[start:end], feature, stated, measured, bool(ok), start, end, note)
        )

    def matches(self, pattern: str) -> Iterator[re.Match]:
        return re.finditer(pattern, self.text, flags=re.IGNORECASE)


def _count_claims(
    finder: _Finder, feature: str, noun: str, channel: str | None, presence: str | None = None
) -> None:
    measured = getattr(finder.f, feature)
    note = _measured_note(feature, measured, channel)
    for m in finder.matches(rf"\b{_NUM}\s+{noun}"):
        n = _number(m["n"])
        if n is None:
            finder.add(m, feature, ">= 2", measured, measured is not None and measured >= 2, note)
        else:
            finder.add(m, feature, str(n), measured, measured == n, note)
    for m in finder.matches(rf"\b(?:without|absence\s+of|lack\s+of)\s+(?:any\s+)?{noun}"):
        finder.add(m, feature, "0", measured, measured == 0, note)
    if presence is not None:
        for m in finder.matches(presence):
            finder.add(m, feature, ">= 1", measured, measured is not None and measured >= 1, note)


def _spindle_detail(finder: _Finder) -> None:
    f = finder.f
    number = r"(\d+(?:\.\d+)?)"
    pattern = (
        rf"spindles?\s*\(\s*{number}(?:\s*-\s*{number})?\s*Hz"
        rf"(?:\s*,\s*{number}(?:\s*-\s*{number})?\s*s)?\s*\)"
    )
    for m in finder.matches(pattern):
        for lo, hi, values, name, unit in (
            (m[1], m[2], f.spindle_freqs, "spindle_freqs", "Hz"),
            (m[3], m[4], f.spindle_durations, "spindle_durations", "s"),
        ):
            if lo is None:
                continue
            stated = (float(lo), float(hi if hi is not None else lo))
            if values:
                measured = (round(min(values), 2), round(max(values), 2))
                ok = all(abs(a - b) <= _RANGE_TOLERANCE for a, b in zip(stated, measured))
                note = f"measured {measured[0]:.1f}-{measured[1]:.1f} {unit}"
            else:
                measured, ok, note = None, False, "measured no sleep spindles"
            text = f"{lo}-{hi} {unit}" if hi is not None else f"{lo} {unit}"
            finder.add(m, name, text, None if measured is None else str(measured), ok, note)


def _comparison(words: str) -> str:
    words = words.lower()
    if re.search(r">|more than|above|over|exceed|at least|greater|higher", words):
        return ">"
    if re.search(r"<|less than|below|under|beneath|fewer|lower", words):
        return "<"
    return "="


def _slow_wave_claims(finder: _Finder) -> None:
    f = finder.f
    measured = f.slow_wave_fraction
    pct = None if measured is None else round(100 * measured, 1)
    note = _measured_note("slow_wave_fraction", measured, f.frontal_channel)
    threshold = 100 * N3_THRESHOLD

    def verdict(op: str, value: float) -> bool:
        if pct is None:
            return False
        if op == ">":
            return pct >= value - _PERCENT_TOLERANCE
        if op == "<":
            return pct < value + _PERCENT_TOLERANCE
        return abs(pct - value) <= _PERCENT_TOLERANCE

    gap = _gap(40)
    for m in finder.matches(
        rf"slow[- ]waves?(?:\s+activity)?\b(?P<mid>{gap})(?P<p>\d+(?:\.\d+)?)\s*%"
    ):
        op, value = _comparison(m["mid"]), float(m["p"])
        finder.add(m, "slow_wave_fraction", f"{op} {value:g}%", pct, verdict(op, value), note)
    for m in finder.matches(
        r"(?P<dir>at\s+or\s+above|above|over|exceed(?:s|ing)?|reach(?:es|ing)?|meets?|"
        r"below|under|beneath|short\s+of|more\s+than|less\s+than)\s+(?:the\s+)?"
        r"(?P<p>\d+)\s*%\s*(?:N3\s+)?(?:threshold|criterion|limit|mark)"
    ):
        word = m["dir"].lower()
        op = "<" if re.match(r"below|under|beneath|short|less", word) else ">"
        value = float(m["p"])
        finder.add(m, "slow_wave_fraction", f"{op} {value:g}%", pct, verdict(op, value), note)
    for m in finder.matches(r"\b(?:(?P<neg>no|without|absent)\s+)?slow[- ]wave\s+sleep\b"):
        op = "<" if m["neg"] else ">"
        finder.add(
            m, "slow_wave_fraction", f"{op} {threshold:g}%", pct, verdict(op, threshold), note
        )


def _band_claims(finder: _Finder) -> None:
    f = finder.f
    gap = _gap(40)
    pattern = (
        rf"\b(?P<band>delta|theta|alpha|sigma|beta)\b(?P<mid>{gap})(?P<p>\d+(?:\.\d+)?)\s*%"
        r"(?P<tail>(?:\s+of\s+(?:the\s+)?(?:EEG\s+)?power)?(?:\s+on\s+(?P<ch>[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?))?)"
    )
    for m in finder.matches(pattern):
        name = _BAND_WORDS[m["band"].lower()]
        if name == "delta_rel" and re.search(r"0\.5\s*-\s*2\s*Hz", m["mid"]):
            name = "slow_delta_rel"
        channel = f.eeg_channel
        if name == "alpha_rel" and f.occipital_alpha_rel is not None:
            said = (m["ch"] or "").upper()
            central = _short_channel(f.eeg_channel).upper()
            if said != central:
                name, channel = "occipital_alpha_rel", f.occipital_channel
        measured = getattr(f, name)
        pct = None if measured is None else round(100 * measured, 1)
        op, value = _comparison(m["mid"]), float(m["p"])
        if pct is None:
            ok = False
        elif op == ">":
            ok = pct >= value - _PERCENT_TOLERANCE
        elif op == "<":
            ok = pct < value + _PERCENT_TOLERANCE
        else:
            ok = abs(pct - value) <= _PERCENT_TOLERANCE
        note = _measured_note(name, measured, channel)
        finder.add(m, name, f"{op} {value:g}%", pct, ok, note)


def _emg_claims(finder: _Finder) -> None:
    f = finder.f
    gap = _gap(60)
    note = _measured_note("emg_percentile", f.emg_percentile, None)
    for m in finder.matches(rf"chin\s+EMG{gap}\b(?P<p>\d+)(?:st|nd|rd|th)\s+percentile"):
        value = float(m["p"])
        measured = f.emg_percentile
        ok = measured is not None and abs(measured - value) <= _PERCENT_TOLERANCE
        finder.add(m, "emg_percentile", f"{value:g}", measured, ok, note)
    words = "|".join(_LEVELS)
    if f.emg_percentile is not None:
        level_note = f"measured {describe('emg_percentile', f.emg_percentile)} ({f.emg_level})"
    else:
        level_note = "chin EMG level not measured (needs the night's EMG reference)"
    for pattern in (
        rf"(?:chin\s+)?EMG{gap}\b(?P<w>{words})\b",
        r"\b(?:muscle\s+|chin\s+)?(?P<w>aton(?:ia|ic))\b",
    ):
        for m in finder.matches(pattern):
            level = _LEVELS[m["w"].lower()]
            finder.add(m, "emg_level", level, f.emg_level, f.emg_level == level, level_note)


def _kcomplex_absent_with_spindles(finder: _Finder) -> None:
    f = finder.f
    note = _measured_note("kcomplex_count", f.kcomplex_count, f.frontal_channel)
    for m in finder.matches(
        r"\b(?:no|without)\s+(?:sleep\s+)?spindles?\s+(?:or|nor|and)\s+(?:any\s+)?K-?complex(?:es)?"
    ):
        finder.add(m, "kcomplex_count", "0", f.kcomplex_count, f.kcomplex_count == 0, note)


_CHECKS: tuple[Callable[[_Finder], None], ...] = (
    _spindle_detail,
    lambda fd: _count_claims(
        fd, "spindle_count", r"(?:sleep\s+)?spindles?\b", fd.f.eeg_channel,
        r"\b(?:sleep\s+)?spindles?\s+(?:are\s+|were\s+|is\s+)?(?:present|seen|visible|detected)",
    ),
    _kcomplex_absent_with_spindles,
    lambda fd: _count_claims(
        fd, "kcomplex_count", r"K-?complex(?:es)?\b", fd.f.frontal_channel,
        r"\bK-?complex(?:es)?\s+(?:are\s+|were\s+|is\s+)?(?:present|seen|visible|detected)",
    ),
    _slow_wave_claims,
    lambda fd: _count_claims(
        fd, "rem_count", r"(?:rapid\s+eye\s+movements?|REMs)\b", None,
        r"\brapid\s+eye\s+movements?\b",
    ),
    lambda fd: _count_claims(
        fd, "sem_count", r"(?:slow\s+(?:rolling\s+)?eye\s+movements?|SEMs)\b", None,
        r"\bslow\s+(?:rolling\s+)?eye\s+movements?\b",
    ),
    _emg_claims,
    _band_claims,
)  # fmt: skip


def check_claims(text: str, features: dict | EpochFeatures) -> ClaimReport:
    """Find evidence claims in ``text`` and check each against measured features.

    Recognised: spindle counts ("3 sleep spindles", "no spindles", "spindles present")
    and their frequency/duration ranges; K-complex counts; the slow-wave percentage
    ("slow waves fill 6%", "slow waves > 20%") and the 20% N3 threshold ("above the 20%
    N3 threshold", "slow wave sleep"); rapid and slow eye movement counts or presence;
    chin EMG percentile and level ("low", "atonia", "high"); band-power percentages
    ("alpha (8-12 Hz) is 34%"). Counts must match exactly; percentages within one point.

    Parameters
    ----------
    text : str
        An explanation, e.g. a model's answer.
    features : EpochFeatures or dict
        The epoch's measured features.

    Returns
    -------
    ClaimReport
        ``.claims`` in order of appearance, ``.checked``, ``.flagged``, ``.annotate()``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    finder = _Finder(text, as_features(features))
    for check in _CHECKS:
        check(finder)
    finder.claims.sort(key=lambda c: (c.start, c.end))
    return ClaimReport(finder.claims)
