"""Questions about one epoch, answered with the model's stage probabilities and the signal.

:class:`EpochChat` holds a recording, a model and a current epoch. ``ask(question)``
returns an :class:`Answer`: the stage and its probability (candidate scoring, as in
``psgvlm stage``) and a text built from the epoch's measured features
(:mod:`engine.features`). Question kinds:

- "what stage is this?", "why?" → the stage and its evidence sentence;
- "why not N3?", "could it be REM?" → each of that stage's criteria, met or not, with the
  measurement (e.g. slow waves fill 6% of the epoch, below the 20% N3 threshold);
- "show the spindles" (K-complexes, slow waves, eye movements) → the detected events with
  their times, and ``OUT/epoch_NNNNN_<kind>.png`` with them boxed;
- "how confident are you?" → all five probabilities and the margin.
- "where did you look?" → the channel and seconds where occluding the image lowers the
  stage's probability most, and the events detected there
  (:func:`vlm.explain.where_decision_rested`).

A model trained with ``answer_mode: evidence`` also answers in its own words (greedy
generation). Every text, templated or generated, goes through
:func:`engine.features.check_claims` before it is shown: contradicted claims are marked
``[not supported by the signal: ...]``. The epoch image the model saw is saved as
``OUT/epoch_{N:05d}.png``.

Command line::

    psgvlm ask night.edf --epoch 120 "why not N3?" --model M --adapter A [--out DIR]
    psgvlm chat night.edf --model M --adapter A [--epoch 120] [--out DIR]
    psgvlm ask night.edf --epoch 120 "what stage is this?" --model M --adapter A --ensemble B C

With ``--ensemble`` the stage probabilities are the mean over ``--adapter`` and the other
members (as in ``psgvlm stage --ensemble``); "where did you look?" and generated
explanations use the first member.

``chat`` reads questions from standard input; ``:next``, ``:prev``, ``:goto N``, ``:help``
and ``:quit`` move between epochs and leave.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import IO, Any

import numpy as np

from engine.errors import PSGError
from engine.stages import STAGE_NAMES, Stage, stage_name, to_stage

from .render_setup import RenderConfig

__all__ = ["Answer", "EpochChat", "HELP", "chat_loop", "format_answer", "add_arguments", "run"]

logger = logging.getLogger(__name__)

HELP = """\
Ask about the current epoch, for example:
  what stage is this?        why N2?            why not N3?       could it be REM?
  show the spindles          show the K-complexes / slow waves / eye movements
  how confident are you?     where did you look?
