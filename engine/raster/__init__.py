"""Line rasterizer: PSG epochs (µV) → clinical-style waveform images.

Channels are stacked as horizontal strips in montage order on a white page, each on a
fixed µV scale (``+scale`` at the strip's top row, ``-scale`` at its bottom row, never
autoscaled). Dense signals are drawn as a per-column min/max envelope joined to the
neighbouring columns; NaN gaps break the line. One kernel source is compiled for the CPU
(:func:`render`, parallel over epochs) and for CUDA (:func:`render_cuda`); both give the
same bytes.

Examples
--------
>>> import numpy as np
>>> spec = RenderSpec.for_roles(["eeg", "eog"], width=64, height=48)
>>> render(np.zeros((3, 2, 300), np.float32), spec).shape
(3, 48, 64)
"""

from __future__ import annotations

import numpy as np

from ..errors import RenderError
from .gpu import cuda_available, render_cuda, render_gpu
from .kernels import build_render_kernels, column_tables
from .layout import DEFAULT_SIZES, ROLE_SCALES, RenderSpec, layout_for, parse_size

__all__ = [
    "RenderSpec",
    "ROLE_SCALES",
    "DEFAULT_SIZES",
    "parse_size",
    "render",
    "render_cuda",
    "render_gpu",
    "cuda_available",
    "load_kernel",
]


def render(signals: np.ndarray, spec: RenderSpec, *, out: np.ndarray | None = None) -> np.ndarray:
    """Render epochs on the CPU (numba, parallel over epochs when numba has more than one
    thread; the same pixels either way).

    Parameters
    ----------
    signals : numpy.ndarray
        ``(N, C, S)`` µV, float32 (other real dtypes are converted): N images, C channels
        in montage order, S samples spanning ``spec.epochs_per_image`` epochs.
    spec : RenderSpec
    out : numpy.ndarray, optional
        C-contiguous uint8 ``(N, H, W, P)`` buffer to draw into (``P`` = 3 in colour, else
        1); reused across calls to avoid allocation.

    Returns
    -------
    numpy.ndarray
        uint8 ``(N, H, W)``, or ``(N, H, W, 3)`` when ``spec.color``.

    Raises
    ------
    RenderError
        For signals of the wrong shape or type, or a mismatched ``out``.
    """
    if not isinstance(spec, RenderSpec):
        raise RenderError(f"spec must be a RenderSpec, got {type(spec).__name__}")
    signals = _as_signals(signals, spec)
    layout = layout_for(spec)
    planes = layout.template.shape[2]
    shape = (signals.shape[0], spec.height, spec.width, planes)
    if out is None:
        out = np.empty(shape, np.uint8)
    elif not (
        isinstance(out, np.ndarray)
        and out.shape == shape
        and out.dtype == np.uint8
        and out.flags.c_contiguous
    ):
        raise RenderError(f"out must be a C-contiguous uint8 array of shape {shape}")
    import numba

    parallel = numba.get_num_threads() > 1
    render_cpu, _ = build_render_kernels(spec.antialias, spec.color, parallel)
    render_cpu(*_kernel_arguments(signals, spec, out))
    return out if spec.color else out.reshape(shape[:3])


def _kernel_arguments(signals: np.ndarray, spec: RenderSpec, out: np.ndarray) -> tuple:
    """The CPU kernel's arguments for checked ``signals`` and an ``out`` buffer."""
    layout = layout_for(spec)
    columns = column_tables(signals.shape[2], spec.width)
    return (
        signals, layout.template.reshape(-1), out.reshape(out.shape[0], -1), spec.width,
        columns.frac, columns.before, columns.after, columns.query_a, columns.query_b,
        columns.n_levels, columns.first_level, layout.gain, layout.mid_fx, layout.row_first,
        layout.row_last, layout.ink, layout.half_width_fx, layout.levels,
    )  # fmt: skip


def load_kernel(spec: RenderSpec, n_samples: int = 3000) -> None:
    """Load (or compile) the CPU kernels ``spec`` draws with (parallel, and one-thread),
    without running them.

    Running a parallel kernel starts numba's thread pool, which a process must not hold
    when it forks: the fork server of ``psgvlm render --workers N`` loads the kernel this
    way, so that its workers start with it ready.
    """
    import numba

    signals = np.zeros((1, spec.channels, n_samples), np.float32)
    planes = layout_for(spec).template.shape[2]
    out = np.empty((1, spec.height, spec.width, planes), np.uint8)
    types = tuple(numba.typeof(a) for a in _kernel_arguments(signals, spec, out))
    for parallel in (True, False):
        build_render_kernels(spec.antialias, spec.color, parallel)[0].compile(types)


def _as_signals(signals: object, spec: RenderSpec) -> np.ndarray:
    if not isinstance(signals, np.ndarray):
        raise RenderError(f"signals must be a NumPy array, got {type(signals).__name__}")
    if signals.ndim != 3:
        raise RenderError(f"signals must be (epochs, channels, samples), got shape {signals.shape}")
    if not (np.issubdtype(signals.dtype, np.floating) or np.issubdtype(signals.dtype, np.integer)):
        raise RenderError(f"signals must be real numbers (µV), got dtype {signals.dtype}")
    if signals.shape[1] != spec.channels:
        raise RenderError(
            f"signals have {signals.shape[1]} channels but the spec has {spec.channels} scales"
        )
    if signals.shape[2] < 1:
        raise RenderError("signals have no samples")
    return np.ascontiguousarray(signals, dtype=np.float32)
