"""One recording under review: opened, staged in steps, corrected.

A :class:`Night` goes ``waiting`` → ``opening`` → ``staging`` → ``ready``, or ``error``
with the reason in :attr:`Night.error` (a file the reader refuses, a recording without
the channels the model reads, a model that fails). The server's worker thread
(:class:`vlm.serve.library.Library`) calls :meth:`Night.step` to do the next piece of
work, so requests never wait for a whole night.

Recordings come from what the user named (:func:`find_inputs`): EDF/BDF files, folders
(paired with their hypnograms as ``psgvlm render`` pairs them, unscored ones kept) and
``prerau:DIR``. When a recording has a hypnogram, its epochs are the grid the model
stages (as ``psgvlm stage --hypnogram`` does) and its stages are the reference.

Files under ``OUT/<id>/``: ``edits.jsonl`` (:class:`vlm.serve.edits.EditLog`),
``staging.npz`` (the model's probabilities, reused after a restart when the recording,
model and render setup are the same), ``chat/`` (images the answers refer to) and the
exported ``<name>-edited.csv`` / ``.edf``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.errors import DatasetError, PSGError
from engine.stages import STAGE_NAMES, Stage

from .edits import EditLog

if TYPE_CHECKING:
    from vlm.runtime import Stager

__all__ = ["Entry", "Night", "find_inputs", "STATUSES"]

logger = logging.getLogger(__name__)

#: What a night's ``status`` can be.
STATUSES = ("waiting", "opening", "staging", "ready", "error")

_PRERAU = "prerau:"


@dataclass(frozen=True)
class Entry:
    """One recording the server was given.

    Attributes
    ----------
    rid : str
        Its id in URLs (letters, digits, ``.``, ``_``, ``-``): the only way a request
        names a recording, never a path.
    name : str
        Shown in the page.
    spec : str
        The file path or ``prerau:DIR``.
    hypnogram : Path or None
        The scorer's hypnogram (the reference and the grid).
    """

    rid: str
    name: str
    spec: str
    hypnogram: Path | None = None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "recording"


def find_inputs(inputs: list[str], hypnogram: str | os.PathLike | None = None) -> list[Entry]:
    """The recordings named by ``psgvlm serve`` arguments, each with a unique id.

    Folders and globs take every EDF/BDF file in them, with its hypnogram when one is
    found (the rules of :func:`engine.io.datasets.find_pairs`) and without one otherwise.
    Files are not read here: one that cannot be read shows its reason in the page.

    Raises
    ------
    DatasetError
        When an input names nothing that exists, or ``hypnogram`` comes with other than
        one recording file.
    """
    from engine.io.datasets import find_pairs

    if not inputs:
        raise DatasetError("no recordings given")
    if hypnogram is not None and len(inputs) != 1:
        raise DatasetError("--hypnogram pairs with exactly one recording file")
    found: list[tuple[str, str, Path | None]] = []
    for spec in inputs:
        if spec.startswith(_PRERAU) and not os.path.exists(spec):
            found.append((f"prerau-{Path(spec[len(_PRERAU) :]).name}", spec, None))
            continue
        if hypnogram is not None:
            pairs = find_pairs(spec, hypnogram=hypnogram)
        else:
            scored = {p.psg_path: p for p in find_pairs(spec, unpaired=[])}
            pairs = [scored.get(p.psg_path, p) for p in find_pairs(spec, unscored=True)]
        found += [(p.recording, str(p.psg_path), p.hypnogram_path) for p in pairs]
    entries: list[Entry] = []
    seen: set[str] = set()
    specs: set[str] = set()
    for name, spec, hyp in found:
        key = os.path.realpath(spec) if os.path.exists(spec) else spec
        if key in specs:
            continue
        specs.add(key)
        rid, n = _slug(name), 2
        while rid in seen:
            rid, n = f"{_slug(name)}-{n}", n + 1
        seen.add(rid)
        entries.append(Entry(rid, name, spec, Path(hyp) if hyp else None))
    return entries


def _message(err: BaseException, spec: str = "") -> str:
    """The error's text, without the path the reader puts in front of it."""
    text = str(err) if isinstance(err, (PSGError, OSError)) else f"{type(err).__name__}: {err}"
    for prefix in (f"{spec}: ", f"{Path(spec).name}: ") if spec else ():
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


