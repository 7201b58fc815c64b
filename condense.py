r"""Condense the retain part of a train split into a small labelled set in the distilled.pt format: coresets
(the control every distilled set must beat), distribution matching, and forget-aware Blend.

    python condense.py --method herding --ipc 10 --mask runs/orig/model.pt --save_dir runs/herding10
    python condense.py --method kcenter --ipc 10 --mask runs/orig/model.pt --class_to_replace -1 \
        --num_indexes_to_replace 4500 --save_dir runs/kcenter10_retain
    python condense.py --method dm --ipc 50 --mask runs/orig/model.pt --class_to_replace 3 --save_dir runs/dm50_c3
    python condense.py --method blend --ipc 1000 --mask runs/orig/model.pt --class_to_replace -1 \
        --num_indexes_to_replace 4500 --offline_dir runs/blend1000 --save_dir runs/blend1000_rnd

Methods (the algorithms are in distillation/condensers.py):
  random, herding, kcenter  real images per class: seeded random, or greedy herding / k-center on the original
                            model's penultimate features.
  dm     distribution matching (Zhao & Bilen) with its published defaults: 20000 iterations, lr_img 1 (10 above
         ipc 50), 256 real images per class, DSA, a fresh ConvNetD3 every iteration, images initialised from
         random real ones. --learn_weights adds one learnable weight per image. Writes dm_last.pt every
         --save_every iterations; a rerun with the same flags continues it.
  blend  Blend (Khan 2025): per class k-means into ipc clusters on a random ConvNetD3's features, one learned
         affine blend of each cluster's images. Clusters and blends are computed once, on the whole train
         split, into --offline_dir and reused by every later request with the same settings; a request keeps
         the blends of clusters without forget images and the real retain images of the others.

The original model gives the dataset and split (and herding/kcenter's features). With forget flags only the
retain part of the train split is read (a class forgotten whole gets no images). Outputs in --save_dir:
distilled.pt (images in [0, 1], labels, weights and loss_weights (ones unless dm --learn_weights), source,
forget_indices, config, metrics), results.json, and forget_indices.npy with a forget set. Metrics: offline_s
(work independent of the forget set: blend's offline stage, or everything when there is no forget set),
request_s (work for this forget set), wall_s (this run), peak_mem_mb (CUDA max allocated, else peak RSS), n;
dm adds batch_real_used and final_loss; blend adds reduced_ratio (reduced size / retain size), n_blend, n_real,
offline_reused.
"""
import os
import resource
import time

import numpy as np
import torch

import training
from datasets import save_forget_indices
from distillation import condensers as cd
from distillation import matching as dd
from forget_sets import forget_set
from training import augment
from unlearn.setup import load_original
from utils import (Timer, UsageError, add_bool, add_common_args, add_forget_args, load_checkpoint, make_parser,
                   prepare_save_dir, run_cli, run_record, save_checkpoint, seed_everything, write_json)

METHODS = ("random", "herding", "kcenter", "dm", "blend")
# Flags that must match for dm_last.pt to be continued (--iterations may grow, --save_every may change).
DM_RESUME_KEYS = ("dataset", "split_seed", "ipc", "lr_img", "batch_real", "dsa", "learn_weights", "lr_weight", "seed")


