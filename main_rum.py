"""RUM (Zhao et al., NeurIPS'24): unlearn a forget set made of homogeneous groups one group at a time, each with
its own method and hyperparameters, on one model; then evaluate the final model on the whole forget set.

    python main_rum.py --mask runs/orig/model.pt --mem_scores mem.npz --forget_group mix \
        --num_indexes_to_replace 3000 --plan 'low=none; mid=FT,unlearn_lr=0.1,unlearn_epochs=10; high=SalUn,unlearn_lr=0.1,unlearn_epochs=5'

Groups: from the forget-set flags with --forget_group mix (high/mid/low memorisation, a third each), or from
--groups_file (an .npz of named official-index arrays). --plan lists the steps in order, `group=method,key=value,...`
separated by ';' (or a JSON file: [{"group": "low", "unlearn": "none"}, ...]); the keys are main_forget.py's
flags without dashes. The group `all` is the union of the groups, so the vanilla baseline (one method on the whole
forget set) is `--plan 'all=NG,alpha=0.97'`; `--shuffle` pools the groups and deals them into random groups of the
same sizes (the shuffle baseline: same steps, non-homogeneous groups).

Retain bookkeeping (RUM's): step k unlearns its group with retain = train split minus every group done so far,
this one included, so later groups still count as retain until their step. Every step writes its model.pt and
results.json under step<k>-<group>-<method>/; a killed run resumes at the step it was in. The final results.json
(forget = all groups) holds the summed RTE, each step's metrics, and with --retrain_result the gaps to retrain.
"""
import copy
import json
import os

import numpy as np

import models
import training
from forget_sets.groups import groups_from_args, shuffle_groups
from unlearn.common import get_method
from unlearn.run import Run, execute, make_context, real_loaders
from unlearn.setup import add_unlearn_args, is_classwise, load_original, method_config, method_keys
from utils import (UsageError, add_bool, add_common_args, default_save_dir, make_parser, prepare_save_dir, run_cli,
                   save_npz, save_numpy, seed_everything, write_json)

SCRIPT = "main_rum.py"
# RUM's released main_rum.py (nothing-Finetune-SalUn, low to high memorisation; SalUn@rum: RUM's mask and RL loop)
RUM_PLAN = ("low=none; mid=FT,unlearn_lr=0.1,unlearn_epochs=10; "
            "high=SalUn@rum,unlearn_lr=0.1,unlearn_epochs=5")


