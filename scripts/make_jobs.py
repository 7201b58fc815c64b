"""Write a job file for a sweep: methods x forget settings x seeds (x a hyperparameter grid).

    python -m scripts.make_jobs --model runs/orig/model.pt --methods retrain,FT,GA,SalUn --classes 0-9 \
        --seeds 1,2,3 --root runs/sweep > jobs.txt
    python -m scripts.make_jobs --model runs/orig/model.pt --methods GA --random 4500 \
        --grid unlearn_lr=1e-5,1e-4,1e-3,1e-2 --seeds 1 --root runs/ga_grid > ga.txt
    bash scripts/run_jobs.sh jobs.txt --gpus 0,1,2,3        # or: sbatch --array=1-N scripts/slurm/array.sbatch jobs.txt

Every line is one main_forget.py run with its own --save_dir (ROOT/<forget setting>/<method>[-grid]-seed<s>),
so finished runs are skipped on a rerun. A retrain run is added per setting and seed when --methods lacks
one (--no_retrain: not; the flags after `--` go to it too, so give retrain its own line when they are another
method's): `python -m evaluation.summarize ROOT` measures Avg.Gap against it, and
`python -m scripts.select_by_val_gap ROOT` picks grid points by the gap on validation accuracy, not test.
Extra flags after `--` go to every line.
"""
import itertools
import os
import shlex
import sys

from utils import UsageError, make_parser, run_cli


def parse_list(text, flag):
    """'0-9' / '1,2,5' -> ints."""
    values = []
    for part in str(text).split(","):
        try:
            if "-" in part.strip()[1:]:
                lo, hi = part.split("-")
                values += list(range(int(lo), int(hi) + 1))
            else:
                values.append(int(part))
        except ValueError:
            raise UsageError(f"{flag}: expected numbers or ranges like 0-9 or 1,2,3, got '{text}'")
    return values


def main():
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = make_parser(__doc__)
    p.add_argument("--model", required=True, help="the original model.pt")
    p.add_argument("--methods", required=True, help="comma list of unlearning methods")
    p.add_argument("--classes", default=None, help="class-wise settings: one per class, e.g. 0-9")
    p.add_argument("--random", default=None, help="random settings: comma list of forget-set sizes, e.g. 4500")
    p.add_argument("--seeds", default="1", help="seeds, e.g. 1-3")
    p.add_argument("--grid", action="append", default=[], help="KEY=v1,v2,... (repeatable): a flag to sweep")
    p.add_argument("--root", default="runs/sweep", help="output root of the runs")
    p.add_argument("--no_retrain", action="store_true", help="do not add a retrain run per setting and seed")
    p.add_argument("--python", default=sys.executable, help="interpreter used in the job lines (default: this one)")
    args = p.parse_args(argv)
    settings = [(f"class{c}", ["--class_to_replace", str(c)]) for c in parse_list(args.classes, "--classes")] \
        if args.classes else []
    if args.random:
        settings += [(f"random{n}", ["--class_to_replace", "-1", "--num_indexes_to_replace", str(n)])
                     for n in parse_list(args.random, "--random")]
    if not settings:
        raise UsageError("--classes/--random: give at least one forget setting")
    grid = []
    for spec in args.grid:
        key, _, values = spec.partition("=")
        if not key or not values:
            raise UsageError(f"--grid: expected KEY=v1,v2, got '{spec}'")
        grid.append([(key, v) for v in values.split(",")])
    methods = [m for m in args.methods.split(",") if m]
    if "retrain" not in methods and not args.no_retrain:
        methods = ["retrain"] + methods
    for (name, flags), seed in itertools.product(settings, parse_list(args.seeds, "--seeds")):
        for method in methods:
            points = [()] if method == "retrain" or not grid else itertools.product(*grid)
            for point in points:
                tag = "".join(f"-{k}{v}" for k, v in point)
                line = [args.python, "main_forget.py", "--mask", args.model, "--unlearn", method, *flags,
                        "--seed", str(seed), *[x for k, v in point for x in (f"--{k}", v)], *extra,
                        "--save_dir", os.path.join(args.root, name, f"{method}{tag}-seed{seed}")]
                print(shlex.join(line))


if __name__ == "__main__":
    run_cli(main)
