"""Make sparse models, as Unlearn-Sparse's main_imp.py / main_synflow.py: OMP, IMP or SynFlow.

    python main_prune.py --prune omp --dataset cifar10 --arch resnet18 --save_dir runs/omp   # 95% sparse
    python main_prune.py --prune imp --rate 0.2 --pruning_times 5 --save_dir runs/imp         # 1 - 0.8^j
    python main_prune.py --prune synflow --rate 0.95 --save_dir runs/synflow

omp / imp (pruning after training, weight and learning-rate rewinding): state 0 trains the dense model
with main_train's recipe, saving its weights after epoch --rewind_epoch (8). Each further state prunes
--rate of the remaining conv weights (global L1 magnitude; BatchNorm and the classifier are never pruned),
rewinds the whole model to the saved weights, keeps the mask, steps the fresh LR scheduler --rewind_epoch
times (LR rewinding) and trains --epochs epochs again. OMP = --rate 0.95 --pruning_times 2 (state 1 is the
95%-sparse model), IMP = --rate 0.2 --pruning_times k (state j has sparsity 1 - 0.8^j).
synflow: one state, pruned at initialisation (100 data-free SynFlow rounds) to --rate, then trained.

Each state writes save_dir/state<j>/ {model.pt (with `masks` and `metrics.sparsity`), results.json, curves.png,
masks.pt, last.pt}; the dense state has no masks. A rerun skips finished states and continues the state in
progress from its last.pt. One line per state: sparsity, val and test accuracy.
"""
import os

import torch

import models
import training
from datasets import get_info, load_data
from training import pruning
from training.prune_states import PruneStates
from utils import (UsageError, add_common_args, add_data_args, add_model_args, default_save_dir, get_device,
                   make_parser, parse_floats, prepare_save_dir, run_cli, run_record, seed_everything, write_json)

DEFAULT_RATE = {"omp": 0.95, "imp": 0.2, "synflow": 0.95}
DEFAULT_TIMES = {"omp": 2, "imp": 2, "synflow": 1}


def parse_args(argv=None):
    p = make_parser(__doc__)
    add_data_args(p)
    add_model_args(p)
    add_common_args(p)
    training.add_recipe_args(p)
    g = p.add_argument_group("pruning")
    g.add_argument("--prune", default="omp", help="omp, imp or synflow")
    g.add_argument("--rate", type=float, default=None,
                   help="fraction of the remaining conv weights pruned per state (omp 0.95, imp 0.2); synflow: "
                        "the final sparsity (0.95)")
    g.add_argument("--pruning_times", type=int, default=None,
                   help="number of states incl. the dense state 0 (omp 2, imp 2; synflow: 1)")
    g.add_argument("--rewind_epoch", type=int, default=8,
                   help="omp/imp: rewind weights to those after this epoch of state 0, and step the LR schedule "
                        "this many times (0: rewind to the initialisation, no LR rewinding)")
    return p.parse_args(argv)


def check_args(args):
    args.prune = str(args.prune).lower()
    if args.prune not in DEFAULT_RATE:
        raise UsageError(f"--prune: '{args.prune}' is not one of omp, imp, synflow")
    info = get_info(args.dataset)
    args.dataset = info.name
    args.arch = models.canonical_arch(args.arch)
    milestones = training.check_recipe_args(args)
    args.rate = pruning.check_rate(DEFAULT_RATE[args.prune] if args.rate is None else args.rate)
    if args.pruning_times is None:
        args.pruning_times = DEFAULT_TIMES[args.prune]
    if args.pruning_times < 1:
        raise UsageError(f"--pruning_times: must be at least 1, got {args.pruning_times}")
    if args.prune == "synflow" and args.pruning_times != 1:
        raise UsageError(f"--pruning_times: synflow prunes once at initialisation (1 state), got {args.pruning_times}")
    if args.prune != "synflow" and not 0 <= args.rewind_epoch <= args.epochs:
        raise UsageError(f"--rewind_epoch: must be in 0..--epochs ({args.epochs}), got {args.rewind_epoch}")
    mean = parse_floats(args.norm_mean, "--norm_mean", info.channels) or info.mean
    std = parse_floats(args.norm_std, "--norm_std", info.channels) or info.std
    args.save_dir = args.save_dir or default_save_dir("main_prune", info.name, args.arch,
                                                      f"{args.prune}{args.rate:g}", args.seed)
    return info, mean, std, milestones


def main():
    args = parse_args()
    info, mean, std, milestones = check_args(args)
    device = get_device(args.device)
    channels_last = device.type == "cuda" if args.channels_last is None else args.channels_last
    prepare_save_dir(args.save_dir)
    seed_everything(args.seed)
    data = load_data(info.name, args.data_path, device, args.split_seed, args.split)
    model = models.get_model(args.arch, info.num_classes, info.channels, info.im_size, mean, std).to(device)
    pruning.full_masks(model)  # a model without convolutions is refused here, before any training
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    states = PruneStates(args, info, data, model, mean, std, milestones, device,
                         training.resolve_amp(args.amp, device), channels_last)
    summary = []
    for j in range(args.pruning_times):
        summary.append(states.state(j))
        if summary[-1] is None:  # --stop_after: a rerun continues
            return
    write_json({**run_record("main_prune.py", args, device), "split": data.split,
                "metrics": summary[-1], "states": summary}, os.path.join(args.save_dir, "results.json"))
    print(f"done: {args.prune} {args.arch} on {info.name}, {args.pruning_times} state(s), final sparsity "
          f"{summary[-1]['sparsity']:.2f}% -> {args.save_dir}/state{args.pruning_times - 1}/model.pt")


if __name__ == "__main__":
    run_cli(main)
