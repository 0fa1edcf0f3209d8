"""The one place that knows the WebDataset shard layout.

A shard directory holds ``{split}-{shard:06d}.tar`` files and ``manifest.json``
(see docs/ARCHITECTURE.md). Every sample is ``{key}.{png|jpg|npy}``, ``{key}.cls``
(ASCII class id) and ``{key}.json`` (metadata). Writers are handed encoded bytes,
never arrays, and write tar members with ``mtime=0`` (a float mtime makes Python's
tarfile add a 1 KB header per member).

Shards are written atomically: a shard is written under a hidden temporary name
(``.{name}.tmp``) and renamed to its final name only once it is closed and synced,
so a process killed at any moment leaves either a complete shard or none.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import platform
import re
import tarfile
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import ShardError
from .stages import stage_name

__all__ = [
    "SPLITS",
    "IMAGE_FORMATS",
    "MANIFEST_NAME",
    "sanitize_key",
    "sample_key",
    "shard_name",
    "make_sample",
    "ShardInfo",
    "ShardSink",
    "Manifest",
    "atomic_write_text",
    "library_versions",
    "read_manifest",
    "list_shards",
    "verify_shards",
]

#: Split names, in the order shards are numbered and reported.
SPLITS: tuple[str, ...] = ("train", "val", "test")
#: Image fields a sample may carry (exactly one per sample).
IMAGE_FORMATS: tuple[str, ...] = ("png", "jpg", "npy")
#: File name of the manifest inside a shard directory.
MANIFEST_NAME = "manifest.json"

_KEY_FORBIDDEN = re.compile(r"[^A-Za-z0-9_-]")
_SHARD_NAME = re.compile(r"^(?P<split>[a-z]+)-(?P<shard>\d{6})\.tar$")
_MIN_CLASS, _MAX_CLASS = -1, 4


def sanitize_key(text: str) -> str:
    """Replace every character outside ``[A-Za-z0-9_-]`` by ``-``.

    WebDataset splits a member name at its first dot, so keys must not contain one.

    Examples
    --------
    >>> sanitize_key("SC4001 E0.edf")
    'SC4001-E0-edf'
    """
    if not isinstance(text, str) or not text:
        raise ShardError(f"a sample key part must be a non-empty string, got {text!r}")
    return _KEY_FORBIDDEN.sub("-", text)


def sample_key(dataset: str, recording: str, epoch: int) -> str:
    """Key of one epoch: ``{dataset}_{recording}_{epoch:05d}``, sanitized.

    Examples
    --------
    >>> sample_key("sleep-edf", "SC4001E0", 12)
    'sleep-edf_SC4001E0_00012'
    """
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ShardError(f"epoch index must be a non-negative integer, got {epoch!r}")
    return sanitize_key(f"{dataset}_{recording}_{epoch:05d}")


def shard_name(split: str, shard: int) -> str:
    """Final file name of a shard: ``{split}-{shard:06d}.tar``."""
    if split not in SPLITS:
        raise ShardError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if shard < 0:
        raise ShardError(f"shard number must be non-negative, got {shard}")
    return f"{split}-{shard:06d}.tar"


def make_sample(
    key: str, image_bytes: bytes, fmt: str, cls: int, meta: Mapping[str, Any] | bytes
) -> dict[str, Any]:
    """Build one WebDataset sample from an encoded image, its class and metadata.

    Parameters
    ----------
    key : str
        Sample key from :func:`sample_key` (no dots, only ``[A-Za-z0-9_-]``).
    image_bytes : bytes
        The encoded image (PNG, JPEG or ``.npy`` bytes).
    fmt : {"png", "jpg", "npy"}
        Image field name.
    cls : int
        Class id 0..4, or -1 for an unknown-stage epoch.
    meta : mapping or bytes
        JSON-serialisable metadata, or its JSON text already encoded (UTF-8 bytes, as
        ``json.dumps(meta, separators=(",", ":"), allow_nan=False)`` gives it).

    Returns
    -------
    dict
        ``{"__key__", fmt, "cls", "json"}`` with bytes values.
    """
    if not key or _KEY_FORBIDDEN.search(key):
        raise ShardError(f"sample key {key!r} contains characters outside [A-Za-z0-9_-]")
    if fmt not in IMAGE_FORMATS:
        raise ShardError(f"image format must be one of {IMAGE_FORMATS}, got {fmt!r}")
    if not isinstance(image_bytes, (bytes, bytearray, memoryview)):
        raise ShardError(
            f"sample {key}: image must be encoded bytes, got {type(image_bytes).__name__}"
        )
    if isinstance(cls, bool) or not isinstance(cls, int) or not _MIN_CLASS <= cls <= _MAX_CLASS:
        raise ShardError(f"sample {key}: class id must be an integer in -1..4, got {cls!r}")
    if isinstance(meta, (bytes, bytearray)):
        meta_bytes = bytes(meta)
    else:
        try:
            meta_bytes = json.dumps(meta, separators=(",", ":"), allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as err:
            raise ShardError(f"sample {key}: metadata is not JSON-serialisable: {err}") from None
    return {"__key__": key, fmt: bytes(image_bytes), "cls": str(cls).encode(), "json": meta_bytes}


@dataclass
class ShardInfo:
    """One complete shard: its file name, split, sample count, label counts and sha256."""

    name: str
    split: str
    count: int
    labels: dict[str, int]
    sha256: str
    size: int

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ShardInfo:
        """Rebuild from :meth:`dataclasses.asdict` output."""
        return cls(**{k: data[k] for k in ("name", "split", "count", "labels", "sha256", "size")})


#: Bytes a shard file buffers between system calls, and between starts of writeback.
_WRITE_STEP = 1 << 20
_PAGE = 4096


class _HashingFile(io.RawIOBase):
    """A write-only file that hashes and counts what passes through it.

    Every ``_WRITE_STEP`` bytes, the whole pages written so far are handed to the disk
    (``posix_fadvise(POSIX_FADV_DONTNEED)`` starts their writeback without waiting for
    it, and keeps the rendered shards out of the page cache), so that the ``fsync`` at
    :meth:`close` waits for the last megabyte rather than the whole shard.
    """

    def __init__(self, path: Path):
        super().__init__()
        # A 1 MiB buffer: one system call per ~60 samples rather than one per sample.
        self._file = open(path, "wb", buffering=_WRITE_STEP)  # noqa: SIM115 - closed in close()
        self.digest = hashlib.sha256()
        self.size = 0
        self._handed = 0  # bytes whose writeback has been started

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.digest.update(data)
        self.size += len(data)
        written = self._file.write(data)
        if self.size - self._handed >= _WRITE_STEP and hasattr(os, "posix_fadvise"):
            self._file.flush()
            end = self.size - self.size % _PAGE
            os.posix_fadvise(
                self._file.fileno(), self._handed, end - self._handed, os.POSIX_FADV_DONTNEED
            )
            self._handed = end
        return written

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        super().close()


_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
#: Fields of a member header after its name, mode, uid and gid (ustar, as tarfile writes
#: them): see :func:`_member_header`.
_OWNER = b"bigdata".ljust(32, b"\0")
_TAIL = b"0" + b"\0" * 100 + tarfile.POSIX_MAGIC + _OWNER + _OWNER + b"\0" * (8 + 8 + 155 + 12)
#: Mode, uid and gid fields, then (after the size) the mtime field: the same always.
_MODE_IDS = b"0000444\0" + b"0000000\0" * 2
_MTIME = b"00000000000\0"
#: The checksum of a header counts its own field as 8 spaces; the name and the size are
#: the only fields that vary (the name's padding is NUL bytes, which add nothing).
_CHECKSUM_BASE = 8 * 32 + sum(_TAIL) + sum(_MODE_IDS) + sum(_MTIME)


def _member_header(name: str, size: int) -> bytes:
    """The 512-byte header ``tarfile`` writes for a regular member (mode 0444, owner
    ``bigdata``, mtime 0) when the name fits the ustar field; else the pax form.

    The fast form is what ``TarInfo.tobuf(PAX_FORMAT)`` gives for an ASCII name of at
    most 100 bytes and a size under 8 GiB; anything else is built by tarfile itself.
    """
    encoded = name.encode("ascii", "surrogateescape") if name.isascii() else b""
    if not encoded or len(encoded) > 100 or size >= 8**11:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, 0, 0o444
        info.uname = info.gname = "bigdata"
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    size_field = b"%011o\0" % size
    checksum = sum(encoded) + sum(size_field) + _CHECKSUM_BASE
    return b"".join(
        (encoded.ljust(100, b"\0"), _MODE_IDS, size_field, _MTIME, b"%06o\0 " % checksum, _TAIL)
    )


class _TarWriter:
    """Samples into a tar stream, byte for byte as ``webdataset.TarWriter(encoder=False,
    mtime=0)`` writes them: one member per field, in sorted field order.

    Headers are built from a template (:func:`_member_header`) and each sample goes to
    the file in one write: tarfile's per-member header building cost more than encoding
    the image.
    """

    def __init__(self, fileobj: Any) -> None:
        self.fileobj = fileobj
        self.offset = 0

    def write(self, sample: Mapping[str, Any]) -> int:
        """Append a sample's fields (bytes, or str for text); return the bytes added."""
        if "__key__" not in sample:
            raise ValueError("object must contain a __key__")
        key = sample["__key__"]
        total = 0
        chunks = []
        for name in sorted(sample):
            if name.startswith("_"):
                continue
            value = sample[name]
            if isinstance(value, str):
                value = value.encode("utf-8")
            if not isinstance(value, (bytes, bytearray, memoryview)):
                raise ValueError(f"{name} doesn't map to a bytes after encoding ({type(value)})")
            size = len(value)
            chunks.append(_member_header(f"{key}.{name}", size))
            chunks.append(value)
            if size % _BLOCK:
                chunks.append(b"\0" * (_BLOCK - size % _BLOCK))
            total += size
        data = b"".join(chunks)
        self.fileobj.write(data)
        self.offset += len(data)
        return total

    def close(self) -> None:
        """Write the end-of-archive blocks, padded to tarfile's record size."""
        end = b"\0" * (2 * _BLOCK)
        self.offset += len(end)
        if self.offset % _RECORD:
            end += b"\0" * (_RECORD - self.offset % _RECORD)
        self.fileobj.write(end)


