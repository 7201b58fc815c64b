"""Distil a dataset by matching expert trajectories (MTT), with learnable per-image weights (MU-WDD).

    python distill.py --dataset=CIFAR10 --ipc=1 --syn_steps=50 --expert_epochs=2 --max_start_epoch=45 \
        --lr_img=1000 --lr_lr=1e-07 --lr_teacher=0.01 --lr_weights=0.01 --data_path <PATH> --zca --model=ConvNetD3

Reads the experts buffer.py wrote (<buffer_path>/<DATASET>[_NO_ZCA]/<Model>/replay_buffer_*.pt, or a folder
holding them given directly as --buffer_path) and learns ipc images per class, their weights and the inner
step size (distillation/matching.py has the algorithm, distillation/distiller.py
the run). --grad_mode exact (default) gives MTT's meta-gradient with
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
import time

from datasets import get_info
from distillation import experts
from distillation import matching as dd
from distillation.distiller import Distiller, method_name
from training import augment
from utils import (UsageError, add_bool, add_common_args, add_data_args, default_save_dir, get_device, make_parser,
                   prepare_save_dir, run_cli, run_record, seed_everything)


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
    args.model = experts.canonical_model(args.model)
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


def main():
    started = time.perf_counter()
    args = parse_args()
    info = check_args(args)
    device = get_device(args.device)
    seed_everything(args.seed)
    run = Distiller(args, info, device)
    record_head = run_record("distill.py", args, device)
    if not run.run():  # --stop_after: not finished, the next invocation goes on
        print(f"stopped at iteration {run.state['iteration']} of {args.Iteration}; rerun to continue -> "
              f"{args.save_dir}")
        return
    m = run.finish(record_head, started)
    best = m["best"]
    print(f"done: {method_name(args)} {info.name} ipc {args.ipc}, {args.Iteration} iterations, lr {m['lr']:.4g}, "
          f"weights std {m['w_std']:.3f}; val {best.get('val_acc', float('nan')):.2f}% "
          f"(best, it {best.get('it')}), test {best.get('test_acc', float('nan')):.2f}% -> {args.save_dir}")


if __name__ == "__main__":
    run_cli(main)