def parse_args():
    p = make_parser(__doc__)
    p.add_argument("--method", default="herding", help=f"condenser: {', '.join(METHODS)}")
    p.add_argument("--ipc", type=int, default=10, help="images per class (blend: clusters per class)")
    g = p.add_argument_group("model and data")
    g.add_argument("--mask", "--model_path", dest="model_path", default=None,
                   help="the original model.pt (its dataset, split and, for herding/kcenter, its features)")
    g.add_argument("--dataset", default=None, help="must match the model's dataset (default: the model's)")
    g.add_argument("--data_path", "--data", dest="data_path", default="./data", help="dataset folder")
    g.add_argument("--split_seed", type=int, default=None, help="default: the model's split")
    add_bool(g, "--force", False, "allow a split seed other than the model's")
    add_forget_args(p)
    g = p.add_argument_group("dm and blend")
    g.add_argument("--iterations", type=int, default=None,
                   help=f"dm: image updates (default 20000); blend: mixing-weight updates (default "
                        f"{cd.BLEND['iterations']})")
    g.add_argument("--lr_img", type=float, default=None,
                   help="dm: SGD lr (momentum 0.5) of the images in normalised space (default 1, 10 above ipc 50)")
    g.add_argument("--batch_real", type=int, default=256, help="dm: real images per class per iteration")
    add_bool(g, "--dsa", True, "dm: DSA on the real and synthetic batches, the same draws for both")
    add_bool(g, "--learn_weights", False,
             "dm: learn one weight per image (a class's synthetic mean embedding weighted by w^2)")
    g.add_argument("--lr_weight", type=float, default=0.01, help="dm: SGD lr of the weights with --learn_weights")
    g.add_argument("--save_every", type=int, default=500, help="dm: write dm_last.pt every this many iterations")
    g.add_argument("--stop_after", type=int, default=None,
                   help="dm: stop after this many iterations in this invocation (rerun to go on)")
    g.add_argument("--offline_dir", default=None,
                   help="blend: folder of the offline stage (clusters and blends), made once and reused by every "
                        "request with the same settings (default runs/condense/<dataset>-blend-offline-ipc<ipc>-"
                        "seed<offline_seed>)")
    g.add_argument("--offline_seed", type=int, default=0,
                   help="blend: seed of the random feature network and k-means (apart from --seed, which draws "
                        "random forget sets, so requests for other forget sets reuse the offline stage)")
    g.add_argument("--lr_blend", type=float, default=None,
                   help="blend: SGD lr (momentum 0.5) of the mixing weights (default: the published cubic fit in ipc)")
    add_common_args(p)
    args = p.parse_args()
    if args.method not in METHODS:
        raise UsageError(f"--method: '{args.method}' is not one of {', '.join(METHODS)}")
    for flag in ("ipc", "batch_real", "save_every"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag}: must be at least 1, got {getattr(args, flag)}")
    if args.method == "dm":
        args.iterations = 20000 if args.iterations is None else args.iterations
        args.lr_img = cd.dm_lr_img(args.ipc) if args.lr_img is None else args.lr_img
        if args.lr_img <= 0 or (args.learn_weights and args.lr_weight <= 0):
            raise UsageError("--lr_img / --lr_weight: must be positive")
    if args.method == "blend":
        args.iterations = cd.BLEND["iterations"] if args.iterations is None else args.iterations
        args.lr_blend = cd.blend_lr(args.ipc) if args.lr_blend is None else args.lr_blend
        if args.lr_blend <= 0:
            raise UsageError(f"--lr_blend: must be positive, got {args.lr_blend:.4g} (the published fit turns "
                             "negative above ipc ~5000; give a value)")
    if args.iterations is not None and args.iterations < 0:
        raise UsageError(f"--iterations: must be non-negative, got {args.iterations}")
    return args


