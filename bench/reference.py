"""matplotlib (Agg) reference renderers with the engine's layout, for fidelity and speed.

* :class:`TunedMatplotlib` / :func:`render_matplotlib`: one reused figure whose lines are
  updated with ``set_data`` and drawn into the Agg buffer; the same strips, µV scales,
  line width (pixels → points at the figure's dpi), target band, grid and colours as
  :func:`engine.raster.render`, no axes, ticks or margins, white background. This is the
  fidelity reference (tests/test_fidelity.py) and the "tuned researcher" benchmark.
* :func:`naive_matplotlib_png`: the straightforward way (``plt.subplots(C, 1)`` and
  ``savefig`` to PNG for every epoch), the "naive researcher" benchmark.

The layout is computed here independently of the engine: strip ``c`` covers rows
``floor(c H / C)`` to ``floor((c + 1) H / C) - 1``; ``+scale`` lies on the centre of its top
row, ``-scale`` on the centre of its bottom row; sample ``i`` of ``S`` lies at
``x = (i + 0.5) W / S`` pixels.
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from engine.errors import RenderError
from engine.raster import RenderSpec
from engine.raster.layout import (
    BAND_GREY,
    CHANNEL_COLOURS,
    EPOCH_EDGE_GREY,
    MAJOR_GRID_GREY,
    MINOR_GRID_GREY,
)

__all__ = ["DPI", "TunedMatplotlib", "render_matplotlib", "naive_matplotlib_png"]

#: Figure resolution: one point is 1/72 inch, so a line ``w`` px wide is ``w * 72 / DPI`` pt.
DPI = 100.0


def _grey(value: int) -> tuple[float, float, float]:
    return (value / 255.0,) * 3


def _check(signals: np.ndarray, spec: RenderSpec) -> np.ndarray:
    if not isinstance(spec, RenderSpec):
        raise RenderError(f"spec must be a RenderSpec, got {type(spec).__name__}")
    signals = np.asarray(signals, dtype=np.float64)
    if signals.ndim != 3 or signals.shape[1] != spec.channels or signals.shape[2] < 1:
        raise RenderError(
            f"signals must be (epochs, {spec.channels} channels, samples), got {signals.shape}"
        )
    return signals


class TunedMatplotlib:
    """A reused Agg figure drawing epochs in the engine's layout.

    Parameters
    ----------
    spec : RenderSpec

    Examples
    --------
    >>> spec = RenderSpec(scales_uv=(75.0,), width=64, height=32)
    >>> TunedMatplotlib(spec).render(np.zeros((2, 1, 100), np.float32)).shape
    (2, 32, 64)
    """

    def __init__(self, spec: RenderSpec) -> None:
        if not isinstance(spec, RenderSpec):
            raise RenderError(f"spec must be a RenderSpec, got {type(spec).__name__}")
        self.spec = spec
        width, height = spec.width, spec.height
        self.figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, facecolor="white")
        self.canvas = FigureCanvasAgg(self.figure)
        self._background(spec)
        edges = (np.arange(spec.channels + 1) * height) // spec.channels
        self._rows = [(int(edges[c]), int(edges[c + 1]) - 1) for c in range(spec.channels)]
        self.lines = []
        for c, (top, bottom) in enumerate(self._rows):
            # One transparent axes per strip, in pixel data coordinates (y down); it clips
            # the trace to the strip unless overlap is on.
            axes = self.figure.add_axes(
                (0.0, (height - bottom - 1) / height, 1.0, (bottom + 1 - top) / height)
            )
            axes.set_axis_off()
            axes.patch.set_visible(False)
            axes.set_xlim(0, width)
            axes.set_ylim(bottom + 1, top)
            colour = (
                tuple(v / 255.0 for v in CHANNEL_COLOURS[c % len(CHANNEL_COLOURS)])
                if spec.color
                else (0.0, 0.0, 0.0)
            )
            (line,) = axes.plot(
                [],
                [],
                color=colour,
                linewidth=spec.line_width * 72.0 / DPI,
                antialiased=spec.antialias,
                solid_joinstyle="round",
                solid_capstyle="butt",
                clip_on=not spec.overlap,
            )
            self.lines.append(line)

    def _background(self, spec: RenderSpec) -> None:
        width, height = spec.width, spec.height
        axes = self.figure.add_axes((0.0, 0.0, 1.0, 1.0))
        axes.set_axis_off()
        axes.set_xlim(0, width)
        axes.set_ylim(height, 0)
        total = spec.epochs_per_image * spec.epoch_seconds
        column = lambda seconds: min(width - 1, int(np.floor(seconds / total * width)))  # noqa: E731
        if spec.context:
            left = column(spec.context * spec.epoch_seconds)
            right = column((spec.context + 1) * spec.epoch_seconds)
            axes.axvspan(left, right, color=_grey(BAND_GREY), linewidth=0)
        if spec.grid:
            for second in range(1, int(np.ceil(total))):
                major = second % 5 == 0
                if major or width / total >= 4.0:
                    grey = MAJOR_GRID_GREY if major else MINOR_GRID_GREY
                    x = column(second) + 0.0
                    axes.axvline(x, color=_grey(grey), linewidth=72.0 / DPI, antialiased=False)
        if spec.context:
            for edge in (spec.context, spec.context + 1):
                x = column(edge * spec.epoch_seconds) + 0.0
                axes.axvline(x, color=_grey(EPOCH_EDGE_GREY), linewidth=72.0 / DPI)
        if spec.labels is not None:
            edges = (np.arange(spec.channels + 1) * height) // spec.channels
            for label, top in zip(spec.labels, edges[:-1]):
                axes.text(2, top + 1, label, fontsize=10 * 72.0 / DPI, va="top", ha="left")

    def render(self, signals: np.ndarray) -> np.ndarray:
        """Draw each epoch and return uint8 ``(N, H, W)`` (or ``(N, H, W, 3)`` in colour)."""
        spec = self.spec
        signals = _check(signals, spec)
        n_samples = signals.shape[2]
        x = (np.arange(n_samples) + 0.5) * spec.width / n_samples
        out = np.empty((signals.shape[0], *spec.shape), np.uint8)
        for n, epoch in enumerate(signals):
            for line, (top, bottom), scale, values in zip(
                self.lines, self._rows, spec.scales_uv, epoch
            ):
                y = top + 0.5 + (bottom - top) * (0.5 - values / (2.0 * scale))
                line.set_data(x, y)
            self.canvas.draw()
            rgba = np.asarray(self.canvas.buffer_rgba())
            out[n] = rgba[:, :, :3] if spec.color else rgba[:, :, 0]
        return out


def render_matplotlib(signals: np.ndarray, spec: RenderSpec) -> np.ndarray:
    """Reference images of ``signals`` (µV, ``(N, C, S)``) in the engine's layout."""
    return TunedMatplotlib(spec).render(signals)


def naive_matplotlib_png(signals: np.ndarray, spec: RenderSpec) -> list[bytes]:
    """The straightforward researcher's way: a new ``plt.subplots(C, 1)`` figure per epoch.

    Each channel gets its own axes with ``ylim(-scale, scale)``, axes hidden, no margins,
    saved with ``savefig`` as PNG. Returns the PNG bytes of each epoch.
    """
    import matplotlib.pyplot as plt

    signals = _check(signals, spec)
    pngs = []
    for epoch in signals:
        fig, axes = plt.subplots(
            spec.channels, 1, figsize=(spec.width / DPI, spec.height / DPI), dpi=DPI, squeeze=False
        )
        for axis, values, scale in zip(axes[:, 0], epoch, spec.scales_uv):
            axis.plot(values, color="black", linewidth=spec.line_width * 72.0 / DPI)
            axis.set_ylim(-scale, scale)
            axis.set_xlim(0, len(values) - 1)
            axis.axis("off")
        fig.subplots_adjust(left=0, right=1, top=1, bottom=0, hspace=0)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI, facecolor="white")
        plt.close(fig)
        pngs.append(buffer.getvalue())
    return pngs
