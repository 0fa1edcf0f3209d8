"""Render workers start from a fork server that has the render path loaded, without torch."""

from __future__ import annotations

import hashlib
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor

import pytest

from engine import pipeline


def test_workers_start_preloaded_without_torch_or_scipy_signal():
    context = pipeline._worker_context()
    if "forkserver" not in multiprocessing.get_all_start_methods():
        pytest.skip("no fork server on this platform (workers are spawned)")
    assert context.get_start_method() == "forkserver"
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        first = [pool.submit(pipeline.worker_probe) for _ in range(2)]
        answers = [future.result(timeout=120) for future in first]
    for answer in answers:
        assert answer["heavy"] == [], answer
        assert answer["preloaded"], answer
    # The server is up now: a new pool's workers are forked from it, ready at once.
    started = time.perf_counter()
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        answer = pool.submit(pipeline.worker_probe).result(timeout=60)
    assert answer["preloaded"] and answer["heavy"] == []
    assert time.perf_counter() - started < 5.0  # ~0.05 s on a quiet machine


@pytest.mark.slow
def test_two_workers_write_the_shards_one_worker_writes(tmp_path):
    """``--workers 2`` (a pool, longest recording first) writes the same shard files, byte
    for byte, as ``--workers 1``."""
    nights = pipeline.write_synthetic_nights(tmp_path / "nights", 3, 0.1)
    # One night twice as long: the longest goes first, the order of drawing changes.
    pipeline.write_synthetic_nights(tmp_path / "long", 1, 0.2)
    for path in (tmp_path / "long").iterdir():
        path.rename(nights / path.name.replace("night-0000", "night-0009"))
    settings = pipeline.RenderSettings(montage="eeg=C4-M1,emg=chin", width=64, height=32)
    digests = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        report = pipeline.render_dataset(
            [f"synthetic:{nights}"], out, settings, workers=workers, progress=False
        )
        assert report.ok and report.rendered == 4
        digests.append(
            {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in out.glob("*.tar")}
        )
        assert not (out / "_work").exists()
    assert digests[0] == digests[1] and digests[0]


def test_threading_layer_check_script_reports_both_kernels_under_both_layers(tmp_path):
    """scripts/threading_layer_check.py at toy size: every layer, both kernel builds."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "layers.json"
    done = subprocess.run(
        [sys.executable, "scripts/threading_layer_check.py", "--nights", "1", "--hours",
         "0.1", "--rounds", "1", "--out", str(out)],
        cwd=root, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    assert set(report["layers"]) == {"default", "workqueue"}
    assert report["layers"]["workqueue"]["threading_layer"] == "workqueue"
    for layer in report["layers"].values():
        assert set(layer["seconds"]) == {"parallel", "serial"}
        assert all(s > 0 for times in layer["seconds"].values() for s in times)
    assert "| workqueue (workqueue) | serial |" in done.stdout
