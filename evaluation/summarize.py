"""Tables and bar charts over finished runs: mean ± std over seeds of UA, RA, TA, MIA, RTE and Avg.Gap.

    python -m evaluation.summarize runs/main_forget [more folders/files/globs] --out table.md --plot bars.png

Runs are grouped by method (config `unlearn`; the script name for runs without one, e.g. main_train) and a
label (dataset, arch and forget set by default, or the config keys given with --label_keys), so the seeds of
one setting form one row. A run without `results.json` is unfinished and is not read.

± is the sample standard deviation over seeds by default, as the SalUn tables give it; `--ci t95` makes it the
half-width of the 95% t-interval of the mean, t_{0.975, n-1} std / sqrt(n), as RUM reports ToW (no ± for a
single run). ToW, ToW-MIA and GapAvg get columns when some run reports them. --costs adds what each run's data
cost to make (offline, per request) and the total with RTE; --scatter plots Avg.Gap against that total.
"""
import glob
import json
import os

import numpy as np
from scipy.stats import t as student_t

from evaluation.metrics import GAP_KEYS, avg_gap
from utils import UsageError, make_parser, run_cli, write_text

COLUMNS = ("UA", "RA", "TA", "MIA", "RTE_s", "avg_gap")
COSTS = ("offline_s", "request_s", "total_s")  # --costs: beside RTE_s, what preparing the data cost, and the sum
EXTRA = ("ToW", "ToW_MIA", "GapAvg")  # distances to retrain, shown when some run reports them
DECIMALS = {"ToW": 3, "ToW_MIA": 3}  # products in [0, 1]; the other columns are percentages or seconds
HEADERS = {"RTE_s": "RTE (s)", "avg_gap": "Avg.Gap", "offline_s": "offline (s)", "request_s": "per request (s)",
           "total_s": "total (s)"}
FIRST = ("none", "retrain")  # the baseline rows open every table, as in the papers


def find_results(paths) -> list:
    """results.json files from files, folders (searched recursively) and glob patterns, sorted, unique."""
    if isinstance(paths, str):
        paths = [paths]
    found = set()
    for path in paths:
        for match in glob.glob(path, recursive=True) or [path]:
            if os.path.isdir(match):
                found.update(glob.glob(os.path.join(match, "**", "results.json"), recursive=True))
            elif os.path.isfile(match):
                found.add(match)
    return sorted(os.path.abspath(p) for p in found)


RELEASED = " (released)"  # the row tag of a run that reproduces a released code's behaviour (see is_released)


def is_released(config: dict) -> bool:
    """Whether a run reproduces a released code's behaviour where ours differs on purpose: `--variant legacy`
    (IU's rank-1 recursion, FF's row rule, SalUn's unmasked weight decay, BE's shadow output), a saliency
    mask as a released SalUn/RUM version computed it, or ReGUn's shipped uniform held-out selector."""
    return (config.get("variant") in ("legacy", "keep_shadow")
            or config.get("mask_variant") in ("legacy", "first_commit", "rum")
            or (config.get("unlearn") == "ReGUn" and config.get("regun_selector") == "uniform"))


def method_of(result: dict) -> str:
    """The method with its preset (SalUn@rum), tagged ` (released)` when it ran a released behaviour, and with
    the data it ran on when that was not the real data (main_forget_distill's tag)."""
    config = result.get("config", {})
    if (result.get("forget") or {}).get("kind") == "none":  # a training record (main_prune's or main_backdoor's
        return str(result.get("script", "?"))                # states carry the unlearning flags they were given)
    method = str(config.get("unlearn") or result.get("script", "?"))
    method += f"@{config['preset']}" if config.get("preset") else ""
    method += RELEASED if is_released(config) else ""
    return f"{method} [{config['data_tag']}]" if config.get("data_tag") else method


def base_method(method: str) -> str:
    """'IU (released)' -> 'IU'; 'SalUn@rum (released)' -> 'SalUn': the name published tables use."""
    return method.replace(RELEASED, "").split("@")[0]


