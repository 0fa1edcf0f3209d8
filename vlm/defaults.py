"""The stagers shipped with psgvlm, used when ``--model`` and ``--adapter`` are omitted.

Each folder of ``vlm/default_models/`` holds one complete model, trained only on synthetic
nights by ``scripts/train_default_stager.sh``:

- ``base/``: the tiny Qwen2-VL's own weights (safetensors), tokenizer and processor, so
  the model does not depend on torch's random generator of the installed version;
- ``adapter/``: the LoRA adapter, its ``render.json`` (how epochs are drawn) and
  ``calibration.json`` (temperature and training input range, :mod:`vlm.calibration`);
- ``MODEL_CARD.md``: training data, budget, development figures beside YASA, limits.

Two are shipped: ``eeg_only`` (one central EEG, drawn as itself and as its fast band) and
``eeg_eog_emg`` (the same plus an EOG and the chin EMG). :func:`default_model_dirs` lists
them; :func:`default_stagers` builds a :class:`vlm.runtime.Stager` for each and
:func:`pick_stager` gives each recording the one whose montage it fills with
the most channels (EEG+EOG+EMG before EEG-only), passing over one that would draw a
channel too slow for its band (a 1-Hz chin-EMG envelope).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from engine.errors import ChannelNotFoundError, ModelError, MontageError
from engine.montage import DERIVED_ROLES

from .runtime import Stager
from .sources import Recording

__all__ = [
    "DEFAULT_MODELS_DIR",
    "default_model_dirs",
    "default_stagers",
    "default_stager",
    "pick_stager",
    "stager_for",
]

logger = logging.getLogger(__name__)

#: Where the shipped models live (package data).
DEFAULT_MODELS_DIR = Path(__file__).resolve().parent / "default_models"


def default_model_dirs(root: str | Path | None = None) -> list[Path]:
    """Folders holding a shipped model (``base/config.json`` and ``adapter/``), sorted.

    Examples
    --------
    >>> [p.name for p in default_model_dirs("nowhere")]
    []
    """
    folder = Path(root) if root is not None else DEFAULT_MODELS_DIR
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if (p / "base" / "config.json").is_file()
        and (p / "adapter" / "adapter_config.json").is_file()
    )


def default_stagers(
    device: str | None = None, quantization: str | None = None, montage: str | None = None
) -> list[Stager]:
    """A :class:`Stager` for each shipped model (:mod:`vlm.defaults`), named ``default model
    NAME``, without loading weights; :func:`pick_stager` chooses one per recording.

    Parameters
    ----------
    device, quantization : str, optional
        As for :meth:`Stager.from_adapter`.
    montage : str, optional
        Other derivations for the rows; only the models with the montage's rows are kept.

    Raises
    ------
    ModelError
        When no default model is installed.
    MontageError
        When ``montage`` has the rows of no shipped model.
    """
    folders = default_model_dirs()
    if not folders:
        raise ModelError("no default model installed (vlm/default_models); pass --model")
    stagers, refusals = [], []
    for folder in folders:
        try:
            stager = Stager.from_adapter(str(folder / "base"), folder / "adapter", device=device,
                                         quantization=quantization, montage=montage)  # fmt: skip
        except MontageError as err:
            refusals.append(f"default model {folder.name}: {err}")
            continue
        stager.name = f"default model {folder.name}"
        stagers.append(stager)
    if not stagers:
        raise MontageError("; ".join(refusals))
    return stagers


def default_stager(recording: Any, device: str | None = None) -> Stager:
    """The shipped stager whose montage ``recording`` fills with the most channels (a path,
    ``prerau:DIR``... or a :class:`~vlm.sources.Recording`).

    Raises
    ------
    ModelError
        When no default model is installed.
    ChannelNotFoundError
        When the recording has no usable channel (the message lists the channels found).
    """
    return stager_for(default_stagers(device), recording)


def stager_for(stagers: Sequence[Stager], recording: Any) -> Stager:
    """:func:`pick_stager` for a recording (a path, ``prerau:DIR``... or a
    :class:`~vlm.sources.Recording`, whose channel labels it reads)."""
    from .sources import open_recording

    rec = recording if isinstance(recording, Recording) else open_recording(recording)
    return pick_stager(stagers, rec.labels, str(rec), rec.rates)


def pick_stager(
    stagers: Sequence[Stager],
    labels: Sequence[str],
    where: str = "",
    rates: Mapping[str, float] | None = None,
) -> Stager:
    """The stager whose montage a recording fills, preferring the one that reads the most
    channels (derived rows, such as the EEG's fast band, read none of their own).

    With ``rates`` (label -> Hz), a stager that would draw a row from a channel too slow
    for its band (:meth:`Stager.envelope_rows`: Sleep-EDF's 1-Hz chin-EMG envelope under
    an EEG+EOG+EMG model) is passed over for one that needs no such row, when there is
    one. Ties go to the stager listed first.

    Raises
    ------
    ChannelNotFoundError
        When no stager's montage can be filled (the message lists the channels found).
    """
    resolved = {id(s): s.resolve(labels) for s in stagers}
    fitting = [s for s in stagers if resolved[id(s)] is not None]
    if not fitting:
        wanted = "; ".join(f"{s.name}: {s.montage_spec}" for s in stagers)
        hint = (
            "--montage names channels the recording lacks: name some of those found"
            if all(s.montage for s in stagers)
            else "--montage can name other derivations for the same rows"
        )
        raise ChannelNotFoundError(
            f"{where or 'recording'}: no model's montage can be filled from its channels "
            f"{list(labels)}; models: {wanted} ({hint})"
        )
    slow = {id(s): s.envelope_rows(resolved[id(s)], rates) for s in fitting} if rates else {}
    if any(slow.values()) and not all(slow.values()):  # some would draw an envelope, not all
        for stager in (s for s in fitting if slow[id(s)]):
            logger.info("%s: %s passed over: it would draw %s as an envelope",
                        where or "recording", stager.name, ", ".join(slow[id(stager)]))  # fmt: skip
        fitting = [s for s in fitting if not slow[id(s)]]

    def recorded_rows(stager: Stager) -> int:  # a derived row reads no channel of its own
        return sum(role not in DERIVED_ROLES for role in stager.roles)

    return max(fitting, key=lambda s: (recorded_rows(s), -stagers.index(s)))
