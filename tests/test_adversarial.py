"""The adversarial same-bytes harness (bench/adversarial.py): the CPU kernel's pixels pinned.

The fast subset runs here; ``python -m bench.adversarial`` checks all cases (a few
seconds) and ``--update`` re-pins after a change meant to alter pixels.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench import adversarial
from bench.adversarial import (
    CORNER_CASES,
    FULL_CASES,
    PIN_FILE,
    build_case,
    case_indices,
    check_pins,
    read_pins,
    write_pins,
)
from engine.raster import render


def test_fast_subset_draws_the_pinned_pixels():
    """The CPU kernel's pages of the fast subset hash to the committed pins."""
    result = check_pins(fast=True)
    assert result.ok, result.summary()
    labelled = sum(build_case(i).labelled for i in case_indices(fast=True))
    assert result.checked + result.skipped_labelled == len(case_indices(fast=True))
    assert result.checked >= len(case_indices(fast=True)) - labelled
    assert 100 <= len(case_indices(fast=True)) < FULL_CASES / 8


def test_pin_file_covers_the_full_set():
    pinned = read_pins()
    assert sorted(pinned["pins"]) == list(range(FULL_CASES))
    assert pinned["cases"] == FULL_CASES and pinned["corner_cases"] == CORNER_CASES
    assert all(len(a) == len(b) == 16 for a, b in pinned["pins"].values())
    # Every case draws something distinct enough that the pins are not all one value.
    assert len({pixels for _, pixels in pinned["pins"].values()}) > FULL_CASES * 0.9


def test_one_changed_pixel_fails_the_check():
    """A kernel that alters one pixel of one case is caught, and the case is named."""
    target = case_indices(fast=True)[5]
    victim = build_case(target)

    def off_by_one(signals, spec):
        pages = render(signals, spec)
        if signals.shape == victim.signals.shape and np.array_equal(
            signals, victim.signals, equal_nan=True
        ):
            pages = pages.copy()
            pages.reshape(-1)[pages.size // 2] ^= 1
        return pages

    result = check_pins(fast=True, renderer=off_by_one)
    assert not result.ok
    assert result.pixels_changed == [victim.describe()]
    assert result.inputs_changed == [] and result.unpinned == []
    assert "--update" in result.summary()


def test_changed_inputs_and_missing_pins_fail_the_check(tmp_path):
    data = json.loads(PIN_FILE.read_text())
    data["pins"]["0"][0] = "f" * 16  # the adversarial set itself changed
    del data["pins"]["16"]
    path = tmp_path / "pins.json"
    path.write_text(json.dumps(data))
    result = check_pins(path=path, indices=[0, 16, 32])
    assert not result.ok and result.checked == 2
    assert result.inputs_changed == [build_case(0).describe()]
    assert result.unpinned == [16]
    assert "adversarial set itself changed" in result.summary()


def test_label_cases_are_skipped_when_the_glyphs_differ(tmp_path):
    data = json.loads(PIN_FILE.read_text())
    data["glyph_atlas"] = "0" * 16
    path = tmp_path / "pins.json"
    path.write_text(json.dumps(data))
    labelled = [i for i in case_indices(fast=True) if build_case(i).labelled]
    assert labelled
    result = check_pins(path=path, indices=labelled + [0])
    assert result.ok and result.checked == 1 and result.skipped_labelled == len(labelled)
    assert any("glyphs differ" in note for note in result.notes)


def test_update_writes_a_pin_the_check_accepts(tmp_path, monkeypatch):
    monkeypatch.setattr(adversarial, "FULL_CASES", 40)
    path = tmp_path / "pins.json"
    changed = write_pins(path)
    assert changed == {"pixels_changed": 0, "inputs_changed": 0, "new": 40, "cases": 40}
    pinned = read_pins(path)
    assert pinned["pins"] == {i: p for i, p in read_pins()["pins"].items() if i < 40}
    assert check_pins(path=path, indices=range(40)).ok
    assert write_pins(path)["new"] == 0


def test_cases_are_deterministic_and_cover_the_adversarial_classes():
    cases = [build_case(i) for i in range(FULL_CASES)]
    assert build_case(77).inputs_digest == cases[77].inputs_digest
    values = np.concatenate([c.signals.reshape(-1) for c in cases])
    assert np.isnan(values).any() and np.isposinf(values).any() and np.isneginf(values).any()
    finite = values[np.isfinite(values)]
    assert finite.max() >= 1e12 and finite.min() <= -1e12
    assert (np.signbit(values) & (values == 0)).any()  # signed zero
    assert ((finite != 0) & (np.abs(finite) < np.finfo(np.float32).tiny)).any()  # subnormal
    specs = [c.spec for c in cases]
    assert {s.channels for s in specs} == set(range(1, 7))
    assert any(s.width % 2 for s in specs) and any(s.height % 2 for s in specs)
    assert max(s.height for s in specs) > 2 * 254  # several row chunks of the CPU sweep
    assert {c.signals.shape[2] for c in cases} >= {1, 2, 15360}
    assert len({s.line_width for s in specs}) >= 8 and {1, 255} <= {s.ink_levels for s in specs}
    for flag in ("color", "grid", "overlap"):
        assert any(getattr(s, flag) for s in specs) and not all(getattr(s, flag) for s in specs)
    assert not all(s.antialias for s in specs) and any(s.labels for s in specs)
    assert {s.context for s in specs} == {0, 1, 2}
    constant = [
        c
        for c in cases
        for row in c.signals.reshape(-1, c.signals.shape[2])
        if row.size > 1 and np.isfinite(row[0]) and (row == row[0]).all()
    ]
    assert constant
    assert all(math.isfinite(s) and s > 0 for spec in specs for s in spec.scales_uv)


def test_command_line_checks_and_refuses_a_fast_update(capsys):
    assert adversarial.main(["--fast"]) == 0
    assert "same pixels" in capsys.readouterr().out
    assert adversarial.main(["--fast", "--update"]) == 2
    assert adversarial.main(["--pins", "/nonexistent/pins.json"]) == 2
    assert "no pin file at /nonexistent/pins.json" in capsys.readouterr().err
    with pytest.raises(ValueError, match="case index"):
        build_case(FULL_CASES)