def label_of(result: dict, label_keys=None) -> str:
    """What a row compares across methods; everything that differs only by seed shares it."""
    config = result.get("config", {})
    if label_keys:
        return " ".join(f"{k}={config.get(k)}" for k in label_keys)
    forget = result.get("forget") or {}
    what = forget.get("kind", "")
    if forget.get("classes"):
        what += f" {forget['classes']}"
    if forget.get("n"):
        what += f" n={forget['n']}"
    return " ".join(str(v) for v in (config.get("dataset"), config.get("arch"), what) if v)


def with_costs(metrics: dict) -> dict:
    """The run's metrics plus its three costs' sum: offline_s (making a reusable data set; 0 for real data),
    request_s (preparing data for this forget set: main_forget_distill's, else its prep_s; 0 for real data)
    and RTE_s. total_s is None when a part is unknown."""
    m = {"offline_s": 0.0, "request_s": metrics.get("prep_s", 0.0), **metrics}
    parts = [m.get(k) for k in ("offline_s", "request_s", "RTE_s")]
    m["total_s"] = sum(parts) if all(isinstance(v, (int, float)) for v in parts) else None
    return m


def _mean_std(values, ci="std"):
    """(mean, spread), or None when no run has the metric. spread: the sample std (ddof=1; 0 for a single
    run), or for ci="t95" the 95% t-interval half-width t_{0.975, n-1} std / sqrt(n) (NaN for a single run)."""
    values = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if not values:
        return None
    n = len(values)
    std = float(np.std(values, ddof=1)) if n > 1 else 0.0
    if ci == "t95":
        std = float(student_t.ppf(0.975, n - 1) * std / np.sqrt(n)) if n > 1 else float("nan")
    return float(np.mean(values)), std


def present(rows, keys=EXTRA) -> tuple:
    """The keys that some row has a value for."""
    return tuple(k for k in keys if any(r.get(k) for r in rows))


def summarize(paths, label_keys=None, ci="std") -> list:
    """One row per (method, label): {"method", "label", "n", "runs", metric: (mean, spread) or None, ...};
    spread: see _mean_std.

    A run whose metrics lack avg_gap (no --retrain_result) gets it against the mean of the retrain runs
    with the same label, when there are any, which is how the papers' tables measure it."""
    groups = {}
    for path in find_results(paths):
        try:
            with open(path) as f:
                result = json.load(f)
        except (OSError, ValueError) as e:  # half-written by hand or a foreign tool: report, keep going
            print(f"skipped {path}: not readable JSON ({type(e).__name__})")
            continue
        if result.get("script") == "main_rum.py" and "step" in result.get("config", {}):
            continue  # a RUM run's intermediate model: its final results.json reports the run (and its steps)
        metrics = with_costs(result.get("metrics") or {})
        groups.setdefault((method_of(result), label_of(result, label_keys)), []).append((path, metrics))
    if not groups:
        shown = ", ".join([paths] if isinstance(paths, str) else map(str, paths))
        raise UsageError(f"no results.json found in {shown} (a run without one is unfinished)")

    retrain = {label: {k: float(np.mean([m[k] for _, m in runs])) for k in GAP_KEYS}
               for (method, label), runs in groups.items()
               if method == "retrain" and all(k in m for _, m in runs for k in GAP_KEYS)}
    rows = []
    for (method, label), runs in groups.items():
        for _, m in runs:
            fill = method != "retrain" and "avg_gap" not in m and label in retrain
            if fill and all(k in m for k in GAP_KEYS):
                m["avg_gap"] = avg_gap(m, retrain[label])
        row = {"method": method, "label": label, "n": len(runs), "runs": [p for p, _ in runs]}
        row.update({k: _mean_std([m.get(k) for _, m in runs], ci) for k in COLUMNS + COSTS + EXTRA})
        rows.append(row)
    rank = lambda method: FIRST.index(method) if method in FIRST else len(FIRST)
    return sorted(rows, key=lambda r: (r["label"], rank(r["method"]), r["method"]))


