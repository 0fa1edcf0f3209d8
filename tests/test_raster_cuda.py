"""The CUDA build of the render kernel gives the same bytes as the CPU build.

Without a GPU, numba's CUDA simulator runs the CUDA kernel on the CPU. It must be
enabled before numba is imported, so that test runs in a subprocess with
``NUMBA_ENABLE_CUDASIM=1``; the simulator is slow, hence tiny batches.

On a machine with an NVIDIA GPU, CuPy (``pip install -e .[gpu]``) and torchvision, run
the native test with::

    PSGVLM_TEST_GPU=1 pytest -q -m gpu tests/test_raster_cuda.py

It fails (rather than skips) when ``PSGVLM_TEST_GPU=1`` is set but CUDA or CuPy is missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

SIMULATED = textwrap.dedent(
    """
    import numpy as np
    from numba import config
    assert config.ENABLE_CUDASIM
    from engine.raster import RenderSpec, render, render_cuda, render_gpu

    rng = np.random.default_rng(7)
    signals = (60 * rng.standard_normal((2, 2, 300))).astype(np.float32)
    signals[0, 0, 40:70] = np.nan
    signals[1, 1, 150] = 900.0
    signals[1, 0, 10] = np.inf
    variants = [
        {},
        {"antialias": False, "line_width": 2.0},
        {"color": True, "overlap": True, "grid": True, "labels": ("C4", "E1")},
        {"context": 1, "ink_levels": 255, "line_width": 1.7},
    ]
    for kwargs in variants:
        spec = RenderSpec(scales_uv=(75.0, 150.0), width=64, height=48, **kwargs)
        cpu = render(signals, spec)
        gpu = np.asarray(render_cuda(signals, spec))
        assert gpu.shape == cpu.shape and gpu.dtype == np.uint8, (kwargs, gpu.shape)
        assert np.array_equal(cpu, gpu), (kwargs, int((cpu != gpu).sum()))
        assert (cpu < 255).any()
    # The CPU build answers column ranges from sparse tables, CUDA scans each column:
    # many samples per column (level 5), two to three (first level built: 1), one to two
    # (levels 0 and 1), one each.
    for n_samples, width in ((3000, 64), (150, 64), (90, 64), (64, 64)):
        dense = (60 * rng.standard_normal((1, 2, n_samples))).astype(np.float32)
        dense[0, 0, ::9] = np.nan
        dense[0, 1, 5] = -np.inf
        dense[0, 1, n_samples // 2] = 1e30
        spec = RenderSpec(scales_uv=(75.0, 0.001), width=width, height=32)
        cpu, gpu = render(dense, spec), np.asarray(render_cuda(dense, spec))
        assert np.array_equal(cpu, gpu), (n_samples, width, int((cpu != gpu).sum()))
    # The CPU build sweeps a channel's band of rows in chunks of 254: a tall page whose
    # traces cross it (overlap) takes several chunks.
    tall = (400 * rng.standard_normal((1, 2, 120))).astype(np.float32)
    spec = RenderSpec(scales_uv=(5.0, 20.0), width=32, height=600, overlap=True, line_width=3.0)
    cpu, gpu = render(tall, spec), np.asarray(render_cuda(tall, spec))
    assert np.array_equal(cpu, gpu), ("tall", int((cpu != gpu).sum()))
    assert (cpu[0, 300:, :] < 255).any() and (cpu[0, :254, :] < 255).any()
    sparse = np.array([[[-80.0, 80.0, -80.0, 80.0, 0.0]]], np.float32)
    spec = RenderSpec(scales_uv=(75.0,), width=40, height=32)
    assert np.array_equal(render(sparse, spec), render_gpu(sparse, spec))
    print("simulator-identical")
    """
)


def test_cuda_kernel_matches_cpu_under_simulator():
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", SIMULATED],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "simulator-identical" in result.stdout


def test_render_cuda_without_device_raises_render_error():
    from engine.errors import RenderError
    from engine.raster import RenderSpec, cuda_available, render_cuda

    if cuda_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(RenderError, match="CUDA"):
        render_cuda(np.zeros((1, 1, 10), np.float32), RenderSpec(scales_uv=(75.0,)))


@pytest.mark.gpu
@pytest.mark.skipif(os.environ.get("PSGVLM_TEST_GPU") != "1", reason="set PSGVLM_TEST_GPU=1")
def test_native_gpu_matches_cpu_and_encodes_jpeg():
    from engine.encode import decode_image, encode_jpeg_cuda
    from engine.raster import RenderSpec, cuda_available, render, render_cuda
    from engine.raster.gpu import cp

    assert cuda_available(), "PSGVLM_TEST_GPU=1 but numba finds no CUDA device"
    assert cp is not None, "PSGVLM_TEST_GPU=1 but CuPy is not installed (pip install -e .[gpu])"
    rng = np.random.default_rng(3)
    signals = (40 * rng.standard_normal((64, 6, 3000))).astype(np.float32)
    signals[5, 2, 100:400] = np.nan
    for kwargs in ({}, {"color": True, "grid": True, "labels": tuple("ABCDEF")}):
        spec = RenderSpec.for_roles(["eeg", "eeg", "eog", "eog", "emg", "ecg"], **kwargs)
        device = render_cuda(cp.asarray(signals), spec)
        assert isinstance(device, cp.ndarray)
        assert np.array_equal(cp.asnumpy(device), render(signals, spec))
    jpegs = encode_jpeg_cuda(device[:4], quality=90)
    assert len(jpegs) == 4 and decode_image(jpegs[0], "jpg").shape == (224, 448, 3)
    # Grey pages (the default) too: nvJPEG takes 3 channels, so they come back as RGB.
    grey = RenderSpec.for_roles(["eeg", "eeg", "eog", "eog", "emg", "ecg"])
    decoded = decode_image(encode_jpeg_cuda(render_cuda(cp.asarray(signals[:2]), grey))[1], "jpg")
    assert decoded.shape == (224, 448, 3)
    assert np.abs(decoded.astype(int) - render(signals[1:2], grey)[0][..., None]).mean() < 8
