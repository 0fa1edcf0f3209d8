#!/usr/bin/env python
"""Markdown rows of development-set figures from ``psgvlm eval`` reports (issue 19).

::

    python scripts/dev_table.py bench/results/dev/baseline bench/results/dev/eeg_only

For each report: pooled model figures (all epochs, and the epochs YASA staged), YASA's, then
per recording accuracy / κ / macro-F1 and W / N1 F1 for the model and YASA (YASA refuses
50-Hz excerpt 3: "—"), and ECE before/after the temperature when ``calibration.json``
(from ``python -m vlm.calibrate ece``) is beside the report.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _f(metrics: dict | None) -> str:
    if not metrics:
        return "—"
    f1 = metrics["per_class_f1"]
    support = metrics["support"]
    w = f"{f1['W']:.2f}" if support["W"] else "–"
    n1 = f"{f1['N1']:.2f}" if support["N1"] else "–"
    return (
        f"{metrics['accuracy']:.3f} / {metrics['kappa']:.3f} / {metrics['macro_f1']:.3f} "
        f"(W {w}, N1 {n1})"
    )


def table(report: Path) -> str:
    """Markdown for one report folder (``metrics.json``)."""
    data = json.loads((report / "metrics.json").read_text())
    yasa = data["peers"].get("yasa")
    lines = [
        f"**{report.name}**",
        "",
        "| recording | n | model acc / κ / MF1 | YASA |",
        "|---|---|---|---|",
    ]
    for rec in data["recordings"]:
        m = rec["metrics"]
        lines.append(f"| {rec['dataset']}/{rec['recording']} | {rec['n']} | {_f(m['model'])} | "
                     f"{_f(m.get('yasa'))} |")  # fmt: skip
    lines.append(f"| pooled | {data['model']['n']} | {_f(data['model'])} | — |")
    if yasa and "n" in yasa:
        same = yasa.get("model_same_epochs") or data["model"]
        lines.append(f"| pooled, YASA's epochs | {yasa['n']} | {_f(same)} | {_f(yasa)} |")
    elif yasa:  # it staged nothing: say why
        lines.append(f"| YASA | — | — | refused: {yasa.get('refused', 'did not run')} |")
    cal = report / "calibration.json"
    if cal.is_file():
        c = json.loads(cal.read_text())
        lines += ["", f"ECE (15 bins), temperature {c['temperature']:.2f}: " + "; ".join(
            f"{k} {v['ece_raw']:.3f} → {v['ece_calibrated']:.3f}"
            for k, v in c["recordings"].items()
        )]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print("\n".join(table(Path(p)) for p in sys.argv[1:]))
