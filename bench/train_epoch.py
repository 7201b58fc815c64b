"""Seconds per training epoch of main_train's loop (ResNet-18, CIFAR-10 shapes, random data), plain and
with the speed flags (bf16 autocast, channels_last, optionally torch.compile). Prints one line.

    python -m bench.train_epoch                       # 45,000 images, the full epoch of main_train
    python -m bench.train_epoch --n 2048 --device cpu # a quick CPU figure
"""
import torch

import models
import training
from datasets import DeviceLoader, get_info, train_augment
from utils import Timer, get_device, make_parser, run_cli


def seconds_per_epoch(device, n, arch, batch_size, amp, channels_last, compile_, epochs):
    info = get_info("cifar10")
    g = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, device=device, generator=g)
    labels = torch.randint(0, 10, (n,), device=device, generator=g)
    model = models.get_model(arch, 10, 3, 32, info.mean, info.std).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    step_model = torch.compile(model) if compile_ else model
    loader = DeviceLoader(images, labels, batch_size=batch_size, shuffle=True, augment=train_augment(info),
                          channels_last=channels_last)
    optimizer = training.build_optimizer(model.parameters(), 0.1)
    training.train_epoch(step_model, loader, optimizer, amp=amp)  # warm-up: cuDNN autotune, compilation
    with Timer(device) as t:
        for _ in range(epochs):
            training.train_epoch(step_model, loader, optimizer, amp=amp)
    return t.seconds / epochs


def main():
    p = make_parser(__doc__)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--n", type=int, default=45000, help="images per epoch")
    p.add_argument("--arch", default="resnet18", help="model name")
    p.add_argument("--batch_size", type=int, default=256, help="minibatch size")
    p.add_argument("--epochs", type=int, default=2, help="timed epochs (after one warm-up epoch)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = p.parse_args()
    device = get_device(args.device)
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = True
    configs = {"plain": (False, False, False), "bf16+channels_last": (cuda, cuda, False)}
    if args.compile:
        configs["bf16+channels_last+compile"] = (cuda, cuda, True)
    figures = {name: seconds_per_epoch(device, args.n, args.arch, args.batch_size, *cfg, args.epochs)
               for name, cfg in configs.items()}
    name = torch.cuda.get_device_name(device) if cuda else "cpu"
    print(f"train_epoch: {args.arch} device={name} n={args.n} batch={args.batch_size} " +
          " ".join(f"{k}={v:.3f}s/epoch ({args.n / v:,.0f} img/s)" for k, v in figures.items()))


if __name__ == "__main__":
    run_cli(main)
