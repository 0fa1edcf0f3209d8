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

import logging
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


@pytest.fixture
def fresh_gpu_log(monkeypatch):
    """engine.raster.gpu with an empty log of reasons and no cached probe result."""
    from engine.raster import gpu

    monkeypatch.setattr(gpu, "_LOGGED", set())
    monkeypatch.setattr(gpu, "is_simulator", lambda: False)
    return gpu


def _records(caplog, level):
    return [r.getMessage() for r in caplog.records if r.levelno == level]


def test_no_driver_library_reads_as_no_device_logged_at_info(fresh_gpu_log, monkeypatch, caplog):
    gpu = fresh_gpu_log
    monkeypatch.setattr(gpu.cuda, "is_available", lambda: False)
    monkeypatch.setattr(
        gpu, "_driver_state", lambda: ("CUDA driver library cannot be found.\nIf you", None)
    )
    with caplog.at_level("INFO", logger="engine.raster.gpu"):
        assert gpu.cuda_available() is False
        assert gpu.cuda_available() is False  # logged once
    reason = gpu.cuda_unavailable_reason()
    assert reason == "no CUDA driver or device (CUDA driver library cannot be found.)"
    assert _records(caplog, logging.INFO) == [f"CUDA unavailable: {reason}"]
    assert not _records(caplog, logging.WARNING)


@pytest.mark.parametrize(
    "state, expected",
    [
        (("Error at driver init: Call to cuInit results in CUDA_ERROR_INSUFFICIENT_DRIVER (35)",
          None), "CUDA driver error: Error at driver init: Call to cuInit results in "
                 "CUDA_ERROR_INSUFFICIENT_DRIVER (35)"),
        ((None, 0), "no CUDA device (the driver finds none)"),
    ],
    ids=["driver-error", "zero-devices"],
)  # fmt: skip
def test_driver_states_are_told_apart(fresh_gpu_log, monkeypatch, caplog, state, expected):
    gpu = fresh_gpu_log
    monkeypatch.setattr(gpu.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu, "_driver_state", lambda: state)
    with caplog.at_level("INFO", logger="engine.raster.gpu"):
        assert gpu.cuda_unavailable_reason() == expected
    level = logging.INFO if expected.startswith("no CUDA") else logging.WARNING
    assert _records(caplog, level) == [f"CUDA unavailable: {expected}"]


def test_driver_present_without_compiler_is_an_error(fresh_gpu_log, monkeypatch, caplog):
    gpu = fresh_gpu_log
    monkeypatch.setattr(gpu.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu, "_driver_state", lambda: (None, 1))
    monkeypatch.setattr(gpu, "_nvvm_error", lambda: "NvvmSupportError: libNVVM cannot be found")
    with caplog.at_level("INFO", logger="engine.raster.gpu"):
        reason = gpu.cuda_unavailable_reason()
    assert reason == "CUDA compiler unavailable: NvvmSupportError: libNVVM cannot be found"
    assert _records(caplog, logging.WARNING) == [f"CUDA unavailable: {reason}"]


def test_broken_driver_or_compiler_is_not_reported_as_no_device(fresh_gpu_log, monkeypatch, caplog):
    """An exception in numba's own check, or a probe kernel that fails to compile."""
    from engine.errors import RenderError
    from engine.raster import RenderSpec

    gpu = fresh_gpu_log

    def broken():
        raise AttributeError("module 'numpy' has no attribute 'row_stack'")

    monkeypatch.setattr(gpu.cuda, "is_available", broken)
    with caplog.at_level("INFO", logger="engine.raster.gpu"):
        assert gpu.cuda_available() is False
        with pytest.raises(RenderError, match="CUDA check failed: AttributeError: .*row_stack"):
            gpu.render_cuda(np.zeros((1, 1, 10), np.float32), RenderSpec(scales_uv=(75.0,)))
    assert _records(caplog, logging.WARNING) == [
        "CUDA unavailable: CUDA check failed: AttributeError: module 'numpy' has no attribute "
        "'row_stack'"
    ]
    assert not any("no CUDA" in m for m in _records(caplog, logging.INFO))
    # A device is there, but the one-line probe kernel does not compile.
    monkeypatch.setattr(gpu.cuda, "is_available", lambda: True)
    monkeypatch.setattr(gpu, "_probe_kernel", lambda: "NvvmError: Failed to compile")
    with caplog.at_level("INFO", logger="engine.raster.gpu"):
        reason = gpu.cuda_unavailable_reason()
    assert reason == "CUDA compiler or launch error: NvvmError: Failed to compile"
    assert _records(caplog, logging.WARNING)[-1] == f"CUDA unavailable: {reason}"
    monkeypatch.setattr(gpu, "_probe_kernel", lambda: None)
    assert gpu.cuda_available() is True


@pytest.mark.gpu
@pytest.mark.skipif(os.environ.get("PSGVLM_TEST_GPU") != "1", reason="set PSGVLM_TEST_GPU=1")
def test_native_gpu_matches_cpu_and_encodes_jpeg():
    from engine.encode import decode_image, encode_jpeg_cuda
    from engine.raster import RenderSpec, cuda_available, render, render_cuda
    from engine.raster.gpu import cp, cuda_unavailable_reason

    assert cuda_available(), (
        f"PSGVLM_TEST_GPU=1 but CUDA is unavailable: {cuda_unavailable_reason()}"
    )
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
