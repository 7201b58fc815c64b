"""Distil a dataset by matching expert trajectories (MTT), with learnable per-image weights (MU-WDD).

    python distill.py --dataset=CIFAR10 --ipc=1 --syn_steps=50 --expert_epochs=2 --max_start_epoch=45 \
        --lr_img=1000 --lr_lr=1e-07 --lr_teacher=0.01 --lr_weights=0.01 --data_path <PATH> --zca --model=ConvNetD3

Reads the experts buffer.py wrote (<buffer_path>/<DATASET>[_NO_ZCA]/<Model>/replay_buffer_*.pt, or a folder
holding them given directly as --buffer_path) and learns ipc images per class, their weights and the inner
step size (distillation.py has the algorithm). --grad_mode exact (default) gives MTT's meta-gradient with
one step's activation memory; unroll is MTT's memory-hungry reference; tesla is TESLA's approximation.
--lr_weights 0 is unweighted distillation.

Every --eval_it iterations (and at the end), --num_eval fresh networks train on the synthetic set (learned
lr, momentum 0.9, wd 5e-4, DSA, weighted loss unless --eval_weighted False); their accuracy on the
validation split picks best.pt, test accuracy is reported only. Files in --save_dir: distilled.pt (latest
evaluated state), best.pt, last.pt (every --save_every iterations; --resume or a rerun continues it),
grid.png, curves.png, results.json.

Differences from MTT, on purpose: every random choice comes from one seeded generator (same seed, same run
on CPU; last.pt stores its state); each iteration draws its expert uniformly from all (memory-mapped)
buffer files, so --load_all only decides whether trajectories are copied to the device up front (MTT walks
one shuffled file at a time without it); the real initial images come from the experts' training source
minus the validation split; "best" is chosen on validation accuracy, never on test accuracy. Note that
buffer.py's experts train on the full train set, validation split included (MTT's protocol), so validation
accuracy is held out from the synthetic images' initialisation and evaluation networks, not from the
trajectories.
"""
import glob
import math
import os
import time

import torch

import augment
import buffers
import distillation as dd
import training
from datasets import DeviceLoader, get_info, load_data
from utils import (UsageError, add_bool, add_common_args, add_data_args, default_save_dir, get_device,
                   load_checkpoint, make_parser, prepare_save_dir, run_cli, run_record, save_checkpoint,
                   seed_everything, write_json)

# Flags that must match for last.pt to be continued (the rest, e.g. --Iteration, --eval_it, may change).
RESUME_KEYS = ("dataset", "model", "ipc", "syn_steps", "expert_epochs", "max_start_epoch", "lr_img", "lr_lr",
               "lr_teacher", "lr_weights", "batch_syn", "pix_init", "dsa", "dsa_strategy", "no_aug", "zca",
               "grad_mode", "weight_grad", "seed", "split_seed", "split", "load_all", "max_files", "max_experts")
EVAL_BATCH = 1024