def peak_mem_mb(device) -> float:
    """Peak memory of this process so far: torch's CUDA max allocated on a GPU, else the peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cost_split(seconds: float, forget) -> dict:
    """Without a forget set all the work is offline; with one, all of it was made for this request."""
    return {"offline_s": seconds if forget is None else 0.0, "request_s": 0.0 if forget is None else seconds}


def run_coreset(args, model, data, pool, forget, device):
    with Timer(device) as t:
        pools = cd.class_pools(pool, data.y_train_np, data.info.num_classes, args.ipc)
        source = cd.select_real(args.method, pools, args.ipc, args.seed, model, data.x_train)
    payload = {"images": (cd.gather(data.x_train, source).float() / 255).cpu(),
               "labels": cd.gather(data.y_train, source).cpu(), "source": torch.from_numpy(source)}
    return payload, cost_split(t.seconds, forget), []


def run_dm(args, data, pool, forget, device):
    """DM, resumable: None when --stop_after ends this invocation early."""
    mark = time.perf_counter()
    info = data.info
    pools = cd.class_pools(pool, data.y_train_np, info.num_classes, args.ipc)
    init = cd.select_real("random", pools, args.ipc, args.seed)
    cfg = cd.DMConfig(args.iterations, args.lr_img, args.batch_real, augment.DSA_STRATEGY if args.dsa else None,
                      args.lr_weight if args.learn_weights else 0.0)
    dm = cd.DistributionMatching(data.x_train, pools, init, info, cfg, args.seed)
    path = os.path.join(args.save_dir, "dm_last.pt")
    forget_t = None if forget is None else torch.from_numpy(forget)
    state = {"history": [], "seconds": 0.0}
    if os.path.isfile(path):
        last = load_checkpoint(path)
        changed = [f"--{k}" for k in DM_RESUME_KEYS if last["config"].get(k) != getattr(args, k)]
        if (last["forget_indices"] is None) != (forget is None) or (
                forget is not None and not torch.equal(last["forget_indices"], forget_t)):
            changed.append("forget set")
        if changed:
            raise UsageError(f"{path} was made with another {', '.join(changed)}; use the same flags or another "
                             "--save_dir")
        dm.load_state_dict(last["dm"])
        state = {"history": last["history"], "seconds": last["seconds"]}

    def checkpoint():
        nonlocal mark
        now = time.perf_counter()
        state["seconds"] += now - mark
        mark = now
        save_checkpoint({"dm": dm.state_dict(), **state, "forget_indices": forget_t, "config": vars(args)}, path)

    first = dm.iteration
    end = args.iterations if args.stop_after is None else min(args.iterations, first + args.stop_after)
    bar = training.progress_bar(range(first, end), "dm iterations", args.quiet)
    losses = []
    for it in bar:
        losses.append(dm.step())  # device scalars: read back only at checkpoints
        if (it + 1) % args.save_every == 0 or it + 1 == end:
            state["history"].append({"it": it + 1, "loss": float(torch.stack(losses).mean())})
            losses = []
            checkpoint()
            bar.set_postfix(loss=f"{state['history'][-1]['loss']:.4g}")
    bar.close()
    if dm.iteration < args.iterations:
        print(f"stopped at iteration {dm.iteration} of {args.iterations}; rerun to continue -> {args.save_dir}")
        return None
    state["seconds"] += time.perf_counter() - mark  # since the last checkpoint (or the set-up, if none ran)
    payload = {**dd.snapshot(dm.syn, dm.space, info), "source": torch.from_numpy(init)}
    metrics = {**cost_split(state["seconds"], forget), "batch_real_used": dm.batch_real,
               "final_loss": state["history"][-1]["loss"] if state["history"] else None}
    return payload, metrics, state["history"]


def run_blend(args, data, forget, device):
    info = data.info
    offline_dir = args.offline_dir or os.path.join(
        "runs", "condense", f"{info.name}-blend-offline-ipc{args.ipc}-seed{args.offline_seed}")
    prepare_save_dir(offline_dir, "--offline_dir")
    wanted = cd.blend_manifest(info, data.split, len(data.train_idx), args.ipc, args.iterations, args.lr_blend,
                               args.offline_seed)

    def make():
        with Timer(device) as t:
            offline = cd.blend_offline(data.x_train, data.y_train_np, data.train_idx, info, args.ipc,
                                       args.iterations, args.lr_blend, args.offline_seed)
        return offline, {"offline_s": t.seconds, "peak_mem_mb": peak_mem_mb(device),
                         "clusters": len(offline["labels"])}

    offline, reused = cd.blend_offline_stage(offline_dir, wanted, make)
    with Timer(device) as t:
        out = cd.blend_request(offline, forget, data.x_train, data.y_train)
    retain = len(data.train_idx) - (0 if forget is None else len(forget))
    payload = {"images": out["images"].cpu(), "labels": out["labels"].cpu(), "source": os.path.abspath(offline_dir),
               "real_indices": out["real_indices"], "blend_clusters": out["blend_clusters"]}
    metrics = {"offline_s": offline["manifest"]["offline_s"], "request_s": t.seconds, "offline_reused": reused,
               "reduced_ratio": len(out["labels"]) / retain, "n_blend": out["n_blend"], "n_real": out["n_real"],
               "clusters": offline["manifest"]["clusters"]}
    history = [] if reused else [{"it": i, "loss": v} for i, v in enumerate(offline["loss"])]
    return payload, metrics, history


def main():
    args = parse_args()
    started = time.perf_counter()
    model, record, data, device = load_original(args)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    forget, desc = forget_set(args, data)
    pool = data.train_idx if forget is None else np.setdiff1d(data.train_idx, forget)
    info = data.info
    args.save_dir = args.save_dir or os.path.join("runs", "condense", f"{info.name}-{args.method}-ipc{args.ipc}"
                                                  f"{'-retain' if forget is not None else ''}-seed{args.seed}")
    prepare_save_dir(args.save_dir)
    seed_everything(args.seed)
    head = run_record("condense.py", args, device)
    if args.method == "blend":
        payload, metrics, history = run_blend(args, data, forget, device)
    elif args.method == "dm":
        result = run_dm(args, data, pool, forget, device)
        if result is None:
            return
        payload, metrics, history = result
    else:
        payload, metrics, history = run_coreset(args, model, data, pool, forget, device)
    n = len(payload["labels"])
    wall = time.perf_counter() - started
    metrics = {"wall_s": wall, **metrics, "peak_mem_mb": peak_mem_mb(device), "n": n}
    indices_file = None
    if forget is not None:
        save_forget_indices(forget, args.save_dir)
        indices_file = "forget_indices.npy"
    save_checkpoint({
        "weights": torch.ones(n), "loss_weights": torch.ones(n), "dataset": info.name, "num_classes": info.num_classes,
        "in_channels": info.channels, "im_size": info.im_size, "zca": None, **payload, "lr": None,
        "method": args.method, "forget_indices": None if forget is None else torch.from_numpy(forget),
        "config": vars(args), "metrics": metrics}, os.path.join(args.save_dir, "distilled.pt"))
    write_json({**head, "wall_s": wall, "split": data.split, "forget": {**desc, "indices_file": indices_file},
                "metrics": metrics, "history": history}, os.path.join(args.save_dir, "results.json"))
    extra = (f", reduced/retain {metrics['reduced_ratio']:.3f} ({metrics['n_blend']} blends + {metrics['n_real']} "
             f"real; offline stage {'reused' if metrics['offline_reused'] else 'made'})"
             if args.method == "blend" else "")
    print(f"{args.method}: {n} images from the {'retain part of the ' if forget is not None else ''}train split"
          f"{extra} in {wall:.1f}s -> {args.save_dir}/distilled.pt")


if __name__ == "__main__":
    run_cli(main)
