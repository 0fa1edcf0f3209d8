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
  (:func:`vlm.attribution.where_decision_rested`).

A model trained with ``answer_mode: evidence`` also answers in its own words (greedy
generation). Every text, templated or generated, goes through
:func:`engine.features.check_claims` before it is shown: contradicted claims are marked
``[not supported by the signal: ...]``. The epoch image the model saw is saved as
``OUT/epoch_{N:05d}.png``.

With an ensemble the stage probabilities are the mean over its members (as in
``psgvlm stage --ensemble``); "where did you look?" and generated explanations use the
first member. The commands are ``psgvlm ask`` and ``psgvlm chat``
(:mod:`vlm.commands.ask`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import PSGError
from engine.stages import STAGE_NAMES, Stage, stage_name, to_stage

from .criteria import (
    criteria,
    criteria_text,
    swf_sentence,
)

__all__ = ["HELP", "Answer", "EpochChat"]

logger = logging.getLogger(__name__)

HELP = """\
Ask about the current epoch, for example:
  what stage is this?        why N2?            why not N3?       could it be REM?
  show the spindles          show the K-complexes / slow waves / eye movements
  how confident are you?     where did you look?
Commands: next  prev  epoch N (go to epoch N)  help  quit   (or :next :prev :goto N :quit)"""

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


def _parse_stage(word: str) -> Stage:
    key = re.sub(r"\s+", " ", word.strip().lower())
    if key in _STAGE_WORDS:
        return _STAGE_WORDS[key]
    key = re.sub(r"^stage\s*", "stage ", key).replace("stage rem", "rem")
    key = re.sub(r"^nrem\s*", "nrem", key)
    return to_stage(key)


# -- measured phrases (every number equals a feature; check_claims reads them as true) ----


class EpochChat:
    """Answers questions about the epochs of one recording.

    Parameters
    ----------
    source : engine.epochs.EpochSource
        The recording on its epoch grid (:meth:`vlm.runtime.Stager.open`).
    stager : vlm.runtime.Stager
        The model (or ensemble: stage probabilities are the members' mean; occlusion maps
        and generated text use the first member) and how its training images were drawn.
    out_dir : path
        Where epoch images are saved.
    generate : bool, optional
        Also let the model explain in its own words; default: when it was trained in
        ``evidence`` mode.
    max_new_tokens : int
        Length limit of generated explanations.
    epoch : int
        Starting epoch.
    """

    def __init__(
        self,
        source,
        stager,
        out_dir: str | Path = ".",
        generate: bool | None = None,
        max_new_tokens: int = 96,
        epoch: int = 0,
    ) -> None:
        if len(source) == 0:
            raise PSGError(f"{source}: no epochs")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        self.source = source
        self.stager = stager
        self.config = stager.setup
        self.spec = self.config.spec()
        self.question = self.config.question()
        self.out_dir = Path(out_dir)
        self.generate = (
            self.config.answer_mode == "evidence" if generate is None else bool(generate)
        )
        self.max_new_tokens = int(max_new_tokens)
        self._emg_reference: Any = None
        self._emg_reference_built = False
        self._cache: dict[int, _EpochState] = {}
        self.epoch = 0
        self.goto(epoch)

    @property
    def model(self):
        """The first member's model (loaded on first use)."""
        return self.stager.model

    @property
    def processor(self):
        """The first member's processor."""
        return self.stager.processor

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

        image = self.stager.images(self.stager.pixels(self.source, [index]))[0]
        probs = self.stager.score([image])[0]
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
        checked = criteria(asked, f)
        met = sum(c.met is True for c in checked)
        detail = criteria_text(asked, checked)
        if asked == stage:
            return f"It is {asked_name}. {detail} {met} of {len(checked)} criteria met."
        opening = f"Why not {asked_name}: the model gives it p = {probs[int(asked)]:.2f}."
        if met == len(checked):
            closing = (
                f"The measurements meet every {asked_name} criterion listed; the image still "
                f"looks more like {stage_name(int(stage))} to the model."
            )
        else:
            closing = f"{met} of {len(checked)} {asked_name} criteria met."
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
        checked = criteria(stage, self.features())
        met = sum(c.met is True for c in checked)
        return (
            f"Probabilities: {stage_name(int(stage))} {top:.2f}; {others}. Margin over "
            f"{STAGE_NAMES[order[1]]}: {margin:.2f}, so {level} confidence. The "
            f"measurements meet {met} of {len(checked)} {stage_name(int(stage))} criteria."
        )

    def _where(self, state: _EpochState) -> str:
        """Where the decision rested: occlusion of strip x 3-s windows (vlm.explain)."""
        from .attribution import occlusion_attribution, where_decision_rested

        labels = [c.row_name for c in self.source.channels]
        attribution = occlusion_attribution(self.stager, np.asarray(state.image), channels=labels)
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
            sentences.append(swf_sentence(f))
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
        span = self.config.window_seconds
        offset = (span - self.source.epoch_length) / 2
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
