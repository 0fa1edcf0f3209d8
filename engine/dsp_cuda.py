"""The preprocessing of :mod:`engine.dsp` on a CUDA device (``psgvlm render --device cuda``).

The same two algorithms and the same per-sample source (:func:`engine.dsp.fir_dot`,
:func:`engine.dsp.biquad_step`, :func:`engine.dsp.ext_value`, compiled here with
``numba.cuda.jit(device=True)``), laid out for the GPU:

- the resampler runs one thread per output sample;
- the zero-phase filter cuts the signal into many more chunks than the CPU's 8 (each at
  least four warm-ups long, up to :data:`MAX_LANES`), one thread per chunk, all sections
  of a stage per sample in registers;
- EDF samples are decoded on the device: the data records are copied up as they are in
  the file and each channel's 16- or 24-bit samples are gathered and scaled there
  (:func:`decode_channels`), with the gain and offset :meth:`engine.io.edf.Recording.
  read_channels` uses.

This module imports ``numba.cuda``: the render path imports it only with ``--device
cuda``. Arrays are CuPy arrays when CuPy is installed (numba device arrays otherwise); under
numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) they are NumPy arrays and the kernels
run on the CPU, which is how the tests check this module against scipy without a GPU.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from numba import cuda

from . import dsp

__all__ = [
    "MAX_LANES",
    "MAX_SECTIONS",
    "array_module",
    "to_device",
    "to_host",
    "decode_channels",
    "resample_poly",
    "sosfiltfilt",
    "filter_chain",
]

#: Most chunks one channel's filter is cut into on the device (one thread each).
MAX_LANES = 4096
#: Most second-order sections in one filter stage (an order-8 band-pass has 8).
MAX_SECTIONS = 16
_THREADS = 128
#: Threads per block under the simulator (each one is a Python thread there).
_SIMULATOR_THREADS = 8


def _simulator() -> bool:
    import numba

    return bool(numba.config.ENABLE_CUDASIM)


def array_module():
    """CuPy on a real device (when installed), NumPy under the CUDA simulator."""
    if _simulator():
        return np
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def _empty(shape: int | tuple[int, ...], dtype: type):
    xp = array_module()
    if xp is not None:
        return xp.empty(shape, dtype)
    return cuda.device_array(shape, dtype)


def to_device(array: np.ndarray):
    """A host array on the device (a copy; NumPy itself under the simulator)."""
    xp = array_module()
    if xp is np:
        return np.array(array, copy=True)
    if xp is not None:
        return xp.asarray(array)
    return cuda.to_device(np.ascontiguousarray(array))


def to_host(array) -> np.ndarray:
    """A device array on the host."""
    if isinstance(array, np.ndarray):
        return array
    if hasattr(array, "get"):
        return array.get()
    return array.copy_to_host()


def _grid(n: int, stride: bool = True) -> tuple[int, int]:
    """(blocks, threads) for ``n`` items.

    Element kernels loop over a grid stride: under the simulator, where every thread is
    a Python thread, they run as one small block. Kernels with one thread per item
    (``stride=False``) get enough blocks for all of them.
    """
    threads = _SIMULATOR_THREADS if _simulator() else _THREADS
    blocks = max(1, -(-n // threads))
    return (1 if stride and _simulator() else blocks), threads


@functools.cache
def _kernels() -> dict:
    """The CUDA kernels, built on first use (compiled at their first launch)."""
    fir_dot = cuda.jit(device=True)(dsp.fir_dot)
    biquad_step = cuda.jit(device=True)(dsp.biquad_step)
    ext_value = cuda.jit(device=True)(dsp.ext_value)

    @cuda.jit
    def decode(words, records, size, offset, count, gain, shift, out):
        # One thread per output sample of one channel: record r, sample c.
        for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            r = i // count
            c = i - r * count
            if size == 2:
                value = np.int32(words[r, offset + c])
            else:
                first = (offset + c) * 3
                value = (
                    np.int32(records[r, first])
                    | (np.int32(records[r, first + 1]) << 8)
                    | (np.int32(np.int8(records[r, first + 2])) << 16)
                )
            out[i] = np.float32(gain * value + shift)

    @cuda.jit
    def fir(x, taps, starts, up, down, out):
        for t in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            b = t // up
            s = t - b * up
            out[t] = fir_dot(x, b * down + starts[s], taps, s, taps.shape[1])

    @cuda.jit
    def pack(x, n, padlen, chunk, warmup, used, lanes):
        # lanes: (rows, lanes) float64; one thread per element.
        rows, width = lanes.shape
        for i in range(cuda.grid(1), rows * width, cuda.gridsize(1)):
            r = i // width
            k = i - r * width
            if k < used:
                position = min(max(k * chunk - warmup + r, 0), n + 2 * padlen - 1)
                lanes[r, k] = ext_value(x, n, padlen, position)
            else:
                lanes[r, k] = 0.0

    @cuda.jit(device=True)
    def steady_state(state, zi, n_sections, start):
        # Each section's state for a signal that has stood at ``start`` forever.
        for s in range(n_sections):
            state[s, 0] = zi[s, 0] * start
            state[s, 1] = zi[s, 1] * start

    @cuda.jit(device=True)
    def cascade(value, sections, state, n_sections):
        # One sample through every second-order section, states updated in place.
        for s in range(n_sections):
            value, state[s, 0], state[s, 1] = biquad_step(
                value, sections[s, 0], sections[s, 1], sections[s, 2], sections[s, 3],
                sections[s, 4], state[s, 0], state[s, 1],
            )  # fmt: skip
        return value

    @cuda.jit
    def forward(lanes, sections, zi, chunk, warmup, used):
        # One thread per lane; every section of the stage per row, states in registers.
        k = cuda.grid(1)
        if k >= used:
            return
        state = cuda.local.array((MAX_SECTIONS, 2), np.float64)
        n_sections = sections.shape[0]
        start = lanes[0, k] if k * chunk - warmup <= 0 else 0.0
        steady_state(state, zi, n_sections, start)
        for r in range(lanes.shape[0]):
            lanes[r, k] = cascade(lanes[r, k], sections, state, n_sections)

    @cuda.jit
    def backward(lanes, sections, zi, chunk, warmup, used, total):
        # One thread per lane, from its last row; positions past the end hold the last
        # forward output, and a lane that starts there starts from its steady state.
        k = cuda.grid(1)
        if k >= used:
            return
        state = cuda.local.array((MAX_SECTIONS, 2), np.float64)
        n_sections = sections.shape[0]
        rows = lanes.shape[0]
        last_lane = (total - 1) // chunk
        last = lanes[total - 1 - last_lane * chunk + warmup, last_lane]
        origin = k * chunk - warmup
        start = last if origin + rows - 1 >= total - 1 else 0.0
        steady_state(state, zi, n_sections, start)
        for i in range(rows):
            r = rows - 1 - i
            value = last if origin + r > total - 1 else lanes[r, k]
            lanes[r, k] = cascade(value, sections, state, n_sections)

    @cuda.jit
    def unpack(lanes, chunk, warmup, padlen, out):
        for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
            position = padlen + i
            k = position // chunk
            out[i] = lanes[position - k * chunk + warmup, k]

    return {
        "decode": decode,
        "fir": fir,
        "pack": pack,
        "forward": forward,
        "backward": backward,
        "unpack": unpack,
    }


@functools.lru_cache(maxsize=64)
def _device_plan(up: int, down: int) -> tuple:
    plan = dsp.polyphase_plan(up, down)
    return plan, to_device(plan.taps), to_device(plan.starts)


@functools.lru_cache(maxsize=256)
def _device_stage(key: bytes, sections: int, padlen: int) -> tuple:
    stage = dsp.filter_stage(np.frombuffer(key).reshape(sections, 6), padlen)
    coefficients = stage.groups.reshape(-1, 5)[: stage.sos.shape[0]]
    zi = stage.zi.reshape(-1, 2)[: stage.sos.shape[0]]
    if coefficients.shape[0] > MAX_SECTIONS:
        raise ValueError(f"at most {MAX_SECTIONS} sections per stage on the device")
    return stage, to_device(np.ascontiguousarray(coefficients)), to_device(np.ascontiguousarray(zi))


def decode_channels(recording, labels_or_indices: Sequence[str | int]) -> list:
    """Whole channels of an open EDF/BDF recording, decoded on the device as float32 µV.

    The same values as :meth:`engine.io.edf.Recording.read_channels`; EDF+D files with
    gaps are read on the host and copied up.
    """
    layout = recording.channel_layout(labels_or_indices)
    if layout is None:
        return [to_device(x) for x in recording.read_channels(labels_or_indices)]
    records, size, offsets, counts, gains, shifts, starts = layout
    device_records = to_device(np.ascontiguousarray(records))
    words = device_records.view(np.int16) if size == 2 else device_records[:, :0]
    kernel = _kernels()["decode"]
    channels = []
    for offset, count, gain, shift, first, last in zip(
        offsets, counts, gains, shifts, starts[:-1], starts[1:]
    ):
        out = _empty(int(last - first), np.float32)
        kernel[_grid(out.shape[0])](
            words, device_records, size, int(offset), int(count), float(gain), float(shift), out
        )
        channels.append(out)
    return channels


def resample_poly(x, up: int, down: int):
    """:func:`engine.dsp.resample_poly` of a device array (float32 out, on the device)."""
    g = math.gcd(int(up), int(down))
    up, down = int(up) // g, int(down) // g
    n = int(x.shape[0])
    if up == down == 1:
        return x.astype(np.float32) if hasattr(x, "astype") else x
    if up > dsp.MAX_UP:
        return to_device(dsp.resample_poly(to_host(x), up, down))
    plan, taps, starts = _device_plan(up, down)
    n_out = plan.output_length(n)
    padded = _empty(plan.padded_size(n), np.float32)
    padded[:] = 0.0
    padded[plan.pad : plan.pad + n] = x
    out = _empty(n_out, np.float32)
    if n_out:
        _kernels()["fir"][_grid(n_out)](padded, taps, starts, up, down, out)
    return out


def _layout(total: int, warmup: int) -> tuple[int, int]:
    used = int(max(1, min(MAX_LANES, total // max(4 * warmup, 1))))
    return -(-total // used), used


def sosfiltfilt(sos: np.ndarray, x, padlen: int, out=None):
    """:func:`engine.dsp.sosfiltfilt` of a device array (float64 out unless ``out``)."""
    sos = np.ascontiguousarray(sos, dtype=np.float64)
    stage, sections, zi = _device_stage(sos.tobytes(), sos.shape[0], int(padlen))
    n = int(x.shape[0])
    if n <= stage.padlen:
        raise ValueError(f"the signal ({n} samples) must be longer than padlen ({stage.padlen})")
    total = n + 2 * stage.padlen
    warmup = stage.warmup
    chunk, used = _layout(total, warmup)
    rows = chunk + 2 * warmup
    lanes = _empty((rows, used), np.float64)
    kernels = _kernels()
    kernels["pack"][_grid(rows * used)](x, n, stage.padlen, chunk, warmup, used, lanes)
    kernels["forward"][_grid(used, stride=False)](lanes, sections, zi, chunk, warmup, used)
    kernels["backward"][_grid(used, stride=False)](lanes, sections, zi, chunk, warmup, used, total)
    if out is None:
        out = _empty(n, np.float64)
    kernels["unpack"][_grid(n)](lanes, chunk, warmup, stage.padlen, out)
    return out


def filter_chain(x, stages: Sequence[dsp.FilterStage], dtype: type = np.float32):
    """Each stage's :func:`sosfiltfilt` in turn; ``dtype`` output."""
    current = x
    for i, stage in enumerate(stages):
        last = i == len(stages) - 1
        out = _empty(int(x.shape[0]), dtype if last else np.float64)
        current = sosfiltfilt(stage.sos, current, stage.padlen, out=out)
    if not stages:
        current = current.astype(dtype)
    return current
