"""``psgvlm bench {render,kernel,train,infer}``: throughput benchmarks written as reports.

- ``render``: matplotlib (naive and tuned) against psgvlm's rasterizer, encoder and
  end-to-end pipeline on the same synthetic epochs (:mod:`bench.render`).
- ``kernel``: the CPU render kernel of a git revision against the working tree's, both
  in one process in alternating rounds (:mod:`bench.kernel`).
- ``train``: samples/s of LoRA training steps (:mod:`bench.model`).
- ``infer``: epochs/s of staging by candidate scoring (:mod:`bench.model`).
- ``pins``: the CPU kernel's pixels on the adversarial set against the committed pin
  (``--update`` re-pins on purpose; :mod:`bench.adversarial`).
- ``tables``: the tables of ``bench/RESULTS.md`` regenerated from the committed reports
  (``--check``: exit 1 where they differ; :mod:`bench.tables`).

Each benchmark writes ``OUT/{which}.json`` and ``OUT/{which}.md`` (``render`` also
``render.png``), ``OUT`` by default ``bench/results/<machine>/`` (committed).
"""

from __future__ import annotations

import argparse

from . import adversarial, kernel, model, render, tables

__all__ = ["BENCHMARKS", "add_arguments", "run"]

#: benchmark -> one-line help
BENCHMARKS: dict[str, str] = {
    "render": "images/s: matplotlib vs psgvlm raster, encode and end-to-end",
    "kernel": "A/B of the CPU render kernel: a git revision vs the working tree",
    "train": "samples/s of LoRA training steps",
    "infer": "epochs/s of staging with score_candidates",
    "pins": "check (or --update) the CPU kernel's pinned pixels on the adversarial set",
    "tables": "regenerate (or --check) the tables of bench/RESULTS.md from the reports",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``psgvlm bench``: the benchmark name (``which``), then its own options."""
    benchmarks = parser.add_subparsers(dest="which", metavar="which", required=True)
    for which, help_ in BENCHMARKS.items():
        sub = benchmarks.add_parser(which, help=help_, description=help_)
        if which == "render":
            render.add_arguments(sub)
        elif which == "kernel":
            kernel.add_arguments(sub)
        elif which == "pins":
            adversarial.add_arguments(sub)
        elif which == "tables":
            tables.add_arguments(sub)
        else:
            model.add_arguments(sub, which)


def run(args: argparse.Namespace) -> int:
    """Run the chosen benchmark."""
    runners = {
        "render": render.run,
        "kernel": kernel.run,
        "pins": adversarial.run,
        "tables": tables.run,
    }
    return runners.get(args.which, model.run)(args)
