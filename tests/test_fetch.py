"""Tests for engine.fetch against a local http.server (no internet)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from engine.errors import DatasetError
from engine.fetch import fetch_sleep_edf, parse_subjects, read_checksums
from psgvlm.cli import main

FILES = [
    "sleep-cassette/SC4001E0-PSG.edf",
    "sleep-cassette/SC4001EC-Hypnogram.edf",
    "sleep-cassette/SC4002E0-PSG.edf",
    "sleep-cassette/SC4002EC-Hypnogram.edf",
    "sleep-cassette/SC4011E0-PSG.edf",
    "sleep-cassette/SC4011EH-Hypnogram.edf",
    "sleep-cassette/SC4021E0-PSG.edf",
    "sleep-cassette/SC4021EH-Hypnogram.edf",
    "sleep-telemetry/ST7011J0-PSG.edf",
    "sleep-telemetry/ST7011JP-Hypnogram.edf",
]


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def do_GET(self):  # noqa: N802 - http.server's naming
        self.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serve a fake PhysioNet project (files + SHA256SUMS.txt) on 127.0.0.1."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "physionet"
    lines = []
    for number, relpath in enumerate(FILES):
        data = f"{relpath} {number}".encode() * 50
        (root / relpath).parent.mkdir(parents=True, exist_ok=True)
        (root / relpath).write_bytes(data)
        lines.append(f"{hashlib.sha256(data).hexdigest()}  {relpath}")
    (root / "SHA256SUMS.txt").write_text("\n".join(lines) + "\n")
    requests: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(root))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/"
    yield url, root, requests
    httpd.shutdown()
    httpd.server_close()


def test_parse_subjects():
    assert parse_subjects("0-3") == [0, 1, 2, 3]
    assert parse_subjects("5, 0-1,1") == [0, 1, 5]
    for bad in ("a", "3-1", "1-", ""):
        with pytest.raises(DatasetError, match="--subjects"):
            parse_subjects(bad)


def test_read_checksums():
    digest = "ab" * 32
    assert read_checksums(f"{digest}  dir/x.edf\n\n{digest} *y.edf\n") == {
        "dir/x.edf": digest,
        "y.edf": digest,
    }
    with pytest.raises(DatasetError, match="line 1"):
        read_checksums("nothex  x.edf")


def test_fetch_downloads_selected_subjects_verified_and_resumes(server, tmp_path):
    url, root, requests = server
    dest = tmp_path / "data"
    paths = fetch_sleep_edf(dest, [0, 1], base_url=url, progress=False)
    assert [p.name for p in paths] == [
        "SC4001E0-PSG.edf",
        "SC4001EC-Hypnogram.edf",
        "SC4002E0-PSG.edf",
        "SC4002EC-Hypnogram.edf",
        "SC4011E0-PSG.edf",
        "SC4011EH-Hypnogram.edf",
    ]
    for path in paths:
        relpath = path.relative_to(dest).as_posix()
        assert path.read_bytes() == (root / relpath).read_bytes()
    assert requests[0] == "/SHA256SUMS.txt"
    assert len(requests) == 7
    # Interrupted download: one file lost, one truncated; a rerun fetches only those two.
    paths[0].unlink()
    paths[3].write_bytes(paths[3].read_bytes()[:10])
    requests.clear()
    again = fetch_sleep_edf(dest, [0, 1], base_url=url, progress=False)
    assert again == paths
    assert sorted(requests) == sorted(
        [
            "/SHA256SUMS.txt",
            "/sleep-cassette/SC4001E0-PSG.edf",
            "/sleep-cassette/SC4002EC-Hypnogram.edf",
        ]
    )
    assert paths[3].read_bytes() == (root / "sleep-cassette/SC4002EC-Hypnogram.edf").read_bytes()


def test_fetch_rejects_a_file_whose_hash_differs(server, tmp_path):
    url, root, _ = server
    (root / "sleep-cassette/SC4021E0-PSG.edf").write_bytes(b"tampered")
    with pytest.raises(DatasetError, match="SC4021E0-PSG.edf"):
        fetch_sleep_edf(tmp_path / "data", [2], base_url=url, progress=False)
    assert not (tmp_path / "data/sleep-cassette/SC4021E0-PSG.edf").exists()


def test_fetch_errors_name_what_is_missing(server, tmp_path):
    url, _, _ = server
    with pytest.raises(DatasetError, match="lists no sleep-cassette files"):
        fetch_sleep_edf(tmp_path, [50], base_url=url, progress=False)
    with pytest.raises(DatasetError, match="cannot download"):
        fetch_sleep_edf(tmp_path, [0], base_url=url + "nothing/", progress=False)


def test_fetch_command_line(server, tmp_path, capsys):
    url, _, _ = server
    dest = tmp_path / "cli"
    argv = ["fetch", "sleep-edf", "--subjects", "1", "--dest", str(dest), "--base-url", url]
    assert main([*argv, "--study", "sleep-telemetry", "--no-progress"]) == 0
    assert sorted(p.name for p in (dest / "sleep-telemetry").iterdir()) == [
        "ST7011J0-PSG.edf",
        "ST7011JP-Hypnogram.edf",
    ]
    assert "2 files (1 recordings)" in capsys.readouterr().out
    assert main(["fetch", "shhs", "--dest", str(dest)]) == 2
    assert "NSRR" in capsys.readouterr().err


def test_fetched_files_pair_for_rendering(server, tmp_path):
    from engine.io.datasets import find_pairs

    url, _, _ = server
    fetch_sleep_edf(tmp_path / "data", [0], base_url=url, progress=False)
    pairs = find_pairs(f"sleep-edf:{tmp_path / 'data'}")
    assert [(p.subject, p.recording) for p in pairs] == [("00", "SC4001E0"), ("00", "SC4002E0")]
    assert all(isinstance(p.psg_path, Path) for p in pairs)
