"""The recordings a server was given, their model, and the work done off the request path.

A :class:`Library` holds one :class:`~vlm.serve.night.Night` per recording, the stagers
(:class:`~vlm.runtime.Stager`) they share (one, or the shipped defaults, each night taking
the one its channels fill best) and a lock around them (one model call at a time), and
two kinds of background work:

- a worker thread that opens recordings and stages them chunk by chunk, the one the
  page shows first (:meth:`Library.focus`), then the others;
- :class:`Jobs`: questions and explanations, run one at a time in a thread and polled by
  the page (``GET /api/jobs/ID``), so a slow model never holds a request open.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import PSGError

from .night import Entry, Night

if TYPE_CHECKING:
    from vlm.runtime import Stager

__all__ = ["Library", "Jobs", "Job"]

logger = logging.getLogger(__name__)

#: Finished jobs kept for polling (the oldest are dropped first).
_KEEP_JOBS = 200


@dataclass
class Job:
    """One question or explanation: ``running`` → ``done`` (``result``) or ``error``."""

    id: str
    kind: str
    rid: str
    epoch: int
    status: str = "running"
    result: dict[str, Any] | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    image: bytes | None = None  # the explanation overlay (PNG)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "recording": self.rid, "epoch": self.epoch,
                "status": self.status, "result": self.result, "error": self.error}  # fmt: skip


class Jobs:
    """Work run in one background thread, looked up by id."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="psgvlm-job")
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)

    def submit(self, kind: str, rid: str, epoch: int, work: Callable[[Job], dict]) -> Job:
        """Run ``work(job)`` in the background; its dict becomes ``job.result``."""
        job = Job(f"{kind}-{next(self._ids)}", kind, rid, epoch)
        with self._lock:
            self._jobs[job.id] = job
            done = [j for j in self._jobs.values() if j.status != "running"]
            for old in done[: max(0, len(self._jobs) - _KEEP_JOBS)]:
                del self._jobs[old.id]

        def run() -> None:
            try:
                job.result = work(job)
                job.status = "done"
            except PSGError as err:
                job.error, job.status = str(err), "error"
            except Exception as err:  # noqa: BLE001 - reported to the page, server lives on
                logger.exception("%s failed", job.id)
                job.error, job.status = f"{type(err).__name__}: {err}", "error"

        self._pool.submit(run)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class Library:
    """The recordings of one server (see the module docstring).

    Parameters
    ----------
    entries : sequence of Entry
        What :func:`vlm.serve.night.find_inputs` found.
    stagers : sequence of vlm.runtime.Stager
        The model, or several to pick from per recording (:class:`~vlm.serve.night.Night`).
    out_dir : path
        Edits, staging and exports go to ``out_dir/<id>/``.
    chunk, batch_size : int
        Epochs per staging step and per forward pass.
    low_confidence : float
        The page's default threshold for "next low-confidence epoch".
    """

    def __init__(self, entries: Sequence[Entry], stagers: Sequence[Stager], out_dir: str | Path,
                 chunk: int = 16, batch_size: int = 8,
                 low_confidence: float = 0.6) -> None:  # fmt: skip
        if not entries:
            raise PSGError("no recordings to serve")
        self.out = Path(out_dir)
        self.low_confidence = float(low_confidence)
        self.model_lock = threading.Lock()
        self.nights: dict[str, Night] = {
            e.rid: Night(e, stagers, self.out / e.rid, self.model_lock, chunk, batch_size)
            for e in entries
        }
        self.jobs = Jobs()
        self._focus: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, rid: str) -> Night | None:
        """The night with id ``rid`` (None when the server was not given it)."""
        return self.nights.get(rid)

    def focus(self, rid: str) -> None:
        """Work on ``rid`` first (the recording the page shows)."""
        if rid in self.nights and rid != self._focus:
            self._focus = rid
            self._wake.set()

    # -- the worker ---------------------------------------------------------------------
    def _next(self) -> Night | None:
        focused = self.nights.get(self._focus) if self._focus else None
        if focused is not None and focused.pending():
            return focused
        waiting = [n for n in self.nights.values() if n.status == "waiting"]
        if waiting:
            return waiting[0]
        return next((n for n in self.nights.values() if n.pending()), None)

    def _run(self) -> None:
        while not self._stop.is_set():
            night = self._next()
            if night is None:
                self._wake.wait(0.5)
                self._wake.clear()
                continue
            night.step()

    def start(self) -> Library:
        """Start the worker thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="psgvlm-stager", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current step; pending jobs are dropped."""
        self._stop.set()
        self._wake.set()
        self.jobs.shutdown()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait(self, rid: str | None = None, timeout: float = 120.0) -> None:
        """Block until ``rid`` (default: every night) has no work left (tests, scripts)."""
        nights = [self.nights[rid]] if rid else list(self.nights.values())
        deadline = time.monotonic() + timeout
        while any(n.pending() or n.status == "opening" for n in nights):
            if time.monotonic() > deadline:
                raise TimeoutError(f"staging not finished in {timeout:g} s")
            time.sleep(0.05)