Commands: :next  :prev  :goto N  :help  :quit"""

_N3_PERCENT = 20
# Confidence words: high needs p >= 0.8 and a margin >= 0.5; a margin < 0.1 is low.
_HIGH_CONFIDENCE, _CLEAR_MARGIN, _NARROW_MARGIN = 0.8, 0.5, 0.1
_MARK_COLOUR = (220, 20, 60)

# Stage words a user may type -> stage (checked after engine.stages.to_stage).
_STAGE_WORDS = {
    "wake": Stage.W, "awake": Stage.W, "wakefulness": Stage.W, "rem": Stage.R,
    "rem sleep": Stage.R, "deep sleep": Stage.N3, "sws": Stage.N3, "slow wave sleep": Stage.N3,
    "slow-wave sleep": Stage.N3,
}  # fmt: skip
_STAGE_TOKEN = (
    r"(?P<stage>slow[- ]wave sleep|deep sleep|rem sleep|stage\s*(?:[1-4]|w|r|n[1-3]|rem)|"
    r"nrem\s*[1-3]|n[1-3]|s[1-4]|rem|sws|wake(?:fulness)?|awake|w|r)\b"
)
_CONTRAST = re.compile(
    r"\b(?:why\s+(?:is\s+(?:it|this)\s+)?not|why\s+isn'?t\s+(?:it|this)|not|"
    r"(?:could|can|might|would)\s+(?:it|this)\s+(?:also\s+)?be|what\s+about|"
    r"is\s+(?:it|this)(?:\s+not)?|rather\s+than|instead\s+of)\s+(?:an?\s+)?" + _STAGE_TOKEN,
    re.IGNORECASE,
)
_CONFIDENCE = re.compile(r"confiden|\bsure\b|certain|probab|how\s+likely", re.IGNORECASE)
_WHERE = re.compile(
    r"\bwhere\b.*\b(?:look|focus|decision|decide|rest)|\bwhich\s+(?:part|channel|region|area)"
    r"|what\s+did\s+you\s+look\s+at",
    re.IGNORECASE,
)
_KNOWN = re.compile(r"\bstage\b|\bwhy\b|\bwhat\b|explain|evidence|reason|score", re.IGNORECASE)


@dataclass(frozen=True)
class _EventKind:
    pattern: re.Pattern
    kinds: tuple[str, ...]


_EVENT_KINDS: dict[str, _EventKind] = {
    "spindles": _EventKind(re.compile(r"spindle", re.I), ("spindle",)),
    "kcomplexes": _EventKind(re.compile(r"k[- ]?complex", re.I), ("kcomplex",)),
    "slow_waves": _EventKind(
        re.compile(r"slow[- ]?waves?(?!\s+sleep)|delta\s+waves?", re.I), ("slow_wave",)
    ),
    "eye_movements": _EventKind(
        re.compile(r"eye[- ]movements?|\bREMs\b|\bSEMs?\b|saccade", re.I),
        ("rapid_eye_movement", "slow_eye_movement"),
    ),
}  # fmt: skip


# Event kind (engine.features events) -> how a listing of them starts.
_EVENT_NAMES = {
    "spindle": "Spindles", "kcomplex": "K-complexes", "slow_wave": "Slow waves",
    "rapid_eye_movement": "Rapid eye movements", "slow_eye_movement": "Slow eye movements",
}  # fmt: skip


@dataclass
class Answer:
    """One answer about one epoch.

    Attributes
    ----------
    epoch : int
        Epoch number (position on the grid).
    question, intent : str
        The question and how it was read (``stage``, ``contrast``, ``show``,
        ``confidence``, ``where``).
    stage : str
        Most probable stage.
    probability : float
        Its probability.
    probabilities : dict
        Stage name -> probability (W, N1, N2, N3, R).
    text : str
        The answer shown, with contradicted claims marked.
    evidence : str
        :func:`engine.features.evidence_sentence` for ``stage``.
    claims_checked : int
        Claims :func:`engine.features.check_claims` found in the text(s).
    claims_flagged : list of Claim
        Claims the measured features contradict.
    image_path : Path
        The epoch image the model saw.
    marked_image_path : Path or None
        The image with the asked-about events boxed (``show`` questions).
    generated : str or None
        The model's own words (evidence-trained models), checked and marked.
    """

    epoch: int
    question: str
    intent: str
    stage: str
    probability: float
    probabilities: dict[str, float]
    text: str
    evidence: str
    claims_checked: int
    claims_flagged: list = field(default_factory=list)
    image_path: Path | None = None
    marked_image_path: Path | None = None
    generated: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (flagged claims as their text and note)."""
        return {
            "epoch": self.epoch,
            "question": self.question,
            "intent": self.intent,
            "stage": self.stage,
            "probability": self.probability,
            "probabilities": self.probabilities,
            "text": self.text,
            "evidence": self.evidence,
            "claims_checked": self.claims_checked,
            "claims_flagged": [{"text": c.text, "note": c.note} for c in self.claims_flagged],
            "image_path": str(self.image_path) if self.image_path else None,
            "marked_image_path": str(self.marked_image_path) if self.marked_image_path else None,
            "generated": self.generated,
        }


@dataclass
class _EpochState:
    index: int
    image: Any  # PIL image the model saw
    probabilities: np.ndarray
    features: Any  # EpochFeatures
    image_path: Path


@dataclass(frozen=True)
class _Criterion:
    need: str  # what the stage needs, in words check_claims does not read as claims
    measured: str | None  # measured phrase (true claims), None when not measured
    met: bool | None


def _parse_stage(word: str) -> Stage:
    key = re.sub(r"\s+", " ", word.strip().lower())
    if key in _STAGE_WORDS:
        return _STAGE_WORDS[key]
    key = re.sub(r"^stage\s*", "stage ", key).replace("stage rem", "rem")
    key = re.sub(r"^nrem\s*", "nrem", key)
    return to_stage(key)


# -- measured phrases (every number equals a feature; check_claims reads them as true) ----
def _swf_reaches(f) -> bool:
    return round(100 * f.slow_wave_fraction) >= _N3_PERCENT