class ShardSink:
    """Write samples into a sequence of shards, each one renamed into place when complete.

    Parameters
    ----------
    directory : str or Path
        Where the shards go (created if missing).
    split : str
        Split recorded in each :class:`ShardInfo`.
    name_format : str, optional
        ``str.format`` pattern with a ``{shard}`` field; defaults to
        ``"{split}-{shard:06d}.tar"``.
    maxcount : int
        Most samples per shard.
    maxsize : float
        Bytes after which a shard is closed and the next one begun.
    start : int
        Number of the first shard.

    Notes
    -----
    Used as a context manager, an exception inside the block deletes the shard in
    progress and keeps the complete ones. Members are written as
    :class:`webdataset.TarWriter` writes them (``encoder=False``: bytes in, no
    re-encoding; ``mtime=0``, mode 0444, owner ``bigdata``), by :mod:`tarfile` directly:
    importing webdataset imports torch, which costs seconds and which the engine avoids.

    Examples
    --------
    >>> with ShardSink(tmp, "train", maxcount=1000) as sink:  # doctest: +SKIP
    ...     sink.write(make_sample(key, png, "png", 2, meta))
    >>> sink.shards  # doctest: +SKIP
    [ShardInfo(name='train-000000.tar', ...)]
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        split: str,
        name_format: str | None = None,
        maxcount: int = 10000,
        maxsize: float = 3e9,
        start: int = 0,
    ):
        if split not in SPLITS:
            raise ShardError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if maxcount < 1:
            raise ShardError(f"maxcount must be at least 1, got {maxcount}")
        if maxsize <= 0:
            raise ShardError(f"maxsize must be positive, got {maxsize}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.split = split
        self.name_format = name_format or split + "-{shard:06d}.tar"
        self.maxcount = maxcount
        self.maxsize = maxsize
        self.next_shard = start
        self.shards: list[ShardInfo] = []
        self._writer = None
        self._file: _HashingFile | None = None
        self._name = ""
        self._count = 0
        self._size = 0
        self._labels: Counter[str] = Counter()

    def _temp_path(self, name: str) -> Path:
        return self.directory / f".{name}.tmp"

    def _open(self) -> None:
        self._name = self.name_format.format(shard=self.next_shard)
        self.next_shard += 1
        self._file = _HashingFile(self._temp_path(self._name))
        self._writer = _TarWriter(self._file)
        self._count, self._size = 0, 0
        self._labels = Counter()

    def write(self, sample: Mapping[str, Any]) -> None:
        """Append one sample (from :func:`make_sample`), starting a new shard when full."""
        if self._writer is not None and (
            self._count >= self.maxcount or self._size >= self.maxsize
        ):
            self._finish()
        if self._writer is None:
            self._open()
        try:
            self._size += self._writer.write(sample)
        except ValueError as err:
            raise ShardError(f"shard {self._name}: {err}") from None
        self._count += 1
        self._labels[stage_name(int(sample["cls"]))] += 1

    def _finish(self) -> None:
        """Close the shard in progress, sync it and rename it to its final name."""
        assert self._writer is not None and self._file is not None
        self._writer.close()
        self._file.close()
        final = self.directory / self._name
        os.replace(self._temp_path(self._name), final)
        self.shards.append(
            ShardInfo(
                name=self._name,
                split=self.split,
                count=self._count,
                labels=dict(sorted(self._labels.items())),
                sha256=self._file.digest.hexdigest(),
                size=self._file.size,
            )
        )
        self._writer, self._file = None, None

    def close(self) -> list[ShardInfo]:
        """Finish the shard in progress; return every shard written."""
        if self._writer is not None:
            self._finish()
        return self.shards

    def abort(self) -> None:
        """Drop the shard in progress (its temporary file); complete shards stay."""
        if self._writer is not None:
            try:
                self._writer.close()
                self._file.close()
            finally:
                self._temp_path(self._name).unlink(missing_ok=True)
                self._writer, self._file = None, None

    def __enter__(self) -> ShardSink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a synced temporary file and a rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def library_versions() -> dict[str, str]:
    """Versions of psgvlm and the libraries that shape the shards' bytes."""
    return dict(_library_versions())


