"""Estimate Feldman-Zhang memorisation scores by subsampling, as RUM did for CIFAR-10: train --num_models
models from scratch, each on a seeded random --subset_ratio of the train split, and score every image by the
mean correctness of the models that trained on it minus that of the models that did not.

    python estimate_mem.py --dataset cifar10 --arch resnet18 --num_models 400 --save_dir runs/mem/cifar10
    python main_forget.py --mask runs/orig/model.pt --unlearn FT --forget_group mix \\
        --mem_scores runs/mem/cifar10/mem_scores.npz --num_indexes_to_replace 3000

The defaults are RUM's estimator recipe: 30 epochs, SGD lr 0.01 (momentum 0.9, wd 5e-4) x0.1 at epochs
15/20/25, batch 512, no augmentation (RUM trained torchvision's ResNet-18 with the ImageNet stem; ours has
the CIFAR stem). Each finished model leaves models/model_<k>.npz (which images it trained on, which it
classifies correctly) and the model in training its last.pt, so a rerun continues. Every invocation ends by
writing mem_scores.npz from the models finished so far: `memorization` (float32, one value per official
train image, NaN outside the train split; --mem_scores reads it), mean_in/mean_out, n_in/n_out; results.json
once all models are done. It prints the models/hour it measured.
"""
import json
import os

import numpy as np

import models
import training
from datasets import get_info, load_data
from forget_sets.memorization import SubsetModels, subsample_memorization
from utils import (UsageError, add_common_args, add_data_args, add_model_args, default_save_dir, get_device,
                   make_parser, parse_floats, prepare_save_dir, run_cli, run_record, save_npz, write_json)

# Flags that must not change between the invocations that fill one --save_dir.
SAME_KEYS = (*training.RESUME_KEYS, "subset_ratio")


def parse_args(argv=None):
    p = make_parser(__doc__)
    add_data_args(p)
    add_model_args(p)
    add_common_args(p)
    training.add_recipe_args(p, epochs=30)
    p.set_defaults(lr=0.01, batch_size=512, decreasing_lr="15,20,25", no_aug=True)
    g = p.add_argument_group("subsampling")
    g.add_argument("--num_models", type=int, default=400, help="models to train (a rerun may raise it)")
    g.add_argument("--subset_ratio", type=float, default=0.7, help="fraction of the train split per model")
    return p.parse_args(argv)


def check_args(args):
    """(info, mean, std, milestones); a --save_dir filled by earlier invocations must share their recipe."""
    info = get_info(args.dataset)
    args.dataset, args.arch = info.name, models.canonical_arch(args.arch)
    milestones = training.check_recipe_args(args)
    if not 0 < args.subset_ratio < 1:
        raise UsageError(f"--subset_ratio: must be between 0 and 1 (exclusive), got {args.subset_ratio}")
    if args.num_models < 1:
        raise UsageError(f"--num_models: must be at least 1, got {args.num_models}")
    mean = parse_floats(args.norm_mean, "--norm_mean", info.channels) or info.mean
    std = parse_floats(args.norm_std, "--norm_std", info.channels) or info.std
    args.save_dir = args.save_dir or default_save_dir("estimate_mem", info.name, args.arch,
                                                      f"r{args.subset_ratio}", args.seed)
    prepare_save_dir(args.save_dir)
    config_path = os.path.join(args.save_dir, "config.json")
    if os.path.isfile(config_path):  # the per-model results there must come from the same recipe
        old = json.load(open(config_path))
        changed = [k for k in SAME_KEYS if old.get(k) != vars(args).get(k)]
        if changed:
            raise UsageError(f"--save_dir: its models were trained with other {', '.join('--' + k for k in changed)}"
                             "; use another --save_dir or the same flags")
    write_json(vars(args), config_path)
    return info, mean, std, milestones


def main():
    args = parse_args()
    info, mean, std, milestones = check_args(args)
    device = get_device(args.device)
    data = load_data(info.name, args.data_path, device, args.split_seed, args.split)
    pool = data.part(args.train_on)
    record = run_record("estimate_mem.py", args, device)
    trainer = SubsetModels(args, info, data, mean, std, milestones, device, SAME_KEYS)
    result = subsample_memorization(trainer, len(data.y_train), pool, args.num_models, args.subset_ratio, args.seed,
                                    os.path.join(args.save_dir, "models"))
    out = os.path.join(args.save_dir, "mem_scores.npz")
    save_npz(out, **{k: np.asarray(v, np.float32) for k, v in result.items() if k != "models"},
             train_idx=pool, models=np.array(result["models"]))
    mem = result["memorization"][pool]
    per_hour = 3600 * trainer.new / trainer.seconds if trainer.new else float("nan")
    metrics = {"models": result["models"], "new_models": trainer.new, "models_per_hour": per_hour,
               "mem_mean": float(np.nanmean(mem)) if np.isfinite(mem).any() else float("nan"),
               "mem_above_half": float(np.mean(mem > 0.5))}
    finished = result["models"] == args.num_models
    if finished:  # results.json marks a finished run
        write_json({**record, "wall_s": trainer.seconds, "split": data.split, "metrics": metrics},
                   os.path.join(args.save_dir, "results.json"))
    print(f"{'done' if finished else 'stopped'}: {result['models']}/{args.num_models} "
          f"models ({trainer.new} new here, {per_hour:.1f} models/hour), mean memorisation "
          f"{metrics['mem_mean']:.3f} -> {out}")


if __name__ == "__main__":
    run_cli(main)