def _swf_phrase(f) -> str | None:
    from engine.features import describe

    if f.slow_wave_fraction is None:
        return None
    side = "at or above" if _swf_reaches(f) else "below"
    phrase = describe("slow_wave_fraction", f.slow_wave_fraction, f.frontal_channel)
    return f"{phrase} ({side} the {_N3_PERCENT}% N3 threshold)"


def _sk_phrase(f) -> str | None:
    from engine.features import describe

    if f.spindle_count is None:
        return None
    spindles, kcomplexes = f.spindle_count, f.kcomplex_count or 0
    if spindles == 0 and kcomplexes == 0:
        return "no sleep spindles or K-complexes"
    return (
        f"{describe('spindle_count', spindles, f.eeg_channel)} and "
        f"{describe('kcomplex_count', kcomplexes, f.frontal_channel)}"
    )


def _emg_phrase(f) -> str | None:
    from engine.features import describe

    if f.emg_percentile is not None:
        return f"{describe('emg_percentile', f.emg_percentile)} ({f.emg_level})"
    if f.emg_rms is not None:
        return describe("emg_rms", f.emg_rms)
    return None


def _alpha_theta(f) -> tuple[str | None, float | None]:
    """Phrase with alpha and theta shares, and alpha minus theta (None when not measured)."""
    from engine.features import describe

    if f.theta_rel is None:
        return None, None
    if f.occipital_alpha_rel is not None:
        alpha = f.occipital_alpha_rel
        alpha_text = describe("occipital_alpha_rel", alpha, f.occipital_channel)
    else:
        alpha = f.alpha_rel
        alpha_text = describe("alpha_rel", alpha, f.eeg_channel)
    theta_text = describe("theta_rel", f.theta_rel, f.eeg_channel)
    return f"{alpha_text}; {theta_text}", alpha - f.theta_rel


def _criteria(stage: Stage, f) -> list[_Criterion]:
    """AASM criteria of ``stage`` with the epoch's measurements."""
    from engine.features import describe

    sk = _sk_phrase(f)
    no_sk = None if sk is None else (f.spindle_count == 0 and not f.kcomplex_count)
    swf = _swf_phrase(f)
    emg = _emg_phrase(f)
    level = f.emg_level
    alpha_theta, alpha_minus_theta = _alpha_theta(f)
    alpha_wins = None if alpha_minus_theta is None else alpha_minus_theta > 0
    if stage == Stage.W:
        return [
            _Criterion("an alpha rhythm stronger than theta", alpha_theta, alpha_wins),
            _Criterion("high chin muscle tone", emg, None if level is None else level == "high"),
        ]
    if stage == Stage.N1:
        return [
            _Criterion("theta activity replacing alpha", alpha_theta,
                       None if alpha_wins is None else not alpha_wins),
            _Criterion("neither sleep spindles nor K-complexes", sk, no_sk),
        ]  # fmt: skip
    if stage == Stage.N2:
        return [
            _Criterion("sleep spindles or K-complexes", sk, None if no_sk is None else not no_sk),
            _Criterion("slow waves in less than a fifth of the epoch", swf,
                       None if swf is None else not _swf_reaches(f)),
        ]  # fmt: skip
    if stage == Stage.N3:
        return [
            _Criterion("slow waves in at least a fifth of the epoch", swf,
                       None if swf is None else _swf_reaches(f)),
        ]  # fmt: skip
    rems = None if f.rem_count is None else describe("rem_count", f.rem_count)
    return [
        _Criterion("REMs", rems, None if f.rem_count is None else f.rem_count > 0),
        _Criterion("the lowest chin muscle tone of the night", emg,
                   None if level is None else level == "low"),
        _Criterion("neither sleep spindles nor K-complexes", sk, no_sk),
    ]  # fmt: skip


def _criteria_text(stage: Stage, criteria: list[_Criterion]) -> str:
    name = stage_name(int(stage))
    sentences = []
    for c in criteria:
        if c.measured is None:
            sentences.append(f"{name} needs {c.need}. Not measured (channel missing).")
        else:
            verdict = {True: "Met", False: "Not met", None: "Cannot tell"}[c.met]
            sentences.append(f"{name} needs {c.need}. {verdict}: {c.measured}.")
    return " ".join(sentences)


