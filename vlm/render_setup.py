"""How a model's training images were drawn, read back to draw new epochs the same way.

A :class:`RenderConfig` holds the montage, preprocessing, :class:`engine.raster.RenderSpec`,
image encoding and answer mode of an adapter's training shards. ``vlm/train.py`` saves it
as ``render.json`` beside every adapter it writes; :func:`find_render_setup` is the one
place that finds it again, in this order:

1. an explicit ``--render-config``: a ``render.json``, a shard directory (its train split,
   else any split), a ``.tar`` shard or a shard glob;
2. ``ADAPTER/render.json`` or ``ADAPTER/../render.json``;
3. the training run's ``config.yaml`` (beside the adapter, or one or two folders up for a
   checkpoint) → ``train_shards`` → the first sample's metadata and ``answer_mode``.

Examples
--------
>>> setup = RenderConfig(
...     channels=[{"role": "eeg", "name": "C4-M1"}],
...     render={"scales_uv": [75.0], "width": 448, "height": 224},
... )
>>> setup.montage, setup.roles, setup.window_seconds
('eeg=C4-M1', ['eeg'], 30.0)
"""

from __future__ import annotations

import dataclasses
import json
import os
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import ModelError, PSGError

__all__ = [
    "RENDER_CONFIG_NAME",
    "RenderConfig",
    "training_config",
    "find_render_setup",
]

#: File name of the render parameters saved next to an adapter.
RENDER_CONFIG_NAME = "render.json"


