"""Tests for engine.shards: keys, samples, atomic shard writing, manifest, verification."""

from __future__ import annotations

import hashlib
import json
import tarfile

import numpy as np
import pytest
import webdataset as wds

from engine.errors import ShardError
from engine.shards import (
    Manifest,
    ShardSink,
    library_versions,
    list_shards,
    make_sample,
    read_manifest,
    sample_key,
    sanitize_key,
    shard_name,
    verify_shards,
)


def _sample(i: int, cls: int | None = None, payload: bytes | None = None) -> dict:
    cls = i % 5 if cls is None else cls
    key = sample_key("synthetic", "night 0.edf", i)
    return make_sample(key, payload or bytes([i % 256]) * 100, "png", cls, {"epoch": i})


def _write(directory, n: int, maxcount: int = 10, split: str = "train") -> list:
    with ShardSink(directory, split, maxcount=maxcount) as sink:
        for i in range(n):
            sink.write(_sample(i))
    return sink.shards


@pytest.mark.parametrize(
    ("text", "expected"),
    [("SC4001E0", "SC4001E0"), ("01-02-0001 PSG", "01-02-0001-PSG"), ("a.b/c:d", "a-b-c-d")],
)
def test_sanitize_key_replaces_everything_outside_the_alphabet(text, expected):
    assert sanitize_key(text) == expected


def test_sample_key_format_and_no_dots():
    key = sample_key("sleep-edf", "SC4001E0.v2", 7)
    assert key == "sleep-edf_SC4001E0-v2_00007"
    assert "." not in key
    with pytest.raises(ShardError, match="epoch index"):
        sample_key("d", "r", -1)
    with pytest.raises(ShardError):
        sanitize_key("")


def test_shard_name_and_bad_split():
    assert shard_name("val", 12) == "val-000012.tar"
    with pytest.raises(ShardError, match="unknown split"):
        shard_name("dev", 0)


def test_make_sample_fields_and_validation():
    sample = make_sample("d_r_00001", b"\x89PNG", "png", 3, {"stage": "N3"})
    assert sample == {
        "__key__": "d_r_00001",
        "png": b"\x89PNG",
        "cls": b"3",
        "json": b'{"stage":"N3"}',
    }
    assert make_sample("k", b"x", "jpg", -1, {})["cls"] == b"-1"
    with pytest.raises(ShardError, match="encoded bytes"):
        make_sample("k", np.zeros((4, 4), np.uint8), "png", 0, {})
    with pytest.raises(ShardError, match="class id"):
        make_sample("k", b"x", "png", 5, {})
    with pytest.raises(ShardError, match="image format"):
        make_sample("k", b"x", "gif", 0, {})
    with pytest.raises(ShardError, match="outside"):
        make_sample("a.b", b"x", "png", 0, {})
    with pytest.raises(ShardError, match="JSON"):
        make_sample("k", b"x", "png", 0, {"bad": float("nan")})


def test_sink_rolls_over_by_count_and_reads_back(tmp_path):
    shards = _write(tmp_path, 25, maxcount=10)
    assert [s.name for s in shards] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert [s.count for s in shards] == [10, 10, 5]
    assert sum(sum(s.labels.values()) for s in shards) == 25
    assert shards[2].labels == {"W": 1, "N1": 1, "N2": 1, "N3": 1, "R": 1}
    assert not list(tmp_path.glob(".*.tmp"))
    for info in shards:
        path = tmp_path / info.name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == info.sha256
        assert path.stat().st_size == info.size
    samples = list(wds.WebDataset(str(tmp_path / "train-{000000..000002}.tar"), shardshuffle=False))
    assert [int(s["cls"]) for s in samples] == [i % 5 for i in range(25)]
    assert json.loads(samples[13]["json"]) == {"epoch": 13}
    assert samples[0]["__key__"] == "synthetic_night-0-edf_00000"


