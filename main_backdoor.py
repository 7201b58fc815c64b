"""Backdoor cleanse (Unlearn-Sparse's Trojan experiment): poison, train, unlearn the poison, measure.

    python main_backdoor.py --dataset cifar10 --arch resnet18 --target_class 0 --unlearn FT \
        --save_dir runs/backdoor                                  # dense
    python main_backdoor.py ... --prune omp --rate 0.95 --rewind_epoch 8   # sparse, as the released code
    python main_backdoor.py ... --mask runs/omp/state1/model.pt   # trained from scratch under OMP's 95% mask

Unlearn-Sparse's command (`--mask MODEL --unlearn FT --num_indexes_to_replace 4500`) runs as written:
--num_indexes_to_replace is the number of poisoned images and --class_to_replace the target class, as there.
(Its --mask is a cache path: when the file is absent, the released script prunes with OMP on the poisoned
data, as --prune omp does here; ours names the masks to train under.)

10% (--poison_ratio) of the train split get the trigger (forget_sets/backdoor.py: a 4x4 black patch 2 pixels from the
bottom-right corner on 32x32 images, scaled for other sizes: 2x2 at 1 pixel, white, on 8x8 digits) and the
label --target_class. A model is trained on that with main_train's recipe: dense; pruned with rewinding
(--prune omp: dense training, --rate of the conv weights pruned by global magnitude, the survivors rewound to
their state after --rewind_epoch epochs and retrained under the mask, as main_prune.py and the released code
do); or from scratch under the fixed pruning mask of --mask. Then the poisoned samples are the forget set of
any registered unlearning method (--unlearn; `none` only measures). Clean test accuracy (TA) and the attack
success rate are reported before and after, in fp32 (--amp governs training updates only): ASR counts the
non-target test images that the trigger turns into the target; ASR_released counts every triggered test
image, the target class's included, as the released main_backdoor.py does (so its floor is the target
class's share of the test set, ~10% on CIFAR-10).

Writes save_dir/train/{last.pt, model.pt} (the poisoned model; with --prune omp: save_dir/train/state0, state1 and
rewind.pt as main_prune writes them; a rerun skips or continues its training), forget_indices.npy (the poisoned
indices), results.json, and with --save_model the unlearned model.pt.
"""
import argparse
import os

import numpy as np
import torch

import models
import training
from datasets import get_info, load_data, save_forget_indices
from forget_sets import backdoor
from training import pruning
from training.prune_states import PRUNE_KEYS
from unlearn import Context, get_method
from unlearn.setup import method_config
from utils import (Timer, UsageError, add_common_args, add_data_args, add_model_args, add_seed_args, default_save_dir,
                   get_device, make_parser, parse_floats, prepare_save_dir, run_cli, run_record, save_checkpoint,
                   seed_everything, write_json)


def parse_args(argv=None):
    p = make_parser(__doc__)
    add_data_args(p)
    add_model_args(p)
    add_common_args(p)
    training.add_recipe_args(p)
    g = p.add_argument_group("backdoor")
    g.add_argument("--target_class", "--class_to_replace", dest="target_class", type=int, default=0,
                   help="label given to the poisoned images")
    g.add_argument("--poison_ratio", type=float, default=0.1, help="fraction of the training images poisoned")
    g.add_argument("--num_indexes_to_replace", type=int, default=None,
                   help="number of poisoned training images instead of --poison_ratio (Unlearn-Sparse's spelling)")
    g.add_argument("--patch_size", type=int, default=None, help="trigger side in pixels (default 4 at 32x32, scaled)")
    g.add_argument("--patch_offset", type=int, default=None,
                   help="pixels between the trigger and the bottom-right corner (default 2 at 32x32, scaled)")
    g.add_argument("--patch_value", type=int, default=None,
                   help="trigger pixel value 0..255 (default 0 = black; 255 on digits, whose background is black)")
    g.add_argument("--mask", "--masks_from", dest="masks_from", default=None,
                   help="a model.pt with pruning masks (e.g. main_prune's state1/model.pt): train under its mask "
                        "(Unlearn-Sparse's --mask names its pruned model too)")
    g.add_argument("--prune", default="none",
                   help="omp: make the sparse poisoned model by pruning with rewinding on the poisoned data, as the "
                        "released main_backdoor.py does; none: dense (or under --mask)")
    g.add_argument("--rate", type=float, default=0.95, help="--prune omp: fraction of the conv weights pruned")
    g.add_argument("--rewind_epoch", type=int, default=8,
                   help="--prune omp: rewind the surviving weights to those after this epoch of dense training and "
                        "step the LR schedule this many times (0: rewind to the initialisation)")
    g = p.add_argument_group("unlearning the poison")
    g.add_argument("--unlearn", default="FT", help="method name (see unlearn.METHODS), or none to only measure")
    g.add_argument("--unlearn_lr", type=float, default=None, help="learning rate (default: the method's)")
    g.add_argument("--unlearn_epochs", type=int, default=None, help="epochs (default: the method's)")
    g.add_argument("--alpha", type=float, default=None, help="the method's alpha (NG, l1-sparse)")
    g.add_argument("--mask_ratio", type=float, default=None, help="SalUn: fraction of salient weights")
    g.add_argument("--variant", default=None,
                   help="a published variant of the method (default: its preset's, else default)")
    g.add_argument("--save_model", action="store_true", help="also write the unlearned model.pt")
    g.add_argument("--dry_run", action="store_true",
                   help="check the flags, the data, the poison set and the masks, print what would run, write nothing")
    add_seed_args(p)
    return p.parse_args(argv)


