"""Render workers start from a fork server that has the render path loaded, without torch."""

from __future__ import annotations

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
