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
import warnings

import torch

import models
import pruning
import training
from datasets import get_info, load_data
from utils import (UsageError, add_common_args, add_data_args, add_model_args, default_save_dir, get_device,
                   load_checkpoint, make_parser, parse_floats, prepare_save_dir, run_cli, run_record,
                   save_checkpoint, seed_everything, write_json)

DEFAULT_RATE = {"omp": 0.95, "imp": 0.2, "synflow": 0.95}
DEFAULT_TIMES = {"omp": 2, "imp": 2, "synflow": 1}
PRUNE_KEYS = ("prune", "rate", "rewind_epoch")


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


def state_line(j, record):
    m = record["metrics"]
    return (f"state {j}: sparsity {m['sparsity']:6.2f}%  val {m['val_acc']:6.2f}%  test {m['TA']:6.2f}%")


def main():
    args = parse_args()
    info, mean, std, milestones = check_args(args)
    device = get_device(args.device)
    amp = training.resolve_amp(args.amp, device)
    channels_last = device.type == "cuda" if args.channels_last is None else args.channels_last
    prepare_save_dir(args.save_dir)
    config = vars(args)

    seed_everything(args.seed)
    data = load_data(info.name, args.data_path, device, args.split_seed, args.split)
    model = models.get_model(args.arch, info.num_classes, info.channels, info.im_size, mean, std).to(device)
    pruning.full_masks(model)  # a model without convolutions is refused here, before any training
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    val_loader = data.loader("val", batch_size=1024, channels_last=channels_last)
    test_loader = data.loader(data.test_indices(), test=True, batch_size=1024, channels_last=channels_last)
    rewind_path = os.path.join(args.save_dir, "rewind.pt")
    rewinding = args.prune in ("omp", "imp")
    budget = args.stop_after
    masks, summary = None, []

    for j in range(args.pruning_times):
        sdir = os.path.join(args.save_dir, f"state{j}")
        model_path, masks_path = os.path.join(sdir, "model.pt"), os.path.join(sdir, "masks.pt")
        if os.path.isfile(model_path):  # finished: skip, but carry its weights and mask to the next state
            record = load_checkpoint(model_path, map_location=device)
            done = record.get("prune") or {}
            changed = [k for k in PRUNE_KEYS if done.get(k) != config[k]]
            if changed:
                raise UsageError(f"--save_dir: state{j} there was made with other "
                                 f"{', '.join('--' + k for k in changed)}; use another --save_dir or the same flags")
            model.load_state_dict(record["state_dict"])
            masks = {n: m.to(device) for n, m in record["masks"].items()} if record.get("masks") else None
            summary.append({"state": j, **record["metrics"]})
            print(f"{state_line(j, record)}  (finished earlier, skipped)")
            continue

        prepare_save_dir(sdir)
        if os.path.isfile(masks_path):
            saved = load_checkpoint(masks_path, map_location=device)
            masks = saved or None
        elif j == 0 and args.prune == "synflow":
            masks = pruning.synflow_masks(model, args.rate, (info.channels, info.im_size, info.im_size))
        elif j > 0:
            masks = pruning.magnitude_masks(model, args.rate, masks)
        if not os.path.isfile(masks_path):
            save_checkpoint({n: m.cpu() for n, m in (masks or {}).items()}, masks_path)
        if j > 0:  # weight rewinding: the whole model back to the rewind point, survivors only
            if not os.path.isfile(rewind_path):
                raise UsageError(f"--save_dir: '{rewind_path}' (state 0's rewind weights) is missing; "
                                 "rerun in a fresh --save_dir")
            model.load_state_dict(load_checkpoint(rewind_path, map_location=device))
        pruning.apply_masks(model, masks)

        optimizer = training.build_optimizer(model.parameters(), args.lr, args.momentum, args.weight_decay)
        scheduler = training.build_scheduler(optimizer, args.scheduler, args.epochs, milestones, args.warmup)
        if j > 0 and rewinding:
            with warnings.catch_warnings():  # stepping before any optimizer step is the point here
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(args.rewind_epoch):  # learning-rate rewinding
                    scheduler.step()
        train_loader = data.loader(args.train_on, train=True, batch_size=args.batch_size, seed=args.seed + j,
                                   channels_last=channels_last, **({"augment": None} if args.no_aug else {}))

        def save_rewind(epoch):
            if j == 0 and rewinding and epoch == args.rewind_epoch and not os.path.isfile(rewind_path):
                save_checkpoint({k: v.detach().cpu() for k, v in model.state_dict().items()}, rewind_path)

        step_model = torch.compile(model) if args.compile else model
        record = run_record("main_prune.py", args, device)
        history, train_seconds, ran, finished = training.fit(
            model, optimizer, scheduler, train_loader, val_loader, args.epochs, os.path.join(sdir, "last.pt"),
            config, amp=amp, masks=masks, step_model=step_model, quiet=args.quiet, stop_after=budget,
            resume_keys=training.RESUME_KEYS + PRUNE_KEYS, on_epoch_start=save_rewind, label=f"state {j} ")
        if not finished:
            return
        save_rewind(args.epochs)  # --rewind_epoch == --epochs: the trained dense weights
        budget = None if budget is None else budget - ran

        test = training.evaluate(model, test_loader, amp)
        metrics = {"sparsity": pruning.sparsity(model), "mask_sparsity": pruning.mask_sparsity(masks),
                   "TA": test["acc"], "val_acc": history[-1]["val_acc"], "train_acc": history[-1]["train_acc"],
                   "train_s": train_seconds, "epoch_s_mean": train_seconds / len(history)}
        prune_info = {"prune": args.prune, "rate": args.rate, "rewind_epoch": args.rewind_epoch, "state": j}
        record_pt = models.model_record(model, args.arch, info, mean, std, split=data.split, train_on=args.train_on,
                                        epoch=args.epochs, metrics=metrics, recipe=training.recipe(args),
                                        prune=prune_info,
                                        **({"masks": {n: m.cpu() for n, m in masks.items()}} if masks else {}))
        training.plot_curves(history, os.path.join(sdir, "curves.png"))
        write_json({**record, "wall_s": train_seconds, "split": data.split, "prune": prune_info,
                    "forget": {"kind": "none", "classes": None, "n": 0, "indices_file": None},
                    "metrics": metrics, "history": history}, os.path.join(sdir, "results.json"))
        save_checkpoint(record_pt, model_path)  # last: its presence marks the state finished
        summary.append({"state": j, **metrics})
        print(state_line(j, record_pt), flush=True)

    write_json({**run_record("main_prune.py", args, device), "split": data.split,
                "metrics": summary[-1], "states": summary}, os.path.join(args.save_dir, "results.json"))
    print(f"done: {args.prune} {args.arch} on {info.name}, {args.pruning_times} state(s), final sparsity "
          f"{summary[-1]['sparsity']:.2f}% -> {args.save_dir}/state{args.pruning_times - 1}/model.pt")


if __name__ == "__main__":
    run_cli(main)