def parse_args(argv=None):
    p = make_parser(__doc__)
    add_data_args(p, default_dataset="CIFAR10")
    add_common_args(p)
    g = p.add_argument_group("distillation (MTT's defaults)")
    g.add_argument("--model", default="ConvNet", help="network of the buffer (ConvNet = ConvNetD3)")
    g.add_argument("--ipc", type=int, default=1, help="synthetic images per class")
    g.add_argument("--syn_steps", type=int, default=20, help="student steps on synthetic data per iteration (N)")
    g.add_argument("--expert_epochs", type=int, default=3, help="expert epochs to match (M)")
    g.add_argument("--max_start_epoch", type=int, default=25, help="start epoch drawn from [0, this)")
    g.add_argument("--lr_img", type=float, default=1000, help="SGD lr of the pixels")
    g.add_argument("--lr_lr", type=float, default=1e-5, help="SGD lr of the learnable step size")
    g.add_argument("--lr_teacher", type=float, default=0.01, help="initial learnable step size")
    g.add_argument("--lr_floor", type=float, default=None,
                   help="the learned step size is clamped at this floor (default lr_teacher / 100; MTT has none "
                        "and a negative lr trains nothing); clamped iterations are counted in results.json")
    g.add_argument("--lr_weights", type=float, default=0.01, help="SGD lr of the per-image weights (0: unweighted)")
    g.add_argument("--batch_syn", type=int, default=None, help="synthetic minibatch (default: all images)")
    g.add_argument("--pix_init", default="real", help="real (random real images per class) or noise")
    add_bool(g, "--dsa", True, "DSA in the inner loop and in evaluation")
    g.add_argument("--dsa_strategy", default=augment.DSA_STRATEGY, help="DSA groups joined by _")
    add_bool(g, "--no_aug", False, "no augmentation in the inner loop (evaluation keeps --dsa)")
    add_bool(g, "--zca", False, "use the ZCA buffer (whitened training space)")
    g.add_argument("--grad_mode", default="exact", choices=dd.GRAD_MODES, help="meta-gradient")
    g.add_argument("--weight_grad", default="matching", choices=dd.WEIGHT_GRADS,
                   help="matching: gradient of the matching loss; inner_loss: MU-WDD's heuristic")
    g.add_argument("--Iteration", type=int, default=5000, help="distillation iterations")
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval_it", type=int, default=100, help="evaluate every this many iterations (and at the end)")
    g.add_argument("--num_eval", type=int, default=5, help="fresh networks per evaluation (0: none)")
    g.add_argument("--epoch_eval_train", type=int, default=1000, help="epochs of each evaluation network")
    g.add_argument("--batch_train", type=int, default=256, help="minibatch of the evaluation networks")
    add_bool(g, "--eval_weighted", True, "evaluation networks use the learned loss weights")
    g = p.add_argument_group("experts and files")
    g.add_argument("--buffer_path", default="./buffers", help="root of the buffer folders (or the folder itself)")
    add_bool(g, "--load_all", False, "copy every trajectory to the device up front")
    g.add_argument("--max_files", type=int, default=None, help="use only the first N buffer files")
    g.add_argument("--max_experts", type=int, default=None, help="use only the first N experts")
    g.add_argument("--save_every", type=int, default=100, help="write last.pt every this many iterations")
    add_bool(g, "--resume", False, "continue from last.pt in --save_dir (a rerun also continues)")
    g.add_argument("--stop_after", type=int, default=None,
                   help="stop after this many iterations in this invocation (rerun to go on)")
    return p.parse_args(argv)


def check_args(args):
    info = get_info(args.dataset)
    args.dataset = info.name
    args.model = buffers.canonical_model(args.model)
    for flag in ("ipc", "syn_steps", "expert_epochs", "max_start_epoch", "eval_it", "epoch_eval_train",
                 "batch_train", "save_every"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag}: must be at least 1, got {getattr(args, flag)}")
    for flag in ("Iteration", "num_eval"):
        if getattr(args, flag) < 0:
            raise UsageError(f"--{flag}: must be non-negative, got {getattr(args, flag)}")
    for flag in ("lr_img", "lr_lr", "lr_weights"):
        if getattr(args, flag) < 0:
            raise UsageError(f"--{flag}: must be non-negative, got {getattr(args, flag)}")
    if args.pix_init not in ("real", "noise"):
        raise UsageError(f"--pix_init: '{args.pix_init}' is not one of real, noise")
    args.lr_floor = args.lr_teacher / 100 if args.lr_floor is None else args.lr_floor
    if not 0 <= args.lr_floor <= args.lr_teacher:
        raise UsageError(f"--lr_floor: must be in [0, --lr_teacher {args.lr_teacher}], got {args.lr_floor}")
    n = args.ipc * info.num_classes
    args.batch_syn = args.batch_syn or n
    if not 1 <= args.batch_syn <= n:
        raise UsageError(f"--batch_syn: must be in 1..{n} (the synthetic set), got {args.batch_syn}")
    try:
        augment.parse_strategy(args.dsa_strategy)
    except ValueError as e:
        raise UsageError(f"--dsa_strategy: {e}")
    args.save_dir = args.save_dir or default_save_dir("distill", info.name, args.model, f"ipc{args.ipc}", args.seed)
    prepare_save_dir(args.save_dir)
    return info


def find_buffer(args, info):
    """(folder, [(path, record)]) of the buffer to distil from, checked for dataset, model and whitening."""
    direct = buffers.buffer_files(args.buffer_path)
    folder = args.buffer_path if direct else buffers.buffer_dir(args.buffer_path, info.name, args.model, args.zca)
    files = direct or buffers.buffer_files(folder)
    if not files:
        others = sorted(glob.glob(os.path.join(args.buffer_path, "*", "*", "replay_buffer_*.pt")))
        hint = f" (found buffers in {os.path.dirname(others[0])}: check --dataset/--model/--zca)" if others else ""
        raise UsageError(f"--buffer_path: no replay_buffer_*.pt in '{folder}'{hint}; run buffer.py first")
    files = files[:args.max_files] if args.max_files else files
    records = [(path, buffers.load_buffer(path, info.name, args.model, args.zca)) for _, path in files]
    first = records[0][1]
    for path, rec in records[1:]:
        if rec["source_digest"] != first["source_digest"] or rec["zca"] != first["zca"]:
            raise UsageError(f"{path} was trained on other data than {records[0][0]}; one folder, one buffer")
    snapshots = first["trajectories"].shape[1]
    if args.max_start_epoch - 1 + args.expert_epochs > snapshots - 1:
        raise UsageError(f"--max_start_epoch {args.max_start_epoch} + --expert_epochs {args.expert_epochs} reach "
                         f"epoch {args.max_start_epoch - 1 + args.expert_epochs}, beyond the buffer's "
                         f"{snapshots - 1} epochs")
    return folder, records


