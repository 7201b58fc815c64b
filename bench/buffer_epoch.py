"""Seconds per expert-epoch of buffer.py's loop (ConvNetD3, CIFAR-10 shapes, random float data in training
space, SGD lr 0.01, batch 256, DSA on every batch, one parameter snapshot per epoch). Prints one line.
Target on one H100: <= 0.4 s per 50,000-image expert-epoch (issue 6); MTT's code takes 2.0-3.1 s.

    python -m bench.buffer_epoch                        # 50,000 images, a full CIFAR-10 expert-epoch
    python -m bench.buffer_epoch --n 2048 --device cpu  # a quick CPU figure
"""
from functools import partial

import torch

from datasets import DeviceLoader, get_info
from distillation import experts
from training import augment
from utils import Timer, get_device, make_parser, run_cli


def main():
    p = make_parser(__doc__)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--n", type=int, default=50000, help="images per epoch")
    p.add_argument("--model", default="ConvNetD3", help="network")
    p.add_argument("--batch_train", type=int, default=256, help="minibatch size")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up epoch)")
    p.add_argument("--no_dsa", action="store_true", help="time without DSA")
    args = p.parse_args()
    device = get_device(args.device)
    torch.backends.cudnn.benchmark = True
    info = get_info("cifar10")
    g = torch.Generator(device=device).manual_seed(0)
    images = torch.randn(args.n, 3, 32, 32, device=device, generator=g)
    labels = torch.randint(0, 10, (args.n,), device=device, generator=g)
    loader = DeviceLoader(images, labels, batch_size=args.batch_train, shuffle=True,
                          augment=None if args.no_dsa else partial(augment.dsa, strategy=augment.DSA_STRATEGY))
    model = experts.build_expert(args.model, info, 0).to(device)
    experts.train_expert(model, loader, 1, 0.01)  # warm-up: cuDNN autotuning, allocator
    with Timer(device) as t:
        experts.train_expert(model, loader, args.epochs, 0.01)
    seconds = t.seconds / args.epochs
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"buffer_epoch: {experts.model_dirname(args.model)} device={name} n={args.n} batch={args.batch_train} "
          f"dsa={'off' if args.no_dsa else 'on'} {seconds:.3f} s/expert-epoch ({args.n / seconds:,.0f} img/s, "
          f"{seconds * 50000 / args.n:.2f} s per 50k-image epoch)")


if __name__ == "__main__":
    run_cli(main)