@functools.cache
def _library_versions() -> dict[str, str]:
    """:func:`library_versions`, looked up once per process (each lookup parses a package's
    metadata: ~10 ms apiece, which a short render paid on every manifest)."""
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    found = {"psgvlm": __version__, "python": platform.python_version()}
    for package in ("numpy", "numba", "webdataset", "pyedflib", "scipy"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "not installed"
    return found


@dataclass
class Manifest:
    """Everything a shard directory holds, written as ``manifest.json``.

    Attributes
    ----------
    shards : list of ShardInfo
        Every shard, in name order.
    subjects : dict
        Split -> sorted subject ids (``dataset:subject``).
    recordings : list of dict
        Per recording: dataset, subject, recording, split, files, epoch count, shards.
    failed : list of dict
        Recordings that could not be rendered: ``{"file", "reason"}`` (and
        ``recording`` where it got that far); a rerun of the command retries them.
    command : list of str
        The command line that produced the directory.
    config : dict
        Render parameters (montage, image size, format, preprocessing, split...).
    versions : dict
        :func:`library_versions` at render time.
    unscored : bool
        The recordings were rendered without hypnograms (``psgvlm render --unscored``):
        every sample is an UNK epoch (``cls`` -1), for inference or pre-training.
    """

    shards: list[ShardInfo] = field(default_factory=list)
    subjects: dict[str, list[str]] = field(default_factory=dict)
    recordings: list[dict[str, Any]] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)
    command: list[str] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=library_versions)
    unscored: bool = False

    def split_counts(self) -> dict[str, dict[str, int]]:
        """Per split: ``{"samples": n, "shards": k, "W": .., "N1": .., ...}``."""
        totals: dict[str, Counter[str]] = {}
        for info in self.shards:
            counter = totals.setdefault(info.split, Counter())
            counter["samples"] += info.count
            counter["shards"] += 1
            counter.update(info.labels)
        return {split: dict(totals[split]) for split in SPLITS if split in totals}

    @property
    def total_samples(self) -> int:
        """Number of samples across all shards."""
        return sum(info.count for info in self.shards)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with per-split totals."""
        data = asdict(self)
        data["totals"] = self.split_counts()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        """Rebuild from :meth:`to_dict` output."""
        try:
            return cls(
                shards=[ShardInfo.from_dict(s) for s in data["shards"]],
                subjects={k: list(v) for k, v in data["subjects"].items()},
                recordings=list(data.get("recordings", [])),
                failed=list(data.get("failed", [])),
                command=list(data.get("command", [])),
                config=dict(data.get("config", {})),
                versions=dict(data.get("versions", {})),
                unscored=bool(data.get("unscored", False)),
            )
        except (KeyError, TypeError, AttributeError) as err:
            raise ShardError(f"manifest is missing or has a malformed field: {err}") from None

    def write(self, directory: str | os.PathLike) -> Path:
        """Write ``manifest.json`` into ``directory`` atomically; return its path."""
        path = Path(directory) / MANIFEST_NAME
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, sort_keys=False) + "\n")
        return path


def read_manifest(directory: str | os.PathLike) -> Manifest:
    """Read ``DIR/manifest.json``.

    Raises
    ------
    ShardError
        When the file is missing or not a valid manifest.
    """
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        raise ShardError(f"{path}: no manifest (is this a psgvlm shard directory?)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ShardError(f"{path}: cannot read manifest: {err}") from None
    return Manifest.from_dict(data)


def list_shards(directory: str | os.PathLike, split: str | None = None) -> list[Path]:
    """Final shard files in ``directory`` (optionally of one split), in name order."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ShardError(f"{directory}: not a directory")
    found = []
    for path in sorted(directory.iterdir()):
        match = _SHARD_NAME.match(path.name)
        if match and (split is None or match["split"] == split):
            found.append(path)
    return found


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _iter_samples(path: Path) -> Iterator[dict[str, bytes]]:
    """The samples of a shard as WebDataset groups them: consecutive members sharing the
    part of their name before the first dot of the file name (``__key__``)."""
    sample: dict[str, Any] = {}
    with tarfile.open(path, mode="r|") as tar:
        for member in tar:
            if not member.isfile():
                continue
            folder, _, base = member.name.rpartition("/")
            stem, dot, field_name = base.partition(".")
            if not dot:
                continue
            key = f"{folder}/{stem}" if folder else stem
            if sample and sample["__key__"] != key:
                yield sample
                sample = {}
            handle = tar.extractfile(member)
            sample["__key__"] = key
            sample[field_name] = handle.read() if handle is not None else b""
    if sample:
        yield sample


