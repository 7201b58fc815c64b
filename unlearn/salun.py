"""SalUn (Fan et al., ICLR'24): RL (unlearn/rl.py, any of its loops) restricted to the salient weights. The mask
is computed once from the forget set over all parameters (one global ranking) and saved as
mask_<ratio>[_<mask_variant>].pt beside the run; `--mask_path` reuses a saved one.

Saliency mask (`--mask_variant`):
  default       the corrected mask (SalUn's generate_mask.py since b874ee9 "Delete redundant code", 2023-12-17):
                the original model in eval mode, |sum over forget batches of the forget-loss gradient|, largest
                first, round(ratio * P) of the P entries kept
  first_commit  SalUn's first public code (9576623 "init"): train mode; per forget batch |grad| is accumulated
                and an SGD ascent step is taken inside the loop (later gradients come from a drifting copy);
                ranked ascending, so the floor(ratio * P) *smallest* scores are kept. `legacy` is its old name.
  rum           RUM's generate_mask.py (RUM f593c9d = SalUn's bc74947 "Fix mask", 2023-12-01): eval mode, the
                ascent step still inside the loop, the signed gradients summed before taking |.|, ranked
                ascending with floor(ratio * P) kept (the smallest)
  regun         ReGUn's mul/salun.py: as default, on the un-augmented forget set in order with every sample
                weighted alike (sum-reduced CE, then its mean); top ratio (saliency_keep_ratio 0.5)
The ascent step is SGD with the run's momentum and weight decay at --mask_lr: both READMEs run generate_mask.py
without --unlearn_lr, i.e. at its default 0.01.

Weight decay (`--variant`):
  default  non-salient weights never move: weight decay joins the gradient before the mask, so their gradient and
           momentum stay exactly zero. This is what SalUn's PR #33 (a6e89fd, 2026-02-28: restore masked-out
           weights and their momentum after each step) and ReGUn (restore masked-out weights after each step)
           achieve; here no restore is needed.
  legacy   SalUn's unlearn/RL.py before PR #33 (e.g. ac880a2, the code behind the published numbers) and RUM's
           unlearn/RL.py: only the loss gradient is masked; SGD's weight decay still shrinks the non-salient
           weights.

Presets (`--unlearn SalUn@NAME`):
  rum    RUM's SalUn (README: generate_mask.py, then main_random.py --unlearn RL --path MASK with lr 0.1, 10
         epochs; batch 256, SGD momentum 0.9, wd 5e-4, --no_aug in its pipelines): mask rum, joint loop (RUM's RL
         on every dataset), variant legacy. RUM's main_rum.py example runs its high-memorisation step with 5
         epochs (add --unlearn_epochs 5). RUM's README runs generate_mask.py without --no_aug, so its mask saw
         augmented forget images; here the mask is made in the run, from the run's (un-augmented) forget loader.
  regun  ReGUn mul/salun.py + conf/unlearn/salun.yaml: 10 epochs, lr 0.01, batch 128, momentum 0.9, wd 0, crop+flip;
         mask regun with ratio 0.5, paired loop, labels not_true, w_r = 0.5.
"""
import contextlib
import copy
import math
import os
from typing import NamedTuple

import torch

import training
from unlearn.common import REGUN_SETTING, RUM_SETTING, ce, plain_loader, register, run_epochs, sgd
from unlearn.rl import DEFAULTS as RL_DEFAULTS, random_label_epochs
from utils import UsageError, load_checkpoint, save_checkpoint


class MaskRule(NamedTuple):
    train: bool      # model in train mode while accumulating (else eval)
    step: bool       # an SGD ascent step on a copy after each batch
    abs_each: bool   # accumulate |grad| per batch (else the signed gradient, |.| of the sum)
    largest: bool    # keep the largest scores (else the smallest)
    floor: bool      # keep floor(ratio * P) entries (else round(ratio * P))
    eval_set: bool   # the un-augmented forget set in order, each sample weighted alike (ReGUn)


MASK_RULES = {
    "default": MaskRule(train=False, step=False, abs_each=False, largest=True, floor=False, eval_set=False),
    "first_commit": MaskRule(train=True, step=True, abs_each=True, largest=False, floor=True, eval_set=False),
    "rum": MaskRule(train=False, step=True, abs_each=False, largest=False, floor=True, eval_set=False),
    "regun": MaskRule(train=False, step=False, abs_each=False, largest=True, floor=False, eval_set=True),
}
MASK_RULES["legacy"] = MASK_RULES["first_commit"]


