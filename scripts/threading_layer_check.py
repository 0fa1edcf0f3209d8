"""One-thread rendering under numba's threading layers: the prange kernel against the plain
loop (issue 20).

A ``psgvlm render --workers N`` worker draws on one numba thread, under the fork-safe
``workqueue`` threading layer that its fork server sets (:mod:`engine.render_worker`).
This script renders the same synthetic nights in process (one worker, one numba thread),
in a fresh process per threading layer, alternating the render kernel's ``prange`` build
and its plain-loop build (:func:`engine.raster.kernels.build_render_kernels`,
``parallel=True`` / ``False``) round by round, and reports each one's seconds: the figure
behind :func:`engine.raster.render` drawing with the plain loop on one thread.

    python scripts/threading_layer_check.py --nights 4 --hours 8 --rounds 3 \\
        --out bench/results/amd-epyc-2cpu/threading_layer.json

Writes the JSON (``--out``) and prints a markdown table of the median seconds per
layer and kernel. The machine should be otherwise idle.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: The threading layers compared: numba's default choice (OpenMP or TBB where present)
#: and the fork-safe one the render workers use.
LAYERS = ("default", "workqueue")


def _child(nights: Path, rounds: int, scratch: Path) -> dict:
    """In this process: the seconds of each kernel build per round, at one numba thread."""
    import numba

    import engine.raster as raster
    from bench.render import montage_for
    from engine.pipeline import RenderSettings, render_dataset
    from engine.raster import kernels

    numba.set_num_threads(1)
    settings = RenderSettings(montage=montage_for(6), width=448, height=224, fmt="png")
    forced = {"parallel": True}
    # engine.raster.render picks the build by the thread count; here the round picks it
    raster.build_render_kernels = lambda antialias, color, parallel=True: (
        kernels.build_render_kernels(antialias, color, forced["parallel"])
    )
    runs = iter(range(1_000_000))

    def seconds(parallel: bool) -> float:
        forced["parallel"] = parallel
        out = scratch / f"out-{next(runs)}"
        started = time.perf_counter()
        report = render_dataset([f"synthetic:{nights}"], out, settings, split=(1.0, 0.0, 0.0),
                                workers=1, progress=False)  # fmt: skip
        elapsed = time.perf_counter() - started
        if not report.ok:
            raise SystemExit(f"render failed: {report.failed}")
        shutil.rmtree(out)
        return elapsed

    seconds(True), seconds(False)  # warm-up: kernels loaded, buffers touched
    times: dict[str, list[float]] = {"parallel": [], "serial": []}
    for r in range(rounds):
        order = (True, False) if r % 2 == 0 else (False, True)
        for parallel in order:
            times["parallel" if parallel else "serial"].append(round(seconds(parallel), 4))
    return {"threading_layer": numba.threading_layer(), "seconds": times}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nights", type=int, default=4, help="synthetic nights (default: 4)")
    parser.add_argument("--hours", type=float, default=8.0, help="hours a night (default: 8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per layer (default: 3)")
    parser.add_argument("--out", type=Path, help="JSON report (default: none, table only)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # nights, in a child
    args = parser.parse_args(argv)
    if args.child is not None:
        with tempfile.TemporaryDirectory() as scratch:
            print(json.dumps(_child(args.child, args.rounds, Path(scratch))))
        return 0

    from engine.pipeline import write_synthetic_nights

    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        nights = write_synthetic_nights(Path(scratch) / "nights", args.nights, args.hours)
        for layer in LAYERS:
            env = dict(os.environ)
            env.pop("NUMBA_THREADING_LAYER", None)
            if layer != "default":
                env["NUMBA_THREADING_LAYER"] = layer
            done = subprocess.run(
                [sys.executable, __file__, "--child", str(nights), "--rounds", str(args.rounds)],
                env=env, capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode != 0:
                print(done.stderr, file=sys.stderr)
                return done.returncode
            results[layer] = json.loads(done.stdout.strip().splitlines()[-1])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()  # fmt: skip
    report = {
        "command": " ".join([Path(sys.argv[0]).as_posix(), *(argv or sys.argv[1:])]),
        "git_commit": commit,
        "nights": args.nights,
        "hours": args.hours,
        "rounds": args.rounds,
        "layers": results,
    }
    print("| layer | kernel | median s | rounds |\n|---|---|---|---|")
    for layer, result in results.items():
        for kernel, times in result["seconds"].items():
            name = f"{layer} ({result['threading_layer']})"
            print(f"| {name} | {kernel} | {statistics.median(times):.3f} | {times} |")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
