"""``psgvlm fetch``: download Sleep-EDF Expanded from PhysioNet, checksums verified.

PhysioNet publishes ``SHA256SUMS.txt`` at the root of each project version, one
``<sha256>  <relative path>`` line per file. The command fetches it first, selects the
requested subjects' PSG and hypnogram files and downloads them with pooch, which
checks each file's hash, downloads through a temporary file, and skips files already
present with the right hash, so an interrupted download resumes where it stopped.

Example::

    psgvlm fetch sleep-edf --subjects 0-19 --dest data/sleep-edf
    psgvlm render sleep-edf:data/sleep-edf --out shards/sleep-edf

NSRR datasets (SHHS, MESA, ...) need a personal access token and NSRR's own
downloader; see docs/cluster.md for the steps and the ``shhs:DIR`` layout.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path

from .errors import DatasetError

__all__ = [
    "SLEEP_EDF_URL",
    "STUDIES",
    "parse_subjects",
    "read_checksums",
    "fetch_sleep_edf",
    "add_arguments",
    "run",
]

logger = logging.getLogger(__name__)

#: Root of Sleep-EDF Expanded 1.0.0 on PhysioNet (holds SHA256SUMS.txt).
SLEEP_EDF_URL = "https://physionet.org/files/sleep-edfx/1.0.0/"
#: Studies of Sleep-EDF Expanded: folder -> file-name pattern (group "ss" = subject).
STUDIES: dict[str, re.Pattern[str]] = {
    "sleep-cassette": re.compile(r"^SC4(?P<ss>\d\d)\d\w\w-(PSG|Hypnogram)\.edf$"),
    "sleep-telemetry": re.compile(r"^ST7(?P<ss>\d\d)\d\w\w-(PSG|Hypnogram)\.edf$"),
}
_CHECKSUMS = "SHA256SUMS.txt"
_NSRR_DATASETS = ("shhs", "mesa", "mros", "cfs", "chat", "ccshs", "sof")


def parse_subjects(text: str) -> list[int]:
    """Parse ``"0-19"``, ``"3"`` or ``"0-4,7,10-12"`` into sorted subject numbers.

    Examples
    --------
    >>> parse_subjects("0-2,7")
    [0, 1, 2, 7]
    """
    subjects: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not match:
            raise DatasetError(f"--subjects: cannot parse {part!r}; expected e.g. 0-19 or 0,3,5-7")
        first = int(match[1])
        last = int(match[2]) if match[2] is not None else first
        if last < first:
            raise DatasetError(f"--subjects: empty range {part.strip()!r}")
        subjects.update(range(first, last + 1))
    return sorted(subjects)


def read_checksums(text: str, source: str = _CHECKSUMS) -> dict[str, str]:
    """Parse a ``SHA256SUMS.txt`` text into ``{relative path: sha256}``."""
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        match = re.fullmatch(r"([0-9a-fA-F]{64}) [ *]?(.+)", line.strip())
        if not match:
            raise DatasetError(f"{source}: line {number} is not '<sha256>  <file>': {line!r}")
        sums[match[2].strip()] = match[1].lower()
    if not sums:
        raise DatasetError(f"{source}: no checksums")
    return sums


def _download_checksums(base_url: str, dest: Path) -> dict[str, str]:
    """Fetch ``SHA256SUMS.txt`` afresh (it is the authority on every other file)."""
    import pooch

    url = base_url + _CHECKSUMS
    target = dest / _CHECKSUMS
    partial = dest / f".{_CHECKSUMS}.part"
    try:
        pooch.downloaders.choose_downloader(url, progressbar=False)(url, str(partial), None)
    except Exception as err:  # requests/ftp errors have no common base class
        partial.unlink(missing_ok=True)
        raise DatasetError(f"cannot download {url}: {err}") from None
    os.replace(partial, target)
    return read_checksums(target.read_text(encoding="utf-8"), url)


def fetch_sleep_edf(
    dest: str | os.PathLike,
    subjects: list[int],
    study: str = "sleep-cassette",
    base_url: str = SLEEP_EDF_URL,
    progress: bool = True,
) -> list[Path]:
    """Download the PSG and hypnogram files of some Sleep-EDF Expanded subjects.

    Parameters
    ----------
    dest : str or Path
        Destination; files land in ``dest/{study}/``, mirroring PhysioNet.
    subjects : list of int
        Subject numbers (``ss`` in ``SC4ssN``).
    study : {"sleep-cassette", "sleep-telemetry"}
        Which study.
    base_url : str
        Project root holding ``SHA256SUMS.txt`` (a mirror or a local test server).
    progress : bool
        Show pooch's tqdm progress bars.

    Returns
    -------
    list of Path
        The local files, PSGs and hypnograms, sorted.

    Raises
    ------
    DatasetError
        When the checksums cannot be fetched, no file matches the subjects, or a
        download fails or has the wrong hash.
    """
    import pooch

    if study not in STUDIES:
        raise DatasetError(f"unknown study {study!r}; expected one of {', '.join(STUDIES)}")
    if not subjects:
        raise DatasetError("no subjects requested")
    base_url = base_url if base_url.endswith("/") else base_url + "/"
    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    sums = _download_checksums(base_url, dest)
    wanted = set(subjects)
    registry = {}
    for relpath, digest in sums.items():
        folder, _, name = relpath.rpartition("/")
        match = STUDIES[study].match(name)
        if folder == study and match and int(match["ss"]) in wanted:
            registry[relpath] = f"sha256:{digest}"
    found_subjects = {int(STUDIES[study].match(p.rpartition("/")[2])["ss"]) for p in registry}
    if not registry:
        raise DatasetError(
            f"{base_url}{_CHECKSUMS} lists no {study} files for subjects "
            f"{subjects[0]}..{subjects[-1]}"
        )
    if missing := sorted(wanted - found_subjects):
        logger.warning("no %s files for subjects %s (not in the study)", study, missing)
    fetcher = pooch.create(path=dest, base_url=base_url, registry=registry, retry_if_failed=2)
    paths = []
    for number, relpath in enumerate(sorted(registry), 1):
        logger.info("[%d/%d] %s", number, len(registry), relpath)
        try:
            paths.append(Path(fetcher.fetch(relpath, progressbar=progress)))
        except ValueError as err:  # pooch's hash mismatch
            raise DatasetError(f"{base_url}{relpath}: {err}") from None
        except Exception as err:  # network errors from requests
            raise DatasetError(f"cannot download {base_url}{relpath}: {err}") from None
    return sorted(paths)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``psgvlm fetch``."""
    parser.add_argument(
        "dataset",
        help="dataset to download: sleep-edf (NSRR datasets such as shhs need NSRR's "
        "own downloader and a token; see docs/cluster.md)",
    )
    parser.add_argument(
        "--subjects", default="0-19", help="subject numbers, e.g. 0-19 or 0,3,5-7 (default 0-19)"
    )
    parser.add_argument("--dest", required=True, type=Path, help="destination folder")
    parser.add_argument(
        "--study", default="sleep-cassette", choices=sorted(STUDIES), help="Sleep-EDF study"
    )
    parser.add_argument(
        "--base-url", default=SLEEP_EDF_URL, help=f"project root URL (default {SLEEP_EDF_URL})"
    )
    parser.add_argument("--no-progress", action="store_true", help="hide progress bars")


def run(args: argparse.Namespace) -> int:
    """Run ``psgvlm fetch``."""
    dataset = args.dataset.lower()
    if dataset in _NSRR_DATASETS:
        raise DatasetError(
            f"{dataset} is an NSRR dataset: it needs your NSRR token and NSRR's downloader "
            f"(gem install nsrr; nsrr download {dataset}/polysomnography/edfs/...); "
            f"then render it with 'psgvlm render {dataset}:DIR' (see docs/cluster.md)"
        )
    if dataset != "sleep-edf":
        raise DatasetError(f"cannot fetch {args.dataset!r}; supported: sleep-edf")
    paths = fetch_sleep_edf(
        args.dest,
        parse_subjects(args.subjects),
        study=args.study,
        base_url=args.base_url,
        progress=not args.no_progress,
    )
    psgs = sum(path.name.endswith("-PSG.edf") for path in paths)
    print(
        f"{len(paths)} files ({psgs} recordings) in {Path(args.dest) / args.study}, "
        f"sha256 verified; render with: psgvlm render sleep-edf:{args.dest} --out DIR"
    )
    return 0
