"""IU: influence unlearning ([S]/[U] unlearn/Wfisher.py, CLI `wfisher`). One-shot, eval mode, no augmentation.

With n_f forget and n_r retain samples, n = n_f + n_r, and G = the summed per-sample loss gradients (computed as
batch-mean gradient x batch size, batches of 256 in dataset order, as released):
    v = G_f / n - n_f / (n * n_r) * G_r = (n_f / n) * (mean forget grad - mean retain grad)
    theta <- theta + alpha * H^-1 v

Default: a real damped inverse-Hessian-vector product, k = (H + damping * I)^-1 v by conjugate gradient on exact
Hessian-vector products (double backward) of the mean CE over a fixed retain subset (the first
`iu_hvp_samples` retain samples in dataset order, as the released code also looks at about 1000). CG stops at
`iu_cg_steps` iterations, at a relative residual of 1e-6, or on meeting negative curvature (the iterate so far
is kept; the Hessian of a network need not be positive definite). With this, `--alpha` is the paper's step
scale: alpha = 1 is the first-order influence estimate of removing D_f.

`--variant legacy`: the released recursion exactly. k <- v, o <- None, N = 1000; for each retain sample gradient
g in dataset order (batch 1), o <- g for the first one, else t = o.g, k <- k - (k.g / (N + t)) o,
o <- o N / (N + t); it returns after 1002 samples. Since o is only ever rescaled, k = v - c g_0: the identity plus a
rank-1 correction along the first retain sample's gradient, not an inverse Hessian.

On a sparse model every gradient is masked (Method.apply), so v, the Hessian-vector products and k live on the
kept coordinates: the step of the sub-network, as with the released code's torch-prune re-parametrisation.

Defaults: alpha 1 ([S-hist] run.py; SalUn searched [1, 20]); damping 0.01, 30 CG steps, 1024 samples (ours).
"""
import torch
import torch.nn.functional as F

import training
from datasets import DeviceLoader
from unlearn.common import plain_loader, register
from utils import UsageError

GRAD_BATCH = 256  # the released gradient loaders' batch size
LEGACY_N = 1000   # the released woodfisher's constant


def _params(model):
    return [p for p in model.parameters() if p.requires_grad]


def _loss(model, b, reduction="mean"):
    logits = model(b.x).float()
    if b.weight is None:
        return F.cross_entropy(logits, b.y, reduction=reduction)
    losses = b.weight * F.cross_entropy(logits, b.y, reduction="none")
    return losses.mean() if reduction == "mean" else losses.sum()


def _flat_grad(loss, params, create_graph=False):
    grads = torch.autograd.grad(loss, params, create_graph=create_graph, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for p, g in zip(params, grads)])


def summed_gradient(model, loader):
    """(sum over samples of the loss gradient, number of samples), as batch-mean gradient x batch size."""
    params = _params(model)
    total = torch.zeros(sum(p.numel() for p in params), device=params[0].device)
    count = 0
    for b in loader:
        total += _flat_grad(_loss(model, b), params).detach() * len(b.y)
        count += len(b.y)
    return total, count


def influence_vector(model, ctx):
    """v = G_f / n - n_f / (n n_r) G_r."""
    g_f, n_f = summed_gradient(model, plain_loader(ctx.forget, GRAD_BATCH))
    g_r, n_r = summed_gradient(model, plain_loader(ctx.retain, GRAD_BATCH))
    if n_f == 0 or n_r == 0:
        raise UsageError("IU needs non-empty forget and retain sets")
    n = n_f + n_r
    return g_f / n - (n_f / (n * n_r)) * g_r


def hessian_subset(loader, samples, batch_size=GRAD_BATCH):
    """The first `samples` retain samples in dataset order, unaugmented."""
    plain = plain_loader(loader, batch_size)
    if isinstance(plain, DeviceLoader):
        return DeviceLoader(plain.images, plain.labels, plain.indices[:samples],
                            None if plain.weights is None else plain.weights[:samples], batch_size)
    return plain


def make_hvp(model, loader):
    """vec -> H vec, H the Hessian of the mean loss over `loader`'s samples (exact, double backward)."""
    params = _params(model)
    batches = list(loader)
    total = sum(len(b.y) for b in batches)

    def hvp(vec):
        out = torch.zeros_like(vec)
        for b in batches:
            g = _flat_grad(_loss(model, b), params, create_graph=True)
            out += _flat_grad(g @ vec, params).detach() * (len(b.y) / total)
        return out

    return hvp


def conjugate_gradient(apply, b, steps, tol=1e-6):
    """x ~ A^-1 b for symmetric A (a function); stops early at ||r|| <= tol ||b|| or at negative curvature."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rr = r @ r
    b_norm = b.norm()
    for _ in range(steps):
        if rr.sqrt() <= tol * b_norm:
            break
        ap = apply(p)
        curvature = p @ ap
        if curvature <= 0:  # negative curvature: keep the iterate (the direction itself on the first step)
            return x if x.abs().sum() > 0 else b.clone()
        a = rr / curvature
        x += a * p
        r -= a * ap
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x


def damped_ihvp(model, ctx, cfg, v):
    """(H + damping I)^-1 v by CG on Hessian-vector products over the fixed retain subset."""
    hvp = make_hvp(model, hessian_subset(ctx.retain, cfg.iu_hvp_samples))
    return conjugate_gradient(lambda vec: hvp(vec) + cfg.iu_damping * vec, v, cfg.iu_cg_steps)


def legacy_woodfisher(model, ctx, v):
    """The released recursion, verbatim in effect (see the module docstring)."""
    params = _params(model)
    k, o = v.clone(), None
    for i, b in enumerate(plain_loader(ctx.retain, 1)):
        g = _flat_grad(_loss(model, b), params).detach()
        if o is None:
            o = g.clone()
        else:
            t = o @ g
            k -= ((k @ g) / (LEGACY_N + t)) * o
            o -= (t / (LEGACY_N + t)) * o
        if i > LEGACY_N:
            break
    return k


def iu_step(model, ctx, cfg):
    """The flat perturbation alpha is multiplied with: H^-1 v (default) or the legacy recursion's k."""
    model.eval()
    v = influence_vector(model, ctx)
    return legacy_woodfisher(model, ctx, v) if cfg.variant == "legacy" else damped_ihvp(model, ctx, cfg, v)


@register("IU", "wfisher", defaults={"alpha": 1.0, "iu_damping": 0.01, "iu_cg_steps": 30, "iu_hvp_samples": 1024},
          variants=("default", "legacy"), iterative=False)
def influence_unlearning(model, ctx, cfg):
    if cfg.variant != "legacy" and (cfg.iu_damping < 0 or cfg.iu_cg_steps < 1 or cfg.iu_hvp_samples < 1):
        raise UsageError("--iu_damping/--iu_cg_steps/--iu_hvp_samples: need damping >= 0 and positive counts")
    k = iu_step(model, ctx, cfg)
    with torch.no_grad():
        start = 0
        for p in _params(model):
            p += cfg.alpha * k[start:start + p.numel()].view_as(p)
            start += p.numel()
    training.apply_masks(model, ctx.masks)
    return model
