"""The one inference runtime: a :class:`Stager` turns epochs into stage probabilities.

Every command that uses a trained model (``stage``, ``eval``, ``ask``, ``chat``,
``explain``, the robustness runs, the benchmarks) goes through a :class:`Stager`:

- it resolves the ``--model`` value (:func:`vlm.model.resolve_model_id`: a Hub id, a local
  directory, or ``tiny:FAMILY`` built at the adapter's training image size); without
  ``--model``, the shipped stagers (:func:`vlm.defaults.default_stagers`) stand in, and
  each recording gets the one whose montage it fills with the most channels
  (:func:`vlm.defaults.pick_stager`);
- it reads the adapter's render setup (:func:`vlm.render_setup.find_render_setup`) and
  checks that ensemble members share it;
- it draws epochs exactly as the training shards were drawn (montage, preprocessing,
  :class:`engine.raster.RenderSpec`, image encoding; windows centred on each scorer epoch,
  :func:`vlm.sources.model_windows`);
- it scores the five stage answers (:func:`vlm.scoring.score_candidates`) with one model
  or the mean over an ensemble's members.

Weights load on first use, so commands check every argument and file first::

    stager = Stager.from_adapter("tiny:qwen2vl", "runs/tiny_qwen2vl/adapter")
    source = stager.open("night.edf")                  # fast: no weights yet
    probabilities = stager.probabilities(source)       # loads the model, (n, 5)
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ChannelNotFoundError, ModelError
from engine.montage import DERIVED_ROLES, ResolvedChannel, resolve_montage
from engine.stages import STAGE_NAMES

from .calibration import input_caveat, load_calibration, temperature_scale
from .render_setup import RENDER_CONFIG_NAME, RenderConfig, find_render_setup, training_config
from .sources import Recording, model_windows, open_source

__all__ = [
    "Stager",
    "StagingResult",
]

logger = logging.getLogger(__name__)

#: Epochs drawn per rendering batch (the model runs in ``batch_size`` sub-batches).
_DRAW_CHUNK = 64


@dataclass
class StagingResult:
    """Predicted stage and probabilities of every epoch of a grid.

    Attributes
    ----------
    onsets, durations : ndarray
        Seconds from the recording start.
    stages : ndarray
        int8 predicted stage ids (argmax of ``probabilities``).
    probabilities : ndarray
        ``(n, 5)`` probabilities of W, N1, N2, N3, R.
    grid_stages : ndarray
        The grid hypnogram's own stage ids (all UNK for the 30-s grid).
    epoch_length : float
    start_time : datetime or None
        Clock time of the recording start.
    """

    onsets: np.ndarray
    durations: np.ndarray
    stages: np.ndarray
    probabilities: np.ndarray
    grid_stages: np.ndarray
    epoch_length: float
    start_time: datetime | None = None


class Stager:
    """A base model with one adapter (or an ensemble) and the render setup it was trained on.

    Parameters
    ----------
    model : str
        ``--model``: Hub id, local directory or ``tiny:FAMILY``.
    adapters : sequence of path or None
        LoRA adapters; several make an ensemble (mean of their probabilities); ``[None]``
        is the base model zero-shot.
    setup : RenderConfig or None
        How the training images were drawn (shared by every member); None only to score
        images that come already drawn (shards), with their own prompts.
    device : str, optional
        ``cpu``, ``cuda``, ``cuda:1``; default: CUDA when available.
    quantization : {None, "4bit", "8bit"}
    name : str
        Short name for reports.
    montage : str, optional
        Other derivations for the setup's rows (same roles, same order); the prompt still
        names the training montage, as the model learned it.
    """

    def __init__(
        self,
        model: str,
        adapters: Sequence[str | os.PathLike | None],
        setup: RenderConfig | None,
        device: str | None = None,
        quantization: str | None = None,
        name: str = "",
        montage: str | None = None,
    ) -> None:
        if not adapters:
            raise ModelError("a stager needs at least one member (an adapter or None)")
        self.model_id = str(model)
        self.adapters = [Path(a) if a is not None else None for a in adapters]
        self.setup = setup
        self.device = device
        self.quantization = quantization
        self.montage = montage
        self.name = name or (str(self.adapters[0]) if self.adapters[0] else "zero-shot")
        self._members: list[tuple[Any, Any]] | None = None
        #: Each member's calibration temperature (``calibration.json`` beside its adapter).
        self.temperatures = [
            float((load_calibration(a) or {}).get("temperature", 1.0)) for a in self.adapters
        ]

    @classmethod
    def from_adapter(
        cls,
        model: str,
        adapter: str | os.PathLike | None = None,
        ensemble: Sequence[str | os.PathLike] = (),
        render_config: str | os.PathLike | None = None,
        device: str | None = None,
        quantization: str | None = None,
        montage: str | None = None,
    ) -> Stager:
        """A stager for ``adapter`` (+ ``ensemble`` members), without loading weights.

        Parameters
        ----------
        render_config : path, optional
            ``--render-config``: a ``render.json`` or the training shards (default: found
            from the adapter).
        montage : str, optional
            Other derivations for the setup's rows (same roles, same order).

        Raises
        ------
        ModelError
            When the render setup cannot be found, an ensemble member was drawn
            differently, or ``--ensemble`` comes without ``--adapter``.
        """
        from .model import resolve_model_id
        from .sources import training_montage
        from .tiny import TINY_PREFIX

        if adapter is not None and not Path(adapter).is_dir():
            raise ModelError(f"--adapter {adapter}: no such adapter directory")
        if adapter is not None and not (Path(adapter) / "adapter_config.json").is_file():
            raise ModelError(f"--adapter {adapter}: not a LoRA adapter (no adapter_config.json)")
        setup = find_render_setup(adapter, render_config)
        if ensemble and adapter is None:
            raise ModelError("--ensemble needs --adapter (the first member)")
        for member in ensemble:
            if not Path(member).is_dir():
                raise ModelError(f"--ensemble {member}: no such adapter directory")
            if not find_render_setup(member, render_config).draws_like(setup):
                raise ModelError(
                    f"--ensemble {member}: its training images were drawn differently from "
                    f"{adapter}'s ({RENDER_CONFIG_NAME} differs); members must share one setup"
                )

        if montage:
            training_montage(setup, montage)  # checked now, before any work
        if not str(model).startswith(TINY_PREFIX):
            resolve_model_id(model)  # a missing directory or an unreachable Hub, at once
        return cls(model, [adapter, *ensemble], setup, device, quantization, montage=montage)

    # -- what it reads -----------------------------------------------------------------
    @property
    def montage_spec(self) -> str:
        """The montage epochs are read with (``--montage``, else the training montage)."""
        return self.montage or self.setup.montage

    @property
    def roles(self) -> list[str]:
        """Image rows, top to bottom (``["eeg", "eog", "emg"]``)."""
        return self.setup.roles

    @property
    def image_size(self) -> tuple[int, int] | None:
        """``(width, height)`` the base model was trained at (builds ``tiny:`` models)."""
        adapter = self.adapters[0]
        found = training_config(adapter) if adapter is not None else None
        if found is not None and found[1].get("image_size"):
            from .tiny import parse_image_size

            return parse_image_size(str(found[1]["image_size"]))
        if self.setup is None:
            return None
        spec = self.setup.spec()
        return spec.width, spec.height

    def resolve(self, labels: Sequence[str]) -> list[ResolvedChannel] | None:
        """The recording's channel for each row (:func:`engine.montage.resolve_montage`), or
        None when a recording with these channel labels cannot fill every row."""
        try:
            return resolve_montage(self.montage_spec, list(labels))
        except ChannelNotFoundError:
            return None

    def envelope_rows(
        self, channels: Sequence[ResolvedChannel], rates: Mapping[str, float]
    ) -> list[str]:
        """The rows that the resolved ``channels`` fill only with a channel too slow for their
        band (Sleep-EDF's 1-Hz chin-EMG envelope), drawn as an envelope: ``"emg 'EMG
        submental' at 1 Hz"``. Channels without a rate in ``rates`` count as fast enough.
        """
        from engine.preprocess import plan_filters

        params = self.setup.preprocessing_params() if self.setup is not None else None
        return [
            f"{c.role} {c.label!r} at {rates[c.label]:g} Hz"
            for c in channels
            if c.role not in DERIVED_ROLES and c.label in rates
            and plan_filters(c.role, rates[c.label], params).too_slow
        ]  # fmt: skip

    def open(
        self,
        recording: str | os.PathLike | Recording,
        hypnogram: Any = None,
        partial: bool = False,
    ):
        """The recording's epochs drawn for this stager (:func:`vlm.sources.open_source`).

        Returns the :class:`engine.epochs.EpochSource` only; see :func:`open_source` for
        the extra detection signals of ``yasa:DIR``.
        """
        if isinstance(recording, Recording):
            return recording.epochs(self.setup, self.montage)
        return open_source(recording, self.setup, hypnogram, self.montage, partial)[0]

    # -- the model -----------------------------------------------------------------------
    def load(self) -> list[tuple[Any, Any]]:
        """``(model, processor)`` of every member, loaded once."""
        if self._members is None:
            import torch

            from .model import load_model_and_processor

            device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
            members = []
            for adapter in self.adapters:
                logger.info("loading %s%s", self.model_id, f" + {adapter}" if adapter else "")
                model, processor, _ = load_model_and_processor(
                    self.model_id,
                    image_size=self.image_size,
                    adapter=adapter,
                    quantization=self.quantization,
                    device=device,
                )
                members.append((model, processor))
            self._members = members
        return self._members

    @property
    def model(self):
        """The first member's model (generation and attribution use it)."""
        return self.load()[0][0]

    @property
    def processor(self):
        """The first member's processor."""
        return self.load()[0][1]

    # -- drawing and scoring -------------------------------------------------------------
    def spec(self, source):
        """The training :class:`engine.raster.RenderSpec`, captions naming what ``source``
        draws (``CZ-A1`` where the training images read ``C4-M1``): a scorer reading the
        image is never misled about the derivation."""
        spec = self.setup.spec()
        if spec.labels is None:
            return spec
        return dataclasses.replace(spec, labels=tuple(source.drawn_labels))

    def pixels(self, source, positions: Sequence[int] | np.ndarray) -> np.ndarray:
        """uint8 images of the windows centred on grid epochs ``positions``."""
        from engine.raster import render

        epoch_s = self.setup.spec().epoch_seconds if self.setup.short_epochs_blank else None
        windows = model_windows(source, np.asarray(positions, dtype=np.int64),
                                self.setup.window_seconds, epoch_s)  # fmt: skip
        return render(windows, self.spec(source))

    def images(self, pixels: np.ndarray) -> list:
        """Rendered pixels as the RGB images training decoded from its shards."""
        from .data import images_as_trained

        return images_as_trained(pixels, self.setup.image_format, self.setup.quality)

    def score(
        self, images: Sequence, batch_size: int = 8, prompts: Sequence[str] | None = None
    ) -> np.ndarray:
        """Stage probabilities ``(len(images), 5)``: the members' mean, each member's
        scaled by its calibration temperature (:attr:`temperatures`).

        ``prompts`` default to the training question of the setup (naming its channels).
        """
        from .scoring import score_candidates

        prompts = list(prompts) if prompts is not None else [self.setup.question()] * len(images)
        return np.mean(
            [
                temperature_scale(
                    score_candidates(model, processor, images, prompts, STAGE_NAMES, batch_size),
                    temperature,
                )
                for (model, processor), temperature in zip(self.load(), self.temperatures)
            ],
            axis=0,
        )

    def caveat(self, source) -> str | None:
        """One line when ``source`` looks unlike the training nights, else None
        (:func:`vlm.calibration.input_caveat`)."""
        return input_caveat(source, load_calibration(self.adapters[0]))

    def probabilities(
        self,
        source,
        positions: Sequence[int] | np.ndarray | None = None,
        batch_size: int = 8,
        progress: bool = False,
    ) -> np.ndarray:
        """Stage probabilities ``(n, 5)`` of grid epochs (default: all, unscored included).

        Raises
        ------
        ModelError
            When ``batch_size`` is below 1.
        """
        from tqdm import tqdm

        if batch_size < 1:
            raise ModelError(f"--batch-size must be at least 1, got {batch_size}")
        positions = np.arange(len(source)) if positions is None else np.asarray(positions)
        self.load()
        out = np.zeros((positions.size, len(STAGE_NAMES)))
        with tqdm(total=positions.size, desc="stage", unit="epoch", disable=not progress) as bar:
            for lo in range(0, positions.size, _DRAW_CHUNK):
                chunk = positions[lo : lo + _DRAW_CHUNK]
                out[lo : lo + chunk.size] = self.score(
                    self.images(self.pixels(source, chunk)), batch_size
                )
                bar.update(chunk.size)
        return out

    def stage(self, source, batch_size: int = 8, progress: bool = False) -> StagingResult:
        """Every grid epoch of ``source`` staged."""
        probabilities = self.probabilities(source, None, batch_size, progress)
        hypnogram = source.hypnogram
        return StagingResult(
            onsets=np.asarray(hypnogram.onsets, dtype=float),
            durations=np.asarray(hypnogram.durations, dtype=float),
            stages=probabilities.argmax(axis=1).astype(np.int8),
            probabilities=probabilities,
            grid_stages=np.asarray(hypnogram.stages, dtype=np.int8),
            epoch_length=float(source.epoch_length),
            start_time=source.start_time,
        )