def test_sink_members_have_zero_mtime_and_no_extended_headers(tmp_path):
    _write(tmp_path, 3)
    path = tmp_path / "train-000000.tar"
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    assert [m.name for m in members][:3] == [
        "synthetic_night-0-edf_00000.cls",
        "synthetic_night-0-edf_00000.json",
        "synthetic_night-0-edf_00000.png",
    ]
    assert all(m.mtime == 0 for m in members)
    # One 512-byte header per member (no pax header), data padded to 512, end blocks.
    data_blocks = sum(512 + -(-m.size // 512) * 512 for m in members)
    assert path.stat().st_size - data_blocks <= 10240


def test_sink_rolls_over_by_size(tmp_path):
    with ShardSink(tmp_path, "val", maxcount=1000, maxsize=2500) as sink:
        for i in range(6):
            sink.write(_sample(i, payload=b"z" * 1000))
    assert [s.count for s in sink.shards] == [3, 3]
    assert all(s.split == "val" for s in sink.shards)


def test_sink_abort_keeps_complete_shards_only(tmp_path):
    with pytest.raises(RuntimeError), ShardSink(tmp_path, "train", maxcount=4) as sink:
        for i in range(6):
            sink.write(_sample(i))
        raise RuntimeError("killed")
    assert [p.name for p in tmp_path.iterdir()] == ["train-000000.tar"]


def test_sink_custom_names_and_argument_checks(tmp_path):
    with ShardSink(tmp_path, "test", name_format="rec-{shard:04d}.tar", start=3) as sink:
        sink.write(_sample(0))
    assert (tmp_path / "rec-0003.tar").is_file()
    with pytest.raises(ShardError, match="maxcount"):
        ShardSink(tmp_path, "train", maxcount=0)
    with pytest.raises(ShardError, match="unknown split"):
        ShardSink(tmp_path, "holdout")


def _manifest_for(tmp_path) -> Manifest:
    shards = _write(tmp_path, 12, maxcount=5)
    manifest = Manifest(
        shards=shards,
        subjects={"train": ["synthetic:0"], "val": [], "test": []},
        failed=[{"file": "x.edf", "reason": "truncated"}],
        command=["psgvlm", "render"],
    )
    manifest.write(tmp_path)
    return manifest


def test_manifest_round_trip_and_verify(tmp_path):
    manifest = _manifest_for(tmp_path)
    again = read_manifest(tmp_path)
    assert again == manifest
    assert again.split_counts() == {
        "train": {"samples": 12, "shards": 3, "W": 3, "N1": 3, "N2": 2, "N3": 2, "R": 2}
    }
    for package in ("psgvlm", "numpy", "numba", "webdataset", "python"):
        assert again.versions[package] == library_versions()[package]
    assert verify_shards(tmp_path) == {
        "shards": 3,
        "samples": 12,
        "splits": again.split_counts(),
    }


def test_verify_detects_missing_extra_and_changed_shards(tmp_path):
    _manifest_for(tmp_path)
    (tmp_path / "train-000001.tar").rename(tmp_path / "keep.bak")
    with pytest.raises(ShardError, match="missing"):
        verify_shards(tmp_path)
    (tmp_path / "keep.bak").rename(tmp_path / "train-000001.tar")
    (tmp_path / "val-000000.tar").write_bytes(b"")
    with pytest.raises(ShardError, match="not in manifest"):
        verify_shards(tmp_path)
    (tmp_path / "val-000000.tar").unlink()
    # Replace a shard with a valid one holding fewer samples.
    with ShardSink(tmp_path / "other", "train", maxcount=100) as sink:
        sink.write(_sample(5))
    (tmp_path / "other" / "train-000000.tar").replace(tmp_path / "train-000001.tar")
    with pytest.raises(ShardError, match="1 samples, manifest says 5"):
        verify_shards(tmp_path)


def test_verify_detects_changed_bytes_and_bad_manifest(tmp_path):
    manifest = _manifest_for(tmp_path)
    manifest.shards[0].sha256 = "0" * 64
    manifest.write(tmp_path)
    with pytest.raises(ShardError, match="sha256"):
        verify_shards(tmp_path)
    assert verify_shards(tmp_path, check_hashes=False)["samples"] == 12
    (tmp_path / "manifest.json").write_text("{}")
    with pytest.raises(ShardError, match="malformed"):
        read_manifest(tmp_path)
    with pytest.raises(ShardError, match="no manifest"):
        read_manifest(tmp_path / "other")


def test_list_shards_ignores_temporary_and_foreign_files(tmp_path):
    for name in ("train-000000.tar", "val-000001.tar", ".train-000002.tar.tmp", "x.tar"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_shards(tmp_path)] == ["train-000000.tar", "val-000001.tar"]
    assert [p.name for p in list_shards(tmp_path, "val")] == ["val-000001.tar"]


def test_shards_are_written_byte_for_byte_as_webdataset_writes_them(tmp_path):
    """ShardSink writes tar members itself (no webdataset import, which imports torch),
    exactly as ``webdataset.TarWriter(encoder=False, mtime=0)`` would."""
    import io

    import webdataset as wds

    from engine.shards import _TarWriter

    samples = [
        make_sample(f"edf_rec_{i:05d}", bytes(range(256)) * (i + 1), "png", i % 5, {"epoch": i})
        for i in range(7)
    ]
    theirs, ours = io.BytesIO(), io.BytesIO()
    writer = wds.TarWriter(theirs, encoder=False, mtime=0)
    for sample in samples:
        writer.write(sample)
    writer.close()
    mine = _TarWriter(ours)
    for sample in samples:
        mine.write(sample)
    mine.close()
    assert ours.getvalue() == theirs.getvalue()
    with ShardSink(tmp_path, "train") as sink:
        for sample in samples:
            sink.write(sample)
    read = list(wds.WebDataset(str(tmp_path / "train-000000.tar"), shardshuffle=False))
    assert [s["__key__"] for s in read] == [s["__key__"] for s in samples]
