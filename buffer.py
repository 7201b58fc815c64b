"""Train expert networks and save their parameter trajectories for trajectory matching (MTT's recipe).

    python buffer.py --dataset=CIFAR10 --model=ConvNetD3 --train_epochs=50 --num_experts=100 --zca

Each expert: a fresh ConvNet (seeded per expert), plain SGD (lr 0.01, no momentum, no weight decay, constant
lr unless --decay), batch 256, cross-entropy, DSA on every batch; its flat fp32 parameters are recorded at
init and after every epoch. Data: the full official train set (MTT's protocol: all 50,000 CIFAR images,
including the 5,000 that unlearning holds out for validation) in MTT's training space: ZCA-whitened [0, 1]
pixels (kornia's eps 0.1, fitted once on the training source) with --zca, else normalised with MTT's
constants (the dataset's own statistics outside CIFAR). DSA acts in that space, as in MTT.

Forget flags (--class_to_replace, --num_indexes_to_replace, --forget_indices; as in unlearning) train on the
full train set minus the forget indices, so the experts (and the ZCA) never see them; validation images stay
in, so a retain-only buffer differs from the default one only by the forget set. Give such a buffer its
own --buffer_path (or --save_dir, which names the exact folder instead of the one derived below): a folder
never mixes buffers made from different data or flags.

Files: <buffer_path>/<DATASET>[_NO_ZCA]/<Model>/replay_buffer_<k>.pt (e.g. buffers/CIFAR10/ConvNetD3), file k
holding experts k*save_interval ... (global indices; contents in experts.py), plus one shared zca.pt, and
results.json (results_from<K>.json for a run starting at expert K). A file is written atomically when its
experts are done; a rerun skips complete files, so kill -9 loses at most the file in progress.
Sharding: --expert_offset K (a multiple of --save_interval) starts at expert K; in a SLURM job array it
defaults to SLURM_ARRAY_TASK_ID x (files per task) x save_interval, i.e. every array task trains its own
--num_experts experts into its own files. Experts are seeded by (--seed, global index), so any split into
jobs gives the same buffer.
"""
import math
import os
import time

import numpy as np
import torch

import training
from datasets import DeviceLoader, get_info, load_data, save_forget_indices
from distillation import experts
from forget_sets import forget_set
from training import augment
from utils import (UsageError, add_bool, add_common_args, add_data_args, add_forget_args, get_device, make_parser,
                   prepare_save_dir, run_cli, run_record, save_checkpoint, write_json)

# Flags that must agree between the files of one buffer folder (num_experts/expert_offset may differ: that is
# how shards and later extensions add files; the training data are compared through source_digest).
MATCH_KEYS = ("dataset", "model", "zca", "train_epochs", "lr_teacher", "batch_train", "mom", "l2", "dsa",
              "dsa_strategy", "decay", "save_interval", "seed")
EVAL_BATCH = 1024


def parse_args(argv=None):
    p = make_parser(__doc__)
    add_data_args(p, default_dataset="CIFAR10")
    add_common_args(p)
    add_forget_args(p)
    g = p.add_argument_group("experts (MTT's defaults)")
    g.add_argument("--model", default="ConvNetD3", help="network, see models.MODELS (ConvNet = ConvNetD3)")
    g.add_argument("--num_experts", type=int, default=100, help="experts this run trains")
    g.add_argument("--train_epochs", type=int, default=50, help="epochs per expert")
    g.add_argument("--lr_teacher", type=float, default=0.01, help="SGD learning rate of the experts")
    g.add_argument("--batch_train", type=int, default=256, help="minibatch size")
    g.add_argument("--mom", type=float, default=0.0, help="SGD momentum")
    g.add_argument("--l2", type=float, default=0.0, help="SGD weight decay")
    add_bool(g, "--decay", False, "lr x0.1 (fresh optimizer) after epoch train_epochs//2 + 1, as MTT's --decay")
    add_bool(g, "--zca", False, "train in ZCA-whitened space (eps 0.1)")
    add_bool(g, "--dsa", True, "differentiable Siamese augmentation on every training batch")
    g.add_argument("--dsa_strategy", default=augment.DSA_STRATEGY, help="DSA groups joined by _ (one per batch)")
    g.add_argument("--eval_every", type=int, default=0,
                   help="test accuracy every N epochs (0: after the last epoch only; the last is always tested)")
    g = p.add_argument_group("files")
    g.add_argument("--buffer_path", default="./buffers", help="root of the buffer folders")
    g.add_argument("--save_interval", type=int, default=10, help="experts per replay_buffer file")
    g.add_argument("--expert_offset", type=int, default=None,
                   help="global index of this run's first expert, a multiple of --save_interval (default 0, or "
                        "SLURM_ARRAY_TASK_ID x ceil(num_experts / save_interval) x save_interval in a job array)")
    return p.parse_args(argv)


