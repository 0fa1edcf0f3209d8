"""Render parameters and the image layout they imply (strips, µV → pixel maps, background).

Everything here is computed once per :class:`RenderSpec` and handed to the kernels as
small arrays; the kernels never look at the spec itself.

Coordinates: pixel row ``r`` covers the continuous interval ``[r, r + 1)``. Positions
handed to the kernels are fixed-point integers in 1/256 pixel (``FX_ONE``), so that the
CPU and CUDA builds of the kernels do the same integer arithmetic and agree bit for bit.
Channel ``c`` owns rows ``r0[c] .. r1[c]`` (inclusive); ``+scale`` maps to the centre of
row ``r0``, ``-scale`` to the centre of row ``r1`` and ``0`` to the middle of the strip.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import RenderError
from .glyphs import label_bitmap

__all__ = [
    "ROLE_SCALES",
    "DEFAULT_SIZES",
    "parse_size",
    "FX_ONE",
    "RenderSpec",
    "Layout",
    "layout_for",
    "strip_rows",
    "CHANNEL_COLOURS",
    "BAND_GREY",
    "MINOR_GRID_GREY",
    "MAJOR_GRID_GREY",
    "EPOCH_EDGE_GREY",
]

#: Half-range (µV) of a channel's strip by role: ``+scale`` is the strip's top row.
ROLE_SCALES: dict[str, float] = {
    "eeg": 75.0,
    "eog": 150.0,
    "emg": 50.0,
    "ecg": 1000.0,
    "fast": 50.0,  # the EEG's fast band, scaled per recording (engine.normalise)
    "slow": 75.0,  # the EEG's slow band, scaled per recording (engine.normalise)
}

#: Image sizes offered by default (width, height); both sides are multiples of 28.
DEFAULT_SIZES: tuple[tuple[int, int], ...] = ((448, 224), (448, 448))


def parse_size(text: str) -> tuple[int, int]:
    """Parse ``"448x224"`` (width x height) into ``(448, 224)``.

    Raises
    ------
    RenderError
        When the text is not two positive integers joined by ``x``.
    """
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match:
        raise RenderError(f"image size {text!r}: expected WIDTHxHEIGHT, e.g. 448x224")
    width, height = int(match[1]), int(match[2])
    if width <= 0 or height <= 0:
        raise RenderError(f"image size {text!r}: width and height must be positive")
    return width, height


#: One pixel in the kernels' fixed-point unit.
FX_ONE = 256

#: Greys of the background furniture; all are multiples of 17 so that grey images stay
#: on the 16-level palette that encodes as a 4-bit PNG.
BAND_GREY = 238
MINOR_GRID_GREY = 221
MAJOR_GRID_GREY = 187
EPOCH_EDGE_GREY = 119

#: Trace colours (RGB) cycled over channels in colour mode: dark, clinical-display hues.
CHANNEL_COLOURS: tuple[tuple[int, int, int], ...] = (
    (20, 50, 140),
    (0, 105, 55),
    (165, 25, 25),
    (105, 40, 145),
    (130, 75, 10),
    (0, 100, 115),
    (60, 60, 60),
    (150, 0, 95),
)

_MIN_SIZE = 32
_MAX_SIZE = 8192
_MAX_LINE_WIDTH = 16.0
_MIN_GRID_SPACING_PX = 4.0


@dataclass(frozen=True, kw_only=True)
class RenderSpec:
    """How epochs become pixels.

    Parameters
    ----------
    scales_uv : tuple of float
        Half-range in µV of each channel's strip, in montage order; one per channel.
        Fixed for the whole recording, never autoscaled.
    width, height : int
        Image size in pixels, at least 32 × 32 (448 × 224 and 448 × 448 are the defaults
        offered; multiples of 28 suit the VLM patch grid).
    line_width : float
        Trace width in pixels.
    antialias : bool
        Anti-aliased traces (coverage quantised to ``ink_levels`` levels) or aliased ones.
    ink_levels : int
        Number of non-white coverage levels of anti-aliased ink (1-255). Divisors of 15
        (1, 3, 5, 15) keep grey images on 16 grey levels, which encode as 4-bit PNG.
    overlap : bool
        Let traces run into neighbouring strips instead of clipping them to their own.
    grid : bool
        Light vertical lines every second (when at least 4 px apart) and every 5 s.
    labels : tuple of str, optional
        Channel labels drawn at the top left of each strip from pre-rendered glyphs.
    color : bool
        RGB output with one colour per channel instead of grey.
    context : int
        Neighbouring epochs shown on each side; the input then holds ``2 * context + 1``
        epochs of samples and the middle (target) epoch is shaded and bracketed.
    epoch_seconds : float
        Duration of one epoch (for the grid and the target band).

    Examples
    --------
    >>> spec = RenderSpec.for_roles(["eeg", "eog", "emg"], labels=("C4", "E1", "chin"))
    >>> spec.scales_uv
    (75.0, 150.0, 50.0)
    """

    scales_uv: tuple[float, ...]
    width: int = 448
    height: int = 224
    line_width: float = 1.0
    antialias: bool = True
    ink_levels: int = 5
    overlap: bool = False
    grid: bool = False
    labels: tuple[str, ...] | None = None
    color: bool = False
    context: int = 0
    epoch_seconds: float = 30.0

    def __post_init__(self) -> None:
        scales = _as_float_tuple(self.scales_uv, "scales_uv")
        if not scales:
            raise RenderError("RenderSpec.scales_uv needs one scale per channel, got none")
        if any(not math.isfinite(s) or s <= 0 for s in scales):
            raise RenderError(f"RenderSpec.scales_uv must be positive finite µV, got {scales}")
        object.__setattr__(self, "scales_uv", scales)
        for name in ("width", "height"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
                raise RenderError(f"RenderSpec.{name} must be an integer, got {value!r}")
            if not _MIN_SIZE <= value <= _MAX_SIZE:
                raise RenderError(
                    f"RenderSpec.{name} must be between {_MIN_SIZE} and {_MAX_SIZE} px, got {value}"
                )
            object.__setattr__(self, name, int(value))
        if len(scales) > self.height:
            raise RenderError(
                f"{len(scales)} channels do not fit in {self.height} rows (one row each at least)"
            )
        lw = float(self.line_width)
        if not (math.isfinite(lw) and 0 < lw <= _MAX_LINE_WIDTH):
            raise RenderError(
                f"RenderSpec.line_width must be in (0, {_MAX_LINE_WIDTH}] px, got {self.line_width}"
            )
        object.__setattr__(self, "line_width", lw)
        if not isinstance(self.ink_levels, (int, np.integer)) or not 1 <= self.ink_levels <= 255:
            raise RenderError(f"RenderSpec.ink_levels must be 1-255, got {self.ink_levels!r}")
        object.__setattr__(self, "ink_levels", int(self.ink_levels))
        if not isinstance(self.context, (int, np.integer)) or not 0 <= self.context <= 10:
            raise RenderError(f"RenderSpec.context must be an integer 0-10, got {self.context!r}")
        object.__setattr__(self, "context", int(self.context))
        es = float(self.epoch_seconds)
        if not (math.isfinite(es) and es > 0):
            raise RenderError(
                f"RenderSpec.epoch_seconds must be positive, got {self.epoch_seconds}"
            )
        object.__setattr__(self, "epoch_seconds", es)
        for name in ("antialias", "overlap", "grid", "color"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise RenderError(f"RenderSpec.{name} must be True or False")
            object.__setattr__(self, name, bool(getattr(self, name)))
        if self.labels is not None:
            if isinstance(self.labels, str) or not isinstance(self.labels, Sequence):
                raise RenderError(
                    f"RenderSpec.labels must be a sequence of str, got {self.labels!r}"
                )
            labels = tuple(self.labels)
            if len(labels) != len(scales) or not all(isinstance(s, str) for s in labels):
                raise RenderError(
                    f"RenderSpec.labels needs one str per channel ({len(scales)}), got {labels!r}"
                )
            object.__setattr__(self, "labels", labels)

    @classmethod
    def for_roles(cls, roles: Sequence[str], **kwargs: object) -> RenderSpec:
        """Spec whose channel scales come from :data:`ROLE_SCALES`.

        Parameters
        ----------
        roles : sequence of str
            Channel roles in montage order (``"eeg"``, ``"eog"``, ``"emg"``, ``"ecg"``).
        **kwargs
            Any other :class:`RenderSpec` field.

        Raises
        ------
        RenderError
            For a role without a default scale.
        """
        if isinstance(roles, str):
            raise RenderError(f"roles must be a sequence of role names, got the string {roles!r}")
        unknown = [r for r in roles if str(r).lower() not in ROLE_SCALES]
        if unknown:
            raise RenderError(f"no default scale for roles {unknown}; known: {sorted(ROLE_SCALES)}")
        scales = tuple(ROLE_SCALES[str(r).lower()] for r in roles)
        return cls(scales_uv=scales, **kwargs)

    @property
    def channels(self) -> int:
        """Number of channels (strips)."""
        return len(self.scales_uv)

    @property
    def epochs_per_image(self) -> int:
        """Epochs of samples one image holds: ``2 * context + 1``."""
        return 2 * self.context + 1

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of one rendered image: ``(H, W)`` or ``(H, W, 3)``."""
        return (self.height, self.width, 3) if self.color else (self.height, self.width)

    def to_dict(self) -> dict[str, object]:
        """Plain-type description for shard metadata (JSON-serialisable)."""
        out = asdict(self)
        out["scales_uv"] = list(self.scales_uv)
        out["labels"] = None if self.labels is None else list(self.labels)
        return out


