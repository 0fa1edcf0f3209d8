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
them; :func:`vlm.runtime.default_stagers` builds a stager for each and
:func:`vlm.runtime.pick_stager` gives each recording the one whose montage it fills with
the most channels (EEG+EOG+EMG before EEG-only), passing over one that would draw a
channel too slow for its band (a 1-Hz chin-EMG envelope).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEFAULT_MODELS_DIR", "default_model_dirs"]

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