class Night:
    """One recording under review (see the module docstring).

    Parameters
    ----------
    entry : Entry
    stagers : sequence of vlm.runtime.Stager
        The model: the only one, or (the shipped defaults) the one whose montage the
        recording fills with the most channels, picked when it is opened (:attr:`stager`).
    out_dir : Path
        ``OUT/<id>``.
    model_lock : threading.Lock
        Held around every model call (one model, many requests and the stager thread).
    chunk : int
        Epochs staged per step (small steps let questions in between).
    batch_size : int
        Epochs per forward pass.
    """

    def __init__(self, entry: Entry, stagers: Sequence[Stager], out_dir: Path, model_lock,
                 chunk: int = 16, batch_size: int = 8) -> None:  # fmt: skip
        self.entry = entry
        self.stagers = list(stagers)
        self.stager: Stager | None = None  # set when opened
        self.out = Path(out_dir)
        self.model_lock = model_lock
        self.chunk = max(1, int(chunk))
        self.batch_size = max(1, int(batch_size))
        self.lock = threading.RLock()
        self.status = "waiting"
        self.error: str | None = None
        self.source = None
        self.probabilities: np.ndarray | None = None  # (n, 5), NaN rows not staged yet
        self.reference: np.ndarray | None = None
        self.edits: EditLog | None = None
        self._chat = None

    # -- state -------------------------------------------------------------------------
    @property
    def rid(self) -> str:
        return self.entry.rid

    @property
    def opened(self) -> bool:
        return self.source is not None

    def __len__(self) -> int:
        return len(self.source) if self.source is not None else 0

    @property
    def staged(self) -> np.ndarray:
        """Which epochs have the model's probabilities."""
        if self.probabilities is None:
            return np.zeros(0, dtype=bool)
        return np.isfinite(self.probabilities[:, 0])

    def pending(self) -> bool:
        """Whether :meth:`step` has work left."""
        return self.status in ("waiting", "staging")

    def model_stages(self) -> np.ndarray:
        """The model's stage per epoch (UNK where not staged yet)."""
        out = np.full(len(self), int(Stage.UNK), dtype=np.int8)
        if self.probabilities is not None:
            done = self.staged
            out[done] = np.argmax(self.probabilities[done], axis=1)
        return out

    def stages(self) -> np.ndarray:
        """The reviewed hypnogram: corrections over the model's stages (UNK: neither)."""
        out = self.model_stages()
        if self.edits is not None:
            for epoch, name in self.edits.stages.copy().items():
                out[epoch] = STAGE_NAMES.index(name)
        return out

    # -- work --------------------------------------------------------------------------
    def step(self) -> None:
        """Open the recording, or stage its next chunk of epochs."""
        try:
            if self.status == "waiting":
                self._open()
            elif self.status == "staging":
                self._stage_chunk()
        except Exception as err:  # noqa: BLE001 - any failure is this night's, not the server's
            known = isinstance(err, (PSGError, OSError))
            logger.warning("%s: %s", self.entry.spec, _message(err), exc_info=not known)
            with self.lock:
                what = "cannot stage it" if self.opened else "cannot open it"
                self.error = f"{self.entry.spec}: {what}: {_message(err, self.entry.spec)}"
                self.status = "error"

    def _open(self) -> None:
        from vlm.defaults import stager_for
        from vlm.sources import open_recording

        with self.lock:
            self.status = "opening"
        spec = self.entry.spec
        recording = None  # prerau:DIR is read in memory, rows it lacks drawn empty
        if not (spec.startswith(_PRERAU) and not os.path.exists(spec)):
            if not Path(spec).is_file():
                raise DatasetError(f"{spec}: no such file")
            recording = open_recording(spec, self.entry.hypnogram)
        stager = self.stagers[0]
        if len(self.stagers) > 1:  # the shipped defaults: the one this recording fills best
            stager = stager_for(self.stagers, spec if recording is None else recording)
        self.stager = stager
        source = stager.open(spec, partial=True) if recording is None else stager.open(recording)
        if len(source) == 0:
            raise DatasetError("no whole epoch in the recording")
        n = len(source)
        stages = np.asarray(source.hypnogram.stages, dtype=np.int8)
        reference = stages if np.any(stages != int(Stage.UNK)) else None
        edits = EditLog(self.out / "edits.jsonl", n)
        probabilities = self._cached(source)
        with self.lock:
            self.source, self.reference, self.edits = source, reference, edits
            self.probabilities = probabilities
            self.status = "ready" if bool(np.all(self.staged)) else "staging"

    def _key(self, source) -> str:
        """What staging depends on: recording, grid, model, adapters, render setup."""
        spec = self.entry.spec
        stat = os.stat(spec) if os.path.isfile(spec) else None
        setup = self.stager.setup
        key = {
            "recording": os.path.realpath(spec) if stat else spec,
            "size": stat.st_size if stat else None,
            "mtime_ns": stat.st_mtime_ns if stat else None,
            "hypnogram": str(self.entry.hypnogram) if self.entry.hypnogram else None,
            "epochs": len(source),
            "model": self.stager.model_id,
            "adapters": [str(a) for a in self.stager.adapters],
            "montage": self.stager.montage,
            "setup": dataclasses.asdict(setup),
        }
        return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()

    def _cached(self, source) -> np.ndarray:
        """Probabilities saved by an earlier run with the same inputs, else all NaN."""
        empty = np.full((len(source), len(STAGE_NAMES)), np.nan)
        path = self.out / "staging.npz"
        if not path.is_file():
            return empty
        try:
            with np.load(path) as saved:
                if str(saved["key"]) == self._key(source) and saved["p"].shape == empty.shape:
                    logger.info("%s: staging reused from %s", self.entry.name, path)
                    return np.asarray(saved["p"], dtype=np.float64)
        except (OSError, KeyError, ValueError) as err:
            logger.warning("%s: ignored (%s)", path, err)
        return empty

    def _stage_chunk(self) -> None:
        positions = np.flatnonzero(~self.staged)[: self.chunk]
        if positions.size:
            with self.model_lock:
                probs = self.stager.probabilities(self.source, positions, self.batch_size)
            with self.lock:
                self.probabilities[positions] = probs
        if bool(np.all(self.staged)):
            self.out.mkdir(parents=True, exist_ok=True)
            tmp = self.out / "staging.tmp.npz"
            np.savez(tmp, p=self.probabilities, key=np.array(self._key(self.source)))
            os.replace(tmp, self.out / "staging.npz")
            with self.lock:
                self.status = "ready"

    # -- per-epoch work (callers check the epoch number) ---------------------------------
    def check_epoch(self, index: int) -> int:
        """``index`` when the recording has that epoch.

        Raises
        ------
        PSGError
            When it has not (the message gives the range).
        """
        if not 0 <= int(index) < len(self):
            raise PSGError(f"no epoch {index}: this recording has epochs 0..{len(self) - 1}")
        return int(index)

    def image(self, index: int):
        """The epoch as the model sees it: ``(uint8 pixels, PIL image)``."""
        pixels = self.stager.pixels(self.source, [self.check_epoch(index)])
        return pixels[0], self.stager.images(pixels)[0]

    @property
    def chat(self):
        """The recording's :class:`vlm.answers.EpochChat` (made on first use)."""
        if self._chat is None:
            from vlm.answers import EpochChat

            self._chat = EpochChat(self.source, self.stager, self.out / "chat")
        return self._chat

    def ask(self, index: int, question: str) -> tuple[Any, Any]:
        """Answer ``question`` about epoch ``index``: ``(Answer, EpochFeatures)``."""
        index = self.check_epoch(index)
        with self.model_lock:
            chat = self.chat
            chat.goto(index)
            return chat.ask(question), chat.features(index)

    def explain(self, index: int, method: str = "occlusion", window_s: float = 3.0):
        """Where the model looked: ``(pixels, Attribution, sentence)``."""
        from vlm.attribution import explain_epoch, where_decision_rested

        index = self.check_epoch(index)
        with self.model_lock:
            pixels, (attribution,) = explain_epoch(
                self.stager, self.source, index, [method], window_s=window_s,
                batch_size=self.batch_size,
            )  # fmt: skip
            features = self.chat.features(index)
        labels = [c.label for c in self.source.channels]
        sentence = where_decision_rested(attribution.grid, features, labels, attribution.edges_s)
        return pixels, attribution, sentence