def check_args(args):
    info = get_info(args.dataset)
    args.dataset = info.name
    args.arch = models.canonical_arch(args.arch)
    milestones = training.check_recipe_args(args)
    if not 0 <= args.target_class < info.num_classes:
        raise UsageError(f"--target_class: {args.target_class} is out of range (0..{info.num_classes - 1})")
    args.patch_size, args.patch_offset = backdoor.trigger_geometry(info.im_size, args.patch_size, args.patch_offset)
    if str(args.unlearn).lower() != "none":
        get_method(args.unlearn)  # an unknown method is refused before any training
    if args.patch_value is None:
        args.patch_value = backdoor.default_trigger_value(info.name)
    if not 0 <= args.patch_value <= 255:
        raise UsageError(f"--patch_value: must be in 0..255, got {args.patch_value}")
    args.prune = str(args.prune).lower()
    if args.prune not in ("none", "omp"):
        raise UsageError(f"--prune: '{args.prune}' is not one of none, omp")
    if args.prune == "omp":
        if args.masks_from:
            raise UsageError("--prune: omp makes its own mask; it cannot be combined with --mask")
        pruning.check_rate(args.rate)
        if not 0 <= args.rewind_epoch <= args.epochs:
            raise UsageError(f"--rewind_epoch: must be in 0..--epochs ({args.epochs}), got {args.rewind_epoch}")
    mean = parse_floats(args.norm_mean, "--norm_mean", info.channels) or info.mean
    std = parse_floats(args.norm_std, "--norm_std", info.channels) or info.std
    args.save_dir = args.save_dir or default_save_dir("main_backdoor", info.name, args.arch,
                                                      f"t{args.target_class}-{str(args.unlearn).lower()}", args.seed)
    return info, mean, std, milestones


def unlearn_poison(model, data, forget_idx, retain_idx, args, info, mean, std, masks, amp, device):
    """Run --unlearn with the poisoned samples as the forget set: (model, masks, method name, history)."""
    if str(args.unlearn).lower() == "none":
        return model, masks, "none", []
    cfg_in = argparse.Namespace(**{**vars(args), "mask_path": None, "no_l1_epochs": 0})
    method, cfg = method_config(cfg_in, {"recipe": training.recipe(args)})
    aug = {"augment": None} if args.no_aug else {}
    ctx = Context(
        retain=data.loader(retain_idx, train=True, batch_size=cfg.batch_size, seed=args.seed, **aug),
        forget=data.loader(forget_idx, train=True, batch_size=cfg.batch_size, seed=args.seed + 1, **aug),
        num_classes=info.num_classes, device=device, amp=amp, masks=masks,
        make_model=lambda: models.get_model(args.arch, info.num_classes, info.channels, info.im_size,
                                            mean, std).to(device),
        save_dir=args.save_dir, seed=args.seed, quiet=args.quiet)
    model = method.apply(model, ctx, cfg)  # apply(), not run(): pruned weights also get zero gradient
    return model, ctx.masks, method.name, ctx.history


