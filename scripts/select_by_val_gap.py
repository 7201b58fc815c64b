"""Pick each method's hyperparameters from a grid by the smallest gap to retrain on validation data.

    python -m scripts.select_by_val_gap runs/ga_grid [--keys unlearn_lr]

For every forget setting and method, each grid point's runs are compared with the retrain runs of the same
setting: mean |delta| over UA, RA, validation accuracy and MIA (validation in place of test, so the test set
never chooses a hyperparameter). Prints the ranking and the winner per (setting, method).
"""
import json
from collections import defaultdict

import numpy as np

from evaluation.summarize import find_results, label_of, method_of
from utils import UsageError, make_parser, run_cli

VAL_KEYS = ("UA", "RA", "val_acc", "MIA")


def main():
    p = make_parser(__doc__)
    p.add_argument("runs", nargs="+", help="run folders or results.json files")
    p.add_argument("--keys", default="unlearn_lr,unlearn_epochs,alpha,mask_ratio",
                   help="config keys that make a grid point")
    args = p.parse_args()
    keys = args.keys.split(",")
    runs = defaultdict(list)  # (setting, method, point) -> metrics
    for path in find_results(args.runs):
        result = json.load(open(path))
        point = tuple((k, result["config"].get(k)) for k in keys)
        runs[(label_of(result), method_of(result), point)].append(result["metrics"])
    retrain = {s: {k: np.mean([m[k] for m in ms]) for k in VAL_KEYS}
               for (s, method, _), ms in runs.items() if method == "retrain"}
    if not retrain:
        raise UsageError("no retrain runs found: the validation gap is measured against retrain")
    table = defaultdict(list)
    for (setting, method, point), ms in runs.items():
        if method != "retrain" and setting in retrain:
            gap = np.mean([np.mean([abs(m[k] - retrain[setting][k]) for k in VAL_KEYS]) for m in ms])
            table[(setting, method)].append((gap, point, len(ms)))
    for (setting, method), rows in sorted(table.items()):
        rows.sort(key=lambda r: r[0])
        print(f"{setting} / {method}:")
        for gap, point, n in rows:
            shown = ", ".join(f"{k}={v}" for k, v in point if v is not None)
            print(f"  {'*' if (gap, point, n) == rows[0] else ' '} val-gap {gap:6.2f}  {shown}  ({n} runs)")


if __name__ == "__main__":
    run_cli(main)
