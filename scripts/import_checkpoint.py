"""Turn foreign weights into a mu-wdd model.pt, and report their test accuracy.

    python -m scripts.import_checkpoint pytorch_model.bin --arch resnet18 --dataset cifar10 \
        --norm_std 0.2023,0.1994,0.2010 --train_on full --out runs/hf_resnet18/model.pt

Accepts a bare state dict (the HF edadaltocg/resnet18_cifar10 file, a torchvision ResNet with the CIFAR
stem), a {'state_dict': ...} checkpoint (Unlearn-Sparse / SalUn `*model_SA_best.pth.tar`), with or without
`module.` prefixes, and torch pruning's `weight_orig`/`weight_mask` pairs (folded into weights plus a mask).
Their in-model `normalize.mean/std` buffers are used as the normalisation unless --norm_mean/--norm_std say
otherwise. Keys or shapes that do not fit are refused with one line naming them. The conversion is
models.import_weights, which the unlearning scripts also use when their --mask is such a file (imported on the fly,
not saved).
"""
import os

import models
import training
from datasets import get_info, load_data
from utils import (UsageError, add_data_args, add_model_args, get_device, load_checkpoint, make_parser, parse_floats,
                   run_cli, save_checkpoint)


def main():
    p = make_parser(__doc__)
    p.add_argument("src", help="the foreign checkpoint file")
    p.add_argument("--out", required=True, help="where to write model.pt")
    p.add_argument("--train_on", default="full", help="what the weights were trained on: train (the 90%% "
                   "split) or full (all train images, as the HF model); recorded for later stages")
    p.add_argument("--no_eval", action="store_true", help="skip the test-accuracy check (no data needed)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    add_data_args(p)
    add_model_args(p)
    args = p.parse_args()
    info = get_info(args.dataset)
    if args.train_on not in ("train", "full"):
        raise UsageError(f"--train_on: '{args.train_on}' is not one of train, full")

    mean = parse_floats(args.norm_mean, "--norm_mean", info.channels)
    std = parse_floats(args.norm_std, "--norm_std", info.channels)
    model, record = models.import_weights(load_checkpoint(args.src), args.arch, info, mean, std, source=args.src)
    mean, std, masks = record["norm_mean"], record["norm_std"], record.get("masks")

    metrics = {}
    if not args.no_eval:
        device = get_device(args.device)
        data = load_data(info.name, args.data_path, device, args.split_seed, args.split)
        model.to(device)
        metrics["TA"] = training.evaluate(model, data.loader(data.test_indices(), test=True, batch_size=1024))["acc"]
        metrics["val_acc"] = training.evaluate(model, data.loader("val", batch_size=1024))["acc"]
    record.update(split={"name": args.split, "seed": args.split_seed}, train_on=args.train_on, epoch=None,
                  metrics=metrics, source=os.path.abspath(args.src))
    save_checkpoint(record, args.out)
    acc = f"test {metrics['TA']:.2f}%, val {metrics['val_acc']:.2f}%" if metrics else "not evaluated"
    print(f"imported {args.src} as {models.canonical_arch(args.arch)}/{info.name} (mean {mean}, std {std}"
          f"{f', {len(masks)} pruning masks' if masks else ''}): {acc} -> {args.out}")


if __name__ == "__main__":
    run_cli(main)