@dataclass(frozen=True)
class RenderConfig:
    """How the adapter's training images were made, to draw new epochs the same way.

    Attributes
    ----------
    channels : list of dict
        ``{"role", "name"}`` (plus ``label``, ``scale_uv``) per image strip, top to bottom,
        as in the shard metadata; the montage and the prompt's channel phrase come from it.
    render : dict
        :class:`engine.raster.RenderSpec` fields.
    image_format : {"png", "jpg", "npy"}
        Shard image encoding (JPEG artefacts are reproduced).
    quality : int
        JPEG quality.
    preprocessing : dict
        :class:`engine.preprocess.Preprocessing` fields.
    answer_mode : {"label", "evidence"}
        What the assistant learned to answer.
    source : str
        Where the configuration was read from (not saved).
    """

    channels: list[dict[str, Any]]
    render: dict[str, Any]
    image_format: str = "png"
    quality: int = 90
    preprocessing: dict[str, Any] = field(default_factory=dict)
    answer_mode: str = "label"
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        where = f"{self.source}: " if self.source else ""
        if not self.channels or not all(
            isinstance(c, dict) and c.get("role") and c.get("name") for c in self.channels
        ):
            raise ModelError(f"{where}render config needs channels with 'role' and 'name'")
        if self.image_format not in ("png", "jpg", "npy"):
            raise ModelError(f"{where}image format {self.image_format!r}: expected png/jpg/npy")
        if self.answer_mode not in ("label", "evidence"):
            raise ModelError(f"{where}answer mode {self.answer_mode!r}: expected label/evidence")
        spec = self.spec()  # validates the render fields
        if spec.channels != len(self.channels):
            raise ModelError(
                f"{where}render spec has {spec.channels} channel scales for "
                f"{len(self.channels)} channels"
            )

    # -- derived -------------------------------------------------------------------------
    @property
    def montage(self) -> str:
        """Montage spec of the training images, e.g. ``"eeg=C4-M1,eog=E1-M2,emg=chin"``."""
        return ",".join(f"{c['role']}={c['name']}" for c in self.channels)

    @property
    def roles(self) -> list[str]:
        """Channel roles, top to bottom."""
        return [str(c["role"]).lower() for c in self.channels]

    @property
    def window_seconds(self) -> float:
        """Seconds of signal one image shows (the target epoch and its context)."""
        spec = self.spec()
        return spec.epoch_seconds * spec.epochs_per_image

    @property
    def short_epochs_blank(self) -> bool:
        """Whether a scorer epoch shorter than the model's is drawn alone in the middle of
        the model's centre epoch, the rest of it blank: when the training shards drew some
        epochs that way (``psgvlm render --short-epochs``). Otherwise the centre epoch is
        filled with the neighbouring signal (:func:`vlm.sources.model_windows`).

        Examples
        --------
        >>> RenderConfig(channels=[{"role": "eeg", "name": "C4-M1"}],
        ...              render={"scales_uv": [75.0], "short_epochs": 0.3}).short_epochs_blank
        True
        """
        return float(self.render.get("short_epochs") or 0.0) > 0.0

    def spec(self):
        """The :class:`engine.raster.RenderSpec`."""
        from engine.raster import RenderSpec

        names = {f.name for f in dataclasses.fields(RenderSpec)}
        kwargs = {k: v for k, v in self.render.items() if k in names}
        for key in ("scales_uv", "labels"):
            if kwargs.get(key) is not None:
                kwargs[key] = tuple(kwargs[key])
        try:
            return RenderSpec(**kwargs)
        except TypeError as err:
            raise ModelError(f"{self.source or 'render config'}: {err}") from None

    def preprocessing_params(self):
        """The :class:`engine.preprocess.Preprocessing` (defaults where unspecified)."""
        from engine.preprocess import Preprocessing

        params = dict(self.preprocessing)
        if "bands" in params:
            params["bands"] = {
                role: tuple(band) if band is not None else None
                for role, band in params["bands"].items()
            }
        try:
            return Preprocessing(**params)
        except (TypeError, ValueError) as err:
            raise ModelError(f"{self.source or 'render config'}: preprocessing: {err}") from None

    def question(self) -> str:
        """The training question, naming the channels."""
        from .data import build_question

        return build_question({"channels": self.channels})

    def draws_like(self, other: RenderConfig) -> bool:
        """Whether ``other`` draws epochs the same way: rows (role, montage name, µV scale),
        render spec, encoding, preprocessing and answer mode. What one training recording
        happened to supply (its channel's rate, label, the captions it was drawn with)
        does not count: models trained on different nights still draw alike.

        Examples
        --------
        >>> a = RenderConfig(channels=[{"role": "eeg", "name": "C4-M1", "fs": 250.0}],
        ...                  render={"scales_uv": [75.0], "labels": ["C4-M1"]})
        >>> b = RenderConfig(channels=[{"role": "eeg", "name": "C4-M1", "fs": 100.0}],
        ...                  render={"scales_uv": [75.0], "labels": ["Fpz-Cz"]})
        >>> a == b, a.draws_like(b)
        (False, True)
        """

        def key(setup: RenderConfig) -> tuple:
            rows = [(str(c["role"]).lower(), c["name"], c.get("scale_uv")) for c in setup.channels]
            render = {k: v for k, v in setup.render.items() if k != "labels"}
            return (rows, render, setup.image_format, setup.quality, setup.preprocessing,
                    setup.answer_mode)  # fmt: skip

        return key(self) == key(other)

    # -- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON form (without :attr:`source`)."""
        out = dataclasses.asdict(self)
        out.pop("source")
        return out

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``DIRECTORY/render.json`` (e.g. next to a saved adapter)."""
        path = Path(directory) / RENDER_CONFIG_NAME
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> RenderConfig:
        """Inverse of :meth:`to_dict`."""
        names = {f.name for f in dataclasses.fields(cls)} - {"source"}
        unknown = sorted(set(data) - names)
        if unknown or "channels" not in data or "render" not in data:
            raise ModelError(
                f"{source or 'render config'}: expected keys {sorted(names)} "
                f"(channels and render required), got {sorted(data)}"
            )
        return cls(**data, source=source)

    @classmethod
    def from_sample_meta(
        cls, meta: dict[str, Any], answer_mode: str = "label", source: str = ""
    ) -> RenderConfig:
        """From one shard sample's ``json`` metadata (``channels``, ``render``, ...)."""
        render = dict(meta.get("render") or {})
        if "channels" not in meta or "scales_uv" not in render:
            raise ModelError(
                f"{source or 'sample metadata'}: no 'channels' and 'render' fields "
                "(shards not written by psgvlm render?)"
            )
        return cls(
            channels=[dict(c) for c in meta["channels"]],
            render={k: v for k, v in render.items() if k not in ("format", "quality")},
            image_format=str(render.get("format", "png")),
            quality=int(render.get("quality", 90)),
            preprocessing=dict(meta.get("preprocessing") or {}),
            answer_mode=answer_mode,
            source=source,
        )

    @classmethod
    def from_shards(
        cls, shards: str | Sequence[str], answer_mode: str = "label", split: str = "train"
    ) -> RenderConfig:
        """From the first sample of shards (a glob, a directory + split, a list)."""
        from .data import expand_shards

        urls = expand_shards(shards, split)
        for url in urls:
            meta = _first_sample_meta(url)
            if meta is not None:
                return cls.from_sample_meta(meta, answer_mode, source=url)
        raise ModelError(f"{shards}: no sample metadata in {len(urls)} shard(s)")