def unfinished_runs(paths) -> list:
    """Run folders that started (they hold forget_indices.npy or last.pt) but have no results.json."""
    found = set()
    for path in [paths] if isinstance(paths, str) else paths:
        for marker in ("forget_indices.npy", "last.pt"):
            found.update(os.path.dirname(p) for p in glob.glob(os.path.join(path, "**", marker), recursive=True))
    return sorted(d for d in found if not os.path.isfile(os.path.join(d, "results.json")))


def load_published(key: str) -> dict:
    """Published means of one table of evaluation/published.json, by our method names."""
    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "published.json")) as f:
        tables = json.load(f)
    if key not in tables or key.startswith("_"):
        raise UsageError(f"--published: unknown table '{key}' (choose from "
                         f"{', '.join(k for k in tables if not k.startswith('_'))})")
    return tables[key]["rows"]


def format_table(rows, published=None, columns=COLUMNS) -> str:
    """A markdown table, cells `mean ± std` (two decimals), `–` where no run has the metric; with a
    published table, a `published` row under each method it has, RTE in seconds."""
    def cell(v, key):
        d = DECIMALS.get(key, 2)
        return "–" if v is None else f"{v[0]:.{d}f}" + ("" if np.isnan(v[1]) else f" ± {v[1]:.{d}f}")
    head = ["method", "setting", "runs", *(HEADERS.get(k, k) for k in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    shown = set()  # a published row once per method and setting, under its first row (released or not)
    for r in rows:
        lines.append("| " + " | ".join([r["method"], r["label"], str(r["n"]), *(cell(r[k], k) for k in columns)])
                     + " |")
        name = base_method(r["method"])
        paper = (published or {}).get(name) if (name, r["label"]) not in shown else None
        if paper:
            shown.add((name, r["label"]))
            paper = {**paper, "RTE_s": paper["RTE_min"] * 60} if "RTE_min" in paper else paper
            lines.append("| " + " | ".join([f"{name} (published)", "", "", *(
                f"{paper[k]:.2f}" if k in paper else "–" for k in columns)]) + " |")
    return "\n".join(lines)


VERSUS = ("UA", "RA", "TA", "MIA", "avg_gap")  # the columns of the released-vs-corrected table


def format_released_vs_corrected(rows, columns=VERSUS) -> str:
    """For every method and setting that ran both ways: each metric's released behaviour (what the paper ran)
    and corrected (ours) side by side; '' when no method ran both."""
    cell = {(r["method"], r["label"]): r for r in rows}
    pairs = [(r, cell[(r["method"].replace(RELEASED, ""), r["label"])]) for r in rows
             if RELEASED in r["method"] and (r["method"].replace(RELEASED, ""), r["label"]) in cell]
    if not pairs:
        return ""
    fmt = lambda v: "–" if v is None else f"{v[0]:.2f}"
    head = ["method", "setting"] + [f"{HEADERS.get(k, k)} {side}" for k in columns for side in ("released", "corrected")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for released, corrected in pairs:
        values = [fmt(row[k]) for k in columns for row in (released, corrected)]
        lines.append("| " + " | ".join([corrected["method"], released["label"], *values]) + " |")
    return "\n".join(lines)


def format_csv(rows, columns=COLUMNS, spread="std") -> str:
    head = ["method", "setting", "runs"] + [f"{k}_{s}" for k in columns for s in ("mean", spread)]
    lines = [",".join(head)]
    for r in rows:
        values = [x for k in columns for x in ((f"{r[k][0]:.4f}", f"{r[k][1]:.4f}") if r[k] else ("", ""))]
        lines.append(",".join([r["method"], f'"{r["label"]}"', str(r["n"]), *values]))
    return "\n".join(lines) + "\n"


def bar_chart(rows, path: str) -> str:
    """One panel per metric; settings along the x axis, one bar per method (same colour in every panel,
    std as error bar), one legend. Writes a PNG and returns its path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(dict.fromkeys(r["label"] for r in rows))
    methods = list(dict.fromkeys(r["method"] for r in rows))
    cell = {(r["label"], r["method"]): r for r in rows}
    width = 0.8 / len(methods)
    fig, axes = plt.subplots(2, 3, figsize=(4.2 * 3, 3.4 * 2), squeeze=False)
    for ax, key in zip(axes.flat, COLUMNS):
        for j, method in enumerate(methods):
            stats = [(cell.get((label, method)) or {}).get(key) or (np.nan, 0.0) for label in labels]
            ax.bar(np.arange(len(labels)) + (j - (len(methods) - 1) / 2) * width, [s[0] for s in stats], width,
                   yerr=np.nan_to_num([s[1] for s in stats]), capsize=2, color=f"C{j % 10}", label=method)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_title(HEADERS.get(key, key) + ("" if key in ("RTE_s", "avg_gap") else " (%)"))
        ax.grid(axis="y", alpha=0.3)
    handles, names = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="upper center", ncol=min(len(methods), 8), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def scatter(rows, path: str) -> str:
    """Avg.Gap against end-to-end time (offline + per request + unlearning, log axis): one point per row with
    std error bars, labelled by method. The baselines (the original, retrain: the reference) and rows that
    lack a figure are left out. Writes a PNG and returns its path."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [r for r in rows if r["total_s"] and r["total_s"][0] > 0 and r["avg_gap"] and r["method"] not in FIRST]
    fig, ax = plt.subplots(figsize=(7, 5))
    for j, r in enumerate(points):
        (t, t_std), (gap, gap_std) = r["total_s"], r["avg_gap"]
        ax.errorbar(t, gap, xerr=t_std, yerr=gap_std, fmt="o", color=f"C{j % 10}", capsize=2)
        ax.annotate(r["method"], (t, gap), textcoords="offset points", xytext=(4, 3), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("end-to-end time (s): offline + per request + unlearning")
    ax.set_ylabel("Avg.Gap to retrain (lower is better)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main():
    p = make_parser("Mean ± std over seeds of UA, RA, TA, MIA, RTE and Avg.Gap from runs' results.json.")
    p.add_argument("runs", nargs="+", help="run folders (searched recursively), results.json files or globs")
    p.add_argument("--label_keys", default=None,
                   help="comma list of config keys that name a setting (default: dataset, arch, forget set)")
    p.add_argument("--out", default=None, help="also write the markdown table here")
    p.add_argument("--plot", default=None, help="write a bar chart (PNG) here")
    p.add_argument("--csv", default=None, help="also write the table as CSV (mean and std columns) here")
    p.add_argument("--costs", action="store_true",
                   help="add the cost columns: offline (making reusable data), per request, and their total with RTE")
    p.add_argument("--scatter", default=None, help="write Avg.Gap against total time (PNG) here")
    p.add_argument("--ci", default="std", choices=("std", "t95"),
                   help="what ± means: std (sample std over seeds) or t95 (half-width of the 95%% t-interval)")
    p.add_argument("--published", default=None,
                   help="print a published table's means under ours (a key of evaluation/published.json, e.g. "
                        "salun_random10, sparse_class_dense)")
    args = p.parse_args()
    published = load_published(args.published) if args.published else None
    rows = summarize(args.runs, args.label_keys.split(",") if args.label_keys else None, args.ci)
    columns = (COLUMNS + COSTS if args.costs else COLUMNS) + present(rows)
    table = format_table(rows, published, columns)
    versus = format_released_vs_corrected(rows)
    if versus:  # where ours differs from the released code on purpose, both columns, as the scripts promise
        table += "\n\nReleased behaviour (what the paper ran) vs corrected (ours), means over seeds:\n\n" + versus
    print(table)
    for folder in unfinished_runs(args.runs):
        print(f"unfinished (no results.json yet): {folder}")
    if args.csv:
        write_text(format_csv(rows, columns, args.ci), args.csv)
    if args.out:
        write_text(table + "\n", args.out)
    if args.plot:
        bar_chart(rows, args.plot)
    if args.scatter:
        scatter(rows, args.scatter)
    print(f"{len(rows)} rows from {sum(r['n'] for r in rows)} runs"
          + (" (± = 95% t-interval)" if args.ci == "t95" else " (± = std over seeds)")
          + (f" -> {args.out}" if args.out else "") + (f", {args.plot}" if args.plot else ""))


if __name__ == "__main__":
    run_cli(main)
