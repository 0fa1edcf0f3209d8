"""The device preprocessing (engine.dsp_cuda) gives scipy's results, under numba's simulator.

As for the raster kernel (tests/test_raster_cuda.py), the simulator must be switched on
before numba is imported, so the checks run in a subprocess with NUMBA_ENABLE_CUDASIM=1.
They cover decoding EDF and BDF samples on the device, the resampler, the chunked
zero-phase filter (one chunk and several), epochs cut on the device, and a whole
``render --device cuda`` run against the CPU run's images.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_edf_file

ROOT = Path(__file__).resolve().parents[1]

SIMULATED = textwrap.dedent(
    """
    import sys, shutil
    from pathlib import Path
    import numpy as np
    from numba import config
    assert config.ENABLE_CUDASIM
    from scipy import signal as sps
    from engine import dsp, dsp_cuda
    from engine.io.edf import open_recording

    folder = Path(sys.argv[1])
    rng = np.random.default_rng(5)
    # Resampler: down and up, against scipy.
    for up, down, n in ((25, 64, 700), (2, 1, 300), (4, 5, 257)):
        x = (rng.standard_normal(n) * 30 + 200).astype(np.float32)
        ours = dsp_cuda.to_host(dsp_cuda.resample_poly(dsp_cuda.to_device(x), up, down))
        theirs = sps.resample_poly(x.astype(np.float64), up, down)
        assert ours.shape == theirs.shape and ours.dtype == np.float32
        assert np.abs(ours - theirs).max() < 2e-6 * 300, (up, down)
    # Zero-phase filter: one chunk (slow 0.3-Hz edge), several chunks (fast poles).
    for edges, n, chunks in (((0.3, 35.0), 1500, 1), ((10.0, 45.0), 3000, 2)):
        sos = dsp.butter_sos(4, edges, "bandpass", 100.0)
        stage = dsp.filter_stage(sos)
        total = n + 2 * stage.padlen
        assert dsp_cuda._layout(total, stage.warmup)[1] == chunks
        x = np.cumsum(rng.standard_normal(n)) + 40 * rng.standard_normal(n) + 300
        ours = dsp_cuda.to_host(dsp_cuda.sosfiltfilt(sos, dsp_cuda.to_device(x), 27))
        theirs = sps.sosfiltfilt(sps.butter(4, edges, "bandpass", fs=100.0, output="sos"), x,
                                 padlen=27)
        assert np.abs(ours - theirs).max() < 1e-9 * np.abs(x).max(), edges
    # Decoding on the device: EDF (16-bit) and BDF (24-bit) samples.
    for name in ("small.edf", "small.bdf"):
        with open_recording(folder / name) as recording:
            host = recording.read_channels([0, 1])
            device = [dsp_cuda.to_host(c) for c in dsp_cuda.decode_channels(recording, [0, 1])]
        for a, b in zip(host, device):
            assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b), name
    # Epochs cut on the device equal the CPU's (context and the NaN beyond the ends).
    from engine.epochs import DeviceEpochSource, open_epochs
    from engine.pipeline import RenderSettings, render_dataset, write_synthetic_nights
    nights = write_synthetic_nights(folder / "nights", 1, 60 / 3600)
    psg, hyp = nights / "night-0000-PSG.edf", nights / "night-0000-Hypnogram.edf"
    montage = "eeg=C4-M1,emg=chin"
    cpu = open_epochs(psg, hyp, montage)
    gpu = open_epochs(psg, hyp, montage, device="cuda")
    assert isinstance(gpu, DeviceEpochSource)
    assert np.abs(dsp_cuda.to_host(gpu.signals) - cpu.signals).max() < 1e-3
    a = next(cpu.iter_batches(8, context=1)).signals
    b = dsp_cuda.to_host(next(gpu.iter_batches(8, context=1)).signals)
    assert a.shape == b.shape and np.array_equal(np.isnan(a), np.isnan(b))
    assert np.nanmax(np.abs(a - b)) < 1e-3
    # A whole render on the device draws the CPU's images.
    from engine.encode import decode_image
    from engine.shards import list_shards
    import tarfile
    settings = RenderSettings(montage=montage, width=64, height=32)
    images = {}
    for device in ("cpu", "cuda"):
        out = folder / f"out-{device}"
        report = render_dataset([f"synthetic:{nights}"], out, settings, split=(1, 0, 0),
                                device=device, progress=False)
        assert report.ok and report.epochs == 2
        images[device] = [
            decode_image(tarfile.open(path).extractfile(member).read())
            for path in list_shards(out) for member in tarfile.open(path).getmembers()
            if member.name.endswith(".png")
        ]
    for x, y in zip(images["cpu"], images["cuda"]):
        assert np.mean(x != y) < 1e-3
    print("device-preprocessing-ok")
    """
)


def test_device_preprocessing_matches_scipy_and_the_cpu_under_simulator(tmp_path):
    import pyedflib

    rng = np.random.default_rng(1)
    channels = [
        ("EEG C4-M1", rng.standard_normal(4 * 64) * 40, 64.0, "uV"),
        ("EMG chin", rng.standard_normal(4 * 64) * 10, 64.0, "uV"),
    ]
    write_edf_file(tmp_path / "small.edf", channels)
    writer = pyedflib.EdfWriter(str(tmp_path / "small.bdf"), 2, pyedflib.FILETYPE_BDFPLUS)
    try:
        writer.setSignalHeaders(
            [
                {
                    "label": label,
                    "dimension": unit,
                    "sample_frequency": fs,
                    "physical_min": -500.0,
                    "physical_max": 500.0,
                    "digital_min": -8388608,
                    "digital_max": 8388607,
                }
                for label, _, fs, unit in channels
            ]
        )
        writer.writeSamples([c[1] for c in channels])
    finally:
        writer.close()
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-c", SIMULATED, str(tmp_path)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "device-preprocessing-ok" in result.stdout


@pytest.mark.gpu
@pytest.mark.skipif(os.environ.get("PSGVLM_TEST_GPU") != "1", reason="set PSGVLM_TEST_GPU=1")
def test_native_device_preprocessing_matches_the_cpu(tmp_path):
    """On a real GPU: a 2-h night decoded, filtered and cut on the device equals the CPU's."""
    from engine import dsp_cuda
    from engine.epochs import DeviceEpochSource, open_epochs
    from engine.pipeline import write_synthetic_nights
    from engine.raster import cuda_available
    from engine.raster.gpu import cp, cuda_unavailable_reason

    assert cuda_available(), (
        f"PSGVLM_TEST_GPU=1 but CUDA is unavailable: {cuda_unavailable_reason()}"
    )
    assert cp is not None, "PSGVLM_TEST_GPU=1 but CuPy is not installed (pip install -e .[gpu])"
    nights = write_synthetic_nights(tmp_path / "nights", 1, 2.0)
    psg, hyp = nights / "night-0000-PSG.edf", nights / "night-0000-Hypnogram.edf"
    montage = "eeg=C4-M1,eog=E1-M2,emg=chin,eeg=F4-M1,eog=E2-M1,eeg=O2-M1"
    cpu = open_epochs(psg, hyp, montage)
    gpu = open_epochs(psg, hyp, montage, device="cuda")
    assert isinstance(gpu, DeviceEpochSource) and isinstance(gpu.signals, cp.ndarray)
    assert np.abs(dsp_cuda.to_host(gpu.signals) - cpu.signals).max() < 1e-2
    a = next(cpu.iter_batches(64, context=1)).signals
    b = dsp_cuda.to_host(next(gpu.iter_batches(64, context=1)).signals)
    assert np.array_equal(np.isnan(a), np.isnan(b)) and np.nanmax(np.abs(a - b)) < 1e-2
