"""Exceptions raised by psgvlm's engine.

Library code raises these; the command line turns them into one clear line and a
non-zero exit status, without a traceback.
"""

from __future__ import annotations

__all__ = [
    "PSGError",
    "EDFError",
    "ChannelNotFoundError",
    "HypnogramError",
    "UnknownStageError",
    "MontageError",
    "RenderError",
    "ShardError",
    "ModelError",
    "DatasetError",
    "FeatureError",
]


class PSGError(Exception):
    """Base class of every error psgvlm raises on bad input."""


class EDFError(PSGError):
    """An EDF/EDF+ file that cannot be read (missing, empty, truncated, off-spec header)."""


class MontageError(PSGError):
    """A montage specification that cannot be parsed."""


class ChannelNotFoundError(MontageError):
    """A montage channel that no alias matches in the recording."""


class HypnogramError(PSGError):
    """A hypnogram file that cannot be read or does not fit its recording."""


class UnknownStageError(HypnogramError):
    """Stage labels that the stage mapping does not know."""


class RenderError(PSGError):
    """Invalid rendering parameters or inputs."""


class ShardError(PSGError):
    """A shard directory that is missing, inconsistent or cannot be written."""


class ModelError(PSGError):
    """A model, processor or adapter that cannot be loaded or used."""


class FeatureError(PSGError):
    """Signals or parameters that evidence features cannot be computed from."""


class DatasetError(PSGError):
    """An input or dataset specification that does not resolve to recording pairs."""