class EpochChat:
    """Answers questions about the epochs of one recording.

    Parameters
    ----------
    source : engine.epochs.EpochSource
        The recording on its epoch grid (:func:`vlm.stage.open_source`).
    model, processor
        From :func:`vlm.model.load_model_and_processor`.
    config : RenderConfig
        How the adapter's training images were drawn.
    out_dir : path
        Where epoch images are saved.
    generate : bool, optional
        Also let the model explain in its own words; default: when it was trained in
        ``evidence`` mode.
    max_new_tokens : int
        Length limit of generated explanations.
    epoch : int
        Starting epoch.
    members : sequence of (model, processor), optional
        More ensemble members drawn like ``config``: the stage probabilities are the mean
        over ``model`` and these. Occlusion maps and generated text use ``model``.
    """

    def __init__(
        self,
        source,
        model,
        processor,
        config: RenderConfig,
        out_dir: str | Path = ".",
        generate: bool | None = None,
        max_new_tokens: int = 96,
        epoch: int = 0,
        members: Sequence[tuple[Any, Any]] = (),
    ) -> None:
        if len(source) == 0:
            raise PSGError(f"{source}: no epochs")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        self.source = source
        self.model = model
        self.processor = processor
        self.members = [(model, processor), *members]
        self.config = config
        self.spec = config.spec()
        self.question = config.question()
        self.out_dir = Path(out_dir)
        self.generate = config.answer_mode == "evidence" if generate is None else bool(generate)
        self.max_new_tokens = int(max_new_tokens)
        self._emg_reference: Any = None
        self._emg_reference_built = False
        self._cache: dict[int, _EpochState] = {}
        self.epoch = 0
        self.goto(epoch)

    # -- navigation ------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.source)

    def goto(self, index: int) -> int:
        """Make ``index`` the current epoch.

        Raises
        ------
        PSGError
            When the recording has no such epoch.
        """
        if not 0 <= int(index) < len(self):
            raise PSGError(f"no epoch {index}: this recording has epochs 0..{len(self) - 1}")
        self.epoch = int(index)
        return self.epoch

    def next(self) -> int:
        """Move to the next epoch (stays on the last)."""
        return self.goto(min(self.epoch + 1, len(self) - 1))

    def prev(self) -> int:
        """Move to the previous epoch (stays on the first)."""
        return self.goto(max(self.epoch - 1, 0))

    def header(self, index: int | None = None) -> str:
        """``epoch 12 of 30: 0:06:00-0:06:30 from the start (23:06:00), scored N2``."""
        i = self.epoch if index is None else int(index)
        hyp = self.source.hypnogram
        onset, duration = float(hyp.onsets[i]), float(hyp.durations[i])
        text = (
            f"epoch {i} of {len(self)}: {timedelta(seconds=round(onset))}-"
            f"{timedelta(seconds=round(onset + duration))} from the start"
        )
        if self.source.start_time is not None:
            clock = self.source.start_time + timedelta(seconds=onset)
            text += f" ({clock:%H:%M:%S})"
        if int(hyp.stages[i]) != int(Stage.UNK):
            text += f", scored {stage_name(int(hyp.stages[i]))}"
        return text

    # -- per-epoch measurements ------------------------------------------------------
    @property
    def emg_reference(self):
        """The night's chin-EMG distribution (None without an EMG channel)."""
        if not self._emg_reference_built:
            from engine.features import EMGReference, emg_rms

            roles = [c.role for c in self.source.channels]
            if "emg" in roles:
                row = roles.index("emg")
                scored = self.source.hypnogram.stages != int(Stage.UNK)
                values = [
                    emg_rms(batch.signals[:, row], self.source.fs)
                    for batch in self.source.iter_batches(256, keep_unknown=not scored.any())
                ]
                self._emg_reference = EMGReference.from_rms(np.concatenate(values))
            self._emg_reference_built = True
        return self._emg_reference

    def features(self, index: int | None = None):
        """:class:`engine.features.EpochFeatures` of an epoch (the current one by default)."""
        return self._state(self.epoch if index is None else index).features

    def probabilities(self, index: int | None = None) -> dict[str, float]:
        """Stage probabilities of an epoch (the current one by default)."""
        probs = self._state(self.epoch if index is None else index).probabilities
        return {name: float(p) for name, p in zip(STAGE_NAMES, probs)}

    def _state(self, index: int) -> _EpochState:
        if index in self._cache:
            return self._cache[index]
        from engine.features import epoch_features
        from engine.raster import render

        from .evaluate import score_candidates
        from .stage import model_images

        batch = self.source.epoch(index, context=self.spec.context)
        image = model_images(render(batch.signals, self.spec), self.config)[0]
        probs = np.mean(
            [score_candidates(m, p, [image], [self.question])[0] for m, p in self.members],
            axis=0,
        )
        target = self.source.epoch(index).signals[0]
        features = epoch_features(
            target,
            self.source.fs,
            [c.role for c in self.source.channels],
            [c.label for c in self.source.channels],
            emg_reference=self.emg_reference,
        )
        self.out_dir.mkdir(parents=True, exist_ok=True)
        image_path = self.out_dir / f"epoch_{index:05d}.png"
        image.save(image_path)
        state = _EpochState(index, image, probs, features, image_path)
        self._cache[index] = state
        return state

    # -- answering -------------------------------------------------------------------
    def ask(self, question: str) -> Answer:
        """Answer a question about the current epoch (see the module docstring)."""
        from engine.features import check_claims, evidence_sentence

        if not isinstance(question, str) or not question.strip():
            raise PSGError("ask a question, e.g. 'what stage is this?'")
        state = self._state(self.epoch)
        f = state.features
        probs = state.probabilities
        order = np.argsort(-probs)
        stage = Stage(int(order[0]))
        name = stage_name(int(stage))
        evidence = evidence_sentence(f, name)
        head = f"Epoch {self.epoch}: {name} (p = {probs[order[0]]:.2f})."
        marked = None
        contrast = _CONTRAST.search(question)
        show = next((k for k, kind in _EVENT_KINDS.items() if kind.pattern.search(question)), None)
        if contrast is not None:
            intent = "contrast"
            body = self._contrast(_parse_stage(contrast["stage"]), stage, probs)
        elif _WHERE.search(question):
            intent = "where"
            body = self._where(state)
        elif _CONFIDENCE.search(question):
            intent = "confidence"
            body = self._confidence(stage, probs, order)
        elif show is not None:
            intent = "show"
            body, marked = self._show(show, state)
        else:
            intent = "stage"
            body = evidence[len(name) + 2 :]  # the sentence after "N2. "
            if not _KNOWN.search(question):
                body += " (Other questions I answer: :help.)"
        text = f"{head} {body}"
        report = check_claims(text, f)
        flagged = list(report.flagged)
        checked = report.checked
        text = report.annotate(text)
        generated = None
        if self.generate and intent == "stage":
            own = self._generate(state.image)
            own_report = check_claims(own, f)
            generated = own_report.annotate(own)
            checked += own_report.checked
            flagged += own_report.flagged
            text += f"\nIn the model's own words: {generated}"
        return Answer(
            epoch=self.epoch,
            question=question,
            intent=intent,
            stage=name,
            probability=float(probs[order[0]]),
            probabilities={n: float(p) for n, p in zip(STAGE_NAMES, probs)},
            text=text,
            evidence=evidence,
            claims_checked=checked,
            claims_flagged=flagged,
            image_path=state.image_path,
            marked_image_path=marked,
            generated=generated,
        )

    def _contrast(self, asked: Stage, stage: Stage, probs: np.ndarray) -> str:
        f = self.features()
        if asked == Stage.UNK:
            raise PSGError("ask about one of W, N1, N2, N3 or R")
        asked_name = stage_name(int(asked))
        criteria = _criteria(asked, f)
        met = sum(c.met is True for c in criteria)
        detail = _criteria_text(asked, criteria)
        if asked == stage:
            return f"It is {asked_name}. {detail} {met} of {len(criteria)} criteria met."
        opening = f"Why not {asked_name}: the model gives it p = {probs[int(asked)]:.2f}."
        if met == len(criteria):
            closing = (
                f"The measurements meet every {asked_name} criterion listed; the image still "
                f"looks more like {stage_name(int(stage))} to the model."
            )
        else:
            closing = f"{met} of {len(criteria)} {asked_name} criteria met."
        return f"{opening} {detail} {closing}"

    def _confidence(self, stage: Stage, probs: np.ndarray, order: np.ndarray) -> str:
        top, second = float(probs[order[0]]), float(probs[order[1]])
        margin = top - second
        if top >= _HIGH_CONFIDENCE and margin >= _CLEAR_MARGIN:
            level = "high"
        elif top < 0.5 or margin < _NARROW_MARGIN:
            level = "low"
        else:
            level = "moderate"
        others = ", ".join(f"{STAGE_NAMES[i]} {probs[i]:.2f}" for i in order[1:])
        criteria = _criteria(stage, self.features())
        met = sum(c.met is True for c in criteria)
        return (
            f"Probabilities: {stage_name(int(stage))} {top:.2f}; {others}. Margin over "
            f"{STAGE_NAMES[order[1]]}: {margin:.2f}, so {level} confidence. The "
            f"measurements meet {met} of {len(criteria)} {stage_name(int(stage))} criteria."
        )

    def _where(self, state: _EpochState) -> str:
        """Where the decision rested: occlusion of strip x 3-s windows (vlm.explain)."""
        from .explain import occlusion_attribution, where_decision_rested

        labels = [c.label for c in self.source.channels]
        attribution = occlusion_attribution(
            self.model, self.processor, np.asarray(state.image), self.config, channels=labels
        )
        return where_decision_rested(attribution.grid, state.features, labels, attribution.edges_s)

    def _show(self, key: str, state: _EpochState) -> tuple[str, Path | None]:
        from engine.features import describe

        f = state.features
        kind = _EVENT_KINDS[key]
        events = [e for e in f.events if e["kind"] in kind.kinds]
        if key == "spindles":
            if f.spindle_count is None:
                return "Sleep spindles were not measured (no EEG channel).", None
            count = describe("spindle_count", f.spindle_count, f.eeg_channel)
        elif key == "kcomplexes":
            if f.kcomplex_count is None:
                return "K-complexes were not measured (no EEG channel).", None
            count = describe("kcomplex_count", f.kcomplex_count, f.frontal_channel)
        elif key == "slow_waves":
            if f.slow_wave_count is None:
                return "Slow waves were not measured (no EEG channel).", None
            count = describe("slow_wave_count", f.slow_wave_count, f.frontal_channel)
        else:
            if f.rem_count is None:
                return "Eye movements were not measured (no EOG channel).", None
            count = f"{describe('rem_count', f.rem_count)} and {describe('sem_count', f.sem_count)}"
        sentences = [count[0].upper() + count[1:] + "."]
        for name in kind.kinds:
            found = [e for e in events if e["kind"] == name]
            if found:
                times = ", ".join(_event_phrase(e) for e in found)
                sentences.append(f"{_EVENT_NAMES[name]} at {times} from the epoch start.")
        if key == "slow_waves" and f.slow_wave_fraction is not None:
            sentences.append(_swf_sentence(f))
        text = " ".join(sentences)
        if not events:
            return text, None
        path = self.out_dir / f"epoch_{state.index:05d}_{key}.png"
        self._mark(state.image, events).save(path)
        return text, path

    def _mark(self, image, events: list[dict]):
        """A copy of ``image`` with a box around each event on its channel's strip."""
        from PIL import ImageDraw

        from engine.raster.layout import strip_rows

        marked = image.copy()
        draw = ImageDraw.Draw(marked)
        first, last = strip_rows(self.spec.height, self.spec.channels)
        labels = [c.label for c in self.source.channels]
        span = self.spec.epochs_per_image * self.source.epoch_length
        offset = self.spec.context * self.source.epoch_length
        line = max(1, round(self.spec.width / 224))
        for event in events:
            rows = [labels.index(p) for p in str(event["channel"]).split("/") if p in labels]
            x0 = int(np.floor((offset + event["start"]) / span * self.spec.width))
            x1 = int(np.ceil((offset + event["end"]) / span * self.spec.width))
            x1 = min(max(x1, x0 + 1), self.spec.width - 1)
            for row in rows:
                box = [x0, int(first[row]), x1, int(last[row])]
                draw.rectangle(box, outline=_MARK_COLOUR, width=line)
        return marked

    def _generate(self, image) -> str:
        """The model's greedy answer to the training question."""
        import torch

        from .data import build_messages

        messages = build_messages({}, question=self.question)
        prompt = self.processor.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        device = next(self.model.parameters()).device
        inputs = self.processor(images=[image], text=[prompt], return_tensors="pt").to(device)
        with torch.no_grad():
            output = self.model.generate(
                **inputs, do_sample=False, max_new_tokens=self.max_new_tokens
            )
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)[0].strip()


