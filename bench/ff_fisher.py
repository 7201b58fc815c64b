"""Seconds of FF's per-class diagonal Fisher (unlearn/ff.py) on random CIFAR-10-shaped data: the batched
computation FF uses (one jacrev per batch, vmapped over the K classes) against the released loop (K backward
passes per batch), and the largest relative difference between the two. Prints one line.

    python -m bench.ff_fisher                                  # ResNet-18, 45,000 images in batches of 32
    python -m bench.ff_fisher --n 256 --device cpu             # a quick CPU figure
"""
import torch

import models
from datasets import DeviceLoader, get_info
from unlearn.ff import FISHER_BATCH, class_fisher, class_fisher_loop
from utils import Timer, get_device, make_parser, run_cli


def main():
    p = make_parser(__doc__)
    p.add_argument("--arch", default="resnet18", help="model (see models.MODELS)")
    p.add_argument("--n", type=int, default=45000, help="retain images the Fisher runs over")
    p.add_argument("--batch_size", type=int, default=FISHER_BATCH, help="Fisher batch (the released 32)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    args = p.parse_args()
    device = get_device(args.device)
    info = get_info("cifar10")
    g = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, device=device, generator=g)
    labels = torch.randint(0, 10, (args.n,), device=device, generator=g)
    model = models.get_model(args.arch, 10, 3, 32, info.mean, info.std).to(device)
    loader = DeviceLoader(images, labels, batch_size=args.batch_size)
    warm = DeviceLoader(images[:args.batch_size], labels[:args.batch_size], batch_size=args.batch_size)
    class_fisher(model, warm, 10), class_fisher_loop(model, warm, 10)  # cuDNN autotune, allocator
    with Timer(device) as batched:
        fast = class_fisher(model, loader, 10)
    with Timer(device) as looped:
        slow = class_fisher_loop(model, loader, 10)
    # relative to the largest Fisher entry: tensors whose exact gradient is 0 (a conv bias before a norm layer)
    # hold rounding noise that differs between the two orders of summation
    scale = max(float(f.abs().max()) for f in slow.values())
    rel = max(float((fast[k] - slow[k]).abs().max()) for k in fast) / scale
    print(f"FF Fisher {args.arch} on {args.n} images (batch {args.batch_size}, {device}): batched "
          f"{batched.seconds:.2f}s, K-pass loop {looped.seconds:.2f}s, speed-up {looped.seconds / batched.seconds:.2f}x, "
          f"max relative difference {rel:.1e}")


if __name__ == "__main__":
    run_cli(main)
