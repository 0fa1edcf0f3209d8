"""Pool the per-epoch predictions of several ``psgvlm eval`` runs into one table.

Per recording and pooled, the model beside YASA on YASA's epochs (accuracy / κ / macro-F1,
W and N1 F1), as ``scripts/dev_table.py`` reports one run's::

    python scripts/pool_predictions.py out/dev/eval/NAME/*/predictions.csv
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score

STAGES = ["W", "N1", "N2", "N3", "R"]


def figures(true: pd.Series, predicted: pd.Series) -> str:
    if true.empty:
        return "—"
    f1 = f1_score(true, predicted, labels=STAGES, average=None, zero_division=0)
    return (
        f"{accuracy_score(true, predicted):.3f} / {cohen_kappa_score(true, predicted):.3f} / "
        f"{f1_score(true, predicted, labels=STAGES, average='macro', zero_division=0):.3f}"
        f" (W {f1[0]:.2f}, N1 {f1[1]:.2f})"
    )


def main(paths: list[str]) -> None:
    table = pd.concat([pd.read_csv(path) for path in paths], ignore_index=True)
    table = table[table["true"].isin(STAGES)]
    rows = [
        "| recording | n | model acc / κ / MF1 | model on YASA's epochs | YASA |",
        "|---" * 5 + "|",
    ]
    groups = [(f"{d}/{r}", g) for (d, r), g in table.groupby(["dataset", "recording"], sort=False)]
    for name, group in [*groups, ("pooled", table)]:
        scored = group[group["yasa"].isin(STAGES)] if "yasa" in group else group.iloc[:0]
        rows.append(
            f"| {name} | {len(group)} | {figures(group['true'], group['model'])} | "
            f"{figures(scored['true'], scored['model'])} | {figures(scored['true'], scored['yasa'])} |"
        )
    print("\n".join(rows))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python scripts/pool_predictions.py PREDICTIONS.csv [...]")
    for path in sys.argv[1:]:
        if not Path(path).is_file():
            sys.exit(f"pool_predictions: {path}: no such file (a psgvlm eval --out folder's "
                     "predictions.csv)")  # fmt: skip
    main(sys.argv[1:])
