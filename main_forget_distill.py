"""Unlearn with a distilled (weighted) set standing in for the real data, evaluated exactly as main_forget.py
(always on real data), so tables mix both kinds of runs.

    python main_forget_distill.py --mask resnet18_cifar10.pth --unlearn FT --unlearn_lr 0.01 \
        --unlearn_epochs 10 --class_to_replace 3 --dataset cifar10 --distilled runs/distill/distilled.pt

--distilled takes any distilled.pt: distill.py's, or condense.py's random/herding control of the same size;
without it, the newest finished distill.py run for the dataset under runs/distill/ (its default output).
Class-wise: distilled forget = the distilled images of the forgotten classes, distilled retain = the others.
Random forgetting has no distilled forget images, so the real forget samples are used, and a distilled
retain set must come from a retain-only buffer/condensation made for exactly this forget set.
Distilled images enter as float tensors in pixel space through the model's own normalisation; each sample's
loss is multiplied by its `loss_weights` (w^2 renormalised to mean 1, as in distillation) unless
--use_weights off. Times: RTE_s (the method), prep_s (loading and selecting the set), offline_s (what making
the set cost: condense.py's own metrics, or distill.py's results.json plus its buffer's; null if unknown), and
request_s (prep_s plus the part of making the set that was for this forget set alone; see set_costs).
"""
import os
import sys
from functools import partial

import numpy as np
import torch

import training
from datasets import DeviceLoader, train_augment
from distillation.matching import offline_seconds
from training import augment
from unlearn.run import execute, make_context, start_run
from unlearn.setup import add_unlearn_args, dry_run, load_original, method_config, newest_finished
from utils import Timer, UsageError, add_bool, add_common_args, load_checkpoint, make_parser, run_cli, seed_everything

SOURCES = ("real", "distilled")
AUGMENTS = ("none", "crop_flip", "dsa")


def parse_args():
    p = make_parser(__doc__)
    add_unlearn_args(p)
    add_common_args(p)
    g = p.add_argument_group("distilled data")
    g.add_argument("--distilled", default=None, help="the distilled.pt to unlearn with (default: the newest finished "
                   "one distill.py wrote under runs/distill/<dataset>-*/, its default output)")
    g.add_argument("--retain_source", default="distilled", help="real or distilled retain data")
    g.add_argument("--forget_source", default=None,
                   help="real or distilled forget data (default: distilled for class-wise forgetting, else real)")
    g.add_argument("--use_weights", default="on", help="on: scale each distilled sample's loss by its loss weight")
    g.add_argument("--distill_aug", default="crop_flip", help="augmentation of distilled batches: none, crop_flip, dsa")
    add_bool(g, "--freeze_bn", False, "keep BatchNorm statistics fixed during updates")
    g.add_argument("--data_tag", default=None,
                   help="name of this data in tables (default: the set's method, e.g. herding, mtt-wdd)")
    args = p.parse_args()
    for flag, value, allowed in (("--retain_source", args.retain_source, SOURCES),
                                 ("--forget_source", args.forget_source, SOURCES + (None,)),
                                 ("--use_weights", args.use_weights, ("on", "off")),
                                 ("--distill_aug", args.distill_aug, AUGMENTS)):
        if value not in allowed:
            raise UsageError(f"{flag}: '{value}' is not one of {', '.join(a for a in allowed if a)}")
    return args


def newest_distilled(dataset):
    """No --distilled: the newest finished distilled.pt under distill.py's default output for the dataset
    (runs/distill/<dataset>-<model>-ipc<k>-seed<s>/; finished = results.json beside it)."""
    path = newest_finished(os.path.join("runs", "distill", f"{dataset}-*", "distilled.pt"))
    if path is None:
        raise UsageError(f"--distilled: none given and no finished distill.py run for {dataset} under runs/distill/ "
                         f"(make one: python buffer.py --dataset {dataset} --zca, then python distill.py --dataset "
                         f"{dataset} --ipc 1 --zca; or give --distilled PATH)")
    print(f"--distilled not given: using the newest, {path}", flush=True)
    return path


def load_distilled(path, info, device):
    d = load_checkpoint(path)
    if not isinstance(d, dict) or "images" not in d or "labels" not in d:
        raise UsageError(f"--distilled: '{path}' is not a distilled.pt (no images/labels)")
    if d.get("dataset") != info.name or d.get("num_classes") != info.num_classes:
        raise UsageError(f"--distilled: '{path}' holds {d.get('dataset')} with {d.get('num_classes')} classes; the "
                         f"model is for {info.name} with {info.num_classes}")
    return d