def _count_samples(path: Path) -> tuple[int, Counter[str], list[str]]:
    """Re-read one shard as WebDataset would: count, labels, keys."""
    labels: Counter[str] = Counter()
    keys: list[str] = []
    try:
        for sample in _iter_samples(path):
            if "cls" not in sample:
                raise ShardError(f"{path.name}: sample {sample['__key__']} has no cls field")
            labels[stage_name(int(sample["cls"]))] += 1
            keys.append(sample["__key__"])
    except (tarfile.TarError, OSError, ValueError) as err:
        raise ShardError(f"{path}: cannot be read as a WebDataset shard: {err}") from None
    return len(keys), labels, keys


def verify_shards(directory: str | os.PathLike, check_hashes: bool = True) -> dict[str, Any]:
    """Re-read every shard and compare it with the manifest.

    Checks that the shard files on disk are exactly the manifest's, that each holds the
    manifest's sample count and label counts (read back as ``webdataset.WebDataset``
    groups members),
    that its sha256 matches, and that no sample key appears twice.

    Returns
    -------
    dict
        ``{"shards": n, "samples": n, "splits": Manifest.split_counts()}``.

    Raises
    ------
    ShardError
        On the first disagreement, naming the shard and what differs.
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    on_disk = {path.name for path in list_shards(directory)}
    listed = {info.name for info in manifest.shards}
    if on_disk != listed:
        missing = sorted(listed - on_disk)
        extra = sorted(on_disk - listed)
        raise ShardError(
            f"{directory}: shard files differ from the manifest "
            f"(missing: {missing[:5] or 'none'}, not in manifest: {extra[:5] or 'none'})"
        )
    seen: set[str] = set()
    for info in manifest.shards:
        path = directory / info.name
        count, labels, keys = _count_samples(path)
        if count != info.count:
            raise ShardError(f"{info.name}: {count} samples, manifest says {info.count}")
        if dict(labels) != {k: v for k, v in info.labels.items() if v}:
            raise ShardError(f"{info.name}: labels {dict(labels)}, manifest says {info.labels}")
        duplicated = seen.intersection(keys)
        if duplicated or len(set(keys)) != len(keys):
            raise ShardError(f"{info.name}: duplicated sample keys, e.g. {sorted(duplicated)[:3]}")
        seen.update(keys)
        if check_hashes and _file_sha256(path) != info.sha256:
            raise ShardError(f"{info.name}: sha256 differs from the manifest (file changed?)")
    return {
        "shards": len(manifest.shards),
        "samples": manifest.total_samples,
        "splits": manifest.split_counts(),
    }
