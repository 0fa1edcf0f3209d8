"""The adversarial same-bytes harness: the CPU render kernel's pixels, pinned by hash.

A fixed set of render cases built to break the kernel: NaN gaps and all-NaN channels,
±inf, ±1e12 and near-float32-max values, constant, signed-zero and subnormal signals,
single spikes, sample-by-sample zig-zags, 1-6 channels, odd widths and heights (32-600:
the CPU kernel sweeps rows in chunks of 254), 1-15,360 samples, line widths 0.25-16,
1-255 ink levels, aliased lines, colour, grid, overlap, context and channel labels.
Each case is drawn deterministically from its index (a PCG64 stream of uniform doubles
and only exact arithmetic, so no libm or numpy version changes a signal); the first
:data:`CORNER_CASES` are written out by hand.

``bench/pins/adversarial.json`` (:data:`PIN_FILE`) holds, per case, a digest of its
inputs (the spec and the signal bytes) and of the pixels the CPU kernel draws (sha256 of
the uint8 array's shape and bytes, 16 hex digits). A change that alters a pixel fails the
check until the pin is updated on purpose::

    python -m bench.adversarial            # the whole set (~2,000 cases, a few seconds)
    python -m bench.adversarial --fast     # the subset CI runs (tests/test_adversarial.py)
    python -m bench.adversarial --update   # re-pin after a change meant to alter pixels
    psgvlm bench pins [--fast] [--update]  # the same

Labels come from PIL's default font, which FreeType rasterises: a different Pillow or
FreeType can draw them differently without any change here. The pin records a digest of
the glyph atlas; where it differs, the label cases are skipped and the check says so.

Examples
--------
>>> case = build_case(3)
>>> case.signals.dtype, case.signals.shape[1] == case.spec.channels
(dtype('float32'), True)
>>> build_case(3).inputs_digest == case.inputs_digest   # the same bytes every time
True
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .report import BenchError, git_state, library_versions

__all__ = [
    "PIN_FILE",
    "SEED",
    "FULL_CASES",
    "FAST_EVERY",
    "CORNER_CASES",
    "Case",
    "CheckResult",
    "build_case",
    "case_indices",
    "pixel_digest",
    "glyph_digest",
    "compute_pins",
    "check_pins",
    "write_pins",
    "read_pins",
    "main",
]

#: The committed pin file.
PIN_FILE = Path(__file__).resolve().parent / "pins" / "adversarial.json"
#: Seed of every case's stream (``default_rng([SEED, index])``).
SEED = 20261126
#: Cases in the full set (hand-written corners first, then drawn ones).
FULL_CASES = 2048
#: The fast subset: the corners and every ``FAST_EVERY``-th drawn case.
FAST_EVERY = 16

_FORMAT = 1
_DIGEST_HEX = 16

# ----------------------------------------------------------------------------------------
# Signals: float64 from uniform doubles with exact arithmetic only, then float32.
# ----------------------------------------------------------------------------------------
#: Signal kinds, one per channel.
KINDS: tuple[str, ...] = (
    "walk", "white", "triangle", "square", "zigzag", "constant", "spike", "nan-gaps",
    "nan-edges", "all-nan", "inf", "huge", "mixed",
)  # fmt: skip

#: Constant values (multiplied by the channel's scale where marked).
_CONSTANTS: tuple[tuple[float, bool], ...] = (
    (0.0, False), (-0.0, False), (1.0, True), (-1.0, True), (0.5, True), (1.0000001, True),
    (1e12, False), (-1e12, False), (1e-40, False), (3.4e38, False), (-3.4e38, False),
)  # fmt: skip


class _Draw:
    """Choices from a case's stream of uniform doubles (PCG64: stable across numpy)."""

    def __init__(self, index: int) -> None:
        self.rng = np.random.Generator(np.random.PCG64([SEED, index]))

    def u(self, size: int | None = None) -> Any:
        return self.rng.random(size)

    def pick(self, options: Sequence[Any]) -> Any:
        return options[min(int(self.u() * len(options)), len(options) - 1)]

    def chance(self, p: float) -> bool:
        return bool(self.u() < p)

    def int_below(self, n: int) -> int:
        return min(int(self.u() * n), n - 1)