def _event_phrase(event: dict) -> str:
    text = f"{event['start']:.1f}-{event['end']:.1f} s"
    if event.get("peak_freq"):
        return f"{text} ({event['peak_freq']:.1f} Hz, {event['amplitude']:.0f} uV)"
    return f"{text} ({event['amplitude']:.0f} uV)"


def _swf_sentence(f) -> str:
    phrase = _swf_phrase(f)
    return phrase[0].upper() + phrase[1:] + "."


def format_answer(answer: Answer) -> str:
    """The answer as printed by ``ask`` and ``chat``."""
    lines = [answer.text, f"image: {answer.image_path}"]
    if answer.marked_image_path is not None:
        lines.append(f"marked: {answer.marked_image_path}")
    lines.append(f"claims checked: {answer.claims_checked}, flagged: {len(answer.claims_flagged)}")
    return "\n".join(lines)


def chat_loop(chat: EpochChat, stdin: IO[str], stdout: IO[str]) -> int:
    """Read questions and ``:commands`` from ``stdin`` until ``:quit`` or end of input.

    The ``epoch N>`` prompt is shown only when ``stdin`` is a terminal.
    """

    def say(text: str) -> None:
        stdout.write(text + "\n")

    interactive = stdin.isatty()
    say(chat.header())
    say("(:help for questions and commands)")
    while True:
        if interactive:
            stdout.write(f"epoch {chat.epoch}> ")
            stdout.flush()
        line = stdin.readline()
        if not line:
            if interactive:
                stdout.write("\n")
            return 0
        line = line.strip()
        if not line:
            continue
        if not line.startswith(":"):
            try:
                say(format_answer(chat.ask(line)))
            except PSGError as err:
                say(f"error: {err}")
            continue
        command, _, argument = line[1:].partition(" ")
        command = command.lower()
        if command in ("quit", "q", "exit"):
            return 0
        if command == "help":
            say(HELP)
            continue
        try:
            if command == "next":
                chat.next()
            elif command == "prev":
                chat.prev()
            elif command == "goto" and re.fullmatch(r"-?\d+", argument.strip()):
                chat.goto(int(argument))
            elif command == "goto":
                say("usage: :goto N")
                continue
            else:
                say(f"unknown command :{command}; :help lists the commands")
                continue
        except PSGError as err:
            say(f"error: {err}")
            continue
        say(chat.header())