def check_roles(args, run, d):
    """Which data plays retain and forget, refusing the combinations that would leak or cannot exist."""
    classwise = bool(run.forget_classes)
    args.forget_source = args.forget_source or ("distilled" if classwise else "real")
    made_for = d.get("forget_indices")
    made_for = None if made_for is None else np.sort(np.asarray(made_for))
    if not classwise and args.forget_source == "distilled":
        raise UsageError("--forget_source: random forgetting has no distilled forget images; use real")
    if not classwise and args.retain_source == "distilled" and (
            made_for is None or not np.array_equal(made_for, run.forget_idx)):
        raise UsageError("--distilled: random forgetting needs a distilled set made without this forget set (a "
                         "retain-only buffer or condensation with the same forget indices); this one "
                         + ("saw all the training data" if made_for is None else "was made for another forget set"))
    labels = np.asarray(d["labels"])
    if args.forget_source == "distilled" and not np.isin(run.forget_classes, labels).all():
        raise UsageError(f"--class_to_replace: class(es) {run.forget_classes} have no images in the distilled set")
    if classwise and args.retain_source == "distilled" and made_for is None:
        print("warning: the distilled retain set comes from data that included the forget set", file=sys.stderr)


def set_costs(path, d):
    """(offline_s, request_s) of making the set, None where unknown. condense.py records both; a distill.py set
    whose buffer left a forget set out (retain-only) serves that one request, so all its cost is per request."""
    made, metrics = offline_seconds(path, d), d.get("metrics") or {}
    if isinstance(metrics.get("request_s"), (int, float)):
        return made, float(metrics["request_s"])
    return (0.0, made) if d.get("forget_indices") is not None else (made, 0.0)


def main():
    args = parse_args()
    model, record, data, device = load_original(args)
    method, cfg = method_config(args, record)
    args.distilled = cfg.distilled = args.distilled or newest_distilled(data.info.name)
    if args.dry_run:
        load_distilled(args.distilled, data.info, device)
        return dry_run(args, data, cfg)
    run = start_run("main_forget_distill.py", args, cfg, method, model, record, data, device, "distilled-")
    with Timer(device) as prep:
        d = load_distilled(args.distilled, data.info, device)
        check_roles(args, run, d)
        images = d["images"].float().to(device)
        labels = d["labels"].long().to(device)
        weights = (d["loss_weights"].float() if args.use_weights == "on" and d.get("loss_weights") is not None
                   else torch.ones(len(labels))).to(device)
        is_forget = torch.isin(labels, torch.tensor(run.forget_classes, dtype=torch.long, device=device))
        aug = {"none": None, "crop_flip": partial(augment.crop_flip, padding=data.info.crop_padding),
               "dsa": augment.dsa}[args.distill_aug]

        def distilled(mask, seed):
            rows = torch.nonzero(mask).flatten()
            return DeviceLoader(images, labels, rows, weights[rows], cfg.batch_size, shuffle=True, augment=aug,
                                seed=seed)

        real_aug = {"augment": None} if cfg.no_aug else {"augment": train_augment(data.info)}
        seed_everything(args.seed)
        retain = (distilled(~is_forget, args.seed) if args.retain_source == "distilled" else
                  data.loader(run.retain_idx, train=True, batch_size=cfg.batch_size, seed=args.seed, **real_aug))
        forget = (distilled(is_forget, args.seed + 1) if args.forget_source == "distilled" else
                  data.loader(run.forget_idx, train=True, batch_size=cfg.batch_size, seed=args.seed + 1, **real_aug))
    run.extra = {"data_tag": args.data_tag or d.get("method"),
                 "retain_source": args.retain_source, "forget_source": args.forget_source,
                 "distilled_method": d.get("method"), "distilled_n": len(labels)}

    def diagnostics(unlearned):
        offline, request = set_costs(args.distilled, d)
        out = {"prep_s": prep.seconds, "offline_s": offline,
               "request_s": None if request is None else request + prep.seconds}
        if is_forget.any():
            rows = torch.nonzero(is_forget).flatten()
            out["distilled_forget_acc"] = training.evaluate(unlearned, DeviceLoader(images, labels, rows))["acc"]
        return out

    execute(run, make_context(run, retain, forget, freeze_bn=args.freeze_bn), diagnostics)


if __name__ == "__main__":
    run_cli(main)