def _as_float_tuple(values: object, name: str) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, (Sequence, np.ndarray)):
        raise RenderError(f"RenderSpec.{name} must be a sequence of numbers, got {values!r}")
    try:
        return tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise RenderError(
            f"RenderSpec.{name} must be a sequence of numbers, got {values!r}"
        ) from None


def strip_rows(height: int, channels: int) -> tuple[np.ndarray, np.ndarray]:
    """First and last row (inclusive) of each channel's strip.

    Strip ``c`` covers rows ``floor(c * H / C)`` to ``floor((c + 1) * H / C) - 1``.
    """
    edges = (np.arange(channels + 1, dtype=np.int64) * height) // channels
    return edges[:-1].copy(), edges[1:] - 1


@dataclass(frozen=True)
class Layout:
    """Arrays the kernels read: one entry per channel, plus the background image.

    Attributes
    ----------
    gain : float64 (C,)
        Fixed-point pixels per µV (positive; larger values go up).
    mid_fx : int64 (C,)
        Fixed-point y of 0 µV.
    row_first, row_last : int64 (C,)
        Rows a channel may draw into (its strip, or the whole image with ``overlap``).
    ink : uint8 (C, P)
        Trace colour per channel, ``P`` = 1 (grey) or 3 (RGB).
    half_width_fx : int
        Half the line width in fixed point.
    levels : int
        Coverage levels of the ink (1 when aliased).
    template : uint8 (H, W, P)
        Background: white, target band, grid and labels.
    """

    gain: np.ndarray
    mid_fx: np.ndarray
    row_first: np.ndarray
    row_last: np.ndarray
    ink: np.ndarray
    half_width_fx: int
    levels: int
    template: np.ndarray


