"""What a ``psgvlm render --workers N`` worker needs, loaded once in the fork server.

The pool of :func:`engine.pipeline.render_dataset` starts its workers from a fork server
(``multiprocessing``'s ``forkserver`` method, where the platform has it) that imports this
module first: the readers, the filters, the rasterizer and the encoder are imported and
their numba kernels loaded from numba's disk cache once, and every worker forked from the
server starts with them in memory (milliseconds instead of the 1-3 s a spawned worker
spends importing numba and loading kernels). Nothing here imports torch, webdataset or
scipy.

The server and its workers ignore SIGINT: a Ctrl-C reaches every process of the command
(a terminal signals the whole process group), and the main process alone handles it,
ending the workers (:func:`engine.pipeline._execute_pool`); the server is not killed
half-way through loading, and no worker prints a traceback or is left waiting for work.

The server and its workers use numba's ``workqueue`` threading layer: numba's OpenMP
layer refuses to run in a process forked from one that loaded it ("fork() called from a
process already using GNU OpenMP"), and loading a parallel kernel loads the layer. No
parallel kernel is run here (the workers start their threads on their first parallel
call).
"""

from __future__ import annotations

import gc
import signal
import sys

import numba
import numpy as np


def _in_fork_server() -> bool:
    """True while ``multiprocessing``'s fork server is importing this module (its preload).

    Imported anywhere else (a test, a doctest run), the module changes nothing: the
    threading layer of that process is left alone.
    """
    frame = sys._getframe()
    while frame is not None:
        code = frame.f_code
        if code.co_name == "main" and code.co_filename.endswith("forkserver.py"):
            return True
        frame = frame.f_back
    return False


if _in_fork_server():
    # the server's workers restore the handler it had before its own: ignored, as here
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    numba.config.THREADING_LAYER = "workqueue"  # fork-safe; set before any kernel loads
    gc.disable()  # the imports below create objects by the million, none of them garbage

from . import dsp, encode, epochs, pipeline, preprocess  # noqa: E402, F401 - preloaded
from .io import datasets, edf, hypnogram  # noqa: E402, F401
from .raster import RenderSpec, load_kernel  # noqa: E402

__all__ = ["preload"]


def preload() -> None:
    """Import the render path and load its kernels (no thread pool is started)."""
    import pyedflib  # noqa: F401 - the EDF reader's backend

    dsp._kernels()
    edf._convert_records()(
        np.zeros((1, 2), np.uint8),
        np.zeros((1, 1), "<i2"),
        2,
        np.zeros(1, np.int64),
        np.ones(1, np.int64),
        np.ones(1),
        np.zeros(1),
        np.array([0, 1], np.int64),
        0,
        1,
        np.empty(1, np.float32),
    )
    spec = RenderSpec.for_roles(["eeg"], width=64, height=32, labels=("warm-up",))
    load_kernel(spec)
    pages = np.full((1, 32, 64), 255, np.uint8)
    pages[0, 10:12] = 0
    encode.encode_batch(pages, "png")


if _in_fork_server():
    try:
        preload()
    except Exception:  # noqa: BLE001 - a worker then loads what it needs itself
        pass
    finally:
        # What the server holds now lives as long as every worker: frozen, a worker's
        # collections never walk it (nor touch its pages, which stay shared).
        gc.freeze()
        gc.enable()
