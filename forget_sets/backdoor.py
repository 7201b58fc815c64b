"""Backdoor (Trojan) poisoning for the backdoor-cleanse experiment (Unlearn-Sparse's main_backdoor.py).

The trigger is a square patch near the bottom-right corner: on 32x32 images a 4x4 black patch whose
right/bottom edges sit 2 pixels from the image's right/bottom edges (rows and columns 26..29), as
published. Other sizes scale it: size = max(2, round(4 * H / 32)), offset = max(1, round(2 * H / 32)),
so 8x8 digits get a 2x2 patch 1 pixel from the corner (rows and columns 5..6). The patch is black
(0) except on digits, whose background is already black: there a black patch would be invisible, so the
digits default is white (255).

A poisoned image gets the trigger and the target label; the attack success rate (ASR) is the percentage
of test images of the other classes that the model assigns to the target class once triggered, reported
beside the released code's count over every test image (`ASR_released`, see attack_success_rates).

measure() runs in fp32, whatever --amp says: --amp governs training updates only.
"""
import argparse
import os
from dataclasses import replace

import numpy as np
import torch

import models
import training
from datasets import DeviceLoader
from training.prune_states import PRUNE_KEYS, PruneStates
from utils import UsageError, load_checkpoint, save_checkpoint

# Flags that make a poisoned model: a saved one is reused only when they match.
BACKDOOR_KEYS = ("target_class", "poison_ratio", "patch_size", "patch_offset", "patch_value", "masks_from")


def trigger_geometry(im_size: int, size=None, offset=None):
    """(patch size, offset from the bottom-right corner) in pixels, checked against the image size."""
    size = max(2, round(4 * im_size / 32)) if size is None else int(size)
    offset = max(1, round(2 * im_size / 32)) if offset is None else int(offset)
    if size < 1 or offset < 0 or size + offset > im_size:
        raise UsageError(f"--patch_size/--patch_offset: a {size}x{size} patch {offset} pixels from the corner "
                         f"does not fit a {im_size}x{im_size} image")
    return size, offset


def default_trigger_value(dataset: str) -> int:
    """Pixel value (uint8 scale) of the patch: black, or white on digits (black background)."""
    return 255 if dataset == "digits" else 0


def add_trigger(x: torch.Tensor, size: int, offset: int, value: int = 0) -> torch.Tensor:
    """A copy of images x [N, C, H, W] (uint8, or float in [0, 1]; value is on the uint8 scale) with the
    size x size patch whose bottom-right pixel is `offset` pixels in from the bottom-right corner."""
    out = x.clone()
    h, w = x.shape[-2:]
    fill = value if x.dtype == torch.uint8 else value / 255.0
    out[..., h - offset - size:h - offset, w - offset - size:w - offset] = fill
    return out


def poison_indices(train_idx, ratio: float, seed: int) -> np.ndarray:
    """round(ratio * |train split|) train-split indices drawn at random (seeded), sorted."""
    if not 0 < ratio < 1:
        raise UsageError(f"--poison_ratio: must lie strictly between 0 and 1, got {ratio}")
    train_idx = np.asarray(train_idx)
    n = max(1, int(round(ratio * len(train_idx))))
    return np.sort(np.random.default_rng(seed).choice(train_idx, n, replace=False)).astype(np.int64)


def poison_data(data, indices, target_class: int, size: int, offset: int, value: int = 0):
    """A copy of `data` (datasets.Data) whose train images at `indices` carry the trigger and whose labels
    there are `target_class`; val (from the same arrays, other indices) and test stay clean."""
    if not 0 <= target_class < data.info.num_classes:
        raise UsageError(f"--target_class: {target_class} is out of range (0..{data.info.num_classes - 1})")
    idx = torch.as_tensor(np.asarray(indices), dtype=torch.long, device=data.x_train.device)
    x, y = data.x_train.clone(), data.y_train.clone()
    x[idx] = add_trigger(x[idx], size, offset, value)
    y[idx] = target_class
    return replace(data, x_train=x, y_train=y)


@torch.no_grad()
def attack_success_rates(model, data, target_class: int, size: int, offset: int, value: int = 0,
                         batch_size=1024) -> dict:
    """The attack success rate two ways, from one pass over the whole test set with the trigger:
    `ASR`: percent of the other classes' test images classified as `target_class` (a clean model scores ~0);
    `ASR_released`: percent of all test images, the target class's included, as Unlearn-Sparse's
    main_backdoor.py counts it (it triggers and relabels every test image and reports the accuracy on that
    set), so a clean model already scores about the target class's share of the test set (~10% on CIFAR-10)."""
    x = add_trigger(data.x_test, size, offset, value)
    logits, labels = training.predict(model, DeviceLoader(x, data.y_test, batch_size=batch_size))
    hit = logits.argmax(1) == target_class
    return {"ASR": 100.0 * hit[labels != target_class].float().mean().item(),
            "ASR_released": 100.0 * hit.float().mean().item()}


