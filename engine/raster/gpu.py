"""CUDA driver for the render kernel (the same kernel source as the CPU path).

Device arrays are held by CuPy when it is installed (``cp = None`` otherwise; numba's own
device arrays are used then). Under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``,
set before numba is imported) the kernel runs on the CPU and :func:`render_cuda` takes
and returns NumPy arrays, which is how the tests check CPU/GPU byte equality without a GPU.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
from numba import cuda

from ..errors import RenderError
from .kernels import build_render_kernels, column_tables
from .layout import RenderSpec, layout_for

try:
    import cupy as cp
except ImportError:  # CuPy is optional (extra "gpu").
    cp = None

__all__ = ["cp", "cuda_available", "is_simulator", "render_cuda", "render_gpu", "THREADS_PER_BLOCK"]

#: Threads per block along the column axis; a block draws this many columns of one image.
THREADS_PER_BLOCK = 128


def is_simulator() -> bool:
    """True when numba runs CUDA kernels in its CPU simulator."""
    return bool(numba.config.ENABLE_CUDASIM)


def cuda_available() -> bool:
    """True when a CUDA device (or the simulator) can run the kernel."""
    try:
        return bool(cuda.is_available())
    except Exception:  # driver libraries present but broken
        return False


def _check_signals(shape: tuple[int, ...], dtype: np.dtype, spec: RenderSpec) -> None:
    if len(shape) != 3:
        raise RenderError(f"signals must be (epochs, channels, samples), got shape {shape}")
    if np.dtype(dtype) != np.float32:
        raise RenderError(f"render_cuda needs float32 signals, got {np.dtype(dtype)}")
    if shape[1] != spec.channels:
        raise RenderError(
            f"signals have {shape[1]} channels but the spec has {spec.channels} scales"
        )
    if shape[2] < 1:
        raise RenderError("signals have no samples")


def _layout_arrays(spec: RenderSpec, n_samples: int) -> tuple[np.ndarray, ...]:
    """Kernel arguments after ``out``, in order, as host arrays."""
    layout = layout_for(spec)
    columns = column_tables(n_samples, spec.width)
    return (
        columns.first,
        columns.frac,
        columns.before,
        columns.after,
        layout.gain,
        layout.mid_fx,
        layout.row_first,
        layout.row_last,
        layout.ink,
    )


@functools.lru_cache(maxsize=16)
def _device_arrays(spec: RenderSpec, n_samples: int) -> tuple:
    """Template and kernel arguments copied to the device once per (spec, sample count)."""
    host = (layout_for(spec).template.reshape(-1), *_layout_arrays(spec, n_samples))
    return tuple(cuda.to_device(np.ascontiguousarray(a)) for a in host)


def render_cuda(signals, spec: RenderSpec):
    """Render epochs on the GPU, keeping inputs and outputs on the device.

    Parameters
    ----------
    signals : device array
        float32 ``(N, C, S)`` µV, any object exposing ``__cuda_array_interface__`` (CuPy,
        numba, torch CUDA tensors). Under the CUDA simulator, a NumPy array.
    spec : RenderSpec

    Returns
    -------
    device array
        uint8 ``(N, H, W)`` or ``(N, H, W, 3)``: a CuPy array when CuPy is installed,
        else a numba device array (NumPy under the simulator). Identical bytes to
        :func:`engine.raster.render`.

    Raises
    ------
    RenderError
        Without a CUDA device, or for signals of the wrong shape or dtype.
    """
    if not isinstance(spec, RenderSpec):
        raise RenderError(f"spec must be a RenderSpec, got {type(spec).__name__}")
    if not cuda_available():
        raise RenderError("render_cuda needs a CUDA device; none is available (use render)")
    layout = layout_for(spec)
    _, render_kernel = build_render_kernels(spec.antialias, spec.color)
    planes = layout.template.shape[2]
    if is_simulator():
        signals = np.ascontiguousarray(signals)
        _check_signals(signals.shape, signals.dtype, spec)
        n_epochs = signals.shape[0]
        out = np.empty((n_epochs, spec.height, spec.width, planes), np.uint8)
        # The simulator copies every argument back after the launch: hand it writable copies.
        host = (layout.template.reshape(-1), *_layout_arrays(spec, signals.shape[2]))
        arrays = tuple(np.array(a) for a in host)
    else:
        if not hasattr(signals, "__cuda_array_interface__"):
            raise RenderError(
                "render_cuda needs a device array (CuPy, numba or torch CUDA); "
                "use render_gpu for NumPy input"
            )
        signals = cuda.as_cuda_array(signals)
        _check_signals(signals.shape, signals.dtype, spec)
        n_epochs = signals.shape[0]
        shape = (n_epochs, spec.height, spec.width, planes)
        out = cp.empty(shape, np.uint8) if cp is not None else cuda.device_array(shape, np.uint8)
        arrays = _device_arrays(spec, signals.shape[2])
    if n_epochs:
        blank, *tables = arrays
        blocks = (n_epochs, -(-spec.width // THREADS_PER_BLOCK))
        render_kernel[blocks, (1, THREADS_PER_BLOCK)](
            signals, blank, out.reshape(n_epochs, blank.shape[0]), spec.width, *tables,
            layout.half_width_fx, layout.levels,
        )  # fmt: skip
    return out if spec.color else out.reshape(out.shape[:3])


def render_gpu(signals: np.ndarray, spec: RenderSpec) -> np.ndarray:
    """Host-to-host convenience around :func:`render_cuda` (copies in, renders, copies out)."""
    signals = np.ascontiguousarray(signals, dtype=np.float32)
    if is_simulator():
        return np.asarray(render_cuda(signals, spec))
    if not cuda_available():
        raise RenderError("render_gpu needs a CUDA device; none is available (use render)")
    if cp is not None:
        return cp.asnumpy(render_cuda(cp.asarray(signals), spec))
    return render_cuda(cuda.to_device(signals), spec).copy_to_host()
