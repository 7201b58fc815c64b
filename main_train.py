"""Train the original model (the one that later gets unlearned), Unlearn-Sparse recipe by default.

    python main_train.py --dataset cifar10 --arch resnet18 --epochs 182 --save_dir runs/orig

SGD(0.1, momentum 0.9, wd 5e-4), batch 256, MultiStepLR x0.1 at 91,136, crop+flip, on the 45k train split
(`--train_on full` for all 50k). Writes model.pt, last.pt (every epoch; rerun or --resume to continue),
results.json and curves.png into --save_dir; with --record_events also events.npz (memorisation proxies,
see forget_sets/memorization.py).
"""
import os

import torch

import models
import training
from datasets import get_info, load_data
from forget_sets.memorization import EventRecorder
from utils import (UsageError, add_bool, add_common_args, add_data_args, add_model_args, add_seed_args,
                   default_save_dir, get_device, make_parser, parse_floats, prepare_save_dir, run_cli, run_record,
                   save_checkpoint, seed_everything, write_json)


def parse_args(argv=None):
    p = make_parser(__doc__)
    add_data_args(p)
    add_model_args(p)
    add_common_args(p)
    training.add_recipe_args(p)
    add_bool(p, "--record_events", False, "record learning-event memorisation proxies (running means of "
             "confidence, max confidence, entropy, correctness per example) into events.npz")
    add_seed_args(p)
    return p.parse_args(argv)


def check_args(args):
    info = get_info(args.dataset)
    args.dataset = info.name
    args.arch = models.canonical_arch(args.arch)
    milestones = training.check_recipe_args(args)
    mean = parse_floats(args.norm_mean, "--norm_mean", info.channels) or info.mean
    std = parse_floats(args.norm_std, "--norm_std", info.channels) or info.std
    args.save_dir = args.save_dir or default_save_dir("main_train", info.name, args.arch, args.train_on, args.seed)
    return info, mean, std, milestones


def main():
    args = parse_args()
    info, mean, std, milestones = check_args(args)
    device = get_device(args.device)
    amp = training.resolve_amp(args.amp, device)
    channels_last = device.type == "cuda" if args.channels_last is None else args.channels_last
    last_path = os.path.join(args.save_dir, "last.pt")
    if args.resume and not os.path.isfile(last_path):
        raise UsageError(f"--resume: no last.pt in '{args.save_dir}' to continue from")
    prepare_save_dir(args.save_dir)

    seed_everything(args.seed)
    data = load_data(info.name, args.data_path, device, args.split_seed, args.split)
    model = models.get_model(args.arch, info.num_classes, info.channels, info.im_size, mean, std).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = training.build_optimizer(model.parameters(), args.lr, args.momentum, args.weight_decay)
    scheduler = training.build_scheduler(optimizer, args.scheduler, args.epochs, milestones, args.warmup)
    train_loader = data.loader(args.train_on, train=True, batch_size=args.batch_size, seed=args.seed,
                               channels_last=channels_last, **({"augment": None} if args.no_aug else {}))
    val_loader = data.loader("val", batch_size=1024, channels_last=channels_last)
    test_loader = data.loader(data.test_indices(), test=True, batch_size=1024, channels_last=channels_last)
    step_model = torch.compile(model) if args.compile else model

    record = run_record("main_train.py", args, device)
    events = (EventRecorder(len(data.y_train), device, os.path.join(args.save_dir, "events_partial.pt"))
              if args.record_events else None)
    history, train_seconds, _, done = training.fit(
        model, optimizer, scheduler, train_loader, val_loader, args.epochs, last_path, vars(args), amp=amp,
        step_model=step_model, quiet=args.quiet, stop_after=args.stop_after,
        on_epoch_start=events.on_epoch_start if events else None, on_batch=events)
    if not done:
        if events is not None:
            events.checkpoint()  # the epochs run so far, for the rerun
        return
    if events is not None:
        events.finish(args.epochs, os.path.join(args.save_dir, "events.npz"))

    test = training.evaluate(model, test_loader)
    metrics = {"TA": test["acc"], "val_acc": history[-1]["val_acc"], "train_acc": history[-1]["train_acc"],
               "train_s": train_seconds, "epoch_s_mean": train_seconds / len(history)}
    split = data.split
    save_checkpoint(models.model_record(model, args.arch, info, mean, std, split=split, train_on=args.train_on,
                                        epoch=args.epochs, metrics=metrics, recipe=training.recipe(args)),
                    os.path.join(args.save_dir, "model.pt"))
    training.plot_curves(history, os.path.join(args.save_dir, "curves.png"))
    write_json({**record, "wall_s": train_seconds, "split": split,
                "forget": {"kind": "none", "classes": None, "n": 0, "indices_file": None},
                "metrics": metrics, "history": history}, os.path.join(args.save_dir, "results.json"))
    print(f"done: {args.arch} on {info.name} ({args.train_on}), {args.epochs} epochs in {train_seconds:.1f}s, "
          f"val {metrics['val_acc']:.2f}%, test {metrics['TA']:.2f}% -> {args.save_dir}/model.pt")


if __name__ == "__main__":
    run_cli(main)
