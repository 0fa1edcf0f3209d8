"""psgvlm engine: signals to pixels to shards (EDF reading, epochs, rasterizer, encoders,
WebDataset shards, synthetic PSG, evidence features). Never imports torch."""

from .errors import PSGError
from .stages import STAGE_NAMES, Stage, to_stage

__version__ = "0.1.0"

__all__ = ["PSGError", "Stage", "STAGE_NAMES", "to_stage", "__version__"]