def saliency_scores(model, forget_loader, rule, lr=0.01, momentum=0.9, weight_decay=5e-4, amp=False, pruning=None):
    """name -> accumulated |forget-loss gradient| (see MaskRule for what the variants change). `pruning`: the
    model's pruning masks, re-applied to the copy the ascent steps drift (a deepcopy drops gradient hooks)."""
    net = copy.deepcopy(model) if rule.step else model  # ascent steps must not touch the original
    net.train(rule.train)
    params = dict(net.named_parameters())
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    sums = {n: torch.zeros_like(p) for n, p in params.items()}
    hooks = training.masked_gradients(net, lambda: pruning) if net is not model else contextlib.nullcontext()
    with hooks:
        for batch in (plain_loader(forget_loader) if rule.eval_set else forget_loader):
            optimizer.zero_grad(set_to_none=True)
            with training.autocast(batch.x.device, amp):
                loss = -ce(net, batch) * (len(batch.y) if rule.eval_set else 1)  # eval_set: a sum over samples
            loss.backward()
            for n, p in params.items():
                if p.grad is not None:
                    sums[n] += p.grad.abs() if rule.abs_each else p.grad
            if rule.step:
                optimizer.step()
    net.zero_grad(set_to_none=True)
    return {n: s.abs() for n, s in sums.items()}


def keep_top(scores, ratio, rule):
    """name -> bool tensor marking the kept entries of one global ranking of `scores`."""
    flat = torch.cat([s.flatten() for s in scores.values()])
    k = math.floor(ratio * len(flat)) if rule.floor else round(ratio * len(flat))
    keep = torch.zeros(len(flat), dtype=torch.bool, device=flat.device)
    keep[torch.topk(flat, k, largest=rule.largest, sorted=False).indices] = True
    masks, start = {}, 0
    for n, s in scores.items():
        masks[n] = keep[start:start + s.numel()].view_as(s)
        start += s.numel()
    return masks


def saliency_mask(model, forget_loader, ratio, variant="default", lr=0.01, momentum=0.9, weight_decay=5e-4,
                  amp=False, pruning=None):
    """name -> bool tensor over every parameter: the `variant` mask keeping a fraction `ratio`."""
    if not 0 < ratio <= 1:
        raise UsageError(f"--mask_ratio: {ratio} must be in (0, 1]")
    rule = MASK_RULES[variant]
    if rule.step and not lr >= 0:
        raise UsageError(f"--mask_lr: the ascent step's learning rate must be >= 0, got {lr}")
    scores = saliency_scores(model, forget_loader, rule, lr, momentum, weight_decay, amp, pruning)
    return keep_top(scores, ratio, rule)


def load_or_make_mask(model, ctx, cfg):
    if cfg.mask_path:
        masks = load_checkpoint(cfg.mask_path, map_location=ctx.device)
        own = dict(model.named_parameters())
        if set(masks) != set(own) or any(masks[n].shape != own[n].shape for n in own):
            raise UsageError(f"--mask_path: '{cfg.mask_path}' does not match this model's parameters")
        return {n: m.bool() for n, m in masks.items()}
    variant = cfg.mask_variant
    masks = saliency_mask(model, ctx.forget, cfg.mask_ratio, variant, cfg.mask_lr, cfg.momentum, cfg.weight_decay,
                          ctx.amp, ctx.masks)
    if ctx.save_dir:
        suffix = "" if variant == "default" else f"_{variant}"
        save_checkpoint({n: m.cpu() for n, m in masks.items()},
                        os.path.join(ctx.save_dir, f"mask_{cfg.mask_ratio:g}{suffix}.pt"))
    return masks


PRESETS = {
    "rum": {**RUM_SETTING, "unlearn_lr": 0.1, "unlearn_epochs": 10, "mask_variant": "rum", "mask_lr": 0.01,
            "rl_loop": "joint", "rl_labels": "uniform", "variant": "legacy"},
    "regun": {**REGUN_SETTING, "unlearn_lr": 0.01, "unlearn_epochs": 10, "mask_ratio": 0.5, "mask_variant": "regun",
              "rl_loop": "paired", "rl_labels": "not_true", "retain_weight": 0.5, "variant": "default"},
}


@register("SalUn", defaults={**RL_DEFAULTS, "unlearn_lr": 0.013, "unlearn_epochs": 10, "mask_ratio": 0.5,
                             "mask_variant": "default", "mask_lr": 0.01},
          variants=("default", "legacy"), presets=PRESETS)
def salun(model, ctx, cfg):
    masks = load_or_make_mask(model, ctx, cfg)
    params = dict(model.named_parameters())
    legacy = cfg.variant == "legacy"
    wd = cfg.weight_decay

    def mask_gradients(m):
        with torch.no_grad():
            for n, p in params.items():
                if p.grad is None:
                    continue
                if not legacy:
                    p.grad.add_(p, alpha=wd)  # weight decay joins the gradient, so the mask covers it too
                p.grad.mul_(masks[n])

    optimizer = sgd(model, cfg, weight_decay=wd if legacy else 0.0)
    return run_epochs(model, ctx, cfg, random_label_epochs(model, ctx, cfg, mask_gradients, "SalUn"), optimizer)
