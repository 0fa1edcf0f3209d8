"""``psgvlm serve``: review nights in the browser (the page and API of :mod:`vlm.serve`).

Command line::

    psgvlm serve night.edf [more.edf | folder/ | prerau:DIR ...] [--model M --adapter A]
        [--hypnogram H] [--out psgvlm-serve] [--host 127.0.0.1] [--port 8765]

prints the URL to open (``--port 0``: a free port) and serves until Ctrl+C. Recordings
are opened and staged in the background, the one shown first; a file that cannot be read
shows its reason in the page. Corrections, the model's probabilities and exports are
kept under ``--out``, one folder per recording, so a restart loses nothing and does not
stage a night twice. The server listens on 127.0.0.1 unless ``--host`` says otherwise.
Without ``--model``, each recording is staged by the shipped default stager whose montage
it fills with the most channels (:func:`vlm.defaults.default_stagers`).
docs/serve.md describes the page, its keys and the JSON API.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.errors import PSGError

from ..model_options import add_model_arguments, stagers_from_args
from ..serve.app import bind, create_app, run_server, url_of
from ..serve.library import Library
from ..serve.night import find_inputs

__all__ = ["add_arguments", "run", "allowed_hosts"]

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def allowed_hosts(host: str) -> list[str] | None:
    """Host names a request may carry for a server on ``host`` (None: any).

    Examples
    --------
    >>> allowed_hosts("127.0.0.1")
    ['127.0.0.1', 'localhost', '::1', '[::1]']
    >>> allowed_hosts("0.0.0.0") is None
    True
    """
    if host in ("0.0.0.0", "::", ""):
        return None
    names = [host, *(h for h in _LOOPBACK if h != host)] if host in _LOOPBACK else [host]
    return names + ["[::1]"] if "::1" in names else names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``psgvlm serve``."""
    parser.add_argument("recordings", nargs="+", metavar="RECORDING",
                        help="EDF/BDF files, folders or globs of them (paired with their "
                        "hypnograms as psgvlm render pairs them), prerau:DIR")  # fmt: skip
    parser.add_argument("--hypnogram", type=Path,
                        help="the scorer's hypnogram of the one recording given: the reference "
                        "and the epoch grid (default: found beside the recording)")  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("psgvlm-serve"),
                        help="where corrections (edit logs), staging and exports are kept, one "
                        "folder per recording (default: ./psgvlm-serve)")  # fmt: skip
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=8765,
        help="port to listen on; 0 picks a free one (default: 8765)",
    )
    parser.add_argument("--batch-size", type=int, default=8,
                        help="epochs per forward pass (default: 8)")  # fmt: skip
    parser.add_argument("--low-confidence", type=float, default=0.6,
                        help="the page's 'next low-confidence epoch' threshold on the top "
                        "probability (default: 0.6)")  # fmt: skip
    add_model_arguments(parser, default="default, with no --adapter: each recording is staged "
                        "by the shipped stager whose montage it fills with the most channels "
                        "(vlm/default_models)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """``psgvlm serve``: check everything, then serve until interrupted."""
    if not 0 <= args.port <= 65535:
        raise PSGError(f"--port must be 0-65535, got {args.port}")
    if args.batch_size < 1:
        raise PSGError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not 0.0 < args.low_confidence < 1.0:
        raise PSGError(f"--low-confidence must be between 0 and 1, got {args.low_confidence}")
    stagers = stagers_from_args(args)
    entries = find_inputs([str(r) for r in args.recordings], args.hypnogram)
    library = Library(entries, stagers, args.out, batch_size=args.batch_size,
                      low_confidence=args.low_confidence)  # fmt: skip
    try:
        sock = bind(args.host, args.port)
    except OSError as err:
        raise PSGError(f"cannot listen on {args.host}:{args.port}: {err.strerror or err}") from None
    app = create_app(library, allowed_hosts(args.host))
    print(f"psgvlm serve: {url_of(sock)}  ({len(entries)} recording(s), kept in {args.out}; "
          "Ctrl+C stops)", flush=True)  # fmt: skip
    if args.host not in _LOOPBACK:
        print(f"psgvlm serve: listening on {args.host}: anyone who reaches this machine can "
              "read and correct these recordings", file=sys.stderr, flush=True)  # fmt: skip
    try:
        run_server(app, sock)
    finally:
        sock.close()
    return 0
