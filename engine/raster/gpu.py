"""CUDA driver for the render kernel (the same kernel source as the CPU path).

Device arrays are held by CuPy when it is installed (``cp = None`` otherwise; numba's own
device arrays are used then). Under numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``,
set before numba is imported) the kernel runs on the CPU and :func:`render_cuda` takes
and returns NumPy arrays, which is how the tests check CPU/GPU byte equality without a GPU.

:func:`cuda_available` says whether the kernel can run; :func:`cuda_unavailable_reason`
says why not, and the first time each reason is found it is logged: at INFO when the
machine simply has no GPU (no driver library, no device), at WARNING when there is one
that cannot be used (a driver that fails to initialise, no libNVVM, a compiler or launch
error of a one-line probe kernel, or any other exception from numba's checks).
"""

from __future__ import annotations

import functools
import logging

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

__all__ = [
    "cp",
    "cuda_available",
    "cuda_unavailable_reason",
    "is_simulator",
    "render_cuda",
    "render_gpu",
    "THREADS_PER_BLOCK",
]

logger = logging.getLogger(__name__)

#: Threads per block along the column axis; a block draws this many columns of one image.
THREADS_PER_BLOCK = 128


def is_simulator() -> bool:
    """True when numba runs CUDA kernels in its CPU simulator."""
    return bool(numba.config.ENABLE_CUDASIM)


def cuda_available() -> bool:
    """True when a CUDA device (or the simulator) can run the kernel.

    When it cannot, the reason is logged once (:func:`cuda_unavailable_reason`).
    """
    return cuda_unavailable_reason() is None


#: Reasons already logged (each is logged once per process).
_LOGGED: set[str] = set()

#: Markers of a driver error that only says there is no GPU to drive.
_NO_DEVICE_MARKERS = ("cannot be found", "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device")


def cuda_unavailable_reason() -> str | None:
    """Why the CUDA kernel cannot run here, or ``None`` when it can.

    Returns
    -------
    str or None
        Starts with ``no CUDA device`` or ``no CUDA driver`` when the machine has no GPU
        to use (logged at INFO), else names the failure: ``CUDA driver error: ...``,
        ``CUDA compiler unavailable: ...``, ``CUDA compiler or launch error: ...`` or
        ``CUDA check failed: ...`` (logged at WARNING).
    """
    found = _diagnose()
    if found is None:
        return None
    no_device, reason = found
    if reason not in _LOGGED:
        _LOGGED.add(reason)
        level = logging.INFO if no_device else logging.WARNING
        logger.log(level, "CUDA unavailable: %s", reason)
    return reason


def _diagnose() -> tuple[bool, str] | None:
    """``None`` when CUDA works, else ``(no_device, reason)``."""
    if is_simulator():
        return None
    try:
        if cuda.is_available():
            problem = _probe_kernel()
            return None if problem is None else (False, f"CUDA compiler or launch error: {problem}")
        init_error, devices = _driver_state()
        if init_error:
            first = init_error.strip().splitlines()[0] if init_error.strip() else init_error
            if any(marker in init_error for marker in _NO_DEVICE_MARKERS):
                return True, f"no CUDA driver or device ({first})"
            return False, f"CUDA driver error: {first}"
        if devices == 0:
            return True, "no CUDA device (the driver finds none)"
        return False, f"CUDA compiler unavailable: {_nvvm_error()}"
    except Exception as err:  # numba's checks themselves failed: say so, never "no device"
        return False, f"CUDA check failed: {type(err).__name__}: {err}"


def _driver_state() -> tuple[str | None, int | None]:
    """numba's driver initialisation error (``None`` if it initialised) and device count."""
    from numba.cuda.cudadrv import driver

    init_error = getattr(driver.driver, "initialization_error", None)
    if init_error:
        return str(init_error), None
    return None, int(driver.driver.get_device_count())


def _nvvm_error() -> str:
    """Why libNVVM (the CUDA compiler numba uses) cannot be loaded."""
    from numba.cuda.cudadrv import nvvm

    try:
        nvvm.NVVM()
    except Exception as err:
        return (
            f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        )
    return "libNVVM loads, but numba reports CUDA unavailable"


@functools.lru_cache(maxsize=1)
def _probe_kernel() -> str | None:
    """Compile and launch a one-line kernel once; ``None`` when it works, else the error."""
    try:

        @cuda.jit
        def _write_one(out):
            out[0] = 1

        out = cuda.to_device(np.zeros(1, np.int32))
        _write_one[1, 1](out)
        if int(out.copy_to_host()[0]) != 1:
            return "the probe kernel ran but wrote nothing"
    except Exception as err:
        return f"{type(err).__name__}: {err}"
    return None


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
    reason = cuda_unavailable_reason()
    if reason is not None:
        raise RenderError(f"render_cuda needs CUDA, which is unavailable: {reason} (use render)")
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
    reason = cuda_unavailable_reason()
    if reason is not None:
        raise RenderError(f"render_gpu needs CUDA, which is unavailable: {reason} (use render)")
    if cp is not None:
        return cp.asnumpy(render_cuda(cp.asarray(signals), spec))
    return render_cuda(cuda.to_device(signals), spec).copy_to_host()