def _first_sample_meta(url: str) -> dict[str, Any] | None:
    """The ``json`` metadata of a shard's first sample (None when it holds none)."""
    try:
        with tarfile.open(url, "r:") as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    meta = json.loads(tar.extractfile(member).read())
                    return meta if isinstance(meta, dict) else None
    except (OSError, tarfile.TarError, json.JSONDecodeError) as err:
        raise ModelError(f"{url}: cannot read a sample's metadata ({err})") from None
    return None


def _read_json(path: Path) -> RenderConfig:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"{path}: cannot read render config: {err}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: render config must be a JSON object")
    return RenderConfig.from_dict(data, source=str(path))


def _from_shards(text: str) -> RenderConfig:
    path = Path(text)
    if path.is_dir():
        split = "train" if any(path.glob("train-*.tar")) else None
        return RenderConfig.from_shards(
            str(path / "*.tar") if split is None else str(path), split=split
        )
    return RenderConfig.from_shards(text, split=None)


def training_config(adapter: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """The ``config.yaml`` that ``vlm/train.py`` wrote for the run an adapter came from.

    Looked for beside the adapter, then one and two folders up (a checkpoint's adapter);
    None when there is none.
    """
    import yaml

    adapter = Path(adapter)
    for folder in (adapter, adapter.parent, adapter.parent.parent):
        path = folder / "config.yaml"
        if path.is_file():
            try:
                values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            except (OSError, yaml.YAMLError) as err:
                raise ModelError(f"{path}: cannot read the training config ({err})") from None
            if isinstance(values, dict) and "train_shards" in values:
                return path, values
    return None


def find_render_setup(
    adapter: str | os.PathLike | None, explicit: str | os.PathLike | None = None
) -> RenderConfig:
    """The render setup an adapter was trained with (search order in the module docstring).

    Parameters
    ----------
    adapter : path, optional
        LoRA adapter directory (``OUTPUT_DIR/adapter`` of ``vlm/train.py``).
    explicit : path, optional
        ``--render-config``: a ``render.json``, a shard directory, a ``.tar`` or a glob.

    Raises
    ------
    ModelError
        When no source is found or a source is malformed.
    """
    if explicit is not None:
        text = str(explicit)
        path = Path(text)
        if path.suffix == ".json":
            if not path.is_file():
                raise ModelError(f"--render-config {path}: no such file")
            return _read_json(path)
        if path.is_dir() or path.suffix == ".tar" or any(c in text for c in "*?{"):
            try:
                return _from_shards(text)
            except PSGError as err:
                raise ModelError(f"--render-config {text}: {err}") from None
        raise ModelError(
            f"--render-config {text}: expected a {RENDER_CONFIG_NAME}, a shard directory, "
            "a .tar shard or a shard glob"
        )
    if adapter is None:
        raise ModelError(
            "without --adapter, give --render-config (render.json or the training shards)"
        )
    adapter = Path(adapter)
    for candidate in (adapter / RENDER_CONFIG_NAME, adapter.parent / RENDER_CONFIG_NAME):
        if candidate.is_file():
            return _read_json(candidate)
    found = training_config(adapter)
    if found is None:
        raise ModelError(
            f"{adapter}: cannot tell how its training images were drawn: no "
            f"{RENDER_CONFIG_NAME} in it or its parent and no training config.yaml beside it; "
            "pass --render-config (render.json or the training shards)"
        )
    path, values = found
    shards = values["train_shards"]
    try:
        setup = RenderConfig.from_shards(shards, str(values.get("answer_mode", "label")))
    except PSGError as err:
        raise ModelError(
            f"{path}: the training shards {shards!r} cannot give the render parameters ({err}); "
            f"pass --render-config with a {RENDER_CONFIG_NAME} or the shard directory"
        ) from None
    return dataclasses.replace(setup, source=f"{path} -> {setup.source}")