def check_layout(student, record, path):
    if student.names != list(record["param_names"]) or [list(s) for s in student.shapes] != \
            [list(s) for s in record["param_shapes"]]:
        raise UsageError(f"{path}: the trajectories' parameter layout does not fit {record['model']} "
                         f"on {record['dataset']}")


def initial_images(args, info, data, record, space, generator, device):
    """Training-space images and the official indices of the real ones (None for noise)."""
    if args.pix_init == "noise":
        shape = (args.ipc * info.num_classes, info.channels, info.im_size, info.im_size)
        return torch.randn(shape, generator=generator).to(device), None
    pool = dd.init_pool(record["source_indices"].numpy(), data.train_idx)
    chosen = dd.real_init(data.y_train_np, pool, args.ipc, info.num_classes, generator)
    return space(data.x_train.index_select(0, torch.as_tensor(chosen, device=device))), chosen


def method_name(args) -> str:
    base = "tesla" if args.grad_mode == "tesla" else "mtt"
    return base + ("-wdd" if args.lr_weights > 0 else "")


def main():
    started = time.perf_counter()
    args = parse_args()
    info = check_args(args)
    device = get_device(args.device)
    seed_everything(args.seed)
    folder, records = find_buffer(args, info)
    record = records[0][1]
    buffers.warn_small_norm_maps(args.model, info)
    data = load_data(info.name, args.data_path, device, args.split_seed, args.split)
    space = dd.TrainingSpace.of_buffer(records[0][0], record, device)
    student = dd.Student(buffers.build_expert(args.model, info, 0).to(device))
    check_layout(student, record, records[0][0])
    pool = dd.ExpertPool([r for _, r in records], device, args.load_all, args.max_experts)

    generator = torch.Generator().manual_seed(args.seed)  # every random choice of the run (CPU, resumable)
    images, init_indices = initial_images(args, info, data, record, space, generator, device)
    syn = dd.SyntheticSet(images, dd.class_labels(info.num_classes, args.ipc, device), args.lr_teacher,
                          args.lr_img, args.lr_lr, args.lr_weights, args.lr_floor)
    cfg = dd.IterConfig(args.syn_steps, args.batch_syn, args.max_start_epoch, args.expert_epochs, args.grad_mode,
                        args.weight_grad, None if (args.no_aug or not args.dsa) else args.dsa_strategy)
    eval_strategy = args.dsa_strategy if args.dsa else None
    val_loader = DeviceLoader(space(data.x_train.index_select(0, torch.as_tensor(data.val_idx, device=device))),
                              data.y_train.index_select(0, torch.as_tensor(data.val_idx, device=device)),
                              batch_size=EVAL_BATCH)
    test_loader = DeviceLoader(space(data.x_test), data.y_test, batch_size=EVAL_BATCH)

    paths = {k: os.path.join(args.save_dir, f"{k}.pt") for k in ("distilled", "best", "last")}
    state = {"iteration": 0, "history": [], "evals": [], "best": None}
    if os.path.isfile(paths["last"]):
        last = load_checkpoint(paths["last"])
        saved = {**training.RESUME_DEFAULTS, **last["config"]}
        changed = [f"--{k}" for k in RESUME_KEYS if saved.get(k) != getattr(args, k)]
        if changed:
            raise UsageError(f"{paths['last']} was made with other {', '.join(changed)}; use the same flags or "
                             "another --save_dir")
        syn.load_state_dict(last["syn"])
        generator.set_state(last["generator"])
        state = {k: last[k] for k in state}
        init_indices = last["init_indices"]
    forget = None if record["forget_indices"] is None else record["forget_indices"].clone()
    meta = {"method": method_name(args), "arch": args.model, "source": os.path.abspath(folder),
            "forget_indices": forget, "init_indices": None if init_indices is None else torch.as_tensor(init_indices),
            "config": vars(args)}

    def write_snapshot(path, metrics):
        save_checkpoint(dd.snapshot(syn, space, info, **meta, iteration=state["iteration"], metrics=metrics), path)

    def evaluate(it):
        weights = syn.loss_weights() if (args.eval_weighted and syn.learn_weights) else None
        metrics = dd.evaluate_synset(args.model, info, syn.images, syn.labels, weights, syn.lr_value, val_loader,
                                     test_loader, args.num_eval, args.epoch_eval_train, args.batch_train,
                                     eval_strategy, args.seed, it)
        state["evals"].append({"it": it, **metrics})
        best = state["best"]
        if best is None or math.isnan(best["val_acc"]) or metrics["val_acc"] > best["val_acc"]:
            state["best"] = {"it": it, **metrics}
            write_snapshot(paths["best"], metrics)
        write_snapshot(paths["distilled"], metrics)
        bar.write(f"it {it}: val {metrics['val_acc']:.2f}% test {metrics['test_acc']:.2f}% lr {syn.lr_value:.4g}")

    def save_last():
        save_checkpoint({"syn": syn.state_dict(), "generator": generator.get_state(), **state,
                         "init_indices": None if init_indices is None else torch.as_tensor(init_indices),
                         "config": vars(args)}, paths["last"])

    first = state["iteration"]
    end = args.Iteration if args.stop_after is None else min(args.Iteration, first + args.stop_after)
    bar = training.progress_bar(range(first, end), "iterations", args.quiet)
    record_head = run_record("distill.py", args, device)
    loop_started = time.perf_counter()
    it = first
    clamped = sum(h.get("lr_clamped", False) for h in state["history"])  # iterations with alpha at the floor
    try:
        for it in range(first, end + 1):
            state["iteration"] = it
            due = it % args.eval_it == 0 or it == args.Iteration
            if args.num_eval and due and not any(e["it"] == it for e in state["evals"]):
                evaluate(it)
            if it == end:
                break
            stats = dd.distill_iteration(student, syn, pool, generator, cfg)
            state["history"].append({"it": it, **stats})
            clamped += stats["lr_clamped"]
            if stats["lr_clamped"] and clamped == 1:
                bar.write(f"it {it}: the learned lr fell below --lr_floor {args.lr_floor:.3g} and is clamped there "
                          "(lower --lr_lr if this repeats; results.json counts the clamped iterations)")
            state["iteration"] = it + 1
            if (it + 1) % args.save_every == 0:
                save_last()
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.4f}", lr=f"{stats['lr']:.3g}")
    except dd.Diverged as e:
        write_snapshot(paths["distilled"], {"diverged_at": it})  # distill_iteration restored the last good state
        raise UsageError(f"iteration {it}: {e}; the last good state is in {paths['distilled']}")
    bar.close()
    if state["iteration"] < args.Iteration:  # --stop_after: not finished, keep going on the next run
        save_last()
        print(f"stopped at iteration {state['iteration']} of {args.Iteration}; rerun to continue -> {args.save_dir}")
        return
    save_last()
    if not args.num_eval:
        write_snapshot(paths["distilled"], {})
    final, best = (state["evals"][-1] if state["evals"] else {}), (state["best"] or {})
    iters = end - first
    metrics = {"val_acc": final.get("val_acc"), "test_acc": final.get("test_acc"),
               "best_val_acc": best.get("val_acc"), "best_test_acc": best.get("test_acc"), "best_it": best.get("it"),
               "lr": syn.lr_value, "w_std": float(syn.weights.detach().std()) if len(syn.weights) > 1 else 0.0,
               "final_loss": state["history"][-1]["loss"] if state["history"] else None,
               "lr_clamped": clamped,
               "iterations": args.Iteration,
               "s_per_it_incl_eval": (time.perf_counter() - loop_started) / iters if iters else None}
    weights = syn.weights.detach().cpu()
    dd.save_grid(os.path.join(args.save_dir, "grid.png"), space.to_pixels(syn.images).cpu(), syn.labels, weights,
                 info.num_classes, info.classes)
    dd.save_curves(os.path.join(args.save_dir, "curves.png"), state["history"], state["evals"])
    forget_desc = {"kind": "none" if forget is None else "buffer", "classes": None,
                   "n": 0 if forget is None else len(forget), "indices_file": None}
    write_json({**record_head, "wall_s": time.perf_counter() - started, "split": data.split, "forget": forget_desc,
                "metrics": metrics, "evals": state["evals"], "history": state["history"]},
               os.path.join(args.save_dir, "results.json"))
    print(f"done: {meta['method']} {info.name} ipc {args.ipc}, {args.Iteration} iterations, lr {syn.lr_value:.4g}, "
          f"weights std {metrics['w_std']:.3f}; val {best.get('val_acc', float('nan')):.2f}% "
          f"(best, it {best.get('it')}), test {best.get('test_acc', float('nan')):.2f}% -> {args.save_dir}")


if __name__ == "__main__":
    run_cli(main)
