"""LUR, "Learning to Unlearn while Retaining" (as ported by ReGUn: mul/lur.py + conf/unlearn/lur.yaml).

1. One-shot SNIP-style re-initialisation: on one forget batch, saliency s = |theta * grad CE|; among the eligible
   tensors the entries above the `sparsity` quantile (the top 3% on CIFAR-10) are re-drawn, weights from
   Kaiming-uniform(a = sqrt 5) (nn.Linear/Conv2d's default), biases set to 0. Eligible, as ReGUn's `auto`: tensors
   of `layer3`, `layer4`, `fc` for 10 classes and `layer4`, `fc` for 100 (ResNet names; every tensor when no name
   matches, e.g. ConvNet), never normalisation layers. Fixed here: norm layers are recognised by module type
   (ReGUn's "bn" name filter let torchvision's downsample.1 BN through), and CIFAR-100's auto sparsity (0.99 at
   <= 10% forget, 0.90 at >= 50%, a crash in between as released) is interpolated linearly in between. On a small
   net whose tensors are all eligible (the digits ConvNet) even 0.1% re-initialised costs much retain accuracy.
2. Bilevel step per (forget, retain) batch pair, an epoch being one pass over the forget set (ReGUn's `min_size`
   loader): theta' = theta - a * grad L_r(theta) kept differentiable (a = `lur_inner_lr` 0.01), then minimise
   w_r * L_r(theta) - w_f * CE_f(theta') with w_r = alpha = 0.5 and w_f = 1 - alpha.
Defaults ReGUn's: 10 epochs, SGD lr 0.01, momentum 0.9, wd 0, batch 128.
"""
import math

import torch
from torch.func import functional_call

import training
from unlearn.common import endless, register, run_epochs
from utils import UsageError

AUTO_LAYERS = {10: ("layer3", "layer4", "fc"), 100: ("layer4", "fc")}


def auto_sparsity(num_classes, forget_fraction):
    if num_classes == 100:
        lo, hi = 0.99, 0.90
    elif num_classes == 200:  # Tiny-ImageNet, "interpolated" in ReGUn's config
        lo, hi = 0.95, 0.85
    else:
        return 0.97
    t = min(max((forget_fraction - 0.10) / 0.40, 0.0), 1.0)
    return lo + t * (hi - lo)


def eligible_parameters(model, num_classes):
    """name -> parameter of the tensors LUR may re-initialise (never a normalisation layer's)."""
    norms = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.modules.instancenorm._InstanceNorm, torch.nn.GroupNorm,
             torch.nn.LayerNorm)
    bn = {id(p) for m in model.modules() if isinstance(m, norms) for p in m.parameters()}
    params = {n: p for n, p in model.named_parameters() if id(p) not in bn}
    patterns = AUTO_LAYERS.get(num_classes, ())
    chosen = {n: p for n, p in params.items() if any(pat in n for pat in patterns)}
    return chosen or params


def snip_reinit(model, batch, sparsity, num_classes, generator):
    """Re-draw the top (1 - sparsity) saliency entries of the eligible tensors; returns how many."""
    model.eval()
    params = eligible_parameters(model, num_classes)
    loss = training.weighted_ce(model(batch.x).float(), batch.y, batch.weight)
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    scores = {n: (p.detach() * (torch.zeros_like(p) if g is None else g)).abs()
              for (n, p), g in zip(params.items(), grads)}
    flat = torch.cat([s.flatten() for s in scores.values()])
    k = max(1, math.ceil(sparsity * flat.numel()))
    threshold = torch.kthvalue(flat.float().cpu(), min(k, flat.numel())).values.to(flat.device)
    count = 0
    with torch.no_grad():
        for n, p in params.items():
            hit = scores[n] > threshold
            if not hit.any():
                continue
            if p.ndim > 1:
                fresh = torch.empty_like(p)
                fan_in = p[0].numel()
                bound = 1.0 / math.sqrt(fan_in)  # kaiming_uniform(a = sqrt 5) = U(-1/sqrt(fan_in), 1/sqrt(fan_in))
                fresh.uniform_(-bound, bound, generator=generator)
            else:
                fresh = torch.zeros_like(p)
            p.copy_(torch.where(hit, fresh, p))
            count += int(hit.sum())
    return count


@register("LUR", defaults={"unlearn_lr": 0.01, "unlearn_epochs": 10, "weight_decay": 0.0, "batch_size": 128,
                           "alpha": 0.5, "lur_inner_lr": 0.01})
def lur(model, ctx, cfg):
    if not 0 <= cfg.alpha <= 1:
        raise UsageError(f"--alpha: LUR's retain weight must be in [0, 1], got {cfg.alpha}")
    n_f, n_r = len(ctx.forget.indices), len(ctx.retain.indices)
    sparsity = cfg.lur_sparsity if cfg.lur_sparsity is not None else auto_sparsity(ctx.num_classes, n_f / (n_f + n_r))
    if not 0 < sparsity < 1:
        raise UsageError(f"--lur_sparsity: must be in (0, 1), got {sparsity}")
    gen = torch.Generator(device=ctx.device).manual_seed(ctx.seed * 1000 + 5)
    reset = snip_reinit(model, next(iter(ctx.forget)), sparsity, ctx.num_classes, gen)
    training.apply_masks(model, ctx.masks)
    ctx.history.append({"reinitialised": reset, "sparsity": sparsity})
    names = [n for n, _ in model.named_parameters()]
    w_r, w_f, a = cfg.alpha, 1 - cfg.alpha, cfg.lur_inner_lr
    retain_stream = endless(ctx.retain)

    def loss(m, pair):
        fb, rb = pair
        params = [p for p in m.parameters()]
        l_r = training.weighted_ce(m(rb.x).float(), rb.y, rb.weight)
        grads = torch.autograd.grad(l_r, params, create_graph=True, allow_unused=True)
        inner = {n: p if g is None else p - a * g for n, p, g in zip(names, params, grads)}
        buffers = dict(m.named_buffers())
        l_f = training.weighted_ce(functional_call(m, (inner, buffers), (fb.x,)).float(), fb.y, fb.weight)
        return w_r * l_r - w_f * l_f

    def epoch(e, opt):
        return ctx.train_epoch(model, zip(ctx.forget, retain_stream), opt, f"LUR {e + 1}", loss_fn=loss)

    return run_epochs(model, ctx, cfg, epoch)
