"""Stage corrections of one recording, saved as they are made.

An :class:`EditLog` is a JSON Lines file (``edits.jsonl``), one entry per correction or
undo, appended and flushed to disk before the request that made it returns, so a reload
or a server restart loses nothing. The log is never rewritten: the stage of an epoch is
the one its latest entry gives (last write wins, whichever tab wrote it), and the whole
history stays readable.

Entry fields: ``seq`` (1, 2, ...), ``time`` (UTC, ISO 8601), ``client`` (the tab that
made it), ``epoch``, ``stage`` (``W``, ``N1``, ``N2``, ``N3``, ``R``, or null: back to
the model's stage), ``previous`` (the corrected stage it replaced, or null) and ``undo``
(the ``seq`` it undoes, or null).

Examples
--------
>>> import tempfile, pathlib
>>> log = EditLog(pathlib.Path(tempfile.mkdtemp()) / "edits.jsonl", n_epochs=10)
>>> log.set(3, "N2", client="tab-a")["seq"]
1
>>> log.stages
{3: 'N2'}
>>> log.undo("tab-a")["stage"] is None, log.stages
(True, {})
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from engine.errors import PSGError
from engine.stages import STAGE_NAMES, Stage, to_stage

__all__ = ["EditLog", "EditConflict", "parse_stage", "CLIENT_PATTERN"]

logger = logging.getLogger(__name__)

#: Client (tab) ids: letters, digits, ``-`` and ``_``, at most 64 characters.
CLIENT_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

# One key per stage, as scoring software binds them (W, 1, 2, 3, R).
_KEYS = {"w": "W", "0": "W", "1": "N1", "2": "N2", "3": "N3", "r": "R", "5": "R"}


class EditConflict(PSGError):
    """An undo that would overwrite a later correction (from another tab)."""


def parse_stage(value: str) -> str:
    """A stage name from what a user or a key gives (``"2"``, ``"n2"``, ``"REM"``...).

    Raises
    ------
    PSGError
        For anything but one of the five scored stages.

    Examples
    --------
    >>> [parse_stage(v) for v in ("w", "2", "N3", "rem", "R")]
    ['W', 'N2', 'N3', 'R', 'R']
    """
    text = str(value).strip()
    if text.lower() in _KEYS:
        return _KEYS[text.lower()]
    try:
        stage = to_stage(text)
    except PSGError:
        stage = Stage.UNK
    if stage == Stage.UNK:
        raise PSGError(f"stage {value!r}: expected one of {', '.join(STAGE_NAMES)}")
    return STAGE_NAMES[int(stage)]


class EditLog:
    """The corrections of one recording: an append-only JSON Lines file.

    Parameters
    ----------
    path : Path
        The log file (created with its folder on the first edit).
    n_epochs : int
        Epochs of the recording; entries for other epochs found in the file are skipped
        with a warning.
    """

    def __init__(self, path: str | os.PathLike, n_epochs: int) -> None:
        self.path = Path(path)
        self.n_epochs = int(n_epochs)
        self._lock = threading.Lock()
        self.entries: list[dict[str, Any]] = []
        self.stages: dict[int, str] = {}
        self._undone: set[int] = set()
        self._cut = False  # the file ends inside a line (a write cut short)
        self._load()

    # -- reading -----------------------------------------------------------------------
    def _load(self) -> None:
        if not self.path.is_file():
            return
        text = self.path.read_text(encoding="utf-8")
        self._cut = bool(text) and not text.endswith("\n")
        lines = text.splitlines()
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                epoch, stage = int(entry["epoch"]), entry["stage"]
                if stage is not None:
                    stage = parse_stage(stage)
                int(entry["seq"])
            except (ValueError, KeyError, TypeError, PSGError) as err:
                # A line cut short by a crash mid-write: the entries before it stand.
                logger.warning("%s:%d: skipped an unreadable edit (%s)", self.path, number, err)
                continue
            if not 0 <= epoch < self.n_epochs:
                logger.warning("%s:%d: epoch %d is not in this recording (0..%d); skipped",
                               self.path, number, epoch, self.n_epochs - 1)  # fmt: skip
                continue
            entry["stage"] = stage
            self._apply(entry)

    def _apply(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)
        if entry["stage"] is None:
            self.stages.pop(int(entry["epoch"]), None)
        else:
            self.stages[int(entry["epoch"])] = entry["stage"]
        if entry.get("undo") is not None:
            self._undone.add(int(entry["undo"]))

    @property
    def seq(self) -> int:
        """Sequence number of the latest entry (0: none)."""
        return int(self.entries[-1]["seq"]) if self.entries else 0

    def since(self, seq: int) -> list[dict[str, Any]]:
        """Entries after ``seq`` (what another tab has not seen yet)."""
        return [e for e in self.entries if int(e["seq"]) > seq]

    # -- writing -----------------------------------------------------------------------
    def _append(self, epoch: int, stage: str | None, client: str, undo: int | None) -> dict:
        entry = {
            "seq": self.seq + 1,
            "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
            "client": client,
            "epoch": int(epoch),
            "stage": stage,
            "previous": self.stages.get(int(epoch)),
            "undo": undo,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(("\n" if self._cut else "") + json.dumps(entry) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._cut = False
        self._apply(entry)
        return entry

    @staticmethod
    def _check_client(client: str) -> None:
        if not re.match(CLIENT_PATTERN, str(client)):
            raise PSGError(f"client {client!r}: letters, digits, '-' and '_' only (1-64)")

    def set(self, epoch: int, stage: str, client: str = "api") -> dict[str, Any]:
        """Correct ``epoch`` to ``stage`` (a stage name or key); returns the entry.

        Raises
        ------
        PSGError
            For an epoch outside the recording, an unknown stage or a malformed client.
        """
        if not 0 <= int(epoch) < self.n_epochs:
            raise PSGError(f"no epoch {epoch}: this recording has epochs 0..{self.n_epochs - 1}")
        self._check_client(client)
        name = parse_stage(stage)
        with self._lock:
            return self._append(int(epoch), name, client, None)

    def undo(self, client: str = "api") -> dict[str, Any] | None:
        """Undo ``client``'s latest correction not undone yet; None when there is none.

        Raises
        ------
        EditConflict
            When the epoch no longer has the stage this correction gave it (another tab
            corrected it since): undoing would silently drop that correction.
        """
        self._check_client(client)
        with self._lock:
            mine = [e for e in self.entries
                    if e["client"] == client and e.get("undo") is None
                    and int(e["seq"]) not in self._undone]  # fmt: skip
            if not mine:
                return None
            last = mine[-1]
            epoch = int(last["epoch"])
            if self.stages.get(epoch) != last["stage"]:
                latest = [e for e in self.entries if int(e["epoch"]) == epoch][-1]
                raise EditConflict(
                    f"epoch {epoch} was corrected again after this edit (to "
                    f"{latest['stage'] or 'the model stage'} by {latest['client']}); "
                    "correct it directly instead of undoing"
                )
            return self._append(epoch, last["previous"], client, int(last["seq"]))