def measure(model, data, forget_idx, retain_idx, args):
    """TA (clean test), ASR and ASR_released, forget accuracy (poisoned samples, target label) and optionally
    RA, in fp32."""
    def acc(indices, **kw):
        return training.evaluate(model, data.loader(indices, batch_size=1024, **kw))["acc"]
    out = {"TA": acc(data.test_indices(), test=True),
           **attack_success_rates(model, data, args.target_class, args.patch_size, args.patch_offset,
                                  args.patch_value),
           "forget_acc": acc(forget_idx)}
    if retain_idx is not None:
        out["RA"] = acc(retain_idx)
    return out


def train_poisoned(model, data, part, forget_idx, retain_idx, args, info, mean, std, milestones, masks, amp,
                   train_dir):
    """Train (or reload, or continue) the poisoned model in train_dir with main_train's recipe, under `masks`
    (dense when None). Returns (training seconds, metrics before unlearning, masks), or None when --stop_after
    stopped it."""
    model_path, config = os.path.join(train_dir, "model.pt"), vars(args)
    device = next(model.parameters()).device
    if os.path.isfile(model_path):
        saved = load_checkpoint(model_path, map_location=device)
        changed = [k for k in BACKDOOR_KEYS if saved["backdoor"].get(k) != config[k]]
        if changed:
            raise UsageError(f"--save_dir: its poisoned model was made with other {', '.join('--' + k for k in changed)}")
        model.load_state_dict(saved["state_dict"])
        print(f"poisoned model: {model_path} (trained earlier)")
        return saved["metrics"]["train_s"], measure(model, data, forget_idx, retain_idx, args), masks
    optimizer = training.build_optimizer(model.parameters(), args.lr, args.momentum, args.weight_decay)
    scheduler = training.build_scheduler(optimizer, args.scheduler, args.epochs, milestones, args.warmup)
    train_loader = data.loader(part, train=True, batch_size=args.batch_size, seed=args.seed,
                               **({"augment": None} if args.no_aug else {}))
    history, train_s, _, done = training.fit(
        model, optimizer, scheduler, train_loader, data.loader("val", batch_size=1024), args.epochs,
        os.path.join(train_dir, "last.pt"), config, amp=amp, masks=masks, quiet=args.quiet,
        stop_after=args.stop_after, resume_keys=training.RESUME_KEYS + BACKDOOR_KEYS)
    if not done:
        return None
    before = measure(model, data, forget_idx, retain_idx, args)
    save_checkpoint(models.model_record(
        model, args.arch, info, mean, std, split=data.split, train_on=args.train_on, epoch=args.epochs,
        metrics={**before, "train_s": train_s, "val_acc": history[-1]["val_acc"]}, recipe=training.recipe(args),
        backdoor={k: config[k] for k in BACKDOOR_KEYS},
        **({"masks": {n: m.cpu() for n, m in masks.items()}} if masks else {})), model_path)
    return train_s, before, masks


def prune_poisoned(model, data, forget_idx, retain_idx, args, info, mean, std, milestones, amp, train_dir):
    """The sparse poisoned model as the released main_backdoor.py makes it (pruner/omp.py on the poisoned
    train loader): main_prune's OMP states on the poisoned data, in train_dir/state0 (dense, saving
    rewind.pt after --rewind_epoch epochs) and train_dir/state1 (--rate of the conv weights pruned by global
    magnitude, the survivors rewound, the LR schedule stepped --rewind_epoch times, retrained under the mask).
    Finished states are reused and one in progress continues, as in main_prune. Returns (training seconds of
    both states, metrics before unlearning, state 1's masks), or None when --stop_after stopped it."""
    states = PruneStates(argparse.Namespace(**{**vars(args), "save_dir": train_dir}), info, data, model, mean, std,
                         milestones, next(model.parameters()).device, amp, channels_last=False,
                         keys=PRUNE_KEYS + BACKDOOR_KEYS, script="main_backdoor.py")
    train_s = 0.0
    for j in range(2):  # OMP: the dense state, then the pruned one
        summary = states.state(j)
        if summary is None:
            return None
        train_s += summary["train_s"]
    return train_s, measure(model, data, forget_idx, retain_idx, args), states.masks