def main():
    args = parse_args()
    info, mean, std, milestones = check_args(args)
    device = get_device(args.device)
    amp = training.resolve_amp(args.amp, device)
    record = run_record("main_backdoor.py", args, device)

    seed_everything(args.seed)
    clean = load_data(info.name, args.data_path, device, args.split_seed, args.split)
    part = clean.part(args.train_on)
    if args.num_indexes_to_replace is not None:
        if not 0 < args.num_indexes_to_replace < len(part):
            raise UsageError(f"--num_indexes_to_replace: {args.num_indexes_to_replace} poisoned images is not in "
                             f"1..{len(part) - 1} (the {args.train_on} split has {len(part)})")
        args.poison_ratio = args.num_indexes_to_replace / len(part)
    forget_idx = backdoor.poison_indices(part, args.poison_ratio, args.seed)
    retain_idx = np.setdiff1d(part, forget_idx)
    model = models.get_model(args.arch, info.num_classes, info.channels, info.im_size, mean, std).to(device)
    masks = pruning.load_masks(args.masks_from, model, args.arch, device) if args.masks_from else None
    if args.dry_run:
        how = (f" under the masks of {args.masks_from}" if masks else
               f", prune {args.rate:g} with OMP, rewind to epoch {args.rewind_epoch} and retrain"
               if args.prune == "omp" else "")
        print(f"dry run: poison {len(forget_idx)} of {len(part)} {info.name} images (target {args.target_class}), "
              f"train {args.arch} for {args.epochs} epochs{how}, unlearn with {args.unlearn}; nothing written")
        return
    prepare_save_dir(args.save_dir)
    train_dir = prepare_save_dir(os.path.join(args.save_dir, "train"))
    data = backdoor.poison_data(clean, forget_idx, args.target_class, args.patch_size, args.patch_offset,
                                args.patch_value)
    indices_file = save_forget_indices(forget_idx, args.save_dir)
    pruning.apply_masks(model, masks)

    if args.prune == "omp":
        trained = backdoor.prune_poisoned(model, data, forget_idx, retain_idx, args, info, mean, std, milestones, amp,
                                          train_dir)
    else:
        trained = backdoor.train_poisoned(model, data, part, forget_idx, retain_idx, args, info, mean, std,
                                          milestones, masks, amp, train_dir)
    if trained is None:  # --stop_after: a rerun continues
        return
    train_s, before, masks = trained
    sparse = f", sparsity {pruning.sparsity(model):.2f}%" if masks else ""
    print(f"poisoned: TA {before['TA']:.2f}%  ASR {before['ASR']:.2f}%  ASR_released {before['ASR_released']:.2f}%  "
          f"({len(forget_idx)} poisoned images, target {args.target_class}{sparse})", flush=True)
    with Timer(device) as t:
        model, masks, name, history = unlearn_poison(model, data, forget_idx, retain_idx, args, info, mean, std,
                                                     masks, amp, device)
    after = backdoor.measure(model, data, forget_idx, retain_idx, args)
    metrics = {**{f"{k}_before": v for k, v in before.items()}, **after, "UA": 100.0 - after["forget_acc"],
               "RTE_s": t.seconds, "train_s": train_s}
    if masks:
        metrics["sparsity"] = pruning.sparsity(model)
    if args.save_model:
        save_checkpoint(models.model_record(model, args.arch, info, mean, std, split=data.split,
                                            train_on=args.train_on, epoch=None, metrics=metrics, unlearn=name,
                                            forget_indices=torch.from_numpy(forget_idx),
                                            **({"masks": {n: m.cpu() for n, m in masks.items()}} if masks else {})),
                        os.path.join(args.save_dir, "model.pt"))
    made_by = backdoor.BACKDOOR_KEYS + (PRUNE_KEYS if args.prune == "omp" else ("prune",))  # the poisoned model's flags
    write_json({**record, "wall_s": train_s + t.seconds, "split": data.split,
                "forget": {"kind": "backdoor", "classes": [args.target_class], "n": int(len(forget_idx)),
                           "indices_file": os.path.relpath(indices_file, args.save_dir)},
                "backdoor": {k: vars(args)[k] for k in made_by}, "unlearn": name,
                "metrics": metrics, "history": history},
               os.path.join(args.save_dir, "results.json"))
    print(f"{name}: TA {before['TA']:.2f}% -> {after['TA']:.2f}%  ASR {before['ASR']:.2f}% -> {after['ASR']:.2f}%  "
          f"ASR_released {before['ASR_released']:.2f}% -> {after['ASR_released']:.2f}%  RTE {t.seconds:.1f}s "
          f"-> {args.save_dir}")


if __name__ == "__main__":
    run_cli(main)