def parse_value(text: str):
    """'0.1' -> 0.1, '10' -> 10, 'true' -> True, anything else stays a string."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_plan(text: str, known_keys) -> list:
    """[{"group", "unlearn", **hyperparameters}] from a JSON file or 'group=method,key=value; ...'."""
    if os.path.isfile(text):
        try:
            steps = json.load(open(text))
        except ValueError as e:
            raise UsageError(f"--plan: '{text}' is not valid JSON ({e})")
    else:
        steps = []
        for part in filter(None, (s.strip() for s in text.split(";"))):
            head, *pairs = [p.strip() for p in part.split(",")]
            group, sep, method = head.partition("=")
            if not sep or any("=" not in p for p in pairs):
                raise UsageError(f"--plan: '{part}' is not group=method,key=value,...")
            steps.append({"group": group.strip(), "unlearn": method.strip(),
                          **{k.strip(): parse_value(v.strip()) for k, v in (p.split("=", 1) for p in pairs)}})
    if not isinstance(steps, list) or not steps or not all(isinstance(s, dict) for s in steps):
        raise UsageError("--plan: give at least one step, e.g. 'low=none; mid=FT,unlearn_lr=0.1; high=SalUn'")
    for k, step in enumerate(steps, 1):
        if "group" not in step or "unlearn" not in step:
            raise UsageError(f"--plan: step {k} needs a group and a method (unlearn), got {step}")
        if str(step["unlearn"]).lower() != "none":
            try:
                get_method(step["unlearn"])
            except UsageError as e:
                raise UsageError(f"--plan: step {k}: {e}")
        unknown = sorted(set(step) - {"group", "unlearn"} - set(known_keys))
        if unknown:
            raise UsageError(f"--plan: step {k} sets unknown hyperparameter(s) {', '.join(unknown)} (use "
                             "main_forget.py's flag names without dashes)")
    return steps


def load_groups(args, data, model) -> dict:
    """{name: sorted official train indices} of the disjoint groups to unlearn."""
    if args.groups_file:
        if not os.path.isfile(args.groups_file):
            raise UsageError(f"--groups_file: '{args.groups_file}' does not exist")
        with np.load(args.groups_file) as z:
            groups = {name: np.sort(z[name].astype(np.int64)) for name in z.files}
    else:
        groups = groups_from_args(args, data, model)
    pooled = np.concatenate(list(groups.values())) if groups else np.zeros(0, np.int64)
    if not groups or len(np.unique(pooled)) != len(pooled):
        raise UsageError("--groups_file: groups must be non-empty and disjoint")
    outside = np.setdiff1d(pooled, data.train_idx)
    if len(outside):
        raise UsageError(f"--groups_file: {len(outside)} indices are not in the model's train split")
    return shuffle_groups(groups, args.seed) if args.shuffle else groups


def step_args(args, step: dict, save_dir: str):
    """The run's flags with this step's method and hyperparameters laid over them (flags the step leaves
    unset keep the command line's value, else the method's default)."""
    a = copy.copy(args)
    a.variant = None  # each step's own (its preset's, else default), not the previous step's
    for key, value in step.items():
        setattr(a, "unlearn" if key == "unlearn" else key, value)
    a.save_dir, a.save_model, a.retrain_result, a.references = save_dir, True, None, None  # judged at the end
    return a


def step_dir(root, k, step):
    return os.path.join(root, f"step{k}-{step['group']}-{str(step['unlearn']).replace('@', '_')}")


def run_step(k, step, model, record, data, device, groups, done, args, amp):
    """Unlearn one group (or reuse the step's saved result); returns (model, metrics)."""
    folder = step_dir(args.save_dir, k, step)
    results = os.path.join(folder, "results.json")
    if os.path.isfile(results):
        print(f"step {k}: {step['group']} with {step['unlearn']} already done -> {folder}")
        return models.load_model(os.path.join(folder, "model.pt"), device)[0], json.load(open(results))["metrics"]
    forget_idx = groups[step["group"]]
    retain_idx = np.setdiff1d(data.train_idx, np.concatenate([groups[g] for g in done]))
    sargs = step_args(args, step, prepare_save_dir(folder))
    method, cfg = method_config(sargs, record)
    run = Run(SCRIPT, sargs, cfg, method, model, record, data, device, forget_idx, retain_idx,
              {"kind": f"rum_step_{step['group']}", "classes": None, "n": int(len(forget_idx))},
              is_classwise(forget_idx, data), amp=amp, extra={"step": k, "group": step["group"]})
    run.indices_file = os.path.join(folder, "forget_indices.npy")
    save_numpy(forget_idx, run.indices_file)
    seed_everything(args.seed + k)
    metrics = execute(run, make_context(run, *real_loaders(run, seed=args.seed + 100 * k)))
    return run.model, metrics


def main():
    p = make_parser(__doc__)
    add_unlearn_args(p)
    add_common_args(p)
    g = p.add_argument_group("RUM")
    g.add_argument("--plan", default=None, help="the steps: 'group=method,key=value; ...' or a JSON file")
    g.add_argument("--groups_file", default=None,
                   help="an .npz of named index arrays (official train indices) to use as the groups")
    add_bool(g, "--shuffle", False, "deal the pooled groups into random groups of the same sizes (baseline)")
    args = p.parse_args()
    if args.unlearn is not None:  # RUM's README: main_rum.py --unlearn METHOD (its script runs a fixed plan instead)
        m = args.unlearn
        raise UsageError(f"--unlearn: main_rum.py takes its steps from --plan: RUM's released main_rum.py is --plan "
                         f"'{RUM_PLAN}' --no_aug; {m} on each group in turn is --plan 'low={m}; mid={m}; high={m}', "
                         f"on the whole forget set --plan 'all={m}'")
    if not args.plan:
        raise UsageError(f"--plan: give the steps, e.g. '{RUM_PLAN}' (RUM's released main_rum.py)")
    steps = parse_plan(args.plan, method_keys(p) - {"unlearn"})
    args.unlearn = "none"
    model, record, data, device = load_original(args)
    _, base_cfg = method_config(args, record)
    groups = load_groups(args, data, model)
    groups["all"] = np.sort(np.concatenate(list(groups.values())))
    named = [s["group"] for s in steps]
    missing = [g for g in named if g not in groups]
    if missing:
        raise UsageError(f"--plan: unknown group(s) {', '.join(missing)} (groups: {', '.join(groups)})")
    skipped = [g for g in groups if g != "all" and g not in named]
    if len(set(named)) != len(named) or ("all" in named and len(named) > 1) or ("all" not in named and skipped):
        raise UsageError(f"--plan: give each group exactly one step ({', '.join(g for g in groups if g != 'all')}; "
                         "group=none leaves one as it is) or one step on all")
    label = ("shuffle: " if args.shuffle else "rum: ") * (len(steps) > 1) + " > ".join(
        f"{s['group']}={s['unlearn']}" for s in steps)
    if args.dry_run:
        print(f"dry run: {label} on groups {', '.join(f'{k} ({len(v)})' for k, v in groups.items() if k != 'all')} "
              f"of {args.model_path} ({data.info.name}, split {args.split} seed {args.split_seed}); nothing written")
        return
    args.save_dir = args.save_dir or default_save_dir("main_rum", data.info.name, record["arch"],
                                                      ("shuffle-" if args.shuffle else "") + "-".join(
                                                          f"{s['group']}_{s['unlearn']}" for s in steps), args.seed)
    prepare_save_dir(args.save_dir)
    plan_file = os.path.join(args.save_dir, "plan.json")
    plan = {"steps": steps, "shuffle": args.shuffle, "groups": {k: int(len(v)) for k, v in groups.items()}}
    if os.path.isfile(plan_file) and json.load(open(plan_file)) != json.loads(json.dumps(plan)):
        raise UsageError(f"--save_dir: '{args.save_dir}' holds a RUM run with another plan or groups; use another "
                         "--save_dir or the same flags")
    write_json(plan, plan_file)
    save_npz(os.path.join(args.save_dir, "groups.npz"), **{k: v for k, v in groups.items() if k != "all"})
    amp = training.resolve_amp(args.amp, device)

    done, step_metrics = [], []
    for k, step in enumerate(steps, 1):
        done.append(step["group"])
        model, metrics = run_step(k, step, model, record, data, device, groups, done, args, amp)
        step_metrics.append({"step": k, "group": step["group"], "unlearn": step["unlearn"],
                             "n": int(len(groups[step["group"]])), **metrics})

    # The final model against the whole forget set: what RUM is judged on.
    forget_idx = groups["all"]
    base_cfg.unlearn = label
    run = Run(SCRIPT, args, base_cfg, None, model, record, data, device, forget_idx,
              np.setdiff1d(data.train_idx, forget_idx),
              {"kind": "rum_shuffle" if args.shuffle else "rum", "classes": None, "n": int(len(forget_idx))},
              is_classwise(forget_idx, data), amp=amp,
              extra={"plan": steps, "steps": step_metrics}, label=label)
    run.indices_file = os.path.join(args.save_dir, "forget_indices.npy")
    save_numpy(forget_idx, run.indices_file)
    rte = sum(float(s.get("RTE_s", 0.0)) for s in step_metrics)
    execute(run, make_context(run, None, None), extra_metrics=lambda m: {"RTE_s": rte, "RTE_min": rte / 60})


if __name__ == "__main__":
    run_cli(main)
