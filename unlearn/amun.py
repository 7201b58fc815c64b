"""Amun (Ebrahimpour-Boroojeny et al.; as ported by ReGUn, mul/amun.py + conf/unlearn/amun.yaml).

1. For every forget image (no augmentation), the L2 adversarial example of smallest working radius, measured in
   the model's normalised input space as in ReGUn: eps starts at `amun_eps` (0.1); `amun_steps` (50) PGD-L2
   steps of 0.1 * eps along the L2-normalised gradient of CE(true label), projected onto the eps-ball and clamped
   to the image of [0, 1]; if the prediction changed, the example is kept with its new (wrong) prediction as
   label, else eps doubles, at most `amun_rounds` (6) rounds. Never-flipped images keep the clean image and the
   true label.
2. Fine-tune the original model on D_r + D_f (true labels) + D_adv with plain CE, one shuffled pass per epoch
   (D_r and D_f augmented as usual, the adversarial images not).

The adversarial set is cached (atomic write) as amun_adv_<key>.pt in `--amun_cache` (default: the run's folder),
keyed by a hash of everything that determines it: the model's weights, the forget indices and the PGD settings.
Defaults ReGUn's: 10 epochs, SGD lr 0.01, momentum 0.9, wd 0, batch 128. Users could not reproduce the Amun
paper's random-10% result with the authors' own code (AMUN issue #1): treat its numbers as fragile.
"""
import hashlib
import os

import torch
import torch.nn.functional as F

from datasets import Batch, DeviceLoader
from models.common import Normalize
from unlearn.common import register, run_epochs
from utils import UsageError, load_checkpoint, save_checkpoint

STEP_FRACTION = 0.1  # PGD step = 0.1 * eps


def normalisation(model):
    """(mean, std) of the model's own input normalisation, or (0, 1)."""
    for m in model.modules():
        if isinstance(m, Normalize) and m.enabled:
            return m.mean, m.std
    return torch.zeros(()), torch.ones(())


def min_radius_adversarial(model, x, y, eps0=0.1, steps=50, rounds=6):
    """(x_adv, labels, found) for pixel-space images x: see the module docstring. Batched; eval mode."""
    model.eval()
    mean, std = (t.to(x.device) for t in normalisation(model))
    z0 = (x - mean) / std
    lo, hi = (0 - mean) / std, (1 - mean) / std
    f = lambda z: model(z * std + mean)
    x_adv, labels = x.clone(), y.clone()
    found = torch.zeros(len(y), dtype=torch.bool, device=x.device)
    eps = eps0
    for _ in range(rounds):
        todo = ~found
        if not todo.any():
            break
        zt, yt = z0[todo], y[todo]
        delta = torch.zeros_like(zt)
        for _ in range(steps):
            delta.requires_grad_(True)
            with torch.enable_grad():
                loss = F.cross_entropy(f(zt + delta).float(), yt)
                (g,) = torch.autograd.grad(loss, delta)
            with torch.no_grad():
                g_norm = g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (g.dim() - 1))
                delta = delta + STEP_FRACTION * eps * g / g_norm
                d_norm = delta.flatten(1).norm(dim=1).view(-1, *[1] * (g.dim() - 1))
                delta = delta * torch.clamp(eps / d_norm.clamp_min(1e-12), max=1.0)
                delta = torch.max(torch.min(zt + delta, hi), lo) - zt
        with torch.no_grad():
            pred = f(zt + delta).argmax(1)
            flipped = pred != yt
            where = todo.nonzero().squeeze(1)[flipped]
            x_adv[where] = ((zt + delta) * std + mean)[flipped]
            labels[where] = pred[flipped]
            found[where] = True
        eps *= 2
    return x_adv.detach(), labels, found


def cache_key(model, forget_indices, cfg):
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().float().cpu().numpy().tobytes())
    h.update(forget_indices.cpu().numpy().tobytes())
    h.update(repr((cfg.amun_eps, cfg.amun_steps, STEP_FRACTION, cfg.amun_rounds)).encode())
    return h.hexdigest()[:20]


def adversarial_set(model, ctx, cfg):
    """{'images', 'labels', 'found'} for the forget set, from the cache when present."""
    forget = ctx.forget
    folder = cfg.amun_cache or ctx.save_dir
    path = os.path.join(folder, f"amun_adv_{cache_key(model, forget.indices, cfg)}.pt") if folder else None
    if path and os.path.exists(path):
        return {k: v.to(ctx.device) for k, v in load_checkpoint(path, map_location=ctx.device).items()}
    parts = [min_radius_adversarial(model, b.x, b.y, cfg.amun_eps, cfg.amun_steps, cfg.amun_rounds)
             for b in DeviceLoader(forget.images, forget.labels, forget.indices, None, 256)]
    adv = {"images": torch.cat([p[0] for p in parts]), "labels": torch.cat([p[1] for p in parts]),
           "found": torch.cat([p[2] for p in parts])}
    if path:
        os.makedirs(folder, exist_ok=True)
        save_checkpoint({k: v.cpu() for k, v in adv.items()}, path)
    return adv


def union_batches(ctx, adv, batch_size, generator):
    """One shuffled pass over D_r + D_f (true labels, augmented) + D_adv (as found, not augmented)."""
    r, f = ctx.retain, ctx.forget
    rf = torch.cat([r.indices, f.indices])
    weights = None if r.weights is None else torch.cat([r.weights, f.weights])
    n_rf, n = len(rf), len(rf) + len(adv["labels"])
    order = torch.randperm(n, device=rf.device, generator=generator)
    for sel in order.split(batch_size):
        is_adv = sel >= n_rf
        own, other = sel[~is_adv], sel[is_adv] - n_rf
        x = r.images.index_select(0, rf[own])
        if r.augment is not None:
            x = r.augment(x, generator=generator)
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        xb = torch.cat([x, adv["images"][other]])
        yb = torch.cat([r.labels.index_select(0, rf[own]), adv["labels"][other]])
        wb = None if weights is None else torch.cat([weights[own], torch.ones(len(other), device=weights.device)])
        yield Batch(xb, yb, wb, sel)


@register("Amun", defaults={"unlearn_lr": 0.01, "unlearn_epochs": 10, "weight_decay": 0.0, "batch_size": 128,
                            "amun_eps": 0.1, "amun_steps": 50, "amun_rounds": 6})
def amun(model, ctx, cfg):
    r, f = ctx.retain, ctx.forget
    if not (isinstance(r, DeviceLoader) and isinstance(f, DeviceLoader) and r.images is f.images):
        raise UsageError("--unlearn Amun: needs retain and forget data from the same dataset (not distilled data)")
    if cfg.amun_eps <= 0 or cfg.amun_steps < 1 or cfg.amun_rounds < 1:
        raise UsageError("--amun_eps/--amun_steps/--amun_rounds: must be positive")
    adv = adversarial_set(model, ctx, cfg)
    ctx.history.append({"adversarial_found": int(adv["found"].sum()), "forget": len(adv["found"])})
    g = ctx.generator(offset=4)

    def epoch(e, opt):
        return ctx.train_epoch(model, union_batches(ctx, adv, cfg.batch_size, g), opt, f"Amun {e + 1}")

    return run_epochs(model, ctx, cfg, epoch)
