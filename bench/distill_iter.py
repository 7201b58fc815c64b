"""Seconds per distillation iteration and peak GPU memory of distillation.distill_iteration (ConvNetD3,
CIFAR-10 shapes, random images in training space, a random fake trajectory: no files needed). Prints one
line per setting: ipc 1 / syn_steps 50, ipc 10 / 30, ipc 50 / 30, full batch, DSA on (distill.md 2.9).
Targets on one H100 (issue 7), --grad_mode exact: <= 0.15 s and <= 1 GB, <= 0.15 s and <= 2 GB,
<= 0.5 s and <= 5 GB. MTT's code: 0.53 / 0.38 / 0.96 s with 2.4 / 9.8 / 44.6 GB.

    python -m bench.distill_iter                          # the three settings, exact meta-gradient
    python -m bench.distill_iter --grad_mode unroll       # MTT's memory-hungry backprop
    python -m bench.distill_iter --device cpu --small     # quick CPU figures (syn_steps / 10, ipc 1/2/5)
"""
import torch

from datasets import get_info
from distillation import experts
from distillation import matching as dd
from utils import Timer, get_device, make_parser, run_cli

SETTINGS = ((1, 50), (10, 30), (50, 30))   # (ipc, syn_steps)
SMALL = ((1, 5), (2, 3), (5, 3))


class FakePool:
    """A random start point and a target one 'epoch' away, drawn once."""

    def __init__(self, theta0, generator):
        self.theta0 = theta0
        self.target = theta0 + 0.01 * torch.randn(theta0.shape, generator=generator).to(theta0.device)

    def sample(self, generator, max_start_epoch, expert_epochs):
        return self.theta0, self.target, 0, 0


def bench(ipc, steps, args, device, info):
    g = torch.Generator().manual_seed(0)
    n = ipc * info.num_classes
    student = dd.Student(experts.build_expert(args.model, info, 0).to(device))
    pool = FakePool(experts.flat_params(student.model), g)
    images = torch.randn(n, info.channels, info.im_size, info.im_size, generator=g).to(device)
    syn = dd.SyntheticSet(images, dd.class_labels(info.num_classes, ipc, device), 0.01, 100.0, 1e-5,
                          args.lr_weights)
    cfg = dd.IterConfig(steps, n, 1, 1, args.grad_mode, "matching")
    dd.distill_iteration(student, syn, pool, g, cfg)  # warm-up: cuDNN autotuning, allocator
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with Timer(device) as t:
        for _ in range(args.iters):
            dd.distill_iteration(student, syn, pool, g, cfg)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return t.seconds / args.iters, peak


def main():
    p = make_parser(__doc__)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--model", default="ConvNetD3", help="network")
    p.add_argument("--grad_mode", default="exact", choices=dd.GRAD_MODES, help="meta-gradient")
    p.add_argument("--lr_weights", type=float, default=0.01, help="0: unweighted")
    p.add_argument("--iters", type=int, default=5, help="timed iterations per setting (after one warm-up)")
    p.add_argument("--small", action="store_true", help="CPU-sized settings: ipc 1/2/5, syn_steps 5/3/3")
    args = p.parse_args()
    device = get_device(args.device)
    torch.backends.cudnn.benchmark = True
    info = get_info("cifar10")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    for ipc, steps in (SMALL if args.small else SETTINGS):
        seconds, peak = bench(ipc, steps, args, device, info)
        print(f"distill_iter: {experts.model_dirname(args.model)} device={name} grad_mode={args.grad_mode} "
              f"weighted={args.lr_weights > 0} ipc={ipc} syn_steps={steps} batch_syn={ipc * info.num_classes} "
              f"{seconds:.3f} s/it peak_mem={peak:.2f} GB")


if __name__ == "__main__":
    run_cli(main)