def add_arguments(parser: argparse.ArgumentParser, command: str = "ask") -> None:
    """Options of ``psgvlm ask`` (one question) and ``psgvlm chat`` (interactive)."""
    from .stage import add_ensemble_argument, add_model_arguments

    if command not in ("ask", "chat"):
        raise ValueError(f"command must be 'ask' or 'chat', got {command!r}")
    parser.add_argument("recording", type=Path, help="EDF/EDF+ recording")
    if command == "ask":
        parser.add_argument("question", help='e.g. "why not N3?"')
        parser.add_argument("--epoch", type=int, required=True, help="epoch number (0-based)")
        parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    else:
        parser.add_argument("--epoch", type=int, default=0, help="first epoch (default 0)")
    add_model_arguments(parser)
    add_ensemble_argument(parser)
    parser.add_argument("--out", type=Path, default=Path("."), help="where epoch images go")
    parser.add_argument(
        "--generate", choices=("auto", "on", "off"), default="auto",
        help="model's own explanation: auto = when trained in evidence mode",
    )  # fmt: skip
    parser.add_argument("--max-new-tokens", type=int, default=96, help="generation length limit")


def run(args: argparse.Namespace) -> int:
    """``psgvlm ask`` / ``psgvlm chat``."""
    from .stage import ensemble_members, find_render_setup, load_model, open_source, read_grid

    config = find_render_setup(args.adapter, args.render_config)
    source = open_source(
        args.recording, config, read_grid(args.hypnogram, args.recording), args.montage
    )
    first, *others = ensemble_members(args, config)
    model, processor = load_model(args, first)
    chat = EpochChat(
        source, model, processor, config, args.out,
        generate={"auto": None, "on": True, "off": False}[args.generate],
        max_new_tokens=args.max_new_tokens, epoch=args.epoch,
        members=[load_model(args, adapter) for adapter in others],
    )  # fmt: skip
    if getattr(args, "command", "ask") == "chat":
        return chat_loop(chat, sys.stdin, sys.stdout)
    answer = chat.ask(args.question)
    print(json.dumps(answer.to_dict(), indent=1) if args.json else format_answer(answer))
    return 0