def check_args(args):
    info = get_info(args.dataset)
    args.dataset = info.name
    args.model = experts.canonical_model(args.model)
    for flag in ("num_experts", "train_epochs", "batch_train", "save_interval"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag}: must be at least 1, got {getattr(args, flag)}")
    if args.eval_every < 0:
        raise UsageError(f"--eval_every: must be 0 (last epoch only) or positive, got {args.eval_every}")
    if args.seed < 0:
        raise UsageError(f"--seed: must be non-negative, got {args.seed}")
    try:
        augment.parse_strategy(args.dsa_strategy)
    except ValueError as e:
        raise UsageError(f"--dsa_strategy: {e}")
    if args.expert_offset is None:
        task = os.environ.get("SLURM_ARRAY_TASK_ID")
        if task is not None and not task.isdigit():
            raise UsageError(f"SLURM_ARRAY_TASK_ID='{task}' is not a task number; pass --expert_offset")
        args.expert_offset = int(task or 0) * math.ceil(args.num_experts / args.save_interval) * args.save_interval
    if args.expert_offset < 0 or args.expert_offset % args.save_interval:
        raise UsageError(f"--expert_offset: must be a non-negative multiple of --save_interval "
                         f"({args.save_interval}), got {args.expert_offset}")
    flag = "--save_dir" if args.save_dir else "--buffer_path"
    args.save_dir = args.save_dir or experts.buffer_dir(args.buffer_path, info.name, args.model, args.zca)
    prepare_save_dir(args.save_dir, flag)
    return info