@functools.lru_cache(maxsize=32)
def layout_for(spec: RenderSpec) -> Layout:
    """Compute (and memoise) the :class:`Layout` of a spec."""
    r0, r1 = strip_rows(spec.height, spec.channels)
    scales = np.asarray(spec.scales_uv, dtype=np.float64)
    # Row centres: r0 + 0.5 (for +scale) to r1 + 0.5 (for -scale), in 1/256 px.
    gain = (r1 - r0).astype(np.float64) * (FX_ONE / 2) / scales
    mid_fx = (r0 + r1 + 1) * (FX_ONE // 2)
    if spec.overlap:
        row_first = np.zeros_like(r0)
        row_last = np.full_like(r1, spec.height - 1)
    else:
        row_first, row_last = r0, r1
    planes = 3 if spec.color else 1
    if spec.color:
        ink = np.array(
            [CHANNEL_COLOURS[c % len(CHANNEL_COLOURS)] for c in range(spec.channels)], np.uint8
        )
    else:
        ink = np.zeros((spec.channels, 1), np.uint8)
    levels = spec.ink_levels if spec.antialias else 1
    template = _background(spec, r0, r1, planes)
    layout = Layout(
        gain=gain,
        mid_fx=mid_fx.astype(np.int64),
        row_first=row_first.astype(np.int64),
        row_last=row_last.astype(np.int64),
        ink=ink,
        half_width_fx=int(round(spec.line_width * FX_ONE / 2)),
        levels=levels,
        template=template,
    )
    for array in (
        layout.gain,
        layout.mid_fx,
        layout.row_first,
        layout.row_last,
        layout.ink,
        layout.template,
    ):
        array.setflags(write=False)
    return layout


def _column_of(seconds: float, total_seconds: float, width: int) -> int:
    return min(width - 1, int(math.floor(seconds / total_seconds * width)))


def _background(spec: RenderSpec, r0: np.ndarray, r1: np.ndarray, planes: int) -> np.ndarray:
    """White page with the target-epoch band, grid lines and channel labels (darken-composited)."""
    height, width = spec.height, spec.width
    grey = np.full((height, width), 255, np.uint8)
    total = spec.epochs_per_image * spec.epoch_seconds
    if spec.context:
        left = _column_of(spec.context * spec.epoch_seconds, total, width)
        right = _column_of((spec.context + 1) * spec.epoch_seconds, total, width)
        grey[:, left:right] = BAND_GREY
    if spec.grid:
        px_per_second = width / total
        for second in range(1, int(math.ceil(total))):
            major = second % 5 == 0
            if major or px_per_second >= _MIN_GRID_SPACING_PX:
                col = _column_of(second, total, width)
                value = MAJOR_GRID_GREY if major else MINOR_GRID_GREY
                grey[:, col] = np.minimum(grey[:, col], value)
    if spec.context:
        for edge in (spec.context, spec.context + 1):
            col = _column_of(edge * spec.epoch_seconds, total, width)
            grey[:, col] = np.minimum(grey[:, col], EPOCH_EDGE_GREY)
    if spec.labels is not None:
        for label, top, bottom in zip(spec.labels, r0, r1):
            coverage = label_bitmap(label)
            rows = min(coverage.shape[0], int(bottom) - int(top))
            cols = min(coverage.shape[1], width - 2)
            if rows <= 0 or cols <= 0:
                continue
            box = grey[top + 1 : top + 1 + rows, 2 : 2 + cols]
            np.minimum(box, 255 - coverage[:rows, :cols], out=box)
    return np.repeat(grey[:, :, None], planes, axis=2)