def _signal(draw: _Draw, kind: str, samples: int, scale: float) -> np.ndarray:
    amp = scale * draw.pick((1e-3, 0.05, 0.3, 0.9, 1.0, 1.5, 4.0, 1e3))
    i = np.arange(samples, dtype=np.float64)
    walk = np.cumsum(draw.u(samples) - 0.5) * (amp * draw.pick((0.05, 0.3, 1.0)))
    if kind == "walk":
        x = walk
    elif kind == "white":
        x = (2.0 * draw.u(samples) - 1.0) * amp
    elif kind == "triangle":
        period = draw.pick((2.0, 3.0, 7.0, 50.0, 333.0, 1000.0, 3001.0))
        x = (np.abs(np.fmod(i / period, 1.0) * 4.0 - 2.0) - 1.0) * amp
    elif kind == "square":
        period = draw.pick((2, 5, 64, 300))
        x = np.where((np.arange(samples) // period) % 2 == 0, amp, -amp)
    elif kind == "zigzag":
        x = np.where(np.arange(samples) % 2 == 0, amp, -amp)
    elif kind == "constant":
        value, scaled = draw.pick(_CONSTANTS)
        x = np.full(samples, value * scale if scaled else value)
    elif kind == "spike":
        x = np.zeros(samples)
        x[draw.int_below(samples)] = draw.pick((-1.0, 1.0)) * scale * draw.pick((0.5, 1, 3, 1e12))
    elif kind == "nan-gaps":
        x = walk.copy()
        for _ in range(1 + draw.int_below(4)):
            start = draw.int_below(samples)
            x[start : start + 1 + draw.int_below(max(1, samples // 4))] = np.nan
    elif kind == "nan-edges":
        x = walk.copy()
        x[: 1 + draw.int_below(3)] = np.nan
        x[samples - 1 - draw.int_below(3) :] = np.nan
    elif kind == "all-nan":
        x = np.full(samples, np.nan)
    elif kind == "inf":
        x = walk.copy()
        for _ in range(1 + draw.int_below(3)):
            x[draw.int_below(samples)] = draw.pick((np.inf, -np.inf))
    elif kind == "huge":
        x = walk.copy()
        for _ in range(1 + draw.int_below(3)):
            x[draw.int_below(samples)] = draw.pick((1e12, -1e12, 3.4e38))
    elif kind == "mixed":
        x = walk.copy()
        x[draw.u(samples) < 0.1] = np.nan
        x[draw.u(samples) < 0.02] = np.inf
        x[draw.u(samples) < 0.02] = -1e12
    else:  # pragma: no cover - KINDS is closed
        raise ValueError(kind)
    return x


# ----------------------------------------------------------------------------------------
# Cases
# ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One adversarial render: its spec, float32 signals and a one-line description."""

    index: int
    spec: Any  # engine.raster.RenderSpec
    signals: np.ndarray
    kinds: tuple[str, ...]

    @property
    def inputs_digest(self) -> str:
        """sha256 of the spec (JSON) and the signals' shape and bytes, 16 hex digits."""
        digest = hashlib.sha256(json.dumps(self.spec.to_dict(), sort_keys=True).encode())
        digest.update(repr(self.signals.shape).encode())
        digest.update(self.signals.tobytes())
        return digest.hexdigest()[:_DIGEST_HEX]

    @property
    def labelled(self) -> bool:
        """Whether the page carries labels (pixels then depend on Pillow/FreeType)."""
        return self.spec.labels is not None

    def describe(self) -> str:
        s = self.spec
        flags = [
            "aa" if s.antialias else "aliased",
            f"ink={s.ink_levels}",
            f"lw={s.line_width:g}",
            *(["overlap"] if s.overlap else []),
            *(["grid"] if s.grid else []),
            *(["color"] if s.color else []),
            *([f"context={s.context}"] if s.context else []),
            *(["labels"] if s.labels is not None else []),
        ]
        n, _, samples = self.signals.shape
        return (
            f"#{self.index}: {n}x{s.channels}ch {s.width}x{s.height} S={samples} "
            f"{' '.join(flags)} scales={','.join(f'{v:g}' for v in s.scales_uv)} "
            f"kinds={','.join(self.kinds)}"
        )


#: Hand-written corners: (spec keyword arguments, channel kinds, samples, images).
_CORNERS: tuple[tuple[dict[str, Any], tuple[str, ...], int, int], ...] = (
    ({"width": 64, "height": 32}, ("all-nan",), 300, 1),
    ({"width": 64, "height": 48}, ("inf", "inf"), 300, 2),
    ({"width": 97, "height": 61}, ("huge", "spike", "huge"), 1000, 1),
    ({"width": 64, "height": 64}, ("constant",) * 4, 64, 3),
    ({"width": 448, "height": 224}, ("walk",) * 6, 1, 1),
    ({"width": 448, "height": 224, "labels": tuple("ABCDEF")}, ("walk",) * 6, 3000, 2),
    ({"width": 448, "height": 448, "context": 2, "grid": True, "color": True},
     ("walk", "nan-gaps", "white", "triangle", "mixed", "square"), 15360, 1),
    ({"width": 33, "height": 600, "overlap": True, "line_width": 3.0}, ("white", "walk"), 120, 1),
    ({"width": 257, "height": 255, "antialias": False, "ink_levels": 1}, ("zigzag", "walk"),
     449, 1),
    ({"width": 256, "height": 257, "ink_levels": 255, "line_width": 0.5},
     ("triangle", "nan-edges", "spike"), 448, 2),
    ({"width": 32, "height": 32, "line_width": 16.0}, ("walk",) * 6, 32, 1),
    ({"width": 200, "height": 100, "color": True, "overlap": True, "ink_levels": 15},
     ("huge", "inf", "mixed"), 33, 1),
    ({"width": 37, "height": 47, "labels": ("µV", "")}, ("constant", "spike"), 2, 1),
    ({"width": 448, "height": 224, "scales_uv": (1e-3, 1e9)}, ("walk", "walk"), 3000, 1),
    ({"width": 255, "height": 33, "grid": True, "epoch_seconds": 5.0, "context": 1},
     ("square",), 3001, 1),
    ({"width": 448, "height": 224, "antialias": False, "line_width": 2.5, "color": True},
     ("walk", "mixed", "nan-gaps", "zigzag", "constant", "inf"), 9000, 3),
)  # fmt: skip

#: How many cases are written by hand (they are all in the fast subset).
CORNER_CASES = len(_CORNERS)

_WIDTHS = (32, 33, 37, 64, 97, 128, 200, 255, 256, 257, 448)
_HEIGHTS = (32, 33, 47, 64, 100, 224, 255, 256, 257, 448, 600)
_SAMPLES = (1, 2, 3, 5, 16, 31, 32, 33, 64, 100, 255, 447, 448, 449, 1000, 3000, 3001, 6000,
            9000, 15360)  # fmt: skip
_SCALES = (1e-3, 1.0, 50.0, 75.0, 75.0, 150.0, 1000.0, 1e9)
_LINE_WIDTHS = (0.25, 0.5, 0.75, 1.0, 1.0, 1.3, 1.5, 1.7, 2.0, 2.5, 4.0, 16.0)
_INK_LEVELS = (1, 2, 3, 5, 5, 15, 16, 100, 254, 255)
_LABELS = ("C4-M1", "E1-M2", "chin", "ECG", "µV", "", "F4-M1 very long label text")


def build_case(index: int) -> Case:
    """The adversarial case ``index`` (0 <= index < :data:`FULL_CASES`), same bytes every time."""
    from engine.raster import RenderSpec

    if not 0 <= index < FULL_CASES:
        raise ValueError(f"case index must be 0-{FULL_CASES - 1}, got {index}")
    draw = _Draw(index)
    if index < CORNER_CASES:
        kwargs, kinds, samples, images = _CORNERS[index]
        kwargs = dict(kwargs)
        scales = kwargs.pop("scales_uv", (75.0, 150.0, 50.0, 75.0, 150.0, 1000.0)[: len(kinds)])
    else:
        channels = 1 + draw.int_below(6)
        kinds = tuple(draw.pick(KINDS) for _ in range(channels))
        samples = draw.pick(_SAMPLES)
        images = draw.pick((1, 1, 2, 3))
        scales = tuple(draw.pick(_SCALES) for _ in range(channels))
        kwargs = {
            "width": draw.pick(_WIDTHS),
            "height": draw.pick(_HEIGHTS),
            "line_width": draw.pick(_LINE_WIDTHS),
            "antialias": draw.chance(0.75),
            "ink_levels": draw.pick(_INK_LEVELS),
            "overlap": draw.chance(0.3),
            "grid": draw.chance(0.3),
            "color": draw.chance(0.3),
            "context": draw.pick((0, 0, 0, 1, 2)),
            "epoch_seconds": draw.pick((30.0, 30.0, 20.0, 5.0)),
        }
        if draw.chance(0.1):
            kwargs["labels"] = tuple(draw.pick(_LABELS) for _ in range(channels))
    spec = RenderSpec(scales_uv=scales, **kwargs)
    signals = np.empty((images, len(kinds), samples), np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for n in range(images):
            for c, kind in enumerate(kinds):
                signals[n, c] = _signal(draw, kind, samples, scales[c])
    return Case(index=index, spec=spec, signals=signals, kinds=kinds)


def case_indices(fast: bool = False) -> list[int]:
    """Indices of the full set, or of the fast subset (corners + every 16th drawn case)."""
    if not fast:
        return list(range(FULL_CASES))
    return [i for i in range(FULL_CASES) if i < CORNER_CASES or i % FAST_EVERY == 0]


# ----------------------------------------------------------------------------------------
# Digests, pins, checks
# ----------------------------------------------------------------------------------------
def pixel_digest(pixels: np.ndarray) -> str:
    """sha256 of a uint8 page array's shape and bytes, 16 hex digits."""
    pixels = np.ascontiguousarray(pixels)
    if pixels.dtype != np.uint8:
        raise TypeError(f"pages must be uint8, got {pixels.dtype}")
    digest = hashlib.sha256(repr(pixels.shape).encode())
    digest.update(pixels.tobytes())
    return digest.hexdigest()[:_DIGEST_HEX]


def glyph_digest() -> str:
    """sha256 of the label glyph atlas (PIL's default font as FreeType draws it here)."""
    from engine.raster.glyphs import glyph_atlas

    atlas = glyph_atlas()
    digest = hashlib.sha256(repr(atlas.coverage.shape).encode())
    digest.update(atlas.coverage.tobytes())
    digest.update(atlas.widths.astype(np.int64).tobytes())
    return digest.hexdigest()[:_DIGEST_HEX]


Renderer = Callable[[np.ndarray, Any], np.ndarray]


def _default_renderer() -> Renderer:
    from engine.raster import render

    return render


def compute_pins(
    indices: Iterable[int], renderer: Renderer | None = None
) -> dict[int, tuple[str, str]]:
    """``{index: (inputs digest, pixels digest)}`` of the given cases, rendered by ``renderer``
    (default :func:`engine.raster.render`, the CPU kernel)."""
    renderer = renderer or _default_renderer()
    pins = {}
    for index in indices:
        case = build_case(index)
        pins[index] = (case.inputs_digest, pixel_digest(renderer(case.signals, case.spec)))
    return pins


@dataclass
class CheckResult:
    """What :func:`check_pins` found."""

    checked: int = 0
    pixels_changed: list[str] = field(default_factory=list)
    inputs_changed: list[str] = field(default_factory=list)
    unpinned: list[int] = field(default_factory=list)
    skipped_labelled: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.pixels_changed or self.inputs_changed or self.unpinned)

    def summary(self) -> str:
        lines = [
            f"{self.checked} adversarial cases checked against the pin: "
            + ("same pixels" if self.ok else "**DIFFERENT**")
        ]
        if self.pixels_changed:
            lines.append(f"{len(self.pixels_changed)} case(s) draw different pixels:")
            lines += [f"  {d}" for d in self.pixels_changed[:20]]
        if self.inputs_changed:
            lines.append(
                f"{len(self.inputs_changed)} case(s) have different inputs (the adversarial "
                "set itself changed):"
            )
            lines += [f"  {d}" for d in self.inputs_changed[:20]]
        if self.unpinned:
            lines.append(f"{len(self.unpinned)} case(s) have no pin: {self.unpinned[:20]}")
        lines += self.notes
        if not self.ok:
            lines.append(
                "If the change is meant to alter pixels, re-pin on purpose: "
                "python -m bench.adversarial --update (and commit bench/pins/adversarial.json)"
            )
        return "\n".join(lines)


def read_pins(path: str | Path = PIN_FILE) -> dict[str, Any]:
    """The pin file as a dict (``pins`` keyed by int case index)."""
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise BenchError(
            f"no pin file at {path} (python -m bench.adversarial --update makes one)"
        ) from None
    except json.JSONDecodeError as err:
        raise BenchError(f"{path}: not a pin file ({err})") from None
    if data.get("format") != _FORMAT:
        raise BenchError(f"{path}: unknown pin format {data.get('format')!r}")
    data["pins"] = {int(k): tuple(v) for k, v in data["pins"].items()}
    return data


def check_pins(
    fast: bool = False,
    *,
    path: str | Path = PIN_FILE,
    renderer: Renderer | None = None,
    indices: Iterable[int] | None = None,
) -> CheckResult:
    """Render the set (or the fast subset) and compare with the pin at ``path``."""
    pinned = read_pins(path)
    result = CheckResult()
    same_glyphs = pinned.get("glyph_atlas") == glyph_digest()
    if not same_glyphs:
        result.notes.append(
            "label glyphs differ from the pinned ones (another Pillow/FreeType draws PIL's "
            "default font differently): cases with labels skipped"
        )
    renderer = renderer or _default_renderer()
    for index in case_indices(fast) if indices is None else indices:
        if index not in pinned["pins"]:
            result.unpinned.append(index)
            continue
        case = build_case(index)
        if case.labelled and not same_glyphs:
            result.skipped_labelled += 1
            continue
        inputs, pixels = pinned["pins"][index]
        result.checked += 1
        if case.inputs_digest != inputs:
            result.inputs_changed.append(case.describe())
        elif pixel_digest(renderer(case.signals, case.spec)) != pixels:
            result.pixels_changed.append(case.describe())
    if result.skipped_labelled:
        result.notes.append(f"{result.skipped_labelled} labelled case(s) skipped")
    return result


def write_pins(path: str | Path = PIN_FILE, renderer: Renderer | None = None) -> dict[str, Any]:
    """Render the full set and write the pin file; return what changed against the old one."""
    path = Path(path)
    old = read_pins(path)["pins"] if path.exists() else {}
    pins = compute_pins(range(FULL_CASES), renderer)
    versions, git = library_versions(), git_state()
    header = {
        "format": _FORMAT,
        "about": "sha256 (16 hex) of each adversarial case's inputs and of the pixels the CPU "
        "render kernel draws; bench/adversarial.py. Re-pin only on purpose: "
        "python -m bench.adversarial --update",
        "seed": SEED,
        "cases": FULL_CASES,
        "corner_cases": CORNER_CASES,
        "fast_every": FAST_EVERY,
        "glyph_atlas": glyph_digest(),
        "digest": hashlib.sha256(
            "".join(p for _, p in (pins[i] for i in sorted(pins))).encode()
        ).hexdigest()[:_DIGEST_HEX],
        "pinned_at": {
            "git_commit": git["git_commit"],
            "git_dirty": git["git_dirty"],
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            **{k: versions[k] for k in ("numpy", "numba", "pillow")},
        },
    }
    body = json.dumps(header, indent=1, ensure_ascii=False)[:-2]
    rows = ",\n".join(f'  "{i}": ["{a}", "{b}"]' for i, (a, b) in sorted(pins.items()))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body + ',\n "pins": {\n' + rows + "\n }\n}\n")
    return {
        "pixels_changed": sum(1 for i, p in pins.items() if i in old and old[i][1] != p[1]),
        "inputs_changed": sum(1 for i, p in pins.items() if i in old and old[i][0] != p[0]),
        "new": sum(1 for i in pins if i not in old),
        "cases": len(pins),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``psgvlm bench pins`` / ``python -m bench.adversarial``."""
    parser.add_argument("--fast", action="store_true", help="the CI subset only")
    parser.add_argument("--update", action="store_true", help="re-pin (on purpose)")
    parser.add_argument("--pins", type=Path, default=PIN_FILE, help="pin file")


def run(args: argparse.Namespace) -> int:
    """Check the pin (exit 1 on a difference) or, with ``--update``, rewrite it."""
    if args.update:
        if args.fast:
            print("--update pins the whole set; drop --fast", file=sys.stderr)
            return 2
        changed = write_pins(args.pins)
        print(
            f"pinned {changed['cases']} cases in {args.pins}: {changed['pixels_changed']} "
            f"with new pixels, {changed['inputs_changed']} with new inputs, {changed['new']} new"
        )
        return 0
    result = check_pins(args.fast, path=args.pins)
    print(result.summary())
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.adversarial``."""
    parser = argparse.ArgumentParser(prog="python -m bench.adversarial",
                                     description=__doc__.split("\n")[0])  # fmt: skip
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except BenchError as err:
        print(f"bench pins: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