def plan_files(args):
    """[(k, [global expert indices])] this run is responsible for."""
    first, end, per = args.expert_offset, args.expert_offset + args.num_experts, args.save_interval
    return [(k, list(range(k * per, min((k + 1) * per, end)))) for k in range(first // per, (end - 1) // per + 1)]


def existing_files(args, plan, source_digest):
    """{k: record} of this run's files already complete. Any file in the folder made with other flags, or
    one of ours holding other experts, is an error: a folder holds one buffer."""
    ours = dict(plan)
    done = {}
    for k, path in experts.buffer_files(args.save_dir):
        record = experts.load_buffer(path, mmap=True)
        changed = [f"--{key}" for key in MATCH_KEYS if record["config"].get(key) != getattr(args, key)]
        if record["source_digest"] != source_digest:
            changed.append("training data (forget flags or --split_seed)")
        if changed:
            raise UsageError(f"{args.save_dir} holds a buffer made with other {', '.join(changed)} ({path}); "
                             "use another --buffer_path or --save_dir, or the same flags")
        if k in ours:
            if record["expert_indices"].tolist() != ours[k]:
                raise UsageError(f"{path} holds experts {record['expert_indices'].tolist()}, but this run "
                                 f"assigns {ours[k]} to it (another --num_experts?); move it away to retrain")
            done[k] = record
    return done


def training_space(args, info, data, source, source_digest, device):
    """Train images (the source rows only) and test images as float tensors in the space the experts see."""
    rows = torch.as_tensor(source, device=device)
    x_train = data.x_train.index_select(0, rows).float().div_(255)
    x_test = data.x_test.float().div_(255)
    if args.zca:
        zca, pointer = experts.shared_zca(args.save_dir, x_train, info.name, source_digest)
        return zca(x_train), zca(x_test), {"zca": pointer, "norm_mean": None, "norm_std": None}
    mean, std = experts.training_norm(info)
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    return (x_train - m) / s, (x_test - m) / s, {"zca": None, "norm_mean": list(mean), "norm_std": list(std)}


def main():
    started = time.perf_counter()
    args = parse_args()
    info = check_args(args)
    experts.warn_small_norm_maps(args.model, info)
    device = get_device(args.device)
    data = load_data(info.name, args.data_path, device, args.split_seed, args.split)
    forget, forget_desc = forget_set(args, data)
    source = data.part("full") if forget is None else np.setdiff1d(data.part("full"), forget)
    source_digest = experts.digest(source)
    plan = plan_files(args)
    done = existing_files(args, plan, source_digest)
    todo = [(k, members) for k, members in plan if k not in done]
    forget_file = None if forget is None else save_forget_indices(forget, args.save_dir)
    record = run_record("buffer.py", args, device)

    written, train_seconds = {}, 0.0
    if todo:
        x_train, x_test, space = training_space(args, info, data, source, source_digest, device)
        trainer = experts.ExpertTrainer(args, info, x_train, data.y_train.index_select(0, torch.as_tensor(
            source, device=device)), DeviceLoader(x_test, data.y_test, batch_size=EVAL_BATCH))
        common = {"dataset": info.name, "model": args.model, "num_classes": info.num_classes,
                  "in_channels": info.channels, "im_size": info.im_size, **space,
                  "source_indices": torch.from_numpy(source), "source_digest": source_digest,
                  "forget_indices": None if forget is None else torch.from_numpy(forget), "config": vars(args)}
        bar = training.progress_bar(range(sum(len(m) for _, m in todo) * args.train_epochs), "expert-epochs",
                                    args.quiet)
        for k, members in todo:
            written[k] = {**common, **trainer.train_file(members, bar)}
            save_checkpoint(written[k], experts.buffer_file(args.save_dir, k))
            train_seconds += written[k]["train_seconds"]
        bar.close()

    history = experts.buffer_history(plan, written, done)
    final = [h["test_acc"][args.train_epochs] for h in history]
    expert_epochs = sum(len(m) for _, m in todo) * args.train_epochs
    metrics = {"TA": float(np.mean(final)), "TA_min": min(final), "TA_max": max(final), "experts": len(history),
               "files_written": len(written), "files_skipped": len(done), "train_s": train_seconds,
               "s_per_expert_epoch": train_seconds / expert_epochs if expert_epochs else None}
    wall = time.perf_counter() - started
    name = "results.json" if args.expert_offset == 0 else f"results_from{args.expert_offset}.json"
    write_json({**record, "wall_s": wall, "split": data.split,
                "forget": {**forget_desc, "indices_file": forget_file}, "metrics": metrics, "history": history},
               os.path.join(args.save_dir, name))
    speed = f", {metrics['s_per_expert_epoch']:.3f} s/expert-epoch" if expert_epochs else ""
    print(f"done: experts {plan[0][1][0]}-{plan[-1][1][-1]} of {experts.model_dirname(args.model)} on {info.name}"
          f"{' (ZCA)' if args.zca else ''}, {len(written)} files written, {len(done)} already complete; final test "
          f"acc {metrics['TA']:.2f}% ({metrics['TA_min']:.2f}-{metrics['TA_max']:.2f}); {wall:.1f}s{speed} "
          f"-> {args.save_dir}")


if __name__ == "__main__":
    run_cli(main)
