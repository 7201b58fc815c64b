"""Throughput of the device-resident loader on CIFAR-10-shaped data: images/s with the training
augmentation (crop+flip, shuffled) and without (shuffled only). Random uint8 images, so no download.

    python -m bench.loader --device auto --batch_size 256 --n 50000 --epochs 5
"""
import torch

import datasets
import utils


def images_per_second(loader, epochs, device) -> float:
    for _ in loader:  # warm-up epoch: allocator, kernels
        pass
    with utils.Timer(device) as t:
        for _ in range(epochs):
            for _ in loader:
                pass
    return epochs * len(loader.indices) / t.seconds


def main():
    parser = utils.make_parser(__doc__)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--n", type=int, default=50000, help="number of images (CIFAR-10 train: 50,000)")
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs, after one warm-up epoch")
    args = parser.parse_args()
    device = utils.get_device(args.device)
    g = torch.Generator(device=device).manual_seed(0)
    images = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, device=device, generator=g)
    labels = torch.randint(0, 10, (args.n,), device=device, generator=g)
    rates = [images_per_second(datasets.DeviceLoader(images, labels, batch_size=args.batch_size, shuffle=True,
                                                     augment=aug), args.epochs, device)
             for aug in (datasets.train_augment(datasets.get_info("cifar10")), None)]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"loader: device={name} batch_size={args.batch_size} n={args.n} "
          f"augmented={rates[0]:,.0f} img/s plain={rates[1]:,.0f} img/s")


if __name__ == "__main__":
    utils.run_cli(main)
